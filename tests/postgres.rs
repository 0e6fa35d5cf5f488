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

/// A loopback TCP relay in front of PostgreSQL that can be cut (every connection through it
/// dropped, new ones refused) and healed: a database lost and back, for one server only.
struct Gate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl Gate {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            open: Default::default(),
            cut: Default::default(),
        };
        gate.open.store(true, Ordering::SeqCst);
        let (open, cut) = (gate.open.clone(), gate.cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let token = cut.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        gate
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        std::mem::take(&mut *token).cancel();
    }

    fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A database lost while serving: calls that need it answer 503 with a detail and
/// `Retry-After` within seconds (no hang, no 500), and the server recovers once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::database_url(dir.path());
    let (prefix, rest) = database.split_once('@').unwrap();
    let (host_port, name) = rest.split_once('/').unwrap();
    let gate = Gate::start(host_port.parse().unwrap()).await;
    let through_gate = format!("{prefix}@{}/{name}", gate.addr);
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

    gate.heal();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = srv.admin().get(&keys).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
        assert!(std::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
