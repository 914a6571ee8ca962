//! Who may do what: the scopes an API key carries, the API keys themselves (format, stored
//! MAC, checking a presented key), the principal a request acts as, and the cache of live keys.
//!
//! An API key is `pvk_<id>_<secret>`: a 64-bit public id (it names the actor in the audit log)
//! and a 256-bit secret from the OS CSPRNG. The store keeps only
//! `HMAC-SHA256(API key MAC key, "api-key" ‖ id ‖ secret)` under the id, the MAC key itself
//! wrapped by the KEK: a copy of the store yields no usable key, and checking a key costs one
//! MAC (no argon2 on the request path). Live keys are cached in memory; revoking one removes it
//! from the cache in the same step as from the store, so it stops working at once.
//!
//! Scopes: an admin key holds `admin`, `keys`, `audit`, `metrics`; a shop-login key holds `tokenize`,
//! `read`, `reveal`, `charge` and acts for the merchant group its shop login is in at the time
//! of each request, which must be the group the key was issued under (a shop login removed from
//! its group loses access to the group's tokens, and a key never follows its login to another
//! group). Every stored key record carries a MAC checked at open (`vault::auth_records`).

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::audit::Ctx;
use crate::crypto::{self, MacKey, SecretString};
use crate::sync::{read, write};
use crate::{Error, Result};

/// A permission an API key can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Create, update and delete a merchant group's tokens (one card or a batch).
    Tokenize,
    /// Read a token's metadata (never the card).
    Read,
    /// Reveal a token's card.
    Reveal,
    /// Charge a token through the gateway proxy.
    Charge,
    /// Manage merchant groups, their shop logins and the API keys.
    Admin,
    /// Rotate the KEK, run the re-encryption job, read the key status, seal the vault.
    Keys,
    /// Read the audit trail and the evidence report.
    Audit,
    /// Scrape `GET /metrics` (an admin key; a monitoring key can hold this scope alone).
    Metrics,
}

impl Scope {
    /// Every scope, in declaration order.
    pub const ALL: [Scope; 8] = [
        Scope::Tokenize,
        Scope::Read,
        Scope::Reveal,
        Scope::Charge,
        Scope::Admin,
        Scope::Keys,
        Scope::Audit,
        Scope::Metrics,
    ];

    /// The lowercase name, as serialized (`"tokenize"`, `"read"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tokenize => "tokenize",
            Scope::Read => "read",
            Scope::Reveal => "reveal",
            Scope::Charge => "charge",
            Scope::Admin => "admin",
            Scope::Keys => "keys",
            Scope::Audit => "audit",
            Scope::Metrics => "metrics",
        }
    }
}

/// The scopes a shop-login key may hold.
pub const SHOP_SCOPES: [Scope; 4] = [Scope::Tokenize, Scope::Read, Scope::Reveal, Scope::Charge];
/// The scopes an admin key may hold.
pub const ADMIN_SCOPES: [Scope; 4] = [Scope::Admin, Scope::Keys, Scope::Audit, Scope::Metrics];

const KEY_PREFIX: &str = "pvk_";

/// A stored API key: never the secret, only its MAC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ApiKeyRecord {
    pub(crate) id: String,
    mac: [u8; 32],
    pub(crate) scopes: Vec<Scope>,
    /// `None` for an admin key.
    pub(crate) shop_login: Option<String>,
    label: Option<String>,
    created_at: u64,
    /// The merchant group the key's shop login was in when the key was issued (`None` for an
    /// admin key). Not in the stored bytes: it is kept in the record's MAC seal
    /// (`vault::auth_records`) and filled in at load.
    #[serde(skip)]
    pub(crate) issued_under: Option<String>,
}

impl ApiKeyRecord {
    /// The key's creation time (Unix seconds).
    pub(crate) fn created_at(&self) -> u64 {
        self.created_at
    }
}

/// A new key, shown once: the vault keeps only its MAC.
#[derive(Debug)]
pub struct NewApiKey {
    /// The key's public id (16 hex digits): it names the key in the audit log and in a revoke.
    pub api_key_id: String,
    /// The whole key, `pvk_<id>_<secret>`, to hand to its holder; it cannot be shown again.
    pub api_key: SecretString,
    /// The scopes it carries, sorted, without duplicates.
    pub scopes: Vec<Scope>,
}

/// What `POST /v1/api-keys` asks for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// The shop login a shop key acts for (it must be in a merchant group); give either this
    /// or `admin`.
    #[serde(default)]
    pub shop_login: Option<String>,
    /// True for an admin key (no shop login).
    #[serde(default)]
    pub admin: bool,
    /// At least one scope: from [`SHOP_SCOPES`] for a shop key, from [`ADMIN_SCOPES`] for an
    /// admin key.
    pub scopes: Vec<Scope>,
    /// A note for operators: at most 128 printable characters, never a card number.
    #[serde(default)]
    pub label: Option<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The API key's id: the actor of the audit entries this caller causes.
    pub key_id: String,
    /// The scopes the key carries.
    pub scopes: Vec<Scope>,
    /// The key's shop login; `None` for admin keys.
    pub shop_login: Option<String>,
    /// The merchant group the key's shop login is in now; `None` for admin keys.
    pub merchant_id: Option<String>,
}

