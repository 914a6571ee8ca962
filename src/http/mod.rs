//! The HTTPS edge (contract 2-4): parse, authenticate, call one vault operation, map its typed
//! error to RFC 9457 problem+json. No business rule lives here.
//!
//! This file serves: the route table, the middleware (request id, `Cache-Control`, metrics) and
//! the listener. The rest, one concern a file:
//! - `problem`: the problem+json answer and the one mapping from [`crate::Error`] to a status;
//! - `extract`: the open vault, the authenticated principal, the request id and audit context;
//! - `body`: request bodies, parsed field by field so that an error never echoes a value;
//! - `tokens`, `admin`, `sys`: the handlers, by resource;
//! - `limit`: the reveal and proxied-charge rate limits; `auth_limit`: failed authentications
//!   per source address (429 past the limit, audit entries aggregated per window); `deadline`:
//!   the body read timeout (408); `metrics`: the `/metrics` counters.

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};

use crate::seal::Gate;

mod admin;
mod auth_limit;
mod body;
mod deadline;
mod extract;
mod limit;
mod metrics;
pub mod openapi;
mod problem;
mod proxy;
mod schemas;
mod sys;
mod tokens;

pub use auth_limit::{AuthFailureConfig, AuthLimit};
pub use body::{BATCH_BODY_LIMIT, BODY_LIMIT};
pub use deadline::{BODY_TIMEOUT_DEFAULT, HttpConfig};
pub(crate) use extract::{Unsealed, principal_from, request_ctx};
pub use limit::{ChargeLimit, RevealLimit};
pub use metrics::Metrics;
pub use problem::Problem;

// The OpenAPI tests check the documented tokenize schema against these fields.
#[cfg(test)]
pub(crate) use body::TOKENIZE_FIELDS;

use admin::{
    add_shop, audit_entries, create_api_key, create_merchant, evidence, key_status, reencrypt_keys,
    remove_shop, revoke_api_key, rotate_keys,
};
use extract::{RequestId, valid_request_id};
use sys::{healthz, metrics, openapi, readyz, seal, seal_status, unseal};
use tokens::{
    create_token, create_tokens_batch, delete_token, get_token, reveal_token, update_token,
};

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
    use proxy::handle as proxy;
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

/// The edge's own limits: failed authentications per source address, how long a request
/// body may take to arrive, and proxied charges per key.
pub struct EdgeOptions {
    /// Failed authentications per source address.
    pub auth: AuthLimit,
    /// From the request head to the body's last byte; past it, 408.
    pub body_timeout: std::time::Duration,
    /// Proxied charges per API key.
    pub charge: ChargeLimit,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            auth: AuthLimit::default(),
            body_timeout: BODY_TIMEOUT_DEFAULT,
            charge: ChargeLimit::default(),
        }
    }
}

/// Runs the server until SIGTERM or SIGINT, then drains in-flight requests, audits the failed
/// authentications still counted, and stops the vault's writer (everything acknowledged is on
/// disk by then). `on_ready` gets the bound address.
pub async fn serve(
    gate: Gate,
    listen: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    limit: RevealLimit,
    proxy: crate::gateway::proxy::Proxy,
    edge: EdgeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let data = web::Data::new(gate);
    let proxy = web::Data::new(proxy);
    let gate = data.clone();
    let limit = web::Data::new(limit);
    let charge_limit = web::Data::new(edge.charge);
    let metrics = web::Data::new(Metrics::default());
    let auth = web::Data::new(edge.auth);
    let body_timeout = edge.body_timeout;
    let flusher = actix_web::rt::spawn(flush_auth_failures(gate.clone(), auth.clone()));
    let auth_at_end = auth.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(limit.clone())
            .app_data(charge_limit.clone())
            .app_data(metrics.clone())
            .app_data(proxy.clone())
            .app_data(auth.clone())
            .wrap_fn(move |mut req, srv| {
                use actix_web::dev::Service;
                let timed_out = deadline::arm(&mut req, body_timeout);
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
                    if timed_out.is_some_and(|t| t.load(std::sync::atomic::Ordering::Relaxed)) {
                        // Whatever the handler made of the missing body.
                        res = res.into_response(deadline::timed_out(body_timeout).response());
                    }
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
    .shutdown_timeout(30)
    // actix stops at once on SIGINT (only SIGTERM drains): both drain here (`stop_on_signal`),
    // so Ctrl-C never cuts a charge the gateway already took from the merchant's answer.
    .disable_signals();
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
    let server = server.run();
    let stopper = actix_web::rt::spawn(stop_on_signal(server.handle()));
    let result = server.await;
    stopper.abort();
    flusher.abort();
    if let Ok(vault) = gate.vault() {
        let window = auth_at_end.window_seconds();
        for c in auth_at_end.flush(std::time::Instant::now(), true) {
            auth_limit::audit_closed(&vault, c, window).await;
        }
    }
    gate.shutdown();
    result
}

/// SIGINT (Ctrl-C) or SIGTERM: stop taking connections and drain the requests in flight, for
/// up to the shutdown timeout (30 s; past it they are cut). Later signals are ignored.
async fn stop_on_signal(server: actix_web::dev::ServerHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Not installed: the signals keep their default action (the process ends).
        tracing::warn!("cannot handle SIGINT/SIGTERM: they end the process without draining");
        return;
    };
    let which = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!("{which} received: draining in-flight requests (at most 30 s)");
    server.stop(true).await;
}

/// Every second, audits the failed-authentication windows that have closed (kept while the
/// vault is sealed).
async fn flush_auth_failures(gate: web::Data<Gate>, auth: web::Data<AuthLimit>) {
    let mut tick = actix_web::rt::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(vault) = gate.vault() else { continue };
        let window = auth.window_seconds();
        for c in auth.flush(std::time::Instant::now(), false) {
            auth_limit::audit_closed(&vault, c, window).await;
        }
    }
}
