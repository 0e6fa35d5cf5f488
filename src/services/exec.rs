//! Exec: run an agent's shell command over its namespace in a sandbox, then sync the changes
//! back into the index and object storage.
//!
//! Pipeline (design.md §4): authorize → bring the namespace's warm working copy up to the
//! index generation → mount a copy-on-write overlay over it → run the sandbox → once every
//! process is gone, scan the overlay's upper layer (only what changed) → upload changed bytes
//! → commit index, events and `exec.completed` in one transaction → apply the same changes to
//! the working copy. Execs on one namespace run one at a time (the working copy's lock), so
//! each sees the previous one's result; file API writes during an exec are kept, and an exec's
//! change to the same file wins because it commits later.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use warren_exec::{Change, Node, Outcome, Overlay, Sandbox, ScanLimits, WorkCopy};
use warren_storage::{BlobStore, Namespace, NsPath, WorkspaceId};

use super::files::MAX_FILE_BYTES;
use super::running::Running;
use super::{Caller, Error, Result, event};
use crate::coord::Coordinator;
use crate::db::{EntryKind, FileWrite, MetaStore, NewEvent, TreeOp};
use crate::event::{Event, WriteSource};
use crate::ids::Micros;

/// Largest `stdin` accepted (spec §4.1).
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
/// Largest command accepted.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// How much of stdout goes into the `exec.completed` event.
const EVENT_STDOUT_CHARS: usize = 500;
/// Files up to this size are fetched concurrently while materializing; larger ones stream.
const SMALL_FILE: u64 = 1024 * 1024;
const FETCH_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub sandbox: warren_exec::SandboxConfig,
    /// Bytes of working copies kept warm on local disk, over all namespaces.
    pub cache_bytes: u64,
    /// Most changed entries one exec may sync back.
    pub max_changes: usize,
}

impl ExecSettings {
    /// The defaults, with working copies under `base_dir`.
    pub fn with_dir(base_dir: std::path::PathBuf) -> Self {
        Self {
            sandbox: warren_exec::SandboxConfig {
                bwrap: "/usr/bin/bwrap".into(),
                base_dir,
                uid: 61_000,
                gid: 61_000,
                limits: warren_exec::Limits::default(),
            },
            cache_bytes: 4 << 30,
            max_changes: 100_000,
        }
    }
}

pub struct ExecRequest {
    pub command: String,
    pub stdin: Option<String>,
}

#[derive(Debug)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub oom_killed: bool,
    /// Paths the sync left out, with why.
    pub not_synced: Vec<(String, String)>,
}

type NsKey = (WorkspaceId, Namespace);

/// A change to apply to the working copy once committed, with the stored file's hash and size.
type Planned<'a> = (NsPath, &'a Change, Option<(String, u64)>);

/// A namespace's working copy and its lock; execs of the namespace queue on the lock.
#[derive(Default)]
struct Slot {
    copy: tokio::sync::Mutex<Option<WorkCopy>>,
    bytes: AtomicU64,
    last_used: AtomicU64,
}

pub struct Exec {
    meta: Arc<dyn MetaStore>,
    blobs: BlobStore,
    coord: Arc<dyn Coordinator>,
    running: Arc<Running>,
    /// The sandbox, or why this host cannot run one.
    sandbox: std::result::Result<Sandbox, String>,
    cache_bytes: u64,
    max_changes: usize,
    slots: Mutex<HashMap<NsKey, Arc<Slot>>>,
    clock: AtomicU64,
}

