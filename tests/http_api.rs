//! The HTTP API end to end, against a real server on a loopback port: keys and scopes, the file
//! endpoints' behaviour (spec §4.3–4.8), the events each change records, and shutdown/restart.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_KEY, TestServer};
use warren::coord::Coordinator;
use warren::db::FileWrite;
use warren::ids::Micros;
use warren_storage::{Namespace, NsPath};

#[tokio::test]
async fn me_describes_each_kind_of_key() {
    let srv = TestServer::start().await;
    let admin = srv.admin().get("/v1/me").await;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.json["scope"], "admin");
    assert_eq!(admin.json["namespace"], Value::Null);
    assert_eq!(admin.json["workspace_id"], srv.ws.as_str());
    assert!(srv.ws.starts_with("ws-") && srv.ws.len() == 19);
    assert_eq!(admin.json["capabilities"], json!(["exec.stdin"]));

    let scoped = srv.agent("alice").await.get("/v1/me").await;
    assert_eq!(scoped.json["scope"], "workspace");
    assert_eq!(scoped.json["namespace"], "alice");
    assert_eq!(scoped.json["key_name"], "alice");
    assert!(scoped.json["key_id"].as_str().unwrap().starts_with("key-"));

    for bad in [None, Some("trove-sk-nope"), Some("")] {
        let c = match bad {
            Some(k) => srv.client(k, None),
            None => srv.anonymous(),
        };
        let r = c.get("/v1/me").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert!(!r.detail().is_empty());
    }
}

