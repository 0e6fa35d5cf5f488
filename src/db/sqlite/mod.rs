//! [`MetaStore`] on SQLite: the embedded default.
//!
//! Writes go through exactly one connection and reads through a separate set of connections
//! ([`Conns`]).
//! SQLite allows one writer at a time anyway; funnelling writers through one connection turns
//! lock contention into a queue and avoids the `SQLITE_BUSY` a deferred transaction gets when
//! it upgrades from reading to writing while another writer commits.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, Transaction};
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

mod audit;
mod conns;
mod device;
mod events;
mod keys;
mod namespaces;
mod snapshots;
mod tree;
mod webhooks;
mod workspaces;

use super::group::{QueuedWrite, WriteQueue, outcome};
use super::rows::{
    ENTRY_COLUMNS, KEY_COLUMNS, entry_from_row, key_from_row, snapshot_from_row, usage_from_row,
};
use super::{
    AttemptResult, AuditPos, AuditQuery, AuditRecord, ClaimedDelivery, Entry, Error, EventQuery,
    EventRecord, FileWrite, KeyRecord, LeaseToken, LogPos, MetaStore, NamespaceUsage, NewEvent,
    NewKey, Result, SnapshotRecord, Swept, TreeOp, Webhook, hash32, subtree_range, writable,
};
use super::{
    AuditLog, EventLog, KeyStore, NamespaceLifecycle, SnapshotCatalog, TreeStore, WebhookOutbox,
    Workspaces,
};
use crate::coord::{DeleteLock, NamespaceLock, WriteLock};
use crate::ids::{EventId, KeyId, Micros};
use conns::{Batch, Conn, Conns};

/// How the writer opens a transaction. IMMEDIATE takes the write lock up front, waiting for it
/// under the busy timeout; a deferred transaction that reads and then writes cannot wait (SQLite
/// answers SQLITE_BUSY at once), and it meets another writer whenever a second process, such as
/// `warren admin reindex`, has the database open.
const WRITE_TX: &str = "BEGIN IMMEDIATE";

/// Read connections: WAL lets them all read while the writer writes.
const READERS: usize = 4;

/// Bumped after every commit that appended events; pollers of the log wait on it.
type Appended = tokio::sync::watch::Sender<u64>;

pub struct SqliteStore {
    reader: Arc<Conns>,
    writer: Arc<Conns>,
    appended: Appended,
    /// File writes waiting for `writer`, committed together.
    queue: WriteQueue,
}

/// Makes the database and its WAL and shared-memory files readable by the server's user only
/// (they hold webhook signing secrets and every tenant's event log), creating the database
/// file with that mode if it is new; SQLite gives the other two the database file's mode.
/// Files already private are not touched: another process (`warren admin reindex`) may have
/// the database open, and SQLite's locks do not take kindly to other opens of its files.
fn private_files(db: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !db.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(sqlx::Error::Io)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let mode = match std::fs::metadata(&name) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(sqlx::Error::Io(e).into()),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))
                .map_err(sqlx::Error::Io)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a commit survives a process crash; on power loss the last
            // commits may roll back but the database stays consistent.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:");
        if !in_memory {
            private_files(opts.get_filename())?;
        }
        let writer = Arc::new(Conns::open(&opts, 1).await?);
        sqlx::migrate!("migrations/sqlite")
            .run(&mut *writer.get().await?)
            .await?;
        // An in-memory database exists only on its one connection.
        let reader = if in_memory {
            Arc::clone(&writer)
        } else {
            Arc::new(Conns::open(&opts.create_if_missing(false).read_only(true), READERS).await?)
        };
        Ok(Self {
            reader,
            writer,
            appended: tokio::sync::watch::Sender::new(0),
            queue: WriteQueue::default(),
        })
    }
}

