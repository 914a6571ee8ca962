//! The OpenAPI 3.1 document of the HTTP API (`GET /v1/openapi.json`, `panvault openapi`).
//!
//! Answers whose types live in the domain core (`TokenInfo`, `Brand`, `TokenKind`, `Agreement`,
//! `Scope`, key status, rotation, audit page) are described in `schemas.rs` and checked there
//! against what those types serialize; request bodies, which the handlers parse field by field
//! (so that an error never echoes a value), by the schemas below, whose field lists are checked
//! against the parsers' own lists in the tests. A constraint stands on a request field only where
//! the server refuses every value outside it, so a client (or schemathesis) that keeps to the
//! schema is never contradicted; the rules no schema keyword says (the Luhn check, no run of 12
//! digits in a custom token, `cvv` and `ttl_seconds` only on a temporary token) are 422 answers.
//!
//! The problem answers that every operation of a kind can give are added in one place,
//! [`document`], rather than on each handler: 401, 403 and 503 on every operation behind an API
//! key (the vault is checked first, then the key, then its scope), and 400, 413, 415 and 422 on
//! every operation that takes a JSON body. Examples use only published test card numbers.
#![allow(dead_code)] // the schema-only types exist for the document, not to be built

use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::schemas::{
    Agreement, AuditPage, Brand, DekStatus, KekStatus, KeyStatus, ReencryptJob, Rotation, Scope,
    TokenInfo, TokenKind,
};
use crate::seal::SealStatus;

/// `POST /v1/tokens` and each item of a batch. Unknown fields are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}))]
pub struct TokenizeBody {
    /// 12-19 ASCII digits; a single space or dash between two digits is removed. The Luhn check
    /// must pass (else 422 `luhn_check_failed`).
    #[schema(
        min_length = 12,
        max_length = 37,
        pattern = "^(?:[0-9][ -]?){11,18}[0-9]$"
    )]
    pan: String,
    #[schema(minimum = 1, maximum = 12)]
    expiry_month: i64,
    #[schema(minimum = 2000, maximum = 2099)]
    expiry_year: i64,
    /// `MASKEDPAN` (default) or a custom value (1-21 of A-Z a-z 0-9 _ -, not `MASKEDPAN`, no run
    /// of 12 digits), either after `:FORCED:`, which is accepted and ignored here.
    #[schema(max_length = 29, pattern = "^(:FORCED:)?[A-Za-z0-9_-]{1,21}$")]
    request_token: Option<String>,
    /// At most 128 characters, no control character.
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    cardholder_name: Option<String>,
    /// An in-memory single-use token `tmp_...` for one charge.
    temporary: Option<bool>,
    /// 3-4 digits, only with `temporary: true` (never stored).
    #[schema(pattern = "^[0-9]{3,4}$")]
    cvv: Option<String>,
    /// Only with `temporary: true`: 1-3600, default 900.
    #[schema(minimum = 1, maximum = 3600)]
    ttl_seconds: Option<i64>,
}

/// `POST /v1/tokens/batch`. Items that are refused get their problem in the answer (with their
/// `index`); the others are tokenized.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[schema(max_items = 1000)]
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

/// The answer of `POST /v1/tokens/batch`: one result per item, in order.
#[derive(ToSchema)]
pub struct BatchAnswer {
    results: Vec<BatchResult>,
}

/// The answer of `POST /v1/tokens`: the token's fields without `agreements` (a new or returned
/// token's agreements are read with `GET /v1/tokens/{token}`).
#[derive(ToSchema)]
pub struct TokenizeAnswer {
    /// `NN` + prefix + 6 of A-Z0-9 + last 4 (masked), prefix + value (custom) or `tmp_` + 32
    /// base32 characters (temporary).
    token: String,
    token_kind: TokenKind,
    #[schema(minimum = 1, maximum = 12)]
    token_expiry_month: u8,
    #[schema(minimum = 2000, maximum = 2099)]
    token_expiry_year: u16,
    brand: Brand,
    /// The first 6 digits.
    bin: String,
    last4: String,
    /// First 6 + one `*` per hidden digit + last 4.
    masked_pan: String,
    expired: bool,
    /// RFC 3339, UTC.
    created_at: String,
}

