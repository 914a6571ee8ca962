//! The gateway proxy over HTTPS against `panvault sandbox` (issue 5): the real binaries, a dev
//! vault served with a config file pointing every gateway at the sandbox. Each test asserts on
//! what the sandbox received (its request log: the real PAN and expiry in the gateway's format,
//! the merchant's other fields byte for byte) and on what the merchant got back (no PAN).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

struct Sandbox {
    child: Child,
    /// The shared address: every gateway under its prefix, and the request log.
    base: String,
    /// Each gateway's own root, as `panvault sandbox` printed it.
    roots: Vec<(String, String)>,
    http: Client,
}

impl Sandbox {
    fn start() -> Sandbox {
        let (child, base, roots) = common::start_sandbox_roots();
        assert_eq!(roots.len(), 4, "{roots:?}");
        Sandbox {
            child,
            base,
            roots,
            http: Client::new(),
        }
    }

    /// The base URL of gateway `name`'s simulator: its own root (`http://127.0.0.1:N`).
    fn url(&self, name: &str) -> String {
        let var = format!("PANVAULT_GATEWAY_{}_URL", name.to_ascii_uppercase());
        let (_, url) = self.roots.iter().find(|(v, _)| *v == var).unwrap();
        url.clone()
    }

    fn log(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/__log", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v.as_array().unwrap().clone()
    }

    fn last(&self) -> Value {
        self.log()
            .last()
            .cloned()
            .expect("the sandbox received a request")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    sandbox: Sandbox,
    vault: Option<Child>,
    base: String,
    client: Client,
    log: Arc<Mutex<Vec<String>>>,
    shop: String,
    other: String,
    no_charge: String,
    /// A key of the first shop with `charge` alone.
    charge_only: String,
    _dir: tempfile::TempDir,
}

fn bearer(b: RequestBuilder, key: &str) -> RequestBuilder {
    b.header("Authorization", format!("Bearer {key}"))
}

/// A merchant group with one shop login and a key with `scopes`.
fn merchant(
    c: &Client,
    base: &str,
    admin: &str,
    prefix: &str,
    shop: &str,
    scopes: &[&str],
) -> String {
    let (s, m) = send(bearer(
        c.post(format!("{base}/v1/merchants"))
            .json(&json!({"name": prefix, "prefix": prefix})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mid = m["merchant_id"].as_str().unwrap();
    let (s, _) = send(bearer(
        c.post(format!("{base}/v1/merchants/{mid}/shops"))
            .json(&json!({"shop_login": shop})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED);
    key(c, base, admin, shop, scopes)
}

fn key(c: &Client, base: &str, admin: &str, shop: &str, scopes: &[&str]) -> String {
    let (s, k) = send(bearer(
        c.post(format!("{base}/v1/api-keys"))
            .json(&json!({"shop_login": shop, "scopes": scopes})),
        admin,
    ));
    assert_eq!(s, StatusCode::CREATED, "{k}");
    k["api_key"].as_str().unwrap().to_string()
}

impl Env {
    /// Sandbox, dev vault, config pointing the gateways at the sandbox (`axerve_url` overrides
    /// Axerve's), merchant `GWAY` (shop key with `charge`) and merchant `OTHR`.
    fn start(axerve_url: Option<&str>) -> Env {
        Env::start_with(axerve_url, false)
    }

    /// [`Env::start`]; with `cred_files` every gateway secret is in its own owner-only file
    /// (`api_key_file`, `secret_api_key_file`, `api_password_file`) instead of the config.
    fn start_with(axerve_url: Option<&str>, cred_files: bool) -> Env {
        Env::start_configured(axerve_url, cred_files, None, "")
    }

    /// [`Env::start_with`]; `nexi_url` overrides Nexi's base URL and `extra` is appended to the
    /// config file.
    fn start_configured(
        axerve_url: Option<&str>,
        cred_files: bool,
        nexi_url: Option<&str>,
        extra: &str,
    ) -> Env {
        let sandbox = Sandbox::start();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let admin = common::init_dev(&data);
        let axerve = axerve_url.map_or_else(|| sandbox.url("axerve"), str::to_string);
        let nexi = nexi_url.map_or_else(|| sandbox.url("nexi"), str::to_string);
        let (worldline, mpgs) = (sandbox.url("worldline"), sandbox.url("mpgs"));
        // `key = "value"`, or the value in its own file (first line; the rest is ignored).
        let secret = |key: &str, value: &str| {
            if !cred_files {
                return format!("{key} = \"{value}\"");
            }
            let path = dir.path().join(format!("{key}-{}", value.len()));
            std::fs::write(&path, format!("{value}\nnot part of the secret\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!("{key}_file = \"{}\"", path.display())
        };
        let cfg = dir.path().join("panvault.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"
[gateways.nexi]
base_url = "{nexi}"
timeout_seconds = 1.5

[gateways.nexi.shops."9100002"]
{nexi_shop}

[gateways.axerve]
base_url = "{axerve}"
{axerve_key}
timeout_seconds = 3

[gateways.worldline]
base_url = "{worldline}"
api_key_id = "{id}"
{worldline_secret}

[gateways.mpgs]
base_url = "{mpgs}"
{mpgs_password}
{extra}
"#,
                nexi_shop = secret("api_key", "shop-9100002-terminal-key"),
                axerve_key = secret("api_key", "axerve-sandbox-apikey"),
                id = panvault::sandbox::WORLDLINE_API_KEY_ID,
                worldline_secret = secret(
                    "secret_api_key",
                    panvault::sandbox::WORLDLINE_SECRET_API_KEY
                ),
                mpgs_password = secret("api_password", "sandbox-api-password"),
            ),
        )
        .unwrap();
        let (child, base, client, log) = serve(&data, &[OsStr::new("--config"), cfg.as_os_str()]);
        let shop = merchant(
            &client,
            &base,
            &admin,
            "GWAY",
            "9100001",
            &["tokenize", "read", "charge"],
        );
        let other = merchant(
            &client,
            &base,
            &admin,
            "OTHR",
            "9100002",
            &["tokenize", "charge"],
        );
        let no_charge = key(&client, &base, &admin, "9100001", &["tokenize", "read"]);
        let charge_only = key(&client, &base, &admin, "9100001", &["charge"]);
        Env {
            sandbox,
            vault: Some(child),
            base,
            client,
            log,
            shop,
            other,
            no_charge,
            charge_only,
            _dir: dir,
        }
    }

    fn tokenize(&self, key: &str, body: Value) -> String {
        let (s, t) = send(bearer(
            self.client
                .post(format!("{}/v1/tokens", self.base))
                .json(&body),
            key,
        ));
        assert!(s.is_success(), "{s} {t}");
        t["token"].as_str().unwrap().to_string()
    }

    fn token(&self, pan: &str, month: u8, year: u16) -> String {
        self.tokenize(
            &self.shop,
            json!({"pan": pan, "expiry_month": month, "expiry_year": year}),
        )
    }

    /// A proxied call with the shop key: status and raw answer (checked to hold no PAN).
    fn proxy(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, String) {
        let (s, _, b) = self.proxy_full(method, path, headers, body);
        (s, b)
    }

    /// [`Env::proxy`] with the answer's headers.
    fn proxy_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.proxy_bytes(method, path, headers, body.as_bytes())
    }

    /// [`Env::proxy_full`] with a body of any bytes.
    fn proxy_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let url = format!("{}/v1/proxy/{path}", self.base);
        let mut b = self
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .body(body.to_vec());
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-panvault-authorization"))
        {
            b = bearer(b, &self.shop);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = b.send().unwrap();
        let status = r.status();
        let h = r.headers().clone();
        let mut headers = String::new();
        for (k, v) in &h {
            headers.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or_default()));
        }
        let body = r.text().unwrap();
        for pan in PANS {
            assert!(
                !headers.contains(pan) && !body.contains(pan),
                "a PAN in the answer to {path}"
            );
        }
        (status, h, body)
    }

    /// Stops the vault; checks that no PAN is in its log or its audit chain (which verifies);
    /// the chain's entries.
    fn stop(self) -> Vec<Value> {
        self.stop_by("TERM")
    }

    /// [`Env::stop`] with `signal` (`INT`: Ctrl-C).
    fn stop_by(mut self, signal: &str) -> Vec<Value> {
        common::stop_by(self.vault.take().unwrap(), signal);
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap();
        for pan in PANS {
            assert!(
                !log.iter().any(|l| l.contains(pan)),
                "a PAN in the server log"
            );
        }
        let data = self._dir.path().join("data");
        let verify = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args(["audit", "verify", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{verify:?}");
        let export = Command::new(env!("CARGO_BIN_EXE_panvault"))
            .args(["audit", "export", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        let text = String::from_utf8(export.stdout).unwrap();
        for pan in PANS {
            assert!(!text.contains(pan), "a PAN in the audit chain");
        }
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Env {
    /// A failed test still ends its vault (`stop` took it when the test got that far).
    fn drop(&mut self) {
        if let Some(mut c) = self.vault.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn answer_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("JSON answer expected: {text}"))
}

fn nexi_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", "application/json"),
        ("X-Api-Key", "sandbox-terminal-key"),
    ]
}

/// A Nexi 3-D Secure challenge as the cardholder's browser goes through it: the form POST of
/// `ThreeDsRequest`, `ReturnUrl` and `transactionId` to the init answer's `threeDSAuthUrl`; the
/// challenge's page posts `PaRes` and `paymentId` back to `ReturnUrl`. The operation id and PaRes.
fn nexi_challenge(sandbox: &Sandbox, init: &Value) -> (String, String) {
    let op = init["operation"]["operationId"]
        .as_str()
        .unwrap()
        .to_string();
    let acs = sandbox
        .http
        .post(init["threeDSAuthUrl"].as_str().unwrap())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "ThreeDsRequest={}&ReturnUrl=https%3A%2F%2Fshop.example%2Freturn%3Fref%3D1&transactionId={op}",
            init["threeDSAuthRequest"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        acs.contains(r#"action="https://shop.example/return?ref=1""#),
        "{acs}"
    );
    assert!(
        acs.contains(&format!(r#"name="paymentId" value="{op}""#)),
        "{acs}"
    );
    let pares = acs
        .split(r#"name="PaRes" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (op, pares)
}

#[test]
fn nexi_moto_three_steps_and_decline() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 12, 2030);
    // MOTO: the merchant's body exactly; the card object gains the PAN and the MMYY expiry.
    let order = r#"{"orderId":"btid2384983","amount":"3545","currency":"EUR","customerId":"mcid97295873","description":"TV 3423","customInfo":null,"customerInfo":{"cardHolderName":"Mauro Morandi","cardHolderEmail":"mauro.morandi@nexi.it"}}"#;
    let body =
        format!(r#"{{"order":{order},"card":{{"pan":"{token}"}},"captureType":"EXPLICIT"}}"#);
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &body);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        answer_json(&a)["operation"]["operationResult"],
        "AUTHORIZED"
    );
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/orders/moto");
    assert_eq!(
        got["body"].as_str().unwrap(),
        format!(
            r#"{{"order":{order},"card":{{"pan":"4111111111111111","expiryDate":"1230"}},"captureType":"EXPLICIT"}}"#
        )
    );
    let h = &got["headers"];
    assert_eq!(h["x-api-key"], "sandbox-terminal-key");
    assert_eq!(
        h["correlation-id"].as_str().unwrap().len(),
        36,
        "a fresh Correlation-Id"
    );
    assert!(
        h.get("authorization").is_none(),
        "panvault's key never reaches the gateway"
    );

    // 3steps: init (challenge with the redirect form fields), validation, payment.
    let t3 = env.token("5555555555554444", 3, 2031);
    let init = format!(
        r#"{{"order":{{"orderId":"pay1234ABCD","amount":"1000","currency":"EUR"}},"card":{{"pan":"{t3}","cvv":"396"}},"recurrence":{{"action":"NO_RECURRING"}}}}"#
    );
    let (s, a) = env.proxy("POST", "nexi/orders/3steps/init", &nexi_headers(), &init);
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["operation"]["operationResult"], "PENDING");
    assert!(a["threeDSAuthUrl"].as_str().unwrap().contains("/3ds/"));
    assert!(a["threeDSAuthRequest"].is_string());
    assert_eq!(
        a["operation"]["additionalData"]["maskedPan"],
        "555555******4444"
    );
    let got = env.sandbox.last();
    let sent: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["card"],
        json!({"pan": "5555555555554444", "cvv": "396", "expiryDate": "0331"})
    );
    let (op, pares) = nexi_challenge(&env.sandbox, &a);
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/3steps/validation",
        &nexi_headers(),
        &format!(r#"{{"operationId":"{op}","threeDSAuthResponse":"{pares}"}}"#),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        answer_json(&a)["operation"]["operationResult"],
        "THREEDS_VALIDATED"
    );
    let pay = format!(
        r#"{{"operationId":"{op}","order":{{"orderId":"pay1234ABCD","amount":"1000","currency":"EUR"}},"card":{{"pan":"{t3}"}},"captureType":"IMPLICIT","threeDSAuthData":{{"authenticationValue":"AAIBBjhkYQAAAAAKl4FHdAAAAAA=","eci":"05","xid":"RExDQXMtS05EJTt6VlBNRnxdOkY="}}}}"#
    );
    let (s, a) = env.proxy("POST", "nexi/orders/3steps/payment", &nexi_headers(), &pay);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "EXECUTED");
    assert!(
        env.sandbox.last()["body"]
            .as_str()
            .unwrap()
            .contains(r#""card":{"pan":"5555555555554444","expiryDate":"0331"}"#)
    );

    // Decline: HTTP 200, DECLINED.
    let td = env.token("4012888888881881", 1, 2032);
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &nexi_headers(),
        &body.replace(&token, &td),
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "DECLINED");

    // An Idempotency-Key and a merchant Correlation-Id are passed through untouched.
    let mut h = nexi_headers();
    h.push(("Idempotency-Key", "a1b2c3d4e5f6"));
    h.push(("Correlation-Id", "3c1f8e2a-7d4b-4c69-9d0a-2b7e5f1a9c34"));
    // The MIT carries no card (`contractId`): its body reaches the gateway byte for byte.
    let mit = r#"{"order":{"orderId":"mit00000001","amount":"1500","currency":"EUR","description":"Abbonamento \u00e8 mensile"},"contractId":"C2834987","captureType":"IMPLICIT"}"#;
    let (s, a) = env.proxy("POST", "nexi/orders/mit", &h, mit);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "EXECUTED");
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/orders/mit");
    assert_eq!(got["body"].as_str().unwrap(), mit);
    assert_eq!(got["headers"]["idempotency-key"], "a1b2c3d4e5f6");
    assert_eq!(
        got["headers"]["correlation-id"],
        "3c1f8e2a-7d4b-4c69-9d0a-2b7e5f1a9c34"
    );

    // Credentials configured per shop login: shop 9100002's requests get its X-Api-Key.
    let theirs = env.tokenize(
        &env.other,
        json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}),
    );
    let pv = format!("Bearer {}", env.other);
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &[
            ("Content-Type", "application/json"),
            ("X-Panvault-Authorization", &pv),
        ],
        &body.replace(&token, &theirs),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        env.sandbox.last()["headers"]["x-api-key"],
        "shop-9100002-terminal-key"
    );
    // Shop 9100001 has none configured and sent none: the sandbox refuses (401, no body).
    let (s, _) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    env.stop();
}

#[test]
fn axerve_soap_token_value_and_card_number() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let envelope = |card: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ecom="https://ecomms2s.sella.it/">
  <soapenv:Body>
    <ecom:callPagamS2S>
      <ecom:shopLogin>GESPAY65987</ecom:shopLogin>
      <ecom:uicCode>242</ecom:uicCode>
      <ecom:amount>24.21</ecom:amount>
      <ecom:shopTransactionId>MYSHOP-0002</ecom:shopTransactionId>
      {card}
      <ecom:buyerName>John Fitzgerald Kennedy</ecom:buyerName>
    </ecom:callPagamS2S>
  </soapenv:Body>
</soapenv:Envelope>"#
        )
    };
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
    ];
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &envelope(&format!("<ecom:tokenValue>{token}</ecom:tokenValue>")),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        a.contains("<TransactionResult>OK</TransactionResult>"),
        "{a}"
    );
    let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
    // In WSDL order where tokenValue stood; the rest of the envelope as it was.
    let card = "<ecom:cardNumber>4111111111111111</ecom:cardNumber><ecom:expiryMonth>05</ecom:expiryMonth><ecom:expiryYear>31</ecom:expiryYear>";
    let at = sent.find(card).expect("the card fields");
    assert!(
        sent[..at]
            .trim_end()
            .ends_with("<ecom:shopTransactionId>MYSHOP-0002</ecom:shopTransactionId>")
    );
    assert_eq!(
        sent.replace(card, "")
            .replace("<ecom:apikey>axerve-sandbox-apikey</ecom:apikey>", ""),
        envelope("")
    );
    assert!(!sent.contains("tokenValue"));
    assert!(sent.contains("<ecom:buyerName>John Fitzgerald Kennedy</ecom:buyerName>"));
    // The configured apikey, last, with the envelope's prefix.
    assert!(
        sent.contains("<ecom:apikey>axerve-sandbox-apikey</ecom:apikey></ecom:callPagamS2S>"),
        "{sent}"
    );

    // cardNumber with a token; the challenge card answers 8006.
    let t3 = env.token("5555555555554444", 3, 2031);
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &envelope(&format!("<ecom:cardNumber>{t3}</ecom:cardNumber>")),
    );
    assert_eq!(s, StatusCode::OK);
    assert!(a.contains("<ErrorCode>8006</ErrorCode>"), "{a}");
    assert!(a.contains("<VbVRisp>"));
    // After the buyer's pagam3d.aspx visit: the same call again with transKey and PARes.
    let key = a
        .split("<TransactionKey>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &envelope(&format!(
            "<ecom:cardNumber>{t3}</ecom:cardNumber><ecom:transKey>{key}</ecom:transKey><ecom:PARes>sbx-pares</ecom:PARes>"
        )),
    );
    assert_eq!(s, StatusCode::OK);
    assert!(
        a.contains("<TransactionResult>OK</TransactionResult>"),
        "{a}"
    );
    // The envelope byte for byte with the PAN where the token was, the configured apikey last,
    // and the expiry added right after cardNumber (WSDL order; only whitespace between them).
    let check_sent = |pan: &str, mm: &str, yy: &str, rest: &str| {
        let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
        let expiry = format!(
            "<ecom:expiryMonth>{mm}</ecom:expiryMonth><ecom:expiryYear>{yy}</ecom:expiryYear>"
        );
        let card_end = format!("<ecom:cardNumber>{pan}</ecom:cardNumber>");
        let at = sent.find(&expiry).expect("the expiry");
        let after_card = sent.find(&card_end).unwrap() + card_end.len();
        assert!(sent[after_card..at].trim().is_empty(), "{sent}");
        assert_eq!(
            sent.replacen(&expiry, "", 1),
            envelope(&format!("{card_end}{rest}")).replace(
                "</ecom:callPagamS2S>",
                "<ecom:apikey>axerve-sandbox-apikey</ecom:apikey></ecom:callPagamS2S>",
            )
        );
    };
    check_sent(
        "5555555555554444",
        "03",
        "31",
        &format!("<ecom:transKey>{key}</ecom:transKey><ecom:PARes>sbx-pares</ecom:PARes>"),
    );

    // A decline: KO with the issuer's error code; the envelope otherwise as the merchant wrote it.
    let td = env.token("4012888888881881", 1, 2032);
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &envelope(&format!("<ecom:cardNumber>{td}</ecom:cardNumber>")),
    );
    assert_eq!(s, StatusCode::OK);
    assert!(
        a.contains("<TransactionResult>KO</TransactionResult>")
            && a.contains("<ErrorCode>74</ErrorCode>"),
        "{a}"
    );
    check_sent("4012888888881881", "01", "32", "");

    // REST submit: paymentTypeDetails.creditcard.token.
    let (s, a) = env.proxy(
        "POST",
        "axerve/api/v1/payment/submit",
        &[("Content-Type", "application/json"), ("paymentToken", "Asjdlfad5543AA33a"), ("X-Panvault-Authorization", &format!("Bearer {}", env.shop)), ("Authorization", "apikey sandbox")],
        &format!(r#"{{"shopLogin":"GESPAY65987","buyer":{{"name":"Mario Rossi"}},"paymentTypeDetails":{{"creditcard":{{"token":"{token}"}}}}}}"#),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["payload"]["transactionResult"], "OK");
    let got = env.sandbox.last();
    assert_eq!(got["headers"]["authorization"], "apikey sandbox");
    assert!(got["body"].as_str().unwrap().ends_with(r#""paymentTypeDetails":{"creditcard":{"number":"4111111111111111","expMonth":"05","expYear":"31"}}}"#));
    env.stop();
}

#[test]
fn worldline_signed_by_panvault_or_passed_through() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 9, 2032);
    let body = |t: &str| {
        format!(
            r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{t}","cardholderName":"Wile E. Coyote"}},"paymentProductId":1,"authorizationMode":"FINAL_AUTHORIZATION","transactionChannel":"MOTO"}},"order":{{"amountOfMoney":{{"amount":2980,"currencyCode":"EUR"}},"references":{{"merchantReference":"AcmeOrder0001"}}}}}}"#
        )
    };
    // panvault holds the API key: it signs after the swap.
    let h = [
        ("Content-Type", "application/json"),
        ("X-GCS-Idempotence-Key", "9b2d3c1e"),
    ];
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &h, &body(&token));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(answer_json(&a)["payment"]["status"], "PENDING_CAPTURE");
    let got = env.sandbox.last();
    assert!(
        got["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("GCS v1HMAC:")
    );
    assert_eq!(got["headers"]["x-gcs-idempotence-key"], "9b2d3c1e");
    let sent: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["cardPaymentMethodSpecificInput"]["card"],
        json!({"cardNumber": "4111111111111111", "cardholderName": "Wile E. Coyote", "expiryDate": "0932"})
    );

    // The merchant signs itself (the body is not signed, so its signature survives the swap).
    let date = "Fri, 06 Jun 2014 13:39:43 GMT";
    let path = "/v2/1234/payments";
    let sts =
        panvault::gateway::worldline::string_to_sign("POST", "application/json", date, &[], path);
    let auth = panvault::gateway::worldline::authorization(
        panvault::sandbox::WORLDLINE_API_KEY_ID,
        panvault::sandbox::WORLDLINE_SECRET_API_KEY,
        &sts,
    );
    let pv = format!("Bearer {}", env.shop);
    let t3 = env.token("5555555555554444", 3, 2031);
    let own = [
        ("Content-Type", "application/json"),
        ("Date", date),
        ("Authorization", auth.as_str()),
        ("X-Panvault-Authorization", pv.as_str()),
    ];
    let ecom = body(&t3).replace(
        r#""transactionChannel":"MOTO""#,
        r#""transactionChannel":"ECOMMERCE","threeDSecure":{"redirectionData":{"returnUrl":"https://shop.example/return"}}"#,
    );
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &own, &ecom);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = answer_json(&a);
    assert_eq!(
        a["merchantAction"]["actionType"], "REDIRECT",
        "3-D Secure redirect passed through"
    );
    assert_eq!(
        env.sandbox.last()["headers"]["authorization"],
        auth.as_str()
    );
    let id = a["payment"]["id"].as_str().unwrap().to_string();
    let a_redirect = a["merchantAction"]["redirectData"]["redirectURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, a) = env.proxy("GET", &format!("worldline/v2/1234/payments/{id}"), &[], "");
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["status"], "REDIRECTED");
    // The cardholder passes the challenge at redirectURL and comes back to the returnUrl.
    let browser = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser.get(a_redirect.as_str()).send().unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("https://shop.example/return?paymentId={id}")
    );
    let (s, a) = env.proxy("GET", &format!("worldline/v2/1234/payments/{id}"), &[], "");
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["status"], "PENDING_CAPTURE");

    // Decline: 402.
    let td = env.token("4012888888881881", 1, 2032);
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &h, &body(&td));
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{a}");
    assert_eq!(
        answer_json(&a)["paymentResult"]["payment"]["status"],
        "REJECTED"
    );
    env.stop();
}

