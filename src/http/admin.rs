//! The administration endpoints: merchants and their shop logins, API keys, KEK rotation and
//! re-encryption, key status, the audit trail and the evidence report.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::body::{field_error, json_body, only_fields, opt_str};
use super::extract::{Unsealed, principal, request_ctx};
use super::problem::Answer;
use super::{BODY_LIMIT, Problem};
use crate::Error;
use crate::access::{ApiKeyRequest, Scope};

pub(super) async fn create_merchant(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Admin).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(&map, &["name", "prefix"])?;
    let name = opt_str(&map, "name")?.ok_or_else(|| field_error("name", "is required"))?;
    let prefix = opt_str(&map, "prefix")?;
    let m = vault
        .create_merchant(&request_ctx(&req, Some(&p)), &name, prefix.as_deref())
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "merchant_id": m.merchant_id,
        "name": m.name,
        "prefix": m.prefix.as_str(),
    })))
}

pub(super) async fn add_shop(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    merchant: web::Path<String>,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Admin).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(&map, &["shop_login"])?;
    let shop =
        opt_str(&map, "shop_login")?.ok_or_else(|| field_error("shop_login", "is required"))?;
    vault
        .add_shop(&request_ctx(&req, Some(&p)), &merchant, &shop)
        .await?;
    Ok(HttpResponse::Created()
        .json(json!({ "merchant_id": merchant.as_str(), "shop_login": shop })))
}

pub(super) async fn remove_shop(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    path: web::Path<(String, String)>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Admin).await?;
    let (merchant, shop) = path.into_inner();
    vault
        .remove_shop(&request_ctx(&req, Some(&p)), &merchant, &shop)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn create_api_key(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Admin).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(&map, &["shop_login", "admin", "scopes", "label"])?;
    let admin = match map.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field_error("admin", "must be true or false")),
    };
    let scopes = match map.get("scopes") {
        Some(v) => serde_json::from_value::<Vec<Scope>>(v.clone()).map_err(|_| {
            field_error(
                "scopes",
                "must be a list of tokenize, read, reveal, charge, admin, keys, audit, metrics",
            )
        })?,
        None => return Err(field_error("scopes", "is required")),
    };
    let key = vault
        .create_api_key(
            &request_ctx(&req, Some(&p)),
            ApiKeyRequest {
                shop_login: opt_str(&map, "shop_login")?,
                admin,
                scopes,
                label: opt_str(&map, "label")?,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "api_key_id": key.api_key_id,
        "api_key": key.api_key.expose(),
        "scopes": key.scopes,
    })))
}

pub(super) async fn revoke_api_key(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    id: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Admin).await?;
    vault
        .revoke_api_key(&request_ctx(&req, Some(&p)), &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/sys/keys/rotate` (scope `keys`).
pub(super) async fn rotate_keys(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    let p = principal(&req, &vault, Scope::Keys).await?;
    let r = vault.rotate_kek(&request_ctx(&req, Some(&p))).await?;
    Ok(HttpResponse::Ok().json(r))
}

/// `POST /v1/sys/keys/reencrypt` (scope `keys`): 202 with the job's progress.
pub(super) async fn reencrypt_keys(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    let p = principal(&req, &vault, Scope::Keys).await?;
    let job = vault
        .start_reencryption(&request_ctx(&req, Some(&p)))
        .await?;
    Ok(HttpResponse::Accepted().json(job))
}

/// Most audit entries in one page, and the default.
const AUDIT_PAGE_MAX: usize = 1000;
const AUDIT_PAGE_DEFAULT: usize = 100;

/// `GET /v1/audit?since=SEQ&limit=N` (scope `audit`).
pub(super) async fn audit_entries(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    let p = principal(&req, &vault, Scope::Audit).await?;
    let (mut since, mut limit) = (1u64, AUDIT_PAGE_DEFAULT);
    for pair in req.query_string().split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "since" => {
                since = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or(Error::InvalidField {
                        field: "since",
                        reason: "must be an entry number, 1 or more",
                    })?
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=AUDIT_PAGE_MAX).contains(n))
                    .ok_or(Error::InvalidField {
                        field: "limit",
                        reason: "must be 1 to 1000",
                    })?
            }
            _ => {
                return Err(Error::InvalidField {
                    field: "query",
                    reason: "only `since` and `limit` are accepted",
                }
                .into());
            }
        }
    }
    let page = vault
        .audit_page(&request_ctx(&req, Some(&p)), since, limit)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /v1/sys/evidence` (scope `audit`): the assessor's report, computed now.
pub(super) async fn evidence(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    principal(&req, &vault, Scope::Audit).await?;
    let v = vault.clone();
    let report = web::block(move || crate::evidence::report(&v, crate::harden::checks()))
        .await
        .map_err(|_| Problem::from(Error::store("evidence", "the task failed")))??;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/sys/keys` (scope `keys`).
pub(super) async fn key_status(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    principal(&req, &vault, Scope::Keys).await?;
    let v = vault.clone();
    let status = web::block(move || v.key_status())
        .await
        .map_err(|_| Problem::from(Error::store("key status", "the task failed")))??;
    Ok(HttpResponse::Ok().json(status))
}
