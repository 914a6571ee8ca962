//! Integrity of the authorization records: every API key record, shop login -> merchant
//! binding, merchant record and merchant prefix index entry carries a MAC (its *seal*), checked
//! at open. A record altered, added or moved on disk while the vault was down (a scope added
//! to a key, a shop login moved to another merchant) stops the open with
//! [`Error::AuthRecordBroken`] naming the record, as an edited audit tail does.
//!
//! The MAC key is derived from the KEK-wrapped API-key MAC key (`MacKey::derive` with the
//! purpose [`PURPOSE`]): nothing new to wrap or re-wrap on a KEK rotation, and independent of
//! the fingerprint, API-key and audit keys. A seal is kept in `meta` under
//! `auth_mac/<table>/<record key>` (the records' own stored bytes do not change) and is
//! `HMAC(key, "auth-record" ‖ 0 ‖ table ‖ 0 ‖ record key ‖ 0 ‖ len(value) as u64 BE ‖ 0 ‖
//! value ‖ 0 ‖ issued under ‖ 0)`: bound to where the record is stored, so a sealed value
//! moved to another key fails too. An API key's seal also holds the merchant its shop login
//! was in when the key was issued (empty for an admin key): the key is refused if the login
//! is in another merchant now.
//!
//! A vault sealed once holds the marker `auth_mac_sealed` (a MAC too). Without it, the open
//! seals every record in the same durable write as its other start-up writes, audited as
//! `auth_records_migrate` (a vault made before this check); a vault whose audit trail already
//! holds such an entry, or a `vault_init` entry noting seals from the start, but no marker was
//! stripped on disk and is refused. (Only an audit trail pruned past both entries, a year on
//! at the least, no longer tells: then a stripped marker is taken for an old vault.)

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::record::{decode, encode};
use super::{now_unix, rfc3339};
use crate::audit::{self, Chain, Ctx};
use crate::crypto::MacKey;
use crate::store::{self, Store, Table, WriteBatch};
use crate::{Error, Result};

/// The purpose the authorization-record MAC key is derived for.
pub(crate) const PURPOSE: &str = "auth-record-mac";
/// The `meta` key prefix of every seal.
const SEAL_PREFIX: &[u8] = b"auth_mac/";
/// The `meta` key of the marker of a sealed vault.
const MARKER: &[u8] = b"auth_mac_sealed";
/// The `meta` key prefix of the merchant prefix index (`record::prefix_key`).
const PREFIX_INDEX: &[u8] = b"prefix/";
/// The audit action of the migration.
const MIGRATE: &str = "auth_records_migrate";
/// The detail of the `vault_init` entry of a vault whose records were sealed from the start.
const SEALED_AT_INIT: &str = "authorization records sealed";

/// A kind of authorization record: where it is stored and how an error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An API key record (`api_keys`, by key id).
    ApiKey,
    /// A shop login's merchant (`shops`, by login).
    Shop,
    /// A merchant record, holding its prefix (`merchants`, by merchant id).
    Merchant,
    /// A merchant prefix's merchant (`meta`, `prefix/<PREFIX>`).
    Prefix,
}

impl Kind {
    /// Every kind, in the order the open checks them.
    const ALL: [Kind; 4] = [Kind::Merchant, Kind::Prefix, Kind::Shop, Kind::ApiKey];

    fn table(self) -> Table {
        match self {
            Kind::ApiKey => Table::ApiKeys,
            Kind::Shop => Table::Shops,
            Kind::Merchant => Table::Merchants,
            Kind::Prefix => Table::Meta,
        }
    }

    /// How an error names a record of this kind.
    fn noun(self) -> &'static str {
        match self {
            Kind::ApiKey => "api key",
            Kind::Shop => "shop login",
            Kind::Merchant => "merchant",
            Kind::Prefix => "merchant prefix index",
        }
    }
}

/// The stored seal of one record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Seal {
    /// An API key's merchant at issue; `None` for an admin key and every other record.
    pub(crate) issued_under: Option<String>,
    mac: [u8; 32],
}

/// The authorization-record MAC key of a vault whose API-key MAC key is `api_key_mac`.
pub(crate) fn key(api_key_mac: &MacKey) -> Result<MacKey> {
    api_key_mac.derive(PURPOSE)
}

/// The `meta` key a record's seal is kept under.
pub(crate) fn seal_key(kind: Kind, key: &[u8]) -> Vec<u8> {
    [SEAL_PREFIX, kind.table().name().as_bytes(), b"/", key].concat()
}

/// The MAC of a record: see the module doc.
pub(crate) fn mac_of(
    auth: &MacKey,
    kind: Kind,
    key: &[u8],
    value: &[u8],
    issued_under: Option<&str>,
) -> [u8; 32] {
    let len = u64::try_from(value.len()).unwrap_or(u64::MAX).to_be_bytes();
    auth.tag(&[
        b"auth-record",
        kind.table().name().as_bytes(),
        key,
        &len,
        value,
        issued_under.unwrap_or_default().as_bytes(),
    ])
}

