//! Fixed-byte vectors of every persistent format, and vaults written by an earlier build that
//! every later build must open, verify and reveal from.
//!
//! Each vector is checked in the strong direction (today's code must read the committed bytes)
//! and, where the encoder is deterministic given its inputs, in the other one too (today's code
//! must write exactly the committed bytes). Where an encoder draws randomness inside (nonces,
//! salts, keys), the committed bytes are re-derived independently here with the primitives
//! themselves (`aes-gcm`, `argon2`, `hmac`, `hkdf`, `p256`, `postcard`), so a changed layout fails
//! even though the crate's own round trip would still pass.
//!
//! - `crypto::record_aad`, `crypto::wrap_aad`, record and key seals, the passphrase KDF, the
//!   fingerprint and API-key MACs: [`aad_layouts_are_pinned`] and the tests after it;
//! - audit entries (canonical bytes, chain hash, stored postcard form), a checkpoint entry, the
//!   signed head and the prune anchor: [`audit_entry_chain_hash_and_signed_head`];
//! - `keyring.json` of the `dev`, `file` and `shamir` sources (files written by `keys::create`,
//!   under `tests/fixtures/vectors/`): [`keyrings_of_every_software_source_unlock`]; the
//!   `pkcs11` keyring's JSON is pinned in `src/keys/mod.rs` (its KEK lives in an HSM);
//! - the journal record: `src/store/journal.rs` (`mod vectors`, its encoder is private), and
//!   real journal files that must replay ([`fixture_vault_redb_journal_v1`]);
//! - the token `Record` (private in `src/vault/record.rs`), the wrapped-key record, merchants, the
//!   engines' table names and tags, and everything else in a store: the fixture vaults under
//!   `tests/fixtures/vault-v1/` ([`fixture_vault_redb_v1`], [`fixture_vault_sled_v1`]) and
//!   `vault-v2/` (with the authorization records' seals, [`fixture_vault_redb_v2`]; their MAC
//!   alone: [`auth_record_seal_is_pinned`]), made by [`make_fixture_vaults`] (how to run it:
//!   `tests/fixtures/vault-v1/MAKE.md`). Their raw values must equal the committed bytes, decode field for field into mirror structs here
//!   (whose postcard encoding gives back exactly those bytes), open under the keyring, and
//!   reveal through `Vault::reveal`; a record written by today's encoder must have the same
//!   layout.
//!
//! No card number is ever printed: cards are compared with `assert!`, never `assert_eq!`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use panvault::audit::{self, Chain, Entry, Event, SignedHead};
use panvault::crypto::{
    self, Dek, KdfParams, Kek, MacKey, Sealed, SecretKey, SecretString, record_aad, wrap_aad,
};
use panvault::keys::{self, KeySource, Unlock};
use panvault::pan::{Brand, Expiry};
use panvault::store::{self, Backend, Table};
use panvault::token::TokenKind;
use panvault::vault::{
    self, Agreement, Ctx, InitOptions, Options, TokenizeRequest, Vault, audit_mac_key, open_store,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).unwrap()
}

/// AES-256-GCM straight from the primitive, for re-deriving committed ciphertexts.
fn gcm(key: &[u8], nonce: &[u8], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .unwrap()
}

fn gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], ct: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        Aes256Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .unwrap(),
    )
}

fn sealed(nonce: &str, ct: &str) -> Sealed {
    Sealed {
        nonce: unhex(nonce).try_into().unwrap(),
        ciphertext: unhex(ct),
    }
}

// ---------------------------------------------------------------------------------------------
// Associated data, seals, KDF, MACs
// ---------------------------------------------------------------------------------------------

#[test]
fn aad_layouts_are_pinned() {
    // label ‖ FORMAT_VERSION (1) ‖ each field as u16 big-endian length ‖ bytes.
    let aad = record_aad("mer_vectors", "41VECTABCDEF1111", 7);
    assert_eq!(hex::encode(&aad), RECORD_AAD);
    let mut by_hand = b"panvault/record\x01".to_vec();
    by_hand
        .extend_from_slice(b"\x00\x0bmer_vectors\x00\x1041VECTABCDEF1111\x00\x04\x00\x00\x00\x07");
    assert_eq!(aad, by_hand);

    assert_eq!(hex::encode(wrap_aad("dek", 3, 2)), WRAP_AAD_DEK);
    assert_eq!(
        wrap_aad("dek", 3, 2),
        b"panvault/wrap\x01\x00\x03dek\x00\x04\x00\x00\x00\x03\x00\x04\x00\x00\x00\x02"
    );
    assert_eq!(hex::encode(wrap_aad("kek-file", 1, 0)), WRAP_AAD_KEK_FILE);
    assert_eq!(crypto::FORMAT_VERSION, 1);
    assert_eq!((crypto::KEY_LEN, crypto::NONCE_LEN), (32, 12));
}

const RECORD_AAD: &str = "70616e7661756c742f7265636f726401000b6d65725f766563746f7273001034315645435441424344454631313131000400000007";
const WRAP_AAD_DEK: &str = "70616e7661756c742f7772617001000364656b000400000003000400000002";
const WRAP_AAD_KEK_FILE: &str =
    "70616e7661756c742f777261700100086b656b2d66696c65000400000001000400000000";

/// A card record sealed by DEK 7 (key 0x42..) under a fixed nonce: the ciphertext is what
/// AES-256-GCM gives for the record AAD, and `Dek::open_record` reads it back.
#[test]
fn record_seal_is_pinned() {
    let plain = [b"4111111111111111".as_slice(), b"\0J DOE"].concat();
    let aad = record_aad("mer_vectors", "41VECTABCDEF1111", 7);
    assert_eq!(
        hex::encode(gcm(&[0x42; 32], &[0x24; 12], &aad, &plain)),
        RECORD_CT
    );
    let dek = Dek::new(7, &key(0x42));
    let back = dek
        .open_record(
            "mer_vectors",
            "41VECTABCDEF1111",
            &sealed("242424242424242424242424", RECORD_CT),
        )
        .unwrap();
    assert!(
        back[..] == plain[..],
        "the committed record does not open to its card"
    );
    // Bound to merchant, token and DEK id.
    let s = sealed("242424242424242424242424", RECORD_CT);
    assert!(
        dek.open_record("mer_other", "41VECTABCDEF1111", &s)
            .is_err()
    );
    assert!(
        Dek::new(8, &key(0x42))
            .open_record("mer_vectors", "41VECTABCDEF1111", &s)
            .is_err()
    );
}

const RECORD_CT: &str =
    "21a0f570d8f7f70f17d9139b8c03a2976cb11334f9ee312722e97e0f85627a97b0ef43d3b916";

/// A DEK wrapped by KEK version 2 (key 0x11..) as `dek` 3, and a passphrase-sealed KEK and a
/// shamir-sealed KEK: committed ciphertexts that today's unwrap must open.
#[test]
fn key_wraps_are_pinned() {
    let nonce = [0x01u8; 12];
    let wrapped = gcm(&[0x11; 32], &nonce, &wrap_aad("dek", 3, 2), &[0x33; 32]);
    assert_eq!(hex::encode(&wrapped), DEK_WRAP_CT);
    let kek = Kek::new(2, &key(0x11));
    let s = sealed("010101010101010101010101", DEK_WRAP_CT);
    assert_eq!(kek.unwrap_key("dek", 3, &s).unwrap().expose(), &[0x33; 32]);
    assert!(kek.unwrap_key("dek", 4, &s).is_err());
    assert!(Kek::new(1, &key(0x11)).unwrap_key("dek", 3, &s).is_err());

    // `file` source: AAD wrap_aad("kek-file", version, 0).
    let ct = gcm(
        &[0x55; 32],
        &nonce,
        &wrap_aad("kek-file", 1, 0),
        &[0x66; 32],
    );
    assert_eq!(hex::encode(&ct), KEK_FILE_CT);
    let s = sealed("010101010101010101010101", KEK_FILE_CT);
    let k = crypto::open_with_passphrase_key(&key(0x55), 1, &s).unwrap();
    assert_eq!(k.expose(), &[0x66; 32]);
    assert!(crypto::open_kek(&key(0x55), "kek-file", 1, &s).is_ok());

    // `shamir` source: AAD wrap_aad("kek-shamir", version, 0).
    let ct = gcm(
        &[0x55; 32],
        &nonce,
        &wrap_aad("kek-shamir", 1, 0),
        &[0x66; 32],
    );
    assert_eq!(hex::encode(&ct), KEK_SHAMIR_CT);
    let s = sealed("010101010101010101010101", KEK_SHAMIR_CT);
    let k = crypto::open_kek(&key(0x55), "kek-shamir", 1, &s).unwrap();
    assert_eq!(k.expose(), &[0x66; 32]);
    assert!(crypto::open_with_passphrase_key(&key(0x55), 1, &s).is_err());
}

