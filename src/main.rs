#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;

/// mimalloc: glibc malloc/free were ~17% of the server's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
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
            // One line: the first, with the list that follows it when it ends with a colon
            // (`the following required arguments were not provided: --data <DIR>`).
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or_default();
            let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
            if line.ends_with(':') {
                let list: Vec<&str> = lines
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                line = format!("{line} {}", list.join(", "));
            }
            eprintln!("panvault: {line}");
            return std::process::ExitCode::from(2);
        }
    };
    // Logs go to stderr, coloured only when it is a terminal (never into a file or a pipe).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PANVAULT_LOG")
                .unwrap_or_else(|_| panvault::cli::default_log_filter(&cli).into()),
        )
        .init();
    match panvault::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("panvault: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
