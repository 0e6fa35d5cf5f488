//! Test harness: a real Warren server on an ephemeral loopback port, with its own data
//! directory, and a small HTTP client that speaks to it the way trove-sdk does.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren::config::Config;
use warren::server::Server;
use warren::services::Services;
use warren::services::exec::ExecSettings;
use warren::services::webhooks::WebhookSettings;

pub const ADMIN_KEY: &str = "trove-sk-test-admin-0123456789abcdef";
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestServer {
    pub base: String,
    pub ws: String,
    pub services: Arc<Services>,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub fn config(dir: &Path) -> Config {
    // The sandbox uid must be able to reach working copies below the data directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        public_url: None,
        device_login_ttl: std::time::Duration::from_secs(600),
        data_dir: dir.to_owned(),
        database_url: database_url(dir),
        storage_url: storage_url(dir),
        admin_key: Some(ADMIN_KEY.to_owned()),
        secret: Some(SECRET.to_owned()),
        // Receivers in tests listen on loopback; retries are quick so tests stay short.
        webhooks: WebhookSettings {
            allow_private: true,
            timeout: Duration::from_secs(2),
            max_attempts: 4,
            backoff: Duration::from_millis(100),
            poll: Duration::from_millis(50),
            proxy: None,
        },
        retention: Default::default(),
        exec: ExecSettings::with_dir(dir.join("exec")),
        http: Default::default(),
        cluster: Default::default(),
        // Every test node runs on this host, so its directory is shared by all of them.
        shared_storage: true,
    }
}

/// The object storage of a server on `dir`: a directory inside it or, when
/// `WARREN_TEST_STORAGE` names a shared store (`s3://bucket/prefix`), a prefix of its own there
/// (the same for a server restarted on the same directory).
pub fn storage_url(dir: &Path) -> String {
    match std::env::var("WARREN_TEST_STORAGE") {
        Ok(base) => format!("{}/{}", base.trim_end_matches('/'), dir_tag(dir)),
        Err(_) => format!("file://{}", dir.join("objects").display()),
    }
}

/// A name for `dir` that shared services (a database server, a bucket) can hold it under.
fn dir_tag(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("h_{:016x}", h.finish())
}

