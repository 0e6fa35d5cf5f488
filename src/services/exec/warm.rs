//! The warm working copies: one per namespace that has run an exec, kept on local disk within
//! a byte budget so the next exec only fetches what changed. A copy's mutex is also what an
//! exec holds while it uses the copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use warren_exec::WorkCopy;
use warren_storage::{Namespace, WorkspaceId};

type NsKey = (WorkspaceId, Namespace);

/// A namespace's working copy (none until the first exec materializes it) and its lock.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) copy: tokio::sync::Mutex<Option<WorkCopy>>,
    bytes: AtomicU64,
    last_used: AtomicU64,
}

impl Slot {
    /// Records the copy's size once an exec is done with it.
    pub(super) fn sized(&self, copy: &Option<WorkCopy>) {
        let bytes = copy.as_ref().map_or(0, WorkCopy::bytes);
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

pub(super) struct WarmCopies {
    budget: u64,
    slots: Mutex<HashMap<NsKey, Arc<Slot>>>,
    /// A logical clock for least-recently-used order.
    clock: AtomicU64,
}

impl WarmCopies {
    pub(super) fn new(budget: u64) -> Self {
        Self {
            budget,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// The namespace's slot, created empty if it has none, marked as just used.
    pub(super) fn slot(&self, ws: &WorkspaceId, ns: &Namespace) -> Arc<Slot> {
        let key = (ws.clone(), ns.clone());
        let slot = Arc::clone(self.slots.lock().unwrap().entry(key).or_default());
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot
    }

    /// Drops a namespace's working copy, waiting for an exec that uses it to finish.
    pub(super) async fn forget(&self, ws: &WorkspaceId, ns: &Namespace) {
        let slot = self.slots.lock().unwrap().remove(&(ws.clone(), ns.clone()));
        if let Some(slot) = slot
            && let Some(wc) = slot.copy.lock().await.take()
        {
            wc.destroy();
        }
    }

    /// Keeps the copies within the budget, dropping the least recently used ones that no exec
    /// is using; `keep`'s is never dropped.
    pub(super) async fn evict(&self, keep: (&WorkspaceId, &Namespace)) {
        loop {
            let victim = {
                let slots = self.slots.lock().unwrap();
                let total: u64 = slots
                    .values()
                    .map(|s| s.bytes.load(Ordering::Relaxed))
                    .sum();
                if total <= self.budget {
                    return;
                }
                slots
                    .iter()
                    .filter(|((w, n), s)| (w, n) != keep && s.copy.try_lock().is_ok())
                    .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone())
            };
            let Some((ws, ns)) = victim else { return };
            self.forget(&ws, &ns).await;
        }
    }
}
