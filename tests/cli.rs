//! Black-box tests of the `panvault` binary (contract sections 1 and 7): `init` with every key
//! source it accepts or refuses, `audit verify` and `audit export` on real data dirs, and the
//! audit chain's tamper detection as seen from the command line.
//!
//! Every invocation of the binary goes through [`run`], which fails the test if its stdout or
//! stderr holds any of the test card numbers (or the test passphrase), so no command's output
//! in this file ever leaks a PAN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use panvault::audit::{self, Entry};
use panvault::crypto::SecretString;
use panvault::keys::Unlock;
use panvault::store::{Store, Table, WriteBatch};
use panvault::vault::{Ctx, Options, TokenizeRequest, Vault};
use serde_json::Value;
use zeroize::Zeroizing;

mod common;

/// Published test card numbers only (Visa, Mastercard, Amex).
const PANS: [&str; 3] = ["4111111111111111", "5555555555554444", "378282246310005"];
/// At least 12 characters, as `init` demands.
const PASSPHRASE: &str = "correct horse battery staple";

/// Invocations checked by [`run`] (so the scan can be shown to have covered something).
static SCANNED: AtomicUsize = AtomicUsize::new(0);

/// The captured result of one run of the binary.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    /// A refusal produced by panvault itself: non-zero exit, nothing on stdout, and exactly one
    /// line on stderr, `panvault: <reason>`, containing every `needle`.
    #[track_caller]
    fn refused(&self, needles: &[&str]) -> &Self {
        assert_ne!(self.code, Some(0), "expected a refusal: {self:#?}");
        assert!(self.code.is_some(), "killed by a signal: {self:#?}");
        assert_eq!(self.stdout, "", "a refusal prints nothing on stdout");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "want one line on stderr: {self:#?}");
        assert!(self.stderr.ends_with('\n'));
        assert!(
            lines[0].starts_with("panvault: "),
            "stderr must start with `panvault: `: {self:#?}"
        );
        for n in needles {
            assert!(lines[0].contains(n), "stderr lacks {n:?}: {self:#?}");
        }
        self
    }

    /// stdout as lines.
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// The binary with a clean environment: no inherited `PANVAULT_*` variable, no stdin.
fn cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_panvault"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PANVAULT_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Runs the command to completion and scans both outputs for secrets.
#[track_caller]
fn run(c: &mut Command) -> Out {
    let o = c.output().unwrap();
    let out = Out {
        code: o.status.code(),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    };
    for secret in PANS.iter().chain([&PASSPHRASE]) {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "binary output contains a test PAN or the passphrase: {c:?}"
        );
    }
    SCANNED.fetch_add(1, Ordering::Relaxed);
    out
}

