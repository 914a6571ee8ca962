//! The Axerve adapter (Axerve Ecommerce Solutions, ex-Gestpay, Banca Sella): where its SOAP and
//! REST requests carry the card, and how its answers read (SPEC.md section 2). `soap.rs` holds
//! the `WSs2s` envelope work, `rest.rs` the JSON API; the functions here take either body.
//!
//! **SOAP 1.1 `WSs2s`** (`POST /gestpay/gestpayws/WSs2s.asmx`, `SOAPAction:
//! "https://ecomms2s.sella.it/callPagamS2S"`, body element in namespace [`NS`]; no HTTP auth
//! header: IP whitelist and/or an `<apikey>` element). `callPagamS2S` takes card data or a
//! token, "exactly one among Credit Card data and Token value": `cardNumber` with `expiryMonth`
//! (MM) and `expiryYear` (YY) as separate two-character fields and an optional `cvv`, or
//! `tokenValue`. A panvault token may stand in either; in `tokenValue` it is replaced by
//! `cardNumber`, `expiryMonth` and `expiryYear`, written in the WSDL's element order (ASMX reads
//! elements in sequence). Envelopes (SOAP 1.1 or 1.2) are parsed as XML, and the operation and
//! its elements are matched by local name in whatever namespace the client wrote them (zeep,
//! .NET and PHP's SoapClient use different prefixes and default namespaces; one that got the
//! namespace wrong still has its token swapped, and the gateway answers it as it would).
//! A token-shaped value left anywhere else in the body is found by [`unswapped_token`]: the
//! proxy refuses such a request rather than forward the token.
//!
//! Answer (`GestPayS2S`): `TransactionResult` `OK` with `ErrorCode` 0 is an approval, `KO` a
//! decline, `ErrorCode` 8006 ("Verify By Visa") the 3-D Secure challenge: the buyer goes to
//! `pagam3d.aspx?a=<shopLogin>&b=<VbVRisp>&c=<returnUrl>`, then a second `callPagamS2S` carries
//! `transKey` and `PARes`.
//!
//! Stored credentials: `callPagamS2S`'s `transDetails.type` says which use of a stored
//! card a payment is: `01F` / `02F` / `03F` the first of a recurring / instalment / unscheduled
//! series (cardholder-initiated: it stores the card), `01N` / `02N` / `03N` a next one
//! (merchant-initiated). Axerve has no agreement id: panvault records the series as
//! `axerve:RECURRING` / `axerve:INSTALLMENT` / `axerve:UNSCHEDULED` ([`AGREEMENT_MARKER`]). The
//! plain `recurrent` flag says nothing about first or next and is passed through. In the REST
//! API `transDetails` goes into `payment/create`, which carries no card, while the card comes
//! with `payment/submit`: nothing there to check.
//!
//! **REST** `POST /api/v1/payment/submit` (`Authorization: apikey ...`, `paymentToken` header):
//! `paymentTypeDetails.creditcard.{number | token, expMonth, expYear, CVV}`; the answer's
//! `payload.transactionResult` / `transactionErrorCode` (8006 with `userRedirect.href`).

mod rest;
mod soap;
#[cfg(test)]
mod tests;

use zeroize::Zeroizing;

pub use soap::{SoapFields, add_apikey, soap_fields, unswapped_token, xml_fields};

use super::{CardData, Found, GatewayError, Outcome, Slot, StoredCredential};

/// Namespace of the WSs2s operations (the `SOAPAction` is this followed by the operation).
pub const NS: &str = "https://ecomms2s.sella.it/";
/// Error code of the 3-D Secure challenge ("Verify By Visa").
pub const CHALLENGE_CODE: &str = "8006";

/// `callPagamS2S` elements in WSDL order (gestpay/java-gestpay-s2s CallPagamS2S.java propOrder).
pub const PAGAM_ORDER: &[&str] = &[
    "shopLogin",
    "uicCode",
    "amount",
    "shopTransactionId",
    "cardNumber",
    "expiryMonth",
    "expiryYear",
    "buyerName",
    "buyerEmail",
    "languageId",
    "cvv",
    "min",
    "transKey",
    "PARes",
    "customInfo",
    "IDEA",
    "requestToken",
    "tokenValue",
    "clientIP",
    "itemType",
    "recurrent",
    "subMerchantId",
    "paymentTypes",
    "paymentDeviceDetails",
    "shippingDetails",
    "redFraudPrevention",
    "redCustomerInfo",
    "redShippingInfo",
    "redBillingInfo",
    "applePay",
    "cardReaderPayments",
    "OrderDetails",
    "apikey",
];

/// Axerve has no agreement id: the series a token stores its card for is recorded as
/// `axerve:<TYPE>` (`axerve:RECURRING`, `axerve:INSTALLMENT`, `axerve:UNSCHEDULED`).
pub const AGREEMENT_MARKER: &str = "axerve:";

/// Whether the body is XML (SOAP) rather than JSON (REST): its first non-blank byte is `<`.
fn is_xml(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<')
}

/// The body as text when it is a JSON object.
fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

/// `callPagamS2S`'s `transDetails.type` (SPEC.md 2.4): `01F` / `02F` / `03F`
/// cardholder-initiated, storing the card for a RECURRING / INSTALLMENT / UNSCHEDULED series;
/// `01N` / `02N` / `03N` merchant-initiated under it. Other types (`08` mail order, `09`
/// telephone order, `EC`, `NPA`) and no `transDetails` establish nothing; an unknown `F`/`N`
/// series code is refused rather than guessed. REST bodies carry no `transDetails` with the
/// card: nothing.
pub fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    if is_xml(body) {
        return soap::stored_credential(body);
    }
    json_text(body).ok_or(GatewayError::Malformed("JSON or SOAP XML"))?;
    Ok(StoredCredential::default())
}

/// SOAP: `callPagamS2S`'s `cardNumber`, else its `tokenValue`. REST:
/// `paymentTypeDetails.creditcard.number`, else `.token`.
pub fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    if is_xml(body) {
        return soap::find_card(body);
    }
    match json_text(body) {
        Some(text) => rest::find_card(text),
        None => Ok(None),
    }
}

/// SOAP `expiryMonth` / `expiryYear`, REST `expMonth` / `expYear` (MM, YY).
pub fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    if is_xml(body) {
        return soap::find_expiry(body);
    }
    rest::find_expiry(json_text(body)?)
}

/// Writes the card: SOAP `cardNumber` (in place, or instead of `tokenValue`), `expiryMonth` and
/// `expiryYear` (MM, YY) where missing or empty, a temporary token's `cvv`; REST the same under
/// `paymentTypeDetails.creditcard` (`number`, `expMonth`, `expYear`, `CVV`).
pub fn swap(
    body: &[u8],
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    if is_xml(body) {
        return soap::swap(body, slot, card);
    }
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    rest::swap(text, slot, card)
}

/// SOAP `GestPayS2S` or REST `payload`: OK/0 approved, 8006 challenge, KO declined.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    if status != 200 {
        return Outcome::Other;
    }
    let read = if is_xml(body) {
        Some(soap::result_and_code(body))
    } else {
        json_text(body).map(rest::result_and_code)
    };
    let Some((result, code)) = read else {
        return Outcome::Other;
    };
    if code.as_deref() == Some(CHALLENGE_CODE) {
        return Outcome::Challenge;
    }
    match result.as_deref() {
        Some("OK") => Outcome::Approved,
        Some("KO") => Outcome::Declined,
        _ => Outcome::Other,
    }
}
