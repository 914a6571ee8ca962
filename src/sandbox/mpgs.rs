//! The Mastercard Gateway (MPGS) simulator: the REST transaction API (`PUT` a `PAY`,
//! `AUTHORIZE` or `VERIFY`, `GET` it back) behind Basic authentication as `merchant.<id>` with
//! the sandbox's API password ([`MPGS_API_PASSWORD`]); other credentials get MPGS's 401
//! `{"result":"ERROR","error":{"cause":"INVALID_REQUEST","explanation":"Invalid credentials."}}`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::{
    CardOutcome, MPGS_API_PASSWORD, Req, Sandbox, card_number_problem, card_outcome, circuit,
    cvv_ok, masked, month_ok, now_rfc3339, s, two_digits,
};

fn mpgs_error(
    status: StatusCode,
    cause: &str,
    explanation: &str,
    field: Option<&str>,
) -> HttpResponse {
    let mut error = json!({"cause": cause, "explanation": explanation});
    if let Some(f) = field {
        error["field"] = json!(f);
        error["validationType"] = json!("INVALID");
    }
    HttpResponse::build(status).json(json!({"result": "ERROR", "error": error}))
}

/// SPEC.md 4.6: the outcome of a test card by its expiry.
fn mpgs_gateway_code(month: &str, year: &str) -> Option<&'static str> {
    match (month, year) {
        ("05", "39") => Some("DECLINED"),
        ("04", "27") => Some("EXPIRED_CARD"),
        ("08", "28") => Some("TIMED_OUT"),
        ("01", "37") => Some("ACQUIRER_SYSTEM_ERROR"),
        ("02", "37") => Some("UNSPECIFIED_FAILURE"),
        ("05", "37") => Some("UNKNOWN"),
        _ => None,
    }
}

/// The Mastercard Gateway simulator: one request at its root (or below `/mpgs` on the shared address).
pub(super) fn simulate(r: &Req<'_>, sb: &Sandbox) -> HttpResponse {
    let parts: Vec<&str> = r.path.trim_end_matches('/').split('/').collect();
    let [
        "api",
        "rest",
        "version",
        _v,
        "merchant",
        merchant,
        rest @ ..,
    ] = parts.as_slice()
    else {
        return mpgs_error(
            StatusCode::NOT_FOUND,
            "INVALID_REQUEST",
            "no such resource",
            None,
        );
    };
    let user_ok = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| data_encoding::BASE64.decode(b.trim().as_bytes()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| {
            up.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
        .is_some_and(|(u, p)| u == format!("merchant.{merchant}") && p == MPGS_API_PASSWORD);
    if !user_ok {
        return mpgs_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_REQUEST",
            "Invalid credentials.",
            None,
        );
    }
    let ["order", order_id, "transaction", txn_id] = rest else {
        return mpgs_error(
            StatusCode::NOT_FOUND,
            "INVALID_REQUEST",
            "no such resource in the sandbox",
            None,
        );
    };
    let key = r.path.to_string();
    if r.method == "GET" {
        return match crate::sync::lock(&sb.transactions).get(&key) {
            Some(t) => HttpResponse::Ok().json(t),
            None => mpgs_error(
                StatusCode::NOT_FOUND,
                "INVALID_REQUEST",
                "Transaction not found",
                None,
            ),
        };
    }
    if r.method != "PUT" {
        return mpgs_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_REQUEST",
            "PUT or GET only",
            None,
        );
    }
    let Some(body) = r.json().filter(Value::is_object) else {
        return mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Unable to parse the request body as JSON",
            None,
        );
    };
    let op = s(&body, &["apiOperation"]).unwrap_or_default();
    if !matches!(op, "PAY" | "AUTHORIZE" | "VERIFY") {
        return mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "apiOperation is missing or not simulated",
            Some("apiOperation"),
        );
    }
    let card = match mpgs_card(&body) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let answer = mpgs_answer(&body, merchant, order_id, txn_id, op, &card);
    crate::sync::lock(&sb.transactions).insert(key, answer.clone());
    HttpResponse::Created().json(answer)
}

