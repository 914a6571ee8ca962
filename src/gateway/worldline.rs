//! The Worldline adapter (Worldline Direct / PAYONE white-label, "Online Payments" API v2):
//! where its requests carry the card, how they are signed, and how its answers read (SPEC.md
//! section 3).
//!
//! - `POST /v2/{merchantId}/payments` (CreatePayment), `GET /v2/{merchantId}/payments/{id}`.
//! - Card: `cardPaymentMethodSpecificInput.card.{cardNumber, expiryDate (MMYY), cvv,
//!   cardholderName}`, or a stored `cardPaymentMethodSpecificInput.token`. A panvault token may
//!   stand in either; in `token` it is replaced by a `card` object.
//! - Auth: `Authorization: GCS v1HMAC:<apiKeyId>:<base64 HMAC-SHA256(secret, stringToSign)>` with a
//!   `Date` header; the body is not signed, so a merchant's own signature survives the swap. When
//!   panvault holds the merchant's API key it signs after the swap ([`authorization`]).
//! - Stored credentials, in `cardPaymentMethodSpecificInput`: a recurring series is
//!   `isRecurring: true` with `recurring.recurringPaymentSequenceIndicator` `first` (the
//!   cardholder-initiated payment that stores the card) or `recurring` (a merchant-initiated one
//!   under it); an unscheduled card-on-file series is `unscheduledCardOnFileSequenceIndicator`
//!   `first` / `subsequent` with `unscheduledCardOnFileRequestor` `cardholderInitiated` /
//!   `merchantInitiated`. Worldline has no agreement id: panvault records the series as
//!   `worldline:RECURRING` / `worldline:UNSCHEDULED` ([`AGREEMENT_MARKER`]). The fields are
//!   forwarded as the merchant wrote them.
//! - Outcome: 201 with `payment.status` `PENDING_CAPTURE` / `CAPTURED` / `CAPTURE_REQUESTED` is
//!   an approval; 402 (`paymentResult.payment.status` `REJECTED`) a decline;
//!   `merchantAction.actionType` `REDIRECT` the 3-D Secure challenge (`redirectData.redirectURL`),
//!   passed through to the merchant unchanged.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CardData, Found, GatewayError, Outcome, Slot, StoredCredential, json};

const INPUT: &[&str] = &["cardPaymentMethodSpecificInput"];
const CARD: &[&str] = &["cardPaymentMethodSpecificInput", "card"];

/// `cardPaymentMethodSpecificInput.card.cardNumber`, else `cardPaymentMethodSpecificInput.token`.
pub fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    let Some(text) = json_text(body) else {
        return Ok(None);
    };
    if let Some(value) = json::get_str(
        text,
        &["cardPaymentMethodSpecificInput", "card", "cardNumber"],
    )? {
        return Ok(Some(Found {
            slot: Slot::Number,
            value,
        }));
    }
    Ok(
        json::get_str(text, &["cardPaymentMethodSpecificInput", "token"])?.map(|value| Found {
            slot: Slot::Token,
            value,
        }),
    )
}

/// `cardPaymentMethodSpecificInput.card.expiryDate` (MMYY).
pub fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    let text = json_text(body)?;
    let v = json::get_str(
        text,
        &["cardPaymentMethodSpecificInput", "card", "expiryDate"],
    )
    .ok()??;
    super::mmyy(&v)
}