/// A client of the vault that does not follow redirects (it sees the proxy's `Location`).
fn no_redirects(env: &Env) -> Client {
    let ca = std::fs::read(env._dir.path().join("data/tls/ca.pem")).unwrap();
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Issue 15 point 8: a gateway's `Location` under its base URL comes back as the vault's own
/// proxy URL on the Host the merchant used (path and query kept), which then works; an absolute
/// URL elsewhere (here the sandbox's other address, same host, another port) is left alone.
#[test]
fn proxy_answer_location_points_at_the_vault() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 9, 2032);
    let body = format!(
        r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{token}"}},"paymentProductId":1,"transactionChannel":"MOTO"}},"order":{{"amountOfMoney":{{"amount":100,"currencyCode":"EUR"}}}}}}"#
    );
    let h = [("Content-Type", "application/json")];
    let (s, headers, a) = env.proxy_full("POST", "worldline/v2/1234/payments", &h, &body);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = answer_json(&a)["payment"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let location = headers["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("{}/v1/proxy/worldline/v2/1234/payments/{id}", env.base)
    );
    assert!(!location.contains(&env.sandbox.url("worldline")));
    // The rewritten URL is one the merchant can use.
    let (s, got) = send(bearer(env.client.get(location), &env.shop));
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["status"], "PENDING_CAPTURE");

    // An absolute URL not under Worldline's base URL passes as the gateway sent it: the 3-D
    // Secure page sends the browser back to a returnUrl at the sandbox's shared address.
    let back = format!("{}/worldline/back?shop=1", env.sandbox.base);
    let t3 = env.token("5555555555554444", 3, 2031);
    let ecom = format!(
        r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{t3}"}},"paymentProductId":3,"threeDSecure":{{"redirectionData":{{"returnUrl":"{back}"}}}}}},"order":{{"amountOfMoney":{{"amount":100,"currencyCode":"EUR"}}}}}}"#
    );
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &h, &ecom);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = answer_json(&a)["payment"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = bearer(
        no_redirects(&env).get(format!("{}/v1/proxy/worldline/redirect/3ds/{id}", env.base)),
        &env.shop,
    )
    .send()
    .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{back}&paymentId={id}")
    );
    env.stop();
}

/// `GCS v1HMAC` as the official SDKs compute it: `METHOD\nContent-Type\nDate\n` then each
/// `x-gcs-*` header (lower-case name, sorted) as `name:value\n`, then the path (with the
/// query) and `\n`; HMAC-SHA256 under the secret API key, Base64.
fn sdk_v1hmac(secret: &str, date: &str, gcs: &[(&str, &str)], path: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut sorted: Vec<(String, &str)> = gcs
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), *v))
        .collect();
    sorted.sort();
    let mut sts = format!("POST\napplication/json\n{date}\n");
    for (n, v) in sorted {
        sts.push_str(&format!("{n}:{v}\n"));
    }
    sts.push_str(path);
    sts.push('\n');
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    format!(
        "GCS v1HMAC:{}:{}",
        panvault::sandbox::WORLDLINE_API_KEY_ID,
        data_encoding::BASE64.encode(&mac.finalize().into_bytes())
    )
}

/// Issue 15 point 9: each simulator serves at its own root, so a v1HMAC signature made as the
/// official SDKs make it, over `/v2/{merchantId}/payments`, verifies at the Worldline simulator
/// (directly, and through the vault with the merchant's own `Authorization`), and a wrong one is
/// refused.
#[test]
fn worldline_simulator_verifies_an_sdk_signature_over_v2() {
    let env = Env::start(None);
    let http = Client::new();
    let worldline = env.sandbox.url("worldline");
    let date = "Sat, 05 Dec 2026 09:00:00 GMT";
    let gcs = [
        (
            "X-GCS-ServerMetaInfo",
            "eyJwbGF0Zm9ybUlkZW50aWZpZXIiOiJ0ZXN0In0=",
        ),
        ("X-GCS-Idempotence-Key", "d3f6a1b2"),
    ];
    let card = r#"{"cardPaymentMethodSpecificInput":{"card":{"cardNumber":"4111111111111111","expiryDate":"1230"},"paymentProductId":1,"transactionChannel":"MOTO"},"order":{"amountOfMoney":{"amount":100,"currencyCode":"EUR"}}}"#;
    let post = |auth: &str| {
        let mut b = http
            .post(format!("{worldline}/v2/1234/payments"))
            .header("Content-Type", "application/json")
            .header("Date", date)
            .header("Authorization", auth)
            .body(card);
        for (n, v) in gcs {
            b = b.header(n, v);
        }
        let r = b.send().unwrap();
        let status = r.status();
        (status, r.json::<Value>().unwrap())
    };
    let secret = panvault::sandbox::WORLDLINE_SECRET_API_KEY;
    let (s, a) = post(&sdk_v1hmac(secret, date, &gcs, "/v2/1234/payments"));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["payment"]["status"], "PENDING_CAPTURE");
    for wrong in [
        sdk_v1hmac("another secret", date, &gcs, "/v2/1234/payments"),
        sdk_v1hmac(secret, date, &gcs, "/worldline/v2/1234/payments"),
        sdk_v1hmac(secret, date, &gcs[..1], "/v2/1234/payments"),
        sdk_v1hmac(
            secret,
            "Sat, 05 Dec 2026 09:00:01 GMT",
            &gcs,
            "/v2/1234/payments",
        ),
    ] {
        let (s, a) = post(&wrong);
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{a}");
        assert_eq!(a["errors"][0]["id"], "MISSING_OR_INVALID_AUTHORIZATION");
    }

    // Through the vault: the merchant's own SDK signature over `/v2/...` survives the swap.
    let token = env.token("4111111111111111", 12, 2030);
    let auth = sdk_v1hmac(secret, date, &[], "/v2/1234/payments");
    let pv = format!("Bearer {}", env.shop);
    let own = [
        ("Content-Type", "application/json"),
        ("Date", date),
        ("Authorization", auth.as_str()),
        ("X-Panvault-Authorization", pv.as_str()),
    ];
    let body = card
        .replace("4111111111111111", &token)
        .replace(r#","expiryDate":"1230""#, "");
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &own, &body);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        env.sandbox.last()["headers"]["authorization"],
        auth.as_str()
    );
    env.stop();
}

