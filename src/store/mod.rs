//! The storage layer: a narrow ordered key-value interface over eight named tables, with atomic,
//! durable batch commits.
//!
//! Two engines sit behind [`Store`]:
//!
//! * [`Backend::Redb`] (the default): one redb table per [`Table`], file `dir/panvault.redb`.
//!   Reads run on MVCC snapshots and never wait for the writer.
//! * [`Backend::Sled`] (selectable): one sled tree with a one-byte table tag in front of every
//!   key, directory `dir/sled`. See `sled_backend.rs` for why it is not the default.
//!
//! Either way a commit is made durable by the journal (`journal.rs`): one checksummed append
//! and one `fdatasync` per batch, the engine itself being synced only at checkpoints.
//! At open the journal is replayed (`replay.rs`): a torn last record is dropped and reported in
//! [`Store::recovery`]; a damaged record followed by newer ones refuses the open with
//! [`crate::Error::JournalCorrupt`] unless [`open_with`] is told to accept the loss.
//!
//! The vault drives [`Store::commit`] from a single writer thread; readers call the read methods
//! from any thread. Every backend failure is reported as [`crate::Error::Store`] naming the
//! operation that failed.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::{Error, Result};

pub use replay::{JOURNAL_LOSS_KEY, JournalLoss, Recovery, decode_losses};

mod filter;
mod journal;
mod redb_backend;
mod replay;
mod sled_backend;

/// The tables of the vault. The names (redb) and tags (sled) are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Vault-wide values under fixed names: the wrapped MAC keys, the audit head and anchor,
    /// the re-encryption cursor, and each merchant prefix with its merchant id.
    Meta,
    /// Merchant groups by merchant id.
    Merchants,
    /// Card records by token (ciphertext under a DEK, plus the non-secret token info).
    Tokens,
    /// Card fingerprint (keyed HMAC of merchant and PAN) to the card's token.
    Fingerprints,
    /// Wrapped DEKs by DEK id (big-endian `u32`).
    Deks,
    /// Audit entries by sequence number (big-endian `u64`, so key order is chain order).
    Audit,
    /// API key records (scopes, MAC of the secret) by key id.
    ApiKeys,
    /// Shop login to the merchant group it belongs to.
    Shops,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 8] = [
        Table::Meta,
        Table::Merchants,
        Table::Tokens,
        Table::Fingerprints,
        Table::Deks,
        Table::Audit,
        Table::ApiKeys,
        Table::Shops,
    ];

    /// The table's stable name (also its redb table name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Merchants => "merchants",
            Table::Tokens => "tokens",
            Table::Fingerprints => "fingerprints",
            Table::Deks => "deks",
            Table::Audit => "audit",
            Table::ApiKeys => "api_keys",
            Table::Shops => "shops",
        }
    }

    /// Position of the table in [`Table::ALL`], for per-table arrays and on-disk tags.
    pub(crate) fn index(self) -> usize {
        match self {
            Table::Meta => 0,
            Table::Merchants => 1,
            Table::Tokens => 2,
            Table::Fingerprints => 3,
            Table::Deks => 4,
            Table::Audit => 5,
            Table::ApiKeys => 6,
            Table::Shops => 7,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which storage engine holds the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// redb: the default.
    #[default]
    Redb,
    /// sled 0.34.7: selectable, not recommended (see `SECURITY.md`).
    Sled,
}

impl Backend {
    /// The backend's name as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Redb => "redb",
            Backend::Sled => "sled",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "redb" => Ok(Backend::Redb),
            "sled" => Ok(Backend::Sled),
            other => Err(Error::Config(format!(
                "unknown store backend `{other}` (expected `redb` or `sled`)"
            ))),
        }
    }
}

/// One write of a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Insert or overwrite `key` in `table`.
    Put {
        /// The table written to.
        table: Table,
        /// The key, compared as bytes.
        key: Vec<u8>,
        /// The whole new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `table` (no error if absent).
    Delete {
        /// The table written to.
        table: Table,
        /// The key to remove.
        key: Vec<u8>,
    },
}

