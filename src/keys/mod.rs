//! KEK sources and the keyring file: where each KEK version comes from and how it is kept at rest
//! (`keys/README.md` at the repository root describes the whole key hierarchy).
//!
//! The keyring lives at `DATA/keys/keyring.json`, mode 0600, and holds every KEK version:
//! - `dev`: the KEK in clear. Only with `--dev`; a warning is logged at every start.
//! - `file`: each KEK sealed with AES-256-GCM under a key derived from the operator passphrase
//!   by argon2id (RFC 9106 second recommended parameters, stored beside the salt).
//! - `shamir`: each KEK sealed the same way under a custody key that only M of N custodian
//!   shares rebuild (Feldman VSS, see [`shamir`]); the keyring keeps the public verifier set.
//! - `pkcs11`: each KEK is a non-extractable AES key inside an HSM; the file records the module
//!   path, the token label and each version's object label, no key material (see [`crate::hsm`]).
//!
//! The file is replaced atomically (write, fsync, rename, fsync directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod shamir;

pub use shamir::{Progress, ShareCollector, parse_share};

use crate::crypto::{self, KdfParams, Kek, Sealed, SecretKey, SecretString};
use crate::hsm::{self, Pkcs11Config};
use crate::{Error, Result};

/// Where the KEK comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// The KEK in clear in the keyring file; only with `--dev`, never for real cards.
    Dev,
    /// Each KEK sealed under a key derived from the operator passphrase (argon2id).
    File,
    /// Each KEK sealed under a custody key that M of N custodian shares rebuild.
    Shamir,
    /// Each KEK a non-extractable AES key inside an HSM, used through PKCS#11.
    Pkcs11,
}

impl std::str::FromStr for KeySource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dev" => Ok(KeySource::Dev),
            "file" => Ok(KeySource::File),
            "shamir" => Ok(KeySource::Shamir),
            "pkcs11" => Ok(KeySource::Pkcs11),
            _ => Err(Error::Config(format!(
                "unknown key source `{s}` (dev, file, shamir, pkcs11)"
            ))),
        }
    }
}

impl KeySource {
    /// The name used on the command line and in `keyring.json` (`dev`, `file`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Dev => "dev",
            KeySource::File => "file",
            KeySource::Shamir => "shamir",
            KeySource::Pkcs11 => "pkcs11",
        }
    }
}

/// What unlocks the keyring.
#[derive(Debug)]
pub enum Unlock {
    /// The dev keyring needs nothing.
    Dev,
    /// The operator passphrase of a `file` keyring.
    Passphrase(SecretString),
    /// Custodian shares of a `shamir` keyring (`pvshare1-<id>-<hex>`), all given at once (e.g.
    /// a shares file at start): any refused share, or too few, fails the unlock, naming the
    /// share by its position.
    Shares(Vec<SecretString>),
    /// Shares collected one at a time by a [`ShareCollector`] (the unseal flow).
    Collected(ShareCollector),
    /// The token's user PIN of a `pkcs11` keyring.
    Pin(SecretString),
}

/// Minimum passphrase length accepted at `init`.
pub const MIN_PASSPHRASE_LEN: usize = 12;

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    source: KeySource,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    kdf: Option<KdfFile>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    shamir: Option<ShamirFile>,
    /// pkcs11 only: the module and token that hold the KEK versions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pkcs11: Option<Pkcs11Config>,
    keks: Vec<KekFile>,
}

/// The public half of a `shamir` keyring: nothing here helps rebuild the custody key.
#[derive(Serialize, Deserialize)]
struct ShamirFile {
    /// `feldman-p256`: Feldman VSS over the P-256 scalar field.
    scheme: String,
    /// `hkdf-sha256`, info `panvault/shamir-custody-key/v1`.
    kdf: String,
    threshold: usize,
    shares: usize,
    /// `[G, s*G, a1*G, ..]`: threshold + 1 compressed SEC1 points, hex.
    verifiers: Vec<String>,
}

