//! `GET /v1/audit` (issue 6 item 4) against the real binary over HTTPS: pages of the chain in
//! order with a `next` cursor, every entry linked to the one before, no card number in any
//! entry, the read itself audited, bad parameters named, and only the `audit` scope admitted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{send, serve, stop};
use reqwest::StatusCode;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

const PAN: &str = "4111111111111111";

#[test]
fn the_audit_trail_pages_in_order_and_its_reading_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = common::init_dev(&data);
    let (child, base, c, _) = serve(&data, &[]);
    let auth = |b: RequestBuilder, k: &str| b.header("Authorization", format!("Bearer {k}"));
    let (s, m) =
        send(auth(c.post(format!("{base}/v1/merchants")), &admin).json(&json!({"name": "A"})));
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap();
    let (s, _) = send(
        auth(c.post(format!("{base}/v1/merchants/{mid}/shops")), &admin)
            .json(&json!({"shop_login": "9000001"})),
    );
    assert_eq!(s, StatusCode::CREATED);
    let (_, k) = send(
        auth(c.post(format!("{base}/v1/api-keys")), &admin)
            .json(&json!({"shop_login": "9000001", "scopes": ["tokenize", "reveal"]})),
    );
    let shop = k["api_key"].as_str().unwrap().to_string();
    let (_, auditor) = send(
        auth(c.post(format!("{base}/v1/api-keys")), &admin)
            .json(&json!({"admin": true, "scopes": ["audit"]})),
    );
    let auditor = auditor["api_key"].as_str().unwrap().to_string();
    let (s, t) = send(
        auth(c.post(format!("{base}/v1/tokens")), &shop)
            .json(&json!({"pan": PAN, "expiry_month": 12, "expiry_year": 2030})),
    );
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["token"].as_str().unwrap();
    let (s, _) = send(auth(
        c.post(format!("{base}/v1/tokens/{token}/reveal")),
        &shop,
    ));
    assert_eq!(s, StatusCode::OK);

    // Page through with limit 2: seq 1, 2, 3, ... in order, each prev_hash the hash before.
    let mut since = 1u64;
    let mut all: Vec<Value> = Vec::new();
    loop {
        let (s, page) = send(auth(
            c.get(format!("{base}/v1/audit?since={since}&limit=2")),
            &auditor,
        ));
        assert_eq!(s, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        all.extend(entries.iter().cloned());
        match page["next"].as_u64() {
            Some(n) => {
                assert!(page["signed_head"].is_null(), "{page}");
                since = n;
            }
            None => {
                // The last page carries the signed head of its last entry.
                let (head, last) = (&page["signed_head"], entries.last().unwrap());
                assert_eq!(head["seq"], last["seq"], "{page}");
                assert_eq!(head["hash"], last["hash"], "{page}");
                assert_eq!(head["mac"].as_str().unwrap().len(), 64, "{page}");
                break;
            }
        }
    }
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64 + 1, "{e}");
        if i > 0 {
            assert_eq!(e["prev_hash"], all[i - 1]["hash"], "{e}");
        }
        assert!(!e.to_string().contains(PAN), "a PAN in {e}");
    }
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["tokenize", "reveal", "audit_read"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    // Each page read is audited, so a read from the end shows the reads before it.
    let (_, page) = send(auth(
        c.get(format!("{base}/v1/audit?since={}", all.len() + 1)),
        &auditor,
    ));
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "audit_read"),
        "{page}"
    );
    // Bad parameters are named; other scopes are refused.
    for (q, field) in [
        ("since=0", "since"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("from=3", "query"),
    ] {
        let (s, p) = send(auth(c.get(format!("{base}/v1/audit?{q}")), &auditor));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {p}");
        assert_eq!(p["code"], "invalid_field", "{q}");
        assert!(p["detail"].as_str().unwrap().contains(field), "{q}: {p}");
    }
    let (_, only_admin) = send(
        auth(c.post(format!("{base}/v1/api-keys")), &admin)
            .json(&json!({"admin": true, "scopes": ["admin"]})),
    );
    let only_admin = only_admin["api_key"].as_str().unwrap().to_string();
    for k in [&shop, &only_admin] {
        let (s, _) = send(auth(c.get(format!("{base}/v1/audit")), k));
        assert_eq!(s, StatusCode::FORBIDDEN);
    }

    // The evidence report: computed now, so a reveal moves its figures.
    let evidence = || {
        let (s, e) = send(auth(c.get(format!("{base}/v1/sys/evidence")), &auditor));
        assert_eq!(s, StatusCode::OK, "{e}");
        e
    };
    let before = evidence();
    let shop_id = shop.split('_').nth(1).unwrap();
    assert_eq!(before["audit"]["chain"], "ok", "{before}");
    assert_eq!(
        before["tls"]["versions"],
        json!(["TLSv1_3", "TLSv1_2"]),
        "{before}"
    );
    assert!(
        before["tls"]["suites"].as_array().unwrap().iter().all(|s| s
            .as_str()
            .unwrap()
            .contains("GCM")
            || s.as_str().unwrap().contains("CHACHA20")),
        "{before}"
    );
    assert_eq!(before["store"]["backend"], "redb");
    assert!(
        !before["hardening"].as_array().unwrap().is_empty(),
        "{before}"
    );
    assert_eq!(before["keys"]["keks"][0]["state"], "active", "{before}");
    let (s, _) = send(auth(
        c.post(format!("{base}/v1/tokens/{token}/reveal")),
        &shop,
    ));
    assert_eq!(s, StatusCode::OK);
    let after = evidence();
    assert!(
        after["audit"]["entries"].as_u64().unwrap() > before["audit"]["entries"].as_u64().unwrap(),
        "{after}"
    );
    assert_ne!(after["audit"]["last_hash"], before["audit"]["last_hash"]);
    // The signed head moved with the chain, its MAC verified by the running vault.
    let signed = |e: &Value| e["audit"]["signed_through"].as_u64().unwrap();
    assert!(signed(&after) > signed(&before), "{after}");
    assert!(signed(&after) <= after["audit"]["entries"].as_u64().unwrap());
    let reveals = |e: &Value| -> u64 {
        e["reveals_by_key"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(reveals(&after), reveals(&before) + 1, "{after}");
    assert_eq!(
        after["reveals_by_key"][shop_id].as_u64(),
        Some(before["reveals_by_key"][shop_id].as_u64().unwrap() + 1),
        "{after}"
    );
    assert!(!after.to_string().contains(PAN));
    let keys = after["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "{after}");
    let shop_entry = keys.iter().find(|k| k["api_key_id"] == shop_id).unwrap();
    assert!(shop_entry["last_used"].is_string(), "{shop_entry}");
    assert_eq!(
        shop_entry["scopes"],
        json!(["tokenize", "reveal"]),
        "{shop_entry}"
    );
    stop(child);

    // Offline, `panvault evidence` reads the same chain.
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["evidence", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["audit"]["chain"], "ok");
    // The offline open writes nothing (no DEK at open): the chain is where the server left it.
    assert!(
        offline["audit"]["entries"].as_u64().unwrap()
            >= after["audit"]["entries"].as_u64().unwrap()
    );
    assert_eq!(reveals(&offline), reveals(&after));
    assert_eq!(
        Some(signed(&offline)),
        offline["audit"]["entries"].as_u64(),
        "{offline}"
    );
}
