//! Why a command failed: the one line `main` prints after `panvault: `. A library error keeps
//! its own text; the refusals of the command line itself (no vault, a running vault, a bad
//! configuration file, an unreachable vault API) are typed here.

use std::path::Path;

use crate::Error;

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The library refused or failed.
    #[error(transparent)]
    Vault(#[from] Error),
    /// The data directory holds no vault.
    #[error("no vault in {dir}: run `panvault init --data {dir}`")]
    NoVault {
        /// The data directory as given.
        dir: String,
    },
    /// The vault in the data directory is running (`serve` holds its store's lock).
    #[error("the vault in {dir} is running; {instead}")]
    Running {
        /// The data directory as given.
        dir: String,
        /// What to do instead (stop it, or the command that works on a running vault).
        instead: String,
    },
    /// The configuration file (`serve --config`) cannot be read.
    #[error("config file {file}: {reason}")]
    ConfigFile {
        /// The file as given.
        file: String,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// A value in the configuration file is wrong: which file, which key, what was expected.
    #[error("config {file}: {reason}")]
    Config {
        /// The file as given.
        file: String,
        /// The key and what was expected, or what is wrong.
        reason: String,
    },
    /// A call to a running vault's API failed (`--url`).
    #[error("{url}: {reason}")]
    Remote {
        /// What was called.
        url: String,
        /// The answer's problem code and detail, or why no answer came.
        reason: String,
    },
}

impl Failure {
    /// The refusal for a data dir whose store `serve` holds, or `e` unchanged.
    pub(super) fn running_or(e: Error, dir: &Path, instead: &str) -> Failure {
        match &e {
            Error::Store { op: "open", detail }
                if detail.contains("Database already open")
                    || detail.contains("could not acquire lock") =>
            {
                Failure::Running {
                    dir: dir.display().to_string(),
                    instead: instead.to_string(),
                }
            }
            _ => Failure::Vault(e),
        }
    }
}

/// Refuses a data directory that holds no vault, before anything else runs or logs.
pub(super) fn require_vault(dir: &Path) -> Result<(), Failure> {
    if crate::vault::exists(dir) {
        Ok(())
    } else {
        Err(Failure::NoVault {
            dir: dir.display().to_string(),
        })
    }
}
