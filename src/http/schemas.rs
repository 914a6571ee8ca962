//! The OpenAPI schemas of the answers whose types live in the domain core (token metadata, card
//! brand, token kind, scopes, key status, audit page, rotation, re-encryption). The core stays
//! free of the documentation framework, so each is described here, field for field, and the
//! tests below hold every schema to what its core type really serializes: a field added,
//! renamed or dropped in the core, or a new enum variant, fails them until the schema follows.
#![allow(dead_code)] // schema-only types: described, never built

use utoipa::ToSchema;

/// What a merchant may read about a token: never the PAN.
#[derive(ToSchema)]
pub struct TokenInfo {
    token: String,
    token_kind: TokenKind,
    token_expiry_month: u8,
    token_expiry_year: u16,
    brand: Brand,
    bin: String,
    last4: String,
    masked_pan: String,
    expired: bool,
    created_at: String,
    agreements: Vec<Agreement>,
}

/// A stored-credential agreement made on a token by a proxied charge: MPGS
/// `agreement.{id,type}`, Nexi `contractId`/`contractType`; Worldline and Axerve, which have no
/// agreement id, `<gateway>:<TYPE>` with the series' type.
#[derive(ToSchema)]
pub struct Agreement {
    id: String,
    r#type: String,
}

/// Card brand, detected from the issuer identification number (IIN) prefix.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    Maestro,
    Unionpay,
    Unknown,
}

/// The kind of a stored or issued token.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum TokenKind {
    Masked,
    Custom,
    Temporary,
}

/// A permission an API key can carry.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Scope {
    Tokenize,
    Read,
    Reveal,
    Charge,
    Admin,
    Keys,
    Audit,
    Metrics,
}

/// The keys of an open vault (`GET /v1/sys/keys`). Never key material.
#[derive(ToSchema)]
pub struct KeyStatus {
    key_source: String,
    /// KEK versions held (after a rotation, only the newest).
    kek_versions: Vec<u32>,
    /// A DEK older than this is past its cryptoperiod (and rolls over on next use).
    dek_cryptoperiod_seconds: u64,
    /// Every KEK version with its state and age.
    keks: Vec<KekStatus>,
    deks: Vec<DekStatus>,
    /// The re-encryption job of this process, if one ran or runs (else null).
    #[schema(required = true)]
    reencryption: Option<ReencryptJob>,
}

#[derive(ToSchema)]
pub struct KekStatus {
    version: u32,
    /// `active` (wraps every key) or `retired` (left by a rotation cut short; destroyed by the
    /// next one).
    state: String,
    created_at: String,
    age_seconds: u64,
}

#[derive(ToSchema)]
pub struct DekStatus {
    id: u32,
    kek_version: u32,
    created_at: String,
    age_seconds: u64,
    past_cryptoperiod: bool,
    /// The DEK new records are encrypted under.
    current: bool,
    /// Records it encrypts.
    records: u64,
}

/// A page of audit entries (`GET /v1/audit`).
#[derive(ToSchema)]
pub struct AuditPage {
    /// The entries, oldest first.
    entries: Vec<AuditEntry>,
    /// The `since` of the next page; null at the end of the chain.
    #[schema(required = true)]
    next: Option<u64>,
    /// On the page that ends at the chain's signed head: that head (`seq`, `hash`, `mac`), so a
    /// log system can check with `panvault audit verify` that nothing was cut from the tail;
    /// null on the other pages.
    #[schema(required = true)]
    signed_head: Option<SignedHead>,
}

/// One entry of the hash-chained audit trail. Every field is present; those that do not apply
/// to the entry are null.
#[derive(ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    seq: u64,
    /// When it was appended: RFC 3339 UTC, to the second.
    time: String,
    /// Who acted: an API key id, `anonymous` (no valid key), `cli` or `system`.
    actor: String,
    /// The merchant group the operation touched.
    #[schema(required = true)]
    merchant: Option<String>,
    /// What was done (`tokenize`, `reveal`, `audit_read`, ...).
    action: String,
    /// The token acted on, never a card number.
    #[schema(required = true)]
    token: Option<String>,
    /// `ok`, `created`, `existing`, `denied`, ...
    outcome: String,
    /// The HTTP request's id (`X-Request-Id`).
    #[schema(required = true)]
    request_id: Option<String>,
    /// The caller's IP address.
    #[schema(required = true)]
    client: Option<String>,
    /// What else an auditor needs, never secret; for a checkpoint entry, `covers seq N; mac=HEX`: the MAC of entry N.
    #[schema(required = true)]
    detail: Option<String>,
    /// The previous entry's `hash` (64 zeros before entry 1).
    prev_hash: String,
    /// SHA-256 of `prev_hash` and the entry's other fields, 64 hex digits.
    hash: String,
}

