#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PANVAULT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = panvault::cli::Cli::parse();
    match panvault::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("panvault: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
