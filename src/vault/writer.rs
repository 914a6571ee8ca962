//! The single writer (see the module docs of `vault`): the job queue, the batch overlay each
//! closure sees (`Tx`), the group commit that chains audit entries and answers only once the
//! batch is durable, and its figures (`WriterStats`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Vault, now_unix, rfc3339};
use crate::audit::{self, Chain, Event};
use crate::store::{Stamped, Store, Table, WriteBatch};
use crate::sync::lock;
use crate::{Error, Result};

/// Group-commit figures, for benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches the writer has run (a failed one included).
    pub commits: AtomicU64,
    /// Journal syncs: one per batch written to the journal; its callers are answered after it.
    pub syncs: AtomicU64,
    /// Writer closures run, over all batches.
    pub writes: AtomicU64,
    /// Most closures in one batch so far.
    pub largest_batch: AtomicU64,
    /// Batches by size: <=1, <=2, <=4, ... <=512, >512.
    pub batch_hist: [AtomicU64; 11],
}

impl WriterStats {
    /// Counts one batch of `n` closures.
    fn record(&self, n: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(n as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(n as u64, Ordering::Relaxed);
        let bucket = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
        if let Some(b) = self.batch_hist.get(bucket.min(10)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Vault {
    /// Runs `f` on the writer inside the next group commit; answers once that commit is durable.
    /// If `f` returns `Err`, everything it wrote and audited is dropped and the caller gets that
    /// error; to commit an audit entry and still refuse the call, `f` returns
    /// [`Outcome::Refuse`].
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let rx = self.enqueue(f).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Writes one audit entry, and nothing else, in the next group commit; answers once that
    /// commit is durable.
    pub(crate) async fn audit_only(&self, ev: Event) -> Result<()> {
        self.write(audit_entry(ev)).await
    }

    /// Queues `f` for the writer and hands back the receiver of its answer without waiting
    /// (a batch tokenize queues every item before it awaits any).
    pub(super) async fn enqueue<R, F>(&self, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        self.enqueue_job(f, None, false).await
    }

    /// Queues `f` for the writer; `written` hears when its batch is in the journal. A
    /// `detached` write is one whose caller will not wait for its answer (see `Work::unwaited`).
    pub(super) async fn enqueue_job<R, F>(
        &self,
        f: F,
        written: Option<oneshot::Sender<()>>,
        detached: bool,
    ) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let sender = lock(&self.inner.queue).clone().ok_or(Error::ShuttingDown)?;
        sender
            .send(Box::new(Job {
                f: Some(f),
                out: None,
                reply,
                written,
                detached,
            }))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }
}

/// The writer closure of [`Vault::audit_only`]: appends `ev` to the audit chain, writes nothing
/// else.
pub(super) fn audit_entry(ev: Event) -> impl FnOnce(&mut Tx<'_>) -> Result<()> + Send + 'static {
    move |tx| {
        tx.audit(ev);
        Ok(())
    }
}

/// What a writer closure decided, once it ran to its end: [`Vault::write`] answers `R` or the
/// refusal. The closure's own `Err` is the third case: the writer drops everything the closure
/// wrote and audited (none of it is committed) and answers with that error.
pub(crate) enum Outcome<R> {
    /// Commit the closure's writes and audit entries; the caller gets `R` once they are durable.
    Commit(R),
    /// Commit what the closure wrote (the audit entry of the refusal, where there is one) and,
    /// once that is durable, refuse the call with this error.
    Refuse(Error),
}

impl<R> Outcome<R> {
    /// The caller's answer.
    pub(crate) fn into_result(self) -> Result<R> {
        match self {
            Outcome::Commit(r) => Ok(r),
            Outcome::Refuse(e) => Err(e),
        }
    }
}

/// A write already in the journal; [`Durable::wait`] resolves once it is on disk.
pub struct Durable(pub(super) oneshot::Receiver<Result<()>>);

impl Durable {
    /// Waits until the write is durable: the store's error if the sync failed, `ShuttingDown`
    /// if the writer stopped first.
    pub async fn wait(self) -> Result<()> {
        self.0.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Writes by table (`None`: delete); the last write of a key wins.
#[derive(Default)]
struct Overlay([HashMap<Vec<u8>, Option<Vec<u8>>>; 8]);

impl Overlay {
    fn get(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.0[table.index()].get(key)
    }

    fn insert(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.0[table.index()].insert(key, value);
    }

    fn extend(&mut self, other: Overlay) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            mine.extend(theirs);
        }
    }

    fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (table, writes) in Table::ALL.into_iter().zip(self.0) {
            for (key, value) in writes {
                match value {
                    Some(v) => batch.put(table, key, v),
                    None => batch.delete(table, key),
                }
            }
        }
        batch
    }
}

/// One writer closure's view: its own writes, then the batch's, then the store. What it puts,
/// deletes and audits is committed only if the closure returns `Ok`.
pub struct Tx<'a> {
    store: &'a dyn Store,
    batch: &'a Overlay,
    local: Overlay,
    events: Vec<Event>,
}

impl Tx<'_> {
    /// The batch's value of a key: `Some(None)` if deleted in it, `None` if not written in it.
    fn in_batch(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.local
            .get(table, key)
            .or_else(|| self.batch.get(table, key))
    }

    /// A key's value: this closure's or the batch's last write of it, else the store's.
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.in_batch(table, key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(table, key),
        }
    }