/// The `(meta key, stored seal)` of a record, to write beside it.
pub(crate) fn seal(
    auth: &MacKey,
    kind: Kind,
    key: &[u8],
    value: &[u8],
    issued_under: Option<&str>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let s = Seal {
        issued_under: issued_under.map(str::to_string),
        mac: mac_of(auth, kind, key, value, issued_under),
    };
    Ok((seal_key(kind, key), encode(&s, "auth record seal")?))
}

/// The merchant an API key was issued under, from its stored seal (checked at open).
pub(crate) fn issued_under(store: &dyn Store, key_id: &str) -> Result<Option<String>> {
    match store.get(Table::Meta, &seal_key(Kind::ApiKey, key_id.as_bytes()))? {
        Some(bytes) => Ok(decode::<Seal>(&bytes, "auth record seal")?.issued_under),
        None => Ok(None),
    }
}

/// The seals `Vault::init` writes beside the first admin key, and the marker.
pub(crate) fn seal_new_vault(
    batch: &mut WriteBatch,
    api_key_mac: &MacKey,
    key_id: &str,
    value: &[u8],
) -> Result<()> {
    let auth = key(api_key_mac)?;
    let (k, v) = seal(&auth, Kind::ApiKey, key_id.as_bytes(), value, None)?;
    batch.put(Table::Meta, k, v);
    batch.put(Table::Meta, MARKER, marker(&auth).to_vec());
    Ok(())
}

/// The `vault_init` audit entry of a new vault, noting that its records are sealed from the
/// start (so a stripped marker is told from a vault never sealed).
pub(crate) fn genesis(mut ev: audit::Event) -> audit::Event {
    ev.detail = Some(SEALED_AT_INIT.into());
    ev
}

fn marker(auth: &MacKey) -> [u8; 32] {
    auth.tag(&[b"auth-records-sealed"])
}

fn broken(kind: Kind, key: &[u8], reason: &'static str) -> Error {
    Error::AuthRecordBroken {
        record: format!("{} {}", kind.noun(), String::from_utf8_lossy(key)),
        reason,
    }
}

/// An authorization record: its kind, key and stored value.
type Rec = (Kind, Vec<u8>, Vec<u8>);

/// Every authorization record in the store.
fn records(store: &dyn Store) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let start = if kind == Kind::Prefix {
            PREFIX_INDEX
        } else {
            &[]
        };
        store::for_each(store, kind.table(), start, |k, v| {
            if kind != Kind::Prefix || k.starts_with(PREFIX_INDEX) {
                out.push((kind, k.to_vec(), v.to_vec()));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// At open: checks every record's seal against the MAC key derived from `api_key_mac`, or,
/// in a vault never sealed, seals them all into `batch` with one audit entry on `chain` (the
/// caller commits `batch`). `AuthRecordBroken` names the first record that fails.
pub(crate) fn open(
    store: &dyn Store,
    api_key_mac: &MacKey,
    batch: &mut WriteBatch,
    chain: &mut Chain,
) -> Result<()> {
    let auth = key(api_key_mac)?;
    let records = records(store)?;
    match store.get(Table::Meta, MARKER)? {
        Some(m) => {
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &marker(&auth)[..])) {
                return Err(Error::AuthRecordBroken {
                    record: "seal marker".into(),
                    reason: "MAC does not verify",
                });
            }
            for (kind, k, v) in &records {
                check(store, &auth, *kind, k, v)?;
            }
            Ok(())
        }
        None => migrate(store, &auth, &records, batch, chain),
    }
}

/// One record against its seal.
fn check(store: &dyn Store, auth: &MacKey, kind: Kind, k: &[u8], v: &[u8]) -> Result<()> {
    let bytes = store
        .get(Table::Meta, &seal_key(kind, k))?
        .ok_or_else(|| broken(kind, k, "no MAC (added on disk)"))?;
    let s: Seal =
        decode(&bytes, "auth record seal").map_err(|_| broken(kind, k, "MAC cannot be decoded"))?;
    let want = mac_of(auth, kind, k, v, s.issued_under.as_deref());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&s.mac[..], &want[..])) {
        return Err(broken(kind, k, "MAC does not verify (altered on disk)"));
    }
    Ok(())
}