const SHAMIR_SCHEME: &str = "feldman-p256";
const SHAMIR_KDF: &str = "hkdf-sha256";
/// AAD label of a KEK sealed under the shamir custody key.
const SHAMIR_KEK_LABEL: &str = "kek-shamir";

#[derive(Serialize, Deserialize)]
struct KdfFile {
    alg: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct KekFile {
    version: u32,
    created_at: String,
    /// dev only: the key in hex.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    key: Option<String>,
    /// file only: the sealed key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    sealed: Option<SealedHex>,
    /// pkcs11 only: the label of the KEK object in the token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    hsm_label: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SealedHex {
    nonce: String,
    ciphertext: String,
}

impl SealedHex {
    fn from(s: &Sealed) -> Self {
        SealedHex {
            nonce: hex::encode(s.nonce),
            ciphertext: hex::encode(&s.ciphertext),
        }
    }
    fn to_sealed(&self) -> Result<Sealed> {
        let bad = || Error::KeyUnlock("key file is malformed");
        let nonce = hex::decode(&self.nonce).map_err(|_| bad())?;
        Ok(Sealed {
            nonce: nonce.try_into().map_err(|_| bad())?,
            ciphertext: hex::decode(&self.ciphertext).map_err(|_| bad())?,
        })
    }
}

/// The unlocked KEK versions.
#[derive(Debug)]
pub struct Keyring {
    source: KeySource,
    keks: Vec<Kek>,
    /// What seals a new KEK version in the keyring file (rotation): the passphrase key
    /// (`file`) or the custody key (`shamir`); none for `dev`.
    sealer: Option<SecretKey>,
    /// `pkcs11`: the logged-in token, which makes and destroys KEK versions.
    token: Option<std::sync::Arc<hsm::Token>>,
}

impl Keyring {
    /// The key source recorded in `keyring.json`: how every KEK version here is kept.
    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The newest KEK version: the one that wraps new keys.
    pub fn current(&self) -> Result<&Kek> {
        self.keks
            .iter()
            .max_by_key(|k| k.version())
            .ok_or(Error::KeyUnlock("keyring holds no KEK"))
    }

    /// Every KEK version held, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.keks.iter().map(Kek::version).collect();
        v.sort_unstable();
        v
    }

    /// A KEK by version (to unwrap keys wrapped before a rotation).
    pub fn get(&self, version: u32) -> Result<&Kek> {
        self.keks
            .iter()
            .find(|k| k.version() == version)
            .ok_or(Error::KeyUnlock("KEK version missing from keyring"))
    }
}

/// The keyring's path inside a data dir.
pub fn keyring_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("keyring.json")
}