/// Issue 15 point 9: the MPGS simulator takes Basic `merchant.<id>` with the configured API
/// password and nothing else: a wrong one is 401 in MPGS's own error shape, directly and
/// through the vault with the merchant's own `Authorization`.
#[test]
fn mpgs_simulator_checks_the_basic_password() {
    let env = Env::start(None);
    let http = Client::new();
    let pv = format!("Bearer {}", env.shop);
    let mpgs = env.sandbox.url("mpgs");
    let pay = r#"{"apiOperation":"PAY","order":{"amount":"1.00","currency":"EUR"},"sourceOfFunds":{"type":"CARD","provided":{"card":{"number":"5123450000000008","expiry":{"month":"01","year":"39"}}}},"transaction":{"source":"MOTO"}}"#;
    let put = |user_pw: &str, txn: &str| {
        let r = http
            .put(format!(
                "{mpgs}/api/rest/version/100/merchant/TESTMERCHANT01/order/PW-1/transaction/{txn}"
            ))
            .header("Content-Type", "application/json")
            .header(
                "Authorization",
                format!("Basic {}", data_encoding::BASE64.encode(user_pw.as_bytes())),
            )
            .body(pay)
            .send()
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().unwrap())
    };
    let (s, a) = put("merchant.TESTMERCHANT01:sandbox-api-password", "1");
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["result"], "SUCCESS");
    for wrong in [
        "merchant.TESTMERCHANT01:not-the-password",
        "merchant.TESTMERCHANT01:",
        "merchant.OTHER:sandbox-api-password",
    ] {
        let (s, a) = put(wrong, "2");
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{wrong}: {a}");
        assert_eq!(
            a,
            json!({"result": "ERROR", "error": {"cause": "INVALID_REQUEST", "explanation": "Invalid credentials."}})
        );
    }
    // Through the vault, the merchant's own wrong password reaches MPGS and comes back 401.
    let t = env.token("5555555555554444", 1, 2039);
    let basic = format!(
        "Basic {}",
        data_encoding::BASE64.encode(b"merchant.TESTMERCHANT01:not-the-password")
    );
    let own = [
        ("Content-Type", "application/json"),
        ("Authorization", basic.as_str()),
        ("X-Panvault-Authorization", pv.as_str()),
    ];
    let body = pay
        .replace("5123450000000008", &t)
        .replace(r#","expiry":{"month":"01","year":"39"}"#, "");
    let (s, a) = env.proxy(
        "PUT",
        "mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/PW-2/transaction/1",
        &own,
        &body,
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{a}");
    assert_eq!(
        answer_json(&a)["error"]["explanation"],
        "Invalid credentials."
    );
    env.stop();
}

#[test]
fn mpgs_token_in_both_places_and_decline_by_expiry() {
    let env = Env::start(None);
    let token = env.token("5555555555554444", 1, 2039);
    let path = "mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/ORD-1001/transaction/1";
    let body = format!(
        r#"{{"apiOperation":"PAY","order":{{"amount":"10.00","currency":"USD","reference":"ORD-1001"}},"sourceOfFunds":{{"type":"CARD","provided":{{"card":{{"number":"{token}","securityCode":"100","storedOnFile":"NOT_STORED"}}}}}},"transaction":{{"source":"MOTO","reference":"TXN-1001-1"}}}}"#
    );
    let (s, a) = env.proxy("PUT", path, &[("Content-Type", "application/json")], &body);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = answer_json(&a);
    assert_eq!(
        (a["result"].as_str(), a["response"]["gatewayCode"].as_str()),
        (Some("SUCCESS"), Some("APPROVED"))
    );
    assert_eq!(
        a["sourceOfFunds"]["provided"]["card"]["number"],
        "555555xxxxxx4444"
    );
    let got = env.sandbox.last();
    assert_eq!(got["method"], "PUT");
    assert_eq!(
        got["path"],
        "/api/rest/version/100/merchant/TESTMERCHANT01/order/ORD-1001/transaction/1"
    );
    // Basic `merchant.<merchantId from the path>:<configured API password>`.
    assert_eq!(
        got["headers"]["authorization"].as_str().unwrap(),
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(b"merchant.TESTMERCHANT01:sandbox-api-password")
        )
    );
    assert_eq!(
        got["body"].as_str().unwrap(),
        body.replace(
            &format!(r#""number":"{token}","securityCode":"100","storedOnFile":"NOT_STORED"}}"#),
            r#""number":"5555555555554444","securityCode":"100","storedOnFile":"NOT_STORED","expiry":{"month":"01","year":"39"}}"#
        )
    );

    // sourceOfFunds.token, expiry 05/39: the simulator declines.
    let t2 = env.token("4111111111111111", 5, 2039);
    let body = format!(
        r#"{{"apiOperation":"PAY","order":{{"amount":"1.00","currency":"EUR"}},"sourceOfFunds":{{"token":"{t2}"}},"transaction":{{"source":"INTERNET"}}}}"#
    );
    let (s, a) = env.proxy(
        "PUT",
        &path.replace("ORD-1001", "ORD-1002"),
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = answer_json(&a);
    assert_eq!(
        (a["result"].as_str(), a["response"]["gatewayCode"].as_str()),
        (Some("FAILURE"), Some("DECLINED"))
    );
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["sourceOfFunds"],
        json!({"type": "CARD", "provided": {"card": {"number": "4111111111111111", "expiry": {"month": "05", "year": "39"}}}})
    );
    env.stop();
}

#[test]
fn refusals_reach_nothing() {
    let env = Env::start(None);
    let moto = |pan: &str| {
        format!(
            r#"{{"order":{{"orderId":"o1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{pan}"}}}}"#
        )
    };
    let before = env.sandbox.log().len();
    // Another group's token, a deleted token, a `..` path, a key without `charge`.
    let theirs = env.tokenize(
        &env.other,
        json!({"pan": "378282246310005", "expiry_month": 1, "expiry_year": 2031}),
    );
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(&theirs));
    assert_eq!(s, StatusCode::NOT_FOUND, "{a}");
    assert_eq!(answer_json(&a)["code"], "token_not_found");
    let mine = env.token("378282246310005", 1, 2031);
    let (s, _) = send(bearer(
        env.client.delete(format!("{}/v1/tokens/{mine}", env.base)),
        &env.shop,
    ));
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(&mine));
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("token_not_found"))
    );
    // (reqwest resolves `..` and `%2e%2e` segments before sending: here the encodings that
    // reach the server as they are; raw `..` in the request line is
    // `raw_dot_dot_path_over_tls_reaches_nothing`.)
    for bad in [
        "nexi/orders%2f..%2fx",
        "nexi/..%5cadmin",
        "nexi/a%2F%2E%2E%2Fb",
    ] {
        let (s, a) = env.proxy("POST", bad, &nexi_headers(), &moto("4111111111111111"));
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {a}");
        assert_eq!(answer_json(&a)["code"], "invalid_path");
    }
    // Path parameters (`..;` is `..` to a Java server), double encoding, NUL, and a gateway
    // name spelled encoded (it would leave no path): refused before anything is forwarded.
    for bad in [
        "nexi/orders/..;/..;/admin",
        "nexi/orders/a;b/moto",
        "nexi/%252e%252e/x",
        "nexi/a/..%00/b",
        "%6eexi/orders/moto",
    ] {
        let (s, a) = env.proxy("POST", bad, &nexi_headers(), &moto("4111111111111111"));
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {a}");
        assert_eq!(answer_json(&a)["code"], "invalid_path", "{bad}");
    }
    // Only the gateways' methods: TRACE would echo the credentials the proxy adds.
    for m in ["TRACE", "OPTIONS"] {
        let (s, a) = env.proxy(m, "nexi/orders/moto", &nexi_headers(), "");
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m}: {a}");
    }
    // A duplicate key anywhere: the gateway might read the other value.
    let dup = moto("4111111111111111").replace(
        r#""currency":"EUR""#,
        r#""currency":"EUR","currency":"USD""#,
    );
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &dup);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert_eq!(answer_json(&a)["code"], "malformed_request");
    // A body that is not UTF-8 (an ISO-8859-1 `é` in a JSON field, or in a SOAP body): the
    // proxy cannot read where a token stands, so it forwards nothing (it used to forward the
    // JSON with the token left in `card.pan`), and the answer names the encoding.
    let mine = env.token("4111111111111111", 12, 2030);
    let mut latin1 = moto(&mine).replace(r#""o1""#, r#""o1X""#).into_bytes();
    let at = latin1.windows(3).position(|w| w == b"o1X").unwrap() + 2;
    latin1[at] = 0xe9;
    let soap = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><callPagamS2S xmlns=\"https://ecomms2s.sella.it/\"><shopLogin>GESPAY65987</shopLogin><uicCode>242</uicCode><amount>1.00</amount><shopTransactionId>X</shopTransactionId><buyerName>Jos\u{e9}</buyerName><cardNumber>{mine}</cardNumber></callPagamS2S></soap:Body></soap:Envelope>"
    );
    let mut soap = soap.into_bytes();
    let e9 = soap.windows(2).position(|w| w == "é".as_bytes()).unwrap();
    soap.splice(e9..e9 + 2, [0xe9]);
    let soap_headers = [
        ("Content-Type", "text/xml; charset=iso-8859-1"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
    ];
    for (path, headers, body, offset) in [
        ("nexi/orders/moto", &nexi_headers()[..], &latin1, at),
        (
            "axerve/gestpay/gestpayws/WSs2s.asmx",
            &soap_headers[..],
            &soap,
            e9,
        ),
    ] {
        let (s, _, a) = env.proxy_bytes("POST", path, headers, body);
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {a}");
        let v = answer_json(&a);
        assert_eq!(v["code"], "malformed_request", "{path}: {a}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!(
                "the body is not UTF-8 (invalid byte at offset {offset})"
            )),
            "{path}: {detail}"
        );
    }
    let (s, a) = env.proxy("POST", "paypal/x", &nexi_headers(), "{}");
    assert_eq!(s, StatusCode::NOT_FOUND, "{a}");
    let r = bearer(
        env.client
            .post(format!("{}/v1/proxy/nexi/orders/moto", env.base)),
        &env.no_charge,
    )
    .body(moto("4111111111111111"))
    .send()
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (&v["code"], &v["required_scope"]),
        (&json!("forbidden"), &json!("charge")),
        "the 403 names the scope: {v}"
    );
    // Only the gateway's own `Authorization` (MPGS Basic, a Worldline v1HMAC) and no
    // `X-Panvault-Authorization`: the 401 says where panvault's key goes. A wrong panvault
    // key, or none at all, gets the plain 401.
    let unauthorized = |auth: Option<&str>| {
        let mut b = env
            .client
            .post(format!(
                "{}/v1/proxy/mpgs/api/rest/version/100/merchant/M/order/O/transaction/1",
                env.base
            ))
            .header("Content-Type", "application/json")
            .body("{}");
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let r = b.send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = r.json().unwrap();
        assert_eq!(v["code"], "unauthorized", "{v}");
        v["detail"].as_str().unwrap().to_string()
    };
    for gateways in [
        "Basic bWVyY2hhbnQuVEVTVE1FUkNIQU5UMDE6c2FuZGJveC1hcGktcGFzc3dvcmQ=",
        "GCS v1HMAC:sandbox-key-id:c2lnbmF0dXJl",
    ] {
        assert_eq!(
            unauthorized(Some(gateways)),
            "missing or invalid API key; this request's Authorization is not a panvault API key (it is left for the gateway): send panvault's key as X-Panvault-Authorization: Bearer pvk_..."
        );
    }
    for plain in [None, Some("Bearer pvk_0000000000000000_AAAA")] {
        assert_eq!(unauthorized(plain), "missing or invalid API key");
    }
    assert_eq!(
        env.sandbox.log().len(),
        before,
        "nothing reached the sandbox"
    );

    // A temporary token serves one charge, with its CVV; then it is gone. A charge refused by
    // a local check first does not use it up.
    let tmp = env.tokenize(&env.shop, json!({"pan": "4111111111111111", "expiry_month": 7, "expiry_year": 2033, "temporary": true, "cvv": "123"}));
    let mut with_request_token = nexi_headers();
    with_request_token.push(("X-Panvault-Request-Token", "MASKEDPAN"));
    let n = env.sandbox.log().len();
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &with_request_token, &moto(&tmp));
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{a}");
    assert_eq!(env.sandbox.log().len(), n);
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(&tmp));
    assert_eq!(s, StatusCode::OK, "{a}");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["card"],
        json!({"pan": "4111111111111111", "expiryDate": "0733", "cvv": "123"})
    );
    let n = env.sandbox.log().len();
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(&tmp));
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("token_not_found"))
    );
    assert_eq!(env.sandbox.log().len(), n);

    // What is no panvault token is left alone, and the sandbox refuses it loudly.
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &nexi_headers(),
        &moto("411111******1111"),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert!(
        a.contains("a token or a masked number where the PAN belongs"),
        "{a}"
    );
    // A raw PAN passes, and is masked if the gateway echoes it.
    let raw = moto("4111111111111111").replace(
        r#""pan":"4111111111111111""#,
        r#""pan":"4111111111111111","expiryDate":"1230""#,
    );
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &raw);
    assert_eq!(s, StatusCode::OK, "{a}");
    // A gateway that echoes the card (the sandbox's `echo-card` order): its status and body
    // come back, the card masked in the text, in its dotted form, and in the header.
    let token = env.token("4111111111111111", 12, 2030);
    let echo = moto(&token).replace(r#""orderId":"o1""#, r#""orderId":"echo-card""#);
    let (s, h, a) = env.proxy_full("POST", "nexi/orders/moto", &nexi_headers(), &echo);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert!(
        a.contains(
            "VALUE 411111******1111 OF FIELD card.pan IS WRONG (read as 4111.11**.****.1111)"
        ),
        "{a}"
    );
    assert_eq!(h["x-refused-card"], "411111******1111");
    // panvault's key never reaches a gateway, even when the merchant also sends it as
    // `Authorization` next to `X-Panvault-Authorization`.
    let own = format!("Bearer {}", env.shop);
    let mut both = nexi_headers();
    both.push(("X-Panvault-Authorization", own.as_str()));
    both.push(("Authorization", own.as_str()));
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &both, &raw);
    assert_eq!(s, StatusCode::OK, "{a}");
    let last = env.sandbox.last();
    assert!(!last.to_string().contains("pvk_"), "{last}");
    // Every charge that reached the gateway, and the refused MIT-free ones, are audited as
    // `charge` with their outcome; the token, never a card.
    let audit = env.stop();
    let charges: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e["action"] == "charge")
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["detail"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        charges.contains(&("approved", "nexi: HTTP 200")),
        "{charges:?}"
    );
    assert!(
        charges.contains(&("other", "nexi: HTTP 400")),
        "{charges:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "charge" && e["token"] == json!(tmp)),
        "the temporary token's charge"
    );
}

