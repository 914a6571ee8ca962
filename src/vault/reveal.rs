//! Reading a stored or temporary token: its metadata (not audited: no card data) and its card
//! (always audited, durably, before the card is returned; for the gateway proxy, the card comes
//! back once its entry is in the journal and the answer waits for the sync).

use std::sync::RwLock;
use std::time::Instant;

use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::record::{Record, decode};
use super::tokens::info;
use super::types::{Revealed, TokenInfo};
use super::writer::{Durable, audit_entry};
use super::{Ctx, Vault};
use crate::audit::Event;
use crate::pan::Pan;
use crate::store::Table;
use crate::sync::{read as read_lock, write as write_lock};
use crate::token;
use crate::{Error, Result};

/// Keys of stored tokens (any merchant's), one of them read, decoded and compared in place of a
/// missing token so that a missing token and another merchant's do the same work: one stored
/// record read at a place of the store no other lookup just warmed, decoded and its merchant
/// compared (issue 14 item 9: a GET of another merchant's token was about 1 us slower than of
/// a missing one, an existence oracle). Filled with tokens made or read since open (a random
/// one replaced once full), else with tokens found at random places of the engine.
#[derive(Default)]
pub(super) struct Decoy(RwLock<Vec<Vec<u8>>>);

/// How many decoy keys are kept.
const DECOYS: usize = 4096;
/// How many random places of the engine are looked at when there is no decoy yet.
const SEEDS: usize = 64;

impl Decoy {
    /// Adds `token` (a stored one): appended while there is room; else, when `replace`, in
    /// place of a random one.
    pub(super) fn offer(&self, token: &str, replace: bool) {
        if !replace && read_lock(&self.0).len() >= DECOYS {
            return;
        }
        let mut pool = write_lock(&self.0);
        if pool.len() < DECOYS {
            pool.push(token.as_bytes().to_vec());
        } else if replace {
            let i = rand::random::<usize>() % DECOYS;
            pool[i] = token.as_bytes().to_vec();
        }
    }

    /// `f` of a random decoy key (under the read lock: no copy).
    fn with_pick<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let pool = read_lock(&self.0);
        (!pool.is_empty()).then(|| f(&pool[rand::random::<usize>() % pool.len()]))
    }
}

