//! The metadata store: workspaces, API keys, the file tree index and the event log.
//!
//! [`MetaStore`] is the interface the services use, made of one narrow trait per kind of record
//! ([`KeyStore`], [`TreeStore`], [`EventLog`], …). Each method is one transaction, so a state
//! change and the event that records it are committed together or not at all. [`open`] picks
//! the backend from the database URL; nothing outside this module names one. SQLite
//! (`sqlite/`) is the embedded default; PostgreSQL (`postgres/`) is for several servers on one
//! database. Both implement the same traits and run through the same suite
//! (`tests/meta_store.rs`).

mod group;
mod postgres;
mod rows;
mod sqlite;
pub mod transfer;

use async_trait::async_trait;
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

use crate::coord::{DeleteLock, NamespaceLock, WriteLock};
use crate::ids::{EventId, KeyId, Micros};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The change contradicts the current tree (a file where a directory is needed, …).
    #[error("{0}")]
    Conflict(String),
    /// The namespace has been deleted (and not yet purged): nothing may change in it.
    #[error("namespace {0} is deleted")]
    NamespaceDeleted(String),
    /// The database is momentarily too busy (a lock wait ran out); retrying soon may succeed.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database cannot be reached (connections refused or lost); retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Backend(sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: expected sqlite://path or postgres://…")]
    UnsupportedUrl(String),
}

/// Sorts sqlx's errors into the classes callers act on: busy and unreachable databases are
/// worth retrying, the rest are not.
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Error::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if is_busy(db.code().as_deref()) => {
                Error::Busy(e.to_string())
            }
            _ => Error::Backend(e),
        }
    }
}

/// SQLite's `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6), with their extended codes; PostgreSQL's
/// serialization failure, deadlock and lock-timeout SQLSTATEs.
fn is_busy(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // A SQLSTATE is always five characters; SQLite's (extended) codes are at most four digits.
    if code.len() == 5 {
        return matches!(code, "40001" | "40P01" | "55P03");
    }
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Opens the metadata store at `url` (`sqlite://path`, `sqlite::memory:`,
/// `postgres://user[:password]@host[:port]/database`), applying pending migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn MetaStore>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(Error::UnsupportedUrl(url.to_owned()))
    }
}

/// A name or path read back from the database that no longer validates: corruption.
impl From<warren_storage::NameError> for Error {
    fn from(e: warren_storage::NameError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Workspace,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Workspace => "workspace",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Scope::Admin),
            "workspace" => Ok(Scope::Workspace),
            other => Err(Error::Corrupt(format!("unknown key scope {other:?}"))),
        }
    }
}

/// An API key as stored, minus its hash.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: KeyId,
    pub workspace: WorkspaceId,
    pub name: String,
    pub prefix: String,
    pub scope: Scope,
    /// The namespace a workspace key is locked to; `None` for admin and unlocked keys.
    pub namespace: Option<Namespace>,
    pub created_at: Micros,
    pub last_used_at: Option<Micros>,
    /// Installed by the server from its configured admin key, and retired when another one
    /// is configured.
    pub bootstrap: bool,
}

/// A key to insert: the record plus the HMAC of its plaintext.
pub struct NewKey {
    pub record: KeyRecord,
    pub hash: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "file" => Ok(EntryKind::File),
            "dir" => Ok(EntryKind::Dir),
            "symlink" => Ok(EntryKind::Symlink),
            other => Err(Error::Corrupt(format!("unknown entry kind {other:?}"))),
        }
    }
}

/// One node of a namespace's tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: NsPath,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: Micros,
    pub sha256: Option<String>,
    pub target: Option<String>,
}

/// A file to record after its bytes were stored.
#[derive(Debug, Clone)]
pub struct FileWrite {
    pub path: NsPath,
    pub size: u64,
    pub mode: u32,
    pub mtime: Micros,
    pub sha256: String,
}

