//! `warren admin migrate-db`: a deployment on SQLite moved to PostgreSQL keeps every key, file,
//! event, webhook, audit record and snapshot. Needs a PostgreSQL server (feature `pg-tests`).
#![cfg(feature = "pg-tests")]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestServer;
use warren::config::Config;

fn on_sqlite(dir: &std::path::Path) -> Config {
    Config {
        database_url: format!("sqlite://{}", dir.join("warren.db").display()),
        ..support::config(dir)
    }
}

fn ids(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_str().unwrap().to_owned())
        .collect()
}

async fn migrate(sqlite: &str, pg: &str, replace: bool) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(["admin", "migrate-db", "--from", sqlite, "--to", pg]);
    if replace {
        cmd.arg("--replace");
    }
    cmd.output().await.unwrap()
}

#[tokio::test]
async fn a_sqlite_deployment_moves_to_postgres_whole() {
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), on_sqlite).await;
    let a = srv.agent("alice").await;
    let b = srv.agent("bob").await;
    for (c, f) in [(&a, "notes/one.txt"), (&a, "two.txt"), (&b, "bobs.txt")] {
        assert_eq!(c.write(f, f).await.status, StatusCode::OK);
    }
    assert_eq!(a.remove("two.txt").await.status, StatusCode::OK);
    let snap = a.post("/v1/snapshots", json!({ "label": "before" })).await;
    assert_eq!(snap.status, StatusCode::CREATED, "{:?}", snap.json);
    let admin = srv.admin();
    let hook = admin
        .post(
            &format!("/v1/workspaces/{}/webhooks", srv.ws),
            json!({ "url": "https://hooks.example.com/w", "events": ["file.written"] }),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{:?}", hook.json);
    let revoked = srv.mint("old", None).await;
    let keys = admin.get(&format!("/v1/workspaces/{}/keys", srv.ws)).await;
    let old = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = admin
        .delete(&format!("/v1/workspaces/{}/keys/{old}", srv.ws))
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{:?}", gone.json);

    let events_url = format!("/v1/workspaces/{}/events?limit=200", srv.ws);
    let audit_url = format!("/v1/workspaces/{}/audit?limit=200", srv.ws);
    let before = (
        admin.get(&events_url).await.json,
        admin.get(&audit_url).await.json,
        admin
            .get(&format!("/v1/workspaces/{}/keys", srv.ws))
            .await
            .json,
        admin
            .get(&format!("/v1/workspaces/{}/webhooks", srv.ws))
            .await
            .json,
        a.get("/v1/snapshots").await.json,
    );
    let (a_paths, b_paths) = (
        a.paths("workspace/", true).await,
        b.paths("workspace/", true).await,
    );
    assert_eq!(b_paths, ["workspace/bobs.txt"]);
    let dir = srv.stop().await;

    let sqlite = format!("sqlite://{}", dir.path().join("warren.db").display());
    let pg = support::database_url(dir.path());
    let out = migrate(&sqlite, &pg, false).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "api_keys",
        "files",
        "events",
        "webhooks",
        "audit",
        "snapshots",
    ] {
        assert!(stdout.contains(table), "{stdout}");
    }
    // A second copy would mix two deployments: refused, and the target left as it was.
    let again = migrate(&sqlite, &pg, false).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let srv = TestServer::start_with(dir, support::config).await;
    assert!(
        srv.services.default_workspace.as_str().starts_with("ws-"),
        "the default workspace came along"
    );
    // Every key still works, the revoked one still does not.
    for (c, paths) in [(&a, &a_paths), (&b, &b_paths)] {
        let c = srv.client(c.key.as_deref().unwrap(), c.ns.as_deref());
        assert_eq!(&c.paths("workspace/", true).await, paths);
    }
    let a = srv.client(a.key.as_deref().unwrap(), Some("alice"));
    assert_eq!(
        a.read("notes/one.txt").await.json["content"],
        "notes/one.txt"
    );
    assert_eq!(
        srv.client(&revoked, None).get("/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let admin = srv.admin();
    let after = (
        admin.get(&events_url).await.json,
        admin.get(&audit_url).await.json,
        admin
            .get(&format!("/v1/workspaces/{}/keys", srv.ws))
            .await
            .json,
        admin
            .get(&format!("/v1/workspaces/{}/webhooks", srv.ws))
            .await
            .json,
        a.get("/v1/snapshots").await.json,
    );
    assert_eq!(
        ids(&after.0, "events", "id"),
        ids(&before.0, "events", "id")
    );
    assert_eq!(
        after.0["events"], before.0["events"],
        "events byte for byte"
    );
    // The audit trail gained the reads made just now; the old records are all there.
    let old_audit = before.1["records"].as_array().unwrap();
    let new_audit = after.1["records"].as_array().unwrap();
    assert!(old_audit.iter().all(|r| new_audit.contains(r)));
    assert_eq!(
        ids(&after.2, "keys", "key_id"),
        ids(&before.2, "keys", "key_id")
    );
    assert_eq!(after.3, before.3);
    assert_eq!(after.4, before.4);
    let snap_id = snap.json["snapshot_id"].as_str().unwrap();
    let restored = a
        .post(&format!("/v1/snapshots/{snap_id}/restore"), Value::Null)
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.json);
    assert_eq!(a.read("two.txt").await.status, StatusCode::NOT_FOUND);

    // New events continue the log after the copied ones.
    assert_eq!(a.write("new.txt", "n").await.status, StatusCode::OK);
    let latest = admin
        .get(&format!("/v1/workspaces/{}/events?limit=1", srv.ws))
        .await;
    assert_eq!(
        latest.json["events"][0]["data"]["path"],
        "workspace/new.txt"
    );
}
