//! The vault: creating one in a data directory, opening and unlocking it, its shared state
//! (store, keys in memory, caches, the single writer) and shutdown; every operation of an open
//! vault lives in one of the files below, each an `impl Vault` of its own concern.
//!
//! Write path:
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
//!
//! The files of this module, one concern each:
//!
//! - `types`: answer and request types;
//! - `record`: the stored forms (token `Record`, wrapped keys, `meta` keys, `vault.json`);
//! - `validate`: a tokenize request becomes a validated card;
//! - `writer`: the single writer, its jobs, batch overlay and group commit;
//! - `tokens`: tokenize, batch, update, delete;
//! - `reveal`: get and reveal a token (audited), and the gateway proxy's reveal;
//! - `temporary`: temporary tokens, held in memory only;
//! - `merchants`: merchant groups and their prefixes;
//! - `api_keys`: API keys and shop logins of an open vault;
//! - `auth_records`: the MACs of the authorization records, checked at open;
//! - `rotation`: DEKs, their rollover, KEK rotation, key status;
//! - `reencrypt`: the background re-encryption job;
//! - `audit_log`: audit pages, verification, pruning, a charge's outcome entry.

mod api_keys;
mod audit_log;
mod auth_records;
mod merchants;
mod record;
mod reencrypt;
mod reveal;
mod rotation;
mod temporary;
mod tokens;
mod types;
mod validate;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::access;
use crate::audit::{self, Chain};
use crate::crypto::{Dek, DekPolicy, KdfParams, MacKey, SecretKey, SecretString};
use crate::keys::{self, KeySource, Keyring, Unlock};
use crate::store::{self, Backend, Store, Table, WriteBatch};
use crate::sync::lock;
use crate::{Error, Result};

use record::{
    API_KEY_MAC_KEY, AUDIT_MAC_KEY, DekRecord, FINGERPRINT_KEY, VaultFile, decode, encode,
    load_meta_key, wrap_meta_key,
};
use temporary::TempCard;
use writer::{Work, writer_loop};

pub use crate::audit::Ctx;
pub use reencrypt::{REENCRYPT_BATCH, REENCRYPT_PAUSE};
pub use tokens::MAX_BATCH_ITEMS;
pub use types::{
    Agreement, AuditPage, DekStatus, Initialized, KekStatus, KeyStatus, Merchant, Pruned,
    ReencryptJob, ReencryptStep, Revealed, Rotation, TokenInfo, TokenUpdate, TokenizeRequest,
    Tokenized,
};
pub use validate::{MAX_NAME_LEN, TEMP_TTL_DEFAULT, TEMP_TTL_MAX};
pub use writer::{Durable, Tx, WriterStats};

/// Tunables of an open vault.
#[derive(Clone, Debug)]
pub struct Options {
    /// When the DEK in use gives way to a new one (uses and age).
    pub dek_policy: DekPolicy,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Depth of the writer's queue; callers wait (asynchronously) when it is full.
    pub queue_depth: usize,
    /// Open even if the journal is damaged in the middle: cut it at the damage and audit the
    /// loss (`serve --accept-journal-loss`); without it such a store is refused with
    /// [`Error::JournalCorrupt`].
    pub accept_journal_loss: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dek_policy: DekPolicy::default(),
            max_batch: 1024,
            queue_depth: 8192,
            accept_journal_loss: false,
        }
    }
}