const DEK_WRAP_CT: &str = "7580b3efbd30ffff323b9aed9c82458eac7510b085dcc9906b329ebcc7eba5a64825dbf97afb0da1a601e817be62a68e";
const KEK_FILE_CT: &str = "8a134c690cc9888b3ac62e44aa0b8267dfbf6017ae11c90cbb0919c8370f252d166671bc42c909e4adb848d4df32a3c3";
const KEK_SHAMIR_CT: &str = "8a134c690cc9888b3ac62e44aa0b8267dfbf6017ae11c90cbb0919c8370f252db783abbff2773d86daaf23b35da8b86e";

/// argon2id (v0x13, 32-byte output) of a passphrase under fixed parameters and salt, and the
/// default parameters a `file` keyring is made with.
#[test]
fn passphrase_kdf_is_pinned() {
    let params = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let pass = SecretString::new("vectors passphrase v1".into());
    let k = crypto::derive_passphrase_key(&pass, &[0x5a; 16], params).unwrap();
    assert_eq!(hex::encode(k.expose()), ARGON2_KEY);
    let mut direct = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(b"vectors passphrase v1", &[0x5a; 16], &mut direct)
    .unwrap();
    assert_eq!(hex::encode(direct), ARGON2_KEY);
    assert_eq!(
        KdfParams::default(),
        KdfParams {
            m_cost_kib: 65536,
            t_cost: 3,
            p_cost: 4
        }
    );
}

const ARGON2_KEY: &str = "3eb82cc890d34657dd2ef7f20b1597154494ac4a299dd1cfa324408a77dddd03";

/// The card fingerprint `HMAC(key, merchant ‖ 0 ‖ PAN)` (keys of the fingerprints table) and
/// the tag `HMAC(key, part ‖ 0 ‖ part ‖ 0 ..)` (API-key hashes, audit MACs).
#[test]
fn fingerprint_and_tag_are_pinned() {
    use hmac::Mac;
    let mac = MacKey::new(&key(0x07)).unwrap();
    let fp = mac.fingerprint("mer_vectors", "4111111111111111");
    assert_eq!(hex::encode(fp), FINGERPRINT);
    let mut direct = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[0x07; 32]).unwrap();
    direct.update(b"mer_vectors\x004111111111111111");
    assert_eq!(hex::encode(direct.finalize().into_bytes()), FINGERPRINT);

    let tag = mac.tag(&[b"api-key", b"key_vectors", b"secret"]);
    assert_eq!(hex::encode(tag), API_KEY_TAG);
    let mut direct = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[0x07; 32]).unwrap();
    direct.update(b"api-key\0key_vectors\0secret\0");
    assert_eq!(hex::encode(direct.finalize().into_bytes()), API_KEY_TAG);
}

/// The authorization-record MAC key derived from an API-key MAC key, the MAC of a shop
/// login's binding and of an API key issued under a merchant, and the stored seal's bytes
/// (`vault::auth_records`, issue 14 item 2).
#[test]
fn auth_record_seal_is_pinned() {
    let api = MacKey::new(&key(0x07)).unwrap();
    let derived = auth_record_key(&[0x07; 32]);
    assert_eq!(hex::encode(&derived), AUTH_RECORD_KEY);
    // `MacKey::derive` gives the same key: its tags equal raw HMAC under `derived`.
    let d = api.derive("auth-record-mac").unwrap();
    let shop = auth_record_mac(&derived, "shops", b"9000001", b"mer_vectors", "");
    assert_eq!(hex::encode(&shop), AUTH_SHOP_MAC);
    let len = 11u64.to_be_bytes();
    let via = d.tag(&[
        b"auth-record",
        b"shops",
        b"9000001",
        &len,
        b"mer_vectors",
        b"",
    ]);
    assert_eq!(hex::encode(via), AUTH_SHOP_MAC);
    let key_mac = auth_record_mac(
        &derived,
        "api_keys",
        b"0123456789abcdef",
        b"\x01rec",
        "mer_a",
    );
    assert_eq!(hex::encode(&key_mac), AUTH_KEY_MAC);
    let stored = [
        vec![1u8],
        postcard::to_stdvec(&AuthSealV1 {
            issued_under: Some("mer_a".into()),
            mac: key_mac.try_into().unwrap(),
        })
        .unwrap(),
    ]
    .concat();
    assert_eq!(hex::encode(&stored), AUTH_KEY_SEAL);
}

const AUTH_RECORD_KEY: &str = "2c5c8583feedf9a8309beb4951ad4bbde2f06055fd0ec323b6d1e53c6085110c";
const AUTH_SHOP_MAC: &str = "3eb47e7adfd001c929e938346ff57cffe6e30fba647c7758b1e34813cbeea2dc";
const AUTH_KEY_MAC: &str = "e158a736d3dddd002f7f42acff156b64b32a9187012de26951a97ecf5c614d47";
const AUTH_KEY_SEAL: &str =
    "0101056d65725f61e158a736d3dddd002f7f42acff156b64b32a9187012de26951a97ecf5c614d47";

const FINGERPRINT: &str = "2db3bde4c2a67c5126fa2ef1b5213938d0be12310c5f17faddbeea2a2b5e1b9b";
const API_KEY_TAG: &str = "7d984533d872418308215f95c13084b1b9c6eca9d279d108b518acb2b1361495";

// ---------------------------------------------------------------------------------------------
// Audit chain
// ---------------------------------------------------------------------------------------------

fn vector_entry() -> Entry {
    let mut e = Entry {
        seq: 1,
        time: "2026-12-04T12:00:00Z".into(),
        actor: "key_vectors".into(),
        merchant: Some("mer_vectors".into()),
        action: "tokenize".into(),
        token: Some("41VECTABCDEF1111".into()),
        outcome: "ok".into(),
        request_id: Some("req-1".into()),
        client: None,
        detail: Some(String::new()),
        prev_hash: hex::encode(audit::GENESIS),
        hash: String::new(),
    };
    e.hash = e.compute_hash().unwrap();
    e
}

