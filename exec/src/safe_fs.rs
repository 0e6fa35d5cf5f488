//! Host-side file operations on trees a sandbox could have touched, by directory fd only.
//!
//! Every open goes through `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` and `O_NOFOLLOW`: a symlink, a `..`, a magic link
//! or a mount point anywhere in a path fails the open instead of leading off the tree. Files
//! are opened `O_NONBLOCK` (a planted FIFO cannot hang us) and checked with `fstat` against the
//! listing (a swapped entry is refused). Nothing here follows a symlink, ever; links are data.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Uid, openat, openat2,
};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// What an entry is, as far as sync cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// An overlayfs whiteout: a character device 0:0 recording a deletion.
    Whiteout,
    /// FIFOs, sockets, devices: never synced.
    Special,
}

fn kind_of(st: &Stat) -> Kind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::CharacterDevice if st.st_rdev == 0 => Kind::Whiteout,
        _ => Kind::Special,
    }
}

/// A directory opened without following links.
pub struct SafeDir {
    fd: OwnedFd,
}

pub struct DirEntry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub stat: Stat,
}

impl SafeDir {
    /// Opens a root the server itself created (the path is trusted; its last component must
    /// not be a link).
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let fd = openat(
            CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens the directory at `rel` (one or more components) beneath this one.
    pub fn open_dir(&self, rel: &str) -> io::Result<SafeDir> {
        if rel.is_empty() {
            return Ok(Self {
                fd: self.fd.try_clone()?,
            });
        }
        let fd = openat2(
            &self.fd,
            rel,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?;
        Ok(Self { fd })
    }

    /// The entries of this directory, sorted by name, without `.` and `..`.
    pub fn entries(&self) -> io::Result<Vec<DirEntry>> {
        let mut dir = Dir::read_from(&self.fd)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = name.to_vec();
            let stat = rustix::fs::statat(&self.fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
            out.push(DirEntry {
                kind: kind_of(&stat),
                name,
                stat,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What is at `name`, if anything (not following a link).
    pub fn stat(&self, name: &str) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file `name` for reading, refusing anything that is not the regular
    /// file `expected` described (same device and inode) when the listing was taken.
    pub fn open_file(&self, name: &[u8], expected: Option<&Stat>) -> io::Result<File> {
        let fd = openat2(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if kind_of(&st) != Kind::File {
            return Err(io::Error::other("not a regular file"));
        }
        if let Some(exp) = expected
            && (exp.st_dev != st.st_dev || exp.st_ino != st.st_ino)
        {
            return Err(io::Error::other("the file changed while it was being read"));
        }
        Ok(File::from(fd))
    }

    pub fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    pub fn xattr(&self, name: &[u8], attr: &str) -> io::Result<Option<Vec<u8>>> {
        let dir = self.open_dir(std::str::from_utf8(name).map_err(io::Error::other)?)?;
        let mut buf = vec![0u8; 64];
        match rustix::fs::fgetxattr(&dir.fd, attr, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(rustix::io::Errno::NODATA) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes whatever is at `name`: a directory with everything below it, or one entry.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let Some(st) = self.stat(name)? else {
            return Ok(());
        };
        if kind_of(&st) == Kind::Dir {
            let child = self.open_dir(name)?;
            for e in child.entries()? {
                let n = String::from_utf8_lossy(&e.name).into_owned();
                if e.kind == Kind::Dir {
                    child.remove(&n)?;
                } else {
                    rustix::fs::unlinkat(&child.fd, e.name.as_slice(), AtFlags::empty())?;
                }
            }
            rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        }
        Ok(())
    }

    /// Makes `name` a directory owned by `owner`, replacing a non-directory; keeps an existing
    /// directory (and its contents).
    pub fn ensure_dir(&self, name: &str, owner: (u32, u32)) -> io::Result<SafeDir> {
        match self.stat(name)? {
            Some(st) if kind_of(&st) == Kind::Dir => return self.open_dir(name),
            Some(_) => self.remove(name)?,
            None => {}
        }
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755))?;
        let dir = self.open_dir(name)?;
        chown(&dir.fd, owner)?;
        // The umask may have narrowed it, as with files.
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(0o755))?;
        Ok(dir)
    }

    /// Creates the regular file `name` (replacing whatever was there) for writing.
    pub fn create_file(&self, name: &str, mode: u32, owner: (u32, u32)) -> io::Result<File> {
        self.remove(name)?;
        let fd = openat2(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o777),
            RESOLVE,
        )?;
        chown(&fd, owner)?;
        // The umask may have narrowed the mode given at creation.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?;
        Ok(File::from(fd))
    }

    /// Creates the symlink `name → target` (replacing whatever was there). The target is data:
    /// it is stored, never resolved.
    pub fn create_symlink(&self, name: &str, target: &str, owner: (u32, u32)) -> io::Result<()> {
        self.remove(name)?;
        rustix::fs::symlinkat(target, &self.fd, name)?;
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

pub fn chown(fd: impl AsFd, owner: (u32, u32)) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    )?;
    Ok(())
}

/// Splits a validated relative path into its parent directory path and last component.
pub fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    fn never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host secret").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        symlink(outside.join("secret"), root.join("abs")).unwrap();
        symlink("../outside/secret", root.join("rel")).unwrap();
        symlink("../outside", root.join("dirlink")).unwrap();

        let dir = SafeDir::open_root(&root).unwrap();
        for name in ["abs", "rel"] {
            assert!(dir.open_file(name.as_bytes(), None).is_err(), "{name}");
        }
        assert!(dir.open_dir("dirlink").is_err());
        assert!(dir.open_dir("../outside").is_err());
        assert!(dir.open_dir("dirlink/..").is_err());
        // Writing through a link replaces the link; the target is untouched.
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let mut f = dir.create_file("abs", 0o644, me).unwrap();
        std::io::Write::write_all(&mut f, b"mine").unwrap();
        let mut s = String::new();
        File::open(outside.join("secret"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "host secret");
        assert_eq!(dir.read_link(b"rel").unwrap(), b"../outside/secret");
        // Removing a link to a directory removes the link, not the directory's contents.
        dir.remove("dirlink").unwrap();
        assert!(outside.join("secret").exists());
    }

    #[test]
    fn fifo_does_not_hang_and_is_special() {
        let tmp = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            CWD,
            tmp.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let dir = SafeDir::open_root(tmp.path()).unwrap();
        let entries = dir.entries().unwrap();
        assert_eq!(entries[0].kind, Kind::Special);
        assert!(dir.open_file(b"fifo", None).is_err());
    }
}
