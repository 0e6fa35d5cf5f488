//! Command-line and environment configuration, parsed once at start-up. Nothing else in Warren
//! reads the environment (the AWS settings are read by the S3 client, as documented).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::http::serve::HttpSettings;
use crate::services::exec::ExecSettings;
use crate::services::retention::RetentionSettings;
use crate::services::webhooks::WebhookSettings;

#[derive(Parser, Debug)]
#[command(
    name = "warren",
    version,
    about = "Isolated files and shells for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` (for people) or `json` (one object a line, for collectors). Logs
    /// go to stderr, coloured only when it is a terminal; `RUST_LOG` sets the levels.
    #[arg(long, global = true, env = "WARREN_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Operator tasks on a Warren's stores.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Rebuild a namespace's file index from the objects in storage, for data restored straight
    /// into the bucket. Run it while nothing writes to that namespace.
    Reindex(ReindexArgs),
    /// Copy every metadata table from a SQLite database to an empty PostgreSQL one, and check
    /// the row counts; objects stay where they are. Run it while no server uses either.
    MigrateDb(MigrateDbArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MigrateDbArgs {
    /// The SQLite database to copy (`sqlite://<data-dir>/warren.db`).
    #[arg(long)]
    pub from: String,
    /// The PostgreSQL database to copy into (`postgres://…`); it must hold no Warren rows.
    #[arg(long)]
    pub to: String,
    /// Empty a target that holds rows instead of refusing it.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReindexArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The namespace to rebuild.
    #[arg(long)]
    pub namespace: String,
    /// Its workspace [default: the server's default workspace].
    #[arg(long)]
    pub workspace: Option<String>,
}

/// Where a Warren keeps its state; shared by every command.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory for the embedded database, local objects, the admin key and the server secret.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "./warren-data")]
    pub data_dir: PathBuf,
    /// Metadata database URL [default: sqlite://<data-dir>/warren.db].
    #[arg(long, env = "WARREN_DATABASE")]
    pub database: Option<String>,
    /// Object storage URL: file:///path, memory://, or s3://bucket/prefix
    /// [default: file://<data-dir>/objects].
    #[arg(long, env = "WARREN_STORAGE")]
    pub storage: Option<String>,
}

