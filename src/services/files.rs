//! The file API's behaviour: write, upload, read, download, list and delete within a namespace.
//!
//! Order of effects (the crash-safety contract): a write stores the bytes first and then commits
//! the index row with its event in one transaction; a delete commits the index change with its
//! event first and then removes the bytes. A crash in between never leaves an index row without
//! its bytes: at most an object no row points to, which the orphan sweep reclaims, or, for an
//! overwrite, new bytes under the old row until the next write (see ARCHITECTURE.md).

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use warren_storage::{BlobStore, BlobWriter, Namespace, NsPath};

use super::{Caller, Error, Result, event};
use crate::coord::Coordinator;
use crate::db::{self, FileWrite, MetaStore};
pub use crate::db::{Entry, EntryKind};
use crate::event::Event;
use crate::ids::Micros;

/// Largest file accepted by `PUT /files` and `POST /write`, and served by `GET /files`.
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// How much of a text file `GET /v1/files/content` returns.
pub const TEXT_PREVIEW_BYTES: u64 = 1024 * 1024;
/// Recursive listing caps (spec §4.7).
pub const MAX_LIST_ENTRIES: usize = 1000;
pub const MAX_LIST_DEPTH: usize = 20;

const FILE_MODE: u32 = 0o644;
/// Object deletions in flight at once when a directory is removed.
const DELETE_CONCURRENCY: usize = 16;

pub use crate::event::WriteSource;

pub struct TextContent {
    pub path: NsPath,
    pub size: u64,
    pub mtime: Micros,
    /// `None` when the file is not UTF-8.
    pub text: Option<String>,
    pub truncated: bool,
}

pub struct Download {
    /// The full size of the file, even when the stream is cut at [`MAX_FILE_BYTES`].
    pub size: u64,
    pub truncated: bool,
    pub stream: BoxStream<'static, Result<Bytes, warren_storage::Error>>,
}

pub struct Listing {
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

pub struct Files {
    meta: Arc<dyn MetaStore>,
    blobs: BlobStore,
    coord: Arc<dyn Coordinator>,
}

fn not_found(path: &NsPath) -> Error {
    Error::NotFound(format!("Path not found: {}", path.wire()))
}

fn too_large() -> Error {
    Error::TooLarge(format!(
        "file exceeds the upload limit of {MAX_FILE_BYTES} bytes (100 MB)"
    ))
}

impl Files {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        coord: Arc<dyn Coordinator>,
    ) -> Self {
        Self { meta, blobs, coord }
    }

    /// Stores `body` as the file at `path`, creating missing parent directories. `declared` is
    /// the size the client announced, if any, so an oversized upload is refused before any byte
    /// is read.
    pub async fn write<S, E>(
        &self,
        caller: &Caller,
        ns: &Namespace,
        path: &NsPath,
        source: WriteSource,
        declared: Option<u64>,
        mut body: S,
    ) -> Result<u64>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let ws = &caller.key.workspace;
        if path.is_root() {
            return Err(Error::BadRequest(
                "path names the namespace root; give a file path".into(),
            ));
        }
        if declared.is_some_and(|n| n > MAX_FILE_BYTES) {
            return Err(too_large());
        }
        // A body that will be uploaded in parts is checked against the tree before any part is
        // sent, so a doomed upload fails fast. A small one is only buffered until the commit,
        // which checks authoritatively; skipping the early check saves a query per write.
        if !declared.is_some_and(BlobWriter::is_buffered) {
            self.meta.check_writable(ws, ns, path).await?;
        }

