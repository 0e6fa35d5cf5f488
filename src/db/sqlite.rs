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
use tokio::sync::oneshot;
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

use super::conns::{Batch, Conn, Conns};
use super::{
    AttemptResult, AuditQuery, AuditRecord, ClaimedDelivery, Entry, EntryKind, Error, EventQuery,
    EventRecord, FileWrite, KeyRecord, MetaStore, NamespaceUsage, NewEvent, NewKey, Result, Scope,
    SnapshotRecord, Swept, TreeOp, Webhook,
};
use crate::ids::{EventId, KeyId, Micros};

/// Read connections: WAL lets them all read while the writer writes.
const READERS: usize = 4;

pub struct SqliteStore {
    reader: Arc<Conns>,
    writer: Arc<Conns>,
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
            queue: WriteQueue::default(),
        })
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord> {
    let ws: String = row.try_get("workspace_id")?;
    let ns: Option<String> = row.try_get("namespace")?;
    Ok(KeyRecord {
        id: KeyId::from_string(row.try_get("id")?),
        workspace: WorkspaceId::parse(&ws)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scope: Scope::parse(row.try_get::<&str, _>("scope")?)?,
        namespace: ns.map(|n| Namespace::parse(&n)).transpose()?,
        created_at: Micros(row.try_get("created_at")?),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Micros),
        bootstrap: row.try_get("bootstrap")?,
    })
}

fn entry_from_row(row: &SqliteRow) -> Result<Entry> {
    let path: String = row.try_get("path")?;
    Ok(Entry {
        path: NsPath::parse(&path).map_err(|e| Error::Corrupt(format!("{path:?}: {e}")))?,
        kind: EntryKind::parse(row.try_get::<&str, _>("kind")?)?,
        size: row.try_get::<i64, _>("size")? as u64,
        mode: row.try_get::<i64, _>("mode")? as u32,
        mtime: Micros(row.try_get("mtime")?),
        sha256: row.try_get("sha256")?,
        target: row.try_get("target")?,
    })
}

fn snapshot_from_row(row: &SqliteRow) -> Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id: SnapshotId::parse(row.try_get("id")?)?,
        workspace: WorkspaceId::parse(row.try_get("workspace_id")?)?,
        namespace: Namespace::parse(row.try_get("namespace")?)?,
        label: row.try_get("label")?,
        size_bytes: row.try_get::<i64, _>("size_bytes")? as u64,
        file_count: row.try_get::<i64, _>("file_count")? as u64,
        key_id: row.try_get("key_id")?,
        created_at: Micros(row.try_get("created_at")?),
        expires_at: Micros(row.try_get("expires_at")?),
    })
}

fn hash_from_row(row: &SqliteRow) -> Result<[u8; 32]> {
    hash32(row.try_get("hash")?)
}

fn hash32(hash: Vec<u8>) -> Result<[u8; 32]> {
    hash.try_into()
        .map_err(|_| Error::Corrupt("key hash is not 32 bytes".into()))
}

const KEY_COLUMNS: &str =
    "id, workspace_id, name, prefix, scope, namespace, created_at, last_used_at, bootstrap";
const ENTRY_COLUMNS: &str = "path, kind, size, mode, mtime, sha256, target";

async fn append_event(tx: &mut Transaction<'_, Sqlite>, ev: &NewEvent) -> Result<()> {
    let mut b = Batch::new();
    push_event(&mut b, ev);
    b.run_on(tx).await?;
    Ok(())
}

/// Appends `ev` and fans it out to the matching webhook subscriptions (the outbox).
fn push_event<'q>(b: &mut Batch<'q>, ev: &'q NewEvent) {
    let ws = ev.workspace.as_str();
    let ns = ev.namespace.as_ref().map(|n| n.as_str());
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
    .bind(ev.created_at.0)
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
    .bind(ev.created_at.0)
    .bind(ev.created_at.0)
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

