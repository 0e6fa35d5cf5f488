//! The coordinator of a node among several sharing one PostgreSQL database: what
//! [`InProcess`] arranges within a process, arranged across the nodes.
//!
//! - **The feed.** Every change that must reach every node (a key revoked or rotated, a
//!   namespace deleted, restored or purged) is already an event, committed with the change
//!   itself. Each node polls the log for those events ([`ClusterStore`]), applies them through
//!   its reactor, and records how far it has applied them and that it is alive.
//!   [`Coordinator::publish`] applies the change here, then waits until every live node has
//!   applied past the change's commit, so a revocation returns only when no node accepts the
//!   key and no node runs anything under it.
//! - **Self-fencing.** A node that has not completed a poll for
//!   [`ClusterSettings::fence_after`] cannot know what was revoked meanwhile: it refuses
//!   authenticated requests ([`Coordinator::fenced`]) and ends everything it runs until a poll
//!   succeeds again. Publishers stop waiting for a node whose heartbeat is older than
//!   [`ClusterSettings::dead_after`], which is longer, so by then it has fenced itself. That
//!   bounds a revocation by `dead_after` even with a node cut off.
//! - **Exec turns** span the cluster: a session-level advisory lock per namespace.
//! - **Leadership** of the retention sweeps is a lease row (webhook delivery runs on every
//!   node, each attempt claimed by one).
//! - **Tree locks** are this process's and then the cluster's (advisory locks on pooled
//!   sessions kept for them), in one order everywhere. Each lock carries a [`Fence`]: the
//!   commit made under it is refused if the lock's session has lost it meanwhile.
//!
//! [`Fence`]: crate::db::Fence

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use warren_storage::{Namespace, NsPath, WorkspaceId};

use super::{
    Change, Coordinator, DeleteLock, Duty, ExecTurn, InProcess, Leadership, NamespaceLock, Reactor,
    Unavailable, WriteLock,
};
use crate::db::{ClusterStore, EventRecord, HeldLocks, LogPos, MetaStore};
use crate::ids::KeyId;

/// The feed's timing.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSettings {
    /// How often a node polls for changes.
    pub poll: Duration,
    /// How long a node goes without a successful poll before it fences itself.
    pub fence_after: Duration,
    /// How long since its last heartbeat a node is still waited for; longer than
    /// `fence_after`.
    pub dead_after: Duration,
    /// How long a duty's leader holds its lease unrenewed (it renews every third of it).
    pub lease: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            fence_after: Duration::from_secs(2),
            dead_after: Duration::from_secs(3),
            lease: Duration::from_secs(30),
        }
    }
}

/// Changes read per poll.
const POLL_LIMIT: u32 = 1000;
/// How long a request waits for a catch-up poll when this node looks stale.
const CATCH_UP: Duration = Duration::from_millis(500);
/// How often a publisher checks whether the other nodes have caught up.
const ACK_POLL: Duration = Duration::from_millis(5);

pub struct Clustered {
    local: Arc<InProcess>,
    meta: Arc<dyn MetaStore>,
    node: String,
    settings: ClusterSettings,
    /// When the last successful poll began (the node is current as of then).
    current_at: Mutex<Instant>,
    /// Where polling goes on from, per workspace; `None` until the node has joined. Shared by
    /// the feed task and a request catching up.
    heads: tokio::sync::Mutex<Option<Vec<(WorkspaceId, LogPos)>>>,
}

impl Clustered {
    /// A coordinator for a node with a random id; its feed runs in [`Clustered::run`].
    pub fn new(meta: Arc<dyn MetaStore>, settings: ClusterSettings) -> Arc<Self> {
        let mut id = [0u8; 8];
        rand::fill(&mut id);
        Arc::new(Self {
            local: InProcess::new(),
            meta,
            node: format!("node-{}", hex::encode(id)),
            settings,
            current_at: Mutex::new(Instant::now()),
            heads: tokio::sync::Mutex::new(None),
        })
    }

    async fn tree_locks(&self, locks: &[(String, bool)]) -> Result<HeldLocks, Unavailable> {
        self.store()
            .hold_locks(locks)
            .await
            .map_err(|e| Unavailable(format!("cannot take a tree lock: {e}")))
    }

    fn store(&self) -> &dyn ClusterStore {
        self.meta
            .cluster_store()
            .expect("a clustered coordinator runs on a database with a cluster store")
    }

