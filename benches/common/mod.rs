//! What every benchmark starts with: a server on the embedded defaults (SQLite, local files)
//! in `dir`, on a loopback port, and keys locked to a namespace. `WARREN_BENCH_DATABASE`, when
//! set, puts the metadata in that database instead (scripts/bench uses it for PostgreSQL).

// Each benchmark uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use warren::config::Config;
use warren::server::Server;
use warren::services::Services;
use warren::services::exec::ExecSettings;

pub struct Bench {
    pub config: Config,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub services: Arc<Services>,
}

/// The metadata database the benchmark runs on.
pub fn database_url(dir: &Path) -> String {
    std::env::var("WARREN_BENCH_DATABASE")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("warren.db").display()))
}

pub async fn start(dir: &Path) -> Bench {
    start_with(config(dir)).await
}

/// The benchmark configuration for a server on `dir`.
pub fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        public_url: None,
        device_login_ttl: std::time::Duration::from_secs(600),
        data_dir: dir.to_owned(),
        database_url: database_url(dir),
        storage_url: format!("file://{}", dir.join("objects").display()),
        admin_key: Some("trove-sk-bench-admin-0123456789".into()),
        secret: Some("bench-secret-bench-secret-bench-secret".into()),
        // No subscriptions exist; a rare poll keeps the delivery worker out of the figures.
        webhooks: warren::services::webhooks::WebhookSettings {
            poll: std::time::Duration::from_secs(60),
            ..Default::default()
        },
        retention: Default::default(),
        exec: ExecSettings::with_dir(dir.join("exec")),
        http: Default::default(),
        cluster: Default::default(),
        // Every test node runs on this host, so its directory is shared by all of them.
        shared_storage: true,
    }
}

/// Starts a server on `config`, serving until the benchmark ends.
pub async fn start_with(config: Config) -> Bench {
    let server = Server::start(&config).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let services = Arc::clone(&server.services);
    tokio::spawn(server.run(std::future::pending()));
    Bench {
        config,
        base,
        services,
    }
}

impl Bench {
    /// A key locked to `ns`, minted directly.
    pub async fn key(&self, ns: &str) -> String {
        let (_, key) = self
            .services
            .keys
            .mint(
                None,
                &self.services.default_workspace,
                warren::services::auth::KeyRequest {
                    name: ns.into(),
                    namespace: Some(ns.into()),
                    admin: false,
                },
            )
            .await
            .unwrap();
        key
    }
}
