//! [`ChargeError`]: every way the proxy refuses or fails a charge, with its stable `code` and
//! HTTP status. The messages name fields, gateways and limits, never a value of the request: no
//! card number, token or credential. The HTTP edge maps it to a problem answer.

use std::time::Duration;

use crate::Error;
use crate::gateway::{Gateway, GatewayError};

use super::REQUEST_LIMIT;

/// Why a charge got no gateway answer back (or, for the answer-side variants, why the gateway's
/// answer was not passed on).
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// `{gateway}` is none of the four.
    #[error("gateway must be nexi, axerve, worldline or mpgs")]
    UnknownGateway,
    /// The raw path spells the gateway otherwise than routed (`/v1/proxy/%6eexi/...`).
    #[error("the gateway name must be written plainly in the path")]
    GatewayNotPlain,
    /// The gateway path could leave the base URL (see `checked_path`).
    #[error("{0}")]
    InvalidPath(&'static str),
    /// The URL built from the base and the path is not under the base.
    #[error("the gateway path does not stay under the gateway's base URL")]
    OutsideBase,
    /// No proxy in this server.
    #[error("the gateway proxy is not configured")]
    ProxyUnavailable,
    /// No target for this gateway.
    #[error("the gateway is not configured")]
    GatewayUnconfigured,
    /// A method no gateway API uses (TRACE would echo the credentials added).
    #[error("the gateway proxy takes GET, POST, PUT, PATCH and DELETE")]
    MethodNotAllowed,
    /// A method the outbound client cannot write.
    #[error("unsupported method")]
    UnsupportedMethod,
    /// The request body could not be read.
    #[error("the body could not be read")]
    BodyUnreadable,
    /// The request body is not UTF-8: no gateway format the proxy reads may be otherwise, and
    /// a body it cannot read could carry a token past the swap (it is not forwarded).
    #[error(
        "the body is not UTF-8 (invalid byte at offset {offset}): the proxy reads JSON and SOAP bodies as UTF-8 and forwards none it cannot read"
    )]
    NotUtf8 {
        /// Bytes before the first invalid one.
        offset: usize,
    },
    /// The request body is over [`REQUEST_LIMIT`].
    #[error("proxied bodies are limited to {REQUEST_LIMIT} bytes")]
    BodyTooLarge,
    /// A JSON body with a duplicate key (the gateway's parser might read the other value).
    #[error("{0}")]
    DuplicateKey(GatewayError),
    /// Where the card or the stored-credential fields sit could not be read: 400 for a body
    /// that is not the gateway's format, 422 for a field of the wrong shape.
    #[error("{0}")]
    Unreadable(GatewayError),
    /// The card (or MPGS `storedOnFile`) could not be written into the request.
    #[error("{0}")]
    Unrewritable(GatewayError),
    /// Axerve SOAP: the configured `apikey` could not be written into the body.
    #[error("{0}")]
    ApiKeyNotAdded(GatewayError),
    /// A merchant-initiated charge names no agreement.
    #[error(
        "a merchant-initiated transaction needs agreement.id of an agreement this token established"
    )]
    AgreementNotNamed,
    /// A merchant-initiated charge under an agreement the token never established.
    #[error("this token never established that agreement in a cardholder-initiated transaction")]
    AgreementUnknown,
    /// A merchant-initiated charge under the token's agreement, with another type.
    #[error("the agreement's type differs from the one this token established")]
    AgreementMismatch,
    /// At a gateway without agreement ids: the token stored its card there for another type of
    /// series (`kind` is the series type the request names).
    #[error(
        "this token stored its card at {} for another type of series than {kind}",
        .gateway.name()
    )]
    SeriesMismatch {
        /// Where the charge goes.
        gateway: Gateway,
        /// The series type the request names: one of the fixed words the gateway modules
        /// read it as (`RECURRING`, `INSTALLMENT`, `UNSCHEDULED`), never the value as sent.
        kind: String,
    },
    /// `X-Panvault-Request-Token` on a charge that carries a token.
    #[error(
        "X-Panvault-Request-Token needs a card number where the gateway takes one, not a token"
    )]
    RequestTokenOnToken,
    /// `X-Panvault-Request-Token` on a charge that carries no card number.
    #[error("X-Panvault-Request-Token needs a card number where the gateway takes one")]
    RequestTokenWithoutCard,
    /// A token of the merchant stands where the proxy does not swap (Axerve SOAP: anywhere but
    /// `callPagamS2S`'s `cardNumber` or `tokenValue`); `element` is the element's local name,
    /// never its value.
    #[error(
        "element `{element}` holds a token the proxy does not swap: Axerve SOAP takes it in \
         callPagamS2S cardNumber or tokenValue; nothing was forwarded"
    )]
    TokenNotSwapped {
        /// The element's local name when it is a plain name, else `(element)`.
        element: String,
    },
    /// No answer within the gateway's timeout.
    #[error(
        "{} did not answer within {:.1} s",
        .gateway.name(),
        .timeout.as_secs_f64()
    )]
    Timeout {
        /// The gateway that did not answer.
        gateway: Gateway,
        /// Its configured timeout.
        timeout: Duration,
    },
    /// The gateway could not be reached (or the connection broke while reading).
    #[error("{} could not be reached", .gateway.name())]
    Unreachable {
        /// The gateway that could not be reached.
        gateway: Gateway,
    },
    /// The answer is over [`ANSWER_LIMIT`](super::ANSWER_LIMIT).
    #[error("the gateway's answer is too large")]
    AnswerTooLarge,
    /// A compressed answer, or digits written as character references: the masker cannot see
    /// its card numbers.
    #[error("the gateway's answer is encoded in a way the proxy cannot check for card numbers")]
    AnswerOpaque,
    /// The vault refused or failed (its own stable code and mapping).
    #[error(transparent)]
    Vault(#[from] Error),
}

