//! What unlocks a vault's keys from the command line: the operator passphrase, custodian share
//! and PKCS#11 PIN files, by the key source the data dir records.

use std::path::Path;

use crate::crypto::SecretString;
use crate::keys::{KeySource, Unlock};
use crate::vault::{Options, Vault};
use crate::{Error, Result};

use super::UnlockArgs;
use super::failure::{Failure, require_vault};

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

/// Opens a stopped vault with what unlocks its keys (the `keys`, `evidence` and `audit prune`
/// commands): refused first when the data dir holds no vault, and with `instead` (what works
/// on a running vault) when `serve` holds its store.
pub(super) fn open_stopped(a: &UnlockArgs, instead: &str) -> std::result::Result<Vault, Failure> {
    require_vault(&a.data)?;
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
        .map_err(|e| Failure::running_or(e, &a.data, instead))
}

/// What `serve` unlocks with at start; `None`: start sealed and wait for `POST /v1/sys/unseal`.
pub(super) fn server_unlock(
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
