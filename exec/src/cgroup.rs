//! Per-exec cgroups: memory, pids and CPU limits, OOM accounting and kill-all.
//!
//! cgroup v1 (one directory per controller, what this kernel offers) and v2 (one directory,
//! `cgroup.kill`) behind one type. The sandbox joins by writing `0` to each `cgroup.procs` from
//! the launcher's `pre_exec`, before bubblewrap starts, so nothing it forks escapes accounting.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "warren";

#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPU bandwidth in thousandths of one CPU.
    pub cpu_millis: u32,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Parent directories of the memory, pids and cpu hierarchies.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
    V2 {
        parent: PathBuf,
    },
}

/// How old an empty exec cgroup must be before a starting server removes it.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Where per-exec cgroups are created.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// Finds a usable hierarchy and creates Warren's parent group in it.
    pub fn detect() -> Result<Self, String> {
        let root = Path::new(ROOT);
        let v2 = root.join("cgroup.controllers");
        let layout = if let Ok(ctl) = std::fs::read_to_string(&v2) {
            if !(ctl.contains("memory") && ctl.contains("pids")) {
                return Err("cgroup v2 lacks the memory or pids controller".into());
            }
            let parent = root.join(GROUP);
            mkdir(&parent)?;
            // Enable the controllers for the per-exec children (best effort for cpu).
            let _ = write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu");
            write(&parent.join("cgroup.subtree_control"), "+memory +pids")
                .map_err(|e| format!("cannot delegate cgroup controllers: {e}"))?;
            let _ = write(&parent.join("cgroup.subtree_control"), "+cpu");
            Layout::V2 { parent }
        } else {
            let memory = root.join("memory").join(GROUP);
            let pids = root.join("pids").join(GROUP);
            if !root.join("memory").is_dir() || !root.join("pids").is_dir() {
                return Err("no cgroup memory and pids controllers at /sys/fs/cgroup".into());
            }
            mkdir(&memory)?;
            mkdir(&pids)?;
            let cpu = root.join("cpu");
            let cpu = if cpu.is_dir() {
                let dir = cpu.join(GROUP);
                mkdir(&dir).ok().map(|_| dir)
            } else {
                None
            };
            Layout::V1 { memory, pids, cpu }
        };
        Ok(Self { layout })
    }

    /// Removes exec cgroups that an earlier process left behind (a crash, or a stop that could
    /// not finish): those with no process in them, created over a minute ago, so that a group
    /// another server on this host has just made for its next exec is left alone.
    pub fn sweep_stale(&self) -> usize {
        let parents: Vec<&PathBuf> = match &self.layout {
            Layout::V1 { memory, pids, cpu } => {
                let mut p = vec![memory, pids];
                p.extend(cpu.iter());
                p
            }
            Layout::V2 { parent } => vec![parent],
        };
        let mut removed = 0;
        for parent in parents {
            let Ok(children) = std::fs::read_dir(parent) else {
                continue;
            };
            for child in children.flatten() {
                let old = child
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_AFTER);
                // rmdir refuses a group that still has processes (EBUSY).
                if old && child.path().is_dir() && std::fs::remove_dir(child.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Creates the cgroup for one exec with its limits.
    pub fn create(&self, name: &str, limits: CgroupLimits) -> io::Result<Cgroup> {
        let period = 100_000u64;
        let quota = u64::from(limits.cpu_millis) * period / 1000;
        let dirs = match &self.layout {
            Layout::V1 { memory, pids, cpu } => {
                let mem = memory.join(name);
                let pid = pids.join(name);
                std::fs::create_dir(&mem)?;
                std::fs::create_dir(&pid)?;
                let mut dirs = vec![mem.clone(), pid.clone()];
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(&pid.join("pids.max"), &limits.pids.to_string())?;
                if let Some(cpu) = cpu {
                    let c = cpu.join(name);
                    std::fs::create_dir(&c)?;
                    dirs.push(c.clone());
                    write(&c.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&c.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                dirs
            }
            Layout::V2 { parent } => {
                let dir = parent.join(name);
                std::fs::create_dir(&dir)?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
                let _ = write(&dir.join("memory.oom.group"), "1");
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                let _ = write(&dir.join("cpu.max"), &format!("{quota} {period}"));
                vec![dir]
            }
        };
        Ok(Cgroup {
            dirs,
            v2: matches!(self.layout, Layout::V2 { .. }),
        })
    }
}

fn mkdir(p: &Path) -> Result<(), String> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create cgroup {}: {e}", p.display())),
    }
}

/// One exec's cgroup. Dropping it does not remove it; call [`Cgroup::destroy`].
#[derive(Debug)]
pub struct Cgroup {
    /// The first directory is the memory controller's (v1) or the only one (v2).
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    /// The `cgroup.procs` files the launcher writes `0` to.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes())
                    .expect("cgroup paths have no NUL")
            })
            .collect()
    }

    fn pids(&self) -> io::Result<Vec<i32>> {
        let text = std::fs::read_to_string(self.dirs[0].join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// SIGKILLs every process in the group and waits until none is left.
    pub async fn kill_all(&self) -> io::Result<()> {
        if self.pids()?.is_empty() {
            return Ok(());
        }
        let this = Cgroup {
            dirs: self.dirs.clone(),
            v2: self.v2,
        };
        tokio::task::spawn_blocking(move || this.kill_all_blocking())
            .await
            .map_err(io::Error::other)?
    }

    /// The last processes usually need well under a millisecond to go (the sandbox's pid 1
    /// outlives bwrap by a moment), so this polls finely at first, off the async workers.
    fn kill_all_blocking(&self) -> io::Result<()> {
        if self.v2 {
            let _ = write(&self.dirs[0].join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_micros(20);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from our own cgroup; no memory is involved.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("processes survived SIGKILL for 10 s"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// How many processes the kernel OOM-killed in this group.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dirs[0].join(file))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
            })
            .unwrap_or(0)
    }

    /// Whether the pids limit refused a fork.
    pub fn pids_exhausted(&self) -> bool {
        let dir = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[1]
        };
        std::fs::read_to_string(dir.join("pids.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("max ").map(|v| v.trim() != "0"))
            })
            .unwrap_or(false)
    }

    /// Kills what is left and removes the group, on this thread: for `Drop`, when the runtime
    /// that would run [`Cgroup::destroy`] may already be shutting down.
    pub fn destroy_blocking(self) -> io::Result<()> {
        self.kill_all_blocking()?;
        for d in &self.dirs {
            // A just-killed task can linger as a zombie for a moment.
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if tries < 500 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Kills what is left and removes the group, off the async workers.
    pub async fn destroy(self) -> io::Result<()> {
        tokio::task::spawn_blocking(move || self.destroy_blocking())
            .await
            .map_err(io::Error::other)?
    }
}
