//! File API benchmark: 4 KiB writes, reads and deletes over HTTP against a real server on a loopback
//! port, beside the same operations done directly through `object_store` on the same backend in
//! the same run. Prints p50/p99 latency and throughput at 1 and 16 concurrent clients, and the
//! HTTP/direct ratio. On PostgreSQL (`WARREN_BENCH_DATABASE`) it also counts the statements
//! each operation sends (`pg_stat_statements`, BEGIN and COMMIT included): its round trips.
//! Run with `scripts/bench`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

const FILE_BYTES: usize = 4096;
const OPS_PER_CLIENT: usize = 400;
const WARMUP: usize = 200;

#[derive(Clone, Copy)]
enum Op {
    Write,
    Read,
    /// Deletes what the round's writes made.
    Delete,
    /// `GET /healthz`: the cost of an HTTP round trip alone, for context.
    Floor,
}

struct Stats {
    p50: Duration,
    p99: Duration,
    ops_per_sec: f64,
}

fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        ops_per_sec: lat.len() as f64 / wall.as_secs_f64(),
    }
}

/// Runs `clients` concurrent loops of `OPS_PER_CLIENT` operations; `f(client, i)` does one.
async fn measure<F, Fut>(clients: usize, f: F) -> Stats
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(OPS_PER_CLIENT);
            for i in 0..OPS_PER_CLIENT {
                let t = Instant::now();
                f(c, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    stats(all, start.elapsed())
}

async fn http(
    base: Arc<String>,
    key: Arc<String>,
    http: reqwest::Client,
    op: Op,
    clients: usize,
    round: usize,
) -> Stats {
    let payload = Bytes::from(vec![b'x'; FILE_BYTES]);
    measure(clients, move |c, i| {
        let (base, key, http, payload) = (base.clone(), key.clone(), http.clone(), payload.clone());
        async move {
            let url = format!("{base}/files/r{round}/c{c}/f{i}");
            let req = match op {
                Op::Write => http.put(&url).body(payload),
                Op::Read => http.get(&url),
                Op::Delete => http
                    .post(format!("{base}/delete"))
                    .json(&serde_json::json!({ "path": format!("r{round}/c{c}/f{i}") })),
                Op::Floor => http.get(format!("{base}/healthz")),
            };
            let resp = req.bearer_auth(key.as_str()).send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let body = resp.bytes().await.unwrap();
            if let Op::Read = op {
                assert_eq!(body.len(), FILE_BYTES);
            }
        }
    })
    .await
}

async fn direct(store: Arc<dyn ObjectStore>, op: Op, clients: usize, round: usize) -> Stats {
    let payload = Bytes::from(vec![b'x'; FILE_BYTES]);
    measure(clients, move |c, i| {
        let (store, payload) = (store.clone(), payload.clone());
        async move {
            let key = Path::from(format!("direct/r{round}/c{c}/f{i}"));
            match op {
                Op::Write => {
                    store.put(&key, payload.into()).await.unwrap();
                }
                Op::Read => {
                    let got = store.get(&key).await.unwrap().bytes().await.unwrap();
                    assert_eq!(got.len(), FILE_BYTES);
                }
                Op::Delete => store.delete(&key).await.unwrap(),
                Op::Floor => unreachable!("the floor is an HTTP-only figure"),
            }
        }
    })
    .await
}

fn us(d: Duration) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6)
}

/// Counts the statements sent to the benchmark's PostgreSQL database.
struct Statements(sqlx::PgConnection);

impl Statements {
    async fn open(url: &str) -> Option<Self> {
        if !url.starts_with("postgres") {
            return None;
        }
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .expect("scripts/pg preloads pg_stat_statements");
        Some(Self(conn))
    }

    /// Gives the planner the statistics autovacuum would have gathered by now: on a table
    /// never analyzed it guesses, and a guess that picks the wrong index turns each lookup into
    /// a scan of the namespace (measured: 10x slower reads at 16 clients).
    async fn analyze(&mut self) {
        sqlx::Executor::execute(&mut self.0, "ANALYZE")
            .await
            .unwrap();
    }