#[test]
fn slow_gateway_504_and_down_gateway_502() {
    let env = Env::start(Some("http://127.0.0.1:1/axerve"));
    let t = env.token("4111111111111111", 12, 2030);
    let body = format!(
        r#"{{"order":{{"orderId":"o1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{t}"}}}}"#
    );
    let mut h = nexi_headers();
    h.push(("X-Sandbox-Delay-Ms", "6000"));
    let started = Instant::now();
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &h, &body);
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{a}");
    assert_eq!(answer_json(&a)["code"], "gateway_timeout");
    // Within the configured 1.5 s, not before it and not much after.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &[("Content-Type", "text/xml")],
        "<x/>",
    );
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{a}");
    assert_eq!(answer_json(&a)["code"], "gateway_unreachable");
    env.stop();
}

/// Ctrl-C (SIGINT) drains as SIGTERM does: a charge the gateway is still working on when the
/// signal comes gets its answer and its audit entry, and the vault exits 0 (actix's own SIGINT
/// handling stopped at once: the merchant got an empty reply for a charge the gateway made).
#[test]
fn ctrl_c_drains_a_charge_in_flight() {
    let env = Env::start(None);
    let t = env.token("5555555555554444", 12, 2030);
    let body = format!(
        r#"{{"order":{{"orderId":"drain-1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{t}"}}}}"#
    );
    let mut h = nexi_headers();
    h.push(("X-Sandbox-Delay-Ms", "1000"));
    let pid = env.vault.as_ref().unwrap().id().to_string();
    let (s, a) = std::thread::scope(|scope| {
        let charge = scope.spawn(|| env.proxy("POST", "nexi/orders/moto", &h, &body));
        // The charge is at the gateway (it answers after 1 s) when Ctrl-C comes.
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        charge.join().unwrap()
    });
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        answer_json(&a)["operation"]["operationResult"],
        "EXECUTED",
        "{a}"
    );
    // Already signalled: a second SIGINT is ignored while it finishes, and it exits 0.
    let audit = env.stop_by("INT");
    assert!(
        audit.iter().any(|e| e["action"] == "charge"
            && e["token"] == json!(t)
            && e["outcome"] == "approved"),
        "the drained charge is audited"
    );
}

#[test]
fn request_token_on_a_proxied_charge() {
    let env = Env::start(None);
    let moto = |pan: &str| {
        format!(
            r#"{{"order":{{"orderId":"rt1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{pan}","expiryDate":"1230"}},"captureType":"EXPLICIT"}}"#
        )
    };
    let mut h = nexi_headers();
    h.push(("X-Panvault-Request-Token", "MASKEDPAN"));
    let (s, hd, a) = env.proxy_full("POST", "nexi/orders/moto", &h, &moto("4111111111111111"));
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        answer_json(&a)["operation"]["operationResult"],
        "AUTHORIZED"
    );
    let token = hd["x-panvault-token"].to_str().unwrap().to_string();
    assert!(
        token.starts_with("41GWAY") && token.ends_with("1111"),
        "{token}"
    );
    assert_eq!(hd["x-panvault-token-expiry-month"], "12");
    assert_eq!(hd["x-panvault-token-expiry-year"], "2030");
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        moto("4111111111111111"),
        "the raw card went through untouched"
    );

    // Making a token takes `tokenize`: a key with `charge` alone is refused (403, nothing
    // forwarded, no token), and still charges a token it was given.
    let before = env.sandbox.log().len();
    let charge_only = format!("Bearer {}", env.charge_only);
    let mut only: Vec<(&str, &str)> = nexi_headers();
    only.push(("X-Panvault-Authorization", &charge_only));
    let mut asks = only.clone();
    asks.push(("X-Panvault-Request-Token", "MASKEDPAN"));
    let (s, hd, a) = env.proxy_full("POST", "nexi/orders/moto", &asks, &moto("4111111111111111"));
    assert_eq!(s, StatusCode::FORBIDDEN, "{a}");
    assert_eq!(answer_json(&a)["code"], "forbidden");
    assert!(hd.get("x-panvault-token").is_none());
    assert_eq!(
        env.sandbox.log().len(),
        before,
        "nothing reached the sandbox"
    );
    let (s, _, a) = env.proxy_full("POST", "nexi/orders/moto", &only, &moto(&token));
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(env.sandbox.log().len(), before + 1);

    // Declined: no token; with :FORCED: a custom token all the same.
    let (s, hd, _) = env.proxy_full("POST", "nexi/orders/moto", &h, &moto("4012888888881881"));
    assert_eq!(s, StatusCode::OK);
    assert!(hd.get("x-panvault-token").is_none());
    let mut forced = nexi_headers();
    forced.push(("X-Panvault-Request-Token", ":FORCED:CUSTOMER_1881"));
    let (_, hd, _) = env.proxy_full(
        "POST",
        "nexi/orders/moto",
        &forced,
        &moto("4012888888881881"),
    );
    assert_eq!(hd["x-panvault-token"], "GWAYCUSTOMER_1881");
    // A card whose expiry has passed gets no new token, forced or not: the charge's answer
    // comes back with `X-Panvault-Token-Error: card_expired` (issue 15, point 2).
    let mut forced_old = nexi_headers();
    forced_old.push(("X-Panvault-Request-Token", ":FORCED:OLD_CARD"));
    let (_, hd, _) = env.proxy_full(
        "POST",
        "nexi/orders/moto",
        &forced_old,
        &moto("5555555555554444").replace(r#""expiryDate":"1230""#, r#""expiryDate":"0120""#),
    );
    assert!(hd.get("x-panvault-token").is_none());
    assert_eq!(hd["x-panvault-token-error"], "card_expired");

    // The new token pays on MPGS.
    let body = format!(
        r#"{{"apiOperation":"PAY","order":{{"amount":"1.00","currency":"EUR"}},"sourceOfFunds":{{"token":"{token}"}}}}"#
    );
    let (s, a) = env.proxy(
        "PUT",
        "mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/RT-1/transaction/1",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(answer_json(&a)["result"], "SUCCESS");

    // A request token needs a raw card where the card goes, not a gateway's own token.
    let n = env.sandbox.log().len();
    let wl = r#"{"cardPaymentMethodSpecificInput":{"token":"b5c5f0a1-2a2c-4f6e-8b39-0c7f6b5a1234"},"order":{"amountOfMoney":{"amount":100,"currencyCode":"EUR"}}}"#;
    let (s, a) = env.proxy(
        "POST",
        "worldline/v2/1234/payments",
        &[
            ("Content-Type", "application/json"),
            ("X-Panvault-Request-Token", "MASKEDPAN"),
        ],
        wl,
    );
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field"))
    );
    assert_eq!(env.sandbox.log().len(), n);

    // A bad request token value is refused before anything is forwarded.
    let n = env.sandbox.log().len();
    let mut bad = nexi_headers();
    bad.push(("X-Panvault-Request-Token", "NOT VALID!"));
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &bad, &moto("4111111111111111"));
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{a}");
    assert_eq!(env.sandbox.log().len(), n);
    env.stop();
}

/// `demo` starts the sandbox, points the gateways at it and prints gateway lines that work.
#[test]
fn demo_runs_the_sandbox_and_its_gateway_lines_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("PANVAULT_LOG", "warn")
        .env_remove("PANVAULT_GATEWAY_NEXI_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut gateway_section = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("# through the gateway sandbox") {
            gateway_section = true;
        } else if gateway_section && line.starts_with("curl ") {
            lines.push(line);
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let run = |line: &str| -> Value {
        let out = Command::new("bash").args(["-c", line]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for pan in PANS {
            assert!(!text.contains(pan));
        }
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(run(&lines[0])["token"], "XYZWDEMO_AMEX_0005");
    let charge = run(&lines[1]);
    assert_eq!(
        charge["operation"]["operationResult"], "AUTHORIZED",
        "{charge}"
    );
    assert_eq!(charge["operation"]["paymentInstrumentInfo"], "***0005");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// Seed 004 on MPGS: a CIT stores the card under an agreement, an MIT then needs it.
#[test]
fn mpgs_stored_credentials_cit_then_mit() {
    let env = Env::start(None);
    let token = env.tokenize(
        &env.shop,
        json!({"pan": "4111111111111111", "expiry_month": 1, "expiry_year": 2039, "request_token": "CUST_42"}),
    );
    assert_eq!(token, "GWAYCUST_42");
    let url = |o: &str| {
        format!("mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/{o}/transaction/1")
    };
    let h = [("Content-Type", "application/json")];
    let body = |op: &str, source: &str, id: &str, kind: &str| {
        format!(
            r#"{{"apiOperation":"{op}","order":{{"amount":"25.00","currency":"EUR"}},"agreement":{{"id":"{id}","type":"{kind}"}},"sourceOfFunds":{{"type":"CARD","provided":{{"card":{{"number":"{token}"}}}}}},"transaction":{{"source":"{source}"}}}}"#
        )
    };
    // An MIT before any CIT: refused, nothing forwarded.
    let n = env.sandbox.log().len();
    let (s, a) = env.proxy(
        "PUT",
        &url("MIT-0"),
        &h,
        &body("PAY", "MERCHANT", "AGR-0001", "UNSCHEDULED"),
    );
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("agreement_required"))
    );
    assert_eq!(env.sandbox.log().len(), n);
    // An agreement id holding a card number (any separators) would be kept in clear on the
    // token: refused before anything is forwarded (issue 14 finding 6).
    for id in ["5555--5555--5555--4444", "AGR 5555.5555.5555.4444"] {
        let (s, a) = env.proxy(
            "PUT",
            &url("CIT-0"),
            &h,
            &body("AUTHORIZE", "INTERNET", id, "UNSCHEDULED"),
        );
        assert_eq!(
            (s, answer_json(&a)["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")),
            "{a}"
        );
        assert!(!a.contains("5555"), "{a}");
    }
    assert_eq!(env.sandbox.log().len(), n);

    // The CIT: storedOnFile filled in as TO_BE_STORED; approved, so the agreement is recorded.
    let (s, a) = env.proxy(
        "PUT",
        &url("CIT-1"),
        &h,
        &body("AUTHORIZE", "INTERNET", "AGR-0001", "UNSCHEDULED"),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["sourceOfFunds"]["provided"]["card"]["storedOnFile"],
        "TO_BE_STORED"
    );
    let (s, info) = send(bearer(
        env.client.get(format!("{}/v1/tokens/{token}", env.base)),
        &env.shop,
    ));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        info["agreements"],
        json!([{"id": "AGR-0001", "type": "UNSCHEDULED"}])
    );

    // The MIT with that agreement: STORED; another id or another type: refused.
    let (s, a) = env.proxy(
        "PUT",
        &url("MIT-1"),
        &h,
        &body("PAY", "MERCHANT", "AGR-0001", "UNSCHEDULED"),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(answer_json(&a)["result"], "SUCCESS");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["sourceOfFunds"]["provided"]["card"]["storedOnFile"],
        "STORED"
    );
    let n = env.sandbox.log().len();
    let (s, a) = env.proxy(
        "PUT",
        &url("MIT-2"),
        &h,
        &body("PAY", "MERCHANT", "AGR-0002", "UNSCHEDULED"),
    );
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("agreement_required"))
    );
    let (s, a) = env.proxy(
        "PUT",
        &url("MIT-3"),
        &h,
        &body("PAY", "MERCHANT", "AGR-0001", "RECURRING"),
    );
    assert_eq!(
        (s, answer_json(&a)["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("agreement_mismatch"))
    );
    assert_eq!(env.sandbox.log().len(), n);

    // A card update of the custom token keeps its agreements; the MIT goes on with the new card.
    let (s, info) = send(bearer(
        env.client
            .patch(format!("{}/v1/tokens/{token}", env.base))
            .json(&json!({"pan": "5555555555554444", "expiry_month": 1, "expiry_year": 2039})),
        &env.shop,
    ));
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(
        info["agreements"],
        json!([{"id": "AGR-0001", "type": "UNSCHEDULED"}])
    );
    let (s, a) = env.proxy(
        "PUT",
        &url("MIT-4"),
        &h,
        &body("PAY", "MERCHANT", "AGR-0001", "UNSCHEDULED"),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["sourceOfFunds"]["provided"]["card"]["number"],
        "5555555555554444"
    );

    // A raw card's CIT that asks for a token: storedOnFile TO_BE_STORED, and the new token
    // carries the agreement, so its MIT goes through (STORED).
    let raw = body("AUTHORIZE", "INTERNET", "AGR-0009", "RECURRING")
        .replace(&token, "378282246310005")
        .replace(
            r#""number":"378282246310005""#,
            r#""number":"378282246310005","expiry":{"month":"05","year":"31"}"#,
        );
    let mut ht = h.to_vec();
    ht.push(("X-Panvault-Request-Token", "MASKEDPAN"));
    let (s, hs, a) = env.proxy_full("PUT", &url("CIT-9"), &ht, &raw);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["sourceOfFunds"]["provided"]["card"]["storedOnFile"],
        "TO_BE_STORED"
    );
    assert!(hs.get("x-panvault-agreement-error").is_none(), "{hs:?}");
    let new = hs["x-panvault-token"].to_str().unwrap().to_string();
    let (_, info) = send(bearer(
        env.client.get(format!("{}/v1/tokens/{new}", env.base)),
        &env.shop,
    ));
    assert_eq!(
        info["agreements"],
        json!([{"id": "AGR-0009", "type": "RECURRING"}])
    );
    let mit = body("PAY", "MERCHANT", "AGR-0009", "RECURRING").replace(&token, &new);
    let (s, a) = env.proxy("PUT", &url("MIT-9"), &h, &mit);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    env.stop();
}

/// The agreements `GET /v1/tokens/{token}` shows.
fn agreements(env: &Env, token: &str) -> Value {
    let (s, info) = send(bearer(
        env.client.get(format!("{}/v1/tokens/{token}", env.base)),
        &env.shop,
    ));
    assert_eq!(s, StatusCode::OK, "{info}");
    info["agreements"].clone()
}

