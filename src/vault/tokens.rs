//! Tokens: tokenize (one card or a batch), add an agreement to, update and delete a stored
//! token. A tokenize prepares everything on the caller's thread and leaves the writer only the
//! checks against what changed since.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::record::{Record, decode, encode, plaintext};
use super::types::{
    Agreement, Merchant, Shown, TokenInfo, TokenUpdate, TokenizeRequest, Tokenized,
};
use super::validate::{Card, expired_error, validate};
use super::writer::{Outcome, Tx};
use super::{Ctx, Vault, now_unix};
use crate::pan::{Expiry, Pan};
use crate::store::Table;
use crate::token::{self, RequestedToken, TokenKind};
use crate::{Error, Result};

/// Most items in one [`Vault::tokenize_batch`] call; more is `BatchTooLarge`.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Attempts at a fresh random masked token before giving up (a collision needs the same
/// first 2, prefix and last 4, and one of 36^6 random parts).
const TOKEN_ATTEMPTS: usize = 16;

impl Vault {
    /// Counts a new token for `/metrics` ([`Vault::tokens_created`]); the first stored one
    /// becomes the lookup decoy if there is none yet (`reveal.rs`).
    fn count_created(&self, t: &Tokenized) {
        if t.created {
            let i = match t.info.token_kind {
                TokenKind::Masked => 0,
                TokenKind::Custom => 1,
                TokenKind::Temporary => 2,
            };
            self.inner.tokens_created[i].fetch_add(1, Ordering::Relaxed);
            if t.info.token_kind != TokenKind::Temporary {
                self.inner.decoy.offer(&t.info.token, true);
            }
        }
    }

    /// Tokenizes one card for `merchant_id`: a stored token, or a temporary one if the request
    /// asks. A card the merchant already has under the requested token comes back with
    /// `created` false; its stored expiry becomes the later of the stored one and the
    /// request's (never earlier), and the answer carries the stored one, even when the
    /// request's has passed. Errors: `MerchantNotFound`, the failing field's validation error,
    /// `CardExpired` if the expiry has passed and the token would be new, `TokenConflict` if
    /// the requested custom token holds another card.
    pub async fn tokenize(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        req: &TokenizeRequest,
    ) -> Result<Tokenized> {
        let t = self.tokenize_one(ctx, merchant_id, req).await?;
        self.count_created(&t);
        Ok(t)
    }

    /// [`Vault::tokenize`] without the `/metrics` count.
    async fn tokenize_one(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        req: &TokenizeRequest,
    ) -> Result<Tokenized> {
        let merchant = self.merchant(merchant_id)?;
        let card = validate(req)?;
        if card.temporary.is_some() {
            return self.tokenize_temporary(ctx, &merchant, card).await;
        }
        self.tokenize_stored(ctx, &merchant, &card).await
    }