/// `PATCH /v1/tokens/{token}`. Unknown fields are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"expiry_month": 7, "expiry_year": 2032}))]
pub struct UpdateBody {
    #[schema(minimum = 1, maximum = 12)]
    expiry_month: i64,
    #[schema(minimum = 2000, maximum = 2099)]
    expiry_year: i64,
    /// Custom tokens only (409 `token_conflict` on a masked or temporary token): the card
    /// replaced under the same token.
    #[schema(
        min_length = 12,
        max_length = 37,
        pattern = "^(?:[0-9][ -]?){11,18}[0-9]$"
    )]
    pan: Option<String>,
    /// Stored with a new `pan`.
    cardholder_name: Option<String>,
}

/// `POST /v1/tokens/{token}/reveal`.
#[derive(ToSchema)]
pub struct RevealAnswer {
    pan: String,
    #[schema(minimum = 1, maximum = 12)]
    expiry_month: u8,
    #[schema(minimum = 2000, maximum = 2099)]
    expiry_year: u16,
    cardholder_name: Option<String>,
}

/// RFC 9457 problem details, with a stable `code`.
#[derive(ToSchema)]
#[schema(example = json!({"type": "urn:panvault:problem:token_not_found", "title": "Not Found",
    "status": 404, "detail": "token not found", "code": "token_not_found"}))]
pub struct Problem {
    /// `urn:panvault:problem:` + `code`.
    r#type: String,
    title: String,
    status: u16,
    /// Names the field at fault, never echoes a value.
    detail: String,
    code: String,
}

/// `POST /v1/merchants`. Unknown fields are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Example Shops", "prefix": "ACME"}))]
pub struct MerchantBody {
    /// 1 to 128 printable characters once trimmed.
    #[schema(min_length = 1)]
    name: String,
    /// Four letters A-Z, unique in the vault (409 `prefix_taken`); random when absent.
    #[schema(pattern = "^[A-Z]{4}$")]
    prefix: Option<String>,
}

/// A new merchant group: its id, name and four-letter prefix.
#[derive(ToSchema)]
pub struct MerchantAnswer {
    merchant_id: String,
    name: String,
    prefix: String,
}

/// `POST /v1/merchants/{merchant_id}/shops`. Unknown fields are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"shop_login": "9000002"}))]
pub struct ShopBody {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,32}$")]
    shop_login: String,
}

/// A shop login added to a merchant group.
#[derive(ToSchema)]
pub struct ShopAnswer {
    merchant_id: String,
    shop_login: String,
}

/// `POST /v1/api-keys`: a shop key (`shop_login`, shop scopes) or an admin key (`admin: true`,
/// admin scopes). Unknown fields are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"shop_login": "9000001", "scopes": ["tokenize", "read"], "label": "checkout"}))]
pub struct ApiKeyBody {
    /// A shop login in a merchant group (else 422).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,32}$")]
    shop_login: Option<String>,
    admin: Option<bool>,
    /// Shop keys: tokenize, read, reveal, charge; admin keys: admin, keys, audit, metrics.
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    label: Option<String>,
}

/// A new API key: its id, the key itself (shown this once) and its scopes.
#[derive(ToSchema)]
pub struct ApiKeyAnswer {
    api_key_id: String,
    /// Shown once.
    api_key: String,
    scopes: Vec<Scope>,
}

/// `POST /v1/sys/unseal`: exactly one of the two (else 422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1)]
pub struct UnsealBody {
    /// `file` keys: the operator passphrase (`pkcs11` keys: the user PIN).
    #[schema(required = false)]
    passphrase: String,
    /// `shamir` keys: one custodian share.
    #[schema(required = false)]
    share: String,
}

/// `/healthz`, `/readyz`.
#[derive(ToSchema)]
pub struct Health {
    status: String,
}

/// A masked token, as the contract's example.
const TOKEN_EXAMPLE: &str = "41XYZW7QK2ZD1111";

