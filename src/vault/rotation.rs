//! Key handling of an open vault: the DEK in use and its rollover, DEK creation, the online
//! KEK rotation that re-wraps every stored key, and the key status report.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::record::{DekRecord, META_KEYS, Record, decode, encode};
use super::reencrypt::REENCRYPT_CURSOR;
use super::types::{DekStatus, KekStatus, KeyStatus, ReencryptJob, Rotation};
use super::{Ctx, Vault, crash_point, now_unix, rfc3339};
use crate::crypto::{Dek, SecretKey};
use crate::keys;
use crate::store::{self, Table};
use crate::sync::{read as read_lock, write as write_lock};
use crate::{Error, Result};

impl Vault {
    /// Makes a DEK under the current KEK, stores it (audited as `dek_create`) and adds it to
    /// the keys in memory; the caller makes it current.
    async fn new_dek(&self) -> Result<Arc<Dek>> {
        let keys = &self.inner.keys;
        let id = keys.next_dek_id.fetch_add(1, Ordering::Relaxed);
        let key = SecretKey::random();
        let rec = {
            let keyring = read_lock(&keys.keyring);
            let kek = keyring.current()?;
            DekRecord {
                kek_version: kek.version(),
                wrapped: kek.wrap("dek", id, &key)?,
                created_at: now_unix(),
            }
        };
        let value = encode(&rec, "dek")?;
        let dek = Arc::new(Dek::new(id, &key));
        self.write(move |tx| {
            tx.put(Table::Deks, id.to_be_bytes(), value);
            tx.audit(Ctx::system().event("dek_create", None, None, "ok"));
            Ok(())
        })
        .await?;
        write_lock(&keys.deks).insert(id, dek.clone());
        Ok(dek)
    }

    /// Rotates the KEK online: a new KEK version goes into the keyring, every DEK
    /// and the `meta` keys are re-wrapped under it in one durable commit, and the older
    /// versions are destroyed. Requests keep being served throughout (DEKs are in memory); no
    /// DEK is created meanwhile. A crash between the steps leaves a keyring holding every
    /// version the store refers to: the vault opens, and a new rotation finishes the job.
    pub async fn rotate_kek(&self, ctx: &Ctx) -> Result<Rotation> {
        let keys = &self.inner.keys;
        let _no_new_dek = keys.rollover.lock().await;
        let started = Instant::now();
        let dir = self.dir().to_path_buf();
        let (old, new, shares) = {
            let mut keyring = write_lock(&keys.keyring);
            let old = keyring.versions();
            let (new, shares) = keys::add_version_with_shares(&dir, &mut keyring)?;
            (old, new, shares)
        };
        crash_point("rotate:added");
        // Every wrapped key in the store, re-wrapped under the new version.
        let store = self.inner.store.as_ref();
        let mut puts: Vec<(Table, Vec<u8>, Vec<u8>)> = Vec::new();
        {
            let keyring = read_lock(&keys.keyring);
            let kek = keyring.get(new)?;
            let mut rewrap = |table: Table, key: &[u8], name: &str, id: u32, v: &[u8]| {
                let rec: DekRecord = decode(v, "wrapped key")?;
                if rec.kek_version == new {
                    return Ok(());
                }
                let plain = keyring
                    .get(rec.kek_version)?
                    .unwrap_key(name, id, &rec.wrapped)?;
                let fresh = DekRecord {
                    kek_version: new,
                    wrapped: kek.wrap(name, id, &plain)?,
                    created_at: rec.created_at,
                };
                puts.push((table, key.to_vec(), encode(&fresh, "wrapped key")?));
                Ok(())
            };
            store::for_each(store, Table::Deks, &[], |k, v| {
                let id = u32::from_be_bytes(
                    k.try_into()
                        .map_err(|_| Error::Corrupt { what: "dek id" })?,
                );
                rewrap(Table::Deks, k, "dek", id, v)
            })?;
            for which in META_KEYS {
                if let Some(v) = store.get(Table::Meta, which.0)? {
                    rewrap(Table::Meta, which.0, which.1, 0, &v)?;
                }
            }
        }
        let rewrapped = puts.len();
        let versions = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut ev = ctx.event("kek_rotate", None, None, "ok");
        ev.detail = Some(format!(
            "new kek v{new}; re-wrapped {rewrapped} keys from v{}{}",
            versions(&old),
            if shares.is_empty() {
                String::new()
            } else {
                format!("; {} new custodian shares issued", shares.len())
            }
        ));
        self.write(move |tx| {
            for (table, k, v) in puts {
                tx.put(table, k, v);
            }
            tx.audit(ev);
            Ok(())
        })
        .await?;
        crash_point("rotate:rewrapped");
        let destroyed = keys::destroy_older(&dir, &mut write_lock(&keys.keyring), new)?;
        let mut ev = ctx.event("kek_destroy", None, None, "ok");
        ev.detail = Some(format!("destroyed kek v{}", versions(&destroyed)));
        self.audit_only(ev).await?;
        Ok(Rotation {
            kek_version: new,
            destroyed,
            rewrapped,
            millis: started.elapsed().as_millis() as u64,
            shares,
        })
    }

