//! The command line (contract 1). Each subcommand parses its flags, calls the library, and
//! prints; errors become one line on stderr and a non-zero exit in `main`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::access::{ApiKeyRequest, Scope};
use crate::crypto::{KdfParams, SecretString};
use crate::keys::{KeySource, Unlock};
use crate::seal::Gate;
use crate::store::Backend;
use crate::vault::{self, Ctx, InitOptions, Options, Vault};
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
    /// Run the HTTPS API.
    Serve(ServeArgs),
    /// The newcomer's path: a dev vault, a demo merchant and key, and curl lines that work.
    Demo(DemoArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Loopback simulators of the four gateways (Nexi, Axerve, Worldline, MPGS) for tests and demos.
    Sandbox(SandboxArgs),
    /// Inspect the audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The assessor's report of a stopped vault (a running one: `GET /v1/sys/evidence`).
    Evidence(UnlockArgs),
    /// Key operations on a stopped vault (a running one: `POST /v1/sys/keys/rotate`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

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
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: PathBuf,
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
    /// `shamir` keys: write each share to DIR/share-<id>.txt (mode 0600) instead of printing it.
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
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Data directory (a dev vault is created there if it holds none).
    #[arg(long, default_value = "./panvault-data")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Loopback address to listen on (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
}

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
        #[arg(long, env = "PANVAULT_DATA")]
        data: PathBuf,
        /// First sequence number to export.
        #[arg(long, default_value_t = 1)]
        since: u64,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
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

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The vault: its store is verified, or with FILES, only its keys are used.
    #[arg(long, env = "PANVAULT_DATA")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub keys: KeyFiles,
    /// Files written by `audit export`, checked in the order given as one run of the chain
    /// (each must go on where the one before it ended).
    pub files: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
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

/// Reads custodian shares from a file: one per line; blank lines and `#` comments are skipped.
pub fn read_shares(path: &Path) -> Result<Vec<SecretString>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?,
    );
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| SecretString::new(l.to_string()))
        .collect())
}

/// `keys reencrypt` on a stopped vault: the job's steps back to back (no live traffic to make
/// room for), an indicatif bar on stderr.
async fn reencrypt(vault: &Vault, ctx: &Ctx) -> Result<vault::ReencryptJob> {
    let below = vault.reencrypt_below()?;
    let mut job = vault::ReencryptJob {
        below,
        total: vault.key_status()?.deks.iter().map(|d| d.records).sum(),
        ..vault::ReencryptJob::default()
    };
    let bar = indicatif::ProgressBar::new(job.total).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} tokens, {per_sec}, eta {eta}",
        )
        .map_err(|_| Error::Config("progress bar template".into()))?
        .progress_chars("=> "),
    );
    bar.set_message(format!("re-encrypting records under dek < {below}"));
    vault.audit_reencrypt_start(ctx, below).await?;
    let started = std::time::Instant::now();
    loop {
        let step = match vault
            .reencrypt_step(ctx, below, vault::REENCRYPT_BATCH)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                vault.audit_reencrypt_end(ctx, "failed", &job).await?;
                return Err(e);
            }
        };
        job.scanned += step.scanned;
        job.moved += step.moved;
        job.destroyed.extend(step.destroyed);
        bar.set_position(job.scanned);
        job.elapsed_ms = started.elapsed().as_millis() as u64;
        if step.finished {
            break;
        }
    }
    bar.finish_with_message(format!(
        "moved {}, destroyed dek {:?}",
        job.moved, job.destroyed
    ));
    vault.audit_reencrypt_end(ctx, "ok", &job).await?;
    Ok(job)
}

/// Opens a stopped vault with what unlocks its keys (the `keys` and `evidence` commands).
fn open_stopped(a: &UnlockArgs) -> Result<Vault> {
    let unlock = server_unlock(
        &a.data,
        a.keys.passphrase_file.as_deref(),
        a.keys.shares_file.as_deref(),
        a.keys.pkcs11_pin_file.as_deref(),
    )?
    .ok_or_else(|| {
        Error::Config(
            "this vault's keys need --passphrase-file, --shares-file or --pkcs11-pin-file".into(),
        )
    })?;
    Vault::open(&a.data, &unlock, Options::default())
}

