//! Namespace lifecycle for operators: usage listing, deletion (inaccessible at once, keys locked
//! to it revoked), restore until the purge, and the purge itself (files, index rows, with a
//! `namespace.purged` event that counts what was removed: the proof).
//!
//! Deleted namespaces are refused at two levels: an in-memory set checked by every runtime call
//! (no query per request), and the namespace row's state, checked inside every write
//! transaction, so a deletion racing a write still wins.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use warren_storage::blob::ListError;
use warren_storage::{BlobStore, Namespace, WorkspaceId};

use super::{Caller, Error, Result, event};
use crate::coord::{Change, Coordinator};
pub use crate::db::NamespaceUsage;
use crate::db::{MetaStore, PurgeInventory};
use crate::event::Event;
use crate::ids::Micros;

pub struct Namespaces {
    meta: Arc<dyn MetaStore>,
    /// Deleted (not yet purged) namespaces, refused at once; kept current by the change feed.
    deleted: RwLock<HashSet<(WorkspaceId, Namespace)>>,
    coord: Arc<dyn Coordinator>,
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub workspace: Option<WorkspaceId>,
    pub namespace: Option<Namespace>,
    /// Objects removed, files and snapshots together, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Of those, snapshot archives.
    pub snapshot_objects: u64,
}

impl Purged {
    fn inventory(&self) -> PurgeInventory {
        PurgeInventory {
            objects: self.objects,
            bytes: self.bytes,
            snapshot_objects: self.snapshot_objects,
        }
    }
}

impl Namespaces {
    /// The objects a purge of `ns` would remove, counted.
    async fn count_objects(blobs: &BlobStore, ws: &WorkspaceId, ns: &Namespace) -> Result<Purged> {
        let mut p = Purged {
            workspace: Some(ws.clone()),
            namespace: Some(ns.clone()),
            ..Purged::default()
        };
        let mut files = blobs.list(ws, ns);
        while let Some(item) = files.next().await {
            match item {
                Ok((_, size)) => {
                    p.objects += 1;
                    p.bytes += size;
                }
                Err(ListError::Foreign(_)) => {}
                Err(ListError::Store(e)) => return Err(e.into()),
            }
        }
        let mut snapshots = blobs.list_snapshots(ws, ns);
        while let Some(item) = snapshots.next().await {
            let (_, size) = item?;
            p.objects += 1;
            p.snapshot_objects += 1;
            p.bytes += size;
        }
        Ok(p)
    }

    pub(crate) fn new(meta: Arc<dyn MetaStore>, coord: Arc<dyn Coordinator>) -> Self {
        Self {
            meta,
            coord,
            deleted: RwLock::new(HashSet::new()),
        }
    }

    /// Loads the deleted namespaces; called once at start.
    pub async fn load(&self) -> Result<()> {
        let all = self.meta.deleted_namespaces().await?;
        *self.deleted.write().unwrap() = all.into_iter().map(|(ws, ns, _)| (ws, ns)).collect();
        Ok(())
    }

