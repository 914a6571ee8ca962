//! The HTTPS edge (contract 2-4): parse, authenticate, call one vault operation, map its typed
//! error to RFC 9457 problem+json. No business rule lives here.
//!
//! Bodies are parsed field by field from a JSON value so that a field error names the field and
//! never echoes a value (serde's own messages quote the offending input, which could be a PAN).

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Error;
use crate::access::{ApiKeyRequest, Scope};
use crate::crypto::SecretString;
use crate::seal::{Gate, UnsealInput};
use crate::vault::{TokenInfo, TokenUpdate, TokenizeRequest, Tokenized};

mod body;
mod extract;
mod limit;
mod metrics;
mod problem;

// The OpenAPI tests check the documented tokenize schema against these fields.
#[cfg(test)]
pub(crate) use body::TOKENIZE_FIELDS;
pub use body::{BATCH_BODY_LIMIT, BODY_LIMIT};
use body::{expiry_field, field_error, json_body, only_fields, opt_str, tokenize_request};
use extract::{RequestId, principal, valid_request_id};
pub(crate) use extract::{Unsealed, principal_from, request_ctx};
pub use limit::RevealLimit;
pub use metrics::Metrics;
pub use problem::Problem;

type Answer = Result<HttpResponse, Problem>;

fn token_json(info: &TokenInfo, with_agreements: bool) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if !with_agreements && let Value::Object(m) = &mut v {
        m.remove("agreements");
    }
    v
}

fn tokenized(t: &Tokenized) -> HttpResponse {
    let status = if t.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(token_json(&t.info, false))
}

async fn create_token(req: HttpRequest, Unsealed(vault): Unsealed, body: web::Payload) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    let t = vault
        .tokenize(
            &request_ctx(&req, Some(&p)),
            p.merchant()?,
            &tokenize_request(&map)?,
        )
        .await?;
    Ok(tokenized(&t))
}

async fn create_tokens_batch(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BATCH_BODY_LIMIT).await?;
    only_fields(&map, &["items"])?;
    let Some(Value::Array(items)) = map.get("items") else {
        return Err(field_error("items", "must be an array"));
    };
    if items.len() > crate::vault::MAX_BATCH_ITEMS {
        return Err(Error::BatchTooLarge {
            got: items.len(),
            max: crate::vault::MAX_BATCH_ITEMS,
        }
        .into());
    }
    // Items that do not even parse get their problem; the rest go to the vault together.
    let mut parsed = Vec::with_capacity(items.len());
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        match item
            .as_object()
            .ok_or_else(|| field_error("items", "every item must be an object"))
            .and_then(tokenize_request)
        {
            Ok(r) => parsed.push((i, r)),
            Err(pr) => results[i] = Some(item_problem(i, &pr)),
        }
    }
    let reqs: Vec<TokenizeRequest> = parsed.iter().map(|(_, r)| r.clone()).collect();
    let out = vault
        .tokenize_batch(&request_ctx(&req, Some(&p)), p.merchant()?, &reqs)
        .await?;
    for ((i, _), r) in parsed.iter().zip(out) {
        results[*i] = Some(match r {
            Ok(t) => {
                let mut v = token_json(&t.info, false);
                if let Value::Object(m) = &mut v {
                    m.insert("index".into(), json!(i));
                    m.insert("status".into(), json!(if t.created { 201 } else { 200 }));
                }
                v
            }
            Err(e) => item_problem(*i, &Problem::from(e)),
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

fn item_problem(index: usize, p: &Problem) -> Value {
    let mut v = p.body();
    if let Value::Object(m) = &mut v {
        m.insert("index".into(), json!(index));
    }
    v
}

async fn get_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Read).await?;
    let info = vault.get(p.merchant()?, &token)?;
    Ok(HttpResponse::Ok().json(token_json(&info, true)))
}

async fn update_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(
        &map,
        &["pan", "expiry_month", "expiry_year", "cardholder_name"],
    )?;
    let expiry = |f: &'static str| expiry_field(&map, f);
    let pan = match map.get("pan") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Zeroizing::new(s.clone())),
        Some(_) => {
            return Err(Error::InvalidPan {
                reason: "must be a JSON string",
            }
            .into());
        }
    };
    let update = TokenUpdate {
        expiry_month: expiry("expiry_month")?,
        expiry_year: expiry("expiry_year")?,
        pan,
        cardholder_name: opt_str(&map, "cardholder_name")?.map(Zeroizing::new),
    };
    let info = vault
        .update(&request_ctx(&req, Some(&p)), p.merchant()?, &token, &update)
        .await?;
    Ok(HttpResponse::Ok().json(token_json(&info, true)))
}