    /// What `GET /v1/sys/keys` and `panvault keys status` show: the KEK versions, and every DEK
    /// with the KEK version wrapping it, its age against the configured cryptoperiod and the
    /// number of records it encrypts (a scan of the token table: seconds for millions).
    pub fn key_status(&self) -> Result<KeyStatus> {
        let store = self.inner.store.as_ref();
        let mut counts: HashMap<u32, u64> = HashMap::new();
        store::for_each(store, Table::Tokens, &[], |_, v| {
            let rec: Record = decode(v, "token record")?;
            *counts.entry(rec.dek_id).or_default() += 1;
            Ok(())
        })?;
        let now = now_unix();
        let current = read_lock(&self.inner.keys.current).as_ref().map(|d| d.id());
        let cryptoperiod = self.inner.opts.dek_policy.max_age.as_secs();
        let mut deks = Vec::new();
        store::for_each(store, Table::Deks, &[], |k, v| {
            let id = u32::from_be_bytes(
                k.try_into()
                    .map_err(|_| Error::Corrupt { what: "dek id" })?,
            );
            let rec: DekRecord = decode(v, "dek")?;
            let age_seconds = now.saturating_sub(rec.created_at);
            deks.push(DekStatus {
                id,
                kek_version: rec.kek_version,
                created_at: rfc3339(rec.created_at),
                age_seconds,
                past_cryptoperiod: age_seconds > cryptoperiod,
                current: current == Some(id),
                records: counts.get(&id).copied().unwrap_or(0),
            });
            Ok(())
        })?;
        let versions = self.kek_versions();
        let newest = versions.last().copied().unwrap_or_default();
        let keks = keys::kek_dates(self.dir())?
            .into_iter()
            .filter(|(v, _)| versions.contains(v))
            .map(|(version, created_at)| KekStatus {
                version,
                state: if version == newest {
                    "active"
                } else {
                    "retired"
                },
                age_seconds: humantime::parse_rfc3339(&created_at)
                    .ok()
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                    .map_or(0, |d| d.as_secs()),
                created_at,
            })
            .collect();
        Ok(KeyStatus {
            key_source: keys::source_of(self.dir())?.as_str(),
            keks,
            kek_versions: versions,
            dek_cryptoperiod_seconds: cryptoperiod,
            deks,
            reencryption: match self.reencryption() {
                Some(job) => Some(job),
                // A job cut short (by a restart, or the offline command killed) left its place.
                None => match self.inner.store.get(Table::Meta, REENCRYPT_CURSOR)? {
                    Some(_) => Some(ReencryptJob {
                        below: self.reencrypt_below()?,
                        error: Some("interrupted: starting the job again resumes it".into()),
                        ..ReencryptJob::default()
                    }),
                    None => None,
                },
            },
        })
    }

    /// The KEK versions in memory (oldest first).
    pub fn kek_versions(&self) -> Vec<u32> {
        read_lock(&self.inner.keys.keyring).versions()
    }

    /// The DEK for the next encryption, rolling over when the policy says so; this process's
    /// first encryption makes its first DEK.
    pub(super) async fn dek_for_encryption(&self) -> Result<Arc<Dek>> {
        let keys = &self.inner.keys;
        let policy = &self.inner.opts.dek_policy;
        let seen = read_lock(&keys.current).clone();
        if let Some(dek) = seen.as_ref().filter(|d| d.take_use(policy)) {
            return Ok(dek.clone());
        }
        let _g = keys.rollover.lock().await;
        let cur = read_lock(&keys.current).clone();
        if let Some(cur) = cur.filter(|c| seen.as_ref().is_none_or(|s| s.id() != c.id()))
            && cur.take_use(policy)
        {
            return Ok(cur);
        }
        let fresh = self.new_dek().await?;
        fresh.take_use(policy);
        *write_lock(&keys.current) = Some(fresh.clone());
        Ok(fresh)
    }

    /// The DEK numbered `id`; `Corrupt` if there is none (a record naming it is damaged).
    pub(super) fn dek(&self, id: u32) -> Result<Arc<Dek>> {
        read_lock(&self.inner.keys.deks)
            .get(&id)
            .cloned()
            .ok_or(Error::Corrupt {
                what: "record names an unknown DEK",
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;

    use crate::crypto::DekPolicy;
    use crate::keys::Unlock;
    use crate::store::Backend;
    use crate::vault::record::{Record, decode};
    use crate::vault::tests::{new_vault, req};
    use crate::vault::{Ctx, Options, Vault};

    #[tokio::test]
    async fn dek_rolls_over_by_count() {
        let (_d, v0) = new_vault(Backend::Redb);
        let dir = v0.dir().to_path_buf();
        v0.shutdown();
        drop(v0);
        let opts = Options {
            dek_policy: DekPolicy {
                max_uses: 3,
                max_age: Duration::from_secs(3600),
            },
            ..Options::default()
        };
        let v = Vault::open(&dir, &Unlock::Dev, opts).unwrap();
        let ctx = Ctx::system();
        let a = v.create_merchant(&ctx, "A", None).await.unwrap();
        let mut tokens = Vec::new();
        for (i, pan) in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "4012888888881881",
            "3530111333300000",
            "5105105105105100",
        ]
        .iter()
        .enumerate()
        {
            tokens.push((
                v.tokenize(&ctx, &a.merchant_id, &req(pan, 1 + i as i64, 2030, None))
                    .await
                    .unwrap()
                    .info
                    .token,
                *pan,
            ));
        }
        let deks: Vec<u32> = tokens
            .iter()
            .map(|(t, _)| {
                decode::<Record>(
                    &v.inner
                        .store
                        .get(Table::Tokens, t.as_bytes())
                        .unwrap()
                        .unwrap(),
                    "r",
                )
                .unwrap()
                .dek_id
            })
            .collect();
        assert!(
            deks.iter().collect::<std::collections::HashSet<_>>().len() >= 3,
            "{deks:?}"
        );
        v.shutdown();
        drop(v);
        let v = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap();
        for (t, pan) in &tokens {
            assert_eq!(
                v.reveal(&ctx, &a.merchant_id, t)
                    .await
                    .unwrap()
                    .pan
                    .digits(),
                *pan
            );
        }
        v.shutdown();
    }
}
