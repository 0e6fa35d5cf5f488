//! Validated names: workspace ids, namespace names and namespace-relative paths.
//!
//! Every caller that turns untrusted text into a location (the file API, exec materialize and
//! sync-back, snapshot restore) goes through these types, so there is exactly one definition of
//! what a legal path is. A value of these types is always valid: the only way to build one is a
//! constructor that checks.

use std::fmt;

/// Longest namespace-relative path, in bytes once stored: characters some backends reserve
/// (`%`, `#`, `?`, `*`, `~`, …) take three bytes each in an object key. Chosen so that the full
/// key (`<root>/ws/<ws>/ns/<ns>/files/<path>`, or a restore's staging key) stays under S3's
/// 1,024-byte limit.
pub const MAX_PATH_BYTES: usize = 768;
/// Longest single path component, in bytes once stored: Linux's `NAME_MAX` of 255, less the
/// room the local backend needs for its `#<n>` suffix while an object is being written.
pub const MAX_COMPONENT_BYTES: usize = 250;
/// Longest namespace name.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Why a name or path was refused. The messages are written for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("path must not contain '..' segments")]
    DotDot,
    #[error("absolute paths are not allowed; paths are relative to the namespace root")]
    Absolute,
    #[error("path must not contain backslashes")]
    Backslash,
    #[error("path must not contain NUL or control characters")]
    ControlChar,
    #[error("path is longer than {MAX_PATH_BYTES} bytes (characters such as % # ? * ~ count as 3)")]
    PathTooLong,
    #[error(
        "path component is longer than {MAX_COMPONENT_BYTES} bytes (characters such as % # ? * ~ count as 3)"
    )]
    ComponentTooLong,
    #[error(
        "invalid namespace name {0:?}: use 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit"
    )]
    Namespace(String),
    #[error("invalid workspace id {0:?}")]
    Workspace(String),
    #[error("invalid snapshot id {0:?}")]
    Snapshot(String),
}

/// Whether `s` is `prefix` followed by exactly 16 lowercase hex digits.
fn is_hex_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `prefix` followed by the 8 bytes as 16 lowercase hex digits.
fn hex_id(prefix: &str, bytes: [u8; 8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// A workspace id: `ws-` followed by 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if is_hex_id(s, "ws-") {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Workspace(s.to_owned()))
        }
    }

    /// A new random id, from 8 bytes of the caller's randomness.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(hex_id("ws-", bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A snapshot id: `snap-` and 16 lowercase hex digits. Minted by Warren; parsed from URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if is_hex_id(s, "snap-") {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Snapshot(s.to_owned()))
        }
    }

    /// A new random id, from 8 bytes of the caller's randomness.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(hex_id("snap-", bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, case-sensitive.
///
/// The first character excludes `.` so that `.` and `..` can never be names, and the alphabet
/// keeps names safe as object-key segments and directory names on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_NAMESPACE_BYTES
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Namespace(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path inside a namespace, relative to its root; the empty path is the root itself.
///
/// Normal form: components joined by single `/`, no leading or trailing `/`, no `.` or `..`
/// components. Clients see the namespace root as `workspace/`, so [`NsPath::wire`] renders
/// `a/b.txt` as `workspace/a/b.txt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsPath(String);

impl NsPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a namespace-relative path exactly as given (the write-side endpoints, exec
    /// sync-back). Repeated and trailing slashes and `.` components are dropped; `..`,
    /// absolute paths, backslashes, NUL and control characters are refused.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.starts_with('/') {
            return Err(NameError::Absolute);
        }
        Self::normalize(s)
    }

    /// Parses a path as clients send it to the read-side endpoints: a leading `/` is dropped,
    /// then `workspace` or `workspace/…` names the root or a path under it; anything else is
    /// taken as namespace-relative.
    pub fn parse_client(s: &str) -> Result<Self, NameError> {
        let s = s.trim_start_matches('/');
        let rest = if s == "workspace" {
            ""
        } else {
            s.strip_prefix("workspace/").unwrap_or(s)
        };
        Self::normalize(rest)
    }

    fn normalize(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_PATH_BYTES {
            return Err(NameError::PathTooLong);
        }
        let mut out = String::with_capacity(s.len());
        let mut stored = 0;
        for part in s.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(NameError::DotDot),
                _ => {}
            }
            stored += check_component(part)? + usize::from(!out.is_empty());
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(part);
        }
        if stored > MAX_PATH_BYTES {
            return Err(NameError::PathTooLong);
        }
        Ok(Self(out))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path in normal form, without the `workspace/` prefix (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as the wire protocol shows it: `workspace/<path>`, or `workspace/` for the root.
    pub fn wire(&self) -> String {
        format!("workspace/{}", self.0)
    }

    /// The last component (`""` for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The containing directory; `None` for the root.
    pub fn parent(&self) -> Option<NsPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => Self(self.0[..i].to_owned()),
            None => Self::root(),
        })
    }

    /// Every proper ancestor directory except the root, outermost first: `a/b/c` → `a`, `a/b`.
    pub fn ancestors(&self) -> Vec<NsPath> {
        self.0
            .match_indices('/')
            .map(|(i, _)| Self(self.0[..i].to_owned()))
            .collect()
    }

    /// A child of this directory. `name` must be one valid component.
    pub fn join(&self, name: &str) -> Result<NsPath, NameError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(NameError::DotDot);
        }
        check_component(name)?;
        let joined = if self.is_root() {
            name.to_owned()
        } else {
            format!("{}/{}", self.0, name)
        };
        // The stored length of the whole path decides, as in `parse`.
        Self::normalize(&joined)
    }

    /// The components, outermost first (none for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Number of components: 0 for the root, 1 for its children.
    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

