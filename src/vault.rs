//! The vault operations: tokenize, read, reveal, delete, merchants (contract 3-4).
//!
//! Write path (DESIGN "Write path"):
//!
//! 1. the caller validates, encrypts, fingerprints and makes its store lookups on its own
//!    thread, then queues a closure for the writer;
//! 2. the single **writer** thread takes everything waiting (up to `max_batch`), runs each
//!    closure against one batch (later closures see earlier writes of the same batch and only
//!    confirm the caller's lookups, see `Store::reget`), chains the audit entries, and writes
//!    the batch to the journal (`Store::write`): visible, not yet durable;
//! 3. the writer then `fdatasync`s the journal (`Store::sync`) and only then answers the
//!    batch's callers. Callers that arrive meanwhile wait in the queue: the next batch.
//!
//! Alone, a write waits for no timer; under load one sync carries many writes. Reads go
//! straight to the store and never wait for the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::access;
use crate::audit::{self, Chain, Event};
use crate::crypto::{self, Dek, DekPolicy, KdfParams, MacKey, Sealed, SecretKey, SecretString};
use crate::keys::{self, KeySource, Keyring, Unlock};
use crate::pan::{Brand, Cvv, Expiry, Pan};
use crate::store::{self, Backend, Stamped, Store, Table, WriteBatch};
use crate::token::{self, MerchantPrefix, RequestedToken, TokenKind, TokenRequest};
use crate::{Error, Result};

/// Most items in one batch request (contract 4).
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Default and maximum lifetime of a temporary token (contract 4).
pub const TEMP_TTL_DEFAULT: u64 = 900;
pub const TEMP_TTL_MAX: u64 = 3600;
/// Longest cardholder name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Attempts at a fresh random masked token before giving up (a collision needs the same
/// first 2, prefix and last 4, and one of 36^6 random parts).
const TOKEN_ATTEMPTS: usize = 16;

/// Tunables of an open vault.
#[derive(Clone, Debug)]
pub struct Options {
    pub dek_policy: DekPolicy,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Depth of the writer's queue; callers wait (asynchronously) when it is full.
    pub queue_depth: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dek_policy: DekPolicy::default(),
            max_batch: 1024,
            queue_depth: 8192,
        }
    }
}

/// How `init` sets up a vault.
#[derive(Debug)]
pub struct InitOptions {
    pub backend: Backend,
    pub key_source: KeySource,
    /// The operator secret: passphrase (`file`) or the token's user PIN (`pkcs11`).
    pub passphrase: Option<SecretString>,
    pub kdf: KdfParams,
    /// `shamir` keys: `(threshold, shares)`.
    pub shamir: Option<(usize, usize)>,
    /// `pkcs11` only: the module and token that hold the KEK.
    pub pkcs11: Option<crate::hsm::Pkcs11Config>,
}

impl InitOptions {
    /// An unprotected `dev` keyring (for trying and testing) on `backend`.
    pub fn dev(backend: Backend) -> Self {
        InitOptions {
            backend,
            key_source: KeySource::Dev,
            passphrase: None,
            kdf: KdfParams::default(),
            shamir: None,
            pkcs11: None,
        }
    }
}

/// The keys of an open vault (`GET /v1/sys/keys`). Never key material.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KeyStatus {
    pub key_source: &'static str,
    /// KEK versions held (after a rotation, only the newest).
    pub kek_versions: Vec<u32>,
    /// A DEK older than this is past its cryptoperiod (and rolls over on next use).
    pub dek_cryptoperiod_seconds: u64,
    /// Every KEK version with its state and age.
    pub keks: Vec<KekStatus>,
    pub deks: Vec<DekStatus>,
    /// The re-encryption job of this process, if one ran or runs.
    pub reencryption: Option<ReencryptJob>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KekStatus {
    pub version: u32,
    /// `active` (wraps every key) or `retired` (left by a rotation cut short; destroyed by the
    /// next one).
    pub state: &'static str,
    pub created_at: String,
    pub age_seconds: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DekStatus {
    pub id: u32,
    pub kek_version: u32,
    pub created_at: String,
    pub age_seconds: u64,
    pub past_cryptoperiod: bool,
    /// The DEK new records are encrypted under.
    pub current: bool,
    /// Records it encrypts.
    pub records: u64,
}

/// A page of audit entries (`GET /v1/audit`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<audit::Entry>,
    /// The `since` of the next page; null at the end of the chain.
    pub next: Option<u64>,
    /// On the page that ends at the chain's signed head: that head (`seq`, `hash`, `mac`), so a
    /// log system can check with `panvault audit verify` that nothing was cut from the tail.
    #[schema(value_type = Option<Object>)]
    pub signed_head: Option<audit::SignedHead>,
}

/// Progress of a background re-encryption job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReencryptJob {
    pub running: bool,
    /// Records under a DEK numbered below this one move (the DEK current at the start).
    pub below: u32,
    /// Tokens looked at, and records moved to the current DEK, by this job.
    pub scanned: u64,
    pub moved: u64,
    /// Tokens in the table when the job started (the progress bar's total).
    pub total: u64,
    pub destroyed: Vec<u32>,
    /// Why it stopped early, if it did (the next start resumes from its place).
    pub error: Option<String>,
    /// Milliseconds since the job started (until it ended, once it has).
    pub elapsed_ms: u64,
}

/// Tokens per re-encryption step, and the pause after each: at most ~25k tokens looked at per
/// second, so the job takes a bounded share of the writer and the CPU from live traffic
/// (BENCHMARKS.md: tokenize keeps >= 0.9x of its throughput while the job runs).
pub const REENCRYPT_BATCH: usize = 512;
pub const REENCRYPT_PAUSE: Duration = Duration::from_millis(20);

/// Where the re-encryption job keeps its place: its `below` (4 bytes, big-endian) and the last
/// token it handled.
const REENCRYPT_CURSOR: &[u8] = b"reencrypt_cursor";

/// What one re-encryption step did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReencryptStep {
    /// Tokens looked at.
    pub scanned: u64,
    /// Records moved to the current DEK.
    pub moved: u64,
    /// The pass reached the end of the token table.
    pub finished: bool,
    /// DEKs destroyed at the end of the pass (no record used them any more).
    pub destroyed: Vec<u32>,
}

/// What a KEK rotation did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// The KEK version now in use.
    pub kek_version: u32,
    /// The versions destroyed.
    pub destroyed: Vec<u32>,
    /// DEKs and `meta` keys re-wrapped.
    pub rewrapped: usize,
    pub millis: u64,
    /// `shamir` keys only: the new custodian shares (`pvshare1-<id>-<hex>`, 1..=N), shown this
    /// once; the old shares no longer unseal. Hand each to its custodian before the vault next
    /// needs unsealing (if this answer is lost, rotate again while the vault runs).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "expose_all")]
    #[schema(value_type = Vec<String>)]
    pub shares: Vec<SecretString>,
}

/// Serializes secrets that an answer exists to hand over (new custodian shares).
fn expose_all<S: serde::Serializer>(
    v: &[SecretString],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(SecretString::expose))
}

/// For the crash tests of multi-step key operations: with `PANVAULT_CRASH_AT=<point>` in the
/// environment the process aborts there, as a SIGKILL would stop it.
fn crash_point(point: &str) {
    if std::env::var("PANVAULT_CRASH_AT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

/// Who is calling, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// API key id, or `cli`/`system`.
    pub actor: String,
    pub client: Option<String>,
    pub request_id: Option<String>,
}

impl Ctx {
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

/// A tokenize request as it arrives (contract 4). Secret fields zeroize on drop.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub pan: Zeroizing<String>,
    pub expiry_month: i64,
    pub expiry_year: i64,
    #[serde(default)]
    pub request_token: Option<String>,
    #[serde(default)]
    pub cardholder_name: Option<Zeroizing<String>>,
    #[serde(default)]
    pub temporary: bool,
    #[serde(default)]
    pub cvv: Option<Zeroizing<String>>,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

impl std::fmt::Debug for TokenizeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeRequest")
            .field("pan", &"[REDACTED]")
            .field("request_token", &self.request_token)
            .field("temporary", &self.temporary)
            .finish_non_exhaustive()
    }
}

/// A PATCH of a token (contract 4). Secret fields zeroize on drop.
#[derive(Clone, Default)]
pub struct TokenUpdate {
    pub expiry_month: i64,
    pub expiry_year: i64,
    pub pan: Option<Zeroizing<String>>,
    pub cardholder_name: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for TokenUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenUpdate([REDACTED])")
    }
}

/// A stored-credential agreement made on a token (seed 004; filled by the gateway proxy): MPGS
/// `agreement.{id,type}`, Nexi `contractId`/`contractType`; Worldline and Axerve, which have no
/// agreement id, `<gateway>:<TYPE>` with the series' type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agreement {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a merchant may read about a token: never the PAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub token: String,
    pub token_kind: TokenKind,
    pub token_expiry_month: u8,
    pub token_expiry_year: u16,
    pub brand: Brand,
    pub bin: String,
    pub last4: String,
    pub masked_pan: String,
    pub expired: bool,
    pub created_at: String,
    pub agreements: Vec<Agreement>,
}

/// The answer of a tokenize: `created` is false when an existing token was returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    pub created: bool,
    pub info: TokenInfo,
}

/// A revealed card. Zeroized on drop; prints as `[REDACTED]`.
pub struct Revealed {
    pub pan: Pan,
    pub expiry: Expiry,
    pub cardholder_name: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revealed([REDACTED])")
    }
}

/// A merchant: a token-sharing group of shop logins (contract 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    pub merchant_id: String,
    pub name: String,
    pub prefix: MerchantPrefix,
}

/// The stored form of a token (DESIGN "Data at rest"). BIN, last 4, brand and expiry are in
/// clear, as PCI DSS 3.4.1 allows; the PAN and cardholder name only inside `sealed`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
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

/// Version byte in front of every postcard-encoded value.
const VALUE_VERSION: u8 = 1;

pub(crate) fn encode<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>> {
    postcard::to_extend(v, vec![VALUE_VERSION]).map_err(|_| Error::Encode { what })
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|_| Error::Corrupt { what })
        }
        _ => Err(Error::Corrupt { what }),
    }
}

