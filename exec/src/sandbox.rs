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

use std::ffi::CString;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cgroup::{Cgroup, CgroupLimits, Cgroups};

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

/// How many launchers wait ready at most; an exec that finds none starts its own.
const PRESTARTED: usize = 2;

/// The longest script a prestarted launcher takes: one argument's worth (`MAX_ARG_STRLEN`).
/// Longer ones are launched directly, with the script on a descriptor.
const MAX_DEFERRED_SCRIPT: usize = 128 * 1024 - 1;

/// A launcher forked ahead of time, already in its own cgroup and under the sandbox uid,
/// blocked until it is given its script.
///
/// Joining a cgroup is the slow part of starting a sandbox: moving a task between cgroups
/// waits for an RCU grace period, measured at 2–10 ms here, more than bwrap takes to start.
/// A launcher that joins while the previous exec runs takes that off the next exec's path.
struct Prestarted {
    cgroup: Cgroup,
    child: tokio::process::Child,
    /// The launcher's `--args` memfd (its descriptor 3), empty until [`Sandbox::go`] fills it.
    args: OwnedFd,
    /// The pipe the launcher reads its script from; closing it empty sends it away.
    script: OwnedFd,
}

const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
agent:x:1000:1000:agent:/home/agent:/bin/bash\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n";

/// Descriptor numbers inside the launcher, in the order `fds` are passed: the options, then
/// [`DATA_FDS`] files they refer to.
const FIRST_FD: RawFd = 3;
const DATA_FDS: usize = 5;
/// Where a script too long for one argument arrives: after the options and the data.
const SCRIPT_FD: RawFd = FIRST_FD + 1 + DATA_FDS as RawFd;
const _: () = assert!(SCRIPT_FD == 9, "READ_SCRIPT names descriptor 9");
/// What bash runs for such a script: read it whole from [`SCRIPT_FD`], close that (so the
/// command sees only 0–2, like every other exec), then run it as `-c` would.
const READ_SCRIPT: &str = "IFS= read -r -d '' __warren_script <&9; exec 9<&-; eval \"unset __warren_script; $__warren_script\"";

