//! What the proxy knows of each payment gateway's wire format, as its spec describes it
//! (`../shared/gateways/SPEC.md`, cited by section in each module).
//!
//! One module per gateway, each reading like its spec: where a card number (or a panvault token
//! standing for one) sits in a request, how that gateway writes the PAN, the expiry and the CVV,
//! and which of its answers are an approval, a decline or a 3-D Secure redirect. Everything here
//! is a pure function over request and answer bodies; the HTTP plumbing is in [`proxy`].
//!
//! - [`nexi`]: Nexi XPay (NPG REST): `card.pan`, `card.expiryDate` MMYY, `card.cvv`.
//! - [`axerve`]: Axerve (ex-Gestpay) SOAP 1.1 `callPagamS2S` (`cardNumber` or `tokenValue`,
//!   `expiryMonth`/`expiryYear` MM and YY) and the REST `payment/submit`.
//! - [`worldline`]: Worldline Direct / PAYONE v2 (`card.cardNumber`, `expiryDate` MMYY) and the
//!   GCS v1HMAC request signature.
//! - [`mpgs`]: Mastercard Gateway REST (`sourceOfFunds.provided.card`, `expiry.month`/`.year`).
//!
//! [`mask`] keeps card numbers out of every answer.

pub mod axerve;
pub(crate) mod json;
pub use crate::mask;
pub mod mpgs;
pub mod nexi;
pub mod proxy;
pub mod worldline;

use zeroize::Zeroizing;

/// The gateways the proxy knows, each named in the proxy path `/v1/proxy/{gateway}/...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gateway {
    /// Nexi XPay (NPG REST), see [`nexi`].
    Nexi,
    /// Axerve, ex-Gestpay (SOAP and REST), see [`axerve`].
    Axerve,
    /// Worldline Direct / PAYONE v2, see [`worldline`].
    Worldline,
    /// Mastercard Gateway (MPGS) REST, see [`mpgs`].
    Mpgs,
}

impl Gateway {
    /// Every gateway the proxy serves; [`Gateway::parse`] looks names up here.
    pub const ALL: [Gateway; 4] = [
        Gateway::Nexi,
        Gateway::Axerve,
        Gateway::Worldline,
        Gateway::Mpgs,
    ];

    /// The gateway named in a proxy path.
    pub fn parse(name: &str) -> Option<Gateway> {
        Gateway::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The name in `/v1/proxy/{gateway}` and in `[gateways.<name>]`.
    pub fn name(self) -> &'static str {
        match self {
            Gateway::Nexi => "nexi",
            Gateway::Axerve => "axerve",
            Gateway::Worldline => "worldline",
            Gateway::Mpgs => "mpgs",
        }
    }