#[test]
fn audit_entry_chain_hash_and_signed_head() {
    // One entry: its canonical (hashed) bytes, its hash, its stored (postcard) form.
    let e = vector_entry();
    assert_eq!(hex::encode(e.canonical_bytes()), AUDIT_CANONICAL);
    assert_eq!(e.hash, AUDIT_HASH);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, audit::GENESIS);
    sha2::Digest::update(&mut h, unhex(AUDIT_CANONICAL));
    assert_eq!(hex::encode(sha2::Digest::finalize(h)), AUDIT_HASH);
    assert_eq!(hex::encode(e.encode().unwrap()), AUDIT_STORED);
    assert_eq!(Entry::decode(&unhex(AUDIT_STORED)).unwrap(), e);
    audit::check(&e, 1, &hex::encode(audit::GENESIS)).unwrap();
    assert_eq!(audit::key(258), [0, 0, 0, 0, 0, 0, 1, 2]);

    // A signed chain of 999 events from an empty store: entry 1000 is the checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let st = store::open(Backend::Redb, dir.path()).unwrap();
    let mac = Arc::new(MacKey::new(&key(0x0a)).unwrap());
    let mut chain = Chain::load(st.as_ref(), Some(mac.clone())).unwrap();
    let mut stored = Vec::new();
    let events = (0..999).map(|i| Event {
        actor: "key_vectors".into(),
        merchant: Some("mer_vectors".into()),
        action: if i % 2 == 0 { "tokenize" } else { "reveal" },
        token: Some("41VECTABCDEF1111".into()),
        outcome: "ok",
        request_id: None,
        client: Some("127.0.0.1".into()),
        detail: None,
    });
    chain
        .append_all(events, "2026-12-04T12:00:00Z", |seq, b| {
            stored.push((seq, b))
        })
        .unwrap();
    assert_eq!(stored.len(), 1000);
    assert_eq!(hex::encode(&stored[0].1), CHAIN_FIRST_STORED);
    assert_eq!(stored[999].0, 1000);
    assert_eq!(hex::encode(&stored[999].1), CHAIN_CHECKPOINT_STORED);
    let cp = Entry::decode(&stored[999].1).unwrap();
    assert_eq!(cp.action, audit::CHECKPOINT);
    let head = chain.signed_head().unwrap();
    assert_eq!(String::from_utf8(head.clone()).unwrap(), SIGNED_HEAD);
    let parsed = SignedHead::decode(SIGNED_HEAD.as_bytes()).unwrap();
    assert_eq!((parsed.seq, parsed.hash.as_str()), (1000, cp.hash.as_str()));
    let anchor = SignedHead::anchor(&mac, 1000, &cp.hash).unwrap();
    assert_eq!(String::from_utf8(anchor).unwrap(), ANCHOR);
    // The MACs from the primitive: HMAC-SHA256(key, "panvault-audit-v1" 0 what 0 seq(u64 BE) 0
    // hash 0), for the head, the checkpoint (in its detail) and the anchor.
    let hmac = |what: &[u8], seq: u64, hash: &str| {
        use hmac::Mac;
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[0x0a; 32]).unwrap();
        for part in [
            b"panvault-audit-v1".as_slice(),
            what,
            &seq.to_be_bytes(),
            &unhex(hash),
        ] {
            m.update(part);
            m.update(&[0]);
        }
        hex::encode(m.finalize().into_bytes())
    };
    assert_eq!(parsed.mac, hmac(b"head", 1000, &cp.hash));
    let before = Entry::decode(&stored[998].1).unwrap();
    assert_eq!(
        cp.detail.as_deref(),
        Some(
            format!(
                "covers seq 999; mac={}",
                hmac(b"checkpoint", 999, &before.hash)
            )
            .as_str()
        )
    );
    let anchor = SignedHead::decode(ANCHOR.as_bytes()).unwrap();
    assert_eq!(anchor.mac, hmac(b"anchor", 1000, &cp.hash));

    // The committed entries verify, MACs included, with this key only.
    let mut v = audit::Verifier::from_genesis(Some(&mac));
    for (_, b) in &stored {
        v.feed(&Entry::decode(b).unwrap()).unwrap();
    }
    v.head_here(&parsed).unwrap();
    let done = v.finish();
    assert_eq!((done.entries, done.checkpoints), (1000, 1));
    assert_eq!(done.signed_through, Some(1000));
    let other = MacKey::new(&key(0x0b)).unwrap();
    let mut v = audit::Verifier::from_genesis(Some(&other));
    let err = stored
        .iter()
        .try_for_each(|(_, b)| v.feed(&Entry::decode(b).unwrap()));
    assert!(err.is_err());
}

const AUDIT_CANONICAL: &str = "70616e7661756c742d61756469742d76310000000000000001010000000000000014323032362d31322d30345431323a30303a30305a01000000000000000b6b65795f766563746f727301000000000000000b6d65725f766563746f7273010000000000000008746f6b656e697a65010000000000000010343156454354414243444546313131310100000000000000026f6b0100000000000000057265712d310001000000000000000001000000000000004030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030";
const AUDIT_HASH: &str = "423b2538808e6a537ac8c2201de991171bc26210178443654594519b3158713b";
const AUDIT_STORED: &str = "0114323032362d31322d30345431323a30303a30305a0b6b65795f766563746f7273010b6d65725f766563746f727308746f6b656e697a65011034315645435441424344454631313131026f6b01057265712d3100010040303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030304034323362323533383830386536613533376163386332323031646539393131373162633236323130313738343433363534353934353139623331353837313362";
const CHAIN_FIRST_STORED: &str = "0114323032362d31322d30345431323a30303a30305a0b6b65795f766563746f7273010b6d65725f766563746f727308746f6b656e697a65011034315645435441424344454631313131026f6b0001093132372e302e302e310040303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030304033663464303363366434366330376535313264376164356362383636333134336130393636636361303061633063393266366534633733383961326131613431";
const CHAIN_CHECKPOINT_STORED: &str = "e80714323032362d31322d30345431323a30303a30305a0673797374656d001061756469745f636865636b706f696e7400026f6b00000154636f7665727320736571203939393b206d61633d6635326363363463336661313865326637623332363463376538303734626435343933343735633762316631393965626436353266613439346633383838356140646161373139366238613631393936346132633433396138633064323563633464396232343939613563326232346164653632653433666535626666353361334037623630633463333438303866306635303235393331653663626530316466323639356336633731636566326530353133323839323031626261376635646564";
const SIGNED_HEAD: &str = "{\"seq\":1000,\"hash\":\"7b60c4c34808f0f5025931e6cbe01df2695c6c71cef2e0513289201bba7f5ded\",\"mac\":\"eb7a853cc67a3f56e36289ee4a1d5d206dd6a1d45f193f54ae01cd46a1d084d3\"}";
const ANCHOR: &str = "{\"seq\":1000,\"hash\":\"7b60c4c34808f0f5025931e6cbe01df2695c6c71cef2e0513289201bba7f5ded\",\"mac\":\"afe788d5cf63dc2923541931fe73179e37de6a6c7f9b4be0ed3b4c24ab7f53f7\"}";

// ---------------------------------------------------------------------------------------------
// keyring.json of each software key source
// ---------------------------------------------------------------------------------------------

fn keyring_dir() -> PathBuf {
    fixtures().join("vectors/keyring")
}

/// A data dir holding only `keys/keyring.json` copied from `file`.
fn with_keyring(file: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("keys")).unwrap();
    std::fs::copy(file, keys::keyring_path(d.path())).unwrap();
    d
}

/// The `file` keyring's KEK version `v`, from the primitives: argon2id with the file's
/// parameters and salt, then AES-256-GCM under `wrap_aad("kek-file", v, 0)`.
fn kek_of_file_keyring(file: &Value, passphrase: &str, v: u64) -> Zeroizing<Vec<u8>> {
    let kdf = &file["kdf"];
    assert_eq!(kdf["alg"], "argon2id");
    let params = argon2::Params::new(
        kdf["m_cost_kib"].as_u64().unwrap() as u32,
        kdf["t_cost"].as_u64().unwrap() as u32,
        kdf["p_cost"].as_u64().unwrap() as u32,
        Some(32),
    )
    .unwrap();
    let mut pkey = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(
            passphrase.as_bytes(),
            &unhex(kdf["salt"].as_str().unwrap()),
            pkey.as_mut_slice(),
        )
        .unwrap();
    open_sealed_kek(file, pkey.as_slice(), "kek-file", v)
}