#[tokio::test]
async fn key_management_follows_the_spec() {
    let srv = TestServer::start().await;
    let admin = srv.admin();
    let keys = format!("/v1/workspaces/{}/keys", srv.ws);

    let created = admin
        .post(
            &keys,
            json!({ "name": "alice", "namespace": "alice", "admin": false }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let api_key = created.json["api_key"].as_str().unwrap().to_owned();
    assert!(api_key.starts_with("trove-sk-"));
    assert_eq!(created.json["prefix"], &api_key[..12]);
    assert_eq!(created.json["scope"], "workspace");
    assert_eq!(created.json["namespace"], "alice");
    assert!(created.json["created_at"].as_str().unwrap().ends_with('Z'));
    let key_id = created.json["key_id"].as_str().unwrap().to_owned();

    // Used keys show when; the listing never shows secrets.
    srv.client(&api_key, Some("alice"))
        .list("workspace/", false)
        .await;
    let listed = admin.get(&keys).await;
    assert_eq!(listed.status, StatusCode::OK);
    let alice = listed.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert!(alice["last_used_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !listed
            .bytes
            .windows(api_key.len())
            .any(|w| w == api_key.as_bytes())
    );

    // Non-admin keys cannot manage keys.
    let ops_key = srv.mint("ops", None).await;
    for key in [&api_key, &ops_key] {
        let c = srv.client(key, None);
        let r = c.post(&keys, json!({ "name": "x" })).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.detail(), "Workspace keys cannot manage keys.");
        assert_eq!(c.get(&keys).await.status, StatusCode::FORBIDDEN);
        assert_eq!(
            c.delete(&format!("{keys}/{key_id}")).await.status,
            StatusCode::FORBIDDEN
        );
    }

    // Bad requests are 4xx with a detail, never 5xx.
    let admin_with_ns = admin
        .post(
            &keys,
            json!({ "name": "x", "namespace": "a", "admin": true }),
        )
        .await;
    assert_eq!(admin_with_ns.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        admin.post(&keys, json!({ "namespace": "a" })).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        admin.post(&keys, json!({ "name": 5 })).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        admin.post_raw(&keys, "{not json").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin
            .post(&keys, json!({ "name": "x", "namespace": "../etc" }))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin.post(&keys, json!({ "name": "" })).await.status,
        StatusCode::BAD_REQUEST
    );

    // Another workspace's URL is refused.
    let other = admin.get("/v1/workspaces/ws-0000000000000000/keys").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);

    // Revocation: immediate 401, gone from the list, unknown ids 404.
    let revoked = admin.delete(&format!("{keys}/{key_id}")).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json, json!({ "key_id": key_id, "revoked": true }));
    let after = srv.client(&api_key, Some("alice")).get("/v1/me").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let listed = admin.get(&keys).await;
    assert!(
        !listed.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == key_id.as_str())
    );
    assert_eq!(
        admin.delete(&format!("{keys}/{key_id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.delete(&format!("{keys}/key-nope")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn rotation_replaces_the_secret_and_keeps_the_identity() {
    let srv = TestServer::start().await;
    let old = srv.mint("bob", Some("bob")).await;
    let me = srv.client(&old, None).get("/v1/me").await;
    let key_id = me.json["key_id"].as_str().unwrap().to_owned();
    let rotated = srv
        .admin()
        .post(
            &format!("/v1/workspaces/{}/keys/{key_id}/rotate", srv.ws),
            Value::Null,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.json);
    let new = rotated.json["api_key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated.json["key_id"], key_id.as_str());
    assert_eq!(rotated.json["namespace"], "bob");
    assert_eq!(
        srv.client(&old, None).get("/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = srv.client(new, None).get("/v1/me").await;
    assert_eq!(me.json["key_id"], key_id.as_str());
}

#[tokio::test]
async fn revocation_beats_the_key_cache_under_concurrent_use() {
    // Hammer a key from several tasks while revoking it: once revoke returns, no request that
    // starts afterwards may succeed, whatever the cache held.
    let srv = TestServer::start().await;
    let key = srv.mint("victim", Some("v")).await;
    let c = srv.client(&key, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, stop) = (c.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.get("/v1/me").await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let key_id = c.get("/v1/me").await.json["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = srv
        .admin()
        .delete(&format!("/v1/workspaces/{}/keys/{key_id}", srv.ws))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..50 {
        assert_eq!(c.get("/v1/me").await.status, StatusCode::UNAUTHORIZED);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn write_read_list_delete_round_trip() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;

    // A new namespace lists as empty, not 404.
    let empty = a.list("workspace/", false).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json, json!({ "entries": [], "truncated": false }));

    let w = a.write("notes/today.md", "# Notes\n").await;
    assert_eq!(w.status, StatusCode::OK);
    assert_eq!(
        w.json,
        json!({ "path": "workspace/notes/today.md", "size_bytes": 8 })
    );
    let utf8 = a.write("é.txt", "héllo").await;
    assert_eq!(utf8.json["size_bytes"], 6, "size is the UTF-8 byte length");

    let read = a.read("workspace/notes/today.md").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json["path"], "workspace/notes/today.md");
    assert_eq!(read.json["content"], "# Notes\n");
    assert_eq!(read.json["encoding"], "utf-8");
    assert_eq!(read.json["size_bytes"], 8);
    assert_eq!(read.json["truncated"], false);
    let modified = read.json["modified_at"].as_str().unwrap();
    assert_eq!(
        modified.len(),
        "2026-05-06T20:00:00.000000Z".len(),
        "{modified}"
    );
    // Unprefixed read-side paths are namespace-relative too.
    assert_eq!(a.read("notes/today.md").await.json["content"], "# Notes\n");

    let root = a.list("workspace/", false).await;
    assert_eq!(
        root.json["entries"][0],
        json!({ "name": "notes", "path": "workspace/notes", "is_dir": true,
                "size_bytes": null, "modified_at": root.json["entries"][0]["modified_at"] })
    );
    assert_eq!(root.json["entries"][1]["name"], "é.txt");
    assert_eq!(root.json["entries"][1]["size_bytes"], 6);

    // Overwrite.
    a.write("notes/today.md", "v2").await;
    assert_eq!(
        a.read("workspace/notes/today.md").await.json["content"],
        "v2"
    );

    let d = a.remove("notes").await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.json, json!({ "deleted": "workspace/notes" }));
    assert_eq!(a.paths("workspace/", true).await, ["workspace/é.txt"]);
    let gone = a.read("workspace/notes/today.md").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.detail(), "Path not found: workspace/notes/today.md");
    let again = a.remove("notes").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.detail(), "Path not found: workspace/notes");
    assert_eq!(
        a.remove("").await.status,
        StatusCode::BAD_REQUEST,
        "never delete the root"
    );
}

#[tokio::test]
async fn upload_and_download_are_binary_safe() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let up = a.upload("img/a%20b.png", bytes.clone()).await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(
        up.json,
        json!({ "path": "workspace/img/a b.png", "size_bytes": 300_000 })
    );

    let down = a.download("img/a%20b.png").await;
    assert_eq!(down.status, StatusCode::OK);
    assert_eq!(down.bytes, bytes);
    assert_eq!(down.headers["x-trove-size"], "300000");
    assert!(down.headers.get("x-trove-truncated").is_none());

    // Binary means "not UTF-8"; NUL bytes alone are still text.
    a.upload("nul.txt", b"a\0b".to_vec()).await;
    let nul = a.read("nul.txt").await;
    assert_eq!(
        (nul.json["encoding"].as_str(), nul.json["content"].as_str()),
        (Some("utf-8"), Some("a\0b"))
    );

    let info = a.read("workspace/img/a b.png").await;
    assert_eq!(info.json["encoding"], "binary");
    assert_eq!(info.json["content"], Value::Null);
    assert_eq!(info.json["size_bytes"], 300_000);

    // Any content type, or none, is accepted on upload.
    let typed = a
        .send(
            a.request(Method::PUT, "/files/t.bin")
                .header("content-type", "image/png")
                .body(vec![1u8, 2, 3]),
        )
        .await;
    assert_eq!(typed.status, StatusCode::OK);

    let missing = a.download("nope.bin").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.detail(), "Path not found: workspace/nope.bin");
    assert_eq!(a.download("img").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.download("").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn text_preview_is_cut_at_one_megabyte_on_a_character_boundary() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    // 1 MiB - 1 bytes of ASCII followed by a 3-byte character: the cap falls inside it.
    let mut text = "x".repeat(1024 * 1024 - 1);
    text.push('€');
    text.push_str("tail");
    let w = a.write("big.txt", &text).await;
    assert_eq!(w.json["size_bytes"], text.len());
    let r = a.read("big.txt").await;
    assert_eq!(r.json["encoding"], "utf-8");
    assert_eq!(r.json["truncated"], true);
    assert_eq!(r.json["size_bytes"], text.len());
    assert_eq!(r.json["content"].as_str().unwrap().len(), 1024 * 1024 - 1);
}

#[tokio::test]
async fn uploads_over_100_mb_are_refused_and_leave_nothing() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    a.write("keep.bin", "original").await;
    let over = 100 * 1024 * 1024 + 1;

    // Declared up front.
    let r = a.upload("keep.bin", vec![0u8; over]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.detail().contains("limit"));

    // Streamed without a length: counted as it arrives.
    let chunks = (0..101).map(|_| Ok::<_, std::io::Error>(vec![1u8; 1024 * 1024]));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = a
        .send(a.request(Method::PUT, "/files/streamed.bin").body(body))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    // The JSON write endpoint applies the same cap to its content.
    let r = a.write("keep.bin", &"z".repeat(over)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(a.read("keep.bin").await.json["content"], "original");
    assert_eq!(a.paths("workspace/", true).await, ["workspace/keep.bin"]);
    let objects = srv.objects().await;
    assert_eq!(
        objects.len(),
        1,
        "no staged or partial objects remain: {objects:?}"
    );
}

#[tokio::test]
async fn downloads_over_100_mb_are_cut_and_flagged() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    // Such a file can only come from exec or a restore; plant it below the API.
    let (ws, ns, path) = (
        srv.services.default_workspace.clone(),
        Namespace::parse("alice").unwrap(),
        NsPath::parse("huge.bin").unwrap(),
    );
    let size = 100 * 1024 * 1024 + 10;
    let written = srv
        .services
        .blobs
        .put(&ws, &ns, &path, vec![9u8; size].into())
        .await
        .unwrap();
    let ev = warren::db::NewEvent {
        id: warren::ids::EventId::random(),
        kind: "file.written",
        workspace: ws.clone(),
        namespace: Some(ns.clone()),
        key_id: None,
        data: "{}".into(),
    };
    let file = FileWrite {
        path,
        size: written.size,
        mode: 0o644,
        mtime: Micros::now(),
        sha256: written.sha256,
    };
    let lock = srv
        .services
        .coord
        .lock_write(&ws, &ns, &file.path)
        .await
        .unwrap();
    srv.services
        .meta
        .commit_write(&lock, &file, &ev)
        .await
        .unwrap();
    drop(lock);

    let r = a.download("huge.bin").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes.len(), 100 * 1024 * 1024);
    assert_eq!(r.headers["x-trove-size"], size.to_string().as_str());
    assert_eq!(r.headers["x-trove-truncated"], "1");
}

