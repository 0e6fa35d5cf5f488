//! One exec's view of a working copy: an overlay whose lower layer is the namespace's warm
//! working copy and whose upper layer is a fresh, size-capped tmpfs.
//!
//! The sandbox writes only to the upper layer, so after it exits the upper layer *is* the list
//! of changes: finding them costs in proportion to what changed, not to the namespace. A
//! discarded exec (revoked key) just drops the upper layer; the working copy never saw it. The
//! tmpfs bounds what one exec can write (bytes and inodes), and its pages are charged to the
//! exec's memory cgroup.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::safe_fs::{Kind, SafeDir};

/// A change found in the upper layer, parents before children.
#[derive(Debug)]
pub enum Change {
    /// The path was deleted (an overlay whiteout).
    Deleted(String),
    /// A directory; `opaque` when it replaced a directory of the lower layer wholesale (what
    /// was below the old one is gone unless listed again).
    Dir {
        path: String,
        opaque: bool,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        stat: rustix::fs::Stat,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Change {
    /// The changed path, relative to the workspace root.
    pub fn path(&self) -> &str {
        match self {
            Change::Deleted(p)
            | Change::Dir { path: p, .. }
            | Change::File { path: p, .. }
            | Change::Symlink { path: p, .. } => p,
        }
    }
}

/// Bounds on what a scan accepts.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    pub max_entries: usize,
    pub max_file_bytes: u64,
    pub max_path_bytes: usize,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub changes: Vec<Change>,
    /// Entries left out, with why (FIFOs, sockets, devices, bad names, over a limit).
    pub skipped: Vec<(String, String)>,
}

pub struct Overlay {
    run_dir: PathBuf,
    tmpfs: PathBuf,
    merged: PathBuf,
    tmpfs_mounted: bool,
    merged_mounted: bool,
}

impl Overlay {
    /// Mounts the overlay of `lower` at `<run_dir>/m`, with its upper layer on a tmpfs of
    /// `write_bytes` bytes and `write_inodes` inodes owned by `owner`.
    pub fn mount(
        run_dir: PathBuf,
        lower: &Path,
        owner: (u32, u32),
        write_bytes: u64,
        write_inodes: u64,
    ) -> io::Result<Self> {
        std::fs::create_dir(&run_dir)?;
        // The sandbox uid passes through to the merged tree whatever the umask (a unit's
        // UMask=0077, say); its random name keeps it unlistable.
        std::fs::set_permissions(
            &run_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let mut this = Self {
            tmpfs: run_dir.join("t"),
            merged: run_dir.join("m"),
            run_dir,
            tmpfs_mounted: false,
            merged_mounted: false,
        };
        std::fs::create_dir(&this.tmpfs)?;
        std::fs::create_dir(&this.merged)?;
        rustix::mount::mount(
            "tmpfs",
            &this.tmpfs,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(
                CString::new(format!(
                    "size={write_bytes},nr_inodes={write_inodes},mode=0711"
                ))?
                .as_c_str(),
            ),
        )?;
        this.tmpfs_mounted = true;
        let upper = this.tmpfs.join("u");
        let work = this.tmpfs.join("w");
        std::fs::create_dir(&upper)?;
        std::fs::create_dir(&work)?;
        crate::safe_fs::chown(SafeDir::open_root(&upper)?.fd(), owner)?;
        // redirect_dir and metacopy off: every change is a whole entry in the upper layer (a
        // renamed lower directory is copied, a chmod copies the file), which is what the scan
        // understands.
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        rustix::mount::mount(
            "overlay",
            &this.merged,
            "overlay",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(CString::new(opts)?.as_c_str()),
        )?;
        this.merged_mounted = true;
        Ok(this)
    }

    /// The merged tree, bound into the sandbox as `workspace/`.
    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// The upper layer, for reading changed files.
    pub fn upper(&self) -> io::Result<SafeDir> {
        SafeDir::open_root(&self.tmpfs.join("u"))
    }

    /// Detaches the merged view. Called once the sandbox is gone, before the lower layer is
    /// changed (overlayfs forbids changing a mounted lower layer).
    pub fn unmount_merged(&mut self) {
        if self.merged_mounted {
            if let Err(e) = rustix::mount::unmount(&self.merged, UnmountFlags::DETACH) {
                tracing::warn!(error = %e, "could not unmount an exec overlay");
            }
            self.merged_mounted = false;
        }
    }

    /// Lists the upper layer's changes, parents before children.
    pub fn scan(&self, limits: ScanLimits) -> io::Result<Scan> {
        let mut scan = Scan::default();
        let root = self.upper()?;
        let mut count = 0usize;
        walk(&root, "", limits, &mut count, &mut scan)?;
        Ok(scan)
    }
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn walk(
    dir: &SafeDir,
    prefix: &str,
    limits: ScanLimits,
    count: &mut usize,
    scan: &mut Scan,
) -> io::Result<()> {
    for entry in dir.entries()? {
        let shown = format!("{prefix}{}", String::from_utf8_lossy(&entry.name));
        let Some(name) = valid_name(&entry.name) else {
            scan.skipped.push((
                shown,
                "name is not valid UTF-8 or has control characters".into(),
            ));
            continue;
        };
        let path = format!("{prefix}{name}");
        if path.len() > limits.max_path_bytes {
            scan.skipped.push((shown, "path too long".into()));
            continue;
        }
        *count += 1;
        if *count > limits.max_entries {
            scan.skipped.push((
                shown,
                format!("more than {} changed entries", limits.max_entries),
            ));
            continue;
        }
        match entry.kind {
            Kind::Whiteout => scan.changes.push(Change::Deleted(path)),
            Kind::Special => scan
                .skipped
                .push((path, "not a regular file, directory or symlink".into())),
            Kind::Symlink => {
                let target = dir.read_link(&entry.name)?;
                match String::from_utf8(target) {
                    Ok(t) if !t.is_empty() && t.len() <= 4096 && !t.contains('\0') => {
                        scan.changes.push(Change::Symlink { path, target: t })
                    }
                    _ => scan
                        .skipped
                        .push((path, "symlink target is not valid UTF-8".into())),
                }
            }
            Kind::File => {
                let size = entry.stat.st_size as u64;
                if size > limits.max_file_bytes {
                    scan.skipped
                        .push((path, format!("larger than {} bytes", limits.max_file_bytes)));
                    continue;
                }
                scan.changes.push(Change::File {
                    path,
                    // Never setuid, setgid or sticky; executable or not.
                    mode: if entry.stat.st_mode & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    },
                    size,
                    stat: entry.stat,
                });
            }
            Kind::Dir => {
                let opaque = dir
                    .xattr(&entry.name, OPAQUE_XATTR)?
                    .is_some_and(|v| v == b"y");
                scan.changes.push(Change::Dir {
                    path: path.clone(),
                    opaque,
                });
                let child = dir.open_dir(name)?;
                walk(&child, &format!("{path}/"), limits, count, scan)?;
            }
        }
    }
    Ok(())
}

fn valid_name(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.unmount_merged();
        if self.tmpfs_mounted
            && let Err(e) = rustix::mount::unmount(&self.tmpfs, UnmountFlags::DETACH)
        {
            tracing::warn!(error = %e, "could not unmount an exec tmpfs");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            tracing::warn!(error = %e, dir = %self.run_dir.display(), "could not remove an exec directory");
        }
    }
}

/// Unmounts whatever an earlier process left mounted below `base` (after a crash).
pub fn clean_stale_mounts(base: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let base = base.to_string_lossy();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&*base) && p.len() > base.len())
        .collect();
    // Deepest first, so overlays go before the tmpfs below them.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p, UnmountFlags::DETACH);
    }
}
