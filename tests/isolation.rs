//! Isolation, tested by attack through the public API only. A key locked to `attacker` tries
//! every path trick we know to read, list, write or delete `victim`'s files or the server's own
//! files; each attempt must fail cleanly (4xx with a detail), leak no canary, and change nothing.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Client, Resp, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VICTIM_CANARY: &str = "VICTIM-CANARY-7f3a9c";

struct Scene {
    srv: TestServer,
    attacker: Client,
    victim: Client,
    /// Canaries of the server's own secrets, which must never appear in a response.
    host_secrets: Vec<String>,
}

async fn scene() -> Scene {
    let srv = TestServer::start().await;
    let victim = srv.agent("victim").await;
    assert_eq!(
        victim.write("secret.txt", VICTIM_CANARY).await.status,
        StatusCode::OK
    );
    assert_eq!(
        victim.write("dir/inner.txt", VICTIM_CANARY).await.status,
        StatusCode::OK
    );
    let attacker = srv.agent("attacker").await;
    assert_eq!(
        attacker.write("mine.txt", "mine").await.status,
        StatusCode::OK
    );
    let secret = std::fs::read_to_string(srv.dir.path().join("server.secret")).unwrap_or_default();
    Scene {
        host_secrets: vec![support::ADMIN_KEY.to_owned(), secret]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        srv,
        attacker,
        victim,
    }
}

impl Scene {
    fn assert_clean(&self, what: &str, status: u16, body: &[u8]) {
        assert!(
            (400..500).contains(&status),
            "{what}: expected a 4xx, got {status}: {}",
            String::from_utf8_lossy(body)
        );
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(VICTIM_CANARY),
            "{what}: leaked the victim's data: {text}"
        );
        for s in &self.host_secrets {
            assert!(!text.contains(s.as_str()), "{what}: leaked a server secret");
        }
        if status != 404 && status != 405 {
            let detail = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned));
            assert!(
                detail.is_some_and(|d| !d.is_empty()),
                "{what}: no detail: {text}"
            );
        }
    }

    fn check(&self, what: &str, r: &Resp) {
        self.assert_clean(what, r.status.as_u16(), &r.bytes);
    }

    /// The victim's files are exactly as planted.
    async fn victim_intact(&self) {
        assert_eq!(
            self.victim.read("secret.txt").await.json["content"],
            VICTIM_CANARY
        );
        assert_eq!(
            self.victim.paths("workspace/", true).await,
            [
                "workspace/dir",
                "workspace/dir/inner.txt",
                "workspace/secret.txt"
            ]
        );
    }

    /// Every object on disk belongs to the attacker's or the victim's namespace as planted.
    async fn objects_in_place(&self) {
        let ws = &self.srv.ws;
        for rel in self.srv.objects().await {
            let ok = rel.starts_with(&format!("ws/{ws}/ns/attacker/files/"))
                || rel == format!("ws/{ws}/ns/victim/files/secret.txt")
                || rel == format!("ws/{ws}/ns/victim/files/dir/inner.txt");
            assert!(ok, "object outside its namespace: {rel}");
        }
    }
}

/// Paths that try to leave the namespace, as they would be typed or encoded by an attacker.
const ESCAPES: &[&str] = &[
    "../victim/secret.txt",
    "../../victim/secret.txt",
    "workspace/../victim/secret.txt",
    "dir/../../victim/secret.txt",
    "./../victim/secret.txt",
    "..\\victim\\secret.txt",
    "secret.txt\0",
    "..",
    "a/..",
    "x/../../../../../../etc/passwd",
    "..//victim/secret.txt",
    "../attacker/../victim/secret.txt",
    "\\..\\victim",
    "workspace/../../victim",
];

