//! Warren as operators run it: the real binary started with the documented flags and
//! environment, probed the way orchestrators and Prometheus probe it, its logs read as a log
//! collector reads them.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Client, SECRET, ServerProcess};

/// A directory of `mode`: 0700 is a home as root's is, which no other uid can traverse; 0711
/// lets the sandbox uid through to a data directory's `exec/` below it.
fn tempdir_mode(mode: u32) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    home
}

/// `warren serve` on a loopback port with `data` as its data directory, the fixed admin key
/// and secret, `flags` and `env` besides; logs in `<home>/warren.log`.
async fn serve(home: &Path, data: &Path, flags: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let mut all = vec![("WARREN_ADMIN_KEY", ADMIN_KEY), ("WARREN_SECRET", SECRET)];
    all.extend_from_slice(env);
    ServerProcess::start(&args, &all, &home.join("warren.log")).await
}

/// A key locked to namespace `ns`: its plaintext, its id, and a client using it.
async fn mint(srv: &ServerProcess, ns: &str) -> (String, String, Client) {
    let ws = srv.client.get("/v1/me").await.json["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = srv
        .client
        .post(
            &format!("/v1/workspaces/{ws}/keys"),
            json!({ "name": ns, "namespace": ns, "admin": false }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let key = r.json["api_key"].as_str().unwrap().to_owned();
    let id = r.json["key_id"].as_str().unwrap().to_owned();
    let client = Client::at(&srv.base, Some(&key), Some(ns));
    (key, id, client)
}

/// Started as root from a data directory under a mode-0700 home, with no `--exec-dir`, exec
/// works: working copies go to a directory of this data dir's own under /var/lib/warren-exec,
/// and the data directory itself stays closed to other users.
#[tokio::test]
async fn exec_works_out_of_the_box_below_a_private_home() {
    let home = tempdir_mode(0o700);
    let data = home.path().join("warren-data");
    let logs = home.path().join("warren.log");
    let srv = serve(home.path(), &data, &[], &[]).await;
    let (_, _, agent) = mint(&srv, "newcomer").await;
    let r = agent
        .exec("echo hello > workspace/greeting.txt && cat workspace/greeting.txt && id -u")
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{:?} {}",
        r.json,
        std::fs::read_to_string(&logs).unwrap()
    );
    let out = r.json["stdout"].as_str().unwrap();
    assert!(out.starts_with("hello\n"), "{out:?}");
    assert_ne!(out.lines().nth(1), Some("0"), "the command ran as root");
    assert_eq!(agent.read("greeting.txt").await.json["content"], "hello\n");

    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory is closed to others");
    // The working copy is in this data dir's own fallback root, private to the sandbox uid.
    let exec_dir = warren::config::default_exec_dir(&std::fs::canonicalize(&data).unwrap());
    assert!(
        exec_dir.starts_with(warren::config::SYSTEM_EXEC_ROOT),
        "{}",
        exec_dir.display()
    );
    let copies: Vec<_> = std::fs::read_dir(&exec_dir).unwrap().flatten().collect();
    assert!(
        !copies.is_empty(),
        "no working copy in {}",
        exec_dir.display()
    );
    for copy in &copies {
        let mode = copy.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}",
            copy.path().display()
        );
    }
    assert!(srv.stop().await.success());
    std::fs::remove_dir_all(&exec_dir).unwrap();
}

