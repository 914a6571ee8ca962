//! The configuration file of `serve --config`: its keys, and the checks that refuse a bad one
//! at start, naming the key without echoing a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::failure::Failure;

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

/// Reads and validates a configuration file. A file that cannot be read is called the config
/// file; a bad value names the file, the key (with its table) and what was expected, and quotes
/// its line without the value when the key is a secret's or unknown (a misspelt secret's).
pub fn load_config(path: &Path) -> std::result::Result<ConfigFile, Failure> {
    let file = path.display().to_string();
    // The text may hold gateway credentials: wiped once parsed.
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|reason| {
        Failure::ConfigFile {
            file: file.clone(),
            reason,
        }
    })?);
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| Failure::Config {
        file: file.clone(),
        reason: explain(&text, &e),
    })?;
    let bad = |reason: String| Failure::Config {
        file: file.clone(),
        reason,
    };
    if let Some(r) = &cfg.reveal
        && !(r.per_second > 0.0 && r.burst >= 1.0)
    {
        return Err(bad(
            "key `reveal.per_second` must be above 0 and `reveal.burst` at least 1".into(),
        ));
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
        return Err(bad(e.to_string()));
    }
    if let Some(r) = &cfg.charge
        && !(r.per_second > 0.0 && r.burst >= 1.0)
    {
        return Err(bad(
            "key `charge.per_second` must be above 0 and `charge.burst` at least 1".into(),
        ));
    }
    if let Some(d) = &cfg.dek {
        let max = crate::crypto::DekPolicy::default().max_uses;
        if d.max_uses.is_some_and(|n| n == 0 || n > max) || d.max_age_seconds == Some(0) {
            return Err(bad(format!(
                "key `dek.max_uses` must be 1..={max} and `dek.max_age_seconds` above 0"
            )));
        }
    }
    Ok(cfg)
}

/// What a key's value must look like, for the keys whose type the parser's message does not
/// say in words (an unquoted address reads as a bad float to it).
fn expected(key: &str) -> Option<&'static str> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    Some(match key {
        "listen" => "a string such as \"127.0.0.1:8443\"",
        "data" => "a string such as \"/var/lib/panvault\" (a directory)",
        "plaintext" => "true or false",
        "dek.max_uses" | "dek.max_age_seconds" => "a whole number such as 86400",
        "reveal.per_second" | "reveal.burst" | "charge.per_second" | "charge.burst" => {
            "a number such as 10"
        }
        _ if leaf.ends_with("_file") || leaf == "client_ca" => {
            "a string such as \"/etc/panvault/secret\" (a file)"
        }
        _ => return None,
    })
}

/// The key a line of the file sets, with the table it is in (`gateways.mpgs.api_password`).
fn key_at(text: &str, line_no: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no.checked_sub(1)?)?.trim();
    let key = line.split_once('=')?.0.trim();
    let unquote = |k: &str| {
        k.split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\''))
            .collect::<Vec<_>>()
            .join(".")
    };
    let table = lines[..line_no - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| {
            unquote(
                l.trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or_default(),
            )
        });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{}", unquote(key)),
        _ => unquote(key),
    })
}

/// A parse or type error as `key `K`: expected ... (line N: `...`)`.
fn explain(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let msg = e.message().trim();
    let unknown = msg.starts_with("unknown field");
    let quoted = match line.split_once('=') {
        Some((k, _))
            if unknown
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
    let Some(key) = key_at(text, line_no) else {
        return format!("line {line_no} (`{quoted}`): {msg}");
    };
    let what = match (unknown, expected(&key)) {
        (true, _) => format!(
            "unknown key{}",
            msg.split_once(", expected")
                .map_or(String::new(), |(_, rest)| format!("; expected{rest}"))
        ),
        (false, Some(x)) => format!("expected {x}"),
        (false, None) => msg.to_string(),
    };
    format!("key `{key}`: {what} (line {line_no}: `{quoted}`)")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn reason(text: &str) -> String {
        let e = toml::from_str::<ConfigFile>(text).unwrap_err();
        explain(text, &e)
    }

    #[test]
    fn a_value_error_names_the_key_and_what_was_expected() {
        assert_eq!(
            reason("listen = 127.0.0.1:8443\n"),
            "key `listen`: expected a string such as \"127.0.0.1:8443\" (line 1: `listen = \
             127.0.0.1:8443`)"
        );
        assert_eq!(
            reason("data = \"/d\"\n[dek]\nmax_uses = \"many\"\n"),
            "key `dek.max_uses`: expected a whole number such as 86400 (line 3: `max_uses = \
             \"many\"`)"
        );
        let r = reason("[gateways.mpgs]\napi_passwd = \"secret-value\"\n");
        assert!(
            r.starts_with("key `gateways.mpgs.api_passwd`: unknown key; expected"),
            "{r}"
        );
        assert!(r.ends_with("(line 2: `api_passwd = [REDACTED]`)"), "{r}");
    }
}
