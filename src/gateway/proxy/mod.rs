//! `ANY /v1/proxy/{gateway}/{path}` (scope `charge`, contract 6): the merchant's own gateway
//! request, with a panvault token where the card goes, forwarded to that gateway's configured base
//! URL with the card swapped in; the gateway's answer comes back with every card number masked.
//!
//! - No open relay: the target is `{base_url}/{path}?{query}`, the host never comes from the
//!   request, `.` / `..` segments (also percent-encoded), encoded slashes and absolute URLs are
//!   refused with 400 before anything is read or forwarded, redirects are never followed.
//! - `https://` base URLs only, except `http://` to a loopback address (sandbox, tests).
//! - Credentials: panvault's key is `Authorization: Bearer pvk_...`; a merchant whose gateway
//!   itself uses `Authorization` (MPGS Basic, Worldline GCS) sends panvault's key as
//!   `X-Panvault-Authorization: Bearer ...` and its `Authorization` goes to the gateway. Gateway
//!   credentials configured in panvault are added when the merchant sent none (Worldline requests
//!   are then signed with v1HMAC after the swap).
//! - A token of another merchant group, a deleted or expired temporary token: 404
//!   `token_not_found`, nothing forwarded. Unreachable gateway: 502 `gateway_unreachable`; no
//!   answer within the gateway's timeout: 504 `gateway_timeout`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use zeroize::Zeroizing;

use super::{CardData, Gateway, mask, nexi, worldline};
use crate::Error;
use crate::access::Scope;
use crate::crypto::SecretString;
use crate::http::{Problem, Unsealed, principal_from, request_ctx};
use crate::vault::Vault;

/// Largest request body the proxy forwards, and largest answer it reads.
pub const REQUEST_LIMIT: usize = 64 * 1024;
pub const ANSWER_LIMIT: usize = 1024 * 1024;
/// Default per-gateway timeout (contract 6).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Asks for a token of the raw card on a proxied charge (contract 6).
pub const REQUEST_TOKEN_HEADER: &str = "x-panvault-request-token";
/// Header carrying panvault's own key when `Authorization` belongs to the gateway.
pub const PANVAULT_AUTH_HEADER: &str = "x-panvault-authorization";

/// `[gateways.<name>]` in the configuration file. Every key is optional. The secrets
/// (`api_key`, `secret_api_key`, `api_password`) are [`SecretString`]s: zeroized on drop, `Debug`
/// prints `[REDACTED]`. Each may instead be read from a file (`api_key_file`, ...: its first line)
/// when the proxy starts ([`Proxy::new`]); giving both forms of one is refused.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway is (default: its public test environment; env `PANVAULT_GATEWAY_*_URL`).
    pub base_url: Option<String>,
    /// Seconds to wait for the gateway's answer (default 30).
    pub timeout_seconds: Option<f64>,
    /// Nexi `X-Api-Key`, or Axerve REST `Authorization: apikey ...`, when the merchant sends none.
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    /// Worldline API key id (an identifier: it travels in clear in every `Authorization` header)
    /// and secret: panvault signs with v1HMAC when the merchant did not.
    pub api_key_id: Option<String>,
    pub secret_api_key: Option<SecretString>,
    pub secret_api_key_file: Option<PathBuf>,
    /// MPGS API password: Basic `merchant.<merchantId from the path>:<password>`.
    pub api_password: Option<SecretString>,
    pub api_password_file: Option<PathBuf>,
    /// The merchant groups (`mer_...`) whose shops may use the gateway-wide credentials above.
    /// Unset, every group's may (one merchant per vault). A shop of another group gets only its
    /// own `shops` entry, or nothing: panvault then adds no credential and the merchant's own
    /// headers, if any, pass as sent.
    pub merchants: Option<Vec<String>>,
    /// Credentials per shop login (`[gateways.<name>.shops."<shop login>"]`), used for the
    /// requests of that shop's keys instead of the ones above, so the merchant stack never holds
    /// them (contract 6).
    pub shops: Option<BTreeMap<String, ShopCredentials>>,
}

/// One shop login's credentials at a gateway (same meaning as in [`GatewayConfig`]).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopCredentials {
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    pub api_key_id: Option<String>,
    pub secret_api_key: Option<SecretString>,
    pub secret_api_key_file: Option<PathBuf>,
    pub api_password: Option<SecretString>,
    pub api_password_file: Option<PathBuf>,
}

/// The credentials panvault adds for one request (borrowed: no copy of a secret).
#[derive(Clone, Copy, Default)]
struct Creds<'a> {
    api_key: Option<&'a str>,
    api_key_id: Option<&'a str>,
    secret_api_key: Option<&'a str>,
    api_password: Option<&'a str>,
}

/// One secret read from its `*_file`: the first line, without its newline (as the passphrase
/// file). The file must be owner-only when it is a regular file (as key files); a pipe such as
/// `/dev/fd/3` is read as is. Errors name the configuration key.
fn read_credential_file(key: &str, path: &Path) -> Result<SecretString, Error> {
    let bad = |why: String| Error::Config(format!("{key} {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "has mode {mode:04o}, open to group or others; it must be 0600 or 0400 \
                 (chmod 0600 {})",
                path.display()
            )));
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        return Err(bad("its first line is empty".into()));
    }
    Ok(SecretString::new(first.to_string()))
}

