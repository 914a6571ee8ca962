//! KEK rotation and DEK re-encryption (contract 5, issue 4 items 3 and 4) against the real
//! binary: online over HTTPS while 16 clients tokenize and reveal, and with the process killed
//! between the steps of each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{send, serve, stop};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

const PANS: [&str; 4] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "4012888888881881",
];
const PASSPHRASE: &str = "correct horse battery staple";

/// A `file`-keys vault with a passphrase file; its admin key.
fn init(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let data = dir.join("data");
    let pass = dir.join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["init", "--json", "--keys", "file", "--passphrase-file"])
        .arg(&pass)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (data, pass, v["admin_api_key"].as_str().unwrap().to_string())
}

/// A config file for load tests: no reveal limit to speak of, DEKs rolling over every
/// `dek_max_uses` encryptions.
fn load_config(dir: &Path, dek_max_uses: u64) -> std::path::PathBuf {
    let config = dir.join("panvault.toml");
    std::fs::write(
        &config,
        format!(
            "[reveal]\nper_second = 100000\nburst = 100000\n[dek]\nmax_uses = {dek_max_uses}\n"
        ),
    )
    .unwrap();
    config
}

fn bearer(b: RequestBuilder, key: &str) -> RequestBuilder {
    b.header("Authorization", format!("Bearer {key}"))
}

