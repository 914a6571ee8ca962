//! The reports a person reads: `keys status`, `keys rotate`, `keys reencrypt` and `evidence`
//! as text (each command's `--json` prints the JSON instead, for scripts).

use std::fmt::Write;

use serde_json::Value;

use crate::vault::{KeyStatus, ReencryptJob, Rotation};

/// An age in seconds as a person reads it: `42 s`, `17 min`, `5 h`, `12 d`.
pub(super) fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A list of numbers as `1, 2, 3`, or `none`.
fn list(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// `keys status`: the key source, each KEK version, each DEK, the re-encryption job.
pub(super) fn key_status(st: &KeyStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "key source:      {}", st.key_source);
    for k in &st.keks {
        let _ = writeln!(
            out,
            "KEK version {}:   {}, created {} ({} ago)",
            k.version,
            k.state,
            k.created_at,
            age(k.age_seconds)
        );
    }
    let _ = writeln!(
        out,
        "DEKs:            {} (cryptoperiod {})",
        st.deks.len(),
        age(st.dek_cryptoperiod_seconds)
    );
    if st.deks.is_empty() {
        let _ = writeln!(out, "  none yet: the first tokenization makes one");
    }
    for d in &st.deks {
        let mut notes = Vec::new();
        if d.current {
            notes.push("current");
        }
        if d.past_cryptoperiod {
            notes.push("past its cryptoperiod");
        }
        let _ = writeln!(
            out,
            "  dek {:<4} under KEK {}, created {} ({} ago), {} record{}{}",
            d.id,
            d.kek_version,
            d.created_at,
            age(d.age_seconds),
            d.records,
            if d.records == 1 { "" } else { "s" },
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            }
        );
    }
    let job = match &st.reencryption {
        None => "none in this process".to_string(),
        Some(j) if j.running => format!(
            "running: {} of {} tokens looked at, {} records moved",
            j.scanned, j.total, j.moved
        ),
        Some(j) => match &j.error {
            Some(e) => format!(
                "stopped early ({e}); `keys reencrypt` resumes it ({} of {} tokens looked at)",
                j.scanned, j.total
            ),
            None => reencrypt_summary(j),
        },
    };
    let _ = writeln!(out, "re-encryption:   {job}");
    out
}

/// `keys rotate`: the new version, what was destroyed and re-wrapped, any new shares.
pub(super) fn rotation(r: &Rotation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "KEK rotated: version {} now wraps every key ({} re-wrapped in {} ms)",
        r.kek_version, r.rewrapped, r.millis
    );
    let _ = writeln!(out, "destroyed KEK versions: {}", list(&r.destroyed));
    if !r.shares.is_empty() {
        let _ = writeln!(
            out,
            "new custodian shares (shown once; hand each to its custodian now: the old ones no \
             longer unseal):"
        );
        for (i, s) in r.shares.iter().enumerate() {
            let _ = writeln!(out, "  custodian {}: {}", i + 1, s.expose());
        }
    }
    out
}

/// `keys reencrypt`'s last line: what the job did.
pub(super) fn reencrypt_summary(j: &ReencryptJob) -> String {
    format!(
        "re-encrypted: {} tokens looked at, {} records moved off DEKs below {} in {:.1} s; \
         destroyed DEKs: {}",
        j.scanned,
        j.moved,
        j.below,
        j.elapsed_ms as f64 / 1000.0,
        list(&j.destroyed)
    )
}

/// Any JSON report as indented `key: value` lines (objects nest, lists of objects are items
/// under `-`, lists of plain values one line): `evidence`'s text form.
pub(super) fn outline(v: &Value) -> String {
    let mut lines = Vec::new();
    outline_into(v, &mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("none".into()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("none".into()),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            Some(a.iter().filter_map(scalar).collect::<Vec<_>>().join(", "))
        }
        Value::Object(o) if o.is_empty() => Some("none".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn outline_into(v: &Value, lines: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match scalar(x) {
                    Some(s) => lines.push(format!("{k}: {s}")),
                    None => {
                        lines.push(format!("{k}:"));
                        let mut inner = Vec::new();
                        outline_into(x, &mut inner);
                        lines.extend(inner.into_iter().map(|l| format!("  {l}")));
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                let mut inner = Vec::new();
                match scalar(x) {
                    Some(s) => inner.push(s),
                    None => outline_into(x, &mut inner),
                }
                for (i, l) in inner.into_iter().enumerate() {
                    lines.push(if i == 0 {
                        format!("- {l}")
                    } else {
                        format!("  {l}")
                    });
                }
            }
        }
        other => lines.extend(scalar(other)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(age(5), "5 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(86_400), "24 h");
        assert_eq!(age(3 * 86_400), "3 d");
    }

    #[test]
    fn an_outline_nests_objects_and_lists() {
        let v = serde_json::json!({"a": 1, "b": {"c": [1, 2], "d": null},
            "e": [{"f": "x", "g": true}, {"f": "y", "g": false}], "h": []});
        assert_eq!(
            outline(&v),
            "a: 1\nb:\n  c: 1, 2\n  d: none\ne:\n  - f: x\n    g: yes\n  - f: y\n    g: no\nh: none\n"
        );
    }
}
