//! The commit journal: how a commit is durable with one small sequential write.
//!
//! A B-tree commit of N random keys rewrites about N leaf pages (profiled: 32 tokenizes, 64
//! random keys, ~2.2 ms per redb commit on this machine). So [`Journaled::commit`] instead
//!
//! 1. ([`Store::write`]) appends the batch as one checksummed record to the current journal
//!    file (`dir/journal.log` or `dir/journal-1.log`, see step 3) and
//!    puts its entries in an in-memory table that readers consult first. Every
//!    [`APPLY_ENTRIES`] entries, that table goes to the engine in one unsynced transaction in
//!    key order (redb `Durability::None`, sled without `flush`), together with the last record's
//!    sequence number under the engine's journal key, atomically;
//! 2. ([`Store::sync`]) `fdatasync`s the journal: every record written so far is durable, and
//!    only now is `Ok` possible. One sync covers all the batches written while the previous
//!    sync ran;
//! 3. every [`CHECKPOINT_BYTES`] of journal, switches files: it `fdatasync`s the full file,
//!    goes on writing at offset 0 of the other one, and has the applier thread make the engine
//!    durable (a checkpoint: one sync for thousands of batches) with its next table. A file is
//!    written again only once the engine holds everything in it durably, which normally
//!    happened long before (a whole file of writes later); so no write waits for a checkpoint.
//!
//! On open (`replay.rs`), the records of each file's current cycle (consecutive sequence
//! numbers from offset 0) that are newer than the engine's `journal_seq` are merged by sequence
//! number and applied again (in order; puts and deletes of whole values are idempotent), and
//! the engine is checkpointed. A torn last record (crash during step 1: never acknowledged)
//! fails its checksum and is dropped, counted and logged; a bad record followed by any valid
//! newer one is damage, and the open is refused unless the loss is accepted
//! (`serve --accept-journal-loss`). Readers see a batch after step 1, up to one sync before it
//! is durable; callers are answered after step 2.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::filter::{self, KeyFilter};
use super::replay;
use super::{Backend, Engine, Entry, Op, Stamped, Store, Table, WriteBatch};
use crate::{Error, Result};

/// The journal's two files inside the vault directory, used in turn.
pub(super) const FILE_NAMES: [&str; 2] = ["journal.log", "journal-1.log"];
/// Entries held in memory before they are applied to the engine in one transaction.
pub(super) const APPLY_ENTRIES: usize = 16384;
/// While the applier is busy the writer keeps filling the in-memory table; only at this size
/// does it wait for the applier (bounding memory).
pub(super) const MAX_PENDING_ENTRIES: usize = 8 * APPLY_ENTRIES;
/// Journal file size that triggers a switch to the other file and a checkpoint of the engine.
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;
/// [`CHECKPOINT_BYTES`], or `PANVAULT_JOURNAL_CHECKPOINT_BYTES` (at least 64 KiB) for tuning
/// and for the crash tests, which need many checkpoints in a short run.
fn checkpoint_bytes() -> u64 {
    std::env::var("PANVAULT_JOURNAL_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(CHECKPOINT_BYTES, |n| n.max(64 << 10))
}

/// Under which key the engine keeps the sequence number of the last journal record it holds
/// (outside the vault's tables).
pub(super) const SEQ_KEY: &[u8] = b"journal_seq";

pub(super) const MAGIC: &[u8; 4] = b"PVJ1";
pub(super) const HEADER: usize = 4 + 8 + 4;
pub(super) const TRAILER: usize = 16;

/// A [`Store`] whose commits go through the journal in front of an [`Engine`].
pub(super) struct Journaled {
    shared: Arc<Shared>,
    log: Mutex<Log>,
    /// Hands full tables to the applier thread (`None` once closing).
    to_applier: Option<SyncSender<ToApplier>>,
    applier: Option<std::thread::JoinHandle<()>>,
    /// Journal file size that triggers a switch ([`CHECKPOINT_BYTES`] unless tuned).
    checkpoint_bytes: u64,
    /// Table size handed to the applier ([`APPLY_ENTRIES`] unless tuned); the writer waits for
    /// the applier only at [`MAX_PENDING_ENTRIES`]`/`[`APPLY_ENTRIES`] times that.
    apply_entries: usize,
    /// Second handles on the journal files, so a sync runs while the next record is written.
    sync_files: [File; 2],
    /// The file the writer writes to ([`Log::cur`]), for [`Store::sync`].
    current: AtomicUsize,
    sync_lock: Mutex<()>,
    /// Highest sequence number whose record was fully written (not necessarily synced).
    written: AtomicU64,
    /// Highest sequence number known durable (journal synced, or engine checkpointed).
    durable: AtomicU64,
    /// Every key ever put in the tokens and fingerprints tables (see `filter.rs`). A key goes
    /// in under the pending lock before it is visible, and is looked up under it.
    filter: KeyFilter,
    /// What the open found in the journal (see `replay.rs`).
    recovery: replay::Recovery,
}

/// What the writer and the applier thread share.
struct Shared {
    engine: Box<dyn Engine>,
    /// Journaled writes not yet in the engine. Readers look here first.
    pending: RwLock<Pending>,
    /// Set when a write, apply or sync failed: the engine may be ahead of or behind the
    /// journal, so nothing more is taken until the store is reopened (which replays it).
    failed: AtomicBool,
}

/// Entries per table; `None` is a delete. (Hash maps instead were measured on 2026-11-29: no
/// gain in server CPU per request, and their rehashes happen under the write lock.)
#[derive(Default)]
struct Tables {
    tables: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; 8],
    entries: usize,
}

