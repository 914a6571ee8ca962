//! `ANY /v1/proxy/{gateway}/{path}` on the HTTPS edge: a thin adapter around the gateway proxy's
//! charge. It authenticates panvault's key (scope `charge`), takes one from the key's charge
//! rate limit (429 `rate_limited` past it, nothing read, revealed or forwarded), hands the
//! request over as a
//! framework-free [`ChargeRequest`], and turns the [`ChargeAnswer`] or [`ChargeError`] into the
//! HTTP answer. No rule of the proxy lives here.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::access::Scope;
use crate::gateway::proxy::{
    ChargeAnswer, ChargeError, ChargeRequest, PANVAULT_AUTH_HEADER, Proxy, charge, panvault_key,
};
use crate::http::{ChargeLimit, Problem, Unsealed, principal_from, request_ctx};

/// `ANY /v1/proxy/{gateway}/{path}`.
pub(crate) async fn handle(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let raw_key = panvault_key(&headers);
    let principal = principal_from(&req, &vault, Scope::Charge, &raw_key)
        .await
        .map_err(|p| {
            if p.status == StatusCode::UNAUTHORIZED && gateways_authorization_only(&headers) {
                p.hint(GATEWAY_AUTHORIZATION_HINT)
            } else {
                p
            }
        })?;
    // Before the body is read: a refused charge reveals and forwards nothing.
    if let Some(limit) = req.app_data::<web::Data<ChargeLimit>>()
        && let Err(wait) = limit.take(&principal.key_id)
    {
        tracing::debug!("a proxied charge was refused: over its key's rate limit");
        return Ok(rate_limited(wait));
    }
    let ctx = request_ctx(&req, Some(&principal));
    let request = ChargeRequest {
        principal,
        ctx,
        gateway: req.match_info().get("gateway").unwrap_or_default(),
        path: req.uri().path(),
        query: req.query_string(),
        method: req.method().as_str(),
        origin: origin(&req),
        headers,
        body: payload,
    };
    let proxy = req.app_data::<web::Data<Proxy>>().map(|p| p.get_ref());
    match charge(proxy, vault, request).await {
        Ok(answer) => Ok(response(answer)),
        Err(e) => {
            let problem = Problem::from(e);
            tracing::debug!(code = problem.code(), "a proxied charge was refused");
            Err(problem)
        }
    }
}

/// The vault as the merchant addressed it: `https://` (`http://` when serving plain HTTP) and
/// the request target's authority, else the `Host` header.
fn origin(req: &HttpRequest) -> Option<String> {
    let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(actix_web::http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{authority}"))
}

/// What a 401 adds when the request's `Authorization` is not panvault's (a gateway's Basic or
/// v1HMAC) and no `X-Panvault-Authorization` was sent.
const GATEWAY_AUTHORIZATION_HINT: &str = "this request's Authorization is not a panvault API key (it is left for the gateway): send panvault's key as X-Panvault-Authorization: Bearer pvk_...";

/// Whether the request carries an `Authorization` that is not a panvault bearer key, and no
/// `X-Panvault-Authorization`: the merchant sent only the gateway's own credentials.
fn gateways_authorization_only(headers: &[(&str, &[u8])]) -> bool {
    let named = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    if named(PANVAULT_AUTH_HEADER).is_some() {
        return false;
    }
    named("authorization").is_some_and(|v| {
        let v = String::from_utf8_lossy(v);
        !v.trim_start()
            .strip_prefix("Bearer ")
            .is_some_and(|k| k.trim_start().starts_with("pvk_"))
    })
}

/// 429 `rate_limited` with `Retry-After: wait` (seconds).
fn rate_limited(wait: u64) -> HttpResponse {
    let mut r = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many proxied charges for this API key; retry shortly",
    )
    .response();
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        r.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

/// The gateway's answer (masked) with panvault's own headers set after its own.
fn response(answer: ChargeAnswer) -> HttpResponse {
    let ChargeAnswer {
        status,
        headers,
        panvault_headers,
        body,
    } = answer;
    let mut r =
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in &headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            r.append_header((k, v));
        }
    }
    for (name, value) in panvault_headers {
        r.insert_header((name, value));
    }
    r.body(body)
}

