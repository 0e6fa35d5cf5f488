//! The events feed (spec §6.3, §7): ordering, exclusive `since`, cursor paging under every
//! filter combination, the envelope, and who may read what.

mod support;

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Client, TestServer};

async fn feed(c: &Client, ws: &str, query: &str) -> (StatusCode, Vec<Value>, Option<String>) {
    let r = c.get(&format!("/v1/workspaces/{ws}/events?{query}")).await;
    let events = r.json["events"].as_array().cloned().unwrap_or_default();
    let next = r.json["next_cursor"].as_str().map(str::to_owned);
    (r.status, events, next)
}

/// Every page of a query, following cursors; asserts pages are disjoint and ordered.
async fn all_pages(c: &Client, ws: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("{query}&limit={limit}");
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let (status, page, next) = feed(c, ws, &q).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.len() <= limit as usize);
        out.extend(page);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let ids: HashSet<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), out.len(), "pages overlap");
    let times: Vec<&str> = out
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "not strictly newest first: {times:?}"
    );
    out
}

#[tokio::test]
async fn feed_order_since_and_cursors() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let b = srv.agent("bob").await;
    for i in 0..7 {
        a.write(&format!("a{i}.txt"), "x").await;
        b.write(&format!("b{i}.txt"), "x").await;
    }
    a.remove("a0.txt").await;
    let admin = srv.admin();
    let ws = srv.ws.as_str();

    let (status, newest, _) = feed(&admin, ws, "limit=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(newest[0]["type"], "file.deleted");
    let e = &newest[0];
    for field in [
        "id",
        "event_id",
        "type",
        "api_version",
        "workspace_id",
        "created_at",
        "key_id",
    ] {
        assert!(e[field].is_string(), "{field} missing: {e}");
    }
    assert_eq!(e["id"], e["event_id"]);
    assert_eq!(e["workspace_id"], ws);
    assert_eq!(e["namespace"], "alice");
    assert_eq!(e["data"]["path"], "workspace/a0.txt");
    assert_eq!(e["created_at"].as_str().unwrap().len(), 27);

    // Cursor paging covers the whole log exactly once, for every filter combination.
    let everything = all_pages(&admin, ws, "", 4).await;
    assert_eq!(
        everything.len(),
        14 + 1 + 3,
        "writes, a delete, and key.created for the admin key and two agents"
    );
    let alice_writes = all_pages(&admin, ws, "namespace=alice&types=file.written", 2).await;
    assert_eq!(alice_writes.len(), 7);
    assert!(
        alice_writes
            .iter()
            .all(|e| e["namespace"] == "alice" && e["type"] == "file.written")
    );
    let two_types = all_pages(&admin, ws, "types=file.deleted,key.created", 1).await;
    assert_eq!(two_types.len(), 4);

    // `since` is exclusive, in both UTC spellings.
    let pivot = &alice_writes[3]; // the fourth-newest alice write
    let at = pivot["created_at"].as_str().unwrap().to_owned();
    let plus = at.replace('Z', "+00:00");
    for since in [at.as_str(), plus.as_str()] {
        let q = format!(
            "namespace=alice&types=file.written&since={}",
            urlencode(since)
        );
        let newer = all_pages(&admin, ws, &q, 2).await;
        assert_eq!(newer.len(), 3, "since={since}");
        assert!(newer.iter().all(|e| e["id"] != pivot["id"]));
    }

    // Bad parameters are 4xx with a detail.
    for q in [
        "since=yesterday",
        "cursor=nope",
        "limit=0",
        "limit=100000",
        "namespace=../x",
        "limit=x",
    ] {
        let r = admin.get(&format!("/v1/workspaces/{ws}/events?{q}")).await;
        assert!(r.status.is_client_error(), "{q}: {}", r.status);
        assert!(!r.detail().is_empty());
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn times_increase_in_commit_order_under_concurrency() {
    // The exclusive-`since` poll loop only works if no event can commit with a time at or
    // below one a poller has already seen.
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.write(&format!("d{}/f{i}", i % 6), "x").await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    let events = all_pages(&srv.admin(), &srv.ws, "namespace=alice", 1000).await;
    assert_eq!(events.len(), 60);
}

#[tokio::test]
async fn scopes_decide_what_a_key_may_read() {
    let srv = TestServer::start().await;
    let a = srv.agent("alice").await;
    let b = srv.agent("bob").await;
    a.write("a.txt", "x").await;
    b.write("b.txt", "x").await;
    let ws = srv.ws.as_str();

    // A locked key sees its own namespace only, by default or by name.
    for q in ["", "namespace=alice"] {
        let (status, evs, _) = feed(&a, ws, q).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!evs.is_empty());
        assert!(evs.iter().all(|e| e["namespace"] == "alice"), "{q}");
    }
    let r = a
        .get(&format!("/v1/workspaces/{ws}/events?namespace=bob"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.detail(), "This key is scoped to namespace 'alice'");

    // An unlocked workspace key must name one; it cannot enumerate.
    let ops = srv.client(&srv.mint("ops", None).await, None);
    assert_eq!(feed(&ops, ws, "").await.0, StatusCode::FORBIDDEN);
    let (status, evs, _) = feed(&ops, ws, "namespace=bob").await;
    assert_eq!(status, StatusCode::OK);
    assert!(evs.iter().all(|e| e["namespace"] == "bob"));

    // Admins see everything, workspace-level events included.
    let (_, evs, _) = feed(&srv.admin(), ws, "limit=100").await;
    let namespaces: HashSet<Option<&str>> = evs.iter().map(|e| e["namespace"].as_str()).collect();
    assert_eq!(
        namespaces,
        HashSet::from([Some("alice"), Some("bob"), None])
    );

    // Another workspace's feed, and anonymous callers, get nothing.
    let other = a.get("/v1/workspaces/ws-0000000000000000/events").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let anon = srv
        .anonymous()
        .get(&format!("/v1/workspaces/{ws}/events"))
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}
