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
//! The problem answers that every operation of a kind can give are added in one place, where
//! the document is built, rather than on each handler: 401, 403 and 503 on every operation
//! behind an API key (the vault is checked first, then the key, then its scope), and 400, 413,
//! 415 and 422 on every operation that takes a JSON body. Examples use only published test card
//! numbers. Every operation has a `summary` and one of the tags declared at the top; `servers`
//! is where the API is: the listener's own address when served ([`document_for_listener`]),
//! else [`DEFAULT_SERVER`] or the URL given to `panvault openapi --server`.
#![allow(dead_code)] // the schema-only types exist for the document, not to be built

use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::schemas::{
    Agreement, AuditEntry, AuditPage, Brand, DekStatus, HardeningCheck, KekStatus, KeyStatus,
    ReencryptJob, Rotation, Scope, SignedHead, TokenInfo, TokenKind,
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

/// One result of a batch, at the `index` of its item: the token (`status` 201 or 200, every
/// field of the `POST /v1/tokens` answer), or the item's problem (`status` 4xx or 500, with its
/// `code`). Each result is exactly one of the two.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// The item was tokenized.
    Tokenized(BatchTokenized),
    /// The item was refused.
    Refused(BatchProblem),
}

/// A batch item that was tokenized: its `index`, `status` 201 (a new token) or 200 (the card's
/// existing token), and the fields of the `POST /v1/tokens` answer.
#[derive(ToSchema)]
pub struct BatchTokenized {
    /// The item's position in `items`, from 0.
    index: usize,
    /// 201: a new token; 200: the card's existing token.
    #[schema(minimum = 200, maximum = 201)]
    status: u16,
    /// As in the `POST /v1/tokens` answer.
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

/// A batch item that was refused: its `index` and the problem the same request alone would
/// have been answered with (the item's value never echoed).
#[derive(ToSchema)]
pub struct BatchProblem {
    /// The item's position in `items`, from 0.
    index: usize,
    /// `urn:panvault:problem:` + `code`.
    r#type: String,
    title: String,
    /// The status the item alone would have had (422, 409, ...).
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// Names the field at fault, never echoes a value.
    detail: String,
    code: String,
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
    /// Custom tokens only (409 `card_change_not_allowed` for a different card on a masked or
    /// temporary token): the card replaced under the same token.
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
    /// Null when none was stored.
    #[schema(required = true)]
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
    /// On a 403 for a missing scope: the scope the call needs (`tokenize`, `read`, `reveal`,
    /// `charge`, `admin`, `keys`, `audit`, `metrics`).
    required_scope: Option<String>,
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

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", summary = "Tokenize a card", security(("bearer" = [])),
    request_body(content = TokenizeBody, examples(
        ("masked" = (summary = "a standard token", value = json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030}))),
        ("custom" = (summary = "a custom token: prefix + value", value = json!({"pan": "5555555555554444", "expiry_month": 3, "expiry_year": 2031, "request_token": "JOHN_SMITH_5533", "cardholder_name": "John Smith"}))),
        ("temporary" = (summary = "a single-use token with its CVV", value = json!({"pan": "378282246310005", "expiry_month": 12, "expiry_year": 2030, "temporary": true, "cvv": "1234", "ttl_seconds": 900}))))),
    responses(
        (status = 201, description = "created", body = TokenizeAnswer, example = json!({"token": "41XYZW7QK2ZD1111", "token_kind": "masked", "token_expiry_month": 12, "token_expiry_year": 2030, "brand": "visa", "bin": "411111", "last4": "1111", "masked_pan": "411111******1111", "expired": false, "created_at": "2026-11-23T20:44:28Z"})),
        (status = 200, description = "the card's existing token (for the same PAN): its stored expiry becomes the later of the stored one and the request's, never earlier, and is the one answered; a request whose expiry has passed gets this too", body = TokenizeAnswer, example = json!({"token": "XYZWJOHN_SMITH_5533", "token_kind": "custom", "token_expiry_month": 3, "token_expiry_year": 2031, "brand": "mastercard", "bin": "555555", "last4": "4444", "masked_pan": "555555******4444", "expired": false, "created_at": "2026-11-23T20:44:31Z"})),
        (status = 409, description = "token_conflict: the custom value is taken by another card", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_pan, luhn_check_failed, invalid_expiry, card_expired (a new token for a card whose expiry month has ended, UTC), invalid_cvv, invalid_custom_token or invalid_field (the field named in detail, its value never echoed)", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:panvault:problem:luhn_check_failed", "title": "Unprocessable Entity", "status": 422, "detail": "pan fails the Luhn check", "code": "luhn_check_failed"}))))]
