//! Namespace lifecycle: usage listing, deletion (inaccessible at once, locked keys revoked),
//! restore, and the purge with its proof.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestServer;
use warren::ids::Micros;

fn url(srv: &TestServer, rest: &str) -> String {
    format!("/v1/workspaces/{}/namespaces{rest}", srv.ws)
}

async fn listed(srv: &TestServer, ns: &str) -> Option<Value> {
    let r = srv.admin().get(&url(srv, "")).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == ns)
        .cloned()
}

#[tokio::test]
async fn delete_makes_a_namespace_vanish_and_restore_brings_it_back() {
    let srv = TestServer::start().await;
    let alice = srv.agent("alice").await;
    alice.write("a.txt", "hello").await;
    alice.upload("d/b.bin", vec![1u8; 100]).await;
    let ops = srv.client(&srv.mint("ops", None).await, Some("alice"));

    let usage = listed(&srv, "alice").await.unwrap();
    assert_eq!(usage["state"], "active");
    assert_eq!(
        (usage["file_count"].as_u64(), usage["bytes"].as_u64()),
        (Some(2), Some(105))
    );
    assert!(usage["last_activity_at"].as_str().unwrap().ends_with('Z'));

    // Only admins manage namespaces.
    let r = ops.delete(&url(&srv, "/alice")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = srv.admin().delete(&url(&srv, "/alice")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json, json!({ "namespace": "alice", "deleted": true }));

    // The locked key is revoked; an unlocked key finds nothing there.
    assert_eq!(alice.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
    for r in [
        ops.read("a.txt").await,
        ops.list("workspace/", false).await,
        ops.download("a.txt").await,
        ops.write("new.txt", "x").await,
        ops.upload("new.bin", vec![0]).await,
        ops.remove("a.txt").await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.detail(), "Namespace not found: alice");
    }
    assert_eq!(listed(&srv, "alice").await.unwrap()["state"], "deleted");
    let keys = srv
        .admin()
        .get(&format!("/v1/workspaces/{}/keys", srv.ws))
        .await;
    assert!(
        !keys.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["namespace"] == "alice")
    );
    let feed = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types=namespace.deleted,key.revoked",
            srv.ws
        ))
        .await;
    let kinds: Vec<&str> = feed.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["key.revoked", "namespace.deleted"]);
    assert_eq!(
        feed.json["events"][0]["data"]["reason"],
        "namespace deleted"
    );

    assert_eq!(
        srv.admin().delete(&url(&srv, "/alice")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        srv.admin().delete(&url(&srv, "/never-used")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        srv.admin().delete(&url(&srv, "/a%20b")).await.status,
        StatusCode::BAD_REQUEST
    );

    // Restore: the files are intact; the revoked key stays revoked.
    let r = srv
        .admin()
        .post(&url(&srv, "/alice/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ops.read("a.txt").await.json["content"], "hello");
    assert_eq!(ops.download("d/b.bin").await.bytes, vec![1u8; 100]);
    assert_eq!(alice.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(listed(&srv, "alice").await.unwrap()["state"], "active");
    let again = srv
        .admin()
        .post(&url(&srv, "/alice/restore"), Value::Null)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_purge_removes_files_and_records_a_proof() {
    let srv = TestServer::start().await;
    let alice = srv.agent("alice").await;
    alice.write("a.txt", "hello").await;
    alice.upload("d/b.bin", vec![1u8; 100]).await;
    let snap = alice.post("/v1/snapshots", json!({ "label": "s" })).await;
    assert_eq!(snap.status, StatusCode::CREATED);
    let snap_bytes = snap.json["size_bytes"].as_u64().unwrap();
    let bob = srv.agent("bob").await;
    bob.write("keep.txt", "bob's").await;
    let usage = listed(&srv, "alice").await.unwrap();
    assert_eq!(
        (
            usage["snapshot_count"].as_u64(),
            usage["snapshot_bytes"].as_u64()
        ),
        (Some(1), Some(snap_bytes))
    );
    assert_eq!(
        srv.admin().delete(&url(&srv, "/alice")).await.status,
        StatusCode::OK
    );

    let svc = &srv.services;
    let thirty_days = Duration::from_secs(30 * 86_400);
    let early = svc
        .namespaces
        .purge_expired(&svc.blobs, thirty_days, Micros::now(), false)
        .await
        .unwrap();
    assert!(early.is_empty(), "not due yet");

    let later = Micros(Micros::now().0 + 31 * 86_400_000_000);
    // A dry run reports what is due and changes nothing.
    let would = svc
        .namespaces
        .purge_expired(&svc.blobs, thirty_days, later, true)
        .await
        .unwrap();
    assert_eq!(
        (
            would.len(),
            would[0].objects,
            would[0].bytes,
            would[0].snapshot_objects
        ),
        (1, 3, 105 + snap_bytes, 1)
    );
    assert_eq!(listed(&srv, "alice").await.unwrap()["state"], "deleted");
    let r = srv
        .admin()
        .post(&url(&srv, "/alice/restore"), Value::Null)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a dry run does not begin the purge"
    );
    assert_eq!(
        srv.admin().delete(&url(&srv, "/alice")).await.status,
        StatusCode::OK
    );
    let later = Micros(Micros::now().0 + 31 * 86_400_000_000);
    let purged = svc
        .namespaces
        .purge_expired(&svc.blobs, thirty_days, later, false)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(
        (
            purged[0].objects,
            purged[0].bytes,
            purged[0].snapshot_objects
        ),
        (3, 105 + snap_bytes, 1)
    );

    // The bytes are gone from storage, snapshots included; the other tenant is untouched.
    let left = srv.objects().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("ns/bob/files/keep.txt"));
    assert_eq!(bob.read("keep.txt").await.json["content"], "bob's");

    // The proof.
    let feed = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types=namespace.purged",
            srv.ws
        ))
        .await;
    let proof = &feed.json["events"][0];
    assert_eq!(proof["namespace"], "alice");
    assert_eq!(proof["data"]["objects"], 3);
    assert_eq!(proof["data"]["snapshots"], 1);
    assert_eq!(proof["data"]["bytes"], 105 + snap_bytes);
    assert!(proof["data"]["deleted_at"].as_str().unwrap().ends_with('Z'));

    assert!(listed(&srv, "alice").await.is_none());
    let r = srv
        .admin()
        .post(&url(&srv, "/alice/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The name can be used again, from empty.
    let fresh = srv.agent("alice").await;
    assert_eq!(
        fresh.list("workspace/", true).await.json["entries"],
        json!([])
    );
    assert_eq!(fresh.write("new.txt", "again").await.status, StatusCode::OK);
    assert_eq!(fresh.paths("workspace/", true).await, ["workspace/new.txt"]);
}

#[tokio::test]
async fn the_background_sweep_purges_after_the_configured_period() {
    let quick = |d: &std::path::Path| warren::config::Config {
        retention: warren::services::retention::RetentionSettings {
            purge_after: Duration::from_millis(200),
            sweep_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let alice = srv.agent("alice").await;
    alice.write("a.txt", "hello").await;
    assert_eq!(
        srv.admin().delete(&url(&srv, "/alice")).await.status,
        StatusCode::OK
    );
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if listed(&srv, "alice").await.is_none() {
            assert_eq!(srv.objects().await, Vec::<String>::new());
            return;
        }
    }
    panic!("the namespace was not purged");
}

#[tokio::test]
async fn deletion_survives_a_restart() {
    let srv = TestServer::start().await;
    let ops_key = srv.mint("ops", None).await;
    srv.client(&ops_key, Some("gone")).write("x", "1").await;
    assert_eq!(
        srv.admin().delete(&url(&srv, "/gone")).await.status,
        StatusCode::OK
    );
    let dir = srv.stop().await;
    let srv = TestServer::start_with(dir, support::config).await;
    let r = srv.client(&ops_key, Some("gone")).read("x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Namespace not found: gone");
}

#[tokio::test]
async fn restore_is_refused_once_the_purge_has_begun() {
    let srv = TestServer::start().await;
    let alice = srv.agent("alice").await;
    alice.write("a.txt", "hello").await;
    assert_eq!(
        srv.admin().delete(&url(&srv, "/alice")).await.status,
        StatusCode::OK
    );
    let (ws, ns) = (
        srv.services.default_workspace.clone(),
        warren_storage::Namespace::parse("alice").unwrap(),
    );
    // The purge has marked it and is removing bytes (or crashed doing so).
    // What it counted before removing anything: the one file.
    let counted = warren::db::PurgeInventory {
        objects: 1,
        bytes: 5,
        snapshot_objects: 0,
    };
    let begun = srv.services.meta.begin_purge(&ws, &ns, counted).await;
    assert_eq!(begun.unwrap(), Some(counted));
    let r = srv
        .admin()
        .post(&url(&srv, "/alice/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let ops = srv.client(&srv.mint("ops", None).await, Some("alice"));
    assert_eq!(ops.write("b.txt", "x").await.status, StatusCode::NOT_FOUND);
    // The next sweep finishes it, wherever it stopped.
    let later = Micros(Micros::now().0 + 31 * 86_400_000_000);
    let svc = &srv.services;
    let purged = svc
        .namespaces
        .purge_expired(&svc.blobs, Duration::from_secs(30 * 86_400), later, false)
        .await
        .unwrap();
    assert_eq!((purged.len(), purged[0].objects), (1, 1));
    assert!(listed(&srv, "alice").await.is_none());
}
