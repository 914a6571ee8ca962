//! The Axerve simulator: the REST payment API (`payment/create`, `payment/submit`) and the SOAP
//! service `WSs2s.asmx` (`callPagamS2S`, with a card number or a token value, never both).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::gateway::axerve;

use super::{
    CardOutcome, Req, card_number_problem, card_outcome, circuit, cvv_ok, esc, last4, masked,
    month_ok, s, two_digits,
};

fn soap(op: &str, inner: &str) -> HttpResponse {
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").body(format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body><{op}Response xmlns="https://ecomms2s.sella.it/"><{op}Result><GestPayS2S xmlns="">{inner}</GestPayS2S></{op}Result></{op}Response></soap:Body></soap:Envelope>"#
    ))
}

fn soap_fault(status: StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("text/xml; charset=utf-8").body(format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{}</faultstring></soap:Fault></soap:Body></soap:Envelope>"#,
        quick_xml::escape::escape(text)
    ))
}

fn pagam_ko(shop_tx: &str, code: &str, description: &str) -> HttpResponse {
    soap(
        "callPagamS2S",
        &format!(
            "<TransactionType>PAGAM</TransactionType><TransactionResult>KO</TransactionResult><ShopTransactionID>{}</ShopTransactionID><BankTransactionID></BankTransactionID><AuthorizationCode></AuthorizationCode><ErrorCode>{code}</ErrorCode><ErrorDescription>{}</ErrorDescription>",
            esc(shop_tx),
            esc(description)
        ),
    )
}

fn axerve_token(pan: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mid: String = (0..10)
        .map(|_| char::from(A[rand::random::<usize>() % A.len()]))
        .collect();
    format!("{}{mid}{}", pan.get(..2).unwrap_or("00"), last4(pan))
}

/// The Axerve simulator: one request below `/axerve`, REST or SOAP.
pub(super) fn simulate(r: &Req<'_>) -> HttpResponse {
    let path = r.path.trim_end_matches('/');
    if path.eq_ignore_ascii_case("gestpay/gestpayws/WSs2s.asmx") {
        return axerve_soap(r);
    }
    let rest_error = |status: StatusCode, code: &str, d: &str| {
        HttpResponse::build(status)
            .json(json!({"error": {"code": code, "description": d}, "payload": {}}))
    };
    if !r
        .header("authorization")
        .is_some_and(|a| a.starts_with("apikey ") && a.len() > 7)
    {
        return rest_error(StatusCode::FORBIDDEN, "1166", "Invalid ApiKey");
    }
    let body = r.json().unwrap_or(Value::Null);
    match (r.method, path) {
        ("POST", "api/v1/payment/create") => {
            if s(&body, &["shopLogin"]).is_none() || s(&body, &["amount"]).is_none() {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    "1105",
                    "Invalid parameter value: shopLogin and amount are required",
                );
            }
            HttpResponse::Ok().json(json!({
                "error": {"code": "0", "description": "request correctly processed"},
                "payload": {"paymentToken": format!("sbx{:016x}", rand::random::<u64>()), "paymentID": format!("{:010}", rand::random::<u32>()), "userRedirect": {"href": ""}}
            }))
        }
        ("POST", "api/v1/payment/submit") => {
            let Some(payment_token) = r.header("paymenttoken") else {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    "1105",
                    "Invalid parameter value: the paymentToken header is required",
                );
            };
            let cc = &body["paymentTypeDetails"]["creditcard"];
            let pan = s(cc, &["number"]).unwrap_or_default();
            if let Some(p) = card_number_problem(pan) {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    "1105",
                    &format!("Invalid parameter value: paymentTypeDetails.creditcard.number {p}"),
                );
            }
            if !s(cc, &["expMonth"]).is_some_and(month_ok)
                || !s(cc, &["expYear"]).is_some_and(two_digits)
            {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    "1105",
                    "Invalid parameter value: expMonth and expYear must be MM and YY",
                );
            }
            let shop = s(&body, &["shopLogin"]).unwrap_or_default();
            let mut payload = json!({
                "transactionType": "submit",
                "transactionResult": "OK",
                "transactionErrorCode": "",
                "transactionErrorDescription": "",
                "bankTransactionID": format!("{}", rand::random::<u32>()),
                "paymentID": format!("{:010}", rand::random::<u32>()),
                "maskedPAN": masked(pan, '*'),
                "userRedirect": {"href": ""},
            });
            match card_outcome(pan) {
                CardOutcome::Approve => {}
                CardOutcome::Decline => {
                    payload["transactionResult"] = json!("KO");
                    payload["transactionErrorCode"] = json!("74");
                    payload["transactionErrorDescription"] = json!("Authorization denied");
                }
                CardOutcome::Challenge => {
                    payload["transactionResult"] = json!("");
                    payload["transactionErrorCode"] = json!(axerve::CHALLENGE_CODE);
                    payload["transactionErrorDescription"] = json!("Verify By Visa");
                    payload["userRedirect"] = json!({"href": format!("{}/pagam/pagam3d.aspx?a={shop}&b={payment_token}", r.base)});
                }
            }
            HttpResponse::Ok().json(json!({"error": {"code": "0", "description": "request correctly processed"}, "payload": payload}))
        }
        _ => rest_error(StatusCode::NOT_FOUND, "1105", "no such operation"),
    }
}