async fn delete_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    vault
        .delete(&request_ctx(&req, Some(&p)), p.merchant()?, &token)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reveal_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    limit: web::Data<RevealLimit>,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Reveal).await?;
    if !limit.take(&p.key_id) {
        let _ = vault
            .audit_rate_limited(&request_ctx(&req, Some(&p)), &token)
            .await;
        let mut r = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many reveals for this API key; retry shortly",
        )
        .response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(r);
    }
    let card = vault
        .reveal(&request_ctx(&req, Some(&p)), p.merchant()?, &token)
        .await?;
    let body = Zeroizing::new(
        json!({
            "pan": card.pan.digits(),
            "expiry_month": card.expiry.month,
            "expiry_year": card.expiry.year,
            "cardholder_name": card.cardholder_name.as_deref().map(|s| s.as_str()),
        })
        .to_string(),
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_bytes().to_vec()))
}

async fn create_merchant(
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

async fn add_shop(
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

async fn remove_shop(
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

async fn create_api_key(req: HttpRequest, Unsealed(vault): Unsealed, body: web::Payload) -> Answer {
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
                "must be a list of tokenize, read, reveal, charge, admin, keys, audit",
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

async fn revoke_api_key(
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

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn seal_status(gate: web::Data<Gate>) -> HttpResponse {
    HttpResponse::Ok().json(gate.status())
}

/// `POST /v1/sys/unseal` (no auth; audited): `{"passphrase"}` (file keys) or `{"share"}`.
async fn unseal(req: HttpRequest, gate: web::Data<Gate>, body: web::Payload) -> Answer {
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
    let status = gate.unseal(&request_ctx(&req, None), input).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// `POST /v1/sys/seal` (scope `keys`).
async fn seal(req: HttpRequest, gate: web::Data<Gate>, Unsealed(vault): Unsealed) -> Answer {
    let p = principal(&req, &vault, Scope::Keys).await?;
    drop(vault);
    let status = gate.seal(&request_ctx(&req, Some(&p))).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// `POST /v1/sys/keys/rotate` (scope `keys`).
async fn rotate_keys(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    let p = principal(&req, &vault, Scope::Keys).await?;
    let r = vault.rotate_kek(&request_ctx(&req, Some(&p))).await?;
    Ok(HttpResponse::Ok().json(r))
}

/// `POST /v1/sys/keys/reencrypt` (scope `keys`): 202 with the job's progress.
async fn reencrypt_keys(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
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
async fn audit_entries(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
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
async fn evidence(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    principal(&req, &vault, Scope::Audit).await?;
    let v = vault.clone();
    let report = web::block(move || crate::evidence::report(&v, crate::harden::checks()))
        .await
        .map_err(|_| Problem::from(Error::store("evidence", "the task failed")))??;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/sys/keys` (scope `keys`).
async fn key_status(req: HttpRequest, Unsealed(vault): Unsealed) -> Answer {
    principal(&req, &vault, Scope::Keys).await?;
    let v = vault.clone();
    let status = web::block(move || v.key_status())
        .await
        .map_err(|_| Problem::from(Error::store("key status", "the task failed")))??;
    Ok(HttpResponse::Ok().json(status))
}

async fn readyz(gate: web::Data<Gate>) -> HttpResponse {
    match gate.vault().and_then(|v| v.ready()) {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => Problem::from(e).response(),
    }
}

async fn metrics(gate: web::Data<Gate>, metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render(gate.vault().ok().as_ref()))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document())
}

async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").response()
}

/// 405 `method_not_allowed` for a method the path does not take, with `Allow` (RFC 9110).
fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint takes {allow}"),
    )
    .response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The resource of one path, taking the methods listed in `allow` (its routes must be exactly
/// those): any other method is 405 with `Allow`, before the vault, the key or the body are
/// looked at. The method guards sit on the routes, not on the resource, so that a path the
/// router knows is never answered 404 for its method.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move { method_not_allowed(allow) }))
}

/// What the gateway proxy forwards (TRACE would echo the credentials it adds; CONNECT, HEAD and
/// OPTIONS are no gateway API's).
const PROXY_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The routes, shared by `serve` and the tests. One resource per path: the router tries each
/// dynamic pattern (a regex) in turn, so `/v1/tokens/batch` comes before `/v1/tokens/{token}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::gateway::proxy::handle as proxy;
    cfg.service(resource("/healthz", "GET").route(web::get().to(healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics)))
        .service(resource("/v1/openapi.json", "GET").route(web::get().to(openapi)))
        .service(resource("/v1/tokens", "POST").route(web::post().to(create_token)))
        .service(resource("/v1/tokens/batch", "POST").route(web::post().to(create_tokens_batch)))
        .service(
            resource("/v1/tokens/{token}", "GET, PATCH, DELETE")
                .route(web::get().to(get_token))
                .route(web::patch().to(update_token))
                .route(web::delete().to(delete_token)),
        )
        .service(resource("/v1/tokens/{token}/reveal", "POST").route(web::post().to(reveal_token)))
        .service(resource("/v1/merchants", "POST").route(web::post().to(create_merchant)))
        .service(
            resource("/v1/merchants/{merchant_id}/shops", "POST").route(web::post().to(add_shop)),
        )
        .service(
            resource("/v1/merchants/{merchant_id}/shops/{shop_login}", "DELETE")
                .route(web::delete().to(remove_shop)),
        )
        .service(resource("/v1/sys/seal-status", "GET").route(web::get().to(seal_status)))
        .service(resource("/v1/sys/unseal", "POST").route(web::post().to(unseal)))
        .service(resource("/v1/sys/seal", "POST").route(web::post().to(seal)))
        .service(resource("/v1/sys/keys/rotate", "POST").route(web::post().to(rotate_keys)))
        .service(resource("/v1/sys/keys/reencrypt", "POST").route(web::post().to(reencrypt_keys)))
        .service(resource("/v1/sys/keys", "GET").route(web::get().to(key_status)))
        .service(resource("/v1/audit", "GET").route(web::get().to(audit_entries)))
        .service(resource("/v1/sys/evidence", "GET").route(web::get().to(evidence)))
        .service(resource("/v1/api-keys", "POST").route(web::post().to(create_api_key)))
        .service(
            resource("/v1/api-keys/{api_key_id}", "DELETE").route(web::delete().to(revoke_api_key)),
        )
        .service(
            resource("/v1/proxy/{gateway}/{path:.*}", PROXY_METHODS)
                .route(web::get().to(proxy))
                .route(web::post().to(proxy))
                .route(web::put().to(proxy))
                .route(web::patch().to(proxy))
                .route(web::delete().to(proxy)),
        )
        .default_service(web::to(not_found));
}

/// Runs the server until SIGTERM/SIGINT, then drains in-flight requests and stops the vault's
/// writer (everything acknowledged is on disk by then). `on_ready` gets the bound address.
pub async fn serve(
    gate: Gate,
    listen: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    limit: RevealLimit,
    proxy: crate::gateway::proxy::Proxy,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let data = web::Data::new(gate);
    let proxy = web::Data::new(proxy);
    let gate = data.clone();
    let limit = web::Data::new(limit);
    let metrics = web::Data::new(Metrics::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(limit.clone())
            .app_data(metrics.clone())
            .app_data(proxy.clone())
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service;
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(valid_request_id)
                    // Not a secret: the thread's CSPRNG, no system call per request.
                    .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
                req.extensions_mut().insert(RequestId(id.clone()));
                let metrics = req.app_data::<web::Data<Metrics>>().cloned();
                let started = std::time::Instant::now();
                let fut = srv.call(req);
                async move {
                    let mut res = fut.await?;
                    if let Some(m) = metrics {
                        // After routing: the matched pattern is a lookup, not a regex walk.
                        let route = res.request().match_pattern();
                        m.observe(
                            route.as_deref().unwrap_or("unmatched"),
                            res.status().as_u16(),
                            started.elapsed().as_secs_f64(),
                        );
                    }
                    let h = res.headers_mut();
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        h.insert(header::HeaderName::from_static("x-request-id"), v);
                    }
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    Ok(res)
                }
            })
            .configure(configure)
    })
    .shutdown_timeout(30);
    let server = match tls {
        Some(cfg) => server.bind_rustls_0_23(listen, cfg)?,
        None => server.bind(listen)?,
    };
    let scheme = if server
        .addrs_with_scheme()
        .iter()
        .any(|(_, s)| *s == "https")
    {
        "https"
    } else {
        "http"
    };
    if let Some(addr) = server.addrs().first() {
        tracing::info!("listening on {scheme}://{addr}");
        on_ready(*addr);
    }
    let result = server.run().await;
    gate.shutdown();
    result
}