impl Principal {
    /// Ok if the key carries `scope`; else [`Error::MissingScope`] naming it.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Error::MissingScope {
                scope: scope.as_str(),
            })
        }
    }

    /// The merchant group this key acts for; [`Error::Forbidden`] for an admin key or a shop
    /// login that is in no group.
    pub fn merchant(&self) -> Result<&str> {
        self.merchant_id.as_deref().ok_or(Error::Forbidden {
            reason: "the API key's shop login is in no merchant group",
        })
    }

    /// An audit context for this caller.
    pub fn ctx(&self, client: Option<String>, request_id: Option<String>) -> Ctx {
        Ctx {
            actor: self.key_id.clone(),
            client,
            request_id,
        }
    }
}

/// Checks a shop login: 1 to 32 characters from `A-Z a-z 0-9 _ -` (Axerve's look like `9000001`
/// or `GESPAY12345`), not a card number; else [`Error::InvalidField`].
pub fn validate_shop_login(s: &str) -> Result<()> {
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::InvalidField {
            field: "shop_login",
            reason: "1 to 32 characters from A-Z a-z 0-9 _ -",
        });
    }
    refuse_card_number("shop_login", s)
}

/// Names, logins and labels are stored and answered in clear: one that holds a card number
/// is refused (without repeating it), so no card lands outside the encrypted records.
pub(crate) fn refuse_card_number(field: &'static str, s: &str) -> Result<()> {
    if crate::pan::holds_card_number(s) {
        return Err(Error::InvalidField {
            field,
            reason: "must not hold a card number",
        });
    }
    Ok(())
}

/// The stored MAC of a key: `HMAC(mac, "api-key" ‖ id ‖ secret)`, `secret` as the key shows it.
fn key_mac(mac: &MacKey, id: &str, secret: &[u8]) -> [u8; 32] {
    mac.tag(&[b"api-key", id.as_bytes(), secret])
}

/// Makes a new key, created at `created_at` (Unix seconds): its stored record and the secret
/// to show once.
pub(crate) fn new_api_key(
    mac: &MacKey,
    shop_login: Option<String>,
    mut scopes: Vec<Scope>,
    label: Option<String>,
    created_at: u64,
) -> Result<(ApiKeyRecord, SecretString)> {
    scopes.sort_unstable();
    scopes.dedup();
    let allowed: &[Scope] = if shop_login.is_some() {
        &SHOP_SCOPES
    } else {
        &ADMIN_SCOPES
    };
    if scopes.is_empty() || !scopes.iter().all(|s| allowed.contains(s)) {
        return Err(Error::InvalidField {
            field: "scopes",
            reason: "shop keys take tokenize, read, reveal, charge; admin keys take admin, keys, audit, metrics",
        });
    }
    if let Some(l) = &label
        && (l.chars().count() > 128 || l.chars().any(char::is_control))
    {
        return Err(Error::InvalidField {
            field: "label",
            reason: "at most 128 printable characters",
        });
    }
    if let Some(l) = &label {
        refuse_card_number("label", l)?;
    }
    let id = hex::encode(crypto::random_bytes::<8>());
    let secret = zeroize::Zeroizing::new(crypto::random_bytes::<32>());
    let encoded = zeroize::Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&secret[..]));
    let record = ApiKeyRecord {
        mac: key_mac(mac, &id, encoded.as_bytes()),
        id: id.clone(),
        scopes,
        shop_login,
        label,
        created_at,
        issued_under: None,
    };
    let key = SecretString::new(format!("{KEY_PREFIX}{id}_{}", encoded.as_str()));
    Ok((record, key))
}

/// Splits `pvk_<id>_<secret>`; `None` for anything else.
fn parse_key(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret.len() == 43).then_some((id, secret))
}

/// The live API keys by id, in memory. Revocation removes a key here in the same step as in
/// the store, so it stops working at once.
#[derive(Debug, Default)]
pub(crate) struct KeyCache(RwLock<HashMap<String, ApiKeyRecord>>);

impl KeyCache {
    /// A cache holding `keys` (every stored key, read at open).
    pub(crate) fn new(keys: HashMap<String, ApiKeyRecord>) -> Self {
        KeyCache(RwLock::new(keys))
    }

    /// The record of a presented key whose MAC, under `mac`, matches; the answer for a missing,
    /// malformed, unknown or revoked key is the same `Unauthorized`.
    pub(crate) fn check(&self, mac: &MacKey, raw: &str) -> Result<ApiKeyRecord> {
        let (id, secret) = parse_key(raw).ok_or(Error::Unauthorized)?;
        let rec = read(&self.0).get(id).cloned().ok_or(Error::Unauthorized)?;
        let presented = key_mac(mac, id, secret.as_bytes());
        if !bool::from(presented.ct_eq(&rec.mac)) {
            return Err(Error::Unauthorized);
        }
        Ok(rec)
    }

    /// Adds a key that was just made durable.
    pub(crate) fn insert(&self, record: ApiKeyRecord) {
        write(&self.0).insert(record.id.clone(), record);
    }

    /// Takes a key out: it stops authenticating at once.
    pub(crate) fn remove(&self, id: &str) -> Option<ApiKeyRecord> {
        write(&self.0).remove(id)
    }

    /// Every live key.
    pub(crate) fn records(&self) -> Vec<ApiKeyRecord> {
        read(&self.0).values().cloned().collect()
    }
}
