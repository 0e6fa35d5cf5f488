//! Servers on one PostgreSQL database (feature `pg-tests`): what only several of them at once
//! can show.
#![cfg(feature = "pg-tests")]

mod support;

use reqwest::StatusCode;
use support::{ADMIN_KEY, TestServer};

/// Three servers starting at the same moment on an empty database all come up, with exactly
/// one default workspace and one admin key between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_starting_together_on_a_new_database_all_come_up() {
    let first = tempfile::tempdir().unwrap();
    let database = support::database_url(first.path());
    let dirs = vec![
        first,
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let servers = futures::future::join_all(dirs.into_iter().map(|dir| {
        let database = database.clone();
        TestServer::start_with(dir, move |d| warren::config::Config {
            database_url: database.clone(),
            ..support::config(d)
        })
    }))
    .await;
    let ws = &servers[0].ws;
    assert!(servers.iter().all(|s| &s.ws == ws), "one default workspace");
    for srv in &servers {
        let me = srv.client(ADMIN_KEY, None).get("/v1/me").await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.json);
    }
    let keys = servers[2]
        .admin()
        .get(&format!("/v1/workspaces/{ws}/keys"))
        .await;
    let admins: Vec<_> = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["scope"] == "admin")
        .collect();
    assert_eq!(admins.len(), 1, "{:?}", keys.json);
}

/// A database lost while serving: calls that need it answer 503 with a detail and
/// `Retry-After` within seconds (no hang, no 500), and the server recovers once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::database_url(dir.path());
    let gate = support::Gate::start(support::Gate::upstream_of(&database)).await;
    let through_gate = gate.route(&database);
    let srv = TestServer::start_with(dir, move |d| warren::config::Config {
        database_url: through_gate.clone(),
        ..support::config(d)
    })
    .await;
    let keys = format!("/v1/workspaces/{}/keys", srv.ws);
    assert_eq!(srv.admin().get(&keys).await.status, StatusCode::OK);

    gate.cut();
    let started = std::time::Instant::now();
    let r = srv.admin().get(&keys).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
    assert!(!r.detail().is_empty());
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "answered in {:?}",
        started.elapsed()
    );
    // Not ready, saying which store is gone (and nothing of where it is); still alive.
    let ready = srv.anonymous().get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.json
    );
    assert_eq!(ready.json["checks"]["database"], "unreachable");
    assert_eq!(ready.json["checks"]["storage"], "ok");
    assert!(
        !ready.json.to_string().contains("127.0.0.1"),
        "{:?}",
        ready.json
    );
    assert_eq!(srv.anonymous().get("/healthz").await.status, StatusCode::OK);

    gate.heal();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = srv.admin().get(&keys).await;
        if r.status == StatusCode::OK {
            let ready = srv.anonymous().get("/readyz").await;
            assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json);
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
        assert!(std::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