/// The path of custodian `id`'s share file in `--share-dir`.
fn share_path(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("share-{id}.txt"))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init(a),
        Command::Serve(a) => serve(a),
        Command::Demo(a) => demo(a),
        Command::Sandbox(a) => sandbox(a),
        Command::Openapi => {
            println!("{}", crate::openapi::document());
            Ok(())
        }
        Command::Keys { command } => {
            let a = match &command {
                KeysCommand::Rotate(a) | KeysCommand::Status(a) | KeysCommand::Reencrypt(a) => a,
            };
            let vault = open_stopped(a)?;
            let ctx = vault::Ctx {
                actor: "cli".into(),
                ..vault::Ctx::default()
            };
            let report = match command {
                KeysCommand::Rotate(_) => actix_web::rt::System::new()
                    .block_on(vault.rotate_kek(&ctx))
                    .and_then(|r| {
                        serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })
                    }),
                KeysCommand::Reencrypt(_) => actix_web::rt::System::new()
                    .block_on(reencrypt(&vault, &ctx))
                    .and_then(|r| {
                        serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })
                    }),
                KeysCommand::Status(_) => vault.key_status().and_then(|r| {
                    serde_json::to_string_pretty(&r).map_err(|_| Error::Encode { what: "report" })
                }),
            };
            vault.shutdown();
            println!("{}", report?);
            Ok(())
        }
        Command::Evidence(a) => {
            let vault = open_stopped(&a)?;
            let report = crate::evidence::report(&vault, Vec::new()).and_then(|r| {
                serde_json::to_string_pretty(&r).map_err(|_| Error::Encode { what: "report" })
            });
            vault.shutdown();
            println!("{}", report?);
            Ok(())
        }
        Command::Audit { command } => match command {
            AuditCommand::Verify(a) => audit_verify(a),
            AuditCommand::Prune(a) => {
                audit::check_retention(a.retention_days)?;
                let vault = open_stopped(&a.unlock)?;
                let ctx = Ctx {
                    actor: "cli".into(),
                    ..Ctx::default()
                };
                let report = actix_web::rt::System::new()
                    .block_on(vault.audit_prune(&ctx, a.retention_days, a.exported_through))
                    .and_then(|r| {
                        serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })
                    });
                vault.shutdown();
                println!("{}", report?);
                Ok(())
            }
            AuditCommand::Export { data, since } => {
                let store = vault::open_store(&data)?;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let head = audit::SignedHead::load(store.as_ref())?;
                let mut last = None;
                audit::for_each_since(store.as_ref(), since, |e| {
                    last = Some(e.seq);
                    write_line(&mut out, e)
                })?;
                if let Some(h) = head.filter(|h| last == Some(h.seq)) {
                    write_line(&mut out, &audit::ExportLine::Head { signed_head: h })?;
                }
                out.flush().map_err(|e| Error::io("stdout", e))
            }
        },
    }
}

fn write_line(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(|_| Error::Encode {
        what: "audit entry",
    })?;
    out.write_all(b"\n").map_err(|e| Error::io("stdout", e))
}

