//! `panvault sandbox`: the loopback gateway simulators, on their own.

use std::io::Write;

use crate::{Error, Result};

use super::SandboxArgs;

/// `panvault sandbox`: prints each gateway's base URL once listening.
pub(super) fn run(a: SandboxArgs) -> Result<()> {
    actix_web::rt::System::new()
        .block_on(crate::sandbox::run(a.listen, |addr| {
            println!("panvault sandbox: gateway simulators on http://{addr} (test cards only)");
            for g in crate::gateway::Gateway::ALL {
                println!("{}=http://{addr}/{}", g.url_env(), g.name());
            }
            println!("request log: GET http://{addr}/__log");
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| Error::io(format!("sandbox on {}", a.listen), e))
}
