//! KEK rotation time with a large store, then the raw re-encryption rate (issue 4):
//! `cargo bench --bench rotation` (option after `--`: `--tokens N`, default 1,000,000). Fills a dev vault (redb) with N tokens of synthetic
//! Luhn-valid card numbers (64 concurrent callers, durable group commit), then times
//! `Vault::rotate_kek`: a new KEK version, every DEK and meta key re-wrapped in one durable
//! commit, the old version destroyed. Only keys are re-wrapped, never records, so the time
//! should not grow with N; a reveal of the first and last token afterwards checks the data.
//! Then the vault is reopened (a new DEK) and the re-encryption job's steps run back to back,
//! without the pause the server's job takes between them: every record moves, and every old
//! DEK is destroyed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use panvault::keys::Unlock;
use panvault::pan::luhn_check_digit;
use panvault::store::Backend;
use panvault::vault::{Ctx, InitOptions, Options, TokenizeRequest, Vault};
use zeroize::Zeroizing;

fn pan(i: u64) -> String {
    let body = format!("48{i:013}");
    let check = luhn_check_digit(&body).unwrap();
    format!("{body}{check}")
}

fn req(pan: &str) -> TokenizeRequest {
    TokenizeRequest {
        pan: Zeroizing::new(pan.to_string()),
        expiry_month: 12,
        expiry_year: 2031,
        ..TokenizeRequest::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .iter()
        .position(|a| a == "--tokens")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("v");
    Vault::init(&data, InitOptions::dev(Backend::Redb)).unwrap();
    let vault = Vault::open(&data, &Unlock::Dev, Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = Ctx::system();
        let m = vault
            .create_merchant(&ctx, "bench", Some("ROTB"))
            .await
            .unwrap()
            .merchant_id;
        let m = Arc::new(m);
        let fill = Instant::now();
        let callers = 64u64;
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (vault, m) = (vault.clone(), m.clone());
                tokio::spawn(async move {
                    let mut first_last = Vec::new();
                    let mut i = c;
                    while i < n {
                        let t = vault
                            .tokenize(&Ctx::system(), &m, &req(&pan(i)))
                            .await
                            .unwrap();
                        if i == 0 || i + callers >= n {
                            first_last.push((t.info.token, pan(i)));
                        }
                        i += callers;
                    }
                    first_last
                })
            })
            .collect();
        let mut probes = Vec::new();
        for t in tasks {
            probes.extend(t.await.unwrap());
        }
        let fill_secs = fill.elapsed().as_secs_f64();
        let r = vault.rotate_kek(&ctx).await.unwrap();
        for (token, p) in &probes {
            let card = vault.reveal(&ctx, &m, token).await.unwrap();
            assert_eq!(card.pan.digits(), p.as_str());
        }
        println!("| tokens stored | fill (64 callers) | KEK rotation | keys re-wrapped | KEK versions after |");
        println!("|---:|---:|---:|---:|---|");
        println!(
            "| {n} | {fill_secs:.1} s ({:.0}/s) | {} ms | {} | v{} (destroyed {:?}) |",
            n as f64 / fill_secs,
            r.millis,
            r.rewrapped,
            r.kek_version,
            r.destroyed
        );
    });
    vault.shutdown();
    drop((vault, rt));

    // Re-encryption: a reopened vault begins a new DEK, so every record is under an old one.
    // The job's steps back to back (as `panvault keys reencrypt` runs them), timed. The open
    // is timed too: it reads every token and fingerprint key into the key filter.
    let opened = Instant::now();
    let vault = Vault::open(&data, &Unlock::Dev, Options::default()).unwrap();
    println!();
    println!(
        "reopen with {n} tokens (key filter built from every token and fingerprint key): {:.0} ms",
        opened.elapsed().as_secs_f64() * 1000.0
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = Ctx::system();
        let below = vault.reencrypt_below().unwrap();
        let started = Instant::now();
        let (mut moved, mut slowest) = (0, 0f64);
        let destroyed = loop {
            let t = Instant::now();
            let step = vault
                .reencrypt_step(&ctx, below, panvault::vault::REENCRYPT_BATCH)
                .await
                .unwrap();
            slowest = f64::max(slowest, t.elapsed().as_secs_f64() * 1000.0);
            moved += step.moved;
            if step.finished {
                break step.destroyed;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(moved, n);
        let status = vault.key_status().unwrap();
        assert!(status.deks.iter().all(|d| d.id >= below));
        println!();
        println!(
            "| records re-encrypted | time | records/s | slowest step ({} tokens) | DEKs destroyed |",
            panvault::vault::REENCRYPT_BATCH
        );
        println!("|---:|---:|---:|---:|---|");
        println!(
            "| {moved} | {secs:.1} s | {:.0} | {slowest:.1} ms | {destroyed:?} |",
            moved as f64 / secs
        );
    });
    vault.shutdown();
}
