//! Re-encryption: the background job that moves every record under an older DEK to the
//! current one, step by step from a stored cursor, and destroys the DEKs it drained.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::record::{Record, decode, encode};
use super::types::{ReencryptJob, ReencryptStep};
use super::{Ctx, Vault, crash_point};
use crate::store::Table;
use crate::sync::{lock, read as read_lock, write as write_lock};
use crate::{Error, Result};

/// Tokens per re-encryption step. With [`REENCRYPT_PAUSE`] after each step, the job looks at
/// ~25k tokens a second at most, so it takes a bounded share of the writer and the CPU from
/// live traffic (BENCHMARKS.md: tokenize keeps >= 0.9x of its throughput while the job runs).
pub const REENCRYPT_BATCH: usize = 512;
/// The pause after each re-encryption step.
pub const REENCRYPT_PAUSE: Duration = Duration::from_millis(20);

/// Where the re-encryption job keeps its place: its `below` (4 bytes, big-endian) and the last
/// token it handled.
pub(super) const REENCRYPT_CURSOR: &[u8] = b"reencrypt_cursor";

impl Vault {
    /// One step of the re-encryption job: re-encrypts, under the current DEK, the records
    /// among the next `limit` tokens after the stored cursor that a DEK numbered below `below`
    /// encrypts (the job passes the DEK current when it started, so it ends even when DEKs roll
    /// over meanwhile), and moves the cursor, in one durable commit. A record changed or
    /// deleted since it was read is left alone (the change wins). Once a pass reaches the end,
    /// every DEK that no record uses any more (other than the current one) is destroyed: its
    /// wrapped key is deleted from the store and dropped from memory (crypto-shredding), and
    /// audited.
    pub async fn reencrypt_step(
        &self,
        ctx: &Ctx,
        below: u32,
        limit: usize,
    ) -> Result<ReencryptStep> {
        let store = self.inner.store.as_ref();
        let start = match store.get(Table::Meta, REENCRYPT_CURSOR)? {
            Some(c) if c.len() > 4 => {
                let mut after = c[4..].to_vec();
                after.push(0);
                after
            }
            _ => Vec::new(),
        };
        let page = store.scan_recent(Table::Tokens, &start, limit.max(1))?;
        let finished = page.len() < limit.max(1);
        let mut updates = Vec::new();
        for (k, _) in &page {
            // The newest value, not the engine's possibly older one.
            let Some(old) = store.get(Table::Tokens, k)? else {
                continue;
            };
            let rec: Record = decode(&old, "token record")?;
            if rec.dek_id >= below {
                continue;
            }
            let token = std::str::from_utf8(k).map_err(|_| Error::Corrupt { what: "token" })?;
            let plain = self
                .dek(rec.dek_id)?
                .open_record(&rec.merchant_id, token, &rec.sealed)?;
            let dek = self.dek_for_encryption().await?;
            let mut fresh = rec.clone();
            fresh.dek_id = dek.id();
            fresh.sealed = dek.seal_record(&rec.merchant_id, token, &plain)?;
            updates.push((k.clone(), old, encode(&fresh, "token record")?));
        }
        let last = page.last().map(|(k, _)| k.clone());
        let scanned = page.len() as u64;
        let moved = self
            .write(move |tx| {
                let mut moved = 0u64;
                for (k, old, new) in updates {
                    if tx.get(Table::Tokens, &k)?.as_deref() == Some(old.as_slice()) {
                        tx.put(Table::Tokens, k, new);
                        moved += 1;
                    }
                }
                match (finished, last) {
                    (false, Some(l)) => tx.put(
                        Table::Meta,
                        REENCRYPT_CURSOR,
                        [&below.to_be_bytes()[..], &l].concat(),
                    ),
                    _ => tx.delete(Table::Meta, REENCRYPT_CURSOR),
                }
                Ok(moved)
            })
            .await?;
        crash_point("reencrypt:step");
        let destroyed = if finished {
            self.destroy_drained_deks(ctx).await?
        } else {
            Vec::new()
        };
        Ok(ReencryptStep {
            scanned,
            moved,
            finished,
            destroyed,
        })
    }

    /// The re-encryption job of this process, if one ran or runs.
    pub fn reencryption(&self) -> Option<ReencryptJob> {
        lock(&self.inner.reencryption).clone()
    }

    /// The `below` of the next re-encryption job: that of a job cut short (which it resumes,
    /// so the records that job moved already are not called old again), else the current DEK.
    pub fn reencrypt_below(&self) -> Result<u32> {
        Ok(match self.inner.store.get(Table::Meta, REENCRYPT_CURSOR)? {
            Some(c) if c.len() > 4 => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            // Before this process's first encryption every stored DEK is old.
            _ => match read_lock(&self.inner.keys.current).as_ref() {
                Some(dek) => dek.id(),
                None => self.inner.keys.next_dek_id.load(Ordering::Relaxed),
            },
        })
    }

