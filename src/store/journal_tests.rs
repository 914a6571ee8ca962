//! Unit tests of the journal (`journal.rs`): record encoding, replay, file switches, failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn batch(n: u8) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Table::Tokens, vec![n], vec![n; 40]);
    b.put(Table::Audit, vec![0, n], b"entry".to_vec());
    b.delete(Table::Fingerprints, vec![n, n]);
    b
}

#[test]
fn records_round_trip() {
    let mut bytes = encode(7, &batch(1));
    bytes.extend(encode(8, &batch(2)));
    let recs = decode(&bytes);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].0, 7);
    assert_eq!(
        format!("{:?}", recs[1].1.ops()),
        format!("{:?}", batch(2).ops())
    );
}

#[test]
fn torn_or_altered_tail_is_dropped() {
    let good = encode(1, &batch(1));
    let second = encode(2, &batch(2));
    for cut in 1..second.len() {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&second[..cut]);
        let recs = decode(&bytes);
        assert_eq!(recs.len(), 1, "cut at {cut}");
    }
    for flip in 0..second.len() {
        let mut bytes = good.clone();
        let mut bad = second.clone();
        bad[flip] ^= 0x40;
        bytes.extend_from_slice(&bad);
        assert_eq!(decode(&bytes).len(), 1, "flip at {flip}");
    }
}

/// The key filter of a reopened store is rebuilt from the engine, page by page: every key
/// written before is found, through both lookups, and an unseen key is not.
#[test]
fn key_filter_is_rebuilt_at_open() {
    for backend in [Backend::Redb, Backend::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u32| format!("41XYZW{i:06}1111").into_bytes();
        {
            let s = super::super::open(backend, dir.path()).unwrap();
            let mut b = WriteBatch::new();
            for i in 0..5000 {
                b.put(Table::Tokens, key(i), b"record".to_vec());
                b.put(Table::Fingerprints, i.to_be_bytes().to_vec(), key(i));
            }
            s.commit(&b).unwrap();
        }
        let s = super::super::open(backend, dir.path()).unwrap();
        for i in 0..5000 {
            assert_eq!(s.get(Table::Tokens, &key(i)).unwrap().unwrap(), b"record");
            let st = s
                .get_stamped(Table::Fingerprints, &i.to_be_bytes())
                .unwrap();
            assert_eq!(st.value.unwrap(), key(i), "{backend} {i}");
        }
        assert_eq!(s.get(Table::Tokens, &key(5000)).unwrap(), None);
        assert_eq!(
            s.get_stamped(Table::Tokens, &key(5001)).unwrap().value,
            None
        );
        // Written after open: found at once.
        let mut b = WriteBatch::new();
        b.put(Table::Tokens, key(5000), b"new".to_vec());
        s.commit(&b).unwrap();
        assert_eq!(s.get(Table::Tokens, &key(5000)).unwrap().unwrap(), b"new");
    }
}

fn replay_after_unsynced_apply(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAMES[0]);
    {
        let s = super::super::open(backend, dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put(Table::Meta, b"before".to_vec(), b"x".to_vec());
        s.commit(&b).unwrap();
    } // clean close: checkpointed at seq 1; record 1 stays in the file as stale bytes
    // Records 2 and 3 the engine never saw (as if the process died after the journal sync
    // but before a checkpoint), then a torn record.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut rest = &bytes[..];
    assert_eq!(decode_one(&mut rest).unwrap().0, 1);
    let at = bytes.len() - rest.len();
    let mut tail = encode(2, &batch(2));
    tail.extend(encode(3, &batch(3)));
    tail.extend(b"PVJ1 torn");
    bytes[at..at + tail.len()].copy_from_slice(&tail);
    std::fs::write(&path, &bytes).unwrap();
    let s = super::super::open(backend, dir.path()).unwrap();
    assert_eq!(s.get(Table::Meta, b"before").unwrap().unwrap(), b"x");
    assert_eq!(s.get(Table::Tokens, &[2]).unwrap().unwrap(), vec![2; 40]);
    assert_eq!(s.get(Table::Tokens, &[3]).unwrap().unwrap(), vec![3; 40]);
    // The next commit continues the sequence, written over the old records from offset 0.
    let mut del = WriteBatch::new();
    del.delete(Table::Tokens, vec![2]);
    s.commit(&del).unwrap();
    drop(s);
    // Old records behind the new one must not be replayed (that would bring token 2 back).
    let s = super::super::open(backend, dir.path()).unwrap();
    assert_eq!(s.get(Table::Tokens, &[2]).unwrap(), None);
    assert_eq!(s.get(Table::Tokens, &[3]).unwrap().unwrap(), vec![3; 40]);
    assert_eq!(
        s.count(Table::Meta).unwrap(),
        1,
        "the journal's own key stays hidden"
    );
}