#[derive(Serialize, Deserialize)]
struct DekRecord {
    kek_version: u32,
    wrapped: Sealed,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct VaultFile {
    format: u32,
    backend: String,
    key_source: KeySource,
    created_at: String,
}

/// Keys kept in `meta`, wrapped by the KEK: (meta key, wrap name).
const FINGERPRINT_KEY: (&[u8], &str) = (b"fingerprint_key", "fingerprint");
const API_KEY_MAC_KEY: (&[u8], &str) = (b"api_key_mac_key", "api-key-mac");
/// Signs the audit chain's head and checkpoints (src/audit.rs).
const AUDIT_MAC_KEY: (&[u8], &str) = (b"audit_mac_key", "audit-mac");
/// Every key kept in `meta`: a KEK rotation re-wraps them all.
const META_KEYS: [(&[u8], &str); 3] = [FINGERPRINT_KEY, API_KEY_MAC_KEY, AUDIT_MAC_KEY];

/// Wraps `key` under the current KEK in the stored form of a `meta` key.
fn wrap_meta_key(keyring: &Keyring, which: (&[u8], &str), key: &SecretKey) -> Result<Vec<u8>> {
    let kek = keyring.current()?;
    encode(
        &DekRecord {
            kek_version: kek.version(),
            wrapped: kek.wrap(which.1, 0, key)?,
            created_at: now_unix(),
        },
        "wrapped key",
    )
}

/// Unwraps a `meta` key, if the store has it.
fn load_meta_key(
    store: &dyn Store,
    keyring: &Keyring,
    which: (&[u8], &str),
) -> Result<Option<MacKey>> {
    let Some(bytes) = store.get(Table::Meta, which.0)? else {
        return Ok(None);
    };
    let rec: DekRecord = decode(&bytes, "wrapped key")?;
    let key = keyring
        .get(rec.kek_version)?
        .unwrap_key(which.1, 0, &rec.wrapped)?;
    MacKey::new(&key).map(Some)
}

/// Most audit entries one `audit prune` store write deletes.
const PRUNE_BATCH: usize = 10_000;

/// What `audit prune` did.
#[derive(Debug, Serialize)]
pub struct Pruned {
    pub deleted: u64,
    /// The chain's first entry now.
    pub first_kept: u64,
    /// Entries older than this (RFC 3339) were eligible.
    pub cutoff: String,
    pub retention_days: u64,
}

/// What `init` hands back once: the first admin API key.
#[derive(Debug)]
pub struct Initialized {
    pub admin_api_key_id: String,
    pub admin_api_key: SecretString,
    /// `shamir` keys: the custodian shares, 1..=N, which exist nowhere else.
    pub shares: Vec<SecretString>,
}

fn prefix_key(prefix: &MerchantPrefix) -> Vec<u8> {
    [b"prefix/".as_slice(), prefix.as_str().as_bytes()].concat()
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn vault_file(dir: &Path) -> PathBuf {
    dir.join("vault.json")
}

/// A validated card.
struct Card {
    pan: Pan,
    expiry: Expiry,
    name: Option<Zeroizing<String>>,
    request: TokenRequest,
    temporary: Option<(Option<Cvv>, u64)>,
}

fn validate(req: &TokenizeRequest) -> Result<Card> {
    let pan = Pan::parse(&req.pan)?;
    let expiry = Expiry::new(req.expiry_month, req.expiry_year)?;
    let request = TokenRequest::parse(req.request_token.as_deref())?;
    let name = match &req.cardholder_name {
        None => None,
        Some(n) => {
            if n.chars().count() > MAX_NAME_LEN {
                return Err(Error::InvalidField {
                    field: "cardholder_name",
                    reason: "at most 128 characters",
                });
            }
            if n.chars().any(char::is_control) {
                return Err(Error::InvalidField {
                    field: "cardholder_name",
                    reason: "control characters are not allowed",
                });
            }
            Some(n.clone())
        }
    };
    let temporary = if req.temporary {
        let cvv = req.cvv.as_deref().map(|c| Cvv::parse(c)).transpose()?;
        let ttl = match req.ttl_seconds {
            None => TEMP_TTL_DEFAULT,
            Some(t) if (1..=TEMP_TTL_MAX as i64).contains(&t) => t as u64,
            Some(_) => {
                return Err(Error::InvalidField {
                    field: "ttl_seconds",
                    reason: "must be 1 to 3600",
                });
            }
        };
        Some((cvv, ttl))
    } else {
        if req.cvv.is_some() {
            return Err(Error::InvalidField {
                field: "cvv",
                reason: "a CVV is only accepted on a temporary token and is never stored",
            });
        }
        if req.ttl_seconds.is_some() {
            return Err(Error::InvalidField {
                field: "ttl_seconds",
                reason: "only for temporary tokens",
            });
        }
        None
    };
    Ok(Card {
        pan,
        expiry,
        name,
        request,
        temporary,
    })
}

fn plaintext(pan: &Pan, name: Option<&Zeroizing<String>>) -> Zeroizing<Vec<u8>> {
    let name = name.map(|n| n.as_bytes()).unwrap_or_default();
    let mut p = Zeroizing::new(Vec::with_capacity(pan.len() + 1 + name.len()));
    p.extend_from_slice(pan.digits().as_bytes());
    p.push(0);
    p.extend_from_slice(name);
    p
}

/// A card held in memory only, for a temporary token.
struct TempCard {
    merchant_id: String,
    pan: Pan,
    expiry: Expiry,
    name: Option<Zeroizing<String>>,
    cvv: Option<Cvv>,
    created_at: u64,
    expires: Instant,
}

/// Group-commit figures, for benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches the writer wrote to the journal.
    pub commits: AtomicU64,
    /// Journal syncs; each acknowledges every batch written before it began.
    pub syncs: AtomicU64,
    pub writes: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Batches by size: <=1, <=2, <=4, ... <=512, >512.
    pub batch_hist: [AtomicU64; 11],
}

impl WriterStats {
    fn record(&self, n: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(n as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(n as u64, Ordering::Relaxed);
        let bucket = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
        if let Some(b) = self.batch_hist.get(bucket.min(10)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Keys {
    /// Written only by a KEK rotation.
    keyring: RwLock<Keyring>,
    fingerprint: MacKey,
    pub(crate) api_key_mac: MacKey,
    audit_mac: Arc<MacKey>,
    deks: RwLock<HashMap<u32, Arc<Dek>>>,
    current: RwLock<Arc<Dek>>,
    next_dek_id: AtomicU32,
    rollover: tokio::sync::Mutex<()>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Keys,
    opts: Options,
    queue: Mutex<Option<mpsc::Sender<Box<dyn Work>>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    merchants: RwLock<HashMap<String, Merchant>>,
    /// Every live API key by id; revocation removes it here in the same step as in the store.
    pub(crate) api_keys: RwLock<HashMap<String, access::ApiKeyRecord>>,
    tokens_created: [AtomicU64; 3],
    temps: Mutex<(HashMap<String, TempCard>, Instant)>,
    /// The background re-encryption job's progress (`GET /v1/sys/keys`).
    reencryption: Mutex<Option<ReencryptJob>>,
}

/// An open, unsealed vault. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the backend a data dir was created with.
pub fn backend_of(dir: &Path) -> Result<Backend> {
    let path = vault_file(dir);
    let bytes =
        std::fs::read(&path).map_err(|_| Error::NotInitialized(dir.display().to_string()))?;
    let f: VaultFile =
        serde_json::from_slice(&bytes).map_err(|_| Error::Corrupt { what: "vault.json" })?;
    f.backend.parse()
}

/// Opens only the store of a data dir (no keys needed): for `audit verify|export`.
pub fn open_store(dir: &Path) -> Result<Arc<dyn Store>> {
    store::open(backend_of(dir)?, dir)
}

/// The key that signs the audit chain of the (stopped) vault in `dir`, unwrapped with `unlock`;
/// none in a vault no version with signed audit heads has opened yet.
pub fn audit_mac_key(dir: &Path, store: &dyn Store, unlock: &Unlock) -> Result<Option<MacKey>> {
    let keyring = keys::load(dir, unlock)?;
    load_meta_key(store, &keyring, AUDIT_MAC_KEY)
}

/// True if `dir` holds a vault.
pub fn exists(dir: &Path) -> bool {
    vault_file(dir).exists() || keys::keyring_path(dir).exists()
}

impl Vault {
    /// Creates a new vault in `dir`: keyring, store, fingerprint key, audit genesis. Refuses
    /// to touch a directory that already holds a vault.
    pub fn init(dir: &Path, init: InitOptions) -> Result<Initialized> {
        if exists(dir) || store::exists(Backend::Redb, dir) || store::exists(Backend::Sled, dir) {
            return Err(Error::AlreadyInitialized(dir.display().to_string()));
        }
        keys::create_private_dir(dir)?;
        let (keyring, shares) = keys::create(
            dir,
            init.key_source,
            init.passphrase.as_ref(),
            init.kdf,
            init.shamir,
            init.pkcs11.as_ref(),
        )?;
        let store = store::open(init.backend, dir)?;
        let mut batch = WriteBatch::new();
        let fp = SecretKey::random();
        batch.put(
            Table::Meta,
            FINGERPRINT_KEY.0,
            wrap_meta_key(&keyring, FINGERPRINT_KEY, &fp)?,
        );
        let api_mac = SecretKey::random();
        batch.put(
            Table::Meta,
            API_KEY_MAC_KEY.0,
            wrap_meta_key(&keyring, API_KEY_MAC_KEY, &api_mac)?,
        );
        let audit_mac = SecretKey::random();
        batch.put(
            Table::Meta,
            AUDIT_MAC_KEY.0,
            wrap_meta_key(&keyring, AUDIT_MAC_KEY, &audit_mac)?,
        );
        let (record, secret) = access::new_api_key(
            &MacKey::new(&api_mac)?,
            None,
            access::ADMIN_SCOPES.to_vec(),
            Some("initial admin key".into()),
        )?;
        batch.put(
            Table::ApiKeys,
            record.id.as_bytes(),
            encode(&record, "api key")?,
        );
        let cli = Ctx {
            actor: "cli".into(),
            ..Ctx::default()
        };
        let mut chain = Chain::load(store.as_ref(), Some(Arc::new(MacKey::new(&audit_mac)?)))?;
        chain.append_all(
            [
                cli.event("vault_init", None, None, "ok"),
                cli.event("api_key_create", None, Some(&record.id), "ok"),
            ],
            &rfc3339(now_unix()),
            |seq, bytes| batch.put(Table::Audit, audit::key(seq), bytes),
        )?;
        if let Some(head) = chain.signed_head() {
            batch.put(Table::Meta, audit::HEAD_KEY, head);
        }
        store.commit(&batch)?;
        drop(store);
        let vf = VaultFile {
            format: 1,
            backend: init.backend.to_string(),
            key_source: init.key_source,
            created_at: rfc3339(now_unix()),
        };
        keys::write_private(
            &vault_file(dir),
            &serde_json::to_vec_pretty(&vf).map_err(|_| Error::Encode { what: "vault.json" })?,
        )?;
        Ok(Initialized {
            admin_api_key_id: record.id,
            admin_api_key: secret,
            shares,
        })
    }

    /// Opens and unlocks the vault in `dir`, starts its writer, and puts a fresh DEK in use
    /// (a new process never continues an old DEK's use counter).
    pub fn open(dir: &Path, unlock: &Unlock, opts: Options) -> Result<Vault> {
        let backend = backend_of(dir)?;
        let keyring = keys::load(dir, unlock)?;
        let store = store::open(backend, dir)?;

        let fingerprint =
            load_meta_key(store.as_ref(), &keyring, FINGERPRINT_KEY)?.ok_or(Error::Corrupt {
                what: "fingerprint key",
            })?;

        let mut deks = HashMap::new();
        let mut last_id = 0u32;
        store::for_each(store.as_ref(), Table::Deks, &[], |k, v| {
            let id = u32::from_be_bytes(
                k.try_into()
                    .map_err(|_| Error::Corrupt { what: "dek id" })?,
            );
            let rec: DekRecord = decode(v, "dek")?;
            let key = keyring
                .get(rec.kek_version)?
                .unwrap_key("dek", id, &rec.wrapped)?;
            deks.insert(id, Arc::new(Dek::new(id, &key)));
            last_id = last_id.max(id);
            Ok(())
        })?;

        // This process's first DEK is written before the writer starts: a new process never
        // continues an old DEK's use counter.
        let mut batch = WriteBatch::new();
        // A vault made before signed audit heads gets its audit MAC key here. With a key, the
        // chain must end at its signed head: an open never signs a chain edited on disk.
        let audit_mac = Arc::new(
            match load_meta_key(store.as_ref(), &keyring, AUDIT_MAC_KEY)? {
                Some(k) => {
                    audit::check_tail(store.as_ref(), &k)?;
                    k
                }
                None => {
                    let k = SecretKey::random();
                    batch.put(
                        Table::Meta,
                        AUDIT_MAC_KEY.0,
                        wrap_meta_key(&keyring, AUDIT_MAC_KEY, &k)?,
                    );
                    MacKey::new(&k)?
                }
            },
        );
        let mut chain = Chain::load(store.as_ref(), Some(audit_mac.clone()))?;
        let first_id = last_id + 1;
        let first_key = SecretKey::random();
        let kek = keyring.current()?;
        let rec = DekRecord {
            kek_version: kek.version(),
            wrapped: kek.wrap("dek", first_id, &first_key)?,
            created_at: now_unix(),
        };
        chain.append_all(
            [Ctx::system().event("dek_create", None, None, "ok")],
            &rfc3339(now_unix()),
            |seq, bytes| batch.put(Table::Audit, audit::key(seq), bytes),
        )?;
        if let Some(head) = chain.signed_head() {
            batch.put(Table::Meta, audit::HEAD_KEY, head);
        }
        batch.put(Table::Deks, first_id.to_be_bytes(), encode(&rec, "dek")?);
        // A vault made before API keys existed gets its API key MAC key here.
        let api_key_mac = match load_meta_key(store.as_ref(), &keyring, API_KEY_MAC_KEY)? {
            Some(k) => k,
            None => {
                let k = SecretKey::random();
                batch.put(
                    Table::Meta,
                    API_KEY_MAC_KEY.0,
                    wrap_meta_key(&keyring, API_KEY_MAC_KEY, &k)?,
                );
                MacKey::new(&k)?
            }
        };
        store.commit(&batch)?;
        if keys::source_of(dir)? == KeySource::Dev {
            tracing::warn!(
                "dev key source: the KEK is stored unprotected; never use this outside testing"
            );
        }
        let api_keys = access::load_api_keys(store.as_ref())?;
        let first = Arc::new(Dek::new(first_id, &first_key));
        deks.insert(first_id, first.clone());

        let stats = Arc::new(WriterStats::default());
        let (tx, rx) = mpsc::channel::<Box<dyn Work>>(opts.queue_depth.max(1));
        let writer = {
            let store = store.clone();
            let stats = stats.clone();
            let max_batch = opts.max_batch.max(1);
            // A runtime of its own for the queue and the timer; the thread blocks in the store.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| Error::io("writer runtime", e))?;
            std::thread::Builder::new()
                .name("panvault-writer".into())
                .spawn(move || {
                    rt.block_on(writer_loop(store.as_ref(), rx, chain, max_batch, &stats));
                })
                .map_err(|e| Error::io("writer thread", e))?
        };
        let inner = Inner {
            dir: dir.to_path_buf(),
            store,
            keys: Keys {
                keyring: RwLock::new(keyring),
                fingerprint,
                api_key_mac,
                audit_mac,
                deks: RwLock::new(deks),
                current: RwLock::new(first),
                next_dek_id: AtomicU32::new(first_id + 1),
                rollover: tokio::sync::Mutex::new(()),
            },
            opts,
            queue: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer]),
            stats,
            merchants: RwLock::new(HashMap::new()),
            api_keys: RwLock::new(api_keys),
            tokens_created: Default::default(),
            temps: Mutex::new((HashMap::new(), Instant::now())),
            reencryption: Mutex::new(None),
        };
        Ok(Vault {
            inner: Arc::new(inner),
        })
    }

    /// Ok while the vault takes writes (unsealed, writer running); for `/readyz`.
    pub fn ready(&self) -> Result<()> {
        if lock(&self.inner.queue).is_some() {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.store.backend()
    }

    /// Tokens created since this process started, by kind (for `/metrics`).
    pub fn tokens_created(&self) -> [(&'static str, u64); 3] {
        let c = &self.inner.tokens_created;
        [
            ("masked", c[0].load(Ordering::Relaxed)),
            ("custom", c[1].load(Ordering::Relaxed)),
            ("temporary", c[2].load(Ordering::Relaxed)),
        ]
    }

    fn count_created(&self, t: &Tokenized) {
        if t.created {
            let i = match t.info.token_kind {
                TokenKind::Masked => 0,
                TokenKind::Custom => 1,
                TokenKind::Temporary => 2,
            };
            self.inner.tokens_created[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Group-commit figures since open.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Stops taking writes, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(&self) {
        drop(lock(&self.inner.queue).take());
        // The writer ends when its queue is closed and what was queued is durable.
        for h in lock(&self.inner.threads).drain(..) {
            let _ = h.join();
        }
    }

    /// Runs `f` on the writer inside the next group commit; answers once that commit is durable.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let rx = self.enqueue(f).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    async fn enqueue<R, F>(&self, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        self.enqueue_job(f, None, false).await
    }

    /// Queues `f` for the writer; `written` hears when its batch is in the journal. A
    /// `detached` write is one whose caller will not wait for its answer (see `Work::unwaited`).
    async fn enqueue_job<R, F>(
        &self,
        f: F,
        written: Option<oneshot::Sender<()>>,
        detached: bool,
    ) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let sender = lock(&self.inner.queue).clone().ok_or(Error::ShuttingDown)?;
        sender
            .send(Box::new(Job {
                f: Some(f),
                out: None,
                reply,
                written,
                detached,
            }))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }

    async fn new_dek(&self) -> Result<Arc<Dek>> {
        let keys = &self.inner.keys;
        let id = keys.next_dek_id.fetch_add(1, Ordering::Relaxed);
        let key = SecretKey::random();
        let rec = {
            let keyring = read_lock(&keys.keyring);
            let kek = keyring.current()?;
            DekRecord {
                kek_version: kek.version(),
                wrapped: kek.wrap("dek", id, &key)?,
                created_at: now_unix(),
            }
        };
        let value = encode(&rec, "dek")?;
        let dek = Arc::new(Dek::new(id, &key));
        self.write(move |tx| {
            tx.put(Table::Deks, id.to_be_bytes(), value);
            tx.audit(Ctx::system().event("dek_create", None, None, "ok"));
            Ok(())
        })
        .await?;
        write_lock(&keys.deks).insert(id, dek.clone());
        Ok(dek)
    }

    /// Rotates the KEK online (contract 5): a new KEK version goes into the keyring, every DEK
    /// and the `meta` keys are re-wrapped under it in one durable commit, and the older
    /// versions are destroyed. Requests keep being served throughout (DEKs are in memory); no
    /// DEK is created meanwhile. A crash between the steps leaves a keyring holding every
    /// version the store refers to: the vault opens, and a new rotation finishes the job.
    pub async fn rotate_kek(&self, ctx: &Ctx) -> Result<Rotation> {
        let keys = &self.inner.keys;
        let _no_new_dek = keys.rollover.lock().await;
        let started = Instant::now();
        let dir = self.dir().to_path_buf();
        let (old, new, shares) = {
            let mut keyring = write_lock(&keys.keyring);
            let old = keyring.versions();
            let (new, shares) = keys::add_version_with_shares(&dir, &mut keyring)?;
            (old, new, shares)
        };
        crash_point("rotate:added");
        // Every wrapped key in the store, re-wrapped under the new version.
        let store = self.inner.store.as_ref();
        let mut puts: Vec<(Table, Vec<u8>, Vec<u8>)> = Vec::new();
        {
            let keyring = read_lock(&keys.keyring);
            let kek = keyring.get(new)?;
            let mut rewrap = |table: Table, key: &[u8], name: &str, id: u32, v: &[u8]| {
                let rec: DekRecord = decode(v, "wrapped key")?;
                if rec.kek_version == new {
                    return Ok(());
                }
                let plain = keyring
                    .get(rec.kek_version)?
                    .unwrap_key(name, id, &rec.wrapped)?;
                let fresh = DekRecord {
                    kek_version: new,
                    wrapped: kek.wrap(name, id, &plain)?,
                    created_at: rec.created_at,
                };
                puts.push((table, key.to_vec(), encode(&fresh, "wrapped key")?));
                Ok(())
            };
            store::for_each(store, Table::Deks, &[], |k, v| {
                let id = u32::from_be_bytes(
                    k.try_into()
                        .map_err(|_| Error::Corrupt { what: "dek id" })?,
                );
                rewrap(Table::Deks, k, "dek", id, v)
            })?;
            for which in META_KEYS {
                if let Some(v) = store.get(Table::Meta, which.0)? {
                    rewrap(Table::Meta, which.0, which.1, 0, &v)?;
                }
            }
        }
        let rewrapped = puts.len();
        let versions = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut ev = ctx.event("kek_rotate", None, None, "ok");
        ev.detail = Some(format!(
            "new kek v{new}; re-wrapped {rewrapped} keys from v{}{}",
            versions(&old),
            if shares.is_empty() {
                String::new()
            } else {
                format!("; {} new custodian shares issued", shares.len())
            }
        ));
        self.write(move |tx| {
            for (table, k, v) in puts {
                tx.put(table, k, v);
            }
            tx.audit(ev);
            Ok(())
        })
        .await?;
        crash_point("rotate:rewrapped");
        let destroyed = keys::destroy_older(&dir, &mut write_lock(&keys.keyring), new)?;
        let mut ev = ctx.event("kek_destroy", None, None, "ok");
        ev.detail = Some(format!("destroyed kek v{}", versions(&destroyed)));
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await?;
        Ok(Rotation {
            kek_version: new,
            destroyed,
            rewrapped,
            millis: started.elapsed().as_millis() as u64,
            shares,
        })
    }

    /// What `GET /v1/sys/keys` and `panvault keys status` show: the KEK versions, and every DEK
    /// with the KEK version wrapping it, its age against the configured cryptoperiod and the
    /// number of records it encrypts (a scan of the token table: seconds for millions).
    pub fn key_status(&self) -> Result<KeyStatus> {
        let store = self.inner.store.as_ref();
        let mut counts: HashMap<u32, u64> = HashMap::new();
        store::for_each(store, Table::Tokens, &[], |_, v| {
            let rec: Record = decode(v, "token record")?;
            *counts.entry(rec.dek_id).or_default() += 1;
            Ok(())
        })?;
        let now = now_unix();
        let current = read_lock(&self.inner.keys.current).id();
        let cryptoperiod = self.inner.opts.dek_policy.max_age.as_secs();
        let mut deks = Vec::new();
        store::for_each(store, Table::Deks, &[], |k, v| {
            let id = u32::from_be_bytes(
                k.try_into()
                    .map_err(|_| Error::Corrupt { what: "dek id" })?,
            );
            let rec: DekRecord = decode(v, "dek")?;
            let age_seconds = now.saturating_sub(rec.created_at);
            deks.push(DekStatus {
                id,
                kek_version: rec.kek_version,
                created_at: rfc3339(rec.created_at),
                age_seconds,
                past_cryptoperiod: age_seconds > cryptoperiod,
                current: id == current,
                records: counts.get(&id).copied().unwrap_or(0),
            });
            Ok(())
        })?;
        let versions = self.kek_versions();
        let newest = versions.last().copied().unwrap_or_default();
        let keks = keys::kek_dates(self.dir())?
            .into_iter()
            .filter(|(v, _)| versions.contains(v))
            .map(|(version, created_at)| KekStatus {
                version,
                state: if version == newest {
                    "active"
                } else {
                    "retired"
                },
                age_seconds: humantime::parse_rfc3339(&created_at)
                    .ok()
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                    .map_or(0, |d| d.as_secs()),
                created_at,
            })
            .collect();
        Ok(KeyStatus {
            key_source: keys::source_of(self.dir())?.as_str(),
            keks,
            kek_versions: versions,
            dek_cryptoperiod_seconds: cryptoperiod,
            deks,
            reencryption: match self.reencryption() {
                Some(job) => Some(job),
                // A job cut short (by a restart, or the offline command killed) left its place.
                None => match self.inner.store.get(Table::Meta, REENCRYPT_CURSOR)? {
                    Some(_) => Some(ReencryptJob {
                        below: self.reencrypt_below()?,
                        error: Some("interrupted: starting the job again resumes it".into()),
                        ..ReencryptJob::default()
                    }),
                    None => None,
                },
            },
        })
    }

    /// One step of the re-encryption job (contract 5): re-encrypts, under the current DEK, the
    /// records among the next `limit` tokens after the stored cursor that a DEK numbered below
    /// `below` encrypts (the job passes the DEK current when it started, so it ends even when
    /// DEKs roll over meanwhile), and moves the cursor, in one durable commit. A record changed or deleted since
    /// it was read is left alone (the change wins). Once a pass reaches the end, every DEK that
    /// no record uses any more (other than the current one) is destroyed: its wrapped key is
    /// deleted from the store and dropped from memory (crypto-shredding), and audited.
    pub async fn reencrypt_step(
        &self,
        ctx: &Ctx,
        below: u32,
        limit: usize,
    ) -> Result<ReencryptStep> {
        let store = self.inner.store.as_ref();
        let start = match store.get(Table::Meta, REENCRYPT_CURSOR)? {
            Some(c) if c.len() > 4 => {
                let mut after = c[4..].to_vec();
                after.push(0);
                after
            }
            _ => Vec::new(),
        };
        let page = store.scan_recent(Table::Tokens, &start, limit.max(1))?;
        let finished = page.len() < limit.max(1);
        let mut updates = Vec::new();
        for (k, _) in &page {
            // The newest value, not the engine's possibly older one.
            let Some(old) = store.get(Table::Tokens, k)? else {
                continue;
            };
            let rec: Record = decode(&old, "token record")?;
            if rec.dek_id >= below {
                continue;
            }
            let token = std::str::from_utf8(k).map_err(|_| Error::Corrupt { what: "token" })?;
            let plain = self
                .dek(rec.dek_id)?
                .open_record(&rec.merchant_id, token, &rec.sealed)?;
            let dek = self.dek_for_encryption().await?;
            let mut fresh = rec.clone();
            fresh.dek_id = dek.id();
            fresh.sealed = dek.seal_record(&rec.merchant_id, token, &plain)?;
            updates.push((k.clone(), old, encode(&fresh, "token record")?));
        }
        let last = page.last().map(|(k, _)| k.clone());
        let scanned = page.len() as u64;
        let moved = self
            .write(move |tx| {
                let mut moved = 0u64;
                for (k, old, new) in updates {
                    if tx.get(Table::Tokens, &k)?.as_deref() == Some(old.as_slice()) {
                        tx.put(Table::Tokens, k, new);
                        moved += 1;
                    }
                }
                match (finished, last) {
                    (false, Some(l)) => tx.put(
                        Table::Meta,
                        REENCRYPT_CURSOR,
                        [&below.to_be_bytes()[..], &l].concat(),
                    ),
                    _ => tx.delete(Table::Meta, REENCRYPT_CURSOR),
                }
                Ok(moved)
            })
            .await?;
        crash_point("reencrypt:step");
        let destroyed = if finished {
            self.destroy_drained_deks(ctx).await?
        } else {
            Vec::new()
        };
        Ok(ReencryptStep {
            scanned,
            moved,
            finished,
            destroyed,
        })
    }

    /// A page of the audit chain (contract 7, `GET /v1/audit`): up to `limit` entries from
    /// `since` on, and the `seq` the next page starts at (none at the end). Reading the audit
    /// trail is itself audited (`audit_read`, PCI DSS 10.2.1.3), durably, before the answer.
    pub async fn audit_page(&self, ctx: &Ctx, since: u64, limit: usize) -> Result<AuditPage> {
        let mut ev = ctx.event("audit_read", None, None, "ok");
        ev.detail = Some(format!("since {since}, limit {limit}"));
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await?;
        // The head first: every entry up to it is in the store by the time of the scan.
        let head = audit::SignedHead::load(self.inner.store.as_ref())?;
        let rows = self
            .inner
            .store
            .scan(Table::Audit, &audit::key(since.max(1)), limit + 1)?;
        let mut entries = rows
            .iter()
            .map(|(_, v)| audit::Entry::decode(v))
            .collect::<Result<Vec<_>>>()?;
        let mut next = if entries.len() > limit {
            entries.pop().map(|e| e.seq)
        } else {
            None
        };
        // Entries written after the head was read go to the next page, so that the page that
        // reaches the head can carry it.
        if let Some(h) = &head
            && entries.first().is_some_and(|e| e.seq <= h.seq)
            && entries.last().is_some_and(|e| e.seq > h.seq)
        {
            entries.retain(|e| e.seq <= h.seq);
            next = Some(h.seq.saturating_add(1));
        }
        let last = entries.last().map(|e| e.seq);
        let signed_head = head.filter(|h| Some(h.seq) == last);
        Ok(AuditPage {
            entries,
            next,
            signed_head,
        })
    }

    /// `audit prune`: deletes the oldest audit entries, those older than `retention_days`
    /// (at least [`audit::MIN_RETENTION_DAYS`]) that the operator has exported
    /// (`seq <= exported_through`), and leaves a signed anchor where the chain now starts.
    pub async fn audit_prune(
        &self,
        ctx: &Ctx,
        retention_days: u64,
        exported_through: u64,
    ) -> Result<Pruned> {
        audit::check_retention(retention_days)?;
        let cutoff = rfc3339(now_unix().saturating_sub(retention_days.saturating_mul(86_400)));
        let mut report = self.prune_before(ctx, &cutoff, exported_through).await?;
        report.retention_days = retention_days;
        Ok(report)
    }

    /// Deletes entries from the chain's start while their time is before `cutoff` and their
    /// seq at most `exported_through`, in store writes of at most [`PRUNE_BATCH`] entries,
    /// each moving the signed anchor with it.
    pub(crate) async fn prune_before(
        &self,
        ctx: &Ctx,
        cutoff: &str,
        exported_through: u64,
    ) -> Result<Pruned> {
        // Only a chain that verifies, MACs included, is pruned: deleting and re-anchoring a
        // broken one would hide the break.
        let verified = self.verify_audit()?;
        let store = self.inner.store.as_ref();
        let first = verified.first_seq.max(1);
        let mut next = first;
        let mut batches = 0u64;
        loop {
            let rows = store.scan(Table::Audit, &audit::key(next), PRUNE_BATCH)?;
            let mut last: Option<(u64, String)> = None;
            for (_, v) in &rows {
                let e = audit::Entry::decode(v)?;
                let expect = last.as_ref().map_or(next, |l| l.0.saturating_add(1));
                if e.seq != expect {
                    return Err(Error::AuditBroken {
                        seq: expect,
                        reason: "sequence number out of order (entry missing or inserted)",
                    });
                }
                // Never past the chain's end at the start: each batch appends an entry itself.
                if e.seq > exported_through.min(verified.last_seq) || e.time.as_str() >= cutoff {
                    break;
                }
                last = Some((e.seq, e.hash));
            }
            let Some((seq, hash)) = last else { break };
            let anchor = audit::SignedHead::anchor(&self.inner.keys.audit_mac, seq, &hash)?;
            let from = next;
            // Each store write deletes, moves the anchor and says so in the chain, so a prune
            // cut short by a crash is still on record for what it did.
            let mut ev = ctx.event("audit_prune", None, None, "ok");
            ev.detail = Some(format!(
                "deleted entries {from}..={seq} (before {cutoff}, exported through {exported_through})"
            ));
            self.write(move |tx| {
                for s in from..=seq {
                    tx.delete(Table::Audit, audit::key(s));
                }
                tx.put(Table::Meta, audit::ANCHOR_KEY, anchor);
                tx.audit(ev);
                Ok(())
            })
            .await?;
            batches += 1;
            next = seq.saturating_add(1);
        }
        if batches == 0 {
            let mut ev = ctx.event("audit_prune", None, None, "ok");
            ev.detail = Some(format!(
                "nothing to delete (before {cutoff}, exported through {exported_through})"
            ));
            self.write(move |tx| {
                tx.audit(ev);
                Ok(())
            })
            .await?;
        }
        Ok(Pruned {
            deleted: next - first,
            first_kept: next,
            cutoff: cutoff.to_string(),
            retention_days: 0,
        })
    }

    /// Every API key: id, scopes, shop login (none: admin), creation time (RFC 3339).
    pub fn api_key_records(&self) -> Vec<(String, Vec<String>, Option<String>, String)> {
        let mut v: Vec<_> = read_lock(&self.inner.api_keys)
            .values()
            .map(|r| {
                (
                    r.id.clone(),
                    r.scopes.iter().map(|s| s.as_str().to_string()).collect(),
                    r.shop_login.clone(),
                    rfc3339(r.created_at()),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The store, for reports that read it directly (the evidence report).
    /// Verifies the audit chain as it is now, MACs included (`audit verify` of a live vault).
    pub fn verify_audit(&self) -> Result<audit::Verified> {
        audit::verify(
            self.inner.store.as_ref(),
            Some(&self.inner.keys.audit_mac),
            true,
        )
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The re-encryption job of this process, if one ran or runs.
    pub fn reencryption(&self) -> Option<ReencryptJob> {
        lock(&self.inner.reencryption).clone()
    }

    /// The `below` of the next re-encryption job: that of a job cut short (which it resumes,
    /// so the records that job moved already are not called old again), else the current DEK.
    pub fn reencrypt_below(&self) -> Result<u32> {
        Ok(match self.inner.store.get(Table::Meta, REENCRYPT_CURSOR)? {
            Some(c) if c.len() > 4 => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            _ => read_lock(&self.inner.keys.current).id(),
        })
    }

    /// Starts the re-encryption job in the background (on the caller's async runtime, so call
    /// it from an actix worker or a `LocalSet`) unless one runs, and returns its progress. It
    /// moves every record under a DEK older than the current one, from the stored cursor on
    /// (a job cut short by a restart resumes where it stopped), and is audited at its start and
    /// its end.
    pub async fn start_reencryption(&self, ctx: &Ctx) -> Result<ReencryptJob> {
        let below = self.reencrypt_below()?;
        {
            let mut job = lock(&self.inner.reencryption);
            if let Some(j) = job.as_ref().filter(|j| j.running) {
                return Ok(j.clone());
            }
            *job = Some(ReencryptJob {
                running: true,
                below,
                total: self.inner.store.count(Table::Tokens)?,
                ..ReencryptJob::default()
            });
        }
        if let Err(e) = self.audit_reencrypt_start(ctx, below).await {
            if let Some(j) = lock(&self.inner.reencryption).as_mut() {
                j.running = false;
            }
            return Err(e);
        }
        let (vault, ctx) = (self.clone(), ctx.clone());
        let started = Instant::now();
        tokio::task::spawn_local(async move {
            let outcome = loop {
                let step = vault.reencrypt_step(&ctx, below, REENCRYPT_BATCH).await;
                {
                    let mut job = lock(&vault.inner.reencryption);
                    let Some(j) = job.as_mut() else { return };
                    j.elapsed_ms = started.elapsed().as_millis() as u64;
                    match &step {
                        Ok(s) => {
                            j.scanned += s.scanned;
                            j.moved += s.moved;
                            j.destroyed.extend(&s.destroyed);
                        }
                        Err(e) => j.error = Some(e.code().to_string()),
                    }
                }
                match step {
                    Ok(s) if !s.finished => tokio::time::sleep(REENCRYPT_PAUSE).await,
                    Ok(_) => break "ok",
                    Err(_) => break "failed",
                }
            };
            let done = lock(&vault.inner.reencryption).clone().unwrap_or_default();
            let audited = vault.audit_reencrypt_end(&ctx, outcome, &done).await;
            if let Some(j) = lock(&vault.inner.reencryption).as_mut() {
                j.running = false;
                if let Err(e) = audited {
                    j.error.get_or_insert_with(|| e.code().to_string());
                }
            }
        });
        Ok(lock(&self.inner.reencryption).clone().unwrap_or_default())
    }

    /// Audits the start of a re-encryption job (HTTP or CLI).
    pub async fn audit_reencrypt_start(&self, ctx: &Ctx, below: u32) -> Result<()> {
        let mut ev = ctx.event("reencrypt", None, None, "started");
        ev.detail = Some(format!(
            "records under dek < {below} move to the current dek"
        ));
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await
    }

    /// Audits the end of a re-encryption job: `ok` or `failed`, and what it did.
    pub async fn audit_reencrypt_end(
        &self,
        ctx: &Ctx,
        outcome: &'static str,
        job: &ReencryptJob,
    ) -> Result<()> {
        let mut ev = ctx.event("reencrypt", None, None, outcome);
        ev.detail = Some(format!(
            "scanned {} moved {} destroyed dek {:?}",
            job.scanned, job.moved, job.destroyed
        ));
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await
    }

    /// Deletes every DEK that no record uses and that is not current.
    async fn destroy_drained_deks(&self, ctx: &Ctx) -> Result<Vec<u32>> {
        let keys = &self.inner.keys;
        // No DEK becomes current meanwhile, so no one can pick up a non-current one anew.
        let _no_new_dek = keys.rollover.lock().await;
        // A non-current DEK that only the key map holds is in no write in flight (writes hold
        // their DEK until their record is written); the empty write then waits until every
        // such record is committed, so the count below sees it.
        let idle: Vec<u32> = read_lock(&keys.deks)
            .iter()
            .filter(|(_, d)| Arc::strong_count(d) == 1)
            .map(|(id, _)| *id)
            .collect();
        self.write(|_| Ok(())).await?;
        let status = self.key_status()?;
        let drained: Vec<u32> = status
            .deks
            .iter()
            .filter(|d| d.records == 0 && !d.current && idle.contains(&d.id))
            .map(|d| d.id)
            .collect();
        if drained.is_empty() {
            return Ok(drained);
        }
        let mut ev = ctx.event("dek_destroy", None, None, "ok");
        ev.detail = Some(format!(
            "destroyed dek {}",
            drained
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        let gone = drained.clone();
        self.write(move |tx| {
            for id in gone {
                tx.delete(Table::Deks, id.to_be_bytes());
            }
            tx.audit(ev);
            Ok(())
        })
        .await?;
        let mut deks = write_lock(&keys.deks);
        for id in &drained {
            deks.remove(id);
        }
        Ok(drained)
    }

    /// The KEK versions in memory (oldest first).
    pub fn kek_versions(&self) -> Vec<u32> {
        read_lock(&self.inner.keys.keyring).versions()
    }

    /// The DEK for the next encryption, rolling over when the policy says so.
    async fn dek_for_encryption(&self) -> Result<Arc<Dek>> {
        let keys = &self.inner.keys;
        let policy = &self.inner.opts.dek_policy;
        let dek = read_lock(&keys.current).clone();
        if dek.take_use(policy) {
            return Ok(dek);
        }
        let _g = keys.rollover.lock().await;
        let cur = read_lock(&keys.current).clone();
        if cur.id() != dek.id() && cur.take_use(policy) {
            return Ok(cur);
        }
        let fresh = self.new_dek().await?;
        fresh.take_use(policy);
        *write_lock(&keys.current) = fresh.clone();
        Ok(fresh)
    }

    fn dek(&self, id: u32) -> Result<Arc<Dek>> {
        read_lock(&self.inner.keys.deks)
            .get(&id)
            .cloned()
            .ok_or(Error::Corrupt {
                what: "record names an unknown DEK",
            })
    }

    /// Creates a merchant with the requested prefix, or a random free one.
    pub async fn create_merchant(
        &self,
        ctx: &Ctx,
        name: &str,
        prefix: Option<&str>,
    ) -> Result<Merchant> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(Error::InvalidField {
                field: "name",
                reason: "1 to 128 printable characters",
            });
        }
        access::refuse_card_number("name", name)?;
        let asked = prefix.map(MerchantPrefix::parse).transpose()?;
        let merchant_id = format!(
            "mer_{}",
            data_encoding::BASE32_NOPAD
                .encode(&crypto::random_bytes::<10>())
                .to_lowercase()
        );
        let name = name.to_string();
        let ctx = ctx.clone();
        let m = self
            .write(move |tx| {
                let mut rng = rand::rngs::OsRng;
                for _ in 0..64 {
                    let p = asked.unwrap_or_else(|| MerchantPrefix::random(&mut rng));
                    if tx.get(Table::Meta, &prefix_key(&p))?.is_some() {
                        if asked.is_some() {
                            tx.audit(ctx.event("merchant_create", None, None, "prefix_taken"));
                            return Ok(None);
                        }
                        continue;
                    }
                    let m = Merchant {
                        merchant_id: merchant_id.clone(),
                        name: name.clone(),
                        prefix: p,
                    };
                    tx.put(Table::Meta, prefix_key(&p), merchant_id.as_bytes());
                    tx.put(
                        Table::Merchants,
                        merchant_id.as_bytes(),
                        encode(&m, "merchant")?,
                    );
                    tx.audit(ctx.event("merchant_create", Some(&merchant_id), None, "ok"));
                    return Ok(Some(m));
                }
                Err(Error::Exhausted {
                    what: "merchant prefix",
                })
            })
            .await?
            .ok_or(Error::PrefixTaken)?;
        write_lock(&self.inner.merchants).insert(m.merchant_id.clone(), m.clone());
        Ok(m)
    }

    /// Looks a merchant up by its prefix.
    pub fn merchant_by_prefix(&self, prefix: &str) -> Result<Option<Merchant>> {
        let prefix = MerchantPrefix::parse(prefix)?;
        match self.inner.store.get(Table::Meta, &prefix_key(&prefix))? {
            None => Ok(None),
            Some(id) => {
                let id = String::from_utf8(id).map_err(|_| Error::Corrupt {
                    what: "prefix index",
                })?;
                self.merchant(&id).map(Some)
            }
        }
    }

    /// Looks a merchant up by id.
    pub fn merchant(&self, merchant_id: &str) -> Result<Merchant> {
        if let Some(m) = read_lock(&self.inner.merchants).get(merchant_id) {
            return Ok(m.clone());
        }
        let bytes = self
            .inner
            .store
            .get(Table::Merchants, merchant_id.as_bytes())?
            .ok_or(Error::MerchantNotFound)?;
        let m: Merchant = decode(&bytes, "merchant")?;
        write_lock(&self.inner.merchants).insert(m.merchant_id.clone(), m.clone());
        Ok(m)
    }

    /// Tokenizes one card for `merchant_id` (contract 4). `created` tells 201 from 200.
    pub async fn tokenize(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        req: &TokenizeRequest,
    ) -> Result<Tokenized> {
        let t = self.tokenize_one(ctx, merchant_id, req).await?;
        self.count_created(&t);
        Ok(t)
    }

    async fn tokenize_one(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        req: &TokenizeRequest,
    ) -> Result<Tokenized> {
        let merchant = self.merchant(merchant_id)?;
        let card = validate(req)?;
        if card.temporary.is_some() {
            return self.tokenize_temporary(ctx, &merchant, card).await;
        }
        for _ in 0..TOKEN_ATTEMPTS {
            let job = self.prepare(ctx, &merchant, &card).await?;
            match self.write(job).await? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Conflict => return Err(Error::TokenConflict),
                Attempt::Collision => continue,
            }
        }
        Err(Error::Exhausted {
            what: "random token",
        })
    }

    /// Tokenizes up to 1000 cards; one bad item does not fail the others. All items go to the
    /// writer before any answer is awaited, so they share group commits.
    pub async fn tokenize_batch(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        items: &[TokenizeRequest],
    ) -> Result<Vec<Result<Tokenized>>> {
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Error::BatchTooLarge {
                got: items.len(),
                max: MAX_BATCH_ITEMS,
            });
        }
        let merchant = self.merchant(merchant_id)?;
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            let card = match validate(item) {
                Ok(c) => c,
                Err(e) => {
                    pending.push(Pending::Failed(e));
                    continue;
                }
            };
            if card.temporary.is_some() {
                pending.push(Pending::Temporary(card));
                continue;
            }
            let job = self.prepare(ctx, &merchant, &card).await?;
            pending.push(Pending::Queued(self.enqueue(job).await?, card));
        }
        let mut out = Vec::with_capacity(items.len());
        for p in pending {
            out.push(match p {
                Pending::Failed(e) => Err(e),
                Pending::Temporary(card) => self.tokenize_temporary(ctx, &merchant, card).await,
                Pending::Queued(rx, card) => match rx.await.map_err(|_| Error::ShuttingDown)? {
                    Ok(Attempt::Done(t)) => Ok(t),
                    Ok(Attempt::Conflict) => Err(Error::TokenConflict),
                    Ok(Attempt::Collision) => self.retry_tokenize(ctx, &merchant, &card).await,
                    Err(e) => Err(e),
                },
            });
        }
        out.iter().flatten().for_each(|t| self.count_created(t));
        Ok(out)
    }

    async fn retry_tokenize(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: &Card,
    ) -> Result<Tokenized> {
        for _ in 0..TOKEN_ATTEMPTS {
            let job = self.prepare(ctx, merchant, card).await?;
            match self.write(job).await? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Conflict => return Err(Error::TokenConflict),
                Attempt::Collision => continue,
            }
        }
        Err(Error::Exhausted {
            what: "random token",
        })
    }

    /// Everything a tokenize can do before the writer: token choice, encryption, fingerprint.
    /// Returns the closure the writer runs.
    async fn prepare(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: &Card,
    ) -> Result<impl FnOnce(&mut Tx<'_>) -> Result<Attempt> + Send + 'static + use<>> {
        let (token, kind) = match &card.request.token {
            RequestedToken::Masked => (
                token::masked_token(&card.pan, &merchant.prefix, &mut rand::rngs::OsRng),
                TokenKind::Masked,
            ),
            RequestedToken::Custom(v) => {
                (token::custom_token(&merchant.prefix, v), TokenKind::Custom)
            }
        };
        let dek = self.dek_for_encryption().await?;
        let fingerprint = self
            .inner
            .keys
            .fingerprint
            .fingerprint(&merchant.merchant_id, card.pan.digits());
        let sealed = dek.seal_record(
            &merchant.merchant_id,
            &token,
            &plaintext(&card.pan, card.name.as_ref()),
        )?;
        let record = Record {
            merchant_id: merchant.merchant_id.clone(),
            kind,
            dek_id: dek.id(),
            sealed,
            fingerprint,
            bin: card.pan.bin().to_string(),
            last4: card.pan.last4().to_string(),
            pan_len: card.pan.len() as u8,
            brand: card.pan.brand(),
            expiry: card.expiry,
            created_at: now_unix(),
            agreements: Vec::new(),
        };
        // The lookups are made here, on the caller's thread; the writer only confirms them
        // against what changed since (`Store::reget`), which keeps the single writer short.
        let store = &self.inner.store;
        let by_fingerprint = store.get_stamped(Table::Fingerprints, &fingerprint)?;
        let by_token = store.get_stamped(Table::Tokens, token.as_bytes())?;
        let ctx = ctx.clone();
        Ok(move |tx: &mut Tx<'_>| {
            // Held until the record is written: a DEK someone holds is never destroyed
            // (`destroy_drained_deks`).
            let _in_use = dek;
            let m = record.merchant_id.clone();
            let existing = match kind {
                TokenKind::Masked => {
                    match tx.reget(Table::Fingerprints, &fingerprint, &by_fingerprint)? {
                        Some(t) => Some(String::from_utf8(t).map_err(|_| Error::Corrupt {
                            what: "fingerprint index",
                        })?),
                        None => None,
                    }
                }
                _ => tx
                    .reget(Table::Tokens, token.as_bytes(), &by_token)?
                    .map(|_| token.clone()),
            };
            if let Some(existing) = existing {
                let bytes = tx
                    .get(Table::Tokens, existing.as_bytes())?
                    .ok_or(Error::Corrupt {
                        what: "index names a missing token",
                    })?;
                let mut rec: Record = decode(&bytes, "token record")?;
                if rec.merchant_id != m || rec.fingerprint != fingerprint {
                    tx.audit(ctx.event("tokenize", Some(&m), Some(&existing), "conflict"));
                    return Ok(Attempt::Conflict);
                }
                if rec.expiry != record.expiry {
                    rec.expiry = record.expiry;
                    tx.put(
                        Table::Tokens,
                        existing.as_bytes(),
                        encode(&rec, "token record")?,
                    );
                }
                tx.audit(ctx.event("tokenize", Some(&m), Some(&existing), "existing"));
                return Ok(Attempt::Done(Tokenized {
                    created: false,
                    info: info(&existing, &rec),
                }));
            }
            if kind == TokenKind::Masked
                && tx
                    .reget(Table::Tokens, token.as_bytes(), &by_token)?
                    .is_some()
            {
                return Ok(Attempt::Collision);
            }
            tx.put(
                Table::Tokens,
                token.as_bytes(),
                encode(&record, "token record")?,
            );
            if kind == TokenKind::Masked {
                tx.put(Table::Fingerprints, fingerprint, token.as_bytes());
            }
            tx.audit(ctx.event("tokenize", Some(&m), Some(&token), "created"));
            Ok(Attempt::Done(Tokenized {
                created: true,
                info: info(&token, &record),
            }))
        })
    }

    async fn tokenize_temporary(
        &self,
        ctx: &Ctx,
        merchant: &Merchant,
        card: Card,
    ) -> Result<Tokenized> {
        let Some((cvv, ttl)) = card.temporary else {
            return Err(Error::InvalidField {
                field: "temporary",
                reason: "not a temporary request",
            });
        };
        let token = token::temporary_token(&mut rand::rngs::OsRng);
        let created_at = now_unix();
        let info = TokenInfo {
            token: token.clone(),
            token_kind: TokenKind::Temporary,
            token_expiry_month: card.expiry.month,
            token_expiry_year: card.expiry.year,
            brand: card.pan.brand(),
            bin: card.pan.bin().to_string(),
            last4: card.pan.last4().to_string(),
            masked_pan: card.pan.masked(),
            expired: card.expiry.is_expired(),
            created_at: rfc3339(created_at),
            agreements: Vec::new(),
        };
        let ev = ctx.event(
            "tokenize_temporary",
            Some(&merchant.merchant_id),
            Some(&token),
            "created",
        );
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await?;
        let mut temps = self.temps();
        let now = Instant::now();
        temps.0.insert(
            token,
            TempCard {
                merchant_id: merchant.merchant_id.clone(),
                pan: card.pan,
                expiry: card.expiry,
                name: card.name,
                cvv,
                created_at,
                expires: now + Duration::from_secs(ttl),
            },
        );
        Ok(Tokenized {
            created: true,
            info,
        })
    }

    /// The temporary cards, with expired ones dropped (and zeroized) at most once a second,
    /// on any access: an expired card and CVV do not wait for the next temporary token.
    #[allow(clippy::type_complexity)]
    fn temps(&self) -> std::sync::MutexGuard<'_, (HashMap<String, TempCard>, Instant)> {
        let mut temps = lock(&self.inner.temps);
        let now = Instant::now();
        if now.duration_since(temps.1) > Duration::from_secs(1) {
            temps.0.retain(|_, t| t.expires > now);
            temps.1 = now;
        }
        temps
    }

    fn temp_info(&self, merchant_id: &str, token: &str) -> Option<TokenInfo> {
        let temps = self.temps();
        let t = temps
            .0
            .get(token)
            .filter(|t| t.merchant_id == merchant_id && t.expires > Instant::now())?;
        Some(TokenInfo {
            token: token.to_string(),
            token_kind: TokenKind::Temporary,
            token_expiry_month: t.expiry.month,
            token_expiry_year: t.expiry.year,
            brand: t.pan.brand(),
            bin: t.pan.bin().to_string(),
            last4: t.pan.last4().to_string(),
            masked_pan: t.pan.masked(),
            expired: t.expiry.is_expired(),
            created_at: rfc3339(t.created_at),
            agreements: Vec::new(),
        })
    }

    /// Takes a temporary token's card and CVV out of memory: it serves exactly one charge.
    /// Audits a proxied charge's outcome (`charge`: approved, declined, challenge, other,
    /// refused, failed). Queued for the next group commit without waiting for it: the card's
    /// use is already durably audited (as a reveal) before it leaves, and the merchant's answer
    /// should not wait for a second sync. `token` is a panvault token, never a card.
    pub async fn audit_charge(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: Option<&str>,
        outcome: &'static str,
        detail: String,
    ) {
        let mut ev = ctx.event("charge", Some(merchant_id), token, outcome);
        ev.detail = Some(detail);
        let queued = self
            .enqueue_job(
                move |tx| {
                    tx.audit(ev);
                    Ok(())
                },
                None,
                true,
            )
            .await;
        if let Err(e) = queued {
            tracing::warn!(code = e.code(), "a charge's audit entry was not queued");
        }
    }

    /// The CVV a temporary token carries, leaving the token in place (see `take_temporary`).
    pub fn peek_temporary_cvv(&self, merchant_id: &str, token: &str) -> Result<Option<Cvv>> {
        match self.temps().0.get(token) {
            Some(t) if t.merchant_id == merchant_id && t.expires > Instant::now() => {
                Ok(t.cvv.clone())
            }
            _ => Err(Error::TokenNotFound),
        }
    }

    pub fn take_temporary(
        &self,
        merchant_id: &str,
        token: &str,
    ) -> Result<(Revealed, Option<Cvv>)> {
        let mut temps = self.temps();
        match temps.0.remove(token) {
            Some(t) if t.merchant_id == merchant_id && t.expires > Instant::now() => Ok((
                Revealed {
                    pan: t.pan,
                    expiry: t.expiry,
                    cardholder_name: t.name,
                },
                t.cvv,
            )),
            Some(t) if t.merchant_id != merchant_id => {
                temps.0.insert(token.to_string(), t);
                Err(Error::TokenNotFound)
            }
            _ => Err(Error::TokenNotFound),
        }
    }

    fn record(&self, merchant_id: &str, token: &str) -> Result<Record> {
        if !token::is_well_formed_token(token) {
            return Err(Error::TokenNotFound);
        }
        let bytes = self
            .inner
            .store
            .get(Table::Tokens, token.as_bytes())?
            .ok_or(Error::TokenNotFound)?;
        let rec: Record = decode(&bytes, "token record")?;
        if rec.merchant_id != merchant_id {
            // Another group's token answers exactly like a missing one.
            return Err(Error::TokenNotFound);
        }
        Ok(rec)
    }

    /// A token's metadata (never the PAN). Not audited: it touches no card data.
    pub fn get(&self, merchant_id: &str, token: &str) -> Result<TokenInfo> {
        if let Some(i) = self.temp_info(merchant_id, token) {
            return Ok(i);
        }
        Ok(info(token, &self.record(merchant_id, token)?))
    }

    /// Decrypts a token's card. Always audited, durably, before the card is returned.
    pub async fn reveal(&self, ctx: &Ctx, merchant_id: &str, token: &str) -> Result<Revealed> {
        let result = self.reveal_inner(merchant_id, token);
        let ev = reveal_event(ctx, merchant_id, token, &result);
        self.write(move |tx| {
            tx.audit(ev);
            Ok(())
        })
        .await?;
        result
    }

    /// [`Vault::reveal`] for the gateway proxy: the card comes back as soon as its audit entry
    /// is written to the journal (in the OS page cache, so it outlives this process), and the
    /// entry's `fdatasync` runs while the charge travels to the gateway. The proxy answers the
    /// merchant only after [`Durable::wait`]. A failed reveal is answered once its entry is
    /// durable, as by [`Vault::reveal`].
    pub async fn reveal_for_charge(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
    ) -> Result<(Revealed, Durable)> {
        let result = self.reveal_inner(merchant_id, token);
        let ev = reveal_event(ctx, merchant_id, token, &result);
        let (written, is_written) = oneshot::channel();
        let durable = Durable(
            self.enqueue_job(
                move |tx| {
                    tx.audit(ev);
                    Ok(())
                },
                Some(written),
                false,
            )
            .await?,
        );
        if is_written.await.is_err() {
            // The batch was not written: the answer says why.
            durable.wait().await?;
            return Err(Error::ShuttingDown);
        }
        match result {
            Ok(card) => Ok((card, durable)),
            Err(e) => {
                durable.wait().await?;
                Err(e)
            }
        }
    }

    fn reveal_inner(&self, merchant_id: &str, token: &str) -> Result<Revealed> {
        {
            let temps = self.temps();
            if let Some(t) = temps
                .0
                .get(token)
                .filter(|t| t.merchant_id == merchant_id && t.expires > Instant::now())
            {
                return Ok(Revealed {
                    pan: t.pan.clone(),
                    expiry: t.expiry,
                    cardholder_name: t.name.clone(),
                });
            }
        }
        let rec = self.record(merchant_id, token)?;
        let plain = self
            .dek(rec.dek_id)?
            .open_record(merchant_id, token, &rec.sealed)?;
        let split = plain.iter().position(|&b| b == 0).ok_or(Error::Corrupt {
            what: "card record",
        })?;
        let (pan, name) = plain.split_at(split);
        let pan = Pan::parse(std::str::from_utf8(pan).map_err(|_| Error::Corrupt {
            what: "card record",
        })?)?;
        let name = &name[1..];
        let cardholder_name = if name.is_empty() {
            None
        } else {
            Some(Zeroizing::new(String::from_utf8(name.to_vec()).map_err(
                |_| Error::Corrupt {
                    what: "card record",
                },
            )?))
        };
        Ok(Revealed {
            pan,
            expiry: rec.expiry,
            cardholder_name,
        })
    }

    /// Records a stored-credential agreement that a cardholder-initiated charge through the
    /// gateway proxy established on `token` (seed 004); one already recorded under the same id is
    /// kept as it was. Audited as `agreement`. Temporary tokens hold no agreements.
    pub async fn add_agreement(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
        agreement: Agreement,
    ) -> Result<TokenInfo> {
        if !token::is_well_formed_token(token) || token.starts_with(token::TEMPORARY_PREFIX) {
            return Err(Error::TokenNotFound);
        }
        let (m, t, ctx) = (merchant_id.to_string(), token.to_string(), ctx.clone());
        self.write(move |tx| {
            let Some(bytes) = tx.get(Table::Tokens, t.as_bytes())? else {
                return Ok(Err(Error::TokenNotFound));
            };
            let mut rec: Record = decode(&bytes, "token record")?;
            if rec.merchant_id != m {
                return Ok(Err(Error::TokenNotFound));
            }
            if !rec.agreements.iter().any(|a| a.id == agreement.id) {
                rec.agreements.push(agreement);
                tx.put(Table::Tokens, t.as_bytes(), encode(&rec, "token record")?);
                tx.audit(ctx.event("agreement", Some(&m), Some(&t), "ok"));
            }
            Ok(Ok(info(&t, &rec)))
        })
        .await?
    }

    /// Updates a token (contract 4, PATCH): the expiry of any token; the card itself only
    /// under a custom token (replaced under the same token, agreements kept, seed 004). A new
    /// card for a standard token is `TokenConflict`: its token is the card's.
    pub async fn update(
        &self,
        ctx: &Ctx,
        merchant_id: &str,
        token: &str,
        update: &TokenUpdate,
    ) -> Result<TokenInfo> {
        let expiry = Expiry::new(update.expiry_month, update.expiry_year)?;
        if !token::is_well_formed_token(token) {
            return Err(Error::TokenNotFound);
        }
        if token.starts_with(token::TEMPORARY_PREFIX) {
            if update.pan.is_some() {
                return Err(Error::TokenConflict);
            }
            if let Some(t) = self
                .temps()
                .0
                .get_mut(token)
                .filter(|t| t.merchant_id == merchant_id)
            {
                t.expiry = expiry;
            }
            return self.get(merchant_id, token);
        }
        let merchant = self.merchant(merchant_id)?;
        let card = match &update.pan {
            None => None,
            Some(raw) => {
                let pan = Pan::parse(raw)?;
                let fingerprint = self
                    .inner
                    .keys
                    .fingerprint
                    .fingerprint(merchant_id, pan.digits());
                let dek = self.dek_for_encryption().await?;
                let sealed = dek.seal_record(
                    merchant_id,
                    token,
                    &plaintext(&pan, update.cardholder_name.as_ref()),
                )?;
                Some((
                    pan.bin().to_string(),
                    pan.last4().to_string(),
                    pan.len() as u8,
                    pan.brand(),
                    fingerprint,
                    dek,
                    sealed,
                ))
            }
        };
        let (m, t, ctx) = (merchant.merchant_id, token.to_string(), ctx.clone());
        self.write(move |tx| {
            let Some(bytes) = tx.get(Table::Tokens, t.as_bytes())? else {
                tx.audit(ctx.event("update", Some(&m), Some(&t), "not_found"));
                return Ok(Err(Error::TokenNotFound));
            };
            let mut rec: Record = decode(&bytes, "token record")?;
            if rec.merchant_id != m {
                tx.audit(ctx.event("update", Some(&m), Some(&t), "not_found"));
                return Ok(Err(Error::TokenNotFound));
            }
            rec.expiry = expiry;
            if let Some((bin, last4, pan_len, brand, fingerprint, dek, sealed)) = card {
                let dek_id = dek.id();
                if rec.kind != TokenKind::Custom && rec.fingerprint != fingerprint {
                    tx.audit(ctx.event("update", Some(&m), Some(&t), "conflict"));
                    return Ok(Err(Error::TokenConflict));
                }
                (rec.bin, rec.last4, rec.pan_len, rec.brand) = (bin, last4, pan_len, brand);
                (rec.fingerprint, rec.dek_id, rec.sealed) = (fingerprint, dek_id, sealed);
            }
            tx.put(Table::Tokens, t.as_bytes(), encode(&rec, "token record")?);
            tx.audit(ctx.event("update", Some(&m), Some(&t), "ok"));
            Ok(Ok(info(&t, &rec)))
        })
        .await?
    }

    /// Deletes a token: its record (and so its ciphertext) and index entries go in one commit.
    pub async fn delete(&self, ctx: &Ctx, merchant_id: &str, token: &str) -> Result<()> {
        if token.starts_with("tmp_") {
            let removed = {
                let mut temps = self.temps();
                match temps.0.remove(token) {
                    Some(t) if t.merchant_id == merchant_id => true,
                    Some(t) => {
                        temps.0.insert(token.to_string(), t);
                        false
                    }
                    None => false,
                }
            };
            let ev = ctx.event(
                "delete",
                Some(merchant_id),
                token::is_well_formed_token(token).then_some(token),
                if removed { "ok" } else { "not_found" },
            );
            self.write(move |tx| {
                tx.audit(ev);
                Ok(())
            })
            .await?;
            return if removed {
                Ok(())
            } else {
                Err(Error::TokenNotFound)
            };
        }
        let well_formed = token::is_well_formed_token(token);
        let token = token.to_string();
        let m = merchant_id.to_string();
        let ctx = ctx.clone();
        self.write(move |tx| {
            let rec = match well_formed
                .then(|| tx.get(Table::Tokens, token.as_bytes()))
                .transpose()?
                .flatten()
            {
                Some(b) => decode::<Record>(&b, "token record")?,
                None => {
                    tx.audit(ctx.event(
                        "delete",
                        Some(&m),
                        well_formed.then_some(&*token),
                        "not_found",
                    ));
                    return Ok(Err(Error::TokenNotFound));
                }
            };
            if rec.merchant_id != m {
                tx.audit(ctx.event("delete", Some(&m), Some(&token), "not_found"));
                return Ok(Err(Error::TokenNotFound));
            }
            tx.delete(Table::Tokens, token.as_bytes());
            if rec.kind == TokenKind::Masked
                && tx.get(Table::Fingerprints, &rec.fingerprint)?.as_deref()
                    == Some(token.as_bytes())
            {
                tx.delete(Table::Fingerprints, rec.fingerprint);
            }
            tx.audit(ctx.event("delete", Some(&m), Some(&token), "ok"));
            Ok(Ok(()))
        })
        .await?
    }
}

/// A write already in the journal; [`Durable::wait`] resolves once it is on disk.
pub struct Durable(oneshot::Receiver<Result<()>>);

impl Durable {
    pub async fn wait(self) -> Result<()> {
        self.0.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// The audit event of a reveal: the token only if it is well formed (never a PAN sent as one).
fn reveal_event(ctx: &Ctx, merchant_id: &str, token: &str, result: &Result<Revealed>) -> Event {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Error::TokenNotFound) => "not_found",
        Err(_) => "error",
    };
    ctx.event(
        "reveal",
        Some(merchant_id),
        token::is_well_formed_token(token).then_some(token),
        outcome,
    )
}

fn info(token: &str, rec: &Record) -> TokenInfo {
    let hidden = (rec.pan_len as usize).saturating_sub(10);
    TokenInfo {
        token: token.to_string(),
        token_kind: rec.kind,
        token_expiry_month: rec.expiry.month,
        token_expiry_year: rec.expiry.year,
        brand: rec.brand,
        bin: rec.bin.clone(),
        last4: rec.last4.clone(),
        masked_pan: format!("{}{}{}", rec.bin, "*".repeat(hidden), rec.last4),
        expired: rec.expiry.is_expired(),
        created_at: rfc3339(rec.created_at),
        agreements: rec.agreements.clone(),
    }
}

enum Attempt {
    Done(Tokenized),
    Collision,
    Conflict,
}

enum Pending {
    Failed(Error),
    Temporary(Card),
    Queued(oneshot::Receiver<Result<Attempt>>, Card),
}

/// Writes by table (`None`: delete); the last write of a key wins.
#[derive(Default)]
struct Overlay([HashMap<Vec<u8>, Option<Vec<u8>>>; 8]);

impl Overlay {
    fn get(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.0[table.index()].get(key)
    }

    fn insert(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.0[table.index()].insert(key, value);
    }

    fn extend(&mut self, other: Overlay) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            mine.extend(theirs);
        }
    }

    fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (table, writes) in Table::ALL.into_iter().zip(self.0) {
            for (key, value) in writes {
                match value {
                    Some(v) => batch.put(table, key, v),
                    None => batch.delete(table, key),
                }
            }
        }
        batch
    }
}

/// One writer closure's view: its own writes, then the batch's, then the store.
pub struct Tx<'a> {
    store: &'a dyn Store,
    batch: &'a Overlay,
    local: Overlay,
    events: Vec<Event>,
}

impl Tx<'_> {
    fn in_batch(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.local
            .get(table, key)
            .or_else(|| self.batch.get(table, key))
    }

    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.in_batch(table, key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(table, key),
        }
    }

    /// [`Tx::get`] given a stamped read made before the closure was queued.
    fn reget(&self, table: Table, key: &[u8], earlier: &Stamped) -> Result<Option<Vec<u8>>> {
        match self.in_batch(table, key) {
            Some(v) => Ok(v.clone()),
            None => self.store.reget(table, key, earlier),
        }
    }

    pub(crate) fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.local.insert(table, key.into(), Some(value.into()));
    }

    pub(crate) fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.local.insert(table, key.into(), None);
    }

    pub(crate) fn audit(&mut self, ev: Event) {
        self.events.push(ev);
    }
}

