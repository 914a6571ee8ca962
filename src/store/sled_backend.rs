//! The sled backend (selectable, **not** the default): directory `dir/sled`, the default tree,
//! every key prefixed with a one-byte table tag.
//!
//! # Why sled is not the default
//!
//! * sled's last stable release, 0.34.7 (2021), predates its own crash-safety and recovery fixes,
//!   which only exist in the 1.0 alphas (a rewrite with a different on-disk format).
//! * RustSec flags crates it depends on as unmaintained (e.g. `fxhash`, `instant`), with no
//!   patched 0.34 release to pick up replacements.
//! * On Linux, `Tree::flush` does **not** call `fsync`: it writes the log with `pwrite` and then
//!   `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` (`pagecache/iobuf.rs`), which neither
//!   flushes the drive's write cache nor persists the file size. That survives a process crash,
//!   not a power loss. Values over about 128 KiB go to separate files under `blobs/`, written
//!   with no sync at all. This backend closes both gaps itself (see `checkpoint`).
//! * Iterators take sled's internal lock per step, not per scan, so a scan concurrent with
//!   `apply_batch` can see part of a batch. This backend adds its own lock (see below).
//! * sled panics on some internal inconsistencies instead of returning errors.
//!
//! # How the contract is met
//!
//! Commits go through the journal (`journal.rs`); this engine applies each batch with one
//! `apply_batch` (atomic, also for sled's own crash recovery) under a write lock, without a
//! flush. A checkpoint is `flush()` (waits until the log is written out and
//! `sync_file_range`d), then `fdatasync` of the log file `db` through a handle of our own (fsync
//! acts on the inode, so this forces the device cache flush and the file size), then `fsync` of
//! every file in `blobs/` and of the directory itself.
//!
//! Reads take the read side of the same lock, so a `scan` sees all of a batch or none of it.
//! The lock is held only while sled applies the batch in memory, never during a sync.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sled::{Batch, Db, IVec};

use super::journal::SEQ_KEY;
use super::{Backend, Engine, Entry, Table};
use crate::{Error, Result};

/// Name of the sled directory inside the vault directory.
const DIR_NAME: &str = "sled";

/// The on-disk table tag. Part of the format: never renumber.
fn tag(table: Table) -> u8 {
    match table {
        Table::Meta => 1,
        Table::Merchants => 2,
        Table::Tokens => 3,
        Table::Fingerprints => 4,
        Table::Deks => 5,
        Table::Audit => 6,
        Table::ApiKeys => 7,
        Table::Shops => 8,
    }
}

fn tagged(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tag(table));
    k.extend_from_slice(key);
    k
}

/// Key of the journal's sequence number (see `journal.rs`): tag 0, outside every table.
fn journal_key() -> Vec<u8> {
    [&[0u8][..], SEQ_KEY].concat()
}

fn sled_dir(dir: &Path) -> PathBuf {
    dir.join(DIR_NAME)
}

/// Whether `dir` holds a sled database, i.e. a vault stored with this engine.
pub(super) fn exists(dir: &Path) -> bool {
    sled_dir(dir).join("db").is_file()
}

/// A sled-backed [`Store`].
pub(super) struct SledStore {
    db: Db,
    /// Our own handle on sled's log file, for a real `fdatasync`.
    log: File,
    /// sled's blob directory.
    blobs: PathBuf,
    /// Write side held while a batch is applied in memory; read side by every read.
    visibility: RwLock<()>,
}

impl SledStore {
    /// Opens or creates the sled database in `dir/sled`, retrying for up to two seconds
    /// while it is locked.
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let path = sled_dir(dir);
        let db = super::retry_while_locked(
            || sled::Config::new().path(&path).open(),
            |e| e.to_string().contains("could not acquire lock"),
        )
        .map_err(|e| Error::store("open", e))?;
        let log = File::open(path.join("db")).map_err(|e| Error::store("open", e))?;
        // sled creates `db`, `conf` and snapshots without syncing their directory.
        super::sync_dir(&path)?;
        Ok(Self {
            db,
            log,
            blobs: path.join("blobs"),
            visibility: RwLock::new(()),
        })
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a poisoned lock is still a good lock.
        crate::sync::read(&self.visibility)
    }

    /// `fsync` every blob file and the blob directory (sled writes them unsynced).
    fn sync_blobs(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::store("commit", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::store("commit", e))?;
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::store("commit", e))?;
        }
        File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::store("commit", e))
    }
}

fn pair((k, v): (IVec, IVec)) -> (Vec<u8>, Vec<u8>) {
    (k.get(1..).unwrap_or_default().to_vec(), v.to_vec())
}

impl Engine for SledStore {
    fn backend(&self) -> Backend {
        Backend::Sled
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _r = self.read_lock();
        let v = self
            .db
            .get(tagged(table, key))
            .map_err(|e| Error::store("get", e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn scan(&self, table: Table, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lo = tagged(table, start);
        let hi = [tag(table) + 1];
        let _r = self.read_lock();
        let mut out = Vec::new();
        for entry in self.db.range(lo.as_slice()..&hi[..]) {
            out.push(pair(entry.map_err(|e| Error::store("scan", e))?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let _r = self.read_lock();
        match self.db.scan_prefix([tag(table)]).next_back() {
            Some(entry) => Ok(Some(pair(entry.map_err(|e| Error::store("last", e))?))),
            None => Ok(None),
        }
    }

    fn count(&self, table: Table) -> Result<u64> {
        let _r = self.read_lock();
        let mut n = 0u64;
        for key in self.db.scan_prefix([tag(table)]).keys() {
            key.map_err(|e| Error::store("count", e))?;
            n += 1;
        }
        Ok(n)
    }

    fn journal_seq(&self) -> Result<u64> {
        let v = self
            .db
            .get(journal_key())
            .map_err(|e| Error::store("get", e))?;
        v.map_or(Ok(0), |v| super::journal::decode_seq(&v))
    }

    fn apply_unsynced(
        &self,
        entries: &mut dyn Iterator<Item = Entry<'_>>,
        journal_seq: u64,
    ) -> Result<()> {
        let mut b = Batch::default();
        for (table, key, value) in entries {
            match value {
                Some(value) => b.insert(tagged(table, key), value),
                None => b.remove(tagged(table, key)),
            }
        }
        b.insert(journal_key(), &journal_seq.to_be_bytes());
        let _w = crate::sync::write(&self.visibility);
        self.db
            .apply_batch(b)
            .map_err(|e| Error::store("commit", e))
    }

    /// `flush` waits until sled's log is written and `sync_file_range`d, which is not an
    /// fsync on Linux: the `fdatasync` of the log file forces the device cache flush and the
    /// file size, and the blob files (values over ~128 KiB) are synced too.
    fn checkpoint(&self) -> Result<()> {
        self.db.flush().map_err(|e| Error::store("flush", e))?;
        self.log.sync_data().map_err(|e| Error::store("fsync", e))?;
        self.sync_blobs()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn tags_unique_and_nonzero() {
        let mut tags: Vec<u8> = Table::ALL.iter().map(|t| tag(*t)).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), Table::ALL.len());
        assert!(tags.iter().all(|t| *t > 0 && *t < u8::MAX));
    }

    #[test]
    fn second_open_in_same_process_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).err().unwrap();
        assert_eq!(err.code(), "store_error");
    }
}