    /// Tokenizes up to [`MAX_BATCH_ITEMS`] cards, one answer per item in order, each by the
    /// rules of [`Vault::tokenize`]: one bad item does not fail the others. All items go to the writer before any answer is awaited, so
    /// they share group commits. The whole call fails only on an unknown merchant or too many
    /// items; a failure of the store, the keys or the writer is the answer of the item it hit
    /// (and of those after it), while the items written before it are answered with their
    /// tokens, so the caller knows exactly what is stored.
    pub async fn tokenize_batch(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        items: &[TokenizeRequest],
    ) -> Result<Vec<Result<Tokenized>>> {
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Error::BatchTooLarge {
                got: items.len(),
                max: MAX_BATCH_ITEMS,
            });
        }
        let merchant = self.merchant(merchant_id)?;
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            let card = match validate(item) {
                Ok(c) => c,
                Err(e) => {
                    pending.push(Pending::Failed(e));
                    continue;
                }
            };
            if card.temporary.is_some() {
                pending.push(Pending::Temporary(card));
                continue;
            }
            // An error here (a key or store failure) is this item's: items queued before it
            // are written and answered with their tokens, so a retry finds them as they are.
            match self.prepare(ctx, &merchant, &card).await {
                Ok(job) => match self.enqueue(job).await {
                    Ok(rx) => pending.push(Pending::Queued(rx, card)),
                    Err(e) => pending.push(Pending::Failed(e)),
                },
                Err(e) => pending.push(Pending::Failed(e)),
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for p in pending {
            out.push(match p {
                Pending::Failed(e) => Err(e),
                Pending::Temporary(card) => self.tokenize_temporary(ctx, &merchant, card).await,
                Pending::Queued(rx, card) => match rx.await {
                    Ok(Ok(Attempt::Done(t))) => Ok(t),
                    Ok(Ok(Attempt::Conflict)) => Err(Error::TokenConflict),
                    Ok(Ok(Attempt::Expired)) => Err(expired_error(card.expiry)),
                    Ok(Ok(Attempt::Collision)) => self.tokenize_stored(ctx, &merchant, &card).await,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(Error::ShuttingDown),
                },
            });
        }
        out.iter().flatten().for_each(|t| self.count_created(t));
        Ok(out)
    }

    /// Tokenizes a validated card into a stored token, with a fresh random token after each
    /// collision, at most [`TOKEN_ATTEMPTS`] times.
    async fn tokenize_stored(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: &Card,
    ) -> Result<Tokenized> {
        for _ in 0..TOKEN_ATTEMPTS {
            let job = self.prepare(ctx, merchant, card).await?;
            match self.write(job).await? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Conflict => return Err(Error::TokenConflict),
                Attempt::Expired => return Err(expired_error(card.expiry)),
                Attempt::Collision => continue,
            }
        }
        Err(Error::Exhausted {
            what: "random token",
        })
    }

    /// Everything a tokenize can do before the writer: token choice, encryption, fingerprint.
    /// Returns the closure the writer runs.
    async fn prepare(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: &Card,
    ) -> Result<impl FnOnce(&mut Tx<'_>) -> Result<Attempt> + Send + 'static + use<>> {
        let (token, kind) = match &card.request.token {
            RequestedToken::Masked => (
                token::masked_token(&card.pan, &merchant.prefix, &mut rand::rngs::OsRng),
                TokenKind::Masked,
            ),
            RequestedToken::Custom(v) => {
                (token::custom_token(&merchant.prefix, v), TokenKind::Custom)
            }
        };
        let dek = self.dek_for_encryption().await?;
        let fingerprint = self
            .inner
            .keys
            .fingerprint
            .fingerprint(&merchant.merchant_id, card.pan.digits());
        let sealed = dek.seal_record(
            &merchant.merchant_id,
            &token,
            &plaintext(&card.pan, card.name.as_ref()),
        )?;
        let record = Record {
            merchant_id: merchant.merchant_id.clone(),
            kind,
            dek_id: dek.id(),
            sealed,
            fingerprint,
            bin: card.pan.bin().to_string(),
            last4: card.pan.last4().to_string(),
            pan_len: card.pan.len() as u8,
            brand: card.pan.brand(),
            expiry: card.expiry,
            created_at: now_unix(),
            agreements: Vec::new(),
        };
        // The lookups are made here, on the caller's thread; the writer only confirms them
        // against what changed since (`Store::reget`), which keeps the single writer short.
        let store = &self.inner.store;
        let by_fingerprint = store.get_stamped(Table::Fingerprints, &fingerprint)?;
        let by_token = store.get_stamped(Table::Tokens, token.as_bytes())?;
        let ctx = ctx.clone();
        let expired = card.expired;
        Ok(move |tx: &mut Tx<'_>| {
            // Held until the record is written: a DEK someone holds is never destroyed
            // (`destroy_drained_deks`).
            let _in_use = dek;
            let m = record.merchant_id.clone();
            let existing = match kind {
                TokenKind::Masked => {
                    match tx.reget(Table::Fingerprints, &fingerprint, &by_fingerprint)? {
                        Some(t) => Some(String::from_utf8(t).map_err(|_| Error::Corrupt {
                            what: "fingerprint index",
                        })?),
                        None => None,
                    }
                }
                _ => tx
                    .reget(Table::Tokens, token.as_bytes(), &by_token)?
                    .map(|_| token.clone()),
            };
            if let Some(existing) = existing {
                let bytes = tx
                    .get(Table::Tokens, existing.as_bytes())?
                    .ok_or(Error::Corrupt {
                        what: "index names a missing token",
                    })?;
                let mut rec: Record = decode(&bytes, "token record")?;
                if rec.merchant_id != m || rec.fingerprint != fingerprint {
                    tx.audit(ctx.event("tokenize", Some(&m), Some(&existing), "conflict"));
                    return Ok(Attempt::Conflict);
                }
                // The later expiry wins: a re-tokenize with an older (or passed) expiry, say a
                // stale copy of the card, never rolls the stored one back.
                if record.expiry > rec.expiry {
                    rec.expiry = record.expiry;
                    tx.put(
                        Table::Tokens,
                        existing.as_bytes(),
                        encode(&rec, "token record")?,
                    );
                }
                tx.audit(ctx.event("tokenize", Some(&m), Some(&existing), "existing"));
                return Ok(Attempt::Done(Tokenized {
                    created: false,
                    info: info(&existing, &rec),
                }));
            }
            if kind == TokenKind::Masked
                && tx
                    .reget(Table::Tokens, token.as_bytes(), &by_token)?
                    .is_some()
            {
                return Ok(Attempt::Collision);
            }
            // A new token, for a card whose expiry has passed: refused like a field error
            // (nothing written, not audited).
            if expired {
                return Ok(Attempt::Expired);
            }
            tx.put(
                Table::Tokens,
                token.as_bytes(),
                encode(&record, "token record")?,
            );
            if kind == TokenKind::Masked {
                tx.put(Table::Fingerprints, fingerprint, token.as_bytes());
            }
            tx.audit(ctx.event("tokenize", Some(&m), Some(&token), "created"));
            Ok(Attempt::Done(Tokenized {
                created: true,
                info: info(&token, &record),
            }))
        })
    }

    /// Records a stored-credential agreement that a cardholder-initiated charge through the
    /// gateway proxy established on `token`; one already recorded under the same id is kept as
    /// it was. Audited as `agreement`. Temporary tokens hold no agreements: `TokenNotFound`, as
    /// for a missing or another merchant's token.
    pub async fn add_agreement(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
        agreement: Agreement,
    ) -> Result<TokenInfo> {
        if !token::is_well_formed_token(token) || token.starts_with(token::TEMPORARY_PREFIX) {
            return Err(Error::TokenNotFound);
        }
        crate::access::refuse_card_number("agreement", &agreement.id)?;
        crate::access::refuse_card_number("agreement", &agreement.kind)?;
        let (m, t, ctx) = (merchant_id.to_string(), token.to_string(), ctx.clone());
        self.write(move |tx| {
            let Some(bytes) = tx.get(Table::Tokens, t.as_bytes())? else {
                return Ok(Outcome::Refuse(Error::TokenNotFound));
            };
            let mut rec: Record = decode(&bytes, "token record")?;
            if rec.merchant_id != m {
                return Ok(Outcome::Refuse(Error::TokenNotFound));
            }
            if !rec.agreements.iter().any(|a| a.id == agreement.id) {
                rec.agreements.push(agreement);
                tx.put(Table::Tokens, t.as_bytes(), encode(&rec, "token record")?);
                tx.audit(ctx.event("agreement", Some(&m), Some(&t), "ok"));
            }
            Ok(Outcome::Commit(info(&t, &rec)))
        })
        .await?
        .into_result()
    }

    /// Updates a token (`PATCH`): the expiry of any token, set as given (earlier, later or
    /// already passed: the merchant asked for it); the card itself only under a custom token
    /// (replaced under the same token, its agreements kept; a different card whose expiry has
    /// passed is `CardExpired`, as for a new token). A different card for a standard token, or
    /// any card for a temporary one, is `CardChangeNotAllowed`: a standard token is its
    /// card's. `TokenNotFound` for a missing or another merchant's token.
    pub async fn update(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
        update: &TokenUpdate,
    ) -> Result<TokenInfo> {
        let expiry = Expiry::new(update.expiry_month, update.expiry_year)?;
        if !token::is_well_formed_token(token) {
            return Err(Error::TokenNotFound);
        }
        if token.starts_with(token::TEMPORARY_PREFIX) {
            if update.pan.is_some() {
                return Err(Error::CardChangeNotAllowed { kind: "temporary" });
            }
            if let Some(t) = self
                .temps()
                .0
                .get_mut(token)
                .filter(|t| t.merchant_id == merchant_id)
            {
                t.expiry = expiry;
            }
            return self.get(merchant_id, token);
        }
        let merchant = self.merchant(merchant_id)?;
        let card = match &update.pan {
            None => None,
            Some(raw) => {
                let pan = Pan::parse(raw)?;
                let fingerprint = self
                    .inner
                    .keys
                    .fingerprint
                    .fingerprint(merchant_id, pan.digits());
                let dek = self.dek_for_encryption().await?;
                let sealed = dek.seal_record(
                    merchant_id,
                    token,
                    &plaintext(&pan, update.cardholder_name.as_ref()),
                )?;
                Some((
                    pan.bin().to_string(),
                    pan.last4().to_string(),
                    pan.len() as u8,
                    pan.brand(),
                    fingerprint,
                    dek,
                    sealed,
                ))
            }
        };
        let (m, t, ctx) = (merchant.merchant_id, token.to_string(), ctx.clone());
        self.write(move |tx| {
            let Some(bytes) = tx.get(Table::Tokens, t.as_bytes())? else {
                tx.audit(ctx.event("update", Some(&m), Some(&t), "not_found"));
                return Ok(Outcome::Refuse(Error::TokenNotFound));
            };
            let mut rec: Record = decode(&bytes, "token record")?;
            if rec.merchant_id != m {
                tx.audit(ctx.event("update", Some(&m), Some(&t), "not_found"));
                return Ok(Outcome::Refuse(Error::TokenNotFound));
            }
            rec.expiry = expiry;
            if let Some((bin, last4, pan_len, brand, fingerprint, dek, sealed)) = card {
                let dek_id = dek.id();
                if rec.fingerprint != fingerprint {
                    if rec.kind != TokenKind::Custom {
                        tx.audit(ctx.event("update", Some(&m), Some(&t), "conflict"));
                        return Ok(Outcome::Refuse(Error::CardChangeNotAllowed {
                            kind: "standard",
                        }));
                    }
                    if expiry.is_expired() {
                        tx.audit(ctx.event("update", Some(&m), Some(&t), "expired"));
                        return Ok(Outcome::Refuse(expired_error(expiry)));
                    }
                }
                (rec.bin, rec.last4, rec.pan_len, rec.brand) = (bin, last4, pan_len, brand);
                (rec.fingerprint, rec.dek_id, rec.sealed) = (fingerprint, dek_id, sealed);
            }
            tx.put(Table::Tokens, t.as_bytes(), encode(&rec, "token record")?);
            tx.audit(ctx.event("update", Some(&m), Some(&t), "ok"));
            Ok(Outcome::Commit(info(&t, &rec)))
        })
        .await?
        .into_result()
    }

    /// Deletes a token: its record (and so its ciphertext) and index entries go in one commit;
    /// a temporary token's card leaves memory. Audited either way; `TokenNotFound` for a
    /// missing or another merchant's token.
    pub async fn delete(&self, ctx: &Ctx, merchant_id: &str, token: &str) -> Result<()> {
        if token.starts_with("tmp_") {
            let removed = {
                let mut temps = self.temps();
                match temps.0.remove(token) {
                    Some(t) if t.merchant_id == merchant_id => true,
                    Some(t) => {
                        temps.0.insert(token.to_string(), t);
                        false
                    }
                    None => false,
                }
            };
            let ev = ctx.event(
                "delete",
                Some(merchant_id),
                token::is_well_formed_token(token).then_some(token),
                if removed { "ok" } else { "not_found" },
            );
            self.audit_only(ev).await?;
            return if removed {
                Ok(())
            } else {
                Err(Error::TokenNotFound)
            };
        }
        let well_formed = token::is_well_formed_token(token);
        let token = token.to_string();
        let m = merchant_id.to_string();
        let ctx = ctx.clone();
        self.write(move |tx| {
            let rec = match well_formed
                .then(|| tx.get(Table::Tokens, token.as_bytes()))
                .transpose()?
                .flatten()
            {
                Some(b) => decode::<Record>(&b, "token record")?,
                None => {
                    tx.audit(ctx.event(
                        "delete",
                        Some(&m),
                        well_formed.then_some(&*token),
                        "not_found",
                    ));
                    return Ok(Outcome::Refuse(Error::TokenNotFound));
                }
            };
            if rec.merchant_id != m {
                tx.audit(ctx.event("delete", Some(&m), Some(&token), "not_found"));
                return Ok(Outcome::Refuse(Error::TokenNotFound));
            }
            tx.delete(Table::Tokens, token.as_bytes());
            if rec.kind == TokenKind::Masked
                && tx.get(Table::Fingerprints, &rec.fingerprint)?.as_deref()
                    == Some(token.as_bytes())
            {
                tx.delete(Table::Fingerprints, rec.fingerprint);
            }
            tx.audit(ctx.event("delete", Some(&m), Some(&token), "ok"));
            Ok(Outcome::Commit(()))
        })
        .await?
        .into_result()
    }
}

