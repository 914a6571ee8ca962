//! Sealed and unsealed (contract 5): a vault whose KEK is not available runs sealed.
//!
//! A [`Gate`] holds either nothing (sealed: no key material in memory, the store closed) or the
//! open [`Vault`]. Every data endpoint asks the gate for the vault and answers 503 `sealed`
//! while there is none. `POST /v1/sys/unseal` hands the gate what unlocks the keyring; a wrong
//! attempt is refused and remembered, and written to the audit chain (before the `unseal`
//! entry) as soon as the vault is open, since a sealed vault cannot append to it.
//! `POST /v1/sys/seal` audits, stops the writer and drops the vault: its keys zeroize when the
//! last in-flight request lets go of it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::audit::Event;
use crate::crypto::SecretString;
use crate::keys::{self, KeySource, Unlock};
use crate::vault::{Ctx, Options, Vault};
use crate::{Error, Result};

/// What `GET /v1/sys/seal-status` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SealStatus {
    pub sealed: bool,
    /// Key source of this vault: `dev`, `file`, `shamir` or `pkcs11`.
    pub key_source: &'static str,
    /// Shares (or passphrases: 1) an unseal needs; 0 once unsealed.
    pub shares_needed: u32,
    /// Valid shares handed in so far.
    pub shares_received: u32,
}

/// What an unseal request carries.
#[derive(Debug)]
pub enum UnsealInput {
    Passphrase(SecretString),
}

enum State {
    Sealed { refused: Vec<Event> },
    Unsealed(Vault),
}

/// The vault, or the fact that it is sealed.
pub struct Gate {
    dir: PathBuf,
    source: KeySource,
    options: Options,
    state: Mutex<State>,
    unsealing: tokio::sync::Mutex<()>,
}

impl Gate {
    /// A gate over the vault in `dir`, sealed.
    pub fn sealed(dir: &Path, options: Options) -> Result<Gate> {
        Ok(Gate {
            dir: dir.to_path_buf(),
            source: keys::source_of(dir)?,
            options,
            state: Mutex::new(State::Sealed {
                refused: Vec::new(),
            }),
            unsealing: tokio::sync::Mutex::new(()),
        })
    }

    /// A gate over an open vault.
    pub fn unsealed(vault: Vault, options: Options) -> Result<Gate> {
        Ok(Gate {
            dir: vault.dir().to_path_buf(),
            source: keys::source_of(vault.dir())?,
            options,
            state: Mutex::new(State::Unsealed(vault)),
            unsealing: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open vault, or [`Error::Sealed`].
    pub fn vault(&self) -> Result<Vault> {
        match &*self.state() {
            State::Unsealed(v) => Ok(v.clone()),
            State::Sealed { .. } => Err(Error::Sealed),
        }
    }

    pub fn status(&self) -> SealStatus {
        self.status_of(&self.state())
    }

    /// Tries to unlock the keyring and open the vault (off the async workers: the passphrase
    /// KDF takes a good fraction of a second). Attempts run one at a time. A refused attempt is
    /// remembered for the audit chain; an attempt on an unsealed vault changes nothing.
    pub async fn unseal(&self, ctx: &Ctx, input: UnsealInput) -> Result<SealStatus> {
        let _one_at_a_time = self.unsealing.lock().await;
        if self.vault().is_ok() {
            return Ok(self.status());
        }
        let unlock = match input {
            UnsealInput::Passphrase(p) => Unlock::Passphrase(p),
        };
        let (dir, options) = (self.dir.clone(), self.options.clone());
        // Opening checks the key first: a wrong passphrase never touches the store.
        let opened = tokio::task::spawn_blocking(move || Vault::open(&dir, &unlock, options))
            .await
            .map_err(|_| Error::store("unseal", "the unseal task failed"))?;
        let (vault, refused) = {
            let mut state = self.state();
            let State::Sealed { refused } = &mut *state else {
                return Ok(self.status_of(&state));
            };
            match opened {
                Ok(v) => {
                    let refused = std::mem::take(refused);
                    *state = State::Unsealed(v.clone());
                    (v, refused)
                }
                Err(e) => {
                    if matches!(e, Error::KeyUnlock(_)) {
                        refused.push(ctx.event("unseal", None, None, "refused"));
                    }
                    return Err(e);
                }
            }
        };
        let ev = ctx.event("unseal", None, None, "ok");
        vault
            .write(move |tx| {
                for r in refused {
                    tx.audit(r);
                }
                tx.audit(ev);
                Ok(())
            })
            .await?;
        Ok(self.status())
    }

    fn status_of(&self, state: &State) -> SealStatus {
        let sealed = matches!(state, State::Sealed { .. });
        SealStatus {
            sealed,
            key_source: self.source.as_str(),
            shares_needed: u32::from(sealed),
            shares_received: 0,
        }
    }

    /// Seals: audits, then drops the vault (writer stopped, everything acknowledged on disk).
    /// Key material is wiped when the last in-flight request holding the vault finishes.
    pub async fn seal(&self, ctx: &Ctx) -> Result<SealStatus> {
        let vault = self.vault()?;
        let ev = ctx.event("seal", None, None, "ok");
        vault
            .write(move |tx| {
                tx.audit(ev);
                Ok(())
            })
            .await?;
        let mut state = self.state();
        if let State::Unsealed(v) = &*state {
            v.shutdown();
        }
        *state = State::Sealed {
            refused: Vec::new(),
        };
        Ok(self.status_of(&state))
    }

    /// Stops the vault's writer, if open (server shutdown).
    pub fn shutdown(&self) {
        if let State::Unsealed(v) = &*self.state() {
            v.shutdown();
        }
    }
}