impl fmt::Display for NsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire())
    }
}

/// Checks one component; returns its length once stored in an object key.
fn check_component(part: &str) -> Result<usize, NameError> {
    for c in part.chars() {
        if c == '\\' {
            return Err(NameError::Backslash);
        }
        if c.is_control() {
            return Err(NameError::ControlChar);
        }
    }
    let stored = crate::layout::stored_len(part);
    if stored > MAX_COMPONENT_BYTES {
        return Err(NameError::ComponentTooLong);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        NsPath::parse(s).unwrap().as_str().to_owned()
    }

    #[test]
    fn normal_form() {
        assert_eq!(ok("a/b.txt"), "a/b.txt");
        assert_eq!(ok("a//b/"), "a/b");
        assert_eq!(ok("./a/./b"), "a/b");
        assert_eq!(ok(""), "");
        assert_eq!(
            ok("workspace/x"),
            "workspace/x",
            "write side never strips the prefix"
        );
        assert_eq!(
            ok("%2e%2e/x"),
            "%2e%2e/x",
            "decoded once already; literal name"
        );
    }

    #[test]
    fn refuses_escapes() {
        for bad in ["..", "../x", "a/../../b", "a/..", "x/../y"] {
            assert_eq!(NsPath::parse(bad), Err(NameError::DotDot), "{bad}");
            assert_eq!(NsPath::parse_client(bad), Err(NameError::DotDot), "{bad}");
        }
        assert_eq!(NsPath::parse("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(NsPath::parse("a\\..\\b"), Err(NameError::Backslash));
        assert_eq!(NsPath::parse("a\0b"), Err(NameError::ControlChar));
        assert_eq!(NsPath::parse("a\nb"), Err(NameError::ControlChar));
        assert_eq!(
            NsPath::parse(&"x".repeat(MAX_PATH_BYTES + 1)),
            Err(NameError::PathTooLong)
        );
        assert_eq!(
            NsPath::parse(&"x".repeat(MAX_COMPONENT_BYTES + 1)),
            Err(NameError::ComponentTooLong)
        );
    }

    #[test]
    fn client_form_strips_workspace_prefix_once() {
        let p = |s| NsPath::parse_client(s).unwrap().as_str().to_owned();
        assert_eq!(p("workspace/"), "");
        assert_eq!(p("workspace"), "");
        assert_eq!(p("/workspace/a"), "a");
        assert_eq!(p("/"), "");
        assert_eq!(p("."), "");
        assert_eq!(p("notes.txt"), "notes.txt");
        assert_eq!(p("workspace/workspace/x"), "workspace/x");
        assert_eq!(p("workspacefoo"), "workspacefoo");
        assert_eq!(
            NsPath::parse_client("/etc/passwd").unwrap().as_str(),
            "etc/passwd",
            "a leading slash means the namespace root, never the host root"
        );
    }

    #[test]
    fn structure() {
        let p = NsPath::parse("a/b/c.txt").unwrap();
        assert_eq!(p.name(), "c.txt");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.depth(), 3);
        let anc: Vec<_> = p.ancestors().into_iter().map(|a| a.0).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert_eq!(p.wire(), "workspace/a/b/c.txt");
        assert_eq!(NsPath::root().wire(), "workspace/");
        assert_eq!(NsPath::parse("x").unwrap().parent(), Some(NsPath::root()));
        assert_eq!(NsPath::root().parent(), None);
        assert_eq!(NsPath::root().join("x").unwrap().as_str(), "x");
        assert!(p.join("..").is_err());
        assert!(p.join("a/b").is_err());
    }

    #[test]
    fn namespace_rule() {
        for good in [
            "alice",
            "u-0123456789abcdef",
            "session.abc_1",
            "A",
            &"a".repeat(64),
        ] {
            assert!(Namespace::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"a".repeat(65),
        ] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workspace_rule() {
        assert!(WorkspaceId::parse("ws-d69634745de7ce97").is_ok());
        assert!(WorkspaceId::parse("ws-D69634745DE7CE97").is_err());
        assert!(WorkspaceId::parse("ws-123").is_err());
        assert!(WorkspaceId::parse("xx-d69634745de7ce97").is_err());
        assert_eq!(
            WorkspaceId::from_random([0xab; 8]).as_str(),
            "ws-abababababababab"
        );
    }
}