    /// The environment variable that sets this gateway's base URL, overriding the configuration
    /// file and [`Gateway::default_base_url`].
    pub fn url_env(self) -> &'static str {
        match self {
            Gateway::Nexi => "PANVAULT_GATEWAY_NEXI_URL",
            Gateway::Axerve => "PANVAULT_GATEWAY_AXERVE_URL",
            Gateway::Worldline => "PANVAULT_GATEWAY_WORLDLINE_URL",
            Gateway::Mpgs => "PANVAULT_GATEWAY_MPGS_URL",
        }
    }

    /// The gateway's public test environment (SPEC.md 1.1, 2.1, 3.1, 4.1): the default base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Gateway::Nexi => "https://xpaysandbox.nexigroup.com/api/phoenix-0.0/psp/api/v1",
            Gateway::Axerve => "https://sandbox.gestpay.net",
            Gateway::Worldline => "https://payment.preprod.direct.worldline-solutions.com",
            Gateway::Mpgs => "https://mtf.gateway.mastercard.com",
        }
    }

    /// Where the request holds a card number or a token, if anywhere (see each module's
    /// `find_card`). A body that is not the gateway's format is an error only when it claims to
    /// be (a JSON gateway's non-JSON body holds no card).
    pub fn find_card(self, body: &[u8]) -> Result<Option<Found>, GatewayError> {
        match self {
            Gateway::Nexi => nexi::find_card(body),
            Gateway::Axerve => axerve::find_card(body),
            Gateway::Worldline => worldline::find_card(body),
            Gateway::Mpgs => mpgs::find_card(body),
        }
    }

    /// The request with the card written where `slot` was (see each module's `swap`).
    pub fn swap(
        self,
        body: &[u8],
        slot: Slot,
        card: &CardData<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
        match self {
            Gateway::Nexi => nexi::swap(body, slot, card),
            Gateway::Axerve => axerve::swap(body, slot, card),
            Gateway::Worldline => worldline::swap(body, slot, card),
            Gateway::Mpgs => mpgs::swap(body, slot, card),
        }
    }

    /// The element of the request that holds, outside the place the swap writes the card, a
    /// value `is_token` takes for a panvault token: it would reach the gateway unswapped (see
    /// [`axerve::unswapped_token`]; named by a plain local name, never by its value). Only Axerve
    /// SOAP is read so: the JSON gateways' cards sit at fixed paths, while a SOAP client may put
    /// the operation anywhere its WSDL and namespaces lead it.
    pub fn unswapped_token(
        self,
        body: &[u8],
        is_token: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, GatewayError> {
        match self {
            Gateway::Axerve => axerve::unswapped_token(body, is_token),
            Gateway::Nexi | Gateway::Worldline | Gateway::Mpgs => Ok(None),
        }
    }

    /// The expiry the request carries, in that gateway's format (for `X-Panvault-Request-Token`:
    /// a raw card tokenized on the way).
    pub fn find_expiry(self, body: &[u8]) -> Option<(u8, u16)> {
        match self {
            Gateway::Nexi => nexi::find_expiry(body),
            Gateway::Axerve => axerve::find_expiry(body),
            Gateway::Worldline => worldline::find_expiry(body),
            Gateway::Mpgs => mpgs::find_expiry(body),
        }
    }

    /// The stored-credential fields of a charge, read from the gateway's own fields
    /// (see each module's `stored_credential`). A body these cannot be read from is an error,
    /// never "no such field": that would let a merchant-initiated charge pass as
    /// cardholder-initiated.
    ///
    /// An agreement id or type holding a card number is refused here (422 `invalid_field`,
    /// before anything is forwarded): it would be stored in clear on the token.
    pub fn stored_credential(self, body: &[u8]) -> Result<StoredCredential, GatewayError> {
        let sc = match self {
            Gateway::Nexi => nexi::stored_credential(body),
            Gateway::Axerve => axerve::stored_credential(body),
            Gateway::Worldline => worldline::stored_credential(body),
            Gateway::Mpgs => mpgs::stored_credential(body),
        }?;
        if let Some((id, kind)) = &sc.agreement
            && (crate::pan::holds_card_number(id) || crate::pan::holds_card_number(kind))
        {
            return Err(GatewayError::Field {
                field: "agreement",
                reason: "must not hold a card number",
            });
        }
        Ok(sc)
    }

    /// The id prefix of the agreements panvault records for a gateway whose requests carry no
    /// agreement id (Worldline, Axerve): such an agreement is `<marker><TYPE>`, e.g.
    /// `worldline:UNSCHEDULED`, one per type. `None` where the merchant names the agreement
    /// (MPGS `agreement.id`, Nexi `contractId`).
    pub fn agreement_marker(self) -> Option<&'static str> {
        match self {
            Gateway::Worldline => Some(worldline::AGREEMENT_MARKER),
            Gateway::Axerve => Some(axerve::AGREEMENT_MARKER),
            Gateway::Nexi | Gateway::Mpgs => None,
        }
    }

    /// How a gateway's answer reads: approved, declined, 3-D Secure challenge or other.
    pub fn outcome(self, status: u16, body: &[u8]) -> Outcome {
        match self {
            Gateway::Nexi => nexi::outcome(status, body),
            Gateway::Axerve => axerve::outcome(status, body),
            Gateway::Worldline => worldline::outcome(status, body),
            Gateway::Mpgs => mpgs::outcome(status, body),
        }
    }
}

/// Which field of the request held the value: the card-number field, or the gateway's own token
/// field (where a panvault token may also stand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The card-number field (`card.pan`, `cardNumber`, ...).
    Number,
    /// The gateway's own token field (`tokenValue`, `token`, ...); the swap replaces it with
    /// the card fields.
    Token,
}