#[utoipa::path(post, path = "/v1/tokens", security(("bearer" = [])),
    request_body(content = TokenizeBody, examples(
        ("masked" = (summary = "a standard token", value = json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}))),
        ("custom" = (summary = "a custom token: prefix + value", value = json!({"pan": "5555555555554444", "expiry_month": 3, "expiry_year": 2031, "request_token": "JOHN_SMITH_5533", "cardholder_name": "John Smith"}))),
        ("temporary" = (summary = "a single-use token with its CVV", value = json!({"pan": "378282246310005", "expiry_month": 12, "expiry_year": 2030, "temporary": true, "cvv": "1234", "ttl_seconds": 900}))))),
    responses(
        (status = 201, description = "created", body = TokenizeAnswer, example = json!({"token": "41XYZW7QK2ZD1111", "token_kind": "masked", "token_expiry_month": 12, "token_expiry_year": 2030, "brand": "visa", "bin": "411111", "last4": "1111", "masked_pan": "411111******1111", "expired": false, "created_at": "2026-11-23T20:44:28Z"})),
        (status = 200, description = "the card's existing token (for the same PAN), its expiry updated", body = TokenizeAnswer, example = json!({"token": "XYZWJOHN_SMITH_5533", "token_kind": "custom", "token_expiry_month": 3, "token_expiry_year": 2031, "brand": "mastercard", "bin": "555555", "last4": "4444", "masked_pan": "555555******4444", "expired": false, "created_at": "2026-11-23T20:44:31Z"})),
        (status = 409, description = "token_conflict: the custom value is taken by another card", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_pan, luhn_check_failed, invalid_expiry, invalid_cvv, invalid_custom_token or invalid_field (the field named in detail, its value never echoed)", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:panvault:problem:luhn_check_failed", "title": "Unprocessable Entity", "status": 422, "detail": "pan fails the Luhn check", "code": "luhn_check_failed"}))))]
fn create_token() {}

#[utoipa::path(post, path = "/v1/tokens/batch", security(("bearer" = [])),
    request_body(content = BatchBody, example = json!({"items": [
        {"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030},
        {"pan": "5555555555554444", "expiry_month": 3, "expiry_year": 2031, "request_token": "JOHN_SMITH_5533"}]})),
    responses(
        (status = 200, description = "one result per item, in order: the token fields with `index` and `status` 201/200, or a problem with `index`", body = BatchAnswer),
        (status = 422, description = "batch_too_large (over 1000 items), or invalid_field (`items` missing or not an array, an unknown field)", body = Problem, content_type = "application/problem+json")))]
fn create_tokens_batch() {}

#[utoipa::path(get, path = "/v1/tokens/{token}", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses(
        (status = 200, description = "the token's fields, never the PAN", body = TokenInfo, example = json!({"token": "XYZWJOHN_SMITH_5533", "token_kind": "custom", "token_expiry_month": 3, "token_expiry_year": 2031, "brand": "mastercard", "bin": "555555", "last4": "4444", "masked_pan": "555555******4444", "expired": false, "created_at": "2026-11-23T20:44:31Z", "agreements": [{"id": "AGR-0001", "type": "UNSCHEDULED"}]})),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn get_token() {}

#[utoipa::path(patch, path = "/v1/tokens/{token}", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "the token's fields after the update", body = TokenInfo),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "token_conflict: a new card for a masked or temporary token, or the card has that custom value elsewhere", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_pan, luhn_check_failed, invalid_expiry or invalid_field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn update_token() {}

#[utoipa::path(delete, path = "/v1/tokens/{token}", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses((status = 204, description = "deleted; the ciphertext is gone"),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn delete_token() {}

#[utoipa::path(post, path = "/v1/tokens/{token}/reveal", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses(
        (status = 200, description = "the card (always audited)", body = RevealAnswer, example = json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030, "cardholder_name": "John Smith"})),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: over the key's reveal rate (default 10 per second, burst 20)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "seconds")),
            example = json!({"type": "urn:panvault:problem:rate_limited", "title": "Too Many Requests", "status": 429, "detail": "too many reveals for this API key; retry shortly", "code": "rate_limited"}))))]
fn reveal_token() {}

#[utoipa::path(post, path = "/v1/merchants", request_body = MerchantBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = MerchantAnswer),
        (status = 409, description = "prefix_taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_prefix or invalid_field (named in detail)", body = Problem, content_type = "application/problem+json")))]
fn create_merchant() {}

#[utoipa::path(post, path = "/v1/merchants/{merchant_id}/shops", params(("merchant_id" = String, Path)),
    request_body = ShopBody, security(("bearer" = [])),
    responses((status = 201, description = "added", body = ShopAnswer),
        (status = 404, description = "merchant_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "shop_taken: the shop login is in a merchant group already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_field (named in detail)", body = Problem, content_type = "application/problem+json")))]
fn add_shop() {}

#[utoipa::path(delete, path = "/v1/merchants/{merchant_id}/shops/{shop_login}",
    params(("merchant_id" = String, Path), ("shop_login" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "removed"),
        (status = 404, description = "shop_not_found: no such shop login in this merchant", body = Problem, content_type = "application/problem+json")))]