/// Fills `value` from `file` (then cleared); both given is refused, naming `key` and `key_file`.
fn resolve_secret(
    prefix: &str,
    name: &str,
    value: &mut Option<SecretString>,
    file: &mut Option<PathBuf>,
) -> Result<(), Error> {
    let Some(path) = file.take() else {
        return Ok(());
    };
    if value.is_some() {
        return Err(Error::Config(format!(
            "{prefix}.{name} and {prefix}.{name}_file are both given: keep one"
        )));
    }
    *value = Some(read_credential_file(
        &format!("{prefix}.{name}_file"),
        &path,
    )?);
    Ok(())
}

impl ShopCredentials {
    fn resolve(&mut self, prefix: &str) -> Result<(), Error> {
        resolve_secret(prefix, "api_key", &mut self.api_key, &mut self.api_key_file)?;
        resolve_secret(
            prefix,
            "secret_api_key",
            &mut self.secret_api_key,
            &mut self.secret_api_key_file,
        )?;
        resolve_secret(
            prefix,
            "api_password",
            &mut self.api_password,
            &mut self.api_password_file,
        )
    }
}

impl GatewayConfig {
    /// The shop login's own credentials if configured, else the gateway's (when `merchant` may
    /// use them), else none.
    fn creds(&self, shop: Option<&str>, merchant: Option<&str>) -> Creds<'_> {
        if let Some(c) = shop.and_then(|s| self.shops.as_ref()?.get(s)) {
            return Creds {
                api_key: c.api_key.as_ref().map(SecretString::expose),
                api_key_id: c.api_key_id.as_deref(),
                secret_api_key: c.secret_api_key.as_ref().map(SecretString::expose),
                api_password: c.api_password.as_ref().map(SecretString::expose),
            };
        }
        if let Some(allowed) = &self.merchants
            && !merchant.is_some_and(|m| allowed.iter().any(|a| a == m))
        {
            return Creds::default();
        }
        Creds {
            api_key: self.api_key.as_ref().map(SecretString::expose),
            api_key_id: self.api_key_id.as_deref(),
            secret_api_key: self.secret_api_key.as_ref().map(SecretString::expose),
            api_password: self.api_password.as_ref().map(SecretString::expose),
        }
    }

    /// Reads every `*_file` credential (the gateway's and each shop's) into its value.
    fn resolve_files(&mut self, g: Gateway) -> Result<(), Error> {
        let prefix = format!("gateways.{}", g.name());
        resolve_secret(
            &prefix,
            "api_key",
            &mut self.api_key,
            &mut self.api_key_file,
        )?;
        resolve_secret(
            &prefix,
            "secret_api_key",
            &mut self.secret_api_key,
            &mut self.secret_api_key_file,
        )?;
        resolve_secret(
            &prefix,
            "api_password",
            &mut self.api_password,
            &mut self.api_password_file,
        )?;
        for (login, shop) in self.shops.iter_mut().flatten() {
            shop.resolve(&format!("{prefix}.shops.{login}"))?;
        }
        Ok(())
    }
}

/// `[gateways]`: one optional table per gateway.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaysConfig {
    pub nexi: Option<GatewayConfig>,
    pub axerve: Option<GatewayConfig>,
    pub worldline: Option<GatewayConfig>,
    pub mpgs: Option<GatewayConfig>,
}

impl GatewaysConfig {
    fn get(&self, g: Gateway) -> Option<&GatewayConfig> {
        match g {
            Gateway::Nexi => self.nexi.as_ref(),
            Gateway::Axerve => self.axerve.as_ref(),
            Gateway::Worldline => self.worldline.as_ref(),
            Gateway::Mpgs => self.mpgs.as_ref(),
        }
    }
}

/// One gateway as the proxy uses it.
struct Target {
    base: reqwest::Url,
    timeout: Duration,
    cfg: GatewayConfig,
}

/// The proxy: a pooled HTTPS client and where each gateway is.
pub struct Proxy {
    client: reqwest::Client,
    targets: HashMap<Gateway, Target>,
}

/// Checks a base URL: https, or http to a loopback address; no query, fragment or credentials.
pub fn check_base_url(g: Gateway, raw: &str) -> Result<reqwest::Url, Error> {
    let bad = |why: &str| Error::Config(format!("gateway {} base_url {raw:?}: {why}", g.name()));
    let url = reqwest::Url::parse(raw.trim_end_matches('/')).map_err(|_| bad("not a URL"))?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad("no query, fragment or credentials allowed"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(bad("http:// only to a loopback address; use https://")),
        _ => Err(bad("https:// only")),
    }
}