impl SqliteStore {
    /// Wakes the log's pollers after a commit that appended events (and only then: the
    /// delivery worker commits a claim every poll, which would wake every live stream). This
    /// process's writer is the only writer, so the wake-up misses nothing.
    fn committed(&self) {
        self.appended.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

fn hash_from_row(row: &SqliteRow) -> Result<[u8; 32]> {
    hash32(row.try_get("hash")?)
}

async fn append_event(tx: &mut Transaction<'_, Sqlite>, ev: &NewEvent) -> Result<()> {
    let mut b = Batch::new();
    push_event(&mut b, ev);
    b.run_on(tx).await?;
    Ok(())
}

/// The store's clock: every time it records (event times, revocations, deliveries) is read
/// here, not taken from callers, so one node's clock is the only one that counts.
fn now() -> Micros {
    Micros::now()
}

/// Appends `ev` and fans it out to the matching webhook subscriptions (the outbox).
fn push_event<'q>(b: &mut Batch<'q>, ev: &'q NewEvent) {
    let ws = ev.workspace.as_str();
    let ns = ev.namespace.as_ref().map(|n| n.as_str());
    let at = now();
    // All writes go through one connection, so transactions commit in the order they run and
    // the MAX below sees every earlier commit: times strictly increase in commit order.
    b.push(
        "INSERT INTO events (id, type, workspace_id, namespace, key_id, created_at, data)
         VALUES (?, ?, ?, ?, ?,
                 MAX(?, COALESCE((SELECT MAX(created_at) FROM events WHERE workspace_id = ?), 0) + 1),
                 ?)",
    )
    .bind(ev.id.as_str())
    .bind(ev.kind)
    .bind(ws)
    .bind(ns)
    .bind(ev.key_id.as_ref().map(|k| k.as_str()))
    .bind(at.0)
    .bind(ws)
    .bind(&ev.data);
    b.push(
        "INSERT INTO deliveries (webhook_id, event_seq, state, next_attempt_at, updated_at)
         SELECT w.id, (SELECT seq FROM events WHERE id = ?), 'pending', ?, ? FROM webhooks w
         WHERE w.workspace_id = ? AND w.enabled = 1 AND w.deleted_at IS NULL
           AND (w.namespace IS NULL OR w.namespace = ?)
           AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value IN ('*', ?))",
    )
    .bind(ev.id.as_str())
    .bind(at.0)
    .bind(at.0)
    .bind(ws)
    .bind(ns)
    .bind(ev.kind);
}

const WEBHOOK_COLUMNS: &str = "w.id, w.workspace_id, w.url, w.events, w.namespace, w.description, \
     w.secret, w.enabled, w.created_at, w.last_delivery_at, w.last_delivery_ok, w.last_delivery_status";

fn webhook_from_row(row: &SqliteRow) -> Result<Webhook> {
    let ws: String = row.try_get("workspace_id")?;
    let events: String = row.try_get("events")?;
    let ns: Option<String> = row.try_get("namespace")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        workspace: WorkspaceId::parse(&ws)?,
        url: row.try_get("url")?,
        events: serde_json::from_str(&events).map_err(|e| Error::Corrupt(e.to_string()))?,
        namespace: ns.map(|n| Namespace::parse(&n)).transpose()?,
        description: row.try_get("description")?,
        secret: row.try_get("secret")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: Micros(row.try_get("created_at")?),
        last_delivery_at: row
            .try_get::<Option<i64>, _>("last_delivery_at")?
            .map(Micros),
        last_delivery_ok: row
            .try_get::<Option<i64>, _>("last_delivery_ok")?
            .map(|v| v != 0),
        last_delivery_status: row
            .try_get::<Option<i64>, _>("last_delivery_status")?
            .map(|v| v as u16),
    })
}

/// Reads what exists at `path` and its ancestors; [`kinds_in`] picks the answer out of the rows.
fn push_existing_kinds<'q>(
    b: &mut Batch<'q>,
    ws: &'q WorkspaceId,
    ns: &'q Namespace,
    path: &NsPath,
) {
    let mut wanted = path.ancestors();
    wanted.push(path.clone());
    b.push(&format!(
        "SELECT path, kind FROM files WHERE workspace_id = ? AND namespace = ? AND path IN ({})",
        vec!["?"; wanted.len()].join(", ")
    ))
    .bind(ws.as_str())
    .bind(ns.as_str());
    for p in &wanted {
        b.bind(p.as_str().to_owned());
    }
}

