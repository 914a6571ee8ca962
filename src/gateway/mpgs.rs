//! The Mastercard Gateway (MPGS) adapter: where its REST-JSON requests carry the card, and how
//! its answers read (SPEC.md section 4).
//!
//! - `PUT /api/rest/version/{N}/merchant/{merchantId}/order/{orderId}/transaction/{transactionId}`
//!   with `apiOperation` `PAY` / `AUTHORIZE` / `VERIFY` / ...; `GET` of the same URL retrieves.
//! - Auth: HTTP Basic, user `merchant.<merchantId>`, password the API password. No signing; the
//!   idempotency is the client-chosen order and transaction ids in the URL.
//! - Card: `sourceOfFunds.provided.card.{number, expiry.month, expiry.year (two-digit strings),
//!   securityCode, storedOnFile}`, or `sourceOfFunds.token`. A panvault token may stand in
//!   either; in `token` it is replaced by `provided.card`.
//! - Stored credentials: `agreement.{id, type}`, `transaction.source` (`MERCHANT` for an MIT),
//!   `storedOnFile` `TO_BE_STORED` / `STORED`.
//! - Outcome: `result` `SUCCESS` with `response.gatewayCode` `APPROVED`/`APPROVED_AUTO` approved,
//!   `FAILURE` declined (HTTP 2xx either way). Answers show the number as `512345xxxxxx0008`.

use zeroize::Zeroizing;

use super::{CardData, Found, GatewayError, Outcome, Slot, StoredCredential, json};

const SOURCE: &[&str] = &["sourceOfFunds"];
const CARD: &[&str] = &["sourceOfFunds", "provided", "card"];
const EXPIRY: &[&str] = &["sourceOfFunds", "provided", "card", "expiry"];

/// `sourceOfFunds.provided.card.number`, else `sourceOfFunds.token`.
pub fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    let Some(text) = json_text(body) else {
        return Ok(None);
    };
    if let Some(value) = json::get_str(text, &["sourceOfFunds", "provided", "card", "number"])? {
        return Ok(Some(Found {
            slot: Slot::Number,
            value,
        }));
    }
    Ok(
        json::get_str(text, &["sourceOfFunds", "token"])?.map(|value| Found {
            slot: Slot::Token,
            value,
        }),
    )
}

/// `sourceOfFunds.provided.card.expiry.month` / `.year` (MM, YY).
pub fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    let text = json_text(body)?;
    let get = |k: &str| {
        json::get_str(text, &["sourceOfFunds", "provided", "card", "expiry", k])
            .ok()
            .flatten()
    };
    super::month_year(&get("month")?, &get("year")?)
}

/// Writes `provided.card.number`, `expiry.month`/`.year` (MM, YY) where the merchant left the
/// expiry out, and a temporary token's `securityCode`; a token in `sourceOfFunds.token` is
/// removed in favour of the card (and `sourceOfFunds.type` is `CARD` unless given).
pub fn swap(
    body: &[u8],
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let mut out = Zeroizing::new(text.to_string());
    if slot == Slot::Token {
        out = json::edit(&out, SOURCE, "sourceOfFunds", |m| {
            m.remove("token");
            m.set_str_if_absent("type", "CARD");
        })?;
    }
    let had_expiry = json::has(&out, EXPIRY)?;
    out = json::edit(&out, CARD, "sourceOfFunds.provided.card", |m| {
        m.set_str("number", card.pan);
        if let Some(cvv) = card.cvv {
            m.set_str("securityCode", cvv);
        }
    })?;
    if !had_expiry {
        out = json::edit(&out, EXPIRY, "sourceOfFunds.provided.card.expiry", |m| {
            m.set_str("month", &card.mm());
            m.set_str("year", &card.yy());
        })?;
    }
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

/// The stored-credential fields (SPEC.md 4.3): `agreement.{id,type}`,
/// `transaction.source` `MERCHANT` (merchant-initiated) and whether
/// `sourceOfFunds.provided.card.storedOnFile` is there. A body these cannot be read from is
/// refused, never taken as "field absent" (which would let a merchant-initiated charge pass as
/// cardholder-initiated); `agreement.id` needs its type.
pub fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    json::unique_keys(text)?;
    let get = |p: &[&str]| json::get_str(text, p).map(|v| v.map(|s| s.to_string()));
    let agreement = match get(&["agreement", "id"])? {
        None => None,
        Some(id) => Some((
            id,
            get(&["agreement", "type"])?.ok_or(GatewayError::Field {
                field: "agreement.type",
                reason: "is required with agreement.id",
            })?,
        )),
    };
    Ok(StoredCredential {
        agreement,
        merchant_initiated: get(&["transaction", "source"])?.is_some_and(|s| s == "MERCHANT"),
        stored_on_file: Some(json::has(
            text,
            &["sourceOfFunds", "provided", "card", "storedOnFile"],
        )?),
    })
}

/// Sets `sourceOfFunds.provided.card.storedOnFile` (`TO_BE_STORED` / `STORED`).
pub fn set_stored_on_file(body: &[u8], value: &str) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let out = json::edit(text, CARD, "sourceOfFunds.provided.card", |m| {
        m.set_str("storedOnFile", value);
    })?;
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

