//! Planning a sync-back: what an exec's changes (the overlay's upper layer, scanned) do to the
//! index, decided from the scan and the working copy alone. Pure, so it is tested without a
//! sandbox or root; `sync_back` carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use warren_exec::{Change, Node};
use warren_storage::NsPath;

use crate::db::subtree_range;

pub(super) struct Plan<'a> {
    /// Changes left out (their paths are not valid namespace paths), with why.
    pub skipped: Vec<(String, String)>,
    /// One per kept change, in scan order (parents before children).
    pub steps: Vec<Step<'a>>,
    /// Objects to delete once the index no longer names them.
    pub doomed: BTreeSet<NsPath>,
}

pub(super) struct Step<'a> {
    pub path: NsPath,
    pub action: Action<'a>,
}

pub(super) enum Action<'a> {
    /// The path is gone; `indexed` when the index has an entry to remove.
    Delete {
        indexed: bool,
    },
    /// A directory. `opaque`: it replaced a directory wholesale, and `vanished` are the files
    /// of the old one not listed again. `over_file`: a file's object is where it goes.
    Dir {
        opaque: bool,
        vanished: Vec<NsPath>,
        over_file: bool,
    },
    Symlink {
        target: &'a str,
    },
    /// A file's new bytes. `shadowed`: files below a directory it replaces, whose objects must
    /// go before its own is written (a local filesystem cannot hold both).
    File {
        mode: u32,
        stat: &'a rustix::fs::Stat,
        shadowed: Vec<NsPath>,
    },
}

/// Files the working copy has below `p` (and `p` itself when `inclusive` and it is a file).
fn files_below(nodes: &BTreeMap<String, Node>, p: &str, inclusive: bool) -> Vec<NsPath> {
    let (lo, hi) = subtree_range(p);
    let this = inclusive.then(|| (p, nodes.get(p)));
    nodes
        .range(lo..hi)
        .map(|(k, n)| (k.as_str(), Some(n)))
        .chain(this)
        .filter(|(_, n)| matches!(n, Some(Node::File { .. })))
        // The working copy holds only paths that came from the index, all valid.
        .filter_map(|(k, _)| NsPath::parse(k).ok())
        .collect()
}