/// A refusal's status and contract code.
fn refused(answer: (StatusCode, String)) -> (StatusCode, String) {
    let code = answer_json(&answer.1)["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (answer.0, code)
}

/// Worldline stored credentials (seed 004, SPEC 3.3). Worldline has no agreement id: the series
/// is the agreement, recorded as `worldline:<TYPE>`. A cardholder-initiated `first` that
/// Worldline approves stores the card for the series; merchant-initiated payments of that series
/// then go through (the token in the `token` field too), of another series are
/// `agreement_mismatch`, and before any `first` are `agreement_required`, nothing forwarded. A
/// declined `first` records nothing. The card-on-file fields reach Worldline as written.
#[test]
fn worldline_stored_credentials_cit_then_mit() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 6, 2033);
    let declined = env.token("4012888888881881", 6, 2033);
    let url = "worldline/v2/1234/payments";
    let h = [("Content-Type", "application/json")];
    let body = |card: &str, fields: &str| {
        format!(
            r#"{{"cardPaymentMethodSpecificInput":{{"authorizationMode":"SALE",{card},{fields}}},"order":{{"amountOfMoney":{{"amount":990,"currencyCode":"EUR"}},"references":{{"merchantReference":"sub-1"}}}}}}"#
        )
    };
    let number = |t: &str| format!(r#""card":{{"cardNumber":"{t}"}}"#);
    let stored = |t: &str| format!(r#""token":"{t}""#);
    let cit = r#""unscheduledCardOnFileRequestor":"cardholderInitiated","unscheduledCardOnFileSequenceIndicator":"first""#;
    let mit = r#""unscheduledCardOnFileRequestor":"merchantInitiated","unscheduledCardOnFileSequenceIndicator":"subsequent""#;
    let rec_first =
        r#""isRecurring":true,"recurring":{"recurringPaymentSequenceIndicator":"first"}"#;
    let rec_next =
        r#""isRecurring":true,"recurring":{"recurringPaymentSequenceIndicator":"recurring"}"#;

    // An MIT before the token stored its card: refused, nothing forwarded.
    let n = env.sandbox.log().len();
    let answer = env.proxy("POST", url, &h, &body(&stored(&token), mit));
    assert_eq!(
        refused(answer),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "agreement_required".into()
        )
    );
    assert_eq!(env.sandbox.log().len(), n);

    // A declined first: nothing recorded.
    let (s, a) = env.proxy("POST", url, &h, &body(&number(&declined), cit));
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{a}");
    assert_eq!(agreements(&env, &declined), json!([]));

    // The approved first: the series is recorded; the fields went out as written.
    let (s, a) = env.proxy("POST", url, &h, &body(&number(&token), cit));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        body(
            r#""card":{"cardNumber":"4111111111111111","expiryDate":"0633"}"#,
            cit
        )
    );
    assert_eq!(
        agreements(&env, &token),
        json!([{"id": "worldline:UNSCHEDULED", "type": "UNSCHEDULED"}])
    );

    // The MIT of that series, the token in Worldline's `token` field: the card goes out.
    let (s, a) = env.proxy("POST", url, &h, &body(&stored(&token), mit));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(answer_json(&a)["payment"]["status"], "CAPTURED");
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        body(
            mit,
            r#""card":{"cardNumber":"4111111111111111","expiryDate":"0633"}"#
        )
    );

    // A recurring MIT on a token that stored its card for unscheduled use: mismatch;
    // isRecurring without a sequence indicator: unreadable. Neither forwarded.
    let n = env.sandbox.log().len();
    let answer = env.proxy("POST", url, &h, &body(&stored(&token), rec_next));
    assert_eq!(
        refused(answer),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "agreement_mismatch".into()
        )
    );
    let answer = env.proxy(
        "POST",
        url,
        &h,
        &body(&stored(&token), r#""isRecurring":true"#),
    );
    assert_eq!(
        refused(answer),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into())
    );
    assert_eq!(env.sandbox.log().len(), n);

    // A recurring first, then its MITs go through too.
    let (s, a) = env.proxy("POST", url, &h, &body(&number(&token), rec_first));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        agreements(&env, &token),
        json!([
            {"id": "worldline:UNSCHEDULED", "type": "UNSCHEDULED"},
            {"id": "worldline:RECURRING", "type": "RECURRING"}
        ])
    );
    let (s, a) = env.proxy("POST", url, &h, &body(&stored(&token), rec_next));
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let audit = env.stop();
    let recorded = audit
        .iter()
        .filter(|e| e["action"] == "agreement" && e["token"] == token.as_str())
        .count();
    assert_eq!(recorded, 2);
}

/// Nexi stored credentials (seed 004, SPEC 1.3): a payment with the card and
/// `recurrence{CONTRACT_CREATION, contractId, contractType}` that Nexi approves records the
/// contract on the token (id `contractId`, type `contractType`), also on a token asked for with a
/// raw card; a declined one records nothing; CONTRACT_CREATION without its type is refused,
/// nothing forwarded. The MIT (`/orders/mit`) carries only `contractId` and no card: panvault
/// forwards it as written (the contract, and the card under it, live at Nexi).
#[test]
fn nexi_contract_creation_then_mit() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 12, 2030);
    let declined = env.token("4012888888881881", 12, 2030);
    let h = nexi_headers();
    let moto = |order: &str, pan: &str, recurrence: &str| {
        format!(
            r#"{{"order":{{"orderId":"{order}","amount":"1500","currency":"EUR","customerInfo":{{"cardHolderName":"Joseph Doe"}}}},"card":{{"pan":"{pan}"}},"captureType":"IMPLICIT","recurrence":{recurrence}}}"#
        )
    };
    let creation = |id: &str, kind: &str| {
        format!(r#"{{"action":"CONTRACT_CREATION","contractId":"{id}","contractType":"{kind}"}}"#)
    };

    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &h,
        &moto("cit-0001", &token, &creation("C2834987", "MIT_UNSCHEDULED")),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "EXECUTED");
    let sent: Value = serde_json::from_str(env.sandbox.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["card"]["pan"], "4111111111111111");
    assert_eq!(
        sent["recurrence"],
        json!({"action": "CONTRACT_CREATION", "contractId": "C2834987", "contractType": "MIT_UNSCHEDULED"})
    );
    assert_eq!(
        agreements(&env, &token),
        json!([{"id": "C2834987", "type": "MIT_UNSCHEDULED"}])
    );

    // The MIT: no card, forwarded byte for byte with its Idempotency-Key.
    let mit = r#"{"order":{"orderId":"mit-0001","amount":"1500","currency":"EUR"},"contractId":"C2834987","captureType":"IMPLICIT"}"#;
    let mut hm = h.clone();
    hm.push(("Idempotency-Key", "mit-0001-key"));
    let (s, a) = env.proxy("POST", "nexi/orders/mit", &hm, mit);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "EXECUTED");
    let got = env.sandbox.last();
    assert_eq!(got["body"].as_str().unwrap(), mit);
    assert_eq!(got["headers"]["idempotency-key"], "mit-0001-key");

    // Declined: no contract on the token. Without its type: refused, nothing forwarded.
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &h,
        &moto(
            "cit-0002",
            &declined,
            &creation("C-DECLINED", "MIT_SCHEDULED"),
        ),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "DECLINED");
    assert_eq!(agreements(&env, &declined), json!([]));
    let n = env.sandbox.log().len();
    let answer = env.proxy(
        "POST",
        "nexi/orders/moto",
        &h,
        &moto(
            "cit-0003",
            &token,
            r#"{"action":"CONTRACT_CREATION","contractId":"C-NOTYPE"}"#,
        ),
    );
    assert_eq!(
        refused(answer),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into())
    );
    assert_eq!(env.sandbox.log().len(), n);

    // A raw card's contract creation that asks for a token: the new token carries the contract.
    let raw = moto("cit-0004", "378282246310005", &creation("C-RAW-1", "CIT")).replace(
        r#""pan":"378282246310005""#,
        r#""pan":"378282246310005","expiryDate":"0531""#,
    );
    let mut ht = h.clone();
    ht.push(("X-Panvault-Request-Token", "MASKEDPAN"));
    let (s, hs, a) = env.proxy_full("POST", "nexi/orders/moto", &ht, &raw);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(hs.get("x-panvault-agreement-error").is_none(), "{hs:?}");
    let new = hs["x-panvault-token"].to_str().unwrap().to_string();
    assert_eq!(
        agreements(&env, &new),
        json!([{"id": "C-RAW-1", "type": "CIT"}])
    );
    env.stop();
}

/// Axerve stored credentials (seed 004, SPEC 2.4): `callPagamS2S`'s `transDetails.type` `03F`
/// (first unscheduled, cardholder-initiated) that Axerve approves records `axerve:UNSCHEDULED` on
/// the token; `03N` (next, merchant-initiated) then goes through, `01N` (recurring next) is
/// `agreement_mismatch`, and `03N` before any `03F` is `agreement_required`, nothing forwarded.
#[test]
fn axerve_trans_details_cit_then_mit() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let envelope = |tx: &str, kind: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <callPagamS2S xmlns="https://ecomms2s.sella.it/">
      <shopLogin>GESPAY65987</shopLogin>
      <uicCode>242</uicCode>
      <amount>9.90</amount>
      <shopTransactionId>{tx}</shopTransactionId>
      <tokenValue>{token}</tokenValue>
      <recurrent>true</recurrent>
      <transDetails><type>{kind}</type></transDetails>
    </callPagamS2S>
  </soap:Body>
</soap:Envelope>"#
        )
    };
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
    ];
    let url = "axerve/gestpay/gestpayws/WSs2s.asmx";

    let n = env.sandbox.log().len();
    let answer = env.proxy("POST", url, &h, &envelope("SUB-0", "03N"));
    assert_eq!(
        refused(answer),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "agreement_required".into()
        )
    );
    assert_eq!(env.sandbox.log().len(), n);

    let (s, a) = env.proxy("POST", url, &h, &envelope("SUB-1", "03F"));
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        a.contains("<TransactionResult>OK</TransactionResult>"),
        "{a}"
    );
    let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
    assert!(
        sent.contains("<cardNumber>4111111111111111</cardNumber>"),
        "{sent}"
    );
    assert!(
        sent.contains("<transDetails><type>03F</type></transDetails>"),
        "{sent}"
    );
    assert_eq!(
        agreements(&env, &token),
        json!([{"id": "axerve:UNSCHEDULED", "type": "UNSCHEDULED"}])
    );

    let (s, a) = env.proxy("POST", url, &h, &envelope("SUB-2", "03N"));
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        a.contains("<TransactionResult>OK</TransactionResult>"),
        "{a}"
    );
    let n = env.sandbox.log().len();
    let answer = env.proxy("POST", url, &h, &envelope("SUB-3", "01N"));
    assert_eq!(
        refused(answer),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "agreement_mismatch".into()
        )
    );
    assert_eq!(env.sandbox.log().len(), n);
    env.stop();
}

