//! Merchants: token-sharing groups of shop logins, each with the prefix its tokens carry.

use super::auth_records::{self, Kind};
use super::record::{decode, encode, prefix_key};
use super::types::Merchant;
use super::writer::Outcome;
use super::{Ctx, Vault};
use crate::access;
use crate::crypto;
use crate::store::Table;
use crate::sync::{read as read_lock, write as write_lock};
use crate::token::MerchantPrefix;
use crate::{Error, Result};

impl Vault {
    /// Creates a merchant with the requested prefix, or a random free one. The name, trimmed,
    /// must be 1 to 128 printable characters and no card number (`InvalidField`); a requested
    /// prefix that is malformed is `InvalidPrefix`, one in use `PrefixTaken`.
    pub async fn create_merchant(
        &self,
        ctx: &Ctx,
        name: &str,
        prefix: Option<&str>,
    ) -> Result<Merchant> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(Error::InvalidField {
                field: "name",
                reason: "1 to 128 printable characters",
            });
        }
        access::refuse_card_number("name", name)?;
        let asked = prefix.map(MerchantPrefix::parse).transpose()?;
        let merchant_id = format!(
            "mer_{}",
            data_encoding::BASE32_NOPAD
                .encode(&crypto::random_bytes::<10>())
                .to_lowercase()
        );
        let name = name.to_string();
        let ctx = ctx.clone();
        // The merchant record and its prefix index entry are sealed (`auth_records`).
        let auth = self.auth_record_key()?;
        let m = self
            .write(move |tx| {
                let mut rng = rand::rngs::OsRng;
                for _ in 0..64 {
                    let p = asked.unwrap_or_else(|| MerchantPrefix::random(&mut rng));
                    if tx.get(Table::Meta, &prefix_key(&p))?.is_some() {
                        if asked.is_some() {
                            tx.audit(ctx.event("merchant_create", None, None, "prefix_taken"));
                            return Ok(Outcome::Refuse(Error::PrefixTaken));
                        }
                        continue;
                    }
                    let m = Merchant {
                        merchant_id: merchant_id.clone(),
                        name: name.clone(),
                        prefix: p,
                    };
                    let value = encode(&m, "merchant")?;
                    for (kind, key, value) in [
                        (Kind::Prefix, prefix_key(&p), merchant_id.as_bytes()),
                        (Kind::Merchant, merchant_id.as_bytes().to_vec(), &value[..]),
                    ] {
                        let (sk, sv) = auth_records::seal(&auth, kind, &key, value, None)?;
                        tx.put(Table::Meta, sk, sv);
                    }
                    tx.put(Table::Meta, prefix_key(&p), merchant_id.as_bytes());
                    tx.put(Table::Merchants, merchant_id.as_bytes(), value);
                    tx.audit(ctx.event("merchant_create", Some(&merchant_id), None, "ok"));
                    return Ok(Outcome::Commit(m));
                }
                Err(Error::Exhausted {
                    what: "merchant prefix",
                })
            })
            .await?
            .into_result()?;
        write_lock(&self.inner.merchants).insert(m.merchant_id.clone(), m.clone());
        Ok(m)
    }

    /// Looks a merchant up by its prefix: `None` if no merchant has it, `InvalidPrefix` if it
    /// is not four uppercase letters.
    pub fn merchant_by_prefix(&self, prefix: &str) -> Result<Option<Merchant>> {
        let prefix = MerchantPrefix::parse(prefix)?;
        match self.inner.store.get(Table::Meta, &prefix_key(&prefix))? {
            None => Ok(None),
            Some(id) => {
                let id = String::from_utf8(id).map_err(|_| Error::Corrupt {
                    what: "prefix index",
                })?;
                self.merchant(&id).map(Some)
            }
        }
    }

    /// Looks a merchant up by id; `MerchantNotFound` if there is none.
    pub fn merchant(&self, merchant_id: &str) -> Result<Merchant> {
        if let Some(m) = read_lock(&self.inner.merchants).get(merchant_id) {
            return Ok(m.clone());
        }
        let bytes = self
            .inner
            .store
            .get(Table::Merchants, merchant_id.as_bytes())?
            .ok_or(Error::MerchantNotFound)?;
        let m: Merchant = decode(&bytes, "merchant")?;
        write_lock(&self.inner.merchants).insert(m.merchant_id.clone(), m.clone());
        Ok(m)
    }
}
