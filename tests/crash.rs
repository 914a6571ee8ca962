//! Crash safety (issue 2): a child process tokenizes from many tasks and is killed with
//! SIGKILL; after reopening, every token it saw acknowledged reveals to its card, on both
//! backends, at several kill points, and the audit chain still verifies. Afterwards the data
//! dir's raw bytes are searched for every PAN used: none may appear.
//!
//! The child is this same test binary, re-run with `PANVAULT_CRASH_CHILD` set, so the test
//! needs no extra binary and drives the real library.
//!
//! Journal damage (issue 14 item 3): after a SIGKILL, one bit flipped in a record in the middle
//! of the journal makes `serve` refuse to start, naming the file, offset and sequence numbers,
//! until `--accept-journal-loss` cuts the journal there and audits the loss; a torn last record
//! is dropped, logged and counted in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use panvault::keys::Unlock;
use panvault::store::Backend;
use panvault::vault::{Ctx, InitOptions, Options, TokenizeRequest, Vault};
use zeroize::Zeroizing;

mod common;

/// Published test card numbers only.
const PANS: [&str; 8] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "4012888888881881",
    "3530111333300000",
    "5105105105105100",
    "2223003122003222",
];
const MERCHANTS: usize = 4;
const CHILD_TASKS: usize = 32;

fn req(pan: &str, rt: Option<String>) -> TokenizeRequest {
    TokenizeRequest {
        pan: Zeroizing::new(pan.to_string()),
        expiry_month: 12,
        expiry_year: 2030,
        request_token: rt,
        ..TokenizeRequest::default()
    }
}