#[tokio::test]
async fn listing_order_and_caps() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    for f in [
        "b.txt",
        "a.txt",
        "zdir/y.txt",
        "zdir/sub/x.txt",
        "adir/k.txt",
        ".trove/init.sh",
    ] {
        assert_eq!(a.write(f, "x").await.status, StatusCode::OK);
    }
    assert_eq!(
        a.paths("workspace/", false).await,
        [
            "workspace/.trove",
            "workspace/adir",
            "workspace/zdir",
            "workspace/a.txt",
            "workspace/b.txt"
        ]
    );
    assert_eq!(
        a.paths("workspace/", true).await,
        [
            "workspace/.trove",
            "workspace/.trove/init.sh",
            "workspace/adir",
            "workspace/adir/k.txt",
            "workspace/zdir",
            "workspace/zdir/sub",
            "workspace/zdir/sub/x.txt",
            "workspace/zdir/y.txt",
            "workspace/a.txt",
            "workspace/b.txt",
        ]
    );
    assert_eq!(
        a.paths("workspace/zdir", false).await,
        ["workspace/zdir/sub", "workspace/zdir/y.txt"]
    );
    assert_eq!(
        a.paths("zdir/", false).await,
        ["workspace/zdir/sub", "workspace/zdir/y.txt"]
    );
    assert_eq!(
        a.list("workspace/a.txt", false).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        a.list("workspace/missing", false).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = a.get("/v1/files?path=workspace/&recursive=maybe").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Depth cap: 20 levels are listed, the 21st is not, and the listing says so.
    let deep: Vec<String> = (1..=22).map(|i| format!("d{i}")).collect();
    a.write(&format!("{}/leaf", deep.join("/")), "x").await;
    let r = a.list("workspace/d1", true).await;
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(r.json["truncated"], true);
    let max_depth = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().matches('/').count())
        .max()
        .unwrap();
    assert_eq!(
        max_depth, 21,
        "workspace/d1/… counts d1's children as level 1"
    );
}