    async fn total(&mut self) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
        )
        .fetch_one(&mut self.0)
        .await
        .unwrap()
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let bench = common::start(dir.path()).await;
    let database = common::database_url(dir.path());
    let index = if database.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let mut statements = Statements::open(&database).await;
    let mut trips = Vec::new();
    let base = Arc::new(bench.base.clone());
    let services = Arc::clone(&bench.services);
    let key = bench.key("bench").await;
    let key = Arc::new(key);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let store = Arc::clone(services.blobs.object_store());

    // Warm both paths (connections, caches, directories) before measuring.
    for i in 0..WARMUP {
        let url = format!("{base}/files/warm/{i}");
        client
            .put(&url)
            .bearer_auth(key.as_str())
            .body(vec![0u8; FILE_BYTES])
            .send()
            .await
            .unwrap();
        client
            .get(&url)
            .bearer_auth(key.as_str())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let k = Path::from(format!("direct/warm/{i}"));
        store.put(&k, vec![0u8; FILE_BYTES].into()).await.unwrap();
        store.get(&k).await.unwrap().bytes().await.unwrap();
    }

    if let Some(s) = &mut statements {
        s.analyze().await;
    }
    println!(
        "Warren file API benchmark: {FILE_BYTES}-byte files, local filesystem backend, {index} index"
    );
    println!("{OPS_PER_CLIENT} operations per client; HTTP over loopback with keep-alive\n");
    println!(
        "{:<6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9}",
        "op",
        "clients",
        "http p50",
        "http p99",
        "http op/s",
        "os p50",
        "os p99",
        "os op/s",
        "p50 ratio"
    );
    let mut round = 0;
    let mut worst: f64 = 0.0;
    for clients in [1, 16] {
        for (name, op) in [
            ("write", Op::Write),
            ("read", Op::Read),
            ("delete", Op::Delete),
        ] {
            round += matches!(op, Op::Write) as usize;
            let sent = match &mut statements {
                Some(s) => Some(s.total().await),
                None => None,
            };
            let h = http(
                base.clone(),
                key.clone(),
                client.clone(),
                op,
                clients,
                round,
            )
            .await;
            if let (Some(s), Some(before)) = (&mut statements, sent) {
                // Let the audit writer store this phase's records: they are part of its cost.
                services.audit.flush().await;
                let per_op =
                    (s.total().await - before - 1) as f64 / (clients * OPS_PER_CLIENT) as f64;
                trips.push(format!("{name} ({clients:>2} clients): {per_op:.2}"));
            }
            let d = direct(Arc::clone(&store), op, clients, round).await;
            let ratio = h.p50.as_secs_f64() / d.p50.as_secs_f64();
            worst = worst.max(ratio);
            println!(
                "{:<6} {:>7} | {:>9} {:>9} {:>9.0} | {:>9} {:>9} {:>9.0} | {:>8.2}x",
                name,
                clients,
                us(h.p50),
                us(h.p99),
                h.ops_per_sec,
                us(d.p50),
                us(d.p99),
                d.ops_per_sec,
                ratio
            );
        }
    }
    for clients in [1, 16] {
        let f = http(
            base.clone(),
            key.clone(),
            client.clone(),
            Op::Floor,
            clients,
            0,
        )
        .await;
        println!(
            "HTTP floor (GET /healthz, same client), {clients:>2} clients: p50 {} p99 {} {:.0} op/s",
            us(f.p50),
            us(f.p99),
            f.ops_per_sec
        );
    }
    println!("\nworst p50 ratio (HTTP / direct object_store): {worst:.2}x (goal ≤ 1.50x)");
    if !trips.is_empty() {
        println!(
            "round trips to PostgreSQL per operation (statements, BEGIN/COMMIT and audit included): {}",
            trips.join(", ")
        );
    }
}