/// `panvault ARGS...` in the current directory.
#[track_caller]
fn pv(args: &[&str]) -> Out {
    run(cmd().args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn keyring(dir: &Path) -> PathBuf {
    dir.join("keys").join("keyring.json")
}

/// `init --data DIR --dev --json [--store STORE]`, checked; returns the JSON object.
#[track_caller]
fn init_dev(dir: &Path, store: Option<&str>) -> Value {
    let mut args = vec!["init", "--data", s(dir), "--dev", "--json"];
    if let Some(st) = store {
        args.extend(["--store", st]);
    }
    let out = pv(&args);
    out.success();
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "exactly one JSON object: {out:#?}");
    serde_json::from_str(lines[0]).unwrap()
}

/// What [`activity`] did, for checking the audit trail.
struct Activity {
    merchant_id: String,
    /// The token of each of [`PANS`], in order. `tokens[0]` was revealed, `tokens[2]` deleted.
    tokens: Vec<String>,
}

fn req(pan: &str) -> TokenizeRequest {
    TokenizeRequest {
        pan: Zeroizing::new(pan.to_string()),
        expiry_month: 12,
        expiry_year: 2030,
        ..Default::default()
    }
}

/// Opens the (dev) vault through the library, creates a merchant, tokenizes [`PANS`], reveals
/// the first token, deletes the third, and closes the vault (releasing the store's lock).
fn activity(dir: &Path) -> Activity {
    let vault = Vault::open(dir, &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let act = rt.block_on(async {
        let ctx = Ctx::system();
        let m = vault.create_merchant(&ctx, "shop", None).await.unwrap();
        let mut tokens = Vec::new();
        for pan in PANS {
            let t = vault
                .tokenize(&ctx, &m.merchant_id, &req(pan))
                .await
                .unwrap();
            assert!(t.created);
            tokens.push(t.info.token);
        }
        let card = vault
            .reveal(&ctx, &m.merchant_id, &tokens[0])
            .await
            .unwrap();
        assert_eq!(card.pan.digits(), PANS[0]);
        vault
            .delete(&ctx, &m.merchant_id, &tokens[2])
            .await
            .unwrap();
        Activity {
            merchant_id: m.merchant_id,
            tokens,
        }
    });
    vault.shutdown();
    drop(vault);
    act
}

/// A fresh dev vault (in `tmp/vault`) with [`activity`] in it.
fn vault_with_activity(tmp: &Path, store: Option<&str>) -> (PathBuf, Activity) {
    let dir = tmp.join("vault");
    init_dev(&dir, store);
    let act = activity(&dir);
    (dir, act)
}

/// The 11 fields of an exported entry, in the order they are written.
const FIELDS: [&str; 12] = [
    "seq",
    "time",
    "actor",
    "merchant",
    "action",
    "token",
    "outcome",
    "request_id",
    "client",
    "detail",
    "prev_hash",
    "hash",
];

/// The raw stdout of `audit export`.
fn export_text(dir: &Path, since: Option<u64>) -> String {
    let since = since.map(|k| k.to_string());
    let mut args = vec!["audit", "export", "--data", s(dir)];
    if let Some(k) = &since {
        args.extend(["--since", k]);
    }
    let out = pv(&args);
    out.success();
    assert_eq!(out.stderr, "");
    assert!(out.stdout.is_empty() || out.stdout.ends_with('\n'));
    out.stdout
}

/// `audit export`, parsed and checked line by line: entries, then (an export that reaches the
/// end of the chain) the signed head of the last one.
fn export(dir: &Path, since: Option<u64>) -> Vec<Entry> {
    let text = export_text(dir, since);
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(last) = lines.pop() {
        let v: Value = serde_json::from_str(last).unwrap();
        let head = &v["signed_head"];
        assert_eq!(v.as_object().unwrap().len(), 1, "{last}");
        assert_eq!(head.as_object().unwrap().len(), 3, "{last}");
        assert_eq!(head["mac"].as_str().unwrap().len(), 64, "{last}");
        let prev: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(head["seq"], prev["seq"], "the head signs the last entry");
        assert_eq!(head["hash"], prev["hash"]);
    }
    lines
        .into_iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let obj = v.as_object().unwrap();
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            let mut want = FIELDS.to_vec();
            want.sort_unstable();
            let mut got = keys.clone();
            got.sort_unstable();
            assert_eq!(got, want, "fields of {line}");
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

/// `audit verify` of a dev vault (its keys need no secret, so the MACs are checked) succeeded;
/// returns N from `audit chain ok: N entries, last hash H`.
#[track_caller]
fn verify_ok(dir: &Path) -> (u64, String) {
    let out = pv(&["audit", "verify", "--data", s(dir)]);
    out.success();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out:#?}");
    let rest = lines[0].strip_prefix("audit chain ok: ").unwrap();
    let (n, rest) = rest.split_once(' ').unwrap();
    let n: u64 = n.parse().unwrap();
    let noun = if n == 1 { "entry" } else { "entries" };
    let hash = rest
        .strip_prefix(noun)
        .unwrap()
        .strip_prefix(", last hash ")
        .unwrap();
    let checkpoints = n / audit::CHECKPOINT_EVERY;
    assert_eq!(
        lines[1],
        format!("signed: MACs verified through entry {n} ({checkpoints} checkpoints, signed head)")
    );
    (n, hash.to_string())
}

// ---- 1. init --dev --json ---------------------------------------------------------------------

fn check_fresh_dev_vault(dir: &Path, json: &Value, store: &str) {
    let obj = json.as_object().unwrap();
    let canonical = std::fs::canonicalize(dir).unwrap();
    assert_eq!(obj["data_dir"], Value::from(s(&canonical)));
    assert_eq!(obj["store"], Value::from(store));
    assert_eq!(obj["key_source"], Value::from("dev"));
    assert_eq!(mode(dir), 0o700, "data dir mode");
    assert_eq!(mode(&dir.join("keys")), 0o700, "keys dir mode");
    assert_eq!(mode(&keyring(dir)), 0o600, "keyring mode");
    // Every file the engines and the journal created is private too.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
    }
    // The new vault's chain holds its genesis entry and the first admin key's, and verifies.
    assert_eq!(verify_ok(dir).0, 2);
    let entries = export(dir, None);
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (
            entries[0].seq,
            entries[0].action.as_str(),
            entries[0].actor.as_str()
        ),
        (1, "vault_init", "cli")
    );
    assert_eq!(entries[0].prev_hash, "0".repeat(64));
    // The admin key is printed once, and the audit log names its id, never the secret.
    let key_id = obj["admin_api_key_id"].as_str().unwrap();
    let key = obj["admin_api_key"].as_str().unwrap();
    assert!(key.starts_with(&format!("pvk_{key_id}_")), "{key}");
    assert_eq!(entries[1].action, "api_key_create");
    assert_eq!(entries[1].token.as_deref(), Some(key_id));
    let secret = key.rsplit('_').next().unwrap();
    let raw = std::fs::read(dir.join("panvault.redb")).unwrap_or_default();
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[test]
fn init_dev_json_redb() {
    let tmp = tempfile::tempdir().unwrap();
    // A relative path: `data_dir` must come back canonical.
    let out = run(cmd()
        .current_dir(tmp.path())
        .args(["init", "--data", "vault", "--dev", "--json"]));
    out.success();
    assert_eq!(out.lines().len(), 1, "exactly one line on stdout: {out:#?}");
    assert!(out.stdout.ends_with('\n'));
    let json: Value = serde_json::from_str(out.lines()[0]).unwrap();
    check_fresh_dev_vault(&tmp.path().join("vault"), &json, "redb");
    assert!(tmp.path().join("vault").join("panvault.redb").exists());
}

#[test]
fn init_dev_json_sled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let json = init_dev(&dir, Some("sled"));
    check_fresh_dev_vault(&dir, &json, "sled");
    assert!(dir.join("sled").is_dir());
    assert!(!dir.join("panvault.redb").exists());
}

// ---- 2. init refuses to overwrite ------------------------------------------------------------

#[test]
fn init_refuses_existing_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    init_dev(&dir, None);
    let before = std::fs::read(keyring(&dir)).unwrap();
    let vault_json = std::fs::read(dir.join("vault.json")).unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    for extra in [
        &["--dev", "--json"][..],
        &["--dev", "--store", "sled"],
        &["--keys", "file", "--passphrase-file", s(&pass)],
    ] {
        let mut args = vec!["init", "--data", s(&dir)];
        args.extend_from_slice(extra);
        pv(&args).refused(&["already exists", s(&dir)]);
    }
    assert_eq!(std::fs::read(keyring(&dir)).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("vault.json")).unwrap(), vault_json);
    assert!(!dir.join("sled").exists());
    assert_eq!(verify_ok(&dir).0, 2, "the existing chain is untouched");
}

// ---- 3. key sources and stores ---------------------------------------------------------------

#[test]
fn init_dev_keys_need_dev_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    pv(&["init", "--data", s(&dir), "--keys", "dev"]).refused(&["--dev"]);
    assert!(!keyring(&dir).exists());
    assert!(!dir.join("vault.json").exists());
    // `--dev` with another source is a contradiction, not a silent choice.
    pv(&["init", "--data", s(&dir), "--dev", "--keys", "file"]).refused(&["--dev", "file"]);
    assert!(!keyring(&dir).exists());
}

