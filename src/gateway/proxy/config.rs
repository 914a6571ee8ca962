//! The proxy's configuration: `[gateways.<name>]` and its per-shop credentials, the secrets read
//! from their `*_file`s when the proxy starts, which credentials one request gets (the shop's
//! own, else the gateway-wide ones if its merchant group may use them), and the base URL check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::Error;
use crate::crypto::SecretString;
use crate::gateway::Gateway;

/// `[gateways.<name>]` in the configuration file. Every key is optional. The secrets
/// (`api_key`, `secret_api_key`, `api_password`) are [`SecretString`]s: zeroized on drop, `Debug`
/// prints `[REDACTED]`. Each may instead be read from a file (`api_key_file`, ...: its first line)
/// when the proxy starts ([`Proxy::new`](super::Proxy::new)); giving both forms of one is refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway is (default: its public test environment; env `PANVAULT_GATEWAY_*_URL`).
    pub base_url: Option<String>,
    /// Seconds to wait for the gateway's answer (default 30).
    pub timeout_seconds: Option<f64>,
    /// Nexi `X-Api-Key`, or Axerve REST `Authorization: apikey ...`, when the merchant sends none.
    pub api_key: Option<SecretString>,
    /// File whose first line is `api_key`.
    pub api_key_file: Option<PathBuf>,
    /// Worldline API key id (an identifier: it travels in clear in every `Authorization` header)
    /// and secret: panvault signs with v1HMAC when the merchant did not.
    pub api_key_id: Option<String>,
    /// Worldline secret API key, the v1HMAC signing key of `api_key_id`.
    pub secret_api_key: Option<SecretString>,
    /// File whose first line is `secret_api_key`.
    pub secret_api_key_file: Option<PathBuf>,
    /// MPGS API password: Basic `merchant.<merchantId from the path>:<password>`.
    pub api_password: Option<SecretString>,
    /// File whose first line is `api_password`.
    pub api_password_file: Option<PathBuf>,
    /// The merchant groups (`mer_...`) whose shops may use the gateway-wide credentials above.
    /// Unset, every group's may (one merchant per vault). A shop of another group gets only its
    /// own `shops` entry, or nothing: panvault then adds no credential and the merchant's own
    /// headers, if any, pass as sent.
    pub merchants: Option<Vec<String>>,
    /// Credentials per shop login (`[gateways.<name>.shops."<shop login>"]`), used for the
    /// requests of that shop's keys instead of the ones above, so the merchant stack never holds
    /// them.
    pub shops: Option<BTreeMap<String, ShopCredentials>>,
}

/// One shop login's credentials at a gateway (same meaning as in [`GatewayConfig`]).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopCredentials {
    /// Nexi or Axerve REST API key.
    pub api_key: Option<SecretString>,
    /// File whose first line is `api_key`.
    pub api_key_file: Option<PathBuf>,
    /// Worldline API key id.
    pub api_key_id: Option<String>,
    /// Worldline secret API key.
    pub secret_api_key: Option<SecretString>,
    /// File whose first line is `secret_api_key`.
    pub secret_api_key_file: Option<PathBuf>,
    /// MPGS API password.
    pub api_password: Option<SecretString>,
    /// File whose first line is `api_password`.
    pub api_password_file: Option<PathBuf>,
}

/// The credentials panvault adds for one request (borrowed: no copy of a secret).
#[derive(Clone, Copy, Default)]
pub(super) struct Creds<'a> {
    pub(super) api_key: Option<&'a str>,
    pub(super) api_key_id: Option<&'a str>,
    pub(super) secret_api_key: Option<&'a str>,
    pub(super) api_password: Option<&'a str>,
}

/// One secret read from its `*_file`: the first line, without its newline (as the passphrase
/// file). The file must be owner-only when it is a regular file (as key files); a pipe such as
/// `/dev/fd/3` is read as is. Errors name the configuration key.
fn read_credential_file(key: &str, path: &Path) -> Result<SecretString, Error> {
    let bad = |why: String| Error::Config(format!("{key} {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "has mode {mode:04o}, open to group or others; it must be 0600 or 0400 \
                 (chmod 0600 {})",
                path.display()
            )));
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        return Err(bad("its first line is empty".into()));
    }
    Ok(SecretString::new(first.to_string()))
}

/// Fills `value` from `file` (then cleared); both given is refused, naming `key` and `key_file`.
fn resolve_secret(
    prefix: &str,
    name: &str,
    value: &mut Option<SecretString>,
    file: &mut Option<PathBuf>,
) -> Result<(), Error> {
    let Some(path) = file.take() else {
        return Ok(());
    };
    if value.is_some() {
        return Err(Error::Config(format!(
            "{prefix}.{name} and {prefix}.{name}_file are both given: keep one"
        )));
    }
    *value = Some(read_credential_file(
        &format!("{prefix}.{name}_file"),
        &path,
    )?);
    Ok(())
}