/// `/healthz` says alive, `/readyz` says whether the stores answer: storage taken away makes
/// the node not ready (503, saying which store, telling nothing of where) while it stays
/// alive; storage back, it is ready again.
#[tokio::test]
async fn readiness_follows_the_object_store() {
    let home = tempdir_mode(0o711);
    let data = home.path().join("data");
    let srv = serve(home.path(), &data, &[], &[]).await;
    let anonymous = Client::at(&srv.base, None, None);
    let ready = anonymous.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json);
    assert_eq!(ready.json["checks"]["storage"], "ok");

    // The objects directory replaced by a file: every lookup below it fails.
    let objects = data.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let aside = data.join("objects.aside");
    std::fs::rename(&objects, &aside).unwrap();
    std::fs::write(&objects, "not a directory").unwrap();
    let ready = anonymous.get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.json
    );
    assert_eq!(ready.json["checks"]["storage"], "unreachable");
    assert_eq!(ready.json["checks"]["database"], "ok");
    assert!(!ready.detail().is_empty());
    assert!(!ready.json.to_string().contains(data.to_str().unwrap()));
    assert_eq!(anonymous.get("/healthz").await.status, StatusCode::OK);

    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(&aside, &objects).unwrap();
    assert_eq!(anonymous.get("/readyz").await.status, StatusCode::OK);
    assert!(srv.stop().await.success());
}