/// An ordered list of writes committed atomically by [`Store::commit`].
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an insert-or-overwrite.
    pub fn put(&mut self, t: Table, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            table: t,
            key: k.into(),
            value: v.into(),
        });
    }

    /// Queues a removal.
    pub fn delete(&mut self, t: Table, k: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            table: t,
            key: k.into(),
        });
    }

    /// Number of queued ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if no op is queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The queued ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The queued ops, in order, by value.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Drops every queued op, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

/// An ordered key-value store over the [`Table`]s.
///
/// Contract: `commit` applies every op of the batch atomically (all or none, in order, later ops
/// win) and returns Ok only once the batch is durable on disk (fsync'd). Reads never block on a
/// commit in progress. An empty batch is a no-op.
///
/// `commit` is `write` then `sync`. The vault's single writer thread calls the two halves in
/// turn, and writes that arrive during a sync form its next batch: a write is visible to readers
/// as soon as `write` returns, up to one sync before it is durable, and nothing is acknowledged
/// to a caller before `sync` covered it (the writer in `vault`).
///
/// Each read method sees one consistent state of the store (a `scan` never shows part of a
/// batch); two separate calls may see different states.
pub trait Store: Send + Sync + 'static {
    /// Which engine this is.
    fn backend(&self) -> Backend;
    /// The value under `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Entries with key >= start in ascending key order, at most `limit`.
    fn scan(&self, table: Table, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Like [`Store::scan`], but may miss or show stale values for the most recent writes (it
    /// does not wait for writes in flight to reach the engine): for background passes that
    /// re-read each key with [`Store::get`] and catch up later anyway.
    fn scan_recent(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(table, start, limit)
    }
    /// The entry with the greatest key, if any.
    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Number of entries in a table.
    fn count(&self, table: Table) -> Result<u64>;
    /// Applies `batch` atomically and durably (see the trait documentation).
    fn commit(&self, batch: &WriteBatch) -> Result<()> {
        let ticket = self.write(batch.clone())?;
        self.sync(ticket)
    }
    /// Applies `batch` atomically and makes it visible; durable once `sync(ticket)` returns Ok.
    /// Writes are ordered: a ticket's sync covers every write before it.
    fn write(&self, batch: WriteBatch) -> Result<u64>;
    /// Returns once every write up to and including `ticket` is durable.
    fn sync(&self, ticket: u64) -> Result<()>;

    /// A read that the writer can later confirm cheaply with [`Store::reget`]: callers do the
    /// expensive lookup on their own threads, the single writer only checks what changed since.
    fn get_stamped(&self, table: Table, key: &[u8]) -> Result<Stamped> {
        Ok(Stamped {
            value: self.get(table, key)?,
            epoch: None,
        })
    }

    /// The current value of `key`, given an earlier [`Stamped`] read of it. Same answer as
    /// `get`; cheaper when the store can tell nothing relevant changed.
    fn reget(&self, table: Table, key: &[u8], _earlier: &Stamped) -> Result<Option<Vec<u8>>> {
        self.get(table, key)
    }

    /// What opening the store found in its journal: a torn last record dropped, records given
    /// up with `--accept-journal-loss` (see `replay.rs`).
    fn recovery(&self) -> Recovery {
        Recovery::default()
    }
}

/// A value read together with the state it was read from (see [`Store::get_stamped`]).
#[derive(Clone, Debug)]
pub struct Stamped {
    /// What `get` answered: the value, or `None` for no such key.
    pub value: Option<Vec<u8>>,
    /// Store-specific marker of the state read; `None`: always read again.
    pub epoch: Option<u64>,
}

/// One write handed to an engine: table, key, and the value (`None`: delete).
type Entry<'a> = (Table, &'a [u8], Option<&'a [u8]>);

impl Op {
    fn entry(&self) -> Entry<'_> {
        match self {
            Op::Put { table, key, value } => (*table, key, Some(value)),
            Op::Delete { table, key } => (*table, key, None),
        }
    }
}

