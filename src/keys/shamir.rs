//! The `shamir` key source: split knowledge of the KEK among N custodians, any M of whom unseal.
//!
//! What is shared is not the KEK itself but a uniformly random P-256 scalar `s` (an arbitrary
//! 32-byte key is not always a scalar, since the group order n < 2^256). Sharing is Feldman VSS
//! (vsss-rs 6): besides the N shares, the split publishes the verifier set
//! `[G, s*G, a1*G, .., a(M-1)*G]` (M+1 compressed points), kept in the keyring, against which every
//! share can be checked on its own before it is used. The 32-byte AES-256 custody key is
//! `HKDF-SHA256(ikm = s, info = "panvault/shamir-custody-key/v1")`; it seals every KEK version
//! exactly as the argon2id key of the `file` source does (AES-256-GCM, AAD names the version and
//! the source), so KEK rotation needs no new shares.
//!
//! A share is printed as `pvshare1-<id>-<64 hex>`: `id` is the custodian number 1..=N (the
//! x-coordinate), the hex is the 32-byte big-endian share value. A typo, a tampered value or a
//! value under the wrong id all fail the Feldman check.
//!
//! Refusals never echo a share value: they name the share by position and id only.

use std::collections::BTreeSet;

use getrandom::SysRng;
use getrandom::rand_core::UnwrapErr;
use hkdf::Hkdf;
use p256::elliptic_curve::group::{Group, GroupEncoding};
use p256::elliptic_curve::{Field, PrimeField};
use p256::{ProjectivePoint, Scalar};
use sha2::Sha256;
use vsss_rs::{
    FeldmanVerifierSet, IdentifierPrimeField, ParticipantIdGenerator, PrimeFieldShare,
    ReadableShareSet, ShareElement, ShareVerifierGroup, feldman,
};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{SecretKey, SecretString};
use crate::{Error, Result};

/// One share: identifier (x) and value (y), both P-256 scalars.
type KekShare = PrimeFieldShare<Scalar>;
/// One Feldman commitment (a P-256 point).
type Verifier = ShareVerifierGroup<ProjectivePoint>;

/// Prefix of every share string (format version 1).
pub const SHARE_PREFIX: &str = "pvshare1";
/// HKDF info of the custody key.
const HKDF_INFO: &[u8] = b"panvault/shamir-custody-key/v1";
/// Smallest threshold: one share alone must never unseal (that would not be split knowledge).
pub const MIN_THRESHOLD: usize = 2;
/// Most shares: ids are 1..=255 (one byte in the share string).
pub const MAX_SHARES: usize = 255;

/// Checks `--threshold M --shares N`: 2 <= M <= N <= 255.
pub fn check_params(threshold: usize, shares: usize) -> Result<()> {
    if !(MIN_THRESHOLD..=MAX_SHARES).contains(&threshold) {
        return Err(Error::Config(format!(
            "--threshold must be between {MIN_THRESHOLD} and {MAX_SHARES} (got {threshold})"
        )));
    }
    if !(MIN_THRESHOLD..=MAX_SHARES).contains(&shares) {
        return Err(Error::Config(format!(
            "--shares must be between {MIN_THRESHOLD} and {MAX_SHARES} (got {shares})"
        )));
    }
    if threshold > shares {
        return Err(Error::Config(format!(
            "--threshold ({threshold}) cannot exceed --shares ({shares})"
        )));
    }
    Ok(())
}

/// What a split produces.
pub(crate) struct Split {
    /// The custody key derived from the shared scalar (the scalar itself is already wiped).
    pub custody_key: SecretKey,
    /// One share string per custodian, in id order 1..=N.
    pub shares: Vec<SecretString>,
    /// The public Feldman verifier set, hex of compressed SEC1 points.
    pub verifiers: Vec<String>,
}