/// One change to a namespace's tree, as an exec's sync-back records it.
#[derive(Debug, Clone)]
pub enum TreeOp {
    /// Remove every entry of the namespace.
    Clear,
    /// Remove the entry at the path and everything below it.
    Delete(NsPath),
    /// Remove everything below the directory at the path, keeping it.
    DeleteBelow(NsPath),
    /// Make the path a directory (replacing a file or link; keeping an existing directory).
    Dir(NsPath, Micros),
    /// Make the path this file (replacing whatever was there, a directory with its contents).
    File(FileWrite),
    /// Make the path a symlink to `target` (stored, never followed).
    Symlink {
        path: NsPath,
        target: String,
        mtime: Micros,
    },
}

/// An event to append in the same transaction as the change it records. The store stamps its
/// time and position (see [`EventLog`]).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub kind: &'static str,
    pub workspace: WorkspaceId,
    pub namespace: Option<Namespace>,
    pub key_id: Option<KeyId>,
    /// The event's `data` object, already serialized as JSON.
    pub data: String,
}

/// Defines an opaque log position: positions compare in log order and are handed back to the
/// store (or to clients as a token, `seq-N`); nothing outside a backend computes with them.
macro_rules! log_position {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(i64);

        impl $name {
            /// Before every entry (and the position of an entry not yet stored).
            pub const START: $name = $name(0);

            /// For backends: their own representation of a position.
            pub(crate) fn from_raw(raw: i64) -> Self {
                Self(raw)
            }

            pub(crate) fn raw(self) -> i64 {
                self.0
            }

            /// The position as clients see it (a paging cursor).
            pub fn token(self) -> String {
                format!("seq-{}", self.0)
            }

            pub fn from_token(s: &str) -> Option<Self> {
                s.strip_prefix("seq-")?.parse().ok().map(Self)
            }
        }
    };
}

/// The key range holding everything below directory `p`, in the bytewise path order every
/// backend keeps: paths under `p` start with `p/`, and `0` is the byte after `/`, so they all
/// sort in `[p/, p0)`.
pub fn subtree_range(p: &str) -> (String, String) {
    (format!("{p}/"), format!("{p}0"))
}

/// Whether a file may be written at `path`, given the `(path, kind)` rows at it and its
/// ancestors: nothing above it may be other than a directory, and it may not be one itself.
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

/// A stored key hash, which is always 32 bytes.
fn hash32(hash: Vec<u8>) -> Result<[u8; 32]> {
    hash.try_into()
        .map_err(|_| Error::Corrupt("key hash is not 32 bytes".into()))
}

log_position!(
    /// A position in the event log.
    LogPos
);

log_position!(
    /// A position in the audit trail.
    AuditPos
);

/// An event as stored.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Position in the log: commit order.
    pub seq: LogPos,
    pub id: EventId,
    pub kind: String,
    pub workspace: WorkspaceId,
    pub namespace: Option<String>,
    pub key_id: Option<String>,
    pub created_at: Micros,
    pub data: String,
}

/// A page of the event log.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub workspace: WorkspaceId,
    pub namespace: Option<Namespace>,
    /// Only these types; all when empty.
    pub types: Vec<String>,
    /// Never these types.
    pub hidden_types: &'static [&'static str],
    /// Only events strictly after this time.
    pub since: Option<Micros>,
    /// Only events strictly before this log position (the paging cursor).
    pub before_seq: Option<LogPos>,
    pub limit: u32,
}

impl EventQuery {
    pub fn newest(workspace: WorkspaceId, limit: u32) -> Self {
        Self {
            workspace,
            namespace: None,
            types: Vec::new(),
            hidden_types: &[],
            since: None,
            before_seq: None,
            limit,
        }
    }
}

/// A webhook subscription.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub workspace: WorkspaceId,
    pub url: String,
    pub events: Vec<String>,
    pub namespace: Option<Namespace>,
    pub description: Option<String>,
    pub secret: String,
    pub enabled: bool,
    pub created_at: Micros,
    pub last_delivery_at: Option<Micros>,
    pub last_delivery_ok: Option<bool>,
    pub last_delivery_status: Option<u16>,
}

/// Proof that a worker holds a delivery's lease. Finishing the delivery needs it, so a worker
/// whose lease ran out, and whose delivery another worker has claimed since, cannot record its
/// outcome over the other's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken(String);