trait Work: Send {
    /// Runs against the batch; returns the closure's writes and audit events if it succeeded.
    fn apply(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller once the batch is durable, or failed.
    fn finish(self: Box<Self>, committed: &Result<()>);
    /// Nobody waits for the answer (a charge's outcome entry, a request that went away).
    fn unwaited(&self) -> bool;
    /// The batch is in the journal (not yet synced); tells a caller who asked.
    fn written(&mut self);
}

struct Job<F, R> {
    f: Option<F>,
    out: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
    written: Option<oneshot::Sender<()>>,
    /// Queued by a caller that will not wait (known before its receiver is dropped).
    detached: bool,
}

impl<F, R> Work for Job<F, R>
where
    F: FnOnce(&mut Tx<'_>) -> Result<R> + Send,
    R: Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let r = f(tx);
        let ok = r.is_ok();
        self.out = Some(r);
        ok
    }

    fn finish(self: Box<Self>, committed: &Result<()>) {
        let answer = match (committed, self.out) {
            (Ok(()), Some(r)) => r,
            (Err(e), Some(Ok(_))) => Err(Error::store("commit", e)),
            (_, Some(Err(e))) => Err(e),
            (_, None) => Err(Error::ShuttingDown),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(answer);
    }

    fn unwaited(&self) -> bool {
        self.detached || self.reply.is_closed()
    }

    fn written(&mut self) {
        if let Some(w) = self.written.take() {
            let _ = w.send(());
        }
    }
}

/// How long the writer holds a batch nobody waits for, so that the next write shares its
/// `fdatasync` instead of queueing behind it. Bounds how late such an entry becomes durable.
const UNWAITED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The single writer: takes everything waiting (up to `max_batch`), runs the closures
/// against one batch, chains their audit entries, writes the batch to the journal (visible),
/// `fdatasync`s it (durable) and only then answers every caller in it. Callers that arrive
/// during the sync wait in the queue and form the next batch, so under load one sync carries
/// many writes without a timer, and a busy writer never sleeps between batches: one thread
/// and no hand-off per batch (a separate writer and syncer cost two more thread wake-ups per
/// batch, which on this 2-core VM was more than the overlap they bought; BENCHMARKS.md).
async fn writer_loop(
    store: &dyn Store,
    mut rx: mpsc::Receiver<Box<dyn Work>>,
    mut chain: Chain,
    max_batch: usize,
    stats: &WriterStats,
) {
    let take = |jobs: &mut Vec<Box<dyn Work>>, rx: &mut mpsc::Receiver<Box<dyn Work>>| {
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
    };
    while let Some(first) = rx.recv().await {
        let mut jobs: Vec<Box<dyn Work>> = Vec::with_capacity(64);
        jobs.push(first);
        take(&mut jobs, &mut rx);
        // A batch nobody waits for (at one connection: the outcome entry of the charge just
        // answered) would otherwise take a sync that the next request's write must queue
        // behind; held a moment, it shares that write's sync instead.
        if jobs.iter().all(|j| j.unwaited())
            && let Ok(Some(j)) = tokio::time::timeout(UNWAITED_SYNC_DELAY, rx.recv()).await
        {
            jobs.push(j);
            take(&mut jobs, &mut rx);
        }
        // Every key's last state in this batch: later writes of one key replace earlier ones.
        let mut overlay = Overlay::default();
        let time = rfc3339(now_unix());
        let mut result: Result<()> = Ok(());
        let mut chained = false;
        for job in jobs.iter_mut() {
            let mut tx = Tx {
                store,
                batch: &overlay,
                local: Overlay::default(),
                events: Vec::new(),
            };
            if !job.apply(&mut tx) {
                continue;
            }
            let Tx { local, events, .. } = tx;
            overlay.extend(local);
            chained |= !events.is_empty();
            if let Err(e) = chain.append_all(events, &time, |seq, bytes| {
                overlay.insert(Table::Audit, audit::key(seq).to_vec(), Some(bytes));
            }) {
                result = Err(e);
            }
        }
        // The signed head moves with the entries, in the same store write.
        if chained && let Some(head) = chain.signed_head() {
            overlay.insert(Table::Meta, audit::HEAD_KEY.to_vec(), Some(head));
        }
        let written = result.and_then(|()| store.write(overlay.into_batch()));
        stats.record(jobs.len());
        let committed = match written {
            Ok(ticket) => {
                jobs.iter_mut().for_each(|j| j.written());
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                store.sync(ticket)
            }
            Err(e) => {
                // Nothing of this batch was written: the chain head goes back to what is.
                if let Ok(c) = chain.reload(store) {
                    chain = c;
                }
                Err(e)
            }
        };
        jobs.into_iter().for_each(|j| j.finish(&committed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    pub(crate) fn req(pan: &str, m: i64, y: i64, rt: Option<&str>) -> TokenizeRequest {
        TokenizeRequest {
            pan: Zeroizing::new(pan.to_string()),
            expiry_month: m,
            expiry_year: y,
            request_token: rt.map(str::to_string),
            ..TokenizeRequest::default()
        }
    }

    fn new_vault(backend: Backend) -> (tempfile::TempDir, Vault) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        Vault::init(&dir, InitOptions::dev(backend)).unwrap();
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        (d, v)
    }

    async fn each_backend(f: impl AsyncFn(Vault)) {
        for b in [Backend::Redb, Backend::Sled] {
            let (_d, v) = new_vault(b);
            f(v.clone()).await;
            v.shutdown();
        }
    }

    /// A write nobody waits for (a charge's outcome entry) shares the next write's sync instead
    /// of starting one that the next write must queue behind: one sync per pair, not two.
    #[tokio::test]
    async fn an_unwaited_write_shares_the_next_writes_sync() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let m = v.create_merchant(&ctx, "M", None).await.unwrap();
        let before = v.writer_stats().syncs.load(Ordering::Relaxed);
        const PAIRS: u64 = 20;
        for _ in 0..PAIRS {
            v.audit_charge(
                &ctx,
                &m.merchant_id,
                None,
                "approved",
                "nexi: HTTP 200".into(),
            )
            .await;
            // The next request comes a moment later, once the entry has reached the writer.
            std::thread::sleep(Duration::from_micros(300));
            v.write(|tx| {
                tx.audit(Ctx::system().event("reveal", None, None, "ok"));
                Ok(())
            })
            .await
            .unwrap();
        }
        let syncs = v.writer_stats().syncs.load(Ordering::Relaxed) - before;
        // Each unwaited entry held back could make 2 per pair; a stall over 2 ms may split one.
        assert!(syncs <= PAIRS * 3 / 2, "{syncs} syncs for {PAIRS} pairs");
        let mut charges = 0;
        audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
            charges += u64::from(e.action == "charge");
            Ok(())
        })
        .unwrap();
        assert_eq!(charges, PAIRS, "every unwaited entry was written");
        v.shutdown();
    }

