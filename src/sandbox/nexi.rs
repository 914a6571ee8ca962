//! The Nexi XPay simulator: the JSON API (API key and `Correlation-Id` checked, idempotency keys
//! where XPay asks for them; MOTO, 2steps and 3steps payments, MIT, operations) and the ACS page
//! of a 3-D Secure challenge.

use std::collections::HashMap;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::{
    CardOutcome, Req, card_number_problem, card_outcome, circuit, cvv_ok, esc, last4, masked,
    mmyy_ok, now_rfc3339, s,
};

fn nexi_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({"errors": [{"code": code, "description": description}]}))
}

fn nexi_operation(order: &Value, op_id: &str, result: &str, pan: Option<&str>) -> Value {
    let mut op = json!({
        "orderId": s(order, &["orderId"]).unwrap_or_default(),
        "operationId": op_id,
        "channel": "ECOMMERCE",
        "operationType": "AUTHORIZATION",
        "operationResult": result,
        "operationTime": now_rfc3339(),
        "paymentMethod": "CARD",
        "operationAmount": s(order, &["amount"]).unwrap_or_default(),
        "operationCurrency": s(order, &["currency"]).unwrap_or_default(),
        "warnings": [],
    });
    if let (Some(pan), Value::Object(m)) = (pan, &mut op) {
        m.insert("paymentCircuit".into(), json!(circuit(pan)));
        m.insert(
            "paymentInstrumentInfo".into(),
            json!(format!("***{}", last4(pan))),
        );
        m.insert(
            "additionalData".into(),
            json!({"maskedPan": masked(pan, '*')}),
        );
    }
    op
}

fn nexi_order(body: &Value) -> Result<&Value, HttpResponse> {
    let bad = |d: &str| Err(nexi_error(StatusCode::BAD_REQUEST, "PS0000", d));
    let Some(order) = body.get("order") else {
        return bad("order is required");
    };
    if !s(order, &["orderId"]).is_some_and(|o| (1..=18).contains(&o.len())) {
        return bad("order.orderId must be 1 to 18 characters");
    }
    if !s(order, &["amount"])
        .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("order.amount must be a string of minor units");
    }
    if !s(order, &["currency"])
        .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return bad("order.currency must be an ISO 4217 code");
    }
    Ok(order)
}

fn nexi_card(body: &Value) -> Result<String, HttpResponse> {
    let bad = |d: String| Err(nexi_error(StatusCode::BAD_REQUEST, "PS0000", &d));
    let pan = s(body, &["card", "pan"]).unwrap_or_default();
    if let Some(p) = card_number_problem(pan) {
        return bad(format!("card.pan {p}"));
    }
    if !s(body, &["card", "expiryDate"]).is_some_and(mmyy_ok) {
        return bad("card.expiryDate must be MMYY".into());
    }
    if let Some(cvv) = body.get("card").and_then(|c| c.get("cvv"))
        && !cvv.as_str().is_some_and(cvv_ok)
    {
        return bad("card.cvv must be 3 or 4 digits".into());
    }
    Ok(pan.to_string())
}

/// `application/x-www-form-urlencoded` fields.
fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| char::from(c).to_digit(16);
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// An auto-submitting HTML form: how a browser is sent on with POSTed fields.
fn auto_post(action: &str, fields: &[(&str, &str)]) -> HttpResponse {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}"/>"#,
                esc(k),
                esc(v)
            )
        })
        .collect();
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        r#"<html><body><form id="next" method="POST" action="{}">{inputs}</form><script>document.getElementById('next').submit();</script></body></html>"#,
        esc(action)
    ))
}

/// The ACS page of a Nexi 3-D Secure challenge: the browser posts `ThreeDsRequest`, `ReturnUrl`
/// and `transactionId`; the (always passed) challenge posts `PaRes` and `paymentId` back to
/// `ReturnUrl`.
fn nexi_acs(r: &Req<'_>) -> HttpResponse {
    let f = form(r.body);
    match (f.get("ThreeDsRequest"), f.get("ReturnUrl"), f.get("transactionId")) {
        (Some(_), Some(ret), Some(op)) if r.method == "POST" => auto_post(
            ret,
            &[("PaRes", &format!("sbxpares{:016x}", rand::random::<u64>())), ("paymentId", op)],
        ),
        _ => HttpResponse::BadRequest()
            .content_type("text/html")
            .body("<html><body>ThreeDsRequest, ReturnUrl and transactionId are required (form POST)</body></html>"),
    }
}

