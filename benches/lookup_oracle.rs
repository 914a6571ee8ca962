//! Existence oracle of token lookups (issue 14 item 9): the time of `Vault::get` on another
//! merchant's token against a missing token of the same shape, 5,000 interleaved pairs (the
//! order inside each pair alternates), after 1,000 pairs of warm-up, on a redb vault of 20,000
//! stored tokens reopened so that they are in the engine. The two must do the same work (a
//! missing token reads, decodes and compares a decoy record), so the medians should differ by
//! no more than noise. Run: `cargo bench --bench lookup_oracle` (option after `--`: `--pairs N`).
//! Card numbers are synthetic Luhn-valid numbers made here (no real or published cards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use panvault::keys::Unlock;
use panvault::pan::luhn_check_digit;
use panvault::store::Backend;
use panvault::vault::{Ctx, InitOptions, Options, TokenizeRequest, Vault};
use rand::Rng;
use zeroize::Zeroizing;

const STORED: usize = 20_000;
const WARMUP: usize = 1_000;

fn req(i: usize) -> TokenizeRequest {
    let body = format!("49{:013}", 1_000_000_000 + i as u64 * 7919);
    let check = luhn_check_digit(&body).unwrap();
    TokenizeRequest {
        pan: Zeroizing::new(format!("{body}{check}")),
        expiry_month: 12,
        expiry_year: 2031,
        ..TokenizeRequest::default()
    }
}

/// Nanoseconds of one `get`, which must be refused as `token_not_found`.
fn timed(vault: &Vault, merchant: &str, token: &str) -> u64 {
    let t = Instant::now();
    let r = vault.get(merchant, token);
    let ns = t.elapsed().as_nanos();
    assert!(r.is_err());
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn summary(name: &str, v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    println!(
        "| {name} | {} | {} | {} | {} | {mean:.0} |",
        v.len(),
        at(0.1),
        at(0.5),
        at(0.9)
    );
    at(0.5)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pairs: usize = args
        .iter()
        .position(|a| a == "--pairs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    Vault::init(&data, InitOptions::dev(Backend::Redb)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (asker, theirs) = {
        let vault = Vault::open(&data, &Unlock::Dev, Options::default()).unwrap();
        let out = rt.block_on(async {
            let ctx = Ctx::system();
            let a = vault.create_merchant(&ctx, "asker", None).await.unwrap();
            let b = vault.create_merchant(&ctx, "owner", None).await.unwrap();
            let mut tokens = Vec::with_capacity(STORED);
            let items: Vec<TokenizeRequest> = (0..STORED).map(req).collect();
            for chunk in items.chunks(100) {
                for r in vault
                    .tokenize_batch(&ctx, &b.merchant_id, chunk)
                    .await
                    .unwrap()
                {
                    tokens.push(r.unwrap().info.token);
                }
            }
            (a.merchant_id, tokens)
        });
        vault.shutdown();
        out
    };
    let vault = Vault::open(&data, &Unlock::Dev, Options::default()).unwrap();
    let mut rng = rand::thread_rng();
    // A missing token of the same shape: the random middle of a stored one changed.
    let missing = |rng: &mut rand::rngs::ThreadRng, t: &str| {
        let mid: String = (0..6)
            .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
            .collect();
        format!("{}{mid}{}", &t[..6], &t[12..])
    };
    let (mut foreign, mut absent) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for i in 0..WARMUP + pairs {
        let t = &theirs[rng.gen_range(0..theirs.len())];
        let m = missing(&mut rng, t);
        let (f, a) = if i % 2 == 0 {
            let f = timed(&vault, &asker, t);
            (f, timed(&vault, &asker, &m))
        } else {
            let a = timed(&vault, &asker, &m);
            (timed(&vault, &asker, t), a)
        };
        if i >= WARMUP {
            foreign.push(f);
            absent.push(a);
        }
    }
    let mut diffs: Vec<i64> = foreign
        .iter()
        .zip(&absent)
        .map(|(&f, &a)| f as i64 - a as i64)
        .collect();
    diffs.sort_unstable();
    println!("# GET of another merchant's token vs a missing one ({STORED} stored tokens, redb)");
    println!();
    println!("| lookup | pairs | p10 ns | median ns | p90 ns | mean ns |");
    println!("|---|---:|---:|---:|---:|---:|");
    let f = summary("another merchant's token", &mut foreign);
    let a = summary("missing token", &mut absent);
    println!();
    println!(
        "median difference (foreign - missing): {} ns; median of the paired differences: {} ns",
        f as i64 - a as i64,
        diffs[diffs.len() / 2]
    );
    vault.shutdown();
}
