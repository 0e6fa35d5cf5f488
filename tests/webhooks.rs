//! Webhooks end to end: management, filtering, signing, retries, giving up, the test call,
//! delivery across a restart, no head-of-line blocking, the SSRF default, and the live stream.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Client, TestServer};

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    fail_first: AtomicUsize,
    delay_ms: AtomicUsize,
}

/// An HTTP receiver on a loopback port that records every request.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn start_on(listener: tokio::net::TcpListener) -> Self {
        let state = Arc::new(ReceiverState::default());
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            if self.got().len() >= n {
                return self.got();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} deliveries, got {}", self.got().len());
    }
}

async fn receive(State(s): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> AxStatus {
    s.got.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let failing = s
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        AxStatus::INTERNAL_SERVER_ERROR
    } else {
        AxStatus::NO_CONTENT
    }
}

fn verify(secret: &str, r: &Received) -> Value {
    let header = r.headers["x-trove-signature"].to_str().unwrap();
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        v1,
        "bad signature"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - t.parse::<i64>().unwrap()).abs() < 60);
    assert_eq!(r.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.headers["x-trove-event"], body["type"].as_str().unwrap());
    assert_eq!(r.headers["x-trove-event-id"], body["id"].as_str().unwrap());
    body
}

async fn subscribe(srv: &TestServer, body: Value) -> (String, String) {
    let r = srv
        .admin()
        .post(&format!("/v1/workspaces/{}/webhooks", srv.ws), body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    (
        r.json["webhook_id"].as_str().unwrap().to_owned(),
        r.json["signing_secret"].as_str().unwrap().to_owned(),
    )
}

fn hooks_url(srv: &TestServer) -> String {
    format!("/v1/workspaces/{}/webhooks", srv.ws)
}

async fn hook_state(srv: &TestServer, id: &str) -> Value {
    let r = srv.admin().get(&hooks_url(srv)).await;
    r.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["webhook_id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn management_is_admin_only_and_shows_the_secret_once() {
    let srv = TestServer::start().await;
    let rx = Receiver::start().await;
    let admin = srv.admin();
    let created = admin
        .post(
            &hooks_url(&srv),
            json!({ "url": rx.url, "events": ["file.written"], "namespace": "alice",
                    "description": "mine" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json["webhook_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh-"));
    assert!(
        created.json["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("trove-whsec-")
    );
    assert_eq!(created.json["events"], json!(["file.written"]));
    assert_eq!(created.json["namespace"], "alice");
    assert_eq!(created.json["enabled"], true);

    let listed = admin.get(&hooks_url(&srv)).await;
    let hook = &listed.json["webhooks"][0];
    assert_eq!(hook["webhook_id"], id.as_str());
    assert_eq!(hook["description"], "mine");
    assert!(hook.get("signing_secret").is_none());
    assert!(!String::from_utf8_lossy(&listed.bytes).contains("trove-whsec-"));

    // Defaults to every event type.
    let (_, _) = subscribe(&srv, json!({ "url": rx.url })).await;
    let all = admin.get(&hooks_url(&srv)).await;
    assert_eq!(all.json["webhooks"][1]["events"], json!(["*"]));

    for key in [
        srv.mint("ops", None).await,
        srv.mint("a", Some("alice")).await,
    ] {
        let c = srv.client(&key, None);
        let r = c.post(&hooks_url(&srv), json!({ "url": rx.url })).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.detail(), "Workspace keys cannot manage webhooks.");
        assert_eq!(c.get(&hooks_url(&srv)).await.status, StatusCode::FORBIDDEN);
        assert_eq!(
            c.delete(&format!("{}/{id}", hooks_url(&srv))).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            c.post(&format!("{}/{id}/test", hooks_url(&srv)), Value::Null)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }

    for bad in [
        json!({ "url": "ftp://example.com/x" }),
        json!({ "url": "not a url" }),
        json!({ "url": "https://user:pw@example.com/" }),
        json!({ "url": rx.url, "events": [] }),
        json!({ "url": rx.url, "events": ["bad type!"] }),
        // Well-formed but no event has these types: the subscription would never fire.
        json!({ "url": rx.url, "events": ["file.writen"] }),
        json!({ "url": rx.url, "events": ["file.*"] }),
        json!({ "url": rx.url, "events": ["file.written", "exec.complete"] }),
        json!({ "url": rx.url, "namespace": "../x" }),
    ] {
        let r = admin.post(&hooks_url(&srv), bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        admin.post(&hooks_url(&srv), json!({})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let deleted = admin.delete(&format!("{}/{id}", hooks_url(&srv))).await;
    assert_eq!(deleted.json, json!({ "webhook_id": id, "deleted": true }));
    assert_eq!(
        admin
            .delete(&format!("{}/{id}", hooks_url(&srv)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .post(&format!("{}/{id}/test", hooks_url(&srv)), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deliveries_are_signed_and_filtered_by_namespace_and_type() {
    let srv = TestServer::start().await;
    let scoped = Receiver::start().await;
    let every = Receiver::start().await;
    let (_, scoped_secret) = subscribe(
        &srv,
        json!({ "url": scoped.url, "events": ["file.written"], "namespace": "alice" }),
    )
    .await;
    let (_, every_secret) = subscribe(&srv, json!({ "url": every.url, "events": ["*"] })).await;
    let alice = srv.agent("alice").await;
    let bob = srv.agent("bob").await;
    alice.write("a.txt", "hi").await;
    bob.write("b.txt", "secret of bob").await;
    alice.remove("a.txt").await;

    // `*`: its own webhook.created, key.created ×2, two writes, one delete (in whatever order
    // the attempts land).
    let all = every.wait_for(6).await;
    let kinds: Vec<String> = all
        .iter()
        .map(|r| {
            verify(&every_secret, r)["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for k in [
        "webhook.created",
        "key.created",
        "file.written",
        "file.deleted",
    ] {
        assert!(kinds.contains(&k.to_owned()), "{kinds:?}");
    }

    scoped.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything else would have arrived
    let got_later = scoped.got();
    let seen: Vec<Value> = got_later
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect();
    assert_eq!(got_later.len(), 1, "only alice's file.written: {seen:?}");
    let body = verify(&scoped_secret, &got_later[0]);
    assert_eq!(body["type"], "file.written");
    assert_eq!(body["namespace"], "alice");
    assert_eq!(
        body["data"],
        json!({ "path": "workspace/a.txt", "size_bytes": 2, "source": "write" })
    );
    assert_eq!(body["api_version"], "2026-04-30");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(!String::from_utf8_lossy(&got_later[0].body).contains("secret of bob"));
}

#[tokio::test]
async fn failed_attempts_are_retried_then_recorded() {
    let srv = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.state.fail_first.store(2, Ordering::SeqCst);
    let (id, secret) = subscribe(&srv, json!({ "url": rx.url, "events": ["file.written"] })).await;
    srv.agent("alice").await.write("x.txt", "1").await;
    let got = rx.wait_for(3).await;
    let ids: Vec<Value> = got
        .iter()
        .map(|r| verify(&secret, r)["id"].clone())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "retries carry the same event"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got().len(), 3, "no attempt after success");
    let state = hook_state(&srv, &id).await;
    assert_eq!(state["last_delivery_ok"], true);
    assert_eq!(state["last_delivery_status"], 204);
    assert!(state["last_delivery_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn delivery_gives_up_after_the_attempt_budget() {
    let srv = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.state.fail_first.store(usize::MAX, Ordering::SeqCst);
    let (id, _) = subscribe(&srv, json!({ "url": rx.url, "events": ["file.written"] })).await;
    srv.agent("alice").await.write("x.txt", "1").await;
    rx.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 4, "max_attempts is 4 in tests");
    let state = hook_state(&srv, &id).await;
    assert_eq!(state["last_delivery_ok"], false);
    assert_eq!(state["last_delivery_status"], 500);
}

#[tokio::test]
async fn the_test_call_really_delivers_and_reports() {
    let srv = TestServer::start().await;
    let rx = Receiver::start().await;
    let (id, secret) = subscribe(&srv, json!({ "url": rx.url })).await;
    let r = srv
        .admin()
        .post(&format!("{}/{id}/test", hooks_url(&srv)), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.json["status"], 204);
    assert_eq!(r.json["error"], Value::Null);
    let body = verify(&secret, &rx.wait_for(1).await[0]);
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["id"], r.json["event_id"]);

    // A receiver that is not there: an error, not a server failure.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (dead, _) = subscribe(&srv, json!({ "url": dead_url })).await;
    let r = srv
        .admin()
        .post(&format!("{}/{dead}/test", hooks_url(&srv)), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["ok"], false);
    assert_eq!(r.json["status"], Value::Null);
    assert!(
        r.json["error"].as_str().unwrap().contains("connection"),
        "{}",
        r.json
    );
    assert_eq!(hook_state(&srv, &dead).await["last_delivery_ok"], false);
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let slow_retries = |d: &std::path::Path| warren::config::Config {
        webhooks: warren::services::webhooks::WebhookSettings {
            backoff: Duration::from_millis(1500),
            max_attempts: 20,
            ..support::config(d).webhooks
        },
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), slow_retries).await;
    // A receiver address with nobody listening yet.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (_, secret) = subscribe(
        &srv,
        json!({ "url": format!("http://{addr}/hook"), "events": ["file.written"] }),
    )
    .await;
    let key = srv.mint("alice", Some("alice")).await;
    srv.client(&key, None).write("during-outage.txt", "x").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the first attempt fails
    let dir = srv.stop().await;

    let rx = Receiver::start_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let _srv = TestServer::start_with(dir, slow_retries).await;
    let got = rx.wait_for(1).await;
    let body = verify(&secret, &got[0]);
    assert_eq!(body["data"]["path"], "workspace/during-outage.txt");
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_others() {
    let srv = TestServer::start().await;
    let slow = Receiver::start().await;
    slow.state.delay_ms.store(1500, Ordering::SeqCst);
    let fast = Receiver::start().await;
    subscribe(&srv, json!({ "url": slow.url, "events": ["file.written"] })).await;
    subscribe(&srv, json!({ "url": fast.url, "events": ["file.written"] })).await;
    let a = srv.agent("alice").await;
    for i in 0..12 {
        a.write(&format!("f{i}"), "x").await;
    }
    fast.wait_for(12).await;
    assert!(
        slow.got().len() < 12,
        "the fast receiver finished while the slow one was still being served"
    );
    slow.wait_for(12).await;
}

#[tokio::test]
async fn private_destinations_are_refused_by_default() {
    let public_only = |d: &std::path::Path| warren::config::Config {
        webhooks: Default::default(),
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), public_only).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://192.168.1.1/x",
        // IPv6 forms that carry an IPv4 address: NAT64, compatible, translated, 6to4, Teredo.
        "http://[64:ff9b::10.0.0.1]/x",
        "http://[64:ff9b::169.254.169.254]/x",
        "http://[64:ff9b:1::a00:1]/x",
        "http://[::127.0.0.1]/x",
        "http://[::169.254.169.254]/x",
        "http://[::ffff:0:127.0.0.1]/x",
        "http://[2002:7f00:1::]/x",
        "http://[2002:a9fe:a9fe::]/x",
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x", // Teredo client 10.0.0.1
        "http://[fec0::1]/x",
        "http://[100::1]/x",
        // Names for this machine, however spelled.
        "http://localhost./x",
        "http://foo.localhost./x",
        "http://LOCALHOST/x",
        "http://localhost.localdomain/x",
        "http://ip6-localhost/x",
    ] {
        let r = srv
            .admin()
            .post(&hooks_url(&srv), json!({ "url": url }))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}");
        assert!(r.detail().contains("not allowed"), "{url}: {}", r.detail());
    }
}

async fn next_frame(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin),
    buf: &mut String,
) -> Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            assert!(!frame.contains('\r'), "LF framing only");
            let data: Vec<&str> = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if data.is_empty() {
                continue; // a comment (keepalive)
            }
            assert_eq!(data.len(), 1, "one single-line JSON object per frame");
            return serde_json::from_str(data[0]).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_live_stream_sends_connected_then_envelopes() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let b = srv.agent("bob").await;
    a.write("before.txt", "x").await; // before connecting: not replayed

    let admin: Client = srv.admin();
    let open = |q: &str| {
        admin
            .request(
                reqwest::Method::GET,
                &format!("{}/stream{q}", hooks_url(&srv)),
            )
            .send()
    };
    let all = open("").await.unwrap();
    assert_eq!(all.status(), StatusCode::OK);
    assert!(
        all.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let only_bob = open("?namespace=bob").await.unwrap();
    let (mut all, mut bob_stream) = (all.bytes_stream(), only_bob.bytes_stream());
    let (mut buf_all, mut buf_bob) = (String::new(), String::new());

    assert_eq!(
        next_frame(&mut all, &mut buf_all).await["type"],
        "connected"
    );
    assert_eq!(
        next_frame(&mut bob_stream, &mut buf_bob).await["type"],
        "connected"
    );
    a.write("one.txt", "1").await;
    b.write("two.txt", "2").await;
    let first = next_frame(&mut all, &mut buf_all).await;
    let second = next_frame(&mut all, &mut buf_all).await;
    assert_eq!(first["data"]["path"], "workspace/one.txt");
    assert_eq!(second["data"]["path"], "workspace/two.txt");
    for field in ["id", "type", "api_version", "workspace_id", "created_at"] {
        assert!(first[field].is_string(), "{field}");
    }
    let bobs = next_frame(&mut bob_stream, &mut buf_bob).await;
    assert_eq!(bobs["namespace"], "bob");
    assert_eq!(bobs["data"]["path"], "workspace/two.txt");

    let forbidden = srv.client(&srv.mint("ops", None).await, None);
    let r = forbidden.get(&format!("{}/stream", hooks_url(&srv))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Scope comes before input: a key that may not stream is refused whatever it asks.
    let r = forbidden
        .get(&format!("{}/stream?namespace=..", hooks_url(&srv)))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin
        .get(&format!("{}/stream?namespace=..", hooks_url(&srv)))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
}

#[tokio::test]
async fn shutdown_ends_live_streams() {
    let mut srv = TestServer::start().await;
    let resp = srv
        .admin()
        .request(reqwest::Method::GET, &format!("{}/stream", hooks_url(&srv)))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    assert_eq!(next_frame(&mut stream, &mut buf).await["type"], "connected");
    srv.signal_shutdown();
    tokio::time::timeout(Duration::from_secs(10), srv.join())
        .await
        .expect("graceful shutdown must not wait on open streams");
}

/// Opens the live stream with `key` and waits for its `connected` frame.
async fn open_stream(
    srv: &TestServer,
    key: &str,
) -> (
    impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    String,
) {
    let resp = srv
        .client(key, None)
        .request(reqwest::Method::GET, &format!("{}/stream", hooks_url(srv)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    assert_eq!(next_frame(&mut stream, &mut buf).await["type"], "connected");
    (stream, buf)
}

/// Reads until the stream ends; fails if it carries an event or stays open 10 s.
async fn ends_without_events(
    mut stream: impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    mut buf: String,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the stream of a revoked key must end");
        match next {
            None | Some(Err(_)) => break,
            Some(Ok(chunk)) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
        }
    }
    assert!(
        !buf.contains("data:"),
        "a revoked key's stream carried {buf:?}"
    );
}

#[tokio::test]
async fn revoking_or_rotating_an_admin_key_ends_its_live_stream() {
    let srv = TestServer::start().await;
    let a = srv.agent("tenant").await;
    let admin = srv.admin();
    let mint_admin = |name: &'static str| {
        let admin = admin.clone();
        let ws = srv.ws.clone();
        async move {
            let r = admin
                .post(
                    &format!("/v1/workspaces/{ws}/keys"),
                    json!({ "name": name, "namespace": null, "admin": true }),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
            (
                r.json["api_key"].as_str().unwrap().to_owned(),
                r.json["key_id"].as_str().unwrap().to_owned(),
            )
        }
    };

    let (revoked, revoked_id) = mint_admin("second-admin").await;
    let (stream, buf) = open_stream(&srv, &revoked).await;
    let r = admin
        .delete(&format!("/v1/workspaces/{}/keys/{revoked_id}", srv.ws))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    a.write("after-revoke.txt", "secret").await;
    a.sh("echo SECRET-STDOUT-AFTER-REVOKE").await;
    ends_without_events(stream, buf).await;

    let (rotated, rotated_id) = mint_admin("third-admin").await;
    let (stream, buf) = open_stream(&srv, &rotated).await;
    let r = admin
        .post(
            &format!("/v1/workspaces/{}/keys/{rotated_id}/rotate", srv.ws),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    a.write("after-rotate.txt", "secret").await;
    ends_without_events(stream, buf).await;

    // A stream of a key still valid goes on.
    let (mut stream, mut buf) = open_stream(&srv, support::ADMIN_KEY).await;
    a.write("seen.txt", "x").await;
    assert_eq!(
        next_frame(&mut stream, &mut buf).await["data"]["path"],
        "workspace/seen.txt"
    );
}
