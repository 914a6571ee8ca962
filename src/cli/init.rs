//! `panvault init`: a new vault in a data dir (keys by source, store, audit chain, TLS
//! certificates), then the admin API key and any custodian shares, shown once.

use std::path::{Path, PathBuf};

use crate::crypto::{KdfParams, SecretString};
use crate::hsm::Pkcs11Config;
use crate::keys::KeySource;
use crate::vault::{InitOptions, Initialized, Vault};
use crate::{Error, Result};

use super::InitArgs;
use super::unlock::read_passphrase;

/// The path of custodian `id`'s share file in `--share-dir`.
fn share_path(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("share-{id}.txt"))
}

/// Creates the vault the flags describe, then shows what exists only now: the admin API key and
/// any custodian shares.
pub(super) fn run(a: InitArgs) -> Result<()> {
    let source = key_source(&a)?;
    let passphrase = operator_secret(&a, source)?;
    check_shamir(&a, source)?;
    let pkcs11 = pkcs11_config(&a, source)?;
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
    let share_files = write_shares(&a, &init.shares)?;
    let tls_ca = crate::tls::generate(&a.data)?;
    let tls_ca = std::fs::canonicalize(&tls_ca).unwrap_or(tls_ca);
    let data_dir = std::fs::canonicalize(&a.data).unwrap_or_else(|_| a.data.clone());
    if a.json {
        print_json(&a, source, &init, &share_files, &tls_ca, &data_dir);
    } else {
        print_text(&a, source, &init, &share_files, &data_dir);
    }
    Ok(())
}

/// The key source `--keys` and `--dev` ask for: `dev` only with `--dev` (where it is the
/// default), `file` by default.
fn key_source(a: &InitArgs) -> Result<KeySource> {
    Ok(match (a.keys, a.dev) {
        (KeySource::Dev, true) => KeySource::Dev,
        (KeySource::Dev, false) => {
            return Err(Error::Config(
                "the dev key source is refused unless --dev is given".into(),
            ));
        }
        (s, true) => {
            return Err(Error::Config(format!(
                "--dev conflicts with --keys {}",
                s.as_str()
            )));
        }
        (s, false) => s,
    })
}

/// The operator secret the key source needs: the passphrase (`file`) or the user PIN (`pkcs11`).
fn operator_secret(a: &InitArgs, source: KeySource) -> Result<Option<SecretString>> {
    Ok(match source {
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
    })
}

/// `--shares`, `--threshold` and `--share-dir`: given with `shamir` keys only, and a share dir
/// that can take the shares.
fn check_shamir(a: &InitArgs, source: KeySource) -> Result<()> {
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
    Ok(())
}

/// `pkcs11` keys: the module and token that will hold the KEK.
fn pkcs11_config(a: &InitArgs, source: KeySource) -> Result<Option<Pkcs11Config>> {
    Ok(match (source, &a.pkcs11_module, &a.pkcs11_token) {
        // Recorded in the keyring, so made absolute (symlinks kept: distributions version
        // the library behind a stable link).
        (KeySource::Pkcs11, Some(module), Some(token)) => Some(Pkcs11Config {
            module: std::path::absolute(module)
                .map_err(|e| Error::io(module.display().to_string(), e))?,
            token: token.clone(),
        }),
        (KeySource::Pkcs11, _, _) => {
            return Err(Error::Config(
                "the pkcs11 key source needs --pkcs11-module and --pkcs11-token".into(),
            ));
        }
        _ => None,
    })
}

/// `--share-dir`: each share in a file of its own (mode 0600); the files' paths.
fn write_shares(a: &InitArgs, shares: &[SecretString]) -> Result<Vec<PathBuf>> {
    let mut share_files = Vec::new();
    if let Some(dir) = &a.share_dir {
        for (i, sh) in shares.iter().enumerate() {
            let p = share_path(dir, i + 1);
            crate::keys::write_private(&p, format!("{}\n", sh.expose()).as_bytes())?;
            share_files.push(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
    Ok(share_files)
}

/// `--json`: one JSON object on stdout.
fn print_json(
    a: &InitArgs,
    source: KeySource,
    init: &Initialized,
    share_files: &[PathBuf],
    tls_ca: &Path,
    data_dir: &Path,
) {
    let shares = &init.shares;
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
}

/// The text a person reads: where the vault is, its admin key, the shares or their files.
fn print_text(
    a: &InitArgs,
    source: KeySource,
    init: &Initialized,
    share_files: &[PathBuf],
    data_dir: &Path,
) {
    let shares = &init.shares;
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
        println!("warning: dev keys are stored unprotected; never put real cards in this vault");
    }
}