/// Creates the keyring with KEK version 1. Refuses to overwrite an existing one. `passphrase`
/// is the operator secret: the passphrase (`file`) or the token's user PIN (`pkcs11`, which
/// also needs `pkcs11`: the module and token). `shamir` is `(threshold, shares)` for that
/// source; the custodian shares come back (custodian 1..=N in order; empty for the other
/// sources) and exist nowhere else: print or write each one once.
pub fn create(
    data_dir: &Path,
    source: KeySource,
    passphrase: Option<&SecretString>,
    kdf: KdfParams,
    shamir: Option<(usize, usize)>,
    pkcs11: Option<&Pkcs11Config>,
) -> Result<(Keyring, Vec<SecretString>)> {
    let path = keyring_path(data_dir);
    if path.exists() {
        return Err(Error::AlreadyInitialized(data_dir.display().to_string()));
    }
    let kek_key = SecretKey::random();
    let mut shares = Vec::new();
    let mut sealer = None;
    let created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let file = match source {
        KeySource::Dev => KeyringFile {
            format: 1,
            source,
            kdf: None,
            shamir: None,
            pkcs11: None,
            keks: vec![KekFile {
                version: 1,
                created_at,
                key: Some(hex::encode(kek_key.expose())),
                sealed: None,
                hsm_label: None,
            }],
        },
        KeySource::File => {
            let pass = passphrase
                .ok_or_else(|| Error::Config("the file key source needs a passphrase".into()))?;
            if pass.expose().chars().count() < MIN_PASSPHRASE_LEN {
                return Err(Error::Config(format!(
                    "passphrase must be at least {MIN_PASSPHRASE_LEN} characters"
                )));
            }
            let salt = crypto::random_bytes::<16>();
            let pkey = crypto::derive_passphrase_key(pass, &salt, kdf)?;
            let sealed = crypto::seal_with_passphrase_key(&pkey, 1, &kek_key)?;
            sealer = Some(pkey);
            KeyringFile {
                format: 1,
                source,
                kdf: Some(KdfFile {
                    alg: "argon2id".into(),
                    params: kdf,
                    salt: hex::encode(salt),
                }),
                shamir: None,
                pkcs11: None,
                keks: vec![KekFile {
                    version: 1,
                    created_at,
                    key: None,
                    sealed: Some(SealedHex::from(&sealed)),
                    hsm_label: None,
                }],
            }
        }
        KeySource::Shamir => {
            let (threshold, count) = shamir.ok_or_else(|| {
                Error::Config("the shamir key source needs --shares and --threshold".into())
            })?;
            let split = shamir::split(threshold, count)?;
            let sealed = crypto::seal_kek(&split.custody_key, SHAMIR_KEK_LABEL, 1, &kek_key)?;
            shares = split.shares;
            sealer = Some(split.custody_key);
            KeyringFile {
                format: 1,
                source,
                kdf: None,
                shamir: Some(ShamirFile {
                    scheme: SHAMIR_SCHEME.into(),
                    kdf: SHAMIR_KDF.into(),
                    threshold,
                    shares: count,
                    verifiers: split.verifiers,
                }),
                pkcs11: None,
                keks: vec![KekFile {
                    version: 1,
                    created_at,
                    key: None,
                    sealed: Some(SealedHex::from(&sealed)),
                    hsm_label: None,
                }],
            }
        }
        KeySource::Pkcs11 => {
            return create_pkcs11(&path, passphrase, pkcs11, created_at).map(|k| (k, shares));
        }
    };
    write_private(
        &path,
        &serde_json::to_vec_pretty(&file).map_err(|_| Error::Corrupt { what: "keyring" })?,
    )?;
    Ok((
        Keyring {
            source,
            keks: vec![Kek::new(1, &kek_key)],
            sealer,
            token: None,
        },
        shares,
    ))
}

/// `create` for the `pkcs11` source: KEK version 1 is generated inside the token; the keyring
/// file is written only once the key exists, and records where it is.
fn create_pkcs11(
    path: &Path,
    pin: Option<&SecretString>,
    cfg: Option<&Pkcs11Config>,
    created_at: String,
) -> Result<Keyring> {
    let cfg = cfg.ok_or_else(|| {
        Error::Config("the pkcs11 key source needs a module path and a token label".into())
    })?;
    let pin =
        pin.ok_or_else(|| Error::Config("the pkcs11 key source needs the user PIN".into()))?;
    let token = hsm::Token::open(cfg, pin)?;
    let kek = token.generate_kek(1)?;
    let file = KeyringFile {
        format: 1,
        source: KeySource::Pkcs11,
        kdf: None,
        shamir: None,
        pkcs11: Some(cfg.clone()),
        keks: vec![KekFile {
            version: 1,
            created_at,
            key: None,
            sealed: None,
            hsm_label: Some(kek.label().to_string()),
        }],
    };
    write_private(
        path,
        &serde_json::to_vec_pretty(&file).map_err(|_| Error::Corrupt { what: "keyring" })?,
    )?;
    Ok(Keyring {
        source: KeySource::Pkcs11,
        keks: vec![Kek::with(1, Box::new(kek))],
        sealer: None,
        token: Some(token),
    })
}

/// Creates a `shamir` keyring (`threshold` of `shares`) and hands back the custodian shares,
/// custodian 1..=N in order. They exist nowhere else: print or write each one once.
pub fn create_shamir(
    data_dir: &Path,
    threshold: usize,
    shares: usize,
) -> Result<(Keyring, Vec<SecretString>)> {
    create(
        data_dir,
        KeySource::Shamir,
        None,
        KdfParams::default(),
        Some((threshold, shares)),
        None,
    )
}

