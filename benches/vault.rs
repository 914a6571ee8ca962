//! Library-level throughput of the vault (issue 2), next to the machine's raw ceiling measured
//! in the same run. Run: `cargo bench --bench vault` (options after `--`: `--quick`,
//! `--backend redb|sled`, `--callers 1,64`).
//!
//! Every tokenize here is durable: the call returns only after the journal sync covering it.
//! "batches" are what the single writer wrote to the journal, "syncs" the `fdatasync`s that
//! acknowledged them: writes/sync is the group-commit size. Callers are tokio tasks on a multi-thread runtime with one worker per core; each
//! caller has one operation in flight, so "64 callers" means at most 64 writes per commit.
//! Card numbers are synthetic Luhn-valid numbers made here (no real or published cards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use panvault::crypto::{Dek, SecretKey};
use panvault::keys::Unlock;
use panvault::pan::luhn_check_digit;
use panvault::store::Backend;
use panvault::vault::{Ctx, InitOptions, Options, TokenizeRequest, Vault};
use rand::Rng;
use zeroize::Zeroizing;

fn synthetic_pans(n: usize) -> Vec<String> {
    let mut rng = rand::thread_rng();
    let mut set = std::collections::HashSet::with_capacity(n);
    while set.len() < n {
        let body: String = format!("49{:013}", rng.gen_range(0..10_000_000_000_000u64));
        let check = luhn_check_digit(&body).unwrap();
        set.insert(format!("{body}{check}"));
    }
    set.into_iter().collect()
}

fn req(pan: &str) -> TokenizeRequest {
    TokenizeRequest {
        pan: Zeroizing::new(pan.to_string()),
        expiry_month: 12,
        expiry_year: 2031,
        ..TokenizeRequest::default()
    }
}

/// AES-256-GCM seals of a 17-byte record per second on one core.
fn aes_ceiling() -> f64 {
    let dek = Dek::new(1, &SecretKey::random());
    let n = 300_000;
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(
            dek.seal_record(
                "mer_bench",
                "49BNCHABCDEF1234",
                format!("{i:016}\0").as_bytes(),
            )
            .unwrap(),
        );
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// 4 KiB write + fdatasync per second on the data dir's disk.
fn fsync_ceiling(dir: &std::path::Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let r = n as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    r
}

struct Phase {
    name: &'static str,
    callers: usize,
    ops: usize,
    secs: f64,
    commits: u64,
    syncs: u64,
    writes: u64,
}

async fn run_phase(
    vault: &Vault,
    merchant: &str,
    name: &'static str,
    callers: usize,
    work: Arc<Vec<String>>,
    op: fn(Vault, String, String) -> OpFuture,
) -> (Phase, Vec<String>) {
    let stats = vault.writer_stats();
    let (c0, s0, w0) = (
        stats.commits.load(Ordering::Relaxed),
        stats.syncs.load(Ordering::Relaxed),
        stats.writes.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for c in 0..callers {
        let (vault, work, merchant) = (vault.clone(), work.clone(), merchant.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = c;
            while i < work.len() {
                out.push(op(vault.clone(), merchant.clone(), work[i].clone()).await);
                i += callers;
            }
            out
        }));
    }
    let mut results = Vec::with_capacity(work.len());
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let phase = Phase {
        name,
        callers,
        ops: work.len(),
        secs,
        commits: stats.commits.load(Ordering::Relaxed) - c0,
        syncs: stats.syncs.load(Ordering::Relaxed) - s0,
        writes: stats.writes.load(Ordering::Relaxed) - w0,
    };
    (phase, results)
}

type OpFuture = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

fn tokenize_op(v: Vault, m: String, pan: String) -> OpFuture {
    Box::pin(async move {
        v.tokenize(&Ctx::system(), &m, &req(&pan))
            .await
            .unwrap()
            .info
            .token
    })
}

fn reveal_op(v: Vault, m: String, token: String) -> OpFuture {
    Box::pin(async move {
        let card = v.reveal(&Ctx::system(), &m, &token).await.unwrap();
        assert_eq!(card.pan.len(), 16);
        String::new()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let base = std::env::var("PANVAULT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "# panvault vault benchmark ({cores} cores, data in {})",
        base.display()
    );
    println!();
    println!(
        "ceiling: AES-256-GCM seal {:.0}/s on one core; 4 KiB write+fdatasync {:.0}/s",
        aes_ceiling(),
        fsync_ceiling(scratch.path())
    );
    println!();
    println!(
        "| backend | operation | callers | ops | ops/s | batches | writes/batch | syncs | writes/sync |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let callers_arg: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--callers")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect());
    let callers_list: &[usize] = match &callers_arg {
        Some(v) => v,
        None if quick => &[1, 64],
        None => &[1, 4, 16, 64],
    };
    for backend in [Backend::Redb, Backend::Sled] {
        if only.as_deref().is_some_and(|o| o != backend.to_string()) {
            continue;
        }
        for &callers in callers_list {
            let dir = scratch.path().join(format!("{backend}-{callers}"));
            Vault::init(&dir, InitOptions::dev(backend)).unwrap();
            let vault = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
            let n = if quick {
                400 * callers
            } else {
                (1000 * callers).clamp(2000, 64_000)
            };
            let pans = Arc::new(synthetic_pans(n));
            let phases = rt.block_on(async {
                let m = vault
                    .create_merchant(&Ctx::system(), "bench", None)
                    .await
                    .unwrap()
                    .merchant_id;
                let mut out = Vec::new();
                let (p, tokens) = run_phase(
                    &vault,
                    &m,
                    "tokenize (new cards)",
                    callers,
                    pans.clone(),
                    tokenize_op,
                )
                .await;
                out.push(p);
                let (p, again) = run_phase(
                    &vault,
                    &m,
                    "re-tokenize (existing card)",
                    callers,
                    pans.clone(),
                    tokenize_op,
                )
                .await;
                assert_eq!(tokens.len(), again.len());
                out.push(p);
                out.push(
                    run_phase(&vault, &m, "reveal", callers, Arc::new(tokens), reveal_op)
                        .await
                        .0,
                );
                out
            });
            for p in phases {
                println!(
                    "| {backend} | {} | {} | {} | {:.0} | {} | {:.1} | {} | {:.1} |",
                    p.name,
                    p.callers,
                    p.ops,
                    p.ops as f64 / p.secs,
                    p.commits,
                    p.writes as f64 / p.commits.max(1) as f64,
                    p.syncs,
                    p.writes as f64 / p.syncs.max(1) as f64
                );
            }
            vault.shutdown();
            drop(vault);
            // Each configuration starts on a quiet disk: no writeback of the previous one's
            // files competing with its syncs.
            std::fs::remove_dir_all(&dir).unwrap();
            let _ = std::process::Command::new("sync").status();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