#[tokio::test]
async fn read_side_escapes_fail() {
    let s = scene().await;
    let mut attempts = 0;
    for p in ESCAPES {
        let r = s.attacker.read(p).await;
        s.check(&format!("content {p:?}"), &r);
        let r = s.attacker.list(p, true).await;
        s.check(&format!("list {p:?}"), &r);
        attempts += 2;
    }
    // Absolute paths mean the namespace root, never the host's.
    for p in [
        "/etc/passwd",
        "/proc/self/environ",
        "//victim/secret.txt",
        "/workspace/../x",
    ] {
        let r = s.attacker.read(p).await;
        s.check(&format!("content {p:?}"), &r);
        attempts += 1;
    }
    // Overlong paths and components.
    for p in [
        "a/".repeat(5000),
        "x".repeat(300),
        format!("{}/{}", "y".repeat(256), "z"),
    ] {
        let r = s.attacker.read(&p).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        s.check("overlong", &r);
        attempts += 1;
    }
    assert!(attempts >= 30);
    s.victim_intact().await;
}

#[tokio::test]
async fn write_side_escapes_fail_and_change_nothing() {
    let s = scene().await;
    for p in ESCAPES.iter().copied().chain(["/etc/cron.d/x", "/tmp/x"]) {
        let r = s.attacker.write(p, "pwned").await;
        s.check(&format!("write {p:?}"), &r);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "write {p:?}");
        let r = s.attacker.remove(p).await;
        s.check(&format!("delete {p:?}"), &r);
    }
    // Names that look like object keys of another namespace stay inside the caller's tree.
    let ws = s.srv.ws.clone();
    for p in [
        format!("ws/{ws}/ns/victim/files/secret.txt"),
        "ns/victim/files/secret.txt".to_owned(),
        "%2e%2e/victim/secret.txt".to_owned(),
        // `....` is an ordinary file name on Linux, not a parent reference.
        "....//....//victim".to_owned(),
    ] {
        let r = s.attacker.write(&p, "pwned").await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
        assert_eq!(
            r.json["path"],
            format!("workspace/{}", p.replace("//", "/"))
        );
    }
    s.victim_intact().await;
    s.objects_in_place().await;
}

#[tokio::test]
async fn url_path_escapes_fail() {
    let s = scene().await;
    // Percent-encoded separators and dots are decoded once, then validated.
    for p in [
        "..%2Fvictim%2Fsecret.txt",
        "%2e%2e/victim/secret.txt",
        "%2E%2E%2F%2E%2E%2Fvictim%2Fsecret.txt",
        "a/%2e%2e/%2e%2e/victim/secret.txt",
        "..%5Cvictim%5Csecret.txt",
        "secret.txt%00",
        "%2Fetc%2Fpasswd",
        "%ff%fe",
    ] {
        let r = s.attacker.download(p).await;
        s.check(&format!("GET /files/{p}"), &r);
        let r = s.attacker.upload(p, b"pwned".to_vec()).await;
        s.check(&format!("PUT /files/{p}"), &r);
    }
    // Double encoding is a literal name inside the namespace, not a traversal.
    let r = s.attacker.download("%252e%252e/victim/secret.txt").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.victim_intact().await;
    s.objects_in_place().await;
}

/// Sends one request with a request line exactly as given (client libraries would normalize
/// `..` away before it reached us).
async fn raw(s: &Scene, method: &str, target: &str, body: &str) -> (u16, Vec<u8>) {
    let addr = s.srv.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         X-Namespace: attacker\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.attacker.key.as_deref().unwrap(),
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    sock.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.as_bytes().to_vec())
}

#[tokio::test]
async fn raw_request_lines_cannot_traverse() {
    let s = scene().await;
    for target in [
        "/files/../victim/secret.txt",
        "/files/../../ws/victim/secret.txt",
        "/files/./../victim/secret.txt",
        "/files/..%2f..%2fvictim/secret.txt",
        "/files//etc/passwd",
        "/files/a/../../victim/secret.txt",
        "/v1/files/content?path=../victim/secret.txt",
        "/v1/files/content?path=..%2Fvictim%2Fsecret.txt",
        "/v1/files?path=..&recursive=true",
        "/v1/files?path=workspace/..%2F..%2F&recursive=true",
    ] {
        let (status, body) = raw(&s, "GET", target, "").await;
        s.assert_clean(&format!("GET {target}"), status, &body);
    }
    for target in [
        "/files/../victim/secret.txt",
        "/files/..%2Fvictim%2Fsecret.txt",
    ] {
        let (status, body) = raw(&s, "PUT", target, "pwned").await;
        s.assert_clean(&format!("PUT {target}"), status, &body);
    }
    s.victim_intact().await;
    s.objects_in_place().await;
}