impl Tables {
    fn get(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.tables[table.index()].get(key)
    }

    /// Every entry, in key order per table (cheaper B-tree inserts).
    fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        Table::ALL
            .iter()
            .zip(&self.tables)
            .flat_map(|(table, entries)| {
                entries
                    .iter()
                    .map(|(k, v)| (*table, k.as_slice(), v.as_deref()))
            })
    }
}

#[derive(Default)]
struct Pending {
    /// Takes the writer's new entries.
    active: Tables,
    /// Handed to the applier thread; gone once the engine has it.
    frozen: Option<Arc<Tables>>,
    /// Counts the tables the engine received: the engine changes only when this does.
    epoch: u64,
}

impl Pending {
    fn newest(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.active
            .get(table, key)
            .or_else(|| self.frozen.as_ref()?.get(table, key))
    }
}

/// A table for the applier: its entries, the sequence number of the last record they hold,
/// and whether to checkpoint the engine after applying them.
type ToApplier = (Arc<Tables>, u64, bool);

/// The applier's answer: `Some(seq)` when the engine was also checkpointed through `seq`.
type FromApplier = Result<Option<u64>>;

struct Log {
    files: [File; 2],
    /// Which file records go to.
    cur: usize,
    /// The applier's answers; `applying` says one is outstanding.
    from_applier: Receiver<FromApplier>,
    applying: bool,
    /// Where the next record goes in the current file.
    len: u64,
    /// Bytes of each file known to be allocated (written and synced).
    allocated: [u64; 2],
    seq: u64,
    /// The engine is durable through this sequence number.
    checkpointed: u64,
    /// Per file: the last sequence number it holds, which the engine must hold durably before
    /// the file is written from offset 0 again.
    holds: [u64; 2],
    /// The next table handed to the applier also checkpoints the engine (set at each switch).
    checkpoint_due: bool,
    /// Switches, and those that had to checkpoint on the writer (for the tests).
    switches: u64,
    forced: u64,
}

pub(super) fn encode(seq: u64, batch: &WriteBatch) -> Vec<u8> {
    let size: usize = batch
        .ops()
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } => 10 + key.len() + value.len(),
            Op::Delete { key, .. } => 6 + key.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER + size + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    for op in batch.ops() {
        let (kind, table, key) = match op {
            Op::Put { table, key, .. } => (1u8, table, key),
            Op::Delete { table, key } => (2u8, table, key),
        };
        out.push(kind);
        out.push(table.index() as u8);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Op::Put { value, .. } = op {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest[..TRAILER]);
    out
}

/// Splits off `n` bytes, or `None` if fewer remain.
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn take_u32(buf: &mut &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(take(buf, 4)?.try_into().ok()?) as usize)
}

/// Decodes the records of a journal, stopping at the first one that is incomplete or fails
/// its checksum (a torn tail).
#[cfg(test)]
fn decode(mut buf: &[u8]) -> Vec<(u64, WriteBatch)> {
    let mut out = Vec::new();
    while let Some(rec) = decode_one(&mut buf) {
        out.push(rec);
    }
    out
}