/// The card of a transaction, checked the way the gateway does.
struct Card<'a> {
    /// `sourceOfFunds.provided.card` as sent.
    card: &'a Value,
    pan: &'a str,
    month: &'a str,
    year: &'a str,
}

/// `sourceOfFunds`: a card given in full (a token is unknown here), its number, expiry and
/// security code well formed.
fn mpgs_card(body: &Value) -> Result<Card<'_>, HttpResponse> {
    let card = &body["sourceOfFunds"]["provided"]["card"];
    if body["sourceOfFunds"].get("token").is_some() && card.is_null() {
        return Err(mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Value for field 'sourceOfFunds.token' is invalid: unknown token",
            Some("sourceOfFunds.token"),
        ));
    }
    let pan = s(card, &["number"]).unwrap_or_default();
    if let Some(p) = card_number_problem(pan) {
        return Err(mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("Value for field 'sourceOfFunds.provided.card.number' {p}"),
            Some("sourceOfFunds.provided.card.number"),
        ));
    }
    let (Some(month), Some(year)) = (s(card, &["expiry", "month"]), s(card, &["expiry", "year"]))
    else {
        return Err(mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Missing parameter 'sourceOfFunds.provided.card.expiry'",
            Some("sourceOfFunds.provided.card.expiry"),
        ));
    };
    if !month_ok(month) || !two_digits(year) {
        return Err(mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Expiry month and year must be two digits each",
            Some("sourceOfFunds.provided.card.expiry"),
        ));
    }
    if let Some(csc) = card.get("securityCode")
        && !csc.as_str().is_some_and(cvv_ok)
    {
        return Err(mpgs_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Invalid security code",
            Some("sourceOfFunds.provided.card.securityCode"),
        ));
    }
    Ok(Card {
        card,
        pan,
        month,
        year,
    })
}

/// The transaction the gateway records and answers: the outcome of the test card (by its expiry
/// first, then by its number), amounts and references as sent, the card masked.
fn mpgs_answer(
    body: &Value,
    merchant: &str,
    order_id: &str,
    txn_id: &str,
    op: &str,
    card: &Card<'_>,
) -> Value {
    let Card {
        card,
        pan,
        month,
        year,
    } = *card;
    let code = mpgs_gateway_code(month, year).unwrap_or(match card_outcome(pan) {
        CardOutcome::Decline => "DECLINED",
        _ => "APPROVED",
    });
    let approved = code == "APPROVED";
    let amount = s(body, &["order", "amount"]).unwrap_or("0.00");
    let currency = s(body, &["order", "currency"]).unwrap_or_default();
    let mut answer = json!({
        "merchant": merchant,
        "result": if approved { "SUCCESS" } else { "FAILURE" },
        "response": {
            "gatewayCode": code,
            "gatewayRecommendation": if approved { "NO_ACTION" } else { "RESUBMIT_WITH_ALTERNATIVE_PAYMENT_DETAILS" },
            "acquirerCode": if approved { "00" } else { "05" },
            "acquirerMessage": if approved { "Approved" } else { "Do not honour" },
        },
        "order": {"id": order_id, "amount": amount.parse::<f64>().unwrap_or(0.0), "currency": currency, "status": if approved { if op == "PAY" { "CAPTURED" } else { "AUTHORIZED" } } else { "FAILED" }, "reference": body["order"]["reference"].clone()},
        "sourceOfFunds": {"type": "CARD", "provided": {"card": {
            "brand": circuit(pan),
            "number": masked(pan, 'x'),
            "expiry": {"month": month.trim_start_matches('0'), "year": year},
            "storedOnFile": s(card, &["storedOnFile"]).unwrap_or("NOT_STORED"),
        }}},
        "transaction": {"id": txn_id, "type": match op { "PAY" => "PAYMENT", "AUTHORIZE" => "AUTHORIZATION", _ => "VERIFICATION" }, "amount": amount.parse::<f64>().unwrap_or(0.0), "currency": currency, "source": s(body, &["transaction", "source"]).unwrap_or("INTERNET"), "reference": body["transaction"]["reference"].clone()},
        "timeOfRecord": now_rfc3339(),
        "version": "100",
    });
    if let Some(a) = body.get("agreement") {
        answer["agreement"] = a.clone();
    }
    answer
}