/// The `(path, kind)` rows among `rows`.
fn kinds_in(rows: &[SqliteRow]) -> Vec<(String, String)> {
    rows.iter()
        .filter_map(|r| Some((r.try_get("path").ok()?, r.try_get("kind").ok()?)))
        .collect()
}

/// Bumps (creating if needed) the namespace row; its one row holds the new generation, and
/// there is none when the namespace is deleted.
fn push_bump_generation<'q>(
    b: &mut Batch<'q>,
    ws: &'q WorkspaceId,
    ns: &'q Namespace,
    now: Micros,
) {
    // A deleted (or purging) namespace refuses every change; a purged one starts afresh.
    b.push(
        "INSERT INTO namespaces (workspace_id, name, generation, created_at) VALUES (?, ?, 1, ?)
         ON CONFLICT (workspace_id, name) DO UPDATE SET
           generation = generation + 1, state = 'active', deleted_at = NULL, purged_at = NULL
         WHERE state IN ('active', 'purged')
         RETURNING generation",
    )
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(now.0);
}

/// The generation a batch's rows carry: the namespace's, once bumped earlier in the batch.
const GENERATION: &str = "(SELECT generation FROM namespaces WHERE workspace_id = ? AND name = ?)";

/// The generation read back from a batch's rows (the one column named `generation`), or
/// `NamespaceDeleted` when the bump found the namespace deleted.
fn generation_in(rows: &[SqliteRow], ns: &Namespace) -> Result<i64> {
    for row in rows {
        if let Ok(g) = row.try_get::<i64, _>("generation") {
            return Ok(g);
        }
    }
    Err(Error::NamespaceDeleted(ns.to_string()))
}

/// Inserts directory `dir` unless something is already at its path.
fn push_insert_dir<'q>(
    b: &mut Batch<'q>,
    ws: &'q WorkspaceId,
    ns: &'q Namespace,
    dir: &NsPath,
    mtime: Micros,
) {
    b.push(&format!(
        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime, generation)
         VALUES (?, ?, ?, ?, ?, 'dir', 0, ?, ?, {GENERATION})
         ON CONFLICT (workspace_id, namespace, path) DO NOTHING"
    ))
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(dir.as_str().to_owned())
    .bind(dir.parent().unwrap_or_else(NsPath::root).as_str().to_owned())
    .bind(dir.name().to_owned())
    .bind(0o755_i64)
    .bind(mtime.0)
    .bind(ws.as_str())
    .bind(ns.as_str());
}

fn push_upsert_file<'q>(
    b: &mut Batch<'q>,
    ws: &'q WorkspaceId,
    ns: &'q Namespace,
    file: &'q FileWrite,
) {
    b.push(&format!(
        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime, sha256, generation)
         VALUES (?, ?, ?, ?, ?, 'file', ?, ?, ?, ?, {GENERATION})
         ON CONFLICT (workspace_id, namespace, path) DO UPDATE SET
           kind = 'file', size = excluded.size, mode = excluded.mode, mtime = excluded.mtime,
           sha256 = excluded.sha256, target = NULL, generation = excluded.generation"
    ))
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(file.path.as_str())
    .bind(file.path.parent().unwrap_or_else(NsPath::root).as_str().to_owned())
    .bind(file.path.name())
    .bind(file.size as i64)
    .bind(file.mode as i64)
    .bind(file.mtime.0)
    .bind(file.sha256.as_str())
    .bind(ws.as_str())
    .bind(ns.as_str());
}

/// Deletes everything below `p`, and `p` itself when `inclusive`.
fn push_delete_subtree<'q>(
    b: &mut Batch<'q>,
    ws: &'q WorkspaceId,
    ns: &'q Namespace,
    p: &'q NsPath,
    inclusive: bool,
) {
    let (lo, hi) = subtree_range(p.as_str());
    // Two statements, not one with `OR`: SQLite answers an `OR` of these by scanning the whole
    // namespace, which made a large sync-back quadratic; each alone is a primary-key search.
    if inclusive {
        b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?")
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(p.as_str());
    }
    b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path >= ? AND path < ?")
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(lo)
        .bind(hi);
}

