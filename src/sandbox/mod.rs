//! `panvault sandbox`: loopback simulators of the four gateways the proxy forwards to.
//!
//! Each gateway's simulator serves at the root of a plain-HTTP loopback address of its own
//! ([`Addrs::roots`]), as the gateway does at its host: those are the base URLs to configure, and
//! what a client signs is what the simulator checks (Worldline's v1HMAC covers `/v2/...`, so an
//! unchanged official SDK's signature verifies). One more address ([`Addrs::shared`]) serves
//! every simulator under its own prefix (`/nexi`, `/axerve`, `/worldline`, `/mpgs`), where a
//! Worldline signature covers the path as received (`/worldline/v2/...`), and the request log.
//! Each simulator checks a request the way its gateway does (credentials: MPGS's Basic password,
//! Worldline's signature; field formats, Luhn) and refuses a token or a masked number where a
//! card number belongs, loudly, in that gateway's own error shape; it answers in the gateway's
//! own shapes, with the outcome the published test cards call for ([`card_outcome`]): approval,
//! decline, or a 3-D Secure challenge (Nexi 3steps with the redirect form fields, Worldline
//! `REDIRECT`, Axerve `8006`).
//!
//! Every request that arrives, at any address, is kept in memory, as received, and
//! `GET /__log` on the shared address lists them (`DELETE /__log` empties it): the tests prove
//! from it what reached the gateway and that a refused request reached nothing. That log holds
//! the test cards in clear: it exists only on loopback, only in memory, and the sandbox refuses
//! any other address. A request header `X-Sandbox-Delay-Ms: N` delays the answer by N ms
//! (timeouts). Axerve SOAP takes calls with or without `<apikey>` (the real service may
//! authorize by IP instead).
//!
//! This file holds the server, the request log and the state the simulators share, and the
//! field checks and formats they have in common; each gateway's simulator is a file of its own:
//! `nexi.rs` (XPay JSON and the 3-D Secure ACS page), `axerve.rs` (REST and the SOAP
//! `callPagamS2S`), `worldline.rs` (Direct, with its own `GCS v1HMAC` check), `mpgs.rs`
//! (Mastercard Gateway REST).

// The simulators' checks return the gateway's error answer itself.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

use crate::gateway::Gateway;
use crate::pan::luhn_valid;

mod axerve;
mod mpgs;
mod nexi;
mod worldline;

/// The sandbox's Worldline API key id: a request signed with it and
/// [`WORLDLINE_SECRET_API_KEY`] verifies.
pub const WORLDLINE_API_KEY_ID: &str = "SANDBOXKEYID01";
/// The sandbox's Worldline secret API key, the `GCS v1HMAC` key of [`WORLDLINE_API_KEY_ID`]. A
/// test value, public on purpose: it protects nothing.
pub const WORLDLINE_SECRET_API_KEY: &str = "sandbox-only-secret-api-key-0123456789";
/// The sandbox's MPGS API password: the Basic password (user `merchant.<merchant id>`) the MPGS
/// simulator takes, and the one `demo` configures. A test value, public on purpose.
pub const MPGS_API_PASSWORD: &str = "sandbox-api-password";
/// Header that delays an answer (milliseconds, at most a minute), for timeout tests.
pub const DELAY_HEADER: &str = "x-sandbox-delay-ms";

/// What a published test card does (SPEC.md test-card tables; the suite's four cards too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardOutcome {
    /// The payment is authorized.
    Approve,
    /// The issuer refuses the payment.
    Decline,
    /// The issuer asks for a 3-D Secure challenge before it decides.
    Challenge,
}

