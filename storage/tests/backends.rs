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

/// A namespace packed into a snapshot archive and unpacked into a staging area, then moved
/// into place: bytes, modes, links and empty directories survive; staging leaves nothing.
async fn snapshot_archive_round_trip(f: Fixture) {
    use warren_storage::archive::{self, ArchiveEntry, ArchiveKind, UnpackLimits};
    use warren_storage::{SnapshotId, StageStep};
    let a = ns("snap");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    f.store
        .put(&f.ws, &a, &p("d/big.bin"), Bytes::from(big.clone()))
        .await
        .unwrap();
    f.store
        .put(&f.ws, &a, &p("run.sh"), Bytes::from_static(b"#!/bin/sh\n"))
        .await
        .unwrap();
    let entry = |path: &str, kind, mode, target: Option<&str>| ArchiveEntry {
        path: p(path),
        kind,
        mode,
        mtime_secs: 1_700_000_000,
        target: target.map(str::to_owned),
    };
    let entries = vec![
        entry("d", ArchiveKind::Dir, 0o755, None),
        entry("d/big.bin", ArchiveKind::File, 0o644, None),
        entry("empty", ArchiveKind::Dir, 0o755, None),
        entry("link", ArchiveKind::Symlink, 0o777, Some("d/big.bin")),
        entry("run.sh", ArchiveKind::File, 0o755, None),
    ];
    let id = SnapshotId::parse("snap-00000000000000aa").unwrap();
    let sink = f.store.snapshot_writer(&f.ws, &a, &id);
    let written = archive::pack(&f.store, &f.ws, &a, entries.clone(), 6, sink)
        .await
        .unwrap();
    assert!(
        written.size > 0 && written.size < 3_000_000,
        "compressed: {}",
        written.size
    );

    let blob = f.store.read_snapshot(&f.ws, &a, &id).await.unwrap();
    let (store, ws, n) = (f.store.clone(), f.ws.clone(), a.clone());
    let unpacked = archive::unpack(
        blob,
        Some(move |path: &NsPath| store.staged_writer(&ws, &n, "st1", path)),
        UnpackLimits {
            max_entries: 100,
            max_file_bytes: 10_000_000,
            max_expanded_bytes: u64::MAX,
        },
    )
    .await
    .unwrap();
    let got: Vec<ArchiveEntry> = unpacked.iter().map(|u| u.entry.clone()).collect();
    assert_eq!(got, entries);
    let big_written = unpacked[1].written.as_ref().unwrap();
    assert_eq!(big_written.size, big.len() as u64);

    f.store.delete(&f.ws, &a, &p("d/big.bin")).await.unwrap();
    f.store
        .stage_move(&f.ws, &a, "st1", &p("d/big.bin"), StageStep::Publish)
        .await
        .unwrap();
    assert_eq!(read_all(&f, &a, &p("d/big.bin")).await.unwrap(), big);
    f.store
        .stage_move(&f.ws, &a, "st1", &p("run.sh"), StageStep::SetAside)
        .await
        .unwrap();
    assert!(matches!(
        read_all(&f, &a, &p("run.sh")).await,
        Err(Error::NotFound)
    ));
    f.store
        .stage_move(&f.ws, &a, "st1", &p("run.sh"), StageStep::PutBack)
        .await
        .unwrap();
    assert_eq!(
        read_all(&f, &a, &p("run.sh")).await.unwrap(),
        b"#!/bin/sh\n"
    );
    f.store.delete_stage(&f.ws, &a, "st1").await.unwrap();
    let listed: Vec<_> = f.store.list(&f.ws, &a).try_collect().await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "staging is not part of the namespace's files"
    );
    f.store.delete_snapshot(&f.ws, &a, &id).await.unwrap();
    assert!(f.store.read_snapshot(&f.ws, &a, &id).await.is_err());
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
            case!(snapshot_archive_round_trip);
        })*
    };
}

backends!(memory, local);
#[cfg(feature = "s3-tests")]
backends!(s3);

/// Bucket administration against the S3 emulator: a missing bucket is created, the lifecycle
/// rules are installed next to the operator's own, and a second run changes nothing.
#[cfg(feature = "s3-tests")]
mod s3_bucket {
    use std::time::Duration;
    use warren_storage::bucket::{self, MULTIPART_RULE, SNAPSHOT_RULE};

    #[tokio::test]
    async fn creates_the_bucket_and_installs_lifecycle_rules() {
        let client = bucket::client().await;
        let name = format!(
            "warren-setup-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let report = bucket::ensure_bucket(&client, &name, "pre", Duration::from_secs(90 * 86_400))
            .await
            .unwrap();
        assert!(report.created);
        assert_eq!(report.snapshot_expiry_days, 97);
        client.head_bucket().bucket(&name).send().await.unwrap();

        // The operator adds a rule of their own; Warren's setup keeps it.
        let mut rules = client
            .get_bucket_lifecycle_configuration()
            .bucket(&name)
            .send()
            .await
            .unwrap()
            .rules
            .unwrap_or_default();
        rules.push(
            aws_sdk_s3::types::LifecycleRule::builder()
                .id("operator-logs")
                .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
                .filter(
                    aws_sdk_s3::types::LifecycleRuleFilter::builder()
                        .prefix("logs/")
                        .build(),
                )
                .expiration(
                    aws_sdk_s3::types::LifecycleExpiration::builder()
                        .days(3)
                        .build(),
                )
                .build()
                .unwrap(),
        );
        client
            .put_bucket_lifecycle_configuration()
            .bucket(&name)
            .lifecycle_configuration(
                aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let again = bucket::ensure_bucket(&client, &name, "pre", Duration::from_secs(10 * 86_400))
            .await
            .unwrap();
        assert!(!again.created);

        let rules = client
            .get_bucket_lifecycle_configuration()
            .bucket(&name)
            .send()
            .await
            .unwrap()
            .rules
            .unwrap_or_default();
        let ids: Vec<&str> = rules.iter().filter_map(|r| r.id()).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        let snap = rules
            .iter()
            .find(|r| r.id() == Some(SNAPSHOT_RULE))
            .unwrap();
        assert_eq!(
            snap.filter().and_then(|f| f.prefix()),
            Some("pre/snapshots/")
        );
        assert_eq!(snap.expiration().and_then(|e| e.days()), Some(17));
        let mp = rules
            .iter()
            .find(|r| r.id() == Some(MULTIPART_RULE))
            .unwrap();
        assert_eq!(
            mp.abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
            Some(1)
        );
        assert!(rules.iter().any(|r| r.id() == Some("operator-logs")));
    }
}