/// How `init` sets up a vault.
#[derive(Debug)]
pub struct InitOptions {
    /// The storage engine; a data directory keeps the one it was made with.
    pub backend: Backend,
    /// Where the KEK comes from.
    pub key_source: KeySource,
    /// The operator secret: passphrase (`file`) or the token's user PIN (`pkcs11`).
    pub passphrase: Option<SecretString>,
    /// `file` keys: the argon2id parameters that derive the sealing key from the passphrase.
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

/// For the crash tests of multi-step key operations: with `PANVAULT_CRASH_AT=<point>` in the
/// environment the process aborts there, as a SIGKILL would stop it.
fn crash_point(point: &str) {
    if std::env::var("PANVAULT_CRASH_AT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `unix` (seconds) as an RFC 3339 UTC time, to the second.
fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The data directory's `vault.json` (format, backend, key source, creation time).
fn vault_file(dir: &Path) -> PathBuf {
    dir.join("vault.json")
}

/// The keys of an open vault, in memory.
struct Keys {
    /// Written only by a KEK rotation.
    keyring: RwLock<Keyring>,
    fingerprint: MacKey,
    api_key_mac: MacKey,
    audit_mac: Arc<MacKey>,
    /// Every DEK in the store, by id.
    deks: RwLock<HashMap<u32, Arc<Dek>>>,
    /// The DEK new records are encrypted under; none until this process's first encryption
    /// (a new process never continues an old DEK's use counter, and an open writes no key).
    current: RwLock<Option<Arc<Dek>>>,
    next_dek_id: AtomicU32,
    /// Held while a DEK is made current, and by whatever must see no new DEK meanwhile (a KEK
    /// rotation, the destruction of drained DEKs).
    rollover: tokio::sync::Mutex<()>,
}

/// What every clone of a [`Vault`] shares.
struct Inner {
    dir: PathBuf,
    store: Arc<dyn Store>,
    keys: Keys,
    opts: Options,
    /// The writer's queue; `None` once [`Vault::shutdown`] closed it.
    queue: Mutex<Option<mpsc::Sender<Box<dyn Work>>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    /// Merchants read so far, by id (a merchant never changes once made).
    merchants: RwLock<HashMap<String, Merchant>>,
    /// Every live API key by id; revocation removes it here in the same step as in the store.
    api_keys: access::KeyCache,
    /// Tokens created since open: masked, custom, temporary.
    tokens_created: [AtomicU64; 3],
    /// The temporary tokens' cards by token, and when expired ones were last dropped.
    temps: Mutex<(HashMap<String, TempCard>, Instant)>,
    /// The background re-encryption job's progress (`GET /v1/sys/keys`).
    reencryption: Mutex<Option<ReencryptJob>>,
    /// A stored token read in place of a missing one (`reveal.rs`).
    decoy: reveal::Decoy,
}

/// An open, unsealed vault. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Reads the backend a data dir was created with: `NotInitialized` without `vault.json`,
/// `Corrupt` if it does not parse.
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
    /// Creates a new vault in `dir`: the keyring, the store with its KEK-wrapped `meta` keys
    /// (fingerprint, API-key MAC, audit MAC), the first admin API key, the audit chain's first
    /// entries, then `vault.json`. A directory that already holds a vault is refused with
    /// `AlreadyInitialized`, untouched.
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
            now_unix(),
        )?;
        let value = encode(&record, "api key")?;
        auth_records::seal_new_vault(&mut batch, &MacKey::new(&api_mac)?, &record.id, &value)?;
        batch.put(Table::ApiKeys, record.id.as_bytes(), value);
        let cli = Ctx {
            actor: "cli".into(),
            ..Ctx::default()
        };
        let mut chain = Chain::load(store.as_ref(), Some(Arc::new(MacKey::new(&audit_mac)?)))?;
        chain.append_all(
            [
                auth_records::genesis(cli.event("vault_init", None, None, "ok")),
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

    /// Opens and unlocks the vault in `dir` and starts its writer. The first encryption makes
    /// this process's DEK (a new process never continues an old DEK's use counter); a vault of
    /// the current format is not written to by an open. Refuses, with [`Error::AuditBroken`]
    /// naming the entry, an audit chain that does not verify from its last checkpoint to its
    /// signed head (an entry edited, deleted, inserted or reordered there, a cut or extended
    /// tail, a forged head) rather than sign it.
    pub fn open(dir: &Path, unlock: &Unlock, opts: Options) -> Result<Vault> {
        let backend = backend_of(dir)?;
        let keyring = keys::load(dir, unlock)?;
        let store = store::open_with(backend, dir, opts.accept_journal_loss)?;

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

        // What an old vault lacks is added here, in one commit; a vault of the current format
        // gets no write at all (no DEK either: the first encryption of this process makes one,
        // so read-only commands and a start that fails leave no key material behind).
        let mut batch = WriteBatch::new();
        // The chain is verified before anything is appended to it or signed: an open never
        // signs a head over a chain it has not checked. With the key, from the last checkpoint
        // to the signed head (bounded; see `audit::check_recent`). A vault made before signed
        // audit heads gets its audit MAC key here, once its whole chain's links verify (with
        // no key there is no MAC to check; a one-time read of the whole chain).
        let audit_mac = Arc::new(
            match load_meta_key(store.as_ref(), &keyring, AUDIT_MAC_KEY)? {
                Some(k) => {
                    audit::check_recent(store.as_ref(), &k)?;
                    k
                }
                None => {
                    audit::verify(store.as_ref(), None, false)?;
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
        // Journal records given up with `--accept-journal-loss`, at this open or at one that
        // stopped before auditing them: audited here, in the same commit that clears them.
        if let Some(v) = store.get(Table::Meta, store::JOURNAL_LOSS_KEY)? {
            let mut events = Vec::new();
            for loss in store::decode_losses(&v)? {
                let mut ev = Ctx::system().event("journal_loss", None, None, "accepted");
                ev.detail = Some(loss.describe());
                events.push(ev);
            }
            batch.delete(Table::Meta, store::JOURNAL_LOSS_KEY);
            chain.append_all(events, &rfc3339(now_unix()), |seq, bytes| {
                batch.put(Table::Audit, audit::key(seq), bytes)
            })?;
        }
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
        // Every authorization record must match its MAC (an old vault's are sealed here).
        auth_records::open(store.as_ref(), &api_key_mac, &mut batch, &mut chain)?;
        if !batch.is_empty() {
            if let Some(head) = chain.signed_head() {
                batch.put(Table::Meta, audit::HEAD_KEY, head);
            }
            store.commit(&batch)?;
        }
        if keys::source_of(dir)? == KeySource::Dev {
            tracing::warn!(
                "dev key source: the KEK is stored unprotected; never use this outside testing"
            );
        }
        let api_keys = api_keys::load(store.as_ref())?;

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
                current: RwLock::new(None),
                next_dek_id: AtomicU32::new(last_id + 1),
                rollover: tokio::sync::Mutex::new(()),
            },
            opts,
            queue: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer]),
            stats,
            merchants: RwLock::new(HashMap::new()),
            api_keys: access::KeyCache::new(api_keys),
            tokens_created: Default::default(),
            temps: Mutex::new((HashMap::new(), Instant::now())),
            reencryption: Mutex::new(None),
            decoy: reveal::Decoy::default(),
        };
        Ok(Vault {
            inner: Arc::new(inner),
        })
    }

    /// Ok while the vault takes writes (writer running), `ShuttingDown` after
    /// [`Vault::shutdown`]; for `/readyz`.
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

    /// What opening the store found in its journal (torn last record dropped, records lost
    /// with `--accept-journal-loss`), for `/metrics`.
    pub fn journal_recovery(&self) -> store::Recovery {
        self.inner.store.recovery()
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

    /// The store, for reports that read it directly (the evidence report).
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::WriteBatch;
    use record::Record;
    use types::TokenizeRequest;
    use zeroize::Zeroizing;

    pub(super) fn req(pan: &str, m: i64, y: i64, rt: Option<&str>) -> TokenizeRequest {
        TokenizeRequest {
            pan: Zeroizing::new(pan.to_string()),
            expiry_month: m,
            expiry_year: y,
            request_token: rt.map(str::to_string),
            ..TokenizeRequest::default()
        }
    }

    pub(super) fn new_vault(backend: Backend) -> (tempfile::TempDir, Vault) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        Vault::init(&dir, InitOptions::dev(backend)).unwrap();
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        (d, v)
    }

    pub(super) async fn each_backend(f: impl AsyncFn(Vault)) {
        for b in [Backend::Redb, Backend::Sled] {
            let (_d, v) = new_vault(b);
            f(v.clone()).await;
            v.shutdown();
        }
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
        assert_eq!((before.first_seq, before.last_seq), (1, 7));
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
}