/// A stored token's metadata.
pub(super) fn info(token: &str, rec: &Record) -> TokenInfo {
    let shown = Shown {
        bin: &rec.bin,
        last4: &rec.last4,
        pan_len: rec.pan_len as usize,
        brand: rec.brand,
        expiry: rec.expiry,
    };
    TokenInfo::new(
        token,
        rec.kind,
        shown,
        rec.created_at,
        rec.agreements.clone(),
    )
}

/// What one tokenize closure did on the writer.
enum Attempt {
    /// The token, new or existing: written (if new or changed) and audited.
    Done(Tokenized),
    /// The fresh random token was taken meanwhile: nothing written, the caller tries another.
    Collision,
    /// The token is another card's or another merchant's: the refusal is audited, the call
    /// answers `TokenConflict`.
    Conflict,
    /// The token would be new and the card's expiry has passed: nothing written, the call
    /// answers `CardExpired`.
    Expired,
}

/// A batch item between its validation and its answer.
enum Pending {
    /// Refused by validation.
    Failed(Error),
    /// A temporary token, made once the stored ones are queued.
    Temporary(Card),
    /// Queued for the writer; the card stays for a retry after a collision.
    Queued(oneshot::Receiver<Result<Attempt>>, Card),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::pan::Brand;
    use crate::vault::tests::{each_backend, req};