impl ChargeError {
    /// The stable `code` of the answer (the library's own for [`ChargeError::Vault`]).
    pub fn code(&self) -> &'static str {
        match self {
            ChargeError::UnknownGateway => "unknown_gateway",
            ChargeError::GatewayNotPlain
            | ChargeError::InvalidPath(_)
            | ChargeError::OutsideBase => "invalid_path",
            ChargeError::ProxyUnavailable | ChargeError::GatewayUnconfigured => "proxy_unavailable",
            ChargeError::MethodNotAllowed | ChargeError::UnsupportedMethod => "method_not_allowed",
            ChargeError::BodyUnreadable | ChargeError::NotUtf8 { .. } => "malformed_request",
            ChargeError::BodyTooLarge => "payload_too_large",
            ChargeError::DuplicateKey(e)
            | ChargeError::Unreadable(e)
            | ChargeError::Unrewritable(e)
            | ChargeError::ApiKeyNotAdded(e) => e.code(),
            ChargeError::AgreementNotNamed | ChargeError::AgreementUnknown => "agreement_required",
            ChargeError::AgreementMismatch | ChargeError::SeriesMismatch { .. } => {
                "agreement_mismatch"
            }
            ChargeError::RequestTokenOnToken | ChargeError::RequestTokenWithoutCard => {
                "invalid_field"
            }
            ChargeError::TokenNotSwapped { .. } => "token_not_swapped",
            ChargeError::Timeout { .. } => "gateway_timeout",
            ChargeError::Unreachable { .. }
            | ChargeError::AnswerTooLarge
            | ChargeError::AnswerOpaque => "gateway_unreachable",
            ChargeError::Vault(e) => e.code(),
        }
    }

    /// The HTTP status of a refusal of the proxy's own; `None` for [`ChargeError::Vault`], whose
    /// status is the edge's one mapping of library errors.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            ChargeError::UnknownGateway => 404,
            ChargeError::GatewayNotPlain
            | ChargeError::InvalidPath(_)
            | ChargeError::OutsideBase
            | ChargeError::BodyUnreadable
            | ChargeError::NotUtf8 { .. }
            | ChargeError::DuplicateKey(_)
            | ChargeError::ApiKeyNotAdded(_)
            | ChargeError::Unreadable(GatewayError::Malformed(_)) => 400,
            ChargeError::ProxyUnavailable | ChargeError::GatewayUnconfigured => 503,
            ChargeError::MethodNotAllowed | ChargeError::UnsupportedMethod => 405,
            ChargeError::BodyTooLarge => 413,
            ChargeError::Unreadable(GatewayError::Field { .. })
            | ChargeError::Unrewritable(_)
            | ChargeError::AgreementNotNamed
            | ChargeError::AgreementUnknown
            | ChargeError::AgreementMismatch
            | ChargeError::SeriesMismatch { .. }
            | ChargeError::RequestTokenOnToken
            | ChargeError::RequestTokenWithoutCard
            | ChargeError::TokenNotSwapped { .. } => 422,
            ChargeError::Timeout { .. } => 504,
            ChargeError::Unreachable { .. }
            | ChargeError::AnswerTooLarge
            | ChargeError::AnswerOpaque => 502,
            ChargeError::Vault(_) => return None,
        })
    }

    /// The gateway failed the charge once it was sent (no answer, or one too large): audited as
    /// the charge's `failed` outcome.
    pub(super) fn is_gateway_failure(&self) -> bool {
        matches!(
            self,
            ChargeError::Timeout { .. }
                | ChargeError::Unreachable { .. }
                | ChargeError::AnswerTooLarge
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn field() -> GatewayError {
        GatewayError::Field {
            field: "card.pan",
            reason: "must be a string",
        }
    }

    /// Each refusal's code, status and message, as the proxy answered them before they were
    /// variants (the answers' bytes depend on them).
    fn pinned(cases: Vec<(ChargeError, &str, u16, String)>) {
        for (e, code, status, message) in cases {
            assert_eq!(
                (e.code(), e.status(), e.to_string()),
                (code, Some(status), message),
                "{e:?}"
            );
        }
    }

    #[test]
    fn request_refusals_are_pinned() {
        pinned(vec![
            (
                ChargeError::UnknownGateway,
                "unknown_gateway",
                404,
                "gateway must be nexi, axerve, worldline or mpgs".into(),
            ),
            (
                ChargeError::GatewayNotPlain,
                "invalid_path",
                400,
                "the gateway name must be written plainly in the path".into(),
            ),
            (
                ChargeError::InvalidPath("why"),
                "invalid_path",
                400,
                "why".into(),
            ),
            (
                ChargeError::OutsideBase,
                "invalid_path",
                400,
                "the gateway path does not stay under the gateway's base URL".into(),
            ),
            (
                ChargeError::ProxyUnavailable,
                "proxy_unavailable",
                503,
                "the gateway proxy is not configured".into(),
            ),
            (
                ChargeError::GatewayUnconfigured,
                "proxy_unavailable",
                503,
                "the gateway is not configured".into(),
            ),
            (
                ChargeError::MethodNotAllowed,
                "method_not_allowed",
                405,
                "the gateway proxy takes GET, POST, PUT, PATCH and DELETE".into(),
            ),
            (
                ChargeError::UnsupportedMethod,
                "method_not_allowed",
                405,
                "unsupported method".into(),
            ),
            (
                ChargeError::BodyUnreadable,
                "malformed_request",
                400,
                "the body could not be read".into(),
            ),
            (
                ChargeError::NotUtf8 { offset: 7 },
                "malformed_request",
                400,
                "the body is not UTF-8 (invalid byte at offset 7): the proxy reads JSON and SOAP bodies as UTF-8 and forwards none it cannot read".into(),
            ),
            (
                ChargeError::BodyTooLarge,
                "payload_too_large",
                413,
                "proxied bodies are limited to 65536 bytes".into(),
            ),
            (
                ChargeError::DuplicateKey(GatewayError::Malformed("JSON")),
                "malformed_request",
                400,
                "the request body is not valid JSON".into(),
            ),
            (
                ChargeError::Unreadable(GatewayError::Malformed("JSON")),
                "malformed_request",
                400,
                "the request body is not valid JSON".into(),
            ),
            (
                ChargeError::Unreadable(field()),
                "invalid_field",
                422,
                "field `card.pan` must be a string".into(),
            ),
            (
                ChargeError::Unrewritable(GatewayError::Malformed("JSON")),
                "malformed_request",
                422,
                "the request body is not valid JSON".into(),
            ),
            (
                ChargeError::ApiKeyNotAdded(field()),
                "invalid_field",
                400,
                "field `card.pan` must be a string".into(),
            ),
        ]);
    }

    #[test]
    fn charge_refusals_are_pinned() {
        pinned(vec![
            (
                ChargeError::AgreementNotNamed,
                "agreement_required",
                422,
                "a merchant-initiated transaction needs agreement.id of an agreement this token \
                 established"
                    .into(),
            ),
            (
                ChargeError::AgreementUnknown,
                "agreement_required",
                422,
                "this token never established that agreement in a cardholder-initiated transaction"
                    .into(),
            ),
            (
                ChargeError::AgreementMismatch,
                "agreement_mismatch",
                422,
                "the agreement's type differs from the one this token established".into(),
            ),
            (
                ChargeError::RequestTokenOnToken,
                "invalid_field",
                422,
                "X-Panvault-Request-Token needs a card number where the gateway takes one, not a \
                 token"
                    .into(),
            ),
            (
                ChargeError::RequestTokenWithoutCard,
                "invalid_field",
                422,
                "X-Panvault-Request-Token needs a card number where the gateway takes one".into(),
            ),
            (
                ChargeError::TokenNotSwapped {
                    element: "customInfo".into(),
                },
                "token_not_swapped",
                422,
                "element `customInfo` holds a token the proxy does not swap: Axerve SOAP takes it \
                 in callPagamS2S cardNumber or tokenValue; nothing was forwarded"
                    .into(),
            ),
            (
                ChargeError::Timeout {
                    gateway: Gateway::Nexi,
                    timeout: Duration::from_millis(1500),
                },
                "gateway_timeout",
                504,
                "nexi did not answer within 1.5 s".into(),
            ),
            (
                ChargeError::Unreachable {
                    gateway: Gateway::Mpgs,
                },
                "gateway_unreachable",
                502,
                "mpgs could not be reached".into(),
            ),
            (
                ChargeError::AnswerTooLarge,
                "gateway_unreachable",
                502,
                "the gateway's answer is too large".into(),
            ),
            (
                ChargeError::AnswerOpaque,
                "gateway_unreachable",
                502,
                "the gateway's answer is encoded in a way the proxy cannot check for card numbers"
                    .into(),
            ),
        ]);
        let e = ChargeError::from(Error::TokenNotFound);
        assert_eq!((e.code(), e.status()), ("token_not_found", None));
    }

    #[test]
    fn only_what_the_gateway_did_is_a_gateway_failure() {
        let gateway = Gateway::Worldline;
        assert!(ChargeError::Unreachable { gateway }.is_gateway_failure());
        assert!(ChargeError::AnswerTooLarge.is_gateway_failure());
        assert!(
            ChargeError::Timeout {
                gateway,
                timeout: Duration::from_secs(1)
            }
            .is_gateway_failure()
        );
        assert!(!ChargeError::AnswerOpaque.is_gateway_failure());
        assert!(!ChargeError::Vault(Error::TokenNotFound).is_gateway_failure());
        assert!(!ChargeError::UnsupportedMethod.is_gateway_failure());
    }
}
