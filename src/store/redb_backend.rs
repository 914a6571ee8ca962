//! The redb backend (the default): file `dir/panvault.redb`, one redb table per [`Table`].
//!
//! * **Reads** open a read transaction (`begin_read`): an MVCC snapshot of the last commit that
//!   never waits for the writer, so `scan`, `last` and `count` each see one consistent state.
//! * **Commits** run one write transaction per batch with [`Durability::Immediate`] (redb's
//!   default, set explicitly) and redb's default one-phase commit: pages are written with xxhash
//!   checksums, the commit slot is flipped and the file is fsync'd once (`fdatasync`) before
//!   `commit` returns. After a crash redb picks the newest commit slot whose checksums verify.
//!   Two-phase commit (a second fsync) only defends against an attacker who controls both the
//!   data written and the moment of the crash (see `WriteTransaction::set_two_phase_commit`);
//!   the vault writes only values it encrypted and MACed itself, so it keeps the faster default.
//! * **Recovery**: after SIGKILL or power loss, `Database::create` notices the unclean shutdown
//!   and repairs the file (walks the trees, rebuilds the allocator state) before returning. The
//!   repair time grows with the file size; quick-repair would make it instant at the cost of a
//!   second fsync per commit.
//! * After a failed fsync redb refuses further writes (`PreviousIo`) rather than retrying on pages
//!   the kernel may have dropped; reopen the store to recover.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError,
};

use super::journal::SEQ_KEY;
use super::{Backend, Engine, Entry, Table};
use crate::{Error, Result};

/// File name of the database inside the vault directory.
const FILE_NAME: &str = "panvault.redb";

/// Page cache size. redb's default is 1 GiB; 256 MiB holds the hot tables (tokens,
/// fingerprints, DEKs) of a vault with a few million cards, and the rest is served by the OS page
/// cache. It bounds redb's memory, not the file size.
const CACHE_BYTES: usize = 256 * 1024 * 1024;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const fn def(name: &'static str) -> Def {
    TableDefinition::new(name)
}

/// Definitions in [`Table::ALL`] order.
const DEFS: [Def; 8] = [
    def("meta"),
    def("merchants"),
    def("tokens"),
    def("fingerprints"),
    def("deks"),
    def("audit"),
    def("api_keys"),
    def("shops"),
];

/// Holds the journal's sequence number (see `journal.rs`); not one of the vault's tables.
const JOURNAL: Def = def("journal");

fn definition(table: Table) -> Def {
    DEFS[table.index()]
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Whether `dir` holds a non-empty redb file, i.e. a vault stored with this engine.
pub(super) fn exists(dir: &Path) -> bool {
    std::fs::metadata(path(dir)).is_ok_and(|m| m.is_file() && m.len() > 0)
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Read handles on every table, from one read transaction, reused until the next commit: a
/// read then costs a B-tree lookup, not a transaction and a table open (which was half of it).
struct Snapshot {
    generation: u64,
    tables: Vec<ReadTable>,
}

/// A redb-backed engine.
pub(super) struct RedbStore {
    db: Database,
    /// Counts commits; a snapshot from an older generation is replaced before use.
    generation: AtomicU64,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
}

impl RedbStore {
    /// Opens or creates `dir/panvault.redb` with every table, retrying for up to two seconds
    /// while the file is locked; a crashed file is repaired before this returns.
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let db = super::retry_while_locked(
            || Builder::new().set_cache_size(CACHE_BYTES).create(path(dir)),
            |e| matches!(e, redb::DatabaseError::DatabaseAlreadyOpen),
        )
        .map_err(|e| Error::store("open", e))?;
        // Create every table up front so that reads of an empty table find it.
        let mut txn = db.begin_write().map_err(|e| Error::store("open", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Error::store("open", e))?;
        for d in DEFS {
            txn.open_table(d)
                .map_err(|e| Error::store("open_table", e))?;
        }
        txn.commit().map_err(|e| Error::store("open", e))?;
        Ok(Self {
            db,
            generation: AtomicU64::new(0),
            snapshot: RwLock::new(None),
        })
    }

    /// The read handles for the latest commit. The journal makes a write visible in its own
    /// memory until the engine's commit returns, so a snapshot one commit old is never read
    /// for a key that commit changed (see `journal.rs`).
    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(s) = crate::sync::read(&self.snapshot)
            .as_ref()
            .filter(|s| s.generation == generation)
        {
            return Ok(s.clone());
        }
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("begin_read", e))?;
        let tables = DEFS
            .iter()
            .map(|d| txn.open_table(*d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::store("open_table", e))?;
        let s = Arc::new(Snapshot { generation, tables });
        *crate::sync::write(&self.snapshot) = Some(s.clone());
        Ok(s)
    }

    fn read_table(
        &self,
        def: Def,
    ) -> Result<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| Error::store("begin_read", e))?;
        match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            // Created at open; treat a missing table as empty all the same.
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(Error::store("open_table", e)),
        }
    }
}