/// A collector for the shares of the `shamir` keyring in `data_dir` (the unseal flow): feed it
/// shares one by one with [`ShareCollector::add`], which refuses a malformed, wrong or repeated
/// share at once (it does not count) and reports `received`/`threshold`; once complete, unlock
/// with `load(data_dir, &Unlock::Collected(collector))`.
pub fn share_collector(data_dir: &Path) -> Result<ShareCollector> {
    Ok(ShareCollector::new(verifiers_of(&read_file(data_dir)?)?))
}

fn verifiers_of(file: &KeyringFile) -> Result<shamir::Verifiers> {
    let sh = file
        .shamir
        .as_ref()
        .filter(|s| s.scheme == SHAMIR_SCHEME && s.kdf == SHAMIR_KDF && s.threshold <= s.shares)
        .ok_or(Error::KeyUnlock("key file is malformed (shamir section)"))?;
    shamir::Verifiers::from_hex(&sh.verifiers, sh.threshold)
}

/// Which source a data dir's keyring uses, without unlocking it.
pub fn source_of(data_dir: &Path) -> Result<KeySource> {
    Ok(read_file(data_dir)?.source)
}

/// Every KEK version in the keyring file with its creation time (RFC 3339), oldest first.
pub fn kek_dates(data_dir: &Path) -> Result<Vec<(u32, String)>> {
    let mut v: Vec<(u32, String)> = read_file(data_dir)?
        .keks
        .into_iter()
        .map(|k| (k.version, k.created_at))
        .collect();
    v.sort_unstable_by_key(|(version, _)| *version);
    Ok(v)
}

fn read_file(data_dir: &Path) -> Result<KeyringFile> {
    let path = keyring_path(data_dir);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::KeyUnlock("key file is malformed"))
}

/// Loads and unlocks every KEK version of the keyring.
pub fn load(data_dir: &Path, unlock: &Unlock) -> Result<Keyring> {
    let file = read_file(data_dir)?;
    let mut keks = Vec::with_capacity(file.keks.len());
    let mut sealer = None;
    let mut token = None;
    match (file.source, unlock) {
        (KeySource::Dev, _) => {
            for k in &file.keks {
                let hexkey = k
                    .key
                    .as_deref()
                    .ok_or(Error::KeyUnlock("key file is malformed"))?;
                let raw = zeroize::Zeroizing::new(
                    hex::decode(hexkey).map_err(|_| Error::KeyUnlock("key file is malformed"))?,
                );
                keks.push(Kek::new(k.version, &SecretKey::from_slice(&raw)?));
            }
        }
        (KeySource::File, Unlock::Passphrase(pass)) => {
            let kdf = file
                .kdf
                .as_ref()
                .ok_or(Error::KeyUnlock("key file is malformed"))?;
            let salt =
                hex::decode(&kdf.salt).map_err(|_| Error::KeyUnlock("key file is malformed"))?;
            let pkey = crypto::derive_passphrase_key(pass, &salt, kdf.params)?;
            for k in &file.keks {
                let sealed = k
                    .sealed
                    .as_ref()
                    .ok_or(Error::KeyUnlock("key file is malformed"))?
                    .to_sealed()?;
                let key = crypto::open_with_passphrase_key(&pkey, k.version, &sealed)?;
                keks.push(Kek::new(k.version, &key));
            }
            sealer = Some(pkey);
        }
        (KeySource::Shamir, Unlock::Shares(_) | Unlock::Collected(_)) => {
            let collected;
            let collector = match unlock {
                Unlock::Collected(c) => c,
                Unlock::Shares(texts) => {
                    collected = shamir::collect_all(verifiers_of(&file)?, texts)?;
                    &collected
                }
                _ => return Err(Error::Sealed),
            };
            // A collector built for another keyring fails the s*G check or the GCM open.
            let ckey = collector.custody_key()?;
            for k in &file.keks {
                let sealed = k
                    .sealed
                    .as_ref()
                    .ok_or(Error::KeyUnlock("key file is malformed"))?
                    .to_sealed()?;
                let key = crypto::open_kek(&ckey, SHAMIR_KEK_LABEL, k.version, &sealed)?;
                keks.push(Kek::new(k.version, &key));
            }
            sealer = Some(ckey);
        }
        // The PIN may also arrive as the "passphrase" of `POST /v1/sys/unseal`.
        (KeySource::Pkcs11, Unlock::Pin(pin) | Unlock::Passphrase(pin)) => {
            let cfg = file
                .pkcs11
                .as_ref()
                .ok_or(Error::KeyUnlock("key file is malformed"))?;
            let t = hsm::Token::open(cfg, pin)?;
            for k in &file.keks {
                let kek = t.find_kek(k.version)?;
                if k.hsm_label.as_deref() != Some(kek.label()) {
                    return Err(Error::KeyUnlock("key file is malformed"));
                }
                keks.push(Kek::with(k.version, Box::new(kek)));
            }
            token = Some(t);
        }
        (KeySource::File, Unlock::Pin(_)) => {
            return Err(Error::Config(
                "this vault's keys are sealed by a passphrase, not a PKCS#11 PIN".into(),
            ));
        }
        (KeySource::File | KeySource::Shamir | KeySource::Pkcs11, _) => {
            return Err(Error::Sealed);
        }
    }
    Ok(Keyring {
        source: file.source,
        keks,
        sealer,
        token,
    })
}

