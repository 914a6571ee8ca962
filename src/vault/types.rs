//! The vault's answer and request types: what a caller sends in and gets back (token
//! metadata, revealed cards, key status, audit pages, re-encryption progress). Secret fields
//! zeroize on drop and print `[REDACTED]`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::rfc3339;
use crate::audit;
use crate::crypto::SecretString;
use crate::pan::{Brand, Expiry, Pan};
use crate::token::{MerchantPrefix, TokenKind};

/// The keys of an open vault (`GET /v1/sys/keys`). Never key material.
#[derive(Clone, Debug, Serialize)]
pub struct KeyStatus {
    /// Where the KEK comes from: `dev`, `file`, `shamir` or `pkcs11`.
    pub key_source: &'static str,
    /// KEK versions held (after a rotation, only the newest).
    pub kek_versions: Vec<u32>,
    /// A DEK older than this is past its cryptoperiod (and rolls over on next use).
    pub dek_cryptoperiod_seconds: u64,
    /// Every KEK version with its state and age.
    pub keks: Vec<KekStatus>,
    /// Every DEK in the store, with the KEK version wrapping it and the records it encrypts.
    pub deks: Vec<DekStatus>,
    /// The re-encryption job of this process, if one ran or runs.
    pub reencryption: Option<ReencryptJob>,
}

/// One KEK version of the keyring.
#[derive(Clone, Debug, Serialize)]
pub struct KekStatus {
    /// The KEK version (the newest is the one in use).
    pub version: u32,
    /// `active` (wraps every key) or `retired` (left by a rotation cut short; destroyed by the
    /// next one).
    pub state: &'static str,
    /// When the version was made (RFC 3339, UTC).
    pub created_at: String,
    /// Seconds since then.
    pub age_seconds: u64,
}

/// One DEK in the store.
#[derive(Clone, Debug, Serialize)]
pub struct DekStatus {
    /// The DEK's number, which every record it encrypts names.
    pub id: u32,
    /// The KEK version that wraps it.
    pub kek_version: u32,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
    /// Seconds since then.
    pub age_seconds: u64,
    /// Its age is over the key status's `dek_cryptoperiod_seconds`.
    pub past_cryptoperiod: bool,
    /// The DEK new records are encrypted under.
    pub current: bool,
    /// Records it encrypts.
    pub records: u64,
}

/// A page of audit entries (`GET /v1/audit`).
#[derive(Clone, Debug, Serialize)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<audit::Entry>,
    /// The `since` of the next page; null at the end of the chain.
    pub next: Option<u64>,
    /// On the page that ends at the chain's signed head: that head (`seq`, `hash`, `mac`), so a
    /// log system can check with `panvault audit verify` that nothing was cut from the tail.
    pub signed_head: Option<audit::SignedHead>,
}

/// Progress of a background re-encryption job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReencryptJob {
    /// The job is still going.
    pub running: bool,
    /// Records under a DEK numbered below this one move (the DEK current at the start).
    pub below: u32,
    /// Tokens looked at by this job.
    pub scanned: u64,
    /// Records this job moved to the current DEK.
    pub moved: u64,
    /// Tokens in the table when the job started (the progress bar's total).
    pub total: u64,
    /// DEKs this job destroyed once no record used them.
    pub destroyed: Vec<u32>,
    /// Why it stopped early, if it did (the next start resumes from its place).
    pub error: Option<String>,
    /// Milliseconds since the job started (until it ended, once it has).
    pub elapsed_ms: u64,
}

/// What one re-encryption step did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReencryptStep {
    /// Tokens looked at.
    pub scanned: u64,
    /// Records moved to the current DEK.
    pub moved: u64,
    /// The pass reached the end of the token table.
    pub finished: bool,
    /// DEKs destroyed at the end of the pass (no record used them any more).
    pub destroyed: Vec<u32>,
}