fn create_token() {}

#[utoipa::path(post, path = "/v1/tokens/batch", tag = "tokens", summary = "Tokenize up to 1000 cards in one call", security(("bearer" = [])),
    request_body(content = BatchBody, example = json!({"items": [
        {"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030},
        {"pan": "5555555555554444", "expiry_month": 3, "expiry_year": 2031, "request_token": "JOHN_SMITH_5533"}]})),
    responses(
        (status = 200, description = "one result per item, in order: the token fields with `index` and `status` 201/200, or a problem with `index`", body = BatchAnswer),
        (status = 422, description = "batch_too_large (over 1000 items), or invalid_field (`items` missing or not an array, an unknown field)", body = Problem, content_type = "application/problem+json")))]
fn create_tokens_batch() {}

#[utoipa::path(get, path = "/v1/tokens/{token}", tag = "tokens", summary = "Read a token's fields", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses(
        (status = 200, description = "the token's fields, never the PAN", body = TokenInfo, example = json!({"token": "XYZWJOHN_SMITH_5533", "token_kind": "custom", "token_expiry_month": 3, "token_expiry_year": 2031, "brand": "mastercard", "bin": "555555", "last4": "4444", "masked_pan": "555555******4444", "expired": false, "created_at": "2026-11-23T20:44:31Z", "agreements": [{"id": "AGR-0001", "type": "UNSCHEDULED"}]})),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn get_token() {}

#[utoipa::path(patch, path = "/v1/tokens/{token}", tag = "tokens", summary = "Update a token's expiry (a custom token's card too)", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "the token's fields after the update", body = TokenInfo),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "card_change_not_allowed: a different card for a masked (standard) or temporary token; tokenize the new card instead", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "urn:panvault:problem:card_change_not_allowed", "title": "Conflict", "status": 409, "detail": "a standard token's card cannot change; tokenize the new card", "code": "card_change_not_allowed"})),
        (status = 422, description = "invalid_pan, luhn_check_failed, invalid_expiry, card_expired (a custom token's new card whose expiry has passed; the expiry alone is set as given, even a passed one) or invalid_field (named in detail, never echoed)", body = Problem, content_type = "application/problem+json")))]
fn update_token() {}

#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "tokens", summary = "Delete a token and its ciphertext", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses((status = 204, description = "deleted; the ciphertext is gone"),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json")))]
fn delete_token() {}

#[utoipa::path(post, path = "/v1/tokens/{token}/reveal", tag = "tokens", summary = "Reveal the card behind a token", security(("bearer" = [])),
    params(("token" = String, Path, example = "41XYZW7QK2ZD1111")),
    responses(
        (status = 200, description = "the card (always audited)", body = RevealAnswer, example = json!({"pan": "4111111111111111", "expiry_month": 12, "expiry_year": 2030, "cardholder_name": "John Smith"})),
        (status = 404, description = "token_not_found (also another group's token)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: over the key's reveal rate (default 10 per second, burst 20)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "seconds")),
            example = json!({"type": "urn:panvault:problem:rate_limited", "title": "Too Many Requests", "status": 429, "detail": "too many reveals for this API key; retry shortly", "code": "rate_limited"}))))]
fn reveal_token() {}

#[utoipa::path(post, path = "/v1/merchants", tag = "merchants", summary = "Create a merchant group", request_body = MerchantBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = MerchantAnswer),
        (status = 409, description = "prefix_taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_prefix or invalid_field (named in detail)", body = Problem, content_type = "application/problem+json")))]
fn create_merchant() {}

#[utoipa::path(post, path = "/v1/merchants/{merchant_id}/shops", tag = "merchants", summary = "Add a shop login to a merchant group", params(("merchant_id" = String, Path)),
    request_body = ShopBody, security(("bearer" = [])),
    responses((status = 201, description = "added", body = ShopAnswer),
        (status = 404, description = "merchant_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "shop_taken: the shop login is in a merchant group already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_field (named in detail)", body = Problem, content_type = "application/problem+json")))]
fn add_shop() {}

#[utoipa::path(delete, path = "/v1/merchants/{merchant_id}/shops/{shop_login}", tag = "merchants", summary = "Remove a shop login from its merchant group",
    params(("merchant_id" = String, Path), ("shop_login" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "removed"),
        (status = 404, description = "shop_not_found: no such shop login in this merchant", body = Problem, content_type = "application/problem+json")))]
