//! Crash safety (issue 2): a child process tokenizes from many tasks and is killed with
//! SIGKILL; after reopening, every token it saw acknowledged reveals to its card, on both
//! backends, at several kill points, and the audit chain still verifies. Afterwards the data
//! dir's raw bytes are searched for every PAN used: none may appear.
//!
//! The child is this same test binary, re-run with `PANVAULT_CRASH_CHILD` set, so the test
//! needs no extra binary and drives the real library.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use panvault::keys::Unlock;
use panvault::store::Backend;
use panvault::vault::{Ctx, InitOptions, Options, TokenizeRequest, Vault};
use zeroize::Zeroizing;

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
