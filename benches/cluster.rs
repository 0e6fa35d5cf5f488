//! Cluster benchmark (PostgreSQL only: `WARREN_BENCH_DATABASE`): how long a revocation takes
//! when the key's exec runs on another node, against the same revocation on the exec's own
//! node, measured in the same run. The DELETE returns only once the exec is dead wherever it
//! runs, so its latency is the revoke-to-remote-kill latency. Run with `scripts/bench`.

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
}