    /// 404 for a deleted namespace, as if it did not exist.
    pub fn check_live(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<()> {
        if self
            .deleted
            .read()
            .unwrap()
            .contains(&(ws.clone(), ns.clone()))
        {
            return Err(Error::NotFound(format!("Namespace not found: {ns}")));
        }
        Ok(())
    }

    pub async fn list(&self, caller: &Caller, ws: &str) -> Result<Vec<NamespaceUsage>> {
        let ws = caller.require_admin(ws, "namespaces")?;
        Ok(self.meta.list_namespaces(&ws).await?)
    }

    /// Marks a namespace deleted (refused from now on), revokes the keys locked to it, and
    /// ends what runs in it.
    pub async fn delete(&self, caller: &Caller, ws: &str, ns: &str) -> Result<()> {
        let ws = caller.require_admin(ws, "namespaces")?;
        let ns = Namespace::parse(ns)?;
        let ev = event(
            Some(caller),
            &ws,
            Some(&ns),
            Event::NamespaceDeleted {
                namespace: ns.to_string(),
            },
        );
        let key_event = |id: &crate::ids::KeyId| {
            event(
                Some(caller),
                &ws,
                None,
                Event::KeyRevoked {
                    key_id: id.to_string(),
                    reason: Some("namespace deleted"),
                },
            )
        };
        // Refuse new calls here before the row changes, so none slips in between.
        self.mark(&ws, &ns, true);
        match self.meta.delete_namespace(&ws, &ns, &ev, &key_event).await {
            Ok(Some(revoked)) => {
                for (key, _) in revoked {
                    self.coord.publish(Change::KeyRevoked { key }).await;
                }
                self.coord
                    .publish(Change::NamespaceDeleted { ws, ns })
                    .await;
                Ok(())
            }
            result => {
                self.load().await?;
                result?;
                Err(Error::NotFound(format!("Namespace not found: {ns}")))
            }
        }
    }

    pub async fn restore(&self, caller: &Caller, ws: &str, ns: &str) -> Result<()> {
        let ws = caller.require_admin(ws, "namespaces")?;
        let ns = Namespace::parse(ns)?;
        let ev = event(
            Some(caller),
            &ws,
            Some(&ns),
            Event::NamespaceRestored {
                namespace: ns.to_string(),
            },
        );
        if !self.meta.restore_namespace(&ws, &ns, &ev).await? {
            return Err(Error::NotFound(format!(
                "No deleted namespace named {ns} (it may have been purged)"
            )));
        }
        self.coord
            .publish(Change::NamespaceRestored { ws, ns })
            .await;
        Ok(())
    }

    /// Refuses (`deleted`) or admits a namespace's runtime calls in this process.
    pub(crate) fn mark(&self, ws: &WorkspaceId, ns: &Namespace, deleted: bool) {
        let key = (ws.clone(), ns.clone());
        let mut set = self.deleted.write().unwrap();
        if deleted {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Purges every namespace deleted more than `after` before `now`: it is first marked
    /// `purging` (no restore from then on), then its objects are removed (idempotently, so a
    /// crash midway is finished by the next sweep), then its index rows, with the
    /// `namespace.purged` proof.
    ///
    /// With `dry_run`, nothing changes: the namespaces due are reported with the objects and
    /// bytes a purge would remove.
    pub async fn purge_expired(
        &self,
        blobs: &BlobStore,
        after: Duration,
        now: Micros,
        dry_run: bool,
    ) -> Result<Vec<Purged>> {
        let cutoff = now.0 - after.as_micros() as i64;
        let mut done = Vec::new();
        for (ws, ns, deleted_at) in self.meta.deleted_namespaces().await? {
            if deleted_at.0 > cutoff {
                continue;
            }
            let counted = Self::count_objects(blobs, &ws, &ns).await?;
            if dry_run {
                done.push(counted);
                continue;
            }
            // Past this point a restore is refused: the bytes are about to go. The proof
            // reports the count recorded when the purge first began, so a purge finished by a
            // later run (after a crash, or on the next leader) counts each object once.
            let Some(inventory) = self.meta.begin_purge(&ws, &ns, counted.inventory()).await?
            else {
                continue;
            };
            let purged = Purged {
                workspace: Some(ws.clone()),
                namespace: Some(ns.clone()),
                objects: inventory.objects,
                bytes: inventory.bytes,
                snapshot_objects: inventory.snapshot_objects,
            };
            let mut listing = blobs.list(&ws, &ns);
            while let Some(item) = listing.next().await {
                match item {
                    Ok((path, _)) => blobs.delete(&ws, &ns, &path).await?,
                    Err(ListError::Foreign(key)) => {
                        tracing::warn!(key, "purge left an object Warren did not write")
                    }
                    Err(ListError::Store(e)) => return Err(e.into()),
                }
            }
            let mut snapshots = blobs.list_snapshots(&ws, &ns);
            while let Some(item) = snapshots.next().await {
                blobs.delete_listed(&item?.0).await?;
            }
            let ev = event(
                None,
                &ws,
                Some(&ns),
                Event::NamespacePurged {
                    namespace: ns.to_string(),
                    objects: purged.objects,
                    bytes: purged.bytes,
                    snapshots: purged.snapshot_objects,
                    deleted_at: deleted_at.to_rfc3339(),
                },
            );
            if self.meta.purge_namespace(&ws, &ns, &ev).await? {
                self.coord.publish(Change::NamespacePurged { ws, ns }).await;
                done.push(purged);
            }
        }
        Ok(done)
    }
}