/// One sample's value in a Prometheus exposition: the line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/metrics` on the main listener answers an admin key only; on `--metrics-listen` it
/// answers anyone. The exposition counts what happened (requests by route template, an exec,
/// sync-back, an open event stream, database statements, storage calls, process figures) and
/// carries no path, namespace or key.
#[tokio::test]
async fn metrics_count_what_happened_and_name_no_tenant() {
    let home = tempdir_mode(0o711);
    let data = home.path().join("data");
    let srv = serve(
        home.path(),
        &data,
        &["--metrics-listen", "127.0.0.1:0"],
        &[],
    )
    .await;
    let (key, _, agent) = mint(&srv, "tenant-zeta").await;
    assert_eq!(
        agent.write("secret-plans/q3.txt", "x").await.status,
        StatusCode::OK
    );
    let r = agent.exec("echo hi > workspace/out-file-zeta.txt").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let ws = srv.client.get("/v1/me").await.json["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An event stream held open while scraping.
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/workspaces/{ws}/webhooks/stream", srv.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    assert_eq!(
        Client::at(&srv.base, None, None)
            .get("/metrics")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(agent.get("/metrics").await.status, StatusCode::FORBIDDEN);
    let scraped = srv.client.get("/metrics").await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(
        scraped.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(scraped.bytes).unwrap();
    let open = Client::at(srv.metrics.as_deref().unwrap(), None, None)
        .get("/metrics")
        .await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(
        String::from_utf8(open.bytes)
            .unwrap()
            .contains("warren_http_requests_total")
    );

    let route = r#"warren_http_requests_total{method="POST",route="/write",status="200"}"#;
    assert_eq!(sample(&text, route), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, r#"warren_exec_runs_total{outcome="exited"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "warren_exec_sync_files_total"), Some(1.0));
    assert_eq!(sample(&text, "warren_exec_sync_bytes_total"), Some(3.0));
    assert_eq!(
        sample(&text, "warren_sse_streams_open"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "warren_webhook_queue_depth"), Some(0.0));
    assert!(
        sample(
            &text,
            r#"warren_db_statement_duration_seconds_count{verb="insert"}"#
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"warren_storage_operation_duration_seconds_count{op="put"}"#
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|n| n > 0.0));
    assert!(text.contains(r#"route="/files/{*path}""#) || !text.contains("/files/"));
    for private in [
        "tenant-zeta",
        "secret-plans",
        "q3.txt",
        "out-file-zeta",
        &key,
        ADMIN_KEY,
        &ws,
    ] {
        assert!(!text.contains(private), "the exposition names {private:?}");
    }

    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = String::from_utf8(srv.client.get("/metrics").await.bytes).unwrap();
        if sample(&text, "warren_sse_streams_open") == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream stayed counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(srv.stop().await.success());
}

/// With `--log-format json`, every line is a JSON object with no colour codes; every request
/// is logged exactly once with its request id, route template, status, latency, workspace,
/// namespace and key id; and no key or secret plaintext appears anywhere in a run's output,
/// debug lines included.
#[tokio::test]
async fn json_logs_carry_each_request_once_and_no_secret() {
    let home = tempdir_mode(0o711);
    let data = home.path().join("data");
    let logs = home.path().join("warren.log");
    // This one takes its settings from the environment, as a unit's EnvironmentFile gives them.
    let srv = ServerProcess::start(
        &["serve", "--log-format", "json", "--listen", "127.0.0.1:0"],
        &[
            ("WARREN_ADMIN_KEY", ADMIN_KEY),
            ("WARREN_SECRET", SECRET),
            ("WARREN_DATA_DIR", data.to_str().unwrap()),
            ("RUST_LOG", "debug"),
        ],
        &logs,
    )
    .await;
    let ws = srv.client.get("/v1/me").await.json["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (key, key_id, agent) = mint(&srv, "logged").await;

    // Requests with ids of our choosing, so their log lines can be found.
    let traced =
        |c: &Client, m: Method, path: &str, id: &str| c.request(m, path).header("x-request-id", id);
    let r = agent
        .send(
            traced(&agent, Method::POST, "/write", "req-write").json(&json!({
                "path": "notes/today.txt", "content": "hello"
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let r = agent
        .send(traced(
            &agent,
            Method::GET,
            "/files/notes/today.txt",
            "req-download",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = agent
        .send(traced(
            &agent,
            Method::GET,
            "/files/missing.txt",
            "req-missing",
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = agent.exec("echo from-exec").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let hook = srv
        .client
        .post(
            &format!("/v1/workspaces/{ws}/webhooks"),
            json!({ "url": "https://hooks.example.com/warren" }),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{:?}", hook.json);
    let hook_secret = hook.json["signing_secret"].as_str().unwrap().to_owned();
    let rotated = srv
        .client
        .post(
            &format!("/v1/workspaces/{ws}/keys/{key_id}/rotate"),
            json!({}),
        )
        .await;
    assert!(rotated.status.is_success(), "{:?}", rotated.json);
    let rotated_key = rotated.json["api_key"].as_str().unwrap().to_owned();
    let r = Client::at(&srv.base, Some(&key), Some("logged"))
        .read("notes/today.txt")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the old key is spent");
    assert!(srv.stop().await.success());

    let text = std::fs::read_to_string(&logs).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == "answered" && l["span"]["request_id"] == id)
            .collect()
    };
    for (id, route, status) in [
        ("req-write", "/write", 200),
        ("req-download", "/files/{*path}", 200),
        ("req-missing", "/files/{*path}", 404),
    ] {
        let found = answered(id);
        assert_eq!(found.len(), 1, "{id}: {found:?}");
        let line = found[0];
        assert_eq!(line["span"]["route"], route, "{line}");
        assert_eq!(line["fields"]["status"], status, "{line}");
        assert!(line["fields"]["latency_ms"].as_f64().is_some(), "{line}");
        assert_eq!(line["span"]["workspace"], ws.as_str(), "{line}");
        assert_eq!(line["span"]["namespace"], "logged", "{line}");
        assert_eq!(line["span"]["key_id"], key_id.as_str(), "{line}");
    }
    // A file path is tenant data: the log names the route, never the path.
    assert!(!text.contains("notes/today.txt"), "a path was logged");
    for secret in [ADMIN_KEY, SECRET, &key, &rotated_key, &hook_secret] {
        assert!(!text.contains(secret), "the logs hold a secret: {secret}");
    }
}

/// A supervisor may signal as soon as the server says where it listens: SIGTERM right after
/// the address line still drains and exits 0 (the handlers used to be installed only later,
/// so such a signal killed the process).
#[tokio::test]
async fn a_sigterm_right_after_the_address_line_is_a_clean_stop() {
    for _ in 0..5 {
        let home = tempdir_mode(0o711);
        let srv = serve(home.path(), &home.path().join("data"), &[], &[]).await;
        assert!(srv.stop().await.success());
    }
}
