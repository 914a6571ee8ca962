//! The fuzz targets (fuzz/src/lib.rs) on stable Rust: each target gets its committed seeds
//! (fuzz/corpus/<target>/), then random mutations of them (byte flips, inserts, deletions,
//! splices, test PANs and structural tokens dropped in) for a fixed time. A panic or a broken
//! invariant fails the test and prints the input (hex) that caused it.
//!
//! `cargo test` runs a short pass (PANVAULT_FUZZ_SECS, default 1 s per target); `.ci/run`
//! runs a longer one. The nightly/libFuzzer route is `cargo +nightly fuzz run <target>` in
//! fuzz/ (not part of this build).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fragments worth splicing in: test PANs in their shapes, JSON/XML/SOAP structure, numbers.
const DICT: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",
    "378282246310005",
    "4012888888881881",
    "0",
    "9",
    "\"",
    "\\u0034",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "\"number\":",
    "\"card\":{",
    "<",
    ">",
    "</",
    "&#52;",
    "&amp;",
    "<![CDATA[",
    "]]>",
    "<cardNumber>",
    "</cardNumber>",
    "<tokenValue>",
    "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"",
    "_",
    "-",
    " ",
    "tmp_",
    "MASKEDPAN",
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..7) {
            0 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input[i] = rng.r#gen();
            }
            2 => {
                let i = rng.gen_range(0..=input.len());
                input.insert(i, rng.gen_range(b' '..=b'~'));
            }
            3 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                let n = rng.gen_range(1..=(input.len() - i).min(8));
                input.drain(i..i + n);
            }
            4 => {
                let i = rng.gen_range(0..=input.len());
                let w = DICT[rng.gen_range(0..DICT.len())].as_bytes();
                input.splice(i..i, w.iter().copied());
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let b = rng.gen_range(a..=other.len());
                    let i = rng.gen_range(0..=input.len());
                    input.splice(i..i, other[a..b].iter().copied());
                }
            }
            _ if !input.is_empty() => {
                // Duplicate a chunk (nesting, repeated keys).
                let a = rng.gen_range(0..input.len());
                let b = rng.gen_range(a..=input.len().min(a + 32));
                let chunk = input[a..b].to_vec();
                input.splice(b..b, chunk);
            }
            _ => input.push(rng.gen_range(b'0'..=b'9')),
        }
    }
    input.truncate(4096);
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    if target == "audit_decode" && std::env::var_os("PANVAULT_FUZZ_WRITE_SEEDS").is_some() {
        for n in 0..3 {
            std::fs::write(dir.join(format!("entry{n}")), targets::audit_seed(n)).unwrap();
        }
    }
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    if target == "audit_decode" {
        out.extend((0..3).map(targets::audit_seed));
    }
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

fn run(name: &str, f: fn(&[u8]), budget: Duration, seed: u64) -> Result<u64, String> {
    let corpus = seeds(name);
    let check = |input: &[u8]| {
        catch_unwind(AssertUnwindSafe(|| f(input))).map_err(|e| {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            format!(
                "fuzz target {name} failed ({why}) on input (hex) {} = {:?}",
                hex(input),
                String::from_utf8_lossy(input)
            )
        })
    };
    for s in &corpus {
        check(s)?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut runs = corpus.len() as u64;
    let mut input = Vec::new();
    while start.elapsed() < budget {
        if runs.is_multiple_of(16) || input.is_empty() {
            input = corpus[rng.gen_range(0..corpus.len())].clone();
        }
        mutate(&mut rng, &corpus, &mut input);
        check(&input)?;
        runs += 1;
    }
    Ok(runs)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn fuzz_targets_on_seeds_and_mutations() {
    let secs: f64 = std::env::var("PANVAULT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let seed: u64 = std::env::var("PANVAULT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    // The panic hook would print each caught panic; the input is printed by `run` instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, f) in targets::TARGETS {
        match run(name, f, Duration::from_secs_f64(secs), seed) {
            Ok(n) => report.push(format!("{name}: {n} inputs")),
            Err(e) => failures.push(e),
        }
    }
    std::panic::set_hook(hook);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("fuzz (seed {seed}, {secs} s/target): {}", report.join(", "));
}