fn writable(path: &NsPath, existing: &[(String, String)]) -> Result<()> {
    for (p, kind) in existing {
        if p == path.as_str() {
            if kind == "dir" {
                return Err(Error::Conflict(format!("{} is a directory", path.wire())));
            }
        } else if kind != "dir" {
            let p = NsPath::parse(p)?;
            return Err(Error::Conflict(format!("{} is not a directory", p.wire())));
        }
    }
    Ok(())
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
    let (lo, hi) = subtree_range(p);
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

/// A file write waiting for a group commit.
struct QueuedWrite {
    ws: WorkspaceId,
    ns: Namespace,
    file: FileWrite,
    event: NewEvent,
    done: oneshot::Sender<Result<()>>,
}

/// The writes waiting for the writer connection, in arrival order.
#[derive(Default)]
struct WriteQueue {
    writes: std::sync::Mutex<Vec<(u64, QueuedWrite)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A write's place in the queue; leaving it (a cancelled caller) withdraws the write unless a
/// commit has already taken it.
struct Queued<'a> {
    queue: &'a WriteQueue,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut writes = self.queue.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.retain(|(id, _)| *id != self.id);
    }
}

impl WriteQueue {
    fn push(&self, w: QueuedWrite) -> Queued<'_> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.push((id, w));
        Queued { queue: self, id }
    }

    fn take(&self) -> Vec<QueuedWrite> {
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.drain(..).map(|(_, w)| w).collect()
    }
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
async fn commit_writes(mut conn: Conn, group: Vec<QueuedWrite>) {
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
            for w in group {
                let _ = w.done.send(Ok(()));
            }
            return;
        }
        conn.rollback().await;
    }
    for w in group {
        let r = commit_one(&mut conn, &w).await;
        let _ = w.done.send(r);
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

/// Upper bound of the key range holding everything below directory `p`: paths under `p` start
/// with `p/`, and `0` is the byte after `/`, so they all sort in `[p/, p0)`.
fn subtree_range(p: &NsPath) -> (String, String) {
    (format!("{}/", p.as_str()), format!("{}0", p.as_str()))
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *self.reader.get().await?)
                .await?,
        )
    }

    async fn ensure_default_workspace(
        &self,
        candidate: &WorkspaceId,
        name: &str,
        now: Micros,
    ) -> Result<(WorkspaceId, bool)> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'default_workspace'")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(ws) = existing {
            let ws = WorkspaceId::parse(&ws)?;
            return Ok((ws, false));
        }
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)")
            .bind(candidate.as_str())
            .bind(name)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO settings (name, value) VALUES ('default_workspace', ?)")
            .bind(candidate.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((candidate.clone(), true))
    }

    async fn insert_key(&self, key: &NewKey, event: &NewEvent) -> Result<()> {
        let r = &key.record;
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, hash, scope, namespace, created_at,
               bootstrap)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.as_str())
        .bind(r.workspace.as_str())
        .bind(&r.name)
        .bind(&r.prefix)
        .bind(&key.hash[..])
        .bind(r.scope.as_str())
        .bind(r.namespace.as_ref().map(|n| n.as_str()))
        .bind(r.created_at.0)
        .bind(r.bootstrap)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(KeyRecord, [u8; 32])>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE hash = ? AND revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(&hash[..])
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref()
            .map(|r| Ok((key_from_row(r)?, hash_from_row(r)?)))
            .transpose()
    }

    async fn list_keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ? AND revoked_at IS NULL
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        event: &NewEvent,
    ) -> Result<Option<[u8; 32]>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?
             WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL RETURNING hash",
        )
        .bind(event.created_at.0)
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash = hash_from_row(&row)?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some(hash))
    }

    async fn rotate_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        new_hash: &[u8; 32],
        new_prefix: &str,
        event: &NewEvent,
    ) -> Result<Option<([u8; 32], KeyRecord)>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let old = sqlx::query(
            "SELECT hash FROM api_keys WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(old) = old else {
            return Ok(None);
        };
        let old_hash = hash_from_row(&old)?;
        let sql = format!(
            "UPDATE api_keys SET hash = ?, prefix = ?, last_used_at = NULL
             WHERE workspace_id = ? AND id = ? RETURNING {KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new_hash[..])
            .bind(new_prefix)
            .bind(ws.as_str())
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let record = key_from_row(&row)?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some((old_hash, record)))
    }

    async fn touch_key(&self, id: &KeyId, at: Micros) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(at.0)
            .bind(id.as_str())
            .execute(&mut *self.writer.get().await?)
            .await?;
        Ok(())
    }

    async fn get_entry(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<Option<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(path.as_str())
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn list_children(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        dir: &NsPath,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files
             WHERE workspace_id = ? AND namespace = ? AND parent = ?
             ORDER BY kind <> 'dir', name LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(dir.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn check_writable(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<()> {
        let mut b = Batch::new();
        push_existing_kinds(&mut b, ws, ns, path);
        let rows = b.run_on(&mut *self.reader.get().await?).await?;
        writable(path, &kinds_in(&rows))
    }

    async fn commit_write(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        file: &FileWrite,
        event: &NewEvent,
    ) -> Result<()> {
        // Group commit: queue the write, then take the writer. Whoever gets it commits every
        // write queued by then in one transaction, so concurrent writers share one commit
        // instead of each waiting in line for its own.
        let (done, mut result) = oneshot::channel();
        let queued = self.queue.push(QueuedWrite {
            ws: ws.clone(),
            ns: ns.clone(),
            file: file.clone(),
            event: event.clone(),
            done,
        });
        let conn = self.writer.get().await?;
        if let Ok(r) = result.try_recv() {
            return r;
        }
        let group = self.queue.take();
        drop(queued);
        // Once taken from the queue, the writes are committed on a task of their own: a
        // cancelled caller must not leave them half-done, their writers told they failed.
        tokio::spawn(commit_writes(conn, group));
        result
            .await
            .unwrap_or(Err(Error::Backend(sqlx::Error::WorkerCrashed)))
    }

    async fn commit_delete(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
        event: &NewEvent,
    ) -> Result<Option<Vec<NsPath>>> {
        let mut b = Batch::new();
        let (lo, hi) = subtree_range(path);
        // Two statements for the reason given in `push_delete_subtree`.
        b.push(
            "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?
             RETURNING path, kind",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(path.as_str());
        b.push(
            "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path >= ? AND path < ?
             RETURNING path, kind",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(lo)
        .bind(hi);
        push_bump_generation(&mut b, ws, ns, event.created_at);
        push_event(&mut b, event);

        let mut conn = self.writer.get().await?;
        let rows = conn.batch(b).await?;
        let deleted: Vec<&SqliteRow> = rows
            .iter()
            .filter(|r| r.try_get::<&str, _>("kind").is_ok())
            .collect();
        if deleted.is_empty() {
            // Nothing was there: no change, no event.
            conn.rollback().await;
            return Ok(None);
        }
        let mut files = Vec::new();
        for row in deleted {
            if row.try_get::<&str, _>("kind")? == "dir" {
                continue;
            }
            let p: String = row.try_get("path")?;
            files.push(NsPath::parse(&p)?);
        }
        if let Err(e) = generation_in(&rows, ns) {
            conn.rollback().await;
            return Err(e);
        }
        conn.commit().await?;
        Ok(Some(files))
    }

    async fn replace_tree(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        files: &[FileWrite],
        event: &NewEvent,
    ) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for f in files {
            dirs.extend(f.path.ancestors());
        }
        let mut conn = self.writer.get().await?;
        let mut b = Batch::new().one_off();
        push_bump_generation(&mut b, ws, ns, event.created_at);
        b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ?")
            .bind(ws.as_str())
            .bind(ns.as_str());
        let rows = conn.batch(b).await?;
        if let Err(e) = generation_in(&rows, ns) {
            conn.rollback().await;
            return Err(e);
        }
        let mut b = Batch::new().one_off();
        for dir in &dirs {
            push_insert_dir(&mut b, ws, ns, dir, event.created_at);
            b = flush_if_full(&mut conn, b).await?;
        }
        for f in files {
            push_upsert_file(&mut b, ws, ns, f);
            b = flush_if_full(&mut conn, b).await?;
        }
        push_event(&mut b, event);
        conn.batch(b).await?;
        conn.commit().await
    }

    async fn commit_tree_ops(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        ops: &[TreeOp],
        events: &[NewEvent],
    ) -> Result<(u64, u64)> {
        let now = events.first().map_or_else(Micros::now, |e| e.created_at);
        let mut conn = self.writer.get().await?;
        // An exec that changed nothing sends the same text every time; keep that one prepared.
        let mut b = if ops.is_empty() {
            Batch::new()
        } else {
            Batch::new().one_off()
        };
        if ops.is_empty() {
            b.push("SELECT generation FROM namespaces WHERE workspace_id = ? AND name = ?")
                .bind(ws.as_str())
                .bind(ns.as_str());
        } else {
            push_bump_generation(&mut b, ws, ns, now);
        }
        // The first batch is sent alone only when there is more than fits with it.
        let mut first = None;
        for op in ops {
            match op {
                TreeOp::Clear => {
                    b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ?")
                        .bind(ws.as_str())
                        .bind(ns.as_str());
                }
                TreeOp::Delete(p) => push_delete_subtree(&mut b, ws, ns, p, true),
                TreeOp::DeleteBelow(p) => push_delete_subtree(&mut b, ws, ns, p, false),
                TreeOp::Dir(p, mtime) => {
                    b.push(
                        "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?
                           AND kind <> 'dir'",
                    )
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(p.as_str());
                    push_insert_dir(&mut b, ws, ns, p, *mtime);
                }
                TreeOp::File(f) => {
                    push_delete_subtree(&mut b, ws, ns, &f.path, false);
                    push_upsert_file(&mut b, ws, ns, f);
                }
                TreeOp::Symlink {
                    path,
                    target,
                    mtime,
                } => {
                    push_delete_subtree(&mut b, ws, ns, path, true);
                    b.push(&format!(
                        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size,
                           mode, mtime, target, generation)
                         VALUES (?, ?, ?, ?, ?, 'symlink', ?, ?, ?, ?, {GENERATION})"
                    ))
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(path.as_str())
                    .bind(
                        path.parent()
                            .unwrap_or_else(NsPath::root)
                            .as_str()
                            .to_owned(),
                    )
                    .bind(path.name())
                    .bind(target.len() as i64)
                    .bind(0o777_i64)
                    .bind(mtime.0)
                    .bind(target.as_str())
                    .bind(ws.as_str())
                    .bind(ns.as_str());
                }
            }
            if b.len() > BATCH_BYTES {
                let full = std::mem::replace(&mut b, Batch::new().one_off());
                let rows = conn.batch(full).await?;
                first.get_or_insert(rows);
            }
        }
        // Events go in chunks too: SQLite copies the rest of a batch's text for each statement
        // it prepares, so one batch of every event of a large sync-back is quadratic.
        for ev in events {
            push_event(&mut b, ev);
            if b.len() > BATCH_BYTES {
                let full = std::mem::replace(&mut b, Batch::new().one_off());
                let rows = conn.batch(full).await?;
                first.get_or_insert(rows);
            }
        }
        let rows = conn.batch(b).await?;
        let first = first.unwrap_or(rows);
        let generation = match generation_in(&first, ns) {
            // An exec on a namespace never written has nothing to read the generation from.
            Err(_) if ops.is_empty() => 0,
            Err(e) => {
                conn.rollback().await;
                return Err(e);
            }
            Ok(g) => g,
        };
        conn.commit().await?;
        let before = if ops.is_empty() {
            generation
        } else {
            generation - 1
        };
        Ok((before as u64, generation as u64))
    }

    async fn tree(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT path, kind, size, mode, mtime, sha256, target FROM files
             WHERE workspace_id = ? AND namespace = ? ORDER BY path",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn list_namespaces(&self, ws: &WorkspaceId) -> Result<Vec<NamespaceUsage>> {
        let rows = sqlx::query(
            "SELECT n.name, n.state, n.created_at, n.deleted_at,
               (SELECT COUNT(*) FROM files f WHERE f.workspace_id = n.workspace_id
                  AND f.namespace = n.name AND f.kind = 'file') AS files,
               (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.workspace_id = n.workspace_id
                  AND f.namespace = n.name AND f.kind = 'file') AS bytes,
               (SELECT MAX(created_at) FROM events e WHERE e.workspace_id = n.workspace_id
                  AND e.namespace = n.name) AS last_activity,
               (SELECT COUNT(*) FROM snapshots s WHERE s.workspace_id = n.workspace_id
                  AND s.namespace = n.name) AS snapshots,
               (SELECT COALESCE(SUM(size_bytes), 0) FROM snapshots s
                  WHERE s.workspace_id = n.workspace_id AND s.namespace = n.name) AS snapshot_bytes
             FROM namespaces n WHERE n.workspace_id = ? AND n.state <> 'purged' ORDER BY n.name",
        )
        .bind(ws.as_str())
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NamespaceUsage {
                    name: r.try_get("name")?,
                    state: r.try_get("state")?,
                    files: r.try_get::<i64, _>("files")? as u64,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    created_at: Micros(r.try_get("created_at")?),
                    deleted_at: r.try_get::<Option<i64>, _>("deleted_at")?.map(Micros),
                    snapshots: r.try_get::<i64, _>("snapshots")? as u64,
                    snapshot_bytes: r.try_get::<i64, _>("snapshot_bytes")? as u64,
                    last_activity: r.try_get::<Option<i64>, _>("last_activity")?.map(Micros),
                })
            })
            .collect()
    }

    async fn delete_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
        key_event: &(dyn for<'k> Fn(&'k KeyId) -> NewEvent + Send + Sync),
    ) -> Result<Option<Vec<[u8; 32]>>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces SET state = 'deleted', deleted_at = ?
             WHERE workspace_id = ? AND name = ? AND state = 'active'",
        )
        .bind(event.created_at.0)
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(None);
        }
        let revoked: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = ?
             WHERE workspace_id = ? AND namespace = ? AND revoked_at IS NULL RETURNING id, hash",
        )
        .bind(event.created_at.0)
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        let mut hashes = Vec::with_capacity(revoked.len());
        for (id, hash) in revoked {
            let key_id = KeyId::from_string(id);
            let ev = key_event(&key_id);
            append_event(&mut tx, &ev).await?;
            hashes.push(hash32(hash)?);
        }
        tx.commit().await?;
        Ok(Some(hashes))
    }

    async fn restore_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces SET state = 'active', deleted_at = NULL
             WHERE workspace_id = ? AND name = ? AND state = 'deleted'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn deleted_namespaces(&self) -> Result<Vec<(WorkspaceId, Namespace, Micros)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT workspace_id, name, deleted_at FROM namespaces
             WHERE state IN ('deleted', 'purging')",
        )
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.into_iter()
            .map(|(ws, ns, at)| Ok((WorkspaceId::parse(&ws)?, Namespace::parse(&ns)?, Micros(at))))
            .collect()
    }

    async fn purge_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces SET state = 'purged', purged_at = ?, generation = generation + 1
             WHERE workspace_id = ? AND name = ? AND state = 'purging'",
        )
        .bind(event.created_at.0)
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        // Nothing of the old tenant may reach a new one of the same name: its history goes
        // with its files, and subscriptions bound to the name end. Only the proof remains.
        for sql in [
            "DELETE FROM files WHERE workspace_id = ? AND namespace = ?",
            "DELETE FROM snapshots WHERE workspace_id = ? AND namespace = ?",
            "DELETE FROM deliveries WHERE event_seq IN
               (SELECT seq FROM events WHERE workspace_id = ? AND namespace = ?)",
            "DELETE FROM deliveries WHERE webhook_id IN
               (SELECT id FROM webhooks WHERE workspace_id = ? AND namespace = ?)",
            "DELETE FROM events WHERE workspace_id = ? AND namespace = ?",
            "DELETE FROM audit WHERE workspace_id = ? AND namespace = ?",
            "DELETE FROM webhooks WHERE workspace_id = ? AND namespace = ?",
        ] {
            sqlx::query(sql)
                .bind(ws.as_str())
                .bind(ns.as_str())
                .execute(&mut *tx)
                .await?;
        }
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_snapshot(&self, snap: &SnapshotRecord, event: &NewEvent) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        // The namespace exists from its first snapshot on (it may hold no file yet); a deleted
        // one takes no snapshot.
        sqlx::query(
            "INSERT INTO namespaces (workspace_id, name, generation, created_at) VALUES (?, ?, 0, ?)
             ON CONFLICT (workspace_id, name) DO UPDATE SET
               state = 'active', deleted_at = NULL, purged_at = NULL
             WHERE state = 'purged'",
        )
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .bind(snap.created_at.0)
        .execute(&mut *tx)
        .await?;
        let state: String =
            sqlx::query_scalar("SELECT state FROM namespaces WHERE workspace_id = ? AND name = ?")
                .bind(snap.workspace.as_str())
                .bind(snap.namespace.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if state != "active" {
            return Err(Error::NamespaceDeleted(snap.namespace.to_string()));
        }
        sqlx::query(
            "INSERT INTO snapshots (id, workspace_id, namespace, label, size_bytes, file_count,
               key_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(snap.id.as_str())
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .bind(&snap.label)
        .bind(snap.size_bytes as i64)
        .bind(snap.file_count as i64)
        .bind(&snap.key_id)
        .bind(snap.created_at.0)
        .bind(snap.expires_at.0)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_snapshots(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE workspace_id = ? AND namespace = ?
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn get_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let row = sqlx::query(
            "SELECT * FROM snapshots WHERE id = ? AND workspace_id = ? AND namespace = ?",
        )
        .bind(id.as_str())
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn delete_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let n = sqlx::query(
            "DELETE FROM snapshots WHERE id = ? AND workspace_id = ? AND namespace = ?",
        )
        .bind(id.as_str())
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expired_snapshots(&self, now: Micros, limit: u32) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now.0)
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn begin_purge(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE namespaces SET state = 'purging'
             WHERE workspace_id = ? AND name = ? AND state IN ('deleted', 'purging')",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *self.writer.get().await?)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn file_paths(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<NsPath>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT path FROM files WHERE workspace_id = ? AND namespace = ? AND kind = 'file'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(|p| Ok(NsPath::parse(p)?)).collect()
    }

    async fn generation(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<u64> {
        let g: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM namespaces WHERE workspace_id = ? AND name = ?",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        Ok(g.unwrap_or(0) as u64)
    }

    async fn query_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        let mut sql = String::from(
            "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data FROM events
             WHERE workspace_id = ?",
        );
        if q.namespace.is_some() {
            sql.push_str(" AND namespace = ?");
        }
        if !q.types.is_empty() {
            let marks = vec!["?"; q.types.len()].join(", ");
            sql.push_str(&format!(" AND type IN ({marks})"));
        }
        if !q.hidden_types.is_empty() {
            let marks = vec!["?"; q.hidden_types.len()].join(", ");
            sql.push_str(&format!(" AND type NOT IN ({marks})"));
        }
        if q.since.is_some() {
            sql.push_str(" AND created_at > ?");
        }
        if q.before_seq.is_some() {
            sql.push_str(" AND seq < ?");
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        let mut query = sqlx::query(&sql).bind(q.workspace.as_str());
        if let Some(ns) = &q.namespace {
            query = query.bind(ns.as_str());
        }
        for t in &q.types {
            query = query.bind(t.as_str());
        }
        for t in q.hidden_types {
            query = query.bind(*t);
        }
        if let Some(since) = q.since {
            query = query.bind(since.0);
        }
        if let Some(seq) = q.before_seq {
            query = query.bind(seq);
        }
        let rows = query
            .bind(q.limit as i64)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        ws: &WorkspaceId,
        namespace: Option<&Namespace>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data FROM events
             WHERE workspace_id = ?1 AND seq > ?2 AND (?3 IS NULL OR namespace = ?3)
             ORDER BY seq LIMIT ?4",
        )
        .bind(ws.as_str())
        .bind(after_seq)
        .bind(namespace.map(|n| n.as_str()))
        .bind(limit as i64)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_seq(&self, ws: &WorkspaceId) -> Result<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE workspace_id = ?")
                .bind(ws.as_str())
                .fetch_one(&mut *self.reader.get().await?)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn insert_webhook(&self, hook: &Webhook, event: &NewEvent) -> Result<()> {
        let events =
            serde_json::to_string(&hook.events).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, workspace_id, url, events, namespace, description, secret, enabled, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&hook.id)
        .bind(hook.workspace.as_str())
        .bind(&hook.url)
        .bind(events)
        .bind(hook.namespace.as_ref().map(|n| n.as_str()))
        .bind(&hook.description)
        .bind(&hook.secret)
        .bind(hook.enabled as i64)
        .bind(hook.created_at.0)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w
             WHERE w.workspace_id = ? AND w.deleted_at IS NULL ORDER BY w.created_at, w.id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Option<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w
             WHERE w.workspace_id = ? AND w.id = ? AND w.deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(id)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn delete_webhook(&self, ws: &WorkspaceId, id: &str, event: &NewEvent) -> Result<bool> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = ? WHERE workspace_id = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(event.created_at.0)
        .bind(ws.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', last_error = 'subscription deleted', updated_at = ?
             WHERE webhook_id = ? AND state = 'pending'",
        )
        .bind(event.created_at.0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        now: Micros,
        lease_until: Micros,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let claimed: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "UPDATE deliveries SET locked_until = ?2
             WHERE id IN (
               SELECT id FROM (
                 SELECT d.id, ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.id) AS n
                 FROM deliveries d
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
                   AND (d.locked_until IS NULL OR d.locked_until < ?1)
                   AND NOT EXISTS (
                     SELECT 1 FROM deliveries busy
                     WHERE busy.webhook_id = d.webhook_id AND busy.state = 'pending'
                       AND busy.locked_until >= ?1)
               ) WHERE n <= ?4
               ORDER BY id LIMIT ?3)
             RETURNING id, webhook_id, event_seq, attempts",
        )
        .bind(now.0)
        .bind(lease_until.0)
        .bind(limit as i64)
        .bind(per_webhook as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, webhook_id, seq, attempts) in claimed {
            let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = ?");
            let hook = sqlx::query(&sql)
                .bind(&webhook_id)
                .fetch_one(&mut *tx)
                .await?;
            let ev = sqlx::query(
                "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data
                 FROM events WHERE seq = ?",
            )
            .bind(seq)
            .fetch_one(&mut *tx)
            .await?;
            out.push(ClaimedDelivery {
                id,
                webhook: webhook_from_row(&hook)?,
                event: event_from_row(&ev)?,
                attempts: attempts as u32,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn finish_delivery(&self, delivery_id: i64, r: &AttemptResult) -> Result<()> {
        let state = match (r.ok, r.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let webhook_id: String = sqlx::query_scalar(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, locked_until = NULL,
               next_attempt_at = COALESCE(?, next_attempt_at), last_status = ?, last_error = ?,
               updated_at = ?
             WHERE id = ? RETURNING webhook_id",
        )
        .bind(state)
        .bind(r.retry_at.map(|t| t.0))
        .bind(r.status.map(i64::from))
        .bind(&r.error)
        .bind(r.at.0)
        .bind(delivery_id)
        .fetch_one(&mut *tx)
        .await?;
        record_result(&mut tx, &webhook_id, r).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut b = Batch::new().one_off();
        for r in records {
            b.push(
                "INSERT INTO audit (workspace_id, key_id, namespace, operation, path, status, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.workspace.as_str())
            .bind(r.key_id.as_str())
            .bind(r.namespace.as_deref())
            .bind(r.operation.as_str())
            .bind(r.path.as_deref())
            .bind(i64::from(r.status))
            .bind(r.created_at.0);
            b = flush_if_full(&mut conn, b).await?;
        }
        conn.batch(b).await?;
        conn.commit().await
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let (cmp, order) = if q.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let sql = format!(
            "SELECT seq, workspace_id, key_id, namespace, operation, path, status, created_at
             FROM audit
             WHERE workspace_id = ?1
               AND (?2 IS NULL OR key_id = ?2)
               AND (?3 IS NULL OR namespace = ?3)
               AND (?4 IS NULL OR operation = ?4)
               AND (?5 IS NULL OR created_at >= ?5)
               AND (?6 IS NULL OR created_at < ?6)
               AND (?7 IS NULL OR seq {cmp} ?7)
             ORDER BY seq {order} LIMIT ?8"
        );
        let rows = sqlx::query(&sql)
            .bind(q.workspace.as_str())
            .bind(&q.key_id)
            .bind(&q.namespace)
            .bind(&q.operation)
            .bind(q.from.map(|t| t.0))
            .bind(q.to.map(|t| t.0))
            .bind(q.cursor)
            .bind(q.limit as i64)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let ws: String = row.try_get("workspace_id")?;
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    workspace: WorkspaceId::parse(&ws)?,
                    key_id: row.try_get("key_id")?,
                    namespace: row.try_get("namespace")?,
                    operation: row.try_get("operation")?,
                    path: row.try_get("path")?,
                    status: row.try_get::<i64, _>("status")? as u16,
                    created_at: Micros(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn sweep_log(&self, cutoff: Micros, batch: u32) -> Result<Swept> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        let old_events = "SELECT seq FROM events WHERE created_at < ?1 ORDER BY seq LIMIT ?2";
        // Deliveries still pending keep their event: they are not done yet.
        let deliveries = sqlx::query(&format!(
            "DELETE FROM deliveries WHERE state <> 'pending' AND event_seq IN ({old_events})"
        ))
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(&format!(
            "DELETE FROM events WHERE seq IN ({old_events})
               AND seq NOT IN (SELECT event_seq FROM deliveries)"
        ))
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let audit = sqlx::query(
            "DELETE FROM audit WHERE seq IN
               (SELECT seq FROM audit WHERE created_at < ?1 ORDER BY seq LIMIT ?2)",
        )
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Swept {
            events,
            deliveries,
            audit,
        })
    }

    async fn count_log(&self, cutoff: Micros) -> Result<Swept> {
        let mut conn = self.reader.get().await?;
        let mut count = async |sql: &'static str| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(cutoff.0)
                .fetch_one(&mut *conn)
                .await
        };
        let deliveries = count(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE e.created_at < ?1 AND d.state <> 'pending'",
        )
        .await?;
        let events = count(
            "SELECT COUNT(*) FROM events e WHERE e.created_at < ?1 AND NOT EXISTS
               (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending')",
        )
        .await?;
        let audit = count("SELECT COUNT(*) FROM audit WHERE created_at < ?1").await?;
        Ok(Swept {
            events: events as u64,
            deliveries: deliveries as u64,
            audit: audit as u64,
        })
    }

    async fn record_webhook_result(&self, webhook_id: &str, r: &AttemptResult) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin().await?;
        record_result(&mut tx, webhook_id, r).await?;
        tx.commit().await?;
        Ok(())
    }
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
        seq: row.try_get("seq")?,
        id: EventId::from_string(row.try_get("id")?),
        kind: row.try_get("type")?,
        workspace: WorkspaceId::parse(&ws)?,
        namespace: row.try_get("namespace")?,
        key_id: row.try_get("key_id")?,
        created_at: Micros(row.try_get("created_at")?),
        data: row.try_get("data")?,
    })
}
