//! Transport security: the local certificate authority that `init` writes, and the rustls
//! server configuration (TLS 1.2 and 1.3 only, rustls' modern AEAD suites only).
//!
//! `init` creates `DATA/tls/ca.pem` (a self-signed CA, reported as `tls_ca`), and a server
//! certificate for `localhost`, `127.0.0.1` and `::1` signed by it (`server.pem`, key in
//! `server-key.pem`, mode 0600). In production, replace both server files with the
//! organisation's own; the CA's private key is not kept at all, so nothing else can be signed
//! with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::keys;
use crate::{Error, Result};

/// `DATA/tls`: the CA certificate, and the server certificate and key `serve` uses.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// Path of the CA certificate clients should trust (`curl --cacert`).
pub fn ca_path(data_dir: &Path) -> PathBuf {
    tls_dir(data_dir).join("ca.pem")
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("tls: {e}"))
}

/// Writes a fresh local CA and a server certificate signed by it (files replaced, mode 0600),
/// and returns the CA certificate's path for the operator; the CA's private key is dropped.
pub fn generate(data_dir: &Path) -> Result<PathBuf> {
    let dir = tls_dir(data_dir);
    keys::create_private_dir(&dir)?;
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "panvault local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "panvault");
    let server_cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;

    keys::write_private(
        &dir.join("server-key.pem"),
        server_key.serialize_pem().as_bytes(),
    )?;
    keys::write_private(&dir.join("server.pem"), server_cert.pem().as_bytes())?;
    let ca = ca_path(data_dir);
    keys::write_private(&ca, ca_cert.pem().as_bytes())?;
    Ok(ca)
}

/// The protocol versions `serve` speaks (also shown in the evidence report).
pub const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

/// The cipher suites `serve` offers, by their IANA names, for the evidence report.
pub fn suites() -> Vec<String> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// The rustls configuration for `serve`: TLS 1.2 and 1.3 only, the `ring` provider's suites
/// (AES-GCM and ChaCha20-Poly1305 with ECDHE; rustls implements no CBC, RC4 or static-RSA
/// suite at all). With `client_ca`, every client must present a certificate that chains to it
/// (mTLS); the handshake fails otherwise.
pub fn server_config(data_dir: &Path, client_ca: Option<&Path>) -> Result<rustls::ServerConfig> {
    let dir = tls_dir(data_dir);
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .map_err(tls_err)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).map_err(tls_err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&VERSIONS)
        .map_err(tls_err)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(tls_err)? {
                roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(tls_err)
}
