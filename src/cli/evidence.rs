//! `panvault evidence`: the assessor's report of a stopped vault, printed as text, or as JSON
//! with `--json`.

use crate::Error;

use super::failure::Failure;
use super::unlock::open_stopped;
use super::{ReportArgs, text};

/// Opens the stopped vault, builds its evidence report and prints it.
pub(super) fn run(a: ReportArgs) -> Result<(), Failure> {
    let vault = open_stopped(
        &a.unlock,
        "stop it, or use `GET /v1/sys/evidence` (scope `audit`)",
    )?;
    let report = crate::evidence::report(&vault, Vec::new())
        .and_then(|r| serde_json::to_value(&r).map_err(|_| Error::Encode { what: "report" }));
    vault.shutdown();
    let report = report?;
    if a.json {
        let s =
            serde_json::to_string_pretty(&report).map_err(|_| Error::Encode { what: "report" })?;
        println!("{s}");
    } else {
        print!("{}", text::outline(&report));
    }
    Ok(())
}
