//! File API benchmark: 4 KiB writes and reads over HTTP against a real server on a loopback
//! port, beside a *floor server* (a minimal axum server on the same accept loop, runtime,
//! client, backend and object layout whose `PUT`/`GET /files/{path}` do only the
//! `object_store` put/get: no auth, index, audit or events) and the same operations done
//! directly through `object_store`, all in the same run. The variants are interleaved in
//! rounds, so a noisy minute hits all of them alike; each figure is the median over the
//! rounds, with Warren's p50 spread across them. Prints p50/p99 latency and throughput at 1
//! and 16 concurrent clients and the Warren/floor ratios. On PostgreSQL
//! (`WARREN_BENCH_DATABASE`) it also counts the statements each Warren operation sends
//! (`pg_stat_statements`, BEGIN and COMMIT included): its round trips. Run with
//! `scripts/bench`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

const FILE_BYTES: usize = 4096;
const OPS_PER_CLIENT: usize = 200;
const ROUNDS: usize = 5;
const WARMUP: usize = 200;

#[derive(Clone, Copy)]
enum Op {
    Write,
    Read,
    /// Deletes what the round's writes made (Warren and direct only).
    Delete,
    /// `GET /healthz`: the cost of an HTTP round trip alone, for context.
    Healthz,
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
                Op::Healthz => http.get(format!("{base}/healthz")),
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
                Op::Healthz => unreachable!("an HTTP-only figure"),
            }
        }
    })
    .await
}

/// The floor server's state: the store, and where its files go (the same layout as
/// Warren's, in a namespace of its own).
#[derive(Clone)]
struct Floor {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

async fn floor_put(
    axum::extract::State(f): axum::extract::State<Floor>,
    axum::extract::Path(path): axum::extract::Path<String>,
    body: Bytes,
) -> axum::http::StatusCode {
    let key = Path::from(format!("{}/{path}", f.prefix));
    f.store.put(&key, body.into()).await.unwrap();
    axum::http::StatusCode::OK
}

async fn floor_get(
    axum::extract::State(f): axum::extract::State<Floor>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Bytes {
    let key = Path::from(format!("{}/{path}", f.prefix));
    f.store.get(&key).await.unwrap().bytes().await.unwrap()
}

/// Starts the floor server on Warren's own accept loop and settings; its base URL.
async fn floor_server(store: Arc<dyn ObjectStore>, prefix: Path) -> String {
    use axum::routing::put;
    let app = axum::Router::new()
        .route("/files/{*path}", put(floor_put).get(floor_get))
        .with_state(Floor { store, prefix });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warren::http::serve::serve(
        listener,
        app,
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    ));
    base
}

/// The median of `xs`.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Per-round figures of one variant, summarised as medians.
#[derive(Default)]
struct Rounds {
    p50: Vec<f64>,
    p99: Vec<f64>,
    ops: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, s: &Stats) {
        self.p50.push(s.p50.as_secs_f64());
        self.p99.push(s.p99.as_secs_f64());
        self.ops.push(s.ops_per_sec);
    }
    fn p50(&self) -> f64 {
        median(self.p50.clone())
    }
    fn p99(&self) -> f64 {
        median(self.p99.clone())
    }
    fn ops(&self) -> f64 {
        median(self.ops.clone())
    }
    /// (max − min) / median of the rounds' p50s.
    fn spread(&self) -> f64 {
        let max = self.p50.iter().copied().fold(f64::MIN, f64::max);
        let min = self.p50.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / self.p50()
    }
    fn cells(&self) -> String {
        if self.p50.is_empty() {
            return format!("{:>8} {:>8} {:>7}", "-", "-", "-");
        }
        format!(
            "{:>8} {:>8} {:>7.0}",
            secs(self.p50()),
            secs(self.p99()),
            self.ops()
        )
    }
}

