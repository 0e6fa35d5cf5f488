//! [`MetaStore`] on PostgreSQL: for deployments that outgrow one machine, where several Warren
//! processes share one database.
//!
//! Unlike SQLite there are many writers, so nothing here relies on one: every transaction
//! makes its own checks under row locks, times come from the database's clock
//! (`warren_now()`), event positions from a per-workspace head row (see
//! `migrations/postgres/0001_init.sql`), and delivery claims lock with `SKIP LOCKED`.
//! Statements are fixed text (arrays rather than variable `IN` lists), so sqlx's per-connection
//! cache prepares each once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

mod audit;
mod cluster;
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
    NewKey, Result, SnapshotRecord, Swept, TreeOp, Webhook, hash32, writable,
};
use super::{
    AuditLog, EventLog, KeyStore, NamespaceLifecycle, SnapshotCatalog, TreeStore, WebhookOutbox,
    Workspaces,
};
use crate::coord::{DeleteLock, NamespaceLock, WriteLock};
use crate::ids::{EventId, KeyId, Micros};

/// Connections per store. Each request holds one for a transaction's few round trips.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

type Tx = Transaction<'static, Postgres>;

/// Group commits of file writes one process runs at once. Within a workspace they queue for
/// its log head anyway; a second lets this node's writes go on while one group waits for a
/// namespace row another node holds (a long sync-back).
const COMMIT_TURNS: usize = 2;
/// Writes per commit-function call, so a burst goes in bounded pieces.
const WRITES_PER_CALL: usize = 256;

pub struct PgStore {
    pool: PgPool,
    /// For sessions that hold cluster-wide locks (an exec's turn has one of its own).
    lock_opts: PgConnectOptions,
    /// Sessions that hold the short cluster-wide tree locks; apart from `pool`, so lock
    /// waiters never take the connections the lock holders need to commit.
    lock_sessions: PgPool,
    /// Bumped after this process commits events; pollers of the log wait on it (events other
    /// processes commit reach them by polling).
    appended: tokio::sync::watch::Sender<u64>,
    /// File writes waiting for a commit turn, committed together.
    queue: WriteQueue,
    turns: Arc<tokio::sync::Semaphore>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://…`) and applies pending migrations
    /// (sqlx holds an advisory lock while it does, so servers starting together take turns).
    pub async fn open(url: &str) -> Result<Self> {
        let opts: PgConnectOptions = url.parse()?;
        // One connection first, for its own error (refused, unknown host, bad password): the
        // pool would only report that it timed out.
        sqlx::Connection::close(
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts).await?,
        )
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The ping before each checkout is a round trip on every request; a broken
            // connection fails its first statement instead, and the pool replaces it.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        // A node that vanishes (its host down, its network cut) must not keep its locks until
        // the kernel gives up on the socket, hours by default: the server probes a lock
        // session idle for 5 s and ends it after 5 unanswered probes a second apart.
        let lock_opts = opts.clone().options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "1"),
            ("tcp_keepalives_count", "5"),
        ]);
        let lock_sessions = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(lock_opts.clone());
        Ok(Self {
            pool,
            lock_opts,
            lock_sessions,
            appended: tokio::sync::watch::Sender::new(0),
            queue: WriteQueue::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(COMMIT_TURNS)),
        })
    }

    /// For the copy from SQLite (`db::transfer`).
    pub(in crate::db) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a transaction that appended events, and wakes this process's log pollers.
    async fn commit_events(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.appended.send_modify(|n| *n += 1);
        Ok(())
    }
}

#[async_trait]
impl MetaStore for PgStore {
    async fn close(&self) {
        // A lock still held (its guard outliving the store) must not keep the close waiting:
        // closing the sessions ends the locks anyway.
        let sessions = self.lock_sessions.close();
        if tokio::time::timeout(Duration::from_secs(2), sessions)
            .await
            .is_err()
        {
            tracing::warn!("closed with cluster locks still held");
        }
        self.pool.close().await;
    }

    fn cluster_store(&self) -> Option<&dyn crate::db::ClusterStore> {
        Some(self)
    }
}