/// Rotation, step 1: adds a new KEK version to the keyring file (sealed like the others) and to
/// `keyring`, and returns it. The older versions stay until [`destroy_older`], so a crash
/// between the steps leaves a keyring that opens whatever the store holds.
pub fn add_version(data_dir: &Path, keyring: &mut Keyring) -> Result<u32> {
    add_version_with_shares(data_dir, keyring).map(|(v, _)| v)
}

/// [`add_version`], and for a `shamir` keyring the new custodian shares: the new version comes
/// with a new split (same M of N), and every KEK version in the file is re-sealed under the new
/// custody key in the same atomic file write, so the old shares stop working and the new ones
/// open every version the file still holds (a crash before the write leaves the old shares
/// valid; after it, only the new ones). The caller must hand the shares to the custodians
/// before the vault next needs unsealing: they exist nowhere else.
pub fn add_version_with_shares(
    data_dir: &Path,
    keyring: &mut Keyring,
) -> Result<(u32, Vec<SecretString>)> {
    let mut file = read_file(data_dir)?;
    let version = file.keks.iter().map(|k| k.version).max().unwrap_or(0) + 1;
    let kek_key = SecretKey::random();
    let created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let no_sealer = || Error::KeyUnlock("the keyring's sealing key is not in memory");
    if file.source == KeySource::Pkcs11 {
        // The new version is made inside the token; nothing secret reaches the file.
        let token = keyring.token.clone().ok_or_else(no_sealer)?;
        let kek = token.generate_kek(version)?;
        file.keks.push(KekFile {
            version,
            created_at,
            key: None,
            sealed: None,
            hsm_label: Some(kek.label().to_string()),
        });
        write_file(data_dir, &file)?;
        keyring.keks.push(Kek::with(version, Box::new(kek)));
        return Ok((version, Vec::new()));
    }
    let mut new_shares = Vec::new();
    let mut new_sealer = None;
    let (key, sealed) = match file.source {
        KeySource::Pkcs11 => return Err(no_sealer()),
        KeySource::Dev => (Some(hex::encode(kek_key.expose())), None),
        KeySource::File => {
            let pkey = keyring.sealer.as_ref().ok_or_else(no_sealer)?;
            let sealed = crypto::seal_with_passphrase_key(pkey, version, &kek_key)?;
            (None, Some(SealedHex::from(&sealed)))
        }
        KeySource::Shamir => {
            let old = keyring.sealer.as_ref().ok_or_else(no_sealer)?;
            let sh = file
                .shamir
                .as_mut()
                .ok_or(Error::KeyUnlock("key file is malformed (shamir section)"))?;
            let split = shamir::split(sh.threshold, sh.shares)?;
            sh.verifiers = split.verifiers;
            for k in &mut file.keks {
                let sealed = k
                    .sealed
                    .as_ref()
                    .ok_or(Error::KeyUnlock("key file is malformed"))?
                    .to_sealed()?;
                let key = crypto::open_kek(old, SHAMIR_KEK_LABEL, k.version, &sealed)?;
                let again =
                    crypto::seal_kek(&split.custody_key, SHAMIR_KEK_LABEL, k.version, &key)?;
                k.sealed = Some(SealedHex::from(&again));
            }
            let sealed = crypto::seal_kek(&split.custody_key, SHAMIR_KEK_LABEL, version, &kek_key)?;
            new_shares = split.shares;
            new_sealer = Some(split.custody_key);
            (None, Some(SealedHex::from(&sealed)))
        }
    };
    file.keks.push(KekFile {
        version,
        created_at,
        key,
        sealed,
        hsm_label: None,
    });
    write_file(data_dir, &file)?;
    keyring.keks.push(Kek::new(version, &kek_key));
    if let Some(k) = new_sealer {
        keyring.sealer = Some(k);
    }
    Ok((version, new_shares))
}

