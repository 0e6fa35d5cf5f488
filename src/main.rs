//! The `warren` binary: parses the command line and runs the server.

use clap::Parser;
use warren::config::{Cli, Command, Config};
use warren::server::{Server, shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warren=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: warren::config::ServeArgs) -> Result<(), warren::server::BoxError> {
    let config = Config::from_args(args)?;
    let server = Server::start(&config).await?;
    let ws = &server.services.default_workspace;
    if let Some(key) = &server.generated_admin_key {
        println!(
            "Admin key for workspace {ws} (shown once; also saved to {}):",
            config.data_dir.join("admin.key").display()
        );
        println!("  {key}");
    }
    println!(
        "warren listening on http://{} (workspace {ws})",
        server.local_addr()?
    );
    server.run(shutdown_signal()).await
}
