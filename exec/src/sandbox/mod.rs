//! The bubblewrap launcher: runs one command in a fresh sandbox and collects its result.
//!
//! The recipe and the leaks each step closes are in `design.md` §4: bwrap is spawned as a
//! child (never by forking the multi-threaded server for namespace setup) with an empty
//! environment, its arguments passed through a memfd (`--args`) so `/proc/1/cmdline` shows no
//! host path, every other inherited descriptor marked close-on-exec, as a dedicated
//! unprivileged uid, in a per-exec cgroup joined before bwrap runs (ahead of time: see
//! `Prestarted`). The sandbox sees read-only
//! `/usr`, a synthetic `/etc`, fresh `/proc` and `/dev`, size-capped tmpfs `/tmp` and home, and
//! the workspace; it has no network, and runs under the seccomp filters of [`crate::seccomp`].
//!
//! The parts: [`probe`] (what a host needs, checked at start-up), [`recipe`] (bwrap's
//! options and the launcher command), [`launch`] (starting a launcher, directly or ahead of
//! time), [`supervise`] (feeding, watching and reaping a running sandbox) and [`postfork`]
//! (the only code that runs between fork and exec, and the only `unsafe` of the launch).

mod launch;
mod postfork;
mod probe;
mod recipe;
mod supervise;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cgroup::{Cgroup, CgroupLimits, Cgroups};
use launch::{MAX_DEFERRED_SCRIPT, Prestarted};
pub use probe::{Unavailable, closed_ancestor};

/// Where the workspace appears inside the sandbox, and the command's working directory.
pub const HOME: &str = "/home/agent";
pub const WORKSPACE: &str = "/home/agent/workspace";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPU bandwidth in thousandths of a CPU.
    pub cpu_millis: u32,
    /// Size of the private `/tmp` and of the home directory's tmpfs, each.
    pub tmp_bytes: u64,
    /// What one exec may write to the workspace: bytes and inodes of its upper layer.
    pub write_bytes: u64,
    pub write_inodes: u64,
    /// stdout and stderr are each cut at this many bytes.
    pub output_bytes: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            pids: 256,
            cpu_millis: 1000,
            tmp_bytes: 256 << 20,
            write_bytes: 1 << 30,
            write_inodes: 200_000,
            output_bytes: 1 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub bwrap: PathBuf,
    /// Holds working copies and per-exec directories; must be traversable by `uid`.
    pub base_dir: PathBuf,
    /// The host uid and gid sandboxes run as: dedicated, owning nothing else.
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    TimedOut,
    Cancelled,
}

#[derive(Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub oom_killed: bool,
    pub pids_exhausted: bool,
    pub duration: Duration,
}

/// A host able to run sandboxes, checked at start-up.
pub struct Sandbox {
    cfg: SandboxConfig,
    cgroups: Cgroups,
    filters: [Vec<u8>; 2],
    /// Launchers started ahead of the execs that will use them.
    ready: std::sync::Mutex<Vec<Prestarted>>,
}

impl Sandbox {
    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    /// The host uid and gid that own working copies.
    pub fn owner(&self) -> (u32, u32) {
        (self.cfg.uid, self.cfg.gid)
    }

    /// A fresh, random, non-identifying directory path under the base directory (the path is
    /// visible inside the sandbox through `/proc/self/mountinfo`).
    pub fn run_dir(&self) -> PathBuf {
        self.cfg.base_dir.join(random_name())
    }

    pub fn work_copy_dir(&self) -> PathBuf {
        self.cfg.base_dir.join(random_name())
    }

    /// Runs `script` under bash with `workspace` bound at [`WORKSPACE`], until it exits, the
    /// time limit passes or `cancel` fires. Every process of the sandbox is gone on return.
    pub async fn run(
        &self,
        workspace: &Path,
        script: &str,
        stdin: Option<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> io::Result<RunResult> {
        let ready = if script.len() < MAX_DEFERRED_SCRIPT {
            self.ready().pop()
        } else {
            None
        };
        let launched = match ready.map(|p| self.go(p, workspace, script)) {
            Some(Ok(launched)) => launched,
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::warn!(error = %e, "a prestarted launcher failed; starting one now");
                }
                self.launch(workspace, script)?
            }
        };
        // Start the next exec's launcher while this sandbox boots.
        self.refill();
        let (cgroup, child, started) = launched;
        let result = self.supervise(&cgroup, child, started, stdin, cancel).await;
        let oom_killed = cgroup.oom_kills() > 0;
        let pids_exhausted = cgroup.pids_exhausted();
        // Empty now (`supervise` waited for that); removing it need not delay the answer.
        remove_later(cgroup);
        let mut r = result?;
        r.oom_killed = oom_killed;
        r.pids_exhausted = pids_exhausted;
        Ok(r)
    }

    fn new_cgroup(&self) -> io::Result<Cgroup> {
        let limits = self.cfg.limits;
        self.cgroups.create(
            &random_name(),
            CgroupLimits {
                memory_bytes: limits.memory_bytes,
                pids: limits.pids,
                cpu_millis: limits.cpu_millis,
            },
        )
    }

    /// Runs `argv` directly under bwrap with the same flags, descriptors and uid as an exec,
    /// but no cgroup, shell or output capture: the floor an exec is measured against.
    pub async fn run_bare(
        &self,
        workspace: &Path,
        argv: &[&str],
    ) -> io::Result<std::process::ExitStatus> {
        let (mut cmd, fds) = self.command(workspace, argv, Vec::new(), None, None)?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        drop(fds);
        child.wait().await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let ready = std::mem::take(&mut *self.ready());
        for p in ready {
            p.dismiss();
        }
    }
}

/// Removes an exec's cgroup in the background (when there is a runtime to do that on).
fn remove_later(cgroup: Cgroup) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Err(e) = cgroup.destroy().await {
                tracing::warn!(error = %e, "could not remove an exec cgroup");
            }
        });
    }
}

fn random_name() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    hex::encode(b)
}
