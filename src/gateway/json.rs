//! Reading and editing one field of a JSON request without touching the others: every member
//! that is not on the edited path keeps its exact bytes (number formats, escapes, key order), so
//! the gateway receives the merchant's fields byte for byte. Objects on the path are re-joined
//! without insignificant whitespace.
//!
//! Duplicate keys on the path are refused: `{"pan":"TOKEN","pan":"..."}` must not read one way
//! here and another way at the gateway.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::GatewayError;

/// The members of one JSON object, in order, each value as its raw text.
struct Obj<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Obj<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Obj<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Obj<'de>, A::Error> {
                let mut members: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    if members.iter().any(|(have, _)| *have == k) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    members.push((k, v));
                }
                Ok(Obj(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, walked only to refuse a duplicate key in any object at any depth.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Unique, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    if !seen.insert(k) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    m.next_value::<Unique>()?;
                }
                Ok(Unique)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Unique, A::Error> {
                while s.next_element::<Unique>()?.is_some() {}
                Ok(Unique)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_unit<E>(self) -> Result<Unique, E> {
                Ok(Unique)
            }
        }
        d.deserialize_any(V)
    }
}

/// Refuses a JSON body with a duplicate key anywhere: parsers differ on which value wins, so
/// the proxy and the gateway could read different fields (e.g. `transaction.source`).
pub(crate) fn unique_keys(text: &str) -> Result<(), GatewayError> {
    keys_unique(text.as_bytes())
        .then_some(())
        .ok_or(GatewayError::Malformed(
            "JSON (a duplicate key, or not JSON)",
        ))
}

/// True if `body` is JSON with no object repeating a key at any depth (the HTTPS edge refuses
/// the others on every endpoint that takes JSON, as the proxy does).
pub(crate) fn keys_unique(body: &[u8]) -> bool {
    serde_json::from_slice::<Unique>(body).is_ok()
}

fn parse(text: &str) -> Result<Obj<'_>, GatewayError> {
    serde_json::from_str::<Obj<'_>>(text).map_err(|_| GatewayError::Malformed("JSON"))
}

/// The raw JSON text at `path`, if every step is an object member.
fn raw_at<'a>(text: &'a str, path: &[&str]) -> Result<Option<&'a str>, GatewayError> {
    let obj = parse(text)?;
    let Some((first, rest)) = path.split_first() else {
        return Ok(Some(text));
    };
    let Some((_, raw)) = obj.0.iter().find(|(k, _)| k == first) else {
        return Ok(None);
    };
    let raw: &'a str = raw.get();
    if rest.is_empty() {
        return Ok(Some(raw));
    }
    if !raw.trim_start().starts_with('{') {
        return Ok(None);
    }
    raw_at(raw, rest)
}

/// The string at `path`; `None` when absent or not a JSON string (a number where a card number
/// goes is no token and is left alone).
pub(crate) fn get_str(
    text: &str,
    path: &[&str],
) -> Result<Option<Zeroizing<String>>, GatewayError> {
    match raw_at(text, path)? {
        Some(raw) if raw.trim_start().starts_with('"') => serde_json::from_str::<String>(raw)
            .map(|s| Some(Zeroizing::new(s)))
            .map_err(|_| GatewayError::Malformed("JSON")),
        _ => Ok(None),
    }
}

/// The boolean at `path`; `None` when absent or not a JSON boolean.
pub(crate) fn get_bool(text: &str, path: &[&str]) -> Result<Option<bool>, GatewayError> {
    Ok(match raw_at(text, path)?.map(str::trim) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    })
}

/// Whether a member exists at `path`.
pub(crate) fn has(text: &str, path: &[&str]) -> Result<bool, GatewayError> {
    Ok(raw_at(text, path)?.is_some())
}

/// The members of the object being edited: keys and raw JSON values, in order.
pub(crate) struct Members(Vec<(String, Zeroizing<String>)>);

