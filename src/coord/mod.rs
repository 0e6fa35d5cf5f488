//! The coordination seam: what the processes serving one Warren must agree on beyond what the
//! database records.
//!
//! - **Locks that keep an operation whole**: a file write holds its path from publishing the
//!   bytes to committing the index; a delete holds its subtree from the commit to the last
//!   object removed; a sync-back, restore or reindex holds the whole namespace. The store's
//!   commit methods take the guard as a parameter, so a commit without its lock does not
//!   compile.
//! - **Per-namespace exec ordering**: one exec at a time per namespace ([`ExecTurn`]).
//! - **Leadership** of each background duty, so one process runs it ([`Leadership`]).
//! - **One feed of changes** every process must act on at once (a key revoked or rotated, a
//!   namespace deleted, restored or purged). [`Coordinator::publish`] returns once this process
//!   has acted on the change (evicted the key from its cache, killed the execs, refused the
//!   namespace, dropped its working copy).
//!
//! [`InProcess`] is the single-process implementation the embedded default uses; [`Clustered`]
//! carries the change feed across the nodes sharing one PostgreSQL database.

mod cluster;
mod local;
mod tree_lock;

pub(crate) use tree_lock::top;

use std::any::Any;
use std::sync::Weak;

use async_trait::async_trait;
use warren_storage::{Namespace, NsPath, WorkspaceId};

use crate::db::Fence;
use crate::ids::KeyId;

pub use cluster::{ClusterSettings, Clustered};
pub use local::InProcess;

/// Something every process must act on as soon as it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key's secret no longer works (revoked, rotated away, or its namespace deleted):
    /// forget it, and end what the key has running.
    KeyRevoked {
        key: KeyId,
    },
    NamespaceDeleted {
        ws: WorkspaceId,
        ns: Namespace,
    },
    NamespaceRestored {
        ws: WorkspaceId,
        ns: Namespace,
    },
    NamespacePurged {
        ws: WorkspaceId,
        ns: Namespace,
    },
}

/// What a process does about a [`Change`].
#[async_trait]
pub trait Reactor: Send + Sync {
    async fn apply(&self, change: &Change);

    /// This process has lost track of the cluster's changes (see [`Coordinator::fenced`]):
    /// end everything running, since any key may have been revoked meanwhile.
    async fn fence(&self);
}

/// Coordination that cannot be had now (the database is unreachable, say); retrying later may
/// succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A background duty that one process at a time performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Duty {
    WebhookDelivery,
    Retention,
}

#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Held by a file write from publishing its bytes to committing its index row. Locks
    /// fail only when they cannot be arranged now (an unreachable database).
    async fn lock_write(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<WriteLock, Unavailable>;

    /// Held by a delete from committing the index to removing its objects.
    async fn lock_delete(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<DeleteLock, Unavailable>;

    /// The whole namespace, exclusively: a sync-back, restore, reindex or snapshot.
    async fn lock_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<NamespaceLock, Unavailable>;

    /// Waits for this namespace's turn to run an exec (among every process sharing the
    /// namespace), which fails only when that cannot be arranged now.
    async fn exec_turn(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<ExecTurn, Unavailable>;

    /// Waits until this process leads `duty`.
    async fn lead(&self, duty: Duty) -> Leadership;

    /// Tells every process about `change`; returns once this one has acted on it.
    async fn publish(&self, change: Change);

    /// Who acts on changes in this process. Held weakly: the reactor owns the services that
    /// own this coordinator.
    fn set_reactor(&self, reactor: Weak<dyn Reactor>);

    /// Whether this process cannot currently confirm it has seen every published change (it
    /// lost the cluster for too long): it must then refuse authenticated requests, since a
    /// key it accepts may have been revoked elsewhere. Never, in one process.
    fn fenced(&self) -> bool {
        false
    }

    /// This process's id among the nodes of a cluster; `None` alone.
    fn node(&self) -> Option<&str> {
        None
    }

    /// Whether this process may serve an authenticated request now: not fenced, or able to
    /// catch up at once.
    async fn current(&self) -> bool {
        !self.fenced()
    }
}

/// Whatever an implementation holds to keep a lock; released when dropped.
type Held = Box<dyn Any + Send + Sync>;

/// A file write's lock on one path of one namespace.
pub struct WriteLock {
    ws: WorkspaceId,
    ns: Namespace,
    path: NsPath,
    fence: Option<Fence>,
    _held: Held,
}

/// A delete's lock on one path (and everything below it).
pub struct DeleteLock {
    ws: WorkspaceId,
    ns: Namespace,
    path: NsPath,
    fence: Option<Fence>,
    _held: Held,
}

/// A lock on a whole namespace.
pub struct NamespaceLock {
    ws: WorkspaceId,
    ns: Namespace,
    fence: Option<Fence>,
    _held: Held,
}

/// A namespace's turn to run an exec.
pub struct ExecTurn {
    _held: Held,
}

/// Leadership of a duty, held until dropped.
pub struct Leadership {
    lost: tokio_util::sync::CancellationToken,
    _held: Held,
}

impl WriteLock {
    /// What the commit made under this lock must show to be accepted: `None` when the lock
    /// is this process's alone.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }
    pub fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
    pub fn path(&self) -> &NsPath {
        &self.path
    }
}

impl DeleteLock {
    /// What the commit made under this lock must show to be accepted: `None` when the lock
    /// is this process's alone.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }
    pub fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
    pub fn path(&self) -> &NsPath {
        &self.path
    }
}

impl NamespaceLock {
    /// What the commit made under this lock must show to be accepted: `None` when the lock
    /// is this process's alone.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }
    pub fn workspace(&self) -> &WorkspaceId {
        &self.ws
    }
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
}

impl Leadership {
    /// Resolves if this process stops leading (it never does in one process).
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }
}
