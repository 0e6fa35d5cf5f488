//! Browser login of the CLI (spec §5.2) over HTTP: every state a login passes through
//! (pending, approved and taken once, denied, expired, unknown), who may decide one, the limit
//! on guessing codes, and that neither the codes nor the key they lead to are kept in the
//! database as given.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, TestServer};

async fn start(srv: &TestServer) -> Value {
    // No body at all, as the CLI sends it.
    let r = srv
        .anonymous()
        .send(
            srv.anonymous()
                .request(reqwest::Method::POST, "/v1/auth/device/start"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    r.json
}

async fn poll(srv: &TestServer, device_code: &str) -> Value {
    let r = srv
        .anonymous()
        .post(
            "/v1/auth/device/poll",
            json!({ "device_code": device_code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    r.json
}

fn decide_url(srv: &TestServer, verb: &str) -> String {
    format!("/v1/workspaces/{}/device/{verb}", srv.ws)
}

#[tokio::test]
async fn an_approved_login_hands_out_its_key_once() {
    let srv = TestServer::start().await;
    let started = start(&srv).await;
    let code = started["user_code"].as_str().unwrap();
    let device = started["device_code"].as_str().unwrap();
    assert!(regex_like_user_code(code), "{code} is not like ABCD-1234");
    assert_eq!(started["interval"], 2);
    assert_eq!(started["expires_in"], 600);
    assert_eq!(
        started["verification_uri_complete"],
        format!("{}/console/device?code={code}", srv.base)
    );
    assert_eq!(poll(&srv, device).await, json!({ "status": "pending" }));

    // Only an admin of the workspace decides.
    let agent = srv.agent("elsewhere").await;
    let r = agent
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": code, "namespace": "laptop-ns" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json);
    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": code, "namespace": "../etc" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json);
    assert_eq!(
        poll(&srv, device).await["status"],
        "pending",
        "a refused approval changes nothing"
    );

    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": code.to_lowercase(), "namespace": "laptop-ns", "name": "laptop" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json, json!({ "status": "approved" }));
    let r = srv
        .admin()
        .post(&decide_url(&srv, "deny"), json!({ "user_code": code }))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "decided already: {:?}",
        r.json
    );

    let approved = poll(&srv, device).await;
    assert_eq!(approved["status"], "approved", "{approved:?}");
    assert_eq!(approved["workspace_id"], srv.ws.as_str());
    let key = approved["api_key"].as_str().unwrap();
    assert_eq!(
        poll(&srv, device).await,
        json!({ "status": "expired" }),
        "the key is handed out once"
    );

    // The key is what `POST …/keys` would have minted, credited to the approving admin.
    let me = Client::at(&srv.base, Some(key), None).get("/v1/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["namespace"], "laptop-ns");
    assert_eq!(me.json["key_name"], "laptop");
    assert_eq!(me.json["scope"], "workspace");
    let admin_id = srv.admin().get("/v1/me").await.json["key_id"].clone();
    let events = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?types=key.created",
            srv.ws
        ))
        .await;
    let created = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["key_id"] == me.json["key_id"])
        .expect("a key.created event");
    assert_eq!(created["key_id"], admin_id);
    assert_eq!(created["data"]["namespace"], "laptop-ns");

    // Neither code nor the key is in the database as given.
    let dir = srv.stop().await;
    let mut stored = Vec::new();
    for name in ["warren.db", "warren.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            stored.extend(bytes);
        }
    }
    assert!(!stored.is_empty());
    let bare = code.replace('-', "");
    for secret in [device, code, bare.as_str(), key] {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored as given"
        );
    }
}

fn regex_like_user_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 9
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4] == b'-'
        && b[5..].iter().all(u8::is_ascii_digit)
}

#[tokio::test]
async fn denied_unknown_and_malformed_logins() {
    let srv = TestServer::start().await;
    let started = start(&srv).await;
    let device = started["device_code"].as_str().unwrap();
    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "deny"),
            json!({ "user_code": started["user_code"] }),
        )
        .await;
    assert_eq!(r.json, json!({ "status": "denied" }));
    for _ in 0..2 {
        assert_eq!(poll(&srv, device).await, json!({ "status": "denied" }));
    }
    // Unknown device codes are expired, with 200: the CLI aborts on any 4xx.
    assert_eq!(
        poll(&srv, "no-such-code").await,
        json!({ "status": "expired" })
    );
    assert_eq!(poll(&srv, "").await, json!({ "status": "expired" }));
    let r = srv
        .anonymous()
        .post("/v1/auth/device/poll", json!({ "code": device }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": "not a code" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    assert!(!r.detail().is_empty());
}

#[tokio::test]
async fn a_login_nobody_approves_expires() {
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), |d| warren::config::Config {
        device_login_ttl: Duration::from_millis(500),
        ..support::config(d)
    })
    .await;
    let started = start(&srv).await;
    assert_eq!(
        poll(&srv, started["device_code"].as_str().unwrap()).await["status"],
        "pending"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        poll(&srv, started["device_code"].as_str().unwrap()).await,
        json!({ "status": "expired" })
    );
    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": started["user_code"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json);
}

/// Guessing codes through approval: after ten unknown codes an admin key is refused (429,
/// with Retry-After) even for a real one, while another admin key still decides.
#[tokio::test]
async fn guessing_codes_is_cut_short() {
    let srv = TestServer::start().await;
    let started = start(&srv).await;
    let guesser_key = {
        let r = srv
            .admin()
            .post(
                &format!("/v1/workspaces/{}/keys", srv.ws),
                json!({ "name": "guesser", "admin": true }),
            )
            .await;
        r.json["api_key"].as_str().unwrap().to_owned()
    };
    let guesser = Client::at(&srv.base, Some(&guesser_key), None);
    for i in 0..10 {
        let r = guesser
            .post(
                &decide_url(&srv, "approve"),
                json!({ "user_code": format!("ABCD-{:04}", 1000 + i) }),
            )
            .await;
        // A guess is the real code with odds of 1 in 1.6e9.
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json);
    }
    let r = guesser
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": started["user_code"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.json);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        poll(&srv, started["device_code"].as_str().unwrap()).await["status"],
        "pending"
    );
    let r = srv
        .admin()
        .post(
            &decide_url(&srv, "approve"),
            json!({ "user_code": started["user_code"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
}
