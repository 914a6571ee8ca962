//! The audit chain: the tamper-evident record of every operation on the vault.
//!
//! Every operation appends one [`Entry`] in the same store commit as the data change it
//! describes. Entries are hash-chained: `hash = SHA-256(prev_hash ‖ canonical(entry))`, where
//! the canonical encoding ([`Entry::canonical_bytes`]) is a domain label followed by every field
//! except `hash`, each length-prefixed, so the encoding is unambiguous and independent of JSON
//! formatting. The first entry's `prev_hash` is 32 zero bytes. Entries hold tokens, never PANs.
//!
//! A hash chain alone shows a changed or missing entry in the middle, but not a cut tail, and
//! anyone who can write the store can recompute it. So the chain is also signed, with an
//! HMAC-SHA-256 key that the KEK wraps (`meta/audit_mac_key`, re-wrapped on rotation):
//! - the **signed head** (`meta/audit_head`: last seq, its hash, their MAC) is rewritten in the
//!   same store write as every batch of entries, so a store whose chain ends before (or after)
//!   its head was cut (or extended) by someone else;
//! - every [`CHECKPOINT_EVERY`] entries a **checkpoint entry** (action `audit_checkpoint`)
//!   carries the MAC of the entry before it, so an exported file carries signatures too.
//!
//! Without the keys, `audit verify` checks the links and that the chain ends at the head; with
//! them, it also checks every MAC, which nobody without the KEK can recompute.
//!
//! **At open** ([`check_recent`]) the vault verifies, before it can append or sign anything,
//! the chain from its last checkpoint to its signed head: the checkpoint's MAC vouches for the
//! hash it links to, and from there every entry is re-hashed and re-linked (seq, `prev_hash`,
//! `hash`, the key it is stored under) up to the head, whose MAC must verify. So the work is
//! bounded by [`CHECKPOINT_EVERY`] entries, not by the chain's length. What that covers:
//! - any edit, deletion, insertion or reordering of an entry at or after the last checkpoint,
//!   a cut or extended tail, and a forged head or checkpoint (their MACs need the key);
//! - a chain with no checkpoint yet (under [`CHECKPOINT_EVERY`] entries, or written before the
//!   audit MAC key existed and not yet reaching its first checkpoint) is verified in full, from
//!   entry 1 or from the prune anchor, whose MAC is checked.
//!
//! What it does not cover: an entry *before* the last checkpoint that was altered, deleted or
//! reordered on disk is not looked at when the vault opens. The vault still signs nothing over
//! it: every head it signs chains back through the checkpoint's MAC-verified hash, which the
//! original entries produce and the edited ones do not, so the edit is not laundered and
//! `audit verify` (and the evidence report) still names it. A full verification at every open
//! would cost time linear in the chain's length (seconds per million entries).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::crypto::MacKey;
use crate::store::{Store, Table};
use crate::{Error, Result};

/// The action of a checkpoint entry.
pub const CHECKPOINT: &str = "audit_checkpoint";
/// A checkpoint entry is written at every multiple of this sequence number.
pub const CHECKPOINT_EVERY: u64 = 1000;
/// Where the signed head lives in `meta`.
pub const HEAD_KEY: &[u8] = b"audit_head";
/// Where the chain's signed start lives in `meta` once old entries were pruned: the seq and
/// hash of the last pruned entry.
pub const ANCHOR_KEY: &[u8] = b"audit_anchor";
/// `audit prune` never deletes an entry younger than this (PCI DSS 10.5.1: 12 months).
pub const MIN_RETENTION_DAYS: u64 = 365;

/// Refuses a retention period under [`MIN_RETENTION_DAYS`].
pub fn check_retention(days: u64) -> Result<()> {
    if days < MIN_RETENTION_DAYS {
        return Err(Error::Config(format!(
            "retention_days {days} is under the PCI DSS minimum of {MIN_RETENTION_DAYS} days"
        )));
    }
    Ok(())
}

/// The last entry's seq and hash, and their MAC (hex): proof of where the chain ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// Sequence number of the last entry (of the last pruned entry, for an anchor).
    pub seq: u64,
    /// That entry's chain hash, 64 hex digits.
    pub hash: String,
    /// HMAC-SHA-256 over `seq` and `hash` under the audit MAC key, 64 hex digits.
    pub mac: String,
}