#[test]
fn a_gap_in_the_journal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(super::super::open(Backend::Redb, dir.path()).unwrap());
    let mut bytes = encode(2, &batch(2));
    bytes.extend(encode(3, &batch(3)));
    std::fs::write(dir.path().join(FILE_NAMES[0]), &bytes).unwrap();
    // The engine holds nothing (seq 0) and record 1 is missing: refuse rather than guess.
    let err = super::super::open(Backend::Redb, dir.path()).err().unwrap();
    assert_eq!(err.code(), "journal_corrupt");
}

#[test]
fn replay_redb() {
    replay_after_unsynced_apply(Backend::Redb);
}

#[test]
fn replay_sled() {
    replay_after_unsynced_apply(Backend::Sled);
}

#[test]
fn checkpoints_keep_the_journal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 64 * 1024];
    {
        let s = super::super::open(Backend::Redb, dir.path()).unwrap();
        for n in 0..(3 * CHECKPOINT_BYTES / (64 * 1024)) as u32 {
            let mut b = WriteBatch::new();
            b.put(Table::Tokens, n.to_be_bytes().to_vec(), big.clone());
            s.commit(&b).unwrap();
        }
    }
    // Well over twice CHECKPOINT_BYTES in all: the files were reused, not grown.
    for name in FILE_NAMES {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= CHECKPOINT_BYTES + (2 << 20), "{name}: {len}");
    }
    let s = super::super::open(Backend::Redb, dir.path()).unwrap();
    assert_eq!(
        s.count(Table::Tokens).unwrap(),
        3 * CHECKPOINT_BYTES / (64 * 1024)
    );
}

/// Records of both files newer than the engine are merged by sequence number: here a key
/// put in file 1 (records 2, 3) is deleted by the record after them, at offset 0 of file 0
/// (record 4), so applying the files one after the other would bring it back.
#[test]
fn records_of_both_files_replay_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = super::super::open(Backend::Redb, dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put(Table::Meta, b"before".to_vec(), b"x".to_vec());
        s.commit(&b).unwrap();
    } // clean close: the engine is durable at seq 1
    let mut one = encode(2, &batch(2));
    one.extend(encode(3, &batch(3)));
    std::fs::write(dir.path().join(FILE_NAMES[1]), &one).unwrap();
    let mut del = WriteBatch::new();
    del.delete(Table::Tokens, vec![2]);
    let mut zero = std::fs::read(dir.path().join(FILE_NAMES[0])).unwrap();
    let four = encode(4, &del);
    zero[..four.len()].copy_from_slice(&four);
    std::fs::write(dir.path().join(FILE_NAMES[0]), &zero).unwrap();
    let s = super::super::open(Backend::Redb, dir.path()).unwrap();
    assert_eq!(s.get(Table::Tokens, &[2]).unwrap(), None);
    assert_eq!(s.get(Table::Tokens, &[3]).unwrap().unwrap(), vec![3; 40]);
    assert_eq!(s.get(Table::Meta, b"before").unwrap().unwrap(), b"x");
}

