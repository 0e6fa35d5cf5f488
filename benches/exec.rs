//! Exec benchmark, against baselines measured in the same run:
//!
//! 1. `true` over HTTP (`POST /v1/exec`) on a warm 1,000-file namespace, beside bwrap running
//!    `true` directly with the same flags, descriptors and uid (no HTTP, cgroup, overlay, shell
//!    or sync). Goal: p50 within 1.5×.
//! 2. An exec that changes one file, in a 10,000-file namespace and in a 10-file one. Goal:
//!    p50 ratio ≤ 1.2 (finding changes costs in proportion to the changes, not the namespace),
//!    and exactly one object written per call.
//! 3. One exec creating 5,000 and 20,000 symlinks (no bytes to upload: the sync-back commit).
//!    Goal: the cost per change stays within 1.5× (linear in the number of changes).
//!
//! Needs root and bubblewrap, as exec does. Run with `scripts/bench`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

const RUNS: usize = 60;
const WARMUP: usize = 10;

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 9 / 10]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Agent {
    http: reqwest::Client,
    base: String,
    key: String,
    ns: String,
}

impl Agent {
    async fn exec(&self, command: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/exec", self.base))
            .bearer_auth(&self.key)
            .header("X-Namespace", &self.ns)
            .json(&json!({ "command": command }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["exit_code"], 0, "{command}: {v}");
        v
    }

    async fn once(&self, command: &str) -> Duration {
        let t = Instant::now();
        self.exec(command).await;
        t.elapsed()
    }
}

/// Runs `a` and `b` alternately, so the machine's noise falls on both alike.
async fn interleaved<A, B, FA, FB>(a: A, b: B) -> (Vec<Duration>, Vec<Duration>)
where
    A: Fn() -> FA,
    B: Fn() -> FB,
    FA: std::future::Future<Output = Duration>,
    FB: std::future::Future<Output = Duration>,
{
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + RUNS {
        let (x, y) = (a().await, b().await);
        if i >= WARMUP {
            ra.push(x);
            rb.push(y);
        }
    }
    (ra, rb)
}

/// Objects under `dir` modified after `since`.
fn objects_written_since(dir: &Path, since: SystemTime) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.modified().unwrap() > since {
                n += 1;
            }
        }
    }
    n
}

#[tokio::main]
async fn main() {
    // The sandbox uid must reach working copies: a traversable directory under /tmp.
    let dir = tempfile::Builder::new()
        .prefix("warren-bench")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let bench = common::start(dir.path()).await;
    if let Some(why) = bench.services.exec.unavailable() {
        panic!("exec is unavailable here: {why}");
    }
    let http = reqwest::Client::new();
    let mut agents = Vec::new();
    for ns in ["n1000", "n10000", "n10"] {
        agents.push(Agent {
            http: http.clone(),
            base: bench.base.clone(),
            key: bench.key(ns).await,
            ns: ns.into(),
        });
    }
    let [a1000, a10000, a10] = &agents[..] else {
        unreachable!()
    };
    let populate = |files: usize| {
        let dirs = files.div_ceil(100);
        format!(
            "cd workspace && for d in $(seq 0 {}); do mkdir -p d$d; for f in $(seq 0 99); do \
             n=$((d*100+f)); [ $n -lt {files} ] && echo \"file $n\" > d$d/f$f; done; done; true",
            dirs - 1
        )
    };
    let t = Instant::now();
    a1000.exec(&populate(1000)).await;
    a10000.exec(&populate(10_000)).await;
    a10.exec(&populate(10)).await;
    println!(
        "populated 1,000 + 10,000 + 10 files through exec in {}",
        ms(t.elapsed())
    );

    // 1. exec `true` vs bare bwrap.
    // Its own base directory: a probe clears what it finds there.
    let mut bare_config = bench.config.exec.sandbox.clone();
    bare_config.base_dir = dir.path().join("bare-exec");
    let bare_sandbox = warren_exec::Sandbox::probe(bare_config).await.unwrap();
    let empty = dir.path().join("bare-ws");
    std::fs::create_dir(&empty).unwrap();
    let bare_run = |argv: &'static [&'static str]| {
        let (sb, ws) = (&bare_sandbox, &empty);
        move || async move {
            let t = Instant::now();
            assert!(sb.run_bare(ws, argv).await.unwrap().success());
            t.elapsed()
        }
    };
    let (bare, via_http) = interleaved(bare_run(&["/bin/true"]), || a1000.once("true")).await;
    let (bare_bash, _) = interleaved(bare_run(&["/bin/bash", "-c", "true"]), || async {
        Duration::ZERO
    })
    .await;
    let (b, h) = (p50(bare.clone()), p50(via_http.clone()));
    println!("\nexec `true`, warm 1,000-file namespace ({RUNS} runs)");
    println!(
        "  bare bwrap, same flags   p50 {}  p90 {}",
        ms(b),
        ms(p90(bare))
    );
    println!("  (bare bwrap, bash -c true: p50 {})", ms(p50(bare_bash)));
    println!(
        "  POST /v1/exec over HTTP  p50 {}  p90 {}",
        ms(h),
        ms(p90(via_http))
    );
    println!(
        "  ratio {:.2}x (goal <= 1.5x)",
        h.as_secs_f64() / b.as_secs_f64()
    );

    // 2. Change one file: 10,000 files vs 10.
    let objects = dir.path().join("objects");
    let since = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    a10000.exec("echo changed >> workspace/d0/f0").await;
    let uploaded = objects_written_since(&objects, since);
    let change = "echo changed >> workspace/d0/f0";
    let (big, small) = interleaved(|| a10000.once(change), || a10.once(change)).await;
    let (bp, sp) = (p50(big.clone()), p50(small.clone()));
    println!("\nexec changing one file ({RUNS} runs)");
    println!(
        "  10-file namespace      p50 {}  p90 {}",
        ms(sp),
        ms(p90(small))
    );
    println!(
        "  10,000-file namespace  p50 {}  p90 {}",
        ms(bp),
        ms(p90(big))
    );
    println!(
        "  ratio {:.2}x (goal <= 1.2x)",
        bp.as_secs_f64() / sp.as_secs_f64()
    );
    println!("  objects written by one call: {uploaded} (goal: exactly 1)");

    // 3. Sync-back in proportion to the changes: one exec creating N symlinks (no bytes to
    // upload, so this is the index commit), for N = 5,000 and 20,000.
    let mut per_change = Vec::new();
    println!("\nexec creating N symlinks (sync-back commit)");
    for n in [5_000usize, 20_000] {
        let agent = Agent {
            http: http.clone(),
            base: bench.base.clone(),
            key: bench.key(&format!("links{n}")).await,
            ns: format!("links{n}"),
        };
        let command = format!(
            "cd workspace && mkdir l && python3 -c 'import os\nfor i in range({n}): os.symlink(\"t\", \"l/%d\" % i)'"
        );
        let took = agent.once(&command).await;
        println!(
            "  N = {n:>6}: {}  ({:.1} µs per change)",
            ms(took),
            took.as_secs_f64() * 1e6 / n as f64
        );
        per_change.push(took.as_secs_f64() / n as f64);
    }
    println!(
        "  per-change cost, 20,000 vs 5,000: {:.2}x (goal <= 1.5x: linear)",
        per_change[1] / per_change[0]
    );
}
