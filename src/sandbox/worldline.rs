//! The Worldline Direct simulator: the cardholder's 3-D Secure page, and the payments API behind
//! a `GCS v1HMAC` signature that this file checks with code of its own.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::pan::luhn_valid;

use super::{
    CardOutcome, Req, Sandbox, WORLDLINE_API_KEY_ID, WORLDLINE_SECRET_API_KEY, card_number_problem,
    card_outcome, last4, mmyy_ok, s,
};

fn worldline_error(
    status: StatusCode,
    code: &str,
    id: &str,
    message: &str,
    property: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "errorId": format!("{:032x}", rand::random::<u128>()),
        "errors": [{
            "category": "CONNECT_PLATFORM_ERROR",
            "code": code,
            "errorCode": code,
            "httpStatusCode": status.as_u16(),
            "id": id,
            "message": message,
            "propertyName": property,
            "retriable": false,
        }]
    }))
}

/// What a `GCS v1HMAC` signature covers (SPEC 3.2). The sandbox checks signatures the way the
/// gateway does with this code of its own, written from the spec apart from the signer in
/// `gateway/worldline.rs`, so that a mistake in one cannot hide in the other.
struct V1Hmac<'a> {
    method: &'a str,
    content_type: &'a str,
    date: &'a str,
    /// Every request header; only the `X-GCS-*` ones are signed.
    headers: &'a [(&'a str, &'a str)],
    path_and_query: &'a str,
}

impl V1Hmac<'_> {
    fn string_to_sign(&self) -> String {
        let method = self.method.to_ascii_uppercase();
        let body_method = ["POST", "PUT", "DELETE"].contains(&method.as_str());
        let mut gcs: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .filter(|(name, _)| name.starts_with("x-gcs"))
            .map(|(name, value)| {
                // A line break and the whitespace after it become one space.
                let unfolded = value
                    .split('\n')
                    .map(|line| line.trim_end_matches('\r'))
                    .enumerate()
                    .map(|(i, line)| if i == 0 { line } else { line.trim_start() })
                    .collect::<Vec<_>>()
                    .join(" ");
                (name, unfolded.trim().to_string())
            })
            .collect();
        // Sorted by name.
        gcs.sort();
        let gcs: String = gcs.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        format!(
            "{method}\n{}\n{}\n{gcs}{}\n",
            if body_method { self.content_type } else { "" },
            self.date,
            self.path_and_query
        )
    }

    /// True if `authorization` is `GCS v1HMAC:<key_id>:<Base64 HMAC-SHA256>` over this request
    /// under `secret` (compared in constant time).
    fn verify(&self, key_id: &str, secret: &str, authorization: &str) -> bool {
        use hmac::{Hmac, Mac};
        let Some((id, sig)) = authorization
            .strip_prefix("GCS v1HMAC:")
            .and_then(|rest| rest.split_once(':'))
        else {
            return false;
        };
        let Ok(sig) = data_encoding::BASE64.decode(sig.as_bytes()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(self.string_to_sign().as_bytes());
        id == key_id && mac.verify_slice(&sig).is_ok()
    }
}