fn remove_shop() {}

#[utoipa::path(post, path = "/v1/api-keys", request_body = ApiKeyBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = ApiKeyAnswer),
        (status = 422, description = "invalid_field (named in detail): neither or both of shop_login and admin, a shop login in no group, scopes that do not fit the key", body = Problem, content_type = "application/problem+json")))]
fn create_api_key() {}

#[utoipa::path(delete, path = "/v1/api-keys/{api_key_id}", params(("api_key_id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 204, description = "revoked at once"),
        (status = 404, description = "api_key_not_found", body = Problem, content_type = "application/problem+json")))]
fn revoke_api_key() {}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = Health, example = json!({"status": "ok"}))))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready", body = Health, example = json!({"status": "ready"})),
    (status = 503, description = "sealed, or shutting_down", body = Problem, content_type = "application/problem+json")))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format (scope `metrics`)", body = String, content_type = "text/plain"),
    (status = 503, description = "sealed: no key can be checked until the vault is unsealed", body = Problem, content_type = "application/problem+json")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document", body = Object)))]
fn openapi() {}

#[utoipa::path(get, path = "/v1/sys/seal-status", responses((status = 200, description = "OK", body = SealStatus)))]
fn seal_status() {}

#[utoipa::path(post, path = "/v1/sys/unseal",
    request_body(content = UnsealBody, examples(
        ("passphrase" = (summary = "`file` keys", value = json!({"passphrase": "correct horse battery staple"}))),
        ("share" = (summary = "`shamir` keys: one custodian's share per call", value = json!({"share": "pvshare1-..."}))))),
    responses((status = 200, description = "unsealed, progress towards it, or already unsealed", body = SealStatus),
        (status = 400, description = "key_unlock_failed, share_refused or not_enough_shares (audited once unsealed), or malformed_request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_field: not exactly one of passphrase and share, not a string, or not what this vault's keys take", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "audit_broken or auth_record_broken: the keys unlocked but the store fails its integrity check (edited on disk; the server log names the entry); the vault stays sealed", body = Problem, content_type = "application/problem+json")))]
fn unseal() {}

#[utoipa::path(post, path = "/v1/sys/seal", security(("bearer" = [])),
    responses((status = 200, description = "sealed: key material dropped", body = SealStatus)))]
fn seal() {}

#[utoipa::path(post, path = "/v1/sys/keys/rotate", security(("bearer" = [])),
    responses((status = 200, description = "rotated: new KEK version, keys re-wrapped, old versions destroyed", body = Rotation)))]
fn rotate_keys() {}

#[utoipa::path(post, path = "/v1/sys/keys/reencrypt", security(("bearer" = [])),
    responses((status = 202, description = "the background job runs (or already ran): its progress, also in GET /v1/sys/keys", body = ReencryptJob)))]
fn reencrypt_keys() {}

#[utoipa::path(get, path = "/v1/audit", security(("bearer" = [])),
    params(("since" = Option<u64>, Query, minimum = 1, description = "first entry number (default 1)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "entries per page, 1 to 1000 (default 100)")),
    responses((status = 200, description = "a page of the hash-chained audit trail (the read itself is audited)", body = AuditPage),
        (status = 422, description = "invalid_field: a query parameter out of range or unknown (named)", body = Problem, content_type = "application/problem+json")))]
fn audit_entries() {}

#[utoipa::path(get, path = "/v1/sys/evidence", security(("bearer" = [])),
    responses((status = 200, description = "the assessor's report, every figure computed now", body = crate::evidence::Evidence)))]
fn evidence() {}

#[utoipa::path(get, path = "/v1/sys/keys", security(("bearer" = [])),
    responses((status = 200, description = "KEK versions and DEKs (no key material)", body = KeyStatus)))]
fn key_status() {}

const PROXY_DOC: &str = "The gateway's own request (see its documentation), with a panvault token where the card number goes; forwarded to the configured base URL with the card swapped in. The answer is the gateway's (any status it gave), with card numbers masked; the problem answers listed are panvault's own, given before anything is forwarded (or, 502/504, when the gateway could not answer). A merchant whose gateway uses Authorization sends panvault's key as X-Panvault-Authorization: Bearer ...";

