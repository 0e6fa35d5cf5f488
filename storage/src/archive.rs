//! Snapshot archives: a namespace tree as a gzip-compressed tar, streamed both ways.
//!
//! Entries sit under `workspace/` (so `tar -xzf` of an archive fetched straight from the bucket
//! recreates the tree an agent sees), with modes, symlinks and empty directories. Packing and
//! unpacking run on a blocking thread (tar and gzip are synchronous) that reaches the async
//! object store through the runtime handle; bytes move in bounded chunks, never whole.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
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
/// Largest GNU long-name/long-link or PAX member accepted: paths are at most 768 bytes and
/// link targets 4,095, so this is generous, and it bounds what one header can make us hold.
const MAX_EXTENSION_BYTES: u64 = 64 * 1024;
/// Longest symlink target (Linux `PATH_MAX` less its NUL): a longer one cannot be created in
/// a working copy.
pub const MAX_LINK_TARGET_BYTES: usize = 4095;
/// Entry names are clipped to this many characters in error messages.
const SHOWN_NAME_CHARS: usize = 200;

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
    /// What the decompressed archive may amount to, headers and padding included.
    pub max_expanded_bytes: u64,
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
    sink: BlobWriter,
) -> Result<Written, ArchiveError> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
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
            if e.kind != ArchiveKind::File {
                append(&mut tar, &e, 0, io::empty())?;
                continue;
            }
            let blob = handle.block_on(store.read(&ws, &ns, &e.path, u64::MAX))?;
            let reader = StreamReader {
                stream: blob.stream,
                handle: handle.clone(),
                current: Bytes::new(),
            };
            append(&mut tar, &e, blob.size, reader)?;
        }
        let mut out = tar.into_inner()?.finish()?;
        out.send()?;
        Ok(())
    });
    Ok(pump(rx, sink, packer).await?.1)
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        // Errors from the object store travel through `io::Error::other`, and so do the
        // refusals of this module's own readers; anything else from tar or gzip means the
        // archive itself is bad.
        if let Some(inner) = e.get_ref() {
            if inner.downcast_ref::<crate::Error>().is_some() {
                return ArchiveError::Store(crate::Error::Io(e));
            }
            if let Some(Refused(why)) = inner.downcast_ref::<Refused>() {
                return ArchiveError::Invalid(why.clone());
            }
        }
        ArchiveError::Invalid(format!("not a valid tar.gz archive: {e}"))
    }
}

/// A refusal raised inside a reader, carried through tar and gzip as an `io::Error`.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn invalid(why: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(why.into())
}

/// An entry name as error messages show it: clipped, since names come from the archive and
/// an error must not echo an attacker's megabytes back.
fn shown(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    let mut out: String = name.chars().take(SHOWN_NAME_CHARS).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// The decompressed archive, every gzip member of it (`tar -xzf` reads them all, so a check
/// that stopped at the first would pass what extraction then unpacks), failing once more than
/// `cap` bytes came out.
struct Expanded<R: Read> {
    inner: MultiGzDecoder<R>,
    read: u64,
    cap: u64,
}

impl<R: Read> Read for Expanded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(io::Error::other(Refused(format!(
                "the archive expands to more than {} bytes",
                self.cap
            ))));
        }
        Ok(n)
    }
}

/// One archive member with its extended headers applied: the name and link target from a
/// GNU long-name/long-link or PAX member, else from its own header.
struct Member<'a, R: Read> {
    entry: tar::Entry<'a, R>,
    name: Vec<u8>,
    link: Option<Vec<u8>>,
}