impl Proxy {
    /// The proxy for `cfg`, the environment (`PANVAULT_GATEWAY_*_URL` override `base_url`) and
    /// the defaults.
    pub fn new(cfg: &GatewaysConfig, env: impl Fn(&str) -> Option<String>) -> Result<Proxy, Error> {
        let mut targets = HashMap::new();
        for g in Gateway::ALL {
            let mut c = cfg.get(g).cloned().unwrap_or_default();
            c.resolve_files(g)?;
            let raw = env(g.url_env())
                .filter(|v| !v.is_empty())
                .or_else(|| c.base_url.clone())
                .unwrap_or_else(|| g.default_base_url().to_string());
            let base = check_base_url(g, &raw)?;
            let timeout = match c.timeout_seconds {
                None => DEFAULT_TIMEOUT,
                Some(s) if s > 0.0 && s <= 600.0 => Duration::from_secs_f64(s),
                Some(_) => {
                    return Err(Error::Config(format!(
                        "gateways.{}.timeout_seconds must be > 0 and <= 600",
                        g.name()
                    )));
                }
            };
            let shops_unpaired = c
                .shops
                .iter()
                .flatten()
                .any(|(_, s)| s.api_key_id.is_some() != s.secret_api_key.is_some());
            if c.api_key_id.is_some() != c.secret_api_key.is_some() || shops_unpaired {
                return Err(Error::Config(format!(
                    "gateways.{}: api_key_id and secret_api_key go together",
                    g.name()
                )));
            }
            targets.insert(
                g,
                Target {
                    base,
                    timeout,
                    cfg: c,
                },
            );
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("gateway HTTP client: {e}")))?;
        Ok(Proxy { client, targets })
    }

    /// The base URL in use for `g`.
    pub fn base_url(&self, g: Gateway) -> Option<&str> {
        self.targets.get(&g).map(|t| t.base.as_str())
    }
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(status, code, detail)
}

/// The part of the raw request path after `/v1/proxy/{gateway}/`, checked: no `.` or `..`
/// segment (also percent-encoded), no encoded `/` or `\`, no backslash, no absolute URL.
pub fn checked_path(raw_tail: &str) -> Result<&str, &'static str> {
    let lower = raw_tail.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || raw_tail.contains('\\') {
        return Err("encoded slashes and backslashes are refused in the gateway path");
    }
    // `;` (path parameters: Java servers read `..;` as `..`), double encoding and NUL.
    if raw_tail.contains(';') || lower.contains("%25") || lower.contains("%00") {
        return Err("`;`, `%25` and `%00` are refused in the gateway path");
    }
    if raw_tail.starts_with('/') || lower.contains("://") || lower.contains("%3a%2f") {
        return Err("the gateway path must be relative to the gateway's base URL");
    }
    let decoded = percent_decode(raw_tail);
    if decoded.contains("://") || decoded.starts_with('/') {
        return Err("the gateway path must be relative to the gateway's base URL");
    }
    if decoded.split('/').any(|s| s == "." || s == "..") {
        return Err("`.` and `..` are refused in the gateway path");
    }
    if raw_tail
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#')
    {
        return Err("the gateway path holds characters a URL path cannot");
    }
    Ok(raw_tail)
}

/// `%XX` escapes decoded (invalid ones kept as they are), for the checks only.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `{base}/{path}?{query}`, checked to stay under the base URL.
fn target_url(base: &reqwest::Url, path: &str, query: &str) -> Option<reqwest::Url> {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push('/');
    s.push_str(path);
    if !query.is_empty() {
        s.push('?');
        s.push_str(query);
    }
    let url = reqwest::Url::parse(&s).ok()?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    (same_origin && url.path().starts_with(base.path().trim_end_matches('/'))).then_some(url)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    // The answer is read and masked: it must come uncompressed.
    "accept-encoding",
    "x-request-id",
];

/// Whether `v` stands for a panvault token: `tmp_...`, or a standard (`NN` + prefix + 6 + 4
/// digits) or custom token whose merchant prefix exists. A gateway's own token that happens to
/// have a registered prefix there is taken for panvault's (documented).
fn is_panvault_token(vault: &Vault, v: &str) -> bool {
    if v.starts_with(crate::token::TEMPORARY_PREFIX) {
        return true;
    }
    if !crate::token::is_well_formed_token(v) {
        return false;
    }
    let b = v.as_bytes();
    let standard = (b.len() == crate::token::MASKED_TOKEN_LEN
        && b[..2].iter().all(u8::is_ascii_digit)
        && b[12..].iter().all(u8::is_ascii_digit))
    .then(|| v.get(2..6))
    .flatten();
    [standard, v.get(..4)]
        .into_iter()
        .flatten()
        .filter(|p| p.bytes().all(|c| c.is_ascii_uppercase()))
        .any(|p| vault.merchant_by_prefix(p).ok().flatten().is_some())
}