/// The value found where a card goes. Zeroized on drop; `Debug` never prints it.
pub struct Found {
    /// Which field held it.
    pub slot: Slot,
    /// The field's text as sent: a card number or a token, not yet checked.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Found({:?}, [REDACTED])", self.slot)
    }
}

/// The card to write into a request: PAN, expiry and (temporary tokens only) the CVV.
pub struct CardData<'a> {
    /// The card number, bare digits.
    pub pan: &'a str,
    /// Expiry month, 1-12.
    pub month: u8,
    /// Four-digit year.
    pub year: u16,
    /// The CVV, kept only for a temporary token; `None` leaves the request's own CVV field as
    /// it is.
    pub cvv: Option<&'a str>,
}

impl std::fmt::Debug for CardData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardData([REDACTED])")
    }
}

impl CardData<'_> {
    /// Two-digit month, `"05"`.
    pub fn mm(&self) -> String {
        format!("{:02}", self.month)
    }

    /// Two-digit year, `"27"` for 2027.
    pub fn yy(&self) -> String {
        format!("{:02}", self.year % 100)
    }

    /// `MMYY`, `"0527"` (Nexi, Worldline).
    pub fn mmyy(&self) -> String {
        format!("{}{}", self.mm(), self.yy())
    }
}

/// What a charge says about stored credentials, whatever the gateway's words for it.
///
/// A cardholder-initiated charge naming an agreement establishes it (recorded on the token once
/// the gateway approves); a merchant-initiated one must run under an agreement its token
/// established, of the same type.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoredCredential {
    /// The agreement (id, type) the charge establishes or runs under. Where the gateway has no
    /// agreement id, the id is [`Gateway::agreement_marker`] followed by the type.
    pub agreement: Option<(String, String)>,
    /// The charge is merchant-initiated (MIT): it must run under an agreement its token holds.
    pub merchant_initiated: bool,
    /// MPGS `storedOnFile`: whether the merchant gave it. `None` where the gateway has no such
    /// field (panvault fills it in only where it exists).
    pub stored_on_file: Option<bool>,
}

/// The agreement id recorded for `kind` at a gateway without agreement ids.
pub(crate) fn marked_agreement(marker: &str, kind: &str) -> (String, String) {
    (format!("{marker}{kind}"), kind.to_string())
}

/// How a gateway answered a charge, read from its own fields (SPEC.md "success/decline/3DS").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway authorized (or captured) the payment.
    Approved,
    /// The gateway or the issuer refused the payment.
    Declined,
    /// The cardholder must be sent to a 3-D Secure challenge first.
    Challenge,
    /// Anything else (errors, pending, not a charge).
    Other,
}

/// A request the proxy cannot rewrite. Never carries a request value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// The body is not the format the gateway takes (JSON, SOAP XML).
    #[error("the request body is not valid {0}")]
    Malformed(&'static str),
    /// A field where the proxy reads or writes has the wrong shape.
    #[error("field `{field}` {reason}")]
    Field {
        /// The field's path in the gateway's own words (`card.pan`, `transDetails.type`).
        field: &'static str,
        /// What is wrong with its shape, never its value.
        reason: &'static str,
    },
}

impl GatewayError {
    /// The stable error code the proxy answers with, like [`crate::Error::code`].
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Malformed(_) => "malformed_request",
            GatewayError::Field { .. } => "invalid_field",
        }
    }
}

/// `MM` and `YY` (two digits each) as month and four-digit year.
pub(crate) fn month_year(mm: &str, yy: &str) -> Option<(u8, u16)> {
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(mm) || !digits(yy) {
        return None;
    }
    let m: u8 = mm.parse().ok()?;
    let y: u16 = yy.parse().ok()?;
    (1..=12).contains(&m).then_some((m, 2000 + y))
}

/// `MMYY` as month and four-digit year.
pub(crate) fn mmyy(v: &str) -> Option<(u8, u16)> {
    if v.len() != 4 || !v.is_ascii() {
        return None;
    }
    month_year(&v[..2], &v[2..])
}