/// What `changes` do, given the working copy's `nodes` (the index's state before the exec).
pub(super) fn plan<'a>(changes: &'a [Change], nodes: &BTreeMap<String, Node>) -> Plan<'a> {
    let listed: BTreeSet<&str> = changes.iter().map(Change::path).collect();
    let mut plan = Plan {
        skipped: Vec::new(),
        steps: Vec::new(),
        doomed: BTreeSet::new(),
    };
    for change in changes {
        let raw = change.path();
        let path = match NsPath::parse(raw) {
            Ok(p) => p,
            Err(e) => {
                plan.skipped.push((raw.to_owned(), e.to_string()));
                continue;
            }
        };
        let action = match change {
            Change::Deleted(_) => {
                plan.doomed.extend(files_below(nodes, raw, true));
                Action::Delete {
                    indexed: nodes.contains_key(raw),
                }
            }
            Change::Dir { opaque, .. } => {
                let vanished: Vec<NsPath> = if *opaque {
                    files_below(nodes, raw, false)
                        .into_iter()
                        .filter(|f| !listed.contains(f.as_str()))
                        .collect()
                } else {
                    Vec::new()
                };
                plan.doomed.extend(vanished.iter().cloned());
                Action::Dir {
                    opaque: *opaque,
                    vanished,
                    over_file: matches!(nodes.get(raw), Some(Node::File { .. })),
                }
            }
            Change::Symlink { target, .. } => {
                plan.doomed.extend(files_below(nodes, raw, true));
                Action::Symlink { target }
            }
            Change::File { mode, stat, .. } => {
                // Written anew: whatever doomed it earlier in the scan no longer applies.
                plan.doomed.remove(&path);
                Action::File {
                    mode: *mode,
                    stat,
                    shadowed: files_below(nodes, raw, false),
                }
            }
        };
        plan.steps.push(Step { path, action });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: &str) -> Node {
        Node::File {
            sha256: sha.into(),
            mode: 0o644,
            size: 1,
        }
    }

    fn nodes(entries: &[(&str, Node)]) -> BTreeMap<String, Node> {
        entries
            .iter()
            .map(|(p, n)| ((*p).to_owned(), n.clone()))
            .collect()
    }

    fn stat() -> rustix::fs::Stat {
        rustix::fs::stat("/").unwrap()
    }

    fn paths(v: &[NsPath]) -> Vec<&str> {
        v.iter().map(NsPath::as_str).collect()
    }

    #[test]
    fn deleting_a_directory_dooms_every_file_below_it() {
        let before = nodes(&[
            ("d", Node::Dir),
            ("d/a", file("1")),
            ("d/e", Node::Dir),
            ("d/e/b", file("2")),
            ("d0", file("3")),
            ("d-x", file("4")),
        ]);
        let changes = [Change::Deleted("d".into())];
        let p = plan(&changes, &before);
        assert!(matches!(
            p.steps[0].action,
            Action::Delete { indexed: true }
        ));
        // `d0` and `d-x` sort near `d/` but are not below it.
        assert_eq!(
            paths(&p.doomed.into_iter().collect::<Vec<_>>()),
            ["d/a", "d/e/b"]
        );
    }

    #[test]
    fn deleting_what_the_index_never_had_removes_nothing() {
        let changes = [Change::Deleted("tmp".into())];
        let p = plan(&changes, &nodes(&[]));
        assert!(matches!(
            p.steps[0].action,
            Action::Delete { indexed: false }
        ));
        assert!(p.doomed.is_empty());
    }

    #[test]
    fn an_opaque_directory_loses_the_files_it_does_not_list_again() {
        let before = nodes(&[
            ("d", Node::Dir),
            ("d/keep", file("1")),
            ("d/gone", file("2")),
        ]);
        let st = stat();
        let changes = [
            Change::Dir {
                path: "d".into(),
                opaque: true,
            },
            Change::File {
                path: "d/keep".into(),
                mode: 0o600,
                size: 1,
                stat: st,
            },
        ];
        let p = plan(&changes, &before);
        let Action::Dir {
            vanished,
            over_file,
            opaque,
        } = &p.steps[0].action
        else {
            panic!("a directory step");
        };
        assert!(*opaque && !*over_file);
        assert_eq!(paths(vanished), ["d/gone"]);
        assert_eq!(
            paths(&p.doomed.iter().cloned().collect::<Vec<_>>()),
            ["d/gone"]
        );
        assert!(matches!(
            p.steps[1].action,
            Action::File { mode: 0o600, .. }
        ));
    }

    #[test]
    fn a_file_replacing_a_directory_clears_its_files_first_and_is_not_doomed() {
        let before = nodes(&[("x", Node::Dir), ("x/old", file("1"))]);
        let changes = [
            Change::Deleted("x".into()),
            Change::File {
                path: "x".into(),
                mode: 0o644,
                size: 3,
                stat: stat(),
            },
        ];
        let p = plan(&changes, &before);
        let Action::File { shadowed, .. } = &p.steps[1].action else {
            panic!("a file step");
        };
        assert_eq!(paths(shadowed), ["x/old"]);
        // The old file below is doomed; the new `x` itself is not.
        assert_eq!(
            paths(&p.doomed.iter().cloned().collect::<Vec<_>>()),
            ["x/old"]
        );
    }

    #[test]
    fn a_directory_or_link_over_a_file_replaces_it() {
        let before = nodes(&[("f", file("1")), ("g", file("2"))]);
        let changes = [
            Change::Dir {
                path: "f".into(),
                opaque: false,
            },
            Change::Symlink {
                path: "g".into(),
                target: "f".into(),
            },
        ];
        let p = plan(&changes, &before);
        assert!(matches!(
            p.steps[0].action,
            Action::Dir {
                over_file: true,
                ..
            }
        ));
        assert!(matches!(p.steps[1].action, Action::Symlink { target: "f" }));
        // The link's old file object goes after the commit; the directory's went before it.
        assert_eq!(paths(&p.doomed.iter().cloned().collect::<Vec<_>>()), ["g"]);
    }

    #[test]
    fn invalid_paths_are_skipped_with_why_and_the_rest_kept() {
        let long = "a".repeat(warren_storage::MAX_PATH_BYTES + 1);
        let changes = [
            Change::Symlink {
                path: long.clone(),
                target: "t".into(),
            },
            Change::Dir {
                path: "ok".into(),
                opaque: false,
            },
        ];
        let p = plan(&changes, &nodes(&[]));
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, long);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].path.as_str(), "ok");
    }
}
