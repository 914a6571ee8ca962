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
//! - `remote.rs`: `audit export|verify --url`, the audit trail read through a running vault;
//! - `text.rs`: the human-readable reports (`--json` prints the JSON instead);
//! - `unlock.rs`: what unlocks a vault's keys (passphrase, shares, PIN files);
//! - `failure.rs`: why a command failed, as one line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::keys::KeySource;
use crate::store::Backend;

mod audit;
mod config;
mod demo;
mod evidence;
mod failure;
mod init;
mod keys;
mod remote;
mod sandbox;
mod serve;
mod text;
mod unlock;

pub use config::{ConfigFile, DekConfig, RevealConfig, load_config};
pub use failure::Failure;
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
    Evidence(ReportArgs),
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
    Rotate(ReportArgs),
    /// KEK versions, DEKs with their KEK version, age against the cryptoperiod and record counts.
    Status(ReportArgs),
    /// Move every record under an older DEK to the current one (resuming a job cut short),
    /// with a progress bar; drained DEKs are destroyed.
    Reencrypt(ReportArgs),
}

/// A stopped vault, what unlocks its keys, and how to print the report.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The stopped vault and what unlocks its keys.
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Print the report as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A data dir and what unlocks its keys.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Data directory of an initialized vault (stopped: `serve` holds its store).
    #[arg(long, env = "PANVAULT_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// What unlocks its keys.
    #[command(flatten)]
    pub keys: KeyFiles,
}

/// What unlocks a stopped vault's keys, by key source (a `dev` vault needs none).
#[derive(Debug, Args)]
pub struct KeyFiles {
    /// File holding the operator passphrase (`file` keys; a `dev` vault needs none).
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File with custodian shares, one per line (`shamir` keys).
    #[arg(long, env = "PANVAULT_SHARES_FILE", value_name = "FILE")]
    pub shares_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys).
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE", value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

/// `panvault init`: where the new vault goes, its backend and key source, and what the key
/// source needs.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory (created with mode 0700; must not hold a vault).
    #[arg(long, env = "PANVAULT_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Storage backend: redb or sled.
    #[arg(long = "store", default_value = "redb", value_name = "redb|sled")]
    pub store: Backend,
    /// KEK source: file (passphrase-sealed key file), shamir (M of N custodian shares), pkcs11
    /// (KEK inside an HSM) or dev (the default with --dev, refused without it).
    #[arg(
        long = "keys",
        default_value = "file",
        value_name = "file|shamir|pkcs11|dev",
        default_value_if("dev", clap::builder::ArgPredicate::IsPresent, Some("dev"))
    )]
    pub keys: KeySource,
    /// `shamir` keys: how many custodian shares to make (N, at most 255).
    #[arg(long, requires = "threshold", value_name = "N")]
    pub shares: Option<usize>,
    /// `shamir` keys: how many distinct shares unseal (M, 2..=N).
    #[arg(long, requires = "shares", value_name = "M")]
    pub threshold: Option<usize>,
    /// `shamir` keys: write each share to `DIR/share-<id>.txt` (mode 0600) instead of printing it.
    #[arg(long, requires = "shares", value_name = "DIR")]
    pub share_dir: Option<PathBuf>,
    /// Unprotected local key file, for trying and testing only.
    #[arg(long)]
    pub dev: bool,
    /// File holding the operator passphrase (`file` keys).
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// `pkcs11` keys: path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "PANVAULT_PKCS11_MODULE", value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// `pkcs11` keys: label of the token that generates and holds the KEK.
    #[arg(long, env = "PANVAULT_PKCS11_TOKEN", value_name = "LABEL")]
    pub pkcs11_token: Option<String>,
    /// `pkcs11` keys: file holding the token's user PIN (first line).
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE", value_name = "FILE")]
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
    #[arg(long, env = "PANVAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of an initialized vault (else `data` in the config file).
    #[arg(long, env = "PANVAULT_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on (else `listen` in the config file) [default: 127.0.0.1:8443].
    #[arg(long, env = "PANVAULT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Plain HTTP; refused unless the address is a loopback address.
    #[arg(long)]
    pub plaintext: bool,
    /// File holding the operator passphrase (`file` keys); none: start sealed.
    #[arg(long, env = "PANVAULT_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys); none: start sealed.
    #[arg(long, env = "PANVAULT_PKCS11_PIN_FILE", value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Require client certificates chaining to this CA (PEM): mTLS.
    #[arg(long, env = "PANVAULT_CLIENT_CA", value_name = "PEM")]
    pub client_ca: Option<PathBuf>,
    /// File of custodian shares, one per line (`shamir` keys); none: start sealed.
    #[arg(long, env = "PANVAULT_SHARES_FILE", value_name = "FILE")]
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
    #[arg(long, default_value = "./panvault-data", value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
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
    #[arg(long, default_value = "127.0.0.1:8480", value_name = "ADDR")]
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
    /// last line `{"signed_head": {...}}` lets the file be verified on its own. From a stopped
    /// vault's data dir, or with --url through the running vault's API.
    Export(ExportArgs),
}