/// `utoipa::path` for one method of the proxy; the same parameters and answers for each.
macro_rules! proxy_operation {
    ($method:ident, $name:ident) => {
        #[utoipa::path($method, path = "/v1/proxy/{gateway}/{path}", description = PROXY_DOC,
            params(("gateway" = String, Path, description = "nexi, axerve, worldline or mpgs"),
                ("path" = String, Path, description = "the gateway path below its base URL (may hold slashes)"),
                ("X-Panvault-Request-Token" = Option<String>, Header, max_length = 29, pattern = "^(:FORCED:)?[A-Za-z0-9_-]{1,21}$",
                    description = "MASKEDPAN, :FORCED:MASKEDPAN, a custom value or :FORCED:<custom>: tokenize the raw card of this charge (X-Panvault-Token* answer headers; the key needs the tokenize scope too, else 403 forbidden)")),
            security(("bearer" = [])),
            responses(
                (status = "default", description = "the gateway's answer, card numbers masked; X-Panvault-Token* headers when a token was asked for"),
                (status = 400, description = "invalid_path (`.`/`..` segments, an encoded slash, an absolute URL), malformed_request or a duplicate JSON key", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "unknown_gateway, or token_not_found (another group's, deleted, expired or used temporary token, or a token-shaped value whose prefix no merchant has): nothing forwarded", body = Problem, content_type = "application/problem+json"),
                (status = 413, description = "payload_too_large: over 64 KiB", body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "agreement_required, agreement_mismatch, invalid_custom_token (X-Panvault-Request-Token), invalid_pan, invalid_expiry, invalid_field, or token_not_swapped (Axerve SOAP: a token of the merchant outside callPagamS2S cardNumber/tokenValue, the element named): nothing forwarded", body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "rate_limited: over the key's proxied-charge rate (default 50 per second, burst 100): nothing revealed or forwarded", body = Problem, content_type = "application/problem+json",
                    headers(("Retry-After" = u32, description = "seconds"))),
                (status = 503, description = "sealed, or proxy_unavailable: the gateway is not configured", body = Problem, content_type = "application/problem+json"),
                (status = 502, description = "gateway_unreachable", body = Problem, content_type = "application/problem+json"),
                (status = 504, description = "gateway_timeout", body = Problem, content_type = "application/problem+json")))]
        fn $name() {}
    };
}
proxy_operation!(get, proxy_get);
proxy_operation!(post, proxy_post);
proxy_operation!(put, proxy_put);
proxy_operation!(patch, proxy_patch);
proxy_operation!(delete, proxy_delete);

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
    info(title = "panvault", description = "Card-tokenization vault: Axerve-format tokens under envelope encryption. Errors are RFC 9457 problem+json with a stable `code`. A method a path does not list is answered 405 `method_not_allowed` with an `Allow` header; an unknown path 404 `not_found`."),
    paths(create_token, create_tokens_batch, get_token, update_token, delete_token, reveal_token,
        create_merchant, add_shop, remove_shop, create_api_key, revoke_api_key, healthz, readyz, metrics, openapi,
        seal_status, unseal, seal, rotate_keys, reencrypt_keys, key_status, audit_entries, evidence,
        proxy_get, proxy_post, proxy_put, proxy_patch, proxy_delete),
    components(schemas(TokenInfo, TokenizeAnswer, Agreement, Brand, TokenKind, Scope, TokenizeBody, BatchBody, BatchResult,
        BatchAnswer, UpdateBody, RevealAnswer, Problem, MerchantBody, MerchantAnswer, ShopBody, ShopAnswer, ApiKeyBody,
        ApiKeyAnswer, UnsealBody, Health, SealStatus, Rotation, KeyStatus, KekStatus, DekStatus, ReencryptJob, AuditPage, crate::evidence::Evidence, crate::evidence::TlsEvidence, crate::evidence::AuditEvidence, crate::evidence::ApiKeyEvidence, crate::evidence::StoreEvidence)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// A problem answer for `components.responses`, with an example of its `code`.
fn problem_response(
    description: &str,
    status: u16,
    title: &str,
    code: &str,
    detail: &str,
) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"},
            "example": {"type": format!("urn:panvault:problem:{code}"), "title": title,
                "status": status, "detail": detail, "code": code},
        }},
    })
}