#[test]
fn init_file_keys_need_a_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    // `file` is the default source.
    pv(&["init", "--data", s(&dir)]).refused(&["PANVAULT_PASSPHRASE_FILE", "--passphrase-file"]);
    pv(&["init", "--data", s(&dir), "--keys", "file"]).refused(&["PANVAULT_PASSPHRASE_FILE"]);
    // A passphrase file that does not exist is named.
    let missing = tmp.path().join("no-such-file");
    pv(&["init", "--data", s(&dir), "--passphrase-file", s(&missing)]).refused(&[s(&missing)]);
    assert!(!keyring(&dir).exists());
}

#[test]
fn init_file_keys_seal_the_kek_under_argon2id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let out = pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "file",
        "--passphrase-file",
        s(&pass),
        "--json",
    ]);
    out.success();
    let json: Value = serde_json::from_str(out.lines()[0]).unwrap();
    assert_eq!(out.lines().len(), 1);
    assert_eq!(json["key_source"], Value::from("file"));
    assert_eq!(json["store"], Value::from("redb"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&keyring(&dir)), 0o600);
    let text = std::fs::read_to_string(keyring(&dir)).unwrap();
    assert!(text.contains("argon2id"), "{text}");
    assert!(!text.contains(PASSPHRASE));
    assert!(!text.contains("correct horse"));
    // The keyring opens with that passphrase (its first line, without the newline) only.
    panvault::keys::load(
        &dir,
        &Unlock::Passphrase(SecretString::new(PASSPHRASE.into())),
    )
    .unwrap();
    assert!(
        panvault::keys::load(
            &dir,
            &Unlock::Passphrase(SecretString::new("incorrect horse battery".into()))
        )
        .is_err()
    );
    // Without the passphrase, `audit verify` checks links and head but says the MACs were not;
    // with it, it checks them.
    let out = pv(&["audit", "verify", "--data", s(&dir)]);
    out.success();
    assert_eq!(out.lines().len(), 2);
    assert!(out.lines()[0].starts_with("audit chain ok: 2 entries, "));
    assert!(out.lines()[1].starts_with("unsigned check: give the vault's keys"));
    let out = pv(&[
        "audit",
        "verify",
        "--data",
        s(&dir),
        "--passphrase-file",
        s(&pass),
    ]);
    out.success();
    assert_eq!(
        out.lines()[1],
        "signed: MACs verified through entry 2 (0 checkpoints, signed head)"
    );
    // A cut tail shows without the keys too: the chain no longer ends at its head.
    tamper(&dir, |_, b| b.delete(Table::Audit, audit::key(2)));
    pv(&["audit", "verify", "--data", s(&dir)]).refused(&[
        "audit chain broken at entry 2: entries missing at the tail (the signed head is further on)",
    ]);
}

#[test]
fn init_file_keys_passphrase_from_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    let out = run(cmd().env("PANVAULT_PASSPHRASE_FILE", &pass).args([
        "init",
        "--data",
        s(&dir),
        "--json",
    ]));
    out.success();
    let json: Value = serde_json::from_str(out.lines()[0]).unwrap();
    assert_eq!(json["key_source"], Value::from("file"));
    assert!(
        std::fs::read_to_string(keyring(&dir))
            .unwrap()
            .contains("argon2id")
    );
}

#[test]
fn init_refuses_short_passphrase_and_leaves_no_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "elevenchars\n").unwrap(); // 11 characters
    pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "file",
        "--passphrase-file",
        s(&pass),
    ])
    .refused(&["passphrase", "at least 12 characters"]);
    assert!(!keyring(&dir).exists());
    assert!(!dir.join("vault.json").exists());
    // Nothing half-made blocks a correct second attempt.
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "file",
        "--passphrase-file",
        s(&pass),
    ])
    .success();
    assert!(keyring(&dir).exists());
}

#[test]
fn init_refuses_unknown_or_unimplemented_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    pv(&["init", "--data", s(&dir), "--keys", "shamir"]).refused(&["shamir", "--shares"]);
    pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "shamir",
        "--shares",
        "3",
        "--threshold",
        "1",
    ])
    .refused(&["--threshold"]);
    pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "shamir",
        "--shares",
        "2",
        "--threshold",
        "3",
    ])
    .refused(&["--threshold", "--shares"]);
    pv(&[
        "init",
        "--data",
        s(&dir),
        "--dev",
        "--shares",
        "3",
        "--threshold",
        "2",
    ])
    .refused(&["--keys shamir"]);
    // pkcs11 is implemented (tests/hsm.rs); without its settings it is refused, naming them.
    pv(&["init", "--data", s(&dir), "--keys", "pkcs11"]).refused(&["pkcs11", "--pkcs11-pin-file"]);
    pv(&["init", "--data", s(&dir), "--keys", "vault"]).refused(&["unknown key source", "vault"]);
    pv(&["init", "--data", s(&dir), "--dev", "--store", "foo"])
        .refused(&["foo", "`redb`", "`sled`"]);
    assert!(!dir.exists(), "a refused init creates nothing");
}

// ---- 4. audit verify / export on a real data dir ---------------------------------------------

/// (actor, action, merchant, token, outcome) of one audit entry.
type Row<'a> = (&'a str, &'a str, Option<String>, Option<String>, &'a str);