fn open_sealed_kek(file: &Value, key: &[u8], label: &str, v: u64) -> Zeroizing<Vec<u8>> {
    let k = file["keks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == v)
        .unwrap();
    let s = &k["sealed"];
    gcm_open(
        key,
        &unhex(s["nonce"].as_str().unwrap()),
        &wrap_aad(label, v as u32, 0),
        &unhex(s["ciphertext"].as_str().unwrap()),
    )
}

/// The `shamir` keyring's KEK version `v`, from the primitives: Lagrange interpolation at 0 of
/// the shares (P-256 scalars, ids 1..=N), checked against the verifier `s*G`, HKDF-SHA256 of
/// the scalar's 32 big-endian bytes (info `panvault/shamir-custody-key/v1`), then AES-256-GCM
/// under `wrap_aad("kek-shamir", v, 0)`.
fn kek_of_shamir_keyring(file: &Value, shares: &[&str], v: u64) -> Zeroizing<Vec<u8>> {
    use p256::elliptic_curve::PrimeField;
    use p256::elliptic_curve::group::GroupEncoding;
    use p256::{ProjectivePoint, Scalar};
    let sh = &file["shamir"];
    assert_eq!(
        (sh["scheme"].as_str(), sh["kdf"].as_str()),
        (Some("feldman-p256"), Some("hkdf-sha256"))
    );
    let points: Vec<(Scalar, Scalar)> = shares
        .iter()
        .map(|s| {
            let mut parts = s.splitn(3, '-');
            assert_eq!(parts.next(), Some("pvshare1"));
            let id: u64 = parts.next().unwrap().parse().unwrap();
            let y: [u8; 32] = unhex(parts.next().unwrap()).try_into().unwrap();
            (Scalar::from(id), Scalar::from_repr(y.into()).unwrap())
        })
        .collect();
    let mut secret = Scalar::ZERO;
    for (i, (xi, yi)) in points.iter().enumerate() {
        let mut l = Scalar::ONE;
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                l *= *xj * (*xj - *xi).invert().unwrap();
            }
        }
        secret += *yi * l;
    }
    let verifiers = sh["verifiers"].as_array().unwrap();
    assert_eq!(
        verifiers[0].as_str().unwrap(),
        hex::encode(ProjectivePoint::GENERATOR.to_bytes())
    );
    assert_eq!(
        verifiers[1].as_str().unwrap(),
        hex::encode((ProjectivePoint::GENERATOR * secret).to_bytes()),
        "the shares do not interpolate to the committed secret"
    );
    let mut custody = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, secret.to_repr().as_slice())
        .expand(b"panvault/shamir-custody-key/v1", custody.as_mut_slice())
        .unwrap();
    open_sealed_kek(file, custody.as_slice(), "kek-shamir", v)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `keyring.json` written by `keys::create` for `dev`, `file` (argon2id at 1 MiB, 1 pass, to
/// keep the test fast; the redb fixture vault has the default parameters) and `shamir` (2 of
/// 3): today's `keys::load` unlocks each and its KEK unwraps the committed probe; the KEK
/// re-derived from the primitives is the committed one.
#[test]
fn keyrings_of_every_software_source_unlock() {
    let secrets = read_json(&keyring_dir().join("secrets.json"));
    let probe = |ring: &keys::Keyring, which: &str| {
        let p = &secrets[which]["probe"];
        let s = sealed(
            p["nonce"].as_str().unwrap(),
            p["ciphertext"].as_str().unwrap(),
        );
        assert_eq!(ring.versions(), vec![1]);
        assert_eq!(
            ring.current()
                .unwrap()
                .unwrap_key("probe", 1, &s)
                .unwrap()
                .expose(),
            &[0x77; 32],
            "{which}"
        );
        // The probe under the committed KEK, from the primitive.
        let kek = unhex(secrets[which]["kek"].as_str().unwrap());
        let plain = gcm_open(&kek, &s.nonce, &wrap_aad("probe", 1, 1), &s.ciphertext);
        assert_eq!(plain.as_slice(), &[0x77; 32]);
    };

    // dev: the KEK in clear.
    let path = keyring_dir().join("dev.json");
    let file = read_json(&path);
    assert_eq!(
        (file["format"].as_u64(), file["source"].as_str()),
        (Some(1), Some("dev"))
    );
    assert_eq!(file["keks"][0]["key"], secrets["dev"]["kek"]);
    let d = with_keyring(&path);
    assert_eq!(keys::source_of(d.path()).unwrap(), KeySource::Dev);
    probe(&keys::load(d.path(), &Unlock::Dev).unwrap(), "dev");

    // file: argon2id + AES-256-GCM.
    let path = keyring_dir().join("file.json");
    let file = read_json(&path);
    let pass = secrets["file"]["passphrase"].as_str().unwrap();
    assert_eq!(
        hex::encode(kek_of_file_keyring(&file, pass, 1).as_slice()),
        secrets["file"]["kek"].as_str().unwrap()
    );
    let d = with_keyring(&path);
    assert_eq!(keys::source_of(d.path()).unwrap(), KeySource::File);
    let ring = keys::load(
        d.path(),
        &Unlock::Passphrase(SecretString::new(pass.into())),
    )
    .unwrap();
    probe(&ring, "file");
    let wrong = keys::load(
        d.path(),
        &Unlock::Passphrase(SecretString::new("not the passphrase".into())),
    );
    assert!(matches!(wrong, Err(panvault::Error::KeyUnlock(_))));

    // shamir: any 2 of the 3 committed shares.
    let path = keyring_dir().join("shamir.json");
    let file = read_json(&path);
    let shares: Vec<&str> = secrets["shamir"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(shares.len(), 3);
    let d = with_keyring(&path);
    assert_eq!(keys::source_of(d.path()).unwrap(), KeySource::Shamir);
    for pick in [[0, 1], [1, 2], [2, 0]] {
        let two: Vec<&str> = pick.iter().map(|&i| shares[i]).collect();
        assert_eq!(
            hex::encode(kek_of_shamir_keyring(&file, &two, 1).as_slice()),
            secrets["shamir"]["kek"].as_str().unwrap()
        );
        let unlock = Unlock::Shares(
            two.iter()
                .map(|s| SecretString::new(s.to_string()))
                .collect(),
        );
        probe(&keys::load(d.path(), &unlock).unwrap(), "shamir");
    }
    let one = Unlock::Shares(vec![SecretString::new(shares[0].into())]);
    assert!(keys::load(d.path(), &one).is_err());

    // pkcs11: the file names the module, token and object label; no key material. Its bytes
    // are pinned in src/keys/mod.rs; opening it needs the HSM (tests/hsm.rs).
    let file = read_json(&keyring_dir().join("pkcs11.json"));
    assert_eq!(file["keks"][0]["hsm_label"], panvault::hsm::kek_label(1));
    assert_eq!(panvault::hsm::kek_label(1), "panvault-kek-v1");
    let d = with_keyring(&keyring_dir().join("pkcs11.json"));
    assert_eq!(keys::source_of(d.path()).unwrap(), KeySource::Pkcs11);
    assert_eq!(
        keys::kek_dates(d.path()).unwrap(),
        vec![(1, "2026-12-04T12:00:00Z".to_string())]
    );
}

/// Writes the keyring vectors into `$PANVAULT_VECTORS_OUT/keyring/` (see
/// `tests/fixtures/vault-v1/MAKE.md`). The committed ones stay as they are: a new keyring
/// format adds files, it never rewrites these.
#[test]
#[ignore = "writes fixtures; run by hand (tests/fixtures/vault-v1/MAKE.md)"]
fn make_keyring_vectors() {
    let out = PathBuf::from(std::env::var("PANVAULT_VECTORS_OUT").unwrap()).join("keyring");
    std::fs::create_dir_all(&out).unwrap();
    let probe = |ring: &keys::Keyring| {
        let s = ring
            .current()
            .unwrap()
            .wrap("probe", 1, &key(0x77))
            .unwrap();
        json!({"nonce": hex::encode(s.nonce), "ciphertext": hex::encode(&s.ciphertext)})
    };
    let small = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let pass = "vectors keyring passphrase v1";
    let mut secrets = json!({});
    for source in [KeySource::Dev, KeySource::File, KeySource::Shamir] {
        let d = tempfile::tempdir().unwrap();
        let (ring, shares) = keys::create(
            d.path(),
            source,
            Some(&SecretString::new(pass.into())),
            small,
            Some((2, 3)),
            None,
        )
        .unwrap();
        let path = out.join(format!("{}.json", source.as_str()));
        std::fs::copy(keys::keyring_path(d.path()), &path).unwrap();
        let file = read_json(&path);
        let shares: Vec<String> = shares.iter().map(|s| s.expose().to_string()).collect();
        let kek = match source {
            KeySource::Dev => file["keks"][0]["key"].as_str().unwrap().to_string(),
            KeySource::File => hex::encode(kek_of_file_keyring(&file, pass, 1).as_slice()),
            _ => {
                let two: Vec<&str> = shares[..2].iter().map(String::as_str).collect();
                hex::encode(kek_of_shamir_keyring(&file, &two, 1).as_slice())
            }
        };
        let mut v = json!({"kek": kek, "probe": probe(&ring)});
        match source {
            KeySource::File => v["passphrase"] = json!(pass),
            KeySource::Shamir => v["shares"] = json!(shares),
            _ => {}
        }
        secrets[source.as_str()] = v;
    }
    std::fs::write(
        out.join("secrets.json"),
        serde_json::to_vec_pretty(&secrets).unwrap(),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Vaults written by an earlier build
// ---------------------------------------------------------------------------------------------

/// A token `Record` as stored (after the value version byte 1), field for field: postcard of
/// this struct must give exactly the stored bytes.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RecordV1 {
    merchant_id: String,
    kind: TokenKind,
    dek_id: u32,
    sealed: Sealed,
    fingerprint: [u8; 32],
    bin: String,
    last4: String,
    pan_len: u8,
    brand: Brand,
    expiry: Expiry,
    created_at: u64,
    agreements: Vec<Agreement>,
}

/// A wrapped DEK (and a wrapped `meta` key) as stored, after the version byte.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WrappedKeyV1 {
    kek_version: u32,
    wrapped: Sealed,
    created_at: u64,
}

/// Splits off the value version byte (1) and decodes the rest; re-encoding gives the same bytes.
fn postcard_v1<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> T {
    assert_eq!(bytes[0], 1, "value version byte");
    let v: T = postcard::from_bytes(&bytes[1..]).unwrap();
    assert_eq!(
        postcard::to_stdvec(&v).unwrap(),
        &bytes[1..],
        "postcard layout"
    );
    v
}

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// Preallocated files (the journal's 1 MiB steps, sled's segments) end in long runs of zero
/// bytes. They are committed without them: `{path: length}` of every file cut, so that
/// [`restore_zero_tails`] gives back exactly the bytes the vault left.
fn strip_zero_tails(root: &Path, dir: &Path) -> Value {
    let mut cut = serde_json::Map::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            cut.extend(strip_zero_tails(root, &p).as_object().unwrap().clone());
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let keep = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if bytes.len() - keep >= 4096 {
            std::fs::write(&p, &bytes[..keep]).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            cut.insert(rel, json!(bytes.len()));
        }
    }
    Value::Object(cut)
}

fn restore_zero_tails(manifest: &Value, root: &Path) {
    for (rel, len) in manifest["zero_tails"].as_object().unwrap() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(rel))
            .unwrap();
        f.set_len(len.as_u64().unwrap()).unwrap();
    }
}

