//! The outbound side of a charge: the gateway path checked to stay under the configured base URL,
//! the merchant's headers passed on (minus panvault's own and hop-by-hop ones) with the
//! gateway's credentials and signature added, the request sent and the answer read within its
//! limits, and the answer's card numbers masked before it goes back.

use std::time::Duration;

use zeroize::Zeroizing;

use super::config::Creds;
use super::{ANSWER_LIMIT, ChargeError};
use crate::gateway::{Gateway, mask, nexi, worldline};

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
pub(super) fn target_url(base: &reqwest::Url, path: &str, query: &str) -> Option<reqwest::Url> {
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

/// The merchant's headers, minus panvault's own and hop-by-hop ones; its `Authorization` goes to
/// the gateway only when panvault's key came in `X-Panvault-Authorization` (`own_header`), and
/// never when it holds a panvault key.
pub(super) fn merchant_headers(
    incoming: &[(&str, &[u8])],
    own_header: bool,
) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for &(n, v) in incoming {
        if HOP_BY_HOP.contains(&n)
            || n.starts_with("x-panvault-")
            || (n == "authorization" && (!own_header || v.windows(4).any(|w| w == b"pvk_")))
        {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(n.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    headers
}

/// The gateway's answer as read: it may still hold a card number until [`masked`].
pub(super) struct Received {
    pub(super) status: u16,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// Sends `request` and reads the answer, up to [`ANSWER_LIMIT`] bytes.
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    gateway: Gateway,
    timeout: Duration,
) -> Result<Received, ChargeError> {
    let mut answer = request
        .send()
        .await
        .map_err(|e| transport_error(gateway, &e, timeout))?;
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    // The gateway's answer may echo a card before it is masked.
    let mut bytes = Zeroizing::new(Vec::new());
    while let Some(c) = answer
        .chunk()
        .await
        .map_err(|e| transport_error(gateway, &e, timeout))?
    {
        if bytes.len() + c.len() > ANSWER_LIMIT {
            return Err(ChargeError::AnswerTooLarge);
        }
        bytes.extend_from_slice(&c);
    }
    Ok(Received {
        status,
        headers,
        body: bytes,
    })
}

/// The gateway's answer with every card number masked.
pub(super) struct Masked {
    /// Name and value, in the gateway's order.
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Vec<u8>,
}

/// The answer's headers and body with every card number masked (`known`: the ones this charge
/// carried, whatever the gateway does with them; `cvvs`: the CVV of a temporary token it used,
/// masked where it stands alone). Tags between digits are separators in an HTML answer. An
/// answer whose card numbers the masker cannot see is not passed on: a compressed body (with
/// or without `Content-Encoding`), UTF-16/UTF-32, or digits written as character references.
pub(super) fn masked(
    answer: &Received,
    known: &[Zeroizing<String>],
    cvvs: &[Zeroizing<String>],
) -> Result<Masked, ChargeError> {
    let encoded = answer
        .headers
        .get("content-encoding")
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let content_type = answer.headers.get("content-type").map(|v| v.as_bytes());
    if encoded || mask::unreadable(&answer.body, content_type) {
        return Err(ChargeError::AnswerOpaque);
    }
    let known_refs: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
    let cvv_refs: Vec<&str> = cvvs.iter().map(|k| k.as_str()).collect();
    let html = content_type.is_some_and(|v| v.windows(4).any(|w| w.eq_ignore_ascii_case(b"html")));
    let body = mask::mask_answer(&answer.body, &known_refs, &cvv_refs, html).into_owned();
    let mut headers = Vec::with_capacity(answer.headers.len());
    for (k, v) in &answer.headers {
        let n = k.as_str();
        // panvault's own answer headers never come from the gateway.
        if HOP_BY_HOP.contains(&n) || n == "content-encoding" || n.starts_with("x-panvault-") {
            continue;
        }
        let v = mask::mask_answer(v.as_bytes(), &known_refs, &cvv_refs, false);
        headers.push((n.to_string(), v.into_owned()));
    }
    Ok(Masked { headers, body })
}

/// The answer headers that carry a URL of the gateway's own: `Location` and `Content-Location`.
const URL_HEADERS: &[&str] = &["location", "content-location"];

/// The vault's own proxy URL for a gateway, `{origin}/v1/proxy/{gateway}`, with `origin` the
/// vault as the merchant addressed it (`https://host[:port]`); `None` when that is not one.
pub(super) fn proxy_root(origin: &str, gateway: Gateway) -> Option<String> {
    let root = format!("{origin}/v1/proxy/{}", gateway.name());
    let url = reqwest::Url::parse(&root).ok()?;
    let bare = matches!(url.scheme(), "https" | "http")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == format!("/v1/proxy/{}", gateway.name());
    bare.then_some(root)
}

/// `value` rewritten onto `root` (see [`proxy_root`]) when it is an absolute URL under `base`
/// (same scheme, host and port, its path `base`'s path or below it, segment by segment), with
/// the rest of the path, the query and the fragment kept; `None` for any other value (another
/// absolute URL, a relative one, no URL at all), which is left as it is.
pub(super) fn under_proxy(base: &reqwest::Url, value: &str, root: &str) -> Option<String> {
    let url = reqwest::Url::parse(value.trim()).ok()?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return None;
    }
    let prefix = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut out = format!("{root}{rest}");
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = url.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// `Location` and `Content-Location` that point under the gateway's `base` URL made the vault's
/// own proxy URL for the gateway (`root`, see [`proxy_root`]), so the merchant gets an address it
/// can use and never the gateway's internal one; without a `root` such a header is dropped. Any
/// other value is left as it is.
pub(super) fn own_urls(
    headers: &mut Vec<(String, Vec<u8>)>,
    base: &reqwest::Url,
    root: Option<&str>,
) {
    headers.retain_mut(|(name, value)| {
        if !URL_HEADERS.contains(&name.as_str()) {
            return true;
        }
        let Ok(text) = std::str::from_utf8(value) else {
            return true;
        };
        let Some(rewritten) = under_proxy(base, text, root.unwrap_or_default()) else {
            return true;
        };
        match root {
            Some(_) => {
                *value = rewritten.into_bytes();
                true
            }
            None => false,
        }
    });
}

/// A failed send or read: the gateway's timeout ran out, or it could not be reached.
fn transport_error(gateway: Gateway, e: &reqwest::Error, timeout: Duration) -> ChargeError {
    if e.is_timeout() {
        ChargeError::Timeout { gateway, timeout }
    } else {
        ChargeError::Unreachable { gateway }
    }
}

/// Gateway-specific headers: Nexi's fresh `Correlation-Id` and configured `X-Api-Key`, Axerve
/// REST `apikey`, MPGS Basic auth, Worldline v1HMAC signature (after the swap).
pub(super) fn add_gateway_headers(
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
    use crate::gateway::proxy::check_base_url;

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
    fn urls_under_the_base_become_the_proxys_own() {
        let root = proxy_root("https://vault.example:8443", Gateway::Worldline).unwrap();
        assert_eq!(root, "https://vault.example:8443/v1/proxy/worldline");
        let prefixed =
            check_base_url(Gateway::Worldline, "http://127.0.0.1:8480/worldline").unwrap();
        let at_root = check_base_url(Gateway::Worldline, "http://127.0.0.1:8483").unwrap();
        let https = check_base_url(Gateway::Worldline, "https://gw.example/api/").unwrap();
        let cases: &[(&reqwest::Url, &str, Option<&str>)] = &[
            // Under the base: path suffix, query and fragment kept.
            (
                &prefixed,
                "http://127.0.0.1:8480/worldline/v2/1234/payments/3066_0?a=1&b=2",
                Some(
                    "https://vault.example:8443/v1/proxy/worldline/v2/1234/payments/3066_0?a=1&b=2",
                ),
            ),
            (
                &prefixed,
                "http://127.0.0.1:8480/worldline",
                Some("https://vault.example:8443/v1/proxy/worldline"),
            ),
            (
                &at_root,
                "http://127.0.0.1:8483/v2/1/payments/9#top",
                Some("https://vault.example:8443/v1/proxy/worldline/v2/1/payments/9#top"),
            ),
            (
                &https,
                "HTTPS://GW.example:443/api/v2/x",
                Some("https://vault.example:8443/v1/proxy/worldline/v2/x"),
            ),
            // Not under it: another port, scheme or host, a path that only starts alike,
            // relative URLs and no URL at all.
            (&prefixed, "http://127.0.0.1:8481/worldline/v2/x", None),
            (&prefixed, "https://127.0.0.1:8480/worldline/v2/x", None),
            (&prefixed, "http://localhost:8480/worldline/v2/x", None),
            (&prefixed, "http://127.0.0.1:8480/worldlinex/v2/x", None),
            (&prefixed, "http://127.0.0.1:8480/nexi/orders", None),
            (&https, "https://gw.example/apiv2/x", None),
            (&https, "https://shop.example/return?paymentId=1", None),
            (&prefixed, "/worldline/v2/x", None),
            (&prefixed, "v2/x", None),
            (&prefixed, "not a url", None),
        ];
        for (base, value, want) in cases {
            assert_eq!(under_proxy(base, value, &root).as_deref(), *want, "{value}");
        }
        // Only Location and Content-Location; without a usable Host the gateway's URL is
        // dropped, never passed on.
        let headers = || {
            vec![
                (
                    "location".to_string(),
                    b"http://127.0.0.1:8483/v2/1/payments/9".to_vec(),
                ),
                (
                    "content-location".to_string(),
                    b"http://127.0.0.1:8483/v2/1".to_vec(),
                ),
                ("link".to_string(), b"http://127.0.0.1:8483/v2/1".to_vec()),
                (
                    "location".to_string(),
                    b"https://shop.example/return".to_vec(),
                ),
            ]
        };
        let mut h = headers();
        own_urls(&mut h, &at_root, Some(&root));
        let text: Vec<(&str, &str)> = h
            .iter()
            .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            text,
            [
                (
                    "location",
                    "https://vault.example:8443/v1/proxy/worldline/v2/1/payments/9"
                ),
                (
                    "content-location",
                    "https://vault.example:8443/v1/proxy/worldline/v2/1"
                ),
                ("link", "http://127.0.0.1:8483/v2/1"),
                ("location", "https://shop.example/return"),
            ]
        );
        let mut h = headers();
        own_urls(&mut h, &at_root, None);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["link", "location"]);
        for bad in [
            "",
            "a/b",
            "user@vault.example",
            "vault.example?x",
            "vault.example#f",
            "a b",
        ] {
            let origin = format!("https://{bad}");
            assert_eq!(proxy_root(&origin, Gateway::Worldline), None, "{bad}");
        }
        assert_eq!(
            proxy_root("http://[::1]:8443", Gateway::Nexi).as_deref(),
            Some("http://[::1]:8443/v1/proxy/nexi")
        );
        assert_eq!(proxy_root("ftp://vault.example", Gateway::Nexi), None);
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
}