/// The Worldline Direct simulator: one request at its root (or below `/worldline` on the shared address).
pub(super) fn simulate(r: &Req<'_>, full_path: &str, query: &str, sb: &Sandbox) -> HttpResponse {
    // The cardholder's 3-D Secure page (a browser: no API signature): the challenge passes, the
    // payment is authorized and the browser goes back to the merchant's returnUrl.
    if let Some(id) = r.path.strip_prefix("redirect/3ds/") {
        let mut payments = crate::sync::lock(&sb.payments);
        let Some(p) = payments.get_mut(id) else {
            return HttpResponse::NotFound().finish();
        };
        p["status"] = json!("PENDING_CAPTURE");
        p["statusOutput"] = json!({"isCancellable": true, "statusCategory": "PENDING_MERCHANT", "statusCode": 5, "isAuthorized": true});
        let ret = p.get("_returnUrl").and_then(Value::as_str).map(|u| {
            format!(
                "{u}{}paymentId={id}",
                if u.contains('?') { '&' } else { '?' }
            )
        });
        return match ret {
            Some(u) => HttpResponse::Found()
                .insert_header(("Location", u))
                .finish(),
            None => HttpResponse::Ok()
                .content_type("text/html")
                .body("<html><body>3-D Secure passed</body></html>"),
        };
    }
    // Authorization: GCS v1HMAC:<id>:<signature> over the path as received.
    let auth_refused = || {
        worldline_error(
            StatusCode::UNAUTHORIZED,
            "9002",
            "MISSING_OR_INVALID_AUTHORIZATION",
            "MISSING_OR_INVALID_AUTHORIZATION",
            None,
        )
    };
    let Some(auth) = r.header("authorization") else {
        return auth_refused();
    };
    let Some(date) = r.header("date") else {
        return auth_refused();
    };
    let gcs: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path_q = if query.is_empty() {
        full_path.to_string()
    } else {
        format!("{full_path}?{query}")
    };
    let signed = V1Hmac {
        method: r.method,
        content_type: r.header("content-type").unwrap_or_default(),
        date,
        headers: &gcs,
        path_and_query: &path_q,
    };
    if !signed.verify(WORLDLINE_API_KEY_ID, WORLDLINE_SECRET_API_KEY, auth) {
        return auth_refused();
    }
    let parts: Vec<&str> = r.path.trim_end_matches('/').split('/').collect();
    match (r.method, parts.as_slice()) {
        ("POST", ["v2", _merchant, "payments"]) => worldline_create(r, sb),
        ("GET", ["v2", _merchant, "payments", id])
        | ("GET", ["v2", _merchant, "payments", id, "details"]) => {
            match crate::sync::lock(&sb.payments).get(*id) {
                Some(p) => {
                    let mut p = p.clone();
                    if let Value::Object(m) = &mut p {
                        m.remove("_returnUrl");
                    }
                    HttpResponse::Ok().json(p)
                }
                None => worldline_error(
                    StatusCode::NOT_FOUND,
                    "1002",
                    "UNKNOWN_PAYMENT_ID",
                    "UNKNOWN_PAYMENT_ID",
                    None,
                ),
            }
        }
        _ => worldline_error(
            StatusCode::NOT_FOUND,
            "1002",
            "NOT_FOUND",
            "no such resource in the sandbox",
            None,
        ),
    }
}