/// The chain's signed head: the last entry's `seq` and `hash`, and their MAC under the audit key.
#[derive(ToSchema)]
pub struct SignedHead {
    seq: u64,
    /// 64 hex digits.
    hash: String,
    /// HMAC-SHA-256 over `seq` and `hash`, 64 hex digits.
    mac: String,
}

/// One start hardening check of the serving process (in the evidence report).
#[derive(ToSchema)]
pub struct HardeningCheck {
    /// `core_dumps`, `not_dumpable`, `memory_locked`, `data_dir_mode`, `key_files_mode`,
    /// `config_mode` or `secret_files_mode`.
    name: String,
    /// Whether the protection is in force.
    ok: bool,
    /// What was found or done, for a person.
    detail: String,
}

/// Progress of a background re-encryption job.
#[derive(ToSchema)]
pub struct ReencryptJob {
    running: bool,
    /// Records under a DEK numbered below this one move (the DEK current at the start).
    below: u32,
    /// Tokens looked at, and records moved to the current DEK, by this job.
    scanned: u64,
    moved: u64,
    /// Tokens in the table when the job started (the progress bar's total).
    total: u64,
    destroyed: Vec<u32>,
    /// Why it stopped early, if it did (the next start resumes from its place); else null.
    #[schema(required = true)]
    error: Option<String>,
    /// Milliseconds since the job started (until it ended, once it has).
    elapsed_ms: u64,
}

/// What a KEK rotation did.
#[derive(ToSchema)]
pub struct Rotation {
    /// The KEK version now in use.
    kek_version: u32,
    /// The versions destroyed.
    destroyed: Vec<u32>,
    /// DEKs and `meta` keys re-wrapped.
    rewrapped: usize,
    millis: u64,
    /// `shamir` keys only: the new custodian shares (`pvshare1-<id>-<hex>`, 1..=N), shown this
    /// once; the old shares no longer unseal. Hand each to its custodian before the vault next
    /// needs unsealing (if this answer is lost, rotate again while the vault runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shares: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::access::Scope;
    use crate::crypto::SecretString;
    use crate::pan::Brand;
    use crate::token::TokenKind;
    use crate::vault::{
        Agreement, AuditPage, DekStatus, KekStatus, KeyStatus, ReencryptJob, Rotation, TokenInfo,
    };

    fn schema(name: &str) -> Value {
        let doc: Value = serde_json::from_str(&super::super::openapi::document()).unwrap();
        doc["components"]["schemas"][name].clone()
    }