pub(super) fn decode_one(buf: &mut &[u8]) -> Option<(u64, WriteBatch)> {
    let start = *buf;
    let header = take(buf, HEADER)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let size = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let mut payload = take(buf, size)?;
    let trailer = take(buf, TRAILER)?;
    if Sha256::digest(&start[..HEADER + size])[..TRAILER] != *trailer {
        return None;
    }
    let mut batch = WriteBatch::new();
    while !payload.is_empty() {
        let head = take(&mut payload, 2)?;
        let table = *Table::ALL.get(head[1] as usize)?;
        let klen = take_u32(&mut payload)?;
        let key = take(&mut payload, klen)?.to_vec();
        match head[0] {
            1 => {
                let vlen = take_u32(&mut payload)?;
                batch.put(table, key, take(&mut payload, vlen)?.to_vec());
            }
            2 => batch.delete(table, key),
            _ => return None,
        }
    }
    Some((seq, batch))
}

/// Decodes the stored journal sequence number.
pub(super) fn decode_seq(v: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        Error::Corrupt {
            what: "journal sequence",
        }
    })?))
}

/// Plans the replay of the journal in `dir` over `engine` without doing it: an error if it is
/// damaged in the middle (see [`super::check_journal`]).
pub(super) fn check(engine: &dyn Engine, dir: &Path) -> Result<()> {
    // A vault made before the journal has no journal files until its next open.
    let read = |name: &str| match std::fs::read(dir.join(name)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other.map_err(|e| Error::store("journal", e)),
    };
    let contents = [read(FILE_NAMES[0])?, read(FILE_NAMES[1])?];
    let names = FILE_NAMES.map(|n| dir.join(n).display().to_string());
    replay::plan(
        [&contents[0], &contents[1]],
        [&names[0], &names[1]],
        engine.journal_seq()?,
        false,
    )
    .map(drop)
}

impl Journaled {
    /// Opens the journal in `dir`, replays what the engine lacks, and checkpoints (see
    /// `replay.rs` for a torn last record, and for damage, refused unless `accept_loss`).
    pub(super) fn open(engine: Box<dyn Engine>, dir: &Path, accept_loss: bool) -> Result<Self> {
        Self::open_with(engine, dir, checkpoint_bytes(), APPLY_ENTRIES, accept_loss)
    }