fn check_audit_trail(dir: &Path, act: &Activity) {
    let (n, last_hash) = verify_ok(dir);
    let entries = export(dir, None);
    assert_eq!(n, entries.len() as u64);

    // Contiguous sequence numbers 1..=N, each linked to the previous hash, each hash valid.
    let mut prev = "0".repeat(64);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.prev_hash, prev, "entry {}", e.seq);
        assert_eq!(e.compute_hash().unwrap(), e.hash, "entry {}", e.seq);
        humantime::parse_rfc3339(&e.time).unwrap();
        prev.clone_from(&e.hash);
    }
    assert_eq!(last_hash, prev);

    // Exactly what happened, in order.
    let m = Some(act.merchant_id.clone());
    let t = |i: usize| Some(act.tokens[i].clone());
    let want: Vec<Row<'_>> = vec![
        ("cli", "vault_init", None, None, "ok"),
        (
            "cli",
            "api_key_create",
            None,
            Some(entries[1].token.clone().unwrap()),
            "ok",
        ),
        ("system", "merchant_create", m.clone(), None, "ok"),
        // The process's first DEK is made at its first encryption, not at open.
        ("system", "dek_create", None, None, "ok"),
        ("system", "tokenize", m.clone(), t(0), "created"),
        ("system", "tokenize", m.clone(), t(1), "created"),
        ("system", "tokenize", m.clone(), t(2), "created"),
        ("system", "reveal", m.clone(), t(0), "ok"),
        ("system", "delete", m.clone(), t(2), "ok"),
    ];
    let got: Vec<Row<'_>> = entries
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action.as_str(),
                e.merchant.clone(),
                e.token.clone(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(n, 9);

    // verify --json agrees.
    let out = pv(&["audit", "verify", "--data", s(dir), "--json"]);
    out.success();
    assert_eq!(out.lines().len(), 1);
    let v: Value = serde_json::from_str(out.lines()[0]).unwrap();
    assert_eq!(v["entries"], Value::from(n));
    assert_eq!(v["last_seq"], Value::from(n));
    assert_eq!(v["last_hash"], Value::from(last_hash.as_str()));
    assert_eq!(v["head_seq"], Value::from(n));
    assert_eq!(v["signed_through"], Value::from(n));
    assert_eq!(v["macs_verified"], Value::Bool(true));

    // --since K starts at K; past the end is empty, not an error.
    let tail = export(dir, Some(5));
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (5..=n).collect::<Vec<_>>()
    );
    assert_eq!(tail[..], entries[4..]);
    assert_eq!(export(dir, Some(n)).len(), 1);
    assert!(export(dir, Some(n + 1)).is_empty());
    assert_eq!(export_text(dir, Some(n + 1)), "", "no entry, no head line");

    // PANVAULT_DATA stands in for --data.
    let out = run(cmd().env("PANVAULT_DATA", dir).args(["audit", "verify"]));
    out.success();
    assert!(
        out.stdout
            .starts_with(&format!("audit chain ok: {n} entries")),
        "{out:#?}"
    );
}

#[test]
fn audit_verify_and_export_redb() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, act) = vault_with_activity(tmp.path(), None);
    check_audit_trail(&dir, &act);
}

#[test]
fn audit_verify_and_export_sled() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, act) = vault_with_activity(tmp.path(), Some("sled"));
    check_audit_trail(&dir, &act);
}

#[test]
fn audit_on_a_dir_without_vault_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nothing");
    pv(&["audit", "verify", "--data", s(&dir)]).refused(&["no vault", s(&dir)]);
    pv(&["audit", "export", "--data", s(&dir)]).refused(&["no vault", s(&dir)]);
    assert!(!dir.exists(), "audit commands create nothing");
}

// ---- audit commands on a running vault (issue 15 point 4) -------------------------------------

/// While `serve` holds the store, `audit verify|export --data` refuse in one line that says the
/// vault is running and shows the `--url` form; `audit export --url` pages the trail through the
/// API with an `audit` key into the same lines an offline export writes (each entry as stored,
/// the signed head after the entry it covers), `audit verify --url` and `audit verify FILE`
/// check them, and once the vault is stopped the file verifies with the vault's keys too.
#[test]
fn audit_commands_work_on_a_running_vault_through_its_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let admin = init_dev(&dir, None)["admin_api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (child, base, c, _log) = common::serve(&dir, &[]);
    let (st, key) = common::send(
        c.post(format!("{base}/v1/api-keys"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"admin": true, "scopes": ["audit"], "label": "log shipper"})),
    );
    assert_eq!(st, 201, "{key}");
    let key_file = tmp.path().join("audit.key");
    std::fs::write(&key_file, format!("{}\n", key["api_key"].as_str().unwrap())).unwrap();
    let ca = dir.join("tls").join("ca.pem");

    // The data dir alone: refused in one line, naming the running vault and the way round.
    for cmd in ["verify", "export"] {
        pv(&["audit", cmd, "--data", s(&dir)]).refused(&[
            &format!("the vault in {} is running; stop it, or", s(&dir)),
            &format!("`panvault audit {cmd} --url https://HOST:PORT --api-key-file FILE --cacert "),
        ]);
    }

    // Through the API: every entry from 1, in order, ending at the signed head.
    let remote = [
        "--url",
        &base,
        "--api-key-file",
        s(&key_file),
        "--cacert",
        s(&ca),
    ];
    let out = pv(&[&["audit", "export"][..], &remote].concat());
    out.success();
    let lines = out.lines();
    let head: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let entries: Vec<Entry> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=entries.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(head["signed_head"]["seq"], entries.len() as u64, "{head}");
    assert!(
        entries.iter().any(|e| e.action == "audit_read"),
        "{entries:?}"
    );
    let file = tmp.path().join("online.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let v = verify_files_ok(&[&file], &[]);
    assert!(
        v[0].starts_with(&format!(
            "audit export ok: {} entries (1..={})",
            entries.len(),
            entries.len()
        )),
        "{v:?}"
    );
    // `--since` starts later; a key without the `audit` scope is refused with the API's reason.
    let out = pv(&[&["audit", "export", "--since", "3"][..], &remote].concat());
    out.success();
    assert_eq!(
        serde_json::from_str::<Entry>(out.lines()[0]).unwrap().seq,
        3
    );
    let admin_file = tmp.path().join("admin.key");
    std::fs::write(&admin_file, &admin).unwrap();
    let (st, only_keys) = common::send(
        c.post(format!("{base}/v1/api-keys"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"admin": true, "scopes": ["keys"]})),
    );
    assert_eq!(st, 201, "{only_keys}");
    std::fs::write(&admin_file, only_keys["api_key"].as_str().unwrap()).unwrap();
    pv(&[
        "audit",
        "export",
        "--url",
        &base,
        "--api-key-file",
        s(&admin_file),
        "--cacert",
        s(&ca),
    ])
    .refused(&[&format!(
        "{base}/v1/audit?since=1&limit=1000: 403 forbidden"
    )]);

    // `audit verify --url`: the same check over the lines the API pages out.
    let out = pv(&[&["audit", "verify"][..], &remote].concat());
    out.success();
    assert!(out.lines()[0].starts_with("audit trail ok: "), "{out:#?}");
    assert!(out.lines()[1].starts_with("unsigned check: "), "{out:#?}");
    let out = pv(&[&["audit", "verify", "--json"][..], &remote].concat());
    out.success();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["first_seq"], 1, "{v}");
    assert!(
        v["last_seq"].as_u64().unwrap() > entries.len() as u64,
        "{v}"
    );
    assert_eq!(v["head_seq"], v["last_seq"], "{v}");

    common::stop(child);
    // Stopped: the online export is the offline one's first lines, and verifies with the keys.
    let offline = export_text(&dir, None);
    let online: String = lines[..entries.len()]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(offline.starts_with(&online), "{offline}");
    let v = verify_files_ok(&[&file], &["--data", s(&dir)]);
    assert!(
        v[1].starts_with(&format!(
            "signed: MACs verified through entry {}",
            entries.len()
        )),
        "{v:?}"
    );
}