impl StoreArgs {
    /// Creates the data directory and resolves the database and storage URLs against it.
    pub fn resolve(self) -> std::io::Result<(PathBuf, String, String)> {
        std::fs::create_dir_all(&self.data_dir)?;
        let data_dir = std::fs::canonicalize(&self.data_dir)?;
        let database = self
            .database
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("warren.db").display()));
        let storage = self
            .storage
            .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
        Ok((data_dir, database, storage))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also serve `/metrics` here, without authentication: for a private network a
    /// Prometheus scrapes from. On the main address it needs an admin key.
    #[arg(long, env = "WARREN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The URL clients reach this server at (`https://warren.example.com`), for the links
    /// it hands out: the browser-login page [default: http://<the address it listens on>].
    #[arg(long, env = "WARREN_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Let webhooks target loopback, private and link-local addresses (off: public only).
    #[arg(long, env = "WARREN_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Send webhook deliveries through this HTTP(S) proxy. The `HTTP(S)_PROXY` variables are
    /// not used. Through a proxy, the rule against private destinations covers only literal
    /// addresses; names are resolved by the proxy, which must enforce it.
    #[arg(long, env = "WARREN_WEBHOOK_PROXY", value_parser = parse_proxy)]
    pub webhook_proxy: Option<String>,
    /// Timeout of one webhook delivery attempt.
    #[arg(long, env = "WARREN_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// Attempts per webhook delivery before it is recorded as failed.
    #[arg(long, env = "WARREN_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,
    /// Delay before the first webhook retry; doubles per attempt, with jitter, up to 1h.
    #[arg(long, env = "WARREN_WEBHOOK_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    pub webhook_backoff: Duration,
    /// How long events and audit records are kept.
    #[arg(long, env = "WARREN_EVENT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub event_retention: Duration,
    /// How often expired records are swept.
    #[arg(long, env = "WARREN_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// How old an object with no index row must be before the sweep deletes it.
    #[arg(long, env = "WARREN_ORPHAN_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub orphan_grace: Duration,
    /// How long after its deletion a namespace's files and index are purged.
    #[arg(long, env = "WARREN_PURGE_AFTER", default_value = "30d", value_parser = parse_duration)]
    pub purge_after: Duration,
    /// How long a snapshot is kept before the sweep deletes it.
    #[arg(long, env = "WARREN_SNAPSHOT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub snapshot_retention: Duration,
    /// How long a client may take to send a request's head; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "WARREN_HEADER_READ_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Most connections open at once (lowered to fit the open-file limit); at the cap, the
    /// longest-idle connection is closed to admit a new one.
    #[arg(long, env = "WARREN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// The `file://` storage is a filesystem every node sharing the PostgreSQL database
    /// mounts alike (NFS, say). Without it, a `postgres://` database needs `s3://` storage.
    #[arg(long, env = "WARREN_SHARED_STORAGE")]
    pub shared_storage: bool,
    /// On a cluster, how long the retention sweeper's lease lasts unrenewed: when its holder
    /// dies, another node takes the sweeps over within this time.
    #[arg(long, env = "WARREN_CLUSTER_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub cluster_lease: Duration,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Exec sandbox settings.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The bubblewrap binary.
    #[arg(long, env = "WARREN_BWRAP", default_value = "/usr/bin/bwrap")]
    pub bwrap: PathBuf,
    /// Working copies and per-exec directories; every ancestor must be traversable (o+x)
    /// [default: <data-dir>/exec, or /var/lib/warren-exec/<id> when that is unreachable].
    #[arg(long, env = "WARREN_EXEC_DIR")]
    pub exec_dir: Option<PathBuf>,
    /// Host uid (and gid) sandboxes run as; dedicated, owning nothing else.
    #[arg(long, env = "WARREN_EXEC_UID", default_value_t = 61_000)]
    pub exec_uid: u32,
    /// Wall-clock limit of one exec (then 408).
    #[arg(long, env = "WARREN_EXEC_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub exec_timeout: Duration,
    /// Memory limit of one exec in MiB (includes its /tmp and what it writes).
    #[arg(long, env = "WARREN_EXEC_MEMORY_MB", default_value_t = 1024)]
    pub exec_memory_mb: u64,
    /// Process limit of one exec.
    #[arg(long, env = "WARREN_EXEC_PIDS", default_value_t = 256)]
    pub exec_pids: u32,
    /// CPU limit of one exec, in CPUs.
    #[arg(long, env = "WARREN_EXEC_CPUS", default_value_t = 1.0)]
    pub exec_cpus: f64,
    /// Size of an exec's private /tmp (and of its home directory) in MiB.
    #[arg(long, env = "WARREN_EXEC_TMP_MB", default_value_t = 256)]
    pub exec_tmp_mb: u64,
    /// What one exec may write to the workspace, in MiB.
    #[arg(long, env = "WARREN_EXEC_WRITE_MB", default_value_t = 1024)]
    pub exec_write_mb: u64,
    /// Files and directories one exec may create or change.
    #[arg(long, env = "WARREN_EXEC_MAX_CHANGES", default_value_t = 100_000)]
    pub exec_max_changes: usize,
    /// stdout and stderr are each cut at this many bytes.
    #[arg(long, env = "WARREN_EXEC_OUTPUT_BYTES", default_value_t = 1 << 20)]
    pub exec_output_bytes: usize,
    /// Disk budget for warm working copies, in MiB.
    #[arg(long, env = "WARREN_EXEC_CACHE_MB", default_value_t = 4096)]
    pub exec_cache_mb: u64,
}

impl ExecArgs {
    fn settings(self, data_dir: &std::path::Path) -> ExecSettings {
        ExecSettings {
            sandbox: warren_exec::SandboxConfig {
                bwrap: self.bwrap,
                base_dir: self.exec_dir.unwrap_or_else(|| default_exec_dir(data_dir)),
                uid: self.exec_uid,
                gid: self.exec_uid,
                limits: warren_exec::Limits {
                    memory_bytes: self.exec_memory_mb << 20,
                    pids: self.exec_pids,
                    cpu_millis: (self.exec_cpus * 1000.0).round().max(10.0) as u32,
                    tmp_bytes: self.exec_tmp_mb << 20,
                    write_bytes: self.exec_write_mb << 20,
                    write_inodes: self.exec_max_changes as u64 + 1000,
                    output_bytes: self.exec_output_bytes,
                    timeout: self.exec_timeout,
                },
            },
            cache_bytes: self.exec_cache_mb << 20,
            max_changes: self.exec_max_changes,
        }
    }
}

