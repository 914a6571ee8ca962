//! Sealed start and unseal over HTTPS (contract 5, issue 4 item 1), against the real binary:
//! a `file`-keys vault served without its passphrase starts sealed, answers 503 `sealed` on data
//! endpoints and `/readyz`, refuses a wrong passphrase, unseals with the right one, seals again
//! on a `keys`-scoped request, and unseals once more with its data intact. The audit chain
//! records the refused attempt, both unseals and the seal. No server log line holds the card
//! number or the passphrase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{send, serve, stop};
use reqwest::StatusCode;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

const PAN: &str = "4111111111111111";
const PASSPHRASE: &str = "correct horse battery staple";

/// `init --keys shamir` 3 of 5 in `data`: the admin key and the five shares, in id order.
fn init_shamir_3_of_5(data: &std::path::Path) -> (String, Vec<String>) {
    let init = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args([
            "init",
            "--json",
            "--keys",
            "shamir",
            "--shares",
            "5",
            "--threshold",
            "3",
        ])
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let init: Value = serde_json::from_slice(&init.stdout).unwrap();
    let shares: Vec<String> = init["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shares.len(), 5);
    (init["admin_api_key"].as_str().unwrap().to_string(), shares)
}

/// (action, outcome) of every unseal/seal entry of the vault's audit chain, in order, after
/// checking that the chain verifies.
fn seal_entries(data: &std::path::Path) -> Vec<(String, String)> {
    let bin = env!("CARGO_BIN_EXE_panvault");
    let verify = Command::new(bin)
        .args(["audit", "verify", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let export = Command::new(bin)
        .args(["audit", "export", "--data"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "unseal" || e["action"] == "seal")
        .map(|e| {
            assert!(e["client"].as_str().is_some(), "{e}");
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, o)| (a.to_string(), o.to_string()))
        .collect()
}

#[test]
fn a_file_keys_vault_starts_sealed_unseals_and_seals_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let bin = env!("CARGO_BIN_EXE_panvault");
    let init = Command::new(bin)
        .args(["init", "--json", "--keys", "file", "--passphrase-file"])
        .arg(&pass)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let init: Value = serde_json::from_slice(&init.stdout).unwrap();
    let admin = init["admin_api_key"].as_str().unwrap().to_string();

    // No passphrase given: the server starts sealed.
    let (child, base, c, log) = serve(&data, &[]);
    let bearer = |b: RequestBuilder, key: &str| b.header("Authorization", format!("Bearer {key}"));
    let unseal = |body: Value| send(c.post(format!("{base}/v1/sys/unseal")).json(&body));
    let status = || send(c.get(format!("{base}/v1/sys/seal-status"))).1;
    let sealed_answer = |(s, body): (StatusCode, Value)| {
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "sealed", "{body}");
    };

    assert_eq!(
        status(),
        json!({"sealed": true, "key_source": "file", "shares_needed": 1, "shares_received": 0})
    );
    assert_eq!(
        send(c.get(format!("{base}/healthz"))).0,
        StatusCode::OK,
        "alive while sealed"
    );
    sealed_answer(send(c.get(format!("{base}/readyz"))));
    sealed_answer(send(bearer(
        c.post(format!("{base}/v1/merchants"))
            .json(&json!({"name": "A"})),
        &admin,
    )));
    sealed_answer(send(bearer(c.post(format!("{base}/v1/sys/seal")), &admin)));

    // Wrong passphrase: refused, still sealed. Malformed bodies: named field, 422.
    let (s, body) = unseal(json!({"passphrase": "not the passphrase at all"}));
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "key_unlock_failed");
    assert_eq!(status()["sealed"], true);
    for bad in [
        json!({}),
        json!({"passphrase": 7}),
        json!({"share": "pvshare1-1-00"}),
        json!({"passphrase": "x", "share": "y"}),
        json!({"passphrase": "x", "other": 1}),
    ] {
        let (s, body) = unseal(bad.clone());
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["code"], "invalid_field", "{bad}");
    }

    // The right passphrase unseals.
    let (s, body) = unseal(json!({ "passphrase": PASSPHRASE }));
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"sealed": false, "key_source": "file", "shares_needed": 0, "shares_received": 0})
    );
    assert_eq!(send(c.get(format!("{base}/readyz"))).0, StatusCode::OK);
    // A second unseal changes nothing.
    assert_eq!(
        unseal(json!({ "passphrase": PASSPHRASE })).0,
        StatusCode::OK
    );

    // Data goes in.
    let (s, m) = send(bearer(
        c.post(format!("{base}/v1/merchants"))
            .json(&json!({"name": "A", "prefix": "SEAL"})),
        &admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap();
    let (s, _) = send(bearer(
        c.post(format!("{base}/v1/merchants/{mid}/shops"))
            .json(&json!({"shop_login": "9000001"})),
        &admin,
    ));
    assert_eq!(s, StatusCode::CREATED);
    let (s, k) = send(bearer(
        c.post(format!("{base}/v1/api-keys"))
            .json(&json!({"shop_login": "9000001", "scopes": ["tokenize", "read", "reveal"]})),
        &admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let shop = k["api_key"].as_str().unwrap().to_string();
    let (s, t) = send(bearer(
        c.post(format!("{base}/v1/tokens"))
            .json(&json!({"pan": PAN, "expiry_month": 12, "expiry_year": 2030})),
        &shop,
    ));
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["token"].as_str().unwrap().to_string();

    // Sealing needs the `keys` scope; then every data endpoint is 503 again.
    let (s, body) = send(bearer(c.post(format!("{base}/v1/sys/seal")), &shop));
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = send(bearer(c.post(format!("{base}/v1/sys/seal")), &admin));
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["sealed"], true);
    sealed_answer(send(bearer(
        c.get(format!("{base}/v1/tokens/{token}")),
        &shop,
    )));
    sealed_answer(send(c.get(format!("{base}/readyz"))));
    // `/metrics` needs a key with the `metrics` scope, and no key can be checked while sealed.
    sealed_answer(send(bearer(c.get(format!("{base}/metrics")), &admin)));

    // Unseal again: the same token reveals to the same card.
    assert_eq!(
        unseal(json!({ "passphrase": PASSPHRASE })).0,
        StatusCode::OK
    );
    let (s, r) = send(bearer(
        c.post(format!("{base}/v1/tokens/{token}/reveal")),
        &shop,
    ));
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["pan"], PAN);

    stop(child);
    assert_eq!(
        seal_entries(&data),
        pairs(&[
            ("unseal", "refused"),
            ("unseal", "ok"),
            ("seal", "ok"),
            ("unseal", "ok")
        ])
    );
    let log = log.lock().unwrap();
    assert!(log.iter().any(|l| l.contains("starting sealed")), "{log:?}");
    for line in log.iter() {
        assert!(
            !line.contains(PAN) && !line.contains(PASSPHRASE),
            "secret in log: {line}"
        );
    }
}

/// `shamir` keys, 3 of 5: the server starts sealed and counts valid shares; a wrong share, a
/// repeated one and a passphrase are refused and do not count; two shares are not enough (still
/// sealed, data endpoints 503); the third opens it. Then seal, and unseal with another three.
#[test]
fn a_shamir_vault_unseals_with_any_three_of_five_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (admin, shares) = init_shamir_3_of_5(&data);

    let (child, base, c, log) = serve(&data, &[]);
    let status = || send(c.get(format!("{base}/v1/sys/seal-status"))).1;
    let unseal = |body: Value| send(c.post(format!("{base}/v1/sys/unseal")).json(&body));
    let progress = |received: u32| json!({"sealed": true, "key_source": "shamir", "shares_needed": 3, "shares_received": received});
    let merchants = || {
        send(
            c.post(format!("{base}/v1/merchants"))
                .header("Authorization", format!("Bearer {admin}"))
                .json(&json!({"name": "A"})),
        )
    };
    assert_eq!(status(), progress(0));

    let (s, body) = unseal(json!({"share": shares[1]}));
    assert_eq!((s, body), (StatusCode::OK, progress(1)));
    // Repeated: refused, not counted.
    let (s, body) = unseal(json!({"share": shares[1]}));
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "share_refused");
    assert!(
        body["detail"].as_str().unwrap().contains("already given"),
        "{body}"
    );
    // Wrong (one digit changed): refused by the Feldman check, never echoed, not counted.
    let mut wrong = shares[3].clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let (s, body) = unseal(json!({ "share": wrong }));
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "share_refused");
    assert!(!body.to_string().contains(&wrong[12..]), "{body}");
    // A passphrase is not how this vault unseals.
    let (s, body) = unseal(json!({"passphrase": "correct horse battery staple"}));
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(status(), progress(1));

    // Two valid shares are too few: still sealed.
    assert_eq!(
        unseal(json!({"share": shares[4]})),
        (StatusCode::OK, progress(2))
    );
    let (s, body) = merchants();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "sealed");
    // The third opens it.
    let (s, body) = unseal(json!({"share": shares[0]}));
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["sealed"], false);
    assert_eq!(merchants().0, StatusCode::CREATED);

    // Seal, then another three (2, 3, 4) unseal it again.
    let (s, _) = send(
        c.post(format!("{base}/v1/sys/seal"))
            .header("Authorization", format!("Bearer {admin}")),
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status(), progress(0));
    for (i, sh) in [&shares[2], &shares[3], &shares[4]].into_iter().enumerate() {
        let (s, body) = unseal(json!({ "share": sh }));
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["sealed"], i < 2, "{body}");
    }
    assert_eq!(merchants().0, StatusCode::CREATED);
    stop(child);
    assert_eq!(
        seal_entries(&data),
        pairs(&[
            ("unseal", "refused"),
            ("unseal", "refused"),
            ("unseal", "ok"),
            ("seal", "ok"),
            ("unseal", "ok")
        ])
    );
    for line in log.lock().unwrap().iter() {
        for sh in &shares {
            assert!(!line.contains(&sh[12..]), "a share in the log: {line}");
        }
    }
}

