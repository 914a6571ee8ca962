//! Envelope encryption: the key hierarchy, the AEAD calls and the associated data that binds
//! every ciphertext to its place.
//!
//! ```text
//! KEK (versioned; from a key source)  ──wraps──►  DEK (AES-256, random)  ──encrypts──►  card data
//!                                     ──wraps──►  fingerprint key (HMAC-SHA256)
//! ```
//!
//! Every AES-256-GCM call carries associated data that names what the ciphertext is and where it
//! belongs, so a ciphertext copied to another record, DEK slot or KEK version fails to decrypt.
//! Nonces are 96 bits from an OS-seeded CSPRNG; a DEK is retired long before the 2^32 random-nonce
//! bound (see [`DekPolicy`]). Primitives are RustCrypto's `aes-gcm`, `hmac`, `sha2`, `argon2`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use crate::secret::{SecretKey, SecretString};
use crate::{Error, Result};

pub use crate::secret::KEY_LEN;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// Version byte of every associated-data layout below; bump it to change a layout.
pub const FORMAT_VERSION: u8 = 1;

/// Builds unambiguous associated data: a domain label, the format version, then each field
/// length-prefixed (u16 big-endian), so no two field lists encode to the same bytes.
fn associated_data(label: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut ad =
        Vec::with_capacity(label.len() + 1 + fields.iter().map(|f| f.len() + 2).sum::<usize>());
    ad.extend_from_slice(label);
    ad.push(FORMAT_VERSION);
    for f in fields {
        // Fields are ids and tokens (< 100 bytes); saturate rather than wrap for safety.
        let len = u16::try_from(f.len()).unwrap_or(u16::MAX);
        ad.extend_from_slice(&len.to_be_bytes());
        ad.extend_from_slice(f);
    }
    ad
}

/// Associated data of a card record: binds it to merchant, token and DEK id.
pub fn record_aad(merchant_id: &str, token: &str, dek_id: u32) -> Vec<u8> {
    associated_data(
        b"panvault/record",
        &[
            merchant_id.as_bytes(),
            token.as_bytes(),
            &dek_id.to_be_bytes(),
        ],
    )
}

/// Associated data of a wrapped key: binds it to its name (e.g. `dek` + id, `fingerprint`) and
/// the KEK version that wrapped it.
pub fn wrap_aad(name: &str, id: u32, kek_version: u32) -> Vec<u8> {
    associated_data(
        b"panvault/wrap",
        &[
            name.as_bytes(),
            &id.to_be_bytes(),
            &kek_version.to_be_bytes(),
        ],
    )
}

/// A nonce from `rand`'s thread-local CSPRNG (ChaCha12, seeded and periodically reseeded from
/// the OS): nonces must be unique, not secret, and a system call per encryption was 5% of the
/// tokenize path's CPU. Keys, salts and token randomness come straight from the OS.
fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

/// AES-256-GCM with a fresh random nonce.
fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Result<Sealed> {
    let nonce = random_nonce();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Encrypt { what: "seal" })?;
    Ok(Sealed { nonce, ciphertext })
}

fn open(
    cipher: &Aes256Gcm,
    aad: &[u8],
    sealed: &Sealed,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Decrypt { what })
}

/// A nonce and the AES-GCM ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    /// The 96-bit nonce, fresh from the CSPRNG for this one encryption.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext followed by its 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

/// The seam between the key hierarchy and wherever a KEK lives: wraps and unwraps other keys
/// under one KEK version, bound to associated data from [`wrap_aad`]. Implemented by the
/// in-process [`SoftwareKek`] and by an HSM-held key ([`crate::hsm::KekHandle`]); a new key
/// source (a cloud KMS, another HSM API) is one more implementation. An implementation refuses
/// a blob made for other associated data, under another key, or altered, with
/// [`Error::Decrypt`]; it never puts key material in an error or in `Debug`.
pub trait KeyWrap: Send + Sync + std::fmt::Debug {
    /// Wraps `key`, bound to `aad`.
    fn wrap(&self, aad: &[u8], key: &SecretKey) -> Result<Sealed>;
    /// Reverses [`KeyWrap::wrap`] made with the same `aad`.
    fn unwrap(&self, aad: &[u8], sealed: &Sealed) -> Result<SecretKey>;
}

/// A KEK held in this process (`dev`, `file`, `shamir` key sources): AES-256-GCM with a random
/// nonce. The expanded AES key schedule is boxed (it is large) and zeroized on drop.
pub struct SoftwareKek(Box<Aes256Gcm>);

impl SoftwareKek {
    /// The KEK made from `key`.
    pub fn new(key: &SecretKey) -> Self {
        SoftwareKek(Box::new(Aes256Gcm::new(key.expose().into())))
    }
}

