//! What this process does about each change published on the coordination feed: the one
//! place that evicts keys, kills execs and streams, refuses deleted namespaces and drops
//! working copies, whichever service (or, in a cluster, whichever process) made the change.

use std::sync::Arc;

use async_trait::async_trait;

use super::running::Running;
use super::{Exec, Keys, Namespaces};
use crate::coord::{Change, Reactor};

pub(crate) struct Reactions {
    pub keys: Arc<Keys>,
    pub running: Arc<Running>,
    pub namespaces: Arc<Namespaces>,
    pub exec: Arc<Exec>,
}

#[async_trait]
impl Reactor for Reactions {
    async fn apply(&self, change: &Change) {
        match change {
            Change::KeyRevoked { key } => {
                self.keys.forget(key);
                self.running.kill_key(key).await;
            }
            Change::NamespaceDeleted { ws, ns } => {
                self.namespaces.mark(ws, ns, true);
                self.running.kill_namespace(ws, ns).await;
            }
            Change::NamespaceRestored { ws, ns } => self.namespaces.mark(ws, ns, false),
            Change::NamespacePurged { ws, ns } => {
                self.namespaces.mark(ws, ns, false);
                // Its working copy on this host goes with it.
                self.exec.forget(ws, ns).await;
            }
        }
    }

    async fn fence(&self) {
        self.running.kill_all().await;
    }
}
