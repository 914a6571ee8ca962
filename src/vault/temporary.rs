//! Temporary tokens: a card (and its CVV) held in memory only, for one charge, until it is
//! taken or its lifetime ends. Never written to the store; their creation is audited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::types::{Merchant, Revealed, Shown, TokenInfo, Tokenized};
use super::validate::Card;
use super::{Ctx, Vault, now_unix};
use crate::pan::{Cvv, Expiry, Pan};
use crate::sync::lock;
use crate::token::{self, TokenKind};
use crate::{Error, Result};

/// A card held in memory only, for a temporary token.
pub(super) struct TempCard {
    pub(super) merchant_id: String,
    pub(super) pan: Pan,
    pub(super) expiry: Expiry,
    pub(super) name: Option<Zeroizing<String>>,
    pub(super) cvv: Option<Cvv>,
    pub(super) created_at: u64,
    pub(super) expires: Instant,
}

impl Vault {
    /// Makes a temporary token for a validated temporary request, audited (durably) as
    /// `tokenize_temporary` before the card goes into memory.
    pub(super) async fn tokenize_temporary(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: Card,
    ) -> Result<Tokenized> {
        let Some((cvv, ttl)) = card.temporary else {
            return Err(Error::InvalidField {
                field: "temporary",
                reason: "not a temporary request",
            });
        };
        let token = token::temporary_token(&mut rand::rngs::OsRng);
        let created_at = now_unix();
        let info = TokenInfo::new(
            &token,
            TokenKind::Temporary,
            Shown::of(&card.pan, card.expiry),
            created_at,
            Vec::new(),
        );
        let ev = ctx.event(
            "tokenize_temporary",
            Some(&merchant.merchant_id),
            Some(&token),
            "created",
        );
        self.audit_only(ev).await?;
        let mut temps = self.temps();
        let now = Instant::now();
        temps.0.insert(
            token,
            TempCard {
                merchant_id: merchant.merchant_id.clone(),
                pan: card.pan,
                expiry: card.expiry,
                name: card.name,
                cvv,
                created_at,
                expires: now + Duration::from_secs(ttl),
            },
        );
        Ok(Tokenized {
            created: true,
            info,
        })
    }

    /// The temporary cards, with expired ones dropped (and zeroized) at most once a second,
    /// on any access: an expired card and CVV do not wait for the next temporary token.
    #[allow(clippy::type_complexity)]
    pub(super) fn temps(&self) -> std::sync::MutexGuard<'_, (HashMap<String, TempCard>, Instant)> {
        let mut temps = lock(&self.inner.temps);
        let now = Instant::now();
        if now.duration_since(temps.1) > Duration::from_secs(1) {
            temps.0.retain(|_, t| t.expires > now);
            temps.1 = now;
        }
        temps
    }

    /// A live temporary token's metadata, if `merchant_id` holds it.
    pub(super) fn temp_info(&self, merchant_id: &str, token: &str) -> Option<TokenInfo> {
        let temps = self.temps();
        let t = temps
            .0
            .get(token)
            .filter(|t| t.merchant_id == merchant_id && t.expires > Instant::now())?;
        Some(TokenInfo::new(
            token,
            TokenKind::Temporary,
            Shown::of(&t.pan, t.expiry),
            t.created_at,
            Vec::new(),
        ))
    }

    /// The CVV a temporary token carries, leaving the token in place (see
    /// [`Vault::take_temporary`]). `TokenNotFound` for a missing, expired or another merchant's
    /// token.
    pub fn peek_temporary_cvv(&self, merchant_id: &str, token: &str) -> Result<Option<Cvv>> {
        match self.temps().0.get(token) {
            Some(t) if t.merchant_id == merchant_id && t.expires > Instant::now() => {
                Ok(t.cvv.clone())
            }
            _ => Err(Error::TokenNotFound),
        }
    }

    /// Takes a temporary token's card and CVV out of memory: it serves exactly one charge.
    /// `TokenNotFound` for a missing or expired token, or another merchant's (left in place).
    pub fn take_temporary(
        &self,
        merchant_id: &str,
        token: &str,
    ) -> Result<(Revealed, Option<Cvv>)> {
        let mut temps = self.temps();
        match temps.0.remove(token) {
            Some(t) if t.merchant_id == merchant_id && t.expires > Instant::now() => Ok((
                Revealed {
                    pan: t.pan,
                    expiry: t.expiry,
                    cardholder_name: t.name,
                },
                t.cvv,
            )),
            Some(t) if t.merchant_id != merchant_id => {
                temps.0.insert(token.to_string(), t);
                Err(Error::TokenNotFound)
            }
            _ => Err(Error::TokenNotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use zeroize::Zeroizing;

    use crate::store::Table;
    use crate::vault::tests::{each_backend, req};

    #[tokio::test]
    async fn temporary_tokens_live_in_memory_once() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let mut r = req("4012888888881881", 1, 2030, None);
            r.temporary = true;
            r.cvv = Some(Zeroizing::new("123".into()));
            let t = v.tokenize(&ctx, &a.merchant_id, &r).await.unwrap();
            assert!(t.info.token.starts_with("tmp_") && t.info.token.len() == 36);
            assert_eq!(
                v.get(&a.merchant_id, &t.info.token).unwrap().token_kind,
                TokenKind::Temporary
            );
            assert!(
                v.inner
                    .store
                    .get(Table::Tokens, t.info.token.as_bytes())
                    .unwrap()
                    .is_none()
            );
            let (card, cvv) = v.take_temporary(&a.merchant_id, &t.info.token).unwrap();
            assert_eq!(card.pan.digits(), "4012888888881881");
            assert_eq!(cvv.unwrap().digits(), "123");
            assert!(matches!(
                v.take_temporary(&a.merchant_id, &t.info.token),
                Err(Error::TokenNotFound)
            ));
            let mut bad = req("4012888888881881", 1, 2030, None);
            bad.cvv = Some(Zeroizing::new("123".into()));
            assert!(matches!(
                v.tokenize(&ctx, &a.merchant_id, &bad).await,
                Err(Error::InvalidField { field: "cvv", .. })
            ));
        })
        .await;
    }
}
