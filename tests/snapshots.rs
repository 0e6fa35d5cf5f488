//! Snapshots end to end: create, list, restore, delete, download, import; round trips of modes,
//! symlinks, empty directories, binary files and 1,000 files; isolation between namespaces;
//! expiry; and restores that fail midway (storage faults injected) leaving the namespace as it
//! was.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, TestServer};

async fn snapshot(c: &Client, label: Value) -> Value {
    let r = c.post("/v1/snapshots", json!({ "label": label })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    r.json
}

/// Path, type and (for files) content of every entry, and for files their mode as `stat` sees
/// it inside a sandbox: what a restore must bring back.
async fn state(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    let listing = c.list("", true).await;
    for e in listing.json["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap().to_owned();
        let kind = e["type"].as_str().unwrap_or("?").to_owned();
        let body = if kind == "file" {
            let r = c.download(path.trim_start_matches("workspace/")).await;
            format!("{:x}", md5ish(&r.bytes))
        } else {
            String::new()
        };
        out.push(format!("{path} {kind} {body}"));
    }
    out.sort();
    out
}

fn md5ish(b: &[u8]) -> u64 {
    // A content fingerprint (FNV-1a); collisions are irrelevant at this scale.
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

async fn populate(c: &Client) {
    c.write("notes/a.md", "alpha\n").await;
    c.upload("bin/blob.dat", (0..=255u8).cycle().take(70_000).collect())
        .await;
    c.sh(
        "cd workspace && printf '#!/bin/sh\\necho run\\n' > tool.sh && chmod +x tool.sh \
         && ln -s notes/a.md link && ln -s /etc/passwd abs && mkdir -p empty/inner",
    )
    .await;
}

#[tokio::test]
async fn round_trip_keeps_modes_links_empty_dirs_and_binaries() {
    let srv = TestServer::start().await;
    let a = srv.agent("snap").await;
    populate(&a).await;
    let before = state(&a).await;
    let snap = snapshot(&a, json!("before-change")).await;
    let id = snap["snapshot_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("snap-"));
    assert_eq!(snap["namespace"], "snap");
    assert_eq!(snap["label"], "before-change");
    assert!(snap["size_bytes"].as_u64().unwrap() > 0);
    assert!(snap["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(snap["expires_at"].as_str().unwrap() > snap["created_at"].as_str().unwrap());

    // Change everything, then restore.
    a.sh("cd workspace && rm -rf notes empty && echo new > new.txt && chmod -x tool.sh && rm link")
        .await;
    assert_ne!(state(&a).await, before);
    let r = a
        .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["files_restored"], 3);
    assert_eq!(state(&a).await, before);
    let out = a
        .sh("cd workspace && ./tool.sh && readlink link abs && cat link && ls -d empty/inner && test ! -e new.txt && echo ok")
        .await;
    assert_eq!(
        out,
        "run\nnotes/a.md\n/etc/passwd\nalpha\nempty/inner\nok\n"
    );

    // The snapshot survives its restore; a second one lists first.
    let second = snapshot(&a, Value::Null).await;
    let r = a.get("/v1/snapshots").await;
    let listed: Vec<&str> = r.json["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [second["snapshot_id"].as_str().unwrap(), id.as_str()]
    );
    assert_eq!(r.json["snapshots"][0]["label"], Value::Null);

    // Events.
    let ev = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?namespace=snap&types=snapshot.created,snapshot.restored",
            srv.ws
        ))
        .await;
    let kinds: Vec<&str> = ev.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["snapshot.created", "snapshot.restored", "snapshot.created"]
    );
    assert_eq!(ev.json["events"][1]["data"]["files_restored"], 3);

    // Delete: gone at once, and 404 after.
    let r = a.delete(&format!("/v1/snapshots/{id}")).await;
    assert!(r.status.is_success());
    for (m, p) in [
        ("DELETE", format!("/v1/snapshots/{id}")),
        ("POST", format!("/v1/snapshots/{id}/restore")),
        ("GET", format!("/v1/snapshots/{id}/download")),
    ] {
        let r = a.send(a.request(m.parse().unwrap(), &p)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}");
    }
    assert_eq!(
        a.get("/v1/snapshots/snap-zz/restore").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = a.post("/v1/snapshots/not-an-id/restore", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a
        .post("/v1/snapshots", json!({ "label": "x".repeat(129) }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = a
        .send(a.request(reqwest::Method::POST, "/v1/snapshots"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "a bodyless create is fine: {:?}",
        r.json
    );
}

#[tokio::test]
async fn download_is_a_plain_tar_gz_and_import_moves_a_namespace() {
    let srv = TestServer::start().await;
    let a = srv.agent("src").await;
    populate(&a).await;
    let before = state(&a).await;
    let id = snapshot(&a, json!("export")).await["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = a
        .download_raw(&format!("/v1/snapshots/{id}/download"))
        .await;
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "gzip magic");

    // Restorable with tar alone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.tgz"), &archive).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-xzf", "a.tgz"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let ws = dir.path().join("workspace");
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/a.md")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read(ws.join("bin/blob.dat")).unwrap().len(),
        70_000
    );
    assert_eq!(
        std::fs::read_link(ws.join("link")).unwrap().to_str(),
        Some("notes/a.md")
    );
    assert!(ws.join("empty/inner").is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(ws.join("tool.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(ws.join("notes/a.md"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );

    // Import into another namespace and restore there: the same tree.
    let b = srv.agent("dst").await;
    let r = b
        .send(
            b.request(reqwest::Method::POST, "/v1/snapshots/import?label=moved")
                .body(archive.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(r.json["label"], "moved");
    assert_eq!(r.json["file_count"], 3);
    let imported = r.json["snapshot_id"].as_str().unwrap().to_owned();
    let r = b
        .post(&format!("/v1/snapshots/{imported}/restore"), Value::Null)
        .await;
    assert_eq!(r.json["files_restored"], 3);
    assert_eq!(state(&b).await, before);

    // An archive made by plain tar works too, implied directories included.
    let made = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(made.path().join("workspace/deep/er")).unwrap();
    std::fs::write(made.path().join("workspace/deep/er/x.txt"), "x").unwrap();
    let out = std::process::Command::new("tar")
        .args(["-czf", "-", "workspace/deep/er/x.txt"])
        .current_dir(made.path())
        .output()
        .unwrap();
    let r = b
        .send(
            b.request(reqwest::Method::POST, "/v1/snapshots/import")
                .body(out.stdout),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["snapshot_id"].as_str().unwrap().to_owned();
    b.post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(
        b.paths("", true).await,
        [
            "workspace/deep",
            "workspace/deep/er",
            "workspace/deep/er/x.txt"
        ]
    );

    // Bad archives are refused and leave nothing behind.
    let count = b.get("/v1/snapshots").await.json["snapshots"]
        .as_array()
        .unwrap()
        .len();
    for (what, body) in [
        ("not gzip", b"hello".to_vec()),
        ("truncated", archive[..archive.len() / 2].to_vec()),
        ("escaping entry", tar_with("workspace/../../etc/x", b"x")),
        ("outside workspace/", tar_with("other/x", b"x")),
    ] {
        let r = b
            .send(
                b.request(reqwest::Method::POST, "/v1/snapshots/import")
                    .body(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.json);
    }
    assert_eq!(
        b.get("/v1/snapshots").await.json["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        count
    );
}

/// A tar.gz with one file entry named `name`, written raw so any name can be planted.
fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = Vec::new();
    {
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        let out = child.wait_with_output().unwrap();
        gz.extend(out.stdout);
    }
    gz
}

#[tokio::test]
async fn a_thousand_files_round_trip() {
    let srv = TestServer::start().await;
    let a = srv.agent("many").await;
    a.sh("cd workspace && for d in $(seq 0 9); do mkdir d$d; for f in $(seq 0 99); do echo \"$d/$f\" > d$d/f$f; done; done").await;
    let id = snapshot(&a, Value::Null).await["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.sh("rm -rf workspace/d3 && echo changed > workspace/d0/f0")
        .await;
    let r = a
        .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(r.json["files_restored"], 1000);
    assert_eq!(
        a.sh("cat workspace/d0/f0 workspace/d3/f99; find workspace -type f | wc -l")
            .await,
        "0/0\n3/99\n1000\n"
    );
}

#[tokio::test]
async fn snapshots_of_another_namespace_look_missing() {
    let srv = TestServer::start().await;
    let victim = srv.agent("victim").await;
    victim.write("secret.txt", "VICTIM-SNAPSHOT-CANARY").await;
    let id = snapshot(&victim, Value::Null).await["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attacker = srv.agent("attacker").await;
    assert_eq!(
        attacker.get("/v1/snapshots").await.json["snapshots"],
        json!([])
    );
    for (m, p) in [
        ("POST", format!("/v1/snapshots/{id}/restore")),
        ("DELETE", format!("/v1/snapshots/{id}")),
        ("GET", format!("/v1/snapshots/{id}/download")),
    ] {
        let r = attacker
            .send(attacker.request(m.parse().unwrap(), &p))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}");
        assert!(!String::from_utf8_lossy(&r.bytes).contains("CANARY"));
    }
    // Naming the victim's namespace is refused outright.
    let r = attacker.with_ns(Some("victim")).get("/v1/snapshots").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(attacker.paths("", true).await, Vec::<String>::new());
    assert_eq!(
        victim.get("/v1/snapshots").await.json["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn snapshots_expire_and_their_bytes_go() {
    let quick = |d: &std::path::Path| {
        let mut c = support::config(d);
        c.retention.snapshots = Duration::from_secs(2);
        c.retention.sweep_interval = Duration::from_millis(200);
        c
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let a = srv.agent("brief").await;
    a.write("f.txt", "f").await;
    let snap = snapshot(&a, Value::Null).await;
    assert_eq!(stored_snapshots(&srv).await, 1);
    // A dry run a year on counts it and removes nothing.
    let year = warren::ids::Micros(warren::ids::Micros::now().0 + 365 * 86_400_000_000);
    assert_eq!(
        srv.services
            .snapshots
            .sweep_expired(year, true)
            .await
            .unwrap(),
        1
    );
    assert_eq!(stored_snapshots(&srv).await, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !a.get("/v1/snapshots").await.json["snapshots"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_snapshots(&srv).await, 0);
    let ev = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types=snapshot.deleted",
            srv.ws
        ))
        .await;
    assert_eq!(
        ev.json["events"][0]["data"]["snapshot_id"],
        snap["snapshot_id"]
    );
    assert_eq!(ev.json["events"][0]["data"]["reason"], "expired");
}

/// Snapshot archives in the server's storage.
async fn stored_snapshots(srv: &TestServer) -> usize {
    let keys = srv.objects().await;
    keys.iter().filter(|k| k.starts_with("snapshots/")).count()
}

/// An object store that fails on demand: puts into a staging area after `stage_puts_ok` of
/// them, or renames into the live tree after `publishes_ok` of them.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    armed: AtomicBool,
    stage_puts_ok: AtomicUsize,
    publishes_ok: AtomicUsize,
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "injected fault".into(),
    }
}

impl Faulty {
    fn trip(&self, counter: &AtomicUsize) -> object_store::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(injected());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().contains("/stage/") {
            self.trip(&self.stage_puts_ok)?;
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        if from.as_ref().contains("/stage/") && from.as_ref().contains("/new/") {
            self.trip(&self.publishes_ok)?;
        }
        self.inner.rename(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn a_restore_that_fails_midway_leaves_the_namespace_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config(dir.path());
    // The configured store (a directory, or a bucket), with faults injected in front of it.
    let configured = warren_storage::BlobStore::open(&config.storage_url).unwrap();
    let faulty = Arc::new(Faulty {
        inner: Arc::clone(configured.object_store()),
        armed: AtomicBool::new(false),
        stage_puts_ok: AtomicUsize::new(0),
        publishes_ok: AtomicUsize::new(0),
    });
    let blobs = warren_storage::BlobStore::new(faulty.clone(), configured.layout().root().clone());
    let srv = TestServer::start_with_blobs(dir, config, blobs).await;
    let a = srv.agent("fragile").await;
    for i in 0..20 {
        a.write(&format!("old/f{i}.txt"), &format!("old {i}")).await;
    }
    let id = snapshot(&a, Value::Null).await["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The namespace moves on: some files changed, some removed, some added.
    a.sh("cd workspace && for i in 0 1 2 3 4; do echo changed > old/f$i.txt; done && rm old/f19.txt && echo new > new.txt").await;
    let before = state(&a).await;

    // A fault while unpacking into the staging area, then one while moving files into place.
    for (stage_ok, publish_ok) in [(7, usize::MAX), (usize::MAX, 11)] {
        faulty.stage_puts_ok.store(stage_ok, Ordering::SeqCst);
        faulty.publishes_ok.store(publish_ok, Ordering::SeqCst);
        faulty.armed.store(true, Ordering::SeqCst);
        let r = a
            .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
            .await;
        faulty.armed.store(false, Ordering::SeqCst);
        assert!(r.status.is_server_error(), "{:?}", r.json);
        assert_eq!(
            state(&a).await,
            before,
            "after a fault ({stage_ok}, {publish_ok})"
        );
        assert_eq!(
            a.sh("cat workspace/old/f0.txt workspace/new.txt").await,
            "changed\nnew\n"
        );
    }
    // Nothing of the failed attempts lingers in storage.
    assert_eq!(
        srv.objects()
            .await
            .iter()
            .filter(|k| k.starts_with(&format!("ws/{}/ns/fragile/stage/", srv.ws)))
            .count(),
        0
    );
    // And with the store healthy again the restore goes through.
    let r = a
        .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(r.json["files_restored"], 20);
    assert_eq!(a.sh("cat workspace/old/f0.txt workspace/old/f19.txt; test ! -e workspace/new.txt && echo gone").await, "old 0old 19gone\n");
}