/// `result` and `response.gatewayCode`.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    if !(200..300).contains(&status) {
        return Outcome::Other;
    }
    let Some(text) = json_text(body) else {
        return Outcome::Other;
    };
    let get = |p: &[&str]| json::get_str(text, p).ok().flatten();
    let code = get(&["response", "gatewayCode"]);
    match get(&["result"]).as_deref().map(String::as_str) {
        Some("SUCCESS")
            if code
                .as_deref()
                .is_some_and(|c| c.as_str() == "APPROVED" || c.as_str() == "APPROVED_AUTO") =>
        {
            Outcome::Approved
        }
        Some("FAILURE") => Outcome::Declined,
        _ => Outcome::Other,
    }
}

fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gateway::mask::mask_pans;
    use crate::gateway::testing::{fixture_json, replace, value};

    const PAN: &str = "5555555555554444";

    fn card(cvv: Option<&str>) -> CardData<'_> {
        CardData {
            pan: PAN,
            month: 1,
            year: 2039,
            cvv,
        }
    }

    #[test]
    fn moto_pay_token_swapped_other_fields_untouched() {
        let fixture = fixture_json(include_str!(
            "../../tests/fixtures/gateways/mpgs/pay_request_moto.json"
        ));
        let fixture_pan = find_card(&fixture).unwrap().unwrap().value;
        let body = replace(&fixture, &fixture_pan, "55XYZWAB12CD4444");
        let f = find_card(&body).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Number);
        let sent = value(&swap(&body, f.slot, &card(None)).unwrap());
        let mut orig = value(&fixture);
        orig["sourceOfFunds"]["provided"]["card"]["number"] = json!(PAN);
        assert_eq!(sent, orig);
    }

    #[test]
    fn expiry_filled_as_month_year_objects() {
        let body = br#"{"apiOperation":"PAY","order":{"amount":"10.00","currency":"USD"},"sourceOfFunds":{"type":"CARD","provided":{"card":{"number":"55XYZWAB12CD4444"}}},"transaction":{"source":"INTERNET"}}"#;
        let sent = value(&swap(body, Slot::Number, &card(Some("100"))).unwrap());
        assert_eq!(
            sent["sourceOfFunds"]["provided"]["card"],
            json!({"number": PAN, "securityCode": "100", "expiry": {"month": "01", "year": "39"}})
        );
    }

    #[test]
    fn source_of_funds_token_becomes_provided_card() {
        let body = br#"{"apiOperation":"PAY","sourceOfFunds":{"token":"55XYZWAB12CD4444"},"order":{"amount":"1.00","currency":"EUR"}}"#;
        let f = find_card(body).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Token);
        let sent = value(&swap(body, f.slot, &card(None)).unwrap());
        assert_eq!(
            sent["sourceOfFunds"],
            json!({"type": "CARD", "provided": {"card": {"number": PAN, "expiry": {"month": "01", "year": "39"}}}})
        );
    }

    #[test]
    fn stored_credential_fields_from_fixtures() {
        let cit = fixture_json(include_str!(
            "../../tests/fixtures/gateways/mpgs/authorize_request_cit_store.json"
        ));
        let mit = fixture_json(include_str!(
            "../../tests/fixtures/gateways/mpgs/pay_request_mit.json"
        ));
        let agr = Some(("AGR-0001".to_string(), "UNSCHEDULED".to_string()));
        assert_eq!(
            stored_credential(&cit).unwrap(),
            StoredCredential {
                agreement: agr.clone(),
                merchant_initiated: false,
                stored_on_file: Some(true)
            }
        );
        assert_eq!(
            stored_credential(&mit).unwrap(),
            StoredCredential {
                agreement: agr,
                merchant_initiated: true,
                stored_on_file: Some(true)
            }
        );
        let body = br#"{"sourceOfFunds":{"provided":{"card":{"number":"X"}}}}"#;
        assert_eq!(stored_credential(body).unwrap().stored_on_file, Some(false));
        let out = set_stored_on_file(body, "TO_BE_STORED").unwrap();
        assert_eq!(&out[..], br#"{"sourceOfFunds":{"provided":{"card":{"number":"X","storedOnFile":"TO_BE_STORED"}}}}"#);
    }

    #[test]
    fn outcomes_and_masking_from_fixtures() {
        let approved = fixture_json(include_str!(
            "../../tests/fixtures/gateways/mpgs/pay_response_approved.json"
        ));
        let declined = fixture_json(include_str!(
            "../../tests/fixtures/gateways/mpgs/pay_response_declined.json"
        ));
        assert_eq!(outcome(201, &approved), Outcome::Approved);
        assert_eq!(outcome(201, &declined), Outcome::Declined);
        assert_eq!(
            outcome(
                400,
                &fixture_json(include_str!(
                    "../../tests/fixtures/gateways/mpgs/error_400.json"
                ))
            ),
            Outcome::Other
        );
        for b in [&approved, &declined] {
            assert_eq!(mask_pans(b, &[PAN]).as_ref(), b.as_slice());
        }
        let echoed =
            br#"{"result":"ERROR","error":{"explanation":"Value '5555555555554444' is invalid"}}"#;
        let masked = String::from_utf8(mask_pans(echoed, &[]).into_owned()).unwrap();
        assert!(masked.contains("'555555******4444'"));
    }
}