fn unlock_of(manifest: &Value) -> Unlock {
    match manifest["key_source"].as_str().unwrap() {
        "dev" => Unlock::Dev,
        "file" => Unlock::Passphrase(SecretString::new(
            manifest["passphrase"].as_str().unwrap().into(),
        )),
        other => panic!("no fixture for key source {other}"),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// Opens a copy of `tests/fixtures/<version>/<name>` with today's code: the raw store values
/// are the committed ones and decode field for field; the audit chain verifies with its MACs;
/// the vault opens, and every token reveals the card it was made from.
fn check_fixture(version: &str, name: &str) {
    let root = fixtures().join(version).join(name);
    let manifest = read_json(&root.join("manifest.json"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&root.join("data"), &dir);
    restore_zero_tails(&manifest, tmp.path());
    let unlock = unlock_of(&manifest);
    assert_eq!(
        vault::backend_of(&dir).unwrap().as_str(),
        s(&manifest["backend"])
    );
    assert_eq!(
        keys::source_of(&dir).unwrap().as_str(),
        s(&manifest["key_source"])
    );
    // vault.json: pretty JSON, these four fields in this order.
    let text = std::fs::read_to_string(dir.join("vault.json")).unwrap();
    let vf: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(vf.as_object().unwrap().len(), 4);
    let at = |f: &str| text.find(&format!("\n  \"{f}\": ")).unwrap();
    assert!(at("format") < at("backend") && at("backend") < at("key_source"));
    assert!(at("key_source") < at("created_at"));
    assert_eq!(
        (
            vf["format"].as_u64(),
            vf["backend"].as_str(),
            vf["key_source"].as_str()
        ),
        (
            Some(1),
            manifest["backend"].as_str(),
            manifest["key_source"].as_str()
        )
    );

    // The engine's own file, read with the engine's crate: table names (redb) or tags (sled),
    // and the journal's sequence number beside them.
    let only_journal = manifest["engine_lacks_writes_after_open"]
        .as_bool()
        .unwrap();
    for t in manifest["tokens"].as_array().unwrap() {
        let held = engine_get(
            &dir,
            s(&manifest["backend"]),
            "tokens",
            3,
            s(&t["token"]).as_bytes(),
        );
        if only_journal {
            assert_eq!(held, None, "the snapshot's engine already holds a token");
        } else {
            assert_eq!(hex::encode(held.unwrap()), s(&t["stored"]));
        }
    }
    let seq = engine_get(&dir, s(&manifest["backend"]), "journal", 0, b"journal_seq").unwrap();
    assert_eq!(seq.len(), 8, "journal_seq is a u64, big-endian");

    // The stopped vault, through the store alone (which replays what the engine lacks).
    {
        let st = open_store(&dir).unwrap();
        let ring = keys::load(&dir, &unlock).unwrap();
        assert_eq!(
            serde_json::to_value(ring.versions()).unwrap(),
            manifest["kek_versions"]
        );
        for m in manifest["merchants"].as_array().unwrap() {
            let raw = st
                .get(Table::Merchants, s(&m["merchant_id"]).as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(hex::encode(&raw), s(&m["stored"]));
            let back: vault::Merchant = postcard_v1(&raw);
            assert_eq!(
                (back.name.as_str(), back.prefix.as_str()),
                (s(&m["name"]), s(&m["prefix"]))
            );
            let idx = st
                .get(
                    Table::Meta,
                    format!("prefix/{}", s(&m["prefix"])).as_bytes(),
                )
                .unwrap();
            assert_eq!(idx.as_deref(), Some(s(&m["merchant_id"]).as_bytes()));
        }
        for t in manifest["tokens"].as_array().unwrap() {
            let (mid, token) = (s(&t["merchant_id"]), s(&t["token"]));
            let raw = st.get(Table::Tokens, token.as_bytes()).unwrap().unwrap();
            assert_eq!(hex::encode(&raw), s(&t["stored"]), "record of {token}");
            let rec: RecordV1 = postcard_v1(&raw);
            let pan = s(&t["pan"]);
            assert_eq!(rec.merchant_id, mid);
            assert_eq!(serde_json::to_value(rec.kind).unwrap(), t["kind"]);
            assert!(rec.bin == pan[..6] && rec.last4 == pan[pan.len() - 4..]);
            assert_eq!(usize::from(rec.pan_len), pan.len());
            assert_eq!(serde_json::to_value(rec.brand).unwrap(), t["brand"]);
            assert_eq!(
                (u64::from(rec.expiry.month), u64::from(rec.expiry.year)),
                (
                    t["expiry_month"].as_u64().unwrap(),
                    t["expiry_year"].as_u64().unwrap()
                )
            );
            assert_eq!(
                serde_json::to_value(&rec.agreements).unwrap(),
                t["agreements"]
            );
            // The fingerprint index points back at the token.
            let fp = st.get(Table::Fingerprints, &rec.fingerprint).unwrap();
            if rec.kind == TokenKind::Masked {
                assert_eq!(
                    fp.as_deref(),
                    Some(token.as_bytes()),
                    "fingerprint of {token}"
                );
            }
            // The DEK, unwrapped by the keyring, opens the card: PAN ‖ 0 ‖ cardholder name.
            let raw_dek = st
                .get(Table::Deks, &rec.dek_id.to_be_bytes())
                .unwrap()
                .unwrap();
            let dek: WrappedKeyV1 = postcard_v1(&raw_dek);
            let dek_key = ring
                .get(dek.kek_version)
                .unwrap()
                .unwrap_key("dek", rec.dek_id, &dek.wrapped)
                .unwrap();
            let plain = Dek::new(rec.dek_id, &dek_key)
                .open_record(mid, token, &rec.sealed)
                .unwrap();
            let want = [
                pan.as_bytes(),
                b"\0",
                t["cardholder_name"].as_str().unwrap_or("").as_bytes(),
            ]
            .concat();
            assert!(plain[..] == want[..], "the card under {token} differs");
        }
        for t in manifest["deleted"].as_array().unwrap() {
            assert!(
                st.get(Table::Tokens, s(&t["token"]).as_bytes())
                    .unwrap()
                    .is_none()
            );
        }
        for (name, wrap) in [
            ("fingerprint_key", "fingerprint"),
            ("api_key_mac_key", "api-key-mac"),
            ("audit_mac_key", "audit-mac"),
        ] {
            let raw = st.get(Table::Meta, name.as_bytes()).unwrap().unwrap();
            let w: WrappedKeyV1 = postcard_v1(&raw);
            let k = ring.get(w.kek_version).unwrap();
            assert!(k.unwrap_key(wrap, 0, &w.wrapped).is_ok(), "{name}");
        }
        // The audit chain: links, then the MACs with the key the KEK unwraps.
        let a = &manifest["audit"];
        let head = st.get(Table::Meta, audit::HEAD_KEY).unwrap().unwrap();
        assert_eq!(String::from_utf8(head).unwrap(), s(&a["head"]));
        let v = audit::verify(st.as_ref(), None, false).unwrap();
        assert_eq!(v.entries, a["entries"].as_u64().unwrap());
        assert_eq!(v.last_hash, s(&a["last_hash"]));
        let mac = audit_mac_key(&dir, st.as_ref(), &unlock).unwrap().unwrap();
        let v = audit::verify(st.as_ref(), Some(&mac), false).unwrap();
        assert!(v.macs_verified);
        assert_eq!(v.signed_through, Some(v.last_seq));
        let last = st.last(Table::Audit).unwrap().unwrap();
        assert_eq!(hex::encode(&last.1), s(&a["last_stored"]));
        let actions: Vec<String> = st
            .scan(Table::Audit, &audit::key(1), 1000)
            .unwrap()
            .iter()
            .map(|(_, b)| Entry::decode(b).unwrap().action)
            .collect();
        assert_eq!(serde_json::to_value(actions).unwrap(), a["actions"]);
    }

    // The vault itself, opened by today's code.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let vault = Vault::open(&dir, &unlock, Options::default()).unwrap();
        let ctx = Ctx {
            actor: "vectors".into(),
            ..Ctx::default()
        };
        let v = vault.verify_audit().unwrap();
        let seals = manifest["auth_seals"].as_object();
        let records = match seals {
            // v2: the records were sealed when made; the open only checks them and writes
            // nothing (no DEK either: the first encryption makes one). The seals are the bytes
            // the generator left.
            Some(seals) => {
                assert_eq!(v.entries, manifest["audit"]["entries"].as_u64().unwrap());
                for (at, stored) in seals {
                    let raw = vault.store().get(Table::Meta, at.as_bytes()).unwrap();
                    assert_eq!(hex::encode(raw.unwrap()), s(stored), "seal {at}");
                }
                let k = &manifest["shop_key"];
                let p = vault.authenticate(s(&k["api_key"])).unwrap();
                assert_eq!(p.key_id, s(&k["api_key_id"]));
                assert_eq!(p.merchant_id.as_deref(), Some(s(&k["merchant_id"])));
                seals.len() - 1
            }
            // v1: opening added one entry: the sealing of the authorization records it holds
            // without MACs (issue 14 item 2).
            None => {
                assert_eq!(
                    v.entries,
                    manifest["audit"]["entries"].as_u64().unwrap() + 1
                );
                let mut tail = Vec::new();
                audit::for_each_since(vault.store(), v.last_seq, |e| {
                    tail.push((e.action.clone(), e.detail.clone()));
                    Ok(())
                })
                .unwrap();
                let records = 1 + 2 * manifest["merchants"].as_array().unwrap().len();
                assert_eq!(
                    tail,
                    [(
                        "auth_records_migrate".to_string(),
                        Some(format!("sealed {records} authorization records"))
                    )]
                );
                records
            }
        };
        check_auth_seals(vault.store(), &dir, &unlock, records);
        assert_eq!(
            serde_json::to_value(vault.kek_versions()).unwrap(),
            manifest["kek_versions"]
        );
        for t in manifest["tokens"].as_array().unwrap() {
            let (mid, token) = (s(&t["merchant_id"]), s(&t["token"]));
            let card = vault.reveal(&ctx, mid, token).await.unwrap();
            assert!(
                card.pan.digits() == s(&t["pan"]),
                "the card under {token} differs"
            );
            assert_eq!(
                (u64::from(card.expiry.month), u64::from(card.expiry.year)),
                (
                    t["expiry_month"].as_u64().unwrap(),
                    t["expiry_year"].as_u64().unwrap()
                )
            );
            assert_eq!(
                card.cardholder_name.as_deref().map(String::as_str),
                t["cardholder_name"].as_str()
            );
            let info = vault.get(mid, token).unwrap();
            assert_eq!(
                serde_json::to_value(&info.agreements).unwrap(),
                t["agreements"]
            );
            assert_eq!(serde_json::to_value(info.token_kind).unwrap(), t["kind"]);
            assert_eq!(serde_json::to_value(info.brand).unwrap(), t["brand"]);
            let pan = s(&t["pan"]);
            assert!(info.bin == pan[..6] && info.last4 == pan[pan.len() - 4..]);
            assert_eq!(
                (
                    u64::from(info.token_expiry_month),
                    u64::from(info.token_expiry_year)
                ),
                (
                    t["expiry_month"].as_u64().unwrap(),
                    t["expiry_year"].as_u64().unwrap()
                )
            );
        }
        for t in manifest["deleted"].as_array().unwrap() {
            let r = vault
                .reveal(&ctx, s(&t["merchant_id"]), s(&t["token"]))
                .await;
            assert!(matches!(r, Err(panvault::Error::TokenNotFound)));
        }
        // And it still takes writes on top of the old data.
        let m = s(&manifest["merchants"][0]["merchant_id"]);
        let again = vault
            .tokenize(&ctx, m, &tokenize_req(&manifest["tokens"][0]))
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.info.token, s(&manifest["tokens"][0]["token"]));
        // The deleted card gets a new token, whose record today's encoder writes in the same
        // layout, under this process's new DEK (wrapped in the same layout too).
        let gone = &manifest["deleted"][0];
        let card = fixture_cards()[3].1.clone();
        let fresh = vault
            .tokenize(&ctx, s(&gone["merchant_id"]), &tokenize_req(&card))
            .await
            .unwrap();
        assert!(fresh.created);
        assert_ne!(fresh.info.token, s(&gone["token"]));
        let raw = vault
            .store()
            .get(Table::Tokens, fresh.info.token.as_bytes())
            .unwrap()
            .unwrap();
        let rec: RecordV1 = postcard_v1(&raw);
        assert_eq!(rec.merchant_id, s(&gone["merchant_id"]));
        assert_eq!(
            (rec.bin.as_str(), rec.last4.as_str(), rec.pan_len),
            ("401288", "1881", 16)
        );
        let raw_dek = vault
            .store()
            .get(Table::Deks, &rec.dek_id.to_be_bytes())
            .unwrap()
            .unwrap();
        let dek: WrappedKeyV1 = postcard_v1(&raw_dek);
        assert_eq!(Some(&dek.kek_version), vault.kek_versions().last());
        let card = vault
            .reveal(&ctx, s(&gone["merchant_id"]), &fresh.info.token)
            .await
            .unwrap();
        assert!(
            card.pan.digits() == card_pan(3),
            "the new token's card differs"
        );
        let entries = vault.verify_audit().unwrap().entries;
        vault.shutdown();
        drop(vault);
        // Sealed once: the next open checks the seals and writes nothing.
        let vault = Vault::open(&dir, &unlock, Options::default()).unwrap();
        assert_eq!(vault.verify_audit().unwrap().entries, entries);
        check_auth_seals(vault.store(), &dir, &unlock, records);
        vault.shutdown();
    });
}

/// The stored seal of an authorization record (`vault::auth_records`): after the value
/// version byte, postcard of the merchant an API key was issued under and the MAC.
#[derive(Serialize, Deserialize)]
struct AuthSealV1 {
    issued_under: Option<String>,
    mac: [u8; 32],
}

/// `HMAC(k, "auth-record" ‖ 0 ‖ table ‖ 0 ‖ key ‖ 0 ‖ len(value) u64 BE ‖ 0 ‖ value ‖ 0 ‖
/// issued under ‖ 0)`, with raw `hmac`.
fn auth_record_mac(k: &[u8], table: &str, key: &[u8], value: &[u8], under: &str) -> Vec<u8> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(k).unwrap();
    let len = (value.len() as u64).to_be_bytes();
    for part in [
        b"auth-record".as_slice(),
        table.as_bytes(),
        key,
        &len,
        value,
        under.as_bytes(),
    ] {
        m.update(part);
        m.update(&[0]);
    }
    m.finalize().into_bytes().to_vec()
}