/// Calls `f` for every entry of `table` with key >= `start`, in key order, a page at a time.
pub fn for_each(
    store: &dyn Store,
    table: Table,
    start: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut start = start.to_vec();
    loop {
        let page = store.scan(table, &start, 1024)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        start.clone_from(last);
        start.push(0);
        for (k, v) in &page {
            f(k, v)?;
        }
    }
}

/// A storage engine under the journal: the read side of [`Store`], plus unsynced atomic
/// batches and an explicit sync point.
trait Engine: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn scan(&self, table: Table, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    fn count(&self, table: Table) -> Result<u64>;
    /// Sequence number of the last journal record applied (0 if none).
    fn journal_seq(&self) -> Result<u64>;
    /// Applies `entries` (`None`: delete) and records `journal_seq` atomically, visible to readers at
    /// once, durable only at the next [`Engine::checkpoint`].
    fn apply_unsynced(
        &self,
        entries: &mut dyn Iterator<Item = Entry<'_>>,
        journal_seq: u64,
    ) -> Result<()>;
    /// Makes everything applied so far durable.
    fn checkpoint(&self) -> Result<()>;
}

/// Opens (creating if absent) the store of `backend` inside directory `dir` (redb: file
/// `dir/panvault.redb`; sled: directory `dir/sled`). `dir` itself is created if missing.
///
/// After a crash (even SIGKILL mid-commit) this recovers the last committed state: redb repairs
/// the file on open, sled replays its log, then the journal replays what the engine lacks.
pub fn open(backend: Backend, dir: &Path) -> Result<Arc<dyn Store>> {
    open_with(backend, dir, false)
}

/// [`open`], and with `accept_journal_loss` a journal damaged in the middle is cut at the
/// damage rather than refused with [`Error::JournalCorrupt`]; the loss is then kept under
/// `meta/`[`JOURNAL_LOSS_KEY`] until the vault audits it.
pub fn open_with(
    backend: Backend,
    dir: &Path,
    accept_journal_loss: bool,
) -> Result<Arc<dyn Store>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let store = Arc::new(journal::Journaled::open(
        open_engine(backend, dir)?,
        dir,
        accept_journal_loss,
    )?);
    restrict_permissions(dir)?;
    // Neither engine fsyncs the directory holding the files it creates: without this, a power
    // loss right after `init` could lose the directory entries themselves.
    sync_dir(dir)?;
    Ok(store)
}

fn open_engine(backend: Backend, dir: &Path) -> Result<Box<dyn Engine>> {
    Ok(match backend {
        Backend::Redb => Box::new(redb_backend::RedbStore::open(dir)?),
        Backend::Sled => Box::new(sled_backend::SledStore::open(dir)?),
    })
}

/// Refuses a store whose journal is damaged in the middle with [`Error::JournalCorrupt`], as
/// [`open`] would, but replays and changes nothing: for a server that starts sealed (the store
/// opens only at unseal), so that it does not start at all.
pub fn check_journal(backend: Backend, dir: &Path) -> Result<()> {
    journal::check(open_engine(backend, dir)?.as_ref(), dir)
}

/// Makes the store's files readable by the owner only (0600, directories 0700): the engines
/// create them with the process umask.
fn restrict_permissions(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::store("permissions", e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::store("permissions", e))?.path();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::store("permissions", e))?;
            let mode = if meta.is_dir() {
                stack.push(path.clone());
                0o700
            } else if meta.is_file() {
                0o600
            } else {
                continue;
            };
            if meta.permissions().mode() & 0o777 != mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::store("permissions", e))?;
            }
        }
    }
    Ok(())
}

