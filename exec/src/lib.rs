//! Warren's exec sandbox: everything between "run this command over this tree" and "here is
//! what it printed and what it changed", with no knowledge of HTTP, SQL or object storage.
//!
//! - [`sandbox`]: the bubblewrap launcher, limits and output capture;
//! - [`seccomp`]: the syscall deny-list;
//! - [`cgroup`]: per-exec cgroups (v1 and v2);
//! - [`workcopy`]: a namespace's warm working copy on local disk;
//! - [`overlay`]: one exec's copy-on-write view of a working copy, and the scan of its changes;
//! - [`safe_fs`]: the openat2 walker every host-side file operation goes through.

pub mod cgroup;
pub mod overlay;
pub mod safe_fs;
pub mod sandbox;
pub mod seccomp;
pub mod workcopy;

pub use overlay::{Change, Overlay, Scan, ScanLimits};
pub use sandbox::{Limits, Outcome, RunResult, Sandbox, SandboxConfig, Unavailable};
pub use workcopy::{Node, WorkCopy};