    /// The schema's property names against the keys the core value serializes to.
    fn same_fields(name: &str, value: impl serde::Serialize) {
        let documented: BTreeSet<String> = schema(name)["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect();
        let served: BTreeSet<String> = serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(documented, served, "schema {name}");
    }

    /// The schema's enum values against what each variant serializes to.
    fn same_values<T: serde::Serialize>(name: &str, all: &[T]) {
        let documented: BTreeSet<String> = schema(name)["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("no enum schema {name}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let served: BTreeSet<String> = all
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(documented, served, "schema {name}");
    }

    #[test]
    fn each_schema_lists_what_its_core_type_serializes() {
        // Struct literals: a field added to a core type stops this compiling until it is here.
        let agreement = Agreement {
            id: "AGR-1".into(),
            kind: "UNSCHEDULED".into(),
        };
        same_fields("Agreement", &agreement);
        same_fields(
            "TokenInfo",
            TokenInfo {
                token: "41XYZW7QK2ZD1111".into(),
                token_kind: TokenKind::Masked,
                token_expiry_month: 12,
                token_expiry_year: 2030,
                brand: Brand::Visa,
                bin: "411111".into(),
                last4: "1111".into(),
                masked_pan: "411111******1111".into(),
                expired: false,
                created_at: "2026-12-04T00:00:00Z".into(),
                agreements: vec![agreement],
            },
        );
        let job = ReencryptJob::default();
        same_fields("ReencryptJob", &job);
        let kek = KekStatus {
            version: 1,
            state: "active",
            created_at: String::new(),
            age_seconds: 0,
        };
        same_fields("KekStatus", &kek);
        let dek = DekStatus {
            id: 1,
            kek_version: 1,
            created_at: String::new(),
            age_seconds: 0,
            past_cryptoperiod: false,
            current: true,
            records: 0,
        };
        same_fields("DekStatus", &dek);
        same_fields(
            "KeyStatus",
            KeyStatus {
                key_source: "dev",
                kek_versions: vec![1],
                dek_cryptoperiod_seconds: 1,
                keks: vec![kek],
                deks: vec![dek],
                reencryption: Some(job),
            },
        );
        let entry = crate::audit::Entry {
            seq: 1,
            time: "2026-12-04T00:00:00Z".into(),
            actor: "system".into(),
            merchant: None,
            action: "init".into(),
            token: None,
            outcome: "ok".into(),
            request_id: None,
            client: None,
            detail: None,
            prev_hash: "00".repeat(32),
            hash: "11".repeat(32),
        };
        same_fields("AuditEntry", &entry);
        let head = crate::audit::SignedHead {
            seq: 1,
            hash: "11".repeat(32),
            mac: "22".repeat(32),
        };
        same_fields("SignedHead", &head);
        same_fields(
            "AuditPage",
            AuditPage {
                entries: vec![entry],
                next: None,
                signed_head: Some(head),
            },
        );
        // Every field of these answers is always there (null when it does not apply): a
        // generated client must not take one for optional.
        for name in [
            "TokenInfo",
            "Agreement",
            "KeyStatus",
            "KekStatus",
            "DekStatus",
            "ReencryptJob",
            "AuditEntry",
            "SignedHead",
            "AuditPage",
            "HardeningCheck",
            "Evidence",
            "TlsEvidence",
            "AuditEvidence",
            "ApiKeyEvidence",
            "StoreEvidence",
        ] {
            let s = schema(name);
            let required: BTreeSet<&str> = s["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let all: BTreeSet<&str> = s["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(required, all, "schema {name}");
        }
        // The report's parts whose figures may be null (the whole report is built from a live
        // vault in tests/api.rs, whose answers a generated client parses).
        same_fields(
            "AuditEvidence",
            crate::evidence::AuditEvidence {
                chain: "ok".into(),
                entries: 0,
                last_hash: None,
                signed_through: None,
                checkpoints: 0,
            },
        );
        same_fields(
            "ApiKeyEvidence",
            crate::evidence::ApiKeyEvidence {
                api_key_id: "k".into(),
                scopes: vec![],
                shop_login: None,
                created_at: String::new(),
                last_used: None,
            },
        );
        same_fields(
            "HardeningCheck",
            crate::harden::HardeningCheck {
                name: "core_dumps",
                ok: true,
                detail: String::new(),
            },
        );
        // `shares` is written only when there are some: the schema lists it, not required.
        same_fields(
            "Rotation",
            Rotation {
                kek_version: 2,
                destroyed: vec![1],
                rewrapped: 3,
                millis: 4,
                shares: vec![SecretString::new("pvshare1-1-00".into())],
            },
        );
        assert!(
            !schema("Rotation")["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from("shares"))
        );
    }

    #[test]
    fn each_enum_schema_lists_every_variant() {
        // Each list is checked complete by a match: a new variant stops this compiling.
        let brands = [
            Brand::Visa,
            Brand::Mastercard,
            Brand::Amex,
            Brand::Discover,
            Brand::Jcb,
            Brand::Diners,
            Brand::Maestro,
            Brand::Unionpay,
            Brand::Unknown,
        ];
        for b in brands {
            match b {
                Brand::Visa
                | Brand::Mastercard
                | Brand::Amex
                | Brand::Discover
                | Brand::Jcb
                | Brand::Diners
                | Brand::Maestro
                | Brand::Unionpay
                | Brand::Unknown => {}
            }
        }
        same_values("Brand", &brands);
        let kinds = [TokenKind::Masked, TokenKind::Custom, TokenKind::Temporary];
        for k in kinds {
            match k {
                TokenKind::Masked | TokenKind::Custom | TokenKind::Temporary => {}
            }
        }
        same_values("TokenKind", &kinds);
        same_values("Scope", &Scope::ALL);
    }
}