/// Splits a fresh random scalar `threshold`-of-`count`.
pub(crate) fn split(threshold: usize, count: usize) -> Result<Split> {
    check_params(threshold, count)?;
    let mut rng = UnwrapErr(SysRng);
    let mut secret = IdentifierPrimeField(Scalar::random(&mut rng));
    // Sequential ids 1..=count, explicitly, so the share format never depends on a default.
    let ids = [ParticipantIdGenerator::Sequential {
        start: IdentifierPrimeField(Scalar::ONE),
        increment: IdentifierPrimeField(Scalar::ONE),
        count,
    }];
    let split = feldman::split_secret_with_participant_generators::<KekShare, Verifier>(
        threshold, count, &secret, None, &mut rng, &ids,
    );
    let custody_key = custody_key(&secret);
    secret.zeroize();
    let custody_key = custody_key?;
    let (mut shares, verifiers) =
        split.map_err(|_| Error::Config("splitting the key into shares failed".into()))?;
    let strings = shares.iter().map(encode_share).collect::<Result<Vec<_>>>();
    shares.iter_mut().for_each(Zeroize::zeroize);
    Ok(Split {
        custody_key,
        shares: strings?,
        verifiers: verifiers
            .iter()
            .map(|v| hex::encode(v.0.to_bytes()))
            .collect(),
    })
}

/// The AES-256 custody key: HKDF-SHA256 of the scalar's 32 big-endian bytes.
fn custody_key(secret: &IdentifierPrimeField<Scalar>) -> Result<SecretKey> {
    let repr = Zeroizing::new(secret.0.to_repr());
    let mut okm = Zeroizing::new([0u8; 32]);
    // expand() fails only for outputs longer than 255 * 32 bytes; 32 bytes cannot fail.
    let _ = Hkdf::<Sha256>::new(None, repr.as_slice()).expand(HKDF_INFO, okm.as_mut_slice());
    SecretKey::from_slice(okm.as_slice())
}

/// `pvshare1-<id>-<64 hex>`.
fn encode_share(share: &KekShare) -> Result<SecretString> {
    let id = (1..=MAX_SHARES as u64)
        .find(|&i| share.identifier.0 == Scalar::from(i))
        .ok_or_else(|| Error::Config("share identifier out of range".into()))?;
    let value = Zeroizing::new(share.value.serialize());
    let hexv = Zeroizing::new(hex::encode(value.as_slice()));
    Ok(SecretString::new(format!(
        "{SHARE_PREFIX}-{id}-{}",
        hexv.as_str()
    )))
}

/// One parsed share. The value is wiped on drop; Debug shows only the id.
pub struct Share {
    id: u8,
    inner: KekShare,
}

impl Share {
    /// The custodian number (1..=255).
    pub fn id(&self) -> u8 {
        self.id
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.inner.zeroize();
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share {{ id: {}, value: [REDACTED] }}", self.id)
    }
}

fn malformed(what: &str) -> Error {
    Error::ShareRefused(format!(
        "malformed share ({what}); expected {SHARE_PREFIX}-<custodian number>-<64 hex digits>"
    ))
}

/// Parses a share string (surrounding whitespace ignored). Never echoes the value.
pub fn parse_share(text: &str) -> Result<Share> {
    let mut parts = text.trim().splitn(3, '-');
    if parts.next() != Some(SHARE_PREFIX) {
        return Err(malformed("wrong prefix"));
    }
    let id_text = parts
        .next()
        .ok_or_else(|| malformed("no custodian number"))?;
    let id: u8 = id_text
        .parse()
        .ok()
        .filter(|&i| i >= 1 && id_text.len() <= 3 && id_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| malformed("custodian number must be 1 to 255"))?;
    let hexv = parts.next().ok_or_else(|| malformed("no value"))?;
    if hexv.len() != 64 {
        return Err(malformed("value must be 64 hex digits"));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hexv, raw.as_mut_slice())
        .map_err(|_| malformed("value is not hexadecimal"))?;
    // from_slice refuses a non-canonical scalar (>= n).
    let value = IdentifierPrimeField::<Scalar>::from_slice(raw.as_slice())
        .map_err(|_| malformed("value out of range"))?;
    Ok(Share {
        id,
        inner: KekShare {
            identifier: IdentifierPrimeField(Scalar::from(u64::from(id))),
            value,
        },
    })
}

/// The public Feldman verifier set of a keyring, checked for shape.
#[derive(Clone)]
pub struct Verifiers(Vec<Verifier>);

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifiers {{ threshold: {} }}", self.threshold())
    }
}