impl SignedHead {
    /// Reads a head or anchor as stored in `meta` (JSON), else [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| Error::Corrupt {
            what: "signed audit head",
        })
    }

    /// Reads the head from `meta`, if there is one.
    pub fn load(store: &dyn Store) -> Result<Option<Self>> {
        Self::load_at(store, HEAD_KEY)
    }

    fn load_at(store: &dyn Store, at: &[u8]) -> Result<Option<Self>> {
        store
            .get(Table::Meta, at)?
            .map(|b| Self::decode(&b))
            .transpose()
    }

    /// Reads the prune anchor from `meta`, if entries were ever pruned.
    pub fn load_anchor(store: &dyn Store) -> Result<Option<Self>> {
        Self::load_at(store, ANCHOR_KEY)
    }

    /// The stored anchor after pruning up to `seq`, whose hash is `hash`.
    pub fn anchor(key: &MacKey, seq: u64, hash: &str) -> Result<Vec<u8>> {
        let h = decode_hash(hash).ok_or(broken(seq, "hash is not 32 bytes of hex"))?;
        serde_json::to_vec(&SignedHead {
            seq,
            hash: hash.to_string(),
            mac: hex::encode(mac_of(key, b"anchor", seq, &h)),
        })
        .map_err(|_| Error::Corrupt {
            what: "audit anchor",
        })
    }
}

/// The MAC of "the chain up to `seq` ends in `hash`", for a head (`what = b"head"`) or a
/// checkpoint (`b"checkpoint"`).
fn mac_of(key: &MacKey, what: &[u8], seq: u64, hash: &[u8; 32]) -> [u8; 32] {
    key.tag(&[b"panvault-audit-v1", what, &seq.to_be_bytes(), hash])
}

/// Checks a hex MAC in constant time.
fn mac_ok(key: &MacKey, what: &[u8], seq: u64, hash: &str, mac: &str) -> bool {
    use subtle::ConstantTimeEq;
    match (decode_hash(hash), hex::decode(mac)) {
        (Some(h), Ok(m)) => mac_of(key, what, seq, &h).ct_eq(&m).into(),
        _ => false,
    }
}

/// `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// What an operation wants recorded; the writer adds `seq`, `time` and the chain hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Who acted: an API key id, or `cli` / `system`.
    pub actor: String,
    /// The merchant group the operation touched, if any.
    pub merchant: Option<String>,
    /// The operation, snake_case (`tokenize`, `kek_rotate`, ...).
    pub action: &'static str,
    /// The token the operation was about, if any; never a PAN.
    pub token: Option<String>,
    /// How it ended, one snake_case word per action: `ok`, `created`, `existing`,
    /// `not_found`, `denied`, ...
    pub outcome: &'static str,
    /// The HTTP request's id (the caller's `X-Request-Id`, or one the server drew); `None`
    /// outside HTTP.
    pub request_id: Option<String>,
    /// The caller's IP address, if the call came over HTTP.
    pub client: Option<String>,
    /// What else an auditor needs, never secret: e.g. the KEK versions of a rotation.
    pub detail: Option<String>,
}

/// One stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When the writer appended it: RFC 3339 UTC, to the second.
    pub time: String,
    /// [`Event::actor`].
    pub actor: String,
    /// [`Event::merchant`].
    pub merchant: Option<String>,
    /// [`Event::action`].
    pub action: String,
    /// [`Event::token`].
    pub token: Option<String>,
    /// [`Event::outcome`].
    pub outcome: String,
    /// [`Event::request_id`].
    pub request_id: Option<String>,
    /// [`Event::client`].
    pub client: Option<String>,
    /// [`Event::detail`]; for a checkpoint entry, `covers seq N; mac=HEX`: the MAC of entry N.
    pub detail: Option<String>,
    /// The previous entry's `hash` (hex of [`GENESIS`] for entry 1).
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and [`Entry::canonical_bytes`], 64 hex digits.
    pub hash: String,
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