/// The authorization-record MAC key: `HMAC(API-key MAC key, "derive" ‖ 0 ‖ "auth-record-mac"
/// ‖ 0)`, with raw `hmac`.
fn auth_record_key(api_key_mac: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(api_key_mac).unwrap();
    m.update(b"derive\0auth-record-mac\0");
    m.finalize().into_bytes().to_vec()
}

/// Every authorization record of the store has its seal, under `meta` key
/// `auth_mac/<table>/<key>`, whose MAC is re-derived here from the KEK-unwrapped API-key MAC
/// key with the primitives alone; `records` of them, and the marker.
fn check_auth_seals(st: &dyn store::Store, dir: &Path, unlock: &Unlock, records: usize) {
    let ring = keys::load(dir, unlock).unwrap();
    let raw = st.get(Table::Meta, b"api_key_mac_key").unwrap().unwrap();
    let w: WrappedKeyV1 = postcard_v1(&raw);
    let api = ring
        .get(w.kek_version)
        .unwrap()
        .unwrap_key("api-key-mac", 0, &w.wrapped)
        .unwrap();
    let k = auth_record_key(api.expose());
    let mut seen = 0;
    for table in [Table::ApiKeys, Table::Shops, Table::Merchants, Table::Meta] {
        for (key, value) in st.scan(table, b"", 10_000).unwrap() {
            if table == Table::Meta && !key.starts_with(b"prefix/") {
                continue;
            }
            let at = [b"auth_mac/".as_slice(), table.name().as_bytes(), b"/", &key].concat();
            let seal: AuthSealV1 = postcard_v1(&st.get(Table::Meta, &at).unwrap().unwrap());
            let under = seal.issued_under.as_deref().unwrap_or("");
            assert_eq!(
                seal.mac.to_vec(),
                auth_record_mac(&k, table.name(), &key, &value, under),
                "seal of {} {}",
                table.name(),
                String::from_utf8_lossy(&key)
            );
            seen += 1;
        }
    }
    assert_eq!(seen, records);
    let marker = st.get(Table::Meta, b"auth_mac_sealed").unwrap().unwrap();
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&k).unwrap();
    m.update(b"auth-records-sealed\0");
    assert_eq!(marker, m.finalize().into_bytes().to_vec());
}

