//! `panvault sandbox`: the loopback gateway simulators, on their own.

use std::io::Write;

use crate::{Error, Result};

use super::SandboxArgs;

/// `panvault sandbox`: prints each gateway's base URL (its simulator's own root) once listening.
pub(super) fn run(a: SandboxArgs) -> Result<()> {
    actix_web::rt::System::new()
        .block_on(crate::sandbox::run(a.listen, |addrs| {
            let shared = addrs.shared;
            println!("panvault sandbox: gateway simulators on http://{shared} (test cards only)");
            println!(
                "# each at its own root, the base URLs to configure (http://{shared}/<gateway> serves them too):"
            );
            for g in crate::gateway::Gateway::ALL {
                println!("{}={}", g.url_env(), addrs.base_url(g));
            }
            println!("request log: GET http://{shared}/__log");
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| Error::io(format!("sandbox on {}", a.listen), e))
}