/// Seals every record of a vault made before seals: an API key is taken as issued under its
/// shop login's merchant of now.
fn migrate(
    store: &dyn Store,
    auth: &MacKey,
    records: &[Rec],
    batch: &mut WriteBatch,
    chain: &mut Chain,
) -> Result<()> {
    // Once sealed, a vault never goes back: a marker removed on disk (to have tampered
    // records sealed anew) is refused when the audit trail shows an earlier migration.
    let mut sealed_before = false;
    audit::for_each_since(store, 1, |e| {
        sealed_before |= e.action == MIGRATE
            || (e.action == "vault_init" && e.detail.as_deref() == Some(SEALED_AT_INIT));
        Ok(())
    })?;
    if sealed_before {
        return Err(Error::AuthRecordBroken {
            record: "seal marker".into(),
            reason: "missing, but the audit trail shows the records were sealed",
        });
    }
    let shops: HashMap<&[u8], &[u8]> = records
        .iter()
        .filter(|(kind, _, _)| *kind == Kind::Shop)
        .map(|(_, k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    for (kind, k, v) in records {
        let under = match kind {
            Kind::ApiKey => {
                let rec: crate::access::ApiKeyRecord = decode(v, "api key")?;
                match rec.shop_login {
                    Some(shop) => shops
                        .get(shop.as_bytes())
                        .map(|m| String::from_utf8(m.to_vec()))
                        .transpose()
                        .map_err(|_| Error::Corrupt { what: "shop" })?,
                    None => None,
                }
            }
            _ => None,
        };
        let (sk, sv) = seal(auth, *kind, k, v, under.as_deref())?;
        batch.put(Table::Meta, sk, sv);
    }
    batch.put(Table::Meta, MARKER, marker(auth).to_vec());
    let mut ev = Ctx::system().event(MIGRATE, None, None, "ok");
    ev.detail = Some(format!("sealed {} authorization records", records.len()));
    chain.append_all([ev], &rfc3339(now_unix()), |seq, bytes| {
        batch.put(Table::Audit, audit::key(seq), bytes);
    })?;
    if let Some(head) = chain.signed_head() {
        batch.put(Table::Meta, audit::HEAD_KEY, head);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::access::{ApiKeyRequest, Scope};
    use crate::keys::Unlock;
    use crate::store::Backend;
    use crate::vault::tests::new_vault;
    use crate::vault::{Options, Vault};

    /// A vault with merchant A (shop `9000001`, one key), reopened after `f` edits its store
    /// directly; the open's error and the key's id.
    async fn reopen_after(f: impl FnOnce(&Vault, &str, &str) -> WriteBatch) -> (Error, String) {
        let (_d, v) = new_vault(Backend::Redb);
        let ctx = Ctx::system();
        let m = v.create_merchant(&ctx, "A", Some("AAAA")).await.unwrap();
        v.add_shop(&ctx, &m.merchant_id, "9000001").await.unwrap();
        let k = v
            .create_api_key(
                &ctx,
                ApiKeyRequest {
                    shop_login: Some("9000001".into()),
                    scopes: vec![Scope::Read],
                    ..ApiKeyRequest::default()
                },
            )
            .await
            .unwrap();
        let batch = f(&v, &m.merchant_id, &k.api_key_id);
        let dir = v.dir().to_path_buf();
        v.shutdown();
        v.inner.store.commit(&batch).unwrap();
        drop(v);
        let err = Vault::open(&dir, &Unlock::Dev, Options::default()).unwrap_err();
        assert_eq!(err.code(), "auth_record_broken");
        (err, k.api_key_id)
    }

    #[tokio::test]
    async fn every_altered_added_or_unsealed_record_stops_the_open() {
        // A merchant record rewritten (its prefix changed).
        let (e, _) = reopen_after(|v, m, _| {
            let mut raw = v
                .inner
                .store
                .get(Table::Merchants, m.as_bytes())
                .unwrap()
                .unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 1;
            let mut b = WriteBatch::new();
            b.put(Table::Merchants, m.as_bytes(), raw);
            b
        })
        .await;
        assert!(e.to_string().contains("merchant mer_"), "{e}");
        // A shop login added to a group on disk: no seal.
        let (e, _) = reopen_after(|_, m, _| {
            let mut b = WriteBatch::new();
            b.put(Table::Shops, b"9000002".as_slice(), m.as_bytes());
            b
        })
        .await;
        assert_eq!(
            e.to_string(),
            "authorization record broken: shop login 9000002: no MAC (added on disk)"
        );
        // A key's seal re-pointed at another merchant (its MAC then fails).
        let (e, id) = reopen_after(|v, _, id| {
            let at = seal_key(Kind::ApiKey, id.as_bytes());
            let mut s: Seal =
                decode(&v.inner.store.get(Table::Meta, &at).unwrap().unwrap(), "s").unwrap();
            s.issued_under = Some("mer_other".into());
            let mut b = WriteBatch::new();
            b.put(Table::Meta, at, encode(&s, "s").unwrap());
            b
        })
        .await;
        assert_eq!(
            e.to_string(),
            format!(
                "authorization record broken: api key {id}: MAC does not verify (altered on disk)"
            )
        );
        // The marker and every seal stripped (to have altered records sealed anew): refused,
        // the audit trail shows the vault was sealed from the start.
        let (e, _) = reopen_after(|v, _, _| {
            let mut b = WriteBatch::new();
            b.delete(Table::Meta, MARKER);
            crate::store::for_each(v.inner.store.as_ref(), Table::Meta, SEAL_PREFIX, |k, _| {
                if k.starts_with(SEAL_PREFIX) {
                    b.delete(Table::Meta, k);
                }
                Ok(())
            })
            .unwrap();
            b
        })
        .await;
        assert_eq!(
            e.to_string(),
            "authorization record broken: seal marker: missing, but the audit trail shows the records were sealed"
        );
    }
}
