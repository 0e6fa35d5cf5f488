//! The sandbox recipe: bwrap's options (what the sandbox sees, design.md §4) and the launcher
//! command that carries them, with its data on memfds.

use std::ffi::CString;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::postfork::{self, Deferred, LauncherSetup};
use super::{HOME, Sandbox, WORKSPACE};

const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
agent:x:1000:1000:agent:/home/agent:/bin/bash\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n";

/// Descriptor numbers inside the launcher, in the order `fds` are passed: the options, then
/// [`DATA_FDS`] files they refer to.
pub(super) const FIRST_FD: RawFd = 3;
const DATA_FDS: usize = 5;
/// Where a script too long for one argument arrives: after the options and the data.
const SCRIPT_FD: RawFd = FIRST_FD + 1 + DATA_FDS as RawFd;
const _: () = assert!(SCRIPT_FD == 9, "READ_SCRIPT names descriptor 9");
/// What bash runs for such a script: read it whole from [`SCRIPT_FD`], close that (so the
/// command sees only 0–2, like every other exec), then run it as `-c` would.
pub(super) const READ_SCRIPT: &str = "IFS= read -r -d '' __warren_script <&9; exec 9<&-; eval \"unset __warren_script; $__warren_script\"";

impl Sandbox {
    /// bwrap's options for a sandbox over `workspace`, NUL-separated, as `--args` reads them.
    pub(super) fn options(&self, workspace: &Path) -> io::Result<Vec<u8>> {
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
    pub(super) fn command(
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
        let setup = LauncherSetup {
            procs,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            fds: fds.iter().map(AsRawFd::as_raw_fd).collect(),
            deferred,
        };
        postfork::install(&mut cmd, setup);
        Ok((cmd, fds))
    }
}

pub(super) fn memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("warren", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    f.rewind()?;
    Ok(f.into())
}