    /// [`Tx::get`] given a stamped read made before the closure was queued.
    pub(super) fn reget(
        &self,
        table: Table,
        key: &[u8],
        earlier: &Stamped,
    ) -> Result<Option<Vec<u8>>> {
        match self.in_batch(table, key) {
            Some(v) => Ok(v.clone()),
            None => self.store.reget(table, key, earlier),
        }
    }

    /// Writes `value` under `key` (replacing any earlier write of it in the batch).
    pub(crate) fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.local.insert(table, key.into(), Some(value.into()));
    }

    /// Deletes `key`.
    pub(crate) fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.local.insert(table, key.into(), None);
    }

    /// Appends `ev` to the audit chain with the closure's writes, in the same store write.
    pub(crate) fn audit(&mut self, ev: Event) {
        self.events.push(ev);
    }
}

/// A queued writer job, whatever its closure's answer type.
pub(super) trait Work: Send {
    /// Runs the closure against the batch: true if it returned `Ok` (its writes and audit
    /// entries, left in `tx`, then join the batch), false if it failed or had run already.
    fn apply(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller once the batch is durable, or failed.
    fn finish(self: Box<Self>, committed: &Result<()>);
    /// Nobody waits for the answer (a charge's outcome entry, a request that went away).
    fn unwaited(&self) -> bool;
    /// The batch is in the journal (not yet synced); tells a caller who asked.
    fn written(&mut self);
}

/// A writer closure, its answer once run, and where the answer goes.
struct Job<F, R> {
    /// `None` once run.
    f: Option<F>,
    /// The closure's answer, sent once the batch is durable.
    out: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
    /// Told when the batch is in the journal, before the sync (for [`Vault::reveal_for_charge`]).
    written: Option<oneshot::Sender<()>>,
    /// Queued by a caller that will not wait (known before its receiver is dropped).
    detached: bool,
}

impl<F, R> Work for Job<F, R>
where
    F: FnOnce(&mut Tx<'_>) -> Result<R> + Send,
    R: Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let r = f(tx);
        let ok = r.is_ok();
        self.out = Some(r);
        ok
    }

