//! Who may do what (contract 3): scopes, API keys, and the shop logins of a merchant group.
//!
//! An API key is `pvk_<id>_<secret>`: a 64-bit public id (it names the actor in the audit log)
//! and a 256-bit secret from the OS CSPRNG. The store keeps only
//! `HMAC-SHA256(API key MAC key, "api-key" ‖ id ‖ secret)` under the id, the MAC key itself
//! wrapped by the KEK: a copy of the store yields no usable key, and checking a key costs one
//! MAC (no argon2 on the request path). Live keys are cached in memory; revoking one removes it
//! from the cache in the same step as from the store, so it stops working at once.
//!
//! Scopes: an admin key holds `admin`, `keys`, `audit`; a shop-login key holds `tokenize`,
//! `read`, `reveal`, `charge` and acts for the merchant group its shop login is in at the time
//! of each request (a shop login removed from its group loses access to the group's tokens).

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::{self, MacKey, SecretString};
use crate::store::{Store, Table};
use crate::vault::{self, Ctx, Outcome, Vault};
use crate::{Error, Result};

/// A permission an API key can carry.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Tokenize,
    Read,
    Reveal,
    Charge,
    Admin,
    Keys,
    Audit,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Tokenize,
        Scope::Read,
        Scope::Reveal,
        Scope::Charge,
        Scope::Admin,
        Scope::Keys,
        Scope::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tokenize => "tokenize",
            Scope::Read => "read",
            Scope::Reveal => "reveal",
            Scope::Charge => "charge",
            Scope::Admin => "admin",
            Scope::Keys => "keys",
            Scope::Audit => "audit",
        }
    }
}

/// The scopes a shop-login key may hold.
pub const SHOP_SCOPES: [Scope; 4] = [Scope::Tokenize, Scope::Read, Scope::Reveal, Scope::Charge];
/// The scopes an admin key may hold.
pub const ADMIN_SCOPES: [Scope; 3] = [Scope::Admin, Scope::Keys, Scope::Audit];

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
}

impl ApiKeyRecord {
    /// The key's creation time (Unix seconds).
    pub(crate) fn created_at(&self) -> u64 {
        self.created_at
    }
}

/// A new key, shown once.
#[derive(Debug)]
pub struct NewApiKey {
    pub api_key_id: String,
    pub api_key: SecretString,
    pub scopes: Vec<Scope>,
}

/// What `POST /v1/api-keys` asks for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    #[serde(default)]
    pub shop_login: Option<String>,
    #[serde(default)]
    pub admin: bool,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub label: Option<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub shop_login: Option<String>,
    /// The merchant group the key's shop login is in now; `None` for admin keys.
    pub merchant_id: Option<String>,
}

impl Principal {
    /// Ok if the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Error::Forbidden {
                reason: "the API key lacks the scope this call needs",
            })
        }
    }

    /// The merchant group this key acts for.
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

/// Shop logins: 1 to 32 characters from `A-Z a-z 0-9 _ -` (Axerve's look like `9000001` or
/// `GESPAY12345`).
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
    if crate::mask::holds_pan(s.as_bytes(), &[]) {
        return Err(Error::InvalidField {
            field,
            reason: "must not hold a card number",
        });
    }
    Ok(())
}

fn key_mac(mac: &MacKey, id: &str, secret: &[u8]) -> [u8; 32] {
    mac.tag(&[b"api-key", id.as_bytes(), secret])
}

