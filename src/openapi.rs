//! The OpenAPI 3.1 document of the HTTP API (`GET /v1/openapi.json`, `panvault openapi`).
//!
//! Answers are described by the very types the handlers serialize (`TokenInfo`, `Brand`,
//! `TokenKind`, `Agreement`, `Scope`); request bodies, which the handlers parse field by field
//! (so that an error never echoes a value), by the schemas below, whose field lists are checked
//! against the parsers' own lists in the tests.
#![allow(dead_code)] // the schema-only types exist for the document, not to be built

use utoipa::{OpenApi, ToSchema};

use crate::access::Scope;
use crate::pan::Brand;
use crate::seal::SealStatus;
use crate::token::TokenKind;
use crate::vault::{
    Agreement, AuditPage, DekStatus, KekStatus, KeyStatus, ReencryptJob, Rotation, TokenInfo,
};

/// `POST /v1/tokens` and each item of a batch.
#[derive(ToSchema)]
pub struct TokenizeBody {
    /// 12-19 ASCII digits; single spaces or dashes between groups are removed.
    pan: String,
    /// 1-12.
    expiry_month: i64,
    /// 2000-2099.
    expiry_year: i64,
    /// `MASKEDPAN` (default), a custom value (1-21 of A-Z a-z 0-9 _ -), either with `:FORCED:`.
    request_token: Option<String>,
    cardholder_name: Option<String>,
    /// An in-memory single-use token `tmp_...` for one charge.
    temporary: Option<bool>,
    /// 3-4 digits, only with `temporary`.
    cvv: Option<String>,
    /// Temporary tokens only: 1-3600, default 900.
    ttl_seconds: Option<i64>,
}

/// `POST /v1/tokens/batch`.
#[derive(ToSchema)]
pub struct BatchBody {
    /// At most 1000.
    items: Vec<TokenizeBody>,
}

/// One result of a batch: the token fields with `status` 201/200, or a problem with `code`.
#[derive(ToSchema)]
pub struct BatchResult {
    index: usize,
    status: u16,
    token: Option<String>,
    code: Option<String>,
    detail: Option<String>,
}

#[derive(ToSchema)]
pub struct BatchAnswer {
    results: Vec<BatchResult>,
}

/// `PATCH /v1/tokens/{token}`.
#[derive(ToSchema)]
pub struct UpdateBody {
    expiry_month: i64,
    expiry_year: i64,
    /// Custom tokens only: the card replaced under the same token.
    pan: Option<String>,
    cardholder_name: Option<String>,
}

/// `POST /v1/tokens/{token}/reveal`.
#[derive(ToSchema)]
pub struct RevealAnswer {
    pan: String,
    expiry_month: u8,
    expiry_year: u16,
    cardholder_name: Option<String>,
}

/// RFC 9457 problem details, with a stable `code`.
#[derive(ToSchema)]
pub struct Problem {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    code: String,
}

#[derive(ToSchema)]
pub struct MerchantBody {
    name: String,
    /// Four letters A-Z; random when absent.
    prefix: Option<String>,
}

#[derive(ToSchema)]
pub struct MerchantAnswer {
    merchant_id: String,
    name: String,
    prefix: String,
}

#[derive(ToSchema)]
pub struct ShopBody {
    shop_login: String,
}

#[derive(ToSchema)]
pub struct ApiKeyBody {
    /// A shop login in a merchant group, or `admin: true`.
    shop_login: Option<String>,
    admin: Option<bool>,
    scopes: Vec<Scope>,
    label: Option<String>,
}

#[derive(ToSchema)]
pub struct ApiKeyAnswer {
    api_key_id: String,
    /// Shown once.
    api_key: String,
    scopes: Vec<Scope>,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenizeBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = TokenInfo), (status = 200, description = "existing token", body = TokenInfo),
        (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "conflict", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"), (status = 415, description = "not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn create_token() {}

#[utoipa::path(post, path = "/v1/tokens/batch", request_body = BatchBody, security(("bearer" = [])),
    responses((status = 200, description = "OK", body = BatchAnswer), (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn create_tokens_batch() {}

#[utoipa::path(get, path = "/v1/tokens/{token}", params(("token" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "OK", body = TokenInfo), (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn get_token() {}

#[utoipa::path(patch, path = "/v1/tokens/{token}", params(("token" = String, Path)), request_body = UpdateBody,
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = TokenInfo), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "conflict", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn update_token() {}

#[utoipa::path(delete, path = "/v1/tokens/{token}", params(("token" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "deleted; the ciphertext is gone"), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn delete_token() {}

#[utoipa::path(post, path = "/v1/tokens/{token}/reveal", params(("token" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "OK", body = RevealAnswer), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json"), (status = 429, description = "rate limited", body = Problem, content_type = "application/problem+json")))]
fn reveal_token() {}

#[utoipa::path(post, path = "/v1/merchants", request_body = MerchantBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = MerchantAnswer), (status = 409, description = "conflict", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn create_merchant() {}

#[utoipa::path(post, path = "/v1/merchants/{merchant_id}/shops", params(("merchant_id" = String, Path)),
    request_body = ShopBody, security(("bearer" = [])),
    responses((status = 201, description = "added"), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "conflict", body = Problem, content_type = "application/problem+json")))]
