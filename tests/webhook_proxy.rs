//! Webhook deliveries and the proxy variables of the server's environment. An inherited
//! `HTTP_PROXY` would resolve every destination at the proxy, past the address rule, so it is
//! ignored; a proxy is used only when configured explicitly. Its own test binary: it sets the
//! process environment.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback "proxy" that answers 200 to everything and counts what reached it.
async fn fake_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, hits)
}

async fn test_delivery(srv: &TestServer, url: &str) -> Value {
    let hooks = format!("/v1/workspaces/{}/webhooks", srv.ws);
    let r = srv.admin().post(&hooks, json!({ "url": url })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["webhook_id"].as_str().unwrap();
    srv.admin()
        .post(&format!("{hooks}/{id}/test"), Value::Null)
        .await
        .json
}

#[tokio::test]
#[allow(unsafe_code)]
async fn proxy_variables_in_the_environment_do_not_carry_deliveries() {
    let (proxy, hits) = fake_proxy().await;
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        // SAFETY: set before the server (or any client reading the environment) starts; this
        // binary holds only this test.
        unsafe { std::env::set_var(var, &proxy) };
    }
    // The test's own client talks to the server directly.
    unsafe { std::env::set_var("NO_PROXY", "127.0.0.1,localhost") };
    let public_only = |d: &std::path::Path| warren::config::Config {
        webhooks: Default::default(),
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), public_only).await;
    for url in [
        "http://internal-db.corp.invalid:8080/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let out = test_delivery(&srv, url).await;
        assert_eq!(out["ok"], false, "{url}: {out:?}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a delivery went to the proxy"
    );

    // An explicitly configured proxy is used (and then owns the rule for names).
    let proxied = |d: &std::path::Path| warren::config::Config {
        webhooks: warren::services::webhooks::WebhookSettings {
            proxy: Some(proxy.clone()),
            ..Default::default()
        },
        ..support::config(d)
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), proxied).await;
    let out = test_delivery(&srv, "http://receiver.example.invalid/hook").await;
    assert_eq!(out["ok"], true, "{out:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Literal private addresses are still refused at creation.
    let r = srv
        .admin()
        .post(
            &format!("/v1/workspaces/{}/webhooks", srv.ws),
            json!({ "url": "http://10.0.0.1/x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