        let mut writer = self.blobs.writer(ws, ns, path);
        while let Some(chunk) = body.next().await {
            let failed = match chunk {
                Ok(_) if writer.size() >= MAX_FILE_BYTES => Some(too_large()),
                Ok(c) if writer.size() + c.len() as u64 > MAX_FILE_BYTES => Some(too_large()),
                Ok(c) => writer.write(c).await.err().map(Error::from),
                Err(e) => Some(Error::BadRequest(format!(
                    "could not read the request body: {e}"
                ))),
            };
            if let Some(err) = failed {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "could not abort an upload");
                }
                return Err(err);
            }
        }

        let lock = match self.coord.lock_write(ws, ns, path).await {
            Ok(lock) => lock,
            Err(e) => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "could not abort an upload");
                }
                return Err(e.into());
            }
        };
        let written = match writer.finish().await {
            Ok(w) => w,
            Err(e) => {
                // On a filesystem backend a file cannot be stored where the tree has a
                // directory, or below a file; report that as the conflict it is.
                self.meta.check_writable(ws, ns, path).await?;
                return Err(e.into());
            }
        };
        let ev = event(
            Some(caller),
            ws,
            Some(ns),
            Event::FileWritten {
                path: path.wire(),
                size_bytes: written.size,
                source,
            },
        );
        let file = FileWrite {
            path: path.clone(),
            size: written.size,
            mode: FILE_MODE,
            mtime: Micros::now(),
            sha256: written.sha256,
        };
        if let Err(e) = self.meta.commit_write(&lock, &file, &ev).await {
            // The tree changed under us (say a directory appeared at `path`): nothing indexes
            // these bytes, and we still hold the lock, so removing them cannot hit a newer file.
            if matches!(e, db::Error::Conflict(_))
                && let Err(del) = self.blobs.delete(ws, ns, path).await
            {
                tracing::warn!(path = %path, error = %del, "orphan left after a conflict");
            }
            return Err(e.into());
        }
        Ok(written.size)
    }

    /// Looks up `path` in the index and opens its bytes at the same time; the index decides.
    /// Running both at once takes a read's latency from their sum to the slower of the two; a
    /// blob opened for a path the index does not hold as a file is dropped unread.
    async fn open_file<T>(
        &self,
        caller: &Caller,
        ns: &Namespace,
        path: &NsPath,
        open: impl Future<Output = Result<T, warren_storage::Error>>,
    ) -> Result<(Entry, T)> {
        if path.is_root() {
            return Err(Error::BadRequest(format!("{} is a directory", path.wire())));
        }
        let (entry, blob) =
            tokio::join!(self.meta.get_entry(&caller.key.workspace, ns, path), open);
        let entry = file_entry(path, entry?)?;
        let blob = blob.map_err(|e| missing_bytes(path, e))?;
        Ok((entry, blob))
    }

    /// Reads up to [`TEXT_PREVIEW_BYTES`] of a file as UTF-8 text.
    pub async fn read_text(
        &self,
        caller: &Caller,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<TextContent> {
        let ws = &caller.key.workspace;
        let read = self.blobs.read_prefix(ws, ns, path, TEXT_PREVIEW_BYTES);
        let (entry, (bytes, size)) = self.open_file(caller, ns, path, read).await?;
        let truncated = size > bytes.len() as u64;
        Ok(TextContent {
            path: path.clone(),
            size,
            mtime: entry.mtime,
            text: decode_preview(bytes, truncated),
            truncated,
        })
    }

    /// Streams a file's bytes, cut at [`MAX_FILE_BYTES`].
    pub async fn download(
        &self,
        caller: &Caller,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<Download> {
        let read = self
            .blobs
            .read(&caller.key.workspace, ns, path, MAX_FILE_BYTES);
        let (_, blob) = self.open_file(caller, ns, path, read).await?;
        Ok(Download {
            size: blob.size,
            truncated: blob.size > MAX_FILE_BYTES,
            stream: blob.stream,
        })
    }

    /// Lists a directory: its children, or with `recursive` its whole subtree depth-first
    /// (directories first, then files, by name, at every level), capped at
    /// [`MAX_LIST_ENTRIES`] entries and [`MAX_LIST_DEPTH`] levels.
    pub async fn list(
        &self,
        caller: &Caller,
        ns: &Namespace,
        dir: &NsPath,
        recursive: bool,
    ) -> Result<Listing> {
        let ws = &caller.key.workspace;
        if !dir.is_root() {
            let entry = self
                .meta
                .get_entry(ws, ns, dir)
                .await?
                .ok_or_else(|| not_found(dir))?;
            if entry.kind != EntryKind::Dir {
                return Err(Error::BadRequest(format!(
                    "{} is not a directory",
                    dir.wire()
                )));
            }
        }
        // One more than the cap, to tell a full listing from a truncated one.
        let cap = MAX_LIST_ENTRIES + 1;
        let children = self.meta.list_children(ws, ns, dir, cap).await?;
        if !recursive {
            let truncated = children.len() > MAX_LIST_ENTRIES;
            let mut entries = children;
            entries.truncate(MAX_LIST_ENTRIES);
            return Ok(Listing { entries, truncated });
        }

        let mut entries = Vec::new();
        let mut truncated = false;
        // Each frame: the remaining siblings at one level, and that level's depth (1 = children
        // of `dir`).
        let mut stack = vec![(children.into_iter(), 1usize)];
        while let Some((siblings, depth)) = stack.last_mut() {
            let depth = *depth;
            let Some(entry) = siblings.next() else {
                stack.pop();
                continue;
            };
            if entries.len() == MAX_LIST_ENTRIES {
                truncated = true;
                break;
            }
            let descend = (entry.kind == EntryKind::Dir).then(|| entry.path.clone());
            entries.push(entry);
            if let Some(sub) = descend {
                let kids = self.meta.list_children(ws, ns, &sub, cap).await?;
                if kids.is_empty() {
                    continue;
                }
                if depth >= MAX_LIST_DEPTH {
                    truncated = true;
                    continue;
                }
                stack.push((kids.into_iter(), depth + 1));
            }
        }
        Ok(Listing { entries, truncated })
    }

    /// Deletes a file or, recursively, a directory.
    pub async fn delete(&self, caller: &Caller, ns: &Namespace, path: &NsPath) -> Result<()> {
        let ws = &caller.key.workspace;
        if path.is_root() {
            return Err(Error::BadRequest(
                "refusing to delete the namespace root".into(),
            ));
        }
        let ev = event(
            Some(caller),
            ws,
            Some(ns),
            Event::FileDeleted { path: path.wire() },
        );
        let lock = self.coord.lock_delete(ws, ns, path).await?;
        let removed = self
            .meta
            .commit_delete(&lock, &ev)
            .await?
            .ok_or_else(|| not_found(path))?;
        futures::stream::iter(removed)
            .for_each_concurrent(DELETE_CONCURRENCY, |p| async move {
                if let Err(e) = self.blobs.delete(ws, ns, &p).await {
                    // Unindexed bytes are only garbage; the sweeper reclaims them.
                    tracing::warn!(path = %p, error = %e, "object left behind after delete");
                }
            })
            .await;
        Ok(())
    }
}

/// The index's word on `path`: it must be a file.
fn file_entry(path: &NsPath, entry: Option<Entry>) -> Result<Entry> {
    let entry = entry.ok_or_else(|| not_found(path))?;
    match entry.kind {
        EntryKind::File => Ok(entry),
        EntryKind::Dir => Err(Error::BadRequest(format!("{} is a directory", path.wire()))),
        EntryKind::Symlink => Err(Error::BadRequest(format!(
            "{} is a symbolic link",
            path.wire()
        ))),
    }
}

/// The index says a file exists but its object is gone: storage was changed behind Warren's
/// back. That is a server-side fault, not a client's 404.
fn missing_bytes(path: &NsPath, e: warren_storage::Error) -> Error {
    match e {
        warren_storage::Error::NotFound => {
            Error::Internal(format!("bytes of {} are missing from storage", path.wire()))
        }
        other => other.into(),
    }
}

/// Decodes a text preview. A preview cut at the byte cap may end inside a character; that
/// partial character is dropped. Anything else that is not UTF-8 means the file is binary.
fn decode_preview(bytes: Bytes, truncated: bool) -> Option<String> {
    match std::str::from_utf8(&bytes) {
        Ok(s) => Some(s.to_owned()),
        Err(e) if truncated && e.error_len().is_none() => Some(
            std::str::from_utf8(&bytes[..e.valid_up_to()])
                .ok()?
                .to_owned(),
        ),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_cut_inside_a_character_keeps_the_whole_ones() {
        let text = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        let cut = Bytes::copy_from_slice(&text[..5]);
        assert_eq!(decode_preview(cut.clone(), true).as_deref(), Some("aé"));
        assert_eq!(
            decode_preview(cut, false),
            None,
            "a complete file must decode whole"
        );
        assert_eq!(
            decode_preview(Bytes::from_static(b"\xff\xfeabc"), true),
            None
        );
        assert_eq!(
            decode_preview(Bytes::from_static(b"plain"), false).as_deref(),
            Some("plain")
        );
    }
}
