//! A namespace's working copy: its tree materialized on local disk, kept warm between execs.
//!
//! The copy is the overlay's lower layer, so no sandbox ever writes to it; only the server
//! changes it, through [`SafeDir`], when it materializes the index or applies an exec's
//! changes. Alongside the files it keeps a manifest of what each path holds (content hash,
//! mode, link target) and the index generation it matches, so a stale copy is brought up to
//! date by touching only the paths that differ.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::safe_fs::{SafeDir, split};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        sha256: String,
        mode: u32,
        size: u64,
    },
    Symlink {
        target: String,
    },
}

pub struct WorkCopy {
    dir: PathBuf,
    owner: (u32, u32),
    /// The index generation this copy matches; `None` when unknown (it must be compared with
    /// the index before use).
    pub generation: Option<u64>,
    nodes: BTreeMap<String, Node>,
    bytes: u64,
}

impl WorkCopy {
    /// Creates an empty working copy at `dir` (which must not exist), owned by `owner`.
    pub fn create(dir: PathBuf, owner: (u32, u32)) -> io::Result<Self> {
        std::fs::create_dir(&dir)?;
        // Its owner, the sandbox uid, is the only one that needs in: other users of the host
        // must not read a tenant's files even when they learn the random name.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        crate::safe_fs::chown(SafeDir::open_root(&dir)?.fd(), owner)?;
        Ok(Self {
            dir,
            owner,
            generation: None,
            nodes: BTreeMap::new(),
            bytes: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bytes of file content held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn parent(&self, path: &str) -> io::Result<(SafeDir, String)> {
        let (parent, name) = split(path);
        let root = SafeDir::open_root(&self.dir)?;
        Ok((root.open_dir(parent)?, name.to_owned()))
    }

    fn forget_subtree(&mut self, path: &str) {
        let lo = format!("{path}/");
        let hi = format!("{path}0");
        let below: Vec<String> = self.nodes.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below.iter().map(String::as_str).chain([path]) {
            if let Some(Node::File { size, .. }) = self.nodes.remove(k) {
                self.bytes -= size;
            }
        }
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        dir.remove(&name)?;
        self.forget_subtree(path);
        Ok(())
    }

    /// Makes `path` a directory (keeping an existing one and its contents).
    pub fn make_dir(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        dir.ensure_dir(&name, self.owner)?;
        if self.nodes.get(path) != Some(&Node::Dir) {
            self.forget_subtree(path);
            self.nodes.insert(path.to_owned(), Node::Dir);
        }
        Ok(())
    }

    /// Creates the file at `path` for the caller to fill; record it with [`WorkCopy::file_written`].
    pub fn create_file(&mut self, path: &str, mode: u32) -> io::Result<File> {
        let (dir, name) = self.parent(path)?;
        let f = dir.create_file(&name, mode, self.owner)?;
        self.forget_subtree(path);
        Ok(f)
    }

    pub fn file_written(&mut self, path: &str, sha256: String, mode: u32, size: u64) {
        self.forget_subtree(path);
        self.bytes += size;
        self.nodes
            .insert(path.to_owned(), Node::File { sha256, mode, size });
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        dir.create_symlink(&name, target, self.owner)?;
        self.forget_subtree(path);
        self.nodes.insert(
            path.to_owned(),
            Node::Symlink {
                target: target.to_owned(),
            },
        );
        Ok(())
    }

    /// Deletes the copy from disk.
    pub fn destroy(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "could not remove a working copy");
        }
    }
}