impl ShopCredentials {
    fn resolve(&mut self, prefix: &str) -> Result<(), Error> {
        resolve_secret(prefix, "api_key", &mut self.api_key, &mut self.api_key_file)?;
        resolve_secret(
            prefix,
            "secret_api_key",
            &mut self.secret_api_key,
            &mut self.secret_api_key_file,
        )?;
        resolve_secret(
            prefix,
            "api_password",
            &mut self.api_password,
            &mut self.api_password_file,
        )
    }
}

impl GatewayConfig {
    /// The shop login's own credentials if configured, else the gateway's (when `merchant` may
    /// use them), else none.
    pub(super) fn creds(&self, shop: Option<&str>, merchant: Option<&str>) -> Creds<'_> {
        if let Some(c) = shop.and_then(|s| self.shops.as_ref()?.get(s)) {
            return Creds {
                api_key: c.api_key.as_ref().map(SecretString::expose),
                api_key_id: c.api_key_id.as_deref(),
                secret_api_key: c.secret_api_key.as_ref().map(SecretString::expose),
                api_password: c.api_password.as_ref().map(SecretString::expose),
            };
        }
        if let Some(allowed) = &self.merchants
            && !merchant.is_some_and(|m| allowed.iter().any(|a| a == m))
        {
            return Creds::default();
        }
        Creds {
            api_key: self.api_key.as_ref().map(SecretString::expose),
            api_key_id: self.api_key_id.as_deref(),
            secret_api_key: self.secret_api_key.as_ref().map(SecretString::expose),
            api_password: self.api_password.as_ref().map(SecretString::expose),
        }
    }

    /// Reads every `*_file` credential (the gateway's and each shop's) into its value.
    pub(super) fn resolve_files(&mut self, g: Gateway) -> Result<(), Error> {
        let prefix = format!("gateways.{}", g.name());
        resolve_secret(
            &prefix,
            "api_key",
            &mut self.api_key,
            &mut self.api_key_file,
        )?;
        resolve_secret(
            &prefix,
            "secret_api_key",
            &mut self.secret_api_key,
            &mut self.secret_api_key_file,
        )?;
        resolve_secret(
            &prefix,
            "api_password",
            &mut self.api_password,
            &mut self.api_password_file,
        )?;
        for (login, shop) in self.shops.iter_mut().flatten() {
            shop.resolve(&format!("{prefix}.shops.{login}"))?;
        }
        Ok(())
    }
}

/// `[gateways]`: one optional table per gateway.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaysConfig {
    /// `[gateways.nexi]`: Nexi XPay.
    pub nexi: Option<GatewayConfig>,
    /// `[gateways.axerve]`: Axerve REST and SOAP.
    pub axerve: Option<GatewayConfig>,
    /// `[gateways.worldline]`: Worldline Direct.
    pub worldline: Option<GatewayConfig>,
    /// `[gateways.mpgs]`: Mastercard Gateway.
    pub mpgs: Option<GatewayConfig>,
}

impl GatewaysConfig {
    /// Takes `g`'s section out (the credentials move into the proxy: they are never copied).
    pub(super) fn take(&mut self, g: Gateway) -> Option<GatewayConfig> {
        match g {
            Gateway::Nexi => self.nexi.take(),
            Gateway::Axerve => self.axerve.take(),
            Gateway::Worldline => self.worldline.take(),
            Gateway::Mpgs => self.mpgs.take(),
        }
    }
}

