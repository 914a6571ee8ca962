//! The sealed/unsealed gate: a vault whose KEK is not available runs sealed.
//!
//! A [`Gate`] holds either nothing (sealed: no key material in memory, the store closed) or the
//! open [`Vault`]. Every data endpoint asks the gate for the vault and answers 503 `sealed`
//! while there is none. `POST /v1/sys/unseal` hands the gate what unlocks the keyring; a wrong
//! attempt is refused and remembered, and written to the audit chain (before the `unseal`
//! entry) as soon as the vault is open, since a sealed vault cannot append to it.
//! `POST /v1/sys/seal` audits, stops the writer and drops the vault: its keys zeroize when the
//! last in-flight request lets go of it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::audit::Event;
use crate::crypto::SecretString;
use crate::keys::shamir::ShareCollector;
use crate::keys::{self, KeySource, Unlock};
use crate::vault::{Ctx, Options, Vault};
use crate::{Error, Result};

/// What `GET /v1/sys/seal-status` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SealStatus {
    /// `true` while no vault is open: every data endpoint answers 503 `sealed`.
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
    /// `file` keys.
    Passphrase(SecretString),
    /// `shamir` keys: one custodian share per call.
    Share(SecretString),
}

enum State {
    Sealed {
        refused: Vec<Event>,
        /// `shamir` keys: the valid shares handed in so far.
        shares: Option<ShareCollector>,
    },
    Unsealed(Vault),
}

impl State {
    fn sealed() -> Self {
        State::Sealed {
            refused: Vec::new(),
            shares: None,
        }
    }
}

/// The vault, or the fact that it is sealed.
pub struct Gate {
    dir: PathBuf,
    source: KeySource,
    /// Shares (or passphrases: 1) an unseal needs.
    threshold: usize,
    options: Options,
    state: Mutex<State>,
    unsealing: tokio::sync::Mutex<()>,
}

impl Gate {
    /// A gate over the vault in `dir`, sealed.
    pub fn sealed(dir: &Path, options: Options) -> Result<Gate> {
        let source = keys::source_of(dir)?;
        Ok(Gate {
            dir: dir.to_path_buf(),
            source,
            threshold: threshold_of(dir, source)?,
            options,
            state: Mutex::new(State::sealed()),
            unsealing: tokio::sync::Mutex::new(()),
        })
    }

    /// A gate over an open vault.
    pub fn unsealed(vault: Vault, options: Options) -> Result<Gate> {
        let source = keys::source_of(vault.dir())?;
        Ok(Gate {
            dir: vault.dir().to_path_buf(),
            source,
            threshold: threshold_of(vault.dir(), source)?,
            options,
            state: Mutex::new(State::Unsealed(vault)),
            unsealing: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The open vault, or [`Error::Sealed`].
    pub fn vault(&self) -> Result<Vault> {
        match &*self.state() {
            State::Unsealed(v) => Ok(v.clone()),
            State::Sealed { .. } => Err(Error::Sealed),
        }
    }

    /// Whether the vault is sealed, and how far an unseal has come.
    pub fn status(&self) -> SealStatus {
        self.status_of(&self.state())
    }

    /// Tries to unlock the keyring and open the vault (off the async workers: the passphrase
    /// KDF takes a good fraction of a second). Attempts run one at a time. A share is checked
    /// on arrival and counted until the threshold is reached. A refused passphrase or share is
    /// remembered for the audit chain; an attempt on an unsealed vault changes nothing.
    pub async fn unseal(&self, ctx: &Ctx, input: UnsealInput) -> Result<SealStatus> {
        let _one_at_a_time = self.unsealing.lock().await;
        let unlock = {
            let mut state = self.state();
            let State::Sealed { refused, shares } = &mut *state else {
                return Ok(self.status_of(&state));
            };
            match (self.source, input) {
                (KeySource::File, UnsealInput::Passphrase(p)) => Unlock::Passphrase(p),
                // The unseal body has `passphrase` or `share`: an HSM's user PIN arrives as the
                // passphrase.
                (KeySource::Pkcs11, UnsealInput::Passphrase(p)) => Unlock::Pin(p),
                (KeySource::Shamir, UnsealInput::Share(text)) => {
                    let collector = match shares {
                        Some(c) => c,
                        None => shares.insert(keys::share_collector(&self.dir)?),
                    };
                    match collector.add(text.expose()) {
                        Ok(progress) if !progress.complete() => {
                            return Ok(self.status_of(&state));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            refused.push(ctx.event("unseal", None, None, "refused"));
                            return Err(e);
                        }
                    }
                    match shares.take() {
                        Some(c) => Unlock::Collected(c),
                        None => return Err(Error::Sealed),
                    }
                }
                (KeySource::Shamir, UnsealInput::Passphrase(_)) => {
                    return Err(Error::InvalidField {
                        field: "passphrase",
                        reason: "this vault unseals with custodian shares",
                    });
                }
                (_, UnsealInput::Passphrase(_)) => {
                    return Err(Error::InvalidField {
                        field: "passphrase",
                        reason: "this vault's keys take no passphrase",
                    });
                }
                (_, UnsealInput::Share(_)) => {
                    return Err(Error::InvalidField {
                        field: "share",
                        reason: "this vault's keys are not split into shares",
                    });
                }
            }
        };
        let (dir, options) = (self.dir.clone(), self.options.clone());
        // Opening checks the key first: a wrong passphrase never touches the store.
        let opened = tokio::task::spawn_blocking(move || Vault::open(&dir, &unlock, options))
            .await
            .map_err(|_| Error::store("unseal", "the unseal task failed"))?;
        let (vault, refused) = {
            let mut state = self.state();
            let State::Sealed { refused, .. } = &mut *state else {
                return Ok(self.status_of(&state));
            };
            match opened {
                Ok(v) => {
                    let refused = std::mem::take(refused);
                    *state = State::Unsealed(v.clone());
                    (v, refused)
                }
                Err(e) => {
                    // Shares that combined but did not open the keyring are spent: the
                    // custodians start over.
                    if matches!(
                        e,
                        Error::KeyUnlock(_)
                            | Error::ShareRefused(_)
                            | Error::NotEnoughShares { .. }
                    ) {
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
        let (needed, received) = match state {
            State::Unsealed(_) => (0, 0),
            State::Sealed {
                shares: Some(c), ..
            } => {
                let p = c.progress();
                (p.threshold, p.received)
            }
            State::Sealed { .. } => (self.threshold, 0),
        };
        SealStatus {
            sealed: matches!(state, State::Sealed { .. }),
            key_source: self.source.as_str(),
            shares_needed: u32::try_from(needed).unwrap_or(u32::MAX),
            shares_received: u32::try_from(received).unwrap_or(u32::MAX),
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
        *state = State::sealed();
        Ok(self.status_of(&state))
    }

    /// Stops the vault's writer, if open (server shutdown).
    pub fn shutdown(&self) {
        if let State::Unsealed(v) = &*self.state() {
            v.shutdown();
        }
    }
}

fn threshold_of(dir: &Path, source: KeySource) -> Result<usize> {
    Ok(match source {
        KeySource::Shamir => keys::share_collector(dir)?.progress().threshold,
        _ => 1,
    })
}