/// The metadata database of a server on `dir`: SQLite inside it or, when `WARREN_TEST_PG_URL`
/// names a PostgreSQL server, a database of its own there (made on first use, so a server
/// restarted on the same directory finds its data again).
pub fn database_url(dir: &Path) -> String {
    let Ok(server) = std::env::var("WARREN_TEST_PG_URL") else {
        return format!("sqlite://{}", dir.join("warren.db").display());
    };
    let name = dir_tag(dir);
    let url = format!(
        "{}/{name}",
        server.rsplit_once('/').expect("a database URL").0
    );
    // On a thread of its own: callers may be inside a runtime that must not block.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::{Connection, Executor};
                let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                )
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
                if !exists {
                    admin
                        .execute(format!("CREATE DATABASE {name}").as_str())
                        .await
                        .unwrap();
                }
            })
    })
    .join()
    .unwrap();
    url
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(tempfile::tempdir().unwrap(), config).await
    }

    /// Starts on `dir` (kept for the server's life) with a config derived from it.
    pub async fn start_with(dir: tempfile::TempDir, make: impl Fn(&Path) -> Config) -> Self {
        let config = make(dir.path());
        let blobs = warren_storage::BlobStore::open(&config.storage_url).unwrap();
        Self::start_with_blobs(dir, config, blobs).await
    }

    /// Starts on a given blob store (to inject storage faults).
    pub async fn start_with_blobs(
        dir: tempfile::TempDir,
        config: Config,
        blobs: warren_storage::BlobStore,
    ) -> Self {
        let server = Server::start_with_blobs(&config, blobs).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let services = Arc::clone(&server.services);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            ws: services.default_workspace.to_string(),
            base,
            services,
            dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown: in-flight requests finish, then the server task ends.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap();
        self.dir
    }

    pub fn signal_shutdown(&mut self) {
        self.shutdown.take().unwrap().send(()).ok();
    }

    /// Waits for a shutdown signalled earlier; returns the data directory.
    pub async fn join(mut self) -> tempfile::TempDir {
        self.task.take().unwrap().await.unwrap();
        self.dir
    }

    pub fn admin(&self) -> Client {
        self.client(ADMIN_KEY, None)
    }

    /// Every object the server has stored, as keys below its storage root, sorted; read
    /// through `object_store`, so the same on a directory and in a bucket.
    pub async fn objects(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let blobs = &self.services.blobs;
        let root = blobs.layout().root();
        let listed: Vec<_> = blobs
            .object_store()
            .list(Some(root))
            .try_collect()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed
            .iter()
            .map(|m| {
                let key = m.location.as_ref();
                key.strip_prefix(root.as_ref())
                    .unwrap_or(key)
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect();
        keys.sort();
        keys
    }

    pub fn client(&self, key: &str, ns: Option<&str>) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            key: Some(key.to_owned()),
            ns: ns.map(str::to_owned),
        }
    }

    pub fn anonymous(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            key: None,
            ns: None,
        }
    }

    /// Mints a key through the API and returns its plaintext.
    pub async fn mint(&self, name: &str, ns: Option<&str>) -> String {
        let r = self
            .admin()
            .post(
                &format!("/v1/workspaces/{}/keys", self.ws),
                json!({ "name": name, "namespace": ns, "admin": false }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        r.json["api_key"].as_str().unwrap().to_owned()
    }

    /// A client with a fresh key locked to `ns`.
    pub async fn agent(&self, ns: &str) -> Client {
        let key = self.mint(ns, Some(ns)).await;
        self.client(&key, Some(ns))
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    pub key: Option<String>,
    pub ns: Option<String>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Resp {
    pub fn detail(&self) -> &str {
        self.json["detail"].as_str().unwrap_or("")
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:port`), one not started by the test.
    pub fn at(base: &str, key: Option<&str>, ns: Option<&str>) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            key: key.map(str::to_owned),
            ns: ns.map(str::to_owned),
        }
    }

    pub fn with_ns(&self, ns: Option<&str>) -> Client {
        Client {
            ns: ns.map(str::to_owned),
            ..self.clone()
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            rb = rb.bearer_auth(k);
        }
        if let Some(ns) = &self.ns {
            rb = rb.header("X-Namespace", ns);
        }
        rb
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap().to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Resp {
        self.send(self.request(Method::POST, path).body(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// The raw body of a GET.
    pub async fn download_raw(&self, path: &str) -> Vec<u8> {
        let r = self.send(self.request(Method::GET, path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.json);
        r.bytes
    }

    /// Runs a command through `POST /v1/exec`.
    pub async fn exec(&self, command: &str) -> Resp {
        self.post("/v1/exec", json!({ "command": command })).await
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn sh(&self, command: &str) -> String {
        let r = self.exec(command).await;
        assert_eq!(r.status, StatusCode::OK, "{command}: {:?}", r.json);
        assert_eq!(r.json["exit_code"], 0, "{command}: {:?}", r.json);
        r.json["stdout"].as_str().unwrap().to_owned()
    }

    pub async fn write(&self, path: &str, content: &str) -> Resp {
        self.post("/write", json!({ "path": path, "content": content }))
            .await
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> Resp {
        self.send(
            self.request(Method::PUT, &format!("/files/{path}"))
                .body(bytes),
        )
        .await
    }

    pub async fn download(&self, path: &str) -> Resp {
        self.get(&format!("/files/{path}")).await
    }

    pub async fn list(&self, path: &str, recursive: bool) -> Resp {
        let mut url = reqwest::Url::parse("http://x/v1/files").unwrap();
        url.query_pairs_mut().append_pair("path", path);
        if recursive {
            url.query_pairs_mut().append_pair("recursive", "true");
        }
        self.get(&format!("/v1/files?{}", url.query().unwrap()))
            .await
    }

    pub async fn read(&self, path: &str) -> Resp {
        let mut url = reqwest::Url::parse("http://x/v1/files/content").unwrap();
        url.query_pairs_mut().append_pair("path", path);
        self.get(&format!("/v1/files/content?{}", url.query().unwrap()))
            .await
    }

    pub async fn remove(&self, path: &str) -> Resp {
        self.post("/delete", json!({ "path": path })).await
    }

    /// Paths of a listing, in order.
    pub async fn paths(&self, path: &str, recursive: bool) -> Vec<String> {
        let r = self.list(path, recursive).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        r.json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Every regular file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A loopback TCP relay (in front of PostgreSQL, say) that can be cut (every connection through it
/// dropped, new ones refused) and healed: a database lost and back, for one server only.
pub struct Gate {
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl Gate {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            open: Default::default(),
            cut: Default::default(),
        };
        gate.open.store(true, Ordering::SeqCst);
        let (open, cut) = (gate.open.clone(), gate.cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let token = cut.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        gate
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        std::mem::take(&mut *token).cancel();
    }

    pub fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` (`scheme://user@host:port/db`) with its host and port replaced by this gate's.
    pub fn route(&self, url: &str) -> String {
        let (prefix, rest) = url.split_once('@').expect("a URL with user@host");
        let (_, path) = rest.split_once('/').expect("a URL with a path");
        format!("{prefix}@{}/{path}", self.addr)
    }

    /// The host and port of `url` (`scheme://user@host:port/db`).
    pub fn upstream_of(url: &str) -> std::net::SocketAddr {
        let (_, rest) = url.split_once('@').expect("a URL with user@host");
        let (host_port, _) = rest.split_once('/').expect("a URL with a path");
        host_port.parse().expect("host:port")
    }
}

/// The `warren` binary run as an operator runs it: a real process, configured by its
/// command line and environment, its stderr (the logs) kept in a file.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    /// The unauthenticated metrics address, when `--metrics-listen` was given.
    pub metrics: Option<String>,
    /// With the admin key.
    pub client: Client,
    pub logs: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `warren` with `args` and `env` (nothing else of the test's environment but
    /// `PATH` and the AWS settings), logs to `logs`; returns once it listens.
    pub async fn start(args: &[&str], env: &[(&str, &str)], logs: &Path) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.args(args).env_clear();
        for (k, v) in std::env::vars() {
            if k == "PATH" || k.starts_with("AWS_") {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(logs).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut metrics = None;
        let base = loop {
            let Some(line) = lines.next_line().await.unwrap() else {
                panic!(
                    "warren exited before listening: {}",
                    std::fs::read_to_string(logs).unwrap_or_default()
                );
            };
            if let Some(rest) = line.strip_prefix("metrics (no authentication) on ") {
                metrics = Some(rest.trim().trim_end_matches("/metrics").to_owned());
            }
            if let Some(rest) = line.strip_prefix("warren listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Whatever else it prints is drained, so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            client: Client::at(&base, Some(ADMIN_KEY), None),
            base,
            metrics,
            logs: logs.to_owned(),
        }
    }

    /// SIGTERM, then waits for the process to drain and exit; its exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().await.unwrap()
    }
}
