//! The system endpoints: liveness and readiness, metrics, the OpenAPI document, and the seal
//! state (status, unseal, seal).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::body::{field_error, json_body, only_fields};
use super::extract::{Unsealed, principal, request_ctx};
use super::problem::Answer;
use super::{BODY_LIMIT, Metrics, Problem};
use crate::Error;
use crate::access::Scope;
use crate::crypto::SecretString;
use crate::seal::{Gate, UnsealInput};

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub(super) async fn seal_status(gate: web::Data<Gate>) -> HttpResponse {
    HttpResponse::Ok().json(gate.status())
}

/// `POST /v1/sys/unseal` (no auth; audited): `{"passphrase"}` (file keys) or `{"share"}`.
pub(super) async fn unseal(req: HttpRequest, gate: web::Data<Gate>, body: web::Payload) -> Answer {
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(&map, &["passphrase", "share"])?;
    let input = match (map.get("passphrase"), map.get("share")) {
        (Some(Value::String(p)), None) => UnsealInput::Passphrase(SecretString::new(p.clone())),
        (Some(_), None) => return Err(field_error("passphrase", "must be a JSON string")),
        (None, Some(Value::String(s))) => UnsealInput::Share(SecretString::new(s.clone())),
        (None, Some(_)) => return Err(field_error("share", "must be a JSON string")),
        _ => {
            return Err(field_error(
                "passphrase",
                "give exactly one of passphrase or share",
            ));
        }
    };
    let status = gate
        .unseal(&request_ctx(&req, None), input)
        .await
        .map_err(unseal_failed)?;
    Ok(HttpResponse::Ok().json(status))
}

/// A failed unseal's answer. Keys that unlocked but a vault that refused to open on its own
/// store (its audit chain, or an authorization record, fails its check: edited on disk) is a
/// 500 that says so under the error's own code, so the operator knows the vault stays sealed
/// for a reason no retry fixes; which entry or record, is in the server log only.
fn unseal_failed(e: Error) -> Problem {
    if let Error::AuditBroken { .. } | Error::AuthRecordBroken { .. } = e {
        tracing::error!(code = e.code(), error = %e, "the vault did not open; it stays sealed");
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.code(),
            "the vault did not open: its store fails its integrity check (see the server log); \
             it stays sealed",
        );
    }
    Problem::from(e)
}

/// `POST /v1/sys/seal` (scope `keys`).
pub(super) async fn seal(
    req: HttpRequest,
    gate: web::Data<Gate>,
    Unsealed(vault): Unsealed,
) -> Answer {
    let p = principal(&req, &vault, Scope::Keys).await?;
    drop(vault);
    let status = gate.seal(&request_ctx(&req, Some(&p))).await?;
    Ok(HttpResponse::Ok().json(status))
}

pub(super) async fn readyz(gate: web::Data<Gate>) -> HttpResponse {
    match gate.vault().and_then(|v| v.ready()) {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => Problem::from(e).response(),
    }
}

/// `GET /metrics` (scope `metrics`): the figures name routes, volumes and the seal state, which
/// are an operator's, not the public's. Sealed, no key can be checked: 503 `sealed`
/// (`/v1/sys/seal-status` stays open for that).
pub(super) async fn metrics(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    metrics: web::Data<Metrics>,
) -> Answer {
    principal(&req, &vault, Scope::Metrics).await?;
    let mut text = metrics.render(Some(&vault));
    if let Some(auth) = req.app_data::<web::Data<super::AuthLimit>>() {
        auth.render(&mut text);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// `GET /v1/openapi.json`: the document, its `servers` naming the address this listener is on.
pub(super) async fn openapi(req: HttpRequest) -> HttpResponse {
    let listener = req.app_config();
    HttpResponse::Ok().content_type("application/json").body(
        crate::http::openapi::document_for_listener(listener.local_addr(), listener.secure()),
    )
}