impl Members {
    /// Whether the object has a member named `key`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Sets `key` to the raw JSON `raw`, in place if present, else appended.
    pub(crate) fn set(&mut self, key: &str, raw: Zeroizing<String>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    /// Sets `key` to the JSON string `value`.
    pub(crate) fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, super::json_string(value));
    }

    /// Sets `key` to the JSON string `value` unless the merchant already gave `key`.
    pub(crate) fn set_str_if_absent(&mut self, key: &str, value: &str) {
        if !self.has(key) {
            self.set_str(key, value);
        }
    }

    /// Removes every member named `key`; true if there was one.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }

    fn render(&self) -> Zeroizing<String> {
        let len = self
            .0
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2;
        let mut out = Zeroizing::new(String::with_capacity(len));
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&super::json_string(k));
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        out
    }
}

/// Edits the object at `path` in `text` (objects missing on the way are created; a non-object
/// member on the way is a field error naming `field`), keeping every other member's bytes.
pub(crate) fn edit(
    text: &str,
    path: &[&str],
    field: &'static str,
    f: impl FnOnce(&mut Members),
) -> Result<Zeroizing<String>, GatewayError> {
    let obj = parse(text).map_err(|_| {
        if text.trim_start().starts_with('{') {
            GatewayError::Malformed("JSON")
        } else {
            GatewayError::Field {
                field,
                reason: "must be a JSON object",
            }
        }
    })?;
    let mut members = Members(
        obj.0
            .iter()
            .map(|(k, v)| (k.clone(), Zeroizing::new(v.get().to_string())))
            .collect(),
    );
    match path.split_first() {
        None => f(&mut members),
        Some((first, rest)) => {
            let child = match members.0.iter().find(|(k, _)| k == first) {
                Some((_, raw)) => edit(raw, rest, field, f)?,
                None => edit("{}", rest, field, f)?,
            };
            members.set(first, child);
        }
    }
    Ok(members.render())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn edits_one_member_and_keeps_the_others_bytes() {
        let text = r#"{"z": 1.50, "card": {"pan": "X", "n": 1e3}, "a": "\u0041"}"#;
        let out = edit(text, &["card"], "card", |m| {
            m.set_str("pan", "4111111111111111")
        })
        .unwrap();
        assert_eq!(
            out.as_str(),
            r#"{"z":1.50,"card":{"pan":"4111111111111111","n":1e3},"a":"\u0041"}"#
        );
        let out = edit(text, &["x", "y"], "x", |m| m.set_str("k", "v")).unwrap();
        assert!(out.ends_with(r#""x":{"y":{"k":"v"}}}"#), "{}", out.as_str());
    }

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused() {
        assert!(unique_keys(r#"{"a":{"b":[{"c":1,"d":2}]},"e":"x"}"#).is_ok());
        for dup in [
            r#"{"a":1,"a":2}"#,
            r#"{"transaction":{"source":"INTERNET","source":"MERCHANT"}}"#,
            r#"{"a":[{"x":1},{"y":1,"y":2}]}"#,
        ] {
            assert!(unique_keys(dup).is_err(), "{dup}");
        }
    }

    #[test]
    fn reads_strings_only_and_refuses_duplicates() {
        let text = r#"{"card": {"pan": "T1", "num": 41}}"#;
        assert_eq!(
            get_str(text, &["card", "pan"]).unwrap().unwrap().as_str(),
            "T1"
        );
        assert!(get_str(text, &["card", "num"]).unwrap().is_none());
        assert!(get_str(text, &["card", "x", "y"]).unwrap().is_none());
        assert!(get_str(r#"{"card":{"pan":"A","pan":"B"}}"#, &["card", "pan"]).is_err());
        assert!(get_str("[1]", &["card"]).is_err());
        assert!(edit(r#"{"card": 5}"#, &["card"], "card", |_| {}).is_err());
    }
}