/// The next member, assembling extended headers here rather than in the tar crate, which
/// reads each of them whole, whatever size it declares.
fn next_member<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
) -> Result<Option<Member<'a, R>>, ArchiveError> {
    let (mut name, mut link, mut pax_size) = (None, None, None);
    loop {
        let Some(entry) = entries.next() else {
            if name.is_some() || link.is_some() || pax_size.is_some() {
                return Err(invalid("the archive ends inside an extended header"));
            }
            return Ok(None);
        };
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let extension =
            kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions();
        if !extension {
            // The tar crate sizes a raw entry from its header; a PAX size that says otherwise
            // would make two readers see two different archives.
            if pax_size.is_some_and(|s| s != entry.size()) {
                return Err(invalid(
                    "a PAX size record disagrees with its entry's header",
                ));
            }
            let name = match name {
                Some(n) => n,
                None => entry.path_bytes().into_owned(),
            };
            let link = link.or_else(|| entry.link_name_bytes().map(|b| b.into_owned()));
            return Ok(Some(Member { entry, name, link }));
        }
        if entry.size() > MAX_EXTENSION_BYTES {
            return Err(invalid(format!(
                "an extended header of {} bytes (at most {MAX_EXTENSION_BYTES})",
                entry.size()
            )));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data)?;
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            while data.last() == Some(&0) {
                data.pop();
            }
            if kind.is_gnu_longname() {
                name = Some(data);
            } else {
                link = Some(data);
            }
            continue;
        }
        for ext in tar::PaxExtensions::new(&data) {
            let ext = ext.map_err(|_| invalid("a malformed PAX header"))?;
            match ext.key_bytes() {
                b"path" => name = Some(ext.value_bytes().to_vec()),
                b"linkpath" => link = Some(ext.value_bytes().to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| invalid("a malformed PAX size record"))?;
                    pax_size = Some(size);
                }
                _ => {}
            }
        }
    }
}

/// The entries read so far, checked as they arrive so that nothing is stored for an archive
/// whose tree cannot be built: a path keeps one kind, and nothing sits below a non-directory.
#[derive(Default)]
struct Tree {
    out: Vec<Unpacked>,
    index: HashMap<NsPath, usize>,
    /// Directories only implied by the paths below them.
    implied: HashSet<NsPath>,
}

fn kind_name(k: ArchiveKind) -> &'static str {
    match k {
        ArchiveKind::Dir => "directory",
        ArchiveKind::File => "file",
        ArchiveKind::Symlink => "symlink",
    }
}

impl Tree {
    /// Checks that `path` may hold a `kind`, before anything of it is stored.
    fn admit(&mut self, path: &NsPath, kind: ArchiveKind) -> Result<(), ArchiveError> {
        let ancestors = path.ancestors();
        for a in &ancestors {
            if let Some(&i) = self.index.get(a)
                && self.out[i].entry.kind != ArchiveKind::Dir
            {
                return Err(invalid(format!(
                    "{} is below {}, which is not a directory",
                    shown(path.wire().as_bytes()),
                    shown(a.wire().as_bytes())
                )));
            }
        }
        match self.index.get(path) {
            Some(&i) if self.out[i].entry.kind != kind => {
                return Err(invalid(format!(
                    "{} appears both as a {} and as a {}",
                    shown(path.wire().as_bytes()),
                    kind_name(self.out[i].entry.kind),
                    kind_name(kind)
                )));
            }
            None if kind != ArchiveKind::Dir && self.implied.contains(path) => {
                return Err(invalid(format!(
                    "{} is a {} but other entries are below it",
                    shown(path.wire().as_bytes()),
                    kind_name(kind)
                )));
            }
            _ => {}
        }
        self.implied.extend(
            ancestors
                .into_iter()
                .filter(|a| !self.index.contains_key(a)),
        );
        Ok(())
    }

    /// Records an admitted entry; a later entry for a path replaces the earlier one.
    fn record(&mut self, item: Unpacked, max_entries: usize) -> Result<(), ArchiveError> {
        match self.index.get(&item.entry.path) {
            Some(&i) => self.out[i] = item,
            None => {
                if self.out.len() >= max_entries {
                    return Err(invalid(format!("more than {max_entries} entries")));
                }
                self.index.insert(item.entry.path.clone(), self.out.len());
                self.out.push(item);
            }
        }
        Ok(())
    }
}