    /// [`Journaled::open`] with the file size and the applier's table size given (tests).
    fn open_with(
        engine: Box<dyn Engine>,
        dir: &Path,
        checkpoint_bytes: u64,
        apply_entries: usize,
        accept_loss: bool,
    ) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| Error::store("journal", e);
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(dir.join(name))
                .map_err(io)
        };
        let mut files = [open(FILE_NAMES[0])?, open(FILE_NAMES[1])?];
        let mut contents = [Vec::new(), Vec::new()];
        for (file, bytes) in files.iter_mut().zip(&mut contents) {
            file.read_to_end(bytes).map_err(io)?;
        }
        let names = FILE_NAMES.map(|n| dir.join(n).display().to_string());
        let mut allocated = contents.each_ref().map(|b| b.len() as u64);
        let plan = replay::plan(
            [&contents[0], &contents[1]],
            [&names[0], &names[1]],
            engine.journal_seq()?,
            accept_loss,
        )?;
        drop(contents);
        let replayed = !plan.records.is_empty();
        for (rec_seq, batch) in &plan.records {
            engine.apply_unsynced(&mut batch.ops().iter().map(Op::entry), *rec_seq)?;
        }
        let seq = plan.last;
        if let Some(loss) = &plan.recovery.loss {
            // Kept in the engine until the vault has audited it: a crash in between loses
            // neither the records' absence nor its record.
            let mut losses = match engine.get(replay::LOSS_TABLE, replay::JOURNAL_LOSS_KEY)? {
                Some(v) => replay::decode_losses(&v)?,
                None => Vec::new(),
            };
            losses.push(loss.clone());
            let value = replay::encode_losses(&losses)?;
            engine.apply_unsynced(
                &mut std::iter::once((
                    replay::LOSS_TABLE,
                    replay::JOURNAL_LOSS_KEY,
                    Some(value.as_slice()),
                )),
                seq,
            )?;
        }
        if replayed || plan.recovery.loss.is_some() {
            engine.checkpoint()?;
        }
        // Only now that the engine holds everything before the cut durably.
        for ((file, cut), allocated) in files.iter().zip(plan.cut).zip(&mut allocated) {
            if let Some(cut) = cut {
                file.set_len(cut).map_err(io)?;
                file.sync_all().map_err(io)?;
                *allocated = cut;
            }
        }
        let filter =
            KeyFilter::for_keys(engine.count(Table::Tokens)? + engine.count(Table::Fingerprints)?);
        for table in Table::ALL.into_iter().filter(|t| filter::covers(*t)) {
            for_each_key(engine.as_ref(), table, |k| filter.insert(table, k))?;
        }
        let sync_files = [
            files[0].try_clone().map_err(io)?,
            files[1].try_clone().map_err(io)?,
        ];
        let shared = Arc::new(Shared {
            engine,
            pending: RwLock::new(Pending::default()),
            failed: AtomicBool::new(false),
        });
        let (to_applier, applier_rx) = std::sync::mpsc::sync_channel(1);
        let (done_tx, from_applier) = std::sync::mpsc::channel();
        let applier = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("panvault-applier".into())
                .spawn(move || applier_loop(&shared, applier_rx, done_tx))
                .map_err(io)?
        };
        Ok(Journaled {
            shared,
            // Everything in either file is in the engine durably: both may be reused.
            log: Mutex::new(Log {
                files,
                cur: 0,
                from_applier,
                applying: false,
                len: 0,
                allocated,
                seq,
                checkpointed: seq,
                holds: [0, 0],
                checkpoint_due: false,
                switches: 0,
                forced: 0,
            }),
            to_applier: Some(to_applier),
            applier: Some(applier),
            checkpoint_bytes,
            apply_entries,
            sync_files,
            current: AtomicUsize::new(0),
            sync_lock: Mutex::new(()),
            written: AtomicU64::new(seq),
            durable: AtomicU64::new(seq),
            filter,
            recovery: plan.recovery,
        })
    }

    /// Makes the engine durable through the last record, here and now (on close, and at a
    /// switch whose next file is still needed, which only a very slow applier causes).
    fn checkpoint_now(&self, log: &mut Log) -> Result<()> {
        self.drain(log)?;
        self.shared.engine.checkpoint()?;
        self.durable.fetch_max(log.seq, Ordering::SeqCst);
        log.checkpointed = log.seq;
        log.checkpoint_due = false;
        Ok(())
    }

    /// Moves the writer to the other file (see the module docs, step 3). The files are never
    /// truncated: their blocks are reused (see [`extend`]).
    fn switch(&self, log: &mut Log) -> Result<()> {
        let next = 1 - log.cur;
        if log.checkpointed < log.holds[next] {
            // The checkpoint asked for at the previous switch may be under way.
            self.wait_applier(log)?;
            if log.checkpointed < log.holds[next] {
                log.forced += 1;
                self.checkpoint_now(log)?;
            }
        }
        log.switches += 1;
        // All of the full file is durable before syncs move to the next one.
        log.files[log.cur]
            .sync_data()
            .map_err(|e| Error::store("journal sync", e))?;
        self.durable.fetch_max(log.seq, Ordering::SeqCst);
        log.holds[log.cur] = log.seq;
        log.checkpoint_due = true;
        log.cur = next;
        log.len = 0;
        self.current.store(next, Ordering::SeqCst);
        Ok(())
    }
}

/// Extends the journal file with at least `need` bytes of zeros (1 MiB at a time), synced,
/// so that record writes overwrite allocated blocks and their `fdatasync` never has a file size
/// to update (measured 0.16 ms instead of 0.25 ms per sync here). Zeros are not a valid record:
/// replay stops there. After the first cycle the whole file is allocated and this never runs.
fn extend(file: &File, from: u64, need: u64) -> Result<u64> {
    const STEP: u64 = 1 << 20;
    let n = need.div_ceil(STEP) * STEP;
    let zeros = vec![0u8; STEP as usize];
    let mut at = from;
    while at < from + n {
        file.write_all_at(&zeros, at)
            .map_err(|e| Error::store("journal extend", e))?;
        at += STEP;
    }
    file.sync_all()
        .map_err(|e| Error::store("journal extend", e))?;
    Ok(n)
}