impl Entry {
    /// The bytes that are hashed: every field but `hash`, in a fixed order, length-prefixed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"panvault-audit-v1");
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_field(&mut out, Some(self.time.as_bytes()));
        put_field(&mut out, Some(self.actor.as_bytes()));
        put_field(&mut out, self.merchant.as_deref().map(str::as_bytes));
        put_field(&mut out, Some(self.action.as_bytes()));
        put_field(&mut out, self.token.as_deref().map(str::as_bytes));
        put_field(&mut out, Some(self.outcome.as_bytes()));
        put_field(&mut out, self.request_id.as_deref().map(str::as_bytes));
        put_field(&mut out, self.client.as_deref().map(str::as_bytes));
        put_field(&mut out, self.detail.as_deref().map(str::as_bytes));
        put_field(&mut out, Some(self.prev_hash.as_bytes()));
        out
    }

    /// SHA-256(prev_hash ‖ canonical bytes), hex.
    pub fn compute_hash(&self) -> Result<String> {
        let prev = decode_hash(&self.prev_hash).ok_or(Error::AuditBroken {
            seq: self.seq,
            reason: "prev_hash is not 32 bytes of hex",
        })?;
        Ok(hex::encode(self.hash_after(&prev)))
    }

    /// [`Entry::compute_hash`] given `prev_hash` as bytes (the writer keeps the head so).
    fn hash_after(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(self.canonical_bytes());
        h.finalize().into()
    }

    /// The stored form: postcard (compact binary; `audit export` writes JSON). The hash does
    /// not depend on it: it covers [`Entry::canonical_bytes`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|_| Error::Encode {
            what: "audit entry",
        })
    }

    /// Reads the stored form back; trailing bytes or a bad encoding are [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((entry, [])) => Ok(entry),
            _ => Err(Error::Corrupt {
                what: "audit entry",
            }),
        }
    }
}

fn decode_hash(h: &str) -> Option<[u8; 32]> {
    hex::decode(h).ok()?.try_into().ok()
}

/// The store key of entry `seq`: big-endian, so key order is sequence order.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The head of the chain, kept by the single writer, with the key that signs it.
#[derive(Clone, Debug)]
pub struct Chain {
    next_seq: u64,
    last_hash: [u8; 32],
    signer: Option<Arc<MacKey>>,
}

impl Default for Chain {
    /// An empty, unsigned chain: the first entry is 1, after [`GENESIS`].
    fn default() -> Self {
        Chain {
            next_seq: 1,
            last_hash: GENESIS,
            signer: None,
        }
    }
}

impl Chain {
    /// Reads the head from the store (the last entry), or starts a new chain; signed with
    /// `signer` from now on.
    pub fn load(store: &dyn Store, signer: Option<Arc<MacKey>>) -> Result<Self> {
        let mut chain = Chain {
            signer,
            ..Chain::default()
        };
        // The last entry, or where `audit prune` left the chain's start if none is left.
        let last = match store.last(Table::Audit)? {
            Some((_, v)) => {
                let e = Entry::decode(&v)?;
                Some((e.seq, e.hash))
            }
            None => SignedHead::load_anchor(store)?.map(|a| (a.seq, a.hash)),
        };
        if let Some((seq, hash)) = last {
            chain.next_seq = seq.saturating_add(1);
            chain.last_hash =
                decode_hash(&hash).ok_or(broken(seq, "hash is not 32 bytes of hex"))?;
        }
        Ok(chain)
    }

    /// The same chain as the store has it now, with the same key (after a failed write).
    pub fn reload(&self, store: &dyn Store) -> Result<Self> {
        Chain::load(store, self.signer.clone())
    }

    /// Seals `events` as the next entries, with a checkpoint entry wherever one falls due, and
    /// hands each to `put` as (seq, stored bytes).
    pub fn append_all(
        &mut self,
        events: impl IntoIterator<Item = Event>,
        time: &str,
        mut put: impl FnMut(u64, Vec<u8>),
    ) -> Result<()> {
        for ev in events {
            let e = self.append(ev, time.to_string())?;
            put(e.seq, e.encode()?);
            if let Some(cp) = self.checkpoint_due(time)? {
                put(cp.seq, cp.encode()?);
            }
        }
        Ok(())
    }