/// What becomes of each checked entry's bytes.
trait Visit {
    /// `data` yields a file's `size` bytes (and nothing for other kinds). Returns what was
    /// stored, if it is known yet.
    fn entry(
        &mut self,
        e: &ArchiveEntry,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<Option<Written>, ArchiveError>;
}

/// Reads through, storing nothing.
struct CheckOnly;

impl Visit for CheckOnly {
    fn entry(
        &mut self,
        _: &ArchiveEntry,
        _: u64,
        data: &mut dyn Read,
    ) -> Result<Option<Written>, ArchiveError> {
        io::copy(data, &mut io::sink())?;
        Ok(None)
    }
}

/// Streams each file into the writer `make` returns. Small files are stored by tasks on the
/// runtime while the tar thread decompresses the next ones; at most `STORE_CONCURRENCY` at a
/// time.
struct Stage<F> {
    make: F,
    handle: Handle,
    slots: Arc<Semaphore>,
    storing: HashMap<NsPath, JoinHandle<crate::blob::Result<Written>>>,
}

impl<F: Fn(&NsPath) -> BlobWriter> Visit for Stage<F> {
    fn entry(
        &mut self,
        e: &ArchiveEntry,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<Option<Written>, ArchiveError> {
        if e.kind != ArchiveKind::File {
            return Ok(None);
        }
        // A later entry for the same path waits for the earlier one's store: both go to the
        // same key.
        if let Some(earlier) = self.storing.remove(&e.path) {
            let _ = self.handle.block_on(earlier);
        }
        if size > CHUNK as u64 {
            return Ok(Some(copy_into(data, (self.make)(&e.path), &self.handle)?));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        data.read_to_end(&mut bytes)?;
        let mut w = (self.make)(&e.path);
        let slot = self
            .handle
            .block_on(Arc::clone(&self.slots).acquire_owned())
            .map_err(io::Error::other)?;
        let task = self.handle.spawn(async move {
            let _slot = slot;
            w.write(Bytes::from(bytes)).await?;
            w.finish().await
        });
        self.storing.insert(e.path.clone(), task);
        Ok(None)
    }
}

impl<F> Stage<F> {
    /// Waits for the stores still running and records what they wrote.
    fn finish(self, tree: &mut Tree) -> Result<(), ArchiveError> {
        let mut first_error = None;
        for (path, task) in self.storing {
            match self.handle.block_on(task).map_err(io::Error::other) {
                Ok(Ok(w)) => {
                    if let Some(&i) = tree.index.get(&path) {
                        tree.out[i].written = Some(w);
                    }
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(ArchiveError::Store(e));
                }
                Err(e) => {
                    first_error.get_or_insert(ArchiveError::Store(e.into()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Writes every checked entry into a new archive with `pack`'s header rules (owner 0, modes
/// 0644/0755, only `workspace/`), whatever the source's headers said.
struct Repack {
    tar: tar::Builder<GzEncoder<ChannelWriter>>,
}

impl Visit for Repack {
    fn entry(
        &mut self,
        e: &ArchiveEntry,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<Option<Written>, ArchiveError> {
        append(&mut self.tar, e, size, data)?;
        Ok(None)
    }
}

/// Appends one entry in Warren's canonical form.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    e: &ArchiveEntry,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let name = format!("{TOP}/{}", e.path.as_str());
    match e.kind {
        ArchiveKind::Dir => {
            let mut h = header(tar::EntryType::Directory, 0o755, e.mtime_secs, 0);
            tar.append_data(&mut h, format!("{name}/"), io::empty())
        }
        ArchiveKind::Symlink => {
            let mut h = header(tar::EntryType::Symlink, 0o777, e.mtime_secs, 0);
            tar.append_link(&mut h, name, e.target.as_deref().unwrap_or_default())
        }
        ArchiveKind::File => {
            let mut h = header(tar::EntryType::Regular, e.mode, e.mtime_secs, size);
            tar.append_data(&mut h, name, data)
        }
    }
}

/// Reads the whole archive from `source`, checking every entry before `visit` sees it, and
/// then that nothing but zero padding follows the end of the archive (which also reads the
/// gzip trailer, so a bad checksum or a cut-off archive is refused).
fn walk(
    source: Blob,
    handle: &Handle,
    limits: UnpackLimits,
    visit: &mut dyn Visit,
) -> Result<Tree, ArchiveError> {
    let reader = StreamReader {
        stream: source.stream,
        handle: handle.clone(),
        current: Bytes::new(),
    };
    let mut archive = tar::Archive::new(Expanded {
        inner: MultiGzDecoder::new(reader),
        read: 0,
        cap: limits.max_expanded_bytes,
    });
    let mut tree = Tree::default();
    let mut entries = archive.entries()?.raw(true);
    while let Some(Member {
        mut entry,
        name,
        link,
    }) = next_member(&mut entries)?
    {
        let text = std::str::from_utf8(&name)
            .map_err(|_| invalid(format!("entry {} is not UTF-8", shown(&name))))?;
        let Some(rel) = relative(text)? else {
            continue;
        };
        let path =
            NsPath::parse(rel).map_err(|e| invalid(format!("entry {}: {e}", shown(&name))))?;
        let h = entry.header();
        let mtime_secs = h.mtime().unwrap_or(0);
        let exec = h.mode().unwrap_or(0o644) & 0o111 != 0;
        let (kind, mode, target) = match h.entry_type() {
            tar::EntryType::Directory => (ArchiveKind::Dir, 0o755, None),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                (ArchiveKind::File, if exec { 0o755 } else { 0o644 }, None)
            }
            tar::EntryType::Symlink => {
                let target = link
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|t| {
                        !t.is_empty() && !t.contains('\0') && t.len() <= MAX_LINK_TARGET_BYTES
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "entry {}: a link target must be 1 to {MAX_LINK_TARGET_BYTES} bytes of UTF-8",
                            shown(&name)
                        ))
                    })?;
                (ArchiveKind::Symlink, 0o777, Some(target))
            }
            other => {
                return Err(invalid(format!(
                    "entry {}: {other:?} entries are not supported",
                    shown(&name)
                )));
            }
        };
        let size = if kind == ArchiveKind::File {
            entry.size()
        } else {
            0
        };
        if size > limits.max_file_bytes {
            return Err(invalid(format!(
                "entry {} is larger than {} bytes",
                shown(&name),
                limits.max_file_bytes
            )));
        }
        tree.admit(&path, kind)?;
        let e = ArchiveEntry {
            path,
            kind,
            mode,
            mtime_secs,
            target,
        };
        let written = if kind == ArchiveKind::File {
            visit.entry(&e, size, &mut entry)?
        } else {
            visit.entry(&e, 0, &mut io::empty())?
        };
        tree.record(Unpacked { entry: e, written }, limits.max_entries)?;
    }
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            return Ok(tree);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(invalid("the archive holds data after its end"));
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
    tokio::task::spawn_blocking(move || match writer_for {
        None => Ok(walk(source, &handle, limits, &mut CheckOnly)?.out),
        Some(make) => {
            let mut stage = Stage {
                make,
                handle: handle.clone(),
                slots: Arc::new(Semaphore::new(STORE_CONCURRENCY)),
                storing: HashMap::new(),
            };
            let mut walked = walk(source, &handle, limits, &mut stage);
            // Stores already under way finish (or fail) either way, so none outlives the call.
            let stored = stage.finish(walked.as_mut().unwrap_or(&mut Tree::default()));
            let tree = walked?;
            stored?;
            Ok(tree.out)
        }
    })
    .await
    .map_err(|e| ArchiveError::Store(io::Error::other(e).into()))?
}

/// Checks the archive in `source` as [`unpack`] does and writes it anew into `sink` in
/// Warren's canonical form, so what is stored is exactly what was checked: no bytes after
/// the end, no second gzip member, no owners, special modes or device entries.
pub async fn repack(
    source: Blob,
    limits: UnpackLimits,
    level: u32,
    sink: BlobWriter,
) -> Result<(Vec<Unpacked>, Written), ArchiveError> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let handle = Handle::current();
    let worker = tokio::task::spawn_blocking(move || -> Result<Vec<Unpacked>, ArchiveError> {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::new(level)));
        let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
        tar.append_data(&mut h, format!("{TOP}/"), io::empty())?;
        let mut repack = Repack { tar };
        let tree = walk(source, &handle, limits, &mut repack)?;
        let mut out = repack.tar.into_inner()?.finish()?;
        out.send()?;
        Ok(tree.out)
    });
    pump(rx, sink, worker).await
}

/// Stores what a blocking archive worker sends until it is done; the sink is aborted if
/// either side fails.
async fn pump<T>(
    mut rx: mpsc::Receiver<Bytes>,
    mut sink: BlobWriter,
    worker: JoinHandle<Result<T, ArchiveError>>,
) -> Result<(T, Written), ArchiveError> {
    let mut failed = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = sink.write(chunk).await {
            failed = Some(e);
            break;
        }
    }
    // A worker still sending sees the channel closed and stops.
    drop(rx);
    let done = worker
        .await
        .map_err(|e| ArchiveError::Store(io::Error::other(e).into()));
    let value = match (failed, done) {
        (None, Ok(Ok(v))) => v,
        (Some(e), _) => {
            let _ = sink.abort().await;
            return Err(e.into());
        }
        (None, Ok(Err(e)) | Err(e)) => {
            let _ = sink.abort().await;
            return Err(e);
        }
    };
    Ok((value, sink.finish().await?))
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
    entry: &mut dyn Read,
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
