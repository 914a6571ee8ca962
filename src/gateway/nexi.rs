//! The Nexi XPay adapter ("Server to Server", NPG REST API): where its requests carry the card,
//! and how its answers read (SPEC.md section 1).
//!
//! - Auth: `X-Api-Key`; every call carries a fresh `Correlation-Id` (UUID v4, renewed per call);
//!   `Idempotency-Key` on captures, refunds and `/orders/mit` (passed through untouched).
//! - Card: `card.pan` (13-19 digits), `card.expiryDate` **MMYY**, `card.cvv` (3-4, optional).
//!   A panvault token may stand in `card.pan`.
//! - Flows: `POST /orders/moto`; `/orders/2steps/{init,payment}`; `/orders/3steps/{init,
//!   validation,payment}` (init and payment carry the card; validation only `operationId` and
//!   `threeDSAuthResponse`); `/orders/mit` (no card: `contractId`).
//! - Outcome: `operation.operationResult` - `AUTHORIZED`/`EXECUTED` approved, `DECLINED`/
//!   `DENIED_BY_RISK`/`THREEDS_FAILED`/`FAILED` declined (HTTP 200 either way); an init answer with
//!   `threeDSAuthUrl` (and `PENDING`) is the 3-D Secure challenge: the browser posts `ThreeDsRequest`,
//!   `ReturnUrl` and `transactionId` there.
//! - Stored credentials: the cardholder-initiated payment that creates a contract
//!   carries `recurrence{action: CONTRACT_CREATION, contractId, contractType}` (`MIT_UNSCHEDULED`,
//!   `MIT_SCHEDULED`, `CIT`) next to the card; once Nexi approves it, panvault records the
//!   contract on the token as an agreement (id `contractId`, type `contractType`). The
//!   merchant-initiated payments under it go to `/orders/mit` with only `contractId`: no card,
//!   so no token, so nothing of panvault's to check or to reveal. Nexi holds the card under the
//!   contract and refuses an unknown one; panvault does not second-guess it (contracts made
//!   before panvault, or on Nexi's hosted page, are as valid, and looking a contract id up across
//!   a group's tokens would need an index panvault does not keep).
//! - Answers carry only masked numbers (`paymentInstrumentInfo` `***4549`,
//!   `additionalData.maskedPan`); [`super::mask`] scrubs anything else.

use zeroize::Zeroizing;

use super::{CardData, Found, GatewayError, Outcome, Slot, StoredCredential, json};

/// The header carrying the merchant's Nexi API key; the proxy adds it from the configuration
/// when the merchant did not send one.
pub const API_KEY_HEADER: &str = "X-Api-Key";
/// The header Nexi requires on every call, a fresh UUID v4; the proxy adds one when missing.
pub const CORRELATION_ID_HEADER: &str = "Correlation-Id";
/// The header that makes a capture, refund or MIT call idempotent; passed through untouched.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

const CARD: &[&str] = &["card"];
const PAN: &[&str] = &["card", "pan"];

/// `card.pan`, when the body is a JSON object holding one.
pub fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    let Some(text) = json_text(body) else {
        return Ok(None);
    };
    Ok(json::get_str(text, PAN)?.map(|value| Found {
        slot: Slot::Number,
        value,
    }))
}

/// `card.expiryDate` (MMYY).
pub fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    let text = json_text(body)?;
    super::mmyy(&json::get_str(text, &["card", "expiryDate"]).ok()??)
}

/// Writes the PAN into `card.pan`, the expiry as `card.expiryDate` MMYY where the merchant left
/// it out, and a temporary token's CVV as `card.cvv`.
pub fn swap(
    body: &[u8],
    _slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let out = json::edit(text, CARD, "card", |m| {
        m.set_str("pan", card.pan);
        m.set_str_if_absent("expiryDate", &card.mmyy());
        if let Some(cvv) = card.cvv {
            m.set_str("cvv", cvv);
        }
    })?;
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

/// `recurrence.action` `CONTRACT_CREATION` (SPEC.md 1.3): the cardholder-initiated payment that
/// creates contract `contractId` of type `contractType`, which needs both. Other actions
/// (`NO_RECURRING`, `SUBSEQUENT_PAYMENT` of a cardholder with the card, `CARD_SUBSTITUTION`)
/// establish nothing; merchant-initiated payments are `/orders/mit`, which carries no card.
pub fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let get = |k: &str| json::get_str(text, &["recurrence", k]).map(|v| v.map(|s| s.to_string()));
    if get("action")?.as_deref() != Some("CONTRACT_CREATION") {
        return Ok(StoredCredential::default());
    }
    let required = |field: &'static str| GatewayError::Field {
        field,
        reason: "is required with recurrence.action CONTRACT_CREATION",
    };
    let id = get("contractId")?.ok_or_else(|| required("recurrence.contractId"))?;
    let kind = get("contractType")?.ok_or_else(|| required("recurrence.contractType"))?;
    Ok(StoredCredential {
        agreement: Some((id, kind)),
        ..Default::default()
    })
}