impl Engine for RedbStore {
    fn backend(&self) -> Backend {
        Backend::Redb
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let snapshot = self.snapshot()?;
        let value = snapshot.tables[table.index()]
            .get(key)
            .map_err(|e| Error::store("get", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let snapshot = self.snapshot()?;
        let t = &snapshot.tables[table.index()];
        let mut out = Vec::new();
        for entry in t.range(start..).map_err(|e| Error::store("scan", e))? {
            let (k, v) = entry.map_err(|e| Error::store("scan", e))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let snapshot = self.snapshot()?;
        let last = snapshot.tables[table.index()]
            .last()
            .map_err(|e| Error::store("last", e))?;
        Ok(last.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
    }

    fn count(&self, table: Table) -> Result<u64> {
        self.snapshot()?.tables[table.index()]
            .len()
            .map_err(|e| Error::store("count", e))
    }

    fn journal_seq(&self) -> Result<u64> {
        let Some(t) = self.read_table(JOURNAL)? else {
            return Ok(0);
        };
        let v = t.get(SEQ_KEY).map_err(|e| Error::store("get", e))?;
        v.map_or(Ok(0), |v| super::journal::decode_seq(v.value()))
    }

    fn apply_unsynced(
        &self,
        entries: &mut dyn Iterator<Item = Entry<'_>>,
        journal_seq: u64,
    ) -> Result<()> {
        self.write(entries, Some(journal_seq), Durability::None)
    }

    /// An empty `Immediate` commit persists every `None` commit before it.
    fn checkpoint(&self) -> Result<()> {
        self.write(&mut std::iter::empty(), None, Durability::Immediate)
    }
}

impl RedbStore {
    /// One write transaction; `journal_seq`, if given, is stored under `meta/journal_seq` in it.
    fn write(
        &self,
        entries: &mut dyn Iterator<Item = Entry<'_>>,
        journal_seq: Option<u64>,
        durability: Durability,
    ) -> Result<()> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| Error::store("begin_write", e))?;
        txn.set_durability(durability)
            .map_err(|e| Error::store("begin_write", e))?;
        {
            // Each table is opened at most once per transaction, on first use. Dropping `tables`
            // at the end of this block closes them before the commit, as redb requires. An error
            // return drops `txn` uncommitted, which aborts it: all or nothing.
            let mut tables: [Option<WriteTable<'_>>; 8] = Default::default();
            for (table, key, value) in entries {
                let t = open_once(&txn, &mut tables, table)?;
                match value {
                    Some(value) => {
                        t.insert(key, value).map_err(|e| Error::store("put", e))?;
                    }
                    None => {
                        t.remove(key).map_err(|e| Error::store("delete", e))?;
                    }
                }
            }
            if let Some(seq) = journal_seq {
                let mut t = txn
                    .open_table(JOURNAL)
                    .map_err(|e| Error::store("open_table", e))?;
                t.insert(SEQ_KEY, seq.to_be_bytes().as_slice())
                    .map_err(|e| Error::store("put", e))?;
            }
        }
        txn.commit().map_err(|e| Error::store("commit", e))?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

type WriteTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// The open handle of `table` in this transaction, opening it on first use.
fn open_once<'s, 't>(
    txn: &'t redb::WriteTransaction,
    tables: &'s mut [Option<WriteTable<'t>>; 8],
    table: Table,
) -> Result<&'s mut WriteTable<'t>> {
    let slot = &mut tables[table.index()];
    match slot {
        Some(t) => Ok(t),
        None => Ok(slot.insert(
            txn.open_table(definition(table))
                .map_err(|e| Error::store("open_table", e))?,
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn table_definitions_match_names() {
        for t in Table::ALL {
            assert_eq!(redb::TableHandle::name(&definition(t)), t.name());
        }
    }

    #[test]
    fn second_open_in_same_process_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert_eq!(err.code(), "store_error");
    }

    #[test]
    fn garbage_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), vec![0x42u8; 8192]).unwrap();
        assert!(RedbStore::open(dir.path()).is_err());
    }
}
