//! The stored forms: a token's `Record`, the version byte in front of every encoded value,
//! wrapped keys (`DekRecord`) and the keys kept in `meta`, `vault.json`, the sealed plaintext
//! of a card. These bytes are on disk: changing them is a format change.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::now_unix;
use super::types::Agreement;
use crate::crypto::{MacKey, Sealed, SecretKey};
use crate::keys::{KeySource, Keyring};
use crate::pan::{Brand, Expiry, Pan};
use crate::store::{Store, Table};
use crate::token::{MerchantPrefix, TokenKind};
use crate::{Error, Result};

/// The stored form of a token. BIN, last 4, brand and expiry are in clear, as PCI DSS 3.4.1
/// allows; the PAN and cardholder name only inside `sealed`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) merchant_id: String,
    pub(super) kind: TokenKind,
    pub(super) dek_id: u32,
    pub(super) sealed: Sealed,
    pub(super) fingerprint: [u8; 32],
    pub(super) bin: String,
    pub(super) last4: String,
    pub(super) pan_len: u8,
    pub(super) brand: Brand,
    pub(super) expiry: Expiry,
    pub(super) created_at: u64,
    pub(super) agreements: Vec<Agreement>,
}

/// Version byte in front of every postcard-encoded value.
const VALUE_VERSION: u8 = 1;

/// `v` in postcard, behind the version byte; `what` names it in the error.
pub(super) fn encode<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>> {
    postcard::to_extend(v, vec![VALUE_VERSION]).map_err(|_| Error::Encode { what })
}

/// The value `encode` made; `Corrupt { what }` for another version byte or bad postcard.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|_| Error::Corrupt { what })
        }
        _ => Err(Error::Corrupt { what }),
    }
}

/// A key wrapped by a KEK version: a DEK in the `deks` table, or a key kept in `meta`.
#[derive(Serialize, Deserialize)]
pub(super) struct DekRecord {
    pub(super) kek_version: u32,
    pub(super) wrapped: Sealed,
    pub(super) created_at: u64,
}

/// `vault.json`: what a data directory holds, read before any key is at hand.
#[derive(Serialize, Deserialize)]
pub(super) struct VaultFile {
    pub(super) format: u32,
    pub(super) backend: String,
    pub(super) key_source: KeySource,
    pub(super) created_at: String,
}

/// Keys kept in `meta`, wrapped by the KEK, each as (meta key, wrap name). This one keys the
/// card fingerprints that find a merchant's standard token for a card.
pub(super) const FINGERPRINT_KEY: (&[u8], &str) = (b"fingerprint_key", "fingerprint");
/// Keys the MACs the store keeps of API keys.
pub(super) const API_KEY_MAC_KEY: (&[u8], &str) = (b"api_key_mac_key", "api-key-mac");
/// Signs the audit chain's head, checkpoints and prune anchor (`crate::audit`).
pub(super) const AUDIT_MAC_KEY: (&[u8], &str) = (b"audit_mac_key", "audit-mac");
/// Every key kept in `meta`: a KEK rotation re-wraps them all.
pub(super) const META_KEYS: [(&[u8], &str); 3] = [FINGERPRINT_KEY, API_KEY_MAC_KEY, AUDIT_MAC_KEY];

/// Wraps `key` under the current KEK in the stored form of a `meta` key.
pub(super) fn wrap_meta_key(
    keyring: &Keyring,
    which: (&[u8], &str),
    key: &SecretKey,
) -> Result<Vec<u8>> {
    let kek = keyring.current()?;
    encode(
        &DekRecord {
            kek_version: kek.version(),
            wrapped: kek.wrap(which.1, 0, key)?,
            created_at: now_unix(),
        },
        "wrapped key",
    )
}

/// Unwraps a `meta` key, if the store has it.
pub(super) fn load_meta_key(
    store: &dyn Store,
    keyring: &Keyring,
    which: (&[u8], &str),
) -> Result<Option<MacKey>> {
    let Some(bytes) = store.get(Table::Meta, which.0)? else {
        return Ok(None);
    };
    let rec: DekRecord = decode(&bytes, "wrapped key")?;
    let key = keyring
        .get(rec.kek_version)?
        .unwrap_key(which.1, 0, &rec.wrapped)?;
    MacKey::new(&key).map(Some)
}

/// The `meta` key under which a merchant prefix names its merchant: `prefix/<PREFIX>`.
pub(super) fn prefix_key(prefix: &MerchantPrefix) -> Vec<u8> {
    [b"prefix/".as_slice(), prefix.as_str().as_bytes()].concat()
}

/// What a record seals: the PAN's digits, a 0 byte, the cardholder name (empty if none).
pub(super) fn plaintext(pan: &Pan, name: Option<&Zeroizing<String>>) -> Zeroizing<Vec<u8>> {
    let name = name.map(|n| n.as_bytes()).unwrap_or_default();
    let mut p = Zeroizing::new(Vec::with_capacity(pan.len() + 1 + name.len()));
    p.extend_from_slice(pan.digits().as_bytes());
    p.push(0);
    p.extend_from_slice(name);
    p
}