/// `audit verify`: a data dir's store, or exported files; with the keys when they are at hand.
fn audit_verify(a: VerifyArgs) -> Result<()> {
    let (store, mac) = match &a.data {
        None => (None, None),
        Some(data) => {
            let store = vault::open_store(data)?;
            let unlock = server_unlock(
                data,
                a.keys.passphrase_file.as_deref(),
                a.keys.shares_file.as_deref(),
                a.keys.pkcs11_pin_file.as_deref(),
            )?;
            let mac = match unlock {
                Some(u) => Some(vault::audit_mac_key(data, store.as_ref(), &u)?.ok_or_else(
                    || {
                        Error::Config(
                            "this vault has no audit MAC key yet: start it once with this \
                             version (it makes one), then verify"
                                .into(),
                        )
                    },
                )?),
                None => None,
            };
            (Some(store), mac)
        }
    };
    let v = match (a.files.is_empty(), store) {
        (true, Some(store)) => audit::verify(store.as_ref(), mac.as_ref(), false)?,
        (true, None) => {
            return Err(Error::Config(
                "audit verify needs --data DIR (or PANVAULT_DATA), or exported files".into(),
            ));
        }
        (false, _) => {
            let mut v = audit::Verifier::anywhere(mac.as_ref());
            for path in &a.files {
                audit::verify_export(&mut v, path)?;
            }
            v.require_signed_end()?;
            v.finish()
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&v).map_err(|_| Error::Encode { what: "report" })?
        );
        return Ok(());
    }
    let noun = if v.entries == 1 { "entry" } else { "entries" };
    if a.files.is_empty() {
        println!(
            "audit chain ok: {} {noun}, last hash {}",
            v.entries, v.last_hash
        );
    } else {
        println!(
            "audit export ok: {} {noun} ({}..={}), last hash {}",
            v.entries, v.first_seq, v.last_seq, v.last_hash
        );
    }
    match (v.macs_verified, v.signed_through) {
        (true, Some(s)) => println!(
            "signed: MACs verified through entry {s} ({} checkpoints{})",
            v.checkpoints,
            if v.head_seq == Some(v.last_seq) {
                ", signed head"
            } else {
                ""
            }
        ),
        (true, None) => println!("signed: nothing to sign (no entries)"),
        (false, _) => println!(
            "unsigned check: give the vault's keys (--data with --passphrase-file, \
             --shares-file or --pkcs11-pin-file) to verify the MACs"
        ),
    }
    Ok(())
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
        KeySource::Pkcs11 => {
            let path = a.pkcs11_pin_file.as_deref().ok_or_else(|| {
                Error::Config(
                    "the pkcs11 key source needs --pkcs11-pin-file or PANVAULT_PKCS11_PIN_FILE"
                        .into(),
                )
            })?;
            Some(read_passphrase(path)?)
        }
        KeySource::Dev | KeySource::Shamir => None,
    };
    match (source, a.shares, a.threshold) {
        (KeySource::Shamir, Some(n), Some(m)) => {
            crate::keys::shamir::check_params(m, n)?;
            if let Some(dir) = &a.share_dir {
                // Make sure the shares can be written before the vault exists (a vault whose
                // shares were lost could never be unsealed), and never overwrite a share.
                crate::keys::create_private_dir(dir)?;
                if let Some(p) = (1..=n).map(|i| share_path(dir, i)).find(|p| p.exists()) {
                    return Err(Error::Config(format!(
                        "--share-dir: {} already exists; refusing to overwrite a share",
                        p.display()
                    )));
                }
            }
        }
        (KeySource::Shamir, _, _) => {
            return Err(Error::Config(
                "the shamir key source needs --shares N and --threshold M".into(),
            ));
        }
        (_, None, None) => {}
        (s, _, _) => {
            return Err(Error::Config(format!(
                "--shares/--threshold/--share-dir need --keys shamir (not {})",
                s.as_str()
            )));
        }
    }
    let pkcs11 = match (source, a.pkcs11_module, a.pkcs11_token) {
        // Recorded in the keyring, so made absolute (symlinks kept: distributions version
        // the library behind a stable link).
        (KeySource::Pkcs11, Some(module), Some(token)) => Some(crate::hsm::Pkcs11Config {
            module: std::path::absolute(&module)
                .map_err(|e| Error::io(module.display().to_string(), e))?,
            token,
        }),
        (KeySource::Pkcs11, _, _) => {
            return Err(Error::Config(
                "the pkcs11 key source needs --pkcs11-module and --pkcs11-token".into(),
            ));
        }
        _ => None,
    };
    let init = Vault::init(
        &a.data,
        InitOptions {
            backend: a.store,
            key_source: source,
            passphrase,
            kdf: KdfParams::default(),
            shamir: a.threshold.zip(a.shares),
            pkcs11,
        },
    )?;
    let shares = &init.shares;
    let mut share_files = Vec::new();
    if let Some(dir) = &a.share_dir {
        for (i, sh) in shares.iter().enumerate() {
            let p = share_path(dir, i + 1);
            crate::keys::write_private(&p, format!("{}\n", sh.expose()).as_bytes())?;
            share_files.push(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
    let tls_ca = crate::tls::generate(&a.data)?;
    let tls_ca = std::fs::canonicalize(&tls_ca).unwrap_or(tls_ca);
    let data_dir = std::fs::canonicalize(&a.data).unwrap_or(a.data);
    if a.json {
        let out = serde_json::json!({
            "tls_ca": tls_ca,
            "admin_api_key": init.admin_api_key.expose(),
            "admin_api_key_id": init.admin_api_key_id,
            "data_dir": data_dir,
            "store": a.store.to_string(),
            "key_source": source.as_str(),
        });
        let mut out = out;
        if source == KeySource::Shamir {
            out["threshold"] = a.threshold.into();
            if a.share_dir.is_some() {
                out["share_files"] = serde_json::json!(share_files);
            } else {
                out["shares"] = shares
                    .iter()
                    .enumerate()
                    .map(|(i, s)| serde_json::json!({"custodian": i + 1, "share": s.expose()}))
                    .collect();
            }
        }
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
        if source == KeySource::Shamir {
            let m = a.threshold.unwrap_or_default();
            if share_files.is_empty() {
                println!(
                    "custodian shares ({m} of {} unseal; shown once, hand each to its custodian \
                     now):",
                    shares.len()
                );
                for (i, s) in shares.iter().enumerate() {
                    println!("  custodian {}: {}", i + 1, s.expose());
                }
            } else {
                println!(
                    "custodian shares ({m} of {} unseal) written, one per file (mode 0600):",
                    share_files.len()
                );
                for (i, p) in share_files.iter().enumerate() {
                    println!("  custodian {}: {}", i + 1, p.display());
                }
            }
        }
        if source == KeySource::Dev {
            println!(
                "warning: dev keys are stored unprotected; never put real cards in this vault"
            );
        }
    }
    Ok(())
}

/// What `serve` unlocks with at start; `None`: start sealed and wait for `POST /v1/sys/unseal`.
fn server_unlock(
    data: &Path,
    passphrase_file: Option<&Path>,
    shares_file: Option<&Path>,
    pin_file: Option<&Path>,
) -> Result<Option<Unlock>> {
    match crate::keys::source_of(data)? {
        KeySource::Dev => Ok(Some(Unlock::Dev)),
        KeySource::File => passphrase_file
            .map(|path| read_passphrase(path).map(Unlock::Passphrase))
            .transpose(),
        KeySource::Shamir => shares_file
            .map(|path| read_shares(path).map(Unlock::Shares))
            .transpose(),
        KeySource::Pkcs11 => pin_file
            .map(|path| read_passphrase(path).map(Unlock::Pin))
            .transpose(),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_server(
    gate: Gate,
    listen: SocketAddr,
    plaintext: bool,
    data: &Path,
    client_ca: Option<&Path>,
    limit: crate::http::RevealLimit,
    proxy: crate::gateway::proxy::Proxy,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    if plaintext && !listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--plaintext is refused on {listen}: only on a loopback address"
        )));
    }
    let tls = if plaintext {
        None
    } else {
        Some(crate::tls::server_config(data, client_ca)?)
    };
    actix_web::rt::System::new()
        .block_on(crate::http::serve(
            gate, listen, tls, limit, proxy, on_ready,
        ))
        .map_err(|e| Error::io(format!("serving on {listen}"), e))
}