fn add_shop() {}

#[utoipa::path(delete, path = "/v1/merchants/{merchant_id}/shops/{shop_login}",
    params(("merchant_id" = String, Path), ("shop_login" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "removed"), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn remove_shop() {}

#[utoipa::path(post, path = "/v1/api-keys", request_body = ApiKeyBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = ApiKeyAnswer), (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn create_api_key() {}

#[utoipa::path(delete, path = "/v1/api-keys/{api_key_id}", params(("api_key_id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 204, description = "revoked at once"), (status = 404, description = "not found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn revoke_api_key() {}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "not ready", body = Problem, content_type = "application/problem+json")))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
fn metrics() {}

#[derive(ToSchema)]
pub struct UnsealBody {
    /// `file` keys: the operator passphrase.
    passphrase: Option<String>,
    /// `shamir` keys: one custodian share.
    share: Option<String>,
}

#[utoipa::path(get, path = "/v1/sys/seal-status", responses((status = 200, description = "OK", body = SealStatus)))]
fn seal_status() {}

#[utoipa::path(post, path = "/v1/sys/unseal", request_body = UnsealBody,
    responses((status = 200, description = "unsealed, or progress towards it", body = SealStatus), (status = 400, description = "wrong passphrase or share (audited once unsealed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn unseal() {}

#[utoipa::path(post, path = "/v1/sys/seal", security(("bearer" = [])),
    responses((status = 200, description = "sealed: key material dropped", body = SealStatus), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "already sealed", body = Problem, content_type = "application/problem+json")))]
fn seal() {}

#[utoipa::path(post, path = "/v1/sys/keys/rotate", security(("bearer" = [])),
    responses((status = 200, description = "rotated: new KEK version, keys re-wrapped, old versions destroyed", body = Rotation), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "sealed", body = Problem, content_type = "application/problem+json")))]
fn rotate_keys() {}

#[utoipa::path(post, path = "/v1/sys/keys/reencrypt", security(("bearer" = [])),
    responses((status = 202, description = "the background job runs (or already ran): its progress, also in GET /v1/sys/keys", body = ReencryptJob), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "sealed", body = Problem, content_type = "application/problem+json")))]
fn reencrypt_keys() {}