// ---- 5. tampering ----------------------------------------------------------------------------

/// Opens the store alone, lets `f` queue changes, commits them, and closes the store.
fn tamper(dir: &Path, f: impl FnOnce(&dyn Store, &mut WriteBatch)) {
    let store = panvault::vault::open_store(dir).unwrap();
    let mut batch = WriteBatch::new();
    f(store.as_ref(), &mut batch);
    store.commit(&batch).unwrap();
    drop(store);
}

fn stored_entry(store: &dyn Store, seq: u64) -> Entry {
    let bytes = store.get(Table::Audit, &audit::key(seq)).unwrap().unwrap();
    Entry::decode(&bytes).unwrap()
}

/// `audit verify` (plain and `--json`) fails with exactly this one line.
#[track_caller]
fn verify_broken(dir: &Path, seq: u64, reason: &str) {
    let line = format!("panvault: audit chain broken at entry {seq}: {reason}\n");
    let out = pv(&["audit", "verify", "--data", s(dir)]);
    out.refused(&[]);
    assert_eq!(out.stderr, line);
    let out = pv(&["audit", "verify", "--data", s(dir), "--json"]);
    out.refused(&[]);
    assert_eq!(out.stderr, line);
}

/// A fresh vault with activity, verified, then changed by `f`. Keep the `TempDir` alive.
fn fresh_tampered(
    store: Option<&str>,
    f: impl FnOnce(&dyn Store, &mut WriteBatch),
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = vault_with_activity(tmp.path(), store);
    assert_eq!(verify_ok(&dir).0, 9, "verifies before tampering");
    tamper(&dir, f);
    (tmp, dir)
}

#[test]
fn tamper_altered_field_is_named() {
    for store in [None, Some("sled")] {
        let (_tmp, dir) = fresh_tampered(store, |s, b| {
            let mut e = stored_entry(s, 3);
            e.outcome = "prefix_taken".into();
            b.put(Table::Audit, audit::key(3), e.encode().unwrap());
        });
        verify_broken(&dir, 3, "hash does not match the entry's contents");
    }
    let (_tmp, dir) = fresh_tampered(None, |s, b| {
        let mut e = stored_entry(s, 5);
        e.token = Some("41ABCDEF1234".into());
        b.put(Table::Audit, audit::key(5), e.encode().unwrap());
    });
    verify_broken(&dir, 5, "hash does not match the entry's contents");
}

#[test]
fn tamper_deleted_entry_is_named() {
    let (_tmp, dir) = fresh_tampered(None, |_, b| b.delete(Table::Audit, audit::key(3)));
    verify_broken(
        &dir,
        3,
        "sequence number out of order (entry missing or inserted)",
    );
}

#[test]
fn tamper_rehashed_entry_breaks_the_next_link() {
    let (_tmp, dir) = fresh_tampered(None, |s, b| {
        let mut e = stored_entry(s, 3);
        e.outcome = "prefix_taken".into();
        e.hash = e.compute_hash().unwrap();
        b.put(Table::Audit, audit::key(3), e.encode().unwrap());
    });
    verify_broken(&dir, 4, "prev_hash does not match the previous entry");
}

#[test]
fn tamper_garbage_bytes_are_named() {
    let (_tmp, dir) = fresh_tampered(None, |_, b| {
        b.put(
            Table::Audit,
            audit::key(3),
            b"\x00garbage{not json".to_vec(),
        );
    });
    verify_broken(&dir, 3, "entry cannot be decoded");
}

#[test]
fn tamper_cut_tail_is_detected() {
    // The last two entries deleted: every link that is left is fine, but the head says 9.
    let (_tmp, dir) = fresh_tampered(None, |_, b| {
        b.delete(Table::Audit, audit::key(8));
        b.delete(Table::Audit, audit::key(9));
    });
    verify_broken(
        &dir,
        8,
        "entries missing at the tail (the signed head is further on)",
    );
    // And the vault will not open on it: an open would sign the cut chain with its next head.
    pv(&["keys", "status", "--data", s(&dir)]).refused(&[
        "audit chain broken at entry 8: entries missing at the tail (the signed head is further on)",
    ]);
    // Cutting the head away too leaves a chain with no signed head, which the keys refuse.
    let (_tmp, dir) = fresh_tampered(None, |_, b| {
        b.delete(Table::Audit, audit::key(9));
        b.delete(Table::Meta, audit::HEAD_KEY);
    });
    verify_broken(&dir, 8, "no signed head");
}