    fn finish(self: Box<Self>, committed: &Result<()>) {
        let answer = match (committed, self.out) {
            (Ok(()), Some(r)) => r,
            (Err(e), Some(Ok(_))) => Err(Error::store("commit", e)),
            (_, Some(Err(e))) => Err(e),
            (_, None) => Err(Error::ShuttingDown),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(answer);
    }

    fn unwaited(&self) -> bool {
        self.detached || self.reply.is_closed()
    }

    fn written(&mut self) {
        if let Some(w) = self.written.take() {
            let _ = w.send(());
        }
    }
}

/// How long the writer holds a batch nobody waits for, so that the next write shares its
/// `fdatasync` instead of queueing behind it. Bounds how late such an entry becomes durable.
const UNWAITED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The single writer: takes everything waiting (up to `max_batch`), runs the closures
/// against one batch, chains their audit entries, writes the batch to the journal (visible),
/// `fdatasync`s it (durable) and only then answers every caller in it. Callers that arrive
/// during the sync wait in the queue and form the next batch, so under load one sync carries
/// many writes without a timer, and a busy writer never sleeps between batches: one thread
/// and no hand-off per batch (a separate writer and syncer cost two more thread wake-ups per
/// batch, which on this 2-core VM was more than the overlap they bought; BENCHMARKS.md).
pub(super) async fn writer_loop(
    store: &dyn Store,
    mut rx: mpsc::Receiver<Box<dyn Work>>,
    mut chain: Chain,
    max_batch: usize,
    stats: &WriterStats,
) {
    let take = |jobs: &mut Vec<Box<dyn Work>>, rx: &mut mpsc::Receiver<Box<dyn Work>>| {
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
    };
    while let Some(first) = rx.recv().await {
        let mut jobs: Vec<Box<dyn Work>> = Vec::with_capacity(64);
        jobs.push(first);
        take(&mut jobs, &mut rx);
        // A batch nobody waits for (at one connection: the outcome entry of the charge just
        // answered) would otherwise take a sync that the next request's write must queue
        // behind; held a moment, it shares that write's sync instead.
        if jobs.iter().all(|j| j.unwaited())
            && let Ok(Some(j)) = tokio::time::timeout(UNWAITED_SYNC_DELAY, rx.recv()).await
        {
            jobs.push(j);
            take(&mut jobs, &mut rx);
        }
        // Every key's last state in this batch: later writes of one key replace earlier ones.
        let mut overlay = Overlay::default();
        let time = rfc3339(now_unix());
        let mut result: Result<()> = Ok(());
        let mut chained = false;
        for job in jobs.iter_mut() {
            let mut tx = Tx {
                store,
                batch: &overlay,
                local: Overlay::default(),
                events: Vec::new(),
            };
            if !job.apply(&mut tx) {
                continue;
            }
            let Tx { local, events, .. } = tx;
            overlay.extend(local);
            chained |= !events.is_empty();
            if let Err(e) = chain.append_all(events, &time, |seq, bytes| {
                overlay.insert(Table::Audit, audit::key(seq).to_vec(), Some(bytes));
            }) {
                result = Err(e);
            }
        }
        // The signed head moves with the entries, in the same store write.
        if chained && let Some(head) = chain.signed_head() {
            overlay.insert(Table::Meta, audit::HEAD_KEY.to_vec(), Some(head));
        }
        let written = result.and_then(|()| store.write(overlay.into_batch()));
        stats.record(jobs.len());
        let committed = match written {
            Ok(ticket) => {
                jobs.iter_mut().for_each(|j| j.written());
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                store.sync(ticket)
            }
            Err(e) => {
                // Nothing of this batch was written: the chain head goes back to what is.
                if let Ok(c) = chain.reload(store) {
                    chain = c;
                }
                Err(e)
            }
        };
        jobs.into_iter().for_each(|j| j.finish(&committed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::audit;
    use crate::store::Backend;
    use crate::vault::Ctx;
    use crate::vault::tests::new_vault;

    /// A write nobody waits for (a charge's outcome entry) shares the next write's sync instead
    /// of starting one that the next write must queue behind: one sync per pair, not two.
    #[tokio::test]
    async fn an_unwaited_write_shares_the_next_writes_sync() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let m = v.create_merchant(&ctx, "M", None).await.unwrap();
        let before = v.writer_stats().syncs.load(Ordering::Relaxed);
        const PAIRS: u64 = 20;
        for _ in 0..PAIRS {
            v.audit_charge(
                &ctx,
                &m.merchant_id,
                None,
                "approved",
                "nexi: HTTP 200".into(),
            )
            .await;
            // The next request comes a moment later, once the entry has reached the writer.
            std::thread::sleep(Duration::from_micros(300));
            v.write(|tx| {
                tx.audit(Ctx::system().event("reveal", None, None, "ok"));
                Ok(())
            })
            .await
            .unwrap();
        }
        let syncs = v.writer_stats().syncs.load(Ordering::Relaxed) - before;
        // Each unwaited entry held back could make 2 per pair; a stall over 2 ms may split one.
        assert!(syncs <= PAIRS * 3 / 2, "{syncs} syncs for {PAIRS} pairs");
        let mut charges = 0;
        audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
            charges += u64::from(e.action == "charge");
            Ok(())
        })
        .unwrap();
        assert_eq!(charges, PAIRS, "every unwaited entry was written");
        v.shutdown();
    }
}
