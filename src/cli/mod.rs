//! The command line: each subcommand parses its flags, calls the library, and prints; errors
//! become one line on stderr and a non-zero exit in `main`.
//!
//! This file holds the clap types (every command, its flags and their help text) and the
//! dispatch; each command family runs in a file of its own:
//!
//! - `init.rs`: `init`, a new vault and its keys, shares and admin key;
//! - `serve.rs`: `serve`, the HTTPS API, sealed or unsealed at start; `config.rs`: its
//!   configuration file;
//! - `demo.rs`: `demo`, a dev vault, the gateway sandbox and curl lines that work;
//! - `sandbox.rs`: `sandbox`, the gateway simulators on their own;
//! - `audit.rs`: `audit verify`, `audit prune`, `audit export`;
//! - `keys.rs`: `keys rotate`, `keys status`, `keys reencrypt` on a stopped vault;
//! - `evidence.rs`: `evidence`, the assessor's report of a stopped vault;
//! - `unlock.rs`: what unlocks a vault's keys (passphrase, shares, PIN files).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Result;
use crate::keys::KeySource;
use crate::store::Backend;

mod audit;
mod config;
mod demo;
mod evidence;
mod init;
mod keys;
mod sandbox;
mod serve;
mod unlock;

pub use config::{ConfigFile, DekConfig, RevealConfig, load_config};
pub use unlock::{read_passphrase, read_shares};

/// panvault: a card-tokenization vault.
#[derive(Debug, Parser)]
#[command(name = "panvault", version, about)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `panvault`, one per command family.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new vault in DIR: keys, store, audit chain.
    Init(InitArgs),
    /// Run the HTTPS API.
    Serve(ServeArgs),
    /// The newcomer's path: a dev vault, a demo merchant and key, and curl lines that work.
    Demo(DemoArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi(OpenapiArgs),
    /// Loopback simulators of the four gateways (Nexi, Axerve, Worldline, MPGS) for tests and demos.
    Sandbox(SandboxArgs),
    /// Inspect the audit chain.
    Audit {
        /// Which audit operation.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The assessor's report of a stopped vault (a running one: `GET /v1/sys/evidence`).
    Evidence(UnlockArgs),
    /// Key operations on a stopped vault (a running one: `POST /v1/sys/keys/rotate`).
    Keys {
        /// Which key operation.
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `panvault keys`: key operations on a stopped vault.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// New KEK version; every DEK and meta key re-wrapped under it; older versions destroyed.
    Rotate(UnlockArgs),
    /// KEK versions, DEKs with their KEK version, age against the cryptoperiod and record counts.
    Status(UnlockArgs),
    /// Move every record under an older DEK to the current one (resuming a job cut short),
    /// with a progress bar; drained DEKs are destroyed.
    Reencrypt(UnlockArgs),
}

/// A data dir and what unlocks its keys.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Data directory of an initialized vault.
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: PathBuf,
    /// What unlocks its keys.
    #[command(flatten)]
    pub keys: KeyFiles,
}

/// What unlocks a stopped vault's keys, by key source (a `dev` vault needs none).
#[derive(Debug, Args)]
pub struct KeyFiles {
    /// File holding the operator passphrase (`file` keys).
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File with custodian shares, one per line (`shamir` keys).
    #[arg(long, env = "PANVAULT_SHARES_FILE")]
    pub shares_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys).
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

/// `panvault init`: where the new vault goes, its backend and key source, and what the key
/// source needs.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory (created with mode 0700; must not hold a vault).
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: PathBuf,
    /// Storage backend: redb (default) or sled.
    #[arg(long = "store", default_value = "redb")]
    pub store: Backend,
    /// KEK source: file (passphrase-sealed key file), shamir (M of N custodian shares), pkcs11
    /// (KEK inside an HSM) or dev (needs --dev).
    #[arg(long = "keys")]
    pub keys: Option<KeySource>,
    /// `shamir` keys: how many custodian shares to make (N, at most 255).
    #[arg(long, requires = "threshold")]
    pub shares: Option<usize>,
    /// `shamir` keys: how many distinct shares unseal (M, 2..=N).
    #[arg(long, requires = "shares")]
    pub threshold: Option<usize>,
    /// `shamir` keys: write each share to `DIR/share-<id>.txt` (mode 0600) instead of printing it.
    #[arg(long, requires = "shares")]
    pub share_dir: Option<PathBuf>,
    /// Unprotected local key file, for trying and testing only.
    #[arg(long)]
    pub dev: bool,
    /// File holding the operator passphrase (`file` keys); else $PANVAULT_PASSPHRASE_FILE.
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// `pkcs11` keys: path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "PANVAULT_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// `pkcs11` keys: label of the token that generates and holds the KEK.
    #[arg(long, env = "PANVAULT_PKCS11_TOKEN")]
    pub pkcs11_token: Option<String>,
    /// `pkcs11` keys: file holding the token's user PIN (first line).
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `panvault serve`: each flag overrides its environment variable, which overrides the
/// configuration file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/panvault.toml); environment and flags override it.
    #[arg(long, env = "PANVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of an initialized vault.
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long, env = "PANVAULT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Plain HTTP; refused unless the address is a loopback address.
    #[arg(long)]
    pub plaintext: bool,
    /// File holding the operator passphrase (`file` keys); else $PANVAULT_PASSPHRASE_FILE.
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys); else $PANVAULT_PKCS11_PIN_FILE.
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Require client certificates chaining to this CA (PEM): mTLS.
    #[arg(long, env = "PANVAULT_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// File of custodian shares, one per line (`shamir` keys); else $PANVAULT_SHARES_FILE.
    #[arg(long, env = "PANVAULT_SHARES_FILE")]
    pub shares_file: Option<PathBuf>,
    /// Start even though the journal is damaged in the middle: cut it at the damage (the
    /// records after it are lost) and record the loss in the audit log. Only after the refusal
    /// named the damage, and only if no backup is to be restored instead.
    #[arg(long)]
    pub accept_journal_loss: bool,
}