/// The applier thread: puts each frozen table into the engine in one unsynced transaction,
/// then lets readers stop looking at it. It runs beside the writer, so a large engine
/// transaction (milliseconds for 4096 random keys) never holds up the next journal write.
fn applier_loop(
    shared: &Shared,
    rx: Receiver<ToApplier>,
    done: std::sync::mpsc::Sender<FromApplier>,
) {
    while let Ok((tables, seq, checkpoint)) = rx.recv() {
        let result = shared.engine.apply_unsynced(&mut tables.entries(), seq);
        if result.is_ok() {
            // One step under the lock: a reader sees the entries in `frozen` or a new epoch.
            let mut pending = crate::sync::write(&shared.pending);
            pending.frozen = None;
            pending.epoch += 1;
        }
        let result = result.and_then(|()| {
            if checkpoint {
                shared.engine.checkpoint().map(|()| Some(seq))
            } else {
                Ok(None)
            }
        });
        if result.is_err() {
            // The frozen table stays readable if the apply failed; no further write is taken.
            shared.failed.store(true, Ordering::SeqCst);
        }
        if done.send(result).is_err() {
            return;
        }
    }
}

impl Journaled {
    /// True if no table is being applied (collecting the applier's answer if it has one),
    /// without waiting.
    fn applier_idle(&self, log: &mut Log) -> Result<bool> {
        if !log.applying {
            return Ok(true);
        }
        match log.from_applier.try_recv() {
            Ok(result) => {
                log.applying = false;
                Self::note_checkpoint(log, result?);
                Ok(true)
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(false),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Err(Error::store("journal apply", "the applier thread is gone"))
            }
        }
    }

    /// Waits for the applier's outstanding table, if any.
    fn wait_applier(&self, log: &mut Log) -> Result<()> {
        if !log.applying {
            return Ok(());
        }
        log.applying = false;
        let checkpointed = log
            .from_applier
            .recv()
            .map_err(|_| Error::store("journal apply", "the applier thread is gone"))??;
        Self::note_checkpoint(log, checkpointed);
        Ok(())
    }

    fn note_checkpoint(log: &mut Log, checkpointed: Option<u64>) {
        if let Some(seq) = checkpointed {
            log.checkpointed = log.checkpointed.max(seq);
        }
    }

    /// Freezes the active table and hands it to the applier (after the previous one is done).
    fn hand_off(&self, log: &mut Log) -> Result<()> {
        self.wait_applier(log)?;
        // After a failed apply the frozen table is the only copy readers have of acknowledged
        // writes (the engine lacks them; the journal replays them at the next open): never
        // replace it, and never move the engine's journal number past it.
        self.check_failed()?;
        let frozen = {
            let mut pending = crate::sync::write(&self.shared.pending);
            if pending.active.entries == 0 {
                return Ok(());
            }
            if pending.frozen.is_some() {
                self.fail();
                return Err(Error::store(
                    "journal apply",
                    "a table is still being applied",
                ));
            }
            let t = Arc::new(std::mem::take(&mut pending.active));
            pending.frozen = Some(t.clone());
            t
        };
        let tx = self
            .to_applier
            .as_ref()
            .ok_or_else(|| Error::store("journal apply", "closing"))?;
        tx.send((frozen, log.seq, std::mem::take(&mut log.checkpoint_due)))
            .map_err(|_| Error::store("journal apply", "the applier thread is gone"))?;
        log.applying = true;
        Ok(())
    }

    /// Puts everything pending into the engine and waits for it.
    fn drain(&self, log: &mut Log) -> Result<()> {
        self.hand_off(log)?;
        self.wait_applier(log)
    }

    /// Brings the engine up to date, for the multi-key reads (rare: audit pages, open).
    fn settle(&self) -> Result<()> {
        let mut log = crate::sync::lock(&self.log);
        self.drain(&mut log)
    }

    fn check_failed(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(Error::store(
                "commit",
                "an earlier journal write, apply or sync failed; reopen the store",
            ));
        }
        Ok(())
    }

    fn fail(&self) {
        self.shared.failed.store(true, Ordering::SeqCst);
    }
}