#[utoipa::path(get, path = "/v1/audit", security(("bearer" = [])),
    params(("since" = Option<u64>, Query, description = "first entry number (default 1)"), ("limit" = Option<u32>, Query, description = "entries per page, 1 to 1000 (default 100)")),
    responses((status = 200, description = "a page of the hash-chained audit trail (the read itself is audited)", body = AuditPage), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid query parameter (named)", body = Problem, content_type = "application/problem+json")))]
fn audit_entries() {}

#[utoipa::path(get, path = "/v1/sys/evidence", security(("bearer" = [])),
    responses((status = 200, description = "the assessor's report, every figure computed now", body = crate::evidence::Evidence), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json")))]
fn evidence() {}

#[utoipa::path(get, path = "/v1/sys/keys", security(("bearer" = [])),
    responses((status = 200, description = "KEK versions and DEKs (no key material)", body = KeyStatus), (status = 403, description = "the key lacks the scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "sealed", body = Problem, content_type = "application/problem+json")))]
fn key_status() {}

const PROXY_DOC: &str = "The gateway's own request (see its documentation), with a panvault token where the card number goes; forwarded to the configured base URL with the card swapped in. The answer is the gateway's, with card numbers masked. A merchant whose gateway uses Authorization sends panvault's key as X-Panvault-Authorization: Bearer ...";

#[utoipa::path(post, path = "/v1/proxy/{gateway}/{path}", description = PROXY_DOC,
    params(("gateway" = String, Path, description = "nexi, axerve, worldline or mpgs"), ("path" = String, Path, description = "the gateway path below its base URL (may hold slashes)"),
        ("X-Panvault-Request-Token" = Option<String>, Header, description = "MASKEDPAN, :FORCED:MASKEDPAN, a custom value or :FORCED:<custom>: tokenize the raw card of this charge")),
    security(("bearer" = [])),
    responses((status = 200, description = "the gateway's answer (any status it gave), card numbers masked; X-Panvault-Token* headers when a token was asked for"),
        (status = 400, description = "`..`, an encoded slash or an absolute URL in the path (invalid_path), or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "the key lacks the charge scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown gateway, or token_not_found (another group's, deleted, expired or used temporary token): nothing forwarded", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "gateway_unreachable", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "gateway_timeout", body = Problem, content_type = "application/problem+json")))]
fn proxy_post() {}

#[utoipa::path(put, path = "/v1/proxy/{gateway}/{path}", description = PROXY_DOC,
    params(("gateway" = String, Path), ("path" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "the gateway's answer, card numbers masked (MPGS PUT transaction)")))]
fn proxy_put() {}

#[utoipa::path(get, path = "/v1/proxy/{gateway}/{path}", description = PROXY_DOC,
    params(("gateway" = String, Path), ("path" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "the gateway's answer, card numbers masked")))]
fn proxy_get() {}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "panvault", description = "Card-tokenization vault: Axerve-format tokens under envelope encryption."),
    paths(create_token, create_tokens_batch, get_token, update_token, delete_token, reveal_token,
        create_merchant, add_shop, remove_shop, create_api_key, revoke_api_key, healthz, readyz, metrics, seal_status, unseal, seal, rotate_keys, reencrypt_keys, key_status,
        proxy_post, proxy_put, proxy_get),
    components(schemas(TokenInfo, Agreement, Brand, TokenKind, Scope, TokenizeBody, BatchBody, BatchResult,
        BatchAnswer, UpdateBody, RevealAnswer, Problem, MerchantBody, MerchantAnswer, ShopBody, ApiKeyBody,
        ApiKeyAnswer, UnsealBody, SealStatus, Rotation, KeyStatus, KekStatus, DekStatus, ReencryptJob, AuditPage, crate::evidence::Evidence, crate::evidence::TlsEvidence, crate::evidence::AuditEvidence, crate::evidence::ApiKeyEvidence, crate::evidence::StoreEvidence)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    let doc = ApiDoc::openapi().to_json().unwrap_or_default();
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&doc) else {
        return doc;
    };
    // Every operation behind an API key can answer 401 (no key, or not a live one): said once
    // here instead of on each handler.
    let unauthorized = serde_json::json!({
        "description": "no API key, or not a valid live one",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    });
    if let Some(paths) = v["paths"].as_object_mut() {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for o in op.values_mut().filter(|o| o.get("security").is_some()) {
                if let Some(r) = o["responses"].as_object_mut() {
                    r.entry("401").or_insert_with(|| unauthorized.clone());
                }
            }
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn document_is_openapi_3_1_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        // Every secured operation documents its 401.
        assert_eq!(
            doc["paths"]["/v1/tokens"]["post"]["responses"]["401"]["content"]["application/problem+json"]
                ["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
        for path in [
            "/v1/tokens",
            "/v1/tokens/batch",
            "/v1/tokens/{token}",
            "/v1/tokens/{token}/reveal",
            "/v1/merchants",
            "/v1/merchants/{merchant_id}/shops",
            "/v1/merchants/{merchant_id}/shops/{shop_login}",
            "/v1/api-keys",
            "/v1/api-keys/{api_key_id}",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/sys/seal-status",
            "/v1/sys/unseal",
            "/v1/sys/seal",
            "/v1/sys/keys/rotate",
            "/v1/sys/keys/reencrypt",
            "/v1/sys/keys",
            "/v1/proxy/{gateway}/{path}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        // The request schema lists exactly the fields the handler accepts.
        let props = doc["components"]["schemas"]["TokenizeBody"]["properties"]
            .as_object()
            .unwrap();
        let mut documented: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut parsed = crate::http::TOKENIZE_FIELDS.to_vec();
        documented.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(documented, parsed);
    }
}