/// Reads `operation.operationResult`, or an init answer's 3-D Secure redirect.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    if status != 200 {
        return Outcome::Other;
    }
    let Some(text) = json_text(body) else {
        return Outcome::Other;
    };
    if json::get_str(text, &["threeDSAuthUrl"])
        .ok()
        .flatten()
        .is_some()
    {
        return Outcome::Challenge;
    }
    match json::get_str(text, &["operation", "operationResult"])
        .ok()
        .flatten()
        .as_deref()
        .map(String::as_str)
    {
        Some("AUTHORIZED" | "EXECUTED") => Outcome::Approved,
        Some("DECLINED" | "DENIED_BY_RISK" | "THREEDS_FAILED" | "FAILED") => Outcome::Declined,
        _ => Outcome::Other,
    }
}

/// A fresh `Correlation-Id` value: a random UUID v4 (not a secret).
pub fn correlation_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
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

    const PAN: &str = "4111111111111111";

    fn card(cvv: Option<&str>) -> CardData<'_> {
        CardData {
            pan: PAN,
            month: 12,
            year: 2030,
            cvv,
        }
    }

    #[test]
    fn moto_token_swapped_for_card_other_fields_untouched() {
        let fixture = fixture_json(include_str!(
            "../../tests/fixtures/gateways/nexi/moto_request.json"
        ));
        let fixture_pan = find_card(&fixture).unwrap().unwrap().value;
        let with_token = replace(&fixture, &fixture_pan, "41XYZW7QK2ZD1111");
        let found = find_card(&with_token).unwrap().unwrap();
        assert_eq!(found.slot, Slot::Number);
        assert_eq!(found.value.as_str(), "41XYZW7QK2ZD1111");
        let out = swap(&with_token, found.slot, &card(None)).unwrap();
        let (sent, orig) = (value(&out), value(&fixture));
        assert_eq!(sent["card"]["pan"], PAN);
        // The merchant gave an expiry and a CVV: both kept.
        assert_eq!(sent["card"]["expiryDate"], "0526");
        assert_eq!(sent["card"]["cvv"], "396");
        for k in ["order", "captureType"] {
            assert_eq!(sent[k], orig[k], "{k}");
        }
    }

    #[test]
    fn expiry_filled_in_as_mmyy_and_temporary_cvv_written() {
        let body = br#"{"order":{"orderId":"o1","amount":"1000","currency":"EUR"},"card":{"pan":"tmp_X"}}"#;
        let out = swap(body, Slot::Number, &card(Some("123"))).unwrap();
        let sent = value(&out);
        assert_eq!(sent["card"]["expiryDate"], "1230");
        assert_eq!(sent["card"]["cvv"], "123");
        assert!(
            std::str::from_utf8(&out).unwrap().starts_with(
                r#"{"order":{"orderId":"o1","amount":"1000","currency":"EUR"},"card":"#
            )
        );
    }

    #[test]
    fn every_card_flow_fixture_has_its_card_found() {
        for (name, text) in [
            (
                "3steps_init",
                include_str!("../../tests/fixtures/gateways/nexi/3steps_init_request.json"),
            ),
            (
                "3steps_payment",
                include_str!("../../tests/fixtures/gateways/nexi/3steps_payment_request.json"),
            ),
            (
                "2steps_payment",
                include_str!("../../tests/fixtures/gateways/nexi/2steps_payment_request.json"),
            ),
        ] {
            let body = fixture_json(text);
            assert!(find_card(&body).unwrap().is_some(), "{name}");
        }
        for text in [
            include_str!("../../tests/fixtures/gateways/nexi/mit_request.json"),
            include_str!("../../tests/fixtures/gateways/nexi/3steps_validation_request.json"),
            include_str!("../../tests/fixtures/gateways/nexi/capture_request.json"),
        ] {
            assert!(find_card(&fixture_json(text)).unwrap().is_none());
        }
    }

    #[test]
    fn outcomes_from_fixtures() {
        let f = |t: &str| fixture_json(t);
        assert_eq!(
            outcome(
                200,
                &f(include_str!(
                    "../../tests/fixtures/gateways/nexi/moto_response_authorized.json"
                ))
            ),
            Outcome::Approved
        );
        assert_eq!(
            outcome(
                200,
                &f(include_str!(
                    "../../tests/fixtures/gateways/nexi/moto_response_declined.json"
                ))
            ),
            Outcome::Declined
        );
        assert_eq!(
            outcome(
                200,
                &f(include_str!(
                    "../../tests/fixtures/gateways/nexi/3steps_init_response.json"
                ))
            ),
            Outcome::Challenge
        );
        assert_eq!(
            outcome(
                200,
                &f(include_str!(
                    "../../tests/fixtures/gateways/nexi/3steps_payment_response.json"
                ))
            ),
            Outcome::Approved
        );
        assert_eq!(
            outcome(
                400,
                &f(include_str!(
                    "../../tests/fixtures/gateways/nexi/error_400.json"
                ))
            ),
            Outcome::Other
        );
    }

    #[test]
    fn answers_masked_fixtures_unchanged() {
        for text in [
            include_str!("../../tests/fixtures/gateways/nexi/moto_response_authorized.json"),
            include_str!("../../tests/fixtures/gateways/nexi/3steps_validation_response.json"),
            include_str!("../../tests/fixtures/gateways/nexi/get_operation_response.json"),
        ] {
            let body = fixture_json(text);
            assert_eq!(mask_pans(&body, &[PAN]).as_ref(), body.as_slice());
        }
        let echoed = br#"{"errors":[{"code":"GW0001","description":"bad pan 4111111111111111"}]}"#;
        assert!(
            !String::from_utf8(mask_pans(echoed, &[]).into_owned())
                .unwrap()
                .contains(PAN)
        );
    }

    #[test]
    fn correlation_ids_are_uuid_v4() {
        let (a, b) = (correlation_id(), correlation_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn contract_creation_is_the_agreement() {
        let body = |recurrence: &str| {
            format!(
                r#"{{"order":{{"orderId":"o1","amount":"1000","currency":"EUR"}},"card":{{"pan":"41XYZW7QK2ZD1111"}},"recurrence":{recurrence}}}"#
            )
        };
        let sc = stored_credential(
            body(r#"{"action":"CONTRACT_CREATION","contractId":"C2834987","contractType":"MIT_UNSCHEDULED"}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            sc,
            StoredCredential {
                agreement: Some(("C2834987".into(), "MIT_UNSCHEDULED".into())),
                merchant_initiated: false,
                stored_on_file: None,
            }
        );
        let missing = stored_credential(
            body(r#"{"action":"CONTRACT_CREATION","contractId":"C1"}"#).as_bytes(),
        );
        assert_eq!(missing.unwrap_err().code(), "invalid_field");
        for other in [
            r#"{"action":"NO_RECURRING"}"#,
            r#"{"action":"SUBSEQUENT_PAYMENT","contractId":"C1","contractType":"CIT"}"#,
            "null",
        ] {
            assert_eq!(
                stored_credential(body(other).as_bytes()).unwrap(),
                StoredCredential::default(),
                "{other}"
            );
        }
        // The fixtures' 3-steps calls say NO_RECURRING; the MIT carries no card at all.
        for text in [
            include_str!("../../tests/fixtures/gateways/nexi/3steps_init_request.json"),
            include_str!("../../tests/fixtures/gateways/nexi/3steps_payment_request.json"),
        ] {
            assert_eq!(
                stored_credential(&fixture_json(text)).unwrap(),
                StoredCredential::default()
            );
        }
        assert!(stored_credential(b"<xml/>").is_err());
    }
}