/// The proxy's refusals as problem answers: its own with their code and status, the library's
/// through the edge's one mapping of [`crate::Error`].
impl From<ChargeError> for Problem {
    fn from(e: ChargeError) -> Self {
        match e {
            ChargeError::Vault(e) => Problem::from(e),
            e @ (ChargeError::UnknownGateway
            | ChargeError::GatewayNotPlain
            | ChargeError::InvalidPath(_)
            | ChargeError::OutsideBase
            | ChargeError::ProxyUnavailable
            | ChargeError::GatewayUnconfigured
            | ChargeError::MethodNotAllowed
            | ChargeError::UnsupportedMethod
            | ChargeError::BodyUnreadable
            | ChargeError::NotUtf8 { .. }
            | ChargeError::BodyTooLarge
            | ChargeError::DuplicateKey(_)
            | ChargeError::Unreadable(_)
            | ChargeError::Unrewritable(_)
            | ChargeError::ApiKeyNotAdded(_)
            | ChargeError::AgreementNotNamed
            | ChargeError::AgreementUnknown
            | ChargeError::AgreementMismatch
            | ChargeError::SeriesMismatch { .. }
            | ChargeError::RequestTokenOnToken
            | ChargeError::RequestTokenWithoutCard
            | ChargeError::TokenNotSwapped { .. }
            | ChargeError::Timeout { .. }
            | ChargeError::Unreachable { .. }
            | ChargeError::AnswerTooLarge
            | ChargeError::AnswerOpaque) => {
                let status = e
                    .status()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Problem::new(status, e.code(), e.to_string())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::gateway::GatewayError;

    #[test]
    fn refusals_keep_their_code_status_and_detail() {
        let p = Problem::from(ChargeError::Unreadable(GatewayError::Field {
            field: "card.pan",
            reason: "must be a string",
        }));
        assert_eq!(
            (p.status, p.code, p.detail.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "field `card.pan` must be a string"
            )
        );
        let p = Problem::from(ChargeError::BodyTooLarge);
        assert_eq!(
            (p.status, p.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        // The library's errors go through the edge's one mapping.
        let p = Problem::from(ChargeError::Vault(Error::TokenNotFound));
        assert_eq!(
            (p.status, p.code),
            (StatusCode::NOT_FOUND, "token_not_found")
        );
    }

    #[test]
    fn only_a_foreign_authorization_without_panvaults_header_gets_the_hint() {
        let h = |pairs: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static [u8])> {
            pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
        };
        for foreign in ["Basic bWVyY2hhbnQ6cHc=", "GCS v1HMAC:key:sig", "Bearer abc"] {
            assert!(gateways_authorization_only(&h(&[(
                "authorization",
                foreign
            )])));
            assert!(!gateways_authorization_only(&h(&[
                ("authorization", foreign),
                (PANVAULT_AUTH_HEADER, "Bearer pvk_x")
            ])));
        }
        assert!(!gateways_authorization_only(&h(&[(
            "authorization",
            "Bearer pvk_0_x"
        )])));
        assert!(!gateways_authorization_only(&h(&[])));
    }

    #[test]
    fn panvaults_headers_are_set_after_the_gateways() {
        let r = response(ChargeAnswer {
            status: 201,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("set-cookie".into(), b"a=1".to_vec()),
                ("set-cookie".into(), b"b=2".to_vec()),
                ("bad name".into(), b"dropped".to_vec()),
            ],
            panvault_headers: vec![
                ("X-Panvault-Agreement-Error", "first".into()),
                ("X-Panvault-Agreement-Error", "second".into()),
                ("X-Panvault-Token", "4111AAAA".into()),
            ],
            body: b"{}".to_vec(),
        });
        assert_eq!(r.status(), StatusCode::CREATED);
        let h = r.headers();
        assert_eq!(h.get_all("set-cookie").count(), 2);
        assert!(h.get("bad name").is_none());
        assert_eq!(h.get("x-panvault-agreement-error").unwrap(), "second");
        assert_eq!(h.get("x-panvault-token").unwrap(), "4111AAAA");
    }
}