    #[tokio::test]
    async fn audit_prune_leaves_a_signed_anchor_and_a_chain_that_verifies() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        for i in 0..5 {
            v.create_merchant(&ctx, &format!("M{i}"), None)
                .await
                .unwrap();
        }
        let before = v.verify_audit().unwrap();
        assert_eq!((before.first_seq, before.last_seq), (1, 8));
        // Under a year is refused; a year deletes nothing from a vault made today.
        assert!(matches!(
            v.audit_prune(&ctx, 364, u64::MAX).await,
            Err(Error::Config(_))
        ));
        let r = v.audit_prune(&ctx, 365, u64::MAX).await.unwrap();
        assert_eq!((r.deleted, r.first_kept), (0, 1));
        // Everything counts as old here: only what was exported (1..=3) goes.
        let r = v.prune_before(&ctx, "9999", 3).await.unwrap();
        assert_eq!((r.deleted, r.first_kept), (3, 4));
        let store = v.inner.store.as_ref();
        assert!(store.get(Table::Audit, &audit::key(3)).unwrap().is_none());
        let after = v.verify_audit().unwrap();
        assert_eq!((after.first_seq, after.entries), (4, after.last_seq - 3));
        assert!(audit::verify(store, None, false).is_ok());
        let mut last = None;
        audit::for_each_since(store, 1, |e| {
            last = Some((e.action.clone(), e.detail.clone()));
            Ok(())
        })
        .unwrap();
        let (action, detail) = last.unwrap();
        assert_eq!(action, "audit_prune");
        assert!(detail.unwrap().starts_with("deleted entries 1..=3 "));
        // Pruning everything leaves the chain going on from its anchor, across a restart.
        let r = v.prune_before(&ctx, "9999", u64::MAX).await.unwrap();
        assert_eq!(r.first_kept, after.last_seq + 1);
        let dir = v.dir().to_path_buf();
        v.shutdown();
        drop(v);
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        v.create_merchant(&ctx, "later", None).await.unwrap();
        let now = v.verify_audit().unwrap();
        assert_eq!(now.first_seq, r.first_kept);
        // A moved anchor (to hide more entries) fails its MAC; only the keys can tell.
        let store = v.inner.store.as_ref();
        let mut a = audit::SignedHead::load_anchor(store).unwrap().unwrap();
        let next = audit::Entry::decode(
            &store
                .get(Table::Audit, &audit::key(a.seq + 1))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        a.seq += 1;
        a.hash = next.hash;
        let mut b = WriteBatch::new();
        b.put(
            Table::Meta,
            audit::ANCHOR_KEY,
            serde_json::to_vec(&a).unwrap(),
        );
        b.delete(Table::Audit, audit::key(a.seq));
        store.commit(&b).unwrap();
        let err = v.verify_audit().unwrap_err();
        assert!(
            err.to_string().contains("prune anchor MAC does not verify"),
            "{err}"
        );
        assert!(audit::verify(store, None, true).is_ok());
        // A chain that does not verify is not pruned (that would hide the break).
        assert!(v.prune_before(&ctx, "9999", u64::MAX).await.is_err());
        v.shutdown();
    }