/// One write's statements: the first reads what is at the path and its parents before the
/// write, which [`check_write`] uses to decide whether the rest stands.
fn push_write<'q>(b: &mut Batch<'q>, w: &'q QueuedWrite) {
    push_existing_kinds(b, &w.ws, &w.ns, &w.file.path);
    push_bump_generation(b, &w.ws, &w.ns, w.file.mtime);
    for dir in w.file.path.ancestors() {
        push_insert_dir(b, &w.ws, &w.ns, &dir, w.file.mtime);
    }
    push_upsert_file(b, &w.ws, &w.ns, &w.file);
    push_event(b, &w.event);
}

fn check_write(w: &QueuedWrite, rows: &[SqliteRow]) -> Result<()> {
    generation_in(rows, &w.ns)?;
    writable(&w.file.path, &kinds_in(rows))
}

/// Commits `group` in one transaction and tells each write how it went. If any of them fails
/// its check (a conflict, a deleted namespace) or the transaction fails, it is rolled back and
/// each write is committed alone, so one bad write costs the others only time.
///
/// Each write is its own batch, a round trip apiece: one batch for the whole group would be
/// new text every time, and preparing its statements afresh costs more than the round trips
/// the prepared, cached per-write text saves.
async fn commit_writes(mut conn: Conn, group: Vec<QueuedWrite>, appended: Appended) {
    if group.len() > 1 {
        let mut all_ok = true;
        for w in &group {
            let mut b = Batch::new();
            push_write(&mut b, w);
            let ok = match conn.batch(b).await {
                Ok(rows) => check_write(w, &rows).is_ok(),
                Err(_) => false,
            };
            if !ok {
                all_ok = false;
                break;
            }
        }
        if all_ok && conn.commit().await.is_ok() {
            appended.send_modify(|n| *n += 1);
            for w in group {
                w.finish(Ok(()));
            }
            return;
        }
        conn.rollback().await;
    }
    for w in group {
        let r = commit_one(&mut conn, &w).await;
        if r.is_ok() {
            appended.send_modify(|n| *n += 1);
        }
        w.finish(r);
    }
}

async fn commit_one(conn: &mut Conn, w: &QueuedWrite) -> Result<()> {
    let mut b = Batch::new();
    push_write(&mut b, w);
    let rows = conn.batch(b).await?;
    match check_write(w, &rows) {
        Ok(()) => conn.commit().await,
        Err(e) => {
            conn.rollback().await;
            Err(e)
        }
    }
}

/// How much SQL one round trip carries at most. (SQLite accepts far more, but it copies the
/// remaining text of a batch once per statement, so larger batches cost more, not less.)
const BATCH_BYTES: usize = 64 * 1024;

/// Sends `b` when it has grown to [`BATCH_BYTES`], returning an empty batch to go on with.
async fn flush_if_full<'q>(conn: &mut Conn, b: Batch<'q>) -> Result<Batch<'q>> {
    if b.len() < BATCH_BYTES {
        return Ok(b);
    }
    conn.batch(b).await?;
    Ok(Batch::new().one_off())
}

async fn record_result(
    tx: &mut Transaction<'_, Sqlite>,
    webhook_id: &str,
    r: &AttemptResult,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhooks SET last_delivery_at = ?, last_delivery_ok = ?, last_delivery_status = ?
         WHERE id = ?",
    )
    .bind(r.at.0)
    .bind(r.ok as i64)
    .bind(r.status.map(i64::from))
    .bind(webhook_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn event_from_row(row: &SqliteRow) -> Result<EventRecord> {
    let ws: String = row.try_get("workspace_id")?;
    Ok(EventRecord {
        seq: LogPos::from_raw(row.try_get("seq")?),
        id: EventId::from_string(row.try_get("id")?),
        kind: row.try_get("type")?,
        workspace: WorkspaceId::parse(&ws)?,
        namespace: row.try_get("namespace")?,
        key_id: row.try_get("key_id")?,
        created_at: Micros(row.try_get("created_at")?),
        data: row.try_get("data")?,
    })
}