/// Not a test of its own: the body of the child process. Without the variable it does nothing.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var("PANVAULT_CRASH_CHILD") else {
        return;
    };
    let merchants: Vec<String> = std::env::var("PANVAULT_CRASH_MERCHANTS")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let round: usize = std::env::var("PANVAULT_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let vault = Vault::open(Path::new(&dir), &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for task in 0..CHILD_TASKS {
            let vault = vault.clone();
            let merchants = merchants.clone();
            tasks.push(tokio::spawn(async move {
                let ctx = Ctx::system();
                for i in 0.. {
                    let (mi, pi) = ((task + i) % MERCHANTS, (task * 7 + i) % PANS.len());
                    // Mostly custom tokens (unbounded), every fifth a standard one.
                    let rt = (i % 5 != 0).then(|| format!("R{round}T{task}N{i}"));
                    let t = vault
                        .tokenize(&ctx, &merchants[mi], &req(PANS[pi], rt))
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {mi} {pi} {}", t.info.token).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn run_child(
    dir: &Path,
    merchants: &[String],
    round: usize,
    kill_after_acks: usize,
    acks: &mut Vec<(usize, usize, String)>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PANVAULT_CRASH_CHILD", dir)
        .env("PANVAULT_CRASH_MERCHANTS", merchants.join(","))
        .env("PANVAULT_CRASH_ROUND", round.to_string())
        // Small journal cycles: the kills also land around checkpoints and journal reuse.
        .env(
            "PANVAULT_JOURNAL_CHECKPOINT_BYTES",
            (256 * 1024).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = 0;
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut p = rest.split(' ');
            let mi = p.next().unwrap().parse().unwrap();
            let pi = p.next().unwrap().parse().unwrap();
            acks.push((mi, pi, p.next().unwrap().to_string()));
            seen += 1;
            if seen >= kill_after_acks || started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush, no shutdown path runs in the child.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen >= kill_after_acks.min(1), "child acknowledged nothing");
}

fn verify_all(dir: &Path, merchants: &[String], acks: &[(usize, usize, String)]) {
    let vault = Vault::open(dir, &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = Ctx::system();
        for (mi, pi, token) in acks {
            let card = vault
                .reveal(&ctx, &merchants[*mi], token)
                .await
                .unwrap_or_else(|e| panic!("acknowledged token {token} lost after SIGKILL: {e}"));
            assert_eq!(
                card.pan.digits(),
                PANS[*pi],
                "token {token} reveals the wrong card"
            );
        }
    });
    vault.shutdown();
    drop(vault);
    // The chain ends at its signed head, every MAC checked: nothing cut, nothing extra.
    let store = panvault::vault::open_store(dir).unwrap();
    let mac = panvault::vault::audit_mac_key(dir, store.as_ref(), &Unlock::Dev)
        .unwrap()
        .unwrap();
    let v = panvault::audit::verify(store.as_ref(), Some(&mac), false).unwrap();
    assert_eq!(v.head_seq, Some(v.last_seq));
    assert_eq!(v.signed_through, Some(v.last_seq));
}

fn crash_cycle(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    Vault::init(&dir, InitOptions::dev(backend)).unwrap();
    let merchants: Vec<String> = {
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ms = rt.block_on(async {
            let mut ms = Vec::new();
            for i in 0..MERCHANTS {
                ms.push(
                    v.create_merchant(&Ctx::system(), &format!("m{i}"), None)
                        .await
                        .unwrap()
                        .merchant_id,
                );
            }
            ms
        });
        v.shutdown();
        ms
    };
    let mut acks = Vec::new();
    // Kill points: right after the first answer, early, and deep into sustained load.
    for (round, kill_at) in [1usize, 150, 1500, 6000].into_iter().enumerate() {
        run_child(&dir, &merchants, round, kill_at, &mut acks);
        verify_all(&dir, &merchants, &acks);
    }
    assert!(
        acks.len() >= 7000,
        "only {} acknowledged writes were tested",
        acks.len()
    );

    // No PAN in the raw bytes of anything under the data dir.
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for pan in PANS {
            assert!(
                !bytes.windows(pan.len()).any(|w| w == pan.as_bytes()),
                "a PAN appears in clear in {}",
                f.display()
            );
        }
    }
}

#[test]
fn sigkill_loses_no_acknowledged_token_redb() {
    if std::env::var("PANVAULT_CRASH_CHILD").is_ok() {
        return;
    }
    crash_cycle(Backend::Redb);
}

#[test]
fn sigkill_loses_no_acknowledged_token_sled() {
    if std::env::var("PANVAULT_CRASH_CHILD").is_ok() {
        return;
    }
    crash_cycle(Backend::Sled);
}

// ---- journal damage (issue 14 item 3) ------------------------------------------------------

/// Tokens the journal child writes, one at a time (one journal record each).
const JOURNAL_TOKENS: usize = 40;

/// Not a test of its own: the child of the journal tests. It opens the vault, makes a merchant,
/// tokenizes [`JOURNAL_TOKENS`] cards one after the other (printing `ACK <merchant> <pan
/// index> <token>` for each acknowledged one), prints `DONE` and waits to be killed. Nothing
/// is checkpointed meanwhile: the tokens are in the journal only.
#[test]
fn journal_child_entry() {
    let Ok(dir) = std::env::var("PANVAULT_JOURNAL_CHILD") else {
        return;
    };
    let vault = Vault::open(Path::new(&dir), &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = Ctx::system();
        let m = vault
            .create_merchant(&ctx, "journal", None)
            .await
            .unwrap()
            .merchant_id;
        let mut out = std::io::stdout().lock();
        for i in 0..JOURNAL_TOKENS {
            let pi = i % PANS.len();
            let t = vault
                .tokenize(&ctx, &m, &req(PANS[pi], Some(format!("JRNL{i:04}"))))
                .await
                .unwrap();
            writeln!(out, "ACK {m} {pi} {}", t.info.token).unwrap();
            out.flush().unwrap();
        }
        writeln!(out, "DONE").unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_secs(600));
    });
}

