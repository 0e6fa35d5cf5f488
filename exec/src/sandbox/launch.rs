//! Starting a launcher: the process that joins the exec's cgroup, drops to the sandbox uid and
//! execs bwrap. Directly, or ahead of time so the next exec skips the slow cgroup join.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use super::postfork::Deferred;
use super::recipe::{READ_SCRIPT, memfd};
use super::{Sandbox, remove_later};
use crate::cgroup::Cgroup;

/// How many launchers wait ready at most; an exec that finds none starts its own.
pub(super) const PRESTARTED: usize = 2;

/// The longest script a prestarted launcher takes: one argument's worth (`MAX_ARG_STRLEN`).
/// Longer ones are launched directly, with the script on a descriptor.
pub(super) const MAX_DEFERRED_SCRIPT: usize = 128 * 1024 - 1;

/// A launcher forked ahead of time, already in its own cgroup and under the sandbox uid,
/// blocked until it is given its script.
///
/// Joining a cgroup is the slow part of starting a sandbox: moving a task between cgroups
/// waits for an RCU grace period, measured at 2–10 ms here, more than bwrap takes to start.
/// A launcher that joins while the previous exec runs takes that off the next exec's path.
pub(super) struct Prestarted {
    cgroup: Cgroup,
    child: tokio::process::Child,
    /// The launcher's `--args` memfd (its descriptor 3), empty until [`Sandbox::go`] fills it.
    args: OwnedFd,
    /// The pipe the launcher reads its script from; closing it empty sends it away.
    script: OwnedFd,
}

impl Prestarted {
    /// Sends an unused launcher away: an empty script ends it. Its cgroup goes now, not on a
    /// task that a runtime shutting down might never run.
    pub(super) fn dismiss(mut self) {
        drop(self.script);
        let _ = self.child.start_kill();
        if let Err(e) = self.cgroup.destroy_blocking() {
            tracing::warn!(error = %e, "could not remove a launcher's cgroup");
        }
    }
}

impl Sandbox {
    /// Starts a sandbox the direct way: a new cgroup, joined by the launcher on its way to
    /// exec bwrap.
    pub(super) fn launch(
        &self,
        workspace: &Path,
        script: &str,
    ) -> io::Result<(Cgroup, tokio::process::Child, Instant)> {
        let cgroup = self.new_cgroup()?;
        // One argument holds at most `MAX_ARG_STRLEN` bytes; a longer script comes in on a
        // descriptor, which bash reads and closes before running it.
        let (argv, script_fd) = if script.len() < MAX_DEFERRED_SCRIPT {
            (["/bin/bash", "-c", script], None)
        } else {
            (
                ["/bin/bash", "-c", READ_SCRIPT],
                Some(memfd(script.as_bytes())?),
            )
        };
        let (mut cmd, fds) =
            self.command(workspace, &argv, cgroup.procs_files(), None, script_fd)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let spawned = cmd.spawn();
        // The launcher has its own copies of the descriptors now.
        drop(fds);
        match spawned {
            Ok(child) => Ok((cgroup, child, started)),
            Err(e) => {
                remove_later(cgroup);
                Err(e)
            }
        }
    }

    pub(super) fn ready(&self) -> std::sync::MutexGuard<'_, Vec<Prestarted>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many prestarted launchers are waiting.
    pub fn prestarted(&self) -> usize {
        self.ready().len()
    }

    /// Adds a prestarted launcher if fewer than [`PRESTARTED`] are waiting.
    pub(super) fn refill(&self) {
        if self.ready().len() >= PRESTARTED {
            return;
        }
        match self.prestart() {
            Ok(p) => self.ready().push(p),
            Err(e) => tracing::warn!(error = %e, "could not prestart a sandbox launcher"),
        }
    }

    fn prestart(&self) -> io::Result<Prestarted> {
        let cgroup = self.new_cgroup()?;
        let (script_rx, script_tx) = io::pipe()?;
        let deferred = Deferred {
            script: script_rx.as_raw_fd(),
            buf: Vec::with_capacity(MAX_DEFERRED_SCRIPT + 1),
            bwrap: CString::new(self.cfg.bwrap.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?,
            argv: ["--args", "3", "--", "/bin/bash", "-c"]
                .map(|a| CString::new(a).expect("no NUL")),
        };
        // The workspace is not known yet: the options go into the memfd at `go`.
        let (mut cmd, mut fds) = self.command(
            Path::new(""),
            &["/bin/bash", "-c"],
            cgroup.procs_files(),
            Some(deferred),
            None,
        )?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Returns as soon as the launcher has closed what it inherited, before it joins its
        // cgroup: the slow part happens off this thread.
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                remove_later(cgroup);
                return Err(e);
            }
        };
        drop(script_rx);
        let args = fds.swap_remove(0);
        Ok(Prestarted {
            cgroup,
            child,
            args,
            script: script_tx.into(),
        })
    }

    /// Sends a prestarted launcher on its way: its options (now that the workspace is known),
    /// then its script.
    pub(super) fn go(
        &self,
        p: Prestarted,
        workspace: &Path,
        script: &str,
    ) -> io::Result<(Cgroup, tokio::process::Child, Instant)> {
        let started = Instant::now();
        let sent = self.options(workspace).and_then(|opts| {
            // At offset 0 without moving the shared offset: bwrap reads from 0.
            rustix::io::pwrite(&p.args, &opts, 0)?;
            let mut pipe = std::fs::File::from(p.script);
            pipe.write_all(script.as_bytes())
        });
        match sent {
            Ok(()) => Ok((p.cgroup, p.child, started)),
            Err(e) => {
                discard(p.cgroup, p.child);
                Err(e)
            }
        }
    }
}

/// Disposes of a launcher that will not run: kills it, then removes its cgroup once it is
/// gone.
fn discard(cgroup: Cgroup, mut child: tokio::process::Child) {
    let _ = child.start_kill();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = child.wait().await;
            remove_later(cgroup);
        });
    }
}
