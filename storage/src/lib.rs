//! Storage for Warren: validated names and paths, the object key layout, and blob I/O over the
//! `object_store` crate (local filesystem, in-memory, S3).
//!
//! This crate knows nothing of HTTP or SQL. Its contract: every object key is derived from a
//! validated `(WorkspaceId, Namespace, NsPath)`, and [`NsPath`] is the one path validator shared
//! by every caller.

pub mod archive;
pub mod blob;
pub mod bucket;
pub mod layout;
pub mod names;

pub use blob::{Blob, BlobStore, BlobWriter, Error, StageStep, Written};
pub use names::{MAX_PATH_BYTES, NameError, Namespace, NsPath, SnapshotId, WorkspaceId};
