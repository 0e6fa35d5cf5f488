//! Materializing: bringing a namespace's working copy to the index's state before an exec,
//! touching only the paths that differ. Small files are fetched concurrently, large ones
//! streamed one at a time, so memory stays bounded.

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use warren_exec::{Node, WorkCopy};
use warren_storage::{BlobStore, Namespace, NsPath, WorkspaceId};

use super::blocking::{off_worker, write_chunks};
use super::{Exec, internal};
use crate::db::{Entry, EntryKind};
use crate::services::Result;
use crate::services::files::MAX_FILE_BYTES;

/// Files up to this size are fetched concurrently; larger ones stream.
const SMALL_FILE: u64 = 1024 * 1024;
const FETCH_CONCURRENCY: usize = 16;

impl Exec {
    /// Brings `wc` to the index's state at `generation`, touching only the paths that differ:
    /// from the tree's journal when the copy is at a generation it still reaches (the cost is
    /// what changed), from the whole tree otherwise.
    pub(super) async fn refresh(
        &self,
        wc: &mut WorkCopy,
        ws: &WorkspaceId,
        ns: &Namespace,
        generation: u64,
    ) -> Result<()> {
        let changes = match wc.generation {
            Some(since) => self.meta.tree_changes(ws, ns, since).await?,
            None => None,
        };
        let (entries, stale) = match changes {
            Some(changes) => {
                // Removed paths, and written ones whose kind changed, go before anything is
                // written (a directory where a file was, say).
                let mut stale: Vec<String> = changes
                    .removed
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect();
                stale.extend(
                    changes
                        .written
                        .iter()
                        .filter(|e| {
                            wc.node(e.path.as_str())
                                .is_some_and(|n| !same_kind(&node_of(e), n))
                        })
                        .map(|e| e.path.as_str().to_owned()),
                );
                (changes.written, stale)
            }
            None => {
                let entries = self.meta.tree(ws, ns).await?;
                let wanted: HashMap<&str, Node> = entries
                    .iter()
                    .map(|e| (e.path.as_str(), node_of(e)))
                    .collect();
                let stale = wc
                    .nodes()
                    .iter()
                    .filter(|(p, n)| wanted.get(p.as_str()).is_none_or(|w| !same_kind(w, n)))
                    .map(|(p, _)| p.clone())
                    .collect();
                (entries, stale)
            }
        };
        for p in stale {
            if wc.node(&p).is_some() {
                wc.remove(&p).map_err(internal)?;
            }
        }
        self.materialize(wc, ws, ns, &entries).await?;
        wc.generation = Some(generation);
        Ok(())
    }

    /// Writes `entries` (by path, so directories first) into `wc` where it differs from them.
    async fn materialize(
        &self,
        wc: &mut WorkCopy,
        ws: &WorkspaceId,
        ns: &Namespace,
        entries: &[Entry],
    ) -> Result<()> {
        let mut fetch = Vec::new();
        for e in entries {
            let want = &node_of(e);
            if wc.node(e.path.as_str()) == Some(want) {
                continue;
            }
            let p = e.path.as_str();
            match want {
                Node::Dir => wc.make_dir(p).map_err(internal)?,
                Node::Symlink { target } => match wc.symlink(p, target) {
                    // A link the host cannot hold (a target past PATH_MAX, from an archive
                    // imported before such targets were refused) is left out of the working
                    // copy rather than failing every exec of the namespace.
                    Err(err)
                        if err.raw_os_error()
                            == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()) =>
                    {
                        tracing::warn!(path = p, "a symlink's target is too long to materialize")
                    }
                    other => other.map_err(internal)?,
                },
                Node::File { .. } => fetch.push(e),
            }
        }
        // Small files concurrently, large ones one at a time, so memory stays bounded.
        let (small, large): (Vec<_>, Vec<_>) =
            fetch.into_iter().partition(|e| e.size <= SMALL_FILE);
        let jobs: Vec<(NsPath, u32, String, u64)> = small
            .into_iter()
            .map(|e| (e.path.clone(), e.mode, sha_of(e), e.size))
            .collect();
        let mut fetched = futures::stream::iter(jobs.into_iter().map(|job| {
            let (blobs, ws, ns) = (self.blobs.clone(), ws.clone(), ns.clone());
            async move {
                let chunks = read_all(&blobs, &ws, &ns, &job.0).await?;
                Ok::<_, warren_storage::Error>((job, chunks))
            }
        }))
        .buffer_unordered(FETCH_CONCURRENCY);
        while let Some(r) = fetched.next().await {
            let ((path, mode, sha, size), chunks) = r?;
            let mut f = wc.create_file(path.as_str(), mode).map_err(internal)?;
            off_worker(move || chunks.iter().try_for_each(|c| f.write_all(c))).await?;
            wc.file_written(path.as_str(), sha, mode, size);
        }
        drop(fetched);
        for e in large {
            let mut blob = self.blobs.read(ws, ns, &e.path, MAX_FILE_BYTES).await?;
            let f = wc.create_file(e.path.as_str(), e.mode).map_err(internal)?;
            let (tx, writing) = write_chunks(f);
            while let Some(c) = blob.stream.next().await {
                if tx.send(c?).await.is_err() {
                    break; // the writer failed; its error follows
                }
            }
            drop(tx);
            writing.await.map_err(internal)?.map_err(internal)?;
            wc.file_written(e.path.as_str(), sha_of(e), e.mode, e.size);
        }
        Ok(())
    }
}

async fn read_all(
    blobs: &BlobStore,
    ws: &WorkspaceId,
    ns: &Namespace,
    path: &NsPath,
) -> Result<Vec<Bytes>, warren_storage::Error> {
    let blob = blobs.read(ws, ns, path, MAX_FILE_BYTES).await?;
    blob.stream.collect::<Vec<_>>().await.into_iter().collect()
}

fn node_of(e: &Entry) -> Node {
    match e.kind {
        EntryKind::Dir => Node::Dir,
        EntryKind::Symlink => Node::Symlink {
            target: e.target.clone().unwrap_or_default(),
        },
        EntryKind::File => Node::File {
            sha256: sha_of(e),
            mode: e.mode,
            size: e.size,
        },
    }
}

fn sha_of(e: &Entry) -> String {
    e.sha256.clone().unwrap_or_default()
}

fn same_kind(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}
