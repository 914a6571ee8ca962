//! `ANY /v1/proxy/{gateway}/{path}` (scope `charge`): the merchant's own gateway
//! request, with a panvault token where the card goes, forwarded to that gateway's configured base
//! URL with the card swapped in; the gateway's answer comes back with every card number masked.
//!
//! - No open relay: the target is `{base_url}/{path}?{query}`, the host never comes from the
//!   request, `.` / `..` segments (also percent-encoded), encoded slashes and absolute URLs are
//!   refused with 400 before anything is read or forwarded, redirects are never followed.
//! - `https://` base URLs only, except `http://` to a loopback address (sandbox, tests).
//! - Credentials: panvault's key is `Authorization: Bearer pvk_...`; a merchant whose gateway
//!   itself uses `Authorization` (MPGS Basic, Worldline GCS) sends panvault's key as
//!   `X-Panvault-Authorization: Bearer ...` and its `Authorization` goes to the gateway. Gateway
//!   credentials configured in panvault are added when the merchant sent none (Worldline requests
//!   are then signed with v1HMAC after the swap).
//! - A token of another merchant group, a token-shaped value whose prefix no merchant has (the
//!   answer does not tell which prefixes exist), a deleted or expired temporary token: 404
//!   `token_not_found`, nothing forwarded. Past the key's charge rate limit (`[charge]`, default
//!   50/s, burst 100): 429 `rate_limited` with `Retry-After`, nothing revealed or forwarded.
//!   Unreachable gateway: 502 `gateway_unreachable`; no answer within the gateway's timeout: 504
//!   `gateway_timeout`.
//! - The gateway's address stays inside: a `Location` or `Content-Location` in its answer that
//!   points under its base URL (scheme, host, port and path prefix) comes back as the vault's own
//!   proxy URL for it, `https://{the Host the merchant used}/v1/proxy/{gateway}/...` (the rest of
//!   the path and the query kept); other absolute URLs and relative ones are left as they are.
//!
//! The charge itself ([`charge()`]) knows no web framework: the HTTP edge hands it a
//! [`ChargeRequest`] and maps its [`ChargeAnswer`] or [`ChargeError`]. `charge.rs` holds its
//! steps, `config.rs` reads `[gateways]`, `forward.rs` builds, sends and masks, `stored.rs` holds
//! the stored-credential rules and `error.rs` the refusals.

use std::collections::HashMap;
use std::time::Duration;

use crate::Error;
use crate::gateway::Gateway;

mod charge;
mod config;
mod error;
mod forward;
mod stored;

pub use charge::{ChargeAnswer, ChargeRequest, charge, panvault_key};
pub use config::{GatewayConfig, GatewaysConfig, ShopCredentials, check_base_url};
pub use error::ChargeError;
pub use forward::checked_path;

/// Largest request body the proxy forwards (bytes); a larger one is 413 `payload_too_large`,
/// nothing forwarded.
pub const REQUEST_LIMIT: usize = 64 * 1024;
/// Largest gateway answer the proxy reads (bytes); a larger one is 502 `gateway_unreachable`.
pub const ANSWER_LIMIT: usize = 1024 * 1024;
/// How long the proxy waits for a gateway's answer unless its `timeout_seconds` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Asks for a token of the raw card on a proxied charge; its value is a `request_token` as in
/// tokenize (`MASKEDPAN`, a custom value, either after `:FORCED:`).
pub const REQUEST_TOKEN_HEADER: &str = "x-panvault-request-token";
/// Header carrying panvault's own key when `Authorization` belongs to the gateway.
pub const PANVAULT_AUTH_HEADER: &str = "x-panvault-authorization";

/// One gateway as the proxy uses it.
struct Target {
    base: reqwest::Url,
    timeout: Duration,
    cfg: GatewayConfig,
}

/// The proxy: a pooled HTTPS client and where each gateway is.
pub struct Proxy {
    client: reqwest::Client,
    targets: HashMap<Gateway, Target>,
}

impl Proxy {
    /// The proxy for `cfg`, the environment (`PANVAULT_GATEWAY_*_URL` override `base_url`) and
    /// the defaults.
    pub fn new(
        mut cfg: GatewaysConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Proxy, Error> {
        let mut targets = HashMap::new();
        for g in Gateway::ALL {
            let mut c = cfg.take(g).unwrap_or_default();
            c.resolve_files(g)?;
            let raw = env(g.url_env())
                .filter(|v| !v.is_empty())
                .or_else(|| c.base_url.clone())
                .unwrap_or_else(|| g.default_base_url().to_string());
            let base = check_base_url(g, &raw)?;
            let timeout = match c.timeout_seconds {
                None => DEFAULT_TIMEOUT,
                Some(s) if s > 0.0 && s <= 600.0 => Duration::from_secs_f64(s),
                Some(_) => {
                    return Err(Error::Config(format!(
                        "gateways.{}.timeout_seconds must be > 0 and <= 600",
                        g.name()
                    )));
                }
            };
            let shops_unpaired = c
                .shops
                .iter()
                .flatten()
                .any(|(_, s)| s.api_key_id.is_some() != s.secret_api_key.is_some());
            if c.api_key_id.is_some() != c.secret_api_key.is_some() || shops_unpaired {
                return Err(Error::Config(format!(
                    "gateways.{}: api_key_id and secret_api_key go together",
                    g.name()
                )));
            }
            targets.insert(
                g,
                Target {
                    base,
                    timeout,
                    cfg: c,
                },
            );
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("gateway HTTP client: {e}")))?;
        Ok(Proxy { client, targets })
    }

    /// The base URL in use for `g`.
    pub fn base_url(&self, g: Gateway) -> Option<&str> {
        self.targets.get(&g).map(|t| t.base.as_str())
    }
}