    /// The checkpoint entry, when the next seq is a multiple of [`CHECKPOINT_EVERY`] and the
    /// chain is signed.
    fn checkpoint_due(&mut self, time: &str) -> Result<Option<Entry>> {
        let Some(key) = &self.signer else {
            return Ok(None);
        };
        if !self.next_seq.is_multiple_of(CHECKPOINT_EVERY) {
            return Ok(None);
        }
        let covers = self.next_seq - 1;
        let mac = hex::encode(mac_of(key, b"checkpoint", covers, &self.last_hash));
        let ev = Event {
            actor: "system".into(),
            action: CHECKPOINT,
            outcome: "ok",
            detail: Some(format!("covers seq {covers}; mac={mac}")),
            ..Event::default()
        };
        self.append(ev, time.to_string()).map(Some)
    }

    /// The signed head's stored bytes, once the chain has an entry and a key.
    pub fn signed_head(&self) -> Option<Vec<u8>> {
        let key = self.signer.as_ref()?;
        let seq = self.next_seq.checked_sub(1).filter(|s| *s > 0)?;
        let head = SignedHead {
            seq,
            hash: hex::encode(self.last_hash),
            mac: hex::encode(mac_of(key, b"head", seq, &self.last_hash)),
        };
        serde_json::to_vec(&head).ok()
    }

    /// Seals `event` as the next entry and advances the head.
    pub fn append(&mut self, event: Event, time: String) -> Result<Entry> {
        let mut e = Entry {
            seq: self.next_seq,
            time,
            actor: event.actor,
            merchant: event.merchant,
            action: event.action.to_string(),
            token: event.token,
            outcome: event.outcome.to_string(),
            request_id: event.request_id,
            client: event.client,
            detail: event.detail,
            prev_hash: hex::encode(self.last_hash),
            hash: String::new(),
        };
        let hash = e.hash_after(&self.last_hash);
        e.hash = hex::encode(hash);
        self.next_seq += 1;
        self.last_hash = hash;
        Ok(e)
    }
}

/// The result of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// How many entries were checked.
    pub entries: u64,
    /// The first entry checked (1 for a store; where an export starts for an export).
    pub first_seq: u64,
    /// The last entry checked (0 for an empty chain).
    pub last_seq: u64,
    /// That entry's hash (hex of [`GENESIS`] for an empty chain).
    pub last_hash: String,
    /// Checkpoint entries met (their MACs checked when `macs_verified`).
    pub checkpoints: u64,
    /// The signed head the chain ends at (for a store, or an export that reached it).
    pub head_seq: Option<u64>,
    /// Whether the MACs of the checkpoints and the head were checked with the vault's key.
    pub macs_verified: bool,
    /// With the key: the last entry whose place in the chain a verified MAC vouches for.
    pub signed_through: Option<u64>,
}

fn broken(seq: u64, reason: &'static str) -> Error {
    Error::AuditBroken { seq, reason }
}

/// Checks one entry against the expected sequence number and previous hash.
pub fn check(entry: &Entry, expect_seq: u64, expect_prev: &str) -> Result<()> {
    if entry.seq != expect_seq {
        return Err(broken(
            expect_seq,
            "sequence number out of order (entry missing or inserted)",
        ));
    }
    if entry.prev_hash != expect_prev {
        return Err(broken(
            expect_seq,
            "prev_hash does not match the previous entry",
        ));
    }
    if entry.compute_hash()? != entry.hash {
        return Err(broken(
            expect_seq,
            "hash does not match the entry's contents",
        ));
    }
    Ok(())
}

/// Walks a chain, or a run of it (an export), entry by entry: links, hashes, and with the key,
/// the MAC of every checkpoint and head.
pub struct Verifier<'k> {
    key: Option<&'k MacKey>,
    /// The seq and prev_hash the next entry must have; unknown before an export's first entry.
    next: Option<(u64, String)>,
    first_seq: Option<u64>,
    entries: u64,
    checkpoints: u64,
    /// A store's head, read before its entries: the entry at its seq must have its hash.
    pin: Option<SignedHead>,
    head_seq: Option<u64>,
    signed_through: Option<u64>,
}

impl<'k> Verifier<'k> {
    /// A chain that starts at entry 1 (a store).
    pub fn from_genesis(key: Option<&'k MacKey>) -> Self {
        Verifier {
            next: Some((1, hex::encode(GENESIS))),
            ..Self::anywhere(key)
        }
    }

