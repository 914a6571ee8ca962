//! The audit chain (contract 7, DESIGN "Data at rest").
//!
//! Every operation appends one [`Entry`] in the same store commit as the data change it
//! describes. Entries are hash-chained: `hash = SHA-256(prev_hash ‖ canonical(entry))`, where
//! the canonical encoding ([`Entry::canonical_bytes`]) is a domain label followed by every field
//! except `hash`, each length-prefixed, so the encoding is unambiguous and independent of JSON
//! formatting. The first entry's `prev_hash` is 32 zero bytes. Entries hold tokens, never PANs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, Table};
use crate::{Error, Result};

/// `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// What an operation wants recorded; the writer adds `seq`, `time` and the chain hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub actor: String,
    pub merchant: Option<String>,
    pub action: &'static str,
    pub token: Option<String>,
    pub outcome: &'static str,
    pub request_id: Option<String>,
    pub client: Option<String>,
    /// What else an auditor needs, never secret: e.g. the KEK versions of a rotation.
    pub detail: Option<String>,
}

/// One stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub merchant: Option<String>,
    pub action: String,
    pub token: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub client: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
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
        postcard::to_stdvec(self).map_err(|_| Error::Corrupt {
            what: "audit entry",
        })
    }

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

/// The head of the chain, kept by the single writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    last_hash: [u8; 32],
}

impl Default for Chain {
    /// An empty chain: the first entry is 1, after [`GENESIS`].
    fn default() -> Self {
        Chain {
            next_seq: 1,
            last_hash: GENESIS,
        }
    }
}

impl Chain {
    /// Reads the head from the store (the last entry), or starts a new chain.
    pub fn load(store: &dyn Store) -> Result<Self> {
        match store.last(Table::Audit)? {
            None => Ok(Chain::default()),
            Some((_, v)) => {
                let e = Entry::decode(&v)?;
                Ok(Chain {
                    next_seq: e.seq + 1,
                    last_hash: decode_hash(&e.hash).ok_or(Error::AuditBroken {
                        seq: e.seq,
                        reason: "hash is not 32 bytes of hex",
                    })?,
                })
            }
        }
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
    pub entries: u64,
    pub last_seq: u64,
    pub last_hash: String,
}

/// Checks one entry against the expected sequence number and previous hash.
pub fn check(entry: &Entry, expect_seq: u64, expect_prev: &str) -> Result<()> {
    let broken = |reason| Error::AuditBroken {
        seq: expect_seq,
        reason,
    };
    if entry.seq != expect_seq {
        return Err(broken(
            "sequence number out of order (entry missing or inserted)",
        ));
    }
    if entry.prev_hash != expect_prev {
        return Err(broken("prev_hash does not match the previous entry"));
    }
    if entry.compute_hash()? != entry.hash {
        return Err(broken("hash does not match the entry's contents"));
    }
    Ok(())
}

/// Recomputes the whole chain from the store; names the first bad entry.
pub fn verify(store: &dyn Store) -> Result<Verified> {
    let mut expect_seq = 1u64;
    let mut prev = hex::encode(GENESIS);
    crate::store::for_each(store, Table::Audit, &key(1), |k, v| {
        let entry = Entry::decode(v).map_err(|_| Error::AuditBroken {
            seq: expect_seq,
            reason: "entry cannot be decoded",
        })?;
        if k != key(entry.seq) {
            return Err(Error::AuditBroken {
                seq: expect_seq,
                reason: "entry stored under another sequence number",
            });
        }
        check(&entry, expect_seq, &prev)?;
        prev = entry.hash;
        expect_seq += 1;
        Ok(())
    })?;
    Ok(Verified {
        entries: expect_seq - 1,
        last_seq: expect_seq - 1,
        last_hash: prev,
    })
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

#[cfg(test)]
mod tests {
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
}