/// Appends `events` (in order) and queues their webhook deliveries, one call of
/// `warren_append_events` per workspace among them (see `migrations/postgres`). The head row
/// stays locked until the transaction ends.
async fn append_events(tx: &mut Tx, events: &[NewEvent]) -> Result<()> {
    let mut rest = events;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|e| e.workspace == first.workspace)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        sqlx::query("SELECT warren_append_events($1, $2, $3, $4, $5, $6)")
            .bind(first.workspace.as_str())
            .bind(group.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(group.iter().map(|e| e.kind).collect::<Vec<_>>())
            .bind(
                group
                    .iter()
                    .map(|e| e.namespace.as_ref().map(|n| n.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                group
                    .iter()
                    .map(|e| e.key_id.as_ref().map(|k| k.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(group.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The codes the commit functions raise or report (`migrations/postgres/0009_*.sql`, `0012_*`).
const NAMESPACE_DELETED: &str = "WA001";
const TREE_CONFLICT: &str = "WA002";
const LOCK_LOST: &str = "WA003";

/// Turns a commit function's own errors back into the store's.
fn commit_error(e: sqlx::Error, ns: &Namespace) -> Error {
    let sqlx::Error::Database(db) = &e else {
        return e.into();
    };
    match db.code().as_deref() {
        Some(NAMESPACE_DELETED) => Error::NamespaceDeleted(ns.to_string()),
        Some(LOCK_LOST) => lock_lost(),
        _ => e.into(),
    }
}

/// A commit refused by its fence (see `migrations/postgres/0012_fenced_commits.sql`).
fn lock_lost() -> Error {
    Error::Unavailable(
        "this node lost its cluster locks before the change was committed; nothing was \
         changed, try again"
            .into(),
    )
}

/// One write's outcome as `warren_commit_writes` reports it: its code, and for a clash with
/// the tree, which kind (`dir` or `not-dir`) and the path that clashes.
fn write_outcome(
    ns: &Namespace,
    code: Option<&str>,
    clash: Option<&str>,
    at: Option<&str>,
) -> Result<()> {
    let at = at.unwrap_or_default();
    let wire = || NsPath::parse(at).map_or_else(|_| at.to_owned(), |p| p.wire());
    match (code, clash) {
        (None, _) => Ok(()),
        (Some(NAMESPACE_DELETED), _) => Err(Error::NamespaceDeleted(ns.to_string())),
        (Some(LOCK_LOST), _) => Err(lock_lost()),
        (Some(TREE_CONFLICT), Some("dir")) => {
            Err(Error::Conflict(format!("{} is a directory", wire())))
        }
        (Some(TREE_CONFLICT), _) => Err(Error::Conflict(format!("{} is not a directory", wire()))),
        (Some(other), _) => Err(Error::Corrupt(format!("unknown write outcome {other}"))),
    }
}

/// The database's clock, for the times the store records.
async fn db_now(tx: &mut Tx) -> Result<Micros> {
    Ok(Micros(
        sqlx::query_scalar("SELECT warren_now()")
            .fetch_one(&mut **tx)
            .await?,
    ))
}

/// Bumps (creating if needed) the namespace row, locking it until the transaction ends;
/// returns the new generation, or `NamespaceDeleted` when the namespace is deleted or purging.
async fn bump_generation(tx: &mut Tx, ws: &WorkspaceId, ns: &Namespace) -> Result<i64> {
    sqlx::query_scalar("SELECT warren_bump_generation($1, $2)")
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| commit_error(e, ns))
}

/// What exists at `path` and its ancestors, as `(path, kind)`.
async fn existing_kinds(
    conn: &mut sqlx::PgConnection,
    ws: &WorkspaceId,
    ns: &Namespace,
    path: &NsPath,
) -> Result<Vec<(String, String)>> {
    let mut wanted: Vec<String> = path
        .ancestors()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    wanted.push(path.as_str().to_owned());
    Ok(sqlx::query_as(
        "SELECT path, kind FROM files WHERE workspace_id = $1 AND namespace = $2
           AND path = ANY ($3::text[])",
    )
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(wanted)
    .fetch_all(conn)
    .await?)
}

/// Inserts the directories `dirs` where nothing is at their paths yet.
async fn insert_dirs(
    tx: &mut Tx,
    ws: &WorkspaceId,
    ns: &Namespace,
    dirs: &[NsPath],
    mtime: Micros,
    generation: i64,
) -> Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let paths: Vec<&str> = dirs.iter().map(NsPath::as_str).collect();
    let parents: Vec<String> = dirs.iter().map(parent_of).collect();
    let names: Vec<&str> = dirs.iter().map(NsPath::name).collect();
    sqlx::query(
        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
           generation)
         SELECT $1, $2, d.path, d.parent, d.name, 'dir', 0, 493, $6, $7
         FROM unnest($3::text[], $4::text[], $5::text[]) AS d (path, parent, name)
         ON CONFLICT (workspace_id, namespace, path) DO NOTHING",
    )
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(paths)
    .bind(parents)
    .bind(names)
    .bind(mtime.0)
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records `files` (replacing what is at their paths; nothing below them is touched).
async fn upsert_files(
    tx: &mut Tx,
    ws: &WorkspaceId,
    ns: &Namespace,
    files: &[&FileWrite],
    generation: i64,
) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
           sha256, generation)
         SELECT $1, $2, f.path, f.parent, f.name, 'file', f.size, f.mode, f.mtime, f.sha256, $10
         FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                     $8::bigint[], $9::text[]) AS f (path, parent, name, size, mode, mtime, sha256)
         ON CONFLICT (workspace_id, namespace, path) DO UPDATE SET
           kind = 'file', size = excluded.size, mode = excluded.mode, mtime = excluded.mtime,
           sha256 = excluded.sha256, target = NULL, generation = excluded.generation",
    )
    .bind(ws.as_str())
    .bind(ns.as_str())
    .bind(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>())
    .bind(files.iter().map(|f| parent_of(&f.path)).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.path.name()).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.size as i64).collect::<Vec<_>>())
    .bind(files.iter().map(|f| i64::from(f.mode)).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.mtime.0).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.sha256.as_str()).collect::<Vec<_>>())
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parent_of(p: &NsPath) -> String {
    p.parent().unwrap_or_else(NsPath::root).as_str().to_owned()
}