async fn read_body(mut payload: web::Payload) -> Result<Zeroizing<Vec<u8>>, Problem> {
    use futures_util::StreamExt;
    let mut body = Zeroizing::new(Vec::with_capacity(4096));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            problem(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "the body could not be read",
            )
        })?;
        if body.len() + chunk.len() > REQUEST_LIMIT {
            return Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("proxied bodies are limited to {REQUEST_LIMIT} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `ANY /v1/proxy/{gateway}/{path}`.
pub(crate) async fn handle(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    // Nothing goes back to the merchant before the audit entry of a revealed card's use is on
    // disk (contract 7): not the gateway's answer, and not a refusal made after the reveal (a
    // swap error, a temporary token another charge used up first).
    let mut durable = None;
    let answer = charge(req, vault, payload, &mut durable).await;
    if let Some(d) = durable {
        wait_durable(d).await;
    }
    answer
}

/// Waits for the card use's audit entry. If that sync failed the gateway may still have acted
/// on the charge, so its answer goes back (a retry could charge twice); the store refuses
/// every later write and `/readyz` fails.
async fn wait_durable(d: crate::vault::Durable) {
    if let Err(e) = d.wait().await {
        tracing::error!(
            code = e.code(),
            "the audit entry of a charge's card use did not become durable"
        );
    }
}

/// [`handle`], with the pending sync of the card's use left in `durable` for its caller.
async fn charge(
    req: HttpRequest,
    vault: Vault,
    payload: web::Payload,
    durable: &mut Option<crate::vault::Durable>,
) -> Result<HttpResponse, Problem> {
    // panvault's key: X-Panvault-Authorization, else Authorization.
    let own_header = req.headers().contains_key(PANVAULT_AUTH_HEADER);
    let key_header = if own_header {
        PANVAULT_AUTH_HEADER
    } else {
        "authorization"
    };
    let raw_key = req
        .headers()
        .get(key_header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let raw_key = Zeroizing::new(raw_key);
    let p = principal_from(&req, &vault, Scope::Charge, &raw_key).await?;
    let merchant = p.merchant()?.to_string();
    let ctx = request_ctx(&req, Some(&p));

    let name = req.match_info().get("gateway").unwrap_or_default();
    let gateway = Gateway::parse(name).ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "unknown_gateway",
            "gateway must be nexi, axerve, worldline or mpgs",
        )
    })?;
    let prefix = format!("/v1/proxy/{}/", gateway.name());
    let raw_path = req.uri().path();
    // The raw path must spell the gateway as routed: `/v1/proxy/%6eexi/...` would leave no tail.
    let tail = raw_path.strip_prefix(&prefix).ok_or_else(|| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the gateway name must be written plainly in the path",
        )
    })?;
    let path =
        checked_path(tail).map_err(|why| problem(StatusCode::BAD_REQUEST, "invalid_path", why))?;
    let proxy = req.app_data::<web::Data<Proxy>>().cloned().ok_or_else(|| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy_unavailable",
            "the gateway proxy is not configured",
        )
    })?;
    let target = proxy.targets.get(&gateway).ok_or_else(|| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy_unavailable",
            "the gateway is not configured",
        )
    })?;
    let url = target_url(&target.base, path, req.query_string()).ok_or_else(|| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the gateway path does not stay under the gateway's base URL",
        )
    })?;

    // `X-Panvault-Request-Token`: tokenize the raw card of this charge (checked before anything
    // is forwarded).
    let request_token = match req.headers().get(REQUEST_TOKEN_HEADER) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| {
                    Problem::from(Error::InvalidCustomToken {
                        reason: "must be ASCII",
                    })
                })?
                .to_string();
            let parsed = crate::token::TokenRequest::parse(Some(&v))?;
            Some((v, parsed.forced))
        }
    };
    // Only the methods the gateways' APIs use (TRACE would echo the credentials added below).
    if !matches!(
        *req.method(),
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Err(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the gateway proxy takes GET, POST, PUT, PATCH and DELETE",
        ));
    }
    let body = read_body(payload).await?;
    // A JSON body with a duplicate key anywhere is refused: the gateway's parser might read the
    // other value than the one checked here.
    if let Ok(text) = std::str::from_utf8(&body)
        && matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['))
    {
        super::json::unique_keys(text)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    }
    let found = gateway.find_card(&body).map_err(|e| {
        let status = if e.code() == "malformed_request" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        problem(status, e.code(), e.to_string())
    })?;
    // Card numbers to mask in the answer whatever the gateway does with them.
    let mut known: Vec<Zeroizing<String>> = Vec::new();
    let mut out_body = body.clone();
    let mut to_tokenize: Option<crate::vault::TokenizeRequest> = None;
    // An agreement a cardholder-initiated charge establishes on its token, once approved.
    let mut to_record: Option<(String, crate::vault::Agreement)> = None;
    let mut consume_temporary: Option<Zeroizing<String>> = None;
    // The agreement a raw card's charge establishes, for the token asked for with it.
    let mut new_token_agreement: Option<crate::vault::Agreement> = None;
    // The panvault token this charge uses, for its audit entry (never a raw card).
    let mut charged: Option<Zeroizing<String>> = None;
    if let Some(found) = found {
        // May be a raw card (request-token flow): zeroized like the body it came from.
        let value = Zeroizing::new(found.value.trim().to_string());
        if is_panvault_token(&vault, &value) {
            charged = Some(value.clone());
            let temporary = value.starts_with(crate::token::TEMPORARY_PREFIX);
            // Stored credentials (seed 004): checked before the card is even revealed.
            let stored = match stored_credential_check(&vault, &merchant, &value, gateway, &body) {
                Ok(st) => st,
                Err(p) => {
                    vault
                        .audit_charge(
                            &ctx,
                            &merchant,
                            Some(&value),
                            "refused",
                            gateway.name().to_string(),
                        )
                        .await;
                    return Err(p);
                }
            };
            if request_token.is_some() {
                return Err(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "X-Panvault-Request-Token needs a card number where the gateway takes one, not a token",
                ));
            }
            let (card, use_audited) = vault.reveal_for_charge(&ctx, &merchant, &value).await?;
            // The card's use, audited: written before the card leaves, synced while it travels.
            *durable = Some(use_audited);
            // A temporary token serves exactly one charge: its CVV comes out with it, and it is
            // gone once every local check has passed (just before the request leaves).
            let cvv = if temporary {
                consume_temporary = Some(value.clone());
                vault.peek_temporary_cvv(&merchant, &value)?
            } else {
                None
            };
            let data = CardData {
                pan: card.pan.digits(),
                month: card.expiry.month,
                year: card.expiry.year,
                cvv: cvv.as_ref().map(|c| c.digits()),
            };
            out_body = gateway
                .swap(&body, found.slot, &data)
                .map_err(|e| problem(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()))?;
            known.push(Zeroizing::new(card.pan.digits().to_string()));
            // Only MPGS has `storedOnFile` (`fill_stored_on_file` is `None` elsewhere).
            if let Some(v) = stored.fill_stored_on_file {
                out_body = super::mpgs::set_stored_on_file(&out_body, v).map_err(|e| {
                    problem(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
                })?;
            }
            if !temporary {
                to_record = stored.record.map(|a| (value.to_string(), a));
            }
        } else if found.slot == super::Slot::Number && value.bytes().all(|b| b.is_ascii_digit()) {
            // A raw card where the card number goes (a gateway's own token in its token field is
            // neither masked nor tokenized).
            known.push(value.clone());
            if let Some((rt, _)) = &request_token {
                crate::pan::Pan::parse(&value)?;
                let (month, year) = gateway.find_expiry(&body).ok_or(Error::InvalidExpiry {
                    reason: "the request carries no expiry in the gateway's format",
                })?;
                to_tokenize = Some(crate::vault::TokenizeRequest {
                    pan: value.clone(),
                    expiry_month: i64::from(month),
                    expiry_year: i64::from(year),
                    request_token: Some(rt.clone()),
                    ..Default::default()
                });
                // A cardholder-initiated charge that stores the card under an agreement (seed
                // 004, first storing use): the agreement goes on the new token once approved,
                // and MPGS `storedOnFile` is TO_BE_STORED when the merchant left it out.
                let sc = gateway.stored_credential(&body).map_err(|e| {
                    problem(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
                })?;
                if let (Some((id, kind)), false) = (sc.agreement, sc.merchant_initiated) {
                    if sc.stored_on_file == Some(false) {
                        out_body = super::mpgs::set_stored_on_file(&out_body, "TO_BE_STORED")
                            .map_err(|e| {
                                problem(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
                            })?;
                    }
                    new_token_agreement = Some(crate::vault::Agreement { id, kind });
                }
            }
        }
    }
    if request_token.is_some() && to_tokenize.is_none() {
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "X-Panvault-Request-Token needs a card number where the gateway takes one",
        ));
    }
    drop(body);
    let creds = target
        .cfg
        .creds(p.shop_login.as_deref(), p.merchant_id.as_deref());
    // Axerve SOAP takes its apikey in the body.
    if gateway == Gateway::Axerve
        && let Some(k) = creds.api_key
        && let Some(with_key) = super::axerve::add_apikey(&out_body, k)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?
    {
        out_body = with_key;
    }

    // Headers: the merchant's, minus panvault's own and hop-by-hop ones.
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| {
        problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "unsupported method",
        )
    })?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers() {
        let n = k.as_str();
        if HOP_BY_HOP.contains(&n)
            || n.starts_with("x-panvault-")
            || (n == "authorization"
                && (!own_header || v.as_bytes().windows(4).any(|w| w == b"pvk_")))
        {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            headers.append(k, v);
        }
    }
    add_gateway_headers(gateway, creds, &method, &url, &mut headers);
    // The last local step: a temporary token is used up now (a concurrent charge that took it
    // first wins; this one then forwards nothing).
    if let Some(t) = &consume_temporary {
        vault.take_temporary(&merchant, t)?;
    }

    let mut request = proxy
        .client
        .request(method, url)
        .headers(headers)
        .timeout(target.timeout);
    // No body, no Content-Length: 0 (a GET stays a plain GET).
    if !out_body.is_empty() {
        // Handed over, not copied: the buffer (card, CVV) is wiped when the client drops it.
        request = request.body(bytes::Bytes::from_owner(out_body));
    }
    let received: Result<_, Problem> = async {
        let mut answer = request
            .send()
            .await
            .map_err(|e| transport_problem(gateway, &e, target.timeout))?;
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        // The gateway's answer may echo a card before it is masked.
        let mut bytes = Zeroizing::new(Vec::new());
        while let Some(c) = answer
            .chunk()
            .await
            .map_err(|e| transport_problem(gateway, &e, target.timeout))?
        {
            if bytes.len() + c.len() > ANSWER_LIMIT {
                return Err(problem(
                    StatusCode::BAD_GATEWAY,
                    "gateway_unreachable",
                    "the gateway's answer is too large",
                ));
            }
            bytes.extend_from_slice(&c);
        }
        Ok((status, headers, bytes))
    }
    .await;
    // The card's use is on disk before the outcome's entry and before anything goes back.
    if let Some(d) = durable.take() {
        wait_durable(d).await;
    }
    let (status, answer_headers, bytes) = match received {
        Ok(r) => r,
        Err(p) => {
            vault
                .audit_charge(
                    &ctx,
                    &merchant,
                    charged.as_deref().map(|t| t.as_str()),
                    "failed",
                    format!("{}: {}", gateway.name(), p.code()),
                )
                .await;
            return Err(p);
        }
    };
    // The charge's outcome, audited (the card's use was audited as a reveal before it left,
    // and is durable by now).
    let outcome = match gateway.outcome(status, &bytes) {
        super::Outcome::Approved => "approved",
        super::Outcome::Declined => "declined",
        super::Outcome::Challenge => "challenge",
        super::Outcome::Other => "other",
    };
    vault
        .audit_charge(
            &ctx,
            &merchant,
            charged.as_deref().map(|t| t.as_str()),
            outcome,
            format!("{}: HTTP {status}", gateway.name()),
        )
        .await;
    // An answer whose card numbers the masker cannot see is not passed on: a compressed body,
    // or digits written as character references.
    let encoded = answer_headers
        .get("content-encoding")
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded || mask::opaque_digits(&bytes) {
        return Err(problem(
            StatusCode::BAD_GATEWAY,
            "gateway_unreachable",
            "the gateway's answer is encoded in a way the proxy cannot check for card numbers",
        ));
    }
    let known_refs: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
    let masked = mask::mask_pans(&bytes, &known_refs).into_owned();
    let mut r =
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in &answer_headers {
        let n = k.as_str();
        // panvault's own answer headers never come from the gateway.
        if HOP_BY_HOP.contains(&n) || n == "content-encoding" || n.starts_with("x-panvault-") {
            continue;
        }
        let v = mask::mask_pans(v.as_bytes(), &known_refs);
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(&v),
        ) {
            r.append_header((k, v));
        }
    }
    if let Some((token, agreement)) = to_record
        && gateway.outcome(status, &bytes) == super::Outcome::Approved
        && let Err(e) = vault
            .add_agreement(&ctx, &merchant, &token, agreement)
            .await
    {
        tracing::warn!(
            code = e.code(),
            "the agreement of an approved charge was not recorded"
        );
        r.insert_header(("X-Panvault-Agreement-Error", e.code()));
    }
    // The token asked for: when the gateway approved, or whatever the outcome with `:FORCED:`.
    // The charge happened either way, so a failure here is a header, not an error answer.
    if let (Some(treq), Some((_, forced))) = (to_tokenize, &request_token)
        && (*forced || gateway.outcome(status, &bytes) == super::Outcome::Approved)
    {
        match vault.tokenize(&ctx, &merchant, &treq).await {
            Ok(t) => {
                if let Some(a) = new_token_agreement
                    && gateway.outcome(status, &bytes) == super::Outcome::Approved
                    && let Err(e) = vault.add_agreement(&ctx, &merchant, &t.info.token, a).await
                {
                    r.insert_header(("X-Panvault-Agreement-Error", e.code()));
                }
                r.insert_header(("X-Panvault-Token", t.info.token.clone()));
                r.insert_header((
                    "X-Panvault-Token-Expiry-Month",
                    t.info.token_expiry_month.to_string(),
                ));
                r.insert_header((
                    "X-Panvault-Token-Expiry-Year",
                    t.info.token_expiry_year.to_string(),
                ));
            }
            Err(e) => {
                r.insert_header(("X-Panvault-Token-Error", e.code()));
            }
        }
    }
    Ok(r.body(masked))
}