#[tokio::test]
async fn recursive_listing_stops_at_1000_entries() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let mut tasks = Vec::new();
    for i in 0..1001 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(
                a.write(&format!("many/f{i:04}"), "x").await.status,
                StatusCode::OK
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = a.list("workspace/", true).await;
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(r.json["truncated"], true);
    let r = a.list("workspace/many", false).await;
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(r.json["truncated"], true);
    let r = a.list("workspace/", false).await;
    assert_eq!(r.json["truncated"], false);
}

#[tokio::test]
async fn file_and_directory_conflicts_are_409() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    a.write("f", "x").await;
    a.write("d/x", "x").await;
    let under_file = a.write("f/g", "x").await;
    assert_eq!(under_file.status, StatusCode::CONFLICT);
    assert_eq!(under_file.detail(), "workspace/f is not a directory");
    let over_dir = a.upload("d", b"x".to_vec()).await;
    assert_eq!(over_dir.status, StatusCode::CONFLICT);
    assert_eq!(a.read("d/x").await.json["content"], "x");
}

#[tokio::test]
async fn concurrent_writes_lose_nothing() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            // Twenty distinct files, and twenty writers racing on one.
            let r = if i % 2 == 0 {
                a.write(&format!("own/{i}.txt"), &i.to_string()).await
            } else {
                a.write("shared.txt", &"y".repeat(i)).await
            };
            assert_eq!(r.status, StatusCode::OK);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in (0..40).step_by(2) {
        assert_eq!(
            a.read(&format!("own/{i}.txt")).await.json["content"],
            i.to_string()
        );
    }
    // The last writer wins whole: the index and the bytes agree.
    let shared = a.read("shared.txt").await;
    let content = shared.json["content"].as_str().unwrap();
    assert_eq!(shared.json["size_bytes"], content.len());
    assert!(content.chars().all(|c| c == 'y'));
    assert_eq!(a.download("shared.txt").await.bytes.len(), content.len());
}

