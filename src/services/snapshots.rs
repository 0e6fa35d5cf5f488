//! Snapshots of a namespace (spec §4.9): a tar.gz of its tree in object storage, catalogued in
//! the metadata store, kept for the retention period.
//!
//! A restore is all-or-nothing from the client's side. The archive is first unpacked into a
//! staging area (a bad archive or a storage error here leaves the namespace untouched); then,
//! holding the namespace exclusively, the live files are moved aside, the staged ones moved in,
//! and the index replaced in one transaction. Any failure before that commit moves everything
//! back; after it, only the set-aside copies remain, and they are deleted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use warren_storage::archive::{self, ArchiveEntry, ArchiveError, ArchiveKind, UnpackLimits};
use warren_storage::{Blob, BlobStore, Namespace, NsPath, SnapshotId, StageStep};

use super::files::MAX_FILE_BYTES;
use super::{Caller, Error, Result, event};
use crate::coord::Coordinator;
/// A snapshot as callers see it.
pub use crate::db::SnapshotRecord as Snapshot;
use crate::db::{EntryKind, FileWrite, MetaStore, SnapshotRecord, TreeOp};
use crate::event::Event;
use crate::ids::Micros;

/// Longest label (spec §11).
pub const MAX_LABEL_CHARS: usize = 128;
/// Most snapshots one listing returns (spec §4.9).
pub const MAX_LISTED: u32 = 200;
/// Largest archive accepted by import.
pub const MAX_IMPORT_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// An import may always expand to this much...
const EXPANSION_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// ...and beyond it to this many times its compressed size.
const MAX_EXPANSION_RATIO: u64 = 200;
/// Most entries an archive may hold.
const MAX_ENTRIES: usize = 1_000_000;
/// gzip level: the default of `gzip` and `tar -z`.
const COMPRESSION: u32 = 6;
/// Objects moved at once during a restore's swap.
const MOVE_CONCURRENCY: usize = 16;
/// Expired snapshots removed per sweep step.
const SWEEP_BATCH: u32 = 500;

pub struct Snapshots {
    meta: Arc<dyn MetaStore>,
    blobs: BlobStore,
    coord: Arc<dyn Coordinator>,
    retention: Duration,
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("Snapshot not found: {id}"))
}

