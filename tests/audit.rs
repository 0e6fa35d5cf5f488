//! The audit trail and retention: every file operation, reads and failures included, is
//! attributed to its key; admins query and export it; expired records are swept.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::TestServer;
use warren::ids::Micros;

async fn audit(srv: &TestServer, query: &str) -> (StatusCode, Vec<Value>, Option<String>) {
    let r = srv
        .admin()
        .get(&format!("/v1/workspaces/{}/audit?{query}", srv.ws))
        .await;
    let records = r.json["records"].as_array().cloned().unwrap_or_default();
    (
        r.status,
        records,
        r.json["next_cursor"].as_str().map(str::to_owned),
    )
}

fn summary(r: &Value) -> (String, String, u64) {
    (
        r["operation"].as_str().unwrap().to_owned(),
        r["path"].as_str().unwrap_or("-").to_owned(),
        r["status"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn every_file_operation_is_attributed_to_its_key() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let alice_id = a.get("/v1/me").await.json["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.write("notes.txt", "hi").await;
    a.upload("img.bin", vec![1, 2, 3]).await;
    a.read("workspace/notes.txt").await;
    a.download("img.bin").await;
    a.list("workspace/", true).await;
    a.read("missing.txt").await;
    a.write("../escape", "x").await;
    a.with_ns(Some("bob")).read("x").await;
    a.remove("img.bin").await;

    let (status, records, _) = audit(&srv, &format!("key_id={alice_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let mut got: Vec<_> = records.iter().map(summary).collect();
    got.reverse(); // oldest first, to read like the script above
    let expect = [
        ("write", "notes.txt", 200),
        ("upload", "img.bin", 200),
        ("read", "workspace/notes.txt", 200),
        ("download", "img.bin", 200),
        ("list", "workspace/", 200),
        ("read", "missing.txt", 404),
        ("write", "../escape", 400),
        ("read", "-", 403),
        ("delete", "img.bin", 200),
    ];
    let expect: Vec<_> = expect
        .iter()
        .map(|(o, p, s)| (o.to_string(), p.to_string(), *s))
        .collect();
    assert_eq!(got, expect);
    assert!(records.iter().all(|r| r["key_id"] == alice_id.as_str()));
    assert_eq!(
        records[1]["namespace"], "bob",
        "the namespace it tried is recorded"
    );
    assert!(
        records
            .iter()
            .all(|r| r["created_at"].as_str().unwrap().ends_with('Z'))
    );

    // Reads stay out of the events feed (and so out of webhooks).
    let feed = srv
        .admin()
        .get(&format!("/v1/workspaces/{}/events?namespace=alice", srv.ws))
        .await;
    let types: Vec<&str> = feed.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["file.deleted", "file.written", "file.written"]);
}

#[tokio::test]
async fn admins_filter_page_and_export() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let b = srv.agent("bob").await;
    let start = Micros::now().to_rfc3339();
    for i in 0..5 {
        a.write(&format!("a{i}"), "x").await;
        b.read(&format!("b{i}")).await;
    }
    let middle = Micros::now().to_rfc3339();
    a.read("a0").await;

    let (_, alice, _) = audit(&srv, "namespace=alice").await;
    assert_eq!(alice.len(), 6);
    let (_, reads, _) = audit(&srv, "namespace=bob&operation=read").await;
    assert_eq!(reads.len(), 5);
    assert!(reads.iter().all(|r| r["status"] == 404));
    let (_, late, _) = audit(&srv, &format!("from={middle}")).await;
    assert_eq!(
        late.iter().map(summary).collect::<Vec<_>>(),
        [("read".into(), "a0".into(), 200)]
    );
    let (_, early, _) = audit(&srv, &format!("from={start}&to={middle}")).await;
    assert_eq!(early.len(), 10);

    // Pages are disjoint and cover everything.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page, next) = audit(&srv, &format!("limit=3{cursor}")).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page);
        match next {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 11);

    // Export: JSON lines, oldest first, same filters.
    let r = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/audit/export?namespace=alice",
            srv.ws
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(r.bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["path"], "a0");
    assert_eq!(lines[5]["operation"], "read");

    // Only admins.
    for key in [
        srv.mint("ops", None).await,
        srv.mint("x", Some("alice")).await,
    ] {
        let c = srv.client(&key, None);
        for path in ["audit", "audit/export"] {
            let r = c.get(&format!("/v1/workspaces/{}/{path}", srv.ws)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    for q in ["from=soon", "limit=0", "cursor=x"] {
        assert!(audit(&srv, q).await.0.is_client_error(), "{q}");
    }
}

#[tokio::test]
async fn the_sweep_removes_only_expired_records() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    a.write("x", "1").await;
    a.read("x").await;
    srv.services.audit.flush().await;
    let meta = &*srv.services.meta;
    let ws = &srv.services.default_workspace;

    let kept = warren::services::retention::sweep(
        meta,
        Duration::from_secs(90 * 86400),
        Micros::now(),
        false,
    )
    .await
    .unwrap();
    assert_eq!((kept.events, kept.audit), (0, 0));

    let later = Micros(Micros::now().0 + 91 * 86_400_000_000);
    let counted =
        warren::services::retention::sweep(meta, Duration::from_secs(90 * 86400), later, true)
            .await
            .unwrap();
    assert_eq!(
        (counted.audit, counted.events),
        (2, 3),
        "the dry run counts"
    );
    assert_eq!(
        meta.recent_events(ws, 10).await.unwrap().len(),
        3,
        "and removes nothing"
    );
    let swept =
        warren::services::retention::sweep(meta, Duration::from_secs(90 * 86400), later, false)
            .await
            .unwrap();
    assert_eq!(swept.audit, 2);
    assert_eq!(swept.events, 3, "key.created ×2 and file.written");
    assert!(meta.recent_events(ws, 10).await.unwrap().is_empty());
    assert_eq!(audit(&srv, "").await.1.len(), 0);
}

#[tokio::test]
async fn the_background_sweep_enforces_a_short_retention() {
    let short = |d: &std::path::Path| warren::config::Config {
        retention: warren::services::retention::RetentionSettings {
            events: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), short).await;
    let a = srv.agent("alice").await;
    a.write("x", "1").await;
    assert!(
        !srv.services
            .meta
            .recent_events(&srv.services.default_workspace, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = srv
            .services
            .meta
            .recent_events(&srv.services.default_workspace, 10)
            .await
            .unwrap();
        if left.is_empty() {
            return;
        }
    }
    panic!("events older than the retention period were not swept");
}

#[tokio::test]
async fn orphan_objects_are_swept_after_the_grace_period() {
    use warren::services::retention::sweep_orphans;
    use warren_storage::{Namespace, NsPath};
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    a.write("real.txt", "indexed").await;
    // Bytes no row points to: what a crash between storing and committing leaves.
    let (ws, blobs, meta) = (
        srv.services.default_workspace.clone(),
        &srv.services.blobs,
        &*srv.services.meta,
    );
    let (alice, ghost) = (
        Namespace::parse("alice").unwrap(),
        Namespace::parse("ghost").unwrap(),
    );
    let orphan = NsPath::parse("orphan.bin").unwrap();
    blobs
        .put(&ws, &alice, &orphan, vec![0u8; 100].into())
        .await
        .unwrap();
    blobs
        .put(&ws, &ghost, &orphan, vec![0u8; 50].into())
        .await
        .unwrap();
    let grace = Duration::from_secs(3600);

    let young = sweep_orphans(meta, blobs, grace, Micros::now(), false)
        .await
        .unwrap();
    assert_eq!(
        (young.scanned, young.orphans),
        (3, 0),
        "younger than the grace period"
    );

    let later = Micros(Micros::now().0 + 2 * 3_600_000_000);
    let dry = sweep_orphans(meta, blobs, grace, later, true)
        .await
        .unwrap();
    assert_eq!((dry.orphans, dry.bytes, dry.deleted), (2, 150, false));
    assert!(blobs.read_prefix(&ws, &alice, &orphan, 10).await.is_ok());

    let done = sweep_orphans(meta, blobs, grace, later, false)
        .await
        .unwrap();
    assert_eq!((done.orphans, done.bytes, done.deleted), (2, 150, true));
    for ns in [&alice, &ghost] {
        assert!(matches!(
            blobs.read_prefix(&ws, ns, &orphan, 10).await,
            Err(warren_storage::Error::NotFound)
        ));
    }
    assert_eq!(a.read("real.txt").await.json["content"], "indexed");
}

/// Each runtime route names its operation where it is declared; a call on every one of them
/// (right or wrong) is recorded under that name, never under a catch-all.
#[tokio::test]
async fn every_runtime_route_records_its_own_operation() {
    let srv = TestServer::start().await;
    let a = srv.agent("ops").await;
    a.write("f.txt", "x").await;
    a.upload("g.bin", vec![1]).await;
    a.download("g.bin").await;
    a.read("workspace/f.txt").await;
    a.list("workspace/", false).await;
    a.exec("true").await;
    a.post_raw("/exec", r#"{"command": "true"}"#).await;
    let snap = a.post("/v1/snapshots", serde_json::json!({})).await;
    let id = snap.json["snapshot_id"]
        .as_str()
        .unwrap_or("snap-0000000000000000");
    a.get("/v1/snapshots").await;
    a.get(&format!("/v1/snapshots/{id}/download")).await;
    a.post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    a.post_raw("/v1/snapshots/import", "not an archive").await;
    a.delete(&format!("/v1/snapshots/{id}")).await;
    a.remove("f.txt").await;

    let (_, records, _) = audit(&srv, "namespace=ops&limit=100").await;
    let mut ops: Vec<String> = records.iter().map(|r| summary(r).0).collect();
    ops.reverse();
    assert_eq!(
        ops,
        [
            "write",
            "upload",
            "download",
            "read",
            "list",
            "exec",
            "exec",
            "snapshot.create",
            "snapshot.list",
            "snapshot.download",
            "snapshot.restore",
            "snapshot.import",
            "snapshot.delete",
            "delete",
        ]
    );
}