#[test]
fn tamper_recomputed_chain_is_detected_by_the_mac() {
    // Entry 3 altered and every hash after it recomputed: the links hold, the head does not.
    let recompute = |s: &dyn Store, b: &mut WriteBatch, fix_head: bool| {
        let mut prev = stored_entry(s, 2).hash;
        for seq in 3..=9 {
            let mut e = stored_entry(s, seq);
            if seq == 3 {
                e.outcome = "prefix_taken".into();
            }
            e.prev_hash.clone_from(&prev);
            e.hash = e.compute_hash().unwrap();
            prev.clone_from(&e.hash);
            b.put(Table::Audit, audit::key(seq), e.encode().unwrap());
        }
        if fix_head {
            // The head's hash can be rewritten too, but not its MAC.
            let mut h = audit::SignedHead::load(s).unwrap().unwrap();
            h.hash = prev;
            b.put(
                Table::Meta,
                audit::HEAD_KEY,
                serde_json::to_vec(&h).unwrap(),
            );
        }
    };
    let (_tmp, dir) = fresh_tampered(None, |s, b| recompute(s, b, false));
    verify_broken(&dir, 9, "entry does not match the signed head");
    let (_tmp, dir) = fresh_tampered(None, |s, b| recompute(s, b, true));
    verify_broken(&dir, 9, "signed head MAC does not verify");
    pv(&["keys", "status", "--data", s(&dir)])
        .refused(&["audit chain broken at entry 9: signed head MAC does not verify"]);
}

#[test]
fn tamper_appended_entry_is_detected() {
    // A well-linked entry 10 added after the head.
    let (_tmp, dir) = fresh_tampered(None, |s, b| {
        let last = stored_entry(s, 9);
        let mut e = last.clone();
        e.seq = 10;
        e.prev_hash = last.hash;
        e.hash = e.compute_hash().unwrap();
        b.put(Table::Audit, audit::key(10), e.encode().unwrap());
    });
    verify_broken(&dir, 10, "entry after the signed head");
    pv(&["keys", "status", "--data", s(&dir)])
        .refused(&["audit chain broken at entry 10: entry after the signed head"]);
}

/// Stored (key, value) pairs.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Every audit entry's stored bytes and the signed head, as they are on disk now.
fn audit_on_disk(dir: &Path) -> (Rows, Option<Vec<u8>>) {
    let store = panvault::vault::open_store(dir).unwrap();
    let entries = store.scan(Table::Audit, &[], 10_000).unwrap();
    let head = store.get(Table::Meta, audit::HEAD_KEY).unwrap();
    (entries, head)
}

