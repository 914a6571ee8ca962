//! What verifying the audit chain at open costs (issue 14 item 7):
//! `cargo bench --bench audit_open` (options after `--`: `--entries N`, default 1,000,000;
//! `--runs R`, default 5, at most 500). Builds a dev vault (redb) whose audit chain holds N
//! events, written straight through the library (the writer's own `Chain`, signed head and
//! checkpoints, in store commits of 10,000 entries: much faster than N operations through the
//! vault), plus the few more that leave the widest window for the open check: the head lands
//! just before the next checkpoint falls due (998-R entries after the last one before the
//! opens, 998 after them). Then, each as the median of R runs:
//! - `Vault::open` (keyring, DEKs, the chain check, a new DEK, the authorization records'
//!   check, the writer started) and `shutdown`;
//! - the store alone opened and closed (redb and the journal), part of every open;
//! - `audit::check_recent` alone: the last checkpoint to the signed head;
//! - `audit::verify` with the key: the whole chain, as `audit verify` reads it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use panvault::audit::{self, Chain, Event};
use panvault::keys::Unlock;
use panvault::store::{Backend, Table, WriteBatch};
use panvault::vault::{InitOptions, Options, Vault, audit_mac_key, open_store};

/// Entries per store commit while filling.
const BATCH: u64 = 10_000;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: u64) -> Event {
    Event {
        actor: "key_0123456789abcdef".into(),
        merchant: Some("mer_0123456789abcdef".into()),
        action: "tokenize",
        token: Some(format!("48{i:010}1234")),
        outcome: "created",
        request_id: Some(format!("req-{i:016x}")),
        client: Some("10.0.0.7".into()),
        detail: None,
    }
}

fn median(mut d: Vec<Duration>) -> f64 {
    d.sort();
    d[d.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--entries", 1_000_000);
    let runs = arg(&args, "--runs", 5).clamp(1, 500) as usize;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("v");
    Vault::init(&data, InitOptions::dev(Backend::Redb)).unwrap();

    // Fill: the chain as the writer extends it, signed head rewritten with every commit.
    let fill = Instant::now();
    {
        let store = open_store(&data).unwrap();
        let key = Arc::new(
            audit_mac_key(&data, store.as_ref(), &Unlock::Dev)
                .unwrap()
                .unwrap(),
        );
        let mut chain = Chain::load(store.as_ref(), Some(key)).unwrap();
        let mut i = 0;
        let mut head = 0;
        // N events, then as many more as put the head where, after the R opens (each appends
        // one entry), it is the last entry before a checkpoint falls due: the widest window.
        let last_rem = audit::CHECKPOINT_EVERY - 2 - runs as u64;
        while i < n || head % audit::CHECKPOINT_EVERY != last_rem {
            let end = if i < n { (i + BATCH).min(n) } else { i + 1 };
            let mut batch = WriteBatch::new();
            chain
                .append_all((i..end).map(event), "2026-01-01T00:00:00Z", |seq, bytes| {
                    head = seq;
                    batch.put(Table::Audit, audit::key(seq), bytes)
                })
                .unwrap();
            batch.put(Table::Meta, audit::HEAD_KEY, chain.signed_head().unwrap());
            store.commit(&batch).unwrap();
            i = end;
        }
    }
    let fill_secs = fill.elapsed().as_secs_f64();

    let mut opens = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let v = Vault::open(&data, &Unlock::Dev, Options::default()).unwrap();
        v.shutdown();
        drop(v);
        opens.push(t.elapsed());
    }

    // The store alone (engine and journal opened, then closed): what of the open is not ours.
    let mut stores = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        drop(open_store(&data).unwrap());
        stores.push(t.elapsed());
    }

    let store = open_store(&data).unwrap();
    let key = audit_mac_key(&data, store.as_ref(), &Unlock::Dev)
        .unwrap()
        .unwrap();
    let mut recent = Vec::new();
    let mut window = 0;
    let mut from = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let v = audit::check_recent(store.as_ref(), &key).unwrap();
        recent.push(t.elapsed());
        (window, from) = (v.entries, v.first_seq);
    }
    let mut full = Vec::new();
    let mut total = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let v = audit::verify(store.as_ref(), Some(&key), false).unwrap();
        full.push(t.elapsed());
        total = v.entries;
    }

    println!(
        "audit chain: {total} entries (filled in {fill_secs:.1} s), last checkpoint at seq \
         {from}; medians of {runs} runs"
    );
    println!("| measured | entries read | median |");
    println!("|---|---:|---:|");
    println!(
        "| `Vault::open` + shutdown (chain check included) | {}..{window} | {:.1} ms |",
        window as usize - runs,
        median(opens)
    );
    println!(
        "| the store alone (`open_store`, then closed) | 0 | {:.1} ms |",
        median(stores)
    );
    println!(
        "| `audit::check_recent` alone (last checkpoint to head) | {window} | {:.2} ms |",
        median(recent)
    );
    println!(
        "| `audit::verify` with the key (whole chain, `audit verify`) | {total} | {:.0} ms |",
        median(full)
    );
}
