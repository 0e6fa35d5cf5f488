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

//!
//! The stages live beside this file: [`warm`] (the working copies kept between execs),
//! [`refresh`] (materializing), [`plan`] and [`sync_back`] (the way back), [`blocking`] (file
//! work off the async workers).

mod blocking;
mod plan;
mod refresh;
mod sync_back;
mod warm;

use std::sync::Arc;

use warren_exec::{Outcome, Overlay, Sandbox, ScanLimits, Unavailable, WorkCopy};
use warren_storage::{BlobStore, Namespace, WorkspaceId};

use super::files::MAX_FILE_BYTES;
use super::running::Running;
use super::{Caller, Error, Result, event};
use crate::coord::Coordinator;
use crate::db::MetaStore;
use crate::event::Event;
use warm::WarmCopies;

/// Largest `stdin` accepted (spec §4.1).
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
/// Largest command accepted.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// How much of stdout goes into the `exec.completed` event.
const EVENT_STDOUT_CHARS: usize = 500;

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

pub struct Exec {
    meta: Arc<dyn MetaStore>,
    blobs: BlobStore,
    coord: Arc<dyn Coordinator>,
    running: Arc<Running>,
    /// The sandbox, or why this host cannot run one.
    sandbox: std::result::Result<Sandbox, Unavailable>,
    max_changes: usize,
    warm: WarmCopies,
}

impl Exec {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        coord: Arc<dyn Coordinator>,
        running: Arc<Running>,
        sandbox: std::result::Result<Sandbox, Unavailable>,
        settings: &ExecSettings,
    ) -> Self {
        Self {
            meta,
            blobs,
            coord,
            running,
            sandbox,
            max_changes: settings.max_changes,
            warm: WarmCopies::new(settings.cache_bytes),
        }
    }

    /// Why exec is unavailable on this host, if it is.
    pub fn unavailable(&self) -> Option<&Unavailable> {
        self.sandbox.as_ref().err()
    }

    /// Drops a namespace's working copy (it was deleted or purged).
    pub async fn forget(&self, ws: &WorkspaceId, ns: &Namespace) {
        self.warm.forget(ws, ns).await;
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
        let _turn = self.coord.exec_turn(ws, ns).await?;
        let slot = self.warm.slot(ws, ns);
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
        slot.sized(&copy);
        drop(copy);
        drop(guard);
        self.warm.evict((ws, ns)).await;
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
            .map_err(|e| {
                crate::metrics::exec_run(crate::metrics::ExecOutcome::Error, Default::default());
                internal(e)
            })?;
        overlay.unmount_merged();
        use crate::metrics::{ExecOutcome, exec_run};
        let counted = match run.outcome {
            Outcome::Cancelled => ExecOutcome::Killed,
            Outcome::TimedOut => ExecOutcome::Timeout,
            _ if run.oom_killed => ExecOutcome::Oom,
            Outcome::Exited(_) => ExecOutcome::Exited,
        };
        exec_run(counted, run.duration);
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
}

fn revoked() -> Error {
    Error::Unauthorized(
        "the command was stopped because its API key was revoked (or its namespace deleted); \
         its changes were discarded"
            .into(),
    )
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
