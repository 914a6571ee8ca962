//! The token endpoints: tokenize (one or a batch), read, update, delete and reveal (rate-limited
//! per API key).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::body::{expiry_field, field_error, json_body, only_fields, opt_str, tokenize_request};
use super::extract::{Unsealed, principal, request_ctx};
use super::problem::Answer;
use super::{BATCH_BODY_LIMIT, BODY_LIMIT, Problem, RevealLimit};
use crate::Error;
use crate::access::Scope;
use crate::vault::{TokenInfo, TokenUpdate, TokenizeRequest, Tokenized};

fn token_json(info: &TokenInfo, with_agreements: bool) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if !with_agreements && let Value::Object(m) = &mut v {
        m.remove("agreements");
    }
    v
}

fn tokenized(t: &Tokenized) -> HttpResponse {
    let status = if t.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(token_json(&t.info, false))
}

pub(super) async fn create_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    let t = vault
        .tokenize(
            &request_ctx(&req, Some(&p)),
            p.merchant()?,
            &tokenize_request(&map)?,
        )
        .await?;
    Ok(tokenized(&t))
}

pub(super) async fn create_tokens_batch(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BATCH_BODY_LIMIT).await?;
    only_fields(&map, &["items"])?;
    let Some(Value::Array(items)) = map.get("items") else {
        return Err(field_error("items", "must be an array"));
    };
    if items.len() > crate::vault::MAX_BATCH_ITEMS {
        return Err(Error::BatchTooLarge {
            got: items.len(),
            max: crate::vault::MAX_BATCH_ITEMS,
        }
        .into());
    }
    // Items that do not even parse get their problem; the rest go to the vault together.
    let mut indexes = Vec::with_capacity(items.len());
    let mut reqs: Vec<TokenizeRequest> = Vec::with_capacity(items.len());
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        match item
            .as_object()
            .ok_or_else(|| field_error("items", "every item must be an object"))
            .and_then(tokenize_request)
        {
            Ok(r) => {
                indexes.push(i);
                reqs.push(r);
            }
            Err(pr) => results[i] = Some(item_problem(i, &pr)),
        }
    }
    let out = vault
        .tokenize_batch(&request_ctx(&req, Some(&p)), p.merchant()?, &reqs)
        .await?;
    for (i, r) in indexes.iter().zip(out) {
        results[*i] = Some(match r {
            Ok(t) => {
                let mut v = token_json(&t.info, false);
                if let Value::Object(m) = &mut v {
                    m.insert("index".into(), json!(i));
                    m.insert("status".into(), json!(if t.created { 201 } else { 200 }));
                }
                v
            }
            Err(e) => item_problem(*i, &Problem::from(e)),
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

fn item_problem(index: usize, p: &Problem) -> Value {
    let mut v = p.body();
    if let Value::Object(m) = &mut v {
        m.insert("index".into(), json!(index));
    }
    v
}

pub(super) async fn get_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Read).await?;
    let info = vault.get(p.merchant()?, &token)?;
    Ok(HttpResponse::Ok().json(token_json(&info, true)))
}

pub(super) async fn update_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
    body: web::Payload,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    let map = json_body(&req, body, BODY_LIMIT).await?;
    only_fields(
        &map,
        &["pan", "expiry_month", "expiry_year", "cardholder_name"],
    )?;
    let expiry = |f: &'static str| expiry_field(&map, f);
    let pan = match map.get("pan") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Zeroizing::new(s.clone())),
        Some(_) => {
            return Err(Error::InvalidPan {
                reason: "must be a JSON string",
            }
            .into());
        }
    };
    let update = TokenUpdate {
        expiry_month: expiry("expiry_month")?,
        expiry_year: expiry("expiry_year")?,
        pan,
        cardholder_name: opt_str(&map, "cardholder_name")?.map(Zeroizing::new),
    };
    let info = vault
        .update(&request_ctx(&req, Some(&p)), p.merchant()?, &token, &update)
        .await?;
    Ok(HttpResponse::Ok().json(token_json(&info, true)))
}

pub(super) async fn delete_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Tokenize).await?;
    vault
        .delete(&request_ctx(&req, Some(&p)), p.merchant()?, &token)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn reveal_token(
    req: HttpRequest,
    Unsealed(vault): Unsealed,
    limit: web::Data<RevealLimit>,
    token: web::Path<String>,
) -> Answer {
    let p = principal(&req, &vault, Scope::Reveal).await?;
    if !limit.take(&p.key_id) {
        let _ = vault
            .audit_rate_limited(&request_ctx(&req, Some(&p)), &token)
            .await;
        let mut r = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many reveals for this API key; retry shortly",
        )
        .response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(r);
    }
    let card = vault
        .reveal(&request_ctx(&req, Some(&p)), p.merchant()?, &token)
        .await?;
    let body = Zeroizing::new(
        json!({
            "pan": card.pan.digits(),
            "expiry_month": card.expiry.month,
            "expiry_year": card.expiry.year,
            "cardholder_name": card.cardholder_name.as_deref().map(|s| s.as_str()),
        })
        .to_string(),
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_bytes().to_vec()))
}
