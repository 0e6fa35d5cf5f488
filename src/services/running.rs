//! The execs in flight and the open event streams, by key (and an exec's namespace), so a
//! revocation or a namespace deletion can end them and wait until they are gone before it
//! returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warren_storage::{Namespace, WorkspaceId};

use crate::ids::KeyId;

struct Entry {
    key: KeyId,
    ws: WorkspaceId,
    /// The exec's namespace; `None` for a stream, which spans the workspace.
    ns: Option<Namespace>,
    cancel: CancellationToken,
}

#[derive(Default)]
pub struct Running {
    next: Mutex<u64>,
    map: Mutex<HashMap<u64, Entry>>,
}

/// Registration of one exec or stream; dropping it (when it has finished) deregisters it.
pub struct RunGuard {
    id: u64,
    running: Arc<Running>,
    pub cancel: CancellationToken,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running.map.lock().unwrap().remove(&self.id);
    }
}

/// How long a kill waits for a sandbox's teardown before giving up waiting.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Running {
    /// Registers an exec.
    pub fn register(self: &Arc<Self>, key: &KeyId, ws: &WorkspaceId, ns: &Namespace) -> RunGuard {
        self.add(key, ws, Some(ns))
    }

    /// Registers a live event stream, ended like an exec when its key is revoked or rotated.
    pub fn register_stream(self: &Arc<Self>, key: &KeyId, ws: &WorkspaceId) -> RunGuard {
        self.add(key, ws, None)
    }

    fn add(self: &Arc<Self>, key: &KeyId, ws: &WorkspaceId, ns: Option<&Namespace>) -> RunGuard {
        let id = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        let cancel = CancellationToken::new();
        self.map.lock().unwrap().insert(
            id,
            Entry {
                key: key.clone(),
                ws: ws.clone(),
                ns: ns.cloned(),
                cancel: cancel.clone(),
            },
        );
        RunGuard {
            id,
            running: Arc::clone(self),
            cancel,
        }
    }

    /// Kills the execs `matches` selects and waits until every one has finished tearing down.
    async fn kill(&self, matches: impl Fn(&Entry) -> bool) {
        let ids: Vec<u64> = {
            let map = self.map.lock().unwrap();
            map.iter()
                .filter(|(_, e)| matches(e))
                .map(|(id, e)| {
                    e.cancel.cancel();
                    *id
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while ids
            .iter()
            .any(|id| self.map.lock().unwrap().contains_key(id))
        {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("an exec is still tearing down after its kill");
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn kill_key(&self, key: &KeyId) {
        self.kill(|e| &e.key == key).await;
    }

    pub async fn kill_namespace(&self, ws: &WorkspaceId, ns: &Namespace) {
        self.kill(|e| &e.ws == ws && e.ns.as_ref() == Some(ns))
            .await;
    }
}
