//! The vault's audit trail as the API sees it: pages of the chain (themselves audited),
//! verification of the live chain, pruning behind a signed anchor, and a charge's outcome entry.

use super::types::{AuditPage, Pruned};
use super::writer::audit_entry;
use super::{Ctx, Vault, now_unix, rfc3339};
use crate::audit;
use crate::store::Table;
use crate::{Error, Result};

/// Most audit entries one `audit prune` store write deletes.
const PRUNE_BATCH: usize = 10_000;

impl Vault {
    /// A page of the audit chain (`GET /v1/audit`): up to `limit` entries from
    /// `since` on, and the `seq` the next page starts at (none at the end). Reading the audit
    /// trail is itself audited (`audit_read`, PCI DSS 10.2.1.3), durably, before the answer.
    pub async fn audit_page(&self, ctx: &Ctx, since: u64, limit: usize) -> Result<AuditPage> {
        let mut ev = ctx.event("audit_read", None, None, "ok");
        ev.detail = Some(format!("since {since}, limit {limit}"));
        self.audit_only(ev).await?;
        // The head first: every entry up to it is in the store by the time of the scan.
        let head = audit::SignedHead::load(self.inner.store.as_ref())?;
        let rows = self
            .inner
            .store
            .scan(Table::Audit, &audit::key(since.max(1)), limit + 1)?;
        let mut entries = rows
            .iter()
            .map(|(_, v)| audit::Entry::decode(v))
            .collect::<Result<Vec<_>>>()?;
        let mut next = if entries.len() > limit {
            entries.pop().map(|e| e.seq)
        } else {
            None
        };
        // Entries written after the head was read go to the next page, so that the page that
        // reaches the head can carry it.
        if let Some(h) = &head
            && entries.first().is_some_and(|e| e.seq <= h.seq)
            && entries.last().is_some_and(|e| e.seq > h.seq)
        {
            entries.retain(|e| e.seq <= h.seq);
            next = Some(h.seq.saturating_add(1));
        }
        let last = entries.last().map(|e| e.seq);
        let signed_head = head.filter(|h| Some(h.seq) == last);
        Ok(AuditPage {
            entries,
            next,
            signed_head,
        })
    }

    /// `audit prune`: deletes the oldest audit entries, those older than `retention_days`
    /// (at least [`audit::MIN_RETENTION_DAYS`], else `Config`) that the operator has exported
    /// (`seq <= exported_through`), and leaves a signed anchor where the chain now starts. A
    /// chain that does not verify is not pruned.
    pub async fn audit_prune(
        &self,
        ctx: &Ctx,
        retention_days: u64,
        exported_through: u64,
    ) -> Result<Pruned> {
        audit::check_retention(retention_days)?;
        let cutoff = rfc3339(now_unix().saturating_sub(retention_days.saturating_mul(86_400)));
        let mut report = self.prune_before(ctx, &cutoff, exported_through).await?;
        report.retention_days = retention_days;
        Ok(report)
    }

    /// Deletes entries from the chain's start while their time is before `cutoff` and their
    /// seq at most `exported_through`, in store writes of at most [`PRUNE_BATCH`] entries,
    /// each moving the signed anchor with it.
    pub(crate) async fn prune_before(
        &self,
        ctx: &Ctx,
        cutoff: &str,
        exported_through: u64,
    ) -> Result<Pruned> {
        // Only a chain that verifies, MACs included, is pruned: deleting and re-anchoring a
        // broken one would hide the break.
        let verified = self.verify_audit()?;
        let store = self.inner.store.as_ref();
        let first = verified.first_seq.max(1);
        let mut next = first;
        let mut batches = 0u64;
        loop {
            let rows = store.scan(Table::Audit, &audit::key(next), PRUNE_BATCH)?;
            let mut last: Option<(u64, String)> = None;
            for (_, v) in &rows {
                let e = audit::Entry::decode(v)?;
                let expect = last.as_ref().map_or(next, |l| l.0.saturating_add(1));
                if e.seq != expect {
                    return Err(Error::AuditBroken {
                        seq: expect,
                        reason: "sequence number out of order (entry missing or inserted)",
                    });
                }
                // Never past the chain's end at the start: each batch appends an entry itself.
                if e.seq > exported_through.min(verified.last_seq) || e.time.as_str() >= cutoff {
                    break;
                }
                last = Some((e.seq, e.hash));
            }
            let Some((seq, hash)) = last else { break };
            let anchor = audit::SignedHead::anchor(&self.inner.keys.audit_mac, seq, &hash)?;
            let from = next;
            // Each store write deletes, moves the anchor and says so in the chain, so a prune
            // cut short by a crash is still on record for what it did.
            let mut ev = ctx.event("audit_prune", None, None, "ok");
            ev.detail = Some(format!(
                "deleted entries {from}..={seq} (before {cutoff}, exported through {exported_through})"
            ));
            self.write(move |tx| {
                for s in from..=seq {
                    tx.delete(Table::Audit, audit::key(s));
                }
                tx.put(Table::Meta, audit::ANCHOR_KEY, anchor);
                tx.audit(ev);
                Ok(())
            })
            .await?;
            batches += 1;
            next = seq.saturating_add(1);
        }
        if batches == 0 {
            let mut ev = ctx.event("audit_prune", None, None, "ok");
            ev.detail = Some(format!(
                "nothing to delete (before {cutoff}, exported through {exported_through})"
            ));
            self.audit_only(ev).await?;
        }
        Ok(Pruned {
            deleted: next - first,
            first_kept: next,
            cutoff: cutoff.to_string(),
            retention_days: 0,
        })
    }

