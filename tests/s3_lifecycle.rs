//! Retention and purge end to end on S3 (LocalStack in scripts/test), with second-scale
//! periods, checked by listing the bucket with aws-sdk-s3: a deleted namespace's files and
//! snapshots leave the bucket and the proof counts them; an expired snapshot leaves it too; a
//! namespace nobody deleted keeps everything else.
#![cfg(feature = "s3-tests")]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestServer;

async fn keys_under(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            keys.push(o.key().unwrap_or_default().to_owned());
        }
    }
    keys.sort();
    keys
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn purge_and_snapshot_expiry_empty_the_bucket() {
    let bucket = std::env::var("WARREN_TEST_S3_BUCKET").expect("WARREN_TEST_S3_BUCKET");
    let root = format!(
        "lifecycle-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let storage = format!("s3://{bucket}/{root}");
    let quick = move |d: &std::path::Path| {
        let mut c = support::config(d);
        c.storage_url = storage.clone();
        c.retention.purge_after = Duration::from_secs(1);
        c.retention.snapshots = Duration::from_secs(6);
        c.retention.sweep_interval = Duration::from_millis(200);
        c
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let s3 = warren_storage::bucket::client().await;
    let gone = srv.agent("gone").await;
    let kept = srv.agent("kept").await;
    for c in [&gone, &kept] {
        c.write("a.txt", "aaaa").await;
        c.upload("d/b.bin", vec![7u8; 300]).await;
        assert_eq!(
            c.post("/v1/snapshots", json!({"label": "s"})).await.status,
            StatusCode::CREATED
        );
    }
    let ws = srv.ws.clone();
    let gone_files = format!("{root}/ws/{ws}/ns/gone/");
    let gone_snaps = format!("{root}/snapshots/ws/{ws}/ns/gone/");
    let kept_snaps = format!("{root}/snapshots/ws/{ws}/ns/kept/");
    assert_eq!(keys_under(&s3, &bucket, &gone_files).await.len(), 2);
    assert_eq!(keys_under(&s3, &bucket, &gone_snaps).await.len(), 1);

    let r = srv
        .admin()
        .delete(&format!("/v1/workspaces/{ws}/namespaces/gone"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let admin = srv.admin();
    let proof_url = format!("/v1/workspaces/{ws}/events?types=namespace.purged");
    wait_for("the purge", async || {
        !admin.get(&proof_url).await.json["events"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        keys_under(&s3, &bucket, &gone_files).await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys_under(&s3, &bucket, &gone_snaps).await,
        Vec::<String>::new()
    );
    let proof: Value = admin.get(&proof_url).await.json["events"][0].clone();
    assert_eq!(proof["namespace"], "gone");
    assert_eq!(proof["data"]["objects"], 3);
    assert_eq!(proof["data"]["snapshots"], 1);
    assert!(proof["data"]["bytes"].as_u64().unwrap() > 304);

    // The other namespace is intact, its snapshot until it expires.
    assert_eq!(kept.read("a.txt").await.json["content"], "aaaa");
    assert_eq!(keys_under(&s3, &bucket, &kept_snaps).await.len(), 1);
    wait_for("the snapshot expiry", async || {
        keys_under(&s3, &bucket, &kept_snaps).await.is_empty()
    })
    .await;
    assert_eq!(kept.get("/v1/snapshots").await.json["snapshots"], json!([]));
    assert_eq!(kept.download("d/b.bin").await.bytes, vec![7u8; 300]);
}

/// `deploy/s3-lifecycle.json`, for operators who manage the bucket themselves, holds exactly
/// the rules Warren installs at start for `s3://<bucket>/warren` with the default snapshot
/// retention: the binary is started on a bucket of its own (it creates it) and the bucket's
/// lifecycle configuration is read back and compared with the file.
#[tokio::test]
async fn the_documented_lifecycle_rules_are_the_installed_ones() {
    let bucket = format!(
        "warren-lifecycle-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let storage = format!("s3://{bucket}/warren");
    let dir = tempfile::tempdir().unwrap();
    // Traversable, so the working copies stay beside the data (not in /var/lib/warren-exec).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data = dir.path().join("data");
    // The binary, started as an operator starts it: the defaults, on this storage.
    let srv = support::ServerProcess::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("WARREN_STORAGE", &storage),
            ("WARREN_ADMIN_KEY", support::ADMIN_KEY),
        ],
        &dir.path().join("warren.log"),
    )
    .await;
    let s3 = warren_storage::bucket::client().await;
    let installed = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut rules: Vec<Value> = installed
        .rules()
        .iter()
        .map(|r| {
            let mut rule = json!({
                "ID": r.id(),
                "Status": r.status().as_str(),
                "Filter": { "Prefix": r.filter().and_then(|f| f.prefix()) },
            });
            if let Some(e) = r.expiration() {
                rule["Expiration"] = json!({ "Days": e.days() });
            }
            if let Some(a) = r.abort_incomplete_multipart_upload() {
                rule["AbortIncompleteMultipartUpload"] =
                    json!({ "DaysAfterInitiation": a.days_after_initiation() });
            }
            rule
        })
        .collect();
    let documented: Value =
        serde_json::from_str(include_str!("../deploy/s3-lifecycle.json")).unwrap();
    let mut documented = documented["Rules"].as_array().unwrap().clone();
    let by_id = |a: &Value, b: &Value| a["ID"].as_str().cmp(&b["ID"].as_str());
    rules.sort_by(by_id);
    documented.sort_by(by_id);
    assert_eq!(rules, documented);
    assert!(srv.stop().await.success());
}