/// The configuration file (`serve --config`). Every key is optional; an unknown key or a value
/// of the wrong type is refused at start, naming the key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub plaintext: Option<bool>,
    pub passphrase_file: Option<PathBuf>,
    /// File of custodian shares, one per line (`shamir` keys).
    pub shares_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys).
    pub pkcs11_pin_file: Option<PathBuf>,
    /// PEM file of the CA that client certificates must chain to (mTLS); none: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
    pub reveal: Option<RevealConfig>,
    /// `[gateways.<name>]`: where each gateway is and its credentials (contract 6).
    pub gateways: Option<crate::gateway::proxy::GatewaysConfig>,
    pub dek: Option<DekConfig>,
}

/// When a data key rolls over (contract 5: well before the AES-GCM random-nonce limit).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DekConfig {
    /// Encryptions under one DEK (default and most 2^24).
    pub max_uses: Option<u64>,
    /// Cryptoperiod of a DEK in seconds (default 86400).
    pub max_age_seconds: Option<u64>,
}

impl DekConfig {
    fn policy(&self) -> crate::crypto::DekPolicy {
        let d = crate::crypto::DekPolicy::default();
        crate::crypto::DekPolicy {
            max_uses: self.max_uses.unwrap_or(d.max_uses),
            max_age: self
                .max_age_seconds
                .map_or(d.max_age, std::time::Duration::from_secs),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealConfig {
    /// Reveals per second per API key (contract default 10).
    pub per_second: f64,
    /// Reveals a key may make at once (contract default 20).
    pub burst: f64,
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<ConfigFile> {
    // The text may hold gateway credentials: wiped once parsed.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?,
    );
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
        // Name the key: quote the offending line (the message alone may not say which key),
        // without the value when the key is a secret's or unknown (a misspelt secret's).
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let line_no = text[..at].matches('\n').count() + 1;
        let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
        let line = match line.split_once('=') {
            Some((k, _))
                if e.message().starts_with("unknown field")
                    || crate::harden::is_secret_key(
                        k.trim()
                            .rsplit('.')
                            .next()
                            .unwrap_or_default()
                            .trim_matches('"'),
                    ) =>
            {
                format!("{} = [REDACTED]", k.trim())
            }
            _ => line.to_string(),
        };
        Error::Config(format!(
            "{} line {line_no} (`{line}`): {}",
            path.display(),
            e.message()
        ))
    })?;
    if let Some(r) = &cfg.reveal
        && !(r.per_second > 0.0 && r.burst >= 1.0)
    {
        return Err(Error::Config(format!(
            "{}: reveal.per_second must be > 0 and reveal.burst >= 1",
            path.display()
        )));
    }
    if let Some(d) = &cfg.dek {
        let max = crate::crypto::DekPolicy::default().max_uses;
        if d.max_uses.is_some_and(|n| n == 0 || n > max) || d.max_age_seconds == Some(0) {
            return Err(Error::Config(format!(
                "{}: dek.max_uses must be 1..={max} and dek.max_age_seconds > 0",
                path.display()
            )));
        }
    }
    Ok(cfg)
}

fn serve(a: ServeArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let data = a.data.or(cfg.data).ok_or_else(|| {
        Error::Config(
            "no data directory: give --data, PANVAULT_DATA or `data` in the config".into(),
        )
    })?;
    let listen = a
        .listen
        .or(cfg.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
    let plaintext = a.plaintext || cfg.plaintext.unwrap_or(false);
    let passphrase_file = a.passphrase_file.or(cfg.passphrase_file);
    let pin_file = a.pkcs11_pin_file.or(cfg.pkcs11_pin_file);
    let limit = cfg
        .reveal
        .map_or_else(crate::http::RevealLimit::default, |r| {
            crate::http::RevealLimit::new(r.per_second, r.burst)
        });
    let opts = Options {
        dek_policy: cfg
            .dek
            .as_ref()
            .map_or_else(Default::default, DekConfig::policy),
        ..Options::default()
    };
    let client_ca = a.client_ca.or(cfg.client_ca);
    let shares_file = a.shares_file.or(cfg.shares_file);
    crate::harden::at_start(&data, a.config.as_deref())?;
    // After the start checks (core dumps off, memory locked), before not-dumpable: reads the
    // gateway credential files (`*_file`), which may be `/dev/fd/N`.
    let proxy = crate::gateway::proxy::Proxy::new(&cfg.gateways.unwrap_or_default(), |k| {
        std::env::var(k).ok()
    })?;
    let secret_files = [&passphrase_file, &shares_file, &pin_file];
    crate::harden::secret_files(
        &secret_files
            .iter()
            .filter_map(|p| p.as_deref())
            .collect::<Vec<_>>(),
    );
    let unlock = server_unlock(
        &data,
        passphrase_file.as_deref(),
        shares_file.as_deref(),
        pin_file.as_deref(),
    );
    crate::harden::after_secrets_read();
    let gate = match unlock? {
        Some(unlock) => Gate::unsealed(Vault::open(&data, &unlock, opts.clone())?, opts)?,
        None => {
            tracing::warn!(
                "starting sealed: no passphrase or shares given; data endpoints answer 503 until POST /v1/sys/unseal"
            );
            Gate::sealed(&data, opts)?
        }
    };
    run_server(
        gate,
        listen,
        plaintext,
        &data,
        client_ca.as_deref(),
        limit,
        proxy,
        |_| {},
    )
}

/// `panvault sandbox`: prints each gateway's base URL once listening.
fn sandbox(a: SandboxArgs) -> Result<()> {
    actix_web::rt::System::new()
        .block_on(crate::sandbox::run(a.listen, |addr| {
            println!("panvault sandbox: gateway simulators on http://{addr} (test cards only)");
            for g in crate::gateway::Gateway::ALL {
                println!("{}=http://{addr}/{}", g.url_env(), g.name());
            }
            println!("request log: GET http://{addr}/__log");
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| Error::io(format!("sandbox on {}", a.listen), e))
}

/// Shop login, prefix and scopes of the demo merchant.
const DEMO_PREFIX: &str = "XYZW";
const DEMO_SHOP: &str = "9000001";

fn demo(a: DemoArgs) -> Result<()> {
    if !vault::exists(&a.data) {
        Vault::init(&a.data, InitOptions::dev(crate::store::Backend::Redb))?;
        crate::tls::generate(&a.data)?;
    }
    crate::harden::at_start(&a.data, None)?;
    crate::harden::after_secrets_read();
    let vault = Vault::open(&a.data, &Unlock::Dev, Options::default())?;
    let ctx = Ctx {
        actor: "demo".into(),
        ..Ctx::default()
    };
    let (admin, key, merchant) = actix_web::rt::System::new().block_on(async {
        let merchant = match vault.merchant_by_prefix(DEMO_PREFIX)? {
            Some(m) => m,
            None => {
                vault
                    .create_merchant(&ctx, "Demo merchant", Some(DEMO_PREFIX))
                    .await?
            }
        };
        match vault.add_shop(&ctx, &merchant.merchant_id, DEMO_SHOP).await {
            Ok(()) | Err(Error::ShopTaken) => {}
            Err(e) => return Err(e),
        }
        let admin = vault
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    admin: true,
                    scopes: crate::access::ADMIN_SCOPES.to_vec(),
                    label: Some("demo admin".into()),
                    ..ApiKeyRequest::default()
                },
            )
            .await?;
        let key = vault
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some(DEMO_SHOP.into()),
                    scopes: vec![Scope::Tokenize, Scope::Read, Scope::Reveal, Scope::Charge],
                    label: Some("demo shop".into()),
                    ..ApiKeyRequest::default()
                },
            )
            .await?;
        Ok::<_, Error>((admin, key, merchant))
    })?;
    let ca = std::fs::canonicalize(crate::tls::ca_path(&a.data))
        .unwrap_or_else(|_| crate::tls::ca_path(&a.data));
    let data = a.data.clone();
    // `demo` runs the gateway sandbox too and points the proxy at it.
    let sandbox = crate::sandbox::start_in_background()?;
    let proxy = crate::gateway::proxy::Proxy::new(&crate::sandbox::demo_gateways(sandbox), |k| {
        std::env::var(k).ok()
    })?;
    run_server(
        Gate::unsealed(vault, Options::default())?,
        a.listen,
        false,
        &a.data,
        None,
        crate::http::RevealLimit::default(),
        proxy,
        move |addr| {
            let base = format!("https://{addr}");
            let curl = format!("curl -sS --cacert {}", ca.display());
            let shop = key.api_key.expose();
            println!(
                "panvault demo: a dev vault in {} (never put real cards in it)",
                data.display()
            );
            println!();
            println!("admin key:      {}", admin.api_key.expose());
            println!(
                "merchant:       {} (prefix {DEMO_PREFIX}), shop login {DEMO_SHOP}",
                merchant.merchant_id
            );
            println!("shop key:       {shop}  (tokenize read reveal charge)");
            println!();
            println!("# tokenize a test card (run it twice: same token, 200 instead of 201)");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"pan\":\"4111111111111111\",\"expiry_month\":12,\"expiry_year\":2030}}' {base}/v1/tokens"
            );
            println!("# a custom token");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"pan\":\"5555555555554444\",\"expiry_month\":3,\"expiry_year\":2031,\"request_token\":\"JOHN_SMITH_5533\"}}' {base}/v1/tokens"
            );
            println!("# read it, reveal it, delete it");
            println!(
                "{curl} -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533"
            );
            println!(
                "{curl} -X POST -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533/reveal"
            );
            println!(
                "{curl} -X DELETE -H 'Authorization: Bearer {shop}' {base}/v1/tokens/{DEMO_PREFIX}JOHN_SMITH_5533"
            );
            println!();
            crate::sandbox::print_demo_lines(&curl, shop, &base, DEMO_PREFIX, sandbox);
            println!();
            println!("Ctrl-C stops the vault cleanly.");
        },
    )
}