impl Verifiers {
    /// Parses hex compressed points. Element 0 must be the P-256 base point, no element may be
    /// the identity, and the set must match the threshold the keyring states (M+1 points): a
    /// forged or truncated set is refused here rather than accepting wrong shares.
    pub fn from_hex(hexes: &[String], threshold: usize) -> Result<Self> {
        let bad = || Error::KeyUnlock("key file is malformed (shamir verifier set)");
        if threshold < MIN_THRESHOLD || hexes.len() != threshold + 1 {
            return Err(bad());
        }
        let mut vs = Vec::with_capacity(hexes.len());
        for h in hexes {
            let raw = hex::decode(h).map_err(|_| bad())?;
            vs.push(Verifier::from_slice(&raw).map_err(|_| bad())?);
        }
        if vs.first().map(|g| g.0) != Some(ProjectivePoint::GENERATOR) {
            return Err(bad());
        }
        if vs.iter().any(|v| bool::from(v.0.is_identity())) {
            return Err(bad());
        }
        Ok(Verifiers(vs))
    }

    /// M: how many distinct valid shares unseal.
    pub fn threshold(&self) -> usize {
        self.0.len().saturating_sub(1)
    }

    /// Feldman check of one share.
    pub fn check(&self, share: &Share) -> Result<()> {
        self.0.verify_share(&share.inner).map_err(|_| {
            Error::ShareRefused(format!(
                "share for custodian {} does not match this vault's keyring (mistyped, \
                 altered, or from another vault)",
                share.id
            ))
        })
    }
}

/// Progress of an unseal: `received` distinct valid shares of `threshold` needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Distinct shares accepted so far.
    pub received: usize,
    /// Shares needed (M of the keyring's M of N).
    pub threshold: usize,
}

impl Progress {
    /// Whether enough shares are in to rebuild the custody key.
    pub fn complete(&self) -> bool {
        self.received >= self.threshold
    }
}

/// Collects custodian shares one at a time (the unseal flow): each share is parsed and
/// Feldman-checked on arrival; a malformed, wrong or repeated share is refused at once and does
/// not count. Once `threshold` shares are in, [`crate::keys::load`] combines them into the
/// custody key.
///
/// ```text
/// let mut c = keys::share_collector(data_dir)?;      // reads the keyring's verifier set
/// c.add(share_text)? -> Progress { received, threshold }
/// if progress.complete() { keys::load(data_dir, &Unlock::Collected(c))? }
/// ```
#[derive(Debug)]
pub struct ShareCollector {
    verifiers: Verifiers,
    shares: Vec<Share>,
    ids: BTreeSet<u8>,
}

impl ShareCollector {
    /// An empty collector that checks each share against `verifiers`, the keyring's published
    /// Feldman verifier set.
    pub fn new(verifiers: Verifiers) -> Self {
        ShareCollector {
            verifiers,
            shares: Vec::new(),
            ids: BTreeSet::new(),
        }
    }

    /// How many shares are in and how many are needed, without adding one.
    pub fn progress(&self) -> Progress {
        Progress {
            received: self.shares.len(),
            threshold: self.verifiers.threshold(),
        }
    }

    /// Parses, checks and keeps one share. Refusals leave the collector unchanged.
    pub fn add(&mut self, text: &str) -> Result<Progress> {
        let share = parse_share(text)?;
        if self.ids.contains(&share.id) {
            return Err(Error::ShareRefused(format!(
                "custodian {}'s share was already given; a repeated share does not count",
                share.id
            )));
        }
        self.verifiers.check(&share)?;
        self.ids.insert(share.id);
        self.shares.push(share);
        Ok(self.progress())
    }

    /// Combines the shares into the custody key. Refuses fewer than `threshold` shares (vsss-rs
    /// would interpolate them into a wrong value without complaint) and checks the result
    /// against the commitment `s*G` before it is used.
    pub(crate) fn custody_key(&self) -> Result<SecretKey> {
        let p = self.progress();
        if !p.complete() {
            return Err(Error::NotEnoughShares {
                have: p.received,
                need: p.threshold,
            });
        }
        let mut inner: Vec<KekShare> = self.shares.iter().map(|s| s.inner).collect();
        let combined = inner.combine();
        inner.iter_mut().for_each(Zeroize::zeroize);
        let mut secret: IdentifierPrimeField<Scalar> =
            combined.map_err(|_| Error::KeyUnlock("combining the shares failed"))?;
        let ok = self
            .verifiers
            .0
            .get(1)
            .is_some_and(|c0| ProjectivePoint::GENERATOR * secret.0 == c0.0);
        let key = custody_key(&secret);
        secret.zeroize();
        let key = key?;
        if !ok {
            return Err(Error::KeyUnlock(
                "the shares do not combine to this vault's key",
            ));
        }
        Ok(key)
    }
}