/// Rotating a `shamir` vault's KEK issues a new split (issue 4 item 3): the answer holds five
/// new shares; after a restart the old shares are refused and any three new ones unseal the
/// vault, whose card still reveals. The audit entry names the new shares' count, never a share.
#[test]
fn rotating_a_shamir_vault_issues_new_shares_and_retires_the_old() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (admin, old) = init_shamir_3_of_5(&data);
    let shares_file = tmp.path().join("shares");
    std::fs::write(&shares_file, old[..3].join("\n")).unwrap();
    let (child, base, c, log) = serve(
        &data,
        &[
            std::ffi::OsStr::new("--shares-file"),
            shares_file.as_os_str(),
        ],
    );
    let auth = |b: RequestBuilder, k: &str| b.header("Authorization", format!("Bearer {k}"));
    let (s, m) = send(
        auth(c.post(format!("{base}/v1/merchants")), &admin)
            .json(&json!({"name": "A", "prefix": "SHRO"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap();
    let (s, _) = send(
        auth(c.post(format!("{base}/v1/merchants/{mid}/shops")), &admin)
            .json(&json!({"shop_login": "9000001"})),
    );
    assert_eq!(s, StatusCode::CREATED);
    let (s, k) = send(
        auth(c.post(format!("{base}/v1/api-keys")), &admin)
            .json(&json!({"shop_login": "9000001", "scopes": ["tokenize", "reveal"]})),
    );
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let key = k["api_key"].as_str().unwrap().to_string();
    let (s, t) = send(
        auth(c.post(format!("{base}/v1/tokens")), &key)
            .json(&json!({"pan": PAN, "expiry_month": 12, "expiry_year": 2030})),
    );
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["token"].as_str().unwrap().to_string();

    let (s, r) = send(auth(c.post(format!("{base}/v1/sys/keys/rotate")), &admin));
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["kek_version"].clone(), r["destroyed"].clone()),
        (json!(2), json!([1])),
        "{r}"
    );
    let new: Vec<String> = r["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 5, "{r}");
    for (i, sh) in new.iter().enumerate() {
        assert!(sh.starts_with(&format!("pvshare1-{}-", i + 1)), "{sh}");
        assert!(!old.contains(sh));
    }
    stop(child);

    // Sealed start: an old share is refused, three new ones unseal, and the card reveals.
    let (child, base, c, log2) = serve(&data, &[]);
    let unseal = |sh: &str| {
        send(
            c.post(format!("{base}/v1/sys/unseal"))
                .json(&json!({ "share": sh })),
        )
    };
    let (s, body) = unseal(&old[0]);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "share_refused");
    for (i, sh) in new[2..].iter().enumerate() {
        let (s, body) = unseal(sh);
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["sealed"], i < 2, "{body}");
    }
    let (s, r) = send(auth(
        c.post(format!("{base}/v1/tokens/{token}/reveal")),
        &key,
    ));
    assert_eq!((s, r["pan"].as_str()), (StatusCode::OK, Some(PAN)), "{r}");
    stop(child);
    let export = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["audit", "export", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(export.contains("5 new custodian shares issued"), "{export}");
    let mut lines: Vec<String> = export.lines().map(String::from).collect();
    lines.extend(log.lock().unwrap().iter().cloned());
    lines.extend(log2.lock().unwrap().iter().cloned());
    for line in &lines {
        for sh in old.iter().chain(&new) {
            assert!(!line.contains(&sh[12..]), "a share in the log: {line}");
        }
    }
}

/// A sealed vault whose audit chain was edited on disk while it was down: the right passphrase
/// unlocks the keys, but the vault does not open on the chain (issue 14 item 7). The answer
/// says so (500 `audit_broken`), the server log names the entry, it stays sealed, and nothing
/// is appended or signed over the edited chain.
#[test]
fn unseal_over_an_edited_audit_chain_is_refused_and_stays_sealed() {
    use panvault::audit::{self, Entry};
    use panvault::store::{Table, WriteBatch};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["init", "--json", "--keys", "file", "--passphrase-file"])
        .arg(&pass)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    // Entry 1 of 2 altered; the tail and the signed head are left as they were.
    let on_disk = || {
        let store = panvault::vault::open_store(&data).unwrap();
        let entries = store.scan(Table::Audit, &[], 100).unwrap();
        (entries, store.get(Table::Meta, audit::HEAD_KEY).unwrap())
    };
    {
        let store = panvault::vault::open_store(&data).unwrap();
        let bytes = store.get(Table::Audit, &audit::key(1)).unwrap().unwrap();
        let mut e = Entry::decode(&bytes).unwrap();
        e.actor = "someone else".into();
        let mut b = WriteBatch::new();
        b.put(Table::Audit, audit::key(1), e.encode().unwrap());
        store.commit(&b).unwrap();
    }
    let before = on_disk();
    let (child, base, c, log) = serve(&data, &[]);
    let (s, body) = send(
        c.post(format!("{base}/v1/sys/unseal"))
            .json(&json!({ "passphrase": PASSPHRASE })),
    );
    let status = send(c.get(format!("{base}/v1/sys/seal-status"))).1;
    // Stopped before anything is asserted, so a failure leaves no server behind.
    stop(child);
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["code"], "audit_broken", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("stays sealed"),
        "{body}"
    );
    assert_eq!(status["sealed"], true, "{status}");
    let logged = log.lock().unwrap().join("\n");
    assert!(
        logged.contains("audit chain broken at entry 1: hash does not match the entry's contents"),
        "{logged}"
    );
    assert!(on_disk() == before, "the store changed");
}