impl LeaseToken {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A delivery claimed by a worker: the subscription, the event, and how many attempts came
/// before this one.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub lease: LeaseToken,
    pub webhook: Webhook,
    pub event: EventRecord,
    pub attempts: u32,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub ok: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: Micros,
    /// How long to wait before trying again; `None` when this was the last attempt (or it
    /// succeeded). A duration, not a time: the store's clock decides when that is.
    pub retry_after: Option<std::time::Duration>,
}

/// One audited operation.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the trail ([`AuditPos::START`] before it is stored).
    pub seq: AuditPos,
    pub workspace: WorkspaceId,
    pub key_id: String,
    pub namespace: Option<String>,
    pub operation: String,
    pub path: Option<String>,
    pub status: u16,
    pub created_at: Micros,
}

/// A slice of the audit trail. Newest first, unless `oldest_first`.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub workspace: WorkspaceId,
    pub key_id: Option<String>,
    pub namespace: Option<String>,
    pub operation: Option<String>,
    /// Inclusive lower and exclusive upper bounds on `created_at`.
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    /// Continue past this position (below it newest-first, above it oldest-first).
    pub cursor: Option<AuditPos>,
    pub oldest_first: bool,
    pub limit: u32,
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    pub events: u64,
    pub deliveries: u64,
    pub audit: u64,
}

/// A snapshot as catalogued.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub id: SnapshotId,
    pub workspace: WorkspaceId,
    pub namespace: Namespace,
    pub label: Option<String>,
    pub size_bytes: u64,
    pub file_count: u64,
    pub key_id: Option<String>,
    pub created_at: Micros,
    pub expires_at: Micros,
}

/// A namespace with its usage, for operators.
#[derive(Debug, Clone)]
pub struct NamespaceUsage {
    pub name: String,
    pub state: String,
    pub files: u64,
    pub bytes: u64,
    pub created_at: Micros,
    pub deleted_at: Option<Micros>,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    /// The newest event in the namespace, if the log still holds one.
    pub last_activity: Option<Micros>,
}

/// Server settings and workspaces.
#[async_trait]
pub trait Workspaces: Send + Sync {
    async fn get_setting(&self, name: &str) -> Result<Option<String>>;

    /// Creates `candidate` and records it as the server's default workspace unless a default
    /// exists. Returns the default, and whether it was created by this call.
    async fn ensure_default_workspace(
        &self,
        candidate: &WorkspaceId,
        name: &str,
        now: Micros,
    ) -> Result<(WorkspaceId, bool)>;
}

/// API keys, stored by the HMAC of their plaintext.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_key(&self, key: &NewKey, event: &NewEvent) -> Result<()>;

    /// The active (not revoked) key with this hash, and the hash as stored.
    async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(KeyRecord, [u8; 32])>>;

    /// Active keys of a workspace, oldest first.
    async fn list_keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>>;

    /// Revokes an active key; returns its hash, or `None` if no such active key exists.
    async fn revoke_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        event: &NewEvent,
    ) -> Result<Option<[u8; 32]>>;

    /// Replaces an active key's secret; returns the old hash and the updated record.
    async fn rotate_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        new_hash: &[u8; 32],
        new_prefix: &str,
        event: &NewEvent,
    ) -> Result<Option<([u8; 32], KeyRecord)>>;

    async fn touch_key(&self, id: &KeyId, at: Micros) -> Result<()>;
}