/// What a KEK rotation did.
#[derive(Debug, Serialize)]
pub struct Rotation {
    /// The KEK version now in use.
    pub kek_version: u32,
    /// The versions destroyed.
    pub destroyed: Vec<u32>,
    /// DEKs and `meta` keys re-wrapped.
    pub rewrapped: usize,
    /// How long the rotation took, in milliseconds.
    pub millis: u64,
    /// `shamir` keys only: the new custodian shares (`pvshare1-<id>-<hex>`, 1..=N), shown this
    /// once; the old shares no longer unseal. Hand each to its custodian before the vault next
    /// needs unsealing (if this answer is lost, rotate again while the vault runs).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "expose_all")]
    pub shares: Vec<SecretString>,
}

/// Serializes secrets that an answer exists to hand over (new custodian shares).
fn expose_all<S: serde::Serializer>(
    v: &[SecretString],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(SecretString::expose))
}

/// A tokenize request as it arrives, unchecked: [`Vault::tokenize`](super::Vault::tokenize)
/// validates every field. Secret fields zeroize on drop; `Debug` prints no card data.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The card number: 12 to 19 digits passing the Luhn check, optionally grouped by single
    /// spaces or dashes.
    pub pan: Zeroizing<String>,
    /// The card's expiry month, 1 to 12.
    pub expiry_month: i64,
    /// The card's expiry year, 2000 to 2099.
    pub expiry_year: i64,
    /// The token asked for: absent or `MASKEDPAN` for a standard token, else a custom value
    /// behind the merchant's prefix; a leading `:FORCED:` only matters on a proxied charge.
    #[serde(default)]
    pub request_token: Option<String>,
    /// At most [`MAX_NAME_LEN`](super::MAX_NAME_LEN) characters, no control characters;
    /// stored encrypted with the card.
    #[serde(default)]
    pub cardholder_name: Option<Zeroizing<String>>,
    /// Asks for a temporary token: held in memory only, for one charge.
    #[serde(default)]
    pub temporary: bool,
    /// 3 or 4 digits, accepted only with `temporary` and never stored.
    #[serde(default)]
    pub cvv: Option<Zeroizing<String>>,
    /// A temporary token's lifetime in seconds: 1 to
    /// [`TEMP_TTL_MAX`](super::TEMP_TTL_MAX), default
    /// [`TEMP_TTL_DEFAULT`](super::TEMP_TTL_DEFAULT); only with `temporary`.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

impl std::fmt::Debug for TokenizeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeRequest")
            .field("pan", &"[REDACTED]")
            .field("request_token", &self.request_token)
            .field("temporary", &self.temporary)
            .finish_non_exhaustive()
    }
}

/// A change to a token (`PATCH`), for [`Vault::update`](super::Vault::update). Secret fields
/// zeroize on drop; `Debug` prints `[REDACTED]`.
#[derive(Default)]
pub struct TokenUpdate {
    /// The new expiry month, 1 to 12.
    pub expiry_month: i64,
    /// The new expiry year, 2000 to 2099.
    pub expiry_year: i64,
    /// A new card: any card under a custom token, only the same card under a standard one,
    /// none under a temporary one (else `CardChangeNotAllowed`).
    pub pan: Option<Zeroizing<String>>,
    /// The cardholder name stored with the new card (ignored without `pan`).
    pub cardholder_name: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for TokenUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenUpdate([REDACTED])")
    }
}

/// A stored-credential agreement made on a token (recorded by the gateway proxy): MPGS
/// `agreement.{id,type}`, Nexi `contractId`/`contractType`; Worldline and Axerve, which have no
/// agreement id, `<gateway>:<TYPE>` with the series' type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The agreement's id at the gateway, or `<gateway>:<TYPE>` at one without ids.
    pub id: String,
    /// The agreement's type in the gateway's words; a merchant-initiated charge under the
    /// agreement must name the same one.
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a merchant may read about a token: never the PAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token.
    pub token: String,
    /// Standard, custom or temporary.
    pub token_kind: TokenKind,
    /// The card's expiry month as last given (1 to 12).
    pub token_expiry_month: u8,
    /// The card's expiry year as last given.
    pub token_expiry_year: u16,
    /// The card's brand, from its number.
    pub brand: Brand,
    /// The card number's first 6 digits.
    pub bin: String,
    /// The card number's last 4 digits.
    pub last4: String,
    /// The BIN, one `*` per hidden digit, the last 4.
    pub masked_pan: String,
    /// The expiry month has ended.
    pub expired: bool,
    /// When the token was made (RFC 3339, UTC).
    pub created_at: String,
    /// The stored-credential agreements made on it (none on a temporary token).
    pub agreements: Vec<Agreement>,
}

