//! [`Coordinator`] for one process: locks are tokio locks, leadership is immediate, and a
//! published change is applied here and nowhere else.

use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use warren_storage::{Namespace, NsPath, WorkspaceId};

use super::tree_lock::TreeLocks;
use super::{
    Change, Coordinator, DeleteLock, Duty, ExecTurn, Leadership, NamespaceLock, Reactor,
    Unavailable, WriteLock,
};

#[derive(Default)]
pub struct InProcess {
    locks: TreeLocks,
    reactor: RwLock<Option<Weak<dyn Reactor>>>,
}

impl InProcess {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Who acts on changes here, while the services live.
    pub(super) fn reactor(&self) -> Option<Arc<dyn Reactor>> {
        self.reactor
            .read()
            .unwrap()
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

#[async_trait]
impl Coordinator for InProcess {
    async fn lock_write(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<WriteLock, Unavailable> {
        Ok(WriteLock {
            _held: Box::new(self.locks.write(ws, ns, path).await),
            ws: ws.clone(),
            ns: ns.clone(),
            path: path.clone(),
            fence: None,
        })
    }

    async fn lock_delete(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<DeleteLock, Unavailable> {
        Ok(DeleteLock {
            _held: Box::new(self.locks.delete(ws, ns, path).await),
            ws: ws.clone(),
            ns: ns.clone(),
            path: path.clone(),
            fence: None,
        })
    }

    async fn lock_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<NamespaceLock, Unavailable> {
        Ok(NamespaceLock {
            _held: Box::new(self.locks.namespace(ws, ns).await),
            ws: ws.clone(),
            ns: ns.clone(),
            fence: None,
        })
    }

    async fn exec_turn(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<ExecTurn, Unavailable> {
        Ok(ExecTurn {
            _held: Box::new(self.locks.exec_turn(ws, ns).await),
        })
    }

    async fn lead(&self, _duty: Duty) -> Leadership {
        Leadership {
            lost: tokio_util::sync::CancellationToken::new(),
            _held: Box::new(()),
        }
    }

    async fn publish(&self, change: Change) {
        match self.reactor() {
            Some(r) => r.apply(&change).await,
            None => tracing::warn!(?change, "a change was published with nobody to act on it"),
        }
    }

    fn set_reactor(&self, reactor: Weak<dyn Reactor>) {
        *self.reactor.write().unwrap() = Some(reactor);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::ids::KeyId;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Change>>);

    #[async_trait]
    impl Reactor for Recorder {
        async fn apply(&self, change: &Change) {
            self.0.lock().unwrap().push(change.clone());
        }

        async fn fence(&self) {}
    }

    fn names(ns: &str) -> (WorkspaceId, Namespace) {
        (
            WorkspaceId::parse("ws-00000000000000aa").unwrap(),
            Namespace::parse(ns).unwrap(),
        )
    }

    #[tokio::test]
    async fn publish_returns_after_the_reactor_has_acted() {
        let coord = InProcess::new();
        let change = Change::KeyRevoked {
            key: KeyId::from_string("key-1".into()),
        };
        // Nobody to act: logged, not lost silently, and no panic.
        coord.publish(change.clone()).await;
        let recorder = Arc::new(Recorder::default());
        let reactor: Arc<dyn Reactor> = recorder.clone();
        coord.set_reactor(Arc::downgrade(&reactor));
        coord.publish(change.clone()).await;
        assert_eq!(*recorder.0.lock().unwrap(), [change]);
    }

    #[tokio::test]
    async fn exec_turns_queue_per_namespace_only() {
        let coord = InProcess::new();
        let (ws, a) = names("a");
        let (_, b) = names("b");
        let held = coord.exec_turn(&ws, &a).await.unwrap();
        // Another namespace's turn comes at once; the same namespace's waits.
        tokio::time::timeout(Duration::from_secs(1), coord.exec_turn(&ws, &b))
            .await
            .expect("another namespace does not wait")
            .unwrap();
        let waiting = {
            let coord = Arc::clone(&coord);
            let (ws, a) = (ws.clone(), a.clone());
            tokio::spawn(async move { drop(coord.exec_turn(&ws, &a).await) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same namespace waits its turn");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the turn passes on")
            .unwrap();
    }
}