/// Checks a base URL: https, or http to a loopback address; no query, fragment or credentials.
pub fn check_base_url(g: Gateway, raw: &str) -> Result<reqwest::Url, Error> {
    let bad = |why: &str| Error::Config(format!("gateway {} base_url {raw:?}: {why}", g.name()));
    let url = reqwest::Url::parse(raw.trim_end_matches('/')).map_err(|_| bad("not a URL"))?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad("no query, fragment or credentials allowed"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(bad("http:// only to a loopback address; use https://")),
        _ => Err(bad("https:// only")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::gateway::proxy::Proxy;

    fn gateways(toml: &str) -> GatewaysConfig {
        toml::from_str(toml).unwrap()
    }

    fn config_error(cfg: GatewaysConfig) -> String {
        match Proxy::new(cfg, |_| None) {
            Err(Error::Config(m)) => m,
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn gateway_wide_credentials_serve_only_the_listed_merchants() {
        let cfg = gateways(
            "[mpgs]\napi_password = \"wide\"\nmerchants = [\"mer_a\"]\n\
             [mpgs.shops.\"9100002\"]\napi_password = \"own\"\n\
             [nexi]\napi_key = \"any\"\n",
        );
        let mpgs = cfg.mpgs.unwrap();
        assert_eq!(mpgs.creds(None, Some("mer_a")).api_password, Some("wide"));
        assert_eq!(
            mpgs.creds(Some("9100001"), Some("mer_a")).api_password,
            Some("wide")
        );
        // Another group: nothing of the gateway-wide ones, but its shop's own still.
        assert_eq!(
            mpgs.creds(Some("9100001"), Some("mer_b")).api_password,
            None
        );
        assert_eq!(mpgs.creds(None, None).api_password, None);
        assert_eq!(
            mpgs.creds(Some("9100002"), Some("mer_b")).api_password,
            Some("own")
        );
        // Unset: one merchant per vault, every group uses them.
        let nexi = cfg.nexi.unwrap();
        assert_eq!(nexi.creds(None, Some("mer_b")).api_key, Some("any"));
    }

    #[test]
    fn credentials_debug_as_redacted() {
        let cfg = gateways(
            "[worldline]\napi_key_id = \"kid\"\nsecret_api_key = \"wl-secret-1\"\n\
             [mpgs]\napi_password = \"mpgs-secret-2\"\n\
             [nexi.shops.\"9000001\"]\napi_key = \"nexi-secret-3\"\n",
        );
        let shown = format!("{cfg:?}");
        for secret in ["wl-secret-1", "mpgs-secret-2", "nexi-secret-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("[REDACTED]") && shown.contains("kid"),
            "{shown}"
        );
        let shop = &cfg.nexi.as_ref().unwrap().shops.as_ref().unwrap()["9000001"];
        assert_eq!(
            format!("{:?}", shop.api_key.as_ref().unwrap()),
            "[REDACTED]"
        );
        assert!(!format!("{shop:?}").contains("nexi-secret-3"));
    }

    #[test]
    fn credential_files_are_read_or_refused_naming_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let pw = file("pw", "mpgs-secret\nsecond line\n", 0o600);
        let shop = file("shop", "nexi-secret", 0o400);
        let toml = format!(
            "[mpgs]\napi_password_file = \"{pw}\"\n\
             [nexi.shops.\"9000001\"]\napi_key_file = \"{shop}\"\n"
        );
        let mut cfg = gateways(&toml);
        let mut mpgs = cfg.mpgs.take().unwrap();
        mpgs.resolve_files(Gateway::Mpgs).unwrap();
        assert_eq!(mpgs.creds(None, None).api_password, Some("mpgs-secret"));
        assert!(mpgs.api_password_file.is_none());
        let mut nexi = cfg.nexi.take().unwrap();
        nexi.resolve_files(Gateway::Nexi).unwrap();
        assert_eq!(
            nexi.creds(Some("9000001"), None).api_key,
            Some("nexi-secret")
        );
        assert!(Proxy::new(gateways(&toml), |_| None).is_ok());

        // Both forms of one credential: refused, naming both keys.
        let mut cfg = gateways(&toml);
        cfg.mpgs.as_mut().unwrap().api_password = Some(SecretString::new("inline".into()));
        let e = config_error(cfg);
        assert!(
            e.contains("gateways.mpgs.api_password and gateways.mpgs.api_password_file"),
            "{e}"
        );
        assert!(!e.contains("inline") && !e.contains("mpgs-secret"), "{e}");

        // Unreadable, open to others, empty: refused, naming the key and the file.
        let open = file("open", "worldline-secret\n", 0o640);
        let empty = file("empty", "\n", 0o600);
        for (path, why) in [
            ("/nonexistent/secret".to_string(), "No such file"),
            (open.clone(), "mode 0640"),
            (empty, "first line is empty"),
        ] {
            let cfg = gateways(&format!(
                "[worldline.shops.\"9000001\"]\napi_key_id = \"kid\"\n\
                 secret_api_key_file = \"{path}\"\n"
            ));
            let e = config_error(cfg);
            assert!(
                e.contains(&format!(
                    "gateways.worldline.shops.9000001.secret_api_key_file {path}"
                )) && e.contains(why),
                "{e}"
            );
            assert!(!e.contains("worldline-secret"), "{e}");
        }
        // A secret file still pairs with its id.
        let cfg = gateways(&format!("[worldline]\nsecret_api_key_file = \"{pw}\"\n"));
        assert!(config_error(cfg).contains("go together"));
    }

    #[test]
    fn base_urls_https_or_loopback_http() {
        assert!(check_base_url(Gateway::Mpgs, "https://mtf.gateway.mastercard.com").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://127.0.0.1:9/mpgs").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://[::1]:9/mpgs").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://localhost:9").is_ok());
        assert!(check_base_url(Gateway::Mpgs, "http://gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "ftp://gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "https://u:p@gw.example").is_err());
        assert!(check_base_url(Gateway::Mpgs, "https://gw.example/?q=1").is_err());
        let p = Proxy::new(GatewaysConfig::default(), |_| None).unwrap();
        assert!(
            p.base_url(Gateway::Nexi)
                .unwrap()
                .starts_with("https://xpaysandbox.nexigroup.com/")
        );
        let p = Proxy::new(GatewaysConfig::default(), |k| {
            (k == "PANVAULT_GATEWAY_MPGS_URL").then(|| "http://127.0.0.1:1/mpgs".to_string())
        })
        .unwrap();
        assert_eq!(p.base_url(Gateway::Mpgs), Some("http://127.0.0.1:1/mpgs"));
    }
}