impl std::fmt::Debug for SoftwareKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl KeyWrap for SoftwareKek {
    fn wrap(&self, aad: &[u8], key: &SecretKey) -> Result<Sealed> {
        seal(&self.0, aad, key.expose())
    }

    fn unwrap(&self, aad: &[u8], sealed: &Sealed) -> Result<SecretKey> {
        let plain = open(&self.0, aad, sealed, "wrapped key")?;
        SecretKey::from_slice(&plain)
    }
}

/// A key-encryption key of one version, wherever it lives ([`KeyWrap`]). It binds every wrap
/// to the wrapped key's name, id and this KEK's version ([`wrap_aad`]).
pub struct Kek {
    version: u32,
    key: Box<dyn KeyWrap>,
}

impl Kek {
    /// A KEK version held in this process.
    pub fn new(version: u32, key: &SecretKey) -> Self {
        Kek::with(version, Box::new(SoftwareKek::new(key)))
    }

    /// A KEK version held elsewhere (an HSM): `key` does the wrapping.
    pub fn with(version: u32, key: Box<dyn KeyWrap>) -> Self {
        Kek { version, key }
    }

    /// This KEK's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Wraps a key under this KEK; `name`/`id` say which key it is.
    pub fn wrap(&self, name: &str, id: u32, key: &SecretKey) -> Result<Sealed> {
        self.key.wrap(&wrap_aad(name, id, self.version), key)
    }

    /// Unwraps a key wrapped by [`Kek::wrap`] with the same `name`, `id` and KEK version.
    pub fn unwrap_key(&self, name: &str, id: u32, sealed: &Sealed) -> Result<SecretKey> {
        self.key.unwrap(&wrap_aad(name, id, self.version), sealed)
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Kek {{ version: {}, key: {:?} }}",
            self.version, self.key
        )
    }
}

/// When a DEK stops taking new encryptions (a new DEK takes over; the old one still decrypts).
/// Random 96-bit nonces stay far below the 2^-32 collision bound at 2^24 messages per key.
#[derive(Clone, Copy, Debug)]
pub struct DekPolicy {
    /// Encryptions one DEK may take in this process (default 2^24).
    pub max_uses: u64,
    /// How long after it was loaded a DEK may take new encryptions (default 24 hours); also
    /// the cryptoperiod the key status reports DEKs against.
    pub max_age: Duration,
}