/// What the stored-credential rules make of a charge on a token.
#[derive(Default)]
struct Stored {
    /// MPGS `storedOnFile` to fill in where the merchant left it out.
    fill_stored_on_file: Option<&'static str>,
    /// The agreement this (cardholder-initiated) charge establishes, if new to the token.
    record: Option<crate::vault::Agreement>,
}

/// Seed 004, on every gateway that has the fields (see each module's `stored_credential`): a
/// merchant-initiated transaction must run under an agreement this token established (else 422
/// `agreement_required`) of the same type (else 422 `agreement_mismatch`); a cardholder-initiated
/// one naming an agreement new to the token establishes it (recorded once approved). MPGS names
/// the agreement (`agreement.id`); Worldline and Axerve name only the series' type, so there the
/// token's agreements at that gateway (ids `<marker><TYPE>`) are what counts, and one of another
/// type is a mismatch. MPGS `storedOnFile` is `TO_BE_STORED` on the first use under an agreement
/// and `STORED` after, unless the merchant gave it.
fn stored_credential_check(
    vault: &Vault,
    merchant: &str,
    token: &str,
    gateway: Gateway,
    body: &[u8],
) -> Result<Stored, Problem> {
    let sc = gateway.stored_credential(body).map_err(|e| {
        let status = if e.code() == "malformed_request" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        problem(status, e.code(), e.to_string())
    })?;
    if sc.agreement.is_none() && !sc.merchant_initiated {
        return Ok(Stored::default());
    }
    let agreements = vault.get(merchant, token)?.agreements;
    let known = sc
        .agreement
        .as_ref()
        .and_then(|(id, _)| agreements.iter().find(|a| a.id == *id));
    // At a gateway without agreement ids: any agreement this token made there.
    let made_there = gateway
        .agreement_marker()
        .is_some_and(|m| agreements.iter().any(|a| a.id.starts_with(m)));
    if sc.merchant_initiated {
        let Some((_, kind)) = &sc.agreement else {
            return Err(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "agreement_required",
                "a merchant-initiated transaction needs agreement.id of an agreement this token established",
            ));
        };
        match known {
            Some(a) if a.kind == *kind => {}
            Some(_) => {
                return Err(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "agreement_mismatch",
                    "the agreement's type differs from the one this token established",
                ));
            }
            None if made_there => {
                return Err(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "agreement_mismatch",
                    format!(
                        "this token stored its card at {} for another type of series than {kind}",
                        gateway.name()
                    ),
                ));
            }
            None => {
                return Err(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "agreement_required",
                    "this token never established that agreement in a cardholder-initiated transaction",
                ));
            }
        }
    }
    let fill_stored_on_file = match (&sc.agreement, sc.stored_on_file) {
        (Some(_), Some(false)) => Some(if known.is_some() {
            "STORED"
        } else {
            "TO_BE_STORED"
        }),
        _ => None,
    };
    let record = match (&sc.agreement, known, sc.merchant_initiated) {
        (Some((id, kind)), None, false) => Some(crate::vault::Agreement {
            id: id.clone(),
            kind: kind.clone(),
        }),
        _ => None,
    };
    Ok(Stored {
        fill_stored_on_file,
        record,
    })
}