/// A merchant, a shop and a shop key with tokenize/read/reveal; the key.
fn shop_key(c: &Client, base: &str, admin: &str) -> String {
    let (s, m) = send(bearer(
        c.post(format!("{base}/v1/merchants"))
            .json(&json!({"name": "A", "prefix": "ROTA"})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap();
    let (s, _) = send(bearer(
        c.post(format!("{base}/v1/merchants/{mid}/shops"))
            .json(&json!({"shop_login": "9000001"})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED);
    let (s, k) = send(bearer(
        c.post(format!("{base}/v1/api-keys"))
            .json(&json!({"shop_login": "9000001", "scopes": ["tokenize", "read", "reveal"]})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{k}");
    k["api_key"].as_str().unwrap().to_string()
}

/// Tokenizes `pan` under custom token `name` (a new token per name); the token.
fn tokenize(c: &Client, base: &str, key: &str, pan: &str, name: &str) -> String {
    let (s, t) = send(bearer(
        c.post(format!("{base}/v1/tokens")).json(&json!({
            "pan": pan, "expiry_month": 12, "expiry_year": 2030, "request_token": name
        })),
        key,
    ));
    assert!(s.is_success(), "{s} {t}");
    t["token"].as_str().unwrap().to_string()
}

fn reveal(c: &Client, base: &str, key: &str, token: &str) -> String {
    let (s, r) = send(bearer(
        c.post(format!("{base}/v1/tokens/{token}/reveal")),
        key,
    ));
    assert_eq!(s, StatusCode::OK, "{r}");
    r["pan"].as_str().unwrap().to_string()
}

/// `POST /v1/sys/keys/reencrypt`, then `GET /v1/sys/keys` until the job ends; its progress.
fn reencrypt(c: &Client, base: &str, admin: &str) -> Value {
    let (s, started) = send(bearer(
        c.post(format!("{base}/v1/sys/keys/reencrypt")),
        admin,
    ));
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["running"], true, "{started}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (s, st) = send(bearer(c.get(format!("{base}/v1/sys/keys")), admin));
        assert_eq!(s, StatusCode::OK, "{st}");
        let job = &st["reencryption"];
        if job["running"] == false {
            assert_eq!(job["error"], Value::Null, "{job}");
            assert_eq!(job["below"], started["below"]);
            return job.clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "the job did not end: {job}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn kek_versions(data: &Path) -> Vec<u64> {
    let k: Value =
        serde_json::from_slice(&std::fs::read(data.join("keys/keyring.json")).unwrap()).unwrap();
    k["keks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["version"].as_u64().unwrap())
        .collect()
}

/// `audit verify` with the passphrase: links, the signed head and every checkpoint's MAC, whose
/// key every rotation re-wraps.
fn audit_verifies(data: &Path, pass: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["audit", "verify", "--data"])
        .arg(data)
        .arg("--passphrase-file")
        .arg(pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\nsigned: MACs verified through entry "),
        "{text}"
    );
    assert!(text.contains(", signed head)"), "{text}");
}

/// Two rotations while 16 clients tokenize and reveal: no request fails, every token reveals
/// its card afterwards and after a restart, only the newest KEK version is left in the keyring,
/// each rotation is audited with its versions, and the chain verifies.
#[test]
fn rotation_under_load_fails_no_request_and_leaves_one_kek() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, admin) = init(tmp.path());
    // The reveal limit (10/s per key) would answer the load's reveals 429: lifted. DEKs roll
    // over every 200 encryptions, so the re-encryption has old DEKs to drain.
    let config = load_config(tmp.path(), 200);
    let args = [
        OsStr::new("--passphrase-file"),
        pass.as_os_str(),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let (child, base, c, log) = serve(&data, &args);
    let key = shop_key(&c, &base, &admin);
    let before: Vec<(String, &str)> = PANS
        .iter()
        .enumerate()
        .map(|(i, p)| (tokenize(&c, &base, &key, p, &format!("ROTABEFORE_{i}")), *p))
        .collect();

    let stop_load = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let made = std::sync::Mutex::new(Vec::new());
    let job = std::sync::Mutex::new(Value::Null);
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (c, base, key) = (c.clone(), &base, &key);
            let (stop_load, done, made) = (&stop_load, &done, &made);
            scope.spawn(move || {
                let mut n = 0;
                while !stop_load.load(Ordering::SeqCst) {
                    let pan = PANS[(t + n) % PANS.len()];
                    let token = tokenize(&c, base, key, pan, &format!("ROTALOAD_{t}_{n}"));
                    assert_eq!(reveal(&c, base, key, &token), pan);
                    made.lock().unwrap().push((token, pan));
                    done.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            });
        }
        let wait_for = |n: usize| {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while done.load(Ordering::SeqCst) < n {
                if std::time::Instant::now() > until {
                    stop_load.store(true, Ordering::SeqCst);
                    panic!(
                        "the load stalled at {} requests",
                        done.load(Ordering::SeqCst)
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        wait_for(250);
        for expect in [2u64, 3] {
            let (s, r) = send(bearer(c.post(format!("{base}/v1/sys/keys/rotate")), &admin));
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!(r["kek_version"], expect, "{r}");
            assert_eq!(r["destroyed"], json!([expect - 1]), "{r}");
            // Every DEK plus the two meta keys.
            assert!(r["rewrapped"].as_u64().unwrap() >= 3, "{r}");
            let seen = done.load(Ordering::SeqCst);
            wait_for(seen + 50);
            if expect == 2 {
                *job.lock().unwrap() = reencrypt(&c, &base, &admin);
                let seen = done.load(Ordering::SeqCst);
                wait_for(seen + 50);
            }
        }
        stop_load.store(true, Ordering::SeqCst);
    });
    // The job drained every DEK older than the one current at its start and destroyed them.
    let job = job.into_inner().unwrap();
    let below = job["below"].as_u64().unwrap();
    assert!(below >= 2, "{job}");
    assert!(job["moved"].as_u64().unwrap() > 0, "{job}");
    let destroyed = job["destroyed"].as_array().unwrap();
    assert!(!destroyed.is_empty(), "{job}");
    assert!(
        destroyed.iter().all(|d| d.as_u64().unwrap() < below),
        "{job}"
    );
    assert!(done.load(Ordering::SeqCst) >= 150);
    assert_eq!(kek_versions(&data), vec![3]);
    // GET /v1/sys/keys: only KEK v3; every DEK wrapped by it; the records add up.
    let (s, st) = send(bearer(c.get(format!("{base}/v1/sys/keys")), &admin));
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["kek_versions"], json!([3]), "{st}");
    assert_eq!(st["keks"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(
        (
            st["keks"][0]["version"].clone(),
            st["keks"][0]["state"].clone()
        ),
        (json!(3), json!("active")),
        "{st}"
    );
    assert!(st["keks"][0]["age_seconds"].as_u64().unwrap() < 600, "{st}");
    let deks = st["deks"].as_array().unwrap();
    assert!(deks.iter().all(|d| d["kek_version"] == 3), "{st}");
    assert!(
        deks.iter().all(|d| d["id"].as_u64().unwrap() >= below),
        "an old DEK is left: {st}"
    );
    assert_eq!(
        deks.iter().filter(|d| d["current"] == true).count(),
        1,
        "{st}"
    );
    let records: u64 = deks.iter().map(|d| d["records"].as_u64().unwrap()).sum();
    assert_eq!(
        records as usize,
        before.len() + made.lock().unwrap().len(),
        "{st}"
    );
    assert_eq!(
        send(bearer(c.get(format!("{base}/v1/sys/keys")), &key)).0,
        StatusCode::FORBIDDEN
    );
    // A key without the `keys` scope cannot rotate.
    let (s, _) = send(bearer(c.post(format!("{base}/v1/sys/keys/rotate")), &key));
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (token, pan) in &before {
        assert_eq!(&reveal(&c, &base, &key, token), pan);
    }
    stop(child);

    // After a restart (only KEK v3 left), every token made before, during and after reveals.
    let (child, base, c, _) = serve(&data, &args);
    for (token, pan) in before
        .iter()
        .map(|(t, p)| (t.clone(), *p))
        .chain(made.into_inner().unwrap())
    {
        assert_eq!(reveal(&c, &base, &key, &token), pan);
    }
    stop(child);
    audit_verifies(&data, &pass);
    let export = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["audit", "export", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let details: Vec<String> = String::from_utf8(export.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("kek_")))
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(details.len(), 4, "{details:?}");
    assert!(details[0].starts_with("kek_rotate new kek v2;") && details[0].ends_with("from v1"));
    assert_eq!(details[1], "kek_destroy destroyed kek v1");
    assert_eq!(details[3], "kek_destroy destroyed kek v2");
    // The job's start and end, and the DEKs it destroyed, are in the chain too.
    let export = String::from_utf8(export.stdout).unwrap();
    let entries: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "reencrypt")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["started", "ok"]);
    let shredded = entries
        .iter()
        .filter(|e| e["action"] == "dek_destroy")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(shredded.len(), 1, "{shredded:?}");
    for d in destroyed {
        assert!(
            shredded[0]
                .trim_start_matches("destroyed dek ")
                .split(',')
                .any(|id| id.parse::<u64>().ok() == d.as_u64()),
            "{shredded:?} {d}"
        );
    }
    for line in log.lock().unwrap().iter() {
        for p in PANS {
            assert!(!line.contains(p), "a PAN in the log: {line}");
        }
    }
}

/// `panvault keys rotate` killed after each step (PANVAULT_CRASH_AT aborts the process there):
/// the vault opens after each crash with every token revealing its card, and the next rotation
/// completes and leaves one KEK version.
#[test]
fn a_rotation_killed_at_any_step_leaves_a_vault_that_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, admin) = init(tmp.path());
    let args = [OsStr::new("--passphrase-file"), pass.as_os_str()];
    let (child, base, c, _) = serve(&data, &args);
    let key = shop_key(&c, &base, &admin);
    let tokens: Vec<(String, &str)> = PANS
        .iter()
        .enumerate()
        .map(|(i, p)| (tokenize(&c, &base, &key, p, &format!("ROTACRASH_{i}")), *p))
        .collect();
    stop(child);

    let rotate = |crash_at: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_panvault"));
        cmd.args(["keys", "rotate", "--json", "--data"])
            .arg(&data)
            .arg("--passphrase-file")
            .arg(&pass);
        if let Some(p) = crash_at {
            cmd.env("PANVAULT_CRASH_AT", p);
        }
        cmd.output().unwrap()
    };
    let all_reveal = || {
        let (child, base, c, _) = serve(&data, &args);
        for (token, pan) in &tokens {
            assert_eq!(&reveal(&c, &base, &key, token), pan);
        }
        stop(child);
    };
    for (point, versions) in [
        ("rotate:added", vec![1, 2]),
        ("rotate:rewrapped", vec![1, 2, 3]),
    ] {
        let out = rotate(Some(point));
        assert!(
            !out.status.success(),
            "{point}: the crash point was not reached"
        );
        assert_eq!(kek_versions(&data), versions, "{point}");
        // `keys status`: the newest version active, the ones the crash left retired.
        let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args(["keys", "status", "--json", "--data"])
            .arg(&data)
            .arg("--passphrase-file")
            .arg(&pass)
            .output()
            .unwrap();
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        let states: Vec<(u64, &str)> = st["keks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["version"].as_u64().unwrap(), k["state"].as_str().unwrap()))
            .collect();
        let newest = *versions.last().unwrap();
        let expect: Vec<(u64, &str)> = versions
            .iter()
            .map(|&v| (v, if v == newest { "active" } else { "retired" }))
            .collect();
        assert_eq!(states, expect, "{point}: {st}");
        all_reveal();
    }
    let out = rotate(None);
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["kek_version"], 4, "{r}");
    assert_eq!(r["destroyed"], json!([1, 2, 3]), "{r}");
    assert_eq!(kek_versions(&data), vec![4]);
    all_reveal();
    audit_verifies(&data, &pass);
    // `panvault keys status` on the stopped vault agrees.
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["keys", "status", "--json", "--data"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["kek_versions"], json!([4]), "{st}");
    assert_eq!(st["key_source"], "file");
}

/// A re-encryption killed mid-way: aborted right after a step's commit (`keys reencrypt` with
/// PANVAULT_CRASH_AT), and by SIGKILL while the server runs the job. After each, every token
/// reveals; the next job resumes from the stored cursor (it looks only at the tokens the killed
/// one had not reached, with the killed one's idea of "old") and drains and destroys every old
/// DEK.
#[test]
fn a_reencryption_killed_mid_way_resumes_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, admin) = init(tmp.path());
    // 100 encryptions per DEK: the 600 cards below end up under 6 DEKs.
    let config = load_config(tmp.path(), 100);
    let args = [
        OsStr::new("--passphrase-file"),
        pass.as_os_str(),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let (child, base, c, _) = serve(&data, &args);
    let key = shop_key(&c, &base, &admin);
    let mut tokens = Vec::new();
    for b in 0..6 {
        let items: Vec<Value> = (0..100)
            .map(|i| {
                json!({"pan": PANS[i % 4], "expiry_month": 12, "expiry_year": 2030,
                    "request_token": format!("ROTAKILL_{b}_{i}")})
            })
            .collect();
        let (s, r) = send(bearer(
            c.post(format!("{base}/v1/tokens/batch"))
                .json(&json!({ "items": items })),
            &key,
        ));
        assert_eq!(s, StatusCode::OK, "{r}");
        for (i, res) in r["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(res["status"], 201, "{res}");
            tokens.push((res["token"].as_str().unwrap().to_string(), PANS[i % 4]));
        }
    }
    let total = tokens.len() as u64;
    let (_, st) = send(bearer(c.get(format!("{base}/v1/sys/keys")), &admin));
    assert!(st["deks"].as_array().unwrap().len() >= 6, "{st}");
    stop(child);

    let all_reveal = || {
        let (child, base, c, _) = serve(&data, &args);
        for (token, pan) in &tokens {
            assert_eq!(&reveal(&c, &base, &key, token), pan);
        }
        stop(child);
    };
    let cli_reencrypt = |crash_at: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_panvault"));
        cmd.args(["keys", "reencrypt", "--json", "--data"])
            .arg(&data)
            .arg("--passphrase-file")
            .arg(&pass);
        if let Some(p) = crash_at {
            cmd.env("PANVAULT_CRASH_AT", p);
        }
        cmd.output().unwrap()
    };
    // No DEK below `below` is left, and the records add up.
    let drained = |c: &Client, base: &str, below: u64| {
        let (_, st) = send(bearer(c.get(format!("{base}/v1/sys/keys")), &admin));
        let deks = st["deks"].as_array().unwrap();
        assert!(
            deks.iter().all(|d| d["id"].as_u64().unwrap() >= below),
            "an old DEK is left: {st}"
        );
        let records: u64 = deks.iter().map(|d| d["records"].as_u64().unwrap()).sum();
        assert_eq!(records, total, "{st}");
    };

    // Abort right after the first step's commit (512 tokens looked at).
    let out = cli_reencrypt(Some("reencrypt:step"));
    assert!(!out.status.success(), "the crash point was not reached");
    all_reveal();
    // `keys status` on the stopped vault tells of the interrupted job.
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["keys", "status", "--json", "--data"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["reencryption"]["running"], false, "{st}");
    assert!(
        st["reencryption"]["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{st}"
    );

    // The next job, over HTTPS, starts at the cursor: it looks at the other tokens only.
    let (child, base, c, _) = serve(&data, &args);
    let job = reencrypt(&c, &base, &admin);
    assert_eq!(job["total"].as_u64().unwrap(), total, "{job}");
    assert_eq!(job["scanned"].as_u64().unwrap(), total - 512, "{job}");
    assert!(!job["destroyed"].as_array().unwrap().is_empty(), "{job}");
    drained(&c, &base, job["below"].as_u64().unwrap());
    for (token, pan) in &tokens {
        assert_eq!(&reveal(&c, &base, &key, token), pan);
    }
    stop(child);

    // SIGKILL while the server runs a job (every start begins a DEK, so there is work again).
    let (mut child, base, c, _) = serve(&data, &args);
    let (s, job) = send(bearer(
        c.post(format!("{base}/v1/sys/keys/reencrypt")),
        &admin,
    ));
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    child.kill().unwrap();
    child.wait().unwrap();
    all_reveal();

    // Offline, the job (resumed, or a new one if the killed one had ended) runs to its end:
    // the bar goes to stderr, the report to stdout.
    let out = cli_reencrypt(None);
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["scanned"].as_u64().unwrap() <= total, "{r}");
    let (child, base, c, _) = serve(&data, &args);
    drained(&c, &base, r["below"].as_u64().unwrap());
    for (token, pan) in &tokens {
        assert_eq!(&reveal(&c, &base, &key, token), pan);
    }
    stop(child);
    audit_verifies(&data, &pass);
}

/// The passphrase may come through a file descriptor (issue 4 item 2): `--passphrase-file
/// /dev/stdin` (or `/dev/fd/N` of a descriptor the caller passes) reads it from a pipe, so it
/// never touches a disk; a wrong one through the same path is refused.
#[test]
fn the_passphrase_can_come_through_a_file_descriptor() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let (data, _, _) = init(tmp.path());
    let status = |passphrase: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args([
                "keys",
                "status",
                "--json",
                "--passphrase-file",
                "/dev/stdin",
                "--data",
            ])
            .arg(&data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{passphrase}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = status(PASSPHRASE);
    assert!(out.status.success(), "{out:?}");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["key_source"], "file", "{st}");
    assert_eq!(st["kek_versions"], json!([1]), "{st}");
    let out = status("not the passphrase");
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
}

/// `keys status` (read-only) writes nothing: no DEK, no audit entry, however often it runs; a
/// `serve` that fails to start (its port taken) leaves no key material behind either. The
/// first tokenization of a process makes its DEK (issue 14 item 10).
#[test]
fn read_only_commands_and_a_failed_start_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, admin) = init(tmp.path());
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args(["keys", "status", "--json", "--passphrase-file"])
            .arg(&pass)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        st["deks"].as_array().unwrap().len()
    };
    let entries = || {
        let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args(["audit", "verify", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split(" entries")
            .next()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no entry count in {text:?}"))
    };
    let before = entries();
    for _ in 0..3 {
        assert_eq!(status(), 0);
    }
    assert_eq!(entries(), before);
    // A start that fails after the vault opened: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["serve", "--listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(status(), 0);
    assert_eq!(entries(), before);
    // A served vault makes its DEK at its first encryption, audited as `dek_create`.
    let (child, base, c, _) = serve(&data, &[OsStr::new("--passphrase-file"), pass.as_os_str()]);
    let shop = shop_key(&c, &base, &admin);
    tokenize(&c, &base, &shop, PANS[0], "A");
    stop(child);
    assert_eq!(status(), 1);
}