    /// A run that may start anywhere (an export): its first entry is taken as the anchor,
    /// unless it is entry 1, which must follow [`GENESIS`].
    pub fn anywhere(key: Option<&'k MacKey>) -> Self {
        Verifier {
            key,
            next: None,
            first_seq: None,
            entries: 0,
            checkpoints: 0,
            pin: None,
            head_seq: None,
            signed_through: None,
        }
    }

    /// Checks the next entry: its seq and link to the one before, its hash, and with the key
    /// a checkpoint's MAC; the first failure is [`Error::AuditBroken`] naming its seq.
    pub fn feed(&mut self, e: &Entry) -> Result<()> {
        // Sequence numbers run from 1; none can be 0 or the last u64 (no successor).
        if e.seq == 0 || e.seq == u64::MAX {
            return Err(broken(e.seq, "sequence number out of range"));
        }
        let (seq, prev) = match self.next.take() {
            Some(next) => next,
            None if e.seq == 1 => (1, hex::encode(GENESIS)),
            None => (e.seq, e.prev_hash.clone()),
        };
        check(e, seq, &prev)?;
        if e.action == CHECKPOINT {
            self.checkpoints += 1;
            if let Some(key) = self.key {
                let mac = e.detail.as_deref().and_then(|d| d.rsplit_once("mac="));
                if !mac.is_some_and(|(_, m)| mac_ok(key, b"checkpoint", seq - 1, &prev, m)) {
                    return Err(broken(seq, "checkpoint MAC does not verify"));
                }
                self.signed_through = Some(seq - 1);
            }
        }
        if let Some(pin) = &self.pin
            && pin.seq == seq
            && pin.hash != e.hash
        {
            return Err(broken(seq, "entry does not match the signed head"));
        }
        self.first_seq.get_or_insert(seq);
        self.entries += 1;
        self.next = Some((seq + 1, e.hash.clone()));
        Ok(())
    }

    fn last(&self) -> (u64, String) {
        match &self.next {
            Some((s, h)) => (s - 1, h.clone()),
            None => (0, hex::encode(GENESIS)),
        }
    }

    /// With the key, an export must end where a MAC vouches for it (its head line, or a
    /// checkpoint): the last MAC covers every entry before it through the hash links, and
    /// entries after it could have been recomputed by anyone.
    pub fn require_signed_end(&self) -> Result<()> {
        let (last, _) = self.last();
        if self.key.is_some() && last > 0 && self.signed_through != Some(last) {
            return Err(broken(
                last,
                "no MAC covers the end of these files (an export must end at its signed head)",
            ));
        }
        Ok(())
    }

    /// A signed head met right after the entries it covers (an export's head line).
    pub fn head_here(&mut self, head: &SignedHead) -> Result<()> {
        let (last, hash) = self.last();
        if head.seq != last || head.hash != hash {
            return Err(broken(
                head.seq,
                "the signed head does not match the entry before it",
            ));
        }
        self.signed_head(head)
    }

    fn signed_head(&mut self, head: &SignedHead) -> Result<()> {
        if let Some(key) = self.key {
            if !mac_ok(key, b"head", head.seq, &head.hash, &head.mac) {
                return Err(broken(head.seq, "signed head MAC does not verify"));
            }
            self.signed_through = Some(head.seq);
        }
        self.head_seq = Some(head.seq);
        Ok(())
    }

    /// What was verified; call it once every entry (and the head, if any) was fed.
    pub fn finish(self) -> Verified {
        let (last_seq, last_hash) = self.last();
        Verified {
            entries: self.entries,
            first_seq: self.first_seq.unwrap_or(0),
            last_seq,
            last_hash,
            checkpoints: self.checkpoints,
            head_seq: self.head_seq,
            macs_verified: self.key.is_some(),
            signed_through: self.signed_through,
        }
    }
}