/// `panvault demo`: where the dev vault lives and where the API listens.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Data directory (a dev vault is created there if it holds none).
    #[arg(long, default_value = "./panvault-data")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

/// `panvault openapi`: where the document says the API is.
#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// The API's base URL for the document's `servers` (a running server's
    /// `GET /v1/openapi.json` names its own listen address).
    #[arg(long, value_name = "URL", default_value = crate::http::openapi::DEFAULT_SERVER,
        value_parser = server_url)]
    pub server: String,
}

/// An `http(s)://` URL with a host and no space or control character.
fn server_url(s: &str) -> std::result::Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("must start with https:// (or http://)")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("names no host".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds a space or a control character".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// `panvault sandbox`: where the gateway simulators listen.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Loopback address of the shared listener (plain HTTP; every gateway under its prefix, and
    /// the request log); each gateway's own root is on the next four ports (nexi, axerve,
    /// worldline, mpgs). Port 0 picks free ones.
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
}

/// `panvault audit`: operations on the audit chain.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of a data dir, or of exported files, and name the first bad
    /// entry. With the vault's keys (a dev vault needs none) also check the MACs of the signed
    /// head and of the checkpoints, which show a cut tail or a recomputed chain.
    Verify(VerifyArgs),
    /// Delete the oldest entries of a stopped vault: only those older than the retention
    /// period and already exported; a signed anchor marks where the chain then starts.
    Prune(PruneArgs),
    /// Write entries as JSON lines to stdout; when the export reaches the end of the chain, a
    /// last line `{"signed_head": {...}}` lets the file be verified on its own.
    Export {
        /// Data directory of the vault whose entries are exported.
        #[arg(long, env = "PANVAULT_DATA")]
        data: PathBuf,
        /// First sequence number to export.
        #[arg(long, default_value_t = 1)]
        since: u64,
    },
}

/// `panvault audit prune`: the vault, the retention period and how far the export has reached.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The stopped vault and what unlocks its keys.
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Keep every entry younger than this many days (at least 365: PCI DSS 10.5.1).
    #[arg(long, env = "PANVAULT_AUDIT_RETENTION_DAYS", default_value_t = crate::audit::MIN_RETENTION_DAYS)]
    pub retention_days: u64,
    /// The last seq the log system has received and verified (`audit export`): nothing after
    /// it is deleted.
    #[arg(long)]
    pub exported_through: u64,
}

/// `panvault audit verify`: the vault, or exported files and the vault whose keys check them.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The vault: its store is verified, or with FILES, only its keys are used.
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: Option<PathBuf>,
    /// What unlocks the vault's keys, for the MAC checks.
    #[command(flatten)]
    pub keys: KeyFiles,
    /// Files written by `audit export`, checked in the order given as one run of the chain
    /// (each must go on where the one before it ended).
    pub files: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Sandbox(a) => sandbox::run(a),
        Command::Openapi(a) => {
            println!("{}", crate::http::openapi::document_with_server(&a.server));
            Ok(())
        }
        Command::Keys { command } => keys::run(command),
        Command::Evidence(a) => evidence::run(a),
        Command::Audit { command } => audit::run(command),
    }
}
