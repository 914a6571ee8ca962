//! The configuration file of `serve --config`: its keys, and the checks that refuse a bad one
//! at start, naming the key without echoing a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The configuration file (`serve --config`). Every key is optional; an unknown key or a value
/// of the wrong type is refused at start, naming the key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Data directory of an initialized vault (`--data`).
    pub data: Option<PathBuf>,
    /// Address to listen on (`--listen`).
    pub listen: Option<SocketAddr>,
    /// Plain HTTP (`--plaintext`): refused unless the address is a loopback address.
    pub plaintext: Option<bool>,
    /// File holding the operator passphrase (`file` keys).
    pub passphrase_file: Option<PathBuf>,
    /// File of custodian shares, one per line (`shamir` keys).
    pub shares_file: Option<PathBuf>,
    /// File holding the PKCS#11 user PIN (`pkcs11` keys).
    pub pkcs11_pin_file: Option<PathBuf>,
    /// PEM file of the CA that client certificates must chain to (mTLS); none: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
    /// `[reveal]`: the reveal rate limit per API key.
    pub reveal: Option<RevealConfig>,
    /// `[charge]`: the proxied-charge rate limit per API key (same keys as `[reveal]`; default
    /// 50 per second, burst 100).
    pub charge: Option<RevealConfig>,
    /// `[gateways.<name>]`: where each gateway is and its credentials, for the proxy.
    pub gateways: Option<crate::gateway::proxy::GatewaysConfig>,
    /// `[dek]`: when a data key rolls over.
    pub dek: Option<DekConfig>,
    /// `[auth_failures]`: failed authentications per source address (429 past the limit,
    /// audit entries aggregated per window).
    pub auth_failures: Option<crate::http::AuthFailureConfig>,
    /// `[http]`: the body read timeout.
    pub http: Option<crate::http::HttpConfig>,
}

/// `[dek]`: when a data key rolls over, well before the AES-GCM random-nonce limit.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DekConfig {
    /// Encryptions under one DEK (default and maximum 2^24).
    pub max_uses: Option<u64>,
    /// Cryptoperiod of a DEK in seconds (default 86400).
    pub max_age_seconds: Option<u64>,
}

impl DekConfig {
    pub(super) fn policy(&self) -> crate::crypto::DekPolicy {
        let d = crate::crypto::DekPolicy::default();
        crate::crypto::DekPolicy {
            max_uses: self.max_uses.unwrap_or(d.max_uses),
            max_age: self
                .max_age_seconds
                .map_or(d.max_age, std::time::Duration::from_secs),
        }
    }
}

/// `[reveal]`: the token bucket that limits reveals per API key. Both keys are required;
/// `per_second` must be above 0 and `burst` at least 1.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealConfig {
    /// Reveals per second per API key (default 10).
    pub per_second: f64,
    /// Reveals a key may make at once (default 20).
    pub burst: f64,
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<ConfigFile> {
    // The text may hold gateway credentials: wiped once parsed.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?,
    );
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
        // Name the key: quote the offending line (the message alone may not say which key),
        // without the value when the key is a secret's or unknown (a misspelt secret's).
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let line_no = text[..at].matches('\n').count() + 1;
        let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
        let line = match line.split_once('=') {
            Some((k, _))
                if e.message().starts_with("unknown field")
                    || crate::harden::is_secret_key(
                        k.trim()
                            .rsplit('.')
                            .next()
                            .unwrap_or_default()
                            .trim_matches('"'),
                    ) =>
            {
                format!("{} = [REDACTED]", k.trim())
            }
            _ => line.to_string(),
        };
        Error::Config(format!(
            "{} line {line_no} (`{line}`): {}",
            path.display(),
            e.message()
        ))
    })?;
    if let Some(r) = &cfg.reveal
        && !(r.per_second > 0.0 && r.burst >= 1.0)
    {
        return Err(Error::Config(format!(
            "{}: reveal.per_second must be > 0 and reveal.burst >= 1",
            path.display()
        )));
    }
    let edge = cfg
        .auth_failures
        .as_ref()
        .map_or(Ok(()), crate::http::AuthFailureConfig::check)
        .and(
            cfg.http
                .as_ref()
                .map_or(Ok(()), |h| h.body_timeout().map(drop)),
        );
    if let Err(e) = edge {
        return Err(Error::Config(format!("{}: {e}", path.display())));
    }
    if let Some(r) = &cfg.charge
        && !(r.per_second > 0.0 && r.burst >= 1.0)
    {
        return Err(Error::Config(format!(
            "{}: charge.per_second must be > 0 and charge.burst >= 1",
            path.display()
        )));
    }
    if let Some(d) = &cfg.dek {
        let max = crate::crypto::DekPolicy::default().max_uses;
        if d.max_uses.is_some_and(|n| n == 0 || n > max) || d.max_age_seconds == Some(0) {
            return Err(Error::Config(format!(
                "{}: dek.max_uses must be 1..={max} and dek.max_age_seconds > 0",
                path.display()
            )));
        }
    }
    Ok(cfg)
}
