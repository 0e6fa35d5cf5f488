//! Cluster benchmark (PostgreSQL only: `WARREN_BENCH_DATABASE`), two nodes, every figure
//! against a baseline measured in the same run, interleaved in rounds:
//!
//! - how long a revocation takes when the key's exec runs on another node, against the same
//!   revocation on the exec's own node (the DELETE returns only once the exec is dead wherever
//!   it runs, so its latency is the revoke-to-remote-kill latency);
//! - an exec on node B right after a one-file write on node A, in a 10,000-file namespace,
//!   against a warm exec (nothing changed) on one node;
//! - file write and read p50 through a proxy alternating requests between the two nodes,
//!   against the same proxy in front of one node (and one node direct, for the proxy's cost).
//!
//! Run with `scripts/bench`.

mod common;

use std::time::{Duration, Instant};

const ROUNDS: usize = 20;

async fn revoke_latency(
    http: &reqwest::Client,
    runner: &common::Bench,
    revoker: &common::Bench,
    round: usize,
) -> Duration {
    let ns = format!("rv{round}");
    let key = runner.key(&ns).await;
    let exec = {
        let (http, base, key, ns) = (http.clone(), runner.base.clone(), key.clone(), ns.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/exec"))
                .bearer_auth(key)
                .header("X-Namespace", ns)
                .header("content-type", "application/json")
                .body(r#"{"command": "sleep 30"}"#)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while runner.services.running.count() == 0 {
        assert!(
            !exec.is_finished(),
            "the exec ended at once: {:?}",
            exec.await
        );
        assert!(Instant::now() < deadline, "the exec never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ws = &revoker.services.default_workspace;
    let id = revoker
        .services
        .meta
        .list_keys(ws)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == ns)
        .unwrap()
        .id;
    let started = Instant::now();
    let r = http
        .delete(format!("{}/v1/workspaces/{ws}/keys/{id}", revoker.base))
        .bearer_auth(revoker.config.admin_key.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        runner.services.running.count(),
        0,
        "the exec outlived the DELETE"
    );
    assert_eq!(exec.await.unwrap(), reqwest::StatusCode::UNAUTHORIZED);
    took
}

/// Runs `command` in `ns` on `node` with `key`; returns how long the call took.
async fn exec(
    http: &reqwest::Client,
    node: &common::Bench,
    key: &str,
    ns: &str,
    command: &str,
) -> Duration {
    let started = Instant::now();
    let r = http
        .post(format!("{}/v1/exec", node.base))
        .bearer_auth(key)
        .header("X-Namespace", ns)
        .json(&serde_json::json!({ "command": command }))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        status.is_success() && body["exit_code"] == 0,
        "{command}: {status} {body}"
    );
    took
}

async fn write(http: &reqwest::Client, base: &str, key: &str, ns: &str, path: &str) -> Duration {
    let started = Instant::now();
    let r = http
        .put(format!("{base}/files/{path}"))
        .bearer_auth(key)
        .header("X-Namespace", ns)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "write {path}: {}", r.status());
    started.elapsed()
}

async fn read(http: &reqwest::Client, base: &str, key: &str, ns: &str, path: &str) -> Duration {
    let started = Instant::now();
    let r = http
        .get(format!("{base}/files/{path}"))
        .bearer_auth(key)
        .header("X-Namespace", ns)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "read {path}: {}", r.status());
    assert_eq!(r.bytes().await.unwrap().len(), 4096);
    started.elapsed()
}