/// `serve --data DIR` (dev keys: it opens at once) exits non-zero before it listens; its stderr.
fn serve_refused(dir: &Path) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = cmd()
        .args([
            "serve",
            "--plaintext",
            "--listen",
            "127.0.0.1:0",
            "--data",
            s(dir),
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("listening on") {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("serve started on a tampered chain: {seen}{line}");
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success() && status.code().is_some(),
        "{status:?}: {seen}"
    );
    seen
}

#[test]
fn tamper_inside_the_chain_is_refused_at_start() {
    // Inside the chain, with the tail and the signed head left as they were: only re-hashing
    // the chain shows these, and the vault must not sign its next head over them.
    type Edit = fn(&dyn Store, &mut WriteBatch);
    let cases: [(&str, Edit, u64, &str); 3] = [
        (
            "edited",
            |s, b| {
                let mut e = stored_entry(s, 4);
                e.outcome = "denied".into();
                b.put(Table::Audit, audit::key(4), e.encode().unwrap());
            },
            4,
            "hash does not match the entry's contents",
        ),
        (
            "deleted",
            |_, b| b.delete(Table::Audit, audit::key(3)),
            3,
            "sequence number out of order (entry missing or inserted)",
        ),
        (
            "reordered",
            |s, b| {
                let (five, six) = (stored_entry(s, 5), stored_entry(s, 6));
                b.put(Table::Audit, audit::key(5), six.encode().unwrap());
                b.put(Table::Audit, audit::key(6), five.encode().unwrap());
            },
            5,
            "entry stored under another sequence number",
        ),
    ];
    for (what, edit, seq, reason) in cases {
        let (_tmp, dir) = fresh_tampered(None, edit);
        let before = audit_on_disk(&dir);
        let line = format!("audit chain broken at entry {seq}: {reason}");
        verify_broken(&dir, seq, reason);
        // A command that opens the vault with its keys refuses, naming the entry.
        pv(&["keys", "status", "--data", s(&dir)]).refused(&[&line]);
        // `serve` exits non-zero with the same reason, before it listens.
        let stderr = serve_refused(&dir);
        assert!(
            stderr.ends_with(&format!("panvault: {line}\n")),
            "{what}: {stderr}"
        );
        // Nothing was appended or re-signed over the tampered chain.
        assert!(audit_on_disk(&dir) == before, "{what}: the store changed");
    }
}

/// `audit verify FILES...` (with `extra` arguments) succeeded: its two lines.
#[track_caller]
fn verify_files_ok(files: &[&Path], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["audit", "verify"];
    args.extend(extra);
    args.extend(files.iter().map(|p| s(p)));
    let out = pv(&args);
    out.success();
    assert_eq!(out.lines().len(), 2, "{out:#?}");
    out.lines().into_iter().map(str::to_string).collect()
}

#[test]
fn exported_files_verify_on_their_own_and_across() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = vault_with_activity(tmp.path(), None);
    let (n, last_hash) = verify_ok(&dir);
    assert_eq!(n, 9);
    let text = export_text(&dir, None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "9 entries and the signed head");
    let write = |name: &str, lines: &[&str]| {
        let p = tmp.path().join(name);
        std::fs::write(
            &p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        p
    };
    let whole = write("whole.jsonl", &lines);
    let (first, second) = (write("a.jsonl", &lines[..5]), write("b.jsonl", &lines[5..]));

    // On its own, without keys: links only.
    let out = verify_files_ok(&[&whole], &[]);
    assert_eq!(
        out[0],
        format!("audit export ok: 9 entries (1..=9), last hash {last_hash}")
    );
    assert!(out[1].starts_with("unsigned check"), "{out:?}");
    // With the vault's keys: the head's MAC too.
    let with_keys = ["--data", s(&dir)];
    let out = verify_files_ok(&[&whole], &with_keys);
    assert_eq!(
        out[1],
        "signed: MACs verified through entry 9 (0 checkpoints, signed head)"
    );
    // Two exports in a row verify across; the second alone verifies from where it starts.
    let out = verify_files_ok(&[&first, &second], &with_keys);
    assert_eq!(out, verify_files_ok(&[&whole], &with_keys));
    let out = verify_files_ok(&[&second], &with_keys);
    assert!(
        out[0].starts_with("audit export ok: 4 entries (6..=9), "),
        "{out:?}"
    );
    // The first alone ends where no MAC covers it: its links check out without the keys, but
    // with them it is refused, since anyone could have recomputed its entries.
    let out = verify_files_ok(&[&first], &[]);
    assert!(out[1].starts_with("unsigned check"), "{out:?}");
    let mut args = vec!["audit", "verify"];
    args.extend(with_keys);
    args.push(s(&first));
    pv(&args).refused(&[
        "audit chain broken at entry 5: no MAC covers the end of these files (an export must end at its signed head)",
    ]);

    // What is refused, and where.
    let refused = |files: &[&Path], extra: &[&str], want: &str| {
        let mut args = vec!["audit", "verify"];
        args.extend(extra);
        args.extend(files.iter().map(|p| s(p)));
        pv(&args).refused(&[want]);
    };
    refused(
        &[&second, &first],
        &[],
        "audit chain broken at entry 10: sequence number out of order",
    );
    let gap = write("gap.jsonl", &[&lines[..3], &lines[4..]].concat());
    refused(
        &[&gap],
        &[],
        "audit chain broken at entry 4: sequence number out of order",
    );
    // The last entry cut but the head kept: the head no longer matches.
    let cut = write("cut.jsonl", &[&lines[..8], &lines[9..]].concat());
    refused(
        &[&cut],
        &[],
        "audit chain broken at entry 9: the signed head does not match the entry before it",
    );
    // The head's MAC is checked with the keys: another vault's keys refuse it.
    let (other, _) = vault_with_activity(&tmp.path().join("other"), None);
    refused(
        &[&whole],
        &["--data", s(&other)],
        "audit chain broken at entry 9: signed head MAC does not verify",
    );
    let junk = write("junk.jsonl", &[lines[0], "{\"hello\": 1}"]);
    refused(
        &[&junk],
        &[],
        "audit chain broken at entry 2: line is neither an audit entry nor a signed head",
    );
    pv(&["audit", "verify"]).refused(&["needs --data DIR"]);
}

#[test]
fn audit_prune_keeps_a_year_and_what_was_not_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = vault_with_activity(tmp.path(), None);
    pv(&[
        "audit",
        "prune",
        "--data",
        s(&dir),
        "--exported-through",
        "9",
        "--retention-days",
        "30",
    ])
    .refused(&["retention_days 30 is under the PCI DSS minimum of 365 days"]);
    // Every entry is younger than a year: nothing goes, and the run itself is audited.
    let out = pv(&[
        "audit",
        "prune",
        "--data",
        s(&dir),
        "--exported-through",
        "9",
    ]);
    out.success();
    let r: Value = serde_json::from_str(out.lines()[0]).unwrap();
    assert_eq!(r["deleted"], 0, "{r}");
    assert_eq!(r["first_kept"], 1, "{r}");
    assert_eq!(r["retention_days"], 365, "{r}");
    let entries = export(&dir, None);
    let last = entries.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("audit_prune", "cli")
    );
    assert!(
        last.detail
            .as_deref()
            .unwrap()
            .starts_with("nothing to delete (before ")
    );
    assert_eq!(verify_ok(&dir).0, last.seq);
}

// ---- 6. --help everywhere --------------------------------------------------------------------

#[test]
fn every_subcommand_has_help() {
    for (args, usage) in [
        (&["--help"][..], "Usage: panvault"),
        (&["init", "--help"], "Usage: panvault init"),
        (&["audit", "--help"], "Usage: panvault audit"),
        (
            &["audit", "verify", "--help"],
            "Usage: panvault audit verify",
        ),
        (
            &["audit", "export", "--help"],
            "Usage: panvault audit export",
        ),
        (&["help", "init"], "Usage: panvault init"),
    ] {
        let out = pv(args);
        out.success();
        assert!(out.stdout.contains(usage), "{args:?}: {out:#?}");
        assert!(out.stdout.contains("--help"), "{args:?}");
        assert_eq!(out.stderr, "", "{args:?}");
    }
    let out = pv(&["--version"]);
    out.success();
    assert_eq!(
        out.stdout,
        format!("panvault {}\n", env!("CARGO_PKG_VERSION"))
    );
    // No subcommand is a usage error, not a silent success.
    assert_ne!(pv(&[]).code, Some(0));
}

// ---- 7. no PAN in any output -----------------------------------------------------------------