    /// Starts the re-encryption job in the background (on the caller's async runtime, so call
    /// it from an actix worker or a `LocalSet`) unless one runs, and returns its progress. It
    /// moves every record under a DEK older than the current one, from the stored cursor on
    /// (a job cut short by a restart resumes where it stopped), and is audited at its start and
    /// its end.
    pub async fn start_reencryption(&self, ctx: &Ctx) -> Result<ReencryptJob> {
        let below = self.reencrypt_below()?;
        {
            let mut job = lock(&self.inner.reencryption);
            if let Some(j) = job.as_ref().filter(|j| j.running) {
                return Ok(j.clone());
            }
            *job = Some(ReencryptJob {
                running: true,
                below,
                total: self.inner.store.count(Table::Tokens)?,
                ..ReencryptJob::default()
            });
        }
        if let Err(e) = self.audit_reencrypt_start(ctx, below).await {
            if let Some(j) = lock(&self.inner.reencryption).as_mut() {
                j.running = false;
            }
            return Err(e);
        }
        let (vault, ctx) = (self.clone(), ctx.clone());
        let started = Instant::now();
        tokio::task::spawn_local(async move {
            let outcome = loop {
                let step = vault.reencrypt_step(&ctx, below, REENCRYPT_BATCH).await;
                {
                    let mut job = lock(&vault.inner.reencryption);
                    let Some(j) = job.as_mut() else { return };
                    j.elapsed_ms = started.elapsed().as_millis() as u64;
                    match &step {
                        Ok(s) => {
                            j.scanned += s.scanned;
                            j.moved += s.moved;
                            j.destroyed.extend(&s.destroyed);
                        }
                        Err(e) => j.error = Some(e.code().to_string()),
                    }
                }
                match step {
                    Ok(s) if !s.finished => tokio::time::sleep(REENCRYPT_PAUSE).await,
                    Ok(_) => break "ok",
                    Err(_) => break "failed",
                }
            };
            let done = lock(&vault.inner.reencryption).clone().unwrap_or_default();
            let audited = vault.audit_reencrypt_end(&ctx, outcome, &done).await;
            if let Some(j) = lock(&vault.inner.reencryption).as_mut() {
                j.running = false;
                if let Err(e) = audited {
                    j.error.get_or_insert_with(|| e.code().to_string());
                }
            }
        });
        Ok(lock(&self.inner.reencryption).clone().unwrap_or_default())
    }

    /// Audits the start of a re-encryption job (HTTP or CLI).
    pub async fn audit_reencrypt_start(&self, ctx: &Ctx, below: u32) -> Result<()> {
        let mut ev = ctx.event("reencrypt", None, None, "started");
        ev.detail = Some(format!(
            "records under dek < {below} move to the current dek"
        ));
        self.audit_only(ev).await
    }

    /// Audits the end of a re-encryption job: `ok` or `failed`, and what it did.
    pub async fn audit_reencrypt_end(
        &self,
        ctx: &Ctx,
        outcome: &'static str,
        job: &ReencryptJob,
    ) -> Result<()> {
        let mut ev = ctx.event("reencrypt", None, None, outcome);
        ev.detail = Some(format!(
            "scanned {} moved {} destroyed dek {:?}",
            job.scanned, job.moved, job.destroyed
        ));
        self.audit_only(ev).await
    }

    /// Deletes every DEK that no record uses and that is not current.
    async fn destroy_drained_deks(&self, ctx: &Ctx) -> Result<Vec<u32>> {
        let keys = &self.inner.keys;
        // No DEK becomes current meanwhile, so no one can pick up a non-current one anew.
        let _no_new_dek = keys.rollover.lock().await;
        // A non-current DEK that only the key map holds is in no write in flight (writes hold
        // their DEK until their record is written); the empty write then waits until every
        // such record is committed, so the count below sees it.
        let idle: Vec<u32> = read_lock(&keys.deks)
            .iter()
            .filter(|(_, d)| Arc::strong_count(d) == 1)
            .map(|(id, _)| *id)
            .collect();
        self.write(|_| Ok(())).await?;
        let status = self.key_status()?;
        let drained: Vec<u32> = status
            .deks
            .iter()
            .filter(|d| d.records == 0 && !d.current && idle.contains(&d.id))
            .map(|d| d.id)
            .collect();
        if drained.is_empty() {
            return Ok(drained);
        }
        let mut ev = ctx.event("dek_destroy", None, None, "ok");
        ev.detail = Some(format!(
            "destroyed dek {}",
            drained
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        let gone = drained.clone();
        self.write(move |tx| {
            for id in gone {
                tx.delete(Table::Deks, id.to_be_bytes());
            }
            tx.audit(ev);
            Ok(())
        })
        .await?;
        let mut deks = write_lock(&keys.deks);
        for id in &drained {
            deks.remove(id);
        }
        Ok(drained)
    }
}
