//! The object key layout. The only place that turns names into object keys.
//!
//! Live files sit at natural keys, `<root>/ws/<ws>/ns/<ns>/files/<path>`, so an operator can
//! browse or back up one namespace with ordinary S3 tools. Snapshots sit apart, at
//! `<root>/snapshots/ws/<ws>/ns/<ns>/<id>.tar.gz`, so one lifecycle rule on `<root>/snapshots/`
//! backs their retention. A restore stages its files under `<root>/ws/<ws>/ns/<ns>/stage/<id>/`. Each path component is
//! percent-encoded by `object_store`'s `PathPart` where it holds characters that some backends
//! reserve (`#`, `%`, `\`, `*`, …); ordinary names are stored as they are.

use object_store::path::{Path, PathPart};

use crate::names::{Namespace, NsPath, SnapshotId, WorkspaceId};

/// How many bytes `component` takes in an object key (its percent-encoded form), which is what
/// backends limit.
pub(crate) fn stored_len(component: &str) -> usize {
    PathPart::from(component).as_ref().len()
}

#[derive(Clone, Debug)]
pub struct Layout {
    root: Path,
}

impl Layout {
    pub fn new(root: Path) -> Self {
        Self { root }
    }

    /// The prefix every key Warren stores sits under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/ws/<ws>/ns/<ns>/files`: the prefix of every live file of a namespace.
    pub fn files_prefix(&self, ws: &WorkspaceId, ns: &Namespace) -> Path {
        self.namespace_prefix(ws, ns).child("files")
    }

    /// `<root>/ws/<ws>/ns/<ns>`: everything Warren stores for a namespace's live tree.
    pub fn namespace_prefix(&self, ws: &WorkspaceId, ns: &Namespace) -> Path {
        self.root
            .child("ws")
            .child(ws.as_str())
            .child("ns")
            .child(ns.as_str())
    }

    pub fn file_key(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Path {
        let mut key = self.files_prefix(ws, ns);
        for part in path.components() {
            key = key.child(PathPart::from(part));
        }
        key
    }

    /// `<root>/snapshots`: the prefix of every snapshot (the lifecycle rule's prefix).
    pub fn snapshots_prefix(&self) -> Path {
        self.root.child("snapshots")
    }

    /// `<root>/snapshots/ws/<ws>/ns/<ns>`: a namespace's snapshots.
    pub fn namespace_snapshots_prefix(&self, ws: &WorkspaceId, ns: &Namespace) -> Path {
        self.snapshots_prefix()
            .child("ws")
            .child(ws.as_str())
            .child("ns")
            .child(ns.as_str())
    }

    pub fn snapshot_key(&self, ws: &WorkspaceId, ns: &Namespace, id: &SnapshotId) -> Path {
        self.namespace_snapshots_prefix(ws, ns)
            .child(format!("{id}.tar.gz").as_str())
    }

    /// `<root>/snapshots/ws/<ws>/ns/<ns>/<id>.upload`: an imported archive as it was uploaded,
    /// kept only while it is checked and re-packed into the snapshot itself (under the
    /// snapshot prefix, so the lifecycle rule and the purge also catch one left by a crash).
    pub fn upload_key(&self, ws: &WorkspaceId, ns: &Namespace, id: &SnapshotId) -> Path {
        self.namespace_snapshots_prefix(ws, ns)
            .child(format!("{id}.upload").as_str())
    }

    /// `<root>/ws/<ws>/ns/<ns>/stage/<stage>`: one restore's staging area.
    pub fn stage_prefix(&self, ws: &WorkspaceId, ns: &Namespace, stage: &str) -> Path {
        self.namespace_prefix(ws, ns).child("stage").child(stage)
    }

    /// A file in a staging area: `side` is `new` (the restored file) or `old` (the live file
    /// it displaces, kept until the restore commits).
    pub fn stage_key(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        stage: &str,
        side: &str,
        path: &NsPath,
    ) -> Path {
        let mut key = self.stage_prefix(ws, ns, stage).child(side);
        for part in path.components() {
            key = key.child(PathPart::from(part));
        }
        key
    }

    /// `<root>/ws`: the prefix of every workspace's live files.
    pub fn workspaces_prefix(&self) -> Path {
        self.root.child("ws")
    }

    /// Inverse of [`Layout::file_key`] for any file key: the workspace, namespace and path it
    /// belongs to, or `None` for keys Warren does not write.
    pub fn parse_file_key(&self, key: &Path) -> Option<(WorkspaceId, Namespace, NsPath)> {
        let mut parts = key.prefix_match(&self.workspaces_prefix())?;
        let ws = WorkspaceId::parse(parts.next()?.as_ref()).ok()?;
        if parts.next()?.as_ref() != "ns" {
            return None;
        }
        let ns = Namespace::parse(parts.next()?.as_ref()).ok()?;
        let prefix = self.files_prefix(&ws, &ns);
        let path = self.path_of(&prefix, key)?;
        Some((ws, ns, path))
    }

    /// Inverse of [`Layout::file_key`] for keys under `prefix` (a `files_prefix`).
    pub fn path_of(&self, prefix: &Path, key: &Path) -> Option<NsPath> {
        let rest = key.prefix_match(prefix)?;
        let mut decoded = Vec::new();
        for part in rest {
            let raw = percent_encoding::percent_decode_str(part.as_ref())
                .decode_utf8()
                .ok()?;
            decoded.push(raw.into_owned());
        }
        if decoded.is_empty() {
            return None;
        }
        NsPath::parse(&decoded.join("/")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_natural_and_round_trip() {
        let layout = Layout::new(Path::from("pre/fix"));
        let ws = WorkspaceId::parse("ws-0123456789abcdef").unwrap();
        let ns = Namespace::parse("alice").unwrap();
        let p = NsPath::parse("docs/a b#1%.txt").unwrap();
        let key = layout.file_key(&ws, &ns, &p);
        assert_eq!(
            key.as_ref(),
            "pre/fix/ws/ws-0123456789abcdef/ns/alice/files/docs/a b%231%25.txt"
        );
        let prefix = layout.files_prefix(&ws, &ns);
        assert_eq!(layout.path_of(&prefix, &key), Some(p.clone()));
        let other = layout.files_prefix(&ws, &Namespace::parse("bob").unwrap());
        assert_eq!(layout.path_of(&other, &key), None);
        let ns = Namespace::parse("alice").unwrap();
        assert_eq!(layout.parse_file_key(&key), Some((ws, ns, p)));
        for foreign in [
            "pre/fix/other",
            "pre/fix/ws/ws-x/ns/a/files/f",
            "pre/fix/ws/ws-0123456789abcdef/ns/a/snapshots/f",
        ] {
            assert_eq!(
                layout.parse_file_key(&Path::from(foreign)),
                None,
                "{foreign}"
            );
        }
    }
}
