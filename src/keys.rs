//! KEK sources and the keyring file (contract 5; `keys/README.md` describes the hierarchy).
//!
//! The keyring lives at `DATA/keys/keyring.json`, mode 0600, and holds every KEK version:
//! - `dev`: the KEK in clear. Only with `--dev`; a warning is logged at every start.
//! - `file`: each KEK sealed with AES-256-GCM under a key derived from the operator passphrase
//!   by argon2id (RFC 9106 second recommended parameters, stored beside the salt).
//! - `pkcs11`: each KEK is a non-extractable AES key inside an HSM; the file records the module
//!   path, the token label and each version's object label, no key material (see [`crate::hsm`]).
//!
//! The file is replaced atomically (write, fsync, rename, fsync directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, KdfParams, Kek, Sealed, SecretKey, SecretString};
use crate::hsm::{self, Pkcs11Config};
use crate::{Error, Result};

/// Where the KEK comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    Dev,
    File,
    Pkcs11,
}

impl std::str::FromStr for KeySource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dev" => Ok(KeySource::Dev),
            "file" => Ok(KeySource::File),
            "pkcs11" => Ok(KeySource::Pkcs11),
            "shamir" => Err(Error::Config(format!(
                "key source `{s}` is not implemented yet"
            ))),
            _ => Err(Error::Config(format!(
                "unknown key source `{s}` (dev, file, pkcs11)"
            ))),
        }
    }
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Dev => "dev",
            KeySource::File => "file",
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
    /// pkcs11 only: the module and token that hold the KEK versions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pkcs11: Option<Pkcs11Config>,
    keks: Vec<KekFile>,
}

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
}

impl Keyring {
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

/// Creates the keyring with KEK version 1. Refuses to overwrite an existing one.
/// `passphrase` is the operator secret: the passphrase (`file`) or the token's user PIN
/// (`pkcs11`, which also needs `pkcs11`: the module and token).
pub fn create(
    data_dir: &Path,
    source: KeySource,
    passphrase: Option<&SecretString>,
    kdf: KdfParams,
    pkcs11: Option<&Pkcs11Config>,
) -> Result<Keyring> {
    let path = keyring_path(data_dir);
    if path.exists() {
        return Err(Error::AlreadyInitialized(data_dir.display().to_string()));
    }
    let kek_key = SecretKey::random();
    let created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let file = match source {
        KeySource::Dev => KeyringFile {
            format: 1,
            source,
            kdf: None,
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
            KeyringFile {
                format: 1,
                source,
                kdf: Some(KdfFile {
                    alg: "argon2id".into(),
                    params: kdf,
                    salt: hex::encode(salt),
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
        KeySource::Pkcs11 => return create_pkcs11(&path, passphrase, pkcs11, created_at),
    };
    write_private(
        &path,
        &serde_json::to_vec_pretty(&file).map_err(|_| Error::Corrupt { what: "keyring" })?,
    )?;
    Ok(Keyring {
        source,
        keks: vec![Kek::new(1, &kek_key)],
    })
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
        keks: vec![Kek::hsm(1, kek)],
    })
}

/// Which source a data dir's keyring uses, without unlocking it.
pub fn source_of(data_dir: &Path) -> Result<KeySource> {
    Ok(read_file(data_dir)?.source)
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
    match (file.source, unlock) {
        (KeySource::Dev, _) => {
            tracing::warn!(
                "dev key source: the KEK is stored unprotected; never use this outside testing"
            );
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
        }
        // The PIN may also arrive as the "passphrase" of `POST /v1/sys/unseal`.
        (KeySource::Pkcs11, Unlock::Pin(pin) | Unlock::Passphrase(pin)) => {
            let cfg = file
                .pkcs11
                .as_ref()
                .ok_or(Error::KeyUnlock("key file is malformed"))?;
            let token = hsm::Token::open(cfg, pin)?;
            for k in &file.keks {
                let kek = token.find_kek(k.version)?;
                if k.hsm_label.as_deref() != Some(kek.label()) {
                    return Err(Error::KeyUnlock("key file is malformed"));
                }
                keks.push(Kek::hsm(k.version, kek));
            }
        }
        (KeySource::File | KeySource::Pkcs11, Unlock::Dev) => return Err(Error::Sealed),
        (KeySource::File, Unlock::Pin(_)) => {
            return Err(Error::Config(
                "this vault's keys are sealed by a passphrase, not a PKCS#11 PIN".into(),
            ));
        }
    }
    Ok(Keyring {
        source: file.source,
        keks,
    })
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

    #[test]
    fn dev_keyring_round_trip_is_private() {
        let d = tempfile::tempdir().unwrap();
        let k = create(d.path(), KeySource::Dev, None, KdfParams::default(), None).unwrap();
        let v1 = k.current().unwrap().version();
        let loaded = load(d.path(), &Unlock::Dev).unwrap();
        assert_eq!(loaded.current().unwrap().version(), v1);
        let mode = std::fs::metadata(keyring_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            create(d.path(), KeySource::Dev, None, KdfParams::default(), None),
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
        let created = create(d.path(), KeySource::File, Some(&pass), params, None).unwrap();
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
    fn short_passphrase_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = create(
            d.path(),
            KeySource::File,
            Some(&SecretString::new("short".into())),
            KdfParams::default(),
            None,
        );
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
