//! The whole-run leak test (issue 6 item 6): the real binary, a dev vault served over HTTPS
//! with its gateways pointed at `panvault sandbox`, driven through every kind of operation on
//! the four published test cards (tokenize standard and custom, again, batch, temporary, read,
//! patch, reveal, delete, charges on two gateways, and many refused requests that carry a card
//! number somewhere it does not belong). Then every place a card number could leak to is
//! searched for each of them, as digits and in the usual printed groupings: every answer's
//! status, headers and body (a successful reveal's body excepted: that is where a card may
//! go), `/metrics`, every page of `GET /v1/audit`, `panvault audit export`, every byte of every
//! file under the data dir after a clean stop, and the server's log. Each place is also shown
//! to hold something known that travelled the same way (a token, a metric name), and each
//! reveal answer to hold its card, so a scanner that reads nothing cannot pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::{serve, stop};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The published test cards (Visa, Mastercard, Amex, and a Visa the sandbox declines).
const PANS: [&str; 4] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "4012888888881881",
];

/// One thing to look for, and how to name it in a failure (never by its digits).
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// A card number with its last digit changed: fails Luhn, so the vault refuses it. Built here
/// rather than written out, so the sources hold only the published numbers.
fn bad_luhn(pan: &str) -> String {
    let (head, last) = pan.split_at(pan.len() - 1);
    let d = last.parse::<u8>().unwrap();
    format!("{head}{}", (d + 1) % 10)
}

/// `pan` in groups (4-4-4-4, or Amex's 4-6-5) joined by `sep`.
fn grouped(pan: &str, sep: &str) -> String {
    let sizes: &[usize] = if pan.len() == 15 {
        &[4, 6, 5]
    } else {
        &[4, 4, 4, 4]
    };
    let mut parts = Vec::new();
    let mut at = 0;
    for n in sizes {
        parts.push(&pan[at..at + n]);
        at += n;
    }
    assert_eq!(at, pan.len());
    parts.join(sep)
}

/// Every card as digits and grouped with spaces and with dashes; the bad-Luhn variants as
/// digits (refused input must not be echoed either).
fn needles() -> Vec<Needle> {
    let mut out = Vec::new();
    for (i, pan) in PANS.iter().enumerate() {
        out.push(Needle {
            what: format!("card #{i} (digits)"),
            bytes: pan.as_bytes().to_vec(),
        });
        for (sep, name) in [(" ", "spaces"), ("-", "dashes")] {
            out.push(Needle {
                what: format!("card #{i} (grouped with {name})"),
                bytes: grouped(pan, sep).into_bytes(),
            });
        }
        out.push(Needle {
            what: format!("bad-Luhn variant of card #{i}"),
            bytes: bad_luhn(pan).into_bytes(),
        });
    }
    out
}

/// Where in `hay` each needle occurs (first occurrence): (needle index, byte offset). Every
/// needle is made of digits, spaces and dashes only, so each occurrence lies inside a maximal
/// run of such bytes: one pass finds the runs, and only long enough runs are searched.
fn find(hay: &[u8], needles: &[Needle]) -> Vec<(usize, usize)> {
    let shortest = needles.iter().map(|n| n.bytes.len()).min().unwrap();
    let mut hits = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        if !(hay[i].is_ascii_digit() || hay[i] == b' ' || hay[i] == b'-') {
            i += 1;
            continue;
        }
        let start = i;
        while i < hay.len() && (hay[i].is_ascii_digit() || hay[i] == b' ' || hay[i] == b'-') {
            i += 1;
        }
        let run = &hay[start..i];
        if run.len() < shortest {
            continue;
        }
        for (k, n) in needles.iter().enumerate() {
            if hits.iter().any(|(h, _)| *h == k) {
                continue;
            }
            if let Some(at) = run
                .windows(n.bytes.len())
                .position(|w| w == n.bytes.as_slice())
            {
                hits.push((k, start + at));
            }
        }
    }
    hits
}

/// Collects what was found where, naming the place and the card (by index) and showing the
/// bytes around it with every digit masked.
#[derive(Default)]
struct Findings {
    found: Vec<String>,
    places: usize,
    bytes: usize,
}

impl Findings {
    fn scan(&mut self, place: &str, hay: &[u8], needles: &[Needle]) {
        self.places += 1;
        self.bytes += hay.len();
        for (k, at) in find(hay, needles) {
            let from = at.saturating_sub(40);
            let to = (at + needles[k].bytes.len() + 40).min(hay.len());
            let around: String = String::from_utf8_lossy(&hay[from..to])
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            self.found.push(format!(
                "{} in {place} at byte {at}: ...{around}...",
                needles[k].what
            ));
        }
    }
}

