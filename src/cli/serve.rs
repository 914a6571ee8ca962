//! `panvault serve`: the HTTPS API (flags over environment over the configuration file),
//! started unsealed when what unlocks the keys is given, else sealed.

use std::net::SocketAddr;
use std::path::Path;

use crate::seal::Gate;
use crate::vault::{Options, Vault};
use crate::{Error, Result};

use super::ServeArgs;
use super::config::{ConfigFile, DekConfig, load_config};
use super::failure::{Failure, require_vault};
use super::unlock::server_unlock;

#[allow(clippy::too_many_arguments)]
pub(super) fn run_server(
    gate: Gate,
    listen: SocketAddr,
    plaintext: bool,
    data: &Path,
    client_ca: Option<&Path>,
    limit: crate::http::RevealLimit,
    proxy: crate::gateway::proxy::Proxy,
    edge: crate::http::EdgeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    if plaintext && !listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--plaintext is refused on {listen}: only on a loopback address"
        )));
    }
    let tls = if plaintext {
        None
    } else {
        Some(crate::tls::server_config(data, client_ca)?)
    };
    actix_web::rt::System::new()
        .block_on(crate::http::serve(
            gate, listen, tls, limit, proxy, edge, on_ready,
        ))
        .map_err(|e| Error::io(format!("serving on {listen}"), e))
}

/// `serve`: a data dir without a vault is refused before anything else runs or logs.
pub(super) fn run(a: ServeArgs) -> std::result::Result<(), Failure> {
    let cfg = match &a.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let data = a.data.or(cfg.data).ok_or_else(|| {
        Error::Config(
            "no data directory: give --data, PANVAULT_DATA or `data` in the config".into(),
        )
    })?;
    require_vault(&data)?;
    let listen = a
        .listen
        .or(cfg.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
    let plaintext = a.plaintext || cfg.plaintext.unwrap_or(false);
    let passphrase_file = a.passphrase_file.or(cfg.passphrase_file);
    let pin_file = a.pkcs11_pin_file.or(cfg.pkcs11_pin_file);
    let limit = cfg
        .reveal
        .map_or_else(crate::http::RevealLimit::default, |r| {
            crate::http::RevealLimit::new(r.per_second, r.burst)
        });
    let edge = crate::http::EdgeOptions {
        auth: crate::http::AuthLimit::new(&cfg.auth_failures.unwrap_or_default()),
        body_timeout: cfg
            .http
            .map_or(Ok(crate::http::BODY_TIMEOUT_DEFAULT), |h| h.body_timeout())
            .map_err(|e| Error::Config(e.into()))?,
        charge: cfg
            .charge
            .map_or_else(crate::http::ChargeLimit::default, |r| {
                crate::http::ChargeLimit::new(r.per_second, r.burst)
            }),
    };
    let opts = Options {
        dek_policy: cfg
            .dek
            .as_ref()
            .map_or_else(Default::default, DekConfig::policy),
        accept_journal_loss: a.accept_journal_loss,
        ..Options::default()
    };
    let client_ca = a.client_ca.or(cfg.client_ca);
    let shares_file = a.shares_file.or(cfg.shares_file);
    crate::harden::at_start(&data, a.config.as_deref())?;
    // After the start checks (core dumps off, memory locked), before not-dumpable: reads the
    // gateway credential files (`*_file`), which may be `/dev/fd/N`.
    let proxy = crate::gateway::proxy::Proxy::new(cfg.gateways.unwrap_or_default(), |k| {
        std::env::var(k).ok()
    })?;
    let secret_files = [&passphrase_file, &shares_file, &pin_file];
    crate::harden::secret_files(
        &secret_files
            .iter()
            .filter_map(|p| p.as_deref())
            .collect::<Vec<_>>(),
    );
    let unlock = server_unlock(
        &data,
        passphrase_file.as_deref(),
        shares_file.as_deref(),
        pin_file.as_deref(),
    );
    crate::harden::after_secrets_read();
    let gate = match unlock? {
        Some(unlock) => Gate::unsealed(Vault::open(&data, &unlock, opts.clone())?, opts)?,
        None => {
            // The store opens at unseal; a damaged journal is refused now, not then.
            if !opts.accept_journal_loss {
                crate::store::check_journal(crate::vault::backend_of(&data)?, &data)?;
            }
            tracing::warn!(
                "starting sealed: no passphrase or shares given; data endpoints answer 503 until POST /v1/sys/unseal"
            );
            Gate::sealed(&data, opts)?
        }
    };
    Ok(run_server(
        gate,
        listen,
        plaintext,
        &data,
        client_ca.as_deref(),
        limit,
        proxy,
        edge,
        |_| {},
    )?)
}