/// `panvault init --dev --json` on `backend`: the admin API key.
fn init_cli(dir: &Path, backend: Backend) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args([
            "init",
            "--dev",
            "--json",
            "--store",
            backend.as_str(),
            "--data",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["admin_api_key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs the journal child to `DONE` and SIGKILLs it: (merchant, pan index, token) per token.
fn write_and_kill(dir: &Path) -> Vec<(String, usize, String)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PANVAULT_JOURNAL_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acks = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest's `test journal_child_entry ... ` may start the first line.
        if line.ends_with("DONE") {
            break;
        }
        if let Some(rest) = line.split("ACK ").nth(1) {
            let p: Vec<&str> = rest.split(' ').collect();
            acks.push((p[0].to_string(), p[1].parse().unwrap(), p[2].to_string()));
        }
    }
    child.kill().unwrap(); // SIGKILL: no checkpoint on the way out
    child.wait().unwrap();
    assert_eq!(acks.len(), JOURNAL_TOKENS);
    acks
}

/// The run of records at the start of `journal.log`: (offset, length, seq) of each, read from
/// the headers (`PVJ1` ‖ seq u64 LE ‖ payload length u32 LE ‖ payload ‖ 16-byte checksum).
fn journal_records(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out: Vec<(usize, usize, u64)> = Vec::new();
    let mut pos = 0;
    while bytes.len() >= pos + 16 && &bytes[pos..pos + 4] == b"PVJ1" {
        let seq = u64::from_le_bytes(bytes[pos + 4..pos + 12].try_into().unwrap());
        let size = u32::from_le_bytes(bytes[pos + 12..pos + 16].try_into().unwrap()) as usize;
        if out.last().is_some_and(|r| r.2 + 1 != seq) {
            break;
        }
        out.push((pos, 16 + size + 16, seq));
        pos += 16 + size + 16;
    }
    out
}

/// Runs `panvault serve` on `dir` expecting it to refuse: its stderr, once it has exited.
fn serve_refused(dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("serve started on a damaged journal");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

/// A `serve` child that is killed if the test fails before it is stopped.
struct Served(Option<std::process::Child>);

impl Served {
    fn stop(mut self) {
        common::stop(self.0.take().unwrap());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One figure of `/metrics`.
fn metric(base: &str, client: &reqwest::blocking::Client, key: &str, name: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Reveals each of `acks` with the library: which ones the vault still holds.
fn revealable(dir: &Path, acks: &[(String, usize, String)]) -> Vec<bool> {
    let vault = Vault::open(dir, &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let held = rt.block_on(async {
        let mut held = Vec::new();
        for (m, pi, token) in acks {
            match vault.reveal(&Ctx::system(), m, token).await {
                Ok(card) => {
                    assert_eq!(card.pan.digits(), PANS[*pi], "{token}");
                    held.push(true);
                }
                Err(e) => {
                    assert_eq!(e.code(), "token_not_found", "{token}: {e}");
                    held.push(false);
                }
            }
        }
        held
    });
    vault.shutdown();
    held
}

fn cli(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(args)
        .arg("--data")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn a_flipped_bit_mid_journal_refuses_to_start_until_the_loss_is_accepted() {
    if std::env::var("PANVAULT_JOURNAL_CHILD").is_ok() {
        return;
    }
    for backend in [Backend::Redb, Backend::Sled] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let admin = init_cli(&dir, backend);
        let acks = write_and_kill(&dir);
        // The record holding token 20 of 40: one bit flipped in its payload.
        let path = dir.join("journal.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let records = journal_records(&bytes);
        let damaged = JOURNAL_TOKENS / 2;
        let &(at, len, seq) = records
            .iter()
            .find(|(at, len, _)| {
                bytes[*at..at + len]
                    .windows(acks[damaged].2.len())
                    .any(|w| w == acks[damaged].2.as_bytes())
            })
            .expect("the record of token 20");
        let last = records.last().unwrap().2;
        assert!(last > seq, "{backend}: records follow the damaged one");
        bytes[at + len / 2] ^= 0x08;
        std::fs::write(&path, &bytes).unwrap();

        let err = serve_refused(&dir);
        for part in [
            "journal damaged".to_string(),
            format!("{} at offset {at}", path.display()),
            format!("record {seq} is damaged or missing and records up to {last} follow it"),
            "--accept-journal-loss".to_string(),
        ] {
            assert!(err.contains(&part), "{backend}: no `{part}` in {err}");
        }
        for (_, pi, _) in &acks {
            assert!(!err.contains(PANS[*pi]), "{err}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "a refusal changes nothing"
        );
        // `audit verify` opens the store too: refused as well, not "ok".
        let out = cli(&["audit", "verify"], &dir);
        assert!(!out.status.success(), "{backend}: {out:?}");

        let (child, base, client, log) =
            common::serve(&dir, &[std::ffi::OsStr::new("--accept-journal-loss")]);
        let child = Served(Some(child));
        assert_eq!(
            metric(&base, &client, &admin, "panvault_journal_records_lost"),
            last - seq + 1,
            "{backend}"
        );
        assert_eq!(
            metric(
                &base,
                &client,
                &admin,
                "panvault_journal_torn_records_dropped"
            ),
            0
        );
        child.stop();
        let log = log.lock().unwrap().join("\n");
        assert!(log.contains("journal damaged"), "{backend}: {log}");

        // Everything before the damage is there, nothing after it.
        let held = revealable(&dir, &acks);
        assert!(held[..damaged].iter().all(|h| *h), "{backend}: {held:?}");
        assert!(held[damaged..].iter().all(|h| !*h), "{backend}: {held:?}");
        let export = cli(&["audit", "export"], &dir);
        assert!(export.status.success(), "{export:?}");
        let export = String::from_utf8(export.stdout).unwrap();
        let entry = export
            .lines()
            .find(|l| l.contains("\"journal_loss\""))
            .unwrap_or_else(|| panic!("{backend}: no journal_loss entry"));
        assert!(
            entry.contains(&format!("journal records {seq}..={last} lost")),
            "{entry}"
        );
        let verify = cli(&["audit", "verify"], &dir);
        assert!(verify.status.success(), "{backend}: {verify:?}");
    }
}

#[test]
fn a_torn_last_record_is_dropped_logged_and_counted() {
    if std::env::var("PANVAULT_JOURNAL_CHILD").is_ok() {
        return;
    }
    for backend in [Backend::Redb, Backend::Sled] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let admin = init_cli(&dir, backend);
        let acks = write_and_kill(&dir);
        // A record cut short after the last one, as a crash during its write leaves it.
        let path = dir.join("journal.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let &(at, len, seq) = journal_records(&bytes).last().unwrap();
        let mut torn = b"PVJ1".to_vec();
        torn.extend((seq + 1).to_le_bytes());
        torn.extend(400u32.to_le_bytes());
        torn.extend([0x5a; 100]);
        bytes[at + len..at + len + torn.len()].copy_from_slice(&torn);
        std::fs::write(&path, &bytes).unwrap();

        let (child, base, client, log) = common::serve(&dir, &[]);
        let child = Served(Some(child));
        assert_eq!(
            metric(
                &base,
                &client,
                &admin,
                "panvault_journal_torn_records_dropped"
            ),
            1,
            "{backend}"
        );
        assert_eq!(
            metric(&base, &client, &admin, "panvault_journal_records_lost"),
            0
        );
        child.stop();
        let log = log.lock().unwrap().join("\n");
        assert!(
            log.contains("a torn last record was dropped")
                && log.contains(&format!("offset={}", at + len)),
            "{backend}: {log}"
        );
        // Every acknowledged token is there; the next start finds nothing more to drop.
        assert!(revealable(&dir, &acks).iter().all(|h| *h), "{backend}");
        let (child, base, client, _) = common::serve(&dir, &[]);
        let child = Served(Some(child));
        assert_eq!(
            metric(
                &base,
                &client,
                &admin,
                "panvault_journal_torn_records_dropped"
            ),
            0,
            "{backend}"
        );
        child.stop();
    }
}
