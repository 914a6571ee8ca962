//! The assessor's report: `GET /v1/sys/evidence` (scope `audit`) and `panvault evidence`. Every
//! figure is computed from the running vault, its store and its audit chain when asked: nothing
//! in it is a constant but the names of the mechanisms.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit;
use crate::harden::HardeningCheck;
use crate::vault::{KeyStatus, Vault};
use crate::{Result, tls};

/// How many days back "the period" of the reveal counts reaches.
pub const PERIOD_DAYS: u64 = 90;

/// The assessor's report: how the vault protects cards, measured when asked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Evidence {
    /// When the report was computed (RFC 3339, UTC, seconds).
    pub generated_at: String,
    /// The TLS versions and cipher suites `serve` offers.
    pub tls: TlsEvidence,
    /// KEK versions with state and age, DEKs with their ages against the cryptoperiod, the
    /// re-encryption job.
    #[schema(value_type = Object)]
    pub keys: KeyStatus,
    /// The state of the audit chain.
    pub audit: AuditEvidence,
    /// Reveals (including cards swapped into proxied charges) per API key over the period.
    pub reveals_by_key: BTreeMap<String, u64>,
    /// The period of `reveals_by_key`, in days back from `generated_at` ([`PERIOD_DAYS`]).
    pub period_days: u64,
    /// Every API key, with its scopes and when it was last used.
    pub api_keys: Vec<ApiKeyEvidence>,
    /// The storage backend and its durability.
    pub store: StoreEvidence,
    /// The start hardening checks of the serving process (empty in `panvault evidence`, which
    /// serves nothing).
    #[schema(value_type = Vec<Object>)]
    pub hardening: Vec<HardeningCheck>,
}

/// What TLS `serve` accepts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TlsEvidence {
    /// Protocol versions (`TLSv1_3`, `TLSv1_2`).
    pub versions: Vec<String>,
    /// Cipher suites by their IANA names.
    pub suites: Vec<String>,
}

/// The audit chain, verified when the report is built.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEvidence {
    /// `ok`, or the code of what `audit verify` found.
    pub chain: String,
    /// Entries checked (0 when the chain did not verify).
    pub entries: u64,
    /// Hex hash of the last entry; none when the chain did not verify.
    pub last_hash: Option<String>,
    /// The last entry a verified MAC (signed head or checkpoint) vouches for.
    pub signed_through: Option<u64>,
    /// Checkpoint entries, each with a verified MAC.
    pub checkpoints: u64,
}

/// One API key as the report shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyEvidence {
    /// The key's public id.
    pub api_key_id: String,
    /// The scopes the key was granted.
    pub scopes: Vec<String>,
    /// The shop login of a shop key; none for an admin key.
    pub shop_login: Option<String>,
    /// When the key was created (RFC 3339).
    pub created_at: String,
    /// The time of the newest audit entry this key made, if any.
    pub last_used: Option<String>,
}

/// The store under the vault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreEvidence {
    /// `redb` or `sled`.
    pub backend: String,
    /// When a write counts as done, in words.
    pub durability: &'static str,
}

/// Builds the report (reads the whole audit chain twice: once to verify, once to count).
pub fn report(vault: &Vault, hardening: Vec<HardeningCheck>) -> Result<Evidence> {
    let store = vault.store();
    let audit = match vault.verify_audit() {
        Ok(v) => AuditEvidence {
            chain: "ok".into(),
            entries: v.entries,
            last_hash: Some(v.last_hash),
            signed_through: v.signed_through,
            checkpoints: v.checkpoints,
        },
        Err(e) => AuditEvidence {
            chain: e.code().to_string(),
            entries: 0,
            last_hash: None,
            signed_through: None,
            checkpoints: 0,
        },
    };
    let now = std::time::SystemTime::now();
    let from = humantime::format_rfc3339_seconds(
        now - std::time::Duration::from_secs(PERIOD_DAYS * 86_400),
    )
    .to_string();
    let mut reveals_by_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_used: BTreeMap<String, String> = BTreeMap::new();
    audit::for_each_since(store, 1, |e| {
        // RFC 3339 UTC times compare as strings.
        if e.action == "reveal" && e.outcome == "ok" && e.time.as_str() >= from.as_str() {
            *reveals_by_key.entry(e.actor.clone()).or_default() += 1;
        }
        last_used.insert(e.actor.clone(), e.time.clone());
        Ok(())
    })?;
    let api_keys = vault
        .api_key_records()
        .into_iter()
        .map(|(id, scopes, shop_login, created_at)| ApiKeyEvidence {
            last_used: last_used.get(&id).cloned(),
            api_key_id: id,
            scopes,
            shop_login,
            created_at,
        })
        .collect();
    Ok(Evidence {
        generated_at: humantime::format_rfc3339_seconds(now).to_string(),
        tls: TlsEvidence {
            versions: tls::VERSIONS
                .iter()
                .map(|v| format!("{:?}", v.version))
                .collect(),
            suites: tls::suites(),
        },
        keys: vault.key_status()?,
        audit,
        reveals_by_key,
        period_days: PERIOD_DAYS,
        api_keys,
        store: StoreEvidence {
            backend: vault.backend().as_str().to_string(),
            durability: "every acknowledged write is fdatasync'ed (group commit) before its answer",
        },
        hardening,
    })
}