/// An exec on B after a one-file write on A, in a namespace of `FILES` files, against a warm
/// exec with nothing changed (and, between them, the same write and exec on one node).
async fn freshness(http: &reqwest::Client, a: &common::Bench, b: &common::Bench) {
    const FILES: usize = 10_000;
    const ROUNDS: usize = 10;
    let ns = "fresh";
    let key = a.key(ns).await;
    let made = Instant::now();
    exec(
        http,
        a,
        &key,
        ns,
        &format!("cd workspace && mkdir -p d{{0..99}} && for i in $(seq 0 {}); do echo $i > d$((i % 100))/f$i; done", FILES - 1),
    )
    .await;
    println!(
        "made a {FILES}-file namespace in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    // Both nodes' working copies hold the namespace before measuring.
    exec(http, b, &key, ns, "true").await;
    exec(http, a, &key, ns, "true").await;
    let (mut warm, mut local, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        warm.push(exec(http, a, &key, ns, "true").await);
        write(http, &a.base, &key, ns, &format!("workspace/w{round}.txt")).await;
        local.push(exec(http, a, &key, ns, "true").await);
        write(http, &a.base, &key, ns, &format!("workspace/v{round}.txt")).await;
        remote.push(exec(http, b, &key, ns, "true").await);
    }
    for v in [&mut warm, &mut local, &mut remote] {
        v.sort();
    }
    println!("exec in a {FILES}-file namespace, {ROUNDS} rounds:");
    println!(
        "  warm, nothing changed:            p50 {}",
        ms(pick(&warm, 0.5))
    );
    println!(
        "  after a write on the same node:   p50 {}",
        ms(pick(&local, 0.5))
    );
    println!(
        "  after a write on the other node:  p50 {}",
        ms(pick(&remote, 0.5))
    );
    println!(
        "  other node / warm p50: {:.2}x (goal <= 1.5x); same node / warm: {:.2}x",
        pick(&remote, 0.5).as_secs_f64() / pick(&warm, 0.5).as_secs_f64(),
        pick(&local, 0.5).as_secs_f64() / pick(&warm, 0.5).as_secs_f64()
    );
}

/// A reverse proxy on a loopback port sending each request to the next of `backends` in turn,
/// bodies streamed both ways.
async fn alternating_proxy(backends: Vec<String>) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (backends, next, http) = (backends.clone(), next.clone(), http.clone());
        async move {
            let base = &backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
            let (parts, body) = req.into_parts();
            let url = format!(
                "{base}{}",
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let mut up = http.request(parts.method, url);
            for (name, value) in &parts.headers {
                if name != axum::http::header::HOST {
                    up = up.header(name, value);
                }
            }
            let r = up
                .body(reqwest::Body::wrap_stream(body.into_data_stream()))
                .send()
                .await
                .unwrap();
            let mut out = axum::response::Response::builder().status(r.status());
            for (name, value) in r.headers() {
                out = out.header(name, value);
            }
            out.body(axum::body::Body::from_stream(r.bytes_stream()))
                .unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// File write and read p50 through a proxy alternating between both nodes, against the same
/// proxy in front of node A alone, and node A direct.
async fn through_proxy(http: &reqwest::Client, a: &common::Bench, b: &common::Bench) {
    const ROUNDS: usize = 300;
    let ns = "proxied";
    let key = a.key(ns).await;
    let direct = a.base.clone();
    let one = alternating_proxy(vec![a.base.clone()]).await;
    let two = alternating_proxy(vec![a.base.clone(), b.base.clone()]).await;
    let targets = [
        ("node A direct", &direct),
        ("proxy, one node", &one),
        ("proxy, two nodes", &two),
    ];
    let mut writes = vec![Vec::new(); 3];
    let mut reads = vec![Vec::new(); 3];
    for (i, (_, base)) in targets.iter().enumerate() {
        write(http, base, &key, ns, &format!("warm{i}")).await;
    }
    for round in 0..ROUNDS {
        for (i, (_, base)) in targets.iter().enumerate() {
            let path = format!("f{i}-{round}");
            writes[i].push(write(http, base, &key, ns, &path).await);
            reads[i].push(read(http, base, &key, ns, &path).await);
        }
    }
    println!("4 KiB files, one client, {ROUNDS} rounds:");
    for (i, (name, _)) in targets.iter().enumerate() {
        writes[i].sort();
        reads[i].sort();
        println!(
            "  {name:<18} write p50 {} p99 {}  read p50 {} p99 {}",
            ms(pick(&writes[i], 0.5)),
            ms(pick(&writes[i], 0.99)),
            ms(pick(&reads[i], 0.5)),
            ms(pick(&reads[i], 0.99))
        );
    }
    let ratio =
        |v: &[Vec<Duration>]| pick(&v[2], 0.5).as_secs_f64() / pick(&v[1], 0.5).as_secs_f64();
    println!(
        "  two nodes / one node through the proxy, p50: write {:.2}x, read {:.2}x",
        ratio(&writes),
        ratio(&reads)
    );
}

fn pick(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let Ok(database) = std::env::var("WARREN_BENCH_DATABASE") else {
        println!("cluster benchmark: needs WARREN_BENCH_DATABASE (a PostgreSQL database)");
        return;
    };
    assert!(database.starts_with("postgres"), "a PostgreSQL database");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&dir_a, &dir_b] {
        // The sandbox uid must be able to reach working copies below the data directory.
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
    }
    let a = common::start(dir_a.path()).await;
    let b = common::start_with(warren::config::Config {
        storage_url: a.config.storage_url.clone(),
        ..common::config(dir_b.path())
    })
    .await;
    let http = reqwest::Client::new();
    // Warm both nodes (connections, the sandbox) before measuring.
    revoke_latency(&http, &a, &a, 0).await;
    revoke_latency(&http, &a, &b, 1).await;

    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Interleaved, so a noisy moment hits both alike.
        local.push(revoke_latency(&http, &a, &a, 2 + 2 * round).await);
        remote.push(revoke_latency(&http, &a, &b, 3 + 2 * round).await);
    }
    local.sort();
    remote.sort();
    println!("Warren cluster benchmark: two nodes on one PostgreSQL database, {ROUNDS} rounds");
    println!(
        "revoke, exec on the same node:    p50 {} p99 {}",
        ms(pick(&local, 0.5)),
        ms(pick(&local, 0.99))
    );
    println!(
        "revoke, exec on the other node:   p50 {} p99 {}",
        ms(pick(&remote, 0.5)),
        ms(pick(&remote, 0.99))
    );
    println!(
        "remote / local p50: {:.2}x; remote p50 goal <= 100 ms",
        pick(&remote, 0.5).as_secs_f64() / pick(&local, 0.5).as_secs_f64()
    );
    freshness(&http, &a, &b).await;
    through_proxy(&http, &a, &b).await;
}