/// Each namespace's file tree: what the index says exists, and its generation.
#[async_trait]
pub trait TreeStore: Send + Sync {
    async fn get_entry(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<Option<Entry>>;

    /// Up to `limit` children of a directory: directories first, then everything else, each
    /// by name (bytewise).
    async fn list_children(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        dir: &NsPath,
        limit: usize,
    ) -> Result<Vec<Entry>>;

    /// Fails with [`Error::Conflict`] if a file could not be written at `path` now (an ancestor
    /// is not a directory, or the path is a directory). A cheap early check before bytes are
    /// uploaded; [`TreeStore::commit_write`] checks again authoritatively.
    async fn check_writable(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<()>;

    /// Records a written file, creating missing ancestor directories and the namespace itself,
    /// bumps the namespace generation and appends `event`; all in one transaction. The write's
    /// lock names the workspace, namespace and path.
    async fn commit_write(
        &self,
        lock: &WriteLock,
        file: &FileWrite,
        event: &NewEvent,
    ) -> Result<()>;

    /// Removes the locked path and, for a directory, everything below it, and appends `event`,
    /// in one transaction. Returns the removed files (whose bytes the caller deletes next,
    /// still holding the lock), or `None` when nothing exists at the path.
    async fn commit_delete(
        &self,
        lock: &DeleteLock,
        event: &NewEvent,
    ) -> Result<Option<Vec<NsPath>>>;

    /// Replaces the locked namespace's whole tree with `files` (and the directories above
    /// them), bumps its generation and appends `event`, in one transaction. The caller
    /// guarantees no file is also an ancestor of another.
    async fn replace_tree(
        &self,
        lock: &NamespaceLock,
        files: &[FileWrite],
        event: &NewEvent,
    ) -> Result<()>;

    /// Applies `ops` to the locked namespace in order, bumping the generation once if there
    /// are any, and appends `events`, in one transaction. Returns the generation before and
    /// after. The caller lists every directory before what it holds.
    async fn commit_tree_ops(
        &self,
        lock: &NamespaceLock,
        ops: &[TreeOp],
        events: &[NewEvent],
    ) -> Result<(u64, u64)>;

    /// Every entry of a namespace's tree, by path.
    async fn tree(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<Entry>>;

    /// Paths of every file (not directory or link) of a namespace.
    async fn file_paths(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<NsPath>>;

    /// The namespace's generation; 0 for a namespace never written.
    async fn generation(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<u64>;

    /// What changed in the tree after generation `since` (the journal): every entry written
    /// after it, and every path removed after it that does not exist now, each by path.
    /// `None` when the journal no longer reaches back that far: the caller reads the whole
    /// tree instead. Costs what changed, not the size of the namespace.
    async fn tree_changes(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        since: u64,
    ) -> Result<Option<TreeChanges>>;

    /// Forgets removals recorded before `before`, raising each namespace's journal floor past
    /// them; returns how many were forgotten.
    async fn prune_journal(&self, before: Micros) -> Result<u64>;
}

/// A tree's changes after a generation (see [`TreeStore::tree_changes`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TreeChanges {
    /// Entries written since, by path (so a directory comes before what it holds).
    pub written: Vec<Entry>,
    /// Paths removed since that do not exist now, by path.
    pub removed: Vec<NsPath>,
}

/// What a namespace's purge removes: objects (files and snapshot archives), their bytes, and
/// how many of the objects are snapshot archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeInventory {
    pub objects: u64,
    pub bytes: u64,
    pub snapshot_objects: u64,
}

/// `begin_purge`'s answer from the row it updated (`None`: no purgeable namespace) and the
/// inventory columns it returned, which are empty for a purge begun before they existed.
type PurgeColumns = Option<(Option<i64>, Option<i64>, Option<i64>)>;

impl PurgeInventory {
    fn recorded(row: PurgeColumns, counted: Self) -> Option<Self> {
        row.map(|(objects, bytes, snapshots)| match objects {
            Some(objects) => Self {
                objects: objects as u64,
                bytes: bytes.unwrap_or(0) as u64,
                snapshot_objects: snapshots.unwrap_or(0) as u64,
            },
            None => counted,
        })
    }
}

impl TreeChanges {
    /// The journal's answer from what a backend read, the floor last: `None` when the floor
    /// is past `since`.
    fn read(
        since: u64,
        written: Vec<Entry>,
        removed: &[String],
        floor: Option<i64>,
    ) -> Result<Option<Self>> {
        if floor.unwrap_or(0) as u64 > since {
            return Ok(None);
        }
        Ok(Some(Self {
            written,
            removed: removed
                .iter()
                .map(|p| Ok(NsPath::parse(p)?))
                .collect::<Result<_>>()?,
        }))
    }
}

/// The catalogue of stored snapshots.
#[async_trait]
pub trait SnapshotCatalog: Send + Sync {
    /// Catalogues a stored snapshot and appends its event. Fails with
    /// [`Error::NamespaceDeleted`] if the namespace is deleted.
    async fn insert_snapshot(&self, snap: &SnapshotRecord, event: &NewEvent) -> Result<()>;

    /// A namespace's snapshots, newest first.
    async fn list_snapshots(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>>;

    async fn get_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>>;

    /// Removes a snapshot from the catalogue and appends its event; false if there was none.
    async fn delete_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
        event: &NewEvent,
    ) -> Result<bool>;

    /// Up to `limit` snapshots whose expiry is at or before `now`, oldest expiry first.
    async fn expired_snapshots(&self, now: Micros, limit: u32) -> Result<Vec<SnapshotRecord>>;
}

/// Namespaces with their usage, deletion, restore and purge.
#[async_trait]
pub trait NamespaceLifecycle: Send + Sync {
    async fn list_namespaces(&self, ws: &WorkspaceId) -> Result<Vec<NamespaceUsage>>;

    /// Marks an active namespace deleted and revokes the keys locked to it, appending
    /// `namespace.deleted` and a `key.revoked` per key; returns the revoked keys with their
    /// hashes, or `None` if there is no active namespace of that name.
    async fn delete_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
        key_event: &(dyn for<'k> Fn(&'k KeyId) -> NewEvent + Send + Sync),
    ) -> Result<Option<Vec<(KeyId, [u8; 32])>>>;

    /// Makes a deleted (not yet purged) namespace active again; false if there is none.
    async fn restore_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool>;

    /// Moves a deleted namespace to `purging`, from which it can no longer be restored,
    /// recording `counted` (what is there to remove, counted before any removal). Returns the
    /// inventory the purge reports: `counted`, or the one recorded when the purge first began
    /// (it was interrupted and is being finished); `None` if it is neither deleted nor purging.
    async fn begin_purge(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        counted: PurgeInventory,
    ) -> Result<Option<PurgeInventory>>;

    /// Every deleted or purging (not yet purged) namespace, with when it was deleted.
    async fn deleted_namespaces(&self) -> Result<Vec<(WorkspaceId, Namespace, Micros)>>;

    /// Removes a purging namespace's index rows and snapshot records and marks it purged,
    /// appending `event` (the proof); the caller has already removed its objects. False if it
    /// is not purging.
    async fn purge_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool>;
}

/// The workspace's event log, appended by the other stores' transactions.
///
/// The store stamps each event with its time and log position when it commits. Both strictly
/// increase in commit order within a workspace, and an event is visible to readers only once
/// every event before it is: a reader that polls `events_after(last position seen)` or
/// `since = last time seen` while others append sees every event exactly once, in order.
/// Positions are opaque: compare them and hand them back, never compute with them.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// The newest events of a workspace, newest first.
    async fn recent_events(&self, ws: &WorkspaceId, limit: u32) -> Result<Vec<EventRecord>> {
        self.query_events(&EventQuery::newest(ws.clone(), limit))
            .await
    }

