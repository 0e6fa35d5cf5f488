//! Rebuilding a namespace's index from the objects in storage, for data restored straight into
//! the bucket: a plain function over the metadata and blob stores.

use std::collections::HashSet;

use futures::StreamExt;
use warren_storage::blob::ListError;
use warren_storage::{BlobStore, NsPath};

use super::{Result, event};
use crate::coord::NamespaceLock;
use crate::db::{FileWrite, MetaStore};
use crate::event::Event;
use crate::ids::Micros;

#[derive(Debug, Default)]
pub struct ReindexReport {
    pub files: u64,
    pub bytes: u64,
    /// Keys that could not be indexed, and why.
    pub skipped: Vec<String>,
}

/// Replaces the namespace's index with exactly the files found under its object prefix. Every
/// object is read once to record its size and SHA-256. Keys that are not valid namespace paths,
/// and files that are also a directory of another file (possible on S3, whose keys are flat),
/// are skipped and reported.
pub async fn reindex(
    meta: &dyn MetaStore,
    blobs: &BlobStore,
    lock: &NamespaceLock,
) -> Result<ReindexReport> {
    let (ws, ns) = (lock.workspace(), lock.namespace());
    let mut report = ReindexReport::default();
    let mut paths: Vec<NsPath> = Vec::new();
    let mut listing = blobs.list(ws, ns);
    while let Some(item) = listing.next().await {
        match item {
            Ok((path, _)) => paths.push(path),
            Err(ListError::Foreign(key)) => report
                .skipped
                .push(format!("{key}: not a valid namespace path")),
            Err(ListError::Store(e)) => return Err(e.into()),
        }
    }
    let dirs: HashSet<NsPath> = paths.iter().flat_map(|p| p.ancestors()).collect();
    let now = Micros::now();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        if dirs.contains(&path) {
            report
                .skipped
                .push(format!("{}: also a directory of other files", path.wire()));
            continue;
        }
        let written = blobs.digest(ws, ns, &path).await?;
        report.files += 1;
        report.bytes += written.size;
        files.push(FileWrite {
            path,
            size: written.size,
            mode: 0o644,
            mtime: now,
            sha256: written.sha256,
        });
    }
    let ev = event(
        None,
        ws,
        Some(ns),
        Event::NamespaceReindexed {
            namespace: ns.to_string(),
            files: report.files,
            bytes: report.bytes,
            skipped: report.skipped.len(),
        },
    );
    meta.replace_tree(lock, &files, &ev).await?;
    Ok(report)
}