fn axerve_soap(r: &Req<'_>) -> HttpResponse {
    if r.method != "POST" {
        return soap_fault(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(action) = r.header("soapaction") else {
        return soap_fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server did not recognize the value of HTTP Header SOAPAction: .",
        );
    };
    let (op, fields) = match axerve::soap_fields(r.body) {
        Ok(Some(x)) => x,
        _ => {
            return soap_fault(
                StatusCode::BAD_REQUEST,
                "The request is not a SOAP 1.1 envelope.",
            );
        }
    };
    if action.trim_matches('"') != format!("{}{op}", axerve::NS) {
        return soap_fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Server did not recognize the value of HTTP Header SOAPAction: {action}."),
        );
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if op != "callPagamS2S" {
        return soap(
            &op,
            "<TransactionResult>KO</TransactionResult><ErrorCode>9999</ErrorCode><ErrorDescription>not simulated by the sandbox</ErrorDescription>",
        );
    }
    let shop_tx = get("shopTransactionId").unwrap_or_default();
    if get("shopLogin").is_none() {
        return pagam_ko(&shop_tx, "1131", "Shop Login not recognized");
    }
    if get("amount").is_none_or(|a| a.parse::<f64>().is_err()) || get("uicCode").is_none() {
        return pagam_ko(&shop_tx, "1105", "Invalid amount or currency");
    }
    let (card, token) = (get("cardNumber"), get("tokenValue"));
    let pan = match (card, token) {
        (Some(_), Some(_)) | (None, None) => {
            return pagam_ko(
                &shop_tx,
                "1105",
                "You must use exactly one among Credit Card data and Token value",
            );
        }
        (None, Some(_)) => return pagam_ko(&shop_tx, "1120", "Token not found"),
        (Some(pan), None) => pan,
    };
    if let Some(p) = card_number_problem(&pan) {
        return pagam_ko(
            &shop_tx,
            "1119",
            &format!("Invalid card number: cardNumber {p}"),
        );
    }
    // Test trigger, as Nexi's `echo-card` order: shopTransactionId `echo-card` quotes the card
    // inside the XML answer, plain and dotted in groups, to prove the proxy masks it there.
    if shop_tx == "echo-card" {
        let dotted: Vec<String> = pan
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        return pagam_ko(
            &shop_tx,
            "1119",
            &format!(
                "Invalid card number: cardNumber {pan} (read as {})",
                dotted.join(".")
            ),
        );
    }
    if !get("expiryMonth").is_some_and(|m| month_ok(&m)) {
        return pagam_ko(&shop_tx, "1124", "Invalid expiry month");
    }
    if !get("expiryYear").is_some_and(|y| two_digits(&y)) {
        return pagam_ko(&shop_tx, "1125", "Invalid expiry year");
    }
    if get("cvv").is_some_and(|c| !cvv_ok(&c)) {
        return pagam_ko(&shop_tx, "1149", "Missing or wrong CVV2");
    }
    let tx_key = format!("{}", 579_000_000 + rand::random::<u32>() % 1_000_000);
    let outcome = card_outcome(&pan);
    if outcome == CardOutcome::Challenge && (get("transKey").is_none() || get("PARes").is_none()) {
        return soap(
            "callPagamS2S",
            &format!(
                "<TransactionType>PAGAM</TransactionType><TransactionResult>KO</TransactionResult><ShopTransactionID>{}</ShopTransactionID><BankTransactionID></BankTransactionID><AuthorizationCode></AuthorizationCode><ErrorCode>{}</ErrorCode><ErrorDescription>Verify By Visa</ErrorDescription><TransactionKey>{tx_key}</TransactionKey><VbV><VbVFlag>OK</VbVFlag><VbVBuyer>OK</VbVBuyer><VbVRisp>sbx-{:016x}</VbVRisp></VbV>",
                esc(&shop_tx),
                axerve::CHALLENGE_CODE,
                rand::random::<u64>()
            ),
        );
    }
    if outcome == CardOutcome::Decline {
        return pagam_ko(&shop_tx, "74", "Authorization denied");
    }
    let token = get("requestToken")
        .map(|_| axerve_token(&pan))
        .unwrap_or_default();
    let (tm, ty) = if token.is_empty() {
        (String::new(), String::new())
    } else {
        (
            get("expiryMonth").unwrap_or_default(),
            get("expiryYear").unwrap_or_default(),
        )
    };
    soap(
        "callPagamS2S",
        &format!(
            "<TransactionType>PAGAM</TransactionType><TransactionResult>OK</TransactionResult><ShopTransactionID>{}</ShopTransactionID><BankTransactionID>{}</BankTransactionID><AuthorizationCode>{:06}</AuthorizationCode><Currency>{}</Currency><Amount>{}</Amount><ErrorCode>0</ErrorCode><ErrorDescription>Transazione correttamente effettuata</ErrorDescription><TransactionKey>{tx_key}</TransactionKey><MaskedPAN>{}</MaskedPAN><PaymentMethod>{}</PaymentMethod><TOKEN>{token}</TOKEN><TokenExpiryMonth>{tm}</TokenExpiryMonth><TokenExpiryYear>{ty}</TokenExpiryYear>",
            esc(&shop_tx),
            rand::random::<u32>() % 1_000_000,
            rand::random::<u32>() % 1_000_000,
            esc(&get("uicCode").unwrap_or_default()),
            esc(&get("amount").unwrap_or_default()),
            masked(&pan, '*'),
            circuit(&pan),
        ),
    )
}