/// Runs `open` again for up to two seconds while it fails because the file lock is held.
///
/// Both engines take an exclusive `flock` on their file. A process that forks (to spawn any
/// child) holds a copy of every open descriptor until the child's `exec` closes it, so right
/// after a store is closed in one thread, a fork in another can hold its lock for a moment.
/// A real second opener still gets the error, two seconds later.
fn retry_while_locked<T, E>(
    mut open: impl FnMut() -> std::result::Result<T, E>,
    is_locked: impl Fn(&E) -> bool,
) -> std::result::Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match open() {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `fsync` a directory so that entries created in it are durable (a no-op where directories
/// cannot be opened as files).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::store("sync_dir", e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// True if `dir` already holds a store of this backend.
pub fn exists(backend: Backend, dir: &Path) -> bool {
    match backend {
        Backend::Redb => redb_backend::exists(dir),
        Backend::Sled => sled_backend::exists(dir),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    fn fresh(backend: Backend) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(backend, dir.path()).unwrap();
        assert_eq!(store.backend(), backend);
        (dir, store)
    }

    fn commit_one(store: &dyn Store, f: impl FnOnce(&mut WriteBatch)) {
        let mut b = WriteBatch::new();
        f(&mut b);
        store.commit(&b).unwrap();
    }

    fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    pub(super) fn put_get_delete(backend: Backend) {
        let (_d, s) = fresh(backend);
        for t in Table::ALL {
            assert_eq!(s.get(t, b"k").unwrap(), None);
        }
        commit_one(&*s, |b| b.put(Table::Tokens, "k", "v"));
        assert_eq!(s.get(Table::Tokens, b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.get(Table::Merchants, b"k").unwrap(), None);
        commit_one(&*s, |b| b.delete(Table::Tokens, "k"));
        assert_eq!(s.get(Table::Tokens, b"k").unwrap(), None);
        // Deleting an absent key is fine.
        commit_one(&*s, |b| b.delete(Table::Tokens, "absent"));
        // Empty key and empty value are legal.
        commit_one(&*s, |b| b.put(Table::Meta, Vec::new(), Vec::new()));
        assert_eq!(s.get(Table::Meta, b"").unwrap(), Some(Vec::new()));
    }

    pub(super) fn overwrite(backend: Backend) {
        let (_d, s) = fresh(backend);
        commit_one(&*s, |b| b.put(Table::Deks, "k", "one"));
        commit_one(&*s, |b| b.put(Table::Deks, "k", "two"));
        assert_eq!(s.get(Table::Deks, b"k").unwrap(), Some(b"two".to_vec()));
        assert_eq!(s.count(Table::Deks).unwrap(), 1);
    }

    pub(super) fn batch_in_order(backend: Backend) {
        let (_d, s) = fresh(backend);
        commit_one(&*s, |b| b.put(Table::Tokens, "gone", "x"));
        let mut b = WriteBatch::new();
        b.put(Table::Tokens, "a", "1");
        b.put(Table::Tokens, "a", "2"); // later put wins
        b.put(Table::Tokens, "b", "1");
        b.delete(Table::Tokens, "b"); // delete after put wins
        b.delete(Table::Tokens, "c");
        b.put(Table::Tokens, "c", "3"); // put after delete wins
        b.delete(Table::Tokens, "gone");
        b.put(Table::Audit, "a", "audit");
        assert_eq!(b.len(), 8);
        assert!(!b.is_empty());
        assert!(matches!(
            b.ops()[0],
            Op::Put {
                table: Table::Tokens,
                ..
            }
        ));
        s.commit(&b).unwrap();
        assert_eq!(s.get(Table::Tokens, b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(Table::Tokens, b"b").unwrap(), None);
        assert_eq!(s.get(Table::Tokens, b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get(Table::Tokens, b"gone").unwrap(), None);
        assert_eq!(s.get(Table::Audit, b"a").unwrap(), Some(b"audit".to_vec()));
        assert_eq!(s.count(Table::Tokens).unwrap(), 2);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
    }

    pub(super) fn empty_batch(backend: Backend) {
        let (_d, s) = fresh(backend);
        s.commit(&WriteBatch::new()).unwrap();
        commit_one(&*s, |b| b.put(Table::Meta, "k", "v"));
        s.commit(&WriteBatch::default()).unwrap();
        assert_eq!(s.get(Table::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    }

    pub(super) fn scan_order_bounds_isolation(backend: Backend) {
        let (_d, s) = fresh(backend);
        assert!(s.scan(Table::Tokens, b"", 100).unwrap().is_empty());
        commit_one(&*s, |b| {
            // Inserted out of order; includes keys sharing prefixes and high bytes.
            for k in [&b"b"[..], b"a", b"ab", b"c", b"\xff", b"\x00", b"aa"] {
                b.put(Table::Tokens, k, [b"t:", k].concat());
            }
            // Same keys in neighbouring tables must never leak into a Tokens scan.
            for k in [&b"a"[..], b"b", b"\x00", b"\xff", b"zz"] {
                b.put(Table::Merchants, k, "m");
                b.put(Table::Fingerprints, k, "f");
            }
        });
        let all = s.scan(Table::Tokens, b"", usize::MAX).unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            keys,
            vec![&b"\x00"[..], b"a", b"aa", b"ab", b"b", b"c", b"\xff"]
        );
        for (k, v) in &all {
            assert_eq!(v, &[b"t:", k.as_slice()].concat());
        }
        // Start bound is inclusive, and need not exist.
        let from_ab = s.scan(Table::Tokens, b"ab", 100).unwrap();
        assert_eq!(from_ab.first().unwrap().0, b"ab");
        assert_eq!(from_ab.len(), 4);
        let from_abc = s.scan(Table::Tokens, b"abc", 100).unwrap();
        assert_eq!(from_abc.first().unwrap().0, b"b");
        // Limit.
        assert_eq!(
            s.scan(Table::Tokens, b"a", 2).unwrap(),
            vec![kv(b"a", b"t:a"), kv(b"aa", b"t:aa")]
        );
        assert!(s.scan(Table::Tokens, b"", 0).unwrap().is_empty());
        // Past the end.
        assert!(s.scan(Table::Tokens, b"\xff\x00", 10).unwrap().is_empty());
        // Other tables are isolated in both directions.
        assert_eq!(s.scan(Table::Merchants, b"", 100).unwrap().len(), 5);
        assert_eq!(s.scan(Table::Fingerprints, b"", 100).unwrap().len(), 5);
        assert!(s.scan(Table::Deks, b"", 100).unwrap().is_empty());
        assert!(s.scan(Table::Audit, b"", 100).unwrap().is_empty());
        assert_eq!(s.count(Table::Tokens).unwrap(), 7);
        assert_eq!(s.count(Table::Merchants).unwrap(), 5);
        assert_eq!(s.count(Table::Deks).unwrap(), 0);
    }

    pub(super) fn last_and_count(backend: Backend) {
        let (_d, s) = fresh(backend);
        for t in Table::ALL {
            assert_eq!(s.last(t).unwrap(), None);
            assert_eq!(s.count(t).unwrap(), 0);
        }
        commit_one(&*s, |b| {
            for i in [5u64, 1, 9, 3] {
                b.put(Table::Audit, i.to_be_bytes(), format!("e{i}"));
            }
            // Greater keys in the table right after and right before must not be seen.
            b.put(Table::ApiKeys, [0xffu8; 8], "x");
            b.put(Table::Deks, [0xffu8; 8], "x");
        });
        assert_eq!(
            s.last(Table::Audit).unwrap(),
            Some((9u64.to_be_bytes().to_vec(), b"e9".to_vec()))
        );
        assert_eq!(s.count(Table::Audit).unwrap(), 4);
        commit_one(&*s, |b| b.delete(Table::Audit, 9u64.to_be_bytes()));
        assert_eq!(
            s.last(Table::Audit).unwrap(),
            Some((5u64.to_be_bytes().to_vec(), b"e5".to_vec()))
        );
        assert_eq!(s.count(Table::Audit).unwrap(), 3);
        assert_eq!(s.last(Table::Shops).unwrap(), None);
        assert_eq!(
            s.last(Table::ApiKeys).unwrap(),
            Some((vec![0xff; 8], b"x".to_vec()))
        );
    }

    pub(super) fn survives_reopen(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        assert!(!exists(backend, dir.path()));
        {
            let s = open(backend, dir.path()).unwrap();
            assert!(exists(backend, dir.path()));
            commit_one(&*s, |b| {
                for t in Table::ALL {
                    b.put(t, t.name(), t.name());
                }
                b.put(Table::Tokens, "x", "1");
            });
            commit_one(&*s, |b| b.delete(Table::Tokens, "x"));
        } // dropped without any explicit close
        assert!(exists(backend, dir.path()));
        let s = open(backend, dir.path()).unwrap();
        for t in Table::ALL {
            assert_eq!(
                s.get(t, t.name().as_bytes()).unwrap(),
                Some(t.name().into())
            );
            assert_eq!(s.count(t).unwrap(), 1);
        }
        assert_eq!(s.get(Table::Tokens, b"x").unwrap(), None);
        commit_one(&*s, |b| b.put(Table::Tokens, "after", "reopen"));
        drop(s);
        // Reopen a third time, immediately.
        let s = open(backend, dir.path()).unwrap();
        assert_eq!(
            s.get(Table::Tokens, b"after").unwrap(),
            Some(b"reopen".to_vec())
        );
        // The other backend does not see this directory as its own.
        let other = match backend {
            Backend::Redb => Backend::Sled,
            Backend::Sled => Backend::Redb,
        };
        assert!(!exists(other, dir.path()));
    }

    pub(super) fn reopen_after_drop_in_thread(backend: Backend) {
        // The handle is shared by several threads and the last one to drop it is not the opener.
        let dir = tempfile::tempdir().unwrap();
        let s = open(backend, dir.path()).unwrap();
        commit_one(&*s, |b| b.put(Table::Meta, "version", "1"));
        let clone = Arc::clone(&s);
        drop(s);
        std::thread::spawn(move || {
            assert_eq!(
                clone.get(Table::Meta, b"version").unwrap(),
                Some(b"1".to_vec())
            );
            drop(clone);
        })
        .join()
        .unwrap();
        let s = open(backend, dir.path()).unwrap();
        assert_eq!(s.get(Table::Meta, b"version").unwrap(), Some(b"1".to_vec()));
    }

    pub(super) fn large_values(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
        {
            let s = open(backend, dir.path()).unwrap();
            commit_one(&*s, |b| {
                b.put(Table::Audit, "big1", big.clone());
                b.put(Table::Audit, "big2", big.clone());
                b.put(Table::Audit, "small", "s");
            });
            assert_eq!(s.get(Table::Audit, b"big1").unwrap().unwrap(), big);
            let scanned = s.scan(Table::Audit, b"big2", 1).unwrap();
            assert_eq!(scanned[0].1, big);
        }
        let s = open(backend, dir.path()).unwrap();
        assert_eq!(s.get(Table::Audit, b"big2").unwrap().unwrap(), big);
        assert_eq!(s.count(Table::Audit).unwrap(), 3);
    }

    pub(super) fn readers_never_see_partial_batch(backend: Backend) {
        // More than one sled leaf (sled splits leaves above 16 entries), so a torn scan is possible.
        const KEYS: usize = 40;
        const ROUNDS: u64 = 200;
        let (_d, s) = fresh(backend);
        let key = |i: usize| format!("counter-{i:02}").into_bytes();
        commit_one(&*s, |b| {
            for i in 0..KEYS {
                b.put(Table::Tokens, key(i), 0u64.to_be_bytes());
            }
        });
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) || reads == 0 {
                        let rows = s.scan(Table::Tokens, b"counter-", 100).unwrap();
                        assert_eq!(rows.len(), KEYS, "scan saw a partial batch");
                        let first = rows[0].1.clone();
                        for (_, v) in &rows {
                            assert_eq!(v, &first, "scan saw a partial batch");
                        }
                        let n = u64::from_be_bytes(first.try_into().unwrap());
                        assert!(n >= seen, "went back in time: {n} < {seen}");
                        seen = n;
                        assert_eq!(s.count(Table::Tokens).unwrap(), KEYS as u64);
                        let (k, _) = s.last(Table::Tokens).unwrap().unwrap();
                        assert_eq!(k, key(KEYS - 1));
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut b = WriteBatch::new();
                for n in 1..=ROUNDS {
                    b.clear();
                    // Delete and re-put half of the keys so a torn read would also show up as a
                    // missing row.
                    for i in 0..KEYS {
                        if i % 2 == 0 {
                            b.delete(Table::Tokens, key(i));
                        }
                        b.put(Table::Tokens, key(i), n.to_be_bytes());
                    }
                    s.commit(&b).unwrap();
                }
            })
        };
        writer.join().unwrap();
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        let rows = s.scan(Table::Tokens, b"", 100).unwrap();
        assert!(
            rows.iter()
                .all(|(_, v)| v.as_slice() == ROUNDS.to_be_bytes())
        );
    }

    pub(super) fn exists_before_after(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("not").join("yet");
        assert!(!exists(backend, &sub));
        let s = open(backend, &sub).unwrap();
        assert!(exists(backend, &sub));
        drop(s);
        assert!(exists(backend, &sub));
    }

    const CRASH_DIR: &str = "PANVAULT_STORE_CRASH_DIR";
    const CRASH_BACKEND: &str = "PANVAULT_STORE_CRASH_BACKEND";
    const CRASH_KEYS: usize = 40;

    /// Child side of [`sigkill_recovery`]: commits forever, printing each committed round.
    #[test]
    #[ignore = "helper process for sigkill_recovery"]
    fn crash_child() {
        use std::io::Write;
        let (Some(dir), Some(backend)) =
            (std::env::var_os(CRASH_DIR), std::env::var_os(CRASH_BACKEND))
        else {
            return;
        };
        let backend: Backend = backend.to_str().unwrap().parse().unwrap();
        let s = open(backend, Path::new(&dir)).unwrap();
        let start = s
            .last(Table::Audit)
            .unwrap()
            .map_or(0, |(k, _)| u64::from_be_bytes(k.try_into().unwrap()));
        let mut b = WriteBatch::new();
        let mut out = std::io::stdout().lock();
        for n in start + 1.. {
            b.clear();
            for i in 0..CRASH_KEYS {
                b.put(Table::Tokens, format!("k{i:03}"), n.to_be_bytes());
            }
            b.put(Table::Audit, n.to_be_bytes(), vec![0xa5; 300]);
            s.commit(&b).unwrap();
            writeln!(out, "committed {n}").unwrap();
            out.flush().unwrap();
        }
    }

    /// SIGKILLs a committing child process at some point, twice, and checks that `open`
    /// recovers a state holding every batch the child saw committed, and no partial batch.
    pub(super) fn sigkill_recovery(backend: Backend) {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut last_seen = 0u64;
        for (round, stop_after) in [(0, 40u64), (1, 75)] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::tests::crash_child",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CRASH_DIR, dir.path())
                .env(CRASH_BACKEND, backend.as_str())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut seen_this_round = 0;
            for line in stdout.lines() {
                let line = line.unwrap();
                if let Some(n) = line.strip_prefix("committed ") {
                    let n: u64 = n.parse().unwrap();
                    assert!(n > last_seen);
                    last_seen = n;
                    seen_this_round += 1;
                    if seen_this_round == stop_after {
                        break;
                    }
                }
            }
            assert_eq!(
                seen_this_round, stop_after,
                "child died early in round {round}"
            );
            child.kill().unwrap(); // SIGKILL, likely mid-commit
            child.wait().unwrap();

            let s = open(backend, dir.path()).unwrap();
            let rows = s.scan(Table::Tokens, b"", usize::MAX).unwrap();
            assert_eq!(rows.len(), CRASH_KEYS);
            let v = rows[0].1.clone();
            assert!(
                rows.iter().all(|(_, x)| *x == v),
                "partial batch after crash"
            );
            let n = u64::from_be_bytes(v.try_into().unwrap());
            assert!(
                n >= last_seen,
                "lost committed batch {last_seen} (have {n})"
            );
            let (k, _) = s.last(Table::Audit).unwrap().unwrap();
            assert_eq!(k, n.to_be_bytes());
            assert_eq!(s.count(Table::Audit).unwrap(), n);
            last_seen = n;
        }
    }

    /// Not a test: commits 2,000 batches of 64 puts (`PANVAULT_BENCH_OPS` overrides) of
    /// ~200-byte values under random keys and prints commits/s.
    pub(super) fn bench_commits(backend: Backend) {
        const BATCHES: usize = 2_000;
        // PANVAULT_BENCH_OPS overrides the batch size (default 64).
        let ops_env = std::env::var("PANVAULT_BENCH_OPS").ok();
        let ops: usize = ops_env.map_or(64, |v| v.parse().unwrap());
        // Must be a real disk, not tmpfs, or the fsync costs nothing: set PANVAULT_BENCH_DIR if
        // the system temp dir is a tmpfs.
        let dir = match std::env::var_os("PANVAULT_BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let s = open(backend, dir.path()).unwrap();
        let value = vec![0x5au8; 200];
        let mut b = WriteBatch::new();
        let start = Instant::now();
        for n in 0..BATCHES {
            b.clear();
            for i in 0..ops {
                // Random-ish keys, like HMAC fingerprints and tokens.
                let k = ((n * ops + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                b.put(Table::Tokens, k.to_be_bytes(), value.clone());
            }
            s.commit(&b).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(s.count(Table::Tokens).unwrap(), (BATCHES * ops) as u64);
        println!(
            "{backend}: {BATCHES} commits of {ops} puts in {secs:.2}s = {:.0} commits/s, {:.0} ops/s",
            BATCHES as f64 / secs,
            (BATCHES * ops) as f64 / secs
        );
    }

    macro_rules! conformance {
        ($($backend:ident => $variant:expr),* $(,)?) => {$(
            mod $backend {
                use super::*;
                const B: Backend = $variant;
                #[test] fn put_get_delete() { super::put_get_delete(B) }
                #[test] fn overwrite() { super::overwrite(B) }
                #[test] fn batch_in_order() { super::batch_in_order(B) }
                #[test] fn empty_batch() { super::empty_batch(B) }
                #[test] fn scan_order_bounds_isolation() { super::scan_order_bounds_isolation(B) }
                #[test] fn last_and_count() { super::last_and_count(B) }
                #[test] fn survives_reopen() { super::survives_reopen(B) }
                #[test] fn reopen_after_drop_in_thread() { super::reopen_after_drop_in_thread(B) }
                #[test] fn large_values() { super::large_values(B) }
                #[test] fn readers_never_see_partial_batch() { super::readers_never_see_partial_batch(B) }
                #[test] fn exists_before_after() { super::exists_before_after(B) }
                #[test] fn sigkill_recovery() { super::sigkill_recovery(B) }
                #[test] #[ignore = "benchmark; run with --release -- --ignored --nocapture"]
                fn bench_commits() { super::bench_commits(B) }
            }
        )*};
    }

    conformance!(redb => Backend::Redb, sled => Backend::Sled);

    #[test]
    fn backend_parse_display_default() {
        assert_eq!(Backend::default(), Backend::Redb);
        for b in [Backend::Redb, Backend::Sled] {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        let err = "rocksdb".parse::<Backend>().unwrap_err();
        assert_eq!(err.code(), "invalid_config");
        assert!("REDB".parse::<Backend>().is_err());
    }

    #[test]
    fn table_names_unique_and_indexed() {
        let mut names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Table::ALL.len());
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }
}