/// The outcome of a test card. Gateway-published cards as SPEC.md lists them; the suite's cards:
/// `4111111111111111` and `378282246310005` approve, `4012888888881881` declines,
/// `5555555555554444` asks for a 3-D Secure challenge. Any other valid number approves.
pub fn card_outcome(pan: &str) -> CardOutcome {
    match pan {
        // Decline: the suite's, Nexi's negative cards, Worldline's failed/rejected 3DS cards.
        "4012888888881881" | "4349940199997007" | "5533893874304465" | "4012001775445550"
        | "4012003360932265" => CardOutcome::Decline,
        // Challenge: the suite's, Nexi's 3DS-enrolled Visa, Worldline's 3DS2 Visa.
        "5555555555554444" | "4349940199004549" | "4874970686672022" => CardOutcome::Challenge,
        _ => CardOutcome::Approve,
    }
}

/// Why a value is no card number, for the loud refusal.
fn card_number_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        return Some("is missing");
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            "is not a card number (letters, '*' or 'x' in it: a token or a masked number where the PAN belongs)",
        );
    }
    if !(13..=19).contains(&v.len()) {
        return Some("must be 13 to 19 digits");
    }
    if !luhn_valid(v) {
        return Some("fails the Luhn check");
    }
    None
}

fn two_digits(v: &str) -> bool {
    v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit())
}

fn month_ok(v: &str) -> bool {
    two_digits(v) && matches!(v.parse::<u8>(), Ok(1..=12))
}

fn mmyy_ok(v: &str) -> bool {
    v.len() == 4 && v.is_char_boundary(2) && month_ok(&v[..2]) && two_digits(&v[2..])
}

fn cvv_ok(v: &str) -> bool {
    (3..=4).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
}

/// `411111******1111`, or `411111xxxxxx1111` with `fill` `x` (MPGS).
fn masked(pan: &str, fill: char) -> String {
    let n = pan.len();
    if n < 10 || !pan.is_ascii() {
        return "*".repeat(n);
    }
    format!(
        "{}{}{}",
        &pan[..6],
        fill.to_string().repeat(n - 10),
        &pan[n - 4..]
    )
}

fn last4(pan: &str) -> &str {
    pan.get(pan.len().saturating_sub(4)..).unwrap_or_default()
}

fn circuit(pan: &str) -> &'static str {
    match crate::pan::Brand::detect(pan) {
        crate::pan::Brand::Visa => "VISA",
        crate::pan::Brand::Mastercard => "MC",
        crate::pan::Brand::Amex => "AMEX",
        _ => "OTHER",
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// One request as the sandbox received it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// The gateway whose prefix the request came under (`nexi`, `axerve`, ...).
    pub gateway: String,
    /// The HTTP method.
    pub method: String,
    /// Path below the gateway's prefix, with the query.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body as received (lossy UTF-8); it may hold test card numbers in clear.
    pub body: String,
}

/// The sandbox's state: the request log and what the simulators remember.
#[derive(Default)]
pub struct Sandbox {
    log: Mutex<Vec<Entry>>,
    seq: AtomicU64,
    /// Worldline payments by id (status, body) for `GET .../payments/{id}`.
    payments: Mutex<HashMap<String, Value>>,
    /// MPGS transactions by URL path.
    transactions: Mutex<HashMap<String, Value>>,
}

impl Sandbox {
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn record(&self, e: Entry) {
        crate::sync::lock(&self.log).push(e);
    }

    /// A copy of the request log.
    pub fn entries(&self) -> Vec<Entry> {
        crate::sync::lock(&self.log).clone()
    }
}