impl Exec {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        coord: Arc<dyn Coordinator>,
        running: Arc<Running>,
        sandbox: std::result::Result<Sandbox, String>,
        settings: &ExecSettings,
    ) -> Self {
        Self {
            meta,
            blobs,
            coord,
            running,
            sandbox,
            cache_bytes: settings.cache_bytes,
            max_changes: settings.max_changes,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// Why exec is unavailable on this host, if it is.
    pub fn unavailable(&self) -> Option<&str> {
        self.sandbox.as_ref().err().map(String::as_str)
    }

    fn slot(&self, key: &NsKey) -> Arc<Slot> {
        let slot = Arc::clone(self.slots.lock().unwrap().entry(key.clone()).or_default());
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot
    }

    /// Drops a namespace's working copy (it was deleted or purged).
    pub async fn forget(&self, ws: &WorkspaceId, ns: &Namespace) {
        let slot = self.slots.lock().unwrap().remove(&(ws.clone(), ns.clone()));
        if let Some(slot) = slot
            && let Some(wc) = slot.copy.lock().await.take()
        {
            wc.destroy();
        }
    }

    pub async fn run(
        &self,
        caller: &Caller,
        ns: &Namespace,
        req: ExecRequest,
    ) -> Result<ExecResult> {
        let sandbox = self.sandbox.as_ref().map_err(|why| {
            Error::Unavailable(format!("exec is not available on this server: {why}"))
        })?;
        if req.command.len() > MAX_COMMAND_BYTES {
            return Err(Error::Unprocessable(format!(
                "command exceeds {MAX_COMMAND_BYTES} bytes"
            )));
        }
        if req.command.contains('\0') {
            return Err(Error::Unprocessable("command contains a NUL byte".into()));
        }
        let stdin_bytes = req.stdin.as_ref().map_or(0, String::len);
        if stdin_bytes > MAX_STDIN_BYTES {
            return Err(Error::Unprocessable(format!(
                "stdin exceeds the limit of {MAX_STDIN_BYTES} bytes (1 MB)"
            )));
        }
        let ws = &caller.key.workspace;
        let guard = self
            .running
            .hold(self.meta.as_ref(), caller, Some(ns))
            .await?;
        let key = (ws.clone(), ns.clone());
        let _turn = self.coord.exec_turn(ws, ns).await;
        let slot = self.slot(&key);
        let mut copy = slot.copy.lock().await;

        let result = self
            .run_locked(
                sandbox,
                caller,
                ns,
                &req,
                stdin_bytes,
                &mut copy,
                &guard.cancel,
            )
            .await;
        // After an internal failure the copy may be half-changed: the next exec materializes
        // afresh. A revoked or timed-out exec left it whole.
        if matches!(result, Err(Error::Internal(_)))
            && let Some(wc) = copy.take()
        {
            wc.destroy();
        }
        let bytes = copy.as_ref().map_or(0, WorkCopy::bytes);
        slot.bytes.store(bytes, Ordering::Relaxed);
        drop(copy);
        drop(guard);
        self.evict(&key).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_locked(
        &self,
        sandbox: &Sandbox,
        caller: &Caller,
        ns: &Namespace,
        req: &ExecRequest,
        stdin_bytes: usize,
        copy: &mut Option<WorkCopy>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<ExecResult> {
        let ws = &caller.key.workspace;
        if cancel.is_cancelled() {
            return Err(revoked());
        }
        let wc = match copy {
            Some(wc) => wc,
            None => copy.insert(
                WorkCopy::create(sandbox.work_copy_dir(), sandbox.owner()).map_err(internal)?,
            ),
        };
        let generation = self.meta.generation(ws, ns).await?;
        if wc.generation != Some(generation) {
            self.refresh(wc, ws, ns, generation).await?;
        }

        let limits = *sandbox.limits();
        let mut overlay = Overlay::mount(
            sandbox.run_dir(),
            wc.path(),
            sandbox.owner(),
            limits.write_bytes,
            limits.write_inodes,
        )
        .map_err(internal)?;
        let script = format!(
            "if [ -f workspace/.trove/init.sh ]; then source workspace/.trove/init.sh; fi\n{}",
            req.command
        );
        let stdin = req.stdin.as_ref().map(|s| s.as_bytes().to_vec());
        let run = sandbox
            .run(overlay.merged(), &script, stdin, cancel)
            .await
            .map_err(internal)?;
        overlay.unmount_merged();
        if run.outcome == Outcome::Cancelled {
            // Revoked mid-run: nothing it did is kept.
            return Err(revoked());
        }

        let scan = overlay
            .scan(ScanLimits {
                max_entries: self.max_changes,
                max_file_bytes: MAX_FILE_BYTES,
                max_path_bytes: warren_storage::MAX_PATH_BYTES,
            })
            .map_err(internal)?;
        let exit_code = match run.outcome {
            Outcome::Exited(c) => c,
            _ => 124,
        };
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        let mut stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        let completed = event(
            Some(caller),
            ws,
            Some(ns),
            Event::ExecCompleted {
                command: req.command.clone(),
                exit_code,
                duration_ms: run.duration.as_millis() as u64,
                stdout: stdout.chars().take(EVENT_STDOUT_CHARS).collect(),
                stdin_bytes,
                timed_out: run.outcome == Outcome::TimedOut,
            },
        );
        let not_synced = self
            .sync_back(caller, ns, wc, &overlay, scan, completed)
            .await?;
        // Unmounting the upper layer and removing its directory need not delay the answer.
        tokio::task::spawn_blocking(move || drop(overlay));

        if run.outcome == Outcome::TimedOut {
            return Err(Error::Timeout(format!(
                "Command timed out after {}s.",
                limits.timeout.as_secs()
            )));
        }
        let mut note = |s: String| {
            if !stderr.is_empty() && !stderr.ends_with('\n') {
                stderr.push('\n');
            }
            stderr.push_str(&s);
            stderr.push('\n');
        };
        for (cut, name) in [
            (run.stdout_truncated, "stdout"),
            (run.stderr_truncated, "stderr"),
        ] {
            if cut {
                note(format!(
                    "[warren] {name} cut at {} bytes",
                    limits.output_bytes
                ));
            }
        }
        if run.oom_killed {
            note(format!(
                "[warren] killed: out of memory (limit {} MiB)",
                limits.memory_bytes >> 20
            ));
        }
        if run.pids_exhausted {
            note(format!("[warren] process limit of {} reached", limits.pids));
        }
        for (path, why) in &not_synced {
            note(format!("[warren] not synced: workspace/{path}: {why}"));
        }
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
            duration_ms: run.duration.as_millis() as u64,
            stdout_truncated: run.stdout_truncated,
            stderr_truncated: run.stderr_truncated,
            oom_killed: run.oom_killed,
            not_synced,
        })
    }

    /// Brings `wc` to the index's state, touching only the paths that differ.
    async fn refresh(
        &self,
        wc: &mut WorkCopy,
        ws: &WorkspaceId,
        ns: &Namespace,
        generation: u64,
    ) -> Result<()> {
        let entries = self.meta.tree(ws, ns).await?;
        let wanted: HashMap<&str, Node> = entries
            .iter()
            .map(|e| (e.path.as_str(), node_of(e)))
            .collect();
        let stale: Vec<String> = wc
            .nodes()
            .iter()
            .filter(|(p, n)| wanted.get(p.as_str()).is_none_or(|w| !same_kind(w, n)))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            if wc.node(&p).is_some() {
                wc.remove(&p).map_err(internal)?;
            }
        }
        let mut fetch = Vec::new();
        for e in &entries {
            let want = &wanted[e.path.as_str()];
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
        wc.generation = Some(generation);
        Ok(())
    }

    /// Uploads and commits what the exec changed, then applies it to the working copy.
    async fn sync_back(
        &self,
        caller: &Caller,
        ns: &Namespace,
        wc: &mut WorkCopy,
        overlay: &Overlay,
        scan: warren_exec::Scan,
        completed: NewEvent,
    ) -> Result<Vec<(String, String)>> {
        let ws = &caller.key.workspace;
        let mut skipped = scan.skipped;
        let upper = overlay.upper().map_err(internal)?;
        let lock = self.coord.lock_namespace(ws, ns).await;
        let now = Micros::now();
        let mut ops = Vec::new();
        let mut events = Vec::new();
        // Objects to remove after the commit: files deleted or replaced by another kind.
        let mut doomed: BTreeSet<NsPath> = BTreeSet::new();
        let written = |path: &NsPath, size: u64| {
            event(
                Some(caller),
                ws,
                Some(ns),
                Event::FileWritten {
                    path: path.wire(),
                    size_bytes: size,
                    source: WriteSource::Exec,
                },
            )
        };
        let deleted = |path: &NsPath| {
            event(
                Some(caller),
                ws,
                Some(ns),
                Event::FileDeleted { path: path.wire() },
            )
        };
        let files_below = |wc: &WorkCopy, p: &str, inclusive: bool| -> Vec<String> {
            let lo = format!("{p}/");
            let hi = format!("{p}0");
            let mut v: Vec<String> = wc
                .nodes()
                .range(lo..hi)
                .filter(|(_, n)| matches!(n, Node::File { .. }))
                .map(|(k, _)| k.clone())
                .collect();
            if inclusive && matches!(wc.node(p), Some(Node::File { .. })) {
                v.push(p.to_owned());
            }
            v
        };
        let upper_paths: BTreeSet<&str> = scan.changes.iter().map(Change::path).collect();

        // First pass: validate paths, upload bytes, build the index change.
        let mut plan: Vec<Planned> = Vec::new();
        for change in &scan.changes {
            let raw = change.path();
            let path = match NsPath::parse(raw) {
                Ok(p) => p,
                Err(e) => {
                    skipped.push((raw.to_owned(), e.to_string()));
                    continue;
                }
            };
            match change {
                Change::Deleted(_) => {
                    doomed.extend(
                        files_below(wc, raw, true)
                            .iter()
                            .filter_map(|p| NsPath::parse(p).ok()),
                    );
                    if wc.node(raw).is_some() {
                        ops.push(TreeOp::Delete(path.clone()));
                        events.push(deleted(&path));
                    }
                    plan.push((path, change, None));
                }
                Change::Dir { opaque, .. } => {
                    if *opaque {
                        // Everything the old directory held and the new one does not is gone.
                        for f in files_below(wc, raw, false) {
                            if !upper_paths.contains(f.as_str()) {
                                let p = NsPath::parse(&f)?;
                                events.push(deleted(&p));
                                doomed.insert(p);
                            }
                        }
                        ops.push(TreeOp::DeleteBelow(path.clone()));
                    }
                    if matches!(wc.node(raw), Some(Node::File { .. })) {
                        // The local filesystem backend cannot hold a directory where a file's
                        // object is: it goes now, not after the commit.
                        self.blobs.delete(ws, ns, &path).await?;
                    }
                    ops.push(TreeOp::Dir(path.clone(), now));
                    plan.push((path, change, None));
                }
                Change::Symlink { target, .. } => {
                    doomed.extend(
                        files_below(wc, raw, true)
                            .iter()
                            .filter_map(|p| NsPath::parse(p).ok()),
                    );
                    ops.push(TreeOp::Symlink {
                        path: path.clone(),
                        target: target.clone(),
                        mtime: now,
                    });
                    events.push(written(&path, target.len() as u64));
                    plan.push((path, change, None));
                }
                Change::File { mode, stat, .. } => {
                    for f in files_below(wc, raw, false) {
                        let p = NsPath::parse(&f)?;
                        self.blobs.delete(ws, ns, &p).await?;
                    }
                    let (parent, name) = warren_exec::safe_fs::split(raw);
                    let file = upper
                        .open_dir(parent)
                        .and_then(|d| d.open_file(name.as_bytes(), Some(stat)))
                        .map_err(internal)?;
                    let mut writer = self.blobs.writer(ws, ns, &path);
                    let mut chunks = read_chunks(file);
                    while let Some(chunk) = chunks.recv().await {
                        writer.write(chunk.map_err(internal)?).await?;
                    }
                    let w = writer.finish().await?;
                    doomed.remove(&path);
                    ops.push(TreeOp::File(FileWrite {
                        path: path.clone(),
                        size: w.size,
                        mode: *mode,
                        mtime: now,
                        sha256: w.sha256.clone(),
                    }));
                    events.push(written(&path, w.size));
                    plan.push((path, change, Some((w.sha256, w.size))));
                }
            }
        }
        events.push(completed);
        let (before, after) = self.meta.commit_tree_ops(&lock, &ops, &events).await?;
        for p in &doomed {
            if let Err(e) = self.blobs.delete(ws, ns, p).await {
                tracing::warn!(path = %p, error = %e, "orphan left after an exec");
            }
        }

        // The index holds the exec's result; now the working copy follows.
        for (path, change, stored) in plan {
            let p = path.as_str();
            match change {
                Change::Deleted(_) => wc.remove(p),
                Change::Dir { opaque, .. } => {
                    if *opaque {
                        wc.remove(p).map_err(internal)?;
                    }
                    wc.make_dir(p)
                }
                Change::Symlink { target, .. } => wc.symlink(p, target),
                Change::File { mode, stat, .. } => {
                    let (sha, size) = stored.expect("files carry their hash");
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
        Ok(skipped)
    }

    /// Keeps the warm copies within the byte budget, dropping the least recently used ones
    /// that no exec is using.
    async fn evict(&self, keep: &NsKey) {
        loop {
            let victim = {
                let slots = self.slots.lock().unwrap();
                let total: u64 = slots
                    .values()
                    .map(|s| s.bytes.load(Ordering::Relaxed))
                    .sum();
                if total <= self.cache_bytes {
                    return;
                }
                slots
                    .iter()
                    .filter(|(k, s)| *k != keep && s.copy.try_lock().is_ok())
                    .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone())
            };
            let Some(victim) = victim else { return };
            self.forget(&victim.0, &victim.1).await;
        }
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

fn node_of(e: &crate::db::Entry) -> Node {
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

fn sha_of(e: &crate::db::Entry) -> String {
    e.sha256.clone().unwrap_or_default()
}

fn same_kind(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn revoked() -> Error {
    Error::Unauthorized(
        "the command was stopped because its API key was revoked (or its namespace deleted); \
         its changes were discarded"
            .into(),
    )
}

/// Runs blocking file work (up to a whole 100 MB file) on the blocking pool, off the async
/// workers that serve every other request.
async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// Chunks read from a file between awaits: how many may wait while the consumer uploads.
const CHUNKS_IN_FLIGHT: usize = 4;
const CHUNK_BYTES: usize = 256 * 1024;

/// Reads `file` on the blocking pool, handing its chunks over as they are read.
fn read_chunks(mut file: std::fs::File) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the reader went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Writes the chunks sent on the returned channel to `file` on the blocking pool; the handle
/// says how that went once the sender is dropped.
fn write_chunks(
    mut file: std::fs::File,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let writing = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        Ok(())
    });
    (tx, writing)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
