//! `audit export --url` and `audit verify --url`: the audit trail of a running vault, read page
//! by page through `GET /v1/audit` with an `audit`-scoped API key, as the same lines an offline
//! export writes (each entry, and the signed head after the entry it covers).

use std::path::Path;

use crate::audit::{self, ExportLine};
use crate::{Error, Result};

use super::RemoteArgs;
use super::failure::Failure;

/// Entries asked for per page: the API's maximum.
const PAGE: u32 = 1000;

/// A page of `GET /v1/audit` as the vault answers it.
#[derive(serde::Deserialize)]
struct Page {
    entries: Vec<audit::Entry>,
    next: Option<u64>,
    signed_head: Option<audit::SignedHead>,
}

/// A running vault's API and the key that reads its audit trail.
pub(super) struct Remote {
    base: String,
    key: zeroize::Zeroizing<String>,
    client: reqwest::Client,
}

/// The first line of a file holding a secret, wiped once used.
fn first_line(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?,
    );
    Ok(zeroize::Zeroizing::new(
        text.lines().next().unwrap_or_default().trim().to_string(),
    ))
}

impl Remote {
    /// The client for `--url`: trusting `--cacert` alone when given, else the web PKI roots.
    pub(super) fn new(a: &RemoteArgs) -> std::result::Result<Remote, Failure> {
        let (Some(url), Some(key_file)) = (&a.url, &a.api_key_file) else {
            return Err(Error::Config("--url needs --api-key-file".into()).into());
        };
        let key = first_line(key_file)?;
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(ca) = &a.cacert {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca.display().to_string(), e))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|_| {
                Error::Config(format!("--cacert {}: not a PEM certificate", ca.display()))
            })?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        let client = b
            .build()
            .map_err(|e| Error::Config(format!("HTTPS client: {e}")))?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            key,
            client,
        })
    }

    /// Every audit line from `since` on, in order, to `f`: the entries of each page, and a
    /// page's signed head right after the entry it covers.
    pub(super) fn audit_lines(
        &self,
        since: u64,
        mut f: impl FnMut(ExportLine) -> Result<()>,
    ) -> std::result::Result<(), Failure> {
        actix_web::rt::System::new().block_on(async {
            let mut since = since;
            loop {
                let page = self.page(since).await?;
                for e in page.entries {
                    f(ExportLine::Entry(Box::new(e)))?;
                }
                if let Some(h) = page.signed_head {
                    f(ExportLine::Head { signed_head: h })?;
                }
                match page.next {
                    // Each page moves on, or the loop would never end.
                    Some(n) if n > since => since = n,
                    Some(_) => {
                        return Err(Failure::Remote {
                            url: format!("{}/v1/audit", self.base),
                            reason: "the next page does not move on".into(),
                        });
                    }
                    None => return Ok(()),
                }
            }
        })
    }

    /// One page, or the answer's problem code and detail.
    async fn page(&self, since: u64) -> std::result::Result<Page, Failure> {
        let url = format!("{}/v1/audit?since={since}&limit={PAGE}", self.base);
        let fail = |reason: String| Failure::Remote {
            url: url.clone(),
            reason,
        };
        let r = self
            .client
            .get(&url)
            .bearer_auth(self.key.as_str())
            .send()
            .await
            .map_err(|e| fail(reason_of(&e)))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| fail(reason_of(&e)))?;
        if !status.is_success() {
            let p: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(fail(format!(
                "{} {}: {}",
                status.as_u16(),
                p["code"].as_str().unwrap_or("error"),
                p["detail"].as_str().unwrap_or("no detail")
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|_| fail(format!("{status}: not a page of the audit trail")))
    }
}

/// Why a request got no answer: the innermost cause (TLS, connection refused...).
fn reason_of(e: &reqwest::Error) -> String {
    let mut reason = if e.is_timeout() {
        "timed out".to_string()
    } else {
        "no answer".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason
}
