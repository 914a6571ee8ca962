//! API keys and shop logins of an open vault: authenticate, create, revoke, list; the rules
//! (scopes, key format, the MAC) are in `crate::access`.

use std::collections::HashMap;

use super::auth_records::{self, Kind};
use super::record::{decode, encode};
use super::writer::Outcome;
use super::{Ctx, Vault, now_unix, rfc3339};
use crate::access::{self, ApiKeyRecord, ApiKeyRequest, NewApiKey, Principal};
use crate::store::{Store, Table};
use crate::{Error, Result};

/// Every stored key with the merchant it was issued under (from its seal, which the open
/// checked), for the cache at open.
pub(super) fn load(store: &dyn Store) -> Result<HashMap<String, ApiKeyRecord>> {
    let mut out = HashMap::new();
    crate::store::for_each(store, Table::ApiKeys, &[], |_, v| {
        let mut rec: ApiKeyRecord = decode(v, "api key")?;
        rec.issued_under = auth_records::issued_under(store, &rec.id)?;
        out.insert(rec.id.clone(), rec);
        Ok(())
    })?;
    Ok(out)
}

impl Vault {
    /// Every API key: id, scopes, shop login (none: admin), creation time (RFC 3339).
    pub fn api_key_records(&self) -> Vec<(String, Vec<String>, Option<String>, String)> {
        let mut v: Vec<_> = self
            .inner
            .api_keys
            .records()
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.scopes.iter().map(|s| s.as_str().to_string()).collect(),
                    r.shop_login.clone(),
                    rfc3339(r.created_at()),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Checks a presented key; the answer for a missing, malformed, unknown or revoked key is
    /// the same `Unauthorized`, and so is it for a key whose shop login is now in another
    /// merchant group than the one the key was issued under.
    pub fn authenticate(&self, raw: &str) -> Result<Principal> {
        let rec = self
            .inner
            .api_keys
            .check(&self.inner.keys.api_key_mac, raw)?;
        let merchant_id = match &rec.shop_login {
            None => None,
            Some(shop) => self.shop_merchant(shop)?,
        };
        if merchant_id.is_some() && merchant_id != rec.issued_under {
            return Err(Error::Unauthorized);
        }
        Ok(Principal {
            key_id: rec.id,
            scopes: rec.scopes,
            shop_login: rec.shop_login,
            merchant_id,
        })
    }

    /// Records a failed authentication in the audit log (`authenticate`, `denied`).
    pub async fn audit_auth_failure(&self, ctx: &Ctx) -> Result<()> {
        let ev = ctx.event("authenticate", None, None, "denied");
        self.audit_only(ev).await
    }

    /// Records `count` failed authentications from one source (`ctx.client`) within a window
    /// of `window_seconds` as one entry (`authenticate`, `denied`), detail
    /// `count=N window=Ws refused=M`: `refused` of them were answered 429, and `overflow`
    /// is appended when the sources were too many to tell apart (`ctx.client` is then none).
    pub async fn audit_auth_failures(
        &self,
        ctx: &Ctx,
        count: u64,
        refused: u64,
        window_seconds: u64,
        overflow: bool,
    ) -> Result<()> {
        let mut ev = ctx.event("authenticate", None, None, "denied");
        ev.detail = Some(format!(
            "count={count} window={window_seconds}s refused={refused}{}",
            if overflow { " sources=overflow" } else { "" }
        ));
        self.audit_only(ev).await
    }

    /// Records a reveal refused by the rate limit: every reveal call is audited, refused ones
    /// too. The token goes in the entry only if it is well formed (never a card sent as one).
    pub async fn audit_rate_limited(&self, ctx: &Ctx, token: &str) -> Result<()> {
        let token = crate::token::is_well_formed_token(token).then(|| token.to_string());
        let ev = ctx.event("reveal", None, token.as_deref(), "rate_limited");
        self.audit_only(ev).await
    }

    /// Creates an API key for a shop login (which must be in a merchant group) or an admin key;
    /// `InvalidField` names what the request got wrong (shop login, scopes, label).
    pub async fn create_api_key(&self, ctx: &Ctx, req: ApiKeyRequest) -> Result<NewApiKey> {
        let shop_login = match (req.shop_login, req.admin) {
            (Some(s), false) => {
                access::validate_shop_login(&s)?;
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
        let (mut record, secret) = access::new_api_key(
            &self.inner.keys.api_key_mac,
            shop_login,
            req.scopes,
            req.label,
            now_unix(),
        )?;
        // The merchant the key is issued under: its shop login's now (the writer confirms it).
        record.issued_under = match &record.shop_login {
            Some(shop) => Some(self.shop_merchant(shop)?.ok_or(Error::InvalidField {
                field: "shop_login",
                reason: "the shop login is in no merchant group",
            })?),
            None => None,
        };
        let value = encode(&record, "api key")?;
        let (seal_key, seal) = auth_records::seal(
            &self.auth_record_key()?,
            Kind::ApiKey,
            record.id.as_bytes(),
            &value,
            record.issued_under.as_deref(),
        )?;
        let ctx = ctx.clone();
        let stored = record.clone();
        self.write(move |tx| {
            if let Some(shop) = &stored.shop_login
                && tx.get(Table::Shops, shop.as_bytes())?.as_deref()
                    != stored.issued_under.as_deref().map(str::as_bytes)
            {
                return Ok(Outcome::Refuse(Error::InvalidField {
                    field: "shop_login",
                    reason: "the shop login is in no merchant group",
                }));
            }
            tx.put(Table::ApiKeys, stored.id.as_bytes(), value);
            tx.put(Table::Meta, seal_key, seal);
            tx.audit(ctx.event("api_key_create", None, Some(&stored.id), "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()?;
        self.inner.api_keys.insert(record.clone());
        Ok(NewApiKey {
            api_key_id: record.id,
            api_key: secret,
            scopes: record.scopes,
        })
    }

    /// Revokes a key: it stops working before this returns. `ApiKeyNotFound` for an unknown
    /// id.
    pub async fn revoke_api_key(&self, ctx: &Ctx, api_key_id: &str) -> Result<()> {
        // Out of the cache first: no request authenticates with it from here on. If the
        // revocation cannot be made durable, the key goes back and the caller gets the error.
        let Some(record) = self.inner.api_keys.remove(api_key_id) else {
            return Err(Error::ApiKeyNotFound);
        };
        let id = api_key_id.to_string();
        let ctx = ctx.clone();
        let result = self
            .write(move |tx| {
                tx.delete(Table::ApiKeys, id.as_bytes());
                tx.delete(
                    Table::Meta,
                    auth_records::seal_key(Kind::ApiKey, id.as_bytes()),
                );
                tx.audit(ctx.event("api_key_revoke", None, Some(&id), "ok"));
                Ok(())
            })
            .await;
        if result.is_err() {
            self.inner.api_keys.insert(record);
        }
        result
    }

    /// Adds a shop login to a merchant group; `ShopTaken` if it is in any group already,
    /// `MerchantNotFound` for an unknown group.
    pub async fn add_shop(&self, ctx: &Ctx, merchant_id: &str, shop_login: &str) -> Result<()> {
        access::validate_shop_login(shop_login)?;
        self.merchant(merchant_id)?;
        let (seal_key, seal) = auth_records::seal(
            &self.auth_record_key()?,
            Kind::Shop,
            shop_login.as_bytes(),
            merchant_id.as_bytes(),
            None,
        )?;
        let (m, shop, ctx) = (merchant_id.to_string(), shop_login.to_string(), ctx.clone());
        self.write(move |tx| {
            if tx.get(Table::Shops, shop.as_bytes())?.is_some() {
                tx.audit(ctx.event("shop_add", Some(&m), None, "shop_taken"));
                return Ok(Outcome::Refuse(Error::ShopTaken));
            }
            tx.put(Table::Shops, shop.as_bytes(), m.as_bytes());
            tx.put(Table::Meta, seal_key, seal);
            tx.audit(ctx.event("shop_add", Some(&m), None, "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()
    }

    /// Removes a shop login from its group and revokes every API key of that login (each
    /// audited as `api_key_revoke`), in one durable write. The group's tokens stay.
    /// `ShopNotFound` if the login is not in that group.
    pub async fn remove_shop(&self, ctx: &Ctx, merchant_id: &str, shop_login: &str) -> Result<()> {
        // The shop's keys end with it (a login moved to another group must not take them
        // along): out of the cache first, so none authenticates from here on, and back in if
        // the removal is refused or cannot be made durable.
        let keys: Vec<_> = self
            .inner
            .api_keys
            .records()
            .into_iter()
            .filter(|r| r.shop_login.as_deref() == Some(shop_login))
            .collect();
        for r in &keys {
            self.inner.api_keys.remove(&r.id);
        }
        let ids: Vec<String> = keys.iter().map(|r| r.id.clone()).collect();
        let (m, shop, ctx) = (merchant_id.to_string(), shop_login.to_string(), ctx.clone());
        let result = self
            .write(move |tx| {
                if tx.get(Table::Shops, shop.as_bytes())?.as_deref() != Some(m.as_bytes()) {
                    return Ok(Outcome::Refuse(Error::ShopNotFound));
                }
                tx.delete(Table::Shops, shop.as_bytes());
                tx.delete(
                    Table::Meta,
                    auth_records::seal_key(Kind::Shop, shop.as_bytes()),
                );
                tx.audit(ctx.event("shop_remove", Some(&m), None, "ok"));
                for id in &ids {
                    tx.delete(Table::ApiKeys, id.as_bytes());
                    tx.delete(
                        Table::Meta,
                        auth_records::seal_key(Kind::ApiKey, id.as_bytes()),
                    );
                    tx.audit(ctx.event("api_key_revoke", Some(&m), Some(id), "ok"));
                }
                Ok(Outcome::Commit(()))
            })
            .await
            .and_then(Outcome::into_result);
        if result.is_err() {
            for r in keys {
                self.inner.api_keys.insert(r);
            }
        }
        result
    }

    /// The merchant group a shop login is in now, if any.
    fn shop_merchant(&self, shop: &str) -> Result<Option<String>> {
        self.inner
            .store
            .get(Table::Shops, shop.as_bytes())?
            .map(|m| String::from_utf8(m).map_err(|_| Error::Corrupt { what: "shop" }))
            .transpose()
    }

    /// The key of the authorization records' MACs.
    pub(super) fn auth_record_key(&self) -> Result<crate::crypto::MacKey> {
        auth_records::key(&self.inner.keys.api_key_mac)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::access::{ADMIN_SCOPES, Scope};
    use crate::crypto::SecretString;
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
        let shop_key = async || {
            v.create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some("9000001".into()),
                    scopes: vec![Scope::Tokenize, Scope::Read],
                    ..ApiKeyRequest::default()
                },
            )
            .await
            .unwrap()
        };
        let k = shop_key().await;
        let shop = v.authenticate(k.api_key.expose()).unwrap();
        assert_eq!(shop.merchant().unwrap(), m.merchant_id);
        shop.require(Scope::Tokenize).unwrap();
        assert!(matches!(
            shop.require(Scope::Reveal),
            Err(Error::MissingScope { scope: "reveal" })
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
        // Removing the shop from another group is refused and leaves its key working.
        let other = v
            .create_merchant(&ctx, "Other", Some("OTHR"))
            .await
            .unwrap();
        assert!(matches!(
            v.remove_shop(&ctx, &other.merchant_id, "9000001").await,
            Err(Error::ShopNotFound)
        ));
        assert!(v.authenticate(k.api_key.expose()).is_ok());
        // Removed from its group: its keys are revoked, and moving the login to another group
        // does not bring them back.
        v.remove_shop(&ctx, &m.merchant_id, "9000001")
            .await
            .unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        assert!(v.get(&m.merchant_id, &t).is_ok());
        v.add_shop(&ctx, &other.merchant_id, "9000001")
            .await
            .unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        let k = shop_key().await;
        assert_eq!(
            v.authenticate(k.api_key.expose())
                .unwrap()
                .merchant()
                .unwrap(),
            other.merchant_id
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

    /// Issue 14 item 8, second half: a key issued for a shop login under merchant A is refused
    /// once the login is in merchant B, even where nothing revoked it (`remove_shop` revokes;
    /// here the binding is rewritten behind it, with a valid seal, as an older build's move
    /// left it), and still after a restart.
    #[tokio::test]
    async fn a_key_never_follows_its_shop_login_to_another_merchant() {
        let (_d, v, admin) = vault();
        let ctx = v.authenticate(admin.expose()).unwrap().ctx(None, None);
        let a = v.create_merchant(&ctx, "A", Some("AAAA")).await.unwrap();
        let b = v.create_merchant(&ctx, "B", Some("BBBB")).await.unwrap();
        v.add_shop(&ctx, &a.merchant_id, "9000001").await.unwrap();
        let k = v
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some("9000001".into()),
                    scopes: vec![Scope::Read, Scope::Reveal],
                    ..ApiKeyRequest::default()
                },
            )
            .await
            .unwrap();
        let p = v.authenticate(k.api_key.expose()).unwrap();
        assert_eq!(p.merchant().unwrap(), a.merchant_id);
        // The login moved to B without its keys being revoked.
        let (sk, sv) = auth_records::seal(
            &v.auth_record_key().unwrap(),
            Kind::Shop,
            b"9000001",
            b.merchant_id.as_bytes(),
            None,
        )
        .unwrap();
        let to_b = b.merchant_id.clone();
        v.write(move |tx| {
            tx.put(Table::Shops, b"9000001".as_slice(), to_b.as_bytes());
            tx.put(Table::Meta, sk, sv);
            Ok(())
        })
        .await
        .unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        // A key issued for the login now acts for B.
        let k2 = v
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some("9000001".into()),
                    scopes: vec![Scope::Read],
                    ..ApiKeyRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            v.authenticate(k2.api_key.expose())
                .unwrap()
                .merchant()
                .unwrap(),
            b.merchant_id
        );
        let dir = v.dir().to_path_buf();
        v.shutdown();
        drop(v);
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        assert!(matches!(
            v.authenticate(k.api_key.expose()),
            Err(Error::Unauthorized)
        ));
        assert!(v.authenticate(k2.api_key.expose()).is_ok());
        v.shutdown();
    }
}
