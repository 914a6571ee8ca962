#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc: glibc malloc/free were ~17% of the server's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PANVAULT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = match panvault::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap prints them; a usage error is one line.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!("panvault: {}", line.strip_prefix("error: ").unwrap_or(line));
            return std::process::ExitCode::from(2);
        }
    };
    match panvault::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("panvault: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
