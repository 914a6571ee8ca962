//! What a handler takes from the request before it calls the vault: the open vault (503
//! `sealed` otherwise), the authenticated principal for a scope (failures audited), the request
//! id and the audit context built from them.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, web};

use super::Problem;
use super::auth_limit::AuthLimit;
use crate::Error;
use crate::access::{Principal, Scope};
use crate::seal::Gate;
use crate::vault::{Ctx, Vault};

/// The request id this request answers with (set by the middleware).
#[derive(Clone)]
pub(super) struct RequestId(pub(super) String);

pub(crate) fn request_ctx(req: &HttpRequest, principal: Option<&Principal>) -> Ctx {
    Ctx {
        actor: principal.map_or_else(|| "anonymous".to_string(), |p| p.key_id.clone()),
        client: req.peer_addr().map(|a| a.ip().to_string()),
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
    }
}

/// Authenticates the bearer key and checks `scope`; failures are audited.
pub(super) async fn principal(
    req: &HttpRequest,
    vault: &Vault,
    scope: Scope,
) -> Result<Principal, Problem> {
    let raw = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    principal_from(req, vault, scope, raw.trim()).await
}

/// Authenticates the API key `raw` (from whichever header the endpoint reads) and checks `scope`;
/// failures are audited (a key that fails authentication through the source address's
/// [`AuthLimit`]: 429 past it, and the audit entries aggregated per window).
pub(crate) async fn principal_from(
    req: &HttpRequest,
    vault: &Vault,
    scope: Scope,
    raw: &str,
) -> Result<Principal, Problem> {
    match vault.authenticate(raw) {
        Ok(p) => {
            if let Err(e) = p.require(scope) {
                let _ = vault.audit_auth_failure(&request_ctx(req, Some(&p))).await;
                return Err(e.into());
            }
            Ok(p)
        }
        Err(e) => match req.app_data::<web::Data<AuthLimit>>() {
            Some(limit) => Err(limited_failure(req, vault, limit, e).await),
            None => {
                let _ = vault.audit_auth_failure(&request_ctx(req, None)).await;
                Err(e.into())
            }
        },
    }
}

/// A failed authentication through the source address's limit: 401, or 429 with
/// `Retry-After` past it; audited as its window's first failure, or counted in the window.
async fn limited_failure(req: &HttpRequest, vault: &Vault, limit: &AuthLimit, e: Error) -> Problem {
    let f = limit.failure(req.peer_addr().map(|a| a.ip()), std::time::Instant::now());
    let window = limit.window_seconds();
    if let Some(c) = f.closed {
        super::auth_limit::audit_closed(vault, c, window).await;
    }
    if f.audit_now {
        let refused = u64::from(f.retry_after.is_some());
        let _ = vault
            .audit_auth_failures(&request_ctx(req, None), 1, refused, window, false)
            .await;
    }
    match f.retry_after {
        None => e.into(),
        Some(seconds) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed authentications from this address; retry in {seconds} s"),
        )
        .retry_after(seconds),
    }
}

/// The open vault, for a data endpoint; 503 `sealed` while the vault is sealed.
pub(crate) struct Unsealed(pub(crate) Vault);

impl actix_web::FromRequest for Unsealed {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(match req.app_data::<web::Data<Gate>>() {
            Some(gate) => gate.vault().map(Unsealed).map_err(Problem::from),
            None => Err(Error::Sealed.into()),
        })
    }
}

/// An incoming `X-Request-Id` to echo and audit, if it is one: 1 to 128 characters from
/// `A-Z a-z 0-9 - _ . :`, and no card number in it (a client's mistake that would otherwise be
/// echoed and written to the audit trail in clear; such an id is replaced like an invalid one).
pub(super) fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        && !crate::pan::holds_card_number(s);
    ok.then(|| s.to_string())
}