    /// Follows the cluster's changes until `shutdown`, then leaves the cluster.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            match self.store().join(&self.node).await {
                Ok(heads) => {
                    *self.heads.lock().await = Some(heads);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot join the cluster yet"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        *self.current_at.lock().unwrap() = Instant::now();
        let mut fenced = false;
        loop {
            // Bounded, so a poll hanging on a dead connection still lets the node fence.
            match self.catch_up(self.settings.fence_after).await {
                Ok(()) if fenced => {
                    tracing::info!(node = %self.node, "current with the cluster again");
                    fenced = false;
                }
                Ok(()) => {}
                Err(why) => tracing::warn!(node = %self.node, %why, "cluster poll failed"),
            }
            // Only a poll that failed fences: one that was merely late has just caught up.
            if !fenced && self.fenced() {
                fenced = true;
                tracing::warn!(node = %self.node, "lost the cluster: fenced, ending every exec");
                if let Some(r) = self.local.reactor() {
                    r.fence().await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        if let Err(e) = self.store().leave(&self.node).await {
            tracing::warn!(node = %self.node, error = %e, "could not leave the cluster");
        }
    }

    /// Polls once (within `limit`), applying what changed; on success the node is current as
    /// of the poll's start.
    async fn catch_up(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut heads = tokio::time::timeout(limit, self.heads.lock())
            .await
            .map_err(|_| "another poll is stuck".to_owned())?;
        let heads = heads.as_mut().ok_or("not joined yet")?;
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), self.poll(heads)).await
        {
            Ok(Ok(())) => {
                let mut at = self.current_at.lock().unwrap();
                *at = (*at).max(started);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// One poll: apply what changed since `heads`, then record how far this node is.
    async fn poll(&self, heads: &mut Vec<(WorkspaceId, LogPos)>) -> crate::db::Result<()> {
        loop {
            let polled = self.store().poll_changes(heads, POLL_LIMIT).await?;
            let full = polled.changes.len() as u32 == POLL_LIMIT;
            if let Some(reactor) = self.local.reactor() {
                for event in &polled.changes {
                    if let Some(change) = change_of(event) {
                        reactor.apply(&change).await;
                    }
                }
            }
            for event in &polled.changes {
                match heads.iter_mut().find(|(ws, _)| *ws == event.workspace) {
                    Some((_, pos)) => *pos = (*pos).max(event.seq),
                    None => heads.push((event.workspace.clone(), event.seq)),
                }
            }
            if !full {
                return self.store().applied(&self.node, polled.seen_through).await;
            }
        }
    }
}

/// The cluster-wide lock names of the tree locks (see `tree_lock.rs` for what each guards).
fn namespace_lock(ws: &WorkspaceId, ns: &Namespace) -> String {
    format!("tree/ns/{ws}/{ns}")
}

fn subtree_lock(ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> String {
    format!("tree/sub/{ws}/{ns}/{}", super::top(path))
}

/// The change an event records, if it is one every node acts on.
fn change_of(event: &EventRecord) -> Option<Change> {
    let ns = || {
        let ns = Namespace::parse(event.namespace.as_deref()?).ok()?;
        Some((event.workspace.clone(), ns))
    };
    let key = || {
        let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
        Some(KeyId::from_string(data["key_id"].as_str()?.to_owned()))
    };
    match event.kind.as_str() {
        "key.revoked" | "key.rotated" => Some(Change::KeyRevoked { key: key()? }),
        "namespace.deleted" => ns().map(|(ws, ns)| Change::NamespaceDeleted { ws, ns }),
        "namespace.restored" => ns().map(|(ws, ns)| Change::NamespaceRestored { ws, ns }),
        "namespace.purged" => ns().map(|(ws, ns)| Change::NamespacePurged { ws, ns }),
        _ => None,
    }
}

#[async_trait]
impl Coordinator for Clustered {
    /// Each tree lock is this process's (so its own operations queue in memory) and then the
    /// cluster's: the same locks, shared or exclusive alike, as advisory locks taken in the
    /// same outermost-first order on every node.
    async fn lock_write(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<WriteLock, Unavailable> {
        let local = self.local.lock_write(ws, ns, path).await?;
        let cluster = self
            .tree_locks(&[
                (namespace_lock(ws, ns), false),
                (subtree_lock(ws, ns, path), false),
                (format!("tree/path/{ws}/{ns}/{path}"), true),
            ])
            .await?;
        Ok(WriteLock {
            ws: ws.clone(),
            ns: ns.clone(),
            path: path.clone(),
            fence: Some(cluster.fence),
            _held: Box::new((local, cluster.guard)),
        })
    }

    async fn lock_delete(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<DeleteLock, Unavailable> {
        let local = self.local.lock_delete(ws, ns, path).await?;
        let cluster = self
            .tree_locks(&[
                (namespace_lock(ws, ns), false),
                (subtree_lock(ws, ns, path), true),
            ])
            .await?;
        Ok(DeleteLock {
            ws: ws.clone(),
            ns: ns.clone(),
            path: path.clone(),
            fence: Some(cluster.fence),
            _held: Box::new((local, cluster.guard)),
        })
    }

    async fn lock_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<NamespaceLock, Unavailable> {
        let local = self.local.lock_namespace(ws, ns).await?;
        let cluster = self.tree_locks(&[(namespace_lock(ws, ns), true)]).await?;
        Ok(NamespaceLock {
            ws: ws.clone(),
            ns: ns.clone(),
            fence: Some(cluster.fence),
            _held: Box::new((local, cluster.guard)),
        })
    }

    /// This process's turn first, so at most one of its execs per namespace waits on the
    /// database; then the cluster's, on a session held until the turn ends. The exec reads
    /// the namespace's generation after this, so it sees what the previous holder, on
    /// whichever node, committed before letting go.
    async fn exec_turn(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<ExecTurn, Unavailable> {
        let local = self.local.exec_turn(ws, ns).await?;
        let cluster = self
            .store()
            .exec_lock(ws, ns)
            .await
            .map_err(|e| Unavailable(format!("cannot take the namespace's exec turn: {e}")))?;
        Ok(ExecTurn {
            _held: Box::new((local, cluster)),
        })
    }

    /// Webhook delivery runs on every node (each attempt is claimed by one). The retention
    /// sweeps run on the holder of a lease: taken when free or expired, renewed every third
    /// of its term, and given up as lost once a renewal fails or a term passes unrenewed.
    async fn lead(&self, duty: Duty) -> Leadership {
        let name = match duty {
            Duty::WebhookDelivery => return self.local.lead(duty).await,
            Duty::Retention => "retention",
        };
        let term = self.settings.lease;
        loop {
            match self.store().acquire_lease(name, &self.node, term).await {
                Ok(Some(token)) => {
                    tracing::info!(node = %self.node, duty = name, token, "leading");
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(duty = name, error = %e, "cannot take a lease"),
            }
            tokio::time::sleep(term / 3).await;
        }
        let lost = CancellationToken::new();
        let renewing = CancellationToken::new();
        let meta = Arc::clone(&self.meta);
        let node = self.node.clone();
        tokio::spawn({
            let (lost, renewing) = (lost.clone(), renewing.clone());
            async move {
                let store = || meta.cluster_store().expect("a cluster store");
                let mut renewed = Instant::now();
                loop {
                    tokio::select! {
                        () = renewing.cancelled() => break,
                        () = tokio::time::sleep(term / 3) => {}
                    }
                    match store().acquire_lease(name, &node, term).await {
                        Ok(Some(_)) => renewed = Instant::now(),
                        Ok(None) => break,
                        // Unreachable: still the leader until the term would have run out.
                        Err(e) if renewed.elapsed() < term * 2 / 3 => {
                            tracing::warn!(duty = name, error = %e, "cannot renew a lease");
                            continue;
                        }
                        Err(_) => break,
                    }
                }
                lost.cancel();
                if renewing.is_cancelled() {
                    // Stepping down on purpose: let the next leader start at once.
                    let _ = store().release_lease(name, &node).await;
                } else {
                    tracing::warn!(node = %node, duty = name, "lost the lease");
                }
            }
        });
        Leadership {
            lost,
            _held: Box::new(renewing.drop_guard()),
        }
    }

    /// Acts here, then waits (at most `dead_after` and a poll) for every live node to have
    /// applied past the change. The change is already committed, as an event, by the caller.
    async fn publish(&self, change: Change) {
        self.local.publish(change.clone()).await;
        let deadline = Instant::now() + self.settings.dead_after + self.settings.poll * 2;
        let committed = loop {
            match self.store().now().await {
                Ok(t) => break t,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot read the database clock");
                    tokio::time::sleep(ACK_POLL).await;
                }
                Err(e) => {
                    tracing::warn!(?change, error = %e, "published without confirmation");
                    return;
                }
            }
        };
        loop {
            match self
                .store()
                .behind(&self.node, committed, self.settings.dead_after)
                .await
            {
                Ok(behind) if behind.is_empty() => return,
                Ok(behind) if Instant::now() >= deadline => {
                    tracing::warn!(?change, ?behind, "nodes did not confirm a change in time");
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(?change, error = %e, "published without confirmation");
                    return;
                }
                _ => tokio::time::sleep(ACK_POLL).await,
            }
        }
    }

    fn set_reactor(&self, reactor: Weak<dyn Reactor>) {
        self.local.set_reactor(reactor);
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn fenced(&self) -> bool {
        self.current_at.lock().unwrap().elapsed() > self.settings.fence_after
    }

    /// A node that only looks stale (this process was too busy to poll, say) catches up here
    /// rather than turn the request away.
    async fn current(&self) -> bool {
        !self.fenced() || (self.catch_up(CATCH_UP).await.is_ok() && !self.fenced())
    }
}
