//! Blob I/O for namespace files over any `object_store` backend.
//!
//! [`BlobStore`] is the only thing in Warren that talks to object storage for file bytes. Every
//! method takes a validated `(WorkspaceId, Namespace, NsPath)` and derives the key through
//! [`crate::layout`], so a caller cannot name an object outside the namespace it holds.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, path::Path};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::layout::Layout;
use crate::names::{Namespace, NsPath, SnapshotId, WorkspaceId};

/// Size of one multipart part. Uploads smaller than this are sent as a single PUT; S3 needs
/// parts of at least 5 MiB.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload; bounds an upload's memory at about `PART_SIZE * (this + 1)`.
const PART_CONCURRENCY: usize = 2;
/// Objects up to this size are read whole in one request rather than streamed.
const SMALL_OBJECT_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("object not found")]
    NotFound,
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("object store: {0}")]
    Backend(#[source] object_store::Error),
    #[error("object store i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound,
            other => Error::Backend(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a finished write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// Lowercase hex SHA-256 of the content: the same on every backend, so it can be compared
    /// with a hash computed anywhere else (exec sync-back, snapshots).
    pub sha256: String,
}

/// A readable object: its full size and a stream of at most the requested number of bytes.
pub struct Blob {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

/// Namespace-scoped blob storage on top of one `ObjectStore`.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    /// The directory of a local filesystem backend: object stores have no directories, but a
    /// filesystem keeps the empty ones a restore's renames leave in its staging area.
    local_dir: Option<std::path::PathBuf>,
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self {
            store,
            layout: Layout::new(root),
            local_dir: None,
        }
    }

    /// Opens a backend from a URL: `file:///abs/dir`, `memory://`, or `s3://bucket[/prefix]`.
    /// S3 settings come from the standard AWS environment (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    pub fn open(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        match parsed.scheme() {
            "memory" => Ok(Self::new(Arc::new(InMemory::new()), Path::default())),
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| invalid("expected file:///absolute/path"))?;
                // Tenant files: only the server's user may enter. (Files inside get the umask's
                // modes; this directory is what keeps other local users out.)
                std::fs::create_dir_all(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                let fs = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
                Ok(Self {
                    local_dir: Some(dir),
                    ..Self::new(Arc::new(fs), Path::default())
                })
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("expected s3://bucket/prefix"))?;
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let root = Path::from(parsed.path().trim_matches('/'));
                Ok(Self::new(Arc::new(s3), root))
            }
            other => Err(invalid(&format!("unsupported scheme {other:?}"))),
        }
    }

    /// The same store seen through `wrap` (a decorator that measures, say): every call this
    /// store makes goes through it.
    pub fn map_store(
        mut self,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        self.store = wrap(self.store);
        self
    }

    /// The underlying store, for benchmarks and tests that compare against raw `object_store`.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether the store answers: a lookup of a key nobody writes, which succeeds as "not
    /// found" on a reachable store and fails on a dead one or with refused credentials.
    pub async fn check(&self) -> Result<()> {
        match self
            .store
            .head(&self.layout.root().child(".warren-readiness"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Starts a streamed write. Nothing is visible at the key until [`BlobWriter::finish`].
    pub fn writer(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> BlobWriter {
        self.writer_at(self.layout.file_key(ws, ns, path))
    }

    fn writer_at(&self, key: Path) -> BlobWriter {
        BlobWriter {
            inner: BufWriter::with_capacity(Arc::clone(&self.store), key, PART_SIZE)
                .with_max_concurrency(PART_CONCURRENCY),
            hasher: Sha256::new(),
            size: 0,
        }
    }

    async fn read_at(&self, key: &Path) -> Result<Blob> {
        let got = self.store.get(key).await?;
        let size = got.meta.size;
        let stream = got.into_stream().map(|r| r.map_err(Error::from)).boxed();
        Ok(Blob { size, stream })
    }

    async fn delete_at(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing a snapshot archive.
    pub fn snapshot_writer(&self, ws: &WorkspaceId, ns: &Namespace, id: &SnapshotId) -> BlobWriter {
        self.writer_at(self.layout.snapshot_key(ws, ns, id))
    }

    pub async fn read_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Blob> {
        self.read_at(&self.layout.snapshot_key(ws, ns, id)).await
    }

    /// Deletes a snapshot archive (idempotent).
    pub async fn delete_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<()> {
        self.delete_at(&self.layout.snapshot_key(ws, ns, id)).await
    }

    /// Starts storing an archive upload (see [`Layout::upload_key`]).
    pub fn upload_writer(&self, ws: &WorkspaceId, ns: &Namespace, id: &SnapshotId) -> BlobWriter {
        self.writer_at(self.layout.upload_key(ws, ns, id))
    }

    pub async fn read_upload(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Blob> {
        self.read_at(&self.layout.upload_key(ws, ns, id)).await
    }

    /// Deletes an archive upload (idempotent).
    pub async fn delete_upload(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<()> {
        self.delete_at(&self.layout.upload_key(ws, ns, id)).await
    }

    /// Every snapshot object of a namespace, with its size (for the purge).
    pub fn list_snapshots(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> BoxStream<'static, Result<(Path, u64)>> {
        self.store
            .list(Some(&self.layout.namespace_snapshots_prefix(ws, ns)))
            .map(|r| r.map(|m| (m.location, m.size)).map_err(Error::from))
            .boxed()
    }

    /// Deletes one object found by [`BlobStore::list_snapshots`].
    pub async fn delete_listed(&self, key: &Path) -> Result<()> {
        self.delete_at(key).await
    }

    /// Starts writing a restored file into a staging area.
    pub fn staged_writer(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        stage: &str,
        path: &NsPath,
    ) -> BlobWriter {
        self.writer_at(self.layout.stage_key(ws, ns, stage, "new", path))
    }

    /// Moves a live file aside into the staging area (`old`), or a staged file (`new`) into
    /// place, or (`undo`) an old one back. A rename where the backend has one (local
    /// filesystem), copy and delete otherwise (S3).
    pub async fn stage_move(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        stage: &str,
        path: &NsPath,
        step: StageStep,
    ) -> Result<()> {
        let live = self.layout.file_key(ws, ns, path);
        let (from, to) = match step {
            StageStep::SetAside => (live, self.layout.stage_key(ws, ns, stage, "old", path)),
            StageStep::Publish => (self.layout.stage_key(ws, ns, stage, "new", path), live),
            StageStep::PutBack => (self.layout.stage_key(ws, ns, stage, "old", path), live),
        };
        self.store.rename(&from, &to).await?;
        Ok(())
    }

    /// Deletes a staging area and everything in it.
    pub async fn delete_stage(&self, ws: &WorkspaceId, ns: &Namespace, stage: &str) -> Result<()> {
        let prefix = self.layout.stage_prefix(ws, ns, stage);
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            self.delete_at(&meta?.location).await?;
        }
        if let Some(dir) = &self.local_dir {
            // Only directories are left (the objects are gone); the prefix's components are
            // plain names, stored as they are.
            match std::fs::remove_dir_all(dir.join(prefix.as_ref())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes a whole object from memory.
    pub async fn put(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
        bytes: Bytes,
    ) -> Result<Written> {
        let mut w = self.writer(ws, ns, path);
        w.write(bytes).await?;
        w.finish().await
    }

    /// Opens an object for reading, yielding at most `max_bytes` of it.
    pub async fn read(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
        max_bytes: u64,
    ) -> Result<Blob> {
        let key = self.layout.file_key(ws, ns, path);
        let got = self.store.get(&key).await?;
        let size = got.meta.size;
        if size <= SMALL_OBJECT_BYTES.min(max_bytes) {
            // One read instead of a chunked stream: for local files each chunk is a separate
            // blocking-pool hop, which triples the cost of a small read.
            let bytes = got.bytes().await?;
            let stream = futures::stream::once(async { Ok(bytes) }).boxed();
            return Ok(Blob { size, stream });
        }
        let stream = got
            .into_stream()
            .scan(max_bytes, |remaining, item| {
                if *remaining == 0 {
                    return futures::future::ready(None);
                }
                let item = item.map_err(Error::from).map(|mut chunk| {
                    if chunk.len() as u64 > *remaining {
                        chunk.truncate(*remaining as usize);
                    }
                    *remaining -= chunk.len() as u64;
                    chunk
                });
                futures::future::ready(Some(item))
            })
            .boxed();
        Ok(Blob { size, stream })
    }

    /// Reads at most `max_bytes` of an object into memory; returns them with the full size.
    pub async fn read_prefix(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
        max_bytes: u64,
    ) -> Result<(Bytes, u64)> {
        let mut blob = self.read(ws, ns, path, max_bytes).await?;
        let mut buf = Vec::with_capacity(blob.size.min(max_bytes) as usize);
        while let Some(chunk) = blob.stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok((Bytes::from(buf), blob.size))
    }

    /// Size and SHA-256 of an object, read as a stream.
    pub async fn digest(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<Written> {
        let mut blob = self.read(ws, ns, path, u64::MAX).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = blob.stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Written {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Deletes an object. Deleting a missing object succeeds: deletes are retried by the
    /// sweeper and must be idempotent.
    pub async fn delete(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<()> {
        let key = self.layout.file_key(ws, ns, path);
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists the live file objects of every namespace of every workspace. Keys Warren does not
    /// write are left out.
    pub fn list_all_files(&self) -> BoxStream<'static, Result<StoredFile>> {
        let layout = self.layout.clone();
        self.store
            .list(Some(&self.layout.workspaces_prefix()))
            .filter_map(move |r| {
                let item = match r {
                    Err(e) => Some(Err(Error::from(e))),
                    Ok(meta) => layout.parse_file_key(&meta.location).map(|(ws, ns, path)| {
                        Ok(StoredFile {
                            workspace: ws,
                            namespace: ns,
                            path,
                            size: meta.size,
                            modified_micros: meta.last_modified.timestamp_micros(),
                        })
                    }),
                };
                futures::future::ready(item)
            })
            .boxed()
    }

    /// Lists every file object of a namespace with its size. Keys that do not decode to a valid
    /// [`NsPath`] (written by something other than Warren) are reported as errors, not skipped
    /// silently.
    pub fn list(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> BoxStream<'static, Result<(NsPath, u64), ListError>> {
        let prefix = self.layout.files_prefix(ws, ns);
        let layout = self.layout.clone();
        self.store
            .list(Some(&prefix))
            .map(move |r| {
                let meta = r.map_err(|e| ListError::Store(e.into()))?;
                let path = layout
                    .path_of(&prefix, &meta.location)
                    .ok_or_else(|| ListError::Foreign(meta.location.to_string()))?;
                Ok((path, meta.size))
            })
            .boxed()
    }
}

/// One move of a restore (see [`BlobStore::stage_move`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStep {
    SetAside,
    Publish,
    PutBack,
}

/// A live file object of some namespace, as found in storage.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub workspace: WorkspaceId,
    pub namespace: Namespace,
    pub path: NsPath,
    pub size: u64,
    /// Last-modified time, in microseconds since the Unix epoch.
    pub modified_micros: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Store(Error),
    #[error("object key {0:?} is not a valid namespace path")]
    Foreign(String),
}

/// A streamed upload. Memory use is bounded by the part size, whatever the object size.
pub struct BlobWriter {
    inner: BufWriter,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        self.inner.put(chunk).await?;
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether nothing has been sent to the store yet: the whole object is still buffered and
    /// will go in one request at [`BlobWriter::finish`].
    pub fn is_buffered(size: u64) -> bool {
        size < PART_SIZE as u64
    }

    /// Publishes the object atomically: readers see the old content or the new, never a mix.
    pub async fn finish(mut self) -> Result<Written> {
        self.inner.shutdown().await?;
        Ok(Written {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }

    /// Drops the upload; any parts already sent are cleaned up.
    pub async fn abort(mut self) -> Result<()> {
        self.inner.abort().await?;
        Ok(())
    }
}
