//! `panvault evidence`: the assessor's report of a stopped vault, printed as JSON.

use crate::{Error, Result};

use super::UnlockArgs;
use super::unlock::open_stopped;

/// Opens the stopped vault, builds its evidence report and prints it.
pub(super) fn run(a: UnlockArgs) -> Result<()> {
    let vault = open_stopped(&a)?;
    let report = crate::evidence::report(&vault, Vec::new()).and_then(|r| {
        serde_json::to_string_pretty(&r).map_err(|_| Error::Encode { what: "report" })
    });
    vault.shutdown();
    println!("{}", report?);
    Ok(())
}
