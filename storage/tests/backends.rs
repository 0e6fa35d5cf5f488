//! One behaviour suite for `BlobStore`, run against every backend. A new backend joins by adding
//! one line to the `backends!` invocation at the bottom.

use bytes::Bytes;
use futures::TryStreamExt;
use warren_storage::{BlobStore, Error, Namespace, NsPath, WorkspaceId};

struct Fixture {
    store: BlobStore,
    ws: WorkspaceId,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        store: BlobStore::open("memory://").unwrap(),
        ws: WorkspaceId::parse("ws-0000000000000001").unwrap(),
        _dir: None,
    }
}

fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("objects").display());
    Fixture {
        store: BlobStore::open(&url).unwrap(),
        ws: WorkspaceId::parse("ws-0000000000000001").unwrap(),
        _dir: Some(dir),
    }
}

/// S3 (LocalStack in scripts/test): one bucket per run, a fresh root prefix per test.
#[cfg(feature = "s3-tests")]
fn s3() -> Fixture {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let bucket = std::env::var("WARREN_TEST_S3_BUCKET")
        .expect("the s3-tests feature needs WARREN_TEST_S3_BUCKET and AWS_* (see scripts/test)");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("t-{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    Fixture {
        store: BlobStore::open(&format!("s3://{bucket}/{prefix}")).unwrap(),
        ws: WorkspaceId::parse("ws-0000000000000001").unwrap(),
        _dir: None,
    }
}

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

fn p(s: &str) -> NsPath {
    NsPath::parse(s).unwrap()
}

async fn read_all(f: &Fixture, n: &Namespace, path: &NsPath) -> Result<Vec<u8>, Error> {
    let (bytes, size) = f.store.read_prefix(&f.ws, n, path, u64::MAX).await?;
    assert_eq!(bytes.len() as u64, size);
    Ok(bytes.to_vec())
}

async fn round_trip_and_overwrite(f: Fixture) {
    let a = ns("alice");
    let w = f
        .store
        .put(&f.ws, &a, &p("docs/a.txt"), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(w.size, 5);
    assert_eq!(
        w.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(read_all(&f, &a, &p("docs/a.txt")).await.unwrap(), b"hello");
    f.store
        .put(&f.ws, &a, &p("docs/a.txt"), Bytes::from_static(b"bye"))
        .await
        .unwrap();
    assert_eq!(read_all(&f, &a, &p("docs/a.txt")).await.unwrap(), b"bye");
}

async fn missing_is_not_found_and_delete_is_idempotent(f: Fixture) {
    let a = ns("alice");
    assert!(matches!(
        read_all(&f, &a, &p("nope")).await,
        Err(Error::NotFound)
    ));
    f.store
        .put(&f.ws, &a, &p("x"), Bytes::from_static(b"1"))
        .await
        .unwrap();
    f.store.delete(&f.ws, &a, &p("x")).await.unwrap();
    f.store.delete(&f.ws, &a, &p("x")).await.unwrap();
    assert!(matches!(
        read_all(&f, &a, &p("x")).await,
        Err(Error::NotFound)
    ));
}

async fn read_is_capped(f: Fixture) {
    let a = ns("alice");
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    f.store
        .put(&f.ws, &a, &p("big"), Bytes::from(data.clone()))
        .await
        .unwrap();
    let (prefix, size) = f
        .store
        .read_prefix(&f.ws, &a, &p("big"), 1000)
        .await
        .unwrap();
    assert_eq!(size, 100_000);
    assert_eq!(&prefix[..], &data[..1000]);
    let blob = f.store.read(&f.ws, &a, &p("big"), 0).await.unwrap();
    let chunks: Vec<Bytes> = blob.stream.try_collect().await.unwrap();
    assert!(chunks.iter().all(|c| c.is_empty()));
}

async fn streamed_multipart_write(f: Fixture) {
    // Larger than one part, so the upload goes multipart on every backend.
    let a = ns("alice");
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let mut w = f.store.writer(&f.ws, &a, &p("huge.bin"));
    for _ in 0..20 {
        w.write(chunk.clone()).await.unwrap();
    }
    assert!(
        matches!(read_all(&f, &a, &p("huge.bin")).await, Err(Error::NotFound)),
        "nothing is visible before finish"
    );
    let written = w.finish().await.unwrap();
    assert_eq!(written.size, 20 * 1024 * 1024);
    let back = read_all(&f, &a, &p("huge.bin")).await.unwrap();
    assert_eq!(back.len(), 20 * 1024 * 1024);
    assert!(back.iter().all(|&b| b == 7));
}

async fn aborted_write_leaves_nothing(f: Fixture) {
    let a = ns("alice");
    let mut w = f.store.writer(&f.ws, &a, &p("gone.bin"));
    w.write(Bytes::from(vec![1u8; 9 * 1024 * 1024]))
        .await
        .unwrap();
    w.abort().await.unwrap();
    assert!(matches!(
        read_all(&f, &a, &p("gone.bin")).await,
        Err(Error::NotFound)
    ));
    let listed: Vec<_> = f.store.list(&f.ws, &a).try_collect().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

async fn list_is_per_namespace_and_decodes_names(f: Fixture) {
    let (a, b) = (ns("alice"), ns("bob"));
    for name in ["x/y.txt", "we#ird %name.txt", "z"] {
        f.store
            .put(&f.ws, &a, &p(name), Bytes::from_static(b"abc"))
            .await
            .unwrap();
    }
    f.store
        .put(&f.ws, &b, &p("secret"), Bytes::from_static(b"s"))
        .await
        .unwrap();
    let mut listed: Vec<(String, u64)> = f
        .store
        .list(&f.ws, &a)
        .map_ok(|(path, size)| (path.as_str().to_owned(), size))
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("we#ird %name.txt".to_owned(), 3),
            ("x/y.txt".to_owned(), 3),
            ("z".to_owned(), 3)
        ]
    );
}

macro_rules! backends {
    ($($backend:ident),*) => {
        $(mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::$backend()).await
                    }
                };
            }
            case!(round_trip_and_overwrite);
            case!(missing_is_not_found_and_delete_is_idempotent);
            case!(read_is_capped);
            case!(streamed_multipart_write);
            case!(aborted_write_leaves_nothing);
            case!(list_is_per_namespace_and_decodes_names);
        })*
    };
}

backends!(memory, local);
#[cfg(feature = "s3-tests")]
backends!(s3);