impl TokenInfo {
    /// A token's metadata, stored or temporary: the one place it is built. The masked PAN is
    /// the BIN, one `*` per hidden digit and the last 4, as long as the PAN.
    pub(super) fn new(
        token: &str,
        kind: TokenKind,
        card: Shown<'_>,
        created_at: u64,
        agreements: Vec<Agreement>,
    ) -> TokenInfo {
        let hidden = card.pan_len.saturating_sub(10);
        TokenInfo {
            token: token.to_string(),
            token_kind: kind,
            token_expiry_month: card.expiry.month,
            token_expiry_year: card.expiry.year,
            brand: card.brand,
            bin: card.bin.to_string(),
            last4: card.last4.to_string(),
            masked_pan: format!("{}{}{}", card.bin, "*".repeat(hidden), card.last4),
            expired: card.expiry.is_expired(),
            created_at: rfc3339(created_at),
            agreements,
        }
    }
}

/// What a token's metadata shows of its card, in clear as PCI DSS 3.4.1 allows: BIN, last 4,
/// length, brand, expiry.
pub(super) struct Shown<'a> {
    pub(super) bin: &'a str,
    pub(super) last4: &'a str,
    pub(super) pan_len: usize,
    pub(super) brand: Brand,
    pub(super) expiry: Expiry,
}

impl<'a> Shown<'a> {
    /// What a token shows of `pan` with `expiry`.
    pub(super) fn of(pan: &'a Pan, expiry: Expiry) -> Self {
        Shown {
            bin: pan.bin(),
            last4: pan.last4(),
            pan_len: pan.len(),
            brand: pan.brand(),
            expiry,
        }
    }
}

/// The answer of a tokenize: `created` is false when an existing token was returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    /// A new token was made (HTTP 201); false when an existing one came back (200).
    pub created: bool,
    /// The token's metadata.
    pub info: TokenInfo,
}

/// A revealed card. Zeroized on drop; prints as `[REDACTED]`.
pub struct Revealed {
    /// The card number.
    pub pan: Pan,
    /// The expiry stored with the token.
    pub expiry: Expiry,
    /// The cardholder name, if one was given.
    pub cardholder_name: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revealed([REDACTED])")
    }
}

/// A merchant: a group of shop logins that share one set of tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// `mer_` and 16 random lowercase base32 characters.
    pub merchant_id: String,
    /// The name given at creation: 1 to 128 printable characters.
    pub name: String,
    /// The four letters in the group's tokens, unique across the vault.
    pub prefix: MerchantPrefix,
}

/// What `audit prune` did.
#[derive(Debug, Serialize)]
pub struct Pruned {
    /// Entries deleted.
    pub deleted: u64,
    /// The chain's first entry now.
    pub first_kept: u64,
    /// Entries older than this (RFC 3339) were eligible.
    pub cutoff: String,
    /// The retention period asked for, in days.
    pub retention_days: u64,
}

/// What `init` hands back once: the first admin API key.
#[derive(Debug)]
pub struct Initialized {
    /// The admin key's id.
    pub admin_api_key_id: String,
    /// The admin key itself (`pvk_<id>_<secret>`), shown this once.
    pub admin_api_key: SecretString,
    /// `shamir` keys: the custodian shares, 1..=N, which exist nowhere else.
    pub shares: Vec<SecretString>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use crate::vault::tests::req;

    #[test]
    fn request_debug_is_redacted() {
        let r = req("4111111111111111", 1, 2030, None);
        assert!(!format!("{r:?}").contains("4111"));
    }
}
