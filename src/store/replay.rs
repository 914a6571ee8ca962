//! What an open makes of the journal files: which records the engine lacks, where the journal
//! ends, and what ends it.
//!
//! Each file's current cycle is its run of records with consecutive sequence numbers from
//! offset 0 (what follows is older, or garbage). The runs' records newer than the engine's
//! `journal_seq` (E) are chained by sequence number: E+1, E+2, ... up to L, the last one
//! present. Then every byte after each run is searched for a record that is valid (magic,
//! length and checksum) and numbered above L (a valid record is skipped whole, so a record
//! held inside another one's value is never seen):
//!
//! * none: the journal ends at L. A record at the end of a run that claims number L+1 but does
//!   not check out is a torn last record (the crash came during its write: it was never
//!   acknowledged). It is dropped, counted ([`Recovery::torn_records_dropped`]) and logged
//!   (file, offset, number; never contents), and its file is cut there once the engine holds L
//!   durably, so the next open does not count it again.
//! * some: record L+1 is damaged or missing while newer ones exist: a record in the middle is
//!   bad, and replaying up to L would silently drop every record after it. The open is refused
//!   with [`Error::JournalCorrupt`] (file, offset, the numbers that would be lost), changing
//!   nothing, unless the loss is accepted (`serve --accept-journal-loss`): then L is replayed,
//!   the loss is written to the engine (`meta/journal_loss`, for the vault to audit and clear,
//!   see [`JournalLoss`]) in the same durable checkpoint, and every file is cut at its first
//!   record numbered above L (and the damaged one at the damage), so no record of the lost
//!   numbers can come back when they are used again.
//!
//! A crash in the middle of unsynced writes can, after a power loss (not a process kill),
//! persist a later record without an earlier one: that too is refused, though the records lost
//! were never acknowledged. Refusing is the safe side: only the operator can tell.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::journal::{HEADER, MAGIC, TRAILER, decode_one};
use super::{Table, WriteBatch};
use crate::{Error, Result};

/// Where the engine keeps accepted journal losses not yet in the audit log (a JSON array of
/// [`JournalLoss`]); the vault audits and deletes it at open.
pub const JOURNAL_LOSS_KEY: &[u8] = b"journal_loss";

/// What opening the store found in the journal and did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Torn last records dropped (0 or 1).
    pub torn_records_dropped: u64,
    /// Journal records given up because the loss was accepted.
    pub records_lost: u64,
    /// The accepted loss, if any.
    pub loss: Option<JournalLoss>,
}

/// Journal records given up at an open with `--accept-journal-loss`: where the damage was and
/// which sequence numbers were lost. Names no record contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLoss {
    /// The damaged journal file.
    pub file: String,
    /// Byte offset of the damage in it.
    pub offset: u64,
    /// First sequence number lost.
    pub seq_from: u64,
    /// Last sequence number lost.
    pub seq_to: u64,
}

impl JournalLoss {
    /// How the audit log describes it.
    pub fn describe(&self) -> String {
        format!(
            "journal records {}..={} lost: {} damaged at offset {}; accepted with --accept-journal-loss",
            self.seq_from, self.seq_to, self.file, self.offset
        )
    }
}

/// What [`plan`] decided.
pub(super) struct Plan {
    /// The records the engine lacks, E+1..=L in order.
    pub(super) records: Vec<(u64, WriteBatch)>,
    /// The last sequence number the journal holds (E if none is newer).
    pub(super) last: u64,
    /// Per file: the length to cut it to once the engine holds `last` durably.
    pub(super) cut: [Option<u64>; 2],
    pub(super) recovery: Recovery,
}

/// The magic, sequence number, length and checksum of the record at `pos`: its sequence number
/// and size, if it is valid.
fn valid_at(bytes: &[u8], pos: usize) -> Option<(u64, usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let size = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let end = pos.checked_add(HEADER + size)?;
    let trailer = bytes.get(end..end.checked_add(TRAILER)?)?;
    (Sha256::digest(&bytes[pos..end])[..TRAILER] == *trailer)
        .then_some((seq, HEADER + size + TRAILER))
}