    /// Events matching `q`, newest first.
    async fn query_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>>;

    /// Up to `limit` events after log position `after`, oldest first (the live stream).
    async fn events_after(
        &self,
        ws: &WorkspaceId,
        namespace: Option<&Namespace>,
        after: LogPos,
        limit: u32,
    ) -> Result<Vec<EventRecord>>;

    /// The newest log position of a workspace ([`LogPos::START`] when it has no events).
    async fn last_event_seq(&self, ws: &WorkspaceId) -> Result<LogPos>;

    /// Changes after this process commits a change that appended events, so a poller can wait
    /// on it instead of polling blindly. A wake-up promises nothing (the commit may have appended
    /// nothing this poller wants); events committed by other processes may come with none, so
    /// pollers still poll, less often.
    fn appended(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Webhook subscriptions and the outbox of their deliveries.
#[async_trait]
pub trait WebhookOutbox: Send + Sync {
    async fn insert_webhook(&self, hook: &Webhook, event: &NewEvent) -> Result<()>;

    /// Live (not deleted) subscriptions of a workspace, oldest first.
    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>>;

    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Option<Webhook>>;

    /// Deletes a subscription and cancels its pending deliveries; false if there was none.
    async fn delete_webhook(&self, ws: &WorkspaceId, id: &str, event: &NewEvent) -> Result<bool>;

    /// Leases up to `limit` due deliveries for `lease`, oldest first, at most `per_webhook`
    /// for any one subscription, skipping subscriptions that already have a delivery leased.
    /// A delivery whose lease ran out without being finished is due again. Each claim hands
    /// out a new [`LeaseToken`].
    async fn claim_deliveries(
        &self,
        lease: std::time::Duration,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Records an attempt on a claimed delivery and on its subscription's health fields: it
    /// is delivered, failed for good, or pending again after `retry_after`. False, recording
    /// nothing, if `lease` is no longer the delivery's (it was claimed again since, or it was
    /// cancelled).
    async fn finish_delivery(
        &self,
        delivery_id: i64,
        lease: &LeaseToken,
        result: &AttemptResult,
    ) -> Result<bool>;

    /// Records the outcome of a test delivery on the subscription's health fields.
    async fn record_webhook_result(&self, webhook_id: &str, result: &AttemptResult) -> Result<()>;

    /// Deliveries still to be made (pending, due or not): the outbox's backlog.
    async fn pending_deliveries(&self) -> Result<u64>;
}

/// The audit trail, and the retention sweep of the logs.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<()>;

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>>;

    /// Deletes events (with their finished deliveries) and audit records older than `cutoff`,
    /// at most `batch` of each per call, so a large backlog is removed in bounded steps.
    async fn sweep_log(&self, cutoff: Micros, batch: u32) -> Result<Swept>;

    /// What [`AuditLog::sweep_log`] would remove for `cutoff`, all batches together, without
    /// removing anything (the dry run).
    async fn count_log(&self, cutoff: Micros) -> Result<Swept>;
}

/// The event types every node of a cluster must act on as soon as they commit.
pub const CLUSTER_CHANGE_TYPES: &[&str] = &[
    "key.revoked",
    "key.rotated",
    "namespace.deleted",
    "namespace.restored",
    "namespace.purged",
];

/// What one poll of the cluster's changes found.
#[derive(Debug, Clone)]
pub struct PolledChanges {
    /// Everything committed before this database time is among what the poll saw.
    pub seen_through: Micros,
    /// The change events ([`CLUSTER_CHANGE_TYPES`]) after the positions asked from, per
    /// workspace in position order.
    pub changes: Vec<EventRecord>,
}

/// Proof that a commit's cluster-wide locks are still held: the database session holding
/// them and one lock it holds. A commit carrying a fence is refused with
/// [`Error::Unavailable`] once that session has lost its locks (they end together), so a node
/// that lost its locks cannot commit over what another node did meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub session: i32,
    pub lock: i64,
}

/// Locks [`ClusterStore::hold_locks`] took: released when `guard` drops.
pub struct HeldLocks {
    pub guard: Box<dyn std::any::Any + Send + Sync>,
    pub fence: Fence,
}

/// What the nodes sharing one database need from it beyond the records: a feed of changes
/// (each node polls the event log for [`CLUSTER_CHANGE_TYPES`] and records, with a heartbeat,
/// how far it has applied them; a node that made a change waits for the others to pass it),
/// and locks that span the nodes. Only a shareable database has one.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Takes the named locks, in order, shared or exclusive (`true`), for every node sharing
    /// the database; held until the returned guard drops. For short holds (a write's publish
    /// and commit): on sessions kept for locks. Commits made under them carry the fence.
    async fn hold_locks(&self, locks: &[(String, bool)]) -> Result<HeldLocks>;