#[tokio::test]
async fn every_change_is_recorded_with_its_key() {
    let srv = TestServer::start().await;
    let key = srv.mint("alice", Some("alice")).await;
    let a = srv.client(&key, Some("alice"));
    let alice_id = a.get("/v1/me").await.json["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.write("a.txt", "hello").await;
    a.upload("b.bin", vec![0u8; 10]).await;
    a.remove("a.txt").await;
    a.read("b.bin").await; // reads record no event
    let events = srv
        .services
        .meta
        .recent_events(&srv.services.default_workspace, 10)
        .await
        .unwrap();
    let summary: Vec<(String, Option<String>, Option<String>, Value)> = events
        .iter()
        .take(3)
        .map(|e| {
            (
                e.kind.clone(),
                e.namespace.clone(),
                e.key_id.clone(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect();
    let alice = Some("alice".to_owned());
    let by = Some(alice_id.clone());
    assert_eq!(
        summary,
        [
            (
                "file.deleted".into(),
                alice.clone(),
                by.clone(),
                json!({ "path": "workspace/a.txt" })
            ),
            (
                "file.written".into(),
                alice.clone(),
                by.clone(),
                json!({ "path": "workspace/b.bin", "size_bytes": 10, "source": "upload" })
            ),
            (
                "file.written".into(),
                alice,
                by,
                json!({ "path": "workspace/a.txt", "size_bytes": 5, "source": "write" })
            ),
        ]
    );
    let created = events.iter().find(|e| e.kind == "key.created").unwrap();
    let data: Value = serde_json::from_str(&created.data).unwrap();
    assert_eq!(data["key_id"], alice_id.as_str());
    assert_eq!(data["name"], "alice");
    assert_eq!(data["namespace"], "alice");
    let admin_id = srv.admin().get("/v1/me").await.json["key_id"].clone();
    assert_eq!(created.key_id.as_deref(), admin_id.as_str());
    for e in &events {
        assert!(e.id.as_str().starts_with("evt-"));
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_without_redirects() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    for path in ["/nope", "/v1/files/", "/v1/me/", "/write/"] {
        let r = a.get(path).await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::METHOD_NOT_ALLOWED,
            "{path}"
        );
        assert!(!r.detail().is_empty(), "{path}");
    }
    // Not offered: open signup. (Device login is: tests/device_login.rs.)
    let r = srv.anonymous().post("/v1/workspaces", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.get("/write").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.detail(), "Method Not Allowed");
    assert_eq!(srv.anonymous().get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_4xx() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    for (body, status) in [
        ("{", StatusCode::BAD_REQUEST),
        ("[]", StatusCode::UNPROCESSABLE_ENTITY),
        ("{\"path\": \"x\"}", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "{\"path\": 1, \"content\": \"x\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("", StatusCode::BAD_REQUEST),
    ] {
        let r = a.post_raw("/write", body).await;
        assert_eq!(r.status, status, "{body}");
        assert!(!r.detail().is_empty());
        let r = a.post_raw("/delete", body).await;
        assert!(r.status.is_client_error(), "{body}");
    }
    let r = a.get("/v1/files/content").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_uploads() {
    let mut srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = {
        let a = a.clone();
        tokio::spawn(async move {
            a.send(a.request(Method::PUT, "/files/slow.bin").body(body))
                .await
        })
    };
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    srv.signal_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["size_bytes"], 2000);
    let dir = srv.join().await;

    // After a restart on the same data the upload is there, whole.
    let srv = TestServer::start_with(dir, support::config).await;
    let a = srv.client(a.key.as_deref().unwrap(), Some("alice"));
    let back = a.download("slow.bin").await;
    assert_eq!(back.bytes.len(), 2000);
    assert_eq!(back.bytes[1500], 2);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn restart_keeps_keys_files_and_the_workspace() {
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), support::config).await;
    let ws = srv.ws.clone();
    let key = srv.mint("alice", Some("alice")).await;
    srv.client(&key, None).write("kept.txt", "still here").await;
    let dir = srv.stop().await;

    let srv = TestServer::start_with(dir, support::config).await;
    assert_eq!(srv.ws, ws);
    assert_eq!(
        srv.client(&key, None).read("kept.txt").await.json["content"],
        "still here"
    );
    assert_eq!(
        srv.client(ADMIN_KEY, None).get("/v1/me").await.status,
        StatusCode::OK
    );
    let admins = srv
        .admin()
        .get(&format!("/v1/workspaces/{ws}/keys"))
        .await
        .json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["scope"] == "admin")
        .count();
    assert_eq!(admins, 1, "restarting must not mint more admin keys");
}

#[tokio::test]
async fn first_start_without_admin_key_generates_one_and_saves_it_privately() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let no_key = |d: &std::path::Path| warren::config::Config {
        admin_key: None,
        ..support::config(d)
    };
    let srv = TestServer::start_with(dir, no_key).await;
    let file = srv.dir.path().join("admin.key");
    let key = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let me = srv.client(&key, None).get("/v1/me").await;
    assert_eq!(me.json["scope"], "admin");
    assert_eq!(
        srv.client(ADMIN_KEY, None).get("/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let dir = srv.stop().await;
    // A second start reuses the saved key rather than minting another.
    let srv = TestServer::start_with(dir, no_key).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    assert_eq!(
        srv.client(&key, None).get("/v1/me").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_reindex_rebuilds_the_index_from_storage() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    for f in ["keep.txt", "gone.txt", "dir/x.txt"] {
        a.write(f, f).await;
    }
    // A restore job writes straight into storage, behind Warren's back.
    let (ws, ns) = (
        srv.services.default_workspace.clone(),
        Namespace::parse("alice").unwrap(),
    );
    let p = |s: &str| NsPath::parse(s).unwrap();
    let blobs = &srv.services.blobs;
    blobs
        .put(&ws, &ns, &p("restored/r.bin"), vec![7u8; 1000].into())
        .await
        .unwrap();
    blobs.delete(&ws, &ns, &p("gone.txt")).await.unwrap();

    // Awaited, not run blocking: the server shares this test's one-thread runtime, and a
    // commit of its own in flight must be able to finish while the tool waits for the lock.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["admin", "reindex", "--namespace", "alice", "--data-dir"])
        .arg(srv.dir.path())
        .arg("--database")
        .arg(support::database_url(srv.dir.path()))
        .arg("--storage")
        .arg(support::storage_url(srv.dir.path()))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 files, 1017 bytes, 0 skipped"),
        "{stdout}"
    );

    assert_eq!(
        a.paths("workspace/", true).await,
        [
            "workspace/dir",
            "workspace/dir/x.txt",
            "workspace/restored",
            "workspace/restored/r.bin",
            "workspace/keep.txt"
        ]
    );
    assert_eq!(a.download("restored/r.bin").await.bytes, vec![7u8; 1000]);
    assert_eq!(a.read("gone.txt").await.status, StatusCode::NOT_FOUND);
    let ev = &srv.services.meta.recent_events(&ws, 1).await.unwrap()[0];
    assert_eq!(ev.kind, "namespace.reindexed");
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(
        data,
        json!({ "namespace": "alice", "files": 3, "bytes": 1017, "skipped": 0 })
    );

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["admin", "reindex", "--namespace", "../x", "--data-dir"])
        .arg(srv.dir.path())
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn reindex_skips_a_file_that_is_also_a_directory() {
    // Only flat key spaces (S3, memory) can hold both `a` and `a/b`.
    let meta = warren::db::open("sqlite::memory:").await.unwrap();
    let ws = warren_storage::WorkspaceId::parse("ws-00000000000000aa").unwrap();
    meta.ensure_default_workspace(&ws, "t", Micros::now())
        .await
        .unwrap();
    let blobs = warren_storage::BlobStore::open("memory://").unwrap();
    let ns = Namespace::parse("n").unwrap();
    for f in ["a", "a/b", "c"] {
        blobs
            .put(&ws, &ns, &NsPath::parse(f).unwrap(), "x".into())
            .await
            .unwrap();
    }
    let lock = warren::coord::InProcess::new()
        .lock_namespace(&ws, &ns)
        .await
        .unwrap();
    let report = warren::services::reindex::reindex(meta.as_ref(), &blobs, &lock)
        .await
        .unwrap();
    assert_eq!((report.files, report.bytes), (2, 2));
    assert_eq!(
        report.skipped,
        ["workspace/a: also a directory of other files"]
    );
    let names: Vec<String> = meta
        .list_children(&ws, &ns, &NsPath::root(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.as_str().to_owned())
        .collect();
    assert_eq!(names, ["a", "c"]);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let srv = TestServer::start().await;
    let c = srv.admin();
    let given = c
        .request(Method::GET, "/v1/me")
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "client-chosen-42");

    // Errors and unknown routes carry one too, each its own.
    let a = c.request(Method::GET, "/nowhere").send().await.unwrap();
    let b = srv
        .anonymous()
        .request(Method::GET, "/v1/me")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::NOT_FOUND);
    assert_eq!(b.status(), StatusCode::UNAUTHORIZED);
    let (a, b) = (&a.headers()["x-request-id"], &b.headers()["x-request-id"]);
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
}

/// The edge layers turn a handler's panic into the JSON 500 every other error has, and the
/// server keeps serving.
#[tokio::test]
async fn a_panicking_handler_is_a_json_500() {
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let app = warren::http::edge(
        axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/fine", axum::routing::get(|| async { "fine" })),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let r = reqwest::get(format!("{base}/boom")).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "detail": "Internal server error" }));
    let r = reqwest::get(format!("{base}/fine")).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "fine");
}