/// Nexi 2steps (SPEC 1.4): init carries the card (token swapped, MMYY filled in) and answers the
/// 3-D Secure challenge; the cardholder goes through it; payment carries the card again with the
/// raw PaRes as `threeDSAuthData.threeDSAuthResponse`, no validation step. A declined card ends
/// at init.
#[test]
fn nexi_two_steps_init_then_payment() {
    let env = Env::start(None);
    let token = env.token("5555555555554444", 11, 2032);
    let order = r#"{"orderId":"2st0000001","amount":"1000","currency":"EUR","customerInfo":{"cardHolderName":"Joseph Doe","billingAddress":{"name":"Joseph Doe","street":"Via Roma 1","city":"Milano","postCode":"20121","country":"ITA"}},"description":"caff\u00e8 \"doppio\""}"#;
    let init = |pan: &str| {
        format!(
            r#"{{"order":{order},"card":{{"pan":"{pan}","cvv":"396"}},"recurrence":{{"action":"NO_RECURRING"}},"exemptions":"NO_PREFERENCE"}}"#
        )
    };
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/2steps/init",
        &nexi_headers(),
        &init(&token),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["operation"]["operationResult"], "PENDING");
    assert_eq!(a["threeDSEnrollmentStatus"], "ENROLLED");
    assert_eq!(
        a["operation"]["additionalData"]["maskedPan"],
        "555555******4444"
    );
    let got = env.sandbox.last();
    assert_eq!(
        (got["method"].as_str(), got["path"].as_str()),
        (Some("POST"), Some("/orders/2steps/init"))
    );
    // The merchant's body byte for byte; the card object gains the PAN and the MMYY expiry.
    assert_eq!(
        got["body"].as_str().unwrap(),
        init("5555555555554444").replace(r#""cvv":"396"}"#, r#""cvv":"396","expiryDate":"1132"}"#)
    );
    assert_eq!(got["headers"]["x-api-key"], "sandbox-terminal-key");
    assert_eq!(got["headers"]["correlation-id"].as_str().unwrap().len(), 36);
    assert!(got["headers"].get("authorization").is_none());
    let first_correlation = got["headers"]["correlation-id"].clone();

    let (op, pares) = nexi_challenge(&env.sandbox, &a);
    let pay = |pan: &str| {
        format!(
            r#"{{"operationId":"{op}","order":{{"orderId":"2st0000001","amount":"1000","currency":"EUR"}},"card":{{"pan":"{pan}"}},"captureType":"EXPLICIT","threeDSAuthData":{{"threeDSAuthResponse":"{pares}"}}}}"#
        )
    };
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/2steps/payment",
        &nexi_headers(),
        &pay(&token),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["operation"]["operationResult"], "AUTHORIZED");
    assert_eq!(a["operation"]["paymentInstrumentInfo"], "***4444");
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/orders/2steps/payment");
    assert_eq!(
        got["body"].as_str().unwrap(),
        pay("5555555555554444").replace(
            r#""pan":"5555555555554444"}"#,
            r#""pan":"5555555555554444","expiryDate":"1132"}"#
        )
    );
    assert_ne!(
        got["headers"]["correlation-id"], first_correlation,
        "a fresh Correlation-Id per call"
    );

    // A declined card: init answers DECLINED, no challenge.
    let declined = env.token("4012888888881881", 2, 2033);
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/2steps/init",
        &nexi_headers(),
        &init(&declined),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["operation"]["operationResult"], "DECLINED");
    assert!(a.get("threeDSAuthUrl").is_none());
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        init("4012888888881881").replace(r#""cvv":"396"}"#, r#""cvv":"396","expiryDate":"0233"}"#)
    );
    let audit = env.stop();
    let outcomes = |t: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|e| e["action"] == "charge" && e["token"] == json!(t))
            .map(|e| e["outcome"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(outcomes(&token), ["challenge", "approved"]);
    assert_eq!(outcomes(&declined), ["declined"]);
}

/// Axerve REST (SPEC 2.6): `payment/create` (no card: forwarded byte for byte, panvault's
/// configured apikey added) then `payment/submit` with the create's `paymentToken` and a panvault
/// token in `paymentTypeDetails.creditcard.number`: approval (a temporary token, with its CVV),
/// the 3-D Secure answer (8006 and `userRedirect.href`), a decline (KO).
#[test]
fn axerve_rest_create_then_submit() {
    let env = Env::start(None);
    let json_ct = [("Content-Type", "application/json")];
    let create = r#"{"shopLogin":"GESPAY65987","amount":"10.00","currency":"EUR","shopTransactionID":"order-1700000000","buyerName":"Mario Rossi","buyerEmail":"mario.rossi@example.com","languageId":1,"customInfo":{"note":"2 \u00d7 espresso"}}"#;
    let (s, a) = env.proxy("POST", "axerve/api/v1/payment/create", &json_ct, create);
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["error"]["code"], "0");
    let payment_token = a["payload"]["paymentToken"].as_str().unwrap().to_string();
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/api/v1/payment/create");
    assert_eq!(got["body"].as_str().unwrap(), create);
    assert_eq!(
        got["headers"]["authorization"], "apikey axerve-sandbox-apikey",
        "panvault's configured apikey, never its own key"
    );
    assert!(!got.to_string().contains("pvk_"));

    let submit = |number: &str| {
        format!(
            r#"{{"shopLogin":"GESPAY65987","buyer":{{"name":"Mario Rossi","email":"mario.rossi@example.com"}},"paymentTypeDetails":{{"creditcard":{{"number":"{number}"}}}},"responseURLs":{{"buyerOK":"https://shop.example/axerve/ok","buyerKO":"https://shop.example/axerve/ko","serverNotificationURL":"https://shop.example/axerve/notify"}}}}"#
        )
    };
    let h = [
        ("Content-Type", "application/json"),
        ("paymentToken", payment_token.as_str()),
    ];
    // A temporary token: its CVV goes out as `CVV`, once.
    let tmp = env.tokenize(
        &env.shop,
        json!({"pan": "4111111111111111", "expiry_month": 7, "expiry_year": 2033, "temporary": true, "cvv": "123"}),
    );
    let (s, a) = env.proxy("POST", "axerve/api/v1/payment/submit", &h, &submit(&tmp));
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["payload"]["transactionResult"], "OK");
    assert_eq!(a["payload"]["maskedPAN"], "411111******1111");
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/api/v1/payment/submit");
    assert_eq!(got["headers"]["paymenttoken"], payment_token.as_str());
    assert_eq!(
        got["headers"]["authorization"],
        "apikey axerve-sandbox-apikey"
    );
    assert_eq!(
        got["body"].as_str().unwrap(),
        submit("4111111111111111").replace(
            r#""number":"4111111111111111"}"#,
            r#""number":"4111111111111111","expMonth":"07","expYear":"33","CVV":"123"}"#
        )
    );

    // The challenge card: 8006 and the pagam3d.aspx redirect for this payment.
    let t3 = env.token("5555555555554444", 3, 2031);
    let (s, a) = env.proxy("POST", "axerve/api/v1/payment/submit", &h, &submit(&t3));
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["payload"]["transactionErrorCode"], "8006");
    assert!(
        a["payload"]["userRedirect"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "/pagam/pagam3d.aspx?a=GESPAY65987&b={payment_token}"
            )),
        "{a}"
    );
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        submit("5555555555554444").replace(
            r#""number":"5555555555554444"}"#,
            r#""number":"5555555555554444","expMonth":"03","expYear":"31"}"#
        )
    );

    // A decline: KO with the issuer's code; the merchant's own expiry is kept.
    let td = env.token("4012888888881881", 1, 2032);
    let own_expiry = submit(&td).replace(
        r#""creditcard":{"#,
        r#""creditcard":{"expMonth":"01","expYear":"32","#,
    );
    let (s, a) = env.proxy("POST", "axerve/api/v1/payment/submit", &h, &own_expiry);
    assert_eq!(s, StatusCode::OK, "{a}");
    let a = answer_json(&a);
    assert_eq!(
        (
            a["payload"]["transactionResult"].as_str(),
            a["payload"]["transactionErrorCode"].as_str()
        ),
        (Some("KO"), Some("74"))
    );
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        own_expiry.replace(&td, "4012888888881881")
    );
    let audit = env.stop();
    let charged: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e["action"] == "charge" && e["token"].is_string())
        .map(|e| (e["token"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert!(charged.contains(&(tmp.as_str(), "approved")), "{charged:?}");
    assert!(charged.contains(&(t3.as_str(), "challenge")), "{charged:?}");
    assert!(charged.contains(&(td.as_str(), "declined")), "{charged:?}");
}

/// Worldline `cardPaymentMethodSpecificInput.token` (contract 6): a panvault token there becomes
/// a `card` object (the token field removed, the other fields byte for byte), signed by panvault
/// after the swap; a Worldline token of the gateway's own is left alone.
#[test]
fn worldline_token_field_becomes_card() {
    let env = Env::start(None);
    let token = env.token("378282246310005", 4, 2034);
    let input = |t: &str| {
        format!(
            r#"{{"authorizationMode":"SALE","token":"{t}","unscheduledCardOnFileRequestor":"cardholderInitiated","unscheduledCardOnFileSequenceIndicator":"first","paymentProductId":2}}"#
        )
    };
    let body = |input: &str| {
        format!(
            r#"{{"cardPaymentMethodSpecificInput":{input},"order":{{"amountOfMoney":{{"amount":1250,"currencyCode":"EUR"}},"references":{{"merchantReference":"AcmeOrder0002"}}}}}}"#
        )
    };
    let h = [
        ("Content-Type", "application/json"),
        ("X-GCS-Idempotence-Key", "c0ffee-0002"),
    ];
    let (s, a) = env.proxy(
        "POST",
        "worldline/v2/1234/payments",
        &h,
        &body(&input(&token)),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = answer_json(&a);
    assert_eq!(a["payment"]["status"], "CAPTURED");
    assert_eq!(
        a["payment"]["paymentOutput"]["cardPaymentMethodSpecificOutput"]["card"]["cardNumber"],
        "***********0005"
    );
    let got = env.sandbox.last();
    assert_eq!(got["path"], "/v2/1234/payments");
    assert_eq!(
        got["body"].as_str().unwrap(),
        body(
            r#"{"authorizationMode":"SALE","unscheduledCardOnFileRequestor":"cardholderInitiated","unscheduledCardOnFileSequenceIndicator":"first","paymentProductId":2,"card":{"cardNumber":"378282246310005","expiryDate":"0434"}}"#
        )
    );
    assert!(
        got["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "GCS v1HMAC:{}:",
                panvault::sandbox::WORLDLINE_API_KEY_ID
            ))
    );
    assert_eq!(got["headers"]["x-gcs-idempotence-key"], "c0ffee-0002");

    // Worldline's own token: forwarded as it is (the sandbox does not know it).
    let theirs = body(&input("b5c5f0a1-2a2c-4f6e-8b39-0c7f6b5a1234"));
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &h, &theirs);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert_eq!(answer_json(&a)["errors"][0]["id"], "UNKNOWN_TOKEN");
    assert_eq!(env.sandbox.last()["body"].as_str().unwrap(), theirs);
    env.stop();
}

/// A temporary token whose TTL has elapsed (the smallest the contract allows, 1 s) is 404
/// `token_not_found` on every gateway, and nothing reaches the sandbox; one made with it and
/// not yet expired still pays.
#[test]
fn expired_temporary_token_reaches_nothing() {
    let env = Env::start(None);
    let temporary = |ttl: Option<u64>| {
        let mut body = json!({"pan": "4111111111111111", "expiry_month": 7, "expiry_year": 2033, "temporary": true, "cvv": "123"});
        if let Some(t) = ttl {
            body["ttl_seconds"] = json!(t);
        }
        env.tokenize(&env.shop, body)
    };
    let expired = temporary(Some(1));
    let alive = temporary(None);
    std::thread::sleep(Duration::from_millis(1600));
    let nexi = |t: &str| {
        format!(
            r#"{{"order":{{"orderId":"tmp1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{t}"}}}}"#
        )
    };
    let soap = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><callPagamS2S xmlns="https://ecomms2s.sella.it/"><shopLogin>GESPAY65987</shopLogin><uicCode>242</uicCode><amount>1.00</amount><shopTransactionId>tmp1</shopTransactionId><tokenValue>{expired}</tokenValue></callPagamS2S></soap:Body></soap:Envelope>"#
    );
    let calls = [
        ("POST", "nexi/orders/moto", nexi_headers(), nexi(&expired)),
        (
            "POST",
            "axerve/gestpay/gestpayws/WSs2s.asmx",
            vec![
                ("Content-Type", "text/xml; charset=utf-8"),
                ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
            ],
            soap,
        ),
        (
            "POST",
            "axerve/api/v1/payment/submit",
            vec![
                ("Content-Type", "application/json"),
                ("paymentToken", "sbx1"),
            ],
            format!(
                r#"{{"shopLogin":"GESPAY65987","paymentTypeDetails":{{"creditcard":{{"token":"{expired}"}}}}}}"#
            ),
        ),
        (
            "POST",
            "worldline/v2/1234/payments",
            vec![("Content-Type", "application/json")],
            format!(
                r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{expired}"}}}},"order":{{"amountOfMoney":{{"amount":100,"currencyCode":"EUR"}}}}}}"#
            ),
        ),
        (
            "PUT",
            "mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/TMP-1/transaction/1",
            vec![("Content-Type", "application/json")],
            format!(
                r#"{{"apiOperation":"PAY","order":{{"amount":"1.00","currency":"EUR"}},"sourceOfFunds":{{"type":"CARD","provided":{{"card":{{"number":"{expired}"}}}}}}}}"#
            ),
        ),
    ];
    let before = env.sandbox.log().len();
    for (method, path, headers, body) in &calls {
        let (s, a) = env.proxy(method, path, headers, body);
        assert_eq!(
            (s, answer_json(&a)["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("token_not_found")),
            "{path}: {a}"
        );
    }
    assert_eq!(
        env.sandbox.log().len(),
        before,
        "nothing reached the sandbox"
    );
    // Its twin with the default TTL pays, CVV and all.
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &nexi(&alive));
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        nexi("4111111111111111").replace(
            r#""pan":"4111111111111111"}"#,
            r#""pan":"4111111111111111","expiryDate":"0733","cvv":"123"}"#
        )
    );
    env.stop();
}

/// One raw HTTP/1.1 request over TLS to the vault, its request line written byte for byte (a
/// client's URL parser would resolve `..` before sending): the status and the body.
fn raw_https(env: &Env, request: &str) -> (u16, String) {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let addr = env.base.trim_start_matches("https://");
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls_pki_types::CertificateDer::pem_file_iter(env._dir.path().join("data/tls/ca.pem"))
            .unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = addr.rsplit_once(':').unwrap().0;
    let name = rustls_pki_types::ServerName::try_from(host)
        .unwrap()
        .to_owned();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let text = String::from_utf8(out).unwrap();
    for pan in PANS {
        assert!(!text.contains(pan), "a PAN in the answer: {text}");
    }
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `..` (and `.`) segments sent raw in the request line over TLS, the way curl --path-as-is or
/// a hand-written client sends them: 400 `invalid_path` (or no proxy route at all), and nothing
/// reaches the sandbox. The same request on the plain path goes through, so the client is sound.
#[test]
fn raw_dot_dot_path_over_tls_reaches_nothing() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 12, 2030);
    let body = format!(
        r#"{{"order":{{"orderId":"dd1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{token}"}}}}"#
    );
    let addr = env.base.trim_start_matches("https://").to_string();
    let request = |target: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nX-Api-Key: sandbox-terminal-key\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            env.shop,
            body.len()
        )
    };
    // The control: the plain path reaches the gateway with the card swapped in.
    let n = env.sandbox.log().len();
    let (s, a) = raw_https(&env, &request("/v1/proxy/nexi/orders/moto"));
    assert_eq!(s, 200, "{a}");
    assert_eq!(answer_json(&a)["operation"]["operationResult"], "EXECUTED");
    assert_eq!(env.sandbox.log().len(), n + 1);
    assert!(
        env.sandbox.last()["body"]
            .as_str()
            .unwrap()
            .contains(r#""pan":"4111111111111111""#)
    );

    let before = env.sandbox.log().len();
    for target in [
        "/v1/proxy/nexi/..",
        "/v1/proxy/nexi/../",
        "/v1/proxy/nexi/orders/../moto",
        "/v1/proxy/nexi/orders/moto/..",
        "/v1/proxy/nexi/../../__log",
        "/v1/proxy/nexi/../mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/DD-1/transaction/1",
        "/v1/proxy/nexi/orders/../../../../etc/passwd",
        "/v1/proxy/nexi/./orders/moto",
        "/v1/proxy/nexi/orders/.%2e/moto",
        "/v1/proxy/nexi/orders/..?x=1",
    ] {
        let (s, a) = raw_https(&env, &request(target));
        assert_eq!(s, 400, "{target}: {a}");
        assert_eq!(answer_json(&a)["code"], "invalid_path", "{target}");
    }
    // `..` before the gateway name: `..` read as the gateway's name, or no route at all.
    for (target, code) in [
        ("/v1/proxy/../proxy/nexi/orders/moto", "unknown_gateway"),
        ("/v1/../v1/proxy/nexi/orders/moto", "not_found"),
    ] {
        let (s, a) = raw_https(&env, &request(target));
        assert_eq!(
            (s, answer_json(&a)["code"].as_str()),
            (404, Some(code)),
            "{target}: {a}"
        );
    }
    assert_eq!(
        env.sandbox.log().len(),
        before,
        "nothing reached the sandbox"
    );
    env.stop();
}

#[test]
fn credentials_from_files_reach_the_gateways() {
    let env = Env::start_with(None, true);
    // Worldline: the sandbox checks the v1HMAC signature under its secret API key.
    let t = env.token("4111111111111111", 9, 2032);
    let body = format!(
        r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{t}","cardholderName":"Wile E. Coyote"}},"paymentProductId":1,"authorizationMode":"FINAL_AUTHORIZATION","transactionChannel":"MOTO"}},"order":{{"amountOfMoney":{{"amount":2980,"currencyCode":"EUR"}}}}}}"#
    );
    let (s, a) = env.proxy(
        "POST",
        "worldline/v2/1234/payments",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert!(
        env.sandbox.last()["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("GCS v1HMAC:")
    );

    // MPGS: Basic with the password from its file's first line.
    let t = env.token("5555555555554444", 1, 2039);
    let path = "mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/ORD-2001/transaction/1";
    let body = format!(
        r#"{{"apiOperation":"PAY","order":{{"amount":"10.00","currency":"USD"}},"sourceOfFunds":{{"type":"CARD","provided":{{"card":{{"number":"{t}"}}}}}},"transaction":{{"source":"MOTO"}}}}"#
    );
    let (s, a) = env.proxy("PUT", path, &[("Content-Type", "application/json")], &body);
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        env.sandbox.last()["headers"]["authorization"]
            .as_str()
            .unwrap(),
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(b"merchant.TESTMERCHANT01:sandbox-api-password")
        )
    );

    // Nexi: the per-shop key from its file, for the keys of shop 9100002.
    let theirs = env.tokenize(
        &env.other,
        json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}),
    );
    let body = format!(
        r#"{{"order":{{"orderId":"f1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{theirs}"}}}}"#
    );
    let pv = format!("Bearer {}", env.other);
    let (s, a) = env.proxy(
        "POST",
        "nexi/orders/moto",
        &[
            ("Content-Type", "application/json"),
            ("X-Panvault-Authorization", &pv),
        ],
        &body,
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        env.sandbox.last()["headers"]["x-api-key"],
        "shop-9100002-terminal-key"
    );
    env.stop();
}