#[cfg(test)]
thread_local! {
    /// Records decoded and compared on this thread (tests: the same work either way).
    static COMPARED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether `rec` is `merchant_id`'s; counted in tests.
fn owned_by(rec: &Record, merchant_id: &str) -> bool {
    #[cfg(test)]
    COMPARED.with(|c| c.set(c.get() + 1));
    rec.merchant_id == merchant_id
}

impl Vault {
    /// The stored record of `merchant_id`'s `token`; `TokenNotFound` for a malformed, missing
    /// or another merchant's token (the three answer alike). A missing token reads, decodes and
    /// compares the [`Decoy`]'s record instead, as much work as another merchant's token.
    fn record(&self, merchant_id: &str, token: &str) -> Result<Record> {
        if !token::is_well_formed_token(token) {
            return Err(Error::TokenNotFound);
        }
        let store = &self.inner.store;
        let Some(bytes) = store.get(Table::Tokens, token.as_bytes())? else {
            if let Some(bytes) = self.decoy_record()? {
                // Its answer does not matter (even the caller's own token): the work does.
                let owned =
                    decode::<Record>(&bytes, "token record").map(|r| owned_by(&r, merchant_id));
                std::hint::black_box(owned.is_ok_and(|o| o));
            }
            return Err(Error::TokenNotFound);
        };
        self.inner.decoy.offer(token, false);
        let rec: Record = decode(&bytes, "token record")?;
        if !owned_by(&rec, merchant_id) {
            // Another group's token answers exactly like a missing one.
            return Err(Error::TokenNotFound);
        }
        Ok(rec)
    }

    /// A [`Decoy`] record: read as any token is. Without decoys yet (no token made or read
    /// since open), tokens found at random places of the engine become the decoys (looked up
    /// without holding up the writer). `None` while there is no token.
    fn decoy_record(&self) -> Result<Option<Vec<u8>>> {
        let store = &self.inner.store;
        if let Some(read) = self
            .inner
            .decoy
            .with_pick(|key| store.get(Table::Tokens, key))
        {
            return read;
        }
        let mut first = None;
        for _ in 0..SEEDS {
            let start: [u8; 2] = std::array::from_fn(|_| b'0' + rand::random::<u8>() % 43);
            if let Some((k, v)) = store.scan_recent(Table::Tokens, &start, 1)?.pop() {
                if let Ok(k) = std::str::from_utf8(&k) {
                    self.inner.decoy.offer(k, false);
                }
                first.get_or_insert(v);
            }
        }
        Ok(first)
    }

    /// A token's metadata (never the PAN), stored or temporary. Not audited: it touches no card
    /// data. `TokenNotFound` for a malformed, missing, expired or another merchant's token.
    pub fn get(&self, merchant_id: &str, token: &str) -> Result<TokenInfo> {
        if let Some(i) = self.temp_info(merchant_id, token) {
            return Ok(i);
        }
        Ok(info(token, &self.record(merchant_id, token)?))
    }

    /// Decrypts a token's card. Always audited, durably, before the card is returned, refusals
    /// too. `TokenNotFound` as for [`Vault::get`]; a temporary token stays for its charge.
    pub async fn reveal(&self, ctx: &Ctx, merchant_id: &str, token: &str) -> Result<Revealed> {
        let result = self.reveal_inner(merchant_id, token);
        let ev = reveal_event(ctx, merchant_id, token, &result);
        self.audit_only(ev).await?;
        result
    }

    /// [`Vault::reveal`] for the gateway proxy: the card comes back as soon as its audit entry
    /// is written to the journal (in the OS page cache, so it outlives this process), and the
    /// entry's `fdatasync` runs while the charge travels to the gateway. The proxy answers the
    /// merchant only after [`Durable::wait`]. A failed reveal is answered once its entry is
    /// durable, as by [`Vault::reveal`].
    pub async fn reveal_for_charge(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
    ) -> Result<(Revealed, Durable)> {
        let result = self.reveal_inner(merchant_id, token);
        let ev = reveal_event(ctx, merchant_id, token, &result);
        let (written, is_written) = oneshot::channel();
        let durable = Durable(
            self.enqueue_job(audit_entry(ev), Some(written), false)
                .await?,
        );
        if is_written.await.is_err() {
            // The batch was not written: the answer says why.
            durable.wait().await?;
            return Err(Error::ShuttingDown);
        }
        match result {
            Ok(card) => Ok((card, durable)),
            Err(e) => {
                durable.wait().await?;
                Err(e)
            }
        }
    }

    /// The card of a live temporary token, else the decrypted stored record: `PAN 0 name`.
    fn reveal_inner(&self, merchant_id: &str, token: &str) -> Result<Revealed> {
        {
            let temps = self.temps();
            if let Some(t) = temps
                .0
                .get(token)
                .filter(|t| t.merchant_id == merchant_id && t.expires > Instant::now())
            {
                return Ok(Revealed {
                    pan: t.pan.clone(),
                    expiry: t.expiry,
                    cardholder_name: t.name.clone(),
                });
            }
        }
        let rec = self.record(merchant_id, token)?;
        let plain = self
            .dek(rec.dek_id)?
            .open_record(merchant_id, token, &rec.sealed)?;
        let split = plain.iter().position(|&b| b == 0).ok_or(Error::Corrupt {
            what: "card record",
        })?;
        let (pan, name) = plain.split_at(split);
        let pan = Pan::parse(std::str::from_utf8(pan).map_err(|_| Error::Corrupt {
            what: "card record",
        })?)?;
        let name = &name[1..];
        let cardholder_name = if name.is_empty() {
            None
        } else {
            Some(Zeroizing::new(String::from_utf8(name.to_vec()).map_err(
                |_| Error::Corrupt {
                    what: "card record",
                },
            )?))
        };
        Ok(Revealed {
            pan,
            expiry: rec.expiry,
            cardholder_name,
        })
    }
}

/// The audit event of a reveal: the token only if it is well formed (never a PAN sent as one).
fn reveal_event(ctx: &Ctx, merchant_id: &str, token: &str, result: &Result<Revealed>) -> Event {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Error::TokenNotFound) => "not_found",
        Err(_) => "error",
    };
    ctx.event(
        "reveal",
        Some(merchant_id),
        token::is_well_formed_token(token).then_some(token),
        outcome,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::audit;
    use crate::store::Backend;
    use crate::vault::tests::{new_vault, req};

    #[tokio::test]
    async fn a_pan_sent_as_a_token_is_never_audited() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        for pan in [
            "4111111111111111",
            "4111-1111-1111-1111",
            "tmp_4111111111111111",
        ] {
            assert!(matches!(
                v.reveal(&ctx, &a.merchant_id, pan).await,
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.delete(&ctx, &a.merchant_id, pan).await,
                Err(Error::TokenNotFound)
            ));
        }
        audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
            // The two hashes are random hex and may hold "4111" by chance: not card data.
            let mut e = e.clone();
            e.hash.clear();
            e.prev_hash.clear();
            let bytes = serde_json::to_string(&e).unwrap();
            assert!(!bytes.contains("4111"), "{bytes}");
            Ok(())
        })
        .unwrap();
        v.shutdown();
    }

    /// Issue 14 item 9: a GET or reveal of a missing token reads, decodes and compares one
    /// stored record, exactly as one of another merchant's token does (not timed: counted).
    #[tokio::test]
    async fn a_missing_token_costs_what_another_merchants_does() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let b = v.create_merchant(&ctx, "B", None).await.unwrap();
        let theirs = v
            .tokenize(
                &ctx,
                &b.merchant_id,
                &req("4111111111111111", 12, 2039, None),
            )
            .await
            .unwrap()
            .info
            .token;
        let missing = format!("{}ZZZZZZ{}", &theirs[..6], &theirs[12..]);
        let compared = |f: &dyn Fn() -> Result<()>| {
            COMPARED.with(|c| c.set(0));
            assert!(matches!(f(), Err(Error::TokenNotFound)));
            COMPARED.with(std::cell::Cell::get)
        };
        // Before any token was read (the decoy looked up), and after.
        for _ in 0..2 {
            let get_missing = compared(&|| v.get(&a.merchant_id, &missing).map(drop));
            let get_theirs = compared(&|| v.get(&a.merchant_id, &theirs).map(drop));
            assert_eq!((get_missing, get_theirs), (1, 1));
            let reveal_missing = compared(&|| v.reveal_inner(&a.merchant_id, &missing).map(drop));
            let reveal_theirs = compared(&|| v.reveal_inner(&a.merchant_id, &theirs).map(drop));
            assert_eq!((reveal_missing, reveal_theirs), (1, 1));
        }
        v.shutdown();
    }

    /// The proxy's reveal: the card comes back once its audit entry is in the journal (already
    /// readable), and `Durable::wait` resolves once the entry is synced.
    #[tokio::test]
    async fn a_charge_reveal_is_audited_before_the_card_comes_back() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let t = v
            .tokenize(
                &ctx,
                &a.merchant_id,
                &req("4111111111111111", 12, 2039, None),
            )
            .await
            .unwrap()
            .info
            .token;
        let reveals = |v: &Vault| {
            let mut n = Vec::new();
            audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
                if e.action == "reveal" {
                    n.push((e.token.clone(), e.outcome.clone()));
                }
                Ok(())
            })
            .unwrap();
            n
        };
        let (card, durable) = v.reveal_for_charge(&ctx, &a.merchant_id, &t).await.unwrap();
        assert_eq!(card.pan.digits(), "4111111111111111");
        assert_eq!(reveals(&v), [(Some(t.clone()), "ok".to_string())]);
        durable.wait().await.unwrap();
        let missing = "41XYZW0000001111";
        assert!(matches!(
            v.reveal_for_charge(&ctx, &a.merchant_id, missing).await,
            Err(Error::TokenNotFound)
        ));
        assert_eq!(reveals(&v).len(), 2);
        assert_eq!(reveals(&v)[1].1, "not_found");
        v.shutdown();
    }
}