/// What a simulator gets: method, path below its root (no query), headers, body.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    /// The simulator's base URL as this request reached it: `http://{Host}` at its own root,
    /// `http://{Host}/{gateway}` on the shared address.
    base: String,
    headers: &'a BTreeMap<String, String>,
    body: &'a [u8],
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(self.body).ok()
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Which gateway's root each of the sandbox's own addresses is.
struct Roots(Vec<(SocketAddr, Gateway)>);

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    sb: web::Data<Sandbox>,
    roots: web::Data<Roots>,
) -> HttpResponse {
    let full = req.path().to_string();
    let local = req.app_config().local_addr();
    let root = roots.0.iter().find(|(a, _)| *a == local).map(|(_, g)| *g);
    if let Some(gateway) = root {
        let rest = full.strip_prefix('/').unwrap_or(&full).to_string();
        return simulate(&req, &body, &sb, gateway, "", &full, &rest).await;
    }
    if full == "/__log" {
        return match *req.method() {
            actix_web::http::Method::GET => HttpResponse::Ok().json(sb.entries()),
            actix_web::http::Method::DELETE => {
                crate::sync::lock(&sb.log).clear();
                HttpResponse::NoContent().finish()
            }
            _ => HttpResponse::MethodNotAllowed().finish(),
        };
    }
    let trimmed = full.trim_start_matches('/');
    let (prefix, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let Some(gateway) = Gateway::parse(prefix) else {
        return HttpResponse::NotFound().finish();
    };
    let mount = format!("/{prefix}");
    simulate(&req, &body, &sb, gateway, &mount, &full, rest).await
}

/// One request to `gateway`'s simulator, mounted at `mount` (`""` at its own root): `full` is
/// the path as received, `rest` the part below the mount without its leading `/`.
async fn simulate(
    req: &HttpRequest,
    body: &[u8],
    sb: &Sandbox,
    gateway: Gateway,
    mount: &str,
    full: &str,
    rest: &str,
) -> HttpResponse {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query = req.query_string();
    sb.record(Entry {
        seq: sb.next(),
        gateway: gateway.name().to_string(),
        method: req.method().to_string(),
        path: if query.is_empty() {
            format!("/{rest}")
        } else {
            format!("/{rest}?{query}")
        },
        headers: headers.clone(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
    if let Some(ms) = headers
        .get(DELAY_HEADER)
        .and_then(|v| v.parse::<u64>().ok())
    {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let r = Req {
        method: req.method().as_str(),
        path: rest,
        base: format!("http://{}{mount}", req.connection_info().host()),
        headers: &headers,
        body,
    };
    match gateway {
        Gateway::Nexi => nexi::simulate(&r),
        Gateway::Axerve => axerve::simulate(&r),
        Gateway::Worldline => worldline::simulate(&r, full, query, sb),
        Gateway::Mpgs => mpgs::simulate(&r, sb),
    }
}

/// `s` escaped for XML and HTML text and attribute values.
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Where the sandbox listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// Every simulator under its own prefix (`/nexi`, `/axerve`, `/worldline`, `/mpgs`), and
    /// the request log (`/__log`).
    pub shared: SocketAddr,
    /// Each gateway's simulator at the root of an address of its own, in [`Gateway::ALL`]'s
    /// order.
    pub roots: [SocketAddr; 4],
}

impl Addrs {
    /// The address where `g`'s simulator serves at its root.
    pub fn root(&self, g: Gateway) -> SocketAddr {
        let i = Gateway::ALL
            .iter()
            .position(|x| *x == g)
            .unwrap_or_default();
        self.roots[i]
    }

    /// The base URL to configure for `g`: its simulator's own root, `http://{addr}`.
    pub fn base_url(&self, g: Gateway) -> String {
        format!("http://{}", self.root(g))
    }
}

/// Runs the sandbox (loopback only) until SIGINT/SIGTERM: the shared address on `listen`, each
/// gateway's own root on the next ports in [`Gateway::ALL`]'s order (nexi `listen`+1 ... mpgs
/// `listen`+4; with port 0, free ports all); `on_ready` gets the bound addresses.
pub async fn run(listen: SocketAddr, on_ready: impl FnOnce(Addrs)) -> std::io::Result<()> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the sandbox listens on loopback only, not {listen}"),
        ));
    }
    let at = |offset: u16| -> std::io::Result<std::net::TcpListener> {
        let port = match listen.port() {
            0 => Some(0),
            p => p.checked_add(offset),
        };
        let port = port.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the sandbox needs the four ports after {listen}"),
            )
        })?;
        std::net::TcpListener::bind(SocketAddr::new(listen.ip(), port))
    };
    let shared = at(0)?;
    let listeners = [at(1)?, at(2)?, at(3)?, at(4)?];
    let mut roots = [listen; 4];
    for (r, l) in roots.iter_mut().zip(&listeners) {
        *r = l.local_addr()?;
    }
    let addrs = Addrs {
        shared: shared.local_addr()?,
        roots,
    };
    let state = web::Data::new(Sandbox::default());
    let mounted = web::Data::new(Roots(roots.into_iter().zip(Gateway::ALL).collect()));
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(mounted.clone())
            .app_data(web::PayloadConfig::new(1024 * 1024))
            .default_service(web::to(handle))
    })
    .workers(2)
    .shutdown_timeout(1)
    .listen(shared)?;
    for l in listeners {
        server = server.listen(l)?;
    }
    tracing::info!("sandbox listening on http://{}", addrs.shared);
    on_ready(addrs);
    server.run().await
}