/// `serve` with `config` on a fresh dev vault must stop at once: its stderr.
fn serve_refused_with(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["init", "--dev", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cred = dir.path().join("mpgs-password");
    std::fs::write(&cred, "not-a-real-password\n").unwrap();
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("panvault.toml");
    std::fs::write(&cfg, config.replace("CRED", &cred.display().to_string())).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .env_remove("PANVAULT_PASSPHRASE_FILE")
        .env_remove("PANVAULT_SHARES_FILE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "serve started: {err}");
    assert!(!err.contains("not-a-real-password"), "{err}");
    err
}

#[test]
fn credential_and_its_file_both_given_stop_serve_naming_the_key() {
    let err = serve_refused_with(
        "[gateways.mpgs]\napi_password = \"not-a-real-password\"\napi_password_file = \"CRED\"\n",
    );
    assert!(
        err.contains("gateways.mpgs.api_password and gateways.mpgs.api_password_file"),
        "{err}"
    );
    let err = serve_refused_with(
        "[gateways.worldline.shops.\"9100001\"]\napi_key_id = \"id\"\nsecret_api_key_file = \"/nonexistent/secret\"\n",
    );
    assert!(
        err.contains("gateways.worldline.shops.9100001.secret_api_key_file /nonexistent/secret"),
        "{err}"
    );
    // A config error quotes its line, but never a credential's value.
    let err = serve_refused_with("[gateways.mpgs]\napi_passwd = \"not-a-real-password\"\n");
    assert!(err.contains("api_passwd = [REDACTED]"), "{err}");
}

/// `merchants = [...]` on a gateway: its gateway-wide credentials go only to the listed groups'
/// shops; another group's charge leaves without them (the gateway then refuses it).
#[test]
fn gateway_wide_credentials_go_only_to_listed_merchants() {
    let sandbox = Sandbox::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = common::init_dev(&data);
    let cfg = dir.path().join("panvault.toml");
    let write_cfg = |merchants: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[gateways.mpgs]\nbase_url = \"{}\"\napi_password = \"sandbox-api-password\"\n{merchants}",
                sandbox.url("mpgs")
            ),
        )
        .unwrap();
    };
    write_cfg("");
    let args = [OsStr::new("--config"), cfg.as_os_str()];
    // Two groups, each with a shop key; then only the first is listed.
    let (child, base, c, _) = serve(&data, &args);
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for (prefix, shop) in [("LSTA", "9200001"), ("LSTB", "9200002")] {
        let (s, m) = send(bearer(
            c.post(format!("{base}/v1/merchants"))
                .json(&json!({"name": prefix, "prefix": prefix})),
            &admin,
        ));
        assert_eq!(s, StatusCode::CREATED, "{m}");
        let id = m["merchant_id"].as_str().unwrap().to_string();
        let (s, _) = send(bearer(
            c.post(format!("{base}/v1/merchants/{id}/shops"))
                .json(&json!({"shop_login": shop})),
            &admin,
        ));
        assert_eq!(s, StatusCode::CREATED);
        keys.push(key(&c, &base, &admin, shop, &["tokenize", "charge"]));
        ids.push(id);
    }
    let listed = &ids[0];
    stop(child);
    write_cfg(&format!("merchants = [\"{listed}\"]\n"));
    let (child, base, c, _) = serve(&data, &args);
    let pay = |key: &str, order: &str| {
        let (s, t) = send(bearer(
            c.post(format!("{base}/v1/tokens"))
                .json(&json!({"pan": "5555555555554444", "expiry_month": 1, "expiry_year": 2039})),
            key,
        ));
        assert!(s.is_success(), "{t}");
        let token = t["token"].as_str().unwrap();
        let body = format!(
            r#"{{"apiOperation":"PAY","order":{{"amount":"1.00","currency":"EUR"}},"sourceOfFunds":{{"token":"{token}"}},"transaction":{{"source":"MOTO"}}}}"#
        );
        let r = bearer(
            c.put(format!(
                "{base}/v1/proxy/mpgs/api/rest/version/100/merchant/TESTMERCHANT01/order/{order}/transaction/1"
            ))
            .header("Content-Type", "application/json")
            .body(body),
            key,
        )
        .send()
        .unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(!text.contains("5555555555554444"), "a PAN in the answer");
        (status, sandbox.last())
    };
    let (s, got) = pay(&keys[0], "ORD-L1");
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        got["headers"]["authorization"].as_str().unwrap(),
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(b"merchant.TESTMERCHANT01:sandbox-api-password")
        )
    );
    let (s, got) = pay(&keys[1], "ORD-L2");
    // Messages name the path and headers only: the body holds the card the sandbox received.
    assert!(
        got["path"].as_str().unwrap().contains("ORD-L2"),
        "{}",
        got["path"]
    );
    assert!(
        got["headers"]["authorization"].is_null(),
        "{}",
        got["headers"]
    );
    assert!(
        !s.is_success(),
        "the gateway refuses a request without credentials: {s}"
    );
    stop(child);
}

/// `X-Panvault-Request-Token` on the two gateways the tests above do not use it with: a raw
/// card to Axerve SOAP (`cardNumber`, `expiryMonth`/`expiryYear`) and to Worldline
/// (`card.cardNumber`, `expiryDate` MMYY) comes back as a new token once approved, its expiry
/// read in each gateway's format. The card reaches the gateway untouched and never comes back.
#[test]
fn request_token_on_axerve_and_worldline() {
    let env = Env::start(None);
    let soap = |shop_tx: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <callPagamS2S xmlns="https://ecomms2s.sella.it/">
      <shopLogin>GESPAY65987</shopLogin>
      <uicCode>242</uicCode>
      <amount>9.90</amount>
      <shopTransactionId>{shop_tx}</shopTransactionId>
      <cardNumber>4111111111111111</cardNumber>
      <expiryMonth>05</expiryMonth>
      <expiryYear>31</expiryYear>
    </callPagamS2S>
  </soap:Body>
</soap:Envelope>"#
        )
    };
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
        ("X-Panvault-Request-Token", "MASKEDPAN"),
    ];
    let (s, hd, a) = env.proxy_full(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &soap("RT-AX-1"),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(a.contains("<TransactionResult>OK</TransactionResult>"));
    assert!(!a.contains("4111111111111111"));
    let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
    assert!(sent.contains("<cardNumber>4111111111111111</cardNumber>"));
    let token = hd["x-panvault-token"].to_str().unwrap().to_string();
    assert!(
        token.starts_with("41GWAY") && token.ends_with("1111"),
        "{token}"
    );
    assert_eq!(hd["x-panvault-token-expiry-month"], "5");
    assert_eq!(hd["x-panvault-token-expiry-year"], "2031");
    assert_eq!(agreements(&env, &token), json!([]));

    let wl = |card: &str| {
        format!(
            r#"{{"cardPaymentMethodSpecificInput":{{"card":{{"cardNumber":"{card}","expiryDate":"0434","cardholderName":"Wile E. Coyote"}},"paymentProductId":2,"authorizationMode":"SALE"}},"order":{{"amountOfMoney":{{"amount":1250,"currencyCode":"EUR"}}}}}}"#
        )
    };
    let h = [
        ("Content-Type", "application/json"),
        ("X-Panvault-Request-Token", "MASKEDPAN"),
    ];
    let (s, hd, a) = env.proxy_full(
        "POST",
        "worldline/v2/1234/payments",
        &h,
        &wl("378282246310005"),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert!(!a.contains("378282246310005"));
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        wl("378282246310005"),
        "the raw card went through untouched"
    );
    let amex = hd["x-panvault-token"].to_str().unwrap().to_string();
    assert!(
        amex.starts_with("37GWAY") && amex.ends_with("0005") && amex.len() == 16,
        "{amex}"
    );
    assert_eq!(hd["x-panvault-token-expiry-month"], "4");
    assert_eq!(hd["x-panvault-token-expiry-year"], "2034");
    // The new token pays on Worldline in place of the card.
    let (s, a) = env.proxy(
        "POST",
        "worldline/v2/1234/payments",
        &[("Content-Type", "application/json")],
        &wl(&amex),
    );
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        env.sandbox.last()["body"].as_str().unwrap(),
        wl("378282246310005")
    );
    env.stop();
}

/// A gateway answer in XML that quotes the card (the sandbox's Axerve `echo-card`
/// shopTransactionId): the SOAP answer comes back with the card masked inside the element
/// text, plain and dotted in groups.
#[test]
fn card_quoted_inside_an_xml_answer_is_masked() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let envelope = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:g="https://ecomms2s.sella.it/">
  <s:Body>
    <g:callPagamS2S>
      <g:shopLogin>GESPAY65987</g:shopLogin>
      <g:uicCode>242</g:uicCode>
      <g:amount>1.00</g:amount>
      <g:shopTransactionId>echo-card</g:shopTransactionId>
      <g:cardNumber>{token}</g:cardNumber>
    </g:callPagamS2S>
  </s:Body>
</s:Envelope>"#
    );
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
    ];
    let (s, a) = env.proxy("POST", "axerve/gestpay/gestpayws/WSs2s.asmx", &h, &envelope);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        a.contains(
            "<ErrorDescription>Invalid card number: cardNumber 411111******1111 (read as 4111.11**.****.1111)</ErrorDescription>"
        ),
        "{a}"
    );
    assert!(!a.contains("4111111111111111") && !a.contains("4111.1111.1111.1111"));
    // The sandbox did get the card, in the element where the token stood.
    let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
    assert!(sent.contains("<g:cardNumber>4111111111111111</g:cardNumber>"));
    env.stop();
}

/// A SOAP body with a `DOCTYPE` (entity declarations ride in it) is refused with 422 before
/// the token is swapped for the card: nothing reaches the gateway, neither the card nor the
/// configured apikey (issue 14 item 10).
#[test]
fn axerve_soap_doctype_is_refused_before_any_swap() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"https://ecomms2s.sella.it/callPagamS2S\""),
    ];
    let envelope = |doctype: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>{doctype}
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:g="https://ecomms2s.sella.it/">
  <s:Body>
    <g:callPagamS2S>
      <g:shopLogin>GESPAY65987</g:shopLogin>
      <g:uicCode>242</g:uicCode>
      <g:amount>1.00</g:amount>
      <g:shopTransactionId>doctype</g:shopTransactionId>
      <g:cardNumber>{token}</g:cardNumber>
    </g:callPagamS2S>
  </s:Body>
</s:Envelope>"#
        )
    };
    let before = env.sandbox.log().len();
    for doctype in [
        r#"<!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "http://attacker.example/x">]>"#,
        r#"<!DOCTYPE s:Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>"#,
        "<!DOCTYPE s:Envelope>",
    ] {
        let (s, a) = env.proxy(
            "POST",
            "axerve/gestpay/gestpayws/WSs2s.asmx",
            &h,
            &envelope(doctype),
        );
        assert_eq!(
            refused((s, a.clone())),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into()),
            "{doctype}: {a}"
        );
        assert!(a.contains("DOCTYPE"), "{a}");
        assert!(!a.contains("4111111111111111"), "{a}");
    }
    assert_eq!(env.sandbox.log().len(), before, "nothing forwarded");
    // The same envelope without a DOCTYPE goes through.
    let (s, a) = env.proxy(
        "POST",
        "axerve/gestpay/gestpayws/WSs2s.asmx",
        &h,
        &envelope(""),
    );
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(env.sandbox.log().len(), before + 1);
    env.stop();
}

/// The Axerve SOAP endpoint behind the proxy, and the `SOAPAction` of `callPagamS2S`.
const WSS2S: &str = "axerve/gestpay/gestpayws/WSs2s.asmx";
const PAGAM_ACTION: &str = "\"https://ecomms2s.sella.it/callPagamS2S\"";

/// The fields of the last SOAP call the sandbox received, in order (name, text).
fn sent_soap_fields(env: &Env) -> (String, Vec<(String, String)>) {
    let body = env.sandbox.last()["body"].as_str().unwrap().to_string();
    let (op, fields) = panvault::gateway::axerve::soap_fields(body.as_bytes())
        .unwrap()
        .expect("a SOAP request");
    let fields = fields
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    (op, fields)
}