/// [`run`] scans every invocation in this file; this test drives one of each kind over a vault
/// that holds the test PANs (success and failure paths) so the scan has something to find.
#[test]
fn no_output_contains_a_pan() {
    let before = SCANNED.load(Ordering::Relaxed);
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = vault_with_activity(tmp.path(), None);
    let mut outputs = Vec::new();
    for args in [
        &["audit", "verify", "--data", s(&dir)][..],
        &["audit", "verify", "--data", s(&dir), "--json"],
        &["audit", "export", "--data", s(&dir)],
        &["audit", "export", "--data", s(&dir), "--since", "4"],
        &["init", "--data", s(&dir), "--dev"],
    ] {
        let out = pv(args);
        outputs.push(format!("{}{}", out.stdout, out.stderr));
    }
    tamper(&dir, |s, b| {
        let mut e = stored_entry(s, 4);
        e.outcome = "x".into();
        b.put(Table::Audit, audit::key(4), e.encode().unwrap());
    });
    let out = pv(&["audit", "verify", "--data", s(&dir)]);
    outputs.push(format!("{}{}", out.stdout, out.stderr));
    let out = pv(&["audit", "export", "--data", s(&dir)]);
    outputs.push(format!("{}{}", out.stdout, out.stderr));
    assert!(SCANNED.load(Ordering::Relaxed) >= before + outputs.len());
    for o in &outputs {
        for pan in PANS {
            assert!(!o.contains(pan));
        }
    }
    // The export did carry the activity (the scan looked at real entries).
    assert!(outputs[2].contains("\"action\":\"tokenize\""));
}

// ---- shamir custodian shares ------------------------------------------------------------------

/// `serve` with a shares file: Ok(()) once it listens (then stopped), else its stderr.
fn serve_with_shares(dir: &Path, shares_file: &Path) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd()
        .args([
            "serve",
            "--plaintext",
            "--listen",
            "127.0.0.1:0",
            "--data",
            s(dir),
        ])
        .arg("--shares-file")
        .arg(shares_file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("listening on") {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ok(());
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    Err(seen)
}

#[test]
fn init_shamir_writes_private_share_files_and_serve_needs_three() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let shares_dir = tmp.path().join("shares");
    let out = pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "shamir",
        "--shares",
        "5",
        "--threshold",
        "3",
        "--share-dir",
        s(&shares_dir),
        "--json",
    ]);
    out.success();
    let json: Value = serde_json::from_str(out.lines()[0]).unwrap();
    assert_eq!(json["key_source"], Value::from("shamir"));
    assert_eq!(json["threshold"], Value::from(3));
    assert_eq!(json["share_files"].as_array().unwrap().len(), 5);
    assert!(
        json.get("shares").is_none(),
        "shares go to files, not stdout"
    );
    let shares: Vec<String> = (1..=5)
        .map(|i| {
            let p = shares_dir.join(format!("share-{i}.txt"));
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            let t = std::fs::read_to_string(&p).unwrap();
            assert!(t.starts_with(&format!("pvshare1-{i}-")));
            assert!(!out.stdout.contains(t.trim()), "a share value on stdout");
            t.trim().to_string()
        })
        .collect();
    let keyring_text = std::fs::read_to_string(keyring(&dir)).unwrap();
    assert!(shares.iter().all(|sh| !keyring_text.contains(&sh[11..])));
    // The audit chain of the new vault verifies (it needs no keys).
    pv(&["audit", "verify", "--data", s(&dir)]).success();

    let file = tmp.path().join("three");
    std::fs::write(
        &file,
        format!(
            "# custodians 5, 1, 3\n{}\n\n{}\n{}\n",
            shares[4], shares[0], shares[2]
        ),
    )
    .unwrap();
    serve_with_shares(&dir, &file).unwrap();
    // Two are too few; a repeated one does not count; a wrong one is named, never echoed.
    std::fs::write(&file, format!("{}\n{}\n", shares[4], shares[0])).unwrap();
    let err = serve_with_shares(&dir, &file).unwrap_err();
    assert!(
        err.contains("not enough shares") && err.contains("3 needed"),
        "{err}"
    );
    std::fs::write(
        &file,
        format!("{}\n{}\n{}\n", shares[4], shares[0], shares[4]),
    )
    .unwrap();
    let err = serve_with_shares(&dir, &file).unwrap_err();
    assert!(
        err.contains("share #3") && err.contains("already given"),
        "{err}"
    );
    let mut bad = shares[1].clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    std::fs::write(&file, format!("{}\n{bad}\n{}\n", shares[4], shares[0])).unwrap();
    let err = serve_with_shares(&dir, &file).unwrap_err();
    assert!(
        err.contains("share #2") && err.contains("custodian 2"),
        "{err}"
    );
    assert!(!err.contains(&bad[11..]));
    // No shares file at all: the server starts sealed (tests/seal.rs unseals it over HTTPS).

    // A second init into the same share dir refuses before creating anything.
    let dir2 = tmp.path().join("vault2");
    pv(&[
        "init",
        "--data",
        s(&dir2),
        "--keys",
        "shamir",
        "--shares",
        "5",
        "--threshold",
        "3",
        "--share-dir",
        s(&shares_dir),
    ])
    .refused(&["share-1.txt", "already exists"]);
    assert!(!dir2.exists());
}

#[test]
fn init_shamir_prints_each_share_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let out = pv(&[
        "init",
        "--data",
        s(&dir),
        "--keys",
        "shamir",
        "--shares",
        "3",
        "--threshold",
        "2",
    ]);
    out.success();
    let shares: Vec<&str> = out
        .lines()
        .into_iter()
        .filter_map(|l| l.trim().strip_prefix("custodian ")?.split_once(": "))
        .map(|(_, v)| v)
        .filter(|v| v.starts_with("pvshare1-"))
        .collect();
    assert_eq!(shares.len(), 3, "{out:#?}");
    for (i, sh) in shares.iter().enumerate() {
        assert!(sh.starts_with(&format!("pvshare1-{}-", i + 1)));
        assert_eq!(out.stdout.matches(sh).count(), 1, "each share printed once");
    }
    let unlock = Unlock::Shares(vec![
        SecretString::new(shares[2].into()),
        SecretString::new(shares[0].into()),
    ]);
    panvault::keys::load(&dir, &unlock).unwrap();
}