fn new_id() -> SnapshotId {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    SnapshotId::from_random(b)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl Snapshots {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        coord: Arc<dyn Coordinator>,
        retention: Duration,
    ) -> Self {
        Self {
            meta,
            blobs,
            coord,
            retention,
        }
    }

    fn check_label(label: &Option<String>) -> Result<()> {
        if label
            .as_ref()
            .is_some_and(|l| l.chars().count() > MAX_LABEL_CHARS)
        {
            return Err(Error::Unprocessable(format!(
                "label is longer than {MAX_LABEL_CHARS} characters"
            )));
        }
        Ok(())
    }

    fn record(
        &self,
        caller: &Caller,
        ns: &Namespace,
        id: SnapshotId,
        label: Option<String>,
        size_bytes: u64,
        file_count: u64,
    ) -> SnapshotRecord {
        let now = Micros::now();
        SnapshotRecord {
            id,
            workspace: caller.key.workspace.clone(),
            namespace: ns.clone(),
            label,
            size_bytes,
            file_count,
            key_id: Some(caller.key.id.to_string()),
            created_at: now,
            expires_at: Micros(now.0.saturating_add(self.retention.as_micros() as i64)),
        }
    }

    /// Catalogues a stored archive; removes it again if that fails.
    async fn catalogue(
        &self,
        caller: &Caller,
        snap: SnapshotRecord,
        imported: bool,
    ) -> Result<SnapshotRecord> {
        let ws = &caller.key.workspace;
        let ev = event(
            Some(caller),
            ws,
            Some(&snap.namespace),
            Event::SnapshotCreated {
                snapshot_id: snap.id.to_string(),
                label: snap.label.clone(),
                size_bytes: snap.size_bytes,
                file_count: snap.file_count,
                imported,
            },
        );
        if let Err(e) = self.meta.insert_snapshot(&snap, &ev).await {
            let _ = self
                .blobs
                .delete_snapshot(ws, &snap.namespace, &snap.id)
                .await;
            return Err(e.into());
        }
        Ok(snap)
    }

    /// Archives the namespace as it is now. Writes to it wait until the archive is stored, so
    /// the snapshot is one consistent state.
    pub async fn create(
        &self,
        caller: &Caller,
        ns: &Namespace,
        label: Option<String>,
    ) -> Result<SnapshotRecord> {
        Self::check_label(&label)?;
        let ws = &caller.key.workspace;
        let id = new_id();
        let (written, file_count) = {
            let _lock = self.coord.lock_namespace(ws, ns).await?;
            let tree = self.meta.tree(ws, ns).await?;
            let file_count = tree.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
            let entries = tree
                .into_iter()
                .map(|e| ArchiveEntry {
                    kind: match e.kind {
                        EntryKind::Dir => ArchiveKind::Dir,
                        EntryKind::File => ArchiveKind::File,
                        EntryKind::Symlink => ArchiveKind::Symlink,
                    },
                    mode: e.mode,
                    mtime_secs: (e.mtime.0.max(0) / 1_000_000) as u64,
                    target: e.target,
                    path: e.path,
                })
                .collect();
            let sink = self.blobs.snapshot_writer(ws, ns, &id);
            let written = archive::pack(&self.blobs, ws, ns, entries, COMPRESSION, sink)
                .await
                .map_err(internal)?;
            (written, file_count)
        };
        let snap = self.record(caller, ns, id, label, written.size, file_count);
        self.catalogue(caller, snap, false).await
    }

    pub async fn list(&self, caller: &Caller, ns: &Namespace) -> Result<Vec<SnapshotRecord>> {
        Ok(self
            .meta
            .list_snapshots(&caller.key.workspace, ns, MAX_LISTED)
            .await?)
    }

    async fn get(&self, caller: &Caller, ns: &Namespace, id: &str) -> Result<SnapshotRecord> {
        // A malformed id, or one of another namespace, is simply not found.
        let id = SnapshotId::parse(id).map_err(|_| not_found(id))?;
        self.meta
            .get_snapshot(&caller.key.workspace, ns, &id)
            .await?
            .ok_or_else(|| not_found(id.as_str()))
    }

    /// The archive's bytes.
    pub async fn download(&self, caller: &Caller, ns: &Namespace, id: &str) -> Result<Blob> {
        let snap = self.get(caller, ns, id).await?;
        self.blobs
            .read_snapshot(&caller.key.workspace, ns, &snap.id)
            .await
            .map_err(|e| match e {
                warren_storage::Error::NotFound => not_found(snap.id.as_str()),
                other => other.into(),
            })
    }

    /// Removes a snapshot: from the catalogue (with its event) first, then its bytes.
    pub async fn delete(&self, caller: &Caller, ns: &Namespace, id: &str) -> Result<()> {
        let snap = self.get(caller, ns, id).await?;
        let ws = &caller.key.workspace;
        let ev = event(
            Some(caller),
            ws,
            Some(ns),
            Event::SnapshotDeleted {
                snapshot_id: snap.id.to_string(),
                reason: None,
            },
        );
        if !self.meta.delete_snapshot(ws, ns, &snap.id, &ev).await? {
            return Err(not_found(snap.id.as_str()));
        }
        self.blobs.delete_snapshot(ws, ns, &snap.id).await?;
        Ok(())
    }

    /// Stores an uploaded archive as a new snapshot of the namespace, after checking that it
    /// is one Warren can restore.
    pub async fn import<S, E>(
        &self,
        caller: &Caller,
        ns: &Namespace,
        label: Option<String>,
        mut body: S,
    ) -> Result<SnapshotRecord>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        Self::check_label(&label)?;
        let ws = &caller.key.workspace;
        let id = new_id();
        let mut writer = self.blobs.upload_writer(ws, ns, &id);
        while let Some(chunk) = body.next().await {
            let failed = match chunk {
                Ok(c) if writer.size() + c.len() as u64 > MAX_IMPORT_BYTES => Some(
                    Error::TooLarge(format!("archive exceeds {MAX_IMPORT_BYTES} bytes")),
                ),
                Ok(c) => writer.write(c).await.err().map(Error::from),
                Err(e) => Some(Error::BadRequest(format!(
                    "could not read the request body: {e}"
                ))),
            };
            if let Some(err) = failed {
                let _ = writer.abort().await;
                return Err(err);
            }
        }
        let uploaded = writer.finish().await?;
        // What is stored is a canonical archive written from the checked entries, never the
        // upload itself: a download then holds exactly what a restore would unpack.
        let repacked = async {
            let blob = self.blobs.read_upload(ws, ns, &id).await?;
            let sink = self.blobs.snapshot_writer(ws, ns, &id);
            archive::repack(
                blob,
                limits(expansion_cap(uploaded.size)),
                COMPRESSION,
                sink,
            )
            .await
            .map_err(archive_error)
        }
        .await;
        if let Err(e) = self.blobs.delete_upload(ws, ns, &id).await {
            tracing::warn!(error = %e, "could not remove an archive upload");
        }
        let (entries, written) = repacked?;
        let file_count = entries
            .iter()
            .filter(|u| u.entry.kind == ArchiveKind::File)
            .count() as u64;
        let snap = self.record(caller, ns, id, label, written.size, file_count);
        self.catalogue(caller, snap, true).await
    }

    /// Replaces the namespace's tree with the snapshot's; returns the number of files restored.
    pub async fn restore(&self, caller: &Caller, ns: &Namespace, id: &str) -> Result<u64> {
        let snap = self.get(caller, ns, id).await?;
        let ws = caller.key.workspace.clone();
        let stage = {
            let mut b = [0u8; 8];
            rand::fill(&mut b);
            hex::encode(b)
        };
        let result = self.restore_staged(caller, ns, &snap, &stage).await;
        // What is left in the staging area (the displaced files after a success, the staged
        // ones after a failure) is garbage; after a success nobody need wait for its removal.
        let (blobs, ns) = (self.blobs.clone(), ns.clone());
        let cleanup = async move {
            if let Err(e) = blobs.delete_stage(&ws, &ns, &stage).await {
                tracing::warn!(error = %e, "could not remove a restore's staging area");
            }
        };
        if result.is_ok() {
            tokio::spawn(cleanup);
        } else {
            cleanup.await;
        }
        result
    }

    async fn restore_staged(
        &self,
        caller: &Caller,
        ns: &Namespace,
        snap: &SnapshotRecord,
        stage: &str,
    ) -> Result<u64> {
        let ws = &caller.key.workspace;
        // 1. Unpack into the staging area; the namespace is not touched yet.
        let blob = self.blobs.read_snapshot(ws, ns, &snap.id).await?;
        let (blobs, w, n, s) = (self.blobs.clone(), ws.clone(), ns.clone(), stage.to_owned());
        let unpacked = archive::unpack(
            blob,
            Some(move |p: &NsPath| blobs.staged_writer(&w, &n, &s, p)),
            // Stored archives were written by Warren (a snapshot, or an import re-packed after
            // its expansion was checked).
            limits(u64::MAX),
        )
        .await
        .map_err(archive_error)?;

        // 2. Swap, holding the namespace.
        let lock = self.coord.lock_namespace(ws, ns).await?;
        let now = Micros::now();
        let mut set_aside = Vec::new();
        let mut published = Vec::new();
        let mut ops = vec![TreeOp::Clear];
        let mut files = 0u64;
        let swapped: Result<()> = async {
            let current = self.meta.file_paths(ws, ns).await?;
            let (moved, failed) = self
                .move_all(ws, ns, stage, current, StageStep::SetAside)
                .await;
            set_aside = moved;
            if let Some(e) = failed {
                return Err(e);
            }
            let staged = unpacked
                .iter()
                .filter(|u| u.entry.kind == ArchiveKind::File)
                .map(|u| u.entry.path.clone())
                .collect();
            let (moved, failed) = self
                .move_all(ws, ns, stage, staged, StageStep::Publish)
                .await;
            published = moved;
            if let Some(e) = failed {
                return Err(e);
            }
            for u in &unpacked {
                let e = &u.entry;
                match e.kind {
                    ArchiveKind::Dir => ops.push(TreeOp::Dir(e.path.clone(), now)),
                    ArchiveKind::Symlink => ops.push(TreeOp::Symlink {
                        path: e.path.clone(),
                        target: e.target.clone().unwrap_or_default(),
                        mtime: now,
                    }),
                    ArchiveKind::File => {
                        let w = u.written.as_ref().expect("unpacked files are stored");
                        files += 1;
                        ops.push(TreeOp::File(FileWrite {
                            path: e.path.clone(),
                            size: w.size,
                            mode: e.mode,
                            mtime: now,
                            sha256: w.sha256.clone(),
                        }));
                    }
                }
            }
            // Directories an archive only implies become real ones.
            let listed: std::collections::HashSet<&NsPath> =
                unpacked.iter().map(|u| &u.entry.path).collect();
            let implied: std::collections::BTreeSet<NsPath> = unpacked
                .iter()
                .flat_map(|u| u.entry.path.ancestors())
                .filter(|a| !listed.contains(a))
                .collect();
            ops.extend(implied.into_iter().map(|p| TreeOp::Dir(p, now)));
            // The archive lists entries in any order; the index wants parents first.
            ops[1..].sort_by(|a, b| op_path(a).cmp(op_path(b)));
            let ev = event(
                Some(caller),
                ws,
                Some(ns),
                Event::SnapshotRestored {
                    snapshot_id: snap.id.to_string(),
                    files_restored: files,
                },
            );
            self.meta.commit_tree_ops(&lock, &ops, &[ev]).await?;
            Ok(())
        }
        .await;
        if let Err(e) = swapped {
            // Put the namespace back as it was: the restored files out, the old ones in.
            for p in &published {
                if let Err(err) = self.blobs.delete(ws, ns, p).await {
                    tracing::error!(path = %p, error = %err, "restore rollback could not remove a file");
                }
            }
            for p in &set_aside {
                if let Err(err) = self
                    .blobs
                    .stage_move(ws, ns, stage, p, StageStep::PutBack)
                    .await
                {
                    tracing::error!(path = %p, error = %err, "restore rollback could not put a file back");
                }
            }
            return Err(e);
        }
        Ok(files)
    }

    /// Makes `step` for every path, several at a time. Returns the paths moved and the first
    /// error; a file already missing when set aside is not an error (nothing to put back).
    async fn move_all(
        &self,
        ws: &warren_storage::WorkspaceId,
        ns: &Namespace,
        stage: &str,
        paths: Vec<NsPath>,
        step: StageStep,
    ) -> (Vec<NsPath>, Option<Error>) {
        let mut results = futures::stream::iter(paths.into_iter().map(|p| async move {
            let r = self.blobs.stage_move(ws, ns, stage, &p, step).await;
            (p, r)
        }))
        .buffer_unordered(MOVE_CONCURRENCY);
        let (mut moved, mut failed) = (Vec::new(), None);
        while let Some((p, r)) = results.next().await {
            match r {
                Ok(()) => moved.push(p),
                Err(warren_storage::Error::NotFound) if step == StageStep::SetAside => {}
                Err(e) => {
                    failed.get_or_insert(Error::from(e));
                }
            }
        }
        (moved, failed)
    }

    /// Deletes snapshots past their expiry; returns how many. With `dry_run`, only counts.
    pub async fn sweep_expired(&self, now: Micros, dry_run: bool) -> Result<u64> {
        if dry_run {
            return Ok(self.meta.expired_snapshots(now, u32::MAX).await?.len() as u64);
        }
        let mut removed = 0;
        loop {
            let batch = self.meta.expired_snapshots(now, SWEEP_BATCH).await?;
            if batch.is_empty() {
                return Ok(removed);
            }
            for snap in batch {
                let ev = event(
                    None,
                    &snap.workspace,
                    Some(&snap.namespace),
                    Event::SnapshotDeleted {
                        snapshot_id: snap.id.to_string(),
                        reason: Some("expired"),
                    },
                );
                if self
                    .meta
                    .delete_snapshot(&snap.workspace, &snap.namespace, &snap.id, &ev)
                    .await?
                {
                    self.blobs
                        .delete_snapshot(&snap.workspace, &snap.namespace, &snap.id)
                        .await?;
                    removed += 1;
                }
            }
        }
    }
}