/// `tests/clients/axerve_zeep.py`: zeep, from the WSs2s WSDL, sends `callPagamS2S` with
/// `fields` to the vault's proxy (panvault's key as `Authorization: Bearer` on its
/// requests.Session, the vault's CA through `REQUESTS_CA_BUNDLE`). `wsdl`: the WSDL's path.
/// GestPayS2S as zeep parsed it (`raw`: as the script read zeep's raw answer).
fn zeep_call_pagam(env: &Env, wsdl: &std::path::Path, fields: &Value, raw: bool) -> Value {
    let has_zeep = Command::new("python3")
        .args(["-c", "import zeep"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_zeep,
        "python3 cannot import zeep: pip install -r tests/requirements.txt"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let ca = env._dir.path().join("data/tls/ca.pem");
    let mut child = Command::new("python3")
        .arg(format!("{root}/tests/clients/axerve_zeep.py"))
        .arg(wsdl)
        .arg(format!("{}/v1/proxy/{WSS2S}", env.base))
        .args(raw.then_some("raw"))
        .env("PANVAULT_KEY", &env.shop)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(fields.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    for pan in PANS {
        assert!(
            !stdout.contains(pan) && !stderr.contains(pan),
            "a PAN in what zeep got"
        );
    }
    assert!(out.status.success(), "axerve_zeep.py: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("JSON from the script: {stdout}"))
}

/// Issue 15 point 1: a real, generic SOAP client (zeep, from a WSDL of WSs2s) sends
/// `callPagamS2S` with a panvault token in `tokenValue` through the proxy: the sandbox gets the
/// PAN and the expiry in WSDL order where `tokenValue` stood, with zeep's own prefix, and zeep
/// parses an approval that holds no PAN. With the WSDL's namespace changed to one a client
/// might guess (`http://ecomms2s.sella.it`), the token is swapped all the same.
#[test]
fn axerve_soap_from_zeep_with_the_wsdl() {
    let env = Env::start(None);
    let wsdl =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wsdl/WSs2s.wsdl");
    let token = env.tokenize(
        &env.shop,
        json!({"pan": "4111111111111111", "expiry_month": 5, "expiry_year": 2031, "request_token": "ZEEP_VISA_1111"}),
    );
    assert_eq!(token, "GWAYZEEP_VISA_1111");
    let before = env.sandbox.log().len();
    let fields = json!({
        "shopLogin": "GESPAY65987",
        "uicCode": "242",
        "amount": "24.21",
        "shopTransactionId": "ZEEP-0001",
        "buyerName": "Mario Rossi",
        "tokenValue": token,
    });
    let answer = zeep_call_pagam(&env, &wsdl, &fields, false);
    assert_eq!(answer["TransactionResult"], "OK", "{answer}");
    assert_eq!(answer["ErrorCode"], "0");
    assert_eq!(answer["ShopTransactionID"], "ZEEP-0001");
    assert_eq!(answer["MaskedPAN"], "411111******1111");
    assert_eq!(env.sandbox.log().len(), before + 1);
    let got = env.sandbox.last();
    assert_eq!(got["headers"]["soapaction"], PAGAM_ACTION);
    assert!(got["headers"]["authorization"].is_null(), "{got}");
    let body = got["body"].as_str().unwrap();
    assert!(
        body.contains("<ns0:cardNumber>4111111111111111</ns0:cardNumber><ns0:expiryMonth>05</ns0:expiryMonth><ns0:expiryYear>31</ns0:expiryYear>"),
        "{body}"
    );
    assert!(!body.contains("ZEEP_VISA"), "{body}");
    let (op, sent) = sent_soap_fields(&env);
    assert_eq!(op, "callPagamS2S");
    let pairs: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("shopLogin", "GESPAY65987"),
            ("uicCode", "242"),
            ("amount", "24.21"),
            ("shopTransactionId", "ZEEP-0001"),
            ("cardNumber", "4111111111111111"),
            ("expiryMonth", "05"),
            ("expiryYear", "31"),
            ("buyerName", "Mario Rossi"),
            ("apikey", "axerve-sandbox-apikey"),
        ]
    );

    // The same call from a WSDL in another namespace (the SOAPAction left as Axerve's; zeep
    // cannot parse Axerve's answer with that WSDL, so the script reads it raw).
    let guessed = env._dir.path().join("WSs2s-guessed-namespace.wsdl");
    let text = std::fs::read_to_string(&wsdl).unwrap().replace(
        r#"Namespace="https://ecomms2s.sella.it/""#,
        r#"Namespace="http://ecomms2s.sella.it""#,
    );
    let text = text.replace(
        r#"xmlns:tns="https://ecomms2s.sella.it/""#,
        r#"xmlns:tns="http://ecomms2s.sella.it""#,
    );
    std::fs::write(&guessed, text).unwrap();
    let answer = zeep_call_pagam(&env, &guessed, &fields, true);
    assert_eq!(answer["TransactionResult"], "OK", "{answer}");
    let body = env.sandbox.last()["body"].as_str().unwrap().to_string();
    assert!(
        body.contains(r#"xmlns:ns0="http://ecomms2s.sella.it""#),
        "{body}"
    );
    assert!(
        body.contains("<ns0:cardNumber>4111111111111111</ns0:cardNumber>"),
        "{body}"
    );
    assert!(!body.contains("ZEEP_VISA"), "{body}");
    env.stop();
}

/// Issue 15 point 1: clients that write another namespace or prefix (PHP's SoapClient with a
/// guessed `ns1`, a SOAP 1.2 envelope with a default namespace, elements in no namespace) get
/// their token swapped all the same: the sandbox sees the card, never the token.
#[test]
fn axerve_soap_in_another_namespace_is_swapped() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let fields = |p: &str, card: &str| {
        format!(
            "<{p}shopLogin>GESPAY65987</{p}shopLogin><{p}uicCode>242</{p}uicCode><{p}amount>1.00</{p}amount><{p}shopTransactionId>NS-1</{p}shopTransactionId><{p}{card}>{token}</{p}{card}>"
        )
    };
    let bodies = [
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://ecomms2s.sella.it"><SOAP-ENV:Body><ns1:callPagamS2S>{}</ns1:callPagamS2S></SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
            fields("ns1:", "cardNumber")
        ),
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Body><callPagamS2S xmlns="urn:gestpay">{}</callPagamS2S></soap12:Body></soap12:Envelope>"#,
            fields("", "tokenValue")
        ),
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><g:callPagamS2S xmlns:g="https://ecomms2s.sella.it/">{}</g:callPagamS2S></s:Body></s:Envelope>"#,
            fields("", "tokenValue")
        ),
    ];
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", PAGAM_ACTION),
    ];
    for body in &bodies {
        let (s, a) = env.proxy("POST", WSS2S, &h, body);
        assert_eq!(s, StatusCode::OK, "{a}");
        assert!(
            a.contains("<TransactionResult>OK</TransactionResult>"),
            "{body}: {a}"
        );
        let sent = env.sandbox.last()["body"].as_str().unwrap().to_string();
        assert!(!sent.contains(&token), "{sent}");
        let (op, fields) = sent_soap_fields(&env);
        assert_eq!(op, "callPagamS2S");
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            (get("cardNumber"), get("expiryMonth"), get("expiryYear")),
            (Some("4111111111111111"), Some("05"), Some("31")),
            "{sent}"
        );
        assert_eq!(get("tokenValue"), None);
    }
    // The new elements carry the prefix of their siblings.
    let sent = env.sandbox.log()[env.sandbox.log().len() - 3]["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sent.contains(
            "<ns1:cardNumber>4111111111111111</ns1:cardNumber><ns1:expiryMonth>05</ns1:expiryMonth>"
        ),
        "{sent}"
    );
    env.stop();
}

/// Issue 15 point 1: a token of the merchant left where the proxy does not swap (another
/// element, a second card element, another operation) is 422 `token_not_swapped` naming the
/// element, never the value; nothing reaches the gateway, and no card is revealed.
#[test]
fn axerve_soap_token_left_unswapped_is_refused() {
    let env = Env::start(None);
    let token = env.token("4111111111111111", 5, 2031);
    let envelope = |op: &str, inner: &str| {
        format!(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><{op} xmlns="https://ecomms2s.sella.it/"><shopLogin>GESPAY65987</shopLogin><uicCode>242</uicCode><amount>1.00</amount><shopTransactionId>LEFT-1</shopTransactionId>{inner}</{op}></soap:Body></soap:Envelope>"#
        )
    };
    let h = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", PAGAM_ACTION),
    ];
    let before = env.sandbox.log().len();
    for (body, element) in [
        (
            envelope(
                "callPagamS2S",
                &format!("<tokenValue>{token}</tokenValue><customInfo>{token}</customInfo>"),
            ),
            "customInfo",
        ),
        (
            envelope(
                "callPagamS2S",
                &format!(
                    "<cardNumber>4111111111111111</cardNumber><expiryMonth>05</expiryMonth><expiryYear>31</expiryYear><tokenValue> {token} </tokenValue>"
                ),
            ),
            "tokenValue",
        ),
        (
            envelope(
                "callPagamS2S",
                &format!(
                    "<tokenValue>{token}</tokenValue><buyerName><![CDATA[{token}]]></buyerName>"
                ),
            ),
            "buyerName",
        ),
        (
            envelope(
                "callRefundS2S",
                &format!("<cardNumber>{token}</cardNumber>"),
            ),
            "cardNumber",
        ),
    ] {
        let (s, a) = env.proxy("POST", WSS2S, &h, &body);
        assert_eq!(
            refused((s, a.clone())),
            (StatusCode::UNPROCESSABLE_ENTITY, "token_not_swapped".into()),
            "{body}: {a}"
        );
        let detail = answer_json(&a)["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(&format!("`{element}`")), "{detail}");
        assert!(!a.contains(&token), "the value is never echoed: {a}");
    }
    assert_eq!(env.sandbox.log().len(), before, "nothing forwarded");
    // Other values in other elements pass: the shop login, an order id, another merchant's token
    // shape (it reveals no card of this one).
    let body = envelope(
        "callPagamS2S",
        &format!("<tokenValue>{token}</tokenValue><customInfo>OTHRSHOP_9</customInfo>"),
    );
    let (s, a) = env.proxy("POST", WSS2S, &h, &body);
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(env.sandbox.log().len(), before + 1);
    let entries = env.stop();
    // The refusals revealed no card: one reveal, for the charge that went through.
    let reveals = entries
        .iter()
        .filter(|e| e["action"] == "reveal" && e["token"] == json!(token))
        .count();
    assert_eq!(reveals, 1, "{entries:?}");
}

/// Issue 14 item 9: a token-shaped value whose prefix belongs to no merchant is refused exactly
/// like another merchant's token (404 `token_not_found`, nothing forwarded), so the proxy's
/// answers do not tell which prefixes exist; values of no token shape still pass.
#[test]
fn token_shaped_values_are_refused_alike_whatever_their_prefix() {
    let env = Env::start(None);
    let moto = |pan: &str| {
        format!(
            r#"{{"order":{{"orderId":"o9","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{pan}"}}}}"#
        )
    };
    let theirs = env.tokenize(
        &env.other,
        json!({"pan": "378282246310005", "expiry_month": 1, "expiry_year": 2031, "request_token": "SHOP_9"}),
    );
    assert!(theirs.starts_with("OTHR"), "{theirs}");
    let before = env.sandbox.log().len();
    // Another merchant's custom token, the same value under a prefix nobody has, and a
    // standard-shaped token under such a prefix.
    for t in [theirs.as_str(), "ZQZQSHOP_9", "37ZQZQAB12CD0005"] {
        let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(t));
        assert_eq!(
            (s, answer_json(&a)["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("token_not_found")),
            "{t}: {a}"
        );
    }
    assert_eq!(env.sandbox.log().len(), before, "nothing was forwarded");
    // A gateway's own token of no panvault shape is forwarded as sent.
    let theirs_wl = r#"{"cardPaymentMethodSpecificInput":{"token":"zqzq-own-token-1"},"order":{"amountOfMoney":{"amount":100,"currencyCode":"EUR"}}}"#;
    let h = [("Content-Type", "application/json")];
    let (s, a) = env.proxy("POST", "worldline/v2/1234/payments", &h, theirs_wl);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert_eq!(answer_json(&a)["errors"][0]["id"], "UNKNOWN_TOKEN");
    assert_eq!(env.sandbox.last()["body"].as_str().unwrap(), theirs_wl);
    env.stop();
}

/// Issue 14 item 5: proxied charges are rate limited per API key (here `[charge]` 3 at once,
/// refilled far slower than the test runs): the fourth is 429 `rate_limited` with
/// `Retry-After`, before anything is revealed or forwarded; another key is not affected.
#[test]
fn proxied_charges_are_rate_limited_per_key() {
    let env = Env::start_configured(
        None,
        false,
        None,
        "[charge]\nper_second = 0.001\nburst = 3\n",
    );
    let token = env.token("4111111111111111", 12, 2030);
    let body = format!(
        r#"{{"order":{{"orderId":"rl-1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{token}"}}}}"#
    );
    for _ in 0..3 {
        let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &body);
        assert_eq!(s, StatusCode::OK, "{a}");
    }
    let forwarded = env.sandbox.log().len();
    let (s, h, a) = env.proxy_full("POST", "nexi/orders/moto", &nexi_headers(), &body);
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{a}");
    assert_eq!(answer_json(&a)["code"], "rate_limited");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    assert_eq!(env.sandbox.log().len(), forwarded, "nothing was forwarded");
    // Another key of the same shop has its own bucket.
    let mut other_key = bearer(
        env.client
            .post(format!("{}/v1/proxy/nexi/orders/moto", env.base)),
        &env.charge_only,
    )
    .body(body.clone());
    for (k, v) in nexi_headers() {
        other_key = other_key.header(k, v);
    }
    let r = other_key.send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The refused charge revealed nothing: three reveals of the first key, one of the other.
    let audit = env.stop();
    let reveals = audit
        .iter()
        .filter(|e| e["action"] == "reveal" && e["token"] == json!(token))
        .count();
    assert_eq!(reveals, 4);
}

/// A gateway stand-in that echoes the card and CVV it got (Nexi's JSON `card`) back in the
/// encodings a gateway or a WAF page may use: JSON `\u` escapes, percent-encoding, fullwidth and
/// Arabic-Indic digits, NBSP and zero-width-space separators; on a path ending in `html`, an
/// HTML page with the digits split by tags; on one ending in `gzip`, a gzip body without
/// `Content-Encoding`. One request per connection.
fn start_echo_gateway() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    break (i + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
            let pan = body["card"]["pan"].as_str().unwrap_or_default();
            let cvv = body["card"]["cvv"].as_str().unwrap_or_default();
            let (content_type, answer) = if path.ends_with("html") {
                ("text/html", echo_html(pan, cvv).into_bytes())
            } else if path.ends_with("gzip") {
                // Compressed, without saying so: the masker cannot read it.
                (
                    "application/json",
                    vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x33, 0x31],
                )
            } else {
                ("application/json", echo_json(pan, cvv).into_bytes())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 402 Payment Required\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.len()
            );
            let _ = stream.write_all(&answer);
        }
    });
    format!("http://{addr}")
}

/// `s` (digits and `*`) as JSON `\u` escapes.
fn esc(s: &str) -> String {
    s.chars()
        .map(|c| format!("\\u{:04x}", u32::from(c)))
        .collect()
}

/// `s` percent-encoded, every byte.
fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// `s` with its digits in the script whose zero is `zero`.
fn script(zero: u32, s: &str) -> String {
    s.chars()
        .map(|c| {
            c.to_digit(10)
                .map_or(c, |d| char::from_u32(zero + d).unwrap())
        })
        .collect()
}

fn groups(s: &str, sep: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    c.chunks(4)
        .map(|g| g.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(sep)
}

fn echo_json(pan: &str, cvv: &str) -> String {
    let zw: String = pan.chars().flat_map(|c| [c, '\u{200b}']).collect();
    format!(
        r#"{{"escaped":"{}","percent":"{}","fullwidth":"{}","arabic":"{}","nbsp":"{}","zwsp":"{zw}","cvv":"{cvv}","message":"CVV {cvv} refused"}}"#,
        esc(pan),
        pct(pan),
        script(0xFF10, pan),
        script(0x0660, pan),
        groups(pan, "\u{a0}"),
    )
}

fn echo_html(pan: &str, cvv: &str) -> String {
    format!(
        "<!DOCTYPE html><html><body><p>Card <b>{}</b> CVV <b>{cvv}</b></p></body></html>",
        groups(pan, "</b><b>")
    )
}

/// Issue 14 item 5: a gateway that echoes the card in an encoding, and the CVV of the temporary
/// token used, gets both masked in the answer.
#[test]
fn echoed_encoded_card_and_temporary_cvv_are_masked() {
    let echo = start_echo_gateway();
    let env = Env::start_configured(None, false, Some(&echo), "");
    let moto = |t: &str| {
        format!(
            r#"{{"order":{{"orderId":"echo-1","amount":"100","currency":"EUR","customerInfo":{{"cardHolderName":"A"}}}},"card":{{"pan":"{t}"}}}}"#
        )
    };
    let tmp = || {
        env.tokenize(
            &env.shop,
            json!({"pan": "4111111111111111", "expiry_month": 7, "expiry_year": 2033, "temporary": true, "cvv": "987"}),
        )
    };
    let (s, a) = env.proxy("POST", "nexi/orders/moto", &nexi_headers(), &moto(&tmp()));
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{a}");
    let masked = "411111******1111";
    let zw: String = masked.chars().flat_map(|c| [c, '\u{200b}']).collect();
    assert_eq!(
        a,
        format!(
            r#"{{"escaped":"{}","percent":"{}","fullwidth":"{}","arabic":"{}","nbsp":"{}","zwsp":"{zw}","cvv":"***","message":"CVV *** refused"}}"#,
            esc(masked),
            pct(masked),
            script(0xFF10, masked),
            script(0x0660, masked),
            groups(masked, "\u{a0}"),
        )
    );
    let (s, a) = env.proxy("POST", "nexi/orders/html", &nexi_headers(), &moto(&tmp()));
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{a}");
    assert_eq!(
        a,
        "<!DOCTYPE html><html><body><p>Card <b>4111</b><b>11**</b><b>****</b><b>1111</b> CVV <b>***</b></p></body></html>"
    );
    // A body compressed without `Content-Encoding`: refused, not passed on unread.
    let (s, a) = env.proxy("POST", "nexi/orders/gzip", &nexi_headers(), &moto(&tmp()));
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{a}");
    assert_eq!(answer_json(&a)["code"], "gateway_unreachable");
    env.stop();
}
