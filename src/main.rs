//! The `warren` binary: parses the command line and runs the server.

use clap::Parser;
use warren::config::{AdminCommand, Cli, Command, Config, LogFormat, MigrateDbArgs, ReindexArgs};
use warren::server::{Server, shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Admin(AdminCommand::Reindex(args)) => reindex(args).await,
        Command::Admin(AdminCommand::MigrateDb(args)) => migrate_db(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (stdout carries what the commands print), filtered by `RUST_LOG`; beside
/// them, sqlx's statement events feed the database latency metric whatever the filter says.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warren=info".into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => fmt.boxed(),
        // The span's fields (request id, route, workspace, namespace, key) in each line.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let statements = tracing_subscriber::filter::Targets::new()
        .with_target("sqlx::query", tracing::Level::DEBUG);
    // The statement layer goes first: added after the EnvFilter-filtered layer, it received
    // none of sqlx's events (seen here with tracing-subscriber 0.3; tests/operations.rs would
    // show it, as the statement histogram would be missing).
    tracing_subscriber::registry()
        .with(warren::metrics::StatementTimings.with_filter(statements))
        .with(logs.with_filter(filter))
        .init();
}

async fn serve(args: warren::config::ServeArgs) -> Result<(), warren::server::BoxError> {
    let config = Config::from_args(args)?;
    let server = Server::start(&config).await?;
    // Before the address is printed: whoever reads it may signal at once.
    let shutdown = shutdown_signal();
    let ws = &server.services.default_workspace;
    if let Some(key) = &server.generated_admin_key {
        println!(
            "Admin key for workspace {ws} (shown once; also saved to {}):",
            config.data_dir.join("admin.key").display()
        );
        println!("  {key}");
    }
    if let Some(addr) = server.metrics_addr() {
        println!("metrics (no authentication) on http://{addr}/metrics");
    }
    println!(
        "warren listening on http://{} (workspace {ws})",
        server.local_addr()?
    );
    server.run(shutdown).await
}

async fn reindex(args: ReindexArgs) -> Result<(), warren::server::BoxError> {
    use warren_storage::{BlobStore, Namespace, WorkspaceId};

    let ns = Namespace::parse(&args.namespace)?;
    let (_, database, storage) = args.store.resolve()?;
    let meta = warren::db::open(&database).await?;
    let blobs = BlobStore::open(&storage)?;
    let ws = match &args.workspace {
        Some(ws) => WorkspaceId::parse(ws)?,
        None => {
            let ws = meta
                .get_setting("default_workspace")
                .await?
                .ok_or("this Warren has no default workspace yet: start it once first")?;
            WorkspaceId::parse(&ws)?
        }
    };
    // On a shared database the namespace lock is the cluster's, so the reindex excludes the
    // writers of every node; on SQLite it is this process's own, and the reindex relies on the
    // replacement being one transaction.
    use warren::coord::Coordinator;
    let coord: std::sync::Arc<dyn Coordinator> = match meta.cluster_store() {
        Some(_) => warren::coord::Clustered::new(meta.clone(), Default::default()),
        None => warren::coord::InProcess::new(),
    };
    let lock = coord.lock_namespace(&ws, &ns).await?;
    let report = warren::services::reindex::reindex(meta.as_ref(), &blobs, &lock).await?;
    drop(lock);
    meta.close().await;
    println!(
        "reindexed {ws}/{ns}: {} files, {} bytes, {} skipped",
        report.files,
        report.bytes,
        report.skipped.len()
    );
    for s in &report.skipped {
        println!("  skipped {s}");
    }
    Ok(())
}

async fn migrate_db(args: MigrateDbArgs) -> Result<(), warren::server::BoxError> {
    let copied =
        warren::db::transfer::sqlite_to_postgres(&args.from, &args.to, args.replace).await?;
    println!("copied {} to {}:", args.from, redact(&args.to));
    for c in &copied {
        println!(
            "  {:<12} {:>10} rows (source {})",
            c.table, c.target, c.source
        );
    }
    Ok(())
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user_info = &url[s + 3..at];
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