/// Calls `f` with every key of `table` in the engine, a page at a time.
fn for_each_key(engine: &dyn Engine, table: Table, mut f: impl FnMut(&[u8])) -> Result<()> {
    const PAGE: usize = 4096;
    let mut start = Vec::new();
    loop {
        let page = engine.scan(table, &start, PAGE)?;
        for (k, _) in &page {
            f(k);
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE => {
                // The smallest key after `last`.
                start.clone_from(last);
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

impl Journaled {
    /// True if `key` was never put in `table` (a covered table whose filter says no); call
    /// it with the pending lock held, after looking in `pending`.
    fn never_written(&self, table: Table, key: &[u8]) -> bool {
        filter::covers(table) && !self.filter.may_contain(table, key)
    }

    fn pending(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        crate::sync::read(&self.shared.pending)
    }
}

impl Store for Journaled {
    fn backend(&self) -> Backend {
        self.shared.engine.backend()
    }

    fn recovery(&self) -> replay::Recovery {
        self.recovery.clone()
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        {
            let pending = self.pending();
            if let Some(v) = pending.newest(table, key) {
                return Ok(v.clone());
            }
            if self.never_written(table, key) {
                return Ok(None);
            }
        }
        self.shared.engine.get(table, key)
    }

    fn get_stamped(&self, table: Table, key: &[u8]) -> Result<Stamped> {
        let epoch = {
            let pending = self.pending();
            if let Some(v) = pending.newest(table, key) {
                return Ok(Stamped {
                    value: v.clone(),
                    epoch: Some(pending.epoch),
                });
            }
            if self.never_written(table, key) {
                return Ok(Stamped {
                    value: None,
                    epoch: Some(pending.epoch),
                });
            }
            pending.epoch
        };
        // Read after taking the epoch: an engine change in between makes the epoch stale, so
        // `reget` reads again rather than trusting this value.
        Ok(Stamped {
            value: self.shared.engine.get(table, key)?,
            epoch: Some(epoch),
        })
    }

    /// Every write since the stamped read is in `pending` unless the engine received a table
    /// since (a new epoch, every few thousand entries); only then is the engine read again.
    fn reget(&self, table: Table, key: &[u8], earlier: &Stamped) -> Result<Option<Vec<u8>>> {
        {
            let pending = self.pending();
            if let Some(v) = pending.newest(table, key) {
                return Ok(v.clone());
            }
            if earlier.epoch == Some(pending.epoch) {
                return Ok(earlier.value.clone());
            }
        }
        self.shared.engine.get(table, key)
    }

    fn scan(&self, table: Table, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settle()?;
        self.shared.engine.scan(table, start, limit)
    }

    /// The engine alone: no drain of the pending tables (which would hold up the writer).
    fn scan_recent(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_failed()?;
        self.shared.engine.scan(table, start, limit)
    }

    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.settle()?;
        self.shared.engine.last(table)
    }

    fn count(&self, table: Table) -> Result<u64> {
        self.settle()?;
        self.shared.engine.count(table)
    }

    fn write(&self, batch: WriteBatch) -> Result<u64> {
        let mut log = crate::sync::lock(&self.log);
        self.check_failed()?;
        if batch.is_empty() {
            return Ok(log.seq);
        }
        let seq = log.seq + 1;
        let record = encode(seq, &batch);
        let end = log.len + record.len() as u64;
        let cur = log.cur;
        if end > log.allocated[cur] {
            match extend(
                &log.files[cur],
                log.allocated[cur],
                end - log.allocated[cur],
            ) {
                Ok(n) => log.allocated[cur] += n,
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            }
        }
        if let Err(e) = log.files[cur].write_all_at(&record, log.len) {
            self.fail();
            return Err(Error::store("journal write", e));
        }
        log.seq = seq;
        log.len += record.len() as u64;
        self.written.store(seq, Ordering::SeqCst);
        let full = {
            // All of the batch becomes visible at once.
            let mut pending = crate::sync::write(&self.shared.pending);
            let active = &mut pending.active;
            for op in batch.into_ops() {
                let (table, key, value) = match op {
                    Op::Put { table, key, value } => {
                        if filter::covers(table) {
                            self.filter.insert(table, &key);
                        }
                        (table, key, Some(value))
                    }
                    Op::Delete { table, key } => (table, key, None),
                };
                if active.tables[table.index()].insert(key, value).is_none() {
                    active.entries += 1;
                }
            }
            // Hand off when full and the applier is free; while it is busy, keep filling
            // (never wait for it) up to a hard cap, where the writer does wait.
            if active.entries >= self.apply_entries * (MAX_PENDING_ENTRIES / APPLY_ENTRIES) {
                Some(true)
            } else {
                (active.entries >= self.apply_entries).then_some(false)
            }
        };
        let handed = match full {
            Some(true) => self.hand_off(&mut log),
            Some(false) => match self.applier_idle(&mut log) {
                Ok(true) => self.hand_off(&mut log),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        };
        if let Err(e) = handed.and_then(|()| {
            if log.len >= self.checkpoint_bytes {
                self.switch(&mut log)
            } else {
                Ok(())
            }
        }) {
            self.fail();
            return Err(e);
        }
        Ok(seq)
    }

    fn sync(&self, ticket: u64) -> Result<()> {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _one_at_a_time = crate::sync::lock(&self.sync_lock);
        // Someone else's sync may have covered us while we waited.
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        self.check_failed()?;
        // Every record up to `target` is fully written; one fdatasync makes them all durable.
        // Read before the current file: if the writer switched files after writing `target`,
        // the file it left (all records up to `target` not in the new one) was synced first.
        let target = self.written.load(Ordering::SeqCst);
        let file = &self.sync_files[self.current.load(Ordering::SeqCst)];
        if let Err(e) = file.sync_data() {
            self.fail();
            return Err(Error::store("journal sync", e));
        }
        self.durable.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Journaled {
    fn drop(&mut self) {
        let mut log = crate::sync::lock(&self.log);
        if !self.shared.failed.load(Ordering::SeqCst) && log.checkpointed < log.seq {
            // Best effort: a failure here leaves a journal that the next open replays.
            let _ = self.checkpoint_now(&mut log);
        }
        drop(log);
        // Closing the channel ends the applier thread.
        self.to_applier = None;
        if let Some(h) = self.applier.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;

/// Fixed-byte vectors of the journal record (see `tests/vectors.rs` for the other formats): a
/// future build must write and read exactly these bytes.
#[cfg(test)]
mod vectors {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn vector_batch() -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Table::Tokens, b"41VECTABCDEF1111".to_vec(), vec![1, 2, 3]);
        b.delete(Table::Fingerprints, vec![0xaa; 4]);
        b.put(Table::Audit, 1u64.to_be_bytes().to_vec(), b"entry".to_vec());
        b
    }

    /// `PVJ1` ‖ seq (u64 LE) ‖ payload length (u32 LE) ‖ ops ‖ SHA-256(all before)[..16]; an op
    /// is kind (1 put, 2 delete) ‖ table index ‖ key length (u32 LE) ‖ key [‖ value length ‖
    /// value].
    const RECORD: &str = "50564a3107000000000000003e0000000102100000003431564543544142434445463131313103000000010203020304000000aaaaaaaa010508000000000000000000000105000000656e7472792f01788abe02612397b5cb01a892f4d9";

    #[test]
    fn journal_record_is_pinned() {
        let bytes = encode(7, &vector_batch());
        assert_eq!(hex::encode(&bytes), RECORD);
        let mut by_hand = b"PVJ1\x07\0\0\0\0\0\0\0".to_vec();
        by_hand.extend_from_slice(&(bytes.len() as u32 - 32).to_le_bytes());
        by_hand.extend_from_slice(b"\x01\x02\x10\0\0\x0041VECTABCDEF1111\x03\0\0\0\x01\x02\x03");
        by_hand.extend_from_slice(b"\x02\x03\x04\0\0\0\xaa\xaa\xaa\xaa");
        by_hand.extend_from_slice(b"\x01\x05\x08\0\0\0\0\0\0\0\0\0\0\x01\x05\0\0\0entry");
        let digest = Sha256::digest(&by_hand);
        by_hand.extend_from_slice(&digest[..16]);
        assert_eq!(bytes, by_hand);

        let recs = decode(&hex::decode(RECORD).unwrap());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, 7);
        assert_eq!(
            format!("{:?}", recs[0].1.ops()),
            format!("{:?}", vector_batch().ops())
        );
        assert_eq!(decode_seq(&7u64.to_be_bytes()).unwrap(), 7);
        assert_eq!((MAGIC, SEQ_KEY), (b"PVJ1", b"journal_seq".as_slice()));
        assert_eq!(FILE_NAMES, ["journal.log", "journal-1.log"]);
    }
}