fn worldline_create(r: &Req<'_>, sb: &Sandbox) -> HttpResponse {
    let Some(body) = r.json().filter(Value::is_object) else {
        return worldline_error(
            StatusCode::BAD_REQUEST,
            "1002",
            "INVALID_JSON",
            "the body is not a JSON object",
            None,
        );
    };
    let input = &body["cardPaymentMethodSpecificInput"];
    if input.get("token").is_some() && input.get("card").is_none() {
        return worldline_error(
            StatusCode::BAD_REQUEST,
            "1002",
            "UNKNOWN_TOKEN",
            "UNKNOWN_TOKEN",
            Some("cardPaymentMethodSpecificInput.token"),
        );
    }
    let pan = s(input, &["card", "cardNumber"]).unwrap_or_default();
    let amount = body["order"]["amountOfMoney"].clone();
    if !amount["amount"].is_u64() || !amount["currencyCode"].is_string() {
        return worldline_error(
            StatusCode::BAD_REQUEST,
            "1002",
            "PARAMETER_NOT_FOUND_IN_REQUEST",
            "order.amountOfMoney needs an integer amount and a currencyCode",
            Some("order.amountOfMoney"),
        );
    }
    match card_number_problem(pan) {
        Some("fails the Luhn check") => {}
        Some(p) => {
            return worldline_error(
                StatusCode::BAD_REQUEST,
                "1002",
                "INVALID_VALUE",
                &format!("cardPaymentMethodSpecificInput.card.cardNumber {p}"),
                Some("cardPaymentMethodSpecificInput.card.cardNumber"),
            );
        }
        None => {}
    }
    if !s(input, &["card", "expiryDate"]).is_some_and(mmyy_ok) {
        return worldline_error(
            StatusCode::BAD_REQUEST,
            "1002",
            "PARAMETER_NOT_FOUND_IN_REQUEST",
            "expiryDate must be MMYY",
            Some("cardPaymentMethodSpecificInput.card.expiryDate"),
        );
    }
    let id = format!(
        "{}_0",
        3_066_000_000u64 + u64::from(rand::random::<u32>() % 1_000_000)
    );
    let output = json!({
        "amountOfMoney": amount,
        "references": body["order"]["references"].clone(),
        "paymentMethod": "card",
        "cardPaymentMethodSpecificOutput": {
            "paymentProductId": input["paymentProductId"].clone(),
            "card": {"cardNumber": format!("{}{}", "*".repeat(pan.len().saturating_sub(4)), last4(pan)), "expiryDate": s(input, &["card", "expiryDate"])},
        }
    });
    if !luhn_valid(pan) {
        let err = json!({"code": "21000020", "message": "VALUE **************** OF FIELD CREDITCARDNUMBER DID NOT PASS THE LUHNCHECK"});
        return HttpResponse::build(StatusCode::PAYMENT_REQUIRED).json(json!({
            "errorId": format!("{:032x}", rand::random::<u128>()),
            "errors": [err],
            "paymentResult": {"payment": {"id": id, "paymentOutput": output, "status": "REJECTED", "statusOutput": {"errors": [err], "isCancellable": false, "statusCategory": "UNSUCCESSFUL", "statusCode": 2, "isAuthorized": false}}}
        }));
    }
    let mut payment = json!({"id": id, "paymentOutput": output});
    let remember = |p: &Value| {
        crate::sync::lock(&sb.payments).insert(id.clone(), p.clone());
    };
    match card_outcome(pan) {
        CardOutcome::Decline => {
            payment["status"] = json!("REJECTED");
            payment["statusOutput"] = json!({"isCancellable": false, "statusCategory": "UNSUCCESSFUL", "statusCode": 2, "isAuthorized": false, "errors": [{"code": "30511001", "message": "Card declined by the issuer (sandbox)"}]});
            remember(&payment);
            HttpResponse::build(StatusCode::PAYMENT_REQUIRED).json(json!({
                "errorId": format!("{:032x}", rand::random::<u128>()),
                "errors": [{"code": "30511001", "message": "Card declined by the issuer (sandbox)"}],
                "paymentResult": {"creationOutput": {}, "payment": payment}
            }))
        }
        CardOutcome::Challenge
            if input["threeDSecure"]["skipAuthentication"] != json!(true)
                && s(input, &["transactionChannel"]) != Some("MOTO") =>
        {
            payment["status"] = json!("REDIRECTED");
            payment["statusOutput"] = json!({"isCancellable": false, "statusCategory": "PENDING_PAYMENT", "statusCode": 46, "isAuthorized": false});
            let mut kept = payment.clone();
            if let Some(u) = s(input, &["threeDSecure", "redirectionData", "returnUrl"])
                .or(s(input, &["returnUrl"]))
            {
                kept["_returnUrl"] = json!(u);
            }
            remember(&kept);
            HttpResponse::Created()
                .insert_header(("Location", format!("{}/{}/{}", r.base, r.path, id)))
                .json(json!({
                    "creationOutput": {},
                    "merchantAction": {"actionType": "REDIRECT", "redirectData": {"RETURNMAC": format!("{:032x}", rand::random::<u128>()), "redirectURL": format!("{}/redirect/3ds/{id}", r.base)}},
                    "payment": payment
                }))
        }
        _ => {
            let sale = s(input, &["authorizationMode"]) == Some("SALE");
            payment["status"] = json!(if sale { "CAPTURED" } else { "PENDING_CAPTURE" });
            payment["statusOutput"] = json!({"isCancellable": !sale, "statusCategory": if sale { "COMPLETED" } else { "PENDING_MERCHANT" }, "statusCode": if sale { 9 } else { 5 }, "isAuthorized": true});
            remember(&payment);
            HttpResponse::Created()
                .insert_header(("Location", format!("{}/{}/{}", r.base, r.path, id)))
                .json(json!({"creationOutput": {}, "payment": payment}))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The sandbox's own `GCS v1HMAC` check accepts every vector of
    /// fixtures/worldline/00_signing.json, and refuses each one altered.
    #[test]
    fn v1hmac_check_accepts_the_sdk_vectors_and_nothing_else() {
        let vectors = crate::gateway::testing::v1hmac_vectors();
        assert_eq!(vectors.len(), 5);
        for v in &vectors {
            // A header the signature does not cover changes nothing.
            let mut h = v.header_refs();
            h.push(("content-length", "2"));
            let key_id = v.key_id.as_deref().unwrap_or("K");
            let auth = match (&v.authorization, &v.signature) {
                (Some(a), _) => a.clone(),
                (None, Some(sig)) => format!("GCS v1HMAC:{key_id}:{sig}"),
                (None, None) => panic!("a vector without its result"),
            };
            let signed = V1Hmac {
                method: &v.method,
                content_type: &v.content_type,
                date: &v.date,
                headers: &h,
                path_and_query: &v.path,
            };
            let secret = v.secret.as_str();
            assert!(
                signed.verify(key_id, secret, &auth),
                "{} {}",
                v.method,
                v.path
            );
            assert!(!signed.verify("other", secret, &auth));
            assert!(!signed.verify(key_id, "other secret", &auth));
            let moved = V1Hmac {
                path_and_query: "/v2/1/tokens/123456780",
                ..signed
            };
            assert!(!moved.verify(key_id, secret, &auth));
            let late = V1Hmac {
                date: "Fri, 06 Jun 2014 13:39:44 GMT",
                ..signed
            };
            assert!(!late.verify(key_id, secret, &auth));
        }
    }
}