impl Default for DekPolicy {
    fn default() -> Self {
        DekPolicy {
            max_uses: 1 << 24,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// A data-encryption key in memory, with its use counter.
pub struct Dek {
    id: u32,
    cipher: Aes256Gcm,
    uses: AtomicU64,
    loaded: Instant,
}

impl Dek {
    /// A DEK ready to use: `id` is its slot in the store, which every record AAD names.
    pub fn new(id: u32, key: &SecretKey) -> Self {
        Dek {
            id,
            cipher: Aes256Gcm::new(key.expose().into()),
            uses: AtomicU64::new(0),
            loaded: Instant::now(),
        }
    }

    /// The DEK's slot number, stored beside each record it encrypts.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Counts one encryption; false once the policy says this DEK must not take more.
    pub fn take_use(&self, policy: &DekPolicy) -> bool {
        let n = self.uses.fetch_add(1, Ordering::Relaxed);
        n < policy.max_uses && self.loaded.elapsed() < policy.max_age
    }

    /// Encrypts a record's plaintext for `merchant_id`/`token`.
    pub fn seal_record(&self, merchant_id: &str, token: &str, plaintext: &[u8]) -> Result<Sealed> {
        seal(
            &self.cipher,
            &record_aad(merchant_id, token, self.id),
            plaintext,
        )
    }

    /// Decrypts a record; fails if it was sealed for another merchant, token or DEK.
    pub fn open_record(
        &self,
        merchant_id: &str,
        token: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>> {
        open(
            &self.cipher,
            &record_aad(merchant_id, token, self.id),
            sealed,
            "card record",
        )
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek {{ id: {}, key: [REDACTED] }}", self.id)
    }
}

/// An HMAC-SHA256 key held ready (the keyed state is computed once and cloned per use).
///
/// - The card fingerprint is `HMAC(fingerprint key, merchant ‖ 0 ‖ PAN)`: keyed and per
///   merchant, so the same card in two merchants gives unlinkable values and a copy of the store
///   without the KEK cannot test guesses.
/// - API keys are stored as `HMAC(api key MAC key, "api-key" ‖ 0 ‖ key id ‖ 0 ‖ secret ‖ 0)`: a copy
///   of the store yields no usable key, and checking one costs a MAC, not argon2.
#[derive(Clone)]
pub struct MacKey(Hmac<Sha256>);

impl MacKey {
    /// Keys an HMAC-SHA256 state with `key`; refused ([`Error::KeyUnlock`]) only if HMAC
    /// rejects the key's length.
    pub fn new(key: &SecretKey) -> Result<Self> {
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
            .map(MacKey)
            .map_err(|_| Error::KeyUnlock("MAC key has the wrong length"))
    }

    /// HMAC over the parts, each followed by a zero byte.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(p);
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().into()
    }

    /// A key for another purpose, derived from this one: `HMAC(this key, "derive" ‖ 0 ‖
    /// purpose ‖ 0)` as a new HMAC key. No tag this key makes for its own use starts with the
    /// part `derive`, so the derived key is independent of every value it keys.
    pub fn derive(&self, purpose: &str) -> Result<MacKey> {
        let bytes = zeroize::Zeroizing::new(self.tag(&[b"derive", purpose.as_bytes()]));
        MacKey::new(&SecretKey::from_slice(&bytes[..])?)
    }

    /// The card fingerprint, `HMAC(merchant_id ‖ 0 ‖ pan_digits)`: finds the existing token
    /// of a card within one merchant group. `pan_digits` are the bare digits, no separators.
    pub fn fingerprint(&self, merchant_id: &str, pan_digits: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(merchant_id.as_bytes());
        mac.update(&[0]);
        mac.update(pan_digits.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

/// Argon2id parameters of a passphrase-sealed key file: RFC 9106 section 4, second recommended
/// option (64 MiB, 3 passes, 4 lanes), 32-byte output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes over the memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        }
    }
}

/// Derives the key that seals a key file from an operator passphrase.
pub fn derive_passphrase_key(
    passphrase: &SecretString,
    salt: &[u8],
    params: KdfParams,
) -> Result<SecretKey> {
    let p = argon2::Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|_| Error::KeyUnlock("bad argon2 parameters"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    SecretKey::fill_with(|out| {
        a.hash_password_into(passphrase.expose().as_bytes(), salt, out)
            .map_err(|_| Error::KeyUnlock("argon2 failed"))
    })
}

/// Seals a KEK under a passphrase-derived key (AES-256-GCM, AAD names the KEK version).
pub fn seal_with_passphrase_key(
    pkey: &SecretKey,
    kek_version: u32,
    kek: &SecretKey,
) -> Result<Sealed> {
    let c = Aes256Gcm::new(pkey.expose().into());
    seal(&c, &wrap_aad("kek-file", kek_version, 0), kek.expose())
}

/// Opens a KEK sealed by [`seal_with_passphrase_key`]; a wrong passphrase fails here.
pub fn open_with_passphrase_key(
    pkey: &SecretKey,
    kek_version: u32,
    sealed: &Sealed,
) -> Result<SecretKey> {
    let c = Aes256Gcm::new(pkey.expose().into());
    let plain = open(
        &c,
        &wrap_aad("kek-file", kek_version, 0),
        sealed,
        "key file",
    )
    .map_err(|_| Error::KeyUnlock("wrong passphrase or altered key file"))?;
    SecretKey::from_slice(&plain)
}

/// Seals a KEK under a custody key other than the passphrase key (e.g. the `shamir` source's
/// HKDF-derived key): AES-256-GCM, AAD `wrap_aad(label, kek_version, 0)`, so a sealed KEK is
/// bound to its version and to its source (`kek-shamir` never opens as `kek-file`).
pub fn seal_kek(key: &SecretKey, label: &str, kek_version: u32, kek: &SecretKey) -> Result<Sealed> {
    let c = Aes256Gcm::new(key.expose().into());
    seal(&c, &wrap_aad(label, kek_version, 0), kek.expose())
}

/// Opens a KEK sealed by [`seal_kek`] with the same label; a wrong key fails here.
pub fn open_kek(
    key: &SecretKey,
    label: &str,
    kek_version: u32,
    sealed: &Sealed,
) -> Result<SecretKey> {
    let c = Aes256Gcm::new(key.expose().into());
    let plain = open(&c, &wrap_aad(label, kek_version, 0), sealed, "key file")
        .map_err(|_| Error::KeyUnlock("wrong custody key or altered key file"))?;
    SecretKey::from_slice(&plain)
}

/// Random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn record_round_trip_and_binding() {
        let dek = Dek::new(7, &SecretKey::random());
        let s = dek
            .seal_record("mer_a", "41XYZWABCDEF1111", b"4111111111111111\0J DOE")
            .unwrap();
        assert_eq!(
            &dek.open_record("mer_a", "41XYZWABCDEF1111", &s).unwrap()[..],
            b"4111111111111111\0J DOE"
        );
        // Moved to another token, merchant, or DEK id: fails.
        assert!(dek.open_record("mer_a", "41XYZWABCDEF1112", &s).is_err());
        assert!(dek.open_record("mer_b", "41XYZWABCDEF1111", &s).is_err());
        let same_key_other_id = Dek {
            id: 8,
            ..Dek::new(7, &SecretKey::random())
        };
        assert!(
            same_key_other_id
                .open_record("mer_a", "41XYZWABCDEF1111", &s)
                .is_err()
        );
        // Tampered ciphertext: fails.
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert!(dek.open_record("mer_a", "41XYZWABCDEF1111", &t).is_err());
    }

    #[test]
    fn sealed_kek_is_bound_to_its_source_label_and_version() {
        let key = SecretKey::random();
        let kek = SecretKey::random();
        let sealed = seal_kek(&key, "kek-shamir", 2, &kek).unwrap();
        assert_eq!(
            open_kek(&key, "kek-shamir", 2, &sealed).unwrap().expose(),
            kek.expose()
        );
        assert!(open_kek(&key, "kek-file", 2, &sealed).is_err());
        assert!(open_kek(&key, "kek-shamir", 1, &sealed).is_err());
        assert!(open_kek(&SecretKey::random(), "kek-shamir", 2, &sealed).is_err());
        assert!(open_with_passphrase_key(&key, 2, &sealed).is_err());
    }

    #[test]
    fn aad_is_unambiguous() {
        assert_ne!(record_aad("ab", "c", 1), record_aad("a", "bc", 1));
        assert_ne!(record_aad("a", "b", 1), record_aad("a", "b", 2));
        assert_ne!(wrap_aad("dek", 1, 1), wrap_aad("dek", 1, 2));
    }

    #[test]
    fn wrap_binds_name_id_and_version() {
        let kek = Kek::new(1, &SecretKey::random());
        let dek = SecretKey::random();
        let w = kek.wrap("dek", 3, &dek).unwrap();
        assert_eq!(kek.unwrap_key("dek", 3, &w).unwrap().expose(), dek.expose());
        assert!(kek.unwrap_key("dek", 4, &w).is_err());
        assert!(kek.unwrap_key("fingerprint", 3, &w).is_err());
        let other = Kek::new(1, &SecretKey::random());
        assert!(other.unwrap_key("dek", 3, &w).is_err());
    }

    #[test]
    fn fingerprint_is_keyed_and_per_merchant() {
        let k1 = MacKey::new(&SecretKey::random()).unwrap();
        let k2 = MacKey::new(&SecretKey::random()).unwrap();
        let a = k1.fingerprint("mer_a", "4111111111111111");
        assert_eq!(a, k1.fingerprint("mer_a", "4111111111111111"));
        assert_ne!(a, k1.fingerprint("mer_b", "4111111111111111"));
        assert_ne!(a, k2.fingerprint("mer_a", "4111111111111111"));
    }

    #[test]
    fn passphrase_seal() {
        let params = KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let salt = random_bytes::<16>();
        let pk = derive_passphrase_key(
            &SecretString::new("correct horse battery".into()),
            &salt,
            params,
        )
        .unwrap();
        let kek = SecretKey::random();
        let s = seal_with_passphrase_key(&pk, 1, &kek).unwrap();
        assert_eq!(
            open_with_passphrase_key(&pk, 1, &s).unwrap().expose(),
            kek.expose()
        );
        let wrong = derive_passphrase_key(
            &SecretString::new("wrong horse battery".into()),
            &salt,
            params,
        )
        .unwrap();
        assert!(matches!(
            open_with_passphrase_key(&wrong, 1, &s),
            Err(Error::KeyUnlock(_))
        ));
        assert!(open_with_passphrase_key(&pk, 2, &s).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let k = SecretKey::random();
        assert_eq!(format!("{k:?}"), "[REDACTED]");
        assert_eq!(
            format!("{:?}", SecretString::new("hunter2".into())),
            "[REDACTED]"
        );
        assert!(!format!("{:?}", Kek::new(1, &k)).contains(&hex::encode(k.expose())));
    }

    #[test]
    fn dek_policy_counts_uses() {
        let p = DekPolicy {
            max_uses: 2,
            max_age: Duration::from_secs(3600),
        };
        let d = Dek::new(1, &SecretKey::random());
        assert!(d.take_use(&p));
        assert!(d.take_use(&p));
        assert!(!d.take_use(&p));
    }
}