/// The next offset at or after `from` where the magic starts.
fn next_magic(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < bytes.len() {
        let i = at + bytes[at..].iter().position(|&b| b == MAGIC[0])?;
        if bytes[i..].starts_with(MAGIC) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// One file's run: its records from offset 0 with consecutive numbers, and where it stops.
struct Run {
    records: Vec<(u64, usize, WriteBatch)>,
    stop: usize,
}

fn run_of(bytes: &[u8]) -> Run {
    let mut records = Vec::new();
    let mut pos = 0;
    loop {
        let mut rest = &bytes[pos..];
        let Some((seq, batch)) = decode_one(&mut rest) else {
            break;
        };
        if records
            .last()
            .is_some_and(|(prev, _, _): &(u64, usize, WriteBatch)| seq != prev + 1)
        {
            break;
        }
        records.push((seq, pos, batch));
        pos = bytes.len() - rest.len();
    }
    Run { records, stop: pos }
}

/// Decides what an open replays, drops and cuts (see the module docs). `files` are the journal
/// files' contents, `names` their paths (for messages), `engine_seq` the engine's
/// `journal_seq`. Nothing is changed here.
pub(super) fn plan(
    files: [&[u8]; 2],
    names: [&str; 2],
    engine_seq: u64,
    accept_loss: bool,
) -> Result<Plan> {
    let runs = files.map(run_of);
    // The chain E+1..=L from both runs.
    let mut newer = std::collections::BTreeMap::new();
    for (f, run) in runs.iter().enumerate() {
        for (i, (seq, _, _)) in run.records.iter().enumerate() {
            if *seq > engine_seq {
                newer.entry(*seq).or_insert((f, i));
            }
        }
    }
    let mut last = engine_seq;
    while newer.contains_key(&(last + 1)) {
        last += 1;
    }
    // Every valid record numbered above L: (file, offset, seq).
    let mut later: Vec<(usize, usize, u64)> = Vec::new();
    for (f, run) in runs.iter().enumerate() {
        for (seq, offset, _) in &run.records {
            if *seq > last {
                later.push((f, *offset, *seq));
            }
        }
        let mut pos = run.stop;
        while let Some(at) = next_magic(files[f], pos) {
            match valid_at(files[f], at) {
                Some((seq, len)) => {
                    if seq > last {
                        later.push((f, at, seq));
                    }
                    pos = at + len;
                }
                None => pos = at + 1,
            }
        }
    }
    let mut cut = [None, None];
    let mut recovery = Recovery::default();
    if let Some(&(f, offset, _)) = later.iter().min_by_key(|(_, _, seq)| *seq) {
        // Where record L+1 should have been: the end of the run before the first newer record.
        let damage = offset.min(runs[f].stop);
        let seq_to = later.iter().map(|(_, _, s)| *s).max().unwrap_or(last + 1);
        let loss = JournalLoss {
            file: names[f].to_string(),
            offset: damage as u64,
            seq_from: last + 1,
            seq_to,
        };
        if !accept_loss {
            return Err(Error::JournalCorrupt {
                file: loss.file,
                offset: loss.offset,
                seq_from: loss.seq_from,
                seq_to: loss.seq_to,
            });
        }
        for (file, at, _) in &later {
            let c: &mut Option<u64> = &mut cut[*file];
            *c = Some(c.map_or(*at as u64, |c| c.min(*at as u64)));
        }
        cut[f] = Some(cut[f].map_or(damage as u64, |c| c.min(damage as u64)));
        tracing::warn!(
            file = %loss.file,
            offset = loss.offset,
            seq_from = loss.seq_from,
            seq_to = loss.seq_to,
            "journal damaged: the loss of records {}..={} is accepted (--accept-journal-loss); the journal is cut at the damage",
            loss.seq_from,
            loss.seq_to
        );
        recovery.records_lost = loss.seq_to - loss.seq_from + 1;
        recovery.loss = Some(loss);
    } else {
        for (f, run) in runs.iter().enumerate() {
            let at = run.stop;
            let torn = files[f]
                .get(at..at + HEADER)
                .is_some_and(|h| h.starts_with(MAGIC) && h[4..12] == (last + 1).to_le_bytes());
            if torn && recovery.torn_records_dropped == 0 {
                tracing::warn!(
                    file = names[f],
                    offset = at,
                    seq = last + 1,
                    "journal: a torn last record was dropped (written when the process stopped, never acknowledged)"
                );
                recovery.torn_records_dropped = 1;
                cut[f] = Some(at as u64);
            }
        }
    }
    let mut records = Vec::new();
    let mut runs = runs.map(|r| r.records.into_iter().map(Some).collect::<Vec<_>>());
    for seq in engine_seq + 1..=last {
        if let Some(&(f, i)) = newer.get(&seq)
            && let Some((_, _, batch)) = runs[f][i].take()
        {
            records.push((seq, batch));
        }
    }
    Ok(Plan {
        records,
        last,
        cut,
        recovery,
    })
}

/// The accepted losses stored in the engine not yet audited, from `meta/journal_loss`.
pub fn decode_losses(value: &[u8]) -> Result<Vec<JournalLoss>> {
    serde_json::from_slice(value).map_err(|_| Error::Corrupt {
        what: "journal loss record",
    })
}

/// `losses` as stored under `meta/journal_loss`.
pub(super) fn encode_losses(losses: &[JournalLoss]) -> Result<Vec<u8>> {
    serde_json::to_vec(losses).map_err(|_| Error::Encode {
        what: "journal loss record",
    })
}

/// The table holding [`JOURNAL_LOSS_KEY`].
pub(super) const LOSS_TABLE: Table = Table::Meta;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::Backend;
    use super::super::journal::{FILE_NAMES, encode};
    use super::*;

    fn batch(n: u8) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Table::Tokens, vec![n], vec![n; 40]);
        b.put(Table::Audit, vec![0, n], b"entry".to_vec());
        b
    }

    /// Records `from..=to`, each record's offset, and 1 MiB of zeros after them (as the writer
    /// extends its files).
    fn journal(from: u8, to: u8) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for n in from..=to {
            offsets.push(bytes.len());
            bytes.extend(encode(u64::from(n), &batch(n)));
        }
        bytes.resize(bytes.len() + (1 << 20), 0);
        (bytes, offsets)
    }

    fn plan_of(zero: &[u8], one: &[u8], engine: u64, accept: bool) -> Result<Plan> {
        plan([zero, one], ["j0", "j1"], engine, accept)
    }

    fn seqs(p: &Plan) -> Vec<u64> {
        p.records.iter().map(|(s, _)| *s).collect()
    }

    /// Any one bit flipped anywhere in a record that is followed by a good one is refused,
    /// naming the file, the record's offset and the numbers that would be lost; accepted, the
    /// records before it replay and every file is cut at the damage.
    #[test]
    fn a_bad_record_before_a_good_one_is_refused() {
        let (good, at) = journal(1, 6);
        let rec3 = at[2]..at[3];
        for i in rec3.clone() {
            for bit in [0x01u8, 0x80] {
                let mut bytes = good.clone();
                bytes[i] ^= bit;
                let err = plan_of(&bytes, &[], 1, false).err().unwrap();
                let Error::JournalCorrupt {
                    file,
                    offset,
                    seq_from,
                    seq_to,
                } = &err
                else {
                    panic!("byte {i}: {err}");
                };
                assert_eq!(
                    (file.as_str(), *offset, *seq_from, *seq_to),
                    ("j0", at[2] as u64, 3, 6),
                    "byte {i}"
                );
                assert_eq!(err.code(), "journal_corrupt");
                let p = plan_of(&bytes, &[], 1, true).unwrap();
                assert_eq!(seqs(&p), [2], "byte {i}");
                assert_eq!((p.last, p.cut), (2, [Some(at[2] as u64), None]));
                assert_eq!(p.recovery.records_lost, 4);
                assert_eq!(p.recovery.torn_records_dropped, 0);
            }
        }
        // The message says what to do and quotes nothing of the records.
        let mut bytes = good.clone();
        bytes[at[2] + 20] ^= 1;
        let msg = plan_of(&bytes, &[], 0, false).err().unwrap().to_string();
        assert!(msg.contains("--accept-journal-loss"), "{msg}");
        assert!(msg.contains("j0 at offset"), "{msg}");
        assert!(msg.contains("3..=6"), "{msg}");
    }

    /// The last record cut short or altered is a torn tail: dropped, counted, its file cut.
    #[test]
    fn a_torn_last_record_is_dropped_and_counted() {
        let (good, at) = journal(1, 4);
        let end = at[3] + encode(4, &batch(4)).len();
        for cut_at in [at[3] + 17, at[3] + 40, end - 1] {
            let mut bytes = good.clone();
            bytes[cut_at..end].fill(0);
            let p = plan_of(&bytes, &[], 1, false).unwrap();
            assert_eq!(seqs(&p), [2, 3]);
            assert_eq!(p.recovery.torn_records_dropped, 1);
            assert_eq!(p.cut, [Some(at[3] as u64), None]);
        }
        // A journal that simply ends: nothing dropped, nothing cut.
        let p = plan_of(&good, &[], 1, false).unwrap();
        assert_eq!(
            (seqs(&p), p.recovery, p.cut),
            (vec![2, 3, 4], Recovery::default(), [None, None])
        );
    }

    /// Damage the engine no longer needs (its records were checkpointed) is no reason to refuse.
    #[test]
    fn damage_in_checkpointed_records_is_ignored() {
        let (mut old, at) = journal(1, 5);
        old[at[1] + 30] ^= 4;
        let (new, _) = journal(6, 8);
        let p = plan_of(&old, &new, 5, false).unwrap();
        assert_eq!(seqs(&p), [6, 7, 8]);
        assert_eq!(p.recovery, Recovery::default());
    }

    /// After a restart the writer begins again at offset 0 of the first file, so the other one
    /// may still hold a torn record numbered like one written since: not damage.
    #[test]
    fn an_old_torn_record_in_the_other_file_is_not_damage() {
        let (mut one, at) = journal(3, 5);
        let end = at[2] + encode(5, &batch(5)).len();
        one[at[2] + 20..end].fill(0); // torn 5, then the restart wrote 5.. in file 0
        let (zero, _) = journal(5, 9);
        let p = plan_of(&zero, &one, 4, false).unwrap();
        assert_eq!(seqs(&p), [5, 6, 7, 8, 9]);
        assert_eq!(p.recovery, Recovery::default());
    }

    /// The first record of the next file damaged, the rest of it good: refused at its offset 0.
    #[test]
    fn a_bad_first_record_of_the_next_file_is_refused() {
        let (zero, _) = journal(1, 4);
        let (mut one, at) = journal(5, 7);
        one[at[0] + 2] ^= 1;
        let err = plan_of(&zero, &one, 0, false).err().unwrap();
        assert!(
            matches!(&err, Error::JournalCorrupt { file, offset: 0, seq_from: 5, seq_to: 7 } if file == "j1"),
            "{err}"
        );
    }

    /// Through the store: refused and untouched, then opened with the loss accepted (kept in
    /// the engine for the vault to audit), then opened normally with nothing more to report.
    #[test]
    fn an_accepted_loss_is_cut_and_recorded() {
        for backend in [Backend::Redb, Backend::Sled] {
            let dir = tempfile::tempdir().unwrap();
            drop(super::super::open(backend, dir.path()).unwrap());
            let (mut bytes, at) = journal(1, 6);
            bytes[at[3] + 25] ^= 0x10;
            let path = dir.path().join(FILE_NAMES[0]);
            std::fs::write(&path, &bytes).unwrap();
            let err = super::super::open(backend, dir.path()).err().unwrap();
            assert_eq!(err.code(), "journal_corrupt", "{backend}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            super::super::check_journal(backend, dir.path()).unwrap_err();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "a refusal changes nothing"
            );

            let s = super::super::open_with(backend, dir.path(), true).unwrap();
            let rec = s.recovery();
            assert_eq!((rec.records_lost, rec.torn_records_dropped), (3, 0));
            let loss = rec.loss.unwrap();
            assert_eq!(
                (loss.offset, loss.seq_from, loss.seq_to),
                (at[3] as u64, 4, 6)
            );
            for n in 1..=3 {
                assert_eq!(s.get(Table::Tokens, &[n]).unwrap().unwrap(), vec![n; 40]);
            }
            assert_eq!(s.get(Table::Tokens, &[4]).unwrap(), None);
            let stored = s.get(Table::Meta, JOURNAL_LOSS_KEY).unwrap().unwrap();
            assert_eq!(decode_losses(&stored).unwrap(), [loss]);
            // The next numbers are used again; the old records 5 and 6 must never come back.
            let mut b = WriteBatch::new();
            b.put(Table::Tokens, vec![9], b"new".to_vec());
            s.commit(&b).unwrap();
            drop(s);
            super::super::check_journal(backend, dir.path()).unwrap();
            let s = super::super::open(backend, dir.path()).unwrap();
            assert_eq!(s.recovery(), Recovery::default());
            assert_eq!(s.get(Table::Tokens, &[5]).unwrap(), None);
            assert_eq!(s.get(Table::Tokens, &[9]).unwrap().unwrap(), b"new");
        }
    }

    /// Not a test: how long planning takes over two full 64 MiB files of records (the worst
    /// case: every byte after the runs is searched and every stale record's checksum checked).
    #[test]
    #[ignore = "timing; run with --ignored --nocapture"]
    fn time_plan_over_full_files() {
        let value = vec![0x5a; 200];
        let full = |first: u64| {
            let mut bytes = Vec::with_capacity(65 << 20);
            let mut seq = first;
            while bytes.len() < 64 << 20 {
                let mut b = WriteBatch::new();
                for i in 0..32u64 {
                    b.put(Table::Tokens, (seq * 32 + i).to_be_bytes(), value.clone());
                }
                bytes.extend(encode(seq, &b));
                seq += 1;
            }
            (bytes, seq)
        };
        let (zero, next) = full(1);
        let (one, last) = full(next);
        let start = std::time::Instant::now();
        let p = plan_of(&zero, &one, last - 1, false).unwrap();
        println!(
            "plan over 2 x {} MiB, nothing to replay: {:?} ({} records)",
            zero.len() >> 20,
            start.elapsed(),
            last - 1
        );
        assert!(p.records.is_empty());
        // Worst case: one record at the start of each file, 2 x 64 MiB of stale records after.
        let (mut zero, mut one) = (zero, one);
        for (bytes, seq) in [(&mut zero, last), (&mut one, last + 1)] {
            let mut b = WriteBatch::new();
            for i in 0..32u64 {
                b.put(Table::Tokens, (seq * 32 + i).to_be_bytes(), value.clone());
            }
            let rec = encode(seq, &b);
            bytes[..rec.len()].copy_from_slice(&rec);
        }
        let start = std::time::Instant::now();
        let p = plan_of(&zero, &one, last + 1, false).unwrap();
        println!(
            "plan over 2 x 64 MiB of stale records: {:?}",
            start.elapsed()
        );
        assert!(p.records.is_empty());
    }
}
