//! Unit tests of the audit chain: links, checkpoints, MACs, and the bounded check at open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn ev(action: &'static str) -> Event {
    Event {
        actor: "key_1".into(),
        merchant: Some("mer_x".into()),
        action,
        token: Some("41XYZWABCDEF1111".into()),
        outcome: "ok",
        request_id: None,
        client: Some("127.0.0.1".into()),
        detail: None,
    }
}

#[test]
fn chain_links_and_detects_changes() {
    let mut c = Chain::default();
    let a = c.append(ev("tokenize"), "t1".into()).unwrap();
    let b = c.append(ev("reveal"), "t2".into()).unwrap();
    assert_eq!(a.seq, 1);
    assert_eq!(b.prev_hash, a.hash);
    check(&a, 1, &hex::encode(GENESIS)).unwrap();
    check(&b, 2, &a.hash).unwrap();
    let mut altered = b.clone();
    altered.outcome = "denied".into();
    assert!(matches!(
        check(&altered, 2, &a.hash),
        Err(Error::AuditBroken { seq: 2, .. })
    ));
    assert!(check(&b, 3, &a.hash).is_err());
    // Round trip through the stored encoding keeps the hash valid.
    check(&Entry::decode(&b.encode().unwrap()).unwrap(), 2, &a.hash).unwrap();
}

fn signed(n: u64) -> (Arc<MacKey>, Chain, Vec<Entry>) {
    let key = Arc::new(MacKey::new(&crate::crypto::SecretKey::random()).unwrap());
    let mut c = Chain {
        signer: Some(key.clone()),
        ..Chain::default()
    };
    let mut out = Vec::new();
    c.append_all((0..n).map(|_| ev("tokenize")), "t", |_, b| {
        out.push(Entry::decode(&b).unwrap());
    })
    .unwrap();
    (key, c, out)
}

fn run(key: Option<&MacKey>, entries: &[Entry]) -> Result<Verified> {
    let mut v = Verifier::anywhere(key);
    entries.iter().try_for_each(|e| v.feed(e))?;
    Ok(v.finish())
}

#[test]
fn checkpoints_fall_every_n_entries_and_verify() {
    let (key, c, all) = signed(2 * CHECKPOINT_EVERY);
    // 2000 events plus the checkpoints at 1000 and 2000.
    assert_eq!(all.len() as u64, 2 * CHECKPOINT_EVERY + 2);
    let cps: Vec<u64> = all
        .iter()
        .filter(|e| e.action == CHECKPOINT)
        .map(|e| e.seq)
        .collect();
    assert_eq!(cps, vec![CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY]);
    let v = run(Some(&key), &all).unwrap();
    assert_eq!((v.checkpoints, v.signed_through), (2, Some(1999)));
    // A run starting mid-chain verifies on its own.
    let v = run(Some(&key), &all[500..]).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (501, 2002));
    // The head signs the last entry.
    let head = SignedHead::decode(&c.signed_head().unwrap()).unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (2002, all[2001].hash.as_str())
    );
    let mut v = Verifier::anywhere(Some(&key));
    all.iter().for_each(|e| v.feed(e).unwrap());
    v.head_here(&head).unwrap();
    assert_eq!(v.finish().signed_through, Some(2002));
}

#[test]
fn a_recomputed_chain_fails_its_macs() {
    let (key, c, mut all) = signed(CHECKPOINT_EVERY + 10);
    // Alter entry 7 and recompute every hash after it, as anyone with the store could.
    all[6].outcome = "denied".into();
    let mut prev = all[5].hash.clone();
    for e in all[6..].iter_mut() {
        e.prev_hash = prev;
        e.hash = e.compute_hash().unwrap();
        prev = e.hash.clone();
    }
    assert!(run(None, &all).is_ok(), "links alone cannot tell");
    let err = run(Some(&key), &all).unwrap_err();
    assert!(
        matches!(err, Error::AuditBroken { seq: 1000, reason } if reason.contains("checkpoint")),
        "{err}"
    );
    // And the old head no longer matches the recomputed last entry; a forged head fails.
    let mut head = SignedHead::decode(&c.signed_head().unwrap()).unwrap();
    let mut v = Verifier::anywhere(None);
    all.iter().for_each(|e| v.feed(e).unwrap());
    assert!(v.head_here(&head).is_err());
    head.hash = prev;
    v.head_here(&head).unwrap();
    let mut v = Verifier::anywhere(Some(&key));
    all[1000..].iter().for_each(|e| v.feed(e).unwrap());
    let err = v.head_here(&head).unwrap_err();
    assert!(err.to_string().contains("signed head MAC"), "{err}");
    // Another vault's key does not verify this one's checkpoints.
    let (_, _, good) = signed(CHECKPOINT_EVERY);
    let other = MacKey::new(&crate::crypto::SecretKey::random()).unwrap();
    assert!(run(Some(&other), &good).is_err());
}

#[test]
fn canonical_encoding_separates_none_from_empty() {
    let mut c = Chain::default();
    let mut e1 = ev("x");
    e1.token = None;
    let mut e2 = ev("x");
    e2.token = Some(String::new());
    let a = c.clone().append(e1, "t".into()).unwrap();
    let b = c.append(e2, "t".into()).unwrap();
    assert_ne!(a.hash, b.hash);
}