#[tokio::test]
async fn namespace_header_cannot_switch_tenants() {
    let s = scene().await;
    let key = s.attacker.key.clone().unwrap();
    for ns in [
        "victim",
        "VICTIM",
        "../victim",
        "attacker/../victim",
        "victim\t",
        "*",
        "",
    ] {
        let c = s.srv.client(&key, Some(ns));
        for r in [
            c.read("secret.txt").await,
            c.list("workspace/", true).await,
            c.download("secret.txt").await,
            c.write("pwn.txt", "x").await,
            c.upload("pwn.txt", b"x".to_vec()).await,
            c.remove("secret.txt").await,
        ] {
            s.check(&format!("X-Namespace {ns:?}"), &r);
            if ns == "victim" {
                assert_eq!(r.status, StatusCode::FORBIDDEN);
                assert_eq!(r.detail(), "This key is scoped to namespace 'attacker'");
            }
        }
    }
    // Without the header a locked key acts on its own namespace.
    let own = s.srv.client(&key, None);
    assert_eq!(own.read("mine.txt").await.json["content"], "mine");
    s.victim_intact().await;
}

#[tokio::test]
async fn unlocked_keys_must_name_a_valid_namespace() {
    let s = scene().await;
    let ops = s.srv.mint("ops", None).await;
    let r = s.srv.client(&ops, None).read("secret.txt").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.detail().contains("X-Namespace"));
    for bad in ["../victim", "victim/x", ".", "..", "a b", &"n".repeat(65)] {
        let r = s.srv.client(&ops, Some(bad)).read("secret.txt").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        s.check(bad, &r);
    }
    // An unlocked workspace key may read any namespace it names: that is its purpose.
    let r = s.srv.client(&ops, Some("victim")).read("secret.txt").await;
    assert_eq!(r.json["content"], VICTIM_CANARY);
}

#[tokio::test]
async fn admin_keys_cannot_touch_files() {
    let s = scene().await;
    let admin = s.srv.admin().with_ns(Some("victim"));
    let checks = [
        admin.read("secret.txt").await,
        admin.list("workspace/", false).await,
        admin.download("secret.txt").await,
        admin.write("x", "y").await,
        admin.upload("x", b"y".to_vec()).await,
        admin.remove("secret.txt").await,
    ];
    for r in checks {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        s.check("admin on files", &r);
    }
    s.victim_intact().await;
}

#[tokio::test]
async fn revoked_and_forged_keys_get_nothing() {
    let s = scene().await;
    let victim_key = s.victim.key.clone().unwrap();
    let me = s.victim.get("/v1/me").await;
    let id = me.json["key_id"].as_str().unwrap().to_owned();
    let r = s
        .srv
        .admin()
        .delete(&format!("/v1/workspaces/{}/keys/{id}", s.srv.ws))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let forged = format!("{}x", &victim_key[..victim_key.len() - 1]);
    for key in [victim_key.as_str(), forged.as_str(), "Bearer", "trove-sk-"] {
        let c = s.srv.client(key, Some("victim"));
        for r in [c.read("secret.txt").await, c.list("workspace/", true).await] {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            s.check("revoked/forged", &r);
        }
    }
    // A scoped key cannot mint itself broader access.
    let r = s
        .attacker
        .send(
            s.attacker
                .request(Method::POST, &format!("/v1/workspaces/{}/keys", s.srv.ws))
                .json(&json!({ "name": "x", "namespace": "victim" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
