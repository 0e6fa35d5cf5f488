//! The findings of the attack pass (security-review.md) that are not about archives,
//! connections or webhooks, each tried again through the public API: tenant data on the host,
//! a namespace name reused after purge, a replaced admin key, an exec whose client hangs up,
//! names too long to store, commands past one argument's length, unbounded filters, and leaks.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestServer;

/// Runs `argv` as `nobody` (another local user); returns whether it succeeded and its stdout.
fn as_nobody(argv: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(argv)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn another_local_user_can_read_nothing_of_the_tenants() {
    let srv = TestServer::start().await;
    let a = srv.agent("private").await;
    a.write("medical/diagnosis.txt", "TENANT-SECRET").await;
    a.sh("echo exec-written > workspace/from-exec.txt").await;
    let hook = srv
        .admin()
        .post(
            &format!("/v1/workspaces/{}/webhooks", srv.ws),
            json!({ "url": "http://127.0.0.1:9/hook" }),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED);
    let data = srv.dir.path();
    let file = support::walk(&data.join("objects"))
        .into_iter()
        .find(|p| p.ends_with("medical/diagnosis.txt"))
        .expect("the tenant's object");
    for target in [
        file.as_path(),
        &data.join("warren.db"),
        &data.join("warren.db-wal"),
    ] {
        assert!(target.exists(), "{}", target.display());
        let (ok, out) = as_nobody(&["cat", target.to_str().unwrap()]);
        assert!(!ok, "nobody read {}: {out:.80}", target.display());
    }
    for dir in [data.to_path_buf(), data.join("objects"), data.join("exec")] {
        let (ok, out) = as_nobody(&["ls", dir.to_str().unwrap()]);
        assert!(!ok, "nobody listed {}: {out}", dir.display());
    }
    let (ok, _) = as_nobody(&[
        "sh",
        "-c",
        &format!("grep -r TENANT-SECRET {}", data.display()),
    ]);
    assert!(!ok, "nobody found the tenant's file by searching");
    // The sandbox uid still reaches its working copy: exec works.
    assert_eq!(
        a.sh("cat workspace/medical/diagnosis.txt").await,
        "TENANT-SECRET"
    );
}

#[tokio::test]
async fn a_namespace_name_reused_after_purge_inherits_nothing() {
    let quick = |d: &Path| warren::config::Config {
        retention: warren::services::retention::RetentionSettings {
            purge_after: Duration::from_millis(200),
            sweep_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let admin = srv.admin();
    let hooks = format!("/v1/workspaces/{}/webhooks", srv.ws);
    let bound = admin
        .post(
            &hooks,
            json!({ "url": "http://127.0.0.1:9/x", "namespace": "cust-42" }),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED);
    let unbound = admin
        .post(&hooks, json!({ "url": "http://127.0.0.1:9/y" }))
        .await;
    assert_eq!(unbound.status, StatusCode::CREATED);

    let old = srv.agent("cust-42").await;
    old.write("medical/diagnosis.txt", "old").await;
    old.sh("echo OLD-TENANT-STDOUT-SECRET").await;
    old.post("/v1/snapshots", json!({ "label": null })).await;
    let r = admin
        .delete(&format!("/v1/workspaces/{}/namespaces/cust-42", srv.ws))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let proofs = format!("/v1/workspaces/{}/events?types=namespace.purged", srv.ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin.get(&proofs).await.json["events"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "no purge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let new = srv.agent("cust-42").await;
    new.write("new-tenant-private.txt", "new").await;
    let feed = new
        .get(&format!("/v1/workspaces/{}/events?limit=1000", srv.ws))
        .await;
    assert_eq!(feed.status, StatusCode::OK);
    let seen: Vec<&str> = feed.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["file.written"],
        "the new tenant sees {:?}",
        feed.json
    );
    assert!(!feed.bytes.windows(6).any(|w| w == b"OLD-TE"));
    // The subscription bound to the name is gone; the workspace-wide one stays.
    let listed = admin.get(&hooks).await;
    let ids: Vec<&str> = listed.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [unbound.json["webhook_id"].as_str().unwrap()]);
    // The old tenant's audit records are gone too; the proof stays visible to admins.
    let audit = admin
        .get(&format!(
            "/v1/workspaces/{}/audit?namespace=cust-42&limit=1000",
            srv.ws
        ))
        .await;
    let paths: Vec<&Value> = audit.json["records"]
        .as_array()
        .or_else(|| audit.json["entries"].as_array())
        .expect("audit records")
        .iter()
        .map(|r| &r["path"])
        .collect();
    assert!(
        !paths
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("diagnosis"))),
        "{paths:?}"
    );
    assert_eq!(
        admin.get(&proofs).await.json["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_replaced_admin_key_stops_working() {
    let with_key = |key: &'static str| {
        move |d: &Path| warren::config::Config {
            admin_key: Some(key.to_owned()),
            ..support::config(d)
        }
    };
    const K1: &str = "trove-sk-first-admin-key-0123456789";
    const K2: &str = "trove-sk-second-admin-key-0123456789";
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), with_key(K1)).await;
    assert_eq!(
        srv.client(K1, None).get("/v1/me").await.status,
        StatusCode::OK
    );
    let dir = srv.stop().await;
    let srv = TestServer::start_with(dir, with_key(K2)).await;
    assert_eq!(
        srv.client(K2, None).get("/v1/me").await.status,
        StatusCode::OK
    );
    assert_eq!(
        srv.client(K1, None).get("/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let keys = srv
        .client(K2, None)
        .get(&format!("/v1/workspaces/{}/keys", srv.ws))
        .await;
    let admins = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "admin")
        .count();
    assert_eq!(admins, 1, "{:?}", keys.json);
    let revoked = srv
        .client(K2, None)
        .get(&format!(
            "/v1/workspaces/{}/events?types=key.revoked",
            srv.ws
        ))
        .await;
    assert_eq!(
        revoked.json["events"][0]["data"]["reason"],
        "replaced by the configured admin key"
    );
    // Starting again with the same key retires nothing.
    let dir = srv.stop().await;
    let srv = TestServer::start_with(dir, with_key(K2)).await;
    assert_eq!(
        srv.client(K2, None).get("/v1/me").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_exec_whose_client_hangs_up_still_runs_syncs_and_is_audited() {
    let srv = TestServer::start().await;
    let a = srv.agent("prober").await;
    let rb = a
        .request(reqwest::Method::POST, "/v1/exec")
        .json(&json!({ "command": "echo started > workspace/marker.txt; sleep 2" }))
        .timeout(Duration::from_millis(800));
    assert!(rb.send().await.is_err(), "the client gave up first");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if a.read("marker.txt").await.status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec's work was dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.read("marker.txt").await.json["content"], "started\n");
    let admin = srv.admin();
    let events = admin
        .get(&format!(
            "/v1/workspaces/{}/events?types=exec.completed",
            srv.ws
        ))
        .await;
    assert_eq!(events.json["events"].as_array().unwrap().len(), 1);
    let mut record = Value::Null;
    while record.is_null() {
        let audit = admin
            .get(&format!("/v1/workspaces/{}/audit?operation=exec", srv.ws))
            .await;
        let records = audit.json["records"]
            .as_array()
            .or_else(|| audit.json["entries"].as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(r) = records.first() {
            record = r.clone();
        } else {
            assert!(tokio::time::Instant::now() < deadline, "no audit record");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(record["status"], 499, "{record:?}");
    assert_eq!(record["namespace"], "prober");
}

#[tokio::test]
async fn names_too_long_to_store_are_refused_not_500() {
    let srv = TestServer::start().await;
    let a = srv.agent("names").await;
    let long = "n".repeat(254);
    let percent = "%".repeat(85);
    let hashes = "#".repeat(100);
    let accents = "é".repeat(127);
    for name in [&long, &percent, &hashes, &accents] {
        let r = a.write(name, "x").await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{:.20}…: {:?}",
            name,
            r.json
        );
        assert!(r.detail().contains("longer than"), "{}", r.detail());
    }
    // Whole paths count as stored too: 300 '%' are 900 bytes in a key.
    let deep = vec!["%".repeat(60); 5].join("/");
    assert_eq!(a.write(&deep, "x").await.status, StatusCode::BAD_REQUEST);
    // The longest that fit still work.
    assert_eq!(a.write(&"n".repeat(250), "ok").await.status, StatusCode::OK);
    assert_eq!(a.write(&"%".repeat(83), "ok").await.status, StatusCode::OK);

    // An exec that makes such a file keeps everything else, and says what it could not keep.
    let r = a
        .exec(&format!(
            "cd workspace && echo kept > kept.txt && echo lost > '{}'",
            "#".repeat(200)
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let not_synced = r.json["not_synced"].as_array().expect("not_synced");
    assert_eq!(not_synced.len(), 1, "{not_synced:?}");
    assert_eq!(a.read("kept.txt").await.json["content"], "kept\n");
}

#[tokio::test]
async fn long_commands_run() {
    let srv = TestServer::start().await;
    let a = srv.agent("long").await;
    for kib in [120usize, 128, 200, 1000] {
        // A script of `kib` KiB: a comment to pad it, then one command.
        let pad = "#".repeat(kib * 1024 - 40);
        let command = format!("{pad}\necho ran-{kib}");
        let r = a.exec(&command).await;
        assert_eq!(r.status, StatusCode::OK, "{kib} KiB: {:?}", r.json);
        assert_eq!(r.json["stdout"], format!("ran-{kib}\n"));
        assert_eq!(r.json["exit_code"], 0);
    }
    // Exit codes, stdin and the workspace behave as for short commands.
    let pad = "#".repeat(200 * 1024);
    let r = a
        .post(
            "/v1/exec",
            json!({ "command": format!("{pad}\nread x; echo \"$x\" > workspace/in.txt; exit 3"),
                    "stdin": "from-stdin\n" }),
        )
        .await;
    assert_eq!(r.json["exit_code"], 3, "{:?}", r.json);
    assert_eq!(a.read("in.txt").await.json["content"], "from-stdin\n");
    // Over the cap is still a 422.
    let r = a.exec(&"#".repeat(1024 * 1024 + 1)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn event_type_filters_are_bounded() {
    let srv = TestServer::start().await;
    let types: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let r = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types={}",
            srv.ws,
            types.join(",")
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json);
    let r = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types={}",
            srv.ws,
            types[..64].join(",")
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_deep_restore_leaves_no_staging_directories() {
    let srv = TestServer::start().await;
    let a = srv.agent("deep").await;
    let deep = vec!["d"; 200].join("/");
    a.write(&format!("{deep}/leaf.txt"), "leaf").await;
    let snap = a.post("/v1/snapshots", json!({ "label": null })).await;
    let id = snap.json["snapshot_id"].as_str().unwrap();
    let r = a
        .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    // The cleanup after a successful restore runs in the background.
    let ns_dir = std::fs::read_dir(srv.dir.path().join("objects/ws"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("ns/deep");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ns_dir.join("stage").exists()
        && std::fs::read_dir(ns_dir.join("stage"))
            .unwrap()
            .next()
            .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "staging left: {:?}",
            std::fs::read_dir(ns_dir.join("stage")).unwrap().count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stored_link_too_long_for_the_host_does_not_break_exec() {
    // Only an import from before targets were capped could have stored one; plant it in the
    // index directly.
    let srv = TestServer::start().await;
    let a = srv.agent("oldlink").await;
    a.write("keep.txt", "kept").await;
    let ws = warren_storage::WorkspaceId::parse(&srv.ws).unwrap();
    let ns = warren_storage::Namespace::parse("oldlink").unwrap();
    let op = warren::db::TreeOp::Symlink {
        path: warren_storage::NsPath::parse("long-link").unwrap(),
        target: "t".repeat(5000),
        mtime: warren::ids::Micros::now(),
    };
    let lock = srv.services.coord.lock_namespace(&ws, &ns).await.unwrap();
    srv.services
        .meta
        .commit_tree_ops(&lock, &[op], &[])
        .await
        .unwrap();
    drop(lock);
    assert_eq!(a.sh("cat workspace/keep.txt").await, "kept");
}