    /// Waits for the namespace's cluster-wide exec turn: held until the returned guard drops.
    /// On a session of its own, so a waiting exec takes no pooled connection.
    async fn exec_lock(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>>;

    /// Takes or renews the lease `name` for `holder` for `ttl`, if it is free, expired or
    /// already `holder`'s; returns its token (unchanged while one holder renews), or `None`.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<i64>>;

    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Registers `node` (again, after a restart or an expiry) and returns each workspace's
    /// current log head: where its polling starts.
    async fn join(&self, node: &str) -> Result<Vec<(WorkspaceId, LogPos)>>;

    /// Removes `node` (a graceful shutdown), so nobody waits for it.
    async fn leave(&self, node: &str) -> Result<()>;

    /// Change events after `after` (per workspace; a workspace missing there is read from its
    /// start), at most `limit`.
    async fn poll_changes(
        &self,
        after: &[(WorkspaceId, LogPos)],
        limit: u32,
    ) -> Result<PolledChanges>;

    /// Records that `node` is alive and has applied every change committed before `through`.
    async fn applied(&self, node: &str, through: Micros) -> Result<()>;

    /// The database's clock: a change committed before a call returns is before this time.
    async fn now(&self) -> Result<Micros>;

    /// The other nodes that have heartbeat within `alive` but not applied through `t`.
    async fn behind(&self, me: &str, t: Micros, alive: std::time::Duration) -> Result<Vec<String>>;
}

/// A browser login of the CLI just started: both codes as HMACs, never as given.
#[derive(Debug, Clone)]
pub struct NewDeviceLogin {
    pub device_hash: [u8; 32],
    pub user_hash: [u8; 32],
    pub created_at: Micros,
    pub expires_at: Micros,
}

/// The key an approval asks for: minted when the CLI's poll takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedLogin {
    pub workspace: String,
    /// The namespace the key is locked to, if any.
    pub namespace: Option<String>,
    pub key_name: String,
    /// The admin key that approved, credited with the key's creation.
    pub approved_by: String,
}

