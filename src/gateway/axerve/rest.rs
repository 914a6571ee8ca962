//! Axerve's REST API (SPEC.md 2.6): `payment/submit` carries the card under
//! `paymentTypeDetails.creditcard` (`number` or `token`, `expMonth`, `expYear`, `CVV`); the
//! answer's `payload` says how it went.

use zeroize::Zeroizing;

use crate::gateway::{CardData, Found, GatewayError, Slot, json};

const REST_CARD: &[&str] = &["paymentTypeDetails", "creditcard"];

/// `paymentTypeDetails.creditcard.number`, else `.token`.
pub(super) fn find_card(text: &str) -> Result<Option<Found>, GatewayError> {
    if let Some(value) = json::get_str(text, &["paymentTypeDetails", "creditcard", "number"])? {
        return Ok(Some(Found {
            slot: Slot::Number,
            value,
        }));
    }
    Ok(
        json::get_str(text, &["paymentTypeDetails", "creditcard", "token"])?.map(|value| Found {
            slot: Slot::Token,
            value,
        }),
    )
}

/// `expMonth` / `expYear` (MM, YY).
pub(super) fn find_expiry(text: &str) -> Option<(u8, u16)> {
    let get = |k: &str| {
        json::get_str(text, &["paymentTypeDetails", "creditcard", k])
            .ok()
            .flatten()
    };
    crate::gateway::month_year(&get("expMonth")?, &get("expYear")?)
}

/// `number` (instead of `token` when the token stood there), `expMonth` / `expYear` where
/// absent, a temporary token's `CVV`.
pub(super) fn swap(
    text: &str,
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let out = json::edit(text, REST_CARD, "paymentTypeDetails.creditcard", |m| {
        if slot == Slot::Token {
            m.remove("token");
        }
        m.set_str("number", card.pan);
        m.set_str_if_absent("expMonth", &card.mm());
        m.set_str_if_absent("expYear", &card.yy());
        if let Some(cvv) = card.cvv {
            m.set_str("CVV", cvv);
        }
    })?;
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

/// `payload.transactionResult` and `payload.transactionErrorCode`, trimmed.
pub(super) fn result_and_code(text: &str) -> (Option<String>, Option<String>) {
    let get = |k: &str| {
        json::get_str(text, &["payload", k])
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
    };
    (get("transactionResult"), get("transactionErrorCode"))
}
