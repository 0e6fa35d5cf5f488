//! Command-line and environment configuration, parsed once at start-up. Nothing else in Warren
//! reads the environment (the AWS settings are read by the S3 client, as documented).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "warren",
    version,
    about = "Isolated files and shells for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
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

/// Resolved configuration for one server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub storage_url: String,
    /// `WARREN_ADMIN_KEY`: the default workspace's admin key, chosen by the operator.
    pub admin_key: Option<String>,
    /// `WARREN_SECRET`: the HMAC secret for key hashes; shared by every node of a cluster.
    /// Without it the secret is generated once and kept in `<data-dir>/server.secret`.
    pub secret: Option<String>,
}

impl Config {
    /// Resolves the arguments and the two secret-bearing environment variables, which are
    /// deliberately not flags: command lines are visible to every user of the machine.
    pub fn from_args(args: ServeArgs) -> std::io::Result<Self> {
        std::fs::create_dir_all(&args.data_dir)?;
        let data_dir = std::fs::canonicalize(&args.data_dir)?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            listen: args.listen,
            database_url: args
                .database
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("warren.db").display())),
            storage_url: args
                .storage
                .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display())),
            data_dir,
            admin_key: env("WARREN_ADMIN_KEY"),
            secret: env("WARREN_SECRET"),
        })
    }
}