/// The cheap check at open: the store's chain ends exactly at its signed head, whose MAC
/// verifies. Without it a vault reopened after someone cut or extended the chain on disk would
/// sign the edited chain with its next head.
pub fn check_tail(store: &dyn Store, mac: &MacKey) -> Result<()> {
    let last = match store.last(Table::Audit)? {
        Some((_, v)) => {
            let e = Entry::decode(&v)?;
            Some((e.seq, e.hash))
        }
        None => SignedHead::load_anchor(store)?.map(|a| (a.seq, a.hash)),
    };
    match (SignedHead::load(store)?, last) {
        (None, None) => Ok(()),
        (None, Some((seq, _))) => Err(broken(seq, "no signed head")),
        (Some(_), None) => Err(broken(
            1,
            "entries missing at the tail (the signed head is further on)",
        )),
        (Some(h), Some((seq, hash))) => {
            if seq < h.seq {
                Err(broken(
                    seq.saturating_add(1),
                    "entries missing at the tail (the signed head is further on)",
                ))
            } else if seq > h.seq {
                Err(broken(
                    h.seq.saturating_add(1),
                    "entry after the signed head",
                ))
            } else if hash != h.hash {
                Err(broken(seq, "entry does not match the signed head"))
            } else if !mac_ok(mac, b"head", h.seq, &h.hash, &h.mac) {
                Err(broken(seq, "signed head MAC does not verify"))
            } else {
                Ok(())
            }
        }
    }
}

/// Feeds every stored entry from `start` on to `v`, in order; an entry that cannot be decoded
/// or sits under another seq's key is named by the seq expected there.
fn scan(store: &dyn Store, v: &mut Verifier<'_>, start: u64) -> Result<()> {
    crate::store::for_each(store, Table::Audit, &key(start), |k, bytes| {
        let expect = v.next.as_ref().map_or(start, |n| n.0);
        let entry = Entry::decode(bytes).map_err(|_| broken(expect, "entry cannot be decoded"))?;
        if k != key(entry.seq) {
            return Err(broken(expect, "entry stored under another sequence number"));
        }
        v.feed(&entry)
    })
}

/// The check at open, bounded by the checkpoints (see the module docs for what it covers):
/// [`check_tail`], then every entry from the last checkpoint in the chain to the signed head
/// is re-hashed and re-linked, the checkpoint's MAC and the head's MAC checked. Without a
/// checkpoint (a chain under [`CHECKPOINT_EVERY`] entries long, or one written before the audit
/// MAC key existed) the window starts at the chain's start: entry 1, or the prune anchor,
/// whose MAC is checked. The first failure is [`Error::AuditBroken`] naming its seq.
pub fn check_recent(store: &dyn Store, mac: &MacKey) -> Result<Verified> {
    check_tail(store, mac)?;
    let mut v = Verifier::from_genesis(Some(mac));
    let Some(head) = SignedHead::load(store)? else {
        // `check_tail` let it through: no head and no entry, an empty chain.
        return Ok(v.finish());
    };
    let mut start = 1;
    if let Some(a) = SignedHead::load_anchor(store)? {
        if !mac_ok(mac, b"anchor", a.seq, &a.hash, &a.mac) {
            return Err(broken(
                a.seq.saturating_add(1),
                "prune anchor MAC does not verify",
            ));
        }
        start = a.seq.saturating_add(1);
        v.next = Some((start, a.hash));
    }
    // The last checkpoint entry at or before the head. A seq where one is due but none is (a
    // chain older than its MAC key, or an entry deleted or altered there) moves the window
    // back: it only ever widens what is re-hashed, so an edit there is still found.
    let mut at = head.seq - head.seq % CHECKPOINT_EVERY;
    while at >= start && at > 0 {
        let is_checkpoint = store
            .get(Table::Audit, &key(at))?
            .and_then(|b| Entry::decode(&b).ok())
            .is_some_and(|e| e.seq == at && e.action == CHECKPOINT);
        if is_checkpoint {
            // Its MAC, checked by `feed`, vouches for the hash it links to: the chain before.
            v = Verifier::anywhere(Some(mac));
            start = at;
            break;
        }
        at -= CHECKPOINT_EVERY;
    }
    v.pin = Some(head.clone());
    scan(store, &mut v, start)?;
    let (last, _) = v.last();
    if last < head.seq {
        return Err(broken(
            last.saturating_add(1),
            "entries missing at the tail (the signed head is further on)",
        ));
    }
    if last > head.seq {
        return Err(broken(
            head.seq.saturating_add(1),
            "entry after the signed head",
        ));
    }
    v.signed_head(&head)?;
    Ok(v.finish())
}

