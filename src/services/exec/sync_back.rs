//! Sync-back: after an exec, upload what it changed, commit the index change with its events
//! in one transaction (under the namespace lock), delete the objects nothing names any more,
//! then apply the same changes to the working copy.

use warren_exec::{Overlay, Scan, WorkCopy};
use warren_storage::{Namespace, NsPath};

use super::blocking::{off_worker, read_chunks};
use super::plan::{Action, plan};
use super::{Exec, internal};
use crate::db::{FileWrite, NewEvent, TreeOp};
use crate::event::{Event, WriteSource};
use crate::ids::Micros;
use crate::services::{Caller, Result, event};

impl Exec {
    /// Returns the paths left out, with why.
    pub(super) async fn sync_back(
        &self,
        caller: &Caller,
        ns: &Namespace,
        wc: &mut WorkCopy,
        overlay: &Overlay,
        scan: Scan,
        completed: NewEvent,
    ) -> Result<Vec<(String, String)>> {
        let ws = &caller.key.workspace;
        let upper = overlay.upper().map_err(internal)?;
        let lock = self.coord.lock_namespace(ws, ns).await?;
        let plan = plan(&scan.changes, wc.nodes());
        let now = Micros::now();
        let ns_event = |e: Event| event(Some(caller), ws, Some(ns), e);
        let deleted = |path: &NsPath| ns_event(Event::FileDeleted { path: path.wire() });
        let written = |path: &NsPath, size: u64| {
            ns_event(Event::FileWritten {
                path: path.wire(),
                size_bytes: size,
                source: WriteSource::Exec,
            })
        };

        // Upload bytes and build the index change, in scan order.
        let mut ops = Vec::new();
        let mut events = Vec::new();
        let mut stored = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let path = &step.path;
            let mut hash = None;
            match &step.action {
                Action::Delete { indexed } => {
                    if *indexed {
                        ops.push(TreeOp::Delete(path.clone()));
                        events.push(deleted(path));
                    }
                }
                Action::Dir {
                    opaque,
                    vanished,
                    over_file,
                } => {
                    if *opaque {
                        events.extend(vanished.iter().map(deleted));
                        ops.push(TreeOp::DeleteBelow(path.clone()));
                    }
                    if *over_file {
                        // The local filesystem backend cannot hold a directory where a file's
                        // object is: it goes now, not after the commit.
                        self.blobs.delete(ws, ns, path).await?;
                    }
                    ops.push(TreeOp::Dir(path.clone(), now));
                }
                Action::Symlink { target } => {
                    ops.push(TreeOp::Symlink {
                        path: path.clone(),
                        target: (*target).to_owned(),
                        mtime: now,
                    });
                    events.push(written(path, target.len() as u64));
                }
                Action::File {
                    mode,
                    stat,
                    shadowed,
                } => {
                    for p in shadowed {
                        self.blobs.delete(ws, ns, p).await?;
                    }
                    let (parent, name) = warren_exec::safe_fs::split(path.as_str());
                    let file = upper
                        .open_dir(parent)
                        .and_then(|d| d.open_file(name.as_bytes(), Some(stat)))
                        .map_err(internal)?;
                    let mut writer = self.blobs.writer(ws, ns, path);
                    let mut chunks = read_chunks(file);
                    while let Some(chunk) = chunks.recv().await {
                        writer.write(chunk.map_err(internal)?).await?;
                    }
                    let w = writer.finish().await?;
                    ops.push(TreeOp::File(FileWrite {
                        path: path.clone(),
                        size: w.size,
                        mode: *mode,
                        mtime: now,
                        sha256: w.sha256.clone(),
                    }));
                    events.push(written(path, w.size));
                    hash = Some((w.sha256, w.size));
                }
            }
            stored.push(hash);
        }
        events.push(completed);
        let (before, after) = self.meta.commit_tree_ops(&lock, &ops, &events).await?;
        // Every event but the completion names one file written or removed.
        let bytes = stored.iter().flatten().map(|(_, size)| size).sum();
        crate::metrics::exec_synced(events.len() as u64 - 1, bytes);
        for p in &plan.doomed {
            if let Err(e) = self.blobs.delete(ws, ns, p).await {
                tracing::warn!(path = %p, error = %e, "orphan left after an exec");
            }
        }

        // The index holds the exec's result; now the working copy follows.
        for (step, hash) in plan.steps.iter().zip(stored) {
            let p = step.path.as_str();
            match &step.action {
                Action::Delete { .. } => wc.remove(p),
                Action::Dir { opaque, .. } => {
                    if *opaque {
                        wc.remove(p).map_err(internal)?;
                    }
                    wc.make_dir(p)
                }
                Action::Symlink { target } => wc.symlink(p, target),
                Action::File { mode, stat, .. } => {
                    let (sha, size) = hash.expect("files carry their hash");
                    let (parent, name) = warren_exec::safe_fs::split(p);
                    let opened = upper
                        .open_dir(parent)
                        .and_then(|d| d.open_file(name.as_bytes(), Some(stat)))
                        .and_then(|src| Ok((src, wc.create_file(p, *mode)?)));
                    match opened {
                        Ok((mut src, mut dst)) => {
                            off_worker(move || std::io::copy(&mut src, &mut dst)).await?;
                            wc.file_written(p, sha, *mode, size);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            .map_err(internal)?;
        }
        // Current only if nothing else changed the namespace while the exec ran.
        wc.generation = (wc.generation == Some(before)).then_some(after);
        let mut skipped = scan.skipped;
        skipped.extend(plan.skipped);
        Ok(skipped)
    }
}