/// A JSON string literal (quoted and escaped) for `s`, zeroized on drop.
pub(crate) fn json_string(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod testing {
    //! Fixture helpers: the SPEC's fixtures, with `_fixture_note` stripped as the SPEC says.
    use serde_json::Value;

    /// A JSON fixture without its `_fixture_note`, as compact bytes.
    pub fn fixture_json(text: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(text).unwrap();
        if let Value::Object(m) = &mut v {
            m.remove("_fixture_note");
        }
        serde_json::to_vec(&v).unwrap()
    }

    /// Replaces every occurrence of `from` by `to` in a fixture (the fixtures' gateway test PANs
    /// are swapped for the four published cards the test suite uses).
    pub fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }

    pub fn value(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    /// One `GCS v1HMAC` test vector of fixtures/worldline/00_signing.json.
    pub struct V1HmacVector {
        pub method: String,
        pub content_type: String,
        pub date: String,
        pub headers: Vec<(String, String)>,
        pub path: String,
        pub key_id: Option<String>,
        pub secret: String,
        /// The whole `Authorization` value, where the vector gives it.
        pub authorization: Option<String>,
        /// Otherwise the Base64 signature alone.
        pub signature: Option<String>,
    }

    impl V1HmacVector {
        /// The `X-GCS-*` headers as the signer and the sandbox take them.
        pub fn header_refs(&self) -> Vec<(&str, &str)> {
            self.headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect()
        }
    }

    /// Every vector of fixtures/worldline/00_signing.json: the SDK's and the ones computed there.
    pub fn v1hmac_vectors() -> Vec<V1HmacVector> {
        let f: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/gateways/worldline/00_signing.json"
        ))
        .unwrap();
        let s = |v: &Value| v.as_str().map(str::to_string);
        f["sdk_test_vectors"]
            .as_array()
            .unwrap()
            .iter()
            .chain(f["computed_here_not_from_sdk"].as_array().unwrap())
            .map(|v| V1HmacVector {
                method: s(&v["method"]).unwrap(),
                content_type: s(&v["contentType"]).unwrap(),
                date: s(&v["date"]).unwrap(),
                headers: v["gcsHeaders"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v).unwrap())).collect())
                    .unwrap_or_default(),
                path: s(&v["path"]).unwrap(),
                key_id: s(&v["apiKeyId"]),
                secret: s(&v["secretApiKey"]).unwrap(),
                authorization: s(&v["expectedAuthorization"]),
                signature: s(&v["expectedSignature"]).or(s(&v["signature"])),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::testing::fixture_json;
    use super::*;

    #[test]
    fn expiry_read_in_each_gateways_format() {
        let cases: [(Gateway, Vec<u8>, (u8, u16)); 5] = [
            (
                Gateway::Nexi,
                fixture_json(include_str!(
                    "../../tests/fixtures/gateways/nexi/moto_request.json"
                )),
                (5, 2026),
            ),
            (
                Gateway::Axerve,
                include_bytes!(
                    "../../tests/fixtures/gateways/axerve/callPagamS2S_request_card.xml"
                )
                .to_vec(),
                (5, 2027),
            ),
            (
                Gateway::Axerve,
                fixture_json(include_str!(
                    "../../tests/fixtures/gateways/axerve/rest_payment_submit_request.json"
                )),
                (5, 2027),
            ),
            (
                Gateway::Worldline,
                fixture_json(include_str!(
                    "../../tests/fixtures/gateways/worldline/create_payment_moto_request.json"
                )),
                (12, 2030),
            ),
            (
                Gateway::Mpgs,
                fixture_json(include_str!(
                    "../../tests/fixtures/gateways/mpgs/pay_request_moto.json"
                )),
                (1, 2039),
            ),
        ];
        for (g, body, want) in cases {
            assert_eq!(g.find_expiry(&body), Some(want), "{g:?}");
        }
        assert_eq!(mmyy("1399"), None);
        assert_eq!(month_year("1", "30"), None);
        assert!(
            Gateway::ALL
                .iter()
                .all(|g| Gateway::parse(g.name()) == Some(*g))
        );
    }
}