impl Sandbox {
    /// Checks everything a sandbox needs, and runs one; the error says what is missing.
    pub async fn probe(cfg: SandboxConfig) -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err(
                "exec needs the server to run as root, to start each sandbox as a \
                        dedicated unprivileged uid in its own cgroup"
                    .into(),
            );
        }
        if !cfg.bwrap.is_file() {
            return Err(format!(
                "bubblewrap not found at {} (install the bubblewrap package)",
                cfg.bwrap.display()
            ));
        }
        if cfg.uid == 0 || cfg.gid == 0 {
            return Err("the sandbox uid and gid must not be 0".into());
        }
        prepare_base_dir(&cfg.base_dir)?;
        // Working copies are only known to the process that made them: what an earlier run
        // left (after a crash or restart) is garbage.
        crate::overlay::clean_stale_mounts(&cfg.base_dir);
        if let Ok(entries) = std::fs::read_dir(&cfg.base_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let cgroups = Cgroups::detect()?;
        let swept = cgroups.sweep_stale();
        if swept > 0 {
            tracing::info!(swept, "removed exec cgroups an earlier run left behind");
        }
        let filters = crate::seccomp::filters()?;
        let sandbox = Self {
            cfg,
            cgroups,
            filters,
            ready: std::sync::Mutex::new(Vec::new()),
        };
        sandbox.self_test().await?;
        Ok(sandbox)
    }

    async fn self_test(&self) -> Result<(), String> {
        let empty = self.cfg.base_dir.join(format!("probe-{}", random_name()));
        let wc = crate::WorkCopy::create(empty, self.owner()).map_err(|e| e.to_string())?;
        let result = async {
            let overlay =
                crate::Overlay::mount(self.run_dir(), wc.path(), self.owner(), 1 << 20, 1024)
                    .map_err(|e| format!("cannot mount the exec overlay: {e}"))?;
            let r = self
                .run(
                    overlay.merged(),
                    "touch workspace/ok",
                    None,
                    &CancellationToken::new(),
                )
                .await
                .map_err(|e| format!("cannot start bubblewrap: {e}"))?;
            if r.outcome != Outcome::Exited(0) {
                return Err(format!(
                    "bubblewrap cannot create a sandbox here ({:?}): {}",
                    r.outcome,
                    String::from_utf8_lossy(&r.stderr).trim()
                ));
            }
            Ok(())
        }
        .await;
        wc.destroy();
        result
    }

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

    /// Starts a sandbox the direct way: a new cgroup, joined by the launcher on its way to
    /// exec bwrap.
    fn launch(
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

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<Prestarted>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many prestarted launchers are waiting.
    pub fn prestarted(&self) -> usize {
        self.ready().len()
    }

    /// Adds a prestarted launcher if fewer than [`PRESTARTED`] are waiting.
    fn refill(&self) {
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
    fn go(
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

    /// bwrap's options for a sandbox over `workspace`, NUL-separated, as `--args` reads them.
    fn options(&self, workspace: &Path) -> io::Result<Vec<u8>> {
        let workspace = workspace
            .to_str()
            .ok_or_else(|| io::Error::other("workspace path is not UTF-8"))?;
        let tmp = self.cfg.limits.tmp_bytes.to_string();
        // Descriptor 3 is this argument list; 4.. are the data it refers to, in this order.
        let fd: Vec<String> = (0..=DATA_FDS)
            .map(|i| (FIRST_FD + i as RawFd).to_string())
            .collect();
        #[rustfmt::skip]
        let args: Vec<&str> = vec![
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session",
            "--uid", "1000", "--gid", "1000", "--hostname", "sandbox",
            "--cap-drop", "ALL",
            "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--setenv", "HOME", HOME, "--setenv", "USER", "agent", "--setenv", "LOGNAME", "agent",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "TMPDIR", "/tmp",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
            "--dir", "/etc",
            "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
            "--ro-bind-try", "/etc/localtime", "/etc/localtime",
            "--ro-bind-try", "/etc/nsswitch.conf", "/etc/nsswitch.conf",
            "--ro-bind-try", "/etc/ssl", "/etc/ssl",
            "--ro-bind-data", &fd[3], "/etc/passwd",
            "--ro-bind-data", &fd[4], "/etc/group",
            "--ro-bind-data", &fd[5], "/etc/hosts",
            "--proc", "/proc", "--dev", "/dev",
            "--size", &tmp, "--tmpfs", "/tmp",
            "--size", &tmp, "--tmpfs", HOME,
            "--bind", workspace, WORKSPACE,
            "--chdir", HOME,
            "--add-seccomp-fd", &fd[1], "--add-seccomp-fd", &fd[2],
            // Last: everything above is in place before the root turns read-only.
            "--remount-ro", "/",
        ];
        let mut bytes = Vec::new();
        for a in &args {
            bytes.extend_from_slice(a.as_bytes());
            bytes.push(0);
        }
        Ok(bytes)
    }

    /// The bwrap command for `argv` over `workspace`, and the descriptors it reads (kept open
    /// by the caller until the child has started). `procs` are the cgroup files to join. A
    /// `deferred` launcher gets an empty options memfd and waits for its script (see
    /// [`Prestarted`]).
    fn command(
        &self,
        workspace: &Path,
        argv: &[&str],
        procs: Vec<CString>,
        deferred: Option<Deferred>,
        script: Option<OwnedFd>,
    ) -> io::Result<(tokio::process::Command, Vec<OwnedFd>)> {
        let options = match deferred {
            Some(_) => Vec::new(),
            None => self.options(workspace)?,
        };
        let [deny, clone3] = &self.filters;
        let data: [&[u8]; DATA_FDS] = [
            deny.as_slice(),
            clone3,
            PASSWD.as_bytes(),
            GROUP.as_bytes(),
            HOSTS.as_bytes(),
        ];
        let mut fds = vec![memfd(&options)?];
        for d in data {
            fds.push(memfd(d)?);
        }
        // Right after the data, at `SCRIPT_FD`.
        fds.extend(script);
        let mut cmd = tokio::process::Command::new(&self.cfg.bwrap);
        // bwrap takes options only from the --args file; the command (the agent's own text,
        // no host detail) stays on the command line.
        cmd.arg("--args")
            .arg(FIRST_FD.to_string())
            .arg("--")
            .args(argv)
            .env_clear()
            .kill_on_drop(true);
        let mut setup = LauncherSetup {
            procs,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            fds: fds.iter().map(AsRawFd::as_raw_fd).collect(),
            deferred,
        };
        // SAFETY: the closure runs between fork and exec in the child; `LauncherSetup::apply`
        // makes only async-signal-safe syscalls on data prepared before the fork.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        Ok((cmd, fds))
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

    /// Feeds a started sandbox its input, collects its output, and waits until it exits, the
    /// time limit passes or `cancel` fires; then until every process of its cgroup is gone.
    async fn supervise(
        &self,
        cgroup: &Cgroup,
        mut child: tokio::process::Child,
        started: Instant,
        stdin: Option<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> io::Result<RunResult> {
        let limits = self.cfg.limits;
        // Without input the pipe closes here: the command reads end-of-file at once.
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            tokio::spawn(async move {
                // The command may exit without reading its input; that is not an error.
                let _ = pipe.write_all(&bytes).await;
            });
        }
        let stdout = tokio::spawn(capture(child.stdout.take(), limits.output_bytes));
        let stderr = tokio::spawn(capture(child.stderr.take(), limits.output_bytes));

        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(exit_code(status?)),
            _ = tokio::time::sleep(limits.timeout) => Outcome::TimedOut,
            _ = cancel.cancelled() => Outcome::Cancelled,
        };
        if !matches!(outcome, Outcome::Exited(_)) {
            // bwrap's death takes the sandbox's pid 1 with it (--die-with-parent), and with
            // it the whole pid namespace; the cgroup catches anything else.
            let _ = child.start_kill();
        }
        cgroup.kill_all().await?;
        let _ = child.wait().await;
        let duration = started.elapsed();
        let (stdout, stdout_truncated) = stdout.await.map_err(io::Error::other)??;
        let (stderr, stderr_truncated) = stderr.await.map_err(io::Error::other)??;
        Ok(RunResult {
            outcome,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            oom_killed: false,
            pids_exhausted: false,
            duration,
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let ready = std::mem::take(&mut *self.ready());
        for mut p in ready {
            // An empty script sends the launcher away; its cgroup goes now, not on a task that
            // a runtime shutting down might never run.
            drop(p.script);
            let _ = p.child.start_kill();
            if let Err(e) = p.cgroup.destroy_blocking() {
                tracing::warn!(error = %e, "could not remove a launcher's cgroup");
            }
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

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Reads a pipe to its end, keeping the first `cap` bytes; the rest is drained and dropped so
/// the writer never blocks on a full pipe.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap - kept.len();
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("warren", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    f.rewind()?;
    Ok(f.into())
}

fn random_name() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    hex::encode(b)
}

/// Makes the base directory, mode 0711, and checks the sandbox uid can reach it: bwrap, running
/// as that uid, resolves the workspace path itself.
fn prepare_base_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    let abs = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    for a in abs.ancestors().skip(1) {
        let mode = std::fs::metadata(a)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "the exec directory {} is below {}, which other users cannot traverse; \
                 choose another --exec-dir",
                dir.display(),
                a.display()
            ));
        }
    }
    Ok(())
}

/// What the launcher does between fork and exec, prepared beforehand so that it allocates
/// nothing: join the cgroup, drop to the sandbox uid, die with the server, leave the terminal
/// session, and pass exactly the prepared descriptors as 3, 4, … .
struct LauncherSetup {
    procs: Vec<CString>,
    uid: u32,
    gid: u32,
    fds: Vec<RawFd>,
    deferred: Option<Deferred>,
}

/// What a prestarted launcher needs to wait for its script and exec bwrap with it, all
/// allocated before the fork.
struct Deferred {
    /// The read end of the script pipe.
    script: RawFd,
    /// Room for the script and its NUL.
    buf: Vec<u8>,
    bwrap: CString,
    /// bwrap's arguments before the script.
    argv: [CString; 5],
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl LauncherSetup {
    fn apply(&mut self) -> io::Result<()> {
        if self.deferred.is_some() {
            self.wait_and_exec()
        }
        self.enter_cgroup_as_sandbox_user()?;
        let first = self.place_fds()?;
        // Everything else is closed at exec.
        close_from(first, libc::CLOSE_RANGE_CLOEXEC)
    }

    /// Joins the cgroup, drops to the sandbox uid, dies with the server, leaves the terminal.
    #[allow(unsafe_code)]
    fn enter_cgroup_as_sandbox_user(&self) -> io::Result<()> {
        // SAFETY: plain syscalls on valid, NUL-terminated paths; nothing here allocates or
        // takes a lock.
        unsafe {
            for p in &self.procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let w = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if w != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(self.gid, self.gid, self.gid))?;
            check(libc::setresuid(self.uid, self.uid, self.uid))?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            check(libc::setsid())?;
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(libc::setrlimit(libc::RLIMIT_CORE, &core))?;
        }
        Ok(())
    }

    /// Puts the prepared descriptors (and a deferred launcher's script pipe after them) at
    /// 3, 4, …; returns the first number past them.
    #[allow(unsafe_code)]
    fn place_fds(&self) -> io::Result<RawFd> {
        let script = self.deferred.as_ref().map(|d| d.script);
        let wanted: &[RawFd] = &self.fds;
        let count = wanted.len() + usize::from(script.is_some());
        // Move them out of the way first, so placing one at 3 + i can never clobber another
        // that happens to sit there.
        let mut high = [0 as RawFd; 8];
        if count > high.len() {
            return Err(io::Error::other("too many descriptors"));
        }
        // SAFETY: plain syscalls on descriptors this process owns.
        unsafe {
            for (i, &fd) in wanted.iter().chain(script.as_ref()).enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                check(high[i])?;
            }
            for (i, &fd) in high[..count].iter().enumerate() {
                check(libc::dup2(fd, FIRST_FD + i as RawFd))?;
            }
        }
        Ok(FIRST_FD + count as RawFd)
    }

    /// A prestarted launcher's life: close what it inherited (which also tells the parent,
    /// through std's error pipe, that it has started), join its cgroup as the sandbox user,
    /// then wait for its script and exec bwrap with it. Failures end the process: the exec
    /// that sends it a script sees it exit.
    #[allow(unsafe_code)]
    fn wait_and_exec(&mut self) -> ! {
        let fail = |code| -> ! {
            // SAFETY: ends this forked process without running any of the parent's code.
            unsafe { libc::_exit(code) }
        };
        let Ok(first) = self.place_fds() else {
            fail(126)
        };
        // Closed, not merely marked: a launcher that waits must not hold other execs' pipes
        // open meanwhile.
        if close_from(first, 0).is_err() || self.enter_cgroup_as_sandbox_user().is_err() {
            fail(126)
        }
        let script_fd = first - 1;
        let d = self.deferred.as_mut().expect("a deferred launcher");
        let room = d.buf.capacity() - 1;
        let buf = d.buf.as_mut_ptr();
        let mut len = 0;
        // SAFETY: reads into the spare capacity allocated before the fork, never past it; the
        // pointers handed to execve are NUL-terminated strings that outlive the call.
        unsafe {
            loop {
                let n = libc::read(script_fd, buf.add(len).cast(), room - len);
                if n > 0 {
                    len += n as usize;
                    if len == room {
                        fail(126)
                    }
                } else if n == 0 {
                    break;
                } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    fail(126)
                }
            }
            if len == 0 {
                // Sent away unused.
                fail(0)
            }
            *buf.add(len) = 0;
            libc::close(script_fd);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let argv: [*const libc::c_char; 8] = [
                d.bwrap.as_ptr(),
                d.argv[0].as_ptr(),
                d.argv[1].as_ptr(),
                d.argv[2].as_ptr(),
                d.argv[3].as_ptr(),
                d.argv[4].as_ptr(),
                buf.cast_const().cast(),
                std::ptr::null(),
            ];
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            libc::execve(d.bwrap.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        fail(127)
    }
}

/// Closes (`flags` 0) or marks close-on-exec every descriptor from `first` up.
#[allow(unsafe_code)]
fn close_from(first: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: a plain syscall on this process's own descriptor table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
