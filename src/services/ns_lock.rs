//! Per-namespace mutual exclusion for tree mutations within this process.
//!
//! A write publishes bytes at a natural key and then commits the index; a delete commits the
//! index and then removes bytes. Two such operations on one namespace interleaving could leave
//! the index describing bytes that are not there (a delete removing a newer write's object).
//! Holding this lock from publish to commit keeps each one whole. Uploads stream their bytes
//! before taking it, so a large upload does not block other writers for its whole duration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use warren_storage::{Namespace, WorkspaceId};

type LockMap = HashMap<(WorkspaceId, Namespace), Weak<AsyncMutex<()>>>;

#[derive(Default)]
pub(crate) struct NsLocks {
    map: Mutex<LockMap>,
}

impl NsLocks {
    pub async fn lock(&self, ws: &WorkspaceId, ns: &Namespace) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.map.lock().unwrap();
            let key = (ws.clone(), ns.clone());
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    // Drop entries nobody holds before the map grows; amortized O(1).
                    if map.len() >= 1024 && map.len().is_power_of_two() {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let m = Arc::new(AsyncMutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_namespace_excludes_other_namespaces_do_not() {
        let locks = Arc::new(NsLocks::default());
        let ws = WorkspaceId::parse("ws-0000000000000001").unwrap();
        let a = Namespace::parse("a").unwrap();
        let b = Namespace::parse("b").unwrap();
        let held = locks.lock(&ws, &a).await;
        // Another namespace is free.
        tokio::time::timeout(Duration::from_secs(1), locks.lock(&ws, &b))
            .await
            .expect("namespace b must not wait for a");
        // The same namespace waits until the guard is dropped.
        let waiter = {
            let (locks, ws, a) = (Arc::clone(&locks), ws.clone(), a.clone());
            tokio::spawn(async move { drop(locks.lock(&ws, &a).await) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
    }
}
