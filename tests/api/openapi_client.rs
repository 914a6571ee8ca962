//! The OpenAPI document as a client generator sees it (issue 15 item 6): the tour's answers,
//! taken from the real server over HTTPS, parsed by pydantic models that
//! `datamodel-code-generator` makes from `GET /v1/openapi.json` with extra fields forbidden
//! (`tests/clients/openapi_models.py`); and `servers` naming where the API is.

use std::path::Path;

use reqwest::Method;

use super::*;

/// The tour's calls, each answer kept as received for the script.
struct Tour {
    c: Client,
    base: String,
    answers: Vec<Value>,
}

impl Tour {
    /// One call: `template` is the document's path for it, `url` the path called.
    fn call(
        &mut self,
        method: Method,
        template: &str,
        url: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = self
            .c
            .request(method.clone(), format!("{}{url}", self.base));
        if let Some(k) = key {
            b = bearer(b, k);
        }
        if let Some(body) = body {
            b = b.json(&body);
        }
        let r = b.send().unwrap();
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().unwrap();
        self.answers.push(json!({
            "method": method.as_str(), "path": template, "status": status.as_u16(),
            "content_type": content_type, "body": text,
        }));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Fails with the command that installs the generator when it is missing.
fn require_generator() {
    let ok = Command::new("python3")
        .args(["-c", "import datamodel_code_generator, pydantic"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "datamodel-code-generator (and pydantic v2) are needed for this test: \
         python3 -m pip install -r tests/requirements.txt"
    );
}

#[test]
fn a_client_generated_from_the_document_parses_every_answer_of_the_tour() {
    require_generator();
    let server = Server::start();
    let (shop, admin) = (server.shop_key.clone(), server.admin_key.clone());
    let mut t = Tour {
        c: server.client(),
        base: server.base.clone(),
        answers: Vec::new(),
    };
    let (post, get, patch, delete) = (Method::POST, Method::GET, Method::PATCH, Method::DELETE);

    let r =
        t.c.get(format!("{}/v1/openapi.json", t.base))
            .send()
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc = r.text().unwrap();

    // Tokenize: new (201), the same card again (200), custom, temporary.
    let s = Some(shop.as_str());
    let (st, masked) = t.call(
        post.clone(),
        "/v1/tokens",
        "/v1/tokens",
        s,
        Some(card(PANS[0])),
    );
    assert_eq!(st, StatusCode::CREATED);
    let masked = masked["token"].as_str().unwrap().to_string();
    let (st, _) = t.call(
        post.clone(),
        "/v1/tokens",
        "/v1/tokens",
        s,
        Some(card(PANS[0])),
    );
    assert_eq!(st, StatusCode::OK);
    let custom_card = json!({"pan": PANS[1], "expiry_month": 3, "expiry_year": 2031,
        "request_token": "JOHN_SMITH_5533", "cardholder_name": "John Smith"});
    let (st, custom) = t.call(
        post.clone(),
        "/v1/tokens",
        "/v1/tokens",
        s,
        Some(custom_card),
    );
    assert_eq!(st, StatusCode::CREATED);
    let custom = custom["token"].as_str().unwrap().to_string();
    let temporary = json!({"pan": PANS[2], "expiry_month": 12, "expiry_year": 2030,
        "temporary": true, "cvv": "1234", "ttl_seconds": 900});
    let (st, tmp) = t.call(post.clone(), "/v1/tokens", "/v1/tokens", s, Some(temporary));
    assert_eq!(
        (st, tmp["token_kind"].as_str()),
        (StatusCode::CREATED, Some("temporary"))
    );

    // Read, update, reveal.
    let one = "/v1/tokens/{token}";
    let (st, _) = t.call(get.clone(), one, &format!("/v1/tokens/{custom}"), s, None);
    assert_eq!(st, StatusCode::OK);
    let later = json!({"expiry_month": 4, "expiry_year": 2032});
    let (st, _) = t.call(patch, one, &format!("/v1/tokens/{custom}"), s, Some(later));
    assert_eq!(st, StatusCode::OK);
    let (st, _) = t.call(
        post.clone(),
        "/v1/tokens/{token}/reveal",
        &format!("/v1/tokens/{custom}/reveal"),
        s,
        None,
    );
    assert_eq!(st, StatusCode::OK);

    // A batch: a new card, a known one, and one that fails the Luhn check.
    let items = json!({"items": [card(PANS[3]), card(PANS[0]), card("4111111111111112")]});
    let (st, batch) = t.call(
        post.clone(),
        "/v1/tokens/batch",
        "/v1/tokens/batch",
        s,
        Some(items),
    );
    assert_eq!(st, StatusCode::OK);
    let statuses: Vec<(u64, Option<&str>)> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["code"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [(201, None), (200, None), (422, Some("luhn_check_failed"))]
    );

    // Delete, then the problems: 404, 422, 401.
    let (st, _) = t.call(delete, one, &format!("/v1/tokens/{masked}"), s, None);
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = t.call(get.clone(), one, &format!("/v1/tokens/{masked}"), s, None);
    assert_eq!(st, StatusCode::NOT_FOUND);
    let bad = card("4111111111111112");
    let (st, _) = t.call(post.clone(), "/v1/tokens", "/v1/tokens", s, Some(bad));
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = t.call(
        get.clone(),
        one,
        &format!("/v1/tokens/{custom}"),
        None,
        None,
    );
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The admin's side: a merchant, a shop, a key; the keys, a re-encryption, the audit trail
    // (a page with a `next`, then the last with the signed head), the evidence report.
    let a = Some(admin.as_str());
    let (st, m) = t.call(
        post.clone(),
        "/v1/merchants",
        "/v1/merchants",
        a,
        Some(json!({"name": "Second Shops"})),
    );
    assert_eq!(st, StatusCode::CREATED);
    let mid = m["merchant_id"].as_str().unwrap().to_string();
    let (st, _) = t.call(
        post.clone(),
        "/v1/merchants/{merchant_id}/shops",
        &format!("/v1/merchants/{mid}/shops"),
        a,
        Some(json!({"shop_login": "9000077"})),
    );
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = t.call(
        post.clone(),
        "/v1/api-keys",
        "/v1/api-keys",
        a,
        Some(json!({"shop_login": "9000077", "scopes": ["tokenize", "read"]})),
    );
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = t.call(
        post.clone(),
        "/v1/sys/keys/reencrypt",
        "/v1/sys/keys/reencrypt",
        a,
        None,
    );
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, keys) = t.call(get.clone(), "/v1/sys/keys", "/v1/sys/keys", a, None);
    assert_eq!(st, StatusCode::OK);
    assert!(keys["reencryption"].is_object(), "{keys}");
    let (st, page) = t.call(
        get.clone(),
        "/v1/audit",
        "/v1/audit?since=1&limit=2",
        a,
        None,
    );
    assert_eq!(st, StatusCode::OK);
    assert!(page["next"].is_u64());
    let (st, page) = t.call(
        get.clone(),
        "/v1/audit",
        "/v1/audit?since=1&limit=1000",
        a,
        None,
    );
    assert_eq!(st, StatusCode::OK);
    assert!(page["signed_head"].is_object(), "the last page");
    let (st, _) = t.call(get.clone(), "/v1/sys/evidence", "/v1/sys/evidence", a, None);
    assert_eq!(st, StatusCode::OK);

    // No key: the seal status, liveness, readiness.
    for path in ["/v1/sys/seal-status", "/healthz", "/readyz"] {
        let (st, _) = t.call(get.clone(), path, path, None, None);
        assert_eq!(st, StatusCode::OK, "{path}");
    }

    // The generated client parses each answer with the model named for it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), &doc).unwrap();
    std::fs::write(
        dir.path().join("answers.json"),
        serde_json::to_vec(&t.answers).unwrap(),
    )
    .unwrap();
    let out = run_script(dir.path());
    let n = t.answers.len();
    // The script names operations, statuses, models and fields, never a value.
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), n);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{n} of {n} answers parsed by the generated models, no field lost").as_str())
    );
    // The check has teeth: a document that forgets one field of the tokenize answer fails it,
    // naming the field.
    let mut short: Value = serde_json::from_str(&doc).unwrap();
    let answer = &mut short["components"]["schemas"]["TokenizeAnswer"];
    answer["properties"]
        .as_object_mut()
        .unwrap()
        .remove("expired");
    answer["required"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f != "expired");
    let short_dir = tempfile::tempdir().unwrap();
    std::fs::write(short_dir.path().join("openapi.json"), short.to_string()).unwrap();
    std::fs::copy(
        dir.path().join("answers.json"),
        short_dir.path().join("answers.json"),
    )
    .unwrap();
    let out = run_script(short_dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAILED POST /v1/tokens 201") && l.contains("expired")),
        "{stdout}"
    );
    // The document says where this server is.
    let servers = serde_json::from_str::<Value>(&doc).unwrap()["servers"].clone();
    assert_eq!(servers, json!([{"url": t.base}]));
    server.stop();
}

fn run_script(dir: &Path) -> std::process::Output {
    Command::new("python3")
        .arg("tests/clients/openapi_models.py")
        .arg(dir.join("openapi.json"))
        .arg(dir.join("answers.json"))
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn panvault_openapi_names_the_default_server_or_the_one_given() {
    let servers = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .arg("openapi")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["servers"].clone()
    };
    assert_eq!(servers(&[]), json!([{"url": "https://127.0.0.1:8443"}]));
    assert_eq!(
        servers(&["--server", "https://vault.example.com:9443"]),
        json!([{"url": "https://vault.example.com:9443"}])
    );
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["openapi", "--server", "vault.example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--server") && err.contains("https://"),
        "{err}"
    );
}