/// Starts the sandbox on free loopback ports in a thread of its own (for `demo`); its addresses.
pub fn start_in_background() -> crate::Result<Addrs> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gateway-sandbox".into())
        .spawn(move || {
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let result = actix_web::rt::System::new().block_on(run(listen, |addr| {
                let _ = tx.send(addr);
            }));
            if let Err(e) = result {
                tracing::error!(error = %e, "the gateway sandbox stopped");
            }
        })
        .map_err(|e| crate::Error::io("starting the gateway sandbox", e))?;
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .map_err(|_| crate::Error::Config("the gateway sandbox did not start".into()))
}

/// Every gateway pointed at its simulator's own root in the sandbox at `addrs`, with the
/// sandbox's credentials configured in panvault (so merchant requests need none): what `demo`
/// runs with.
pub fn demo_gateways(addrs: Addrs) -> crate::gateway::proxy::GatewaysConfig {
    use crate::crypto::SecretString;
    use crate::gateway::proxy::GatewayConfig;
    let at = |g: Gateway| GatewayConfig {
        base_url: Some(addrs.base_url(g)),
        ..GatewayConfig::default()
    };
    crate::gateway::proxy::GatewaysConfig {
        nexi: Some(GatewayConfig {
            api_key: Some(SecretString::new("sandbox-terminal-key".into())),
            ..at(Gateway::Nexi)
        }),
        axerve: Some(GatewayConfig {
            api_key: Some(SecretString::new("sandbox-api-key".into())),
            ..at(Gateway::Axerve)
        }),
        worldline: Some(GatewayConfig {
            api_key_id: Some(WORLDLINE_API_KEY_ID.into()),
            secret_api_key: Some(SecretString::new(WORLDLINE_SECRET_API_KEY.into())),
            ..at(Gateway::Worldline)
        }),
        mpgs: Some(GatewayConfig {
            api_password: Some(SecretString::new(MPGS_API_PASSWORD.into())),
            ..at(Gateway::Mpgs)
        }),
    }
}

/// The demo's gateway lines: a custom token, then a Nexi MOTO charge with it through the proxy.
pub fn print_demo_lines(curl: &str, shop: &str, base: &str, prefix: &str, sandbox: Addrs) {
    println!(
        "# through the gateway sandbox (request log at http://{}/__log):",
        sandbox.shared
    );
    println!("# a token for a test card, then a Nexi MOTO charge that carries the token");
    println!(
        "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"pan\":\"378282246310005\",\"expiry_month\":12,\"expiry_year\":2030,\"request_token\":\"DEMO_AMEX_0005\"}}' {base}/v1/tokens"
    );
    println!(
        "{curl} -H 'Authorization: Bearer {shop}' -H 'Content-Type: application/json' -d '{{\"order\":{{\"orderId\":\"demo-0001\",\"amount\":\"1000\",\"currency\":\"EUR\",\"customerInfo\":{{\"cardHolderName\":\"John Smith\"}}}},\"card\":{{\"pan\":\"{prefix}DEMO_AMEX_0005\"}},\"captureType\":\"EXPLICIT\"}}' {base}/v1/proxy/nexi/orders/moto"
    );
}