/// (status, name in `components.responses`, the response).
type Shared = Vec<(&'static str, &'static str, Value)>;

/// The answers shared by every operation of a kind: those behind an API key, and those that
/// take a JSON body (`json_body` in src/http/body.rs).
fn shared_responses() -> (Shared, Shared) {
    let mut unauthorized = problem_response(
        "unauthorized: no API key, or not a valid live one (audited)",
        401,
        "Unauthorized",
        "unauthorized",
        "missing or invalid API key",
    );
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}});
    let mut too_many_failures = problem_response(
        "rate_limited: too many failed authentications from this address (default 5 per second, burst 50); every one is still counted in the audit trail, one entry per address and minute",
        429,
        "Too Many Requests",
        "rate_limited",
        "too many failed authentications from this address; retry in 1 s",
    );
    too_many_failures["headers"] =
        json!({"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}});
    let secured = vec![
        ("401", "Unauthorized", unauthorized),
        ("429", "TooManyFailedAuthentications", too_many_failures),
        (
            "403",
            "Forbidden",
            problem_response(
                "forbidden: the key lacks the scope this call needs, or its shop login is in no merchant group (audited)",
                403,
                "Forbidden",
                "forbidden",
                "forbidden: the API key lacks the scope this call needs",
            ),
        ),
        (
            "503",
            "Sealed",
            problem_response(
                "sealed: the vault is sealed (POST /v1/sys/unseal), or shutting_down",
                503,
                "Service Unavailable",
                "sealed",
                "vault is sealed",
            ),
        ),
    ];
    let json_body = vec![
        (
            "408",
            "RequestTimeout",
            problem_response(
                "request_timeout: the body did not arrive within the body read timeout (default 10 s) of the request head; the connection is closed",
                408,
                "Request Timeout",
                "request_timeout",
                "the request body did not arrive within 10 s",
            ),
        ),
        (
            "400",
            "MalformedRequest",
            problem_response(
                "malformed_request: the body is not JSON, or an object in it repeats a key",
                400,
                "Bad Request",
                "malformed_request",
                "the body is not valid JSON",
            ),
        ),
        (
            "413",
            "PayloadTooLarge",
            problem_response(
                "payload_too_large: over 64 KiB (a batch: 4 MiB)",
                413,
                "Payload Too Large",
                "payload_too_large",
                "request bodies are limited to 65536 bytes",
            ),
        ),
        (
            "415",
            "UnsupportedMediaType",
            problem_response(
                "unsupported_media_type: not Content-Type application/json",
                415,
                "Unsupported Media Type",
                "unsupported_media_type",
                "send Content-Type: application/json",
            ),
        ),
        (
            "422",
            "InvalidField",
            problem_response(
                "invalid_field: the body is not a JSON object, holds an unknown field, or a field is invalid (named in detail, its value never echoed)",
                422,
                "Unprocessable Entity",
                "invalid_field",
                "invalid field `ttl_seconds`: must be 1 to 3600",
            ),
        ),
    ];
    (secured, json_body)
}

/// The document as JSON.
pub fn document() -> String {
    let doc = ApiDoc::openapi().to_json().unwrap_or_default();
    let Ok(mut v) = serde_json::from_str::<Value>(&doc) else {
        return doc;
    };
    let (secured, json_body) = shared_responses();
    if let Some(components) = v["components"].as_object_mut() {
        let responses = components.entry("responses").or_insert_with(|| json!({}));
        for (_, name, r) in secured.iter().chain(&json_body) {
            responses[*name] = r.clone();
        }
    }
    if let Some(paths) = v["paths"].as_object_mut() {
        for op in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for o in op.values_mut().filter_map(|o| o.as_object_mut()) {
                let has_security = o.contains_key("security");
                let has_json_body = o
                    .get("requestBody")
                    .and_then(|b| b["content"].get("application/json"))
                    .is_some();
                let Some(r) = o.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                    continue;
                };
                let wanted = secured
                    .iter()
                    .filter(|_| has_security)
                    .chain(json_body.iter().filter(|_| has_json_body));
                // An operation's own description of a status (say, unseal's 400) stays.
                for (status, name, _) in wanted {
                    r.entry(*status).or_insert_with(
                        || json!({"$ref": format!("#/components/responses/{name}")}),
                    );
                }
            }
        }
    }
    // An API key is for a shop login (shop scopes) or is an admin key (admin scopes), never both:
    // exactly what the handler accepts, which the struct alone cannot say.
    if let Some(body) = v["components"]["schemas"]["ApiKeyBody"].as_object_mut() {
        body.insert(
            "oneOf".into(),
            json!([
                {"title": "shop key", "required": ["shop_login"], "properties": {
                    "shop_login": {"type": "string"},
                    "admin": {"enum": [false, null]},
                    "scopes": {"items": {"enum": ["tokenize", "read", "reveal", "charge"]}}}},
                {"title": "admin key", "required": ["admin"], "properties": {
                    "admin": {"const": true},
                    "shop_login": {"type": "null"},
                    "scopes": {"items": {"enum": ["admin", "keys", "audit", "metrics"]}}}}
            ]),
        );
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::access::Scope;
    use crate::pan::Brand;
    use crate::token::TokenKind;

    fn doc() -> Value {
        serde_json::from_str(&document()).unwrap()
    }

    fn sorted(keys: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut v: Vec<String> = keys.into_iter().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn document_is_openapi_3_1_and_lists_every_route() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
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
            "/v1/openapi.json",
            "/v1/sys/seal-status",
            "/v1/sys/unseal",
            "/v1/sys/seal",
            "/v1/sys/keys/rotate",
            "/v1/sys/keys/reencrypt",
            "/v1/sys/keys",
            "/v1/audit",
            "/v1/sys/evidence",
            "/v1/proxy/{gateway}/{path}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        // The request schema lists exactly the fields the handler accepts.
        let props = doc["components"]["schemas"]["TokenizeBody"]["properties"]
            .as_object()
            .unwrap();
        let mut documented: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut parsed = super::super::TOKENIZE_FIELDS.to_vec();
        documented.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(documented, parsed);
    }

    #[test]
    fn every_operation_documents_its_shared_problem_answers() {
        let doc = doc();
        let mut secured = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let r = &op["responses"];
                let has_body = op["requestBody"]["content"]["application/json"].is_object();
                let is_secured = op["security"].is_array();
                for (status, on) in [
                    ("401", is_secured),
                    ("403", is_secured),
                    ("503", is_secured || path == "/readyz"),
                    ("400", has_body || path.starts_with("/v1/proxy/")),
                    ("413", has_body || path.starts_with("/v1/proxy/")),
                    ("415", has_body),
                    (
                        "422",
                        has_body || path.starts_with("/v1/proxy/") || path == "/v1/audit",
                    ),
                ] {
                    assert_eq!(r[status].is_object(), on, "{method} {path} {status}");
                }
                secured += usize::from(is_secured);
            }
        }
        assert!(secured >= 20, "{secured}");
        // Where an answer can be missing, 404; reveal's 429.
        for (path, method) in [
            ("/v1/tokens/{token}", "get"),
            ("/v1/tokens/{token}", "patch"),
            ("/v1/tokens/{token}", "delete"),
            ("/v1/tokens/{token}/reveal", "post"),
            ("/v1/merchants/{merchant_id}/shops", "post"),
            ("/v1/merchants/{merchant_id}/shops/{shop_login}", "delete"),
            ("/v1/api-keys/{api_key_id}", "delete"),
            ("/v1/proxy/{gateway}/{path}", "post"),
        ] {
            assert!(
                doc["paths"][path][method]["responses"]["404"].is_object(),
                "{method} {path}"
            );
        }
        assert!(doc["paths"]["/v1/tokens/{token}/reveal"]["post"]["responses"]["429"].is_object());
        // Each shared answer resolves, with the code it names.
        for (name, code) in [
            ("Unauthorized", "unauthorized"),
            ("Forbidden", "forbidden"),
            ("Sealed", "sealed"),
            ("MalformedRequest", "malformed_request"),
            ("PayloadTooLarge", "payload_too_large"),
            ("UnsupportedMediaType", "unsupported_media_type"),
            ("InvalidField", "invalid_field"),
        ] {
            let r = &doc["components"]["responses"][name]["content"]["application/problem+json"];
            assert_eq!(r["schema"]["$ref"], "#/components/schemas/Problem");
            assert_eq!(r["example"]["code"], code);
        }
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    }

    #[test]
    fn request_schemas_carry_the_servers_limits() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        let body = &s["TokenizeBody"]["properties"];
        assert_eq!(body["expiry_month"]["minimum"], 1);
        assert_eq!(body["expiry_month"]["maximum"], 12);
        assert_eq!(body["expiry_year"]["minimum"], 2000);
        assert_eq!(body["expiry_year"]["maximum"], 2099);
        // 19 digits with a separator between each two.
        assert_eq!(body["pan"]["maxLength"], 37);
        assert_eq!(body["ttl_seconds"]["maximum"], 3600);
        assert_eq!(
            body["cardholder_name"]["maxLength"],
            crate::vault::MAX_NAME_LEN
        );
        assert_eq!(
            s["BatchBody"]["properties"]["items"]["maxItems"],
            crate::vault::MAX_BATCH_ITEMS
        );
        assert_eq!(
            s["UpdateBody"]["properties"]["pan"]["pattern"],
            body["pan"]["pattern"]
        );
        // Every body refuses unknown fields, as `only_fields` does.
        for name in [
            "TokenizeBody",
            "BatchBody",
            "UpdateBody",
            "MerchantBody",
            "ShopBody",
            "ApiKeyBody",
            "UnsealBody",
        ] {
            assert_eq!(s[name]["additionalProperties"], false, "{name}");
        }
        // Unseal: exactly one of two non-null strings.
        assert_eq!(s["UnsealBody"]["minProperties"], 1);
        assert_eq!(s["UnsealBody"]["maxProperties"], 1);
        assert!(
            s["UnsealBody"]["required"]
                .as_array()
                .is_none_or(Vec::is_empty)
        );
        assert_eq!(
            s["UnsealBody"]["properties"]["passphrase"]["type"],
            "string"
        );
        // The scopes a key can take, by kind.
        assert_eq!(
            sorted(
                s["Scope"]["enum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
            ),
            sorted(Scope::ALL.iter().map(|x| x.as_str().to_string()))
        );
        let branches = s["ApiKeyBody"]["oneOf"].as_array().unwrap();
        let scopes_of = |i: usize| -> Vec<String> {
            sorted(
                branches[i]["properties"]["scopes"]["items"]["enum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string()),
            )
        };
        assert_eq!(
            scopes_of(0),
            sorted(
                crate::access::SHOP_SCOPES
                    .iter()
                    .map(|x| x.as_str().to_string())
            )
        );
        assert_eq!(
            scopes_of(1),
            sorted(
                crate::access::ADMIN_SCOPES
                    .iter()
                    .map(|x| x.as_str().to_string())
            )
        );
        let audit = &doc["paths"]["/v1/audit"]["get"]["parameters"];
        assert_eq!(audit[1]["name"], "limit");
        assert_eq!(audit[1]["schema"]["maximum"], 1000);
    }

    #[test]
    fn the_tokenize_answer_is_token_info_without_agreements() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        let info = crate::vault::TokenInfo {
            token: TOKEN_EXAMPLE.into(),
            token_kind: TokenKind::Masked,
            token_expiry_month: 12,
            token_expiry_year: 2030,
            brand: Brand::Visa,
            bin: "411111".into(),
            last4: "1111".into(),
            masked_pan: "411111******1111".into(),
            expired: false,
            created_at: "2026-11-23T20:44:28Z".into(),
            agreements: vec![],
        };
        let mut served = serde_json::to_value(&info).unwrap();
        served.as_object_mut().unwrap().remove("agreements");
        let served = sorted(served.as_object().unwrap().keys().cloned());
        let documented = sorted(
            s["TokenizeAnswer"]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned(),
        );
        assert_eq!(documented, served);
        let required = sorted(
            s["TokenizeAnswer"]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        );
        assert_eq!(required, served);
        // The examples are the published test cards and the contract's token formats.
        let create = &doc["paths"]["/v1/tokens"]["post"];
        assert_eq!(
            create["responses"]["201"]["content"]["application/json"]["example"]["token"],
            TOKEN_EXAMPLE
        );
        let examples = create["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap();
        for e in examples.values() {
            let pan = e["value"]["pan"].as_str().unwrap();
            assert!(["4111111111111111", "5555555555554444", "378282246310005"].contains(&pan));
            assert!(crate::pan::Pan::parse(pan).is_ok());
        }
    }
}