fn transport_problem(gateway: Gateway, e: &reqwest::Error, timeout: Duration) -> Problem {
    if e.is_timeout() {
        problem(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!(
                "{} did not answer within {:.1} s",
                gateway.name(),
                timeout.as_secs_f64()
            ),
        )
    } else {
        problem(
            StatusCode::BAD_GATEWAY,
            "gateway_unreachable",
            format!("{} could not be reached", gateway.name()),
        )
    }
}

/// Gateway-specific headers: Nexi's fresh `Correlation-Id` and configured `X-Api-Key`, Axerve
/// REST `apikey`, MPGS Basic auth, Worldline v1HMAC signature (after the swap).
fn add_gateway_headers(
    g: Gateway,
    cfg: Creds<'_>,
    method: &reqwest::Method,
    url: &reqwest::Url,
    h: &mut reqwest::header::HeaderMap,
) {
    use reqwest::header::{AUTHORIZATION, HeaderValue as V};
    let set = |h: &mut reqwest::header::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = V::from_str(value) {
            h.insert(name, v);
        }
    };
    // A credential header: marked sensitive (never in reqwest's `Debug`, not HPACK-indexed).
    let set_secret = |h: &mut reqwest::header::HeaderMap, name: &'static str, value: &str| {
        if let Ok(mut v) = V::from_str(value) {
            v.set_sensitive(true);
            h.insert(name, v);
        }
    };
    match g {
        Gateway::Nexi => {
            if !h.contains_key(nexi::CORRELATION_ID_HEADER) {
                set(h, "correlation-id", &nexi::correlation_id());
            }
            if let Some(k) = cfg.api_key
                && !h.contains_key(nexi::API_KEY_HEADER)
            {
                set_secret(h, "x-api-key", k);
            }
        }
        Gateway::Axerve => {
            if let Some(k) = cfg.api_key
                && !h.contains_key(AUTHORIZATION)
                && url.path().contains("/api/")
            {
                set_secret(h, "authorization", &Zeroizing::new(format!("apikey {k}")));
            }
        }
        Gateway::Mpgs => {
            if let Some(pw) = cfg.api_password
                && !h.contains_key(AUTHORIZATION)
            {
                let segs: Vec<&str> = url.path().split('/').collect();
                if let Some(i) = segs.iter().position(|s| *s == "merchant")
                    && let Some(mid) = segs.get(i + 1)
                {
                    let user_pw = Zeroizing::new(format!("merchant.{mid}:{pw}"));
                    let basic = Zeroizing::new(data_encoding::BASE64.encode(user_pw.as_bytes()));
                    set_secret(
                        h,
                        "authorization",
                        &Zeroizing::new(format!("Basic {}", basic.as_str())),
                    );
                }
            }
        }
        Gateway::Worldline => {
            if let (Some(id), Some(secret)) = (cfg.api_key_id, cfg.secret_api_key)
                && !h.contains_key(AUTHORIZATION)
            {
                if !h.contains_key("date") {
                    set(h, "date", &worldline::http_date());
                }
                let get = |n: &str| {
                    h.get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let gcs: Vec<(String, String)> = h
                    .iter()
                    .filter(|(k, _)| k.as_str().starts_with("x-gcs"))
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                let gcs_refs: Vec<(&str, &str)> =
                    gcs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let path_q = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                let sts = worldline::string_to_sign(
                    method.as_str(),
                    &get("content-type"),
                    &get("date"),
                    &gcs_refs,
                    &path_q,
                );
                set_secret(
                    h,
                    "authorization",
                    &worldline::authorization(id, secret, &sts),
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for bad in [
            "..",
            "../x",
            "a/../../b",
            "a/%2e%2e/b",
            "%2E%2E",
            "a/./b",
            "a%2fb",
            "a%5cb",
            "a\\b",
            "/etc",
            "http://evil.example/x",
            "https:%2f%2fevil",
            "a b",
        ] {
            assert!(checked_path(bad).is_err(), "{bad}");
        }
        for ok in [
            "orders/moto",
            "v2/1234/payments",
            "api/rest/version/100/merchant/TEST1/order/O-1/transaction/1",
            "gestpay/gestpayws/WSs2s.asmx",
            "",
        ] {
            assert_eq!(checked_path(ok), Ok(ok));
        }
    }

    #[test]
    fn target_stays_under_the_base() {
        let base = check_base_url(Gateway::Nexi, "https://gw.example/api/v1/").unwrap();
        assert_eq!(
            target_url(&base, "orders/moto", "a=1").unwrap().as_str(),
            "https://gw.example/api/v1/orders/moto?a=1"
        );
        assert!(
            target_url(&base, "@evil.example/x", "")
                .is_some_and(|u| u.host_str() == Some("gw.example"))
        );
    }

    fn gateways(toml: &str) -> GatewaysConfig {
        toml::from_str(toml).unwrap()
    }

    fn config_error(cfg: &GatewaysConfig) -> String {
        match Proxy::new(cfg, |_| None) {
            Err(Error::Config(m)) => m,
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn gateway_wide_credentials_serve_only_the_listed_merchants() {
        let cfg = gateways(
            "[mpgs]\napi_password = \"wide\"\nmerchants = [\"mer_a\"]\n\
             [mpgs.shops.\"9100002\"]\napi_password = \"own\"\n\
             [nexi]\napi_key = \"any\"\n",
        );
        let mpgs = cfg.mpgs.unwrap();
        assert_eq!(mpgs.creds(None, Some("mer_a")).api_password, Some("wide"));
        assert_eq!(
            mpgs.creds(Some("9100001"), Some("mer_a")).api_password,
            Some("wide")
        );
        // Another group: nothing of the gateway-wide ones, but its shop's own still.
        assert_eq!(
            mpgs.creds(Some("9100001"), Some("mer_b")).api_password,
            None
        );
        assert_eq!(mpgs.creds(None, None).api_password, None);
        assert_eq!(
            mpgs.creds(Some("9100002"), Some("mer_b")).api_password,
            Some("own")
        );
        // Unset: one merchant per vault, every group uses them.
        let nexi = cfg.nexi.unwrap();
        assert_eq!(nexi.creds(None, Some("mer_b")).api_key, Some("any"));
    }

    #[test]
    fn credentials_debug_as_redacted() {
        let cfg = gateways(
            "[worldline]\napi_key_id = \"kid\"\nsecret_api_key = \"wl-secret-1\"\n\
             [mpgs]\napi_password = \"mpgs-secret-2\"\n\
             [nexi.shops.\"9000001\"]\napi_key = \"nexi-secret-3\"\n",
        );
        let shown = format!("{cfg:?}");
        for secret in ["wl-secret-1", "mpgs-secret-2", "nexi-secret-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("[REDACTED]") && shown.contains("kid"),
            "{shown}"
        );
        let shop = &cfg.nexi.as_ref().unwrap().shops.as_ref().unwrap()["9000001"];
        assert_eq!(
            format!("{:?}", shop.api_key.as_ref().unwrap()),
            "[REDACTED]"
        );
        assert!(!format!("{shop:?}").contains("nexi-secret-3"));
    }

    #[test]
    fn credential_files_are_read_or_refused_naming_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let pw = file("pw", "mpgs-secret\nsecond line\n", 0o600);
        let shop = file("shop", "nexi-secret", 0o400);
        let mut cfg = gateways(&format!(
            "[mpgs]\napi_password_file = \"{pw}\"\n\
             [nexi.shops.\"9000001\"]\napi_key_file = \"{shop}\"\n"
        ));
        let mut mpgs = cfg.mpgs.clone().unwrap();
        mpgs.resolve_files(Gateway::Mpgs).unwrap();
        assert_eq!(mpgs.creds(None, None).api_password, Some("mpgs-secret"));
        assert!(mpgs.api_password_file.is_none());
        let mut nexi = cfg.nexi.clone().unwrap();
        nexi.resolve_files(Gateway::Nexi).unwrap();
        assert_eq!(
            nexi.creds(Some("9000001"), None).api_key,
            Some("nexi-secret")
        );
        assert!(Proxy::new(&cfg, |_| None).is_ok());

        // Both forms of one credential: refused, naming both keys.
        cfg.mpgs.as_mut().unwrap().api_password = Some(SecretString::new("inline".into()));
        let e = config_error(&cfg);
        assert!(
            e.contains("gateways.mpgs.api_password and gateways.mpgs.api_password_file"),
            "{e}"
        );
        assert!(!e.contains("inline") && !e.contains("mpgs-secret"), "{e}");

        // Unreadable, open to others, empty: refused, naming the key and the file.
        let open = file("open", "worldline-secret\n", 0o640);
        let empty = file("empty", "\n", 0o600);
        for (path, why) in [
            ("/nonexistent/secret".to_string(), "No such file"),
            (open.clone(), "mode 0640"),
            (empty, "first line is empty"),
        ] {
            let cfg = gateways(&format!(
                "[worldline.shops.\"9000001\"]\napi_key_id = \"kid\"\n\
                 secret_api_key_file = \"{path}\"\n"
            ));
            let e = config_error(&cfg);
            assert!(
                e.contains(&format!(
                    "gateways.worldline.shops.9000001.secret_api_key_file {path}"
                )) && e.contains(why),
                "{e}"
            );
            assert!(!e.contains("worldline-secret"), "{e}");
        }
        // A secret file still pairs with its id.
        let cfg = gateways(&format!("[worldline]\nsecret_api_key_file = \"{pw}\"\n"));
        assert!(config_error(&cfg).contains("go together"));
    }

    #[test]
    fn base_urls_https_or_loopback_http() {
        assert!(check_base_url(Gateway::Mpgs, "https://mtf.gateway.mastercard.com").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://127.0.0.1:9/mpgs").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://[::1]:9/mpgs").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://localhost:9").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "ftp://gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "https://u:p@gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "https://gw.example/?q=1").is_err());
        let p = Proxy::new(&GatewaysConfig::default(), |_| None).unwrap();
        assert!(
            p.base_url(Gateway::Nexi)
                .unwrap()
                .starts_with("https://xpaysandbox.nexigroup.com/")
        );
        let p = Proxy::new(&GatewaysConfig::default(), |k| {
            (k == "PANVAULT_GATEWAY_MPGS_URL").then(|| "http://127.0.0.1:1/mpgs".to_string())
        })
        .unwrap();
        assert_eq!(p.base_url(Gateway::Mpgs), Some("http://127.0.0.1:1/mpgs"));
    }
}
