//! The locks behind [`super::InProcess`]: mutual exclusion for tree mutations within this
//! process. [`super::Clustered`] takes the same locks again across the nodes of a cluster.
//!
//! A write publishes bytes at a natural key and then commits the index; a delete commits the
//! index and then removes bytes. Interleaved badly, two writers of one path could commit in the
//! opposite order to the one they published in (the index describing bytes that are not there),
//! or a delete could remove a newer write's object. Holding locks from publish to commit keeps
//! each operation whole:
//!
//! - a write holds its top-level subtree *shared* and its exact path *exclusively*: writers of
//!   one path queue, writers of different files run in parallel;
//! - a delete holds its top-level subtree *exclusively*, so no write below it is half done.
//!
//! - an exec's sync-back holds the whole namespace *exclusively* (writes and deletes hold it
//!   shared), so the index it commits matches the bytes it uploaded.
//!
//! Two operations can only interfere when one's path contains the other's (or they are equal),
//! and such paths always share their first component; the namespace root itself is never
//! written or deleted. Locks are always taken subtree first, so they cannot deadlock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
};
use warren_storage::{Namespace, NsPath, WorkspaceId};

type Key = (WorkspaceId, Namespace, String);

/// A map of lazily created locks that forgets locks nobody holds.
struct LockMap<L> {
    map: Mutex<HashMap<Key, Weak<L>>>,
}

impl<L: Default> LockMap<L> {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: Key) -> Arc<L>
    where
        Key: Hash + Eq,
    {
        let mut map = self.map.lock().unwrap();
        if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
            return l;
        }
        // Drop entries nobody holds before the map grows; amortized O(1).
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(L::default());
        map.insert(key, Arc::downgrade(&l));
        l
    }
}

pub(crate) struct TreeLocks {
    namespaces: LockMap<RwLock<()>>,
    subtrees: LockMap<RwLock<()>>,
    paths: LockMap<AsyncMutex<()>>,
    /// One exec at a time per namespace (not a tree lock: an exec holds the namespace only
    /// while it syncs back, but its turn for the whole run).
    turns: LockMap<AsyncMutex<()>>,
}

/// Held by a write until its index row is committed.
pub(crate) struct WriteGuard {
    _namespace: OwnedRwLockReadGuard<()>,
    _subtree: OwnedRwLockReadGuard<()>,
    _path: OwnedMutexGuard<()>,
}

/// Held by a delete until its objects are removed.
pub(crate) struct DeleteGuard {
    _namespace: OwnedRwLockReadGuard<()>,
    _subtree: OwnedRwLockWriteGuard<()>,
}

impl Default for TreeLocks {
    fn default() -> Self {
        Self {
            namespaces: LockMap::new(),
            subtrees: LockMap::new(),
            paths: LockMap::new(),
            turns: LockMap::new(),
        }
    }
}

fn key(ws: &WorkspaceId, ns: &Namespace, s: &str) -> Key {
    (ws.clone(), ns.clone(), s.to_owned())
}

/// The subtree a path's locks are taken on: its first component.
pub(crate) fn top(path: &NsPath) -> &str {
    debug_assert!(!path.is_root());
    path.components().next().unwrap_or_default()
}

impl TreeLocks {
    pub async fn write(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> WriteGuard {
        let namespace = self.namespaces.get(key(ws, ns, "")).read_owned().await;
        let subtree = self.subtrees.get(key(ws, ns, top(path))).read_owned().await;
        let path = self
            .paths
            .get(key(ws, ns, path.as_str()))
            .lock_owned()
            .await;
        WriteGuard {
            _namespace: namespace,
            _subtree: subtree,
            _path: path,
        }
    }

    pub async fn delete(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> DeleteGuard {
        let namespace = self.namespaces.get(key(ws, ns, "")).read_owned().await;
        let subtree = self
            .subtrees
            .get(key(ws, ns, top(path)))
            .write_owned()
            .await;
        DeleteGuard {
            _namespace: namespace,
            _subtree: subtree,
        }
    }

    pub async fn exec_turn(&self, ws: &WorkspaceId, ns: &Namespace) -> OwnedMutexGuard<()> {
        self.turns.get(key(ws, ns, "")).lock_owned().await
    }

    /// The whole namespace, exclusively.
    pub async fn namespace(&self, ws: &WorkspaceId, ns: &Namespace) -> OwnedRwLockWriteGuard<()> {
        self.namespaces.get(key(ws, ns, "")).write_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(s: &str) -> NsPath {
        NsPath::parse(s).unwrap()
    }

    async fn must_not_wait<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(1), f)
            .await
            .expect("must not wait")
    }

    async fn must_wait<T: Send + 'static>(
        f: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let h = tokio::spawn(f);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!h.is_finished(), "must wait");
        h
    }

    #[tokio::test]
    async fn writers_of_different_files_share_writers_of_one_path_queue() {
        let locks = Arc::new(TreeLocks::default());
        let ws = WorkspaceId::parse("ws-0000000000000001").unwrap();
        let a = Namespace::parse("a").unwrap();
        let held = locks.write(&ws, &a, &p("dir/x")).await;
        must_not_wait(locks.write(&ws, &a, &p("dir/y"))).await;
        must_not_wait(locks.write(&ws, &Namespace::parse("b").unwrap(), &p("dir/x"))).await;
        let same = {
            let (locks, ws, a) = (Arc::clone(&locks), ws.clone(), a.clone());
            must_wait(async move { drop(locks.write(&ws, &a, &p("dir/x")).await) }).await
        };
        drop(held);
        same.await.unwrap();
    }

    #[tokio::test]
    async fn deletes_exclude_writes_below_them() {
        let locks = Arc::new(TreeLocks::default());
        let ws = WorkspaceId::parse("ws-0000000000000001").unwrap();
        let a = Namespace::parse("a").unwrap();
        let write = locks.write(&ws, &a, &p("dir/sub/x")).await;
        let delete = {
            let (locks, ws, a) = (Arc::clone(&locks), ws.clone(), a.clone());
            must_wait(async move { drop(locks.delete(&ws, &a, &p("dir")).await) }).await
        };
        must_not_wait(locks.delete(&ws, &a, &p("other"))).await;
        drop(write);
        delete.await.unwrap();
        let held = locks.delete(&ws, &a, &p("dir/sub")).await;
        let w = {
            let (locks, ws, a) = (Arc::clone(&locks), ws.clone(), a.clone());
            must_wait(async move { drop(locks.write(&ws, &a, &p("dir/z")).await) }).await
        };
        drop(held);
        w.await.unwrap();
    }
}