fn remove_shop() {}

#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", summary = "Create a shop or admin API key", request_body = ApiKeyBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = ApiKeyAnswer),
        (status = 422, description = "invalid_field (named in detail): neither or both of shop_login and admin, a shop login in no group, scopes that do not fit the key", body = Problem, content_type = "application/problem+json")))]
fn create_api_key() {}

#[utoipa::path(delete, path = "/v1/api-keys/{api_key_id}", tag = "api-keys", summary = "Revoke an API key", params(("api_key_id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 204, description = "revoked at once"),
        (status = 404, description = "api_key_not_found", body = Problem, content_type = "application/problem+json")))]
fn revoke_api_key() {}

#[utoipa::path(get, path = "/healthz", tag = "meta", summary = "Liveness", responses((status = 200, description = "alive", body = Health, example = json!({"status": "ok"}))))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", tag = "meta", summary = "Readiness: unsealed and able to serve", responses((status = 200, description = "ready", body = Health, example = json!({"status": "ready"})),
    (status = 503, description = "sealed, or shutting_down", body = Problem, content_type = "application/problem+json")))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", tag = "meta", summary = "Prometheus metrics", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format (scope `metrics`)", body = String, content_type = "text/plain"),
    (status = 503, description = "sealed: no key can be checked until the vault is unsealed", body = Problem, content_type = "application/problem+json")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", summary = "This OpenAPI document", responses((status = 200, description = "this document", body = Object)))]
fn openapi() {}

#[utoipa::path(get, path = "/v1/sys/seal-status", tag = "sys", summary = "Seal status", responses((status = 200, description = "OK", body = SealStatus)))]
fn seal_status() {}

#[utoipa::path(post, path = "/v1/sys/unseal", tag = "sys", summary = "Unseal the vault with a passphrase, PIN or share",
    request_body(content = UnsealBody, examples(
        ("passphrase" = (summary = "`file` keys", value = json!({"passphrase": "correct horse battery staple"}))),
        ("share" = (summary = "`shamir` keys: one custodian's share per call", value = json!({"share": "pvshare1-..."}))))),
    responses((status = 200, description = "unsealed, progress towards it, or already unsealed", body = SealStatus),
        (status = 400, description = "key_unlock_failed, share_refused or not_enough_shares (audited once unsealed), or malformed_request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_field: not exactly one of passphrase and share, not a string, or not what this vault's keys take", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "audit_broken or auth_record_broken: the keys unlocked but the store fails its integrity check (edited on disk; the server log names the entry); the vault stays sealed", body = Problem, content_type = "application/problem+json")))]
fn unseal() {}

#[utoipa::path(post, path = "/v1/sys/seal", tag = "sys", summary = "Seal the vault: drop its keys from memory", security(("bearer" = [])),
    responses((status = 200, description = "sealed: key material dropped", body = SealStatus)))]
fn seal() {}

#[utoipa::path(post, path = "/v1/sys/keys/rotate", tag = "sys", summary = "Rotate the KEK", security(("bearer" = [])),
    responses((status = 200, description = "rotated: new KEK version, keys re-wrapped, old versions destroyed", body = Rotation)))]
fn rotate_keys() {}

#[utoipa::path(post, path = "/v1/sys/keys/reencrypt", tag = "sys", summary = "Start re-encrypting old records under the current DEK", security(("bearer" = [])),
    responses((status = 202, description = "the background job runs (or already ran): its progress, also in GET /v1/sys/keys", body = ReencryptJob)))]
fn reencrypt_keys() {}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", summary = "Page through the audit trail", security(("bearer" = [])),
    params(("since" = Option<u64>, Query, minimum = 1, description = "first entry number (default 1)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "entries per page, 1 to 1000 (default 100)")),
    responses((status = 200, description = "a page of the hash-chained audit trail (the read itself is audited)", body = AuditPage),
        (status = 422, description = "invalid_field: a query parameter out of range or unknown (named)", body = Problem, content_type = "application/problem+json")))]
fn audit_entries() {}