    /// Verifies the audit chain as it is now, MACs included (`audit verify` of a live vault).
    pub fn verify_audit(&self) -> Result<audit::Verified> {
        audit::verify(
            self.inner.store.as_ref(),
            Some(&self.inner.keys.audit_mac),
            true,
        )
    }

    /// Audits a proxied charge's outcome (`charge`: approved, declined, challenge, other,
    /// refused, failed). Queued for the next group commit without waiting for it: the card's
    /// use is already durably audited (as a reveal) before it leaves, and the merchant's answer
    /// should not wait for a second sync. `token` is a panvault token, never a card.
    pub async fn audit_charge(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: Option<&str>,
        outcome: &'static str,
        detail: String,
    ) {
        let mut ev = ctx.event("charge", Some(merchant_id), token, outcome);
        ev.detail = Some(detail);
        let queued = self.enqueue_job(audit_entry(ev), None, true).await;
        if let Err(e) = queued {
            tracing::warn!(code = e.code(), "a charge's audit entry was not queued");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use crate::Error;
    use crate::audit;
    use crate::keys::Unlock;
    use crate::store::{Backend, Table, WriteBatch};
    use crate::vault::tests::{each_backend, new_vault, req};
    use crate::vault::{Ctx, Options, Vault};

    #[tokio::test]
    async fn a_vault_without_an_audit_key_verifies_its_chain_before_signing_it() {
        // A vault as made before signed audit heads: no audit MAC key, no head. Its first open
        // by today's code signs the chain, so it re-links the whole chain first.
        for edited in [false, true] {
            let (_d, v) = new_vault(Backend::Redb);
            v.create_merchant(&Ctx::system(), "A", None).await.unwrap();
            let dir = v.dir().to_path_buf();
            v.shutdown();
            let store = v.inner.store.clone();
            drop(v);
            let mut b = WriteBatch::new();
            b.delete(Table::Meta, b"audit_mac_key".to_vec());
            b.delete(Table::Meta, audit::HEAD_KEY);
            if edited {
                let raw = store.get(Table::Audit, &audit::key(2)).unwrap().unwrap();
                let mut e = audit::Entry::decode(&raw).unwrap();
                e.actor = "someone else".into();
                b.put(Table::Audit, audit::key(2), e.encode().unwrap());
            }
            store.commit(&b).unwrap();
            drop(store);
            match Vault::open(&dir, &Unlock::Dev, Options::default()) {
                Ok(v) => {
                    assert!(!edited, "opened over an edited chain");
                    let verified = v.verify_audit().unwrap();
                    assert_eq!(verified.signed_through, Some(verified.last_seq));
                    v.shutdown();
                }
                Err(e) => {
                    assert!(edited, "{e}");
                    assert!(matches!(e, Error::AuditBroken { seq: 2, .. }), "{e}");
                    // Nothing was signed: no key, no head.
                    let store = crate::vault::open_store(&dir).unwrap();
                    assert!(store.get(Table::Meta, audit::HEAD_KEY).unwrap().is_none());
                    assert!(store.get(Table::Meta, b"audit_mac_key").unwrap().is_none());
                }
            }
        }
    }

    #[tokio::test]
    async fn audit_chain_records_operations_and_verifies() {
        each_backend(async |v: Vault| {
            let ctx = Ctx {
                actor: "key_test".into(),
                client: Some("127.0.0.1".into()),
                request_id: Some("req-1".into()),
            };
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let t = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111111111111111", 1, 2030, None),
                )
                .await
                .unwrap()
                .info
                .token;
            v.reveal(&ctx, &a.merchant_id, &t).await.unwrap();
            let mut actions = Vec::new();
            audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
                assert!(
                    !e.encode()
                        .unwrap()
                        .windows(16)
                        .any(|w| w == b"4111111111111111")
                );
                actions.push((e.action.clone(), e.outcome.clone()));
                Ok(())
            })
            .unwrap();
            assert_eq!(actions[0].0, "vault_init");
            assert!(actions.contains(&("tokenize".into(), "created".into())));
            assert!(actions.contains(&("reveal".into(), "ok".into())));
            let verified = v.verify_audit().unwrap();
            assert_eq!(verified.entries as usize, actions.len());
        })
        .await;
    }
}
