//! Snapshot archives: a namespace tree as a gzip-compressed tar, streamed both ways.
//!
//! Entries sit under `workspace/` (so `tar -xzf` of an archive fetched straight from the bucket
//! recreates the tree an agent sees), with modes, symlinks and empty directories. Packing and
//! unpacking run on a blocking thread (tar and gzip are synchronous) that reaches the async
//! object store through the runtime handle; bytes move in bounded chunks, never whole.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::blob::{Blob, BlobStore, BlobWriter, Written};
use crate::names::{Namespace, NsPath, WorkspaceId};

/// Chunks handed between the tar thread and the object store.
const CHUNK: usize = 1024 * 1024;
/// Files stored at once while unpacking.
const STORE_CONCURRENCY: usize = 8;
/// The top directory of every archive.
const TOP: &str = "workspace";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Dir,
    File,
    Symlink,
}

/// One entry of a namespace tree, as packed or unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub path: NsPath,
    pub kind: ArchiveKind,
    /// 0o644 or 0o755 for files, 0o755 for directories.
    pub mode: u32,
    pub mtime_secs: u64,
    pub target: Option<String>,
}

/// An unpacked entry, and for a file what was stored.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub entry: ArchiveEntry,
    pub written: Option<Written>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is not one Warren can restore (bad gzip or tar, an entry outside
    /// `workspace/`, an invalid path, a kind it does not hold, over a limit).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_entries: usize,
    pub max_file_bytes: u64,
}

/// Reads an async byte stream from a blocking thread.
struct StreamReader {
    stream: BoxStream<'static, crate::blob::Result<Bytes>>,
    handle: Handle,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Hands bytes from a blocking thread to an async consumer in `CHUNK`-sized pieces.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "archive consumer stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Packs `entries` (directories before what they hold) of a namespace into `sink` as a
/// tar.gz; file bytes are read from `store`. Returns what the sink stored.
pub async fn pack(
    store: &BlobStore,
    ws: &WorkspaceId,
    ns: &Namespace,
    entries: Vec<ArchiveEntry>,
    level: u32,
    mut sink: BlobWriter,
) -> Result<Written, ArchiveError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let (store, ws, ns) = (store.clone(), ws.clone(), ns.clone());
    let handle = Handle::current();
    let packer = tokio::task::spawn_blocking(move || -> Result<(), ArchiveError> {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::new(level)));
        let now = entries.iter().map(|e| e.mtime_secs).max().unwrap_or(0);
        let mut h = header(tar::EntryType::Directory, 0o755, now, 0);
        tar.append_data(&mut h, format!("{TOP}/"), io::empty())?;
        for e in entries {
            let name = format!("{TOP}/{}", e.path.as_str());
            match e.kind {
                ArchiveKind::Dir => {
                    let mut h = header(tar::EntryType::Directory, 0o755, e.mtime_secs, 0);
                    tar.append_data(&mut h, format!("{name}/"), io::empty())?;
                }
                ArchiveKind::Symlink => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, e.mtime_secs, 0);
                    tar.append_link(&mut h, name, e.target.as_deref().unwrap_or_default())?;
                }
                ArchiveKind::File => {
                    let blob = handle.block_on(store.read(&ws, &ns, &e.path, u64::MAX))?;
                    let mut h = header(tar::EntryType::Regular, e.mode, e.mtime_secs, blob.size);
                    let reader = StreamReader {
                        stream: blob.stream,
                        handle: handle.clone(),
                        current: Bytes::new(),
                    };
                    tar.append_data(&mut h, name, reader)?;
                }
            }
        }
        let mut out = tar.into_inner()?.finish()?;
        out.send()?;
        Ok(())
    });
    let mut failed = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = sink.write(chunk).await {
            failed = Some(e);
            break;
        }
    }
    drop(rx);
    let packed = packer
        .await
        .map_err(|e| ArchiveError::Store(io::Error::other(e).into()))?;
    if let Some(e) = failed {
        let _ = sink.abort().await;
        return Err(e.into());
    }
    if let Err(e) = packed {
        let _ = sink.abort().await;
        return Err(e);
    }
    Ok(sink.finish().await?)
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        // Errors from the object store travel through `io::Error::other`; anything else from
        // tar or gzip means the archive itself is bad.
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::Error>())
        {
            Some(_) => ArchiveError::Store(crate::Error::Io(e)),
            None => ArchiveError::Invalid(format!("not a valid tar.gz archive: {e}")),
        }
    }
}