/// Makes a new key: its stored record and the secret to show once.
pub(crate) fn new_api_key(
    mac: &MacKey,
    shop_login: Option<String>,
    mut scopes: Vec<Scope>,
    label: Option<String>,
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
            reason: "shop keys take tokenize, read, reveal, charge; admin keys take admin, keys, audit",
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
        created_at: vault::now_unix(),
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

/// Every stored key, for the cache at open.
pub(crate) fn load_api_keys(
    store: &dyn Store,
) -> Result<std::collections::HashMap<String, ApiKeyRecord>> {
    let mut out = std::collections::HashMap::new();
    crate::store::for_each(store, Table::ApiKeys, &[], |_, v| {
        let rec: ApiKeyRecord = vault::decode(v, "api key")?;
        out.insert(rec.id.clone(), rec);
        Ok(())
    })?;
    Ok(out)
}

impl Vault {
    /// Checks a presented key; the answer for a missing, malformed, unknown or revoked key is
    /// the same `Unauthorized`.
    pub fn authenticate(&self, raw: &str) -> Result<Principal> {
        let (id, secret) = parse_key(raw).ok_or(Error::Unauthorized)?;
        let rec = vault::read_lock(&self.inner.api_keys)
            .get(id)
            .cloned()
            .ok_or(Error::Unauthorized)?;
        let presented = key_mac(&self.inner.keys.api_key_mac, id, secret.as_bytes());
        if !bool::from(presented.ct_eq(&rec.mac)) {
            return Err(Error::Unauthorized);
        }
        let merchant_id = match &rec.shop_login {
            None => None,
            Some(shop) => self
                .inner
                .store
                .get(Table::Shops, shop.as_bytes())?
                .map(|m| String::from_utf8(m).map_err(|_| Error::Corrupt { what: "shop" }))
                .transpose()?,
        };
        Ok(Principal {
            key_id: rec.id,
            scopes: rec.scopes,
            shop_login: rec.shop_login,
            merchant_id,
        })
    }

    /// Records a failed authentication in the audit log (contract 7).
    pub async fn audit_auth_failure(&self, ctx: &Ctx) -> Result<()> {
        let ev = ctx.event("authenticate", None, None, "denied");
        self.audit_only(ev).await
    }

    /// Records a reveal refused by the rate limit (contract 4: every reveal call is audited).
    pub async fn audit_rate_limited(&self, ctx: &Ctx, token: &str) -> Result<()> {
        let token = crate::token::is_well_formed_token(token).then(|| token.to_string());
        let ev = ctx.event("reveal", None, token.as_deref(), "rate_limited");
        self.audit_only(ev).await
    }

    /// Creates an API key for a shop login (which must be in a merchant group) or an admin key.
    pub async fn create_api_key(&self, ctx: &Ctx, req: ApiKeyRequest) -> Result<NewApiKey> {
        let shop_login = match (req.shop_login, req.admin) {
            (Some(s), false) => {
                validate_shop_login(&s)?;
                Some(s)
            }
            (None, true) => None,
            _ => {
                return Err(Error::InvalidField {
                    field: "shop_login",
                    reason: "give either shop_login or admin: true",
                });
            }
        };
        let (record, secret) = new_api_key(
            &self.inner.keys.api_key_mac,
            shop_login,
            req.scopes,
            req.label,
        )?;
        let value = vault::encode(&record, "api key")?;
        let ctx = ctx.clone();
        let stored = record.clone();
        self.write(move |tx| {
            if let Some(shop) = &stored.shop_login
                && tx.get(Table::Shops, shop.as_bytes())?.is_none()
            {
                return Ok(Outcome::Refuse(Error::InvalidField {
                    field: "shop_login",
                    reason: "the shop login is in no merchant group",
                }));
            }
            tx.put(Table::ApiKeys, stored.id.as_bytes(), value);
            tx.audit(ctx.event("api_key_create", None, Some(&stored.id), "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()?;
        vault::write_lock(&self.inner.api_keys).insert(record.id.clone(), record.clone());
        Ok(NewApiKey {
            api_key_id: record.id,
            api_key: secret,
            scopes: record.scopes,
        })
    }

    /// Revokes a key: it stops working before this returns.
    pub async fn revoke_api_key(&self, ctx: &Ctx, api_key_id: &str) -> Result<()> {
        // Out of the cache first: no request authenticates with it from here on. If the
        // revocation cannot be made durable, the key goes back and the caller gets the error.
        let Some(record) = vault::write_lock(&self.inner.api_keys).remove(api_key_id) else {
            return Err(Error::ApiKeyNotFound);
        };
        let id = api_key_id.to_string();
        let ctx = ctx.clone();
        let result = self
            .write(move |tx| {
                tx.delete(Table::ApiKeys, id.as_bytes());
                tx.audit(ctx.event("api_key_revoke", None, Some(&id), "ok"));
                Ok(())
            })
            .await;
        if result.is_err() {
            vault::write_lock(&self.inner.api_keys).insert(record.id.clone(), record);
        }
        result
    }

    /// Adds a shop login to a merchant group; refused if it is in any group already.
    pub async fn add_shop(&self, ctx: &Ctx, merchant_id: &str, shop_login: &str) -> Result<()> {
        validate_shop_login(shop_login)?;
        self.merchant(merchant_id)?;
        let (m, shop, ctx) = (merchant_id.to_string(), shop_login.to_string(), ctx.clone());
        self.write(move |tx| {
            if tx.get(Table::Shops, shop.as_bytes())?.is_some() {
                tx.audit(ctx.event("shop_add", Some(&m), None, "shop_taken"));
                return Ok(Outcome::Refuse(Error::ShopTaken));
            }
            tx.put(Table::Shops, shop.as_bytes(), m.as_bytes());
            tx.audit(ctx.event("shop_add", Some(&m), None, "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()
    }

    /// Removes a shop login from its group. The group's tokens stay; the shop's keys lose
    /// access to them.
    pub async fn remove_shop(&self, ctx: &Ctx, merchant_id: &str, shop_login: &str) -> Result<()> {
        let (m, shop, ctx) = (merchant_id.to_string(), shop_login.to_string(), ctx.clone());
        self.write(move |tx| {
            if tx.get(Table::Shops, shop.as_bytes())?.as_deref() != Some(m.as_bytes()) {
                return Ok(Outcome::Refuse(Error::ShopNotFound));
            }
            tx.delete(Table::Shops, shop.as_bytes());
            tx.audit(ctx.event("shop_remove", Some(&m), None, "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::keys::Unlock;
    use crate::store::Backend;
    use crate::vault::{InitOptions, Options, TokenizeRequest};

    fn vault() -> (tempfile::TempDir, Vault, SecretString) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        let init = Vault::init(&dir, InitOptions::dev(Backend::Redb)).unwrap();
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        (d, v, init.admin_api_key)
    }

    #[tokio::test]
    async fn keys_authenticate_carry_scopes_and_revoke_at_once() {
        let (_d, v, admin) = vault();
        let p = v.authenticate(admin.expose()).unwrap();
        assert_eq!(p.scopes, ADMIN_SCOPES.to_vec());
        assert_eq!(p.merchant_id, None);
        let ctx = p.ctx(None, None);
        let m = v.create_merchant(&ctx, "Shop", Some("XYZW")).await.unwrap();
        v.add_shop(&ctx, &m.merchant_id, "9000001").await.unwrap();
        assert!(matches!(
            v.add_shop(&ctx, &m.merchant_id, "9000001").await,
            Err(Error::ShopTaken)
        ));
        let k = v
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some("9000001".into()),
                    scopes: vec![Scope::Tokenize, Scope::Read],
                    ..ApiKeyRequest::default()
                },
            )
            .await
            .unwrap();
        let shop = v.authenticate(k.api_key.expose()).unwrap();
        assert_eq!(shop.merchant().unwrap(), m.merchant_id);
        shop.require(Scope::Tokenize).unwrap();
        assert!(matches!(
            shop.require(Scope::Reveal),
            Err(Error::Forbidden { .. })
        ));
        // A wrong secret with the right id, a garbage key, an empty one: all the same error.
        let mut wrong = k.api_key.expose().to_string();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        for bad in [
            wrong.as_str(),
            "pvk_",
            "",
            "Bearer x",
            "pvk_0123456789abcdef_short",
        ] {
            assert!(
                matches!(v.authenticate(bad), Err(Error::Unauthorized)),
                "{bad}"
            );
        }
        // Tokens belong to the group: removing the shop cuts the key off, the token stays.
        let req = TokenizeRequest {
            pan: "4111111111111111".to_string().into(),
            expiry_month: 12,
            expiry_year: 2030,
            ..TokenizeRequest::default()
        };
        let t = v
            .tokenize(&ctx, &m.merchant_id, &req)
            .await
            .unwrap()
            .info
            .token;
        v.remove_shop(&ctx, &m.merchant_id, "9000001")
            .await
            .unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()).unwrap().merchant(),
            Err(Error::Forbidden { .. })
        ));
        assert!(v.get(&m.merchant_id, &t).is_ok());
        v.add_shop(&ctx, &m.merchant_id, "9000001").await.unwrap();
        assert!(
            v.authenticate(k.api_key.expose())
                .unwrap()
                .merchant()
                .is_ok()
        );
        // Revoked: refused at once, and after a restart.
        v.revoke_api_key(&ctx, &k.api_key_id).await.unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        assert!(matches!(
            v.revoke_api_key(&ctx, &k.api_key_id).await,
            Err(Error::ApiKeyNotFound)
        ));
        let dir = v.dir().to_path_buf();
        v.shutdown();
        drop(v);
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        assert!(v.authenticate(admin.expose()).is_ok());
        v.shutdown();
    }

    #[tokio::test]
    async fn scope_rules_and_store_holds_no_usable_key() {
        let (_d, v, admin) = vault();
        let ctx = v.authenticate(admin.expose()).unwrap().ctx(None, None);
        let bad = [
            ApiKeyRequest {
                admin: true,
                scopes: vec![Scope::Tokenize],
                ..Default::default()
            },
            ApiKeyRequest {
                shop_login: Some("1".into()),
                scopes: vec![Scope::Admin],
                ..Default::default()
            },
            ApiKeyRequest {
                admin: true,
                scopes: vec![],
                ..Default::default()
            },
            ApiKeyRequest {
                shop_login: Some("1".into()),
                admin: true,
                scopes: vec![Scope::Read],
                ..Default::default()
            },
            ApiKeyRequest {
                shop_login: Some("not in a group".into()),
                scopes: vec![Scope::Read],
                ..Default::default()
            },
            ApiKeyRequest {
                shop_login: Some("nogroup".into()),
                scopes: vec![Scope::Read],
                ..Default::default()
            },
        ];
        for req in bad {
            let r = v.create_api_key(&ctx, req.clone()).await;
            assert!(matches!(r, Err(Error::InvalidField { .. })), "{req:?}");
        }
        let k = v
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    admin: true,
                    scopes: vec![Scope::Audit],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            k.api_key
                .expose()
                .starts_with(&format!("pvk_{}_", k.api_key_id))
        );
        // The stored record holds neither the secret nor anything that authenticates.
        let stored = v
            .inner
            .store
            .get(Table::ApiKeys, k.api_key_id.as_bytes())
            .unwrap()
            .unwrap();
        let secret = k.api_key.expose().rsplit('_').next().unwrap();
        assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert_eq!(format!("{:?}", k.api_key), "[REDACTED]");
        v.shutdown();
    }
}