/// Many switches between the files (1 MiB cycles, tables handed to the applier several
/// times a cycle), with deletes across them: every acknowledged write is there after a
/// reopen, both files were used, and every switch found the next file already
/// checkpointed by the applier (the writer never checkpointed itself).
#[test]
fn switching_files_keeps_every_write() {
    const KEYS: u32 = 120_000;
    for backend in [Backend::Redb, Backend::Sled] {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine: Box<dyn Engine> = match backend {
                Backend::Redb => {
                    Box::new(super::super::redb_backend::RedbStore::open(dir.path()).unwrap())
                }
                Backend::Sled => {
                    Box::new(super::super::sled_backend::SledStore::open(dir.path()).unwrap())
                }
            };
            // Tables of 1024 entries, so the writer hands one off at the latest at 8192
            // entries, several times a cycle: each switch's checkpoint rides a hand-off
            // and is done (and collected) by the next switch, whatever the timing.
            let j = Journaled::open_with(engine, dir.path(), 1 << 20, 1024, false).unwrap();
            for r in 0..KEYS / 200 {
                let mut b = WriteBatch::new();
                for n in r * 200..(r + 1) * 200 {
                    b.put(Table::Tokens, n.to_be_bytes().to_vec(), vec![1; 20]);
                    if n % 3 == 0 {
                        b.delete(Table::Tokens, (n / 2).to_be_bytes().to_vec());
                    }
                }
                let t = j.write(b).unwrap();
                j.sync(t).unwrap();
            }
            let sizes = FILE_NAMES.map(|f| std::fs::metadata(dir.path().join(f)).unwrap());
            assert!(sizes.iter().all(|m| m.len() >= 1 << 20), "{backend:?}");
            let log = j.log.lock().unwrap();
            assert!(log.switches >= 4, "{backend:?}: {}", log.switches);
            assert_eq!(log.forced, 0, "{backend:?}");
        }
        let s = super::super::open(backend, dir.path()).unwrap();
        for n in 0..KEYS {
            // Key n is deleted by the batch of key 2n or 2n + 1 (whichever is a multiple
            // of 3), always at or after its own put.
            let deleted = [2 * n, 2 * n + 1].iter().any(|&m| m % 3 == 0 && m < KEYS);
            let got = s.get(Table::Tokens, &n.to_be_bytes()).unwrap();
            assert_eq!(got.is_none(), deleted, "{backend:?} key {n}");
        }
    }
}

/// An engine whose next apply fails (as with a full disk).
struct FailingEngine {
    inner: Box<dyn Engine>,
    fail_next: Arc<AtomicBool>,
}

impl Engine for FailingEngine {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(t, k)
    }
    fn scan(&self, t: Table, s: &[u8], l: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(t, s, l)
    }
    fn last(&self, t: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.last(t)
    }
    fn count(&self, t: Table) -> Result<u64> {
        self.inner.count(t)
    }
    fn journal_seq(&self) -> Result<u64> {
        self.inner.journal_seq()
    }
    fn apply_unsynced(&self, e: &mut dyn Iterator<Item = Entry<'_>>, s: u64) -> Result<()> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            // Late enough that the batch was acknowledged first (a sync does not wait for
            // the engine).
            std::thread::sleep(std::time::Duration::from_millis(300));
            return Err(Error::store("apply", "injected: no space left on device"));
        }
        self.inner.apply_unsynced(e, s)
    }
    fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }
}

/// A failed engine apply must neither lose acknowledged writes nor let later reads or
/// writes move the engine past them: they stay readable, everything after is refused, and
/// the next open replays them from the journal.
#[test]
fn a_failed_apply_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    {
        let engine = Box::new(super::super::redb_backend::RedbStore::open(dir.path()).unwrap());
        let j = Journaled::open(
            Box::new(FailingEngine {
                inner: engine,
                fail_next: fail.clone(),
            }),
            dir.path(),
            false,
        )
        .unwrap();
        let mut b = WriteBatch::new();
        for i in 0..APPLY_ENTRIES as u32 {
            b.put(Table::Tokens, i.to_be_bytes().to_vec(), b"acked".to_vec());
        }
        let ticket = j.write(b).unwrap(); // full: handed to the applier, which fails
        j.sync(ticket).unwrap(); // acknowledged
        let mut late = WriteBatch::new();
        late.put(Table::Meta, b"late".to_vec(), b"x".to_vec());
        // The failure surfaces on the next calls, and repeated calls do not "settle" past it.
        for _ in 0..3 {
            let _ = j.write(late.clone());
            assert!(j.last(Table::Audit).is_err());
            assert_eq!(
                j.get(Table::Tokens, &7u32.to_be_bytes()).unwrap().unwrap(),
                b"acked"
            );
        }
    }
    let s = super::super::open(Backend::Redb, dir.path()).unwrap();
    assert_eq!(s.count(Table::Tokens).unwrap(), APPLY_ENTRIES as u64);
}