/// A value straight from the engine: redb table `table`, or sled key `tag ‖ key`.
fn engine_get(dir: &Path, backend: &str, table: &str, tag: u8, key: &[u8]) -> Option<Vec<u8>> {
    match backend {
        "redb" => {
            use redb::ReadableDatabase;
            let db = redb::Database::open(dir.join("panvault.redb")).unwrap();
            let tx = db.begin_read().unwrap();
            let def = redb::TableDefinition::<&[u8], &[u8]>::new(table);
            let t = tx.open_table(def).unwrap();
            redb::ReadableTable::get(&t, key)
                .unwrap()
                .map(|v| v.value().to_vec())
        }
        "sled" => {
            let db = sled::open(dir.join("sled")).unwrap();
            db.get([&[tag][..], key].concat())
                .unwrap()
                .map(|v| v.to_vec())
        }
        other => panic!("no backend {other}"),
    }
}

#[test]
fn fixture_vault_redb_v1() {
    check_fixture("vault-v1", "redb");
}

/// The redb vault as a crash left it: everything after `init` is in the journal only, so the
/// journal records written by today's code must replay.
#[test]
fn fixture_vault_redb_journal_v1() {
    check_fixture("vault-v1", "redb-journal");
}

#[test]
fn fixture_vault_sled_v1() {
    check_fixture("vault-v1", "sled");
}

/// Vaults whose authorization records carry MACs (issue 14 item 2), with a shop login and its
/// key: `tests/fixtures/vault-v2/`.
#[test]
fn fixture_vault_redb_v2() {
    check_fixture("vault-v2", "redb");
}

#[test]
fn fixture_vault_redb_journal_v2() {
    check_fixture("vault-v2", "redb-journal");
}

#[test]
fn fixture_vault_sled_v2() {
    check_fixture("vault-v2", "sled");
}

fn tokenize_req(t: &Value) -> TokenizeRequest {
    TokenizeRequest {
        pan: Zeroizing::new(s(&t["pan"]).into()),
        expiry_month: t["expiry_month"].as_i64().unwrap(),
        expiry_year: t["expiry_year"].as_i64().unwrap(),
        request_token: t["request_token"].as_str().map(str::to_string),
        cardholder_name: t["cardholder_name"]
            .as_str()
            .map(|n| Zeroizing::new(n.to_string())),
        ..TokenizeRequest::default()
    }
}