/// What an operator decided about a pending login.
#[derive(Debug, Clone)]
pub enum DeviceDecision {
    Approve(ApprovedLogin),
    Deny,
}

/// What a poll finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    Pending,
    /// Taken by this poll, and by no other: the login is spent.
    Approved(ApprovedLogin),
    Denied,
    /// Unknown, expired or already taken.
    Expired,
}

/// Browser logins in flight (spec §5.2). Every method is one statement or one transaction, so
/// two nodes polling or deciding the same login agree on what happened.
#[async_trait]
pub trait DeviceLogins: Send + Sync {
    /// Records a pending login; false, recording nothing, if either code is taken already
    /// (the caller draws new ones).
    async fn insert_device_login(&self, login: &NewDeviceLogin) -> Result<bool>;

    /// When the pending, unexpired login with this user code expires, if there is one.
    async fn pending_device_login(
        &self,
        user_hash: &[u8; 32],
        now: Micros,
    ) -> Result<Option<Micros>>;

    /// Decides a pending, unexpired login; false, changing nothing, if there is none.
    async fn decide_device_login(
        &self,
        user_hash: &[u8; 32],
        decision: &DeviceDecision,
        now: Micros,
    ) -> Result<bool>;

    /// The login with this device code as of `now`; an approved one is handed out once.
    async fn poll_device_login(&self, device_hash: &[u8; 32], now: Micros) -> Result<DevicePoll>;

    /// Pending, unexpired logins: what the cap on them counts.
    async fn count_pending_device_logins(&self, now: Micros) -> Result<u64>;

    /// Removes logins that expired before `cutoff`; how many.
    async fn sweep_device_logins(&self, cutoff: Micros) -> Result<u64>;
}

/// Everything Warren keeps in its database; one implementation per backend, opened by [`open`]
/// and run through the one suite in `tests/meta_store.rs`, which pins every method's contract
/// (concurrent appenders and pollers, lease fencing and sweeps included).
#[async_trait]
pub trait MetaStore:
    Workspaces
    + KeyStore
    + TreeStore
    + SnapshotCatalog
    + NamespaceLifecycle
    + EventLog
    + WebhookOutbox
    + AuditLog
    + DeviceLogins
    + Send
    + Sync
    + 'static
{
    /// Waits for pending writes and closes every connection.
    async fn close(&self);

    /// What nodes sharing this database coordinate through; `None` for a database only one
    /// process uses.
    fn cluster_store(&self) -> Option<&dyn ClusterStore> {
        None
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_codes_are_told_apart() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED; PostgreSQL's retryable states.
        for code in ["5", "517", "6", "40001", "40P01", "55P03"] {
            assert!(is_busy(Some(code)), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE (2067), a unique violation, no code.
        for code in [Some("2067"), Some("23505"), None] {
            assert!(!is_busy(code), "{code:?}");
        }
        assert!(matches!(
            Error::from(sqlx::Error::PoolTimedOut),
            Error::Unavailable(_)
        ));
    }
}