    /// A failure of the writer (here: stopped) is each item's answer, not the whole call's:
    /// before, the batch answered one error while the items queued before it were written
    /// (review finding), so a caller could not tell what was stored.
    #[tokio::test]
    async fn a_writer_failure_in_a_batch_is_answered_per_item() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let first = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111111111111111", 12, 2030, None),
                )
                .await
                .unwrap();
            v.shutdown();
            let items = [
                req("5555555555554444", 12, 2030, None),
                req("4111111111111112", 12, 2030, None),
            ];
            let out = v
                .tokenize_batch(&ctx, &a.merchant_id, &items)
                .await
                .unwrap();
            assert!(matches!(out[0], Err(Error::ShuttingDown)), "{:?}", out[0]);
            assert!(matches!(out[1], Err(Error::LuhnCheckFailed)));
            assert_eq!(
                v.get(&a.merchant_id, &first.info.token).unwrap().last4,
                "1111"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn same_card_same_token_per_merchant_unrelated_across() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let b = v.create_merchant(&ctx, "B", None).await.unwrap();
            let t1 = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111111111111111", 12, 2030, None),
                )
                .await
                .unwrap();
            assert!(t1.created);
            assert_eq!(t1.info.token.len(), 16);
            assert!(t1.info.token.starts_with("41XYZW") && t1.info.token.ends_with("1111"));
            let t2 = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111 1111 1111 1111", 1, 2031, None),
                )
                .await
                .unwrap();
            assert!(!t2.created);
            assert_eq!(t1.info.token, t2.info.token);
            // Re-tokenization updated the expiry.
            let got = v.get(&a.merchant_id, &t1.info.token).unwrap();
            assert_eq!((got.token_expiry_month, got.token_expiry_year), (1, 2031));
            let tb = v
                .tokenize(
                    &ctx,
                    &b.merchant_id,
                    &req("4111111111111111", 12, 2030, None),
                )
                .await
                .unwrap();
            assert!(tb.created);
            assert_ne!(tb.info.token[2..12], t1.info.token[2..12]);
            assert!(
                tb.info
                    .token
                    .starts_with(&format!("41{}", b.prefix.as_str()))
            );
            // B cannot see A's token; it is answered as missing.
            assert!(matches!(
                v.get(&b.merchant_id, &t1.info.token),
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.reveal(&ctx, &b.merchant_id, &t1.info.token).await,
                Err(Error::TokenNotFound)
            ));
            let r = v
                .reveal(&ctx, &a.merchant_id, &t1.info.token)
                .await
                .unwrap();
            assert_eq!(r.pan.digits(), "4111111111111111");
            assert_eq!(got.masked_pan, "411111******1111");
            assert_eq!(got.bin, "411111");
        })
        .await;
    }

    #[tokio::test]
    async fn custom_tokens_conflicts_and_several_per_card() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let m = &a.merchant_id;
            let c1 = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 3, 2029, Some("JOHN_SMITH_5533")),
                )
                .await
                .unwrap();
            assert!(c1.created);
            assert_eq!(c1.info.token, "XYZWJOHN_SMITH_5533");
            assert_eq!(c1.info.token_kind, TokenKind::Custom);
            let again = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 4, 2029, Some(":FORCED:JOHN_SMITH_5533")),
                )
                .await
                .unwrap();
            assert!(!again.created);
            assert_eq!(again.info.token_expiry_month, 4);
            let conflict = v
                .tokenize(
                    &ctx,
                    m,
                    &req("4111111111111111", 3, 2029, Some("JOHN_SMITH_5533")),
                )
                .await;
            assert!(matches!(conflict, Err(Error::TokenConflict)));
            let c2 = v
                .tokenize(&ctx, m, &req("5555555555554444", 3, 2029, Some("second")))
                .await
                .unwrap();
            let std = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 3, 2029, Some("MASKEDPAN")),
                )
                .await
                .unwrap();
            assert_eq!(c2.info.token, "XYZWsecond");
            assert_eq!(std.info.token_kind, TokenKind::Masked);
            for t in [&c1.info.token, &c2.info.token, &std.info.token] {
                assert_eq!(
                    v.reveal(&ctx, m, t).await.unwrap().pan.digits(),
                    "5555555555554444"
                );
            }
            // Delete destroys one token only; later calls are not found.
            v.delete(&ctx, m, &c1.info.token).await.unwrap();
            assert!(matches!(
                v.get(m, &c1.info.token),
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.delete(&ctx, m, &c1.info.token).await,
                Err(Error::TokenNotFound)
            ));
            assert!(v.get(m, &c2.info.token).is_ok());
            // Deleting the standard token frees the card: the next tokenize makes a new one.
            v.delete(&ctx, m, &std.info.token).await.unwrap();
            let std2 = v
                .tokenize(&ctx, m, &req("5555555555554444", 3, 2029, None))
                .await
                .unwrap();
            assert!(std2.created);
        })
        .await;
    }

    /// Issue 15, point 2: an expired card gets no new token (stored, custom or temporary),
    /// while a card that already has one is answered with it; the stored expiry only moves
    /// forward, and the answer carries the stored one.
    #[tokio::test]
    async fn an_expired_card_gets_no_new_token_and_the_later_expiry_wins() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let m = &a.merchant_id;
            let expired = |r| {
                matches!(
                    r,
                    Err(Error::CardExpired {
                        month: 1,
                        year: 2020
                    })
                )
            };
            let visa = "4111111111111111";
            assert!(expired(
                v.tokenize(&ctx, m, &req(visa, 1, 2020, None)).await
            ));
            let custom = req(visa, 1, 2020, Some("OLD_CARD"));
            assert!(expired(v.tokenize(&ctx, m, &custom).await));
            let mut temp = req(visa, 1, 2020, None);
            temp.temporary = true;
            assert!(expired(v.tokenize(&ctx, m, &temp).await));

            let t = v
                .tokenize(&ctx, m, &req(visa, 12, 2030, None))
                .await
                .unwrap();
            assert!(t.created, "the refused one stored nothing");
            let tok = t.info.token.clone();
            let stored = |v: &Vault| {
                let i = v.get(m, &tok).unwrap();
                (i.token_expiry_month, i.token_expiry_year)
            };
            // A known card with a passed expiry: its token, with the stored (later) expiry.
            let again = v
                .tokenize(&ctx, m, &req(visa, 1, 2020, None))
                .await
                .unwrap();
            assert!(!again.created);
            assert_eq!(again.info.token, tok);
            assert_eq!(
                (again.info.token_expiry_month, again.info.token_expiry_year),
                (12, 2030)
            );
            assert!(!again.info.expired);
            assert_eq!(stored(&v), (12, 2030));
            // An earlier, still valid expiry does not roll it back either; a later one wins.
            let earlier = v
                .tokenize(&ctx, m, &req(visa, 6, 2030, None))
                .await
                .unwrap();
            assert_eq!(earlier.info.token_expiry_month, 12);
            let later = v
                .tokenize(&ctx, m, &req(visa, 1, 2031, None))
                .await
                .unwrap();
            assert_eq!(
                (later.info.token_expiry_month, later.info.token_expiry_year),
                (1, 2031)
            );
            assert_eq!(stored(&v), (1, 2031));
            // The same under a custom token that exists.
            let c = v
                .tokenize(&ctx, m, &req(visa, 3, 2031, Some("ON_FILE")))
                .await
                .unwrap();
            let c_again = v
                .tokenize(&ctx, m, &req(visa, 1, 2020, Some("ON_FILE")))
                .await
                .unwrap();
            assert!(c.created && !c_again.created);
            assert_eq!(
                (
                    c_again.info.token_expiry_month,
                    c_again.info.token_expiry_year
                ),
                (3, 2031)
            );

            // A batch follows the same rules, item by item.
            let items = [
                req("5555555555554444", 1, 2020, None),
                req(visa, 1, 2020, None),
                req(visa, 2, 2031, None),
            ];
            let out = v.tokenize_batch(&ctx, m, &items).await.unwrap();
            assert!(matches!(
                out[0],
                Err(Error::CardExpired {
                    month: 1,
                    year: 2020
                })
            ));
            let known = out[1].as_ref().unwrap();
            assert_eq!(
                (known.created, known.info.token_expiry_month),
                (false, 1),
                "the stored 01/2031"
            );
            assert_eq!(out[2].as_ref().unwrap().info.token_expiry_month, 2);
            assert_eq!(stored(&v), (2, 2031));
        })
        .await;
    }

    /// A PATCH sets the expiry it is given, earlier or passed; a standard or temporary token's
    /// card cannot change (`CardChangeNotAllowed`), and a custom token's new card is refused
    /// if its expiry has passed.
    #[tokio::test]
    async fn patch_sets_the_expiry_given_and_refuses_a_card_change_by_kind() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let m = &a.merchant_id;
            let update = |mm, yy, pan: Option<&str>| TokenUpdate {
                expiry_month: mm,
                expiry_year: yy,
                pan: pan.map(|p| zeroize::Zeroizing::new(p.to_string())),
                cardholder_name: None,
            };
            let t = v
                .tokenize(&ctx, m, &req("4111111111111111", 12, 2030, None))
                .await
                .unwrap()
                .info
                .token;
            let i = v.update(&ctx, m, &t, &update(1, 2020, None)).await.unwrap();
            assert_eq!((i.token_expiry_month, i.token_expiry_year), (1, 2020));
            assert!(i.expired, "the merchant asked for it");
            assert!(matches!(
                v.update(&ctx, m, &t, &update(1, 2031, Some("5555555555554444")))
                    .await,
                Err(Error::CardChangeNotAllowed { kind: "standard" })
            ));
            let mut temp = req("4111111111111111", 12, 2030, None);
            temp.temporary = true;
            let tmp = v.tokenize(&ctx, m, &temp).await.unwrap().info.token;
            assert!(matches!(
                v.update(&ctx, m, &tmp, &update(1, 2031, Some("5555555555554444")))
                    .await,
                Err(Error::CardChangeNotAllowed { kind: "temporary" })
            ));
            let c = v
                .tokenize(&ctx, m, &req("4111111111111111", 12, 2030, Some("ON_FILE")))
                .await
                .unwrap()
                .info
                .token;
            assert!(matches!(
                v.update(&ctx, m, &c, &update(1, 2020, Some("5555555555554444")))
                    .await,
                Err(Error::CardExpired { .. })
            ));
            assert_eq!(v.get(m, &c).unwrap().last4, "1111", "nothing changed");
            // The same card with a passed expiry is only an expiry change.
            let same = v
                .update(&ctx, m, &c, &update(1, 2020, Some("4111111111111111")))
                .await
                .unwrap();
            assert_eq!(same.token_expiry_year, 2020);
            let new = v
                .update(&ctx, m, &c, &update(5, 2033, Some("5555555555554444")))
                .await
                .unwrap();
            assert_eq!((new.last4.as_str(), new.token_expiry_month), ("4444", 5));
        })
        .await;
    }

    #[tokio::test]
    async fn batch_has_per_item_results() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let items = vec![
                req("4111111111111111", 1, 2030, None),
                req("4111111111111112", 1, 2030, None),
                req("4111111111111111", 2, 2030, None),
                req("378282246310005", 13, 2030, None),
                req("378282246310005", 5, 2030, Some("AMEX_1")),
            ];
            let out = v
                .tokenize_batch(&ctx, &a.merchant_id, &items)
                .await
                .unwrap();
            assert_eq!(out.len(), 5);
            let t0 = out[0].as_ref().unwrap();
            assert!(t0.created);
            assert!(matches!(out[1], Err(Error::LuhnCheckFailed)));
            let t2 = out[2].as_ref().unwrap();
            assert!(
                !t2.created,
                "same card in the same batch returns the same token"
            );
            assert_eq!(t0.info.token, t2.info.token);
            assert!(matches!(out[3], Err(Error::InvalidExpiry { .. })));
            assert_eq!(out[4].as_ref().unwrap().info.brand, Brand::Amex);
            let too_many: Vec<_> = (0..1001)
                .map(|_| req("4111111111111111", 1, 2030, None))
                .collect();
            assert!(matches!(
                v.tokenize_batch(&ctx, &a.merchant_id, &too_many).await,
                Err(Error::BatchTooLarge { got: 1001, .. })
            ));
        })
        .await;
    }
}