/// Rotation, last step: removes every KEK version older than `keep` from the keyring file and
/// from memory (once nothing in the store is wrapped by them). Returns the versions destroyed.
pub fn destroy_older(data_dir: &Path, keyring: &mut Keyring, keep: u32) -> Result<Vec<u32>> {
    let mut file = read_file(data_dir)?;
    let gone: Vec<u32> = file
        .keks
        .iter()
        .map(|k| k.version)
        .filter(|&v| v < keep)
        .collect();
    file.keks.retain(|k| k.version >= keep);
    if file.keks.is_empty() {
        return Err(Error::KeyUnlock("refusing to destroy the last KEK version"));
    }
    write_file(data_dir, &file)?;
    if let Some(token) = &keyring.token {
        // The file no longer names them; now the token forgets them too.
        for &v in &gone {
            token.destroy_kek(v)?;
        }
    }
    keyring.keks.retain(|k| k.version() >= keep);
    Ok(gone)
}

fn write_file(data_dir: &Path, file: &KeyringFile) -> Result<()> {
    write_private(
        &keyring_path(data_dir),
        &serde_json::to_vec_pretty(file).map_err(|_| Error::Corrupt { what: "keyring" })?,
    )
}

/// Writes a file readable by its owner only, atomically and durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config("key path has no parent".into()))?;
    create_private_dir(dir)?;
    let tmp = path.with_extension("tmp");
    let io = |e| Error::io(tmp.display().to_string(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display().to_string(), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display().to_string(), e))
}

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A second share value (a test hands the same share twice; secrets are never `Clone`).
    fn copy(s: &SecretString) -> SecretString {
        SecretString::new(s.expose().to_owned())
    }

    #[test]
    fn dev_keyring_round_trip_is_private() {
        let d = tempfile::tempdir().unwrap();
        let (k, _) = create(
            d.path(),
            KeySource::Dev,
            None,
            KdfParams::default(),
            None,
            None,
        )
        .unwrap();
        let v1 = k.current().unwrap().version();
        let loaded = load(d.path(), &Unlock::Dev).unwrap();
        assert_eq!(loaded.current().unwrap().version(), v1);
        let mode = std::fs::metadata(keyring_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            create(
                d.path(),
                KeySource::Dev,
                None,
                KdfParams::default(),
                None,
                None
            ),
            Err(Error::AlreadyInitialized(_))
        ));
    }

    #[test]
    fn file_keyring_needs_the_right_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let params = KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let pass = SecretString::new("a long operator passphrase".into());
        let (created, _) =
            create(d.path(), KeySource::File, Some(&pass), params, None, None).unwrap();
        let probe = SecretKey::random();
        let wrapped = created.current().unwrap().wrap("probe", 1, &probe).unwrap();
        let text = std::fs::read_to_string(keyring_path(d.path())).unwrap();
        assert!(text.contains("argon2id"));
        let loaded = load(d.path(), &Unlock::Passphrase(pass)).unwrap();
        let back = loaded
            .current()
            .unwrap()
            .unwrap_key("probe", 1, &wrapped)
            .unwrap();
        assert_eq!(back.expose(), probe.expose());
        let wrong = load(
            d.path(),
            &Unlock::Passphrase(SecretString::new("not the passphrase".into())),
        );
        assert!(matches!(wrong, Err(Error::KeyUnlock(_))));
        assert!(matches!(load(d.path(), &Unlock::Dev), Err(Error::Sealed)));
    }

    #[test]
    fn shamir_keyring_unlocks_with_m_shares_only() {
        let d = tempfile::tempdir().unwrap();
        let (created, shares) = create_shamir(d.path(), 3, 5).unwrap();
        assert_eq!(created.source(), KeySource::Shamir);
        assert_eq!(shares.len(), 5);
        let probe = SecretKey::random();
        let wrapped = created.current().unwrap().wrap("probe", 1, &probe).unwrap();
        let text = std::fs::read_to_string(keyring_path(d.path())).unwrap();
        assert!(text.contains("feldman-p256") && text.contains("\"threshold\": 3"));
        for s in &shares {
            assert!(
                !text.contains(&s.expose()[11..]),
                "a share leaked into the keyring"
            );
        }
        let pick = |idx: &[usize]| -> Unlock {
            Unlock::Shares(idx.iter().map(|&i| copy(&shares[i])).collect())
        };
        // Any 3 (and more) unlock and give back the same KEK.
        for idx in [&[0, 1, 2][..], &[4, 2, 0], &[1, 3, 4], &[0, 1, 2, 3, 4]] {
            let k = load(d.path(), &pick(idx)).unwrap();
            let back = k
                .current()
                .unwrap()
                .unwrap_key("probe", 1, &wrapped)
                .unwrap();
            assert_eq!(back.expose(), probe.expose());
        }
        // Too few.
        assert!(matches!(
            load(d.path(), &pick(&[0, 1])),
            Err(Error::NotEnoughShares { have: 2, need: 3 })
        ));
        // A wrong share among M: refused, named by position and custodian.
        let mut bad = shares[1].expose().to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        let wrong = Unlock::Shares(vec![
            copy(&shares[0]),
            SecretString::new(bad),
            copy(&shares[2]),
        ]);
        match load(d.path(), &wrong) {
            Err(Error::ShareRefused(m)) => {
                assert!(m.contains("share #2") && m.contains("custodian 2"))
            }
            other => panic!("{other:?}"),
        }
        // A repeated share: refused even though three strings were given.
        match load(d.path(), &pick(&[0, 2, 0])) {
            Err(Error::ShareRefused(m)) => assert!(m.contains("share #3") && m.contains("already")),
            other => panic!("{other:?}"),
        }
        // Wrong kind of unlock.
        assert!(matches!(load(d.path(), &Unlock::Dev), Err(Error::Sealed)));
        // The incremental path: wrong and repeated shares do not count.
        let mut c = share_collector(d.path()).unwrap();
        assert_eq!(
            c.progress(),
            Progress {
                received: 0,
                threshold: 3
            }
        );
        c.add(shares[3].expose()).unwrap();
        assert!(c.add(shares[3].expose()).is_err());
        assert!(c.add("pvshare1-9-00").is_err());
        c.add(shares[1].expose()).unwrap();
        assert!(!c.progress().complete());
        assert!(c.add(shares[4].expose()).unwrap().complete());
        let k = load(d.path(), &Unlock::Collected(c)).unwrap();
        assert_eq!(k.current().unwrap().version(), 1);
        // Shares of another vault never open this one.
        let other = tempfile::tempdir().unwrap();
        let (_, foreign) = create_shamir(other.path(), 3, 5).unwrap();
        assert!(matches!(
            load(
                d.path(),
                &Unlock::Shares(foreign[..3].iter().map(copy).collect())
            ),
            Err(Error::ShareRefused(_))
        ));
    }

    #[test]
    fn shamir_needs_share_params_and_a_sane_threshold() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            create(d.path(), KeySource::Shamir, None, KdfParams::default(), None, None),
            Err(Error::Config(m)) if m.contains("--shares")
        ));
        let low = create_shamir(d.path(), 1, 3);
        assert!(matches!(low, Err(Error::Config(m)) if m.contains("--threshold")));
        assert!(!keyring_path(d.path()).exists());
    }

    #[test]
    fn short_passphrase_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = create(
            d.path(),
            KeySource::File,
            Some(&SecretString::new("short".into())),
            KdfParams::default(),
            None,
            None,
        );
        assert!(matches!(r, Err(Error::Config(_))));
    }
}