fn limits(max_expanded_bytes: u64) -> UnpackLimits {
    UnpackLimits {
        max_entries: MAX_ENTRIES,
        max_file_bytes: MAX_FILE_BYTES,
        max_expanded_bytes,
    }
}

/// What an uploaded archive of `compressed` bytes may expand to: anything up to
/// [`EXPANSION_FREE_BYTES`], beyond that at most [`MAX_EXPANSION_RATIO`] times its size. Real
/// trees compress 2–20×; a gzip bomb compresses about 1000×.
fn expansion_cap(compressed: u64) -> u64 {
    EXPANSION_FREE_BYTES.max(compressed.saturating_mul(MAX_EXPANSION_RATIO))
}

fn archive_error(e: ArchiveError) -> Error {
    match e {
        ArchiveError::Invalid(msg) => Error::BadRequest(format!("invalid snapshot archive: {msg}")),
        ArchiveError::Store(e) => e.into(),
    }
}

fn op_path(op: &TreeOp) -> &str {
    match op {
        TreeOp::Clear => "",
        TreeOp::Delete(p) | TreeOp::DeleteBelow(p) | TreeOp::Dir(p, _) => p.as_str(),
        TreeOp::File(f) => f.path.as_str(),
        TreeOp::Symlink { path, .. } => path.as_str(),
    }
}