fn webhook_from_row(row: &PgRow) -> Result<Webhook> {
    let ns: Option<String> = row.try_get("namespace")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        workspace: WorkspaceId::parse(row.try_get("workspace_id")?)?,
        url: row.try_get("url")?,
        events: row.try_get("events")?,
        namespace: ns.map(|n| Namespace::parse(&n)).transpose()?,
        description: row.try_get("description")?,
        secret: row.try_get("secret")?,
        enabled: row.try_get("enabled")?,
        created_at: Micros(row.try_get("created_at")?),
        last_delivery_at: row
            .try_get::<Option<i64>, _>("last_delivery_at")?
            .map(Micros),
        last_delivery_ok: row.try_get("last_delivery_ok")?,
        last_delivery_status: row
            .try_get::<Option<i32>, _>("last_delivery_status")?
            .map(|v| v as u16),
    })
}

fn event_from_row(row: &PgRow) -> Result<EventRecord> {
    Ok(EventRecord {
        seq: LogPos::from_raw(row.try_get("pos")?),
        id: EventId::from_string(row.try_get("id")?),
        kind: row.try_get("type")?,
        workspace: WorkspaceId::parse(row.try_get("workspace_id")?)?,
        namespace: row.try_get("namespace")?,
        key_id: row.try_get("key_id")?,
        created_at: Micros(row.try_get("created_at")?),
        data: row.try_get("data")?,
    })
}

/// `data` as text: it goes back out as the JSON the event was appended with.
const EVENT_COLUMNS: &str =
    "pos, id, type, workspace_id, namespace, key_id, created_at, data::text AS data";
const WEBHOOK_COLUMNS: &str = "id, workspace_id, url, events, namespace, description, secret, \
     enabled, created_at, last_delivery_at, last_delivery_ok, last_delivery_status";

async fn record_result(tx: &mut Tx, webhook_id: &str, r: &AttemptResult) -> Result<()> {
    sqlx::query(
        "UPDATE webhooks SET last_delivery_at = $1, last_delivery_ok = $2,
           last_delivery_status = $3
         WHERE id = $4",
    )
    .bind(r.at.0)
    .bind(r.ok)
    .bind(r.status.map(i32::from))
    .bind(webhook_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