/// `keyring.json` byte for byte: the files under `tests/fixtures/vectors/keyring/` (written by
/// `keys::create`, see `tests/vectors.rs`, which also unlocks them) and the `file` keyring of
/// the redb fixture vault parse and serialize back to exactly their bytes.
#[cfg(test)]
mod vectors {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const FILES: [&[u8]; 5] = [
        include_bytes!("../../tests/fixtures/vectors/keyring/dev.json"),
        include_bytes!("../../tests/fixtures/vectors/keyring/file.json"),
        include_bytes!("../../tests/fixtures/vectors/keyring/shamir.json"),
        include_bytes!("../../tests/fixtures/vectors/keyring/pkcs11.json"),
        include_bytes!("../../tests/fixtures/vault-v1/redb/data/keys/keyring.json"),
    ];

    #[test]
    fn keyring_files_round_trip_byte_exact() {
        for bytes in FILES {
            let file: KeyringFile = serde_json::from_slice(bytes).unwrap();
            assert_eq!(
                serde_json::to_vec_pretty(&file).unwrap(),
                bytes,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// A `pkcs11` keyring as `create_pkcs11` writes it (its KEK is made inside an HSM, so the
    /// committed file is this value, not a run of `create`).
    #[test]
    fn pkcs11_keyring_is_pinned() {
        let file = KeyringFile {
            format: 1,
            source: KeySource::Pkcs11,
            kdf: None,
            shamir: None,
            pkcs11: Some(Pkcs11Config {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token: "panvault-vectors".into(),
            }),
            keks: vec![KekFile {
                version: 1,
                created_at: "2026-12-04T12:00:00Z".into(),
                key: None,
                sealed: None,
                hsm_label: Some(hsm::kek_label(1)),
            }],
        };
        assert_eq!(serde_json::to_vec_pretty(&file).unwrap(), FILES[3]);
    }

    /// The `dev` keyring: every field fixed, written exactly as `create` writes it.
    #[test]
    fn dev_keyring_is_pinned() {
        let file = KeyringFile {
            format: 1,
            source: KeySource::Dev,
            kdf: None,
            shamir: None,
            pkcs11: None,
            keks: vec![KekFile {
                version: 1,
                created_at: "2026-12-04T15:44:32Z".into(),
                key: Some(
                    "27e43ab899ac0cb8fc8ca2c84e179925eb0f80835938590f2d28c18a595ef160".into(),
                ),
                sealed: None,
                hsm_label: None,
            }],
        };
        assert_eq!(serde_json::to_vec_pretty(&file).unwrap(), FILES[0]);
        // And the `file` keyring's sealed KEK and argon2id section, field by field.
        let f: KeyringFile = serde_json::from_slice(FILES[1]).unwrap();
        let kdf = f.kdf.unwrap();
        assert_eq!(
            (kdf.alg.as_str(), kdf.params, kdf.salt.len()),
            (
                "argon2id",
                KdfParams {
                    m_cost_kib: 1024,
                    t_cost: 1,
                    p_cost: 1
                },
                32
            )
        );
        let sealed = f.keks[0].sealed.as_ref().unwrap().to_sealed().unwrap();
        assert_eq!(sealed.ciphertext.len(), 48);
    }
}