/// Writes `card.cardNumber`, `card.expiryDate` (MMYY) where the merchant left it out and a
/// temporary token's `card.cvv`; a token in `token` is removed in favour of the card.
pub fn swap(
    body: &[u8],
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let mut out = Zeroizing::new(text.to_string());
    if slot == Slot::Token {
        out = json::edit(&out, INPUT, "cardPaymentMethodSpecificInput", |m| {
            m.remove("token");
        })?;
    }
    let out = json::edit(&out, CARD, "cardPaymentMethodSpecificInput.card", |m| {
        m.set_str("cardNumber", card.pan);
        m.set_str_if_absent("expiryDate", &card.mmyy());
        if let Some(cvv) = card.cvv {
            m.set_str("cvv", cvv);
        }
    })?;
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

/// Worldline has no agreement id: the series a token stores its card for is recorded as
/// `worldline:<TYPE>` (`worldline:RECURRING`, `worldline:UNSCHEDULED`).
pub const AGREEMENT_MARKER: &str = "worldline:";

/// The card-on-file fields of `cardPaymentMethodSpecificInput` (SPEC.md 3.3):
///
/// | fields | reads as |
/// |---|---|
/// | `isRecurring: true`, `recurring.recurringPaymentSequenceIndicator: first` | cardholder-initiated, stores the card for a RECURRING series |
/// | `isRecurring: true`, `recurring.recurringPaymentSequenceIndicator: recurring` | merchant-initiated, RECURRING |
/// | `unscheduledCardOnFileSequenceIndicator: first` (requestor `cardholderInitiated` or absent) | cardholder-initiated, stores the card for UNSCHEDULED use |
/// | `unscheduledCardOnFileRequestor: merchantInitiated` | merchant-initiated, UNSCHEDULED |
/// | anything else (e.g. `cardholderInitiated` + `subsequent`: the cardholder pays with the stored card) | nothing to record or check |
///
/// `isRecurring: true` without a sequence indicator cannot be told apart (first or subsequent)
/// and is refused; a recurring indicator with `isRecurring` absent or `false` is not a recurring
/// payment for Worldline and is ignored.
pub fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let at = |k: &'static str| ["cardPaymentMethodSpecificInput", k];
    let get = |p: &[&str]| json::get_str(text, p).map(|v| v.map(|s| s.to_string()));
    let recurring = json::get_bool(text, &at("isRecurring"))? == Some(true);
    let sequence = get(&[
        "cardPaymentMethodSpecificInput",
        "recurring",
        "recurringPaymentSequenceIndicator",
    ])?;
    let marked = |kind: &str| Some(super::marked_agreement(AGREEMENT_MARKER, kind));
    if recurring {
        return match sequence.as_deref() {
            Some("first") => Ok(StoredCredential {
                agreement: marked("RECURRING"),
                ..Default::default()
            }),
            Some("recurring") => Ok(StoredCredential {
                agreement: marked("RECURRING"),
                merchant_initiated: true,
                ..Default::default()
            }),
            _ => Err(GatewayError::Field {
                field: "cardPaymentMethodSpecificInput.recurring.recurringPaymentSequenceIndicator",
                reason: "must be `first` or `recurring` with isRecurring",
            }),
        };
    }
    let requestor = get(&at("unscheduledCardOnFileRequestor"))?;
    let unscheduled = get(&at("unscheduledCardOnFileSequenceIndicator"))?;
    Ok(match (requestor.as_deref(), unscheduled.as_deref()) {
        (Some("merchantInitiated"), _) => StoredCredential {
            agreement: marked("UNSCHEDULED"),
            merchant_initiated: true,
            ..Default::default()
        },
        (None | Some("cardholderInitiated"), Some("first")) => StoredCredential {
            agreement: marked("UNSCHEDULED"),
            ..Default::default()
        },
        _ => StoredCredential::default(),
    })
}

/// 201 + `payment.status`, 402, or `merchantAction.actionType` REDIRECT.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    let Some(text) = json_text(body) else {
        return Outcome::Other;
    };
    let get = |p: &[&str]| json::get_str(text, p).ok().flatten();
    if get(&["merchantAction", "actionType"]).is_some_and(|a| a.as_str() == "REDIRECT") {
        return Outcome::Challenge;
    }
    if status == 402 {
        return Outcome::Declined;
    }
    match get(&["payment", "status"]).as_deref().map(String::as_str) {
        Some("PENDING_CAPTURE" | "CAPTURED" | "CAPTURE_REQUESTED") if status < 300 => {
            Outcome::Approved
        }
        Some("REJECTED") => Outcome::Declined,
        _ => Outcome::Other,
    }
}

/// The v1HMAC string to sign (sdk-nodejs `src/utils/authentication.ts`):
/// method, Content-Type (POST/PUT/DELETE only), Date, each `X-GCS-*` header as
/// `lowercase-name:value` sorted by name (line breaks with their indentation folded to one
/// space, trimmed), then the path with its query; every line ends with `\n`.
pub fn string_to_sign(
    method: &str,
    content_type: &str,
    date: &str,
    headers: &[(&str, &str)],
    path_and_query: &str,
) -> String {
    let method = method.to_ascii_uppercase();
    let mut s = String::new();
    s.push_str(&method);
    s.push('\n');
    if matches!(method.as_str(), "POST" | "PUT" | "DELETE") {
        s.push_str(content_type);
    }
    s.push('\n');
    s.push_str(date);
    s.push('\n');
    let mut gcs: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-gcs"))
        .map(|(n, v)| (n.to_ascii_lowercase(), fold(v)))
        .collect();
    gcs.sort();
    for (n, v) in gcs {
        s.push_str(&n);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push_str(path_and_query);
    s.push('\n');
    s
}

/// A header value as signed: every line break and the whitespace after it become one space.
fn fold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Base64 HMAC-SHA256 of `string_to_sign` under the secret API key (its UTF-8 bytes).
pub fn signature(secret_api_key: &str, string_to_sign: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_api_key.as_bytes()) else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    data_encoding::BASE64.encode(&mac.finalize().into_bytes())
}