/// An answer body for a failure message, with every run of 12 or more digits (spaces and
/// dashes within) masked, so that a failing test does not print a card number either.
fn shown(body: &[u8]) -> String {
    let mut out = body.to_vec();
    let mut i = 0;
    while i < out.len() {
        if !out[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < out.len() && (out[i].is_ascii_digit() || out[i] == b' ' || out[i] == b'-') {
            i += 1;
        }
        if out[start..i].iter().filter(|b| b.is_ascii_digit()).count() >= 12 {
            out[start..i].iter_mut().for_each(|b| *b = b'#');
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `haystack` holds `marker`: the positive control that a place was really read.
#[track_caller]
fn holds(place: &str, haystack: &[u8], marker: &str) {
    assert!(
        haystack
            .windows(marker.len())
            .any(|w| w == marker.as_bytes()),
        "{place} does not hold {marker:?}: the scan of it would prove nothing"
    );
}

struct Sandbox {
    child: Child,
    base: String,
}

impl Sandbox {
    fn start() -> Sandbox {
        let (child, base) = common::start_sandbox();
        Sandbox { child, base }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ends the vault if the test fails before stopping it.
struct Vault(Option<Child>);

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One answer: status, headers and body, and all of it as the bytes that are scanned.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    fn head_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP {}\n", self.status).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// A request body: content type and bytes.
type Body = Option<(&'static str, Vec<u8>)>;

fn json_body(v: &Value) -> Body {
    Some(("application/json", v.to_string().into_bytes()))
}

fn raw_json(s: &str) -> Body {
    Some(("application/json", s.as_bytes().to_vec()))
}

/// Sends requests and keeps every answer (a successful reveal's body aside).
struct Session {
    c: Client,
    base: String,
    /// (place, headers and body) of every answer, to be scanned.
    kept: Vec<(String, Vec<u8>)>,
    /// (card index, body) of every successful reveal: must hold its card.
    revealed: Vec<(usize, Vec<u8>)>,
}

impl Session {
    fn send(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut b = self
            .c
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = key {
            b = b.header("Authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some((ct, bytes)) = body {
            b = b.header("Content-Type", ct).body(bytes);
        }
        let r = b
            .send()
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let a = Answer {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.bytes().unwrap().to_vec(),
        };
        let mut all = a.head_bytes();
        all.push(b'\n');
        all.extend_from_slice(&a.body);
        let n = self.kept.len();
        self.kept
            .push((format!("answer #{n} ({method} {what})"), all));
        a
    }

    /// A refused request: the status and problem code expected.
    #[track_caller]
    fn refused(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Body,
        want: (StatusCode, &str),
    ) {
        let a = self.send(what, method, path, key, &[], body);
        assert_eq!(
            (a.status, a.code().as_str()),
            want,
            "{what}: {}",
            shown(&a.body)
        );
    }

    /// `POST /v1/tokens`: status and token.
    #[track_caller]
    fn tokenize(&mut self, what: &str, key: &str, body: &Value, want: StatusCode) -> String {
        let a = self.send(what, "POST", "/v1/tokens", Some(key), &[], json_body(body));
        assert_eq!(a.status, want, "{what}: {}", shown(&a.body));
        a.json()["token"].as_str().unwrap().to_string()
    }

    /// A successful reveal of `token`, expected to be card `pan`: its headers are kept for
    /// the scan, its body aside.
    #[track_caller]
    fn reveal(&mut self, key: &str, token: &str, pan: usize) {
        let a = self.send(
            "reveal",
            "POST",
            &format!("/v1/tokens/{token}/reveal"),
            Some(key),
            &[],
            None,
        );
        assert_eq!(a.status, StatusCode::OK, "reveal of card #{pan}");
        // Only the headers stay in the scanned set.
        let last = self.kept.last_mut().unwrap();
        last.1 = a.head_bytes();
        self.revealed.push((pan, a.body));
    }
}

fn card(pan: &str) -> Value {
    json!({"pan": pan, "expiry_month": 12, "expiry_year": 2030})
}

/// A body whose only unknown field is named by the card number.
fn key_is_a_card(pan: &str) -> Value {
    let mut v = json!({"expiry_month": 5, "expiry_year": 2033});
    v[pan] = json!("x");
    v
}

#[test]
fn no_card_number_leaks_anywhere_but_a_reveal() {
    let started = std::time::Instant::now();
    let needles = needles();
    let sandbox = Sandbox::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_panvault");
    let init = Command::new(bin)
        .args(["init", "--dev", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let admin = serde_json::from_slice::<Value>(&init.stdout).unwrap()["admin_api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let sb = &sandbox.base;
    let cfg = dir.path().join("panvault.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateways.nexi]
base_url = "{sb}/nexi"

[gateways.nexi.shops."9300001"]
api_key = "leak-test-terminal-key"

[gateways.mpgs]
base_url = "{sb}/mpgs"
api_password = "sandbox-api-password"
"#
        ),
    )
    .unwrap();
    let (child, base, c, log) = serve(&data, &[OsStr::new("--config"), cfg.as_os_str()]);
    let mut vault = Vault(Some(child));
    let mut s = Session {
        c,
        base,
        kept: Vec::new(),
        revealed: Vec::new(),
    };

    // Setup: a merchant group, its shop login and a shop key with every shop scope.
    let a = s.send(
        "create merchant",
        "POST",
        "/v1/merchants",
        Some(&admin),
        &[],
        json_body(&json!({"name": "Leak test", "prefix": "LEAK"})),
    );
    assert_eq!(a.status, StatusCode::CREATED);
    let mid = a.json()["merchant_id"].as_str().unwrap().to_string();
    let a = s.send(
        "add shop",
        "POST",
        &format!("/v1/merchants/{mid}/shops"),
        Some(&admin),
        &[],
        json_body(&json!({"shop_login": "9300001"})),
    );
    assert_eq!(a.status, StatusCode::CREATED);
    let a = s.send(
        "create shop key",
        "POST",
        "/v1/api-keys",
        Some(&admin),
        &[],
        json_body(
            &json!({"shop_login": "9300001", "scopes": ["tokenize", "read", "reveal", "charge"]}),
        ),
    );
    assert_eq!(a.status, StatusCode::CREATED);
    let shop = a.json()["api_key"].as_str().unwrap().to_string();

    // Tokenize each card: a standard token and a custom one (with a cardholder name), then the
    // same again, with the number grouped by spaces and by dashes: the same tokens, 200.
    let mut standard = Vec::new();
    let mut custom = Vec::new();
    for (i, pan) in PANS.iter().enumerate() {
        let t = s.tokenize("tokenize", &shop, &card(pan), StatusCode::CREATED);
        assert!(t.starts_with(&format!("{}LEAK", &pan[..2])), "{t}");
        standard.push(t);
        let body = json!({"pan": pan, "expiry_month": 3, "expiry_year": 2031,
            "request_token": format!("CARD_{i}"), "cardholder_name": "Ada Lovelace"});
        let t = s.tokenize("tokenize custom", &shop, &body, StatusCode::CREATED);
        assert_eq!(t, format!("LEAKCARD_{i}"));
        custom.push(t);
    }
    for (i, pan) in PANS.iter().enumerate() {
        for sep in [" ", "-"] {
            let again = json!({"pan": grouped(pan, sep), "expiry_month": 1, "expiry_year": 2032});
            let t = s.tokenize("tokenize again", &shop, &again, StatusCode::OK);
            assert_eq!(t, standard[i]);
        }
        let again = json!({"pan": pan, "expiry_month": 3, "expiry_year": 2031,
            "request_token": format!("CARD_{i}")});
        let t = s.tokenize("tokenize custom again", &shop, &again, StatusCode::OK);
        assert_eq!(t, custom[i]);
    }
    // A batch: two good items, a bad-Luhn one, one with a card number as a field name.
    let a = s.send(
        "batch",
        "POST",
        "/v1/tokens/batch",
        Some(&shop),
        &[],
        json_body(&json!({"items": [
            card(PANS[0]),
            {"pan": PANS[1], "expiry_month": 5, "expiry_year": 2033, "request_token": "BATCH_1"},
            card(&bad_luhn(PANS[2])),
            key_is_a_card(PANS[3]),
        ]})),
    );
    assert_eq!(a.status, StatusCode::OK);
    let results = a.json()["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["token"], json!(standard[0]));
    assert_eq!(results[1]["token"], json!("LEAKBATCH_1"));
    assert_eq!(results[2]["code"], json!("luhn_check_failed"));
    assert_eq!(results[3]["status"], json!(422));
    // A temporary token with a CVV, for one charge below.
    let tmp = s.tokenize(
        "tokenize temporary",
        &shop,
        &json!({"pan": PANS[0], "expiry_month": 7, "expiry_year": 2033, "temporary": true, "cvv": "123"}),
        StatusCode::CREATED,
    );
    assert!(tmp.starts_with("tmp_"));
    // The card under a custom token replaced (PATCH), and an expiry changed. This one's
    // cardholder name is a card number: encrypted with the card, shown only by a reveal.
    let swap = s.tokenize(
        "tokenize custom to swap",
        &shop,
        &json!({"pan": PANS[0], "expiry_month": 3, "expiry_year": 2031, "request_token": "SWAP",
            "cardholder_name": PANS[2]}),
        StatusCode::CREATED,
    );
    let a = s.send(
        "patch card",
        "PATCH",
        &format!("/v1/tokens/{swap}"),
        Some(&shop),
        &[],
        json_body(&json!({"pan": PANS[1], "expiry_month": 4, "expiry_year": 2034})),
    );
    assert_eq!(a.status, StatusCode::OK, "{}", shown(&a.body));
    let a = s.send(
        "patch expiry",
        "PATCH",
        &format!("/v1/tokens/{}", standard[2]),
        Some(&shop),
        &[],
        json_body(&json!({"expiry_month": 9, "expiry_year": 2035})),
    );
    assert_eq!(a.status, StatusCode::OK);

    // Read every token; reveal the standard and custom ones (kept aside).
    for t in standard.iter().chain(&custom).chain([&swap]) {
        let a = s.send(
            "read",
            "GET",
            &format!("/v1/tokens/{t}"),
            Some(&shop),
            &[],
            None,
        );
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.json()["masked_pan"].as_str().unwrap().contains("*****"));
    }
    // A request id of the client's is echoed and audited (so the card-as-request-id case below
    // is refused by its content, not because ids are never kept).
    let a = s.send(
        "tokenize with a request id",
        "POST",
        "/v1/tokens",
        Some(&shop),
        &[("X-Request-Id", "leak-test.own-id")],
        json_body(&card(PANS[0])),
    );
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-request-id"], "leak-test.own-id");
    for i in 0..PANS.len() {
        s.reveal(&shop, &standard[i], i);
        s.reveal(&shop, &custom[i], i);
    }
    s.reveal(&shop, &swap, 1);

    // Delete one; it is gone for reads and reveals.
    let gone = standard[3].clone();
    let a = s.send(
        "delete",
        "DELETE",
        &format!("/v1/tokens/{gone}"),
        Some(&shop),
        &[],
        None,
    );
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let not_found = (StatusCode::NOT_FOUND, "token_not_found");
    let deleted = format!("/v1/tokens/{gone}");
    s.refused(
        "read deleted",
        "GET",
        &deleted,
        Some(&shop),
        None,
        not_found,
    );
    s.refused(
        "reveal deleted",
        "POST",
        &format!("{deleted}/reveal"),
        Some(&shop),
        None,
        not_found,
    );

    // Charges through the sandbox: Nexi MOTO with a standard, a custom and the temporary token
    // (approved), a declined card, a raw card asking for a token, and the sandbox's echo of the
    // card (masked by the proxy); MPGS PAY with a token.
    let moto = |order: &str, pan: &str| {
        format!(
            r#"{{"order":{{"orderId":"{order}","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{pan}"}},"captureType":"EXPLICIT"}}"#
        )
    };
    for (order, token, result) in [
        ("leak-1", standard[0].as_str(), "AUTHORIZED"),
        ("leak-2", custom[2].as_str(), "AUTHORIZED"),
        ("leak-3", tmp.as_str(), "AUTHORIZED"),
        ("leak-4", custom[3].as_str(), "DECLINED"),
    ] {
        let a = s.send(
            "nexi moto",
            "POST",
            "/v1/proxy/nexi/orders/moto",
            Some(&shop),
            &[],
            raw_json(&moto(order, token)),
        );
        assert_eq!(a.status, StatusCode::OK, "{order}");
        assert_eq!(a.json()["operation"]["operationResult"], json!(result));
    }
    let raw = moto("leak-5", PANS[1]).replace(
        r#""},"captureType""#,
        r#"","expiryDate":"1230"},"captureType""#,
    );
    let a = s.send(
        "nexi moto raw card with request token",
        "POST",
        "/v1/proxy/nexi/orders/moto",
        Some(&shop),
        &[("X-Panvault-Request-Token", "MASKEDPAN")],
        raw_json(&raw),
    );
    assert_eq!(a.status, StatusCode::OK, "{}", shown(&a.body));
    assert_eq!(a.headers["x-panvault-token"], standard[1].as_str());
    let a = s.send(
        "nexi echo-card",
        "POST",
        "/v1/proxy/nexi/orders/moto",
        Some(&shop),
        &[],
        raw_json(&moto("echo-card", &standard[0])),
    );
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    holds("the echo-card answer", &a.body, "411111******1111");
    let pay = format!(
        r#"{{"apiOperation":"PAY","order":{{"amount":"1.00","currency":"EUR"}},"sourceOfFunds":{{"token":"{}"}}}}"#,
        standard[1]
    );
    let a = s.send(
        "mpgs pay",
        "PUT",
        "/v1/proxy/mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/LEAK-1/transaction/1",
        Some(&shop),
        &[],
        raw_json(&pay),
    );
    assert_eq!(a.status, StatusCode::CREATED, "{}", shown(&a.body));
    // The sandbox got the real cards: the swap happened, and this scanner sees a card there.
    let sandbox_log = reqwest::blocking::get(format!("{sb}/__log"))
        .unwrap()
        .bytes()
        .unwrap();
    let seen: Vec<usize> = find(&sandbox_log, &needles)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for i in [0, 1, 2] {
        assert!(
            seen.iter()
                .any(|k| needles[*k].what == format!("card #{i} (digits)")),
            "the sandbox never received card #{i}"
        );
    }

    // Requests with a card number where no card belongs: most are refused, with the answer the
    // contract names; the rest must not carry the card back or keep it anywhere.
    let unprocessable = |code| (StatusCode::UNPROCESSABLE_ENTITY, code);
    let malformed = (StatusCode::BAD_REQUEST, "malformed_request");
    for (i, pan) in PANS.iter().enumerate() {
        let p = format!("\"{pan}\"");
        // Malformed JSON around a card.
        for body in [
            format!(r#"{{"pan":{p},"expiry_month":12,"#),
            format!(r#"{{"pan":{p},"expiry_month":12,"expiry_year":2030,}}"#),
            format!(r#"{{pan:{p}}}"#),
            format!(r#"{{"pan":{p} {p}}}"#),
            format!(r#"{{"pan":"{pan}\x"}}"#),
        ] {
            s.refused(
                "malformed JSON",
                "POST",
                "/v1/tokens",
                Some(&shop),
                raw_json(&body),
                malformed,
            );
        }
        s.refused(
            "a JSON string",
            "POST",
            "/v1/tokens",
            Some(&shop),
            raw_json(&p),
            unprocessable("invalid_field"),
        );
        s.refused(
            "a JSON array",
            "POST",
            "/v1/tokens",
            Some(&shop),
            raw_json(&format!("[{p}]")),
            unprocessable("invalid_field"),
        );
        // A card as a merchant name, a shop login or a key label: those are kept in clear, so
        // they are refused.
        for (what, path, body) in [
            (
                "a card as a merchant name",
                "/v1/merchants".to_string(),
                json!({"name": pan}),
            ),
            (
                "a card as a shop login",
                format!("/v1/merchants/{mid}/shops"),
                json!({"shop_login": pan}),
            ),
            (
                "a card as a key label",
                "/v1/api-keys".to_string(),
                json!({"shop_login": "9300001", "scopes": ["read"], "label": format!("card {pan}")}),
            ),
        ] {
            s.refused(
                what,
                "POST",
                &path,
                Some(&admin),
                json_body(&body),
                unprocessable("invalid_field"),
            );
        }
        // Bad cards: bad Luhn, too long, as a number, with a letter.
        let bad = json!({"pan": bad_luhn(pan), "expiry_month": 12, "expiry_year": 2030});
        s.refused(
            "bad Luhn",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&bad),
            unprocessable("luhn_check_failed"),
        );
        let long = json!({"pan": format!("{pan}00000"), "expiry_month": 12, "expiry_year": 2030});
        s.refused(
            "too long",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&long),
            unprocessable("invalid_pan"),
        );
        let number: u64 = pan.parse().unwrap();
        let as_number = json!({"pan": number, "expiry_month": 12, "expiry_year": 2030});
        s.refused(
            "card as a JSON number",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&as_number),
            unprocessable("invalid_pan"),
        );
        let letter = json!({"pan": format!("{pan}x"), "expiry_month": 12, "expiry_year": 2030});
        s.refused(
            "card with a letter",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&letter),
            unprocessable("invalid_pan"),
        );
        // A card in the wrong field.
        for (field, value, code) in [
            ("expiry_month", json!(pan), "invalid_expiry"),
            ("expiry_year", json!(number), "invalid_expiry"),
            ("request_token", json!(pan), "invalid_custom_token"),
            (
                "request_token",
                json!(grouped(pan, "-")),
                "invalid_custom_token",
            ),
            ("cvv", json!(pan), "invalid_cvv"),
            ("ttl_seconds", json!(number), "invalid_field"),
            ("temporary", json!(pan), "invalid_field"),
            ("card_number", json!(pan), "invalid_field"),
        ] {
            let mut body = card(PANS[(i + 1) % PANS.len()]);
            body[field] = value;
            if field == "cvv" {
                body["temporary"] = json!(true);
            }
            s.refused(
                field,
                "POST",
                "/v1/tokens",
                Some(&shop),
                json_body(&body),
                unprocessable(code),
            );
        }
        // A card where the card should be, but the vault cannot take it this way.
        s.refused(
            "text/plain",
            "POST",
            "/v1/tokens",
            Some(&shop),
            Some(("text/plain", card(pan).to_string().into_bytes())),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        );
        s.refused(
            "form body",
            "POST",
            "/v1/tokens",
            Some(&shop),
            Some((
                "application/x-www-form-urlencoded",
                format!("pan={pan}&expiry_month=12&expiry_year=2030").into_bytes(),
            )),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        );
        let mut big = card(pan);
        big["cardholder_name"] = json!(format!("{pan} ").repeat(5_000));
        s.refused(
            "oversized body",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&big),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        );
        s.refused(
            "card in PATCH of a standard token",
            "PATCH",
            &format!("/v1/tokens/{}", standard[0]),
            Some(&shop),
            json_body(&card(PANS[1])),
            (StatusCode::CONFLICT, "card_change_not_allowed"),
        );
        s.refused(
            "custom token of another card",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&json!({"pan": pan, "expiry_month": 3, "expiry_year": 2031,
                "request_token": format!("CARD_{}", (i + 1) % PANS.len())})),
            (StatusCode::CONFLICT, "token_conflict"),
        );
        // A card in the URL: as a token, as an unknown path, in a query.
        for (method, path) in [
            ("GET", format!("/v1/tokens/{pan}")),
            ("DELETE", format!("/v1/tokens/{pan}")),
            ("POST", format!("/v1/tokens/{pan}/reveal")),
            ("GET", format!("/v1/tokens/{}", grouped(pan, "-"))),
        ] {
            s.refused(
                "card as a token",
                method,
                &path,
                Some(&shop),
                None,
                not_found,
            );
        }
        s.refused(
            "card as a token, PATCH",
            "PATCH",
            &format!("/v1/tokens/{pan}"),
            Some(&shop),
            json_body(&json!({"expiry_month": 1, "expiry_year": 2031})),
            not_found,
        );
        for path in [format!("/v1/{pan}"), format!("/v1/cards/{pan}?pan={pan}")] {
            s.refused(
                "card in an unknown path",
                "GET",
                &path,
                Some(&shop),
                None,
                (StatusCode::NOT_FOUND, "not_found"),
            );
        }
        for query in [format!("pan={pan}"), format!("limit={pan}")] {
            s.refused(
                "card in the audit query",
                "GET",
                &format!("/v1/audit?{query}"),
                Some(&admin),
                None,
                unprocessable("invalid_field"),
            );
        }
        let a = s.send(
            "card in a query of a read",
            "GET",
            &format!("/v1/tokens/{}?pan={pan}", standard[0]),
            Some(&shop),
            &[],
            None,
        );
        assert!(a.status.is_success() || a.status.is_client_error());
        s.refused(
            "a card as a field name",
            "POST",
            "/v1/tokens",
            Some(&shop),
            json_body(&key_is_a_card(pan)),
            unprocessable("invalid_field"),
        );
        // A card as the request id, on a request that succeeds.
        let a = s.send(
            "a card as the request id",
            "POST",
            "/v1/tokens",
            Some(&shop),
            &[("X-Request-Id", pan)],
            json_body(&card(pan)),
        );
        assert!(a.status.is_success(), "{}", a.status);
        // A card as the API key.
        for key in [pan.to_string(), format!("pvk_{pan}_{pan}")] {
            s.refused(
                "card as the API key",
                "POST",
                "/v1/tokens",
                Some(&key),
                json_body(&card(pan)),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
            );
        }
        // A card as the passphrase or a share to unseal (the vault is not sealed).
        for body in [json!({"passphrase": pan}), json!({"share": pan})] {
            let a = s.send(
                "unseal with a card",
                "POST",
                "/v1/sys/unseal",
                None,
                &[],
                json_body(&body),
            );
            assert!(!a.status.is_server_error(), "unseal: {}", a.status);
        }
        // The proxy: a card where the token goes but malformed or duplicated JSON, an unknown
        // gateway, a card in the path and the query, a card as the request token.
        let dup = moto("leak-dup", pan).replace(
            r#""currency":"EUR""#,
            r#""currency":"EUR","currency":"USD""#,
        );
        for body in [moto("leak-bad", pan)[..40].to_string() + pan, dup] {
            s.refused(
                "proxy, bad JSON",
                "POST",
                "/v1/proxy/nexi/orders/moto",
                Some(&shop),
                raw_json(&body),
                malformed,
            );
        }
        s.refused(
            "proxy, unknown gateway",
            "POST",
            &format!("/v1/proxy/paypal/{pan}"),
            Some(&shop),
            raw_json(&moto("leak-x", pan)),
            (StatusCode::NOT_FOUND, "unknown_gateway"),
        );
        let a = s.send(
            "proxy, bad request token",
            "POST",
            "/v1/proxy/nexi/orders/moto",
            Some(&shop),
            &[("X-Panvault-Request-Token", "NOT VALID!")],
            raw_json(&moto("leak-rt", pan)),
        );
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let _ = s.send(
            "proxy, card as the request token",
            "POST",
            "/v1/proxy/nexi/orders/moto",
            Some(&shop),
            &[("X-Panvault-Request-Token", pan)],
            raw_json(&moto("leak-rt2", pan)),
        );
        let _ = s.send(
            "proxy, card in path and query",
            "GET",
            &format!("/v1/proxy/nexi/orders/{pan}?pan={pan}"),
            Some(&shop),
            &[],
            None,
        );
        let _ = s.send(
            "proxy, card in a header",
            "POST",
            "/v1/proxy/nexi/orders/moto",
            Some(&shop),
            &[("X-Card", pan)],
            raw_json(&moto("leak-h", &standard[0])),
        );
    }

    // What an operator or auditor reads while it runs: metrics, key status, evidence, and
    // every page of the audit trail.
    let metrics = s.send("metrics", "GET", "/metrics", Some(&admin), &[], None);
    assert_eq!(metrics.status, StatusCode::OK);
    holds("/metrics", &metrics.body, "panvault_http_requests_total");
    for path in ["/v1/sys/keys", "/v1/sys/evidence"] {
        let a = s.send("operator view", "GET", path, Some(&admin), &[], None);
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let mut since = 1u64;
    let mut pages = Vec::new();
    let mut entries = 0;
    loop {
        let a = s.send(
            "audit page",
            "GET",
            &format!("/v1/audit?since={since}&limit=40"),
            Some(&admin),
            &[],
            None,
        );
        assert_eq!(a.status, StatusCode::OK);
        let page = a.json();
        entries += page["entries"].as_array().unwrap().len();
        pages.extend_from_slice(&a.body);
        match page["next"].as_u64() {
            Some(n) => since = n,
            None => break,
        }
    }
    assert!(entries > 50, "{entries} audit entries");
    holds("the audit pages", &pages, &custom[0]);
    holds("the audit pages", &pages, "\"reveal\"");
    holds("the audit pages", &pages, "leak-test.own-id");

    // A clean stop, then the audit export (the CLI needs the store to itself).
    stop(vault.0.take().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let export = Command::new(bin)
        .args(["audit", "export", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(export.status.success(), "audit export: {:?}", export.status);
    holds("the audit export", &export.stdout, &custom[0]);
    assert!(export.stdout.split(|b| *b == b'\n').count() > entries);

    // The scan.
    let mut f = Findings::default();
    for (place, bytes) in &s.kept {
        f.scan(place, bytes, &needles);
    }
    f.scan("the audit pages", &pages, &needles);
    f.scan("`audit export` stdout", &export.stdout, &needles);
    f.scan("`audit export` stderr", &export.stderr, &needles);
    let log = log.lock().unwrap().join("\n");
    holds("the server log", log.as_bytes(), "listening on https://");
    f.scan("the server log", log.as_bytes(), &needles);
    // Every file under the data dir, as bytes.
    let mut files = 0;
    let mut token_seen = false;
    let mut todo = vec![data.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                token_seen |= bytes
                    .windows(custom[0].len())
                    .any(|w| w == custom[0].as_bytes());
                files += 1;
                f.scan(&format!("file {}", rel(&data, &p)), &bytes, &needles);
            }
        }
    }
    assert!(files >= 3, "{files} files under the data dir");
    assert!(token_seen, "no file under the data dir holds a token");

    // The scanner sees a card where one is: in every reveal answer, its own card.
    for (pan, body) in &s.revealed {
        let hits = find(body, &needles);
        assert!(
            hits.iter()
                .any(|(k, _)| needles[*k].what == format!("card #{pan} (digits)")),
            "the scan misses card #{pan} in its reveal answer"
        );
    }
    assert_eq!(s.revealed.len(), 2 * PANS.len() + 1);
    // And every form of every needle, amid other bytes.
    for (k, n) in needles.iter().enumerate() {
        let mut hay = b"x\x00 12-".to_vec();
        hay.extend_from_slice(&n.bytes);
        hay.extend_from_slice(b" 9\xff");
        assert!(
            find(&hay, &needles).iter().any(|(h, _)| *h == k),
            "the scan misses {}",
            n.what
        );
    }

    assert!(
        f.found.is_empty(),
        "card numbers leaked ({} places, {} bytes scanned):\n{}",
        f.places,
        f.bytes,
        f.found.join("\n")
    );
    eprintln!(
        "leak scan: {} places, {} bytes ({} answers, {files} files), no card number; {:.1}s",
        f.places,
        f.bytes,
        s.kept.len(),
        started.elapsed().as_secs_f64()
    );
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Issue 14 finding 6: a card number behind separators other than one space or dash (doubled
/// dashes, dots, a no-break or zero-width space), or shaped as a temporary token, was kept in
/// clear: accepted as a merchant name or shop login, echoed and audited as a request id,
/// written to the audit log as the token of a lookup. One detector now refuses each of them;
/// the audit trail is searched afterwards for the card's digits.
#[test]
fn a_card_behind_any_separator_is_never_kept_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = common::init_dev(&data);
    let (child, base, c, _log) = serve(&data, &[]);
    let vault = Vault(Some(child));
    let auth = |b: reqwest::blocking::RequestBuilder, key: &str| b.bearer_auth(key);
    let (st, m) = common::send(
        auth(c.post(format!("{base}/v1/merchants")), &admin)
            .json(&json!({"name": "Separators", "prefix": "SEPS"})),
    );
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap().to_string();
    let (st, _) = common::send(
        auth(c.post(format!("{base}/v1/merchants/{mid}/shops")), &admin)
            .json(&json!({"shop_login": "9400001"})),
    );
    assert_eq!(st, StatusCode::CREATED);
    let (st, k) = common::send(
        auth(c.post(format!("{base}/v1/api-keys")), &admin)
            .json(&json!({"shop_login": "9400001", "scopes": ["tokenize", "read", "reveal"]})),
    );
    assert_eq!(st, StatusCode::CREATED);
    let shop = k["api_key"].as_str().unwrap().to_string();

    let pan = PANS[1];
    let with = |sep: &str| grouped(pan, sep);
    for name in [
        with("--"),
        with(". "),
        with("\u{a0}"),
        with("\u{200b}"),
        format!("Shop {}", with(" / ")),
    ] {
        let (st, p) = common::send(
            auth(c.post(format!("{base}/v1/merchants")), &admin).json(&json!({"name": name})),
        );
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["code"], "invalid_field");
    }
    for login in [with("--"), with("_-")] {
        let (st, p) = common::send(
            auth(c.post(format!("{base}/v1/merchants/{mid}/shops")), &admin)
                .json(&json!({"shop_login": login})),
        );
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["code"], "invalid_field");
    }
    for id in [with("--"), with(".."), with(":-")] {
        let r = auth(
            c.post(format!("{base}/v1/tokens/SEPSNOSUCHTOKEN/reveal")),
            &shop,
        )
        .header("X-Request-Id", &id)
        .send()
        .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(echoed, id);
        assert!(!echoed.contains(&pan[..4]), "a server-drawn id replaces it");
    }
    // Temporary-token shaped: `tmp_` and 32 base32 characters, 16 of them the card's digits
    // (a Mastercard test number holds only 4s and 5s, both base32 digits).
    let tmp = format!("tmp_{pan}{}", "A".repeat(16));
    for post in [false, true] {
        let r = if post {
            c.post(format!("{base}/v1/tokens/{tmp}/reveal"))
        } else {
            c.get(format!("{base}/v1/tokens/{tmp}"))
        };
        let (st, p) = common::send(auth(r, &shop));
        assert_eq!(st, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(p["code"], "token_not_found");
    }
    // A real temporary token still works.
    let (st, t) = common::send(auth(c.post(format!("{base}/v1/tokens")), &shop).json(
        &json!({"pan": PANS[0], "expiry_month": 12, "expiry_year": 2031, "temporary": true}),
    ));
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let (st, _) = common::send(auth(
        c.get(format!("{base}/v1/tokens/{}", t["token"].as_str().unwrap())),
        &shop,
    ));
    assert_eq!(st, StatusCode::OK);

    let audit = auth(c.get(format!("{base}/v1/audit?limit=1000")), &admin)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        audit.contains("SEPSNOSUCHTOKEN"),
        "the audit read holds the reveals"
    );
    for needle in [pan.to_string(), with("--"), with(".."), with(":-"), tmp] {
        assert!(
            !audit.contains(&needle),
            "a card form is in the audit trail"
        );
    }
    drop(vault);
}