/// Reads a tar.gz from `source`, checking every entry. With `writer_for`, each regular file
/// is streamed into the writer it returns; without, file contents are only read through.
/// Later entries for the same path replace earlier ones, as `tar -x` does.
pub async fn unpack<F>(
    source: Blob,
    writer_for: Option<F>,
    limits: UnpackLimits,
) -> Result<Vec<Unpacked>, ArchiveError>
where
    F: Fn(&NsPath) -> BlobWriter + Send + 'static,
{
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let reader = StreamReader {
            stream: source.stream,
            handle: handle.clone(),
            current: Bytes::new(),
        };
        let mut archive = tar::Archive::new(GzDecoder::new(reader));
        let mut out: Vec<Unpacked> = Vec::new();
        let mut index: HashMap<NsPath, usize> = HashMap::new();
        // Small files are stored by tasks on the runtime while this thread decompresses the
        // next ones; at most `STORE_CONCURRENCY` at a time.
        let slots = Arc::new(Semaphore::new(STORE_CONCURRENCY));
        let mut storing: HashMap<NsPath, JoinHandle<crate::blob::Result<Written>>> = HashMap::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path_bytes().into_owned();
            let name = std::str::from_utf8(&raw)
                .map_err(|_| ArchiveError::Invalid("an entry name is not UTF-8".into()))?;
            let Some(rel) = relative(name)? else {
                continue;
            };
            let path = NsPath::parse(rel)
                .map_err(|e| ArchiveError::Invalid(format!("entry {name:?}: {e}")))?;
            let h = entry.header();
            let mtime_secs = h.mtime().unwrap_or(0);
            let exec = h.mode().unwrap_or(0o644) & 0o111 != 0;
            let kind = h.entry_type();
            let (kind, mode, target) = match kind {
                tar::EntryType::Directory => (ArchiveKind::Dir, 0o755, None),
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    (ArchiveKind::File, if exec { 0o755 } else { 0o644 }, None)
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .and_then(|b| String::from_utf8(b).ok())
                        .filter(|t| !t.is_empty() && !t.contains('\0'))
                        .ok_or_else(|| {
                            ArchiveError::Invalid(format!("entry {name:?}: bad link target"))
                        })?;
                    (ArchiveKind::Symlink, 0o777, Some(target))
                }
                other => {
                    return Err(ArchiveError::Invalid(format!(
                        "entry {name:?}: {other:?} entries are not supported"
                    )));
                }
            };
            let written = if kind == ArchiveKind::File {
                if entry.size() > limits.max_file_bytes {
                    return Err(ArchiveError::Invalid(format!(
                        "entry {name:?} is larger than {} bytes",
                        limits.max_file_bytes
                    )));
                }
                // A later entry for the same path waits for the earlier one's store: both go to
                // the same key.
                if let Some(earlier) = storing.remove(&path) {
                    let _ = handle.block_on(earlier);
                }
                match &writer_for {
                    Some(make) if entry.size() <= CHUNK as u64 => {
                        let mut data = Vec::with_capacity(entry.size() as usize);
                        entry.read_to_end(&mut data)?;
                        let mut w = make(&path);
                        let slot = handle
                            .block_on(Arc::clone(&slots).acquire_owned())
                            .map_err(io::Error::other)?;
                        let task = handle.spawn(async move {
                            let _slot = slot;
                            w.write(Bytes::from(data)).await?;
                            w.finish().await
                        });
                        storing.insert(path.clone(), task);
                        None
                    }
                    Some(make) => Some(copy_into(&mut entry, make(&path), &handle)?),
                    None => {
                        io::copy(&mut entry, &mut io::sink())?;
                        None
                    }
                }
            } else {
                None
            };
            let item = Unpacked {
                entry: ArchiveEntry {
                    path: path.clone(),
                    kind,
                    mode,
                    mtime_secs,
                    target,
                },
                written,
            };
            match index.get(&path) {
                Some(&i) => out[i] = item,
                None => {
                    if out.len() >= limits.max_entries {
                        return Err(ArchiveError::Invalid(format!(
                            "more than {} entries",
                            limits.max_entries
                        )));
                    }
                    index.insert(path, out.len());
                    out.push(item);
                }
            }
        }
        let mut first_error = None;
        for (path, task) in storing {
            match handle.block_on(task).map_err(io::Error::other) {
                Ok(Ok(w)) => out[index[&path]].written = Some(w),
                Ok(Err(e)) => {
                    first_error.get_or_insert(ArchiveError::Store(e));
                }
                Err(e) => {
                    first_error.get_or_insert(ArchiveError::Store(e.into()));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        check_tree(&out, &index)?;
        Ok(out)
    })
    .await
    .map_err(|e| ArchiveError::Store(io::Error::other(e).into()))?
}

/// The namespace-relative path of an entry name; `None` for the top directory itself.
fn relative(name: &str) -> Result<Option<&str>, ArchiveError> {
    let name = name.strip_prefix("./").unwrap_or(name);
    let rest = match name.strip_prefix(TOP) {
        Some("") | Some("/") => return Ok(None),
        Some(r) if r.starts_with('/') => &r[1..],
        _ => {
            return Err(ArchiveError::Invalid(format!(
                "entry {name:?} is outside {TOP}/"
            )));
        }
    };
    Ok(Some(rest.strip_suffix('/').unwrap_or(rest)))
}

fn copy_into(
    entry: &mut impl Read,
    mut w: BlobWriter,
    handle: &Handle,
) -> Result<Written, ArchiveError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = handle.block_on(w.abort());
                return Err(e.into());
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = handle.block_on(w.write(Bytes::copy_from_slice(&buf[..n]))) {
            let _ = handle.block_on(w.abort());
            return Err(e.into());
        }
    }
    Ok(handle.block_on(w.finish())?)
}

/// Every entry's ancestors must be directories (or absent, made implicitly).
fn check_tree(out: &[Unpacked], index: &HashMap<NsPath, usize>) -> Result<(), ArchiveError> {
    for u in out {
        for a in u.entry.path.ancestors() {
            if let Some(&i) = index.get(&a)
                && out[i].entry.kind != ArchiveKind::Dir
            {
                return Err(ArchiveError::Invalid(format!(
                    "{} is below {}, which is not a directory",
                    u.entry.path.wire(),
                    a.wire()
                )));
            }
        }
    }
    Ok(())
}
