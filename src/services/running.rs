//! The execs in flight and the open event streams, by key (and an exec's namespace), so a
//! revocation or a namespace deletion can end them and wait until they are gone before it
//! returns.
//!
//! A revocation kills what is registered when it runs, so registration must not be able to
//! slip in behind it: [`Running::hold`] registers first and checks the key afterwards. Either
//! the revocation's kill sees the registration, or the check sees the revocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warren_storage::{Namespace, WorkspaceId};

use super::{Caller, Error, Result};
use crate::db::KeyStore;
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
    /// A test hook: the next [`Running::hold`] waits here, between authentication and
    /// registration, until released.
    pause: Mutex<Option<Arc<Pause>>>,
}

/// A hold stopped before it registers; see [`Running::pause_next_hold`].
#[derive(Default)]
pub struct Pause {
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Pause {
    /// Waits until a hold has stopped here.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the stopped hold go on.
    pub fn release(&self) {
        self.release.notify_one();
    }
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
    /// Registers an exec in `ns`, or with `None` a live event stream (which spans the
    /// workspace), under the caller's key, then checks that the secret the caller presented
    /// still works: a revocation or rotation that ran after authentication found nothing to
    /// kill, so it is caught here instead.
    pub async fn hold(
        self: &Arc<Self>,
        keys: &dyn KeyStore,
        caller: &Caller,
        ns: Option<&Namespace>,
    ) -> Result<RunGuard> {
        let pause = self.pause.lock().unwrap().take();
        if let Some(pause) = pause {
            pause.reached.notify_one();
            pause.release.notified().await;
        }
        let guard = self.add(&caller.key.id, &caller.key.workspace, ns);
        match keys.key_by_hash(caller.token_hash()).await? {
            Some((record, _)) if record.id == caller.key.id => Ok(guard),
            _ => Err(Error::Unauthorized("Invalid API key".into())),
        }
    }

    /// Test hook: makes the next [`Running::hold`] stop before it registers.
    pub fn pause_next_hold(&self) -> Arc<Pause> {
        let pause = Arc::new(Pause::default());
        *self.pause.lock().unwrap() = Some(Arc::clone(&pause));
        pause
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

    /// How many execs and streams are registered.
    pub fn count(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// Ends everything (this process can no longer tell which keys are still good).
    pub async fn kill_all(&self) {
        self.kill(|_| true).await;
    }

    pub async fn kill_key(&self, key: &KeyId) {
        self.kill(|e| &e.key == key).await;
    }

    pub async fn kill_namespace(&self, ws: &WorkspaceId, ns: &Namespace) {
        self.kill(|e| &e.ws == ws && e.ns.as_ref() == Some(ns))
            .await;
    }
}