/// The cards of the fixture vaults (well-known test cards), per merchant 0 or 1. The fourth is
/// deleted again; the last is tokenized after the KEK rotation.
fn fixture_cards() -> Vec<(usize, Value)> {
    vec![
        (
            0,
            json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030, "cardholder_name": "J DOE"}),
        ),
        (
            0,
            json!({"pan": "5555555555554444", "expiry_month": 1, "expiry_year": 2031}),
        ),
        (
            0,
            json!({"pan": "378282246310005", "expiry_month": 6, "expiry_year": 2034, "cardholder_name": "Amex Holder", "request_token": "CARD_ON_FILE"}),
        ),
        (
            0,
            json!({"pan": "4012888888881881", "expiry_month": 3, "expiry_year": 2032}),
        ),
        (
            1,
            json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}),
        ),
        (
            1,
            json!({"pan": "6011111111111117", "expiry_month": 9, "expiry_year": 2033, "cardholder_name": "Post Rotation"}),
        ),
    ]
}

fn card_pan(i: usize) -> String {
    s(&fixture_cards()[i].1["pan"]).to_string()
}

/// Makes one fixture vault with the library (as `panvault init` and the HTTP API would) in
/// `out/<name>/data`, and its `manifest.json`: what went in, and the raw bytes it left.
///
/// With `snapshot`, the data dir is also copied to `out/<snapshot>/data` while the vault is
/// still open, after its last write was answered: a crash-consistent copy (as after SIGKILL)
/// whose engine holds only what `init` wrote, every later write being in the journal alone.
async fn make_fixture(out: &Path, backend: Backend, source: KeySource, snapshot: Option<&str>) {
    let root = out.join(backend.as_str());
    let dir = root.join("data");
    let passphrase = "vectors fixture passphrase v1";
    let vault = {
        let mut init = InitOptions::dev(backend);
        init.key_source = source;
        init.passphrase = Some(SecretString::new(passphrase.into()));
        Vault::init(&dir, init).unwrap();
        let unlock = match source {
            KeySource::Dev => Unlock::Dev,
            _ => Unlock::Passphrase(SecretString::new(passphrase.into())),
        };
        Vault::open(&dir, &unlock, Options::default()).unwrap()
    };
    let ctx = Ctx {
        actor: "vectors".into(),
        client: Some("127.0.0.1".into()),
        request_id: Some("req-vectors".into()),
    };
    let merchants = [
        vault
            .create_merchant(&ctx, "Vectors Shop One", Some("VECA"))
            .await
            .unwrap(),
        vault
            .create_merchant(&ctx, "Vectors Shop Two", Some("VECB"))
            .await
            .unwrap(),
    ];
    // A shop login of the first merchant and a key for it (v2: their seals, the key's with the
    // merchant it was issued under).
    vault
        .add_shop(&ctx, &merchants[0].merchant_id, "9000001")
        .await
        .unwrap();
    let shop_key = vault
        .create_api_key(
            &ctx,
            panvault::access::ApiKeyRequest {
                shop_login: Some("9000001".into()),
                scopes: vec![panvault::access::Scope::Read],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for (i, (m, mut card)) in fixture_cards().into_iter().enumerate() {
        if i == 5 {
            vault.rotate_kek(&ctx).await.unwrap();
        }
        let mid = merchants[m].merchant_id.clone();
        let t = vault
            .tokenize(&ctx, &mid, &tokenize_req(&card))
            .await
            .unwrap();
        card["merchant_id"] = json!(mid);
        card["token"] = json!(t.info.token);
        card["kind"] = json!(t.info.token_kind);
        card["brand"] = json!(t.info.brand);
        tokens.push(card);
    }
    let agreement = Agreement {
        id: "AGR-VECTORS-1".into(),
        kind: "UNSCHEDULED".into(),
    };
    vault
        .add_agreement(
            &ctx,
            s(&tokens[0]["merchant_id"]),
            s(&tokens[0]["token"]),
            agreement,
        )
        .await
        .unwrap();
    let deleted = tokens.remove(3);
    vault
        .delete(&ctx, s(&deleted["merchant_id"]), s(&deleted["token"]))
        .await
        .unwrap();
    let kek_versions = vault.kek_versions();
    if let Some(name) = snapshot {
        copy_dir(&dir, &out.join(name).join("data"));
    }
    vault.shutdown();
    drop(vault);

    let st = open_store(&dir).unwrap();
    for t in &mut tokens {
        let raw = st
            .get(Table::Tokens, s(&t["token"]).as_bytes())
            .unwrap()
            .unwrap();
        let rec: RecordV1 = postcard_v1(&raw);
        t["agreements"] = serde_json::to_value(&rec.agreements).unwrap();
        t["stored"] = json!(hex::encode(raw));
    }
    let merchants: Vec<Value> = merchants
        .iter()
        .map(|m| {
            let raw = st.get(Table::Merchants, m.merchant_id.as_bytes()).unwrap().unwrap();
            json!({"merchant_id": m.merchant_id, "name": m.name, "prefix": m.prefix.as_str(), "stored": hex::encode(raw)})
        })
        .collect();
    let v = audit::verify(st.as_ref(), None, false).unwrap();
    let entries = st.scan(Table::Audit, &audit::key(1), 1000).unwrap();
    let actions: Vec<String> = entries
        .iter()
        .map(|(_, b)| Entry::decode(b).unwrap().action)
        .collect();
    let head = st.get(Table::Meta, audit::HEAD_KEY).unwrap().unwrap();
    let auth_seals: serde_json::Map<String, Value> = st
        .scan(Table::Meta, b"auth_mac", 1000)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"auth_mac"))
        .map(|(k, v)| (String::from_utf8(k).unwrap(), json!(hex::encode(v))))
        .collect();
    let mut manifest = json!({
        "made_by": format!("panvault {} (tests/vectors.rs make_fixture_vaults)", env!("CARGO_PKG_VERSION")),
        "backend": backend.as_str(),
        "key_source": source.as_str(),
        "merchants": merchants,
        "tokens": tokens,
        "deleted": [{"merchant_id": deleted["merchant_id"], "token": deleted["token"]}],
        "kek_versions": kek_versions,
        "shop_key": {
            "api_key_id": shop_key.api_key_id,
            "api_key": shop_key.api_key.expose(),
            "merchant_id": merchants[0]["merchant_id"],
        },
        "auth_seals": auth_seals,
        "audit": {
            "entries": v.entries,
            "last_hash": v.last_hash,
            "last_stored": hex::encode(&entries.last().unwrap().1),
            "head": String::from_utf8(head).unwrap(),
            "actions": actions,
        },
    });
    if source == KeySource::File {
        manifest["passphrase"] = json!(passphrase);
    }
    drop(st);
    for (name, only_journal) in [(backend.as_str(), false)]
        .into_iter()
        .chain(snapshot.map(|n| (n, true)))
    {
        let root = out.join(name);
        manifest["engine_lacks_writes_after_open"] = json!(only_journal);
        manifest["zero_tails"] = strip_zero_tails(&root, &root.join("data"));
        std::fs::write(
            root.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
    }
}

/// Writes the fixture vaults into `$PANVAULT_VECTORS_OUT/{redb,sled}/` (see
/// `tests/fixtures/vault-v1/MAKE.md`): redb with the `file` key source (passphrase, default
/// argon2id parameters), sled with `dev`.
#[test]
#[ignore = "writes fixtures; run by hand (tests/fixtures/vault-v1/MAKE.md)"]
fn make_fixture_vaults() {
    let out = PathBuf::from(std::env::var("PANVAULT_VECTORS_OUT").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        make_fixture(&out, Backend::Redb, KeySource::File, Some("redb-journal")).await;
        make_fixture(&out, Backend::Sled, KeySource::Dev, None).await;
    });
}