/// The Nexi XPay simulator: one request at its root (or below `/nexi` on the shared address).
pub(super) fn simulate(r: &Req<'_>) -> HttpResponse {
    if r.path.trim_end_matches('/') == "3ds/acs/nextStep" {
        return nexi_acs(r);
    }
    if r.header("x-api-key").is_none_or(str::is_empty) {
        return HttpResponse::Unauthorized().finish();
    }
    let uuid_ok = r.header("correlation-id").is_some_and(|c| {
        c.len() == 36
            && c.bytes().enumerate().all(|(i, b)| {
                if [8, 13, 18, 23].contains(&i) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            })
    });
    if !uuid_ok {
        return nexi_error(
            StatusCode::BAD_REQUEST,
            "PS0000",
            "Correlation-Id must be a UUID",
        );
    }
    let op_id = format!("{}", 3_470_000 + rand::random::<u32>() % 100_000);
    let body = r.json().unwrap_or(Value::Null);
    let path = r.path.trim_end_matches('/');
    if r.method != "POST" {
        if r.method == "GET" && (path.starts_with("orders/") || path.starts_with("operations/")) {
            return HttpResponse::Ok().json(
                json!({"operationId": path.rsplit('/').next(), "operationResult": "AUTHORIZED"}),
            );
        }
        return HttpResponse::NotFound().finish();
    }
    if !body.is_object() {
        return nexi_error(
            StatusCode::BAD_REQUEST,
            "PS0000",
            "the body must be a JSON object",
        );
    }
    let needs_idempotency = path == "orders/mit"
        || (path.starts_with("operations/")
            && (path.ends_with("/captures") || path.ends_with("/refunds")));
    if needs_idempotency && r.header("idempotency-key").is_none_or(str::is_empty) {
        return nexi_error(
            StatusCode::BAD_REQUEST,
            "PS0025",
            "The idempotency key is wrong or missing in the request.",
        );
    }
    match path {
        "orders/moto"
        | "orders/2steps/init"
        | "orders/3steps/init"
        | "orders/2steps/payment"
        | "orders/3steps/payment" => nexi_payment(r, path, &body, &op_id),
        "orders/3steps/validation" => {
            let (Some(op), Some(_)) = (
                s(&body, &["operationId"]),
                s(&body, &["threeDSAuthResponse"]),
            ) else {
                return nexi_error(
                    StatusCode::BAD_REQUEST,
                    "PS0000",
                    "operationId and threeDSAuthResponse are required",
                );
            };
            HttpResponse::Ok().json(json!({
                "operation": nexi_operation(&json!({}), op, "THREEDS_VALIDATED", None),
                "threeDSAuthResult": {
                    "authenticationValue": "AAIBBjhkYQAAAAAKl4FHdAAAAAA=",
                    "eci": "05",
                    "xid": "RExDQXMtS05EJTt6VlBNRnxdOkY=",
                    "status": "VALIDATED",
                    "version": "2.1.0",
                }
            }))
        }
        "orders/mit" => {
            let order = match nexi_order(&body) {
                Ok(o) => o,
                Err(e) => return e,
            };
            if s(&body, &["contractId"]).is_none() {
                return nexi_error(StatusCode::BAD_REQUEST, "PS0000", "contractId is required");
            }
            HttpResponse::Ok()
                .json(json!({"operation": nexi_operation(order, &op_id, "EXECUTED", None)}))
        }
        p if p.starts_with("operations/") => {
            HttpResponse::Ok().json(json!({"operationId": op_id, "operationTime": now_rfc3339()}))
        }
        _ => HttpResponse::NotFound().finish(),
    }
}

/// A card payment (`orders/moto`, 2steps and 3steps `init` and `payment`): order and card
/// checked, then the answer the test card calls for; `init` asks a 3-D Secure challenge.
fn nexi_payment(r: &Req<'_>, path: &str, body: &Value, op_id: &str) -> HttpResponse {
    let order = match nexi_order(body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let pan = match nexi_card(body) {
        Ok(p) => p,
        Err(e) => return e,
    };
    // Test trigger: `orderId` `echo-card` makes this gateway echo the card it got, the
    // way some gateways quote a refused field, to prove the proxy masks what comes back:
    // plain in the description, dotted in groups, and in a header.
    if s(order, &["orderId"]) == Some("echo-card") {
        let dotted: Vec<String> = pan
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        return HttpResponse::BadRequest()
            .insert_header(("X-Refused-Card", pan.to_string()))
            .json(json!({"errors": [{"code": "PS0000", "description": format!(
                "VALUE {pan} OF FIELD card.pan IS WRONG (read as {})", dotted.join(".")
            )}]}));
    }
    if path == "orders/moto" && s(order, &["customerInfo", "cardHolderName"]).is_none() {
        return nexi_error(
            StatusCode::BAD_REQUEST,
            "PS0000",
            "order.customerInfo.cardHolderName is required for MOTO",
        );
    }
    if path.ends_with("/payment") && s(body, &["operationId"]).is_none() {
        return nexi_error(StatusCode::BAD_REQUEST, "PS0000", "operationId is required");
    }
    let outcome = card_outcome(&pan);
    let approved = if s(body, &["captureType"]) == Some("EXPLICIT") {
        "AUTHORIZED"
    } else {
        "EXECUTED"
    };
    if path.ends_with("/init") {
        if outcome == CardOutcome::Decline {
            return HttpResponse::Ok()
                .json(json!({"operation": nexi_operation(order, op_id, "DECLINED", Some(&pan))}));
        }
        return HttpResponse::Ok().json(json!({
            "operation": nexi_operation(order, op_id, "PENDING", Some(&pan)),
            "threeDSEnrollmentStatus": "ENROLLED",
            "threeDSAuthRequest": format!("sbx3ds{:016x}", rand::random::<u64>()),
            "threeDSAuthUrl": format!("{}/3ds/acs/nextStep", r.base),
        }));
    }
    let result = match outcome {
        CardOutcome::Decline => "DECLINED",
        _ => approved,
    };
    HttpResponse::Ok().json(json!({"operation": nexi_operation(order, op_id, result, Some(&pan))}))
}