/// Recomputes the whole chain from the store; names the first bad entry. The chain must end
/// at the signed head (with `key`, a head whose MAC verifies must exist). `live`: the store
/// is in use, so entries written after the head was read are accepted (chained, not signed).
pub fn verify(store: &dyn Store, mac: Option<&MacKey>, live: bool) -> Result<Verified> {
    // The head first: entries and head land in one store write, so every entry up to the head
    // read here is there when the scan reaches it.
    let head = SignedHead::load(store)?;
    let mut v = Verifier::from_genesis(mac);
    v.pin = head.clone();
    // After `audit prune` the chain starts after its anchor, whose MAC the key checks.
    if let Some(a) = SignedHead::load_anchor(store)? {
        if let Some(key) = mac
            && !mac_ok(key, b"anchor", a.seq, &a.hash, &a.mac)
        {
            return Err(broken(
                a.seq.saturating_add(1),
                "prune anchor MAC does not verify",
            ));
        }
        v.next = Some((a.seq.saturating_add(1), a.hash));
    }
    let start = v.next.as_ref().map_or(1, |n| n.0);
    scan(store, &mut v, start)?;
    let (last, _) = v.last();
    // Live, writes may land after the first read of the head; a second read after the scan
    // covers every entry the scan saw, so nothing may lie beyond it.
    let covering = if live {
        SignedHead::load(store)?.map(|h| h.seq)
    } else {
        head.as_ref().map(|h| h.seq)
    };
    match head {
        Some(h) if last < h.seq => Err(broken(
            last.saturating_add(1),
            "entries missing at the tail (the signed head is further on)",
        )),
        Some(h) if covering.is_some_and(|c| last > c) => Err(broken(
            h.seq.saturating_add(1),
            "entry after the signed head",
        )),
        Some(h) => {
            v.signed_head(&h)?;
            Ok(v.finish())
        }
        None if mac.is_some() && last > 0 => Err(broken(last, "no signed head")),
        None => Ok(v.finish()),
    }
}

/// One line of `audit export`: an entry, or the signed head the export ends at.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// The signed head, written as `{"signed_head": {...}}` after the entries it covers.
    Head {
        /// The head as stored in `meta`.
        signed_head: SignedHead,
    },
    /// An entry, written as the JSON object of its fields.
    Entry(Box<Entry>),
}

/// Feeds the lines of an exported file to `v`.
pub fn verify_export(v: &mut Verifier<'_>, path: &std::path::Path) -> Result<()> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path.display().to_string(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(&line) {
            Ok(ExportLine::Entry(e)) => v.feed(&e)?,
            Ok(ExportLine::Head { signed_head }) => v.head_here(&signed_head)?,
            Err(_) => {
                let next = v.next.as_ref().map_or(0, |n| n.0);
                return Err(broken(
                    next,
                    "line is neither an audit entry nor a signed head",
                ));
            }
        }
    }
    Ok(())
}

/// Entries with `seq >= since`, in order, calling `f` for each.
pub fn for_each_since(
    store: &dyn Store,
    since: u64,
    mut f: impl FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    crate::store::for_each(store, Table::Audit, &key(since), |_, v| {
        f(&Entry::decode(v)?)
    })
}

/// Who is calling, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// API key id, or `cli`/`system`.
    pub actor: String,
    /// The caller's address, when the call came over the network.
    pub client: Option<String>,
    /// The request's `X-Request-Id` (sent or drawn), to find the call in the server log.
    pub request_id: Option<String>,
}

impl Ctx {
    /// The vault acting on its own (start-up, background jobs).
    pub fn system() -> Self {
        Ctx {
            actor: "system".into(),
            ..Ctx::default()
        }
    }

    pub(crate) fn event(
        &self,
        action: &'static str,
        merchant: Option<&str>,
        token: Option<&str>,
        outcome: &'static str,
    ) -> Event {
        Event {
            actor: self.actor.clone(),
            merchant: merchant.map(str::to_string),
            action,
            token: token.map(str::to_string),
            outcome,
            request_id: self.request_id.clone(),
            client: self.client.clone(),
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests;