#[utoipa::path(get, path = "/v1/sys/evidence", tag = "audit", summary = "The assessor's evidence report", security(("bearer" = [])),
    responses((status = 200, description = "the assessor's report, every figure computed now", body = crate::evidence::Evidence)))]
fn evidence() {}

#[utoipa::path(get, path = "/v1/sys/keys", tag = "sys", summary = "KEK versions and DEKs", security(("bearer" = [])),
    responses((status = 200, description = "KEK versions and DEKs (no key material)", body = KeyStatus)))]
fn key_status() {}

const PROXY_DOC: &str = "The gateway's own request (see its documentation), with a panvault token where the card number goes; forwarded to the configured base URL with the card swapped in. The answer is the gateway's (any status it gave), with card numbers masked; the problem answers listed are panvault's own, given before anything is forwarded (or, 502/504, when the gateway could not answer). A merchant whose gateway uses Authorization sends panvault's key as X-Panvault-Authorization: Bearer ...";

/// `utoipa::path` for one method of the proxy; the same parameters and answers for each.
macro_rules! proxy_operation {
    ($method:ident, $name:ident, $summary:literal) => {
        #[utoipa::path($method, path = "/v1/proxy/{gateway}/{path}", tag = "proxy", summary = $summary, description = PROXY_DOC,
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
                (status = 422, description = "agreement_required, agreement_mismatch, invalid_custom_token (X-Panvault-Request-Token), invalid_pan, invalid_expiry or invalid_field: nothing forwarded", body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "rate_limited: over the key's proxied-charge rate (default 50 per second, burst 100): nothing revealed or forwarded", body = Problem, content_type = "application/problem+json",
                    headers(("Retry-After" = u32, description = "seconds"))),
                (status = 503, description = "sealed, or proxy_unavailable: the gateway is not configured", body = Problem, content_type = "application/problem+json"),
                (status = 502, description = "gateway_unreachable", body = Problem, content_type = "application/problem+json"),
                (status = 504, description = "gateway_timeout", body = Problem, content_type = "application/problem+json")))]
        fn $name() {}
    };
}
proxy_operation!(
    get,
    proxy_get,
    "Forward a GET to a gateway, tokens swapped for cards"
);
proxy_operation!(
    post,
    proxy_post,
    "Forward a POST to a gateway, tokens swapped for cards"
);
proxy_operation!(
    put,
    proxy_put,
    "Forward a PUT to a gateway, tokens swapped for cards"
);
proxy_operation!(
    patch,
    proxy_patch,
    "Forward a PATCH to a gateway, tokens swapped for cards"
);
proxy_operation!(
    delete,
    proxy_delete,
    "Forward a DELETE to a gateway, tokens swapped for cards"
);

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
    components(schemas(TokenInfo, TokenizeAnswer, Agreement, Brand, TokenKind, Scope, TokenizeBody, BatchBody, BatchResult, BatchTokenized, BatchProblem,
        BatchAnswer, UpdateBody, RevealAnswer, Problem, MerchantBody, MerchantAnswer, ShopBody, ShopAnswer, ApiKeyBody,
        ApiKeyAnswer, UnsealBody, Health, SealStatus, Rotation, KeyStatus, KekStatus, DekStatus, ReencryptJob, AuditPage, AuditEntry, SignedHead, HardeningCheck, crate::evidence::Evidence, crate::evidence::TlsEvidence, crate::evidence::AuditEvidence, crate::evidence::ApiKeyEvidence, crate::evidence::StoreEvidence)),
    tags(
        (name = "tokens", description = "Tokenize cards (one or a batch), read, update and delete tokens, reveal a card: shop keys with the `tokenize`, `read` or `reveal` scope."),
        (name = "proxy", description = "A gateway's own API (Nexi, Axerve, Worldline, MPGS) with a token where the card number goes: shop keys with the `charge` scope."),
        (name = "merchants", description = "Merchant groups and their shop logins: admin keys with the `admin` scope."),
        (name = "api-keys", description = "Shop and admin API keys: admin keys with the `admin` scope."),
        (name = "sys", description = "The seal state (status and unseal need no key; seal: scope `keys`) and the keys (rotation, re-encryption, status: scope `keys`)."),
        (name = "audit", description = "The hash-chained audit trail and the assessor's evidence report: scope `audit`."),
        (name = "meta", description = "Liveness, readiness, metrics (scope `metrics`) and this document."),
    ),
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
        "unauthorized: no API key, or not a valid live one (audited). On /v1/proxy/..., a request whose Authorization is not a panvault key (a gateway's Basic or v1HMAC) and that has no X-Panvault-Authorization is told to send panvault's key there",
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
    let mut forbidden = problem_response(
        "forbidden: the key lacks the scope this call needs (named in detail and in `required_scope`), or its shop login is in no merchant group (audited)",
        403,
        "Forbidden",
        "forbidden",
        "forbidden: this call needs an API key with the `reveal` scope",
    );
    forbidden["content"]["application/problem+json"]["example"]["required_scope"] = json!("reveal");
    let secured = vec![
        ("401", "Unauthorized", unauthorized),
        ("429", "TooManyFailedAuthentications", too_many_failures),
        ("403", "Forbidden", forbidden),
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
                "malformed_request: the body is not UTF-8 (the byte offset named), not JSON, or an object in it repeats a key",
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
                "unsupported_media_type: not Content-Type application/json, or a charset other than UTF-8",
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

/// Where `panvault openapi` says the API is unless told (`--server`): `serve`'s default
/// listen address.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:8443";

/// The document as JSON, its `servers` naming [`DEFAULT_SERVER`].
pub fn document() -> String {
    document_with_server(DEFAULT_SERVER)
}

/// The document as JSON, its `servers` naming `url` (`panvault openapi --server URL`).
pub fn document_with_server(url: &str) -> String {
    build(json!([{"url": url}]))
}

/// The document a server listening on `addr` serves: `servers` is that address, `https` unless
/// the listener is plain HTTP (`secure` false). A listener on every address (`0.0.0.0`, `::`)
/// cannot name the one its clients use: its `servers` entry takes the host as a variable whose
/// default is the loopback address.
pub fn document_for_listener(addr: std::net::SocketAddr, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    let server = if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
        json!({
            "url": format!("{scheme}://{{host}}:{}", addr.port()),
            "description": format!("this vault, listening on every address ({addr})"),
            "variables": {"host": {
                "default": loopback,
                "description": "the vault's host name or address, as its certificate names it",
            }},
        })
    } else {
        json!({"url": format!("{scheme}://{addr}")})
    };
    build(json!([server]))
}