/// The `Authorization` header value: `GCS v1HMAC:<apiKeyId>:<signature>`.
pub fn authorization(api_key_id: &str, secret_api_key: &str, string_to_sign: &str) -> String {
    format!(
        "GCS v1HMAC:{api_key_id}:{}",
        signature(secret_api_key, string_to_sign)
    )
}

/// An RFC 1123 `Date` header value for now (`Fri, 06 Jun 2014 13:39:43 GMT`).
pub fn http_date() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    imf_fixdate(now)
}

/// `secs` since the Unix epoch as an IMF-fixdate (RFC 9110 5.6.7), always GMT.
fn imf_fixdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // The civil date of a day count (H. Hinnant's `civil_from_days`, for days >= 0).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[usize::try_from(days % 7).unwrap_or_default()],
        MONTHS[usize::try_from(month - 1).unwrap_or_default()],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {

    use super::*;
    use crate::gateway::mask::mask_pans;
    use crate::gateway::testing::{fixture_json, replace, value};

    const PAN: &str = "4012888888881881";

    fn card(cvv: Option<&str>) -> CardData<'_> {
        CardData {
            pan: PAN,
            month: 9,
            year: 2032,
            cvv,
        }
    }

    /// Every vector in fixtures/worldline/00_signing.json: the SDK's and the ones computed there.
    #[test]
    fn v1hmac_reproduces_the_sdk_test_vectors() {
        let vectors = crate::gateway::testing::v1hmac_vectors();
        for v in &vectors {
            let sts = string_to_sign(
                &v.method,
                &v.content_type,
                &v.date,
                &v.header_refs(),
                &v.path,
            );
            match (&v.authorization, &v.signature) {
                (Some(expected), _) => assert_eq!(
                    &authorization(v.key_id.as_deref().unwrap(), &v.secret, &sts),
                    expected
                ),
                (None, Some(expected)) => assert_eq!(&signature(&v.secret, &sts), expected),
                (None, None) => panic!("a vector without its result"),
            }
        }
        assert_eq!(vectors.len(), 5);
    }

    #[test]
    fn header_values_folded_as_the_sdk_does() {
        assert_eq!(fold("  a\r\n   b\nc  "), "a b c");
        let s = string_to_sign(
            "get",
            "application/json",
            "D",
            &[("X-GCS-B", "2"), ("x-gcs-a", "1"), ("Other", "x")],
            "/p?q=1",
        );
        assert_eq!(s, "GET\n\nD\nx-gcs-a:1\nx-gcs-b:2\n/p?q=1\n");
        assert!(http_date().ends_with(" GMT"));
        assert_eq!(imf_fixdate(1_402_061_983), "Fri, 06 Jun 2014 13:39:43 GMT");
        assert_eq!(imf_fixdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn card_number_token_swapped_other_fields_untouched() {
        let fixture = fixture_json(include_str!(
            "../../tests/fixtures/gateways/worldline/create_payment_moto_request.json"
        ));
        let fixture_pan = find_card(&fixture).unwrap().unwrap().value;
        let body = replace(&fixture, &fixture_pan, "40XYZWAB12CD1881");
        let f = find_card(&body).unwrap().unwrap();
        assert_eq!(
            (f.slot, f.value.as_str()),
            (Slot::Number, "40XYZWAB12CD1881")
        );
        let sent = value(&swap(&body, f.slot, &card(None)).unwrap());
        let orig = value(&fixture);
        assert_eq!(
            sent["cardPaymentMethodSpecificInput"]["card"]["cardNumber"],
            PAN
        );
        assert_eq!(
            sent["cardPaymentMethodSpecificInput"]["card"]["expiryDate"],
            "1230"
        );
        assert_eq!(sent["order"], orig["order"]);
        assert_eq!(
            sent["cardPaymentMethodSpecificInput"]["transactionChannel"],
            "MOTO"
        );
    }

    #[test]
    fn stored_token_field_becomes_a_card() {
        let body = br#"{"cardPaymentMethodSpecificInput":{"authorizationMode":"SALE","token":"40XYZWAB12CD1881","unscheduledCardOnFileRequestor":"merchantInitiated"},"order":{"amountOfMoney":{"amount":2980,"currencyCode":"EUR"}}}"#;
        let f = find_card(body).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Token);
        let out = swap(body, f.slot, &card(Some("737"))).unwrap();
        let sent = value(&out);
        let input = &sent["cardPaymentMethodSpecificInput"];
        assert!(input.get("token").is_none());
        assert_eq!(
            input["card"],
            serde_json::json!({"cardNumber": PAN, "expiryDate": "0932", "cvv": "737"})
        );
        assert_eq!(input["unscheduledCardOnFileRequestor"], "merchantInitiated");
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .ends_with(r#""order":{"amountOfMoney":{"amount":2980,"currencyCode":"EUR"}}}"#)
        );
    }

    #[test]
    fn outcomes_from_fixtures_and_masking() {
        let f = |t: &str| fixture_json(t);
        assert_eq!(
            outcome(
                201,
                &f(include_str!(
                    "../../tests/fixtures/gateways/worldline/create_payment_response_pending_capture.json"
                ))
            ),
            Outcome::Approved
        );
        assert_eq!(
            outcome(
                201,
                &f(include_str!(
                    "../../tests/fixtures/gateways/worldline/create_payment_response_redirect_3ds.json"
                ))
            ),
            Outcome::Challenge
        );
        let rejected = f(include_str!(
            "../../tests/fixtures/gateways/worldline/create_payment_402_rejected.json"
        ));
        assert_eq!(outcome(402, &rejected), Outcome::Declined);
        assert_eq!(mask_pans(&rejected, &[PAN]).as_ref(), rejected.as_slice());
        let details = f(include_str!(
            "../../tests/fixtures/gateways/worldline/get_payment_details_response.json"
        ));
        assert_eq!(mask_pans(&details, &[]).as_ref(), details.as_slice());
        let echoed = br#"{"errors":[{"message":"VALUE 4012888888881881 OF FIELD CREDITCARDNUMBER DID NOT PASS"}]}"#;
        let masked = String::from_utf8(mask_pans(echoed, &[]).into_owned()).unwrap();
        assert!(masked.contains("VALUE 401288******1881 OF FIELD"));
    }

    #[test]
    fn card_on_file_fields_read_as_stored_credentials() {
        let sc = |input: &str| {
            stored_credential(
                format!(r#"{{"cardPaymentMethodSpecificInput":{{"token":"40XYZWAB12CD1881"{input}}},"order":{{"amountOfMoney":{{"amount":100,"currencyCode":"EUR"}}}}}}"#)
                    .as_bytes(),
            )
        };
        let agr = |kind: &str, mit: bool| StoredCredential {
            agreement: Some((format!("worldline:{kind}"), kind.to_string())),
            merchant_initiated: mit,
            stored_on_file: None,
        };
        let cases = [
            (
                r#","unscheduledCardOnFileRequestor":"cardholderInitiated","unscheduledCardOnFileSequenceIndicator":"first""#,
                agr("UNSCHEDULED", false),
            ),
            (
                r#","unscheduledCardOnFileSequenceIndicator":"first""#,
                agr("UNSCHEDULED", false),
            ),
            (
                r#","unscheduledCardOnFileRequestor":"merchantInitiated","unscheduledCardOnFileSequenceIndicator":"subsequent""#,
                agr("UNSCHEDULED", true),
            ),
            (
                r#","isRecurring":true,"recurring":{"recurringPaymentSequenceIndicator":"first"}"#,
                agr("RECURRING", false),
            ),
            (
                r#","isRecurring":true,"recurring":{"recurringPaymentSequenceIndicator":"recurring"}"#,
                agr("RECURRING", true),
            ),
            // The cardholder paying with the stored card; not a recurring payment; nothing.
            (
                r#","unscheduledCardOnFileRequestor":"cardholderInitiated","unscheduledCardOnFileSequenceIndicator":"subsequent""#,
                StoredCredential::default(),
            ),
            (
                r#","isRecurring":false,"recurring":{"recurringPaymentSequenceIndicator":"recurring"}"#,
                StoredCredential::default(),
            ),
            ("", StoredCredential::default()),
        ];
        for (input, want) in cases {
            assert_eq!(sc(input).unwrap(), want, "{input}");
        }
        assert_eq!(
            sc(r#","isRecurring":true"#).unwrap_err().code(),
            "invalid_field"
        );
        assert!(stored_credential(b"not json").is_err());
        // The fixtures: a one-off MOTO payment, an e-commerce one with isRecurring false.
        for text in [
            include_str!(
                "../../tests/fixtures/gateways/worldline/create_payment_moto_request.json"
            ),
            include_str!(
                "../../tests/fixtures/gateways/worldline/create_payment_ecom_3ds_request.json"
            ),
        ] {
            assert_eq!(
                stored_credential(&fixture_json(text)).unwrap(),
                StoredCredential::default()
            );
        }
    }
}