/// A redb store holding a signed chain of `n` events (with its checkpoints) and its head.
fn stored(n: u64) -> (tempfile::TempDir, Arc<dyn Store>, Arc<MacKey>, Vec<Entry>) {
    let d = tempfile::tempdir().unwrap();
    let store = crate::store::open(crate::store::Backend::Redb, d.path()).unwrap();
    let (mk, c, all) = signed(n);
    let mut b = crate::store::WriteBatch::new();
    for e in &all {
        b.put(Table::Audit, key(e.seq), e.encode().unwrap());
    }
    b.put(Table::Meta, HEAD_KEY, c.signed_head().unwrap());
    store.commit(&b).unwrap();
    (d, store, mk, all)
}

fn edit(store: &dyn Store, f: impl FnOnce(&mut crate::store::WriteBatch)) {
    let mut b = crate::store::WriteBatch::new();
    f(&mut b);
    store.commit(&b).unwrap();
}

#[track_caller]
fn refused_at(store: &dyn Store, mk: &MacKey, seq: u64, reason: &str) {
    match check_recent(store, mk) {
        Err(Error::AuditBroken { seq: s, reason: r }) => {
            assert_eq!((s, r), (seq, reason));
        }
        other => panic!("want a refusal at {seq}: {other:?}"),
    }
}

#[test]
fn check_recent_reads_from_the_last_checkpoint_to_the_head() {
    // 2,500 events: checkpoints at 1000 and 2000, the head at 2502.
    let (_d, store, mk, all) = stored(2500);
    let v = check_recent(store.as_ref(), &mk).unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.entries), (2000, 2502, 503));
    assert_eq!((v.checkpoints, v.signed_through), (1, Some(2502)));
    // A short chain (no checkpoint yet) is read from entry 1.
    let (_d, short, key2, _) = stored(10);
    let v = check_recent(short.as_ref(), &key2).unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.entries), (1, 10, 10));
    // Another vault's key does not verify it.
    refused_at(
        store.as_ref(),
        &key2,
        2502,
        "signed head MAC does not verify",
    );
    // An entry altered inside the window (hash not recomputed).
    let mut e = all[2099].clone();
    e.outcome = "denied".into();
    edit(store.as_ref(), |b| {
        b.put(Table::Audit, key(2100), e.encode().unwrap())
    });
    refused_at(
        store.as_ref(),
        &mk,
        2100,
        "hash does not match the entry's contents",
    );
}

#[test]
fn check_recent_refuses_deleted_reordered_and_inserted_entries() {
    let (_d, store, mk, _) = stored(2500);
    edit(store.as_ref(), |b| b.delete(Table::Audit, key(2300)));
    refused_at(
        store.as_ref(),
        &mk,
        2300,
        "sequence number out of order (entry missing or inserted)",
    );
    // Two entries swapped on disk.
    let (_d, store, mk, all2) = stored(2500);
    edit(store.as_ref(), |b| {
        b.put(Table::Audit, key(2300), all2[2300].encode().unwrap());
        b.put(Table::Audit, key(2301), all2[2299].encode().unwrap());
    });
    refused_at(
        store.as_ref(),
        &mk,
        2300,
        "entry stored under another sequence number",
    );
    // The checkpoint itself deleted: the window widens to the one before and finds the gap.
    let (_d, store, mk, _) = stored(2500);
    edit(store.as_ref(), |b| b.delete(Table::Audit, key(2000)));
    refused_at(
        store.as_ref(),
        &mk,
        2000,
        "sequence number out of order (entry missing or inserted)",
    );
    // A forged checkpoint (its MAC altered, its hash recomputed) fails its MAC.
    let (_d, store, mk, all3) = stored(2500);
    let mut cp = all3[1999].clone();
    assert_eq!(cp.action, CHECKPOINT);
    cp.detail = Some(format!("covers seq 1999; mac={}", "0".repeat(64)));
    cp.hash = cp.compute_hash().unwrap();
    edit(store.as_ref(), |b| {
        b.put(Table::Audit, key(2000), cp.encode().unwrap())
    });
    refused_at(store.as_ref(), &mk, 2000, "checkpoint MAC does not verify");
}

#[test]
fn check_recent_leaves_entries_before_the_last_checkpoint_to_audit_verify() {
    // The documented bound: an entry before the last checkpoint is not read at open; the
    // full verification names it.
    let (_d, store, mk, all) = stored(2500);
    let mut e = all[1499].clone();
    e.outcome = "denied".into();
    edit(store.as_ref(), |b| {
        b.put(Table::Audit, key(1500), e.encode().unwrap())
    });
    assert_eq!(check_recent(store.as_ref(), &mk).unwrap().first_seq, 2000);
    let err = verify(store.as_ref(), Some(&mk), false).unwrap_err();
    assert!(matches!(err, Error::AuditBroken { seq: 1500, .. }), "{err}");
}

#[test]
fn check_recent_starts_at_a_verified_prune_anchor() {
    let (_d, store, mk, all) = stored(500);
    let anchor = SignedHead::anchor(&mk, 100, &all[99].hash).unwrap();
    edit(store.as_ref(), |b| {
        (1..=100).for_each(|s| b.delete(Table::Audit, key(s)));
        b.put(Table::Meta, ANCHOR_KEY, anchor);
    });
    let v = check_recent(store.as_ref(), &mk).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (101, 500));
    // An anchor moved by hand (its MAC no longer matches) is refused.
    let moved = SignedHead {
        seq: 99,
        ..SignedHead::decode(&SignedHead::anchor(&mk, 100, &all[99].hash).unwrap()).unwrap()
    };
    edit(store.as_ref(), |b| {
        b.put(Table::Meta, ANCHOR_KEY, serde_json::to_vec(&moved).unwrap());
    });
    refused_at(store.as_ref(), &mk, 100, "prune anchor MAC does not verify");
}