/// Checks a whole list of shares (a shares file): every share is named by its position (1-based)
/// if refused; a wrong or repeated share fails the list, too few distinct shares fail it.
pub(crate) fn collect_all(verifiers: Verifiers, texts: &[SecretString]) -> Result<ShareCollector> {
    let mut c = ShareCollector::new(verifiers);
    for (i, t) in texts.iter().enumerate() {
        c.add(t.expose()).map_err(|e| match e {
            Error::ShareRefused(why) => Error::ShareRefused(format!("share #{}: {why}", i + 1)),
            other => other,
        })?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn setup(m: usize, n: usize) -> (SecretKey, Vec<String>, Verifiers) {
        let sp = split(m, n).unwrap();
        let vs = Verifiers::from_hex(&sp.verifiers, m).unwrap();
        let shares = sp.shares.iter().map(|s| s.expose().to_string()).collect();
        (sp.custody_key, shares, vs)
    }

    fn combine(vs: &Verifiers, shares: &[&String]) -> Result<SecretKey> {
        let texts: Vec<SecretString> = shares
            .iter()
            .map(|s| SecretString::new((*s).clone()))
            .collect();
        collect_all(vs.clone(), &texts)?.custody_key()
    }

    fn refused(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(e @ Error::ShareRefused(_)) => e.to_string(),
            other => panic!("want ShareRefused, got {other:?}"),
        }
    }

    /// Every k-subset of 0..n.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << n))
            .filter(|b| b.count_ones() as usize == k)
            .map(|b| (0..n).filter(|i| b & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn every_m_subset_combines_2_of_3_and_3_of_5() {
        for (m, n) in [(2, 3), (3, 5)] {
            let (key, shares, vs) = setup(m, n);
            assert_eq!(vs.threshold(), m);
            assert_eq!(shares.len(), n);
            for (i, s) in shares.iter().enumerate() {
                assert!(s.starts_with(&format!("pvshare1-{}-", i + 1)), "{s}");
                let p = parse_share(s).unwrap();
                assert_eq!(usize::from(p.id()), i + 1);
                vs.check(&p).unwrap();
            }
            for k in m..=n {
                for set in subsets(n, k) {
                    let pick: Vec<&String> = set.iter().map(|&i| &shares[i]).collect();
                    assert_eq!(combine(&vs, &pick).unwrap().expose(), key.expose());
                }
            }
            // Too few: every (m-1)-subset is refused, never interpolated into a wrong key.
            for set in subsets(n, m - 1) {
                let pick: Vec<&String> = set.iter().map(|&i| &shares[i]).collect();
                assert!(matches!(
                    combine(&vs, &pick),
                    Err(Error::NotEnoughShares { have, need }) if have == m - 1 && need == m
                ));
            }
        }
    }

    #[test]
    fn wrong_share_is_refused_by_position_and_id_and_does_not_count() {
        let (key, shares, vs) = setup(3, 5);
        let mut bad = shares[1].clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        let msg = refused(combine(&vs, &[&shares[0], &bad, &shares[2]]));
        assert!(
            msg.contains("share #2") && msg.contains("custodian 2"),
            "{msg}"
        );
        assert!(!msg.contains(&bad[11..]), "never echo the value: {msg}");
        // A right value presented under another id is refused too.
        let relabeled = shares[1].replacen("pvshare1-2-", "pvshare1-4-", 1);
        assert!(refused(vs.check(&parse_share(&relabeled).unwrap()).map(|_| ())).contains("4"));
        // In a collector a wrong share does not count: progress stays, the next good ones unseal.
        let mut c = ShareCollector::new(vs.clone());
        c.add(&shares[0]).unwrap();
        refused(c.add(&bad));
        assert_eq!(c.progress().received, 1);
        c.add(&shares[2]).unwrap();
        assert!(matches!(
            c.custody_key(),
            Err(Error::NotEnoughShares { have: 2, need: 3 })
        ));
        let p = c.add(&shares[4]).unwrap();
        assert!(p.complete());
        assert_eq!(c.custody_key().unwrap().expose(), key.expose());
        // A share from another split (another vault) is refused.
        let (_, other, _) = setup(3, 5);
        refused(ShareCollector::new(vs).add(&other[0]));
    }

    #[test]
    fn repeated_share_is_refused_and_does_not_count() {
        let (_, shares, vs) = setup(2, 3);
        let msg = refused(combine(&vs, &[&shares[0], &shares[0]]));
        assert!(
            msg.contains("share #2") && msg.contains("already given"),
            "{msg}"
        );
        let mut c = ShareCollector::new(vs);
        assert_eq!(c.add(&shares[0]).unwrap().received, 1);
        // Same share again, even with whitespace around it: refused, still 1.
        refused(c.add(&format!("  {}\n", shares[0])));
        assert_eq!(c.progress().received, 1);
        assert!(matches!(
            c.custody_key(),
            Err(Error::NotEnoughShares { have: 1, need: 2 })
        ));
    }

    #[test]
    fn tampered_verifier_set_is_refused() {
        let sp = split(3, 5).unwrap();
        let v = &sp.verifiers;
        // Wrong threshold for the set, truncated, garbage, generator swapped.
        assert!(Verifiers::from_hex(v, 2).is_err());
        assert!(Verifiers::from_hex(&v[..3], 3).is_err());
        let mut g = v.clone();
        g[0] = v[1].clone();
        assert!(Verifiers::from_hex(&g, 3).is_err());
        let mut h = v.clone();
        h[2] = "zz".into();
        assert!(Verifiers::from_hex(&h, 3).is_err());
        // Swapping in another split's commitment to s: every share now fails its check.
        let other = split(3, 5).unwrap();
        let mut c0 = v.clone();
        c0[1] = other.verifiers[1].clone();
        let forged = Verifiers::from_hex(&c0, 3).unwrap();
        for s in &sp.shares {
            refused(forged.check(&parse_share(s.expose()).unwrap()).map(|_| ()));
        }
    }

    #[test]
    fn malformed_share_strings_are_refused() {
        let (_, shares, _) = setup(2, 3);
        let hex64 = &shares[0]["pvshare1-1-".len()..];
        let cases = [
            String::new(),
            "pvshare1".into(),
            format!("pvshare2-1-{hex64}"),
            format!("PVSHARE1-1-{hex64}"),
            format!("share-1-{hex64}"),
            format!("pvshare1--{hex64}"),
            format!("pvshare1-0-{hex64}"),
            format!("pvshare1-256-{hex64}"),
            format!("pvshare1-+1-{hex64}"),
            format!("pvshare1-x-{hex64}"),
            format!("pvshare1-0001-{hex64}"),
            "pvshare1-1".into(),
            "pvshare1-1-".into(),
            format!("pvshare1-1-{}", &hex64[..62]),
            format!("pvshare1-1-{hex64}00"),
            format!("pvshare1-1-{}g", &hex64[..63]),
            format!("pvshare1-1-{}", "ff".repeat(32)), // >= group order
            format!("pvshare1-1-{hex64}-extra"),
        ];
        for c in &cases {
            let msg = refused(parse_share(c));
            assert!(msg.contains("malformed share"), "{c:?}: {msg}");
        }
        // Uppercase hex and surrounding whitespace are fine.
        let up = format!("pvshare1-1-{}", hex64.to_uppercase());
        assert_eq!(parse_share(&format!(" {up}\n")).unwrap().id(), 1);
    }

    #[test]
    fn params_bounds_name_the_flag() {
        for (m, n, flag) in [
            (1, 3, "--threshold"),
            (0, 3, "--threshold"),
            (2, 1, "--shares"),
            (2, 256, "--shares"),
            (4, 3, "--threshold"),
        ] {
            match check_params(m, n) {
                Err(Error::Config(msg)) => assert!(msg.contains(flag), "{msg}"),
                other => panic!("{m}/{n}: {other:?}"),
            }
        }
        check_params(2, 2).unwrap();
        check_params(255, 255).unwrap();
    }

    #[test]
    fn debug_never_shows_share_values() {
        let (_, shares, vs) = setup(2, 3);
        let p = parse_share(&shares[0]).unwrap();
        let mut c = ShareCollector::new(vs);
        c.add(&shares[1]).unwrap();
        for text in [format!("{p:?}"), format!("{c:?}")] {
            assert!(!text.contains(&shares[0][11..20]), "{text}");
            assert!(!text.contains(&shares[1][11..20]), "{text}");
        }
        assert!(format!("{p:?}").contains("REDACTED"));
    }
}
