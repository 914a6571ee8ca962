//! The command line (contract 1). Each subcommand parses its flags, calls the library, and
//! prints; errors become one line on stderr and a non-zero exit in `main`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::crypto::{KdfParams, SecretString};
use crate::keys::KeySource;
use crate::store::Backend;
use crate::vault::{self, InitOptions, Vault};
use crate::{Error, Result, audit};

/// panvault: a card-tokenization vault.
#[derive(Debug, Parser)]
#[command(name = "panvault", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new vault in DIR: keys, store, audit chain.
    Init(InitArgs),
    /// Inspect the audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory (created with mode 0700; must not hold a vault).
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: PathBuf,
    /// Storage backend: redb (default) or sled.
    #[arg(long = "store", default_value = "redb")]
    pub store: Backend,
    /// KEK source: file (passphrase-sealed key file) or dev (needs --dev).
    #[arg(long = "keys")]
    pub keys: Option<KeySource>,
    /// Unprotected local key file, for trying and testing only.
    #[arg(long)]
    pub dev: bool,
    /// File holding the operator passphrase (`file` keys); else $PANVAULT_PASSPHRASE_FILE.
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first bad entry.
    Verify {
        #[arg(long, env = "PANVAULT_DATA")]
        data: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write entries as JSON lines to stdout.
    Export {
        #[arg(long, env = "PANVAULT_DATA")]
        data: PathBuf,
        /// First sequence number to export.
        #[arg(long, default_value_t = 1)]
        since: u64,
    },
}

/// Reads the operator passphrase from a file (first line, without its newline).
pub fn read_passphrase(path: &Path) -> Result<SecretString> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?,
    );
    Ok(SecretString::new(
        text.lines().next().unwrap_or_default().to_string(),
    ))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init(a),
        Command::Audit { command } => match command {
            AuditCommand::Verify { data, json } => {
                let store = vault::open_store(&data)?;
                let v = audit::verify(store.as_ref())?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&v).map_err(|_| Error::Corrupt { what: "report" })?
                    );
                } else {
                    let noun = if v.entries == 1 { "entry" } else { "entries" };
                    println!(
                        "audit chain ok: {} {noun}, last hash {}",
                        v.entries, v.last_hash
                    );
                }
                Ok(())
            }
            AuditCommand::Export { data, since } => {
                let store = vault::open_store(&data)?;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                audit::for_each_since(store.as_ref(), since, |e| {
                    serde_json::to_writer(&mut out, e).map_err(|_| Error::Corrupt {
                        what: "audit entry",
                    })?;
                    out.write_all(b"\n").map_err(|e| Error::io("stdout", e))
                })?;
                out.flush().map_err(|e| Error::io("stdout", e))
            }
        },
    }
}

fn init(a: InitArgs) -> Result<()> {
    let source = match (a.keys, a.dev) {
        (None, true) | (Some(KeySource::Dev), true) => KeySource::Dev,
        (Some(KeySource::Dev), false) => {
            return Err(Error::Config(
                "the dev key source is refused unless --dev is given".into(),
            ));
        }
        (Some(s), true) => {
            return Err(Error::Config(format!(
                "--dev conflicts with --keys {}",
                s.as_str()
            )));
        }
        (Some(s), false) => s,
        (None, false) => KeySource::File,
    };
    let passphrase = match source {
        KeySource::File => {
            let path = a.passphrase_file.as_deref().ok_or_else(|| {
                Error::Config(
                    "the file key source needs --passphrase-file or PANVAULT_PASSPHRASE_FILE"
                        .into(),
                )
            })?;
            Some(read_passphrase(path)?)
        }
        KeySource::Dev => None,
    };
    let init = Vault::init(
        &a.data,
        InitOptions {
            backend: a.store,
            key_source: source,
            passphrase,
            kdf: KdfParams::default(),
        },
    )?;
    let data_dir = std::fs::canonicalize(&a.data).unwrap_or(a.data);
    if a.json {
        let out = serde_json::json!({
            "admin_api_key": init.admin_api_key.expose(),
            "admin_api_key_id": init.admin_api_key_id,
            "data_dir": data_dir,
            "store": a.store.to_string(),
            "key_source": source.as_str(),
        });
        println!("{out}");
    } else {
        println!(
            "initialized vault in {} (store {}, keys {})",
            data_dir.display(),
            a.store,
            source.as_str()
        );
        println!(
            "admin API key (shown once, store it now): {}",
            init.admin_api_key.expose()
        );
        if source == KeySource::Dev {
            println!(
                "warning: dev keys are stored unprotected; never put real cards in this vault"
            );
        }
    }
    Ok(())
}