/// `panvault audit export`: the vault (its data dir, or its API) and where to start.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Data directory of the stopped vault whose entries are exported.
    #[arg(
        long,
        env = "PANVAULT_DATA",
        value_name = "DIR",
        required_unless_present = "url"
    )]
    pub data: Option<PathBuf>,
    /// First sequence number to export.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    pub since: u64,
    /// The running vault's API, instead of its data dir.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// A running vault's API and the `audit`-scoped key that reads its audit trail.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Read the audit trail through the running vault's API at this base URL (for example
    /// https://127.0.0.1:8443) instead of its data dir; pages of `GET /v1/audit`.
    #[arg(long, value_name = "URL", requires = "api_key_file")]
    pub url: Option<String>,
    /// With --url: file holding an API key with the `audit` scope (first line).
    #[arg(long, value_name = "FILE", requires = "url")]
    pub api_key_file: Option<PathBuf>,
    /// With --url: PEM file of the CA that signed the vault's certificate (the vault's own:
    /// DIR/tls/ca.pem); without it, the public web PKI roots.
    #[arg(long, value_name = "PEM", requires = "url")]
    pub cacert: Option<PathBuf>,
}

/// `panvault audit prune`: the vault, the retention period and how far the export has reached.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The stopped vault and what unlocks its keys.
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Keep every entry younger than this many days (at least 365: PCI DSS 10.5.1).
    #[arg(long, env = "PANVAULT_AUDIT_RETENTION_DAYS", value_name = "DAYS",
        default_value_t = crate::audit::MIN_RETENTION_DAYS)]
    pub retention_days: u64,
    /// The last seq the log system has received and verified (`audit export`): nothing after
    /// it is deleted.
    #[arg(long, value_name = "SEQ")]
    pub exported_through: u64,
}

/// `panvault audit verify`: the vault, or exported files and the vault whose keys check them.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The stopped vault: its store is verified, or with FILES, only its keys are used.
    #[arg(long, env = "PANVAULT_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// What unlocks the vault's keys, for the MAC checks.
    #[command(flatten)]
    pub keys: KeyFiles,
    /// Files written by `audit export`, checked in the order given as one run of the chain
    /// (each must go on where the one before it ended).
    #[arg(value_name = "EXPORT.jsonl", conflicts_with = "url")]
    pub files: Vec<PathBuf>,
    /// The running vault's API: its audit trail is read and checked as an exported file is
    /// (hashes, links and signed heads; the MACs need the stopped vault's keys).
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> std::result::Result<(), Failure> {
    match cli.command {
        Command::Init(a) => Ok(init::run(a)?),
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => Ok(demo::run(a)?),
        Command::Sandbox(a) => Ok(sandbox::run(a)?),
        Command::Openapi(a) => {
            println!("{}", crate::http::openapi::document_with_server(&a.server));
            Ok(())
        }
        Command::Keys { command } => keys::run(command),
        Command::Evidence(a) => evidence::run(a),
        Command::Audit { command } => audit::run(command),
    }
}

/// The log lines' filter when `PANVAULT_LOG` is not set: `demo` keeps its terminal for the
/// keys and curl lines it prints (warnings and errors only), every other command logs `info`.
pub fn default_log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    }
}
