//! Snapshot benchmark: create and restore of a 100 MB, 1,000-file namespace on the local
//! backend, over HTTP, beside `tar -czf` / `tar -xzf` (gzip at its default level, the level
//! Warren uses) on the same tree in the same run. Prints MB/s and the time ratio (goal: within
//! 1.5×). Run with `scripts/bench`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FILES: usize = 1000;
const FILE_BYTES: usize = 100 * 1024;
const ROUNDS: usize = 3;

/// Text-like content that compresses the way real files do (about 3:1), different per file.
fn content(i: usize) -> Vec<u8> {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut out = Vec::with_capacity(FILE_BYTES);
    let mut x = (i as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15);
    while out.len() < FILE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        out.extend_from_slice(format!(" {} ", x % 100_000).as_bytes());
        if x.is_multiple_of(11) {
            out.push(b'\n');
        }
    }
    out.truncate(FILE_BYTES);
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(d: Duration) -> String {
    let mb = (FILES * FILE_BYTES) as f64 / 1e6;
    format!(
        "{:>7.1} MB/s ({:.0} ms)",
        mb / d.as_secs_f64(),
        d.as_secs_f64() * 1e3
    )
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}");
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let bench = common::start(dir.path()).await;
    let (base, key) = (bench.base.clone(), bench.key("bench").await);
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(&key)
            .header("X-Namespace", "bench")
    };

    // The same tree through the API and on plain disk.
    let plain = dir.path().join("plain");
    for i in 0..FILES {
        let rel = format!("d{}/f{i}.txt", i / 100);
        let bytes = content(i);
        let r = call(reqwest::Method::PUT, format!("/files/{rel}"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let p = plain.join("workspace").join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    println!(
        "namespace: {FILES} files, {} MB; {ROUNDS} rounds each, medians",
        FILES * FILE_BYTES / 1_000_000
    );

    let (mut tar_c, mut tar_x, mut ours_c, mut ours_x) = (vec![], vec![], vec![], vec![]);
    let mut sizes = (0u64, 0u64);
    for round in 0..ROUNDS {
        let archive = dir.path().join(format!("plain-{round}.tgz"));
        let t = Instant::now();
        run(Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&plain)
            .arg("workspace"));
        tar_c.push(t.elapsed());
        sizes.0 = std::fs::metadata(&archive).unwrap().len();
        let out = dir.path().join(format!("x-{round}"));
        std::fs::create_dir(&out).unwrap();
        let t = Instant::now();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&out));
        tar_x.push(t.elapsed());

        let t = Instant::now();
        let r: Value = call(reqwest::Method::POST, "/v1/snapshots".into())
            .json(&json!({ "label": null }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ours_c.push(t.elapsed());
        sizes.1 = r["size_bytes"].as_u64().unwrap();
        let id = r["snapshot_id"].as_str().unwrap().to_owned();
        let t = Instant::now();
        let r: Value = call(reqwest::Method::POST, format!("/v1/snapshots/{id}/restore"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ours_x.push(t.elapsed());
        assert_eq!(r["files_restored"], FILES);
    }
    let check = |p: &Path| assert!(p.exists(), "{}", p.display());
    check(&dir.path().join("x-0/workspace/d9/f999.txt"));

    let (tc, tx, oc, ox) = (median(tar_c), median(tar_x), median(ours_c), median(ours_x));
    println!("\ncreate");
    println!(
        "  tar -czf (gzip -6)        {}  archive {} MB",
        rate(tc),
        sizes.0 / 1_000_000
    );
    println!(
        "  POST /v1/snapshots        {}  archive {} MB",
        rate(oc),
        sizes.1 / 1_000_000
    );
    println!(
        "  ratio {:.2}x (goal <= 1.5x)",
        oc.as_secs_f64() / tc.as_secs_f64()
    );
    println!("\nrestore");
    println!("  tar -xzf                  {}", rate(tx));
    println!("  POST …/restore            {}", rate(ox));
    println!(
        "  ratio {:.2}x (goal <= 1.5x)",
        ox.as_secs_f64() / tx.as_secs_f64()
    );
}