/// The document with `servers` as given, and what the derive cannot say added: the problem
/// answers shared by every operation of a kind, the API key body's two forms, the evidence
/// report's typed parts.
fn build(servers: Value) -> String {
    let doc = ApiDoc::openapi().to_json().unwrap_or_default();
    let Ok(mut v) = serde_json::from_str::<Value>(&doc) else {
        return doc;
    };
    v["servers"] = servers;
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
    // The evidence report's key status and start checks are core types the derive on
    // `Evidence` leaves untyped: point them at their schemas.
    if let Some(props) = v["components"]["schemas"]["Evidence"]["properties"].as_object_mut() {
        for (field, schema) in [
            ("keys", json!({"$ref": "#/components/schemas/KeyStatus"})),
            (
                "hardening",
                json!({"type": "array", "items": {"$ref": "#/components/schemas/HardeningCheck"}}),
            ),
        ] {
            let mut schema = schema;
            if let Some(d) = props.get(field).and_then(|p| p.get("description")) {
                schema["description"] = d.clone();
            }
            props.insert(field.into(), schema);
        }
    }
    // The report's optional figures are written as null, never left out: a generated client
    // must not take them for fields that may be missing.
    for name in ["AuditEvidence", "ApiKeyEvidence"] {
        let schema = &mut v["components"]["schemas"][name];
        let all: Vec<Value> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(|k| Value::from(k.as_str())).collect())
            .unwrap_or_default();
        schema["required"] = Value::Array(all);
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

    fn required(schema: &Value) -> Vec<String> {
        sorted(
            schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        )
    }

    fn properties(schema: &Value) -> Vec<String> {
        sorted(schema["properties"].as_object().unwrap().keys().cloned())
    }

    #[test]
    fn every_operation_has_a_summary_and_one_declared_tag() {
        let doc = doc();
        let declared: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                assert!(!t["description"].as_str().unwrap().is_empty(), "{t}");
                t["name"].as_str().unwrap()
            })
            .collect();
        let mut used = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let summary = op["summary"].as_str().unwrap_or_default();
                assert!(!summary.is_empty(), "{method} {path}: no summary");
                assert!(
                    summary.len() <= 80,
                    "{method} {path}: a summary is one short line"
                );
                let tags = op["tags"].as_array().unwrap();
                assert_eq!(tags.len(), 1, "{method} {path}: {tags:?}");
                let tag = tags[0].as_str().unwrap();
                assert!(
                    declared.contains(&tag),
                    "{method} {path}: tag {tag} not declared"
                );
                used.insert(tag);
            }
        }
        assert_eq!(
            used.len(),
            declared.len(),
            "a declared tag no operation uses"
        );
    }

    #[test]
    fn servers_name_where_the_api_is() {
        let url = |d: String| -> Value {
            let d: Value = serde_json::from_str(&d).unwrap();
            assert_eq!(
                d["servers"].as_array().unwrap().len(),
                1,
                "{}",
                d["servers"]
            );
            d["servers"][0].clone()
        };
        assert_eq!(url(document())["url"], "https://127.0.0.1:8443");
        assert_eq!(
            url(document_with_server("https://vault.example:9443"))["url"],
            "https://vault.example:9443"
        );
        let addr = "127.0.0.1:40123".parse().unwrap();
        assert_eq!(
            url(document_for_listener(addr, true))["url"],
            "https://127.0.0.1:40123"
        );
        assert_eq!(
            url(document_for_listener(addr, false))["url"],
            "http://127.0.0.1:40123"
        );
        let v6 = "[::1]:8443".parse().unwrap();
        assert_eq!(
            url(document_for_listener(v6, true))["url"],
            "https://[::1]:8443"
        );
        // Every address: the host is a variable, the loopback address by default.
        for (any, default) in [("0.0.0.0:8443", "127.0.0.1"), ("[::]:8443", "[::1]")] {
            let s = url(document_for_listener(any.parse().unwrap(), true));
            assert_eq!(s["url"], "https://{host}:8443");
            assert_eq!(s["variables"]["host"]["default"], default);
        }
    }

    #[test]
    fn a_batch_result_is_a_token_or_a_problem_with_every_field() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        let branches: Vec<&str> = s["BatchResult"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            branches,
            [
                "#/components/schemas/BatchTokenized",
                "#/components/schemas/BatchProblem"
            ]
        );
        assert_eq!(
            s["BatchAnswer"]["properties"]["results"]["items"]["$ref"],
            "#/components/schemas/BatchResult"
        );
        // A tokenized item: the tokenize answer's fields, its index and status, all present.
        let mut tokenized = properties(&s["TokenizeAnswer"]);
        tokenized.extend(["index".to_string(), "status".to_string()]);
        let tokenized = sorted(tokenized);
        assert_eq!(properties(&s["BatchTokenized"]), tokenized);
        assert_eq!(required(&s["BatchTokenized"]), tokenized);
        assert_eq!(s["BatchTokenized"]["properties"]["status"]["minimum"], 200);
        assert_eq!(s["BatchTokenized"]["properties"]["status"]["maximum"], 201);
        for (field, schema) in s["TokenizeAnswer"]["properties"].as_object().unwrap() {
            let mut mine = s["BatchTokenized"]["properties"][field].clone();
            let mut theirs = schema.clone();
            for x in [&mut mine, &mut theirs] {
                x.as_object_mut().unwrap().remove("description");
            }
            assert_eq!(mine, theirs, "{field}");
        }
        // A refused item: the problem body the handler writes, and its index.
        let body = super::super::Problem::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "luhn_check_failed",
            "pan fails the Luhn check",
        )
        .body();
        let mut refused: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        refused.push("index".into());
        let refused = sorted(refused);
        assert_eq!(properties(&s["BatchProblem"]), refused);
        assert_eq!(required(&s["BatchProblem"]), refused);
        // Each member of the body is in `Problem` (which may list extension members too).
        let problem = properties(&s["Problem"]);
        for k in body.as_object().unwrap().keys() {
            assert!(problem.contains(k), "{k}");
        }
    }

    #[test]
    fn the_evidence_report_points_at_the_key_and_check_schemas() {
        let doc = doc();
        let e = &doc["components"]["schemas"]["Evidence"]["properties"];
        assert_eq!(e["keys"]["$ref"], "#/components/schemas/KeyStatus");
        assert_eq!(
            e["hardening"]["items"]["$ref"],
            "#/components/schemas/HardeningCheck"
        );
        assert!(e["keys"]["description"].is_string());
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
