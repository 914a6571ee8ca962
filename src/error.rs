//! The one error type of the library. Every variant has a stable snake_case `code()` that the
//! HTTP edge maps to RFC 9457 problem+json; no variant ever carries a PAN, a CVV or key material.

use thiserror::Error;

/// Every failure the library can report.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The card number is not 12-19 ASCII digits (separators aside).
    #[error("invalid pan: {reason}")]
    InvalidPan {
        /// Which rule the input broke, in words that never quote the input.
        reason: &'static str,
    },
    /// The card number has the right shape but fails the Luhn check.
    #[error("pan fails the Luhn check")]
    LuhnCheckFailed,
    /// Expiry month/year out of range.
    #[error("invalid expiry: {reason}")]
    InvalidExpiry {
        /// Which bound the month or year broke.
        reason: &'static str,
    },
    /// A new token was asked for a card whose expiry month has already ended (UTC). A card
    /// the merchant already has a token for is not refused: see [`crate::vault::Vault::tokenize`].
    #[error(
        "card expired: expiry_month/expiry_year {month:02}/{year} has passed (a card is valid through the last day of its expiry month, UTC)"
    )]
    CardExpired {
        /// The expiry month asked for.
        month: u8,
        /// The expiry year asked for.
        year: u16,
    },
    /// CVV is not 3 or 4 ASCII digits.
    #[error("invalid cvv: must be 3 or 4 digits")]
    InvalidCvv,
    /// A requested custom token breaks one of the custom-token rules (see [`crate::token`]).
    #[error("invalid custom token: {reason}")]
    InvalidCustomToken {
        /// Which custom-token rule the value broke, never the value itself.
        reason: &'static str,
    },
    /// A merchant prefix is not four letters A-Z.
    #[error("invalid merchant prefix: must be four letters A-Z")]
    InvalidPrefix,
    /// Some other request field is out of range.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field's name as the request or command line spells it (`ttl_seconds`, `limit`).
        field: &'static str,
        /// What is wrong with its value, never the value itself.
        reason: &'static str,
    },
    /// The custom token exists for another card, or a masked token was asked for another PAN.
    #[error("token already exists for a different card")]
    TokenConflict,
    /// A `PATCH` gave a different card for a token whose card cannot change: a standard
    /// (masked) token is its card's, and a temporary token holds one card for one charge.
    #[error("a {kind} token's card cannot change; tokenize the new card")]
    CardChangeNotAllowed {
        /// `standard` or `temporary`.
        kind: &'static str,
    },
    /// No such token in this merchant group (also the answer for another group's token).
    #[error("token not found")]
    TokenNotFound,
    /// No such merchant.
    #[error("merchant not found")]
    MerchantNotFound,
    /// The merchant prefix is used by another merchant.
    #[error("merchant prefix already taken")]
    PrefixTaken,
    /// No API key, or one that is unknown, malformed or revoked.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The API key lacks the scope, or its shop login is in no merchant group.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why the call was refused, in words that name no secret.
        reason: &'static str,
    },
    /// The API key is valid but lacks the scope the call needs; the answer names it (code
    /// `forbidden`, like every 403).
    #[error("forbidden: this call needs an API key with the `{scope}` scope")]
    MissingScope {
        /// The scope's name as keys carry it (`reveal`, `tokenize`...).
        scope: &'static str,
    },
    /// The shop login already belongs to a merchant group.
    #[error("shop login already belongs to a merchant group")]
    ShopTaken,
    /// The shop login is not in this merchant group.
    #[error("shop login not found in this merchant")]
    ShopNotFound,
    /// No such API key.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// A batch request holds more items than one request may.
    #[error("batch holds {got} items, at most {max} allowed")]
    BatchTooLarge {
        /// How many items the request held.
        got: usize,
        /// The most one batch may hold.
        max: usize,
    },
    /// Key material is not available (vault sealed).
    #[error("vault is sealed")]
    Sealed,
    /// Wrong passphrase, wrong key, or tampered key file.
    #[error("key unlock failed: {0}")]
    KeyUnlock(&'static str),
    /// A custodian share (`shamir` key source) was refused: malformed, not on this vault's
    /// committed polynomial, or repeated. It does not count towards the threshold. The message
    /// names the share by position and id, never by its value.
    #[error("share refused: {0}")]
    ShareRefused(String),
    /// Fewer distinct valid custodian shares than the keyring's threshold.
    #[error("not enough shares: {have} distinct valid shares given, {need} needed")]
    NotEnoughShares {
        /// Distinct shares that passed the check.
        have: usize,
        /// The keyring's threshold M.
        need: usize,
    },
    /// Authenticated decryption failed: the ciphertext, its associated data or its key is wrong.
    #[error("decryption failed for {what}")]
    Decrypt {
        /// The kind of ciphertext that failed, such as `wrapped key`.
        what: &'static str,
    },
    /// A vault already exists where `init` was asked to create one.
    #[error("a vault already exists in {0}")]
    AlreadyInitialized(String),
    /// No vault where one was expected.
    #[error("no vault in {0}")]
    NotInitialized(String),
    /// The storage backend failed; `op` names what was attempted.
    #[error("store error during {op}: {detail}")]
    Store {
        /// The store operation that failed (`open`, `commit`, `scan`...).
        op: &'static str,
        /// The engine's error, as text.
        detail: String,
    },
    /// A stored value could not be decoded (corruption or version mismatch).
    #[error("corrupt {what} in store")]
    Corrupt {
        /// The kind of stored value that would not decode.
        what: &'static str,
    },
    /// A journal record in the middle is damaged or missing while newer records follow it:
    /// starting would silently drop every record after it, so the store does not open. Names
    /// the file, the offset and the sequence numbers that would be lost; never record contents.
    #[error(
        "journal damaged: {file} at offset {offset}: record {seq_from} is damaged or missing and records up to {seq_to} follow it. Nothing was changed. To start anyway, run `panvault serve --accept-journal-loss` once: it cuts the journal at the damage (records {seq_from}..={seq_to} are lost) and records the loss in the audit log; or restore the data directory from a backup"
    )]
    JournalCorrupt {
        /// The damaged journal file.
        file: String,
        /// Byte offset of the damage in it.
        offset: u64,
        /// First sequence number that would be lost.
        seq_from: u64,
        /// Last sequence number that would be lost.
        seq_to: u64,
    },
    /// A value could not be encoded for storage or output (a bug, never bad input).
    #[error("could not encode {what}")]
    Encode {
        /// The kind of value that would not encode.
        what: &'static str,
    },
    /// Authenticated encryption failed (a bug or a broken cipher, never bad input).
    #[error("encryption failed for {what}")]
    Encrypt {
        /// The kind of value whose encryption failed.
        what: &'static str,
    },
    /// Every random candidate tried was taken: no free `what` (random token, merchant prefix).
    #[error("no free {what} found")]
    Exhausted {
        /// What was being drawn at random (`random token`, `merchant prefix`).
        what: &'static str,
    },
    /// The audit chain does not verify; `seq` is the first bad entry.
    #[error("audit chain broken at entry {seq}: {reason}")]
    AuditBroken {
        /// Sequence number of the first entry that does not verify.
        seq: u64,
        /// Which check failed (link, hash, MAC, head).
        reason: &'static str,
    },
    /// An authorization record (API key, shop login binding, merchant, merchant prefix) fails
    /// its MAC: it was altered, added or moved on disk. The vault does not open on it.
    #[error("authorization record broken: {record}: {reason}")]
    AuthRecordBroken {
        /// Which record, by kind and key (`api key 0123abcd...`, `shop login 9000001`).
        record: String,
        /// Which check failed.
        reason: &'static str,
    },
    /// The single writer is gone (shutdown in progress).
    #[error("vault is shutting down")]
    ShuttingDown,
    /// Filesystem error outside the store (key files, config).
    #[error("{what}: {source}")]
    Io {
        /// The path or object the operation was on.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The HSM (PKCS#11 key source) failed; the text names the operation, never key material.
    #[error("hsm error: {0}")]
    Hsm(&'static str),
    /// Configuration or command-line value is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The stable machine-readable code of this error: the `code` member of every HTTP problem
    /// answer, listed for API clients in CONTRACT.md section 2. Never changes for a variant.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPan { .. } => "invalid_pan",
            Error::LuhnCheckFailed => "luhn_check_failed",
            Error::InvalidExpiry { .. } => "invalid_expiry",
            Error::CardExpired { .. } => "card_expired",
            Error::InvalidCvv => "invalid_cvv",
            Error::InvalidCustomToken { .. } => "invalid_custom_token",
            Error::InvalidPrefix => "invalid_prefix",
            Error::InvalidField { .. } => "invalid_field",
            Error::TokenConflict => "token_conflict",
            Error::CardChangeNotAllowed { .. } => "card_change_not_allowed",
            Error::TokenNotFound => "token_not_found",
            Error::MerchantNotFound => "merchant_not_found",
            Error::PrefixTaken => "prefix_taken",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden { .. } | Error::MissingScope { .. } => "forbidden",
            Error::ShopTaken => "shop_taken",
            Error::ShopNotFound => "shop_not_found",
            Error::ApiKeyNotFound => "api_key_not_found",
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::Sealed => "sealed",
            Error::KeyUnlock(_) => "key_unlock_failed",
            Error::ShareRefused(_) => "share_refused",
            Error::NotEnoughShares { .. } => "not_enough_shares",
            Error::Decrypt { .. } => "decrypt_failed",
            Error::AlreadyInitialized(_) => "already_initialized",
            Error::NotInitialized(_) => "not_initialized",
            Error::Store { .. } => "store_error",
            Error::Corrupt { .. } => "corrupt_data",
            Error::JournalCorrupt { .. } => "journal_corrupt",
            Error::Encode { .. } => "encode_failed",
            Error::Encrypt { .. } => "encrypt_failed",
            Error::Exhausted { .. } => "exhausted",
            Error::AuditBroken { .. } => "audit_broken",
            Error::AuthRecordBroken { .. } => "auth_record_broken",
            Error::ShuttingDown => "shutting_down",
            Error::Io { .. } => "io_error",
            Error::Config(_) => "invalid_config",
            Error::Hsm(_) => "hsm_error",
        }
    }

    /// Shorthand for a store failure.
    pub fn store(op: &'static str, e: impl std::fmt::Display) -> Self {
        Error::Store {
            op,
            detail: e.to_string(),
        }
    }

    /// Shorthand for an I/O failure on a named path or object.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