    #[tokio::test]
    async fn same_card_same_token_per_merchant_unrelated_across() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let b = v.create_merchant(&ctx, "B", None).await.unwrap();
            let t1 = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111111111111111", 12, 2030, None),
                )
                .await
                .unwrap();
            assert!(t1.created);
            assert_eq!(t1.info.token.len(), 16);
            assert!(t1.info.token.starts_with("41XYZW") && t1.info.token.ends_with("1111"));
            let t2 = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111 1111 1111 1111", 1, 2031, None),
                )
                .await
                .unwrap();
            assert!(!t2.created);
            assert_eq!(t1.info.token, t2.info.token);
            // Re-tokenization updated the expiry.
            let got = v.get(&a.merchant_id, &t1.info.token).unwrap();
            assert_eq!((got.token_expiry_month, got.token_expiry_year), (1, 2031));
            let tb = v
                .tokenize(
                    &ctx,
                    &b.merchant_id,
                    &req("4111111111111111", 12, 2030, None),
                )
                .await
                .unwrap();
            assert!(tb.created);
            assert_ne!(tb.info.token[2..12], t1.info.token[2..12]);
            assert!(
                tb.info
                    .token
                    .starts_with(&format!("41{}", b.prefix.as_str()))
            );
            // B cannot see A's token; it is answered as missing.
            assert!(matches!(
                v.get(&b.merchant_id, &t1.info.token),
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.reveal(&ctx, &b.merchant_id, &t1.info.token).await,
                Err(Error::TokenNotFound)
            ));
            let r = v
                .reveal(&ctx, &a.merchant_id, &t1.info.token)
                .await
                .unwrap();
            assert_eq!(r.pan.digits(), "4111111111111111");
            assert_eq!(got.masked_pan, "411111******1111");
            assert_eq!(got.bin, "411111");
        })
        .await;
    }

    #[tokio::test]
    async fn custom_tokens_conflicts_and_several_per_card() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", Some("XYZW")).await.unwrap();
            let m = &a.merchant_id;
            let c1 = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 3, 2029, Some("JOHN_SMITH_5533")),
                )
                .await
                .unwrap();
            assert!(c1.created);
            assert_eq!(c1.info.token, "XYZWJOHN_SMITH_5533");
            assert_eq!(c1.info.token_kind, TokenKind::Custom);
            let again = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 4, 2029, Some(":FORCED:JOHN_SMITH_5533")),
                )
                .await
                .unwrap();
            assert!(!again.created);
            assert_eq!(again.info.token_expiry_month, 4);
            let conflict = v
                .tokenize(
                    &ctx,
                    m,
                    &req("4111111111111111", 3, 2029, Some("JOHN_SMITH_5533")),
                )
                .await;
            assert!(matches!(conflict, Err(Error::TokenConflict)));
            let c2 = v
                .tokenize(&ctx, m, &req("5555555555554444", 3, 2029, Some("second")))
                .await
                .unwrap();
            let std = v
                .tokenize(
                    &ctx,
                    m,
                    &req("5555555555554444", 3, 2029, Some("MASKEDPAN")),
                )
                .await
                .unwrap();
            assert_eq!(c2.info.token, "XYZWsecond");
            assert_eq!(std.info.token_kind, TokenKind::Masked);
            for t in [&c1.info.token, &c2.info.token, &std.info.token] {
                assert_eq!(
                    v.reveal(&ctx, m, t).await.unwrap().pan.digits(),
                    "5555555555554444"
                );
            }
            // Delete destroys one token only; later calls are not found.
            v.delete(&ctx, m, &c1.info.token).await.unwrap();
            assert!(matches!(
                v.get(m, &c1.info.token),
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.delete(&ctx, m, &c1.info.token).await,
                Err(Error::TokenNotFound)
            ));
            assert!(v.get(m, &c2.info.token).is_ok());
            // Deleting the standard token frees the card: the next tokenize makes a new one.
            v.delete(&ctx, m, &std.info.token).await.unwrap();
            let std2 = v
                .tokenize(&ctx, m, &req("5555555555554444", 3, 2029, None))
                .await
                .unwrap();
            assert!(std2.created);
        })
        .await;
    }

    #[tokio::test]
    async fn batch_has_per_item_results() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let items = vec![
                req("4111111111111111", 1, 2030, None),
                req("4111111111111112", 1, 2030, None),
                req("4111111111111111", 2, 2030, None),
                req("378282246310005", 13, 2030, None),
                req("378282246310005", 5, 2030, Some("AMEX_1")),
            ];
            let out = v
                .tokenize_batch(&ctx, &a.merchant_id, &items)
                .await
                .unwrap();
            assert_eq!(out.len(), 5);
            let t0 = out[0].as_ref().unwrap();
            assert!(t0.created);
            assert!(matches!(out[1], Err(Error::LuhnCheckFailed)));
            let t2 = out[2].as_ref().unwrap();
            assert!(
                !t2.created,
                "same card in the same batch returns the same token"
            );
            assert_eq!(t0.info.token, t2.info.token);
            assert!(matches!(out[3], Err(Error::InvalidExpiry { .. })));
            assert_eq!(out[4].as_ref().unwrap().info.brand, Brand::Amex);
            let too_many = vec![req("4111111111111111", 1, 2030, None); 1001];
            assert!(matches!(
                v.tokenize_batch(&ctx, &a.merchant_id, &too_many).await,
                Err(Error::BatchTooLarge { got: 1001, .. })
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn temporary_tokens_live_in_memory_once() {
        each_backend(async |v: Vault| {
            let ctx = Ctx::system();
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let mut r = req("4012888888881881", 1, 2030, None);
            r.temporary = true;
            r.cvv = Some(Zeroizing::new("123".into()));
            let t = v.tokenize(&ctx, &a.merchant_id, &r).await.unwrap();
            assert!(t.info.token.starts_with("tmp_") && t.info.token.len() == 36);
            assert_eq!(
                v.get(&a.merchant_id, &t.info.token).unwrap().token_kind,
                TokenKind::Temporary
            );
            assert!(
                v.inner
                    .store
                    .get(Table::Tokens, t.info.token.as_bytes())
                    .unwrap()
                    .is_none()
            );
            let (card, cvv) = v.take_temporary(&a.merchant_id, &t.info.token).unwrap();
            assert_eq!(card.pan.digits(), "4012888888881881");
            assert_eq!(cvv.unwrap().digits(), "123");
            assert!(matches!(
                v.take_temporary(&a.merchant_id, &t.info.token),
                Err(Error::TokenNotFound)
            ));
            let mut bad = req("4012888888881881", 1, 2030, None);
            bad.cvv = Some(Zeroizing::new("123".into()));
            assert!(matches!(
                v.tokenize(&ctx, &a.merchant_id, &bad).await,
                Err(Error::InvalidField { field: "cvv", .. })
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn ciphertext_moved_to_another_record_fails() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let t1 = v
            .tokenize(
                &ctx,
                &a.merchant_id,
                &req("4111111111111111", 1, 2030, None),
            )
            .await
            .unwrap()
            .info
            .token;
        let t2 = v
            .tokenize(
                &ctx,
                &a.merchant_id,
                &req("5555555555554444", 1, 2030, None),
            )
            .await
            .unwrap()
            .info
            .token;
        let r1: Record = decode(
            &v.inner
                .store
                .get(Table::Tokens, t1.as_bytes())
                .unwrap()
                .unwrap(),
            "r",
        )
        .unwrap();
        let mut r2: Record = decode(
            &v.inner
                .store
                .get(Table::Tokens, t2.as_bytes())
                .unwrap()
                .unwrap(),
            "r",
        )
        .unwrap();
        r2.sealed = r1.sealed.clone();
        let mut b = WriteBatch::new();
        b.put(Table::Tokens, t2.as_bytes(), encode(&r2, "r").unwrap());
        v.inner.store.commit(&b).unwrap();
        assert!(matches!(
            v.reveal(&ctx, &a.merchant_id, &t2).await,
            Err(Error::Decrypt { .. })
        ));
        assert_eq!(
            v.reveal(&ctx, &a.merchant_id, &t1)
                .await
                .unwrap()
                .pan
                .digits(),
            "4111111111111111"
        );
        v.shutdown();
    }

    #[tokio::test]
    async fn audit_chain_records_operations_and_verifies() {
        each_backend(async |v: Vault| {
            let ctx = Ctx {
                actor: "key_test".into(),
                client: Some("127.0.0.1".into()),
                request_id: Some("req-1".into()),
            };
            let a = v.create_merchant(&ctx, "A", None).await.unwrap();
            let t = v
                .tokenize(
                    &ctx,
                    &a.merchant_id,
                    &req("4111111111111111", 1, 2030, None),
                )
                .await
                .unwrap()
                .info
                .token;
            v.reveal(&ctx, &a.merchant_id, &t).await.unwrap();
            let mut actions = Vec::new();
            audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
                assert!(
                    !e.encode()
                        .unwrap()
                        .windows(16)
                        .any(|w| w == b"4111111111111111")
                );
                actions.push((e.action.clone(), e.outcome.clone()));
                Ok(())
            })
            .unwrap();
            assert_eq!(actions[0].0, "vault_init");
            assert!(actions.contains(&("tokenize".into(), "created".into())));
            assert!(actions.contains(&("reveal".into(), "ok".into())));
            let verified = v.verify_audit().unwrap();
            assert_eq!(verified.entries as usize, actions.len());
        })
        .await;
    }

    #[tokio::test]
    async fn dek_rolls_over_by_count() {
        let (_d, v0) = new_vault(Backend::Redb);
        let dir = v0.dir().to_path_buf();
        v0.shutdown();
        drop(v0);
        let opts = Options {
            dek_policy: DekPolicy {
                max_uses: 3,
                max_age: Duration::from_secs(3600),
            },
            ..Options::default()
        };
        let v = Vault::open(&dir, &Unlock::Dev, opts).unwrap();
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let mut tokens = Vec::new();
        for (i, pan) in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "4012888888881881",
            "3530111333300000",
            "5105105105105100",
        ]
        .iter()
        .enumerate()
        {
            tokens.push((
                v.tokenize(&ctx, &a.merchant_id, &req(pan, 1 + i as i64, 2030, None))
                    .await
                    .unwrap()
                    .info
                    .token,
                *pan,
            ));
        }
        let deks: Vec<u32> = tokens
            .iter()
            .map(|(t, _)| {
                decode::<Record>(
                    &v.inner
                        .store
                        .get(Table::Tokens, t.as_bytes())
                        .unwrap()
                        .unwrap(),
                    "r",
                )
                .unwrap()
                .dek_id
            })
            .collect();
        assert!(
            deks.iter().collect::<std::collections::HashSet<_>>().len() >= 3,
            "{deks:?}"
        );
        v.shutdown();
        drop(v);
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        for (t, pan) in &tokens {
            assert_eq!(
                v.reveal(&ctx, &a.merchant_id, t)
                    .await
                    .unwrap()
                    .pan
                    .digits(),
                *pan
            );
        }
        v.shutdown();
    }

    #[tokio::test]
    async fn a_pan_sent_as_a_token_is_never_audited() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        for pan in [
            "4111111111111111",
            "4111-1111-1111-1111",
            "tmp_4111111111111111",
        ] {
            assert!(matches!(
                v.reveal(&ctx, &a.merchant_id, pan).await,
                Err(Error::TokenNotFound)
            ));
            assert!(matches!(
                v.delete(&ctx, &a.merchant_id, pan).await,
                Err(Error::TokenNotFound)
            ));
        }
        audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
            // The two hashes are random hex and may hold "4111" by chance: not card data.
            let mut e = e.clone();
            e.hash.clear();
            e.prev_hash.clear();
            let bytes = serde_json::to_string(&e).unwrap();
            assert!(!bytes.contains("4111"), "{bytes}");
            Ok(())
        })
        .unwrap();
        v.shutdown();
    }

    /// The proxy's reveal: the card comes back once its audit entry is in the journal (already
    /// readable), and `Durable::wait` resolves once the entry is synced.
    #[tokio::test]
    async fn a_charge_reveal_is_audited_before_the_card_comes_back() {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let t = v
            .tokenize(
                &ctx,
                &a.merchant_id,
                &req("4111111111111111", 12, 2039, None),
            )
            .await
            .unwrap()
            .info
            .token;
        let reveals = |v: &Vault| {
            let mut n = Vec::new();
            audit::for_each_since(v.inner.store.as_ref(), 1, |e| {
                if e.action == "reveal" {
                    n.push((e.token.clone(), e.outcome.clone()));
                }
                Ok(())
            })
            .unwrap();
            n
        };
        let (card, durable) = v.reveal_for_charge(&ctx, &a.merchant_id, &t).await.unwrap();
        assert_eq!(card.pan.digits(), "4111111111111111");
        assert_eq!(reveals(&v), [(Some(t.clone()), "ok".to_string())]);
        durable.wait().await.unwrap();
        let missing = "41XYZW0000001111";
        assert!(matches!(
            v.reveal_for_charge(&ctx, &a.merchant_id, missing).await,
            Err(Error::TokenNotFound)
        ));
        assert_eq!(reveals(&v).len(), 2);
        assert_eq!(reveals(&v)[1].1, "not_found");
        v.shutdown();
    }

    #[test]
    fn request_debug_is_redacted() {
        let r = req("4111111111111111", 1, 2030, None);
        assert!(!format!("{r:?}").contains("4111"));
    }
}
