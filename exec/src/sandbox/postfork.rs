//! The code that runs in the launcher between fork and exec. A forked child of a threaded
//! process may only make async-signal-safe calls, so everything here works on data prepared
//! before the fork and allocates nothing. This module holds every `unsafe` block of the launch,
//! each with its safety argument.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::recipe::FIRST_FD;

/// What the launcher does between fork and exec, prepared beforehand so that it allocates
/// nothing: join the cgroup, drop to the sandbox uid, die with the server, leave the terminal
/// session, and pass exactly the prepared descriptors as 3, 4, … .
pub(super) struct LauncherSetup {
    pub procs: Vec<CString>,
    pub uid: u32,
    pub gid: u32,
    pub fds: Vec<RawFd>,
    pub deferred: Option<Deferred>,
}

/// What a prestarted launcher needs to wait for its script and exec bwrap with it, all
/// allocated before the fork.
pub(super) struct Deferred {
    /// The read end of the script pipe.
    pub script: RawFd,
    /// Room for the script and its NUL.
    pub buf: Vec<u8>,
    pub bwrap: CString,
    /// bwrap's arguments before the script.
    pub argv: [CString; 5],
}

/// Makes `setup` what `cmd`'s child does between fork and exec.
pub(super) fn install(cmd: &mut tokio::process::Command, mut setup: LauncherSetup) {
    // SAFETY: the closure runs between fork and exec in the child; `LauncherSetup::apply`
    // makes only async-signal-safe syscalls on data prepared before the fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
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