/// Where working copies go unless `--exec-dir` says: `<data-dir>/exec` when the sandbox uid
/// can reach it, and otherwise (a data dir under a mode-700 home, as when root runs Warren
/// from `/root/warren`) a directory of this data dir's own under `/var/lib/warren-exec`. The
/// suffix keeps two servers on one machine apart, since each clears its exec dir at start;
/// working copies stay private either way (each is mode 0700, owned by the sandbox uid).
pub fn default_exec_dir(data_dir: &std::path::Path) -> PathBuf {
    let beside = data_dir.join("exec");
    if warren_exec::sandbox::closed_ancestor(&beside).is_none() {
        return beside;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    PathBuf::from(SYSTEM_EXEC_ROOT).join(hex::encode(&digest[..8]))
}

/// The fallback exec root; `/var/lib` is root's and traversable on every Linux distribution.
pub const SYSTEM_EXEC_ROOT: &str = "/var/lib/warren-exec";

fn parse_public_url(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("{s:?} is not an http(s) URL")),
    }
}

fn parse_proxy(s: &str) -> Result<String, String> {
    reqwest::Proxy::all(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("invalid proxy URL {s:?}: {e}"))
}

/// Parses durations like `250ms`, `30s`, `5m`, `2h`, `90d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit: ms, s, m, h or d"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Resolved configuration for one server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `--metrics-listen`: an unauthenticated `/metrics` listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// `--public-url`; without it, derived from the address the server listens on.
    pub public_url: Option<String>,
    /// How long a browser login of the CLI waits for its approval.
    pub device_login_ttl: Duration,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub storage_url: String,
    /// `WARREN_ADMIN_KEY`: the default workspace's admin key, chosen by the operator.
    pub admin_key: Option<String>,
    /// `WARREN_SECRET`: the HMAC secret for key hashes; shared by every node of a cluster.
    /// Without it the secret is generated once and kept in `<data-dir>/server.secret`.
    pub secret: Option<String>,
    pub webhooks: WebhookSettings,
    pub retention: RetentionSettings,
    pub exec: ExecSettings,
    pub http: HttpSettings,
    /// How nodes sharing a PostgreSQL database follow one another's changes.
    pub cluster: crate::coord::ClusterSettings,
    /// `--shared-storage`: a `file://` store that every node sees alike.
    pub shared_storage: bool,
}

impl Config {
    /// Resolves the arguments and the two secret-bearing environment variables, which are
    /// deliberately not flags: command lines are visible to every user of the machine.
    pub fn from_args(args: ServeArgs) -> std::io::Result<Self> {
        let (data_dir, database_url, storage_url) = args.store.resolve()?;
        let exec = args.exec.settings(&data_dir);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            public_url: args.public_url,
            device_login_ttl: crate::services::device::DeviceSettings::default().ttl,
            database_url,
            storage_url,
            data_dir,
            admin_key: env("WARREN_ADMIN_KEY"),
            secret: env("WARREN_SECRET"),
            webhooks: WebhookSettings {
                allow_private: args.webhook_allow_private,
                timeout: args.webhook_timeout,
                max_attempts: args.webhook_max_attempts.max(1),
                backoff: args.webhook_backoff,
                proxy: args.webhook_proxy,
                ..WebhookSettings::default()
            },
            retention: RetentionSettings {
                events: args.event_retention,
                sweep_interval: args.sweep_interval,
                orphan_grace: args.orphan_grace,
                purge_after: args.purge_after,
                snapshots: args.snapshot_retention,
            },
            exec,
            http: HttpSettings {
                header_read_timeout: args.header_read_timeout,
                max_connections: args.max_connections.max(1),
            },
            cluster: crate::coord::ClusterSettings {
                lease: args.cluster_lease.max(Duration::from_secs(1)),
                ..Default::default()
            },
            shared_storage: args.shared_storage,
        })
    }

    /// A `postgres://` database may be shared by several nodes, which must then agree on what
    /// no database row carries: the secret keys are hashed with (or a key minted on one node
    /// fails on the next), and the storage the bytes are in. So it needs `WARREN_SECRET`, and
    /// storage every node reaches: `s3://`, or `file://` declared shared.
    pub fn check_shareable(&self) -> Result<(), String> {
        if !self.database_url.starts_with("postgres") {
            return Ok(());
        }
        if self.secret.is_none() {
            return Err(
                "a PostgreSQL database needs WARREN_SECRET, the key-hashing secret \
                        every node sharing it must have alike"
                    .into(),
            );
        }
        let shared = self.storage_url.starts_with("s3://")
            || (self.storage_url.starts_with("file://") && self.shared_storage);
        if !shared {
            return Err(format!(
                "a PostgreSQL database needs storage every node reaches: s3://…, or a file:// \
                 directory on a shared filesystem declared with --shared-storage (got {})",
                self.storage_url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
    }
}