fn secs(s: f64) -> String {
    format!("{:.0}µs", s * 1e6)
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
    let floor_prefix = services.blobs.layout().files_prefix(
        &services.default_workspace,
        &warren_storage::Namespace::parse("floor").unwrap(),
    );
    let floor = Arc::new(floor_server(Arc::clone(&store), floor_prefix).await);
    for i in 0..WARMUP {
        let url = format!("{floor}/files/warm/{i}");
        client
            .put(&url)
            .body(vec![0u8; FILE_BYTES])
            .send()
            .await
            .unwrap();
        client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }

    println!(
        "Warren file API benchmark: {FILE_BYTES}-byte files, local filesystem backend, {index} index"
    );
    println!(
        "{ROUNDS} interleaved rounds of {OPS_PER_CLIENT} operations per client; medians over the \
         rounds; HTTP over loopback with keep-alive"
    );
    println!(
        "floor: the same HTTP server loop, client and object layout doing only the object_store call\n"
    );
    println!(
        "{:<6} {:>3} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7} | {:>6} {:>6} {:>6} {:>6}",
        "op",
        "cl",
        "os p50",
        "os p99",
        "op/s",
        "flr p50",
        "flr p99",
        "op/s",
        "wrn p50",
        "wrn p99",
        "op/s",
        "p50×",
        "op/s×",
        "p99×",
        "spread"
    );
    let mut round = 0;
    for clients in [1, 16] {
        let ops = [
            ("write", Op::Write),
            ("read", Op::Read),
            ("delete", Op::Delete),
        ];
        let mut figures: Vec<[Rounds; 3]> = ops.iter().map(|_| Default::default()).collect();
        for r in 0..ROUNDS {
            round += 1;
            for (slot, &(name, op)) in ops.iter().enumerate() {
                let [direct_r, floor_r, warren_r] = &mut figures[slot];
                let sent = match &mut statements {
                    Some(s) => Some(s.total().await),
                    None => None,
                };
                let w = http(
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
                    if r == 0 {
                        trips.push(format!("{name} ({clients:>2} clients): {per_op:.2}"));
                    }
                }
                warren_r.push(&w);
                if !matches!(op, Op::Delete) {
                    let f = http(
                        floor.clone(),
                        key.clone(),
                        client.clone(),
                        op,
                        clients,
                        round,
                    )
                    .await;
                    floor_r.push(&f);
                }
                let d = direct(Arc::clone(&store), op, clients, round).await;
                direct_r.push(&d);
            }
        }
        for (slot, &(name, _)) in ops.iter().enumerate() {
            let [d, f, w] = &figures[slot];
            let ratios = if f.p50.is_empty() {
                format!("{:>6} {:>6} {:>6}", "-", "-", "-")
            } else {
                format!(
                    "{:>5.2}x {:>5.2}x {:>5.2}x",
                    w.p50() / f.p50(),
                    w.ops() / f.ops(),
                    w.p99() / f.p99()
                )
            };
            println!(
                "{name:<6} {clients:>3} | {} | {} | {} | {ratios} {:>5.0}%",
                d.cells(),
                f.cells(),
                w.cells(),
                w.spread() * 100.0
            );
        }
    }
    for clients in [1, 16] {
        let f = http(
            base.clone(),
            key.clone(),
            client.clone(),
            Op::Healthz,
            clients,
            0,
        )
        .await;
        println!(
            "GET /healthz (an HTTP round trip alone, same client), {clients:>2} clients: p50 {} p99 {} {:.0} op/s",
            us(f.p50),
            us(f.p99),
            f.ops_per_sec
        );
    }
    println!(
        "\ngoals (Warren / floor, same run): read p50 ≤ 1.3x, op/s at 16 ≥ 0.7x, p99 ≤ 2x; \
         write p50 ≤ 1.5x, op/s at 16 ≥ 0.7x, p99 ≤ 2x"
    );
    if !trips.is_empty() {
        println!(
            "round trips to PostgreSQL per operation (statements, BEGIN/COMMIT and audit included): {}",
            trips.join(", ")
        );
    }
}
