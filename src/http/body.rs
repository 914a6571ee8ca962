//! Request bodies, parsed field by field from a JSON value so that a field error names the field
//! and never echoes a value (serde's own messages quote the offending input, which could be a
//! PAN): size and content-type limits, unknown fields, typed optional fields, the tokenize body.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Problem;
use crate::Error;
use crate::vault::TokenizeRequest;

/// Request bodies over this many bytes are 413; batch bodies get [`BATCH_BODY_LIMIT`].
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest body of `POST /v1/tokens/batch`, in bytes; over it, 413.
pub const BATCH_BODY_LIMIT: usize = 4 * 1024 * 1024;

pub(super) fn field_error(field: &'static str, reason: &'static str) -> Problem {
    Problem::from(Error::InvalidField { field, reason })
}

/// Reads a JSON object body: 415 for another content type or a `charset` other than UTF-8,
/// 413 over `limit`, 400 if it is not UTF-8 (naming the byte offset), not JSON or repeats a key
/// in any object, 422 if it is not an object.
pub(super) async fn json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Map<String, Value>, Problem> {
    use futures_util::StreamExt;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = content_type.split(';');
    let is_json = parts
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    if !parts.all(utf8_or_no_charset) {
        // The value is not echoed: a header is no place to repeat what a client sent.
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the Content-Type charset is not UTF-8: JSON bodies are UTF-8 (send Content-Type: application/json or application/json; charset=utf-8)",
        ));
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::with_capacity(declared.unwrap_or(1024).min(limit)));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "the body could not be read",
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if let Err(e) = std::str::from_utf8(&body) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!(
                "the body is not UTF-8 (invalid byte at offset {}): JSON bodies are UTF-8",
                e.valid_up_to()
            ),
        ));
    }
    match serde_json::from_slice::<Value>(&body) {
        // A repeated key would read as its last value here and maybe as its first elsewhere
        // (the proxy refuses it too): never pick one.
        Ok(Value::Object(_)) if !crate::gateway::json::keys_unique(&body) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the body repeats a key in an object",
        )),
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the body must be a JSON object",
        )),
        Err(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the body is not valid JSON",
        )),
    }
}

/// Whether one `;`-parameter of a Content-Type leaves the body UTF-8: any parameter but
/// `charset`, or `charset` naming UTF-8 (RFC 8259: JSON exchanged between systems is UTF-8).
fn utf8_or_no_charset(param: &str) -> bool {
    match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    }
}

/// Refuses fields outside `known`, naming the first one (its value is never echoed, nor a name
/// with 12 or more digits in it: a card number sent as a field name).
pub(super) fn only_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), Problem> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) if k.bytes().filter(u8::is_ascii_digit).count() >= crate::pan::MIN_PAN_DIGITS => {
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "unknown field (its name holds a card-like number and is not repeated)",
            ))
        }
        Some(k) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("unknown field `{}`", k.chars().take(64).collect::<String>()),
        )),
    }
}

pub(super) fn opt_str(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, Problem> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

pub(super) fn opt_int(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<i64>, Problem> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| field_error(field, "must be an integer")),
        Some(_) => Err(field_error(field, "must be an integer")),
    }
}

/// `expiry_month` / `expiry_year`: required JSON integers (range checked by the vault).
pub(super) fn expiry_field(map: &Map<String, Value>, field: &'static str) -> Result<i64, Error> {
    match map.get(field) {
        Some(Value::Number(n)) => n.as_i64().ok_or(Error::InvalidExpiry {
            reason: "must be integers",
        }),
        _ => Err(Error::InvalidExpiry {
            reason: "expiry_month and expiry_year are required integers",
        }),
    }
}

pub(crate) const TOKENIZE_FIELDS: [&str; 8] = [
    "pan",
    "expiry_month",
    "expiry_year",
    "request_token",
    "cardholder_name",
    "temporary",
    "cvv",
    "ttl_seconds",
];

/// A tokenize body, field by field. Wrong-typed card fields map to their own codes.
pub(super) fn tokenize_request(map: &Map<String, Value>) -> Result<TokenizeRequest, Problem> {
    only_fields(map, &TOKENIZE_FIELDS)?;
    let pan = match map.get("pan") {
        Some(Value::String(s)) => Zeroizing::new(s.clone()),
        Some(_) => {
            return Err(Error::InvalidPan {
                reason: "must be a JSON string",
            }
            .into());
        }
        None => {
            return Err(Error::InvalidPan {
                reason: "is required",
            }
            .into());
        }
    };
    let expiry = |f: &'static str| expiry_field(map, f);
    let temporary = match map.get("temporary") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field_error("temporary", "must be true or false")),
    };
    let cvv = match map.get("cvv") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Zeroizing::new(s.clone())),
        Some(_) => return Err(Error::InvalidCvv.into()),
    };
    Ok(TokenizeRequest {
        pan,
        expiry_month: expiry("expiry_month")?,
        expiry_year: expiry("expiry_year")?,
        request_token: opt_str(map, "request_token")?,
        cardholder_name: opt_str(map, "cardholder_name")?.map(Zeroizing::new),
        temporary,
        cvv,
        ttl_seconds: opt_int(map, "ttl_seconds")?,
    })
}

#[cfg(test)]
mod tests {
    use super::utf8_or_no_charset;

    #[test]
    fn only_a_utf8_charset_is_accepted() {
        for ok in [
            " charset=utf-8",
            "charset=UTF-8",
            " charset=\"utf-8\"",
            "charset=utf8",
            "",
        ] {
            assert!(utf8_or_no_charset(ok), "{ok}");
        }
        for refused in [" charset=iso-8859-1", "charset=utf-16", "CHARSET=latin1"] {
            assert!(!utf8_or_no_charset(refused), "{refused}");
        }
    }
}
