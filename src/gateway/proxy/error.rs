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
    SeriesMismatch { gateway: Gateway, kind: String },
    /// `X-Panvault-Request-Token` on a charge that carries a token.
    #[error(
        "X-Panvault-Request-Token needs a card number where the gateway takes one, not a token"
    )]
    RequestTokenOnToken,
    /// `X-Panvault-Request-Token` on a charge that carries no card number.
    #[error("X-Panvault-Request-Token needs a card number where the gateway takes one")]
    RequestTokenWithoutCard,
    /// No answer within the gateway's timeout.
    #[error(
        "{} did not answer within {:.1} s",
        .gateway.name(),
        .timeout.as_secs_f64()
    )]
    Timeout { gateway: Gateway, timeout: Duration },
    /// The gateway could not be reached (or the connection broke while reading).
    #[error("{} could not be reached", .gateway.name())]
    Unreachable { gateway: Gateway },
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
            ChargeError::BodyUnreadable => "malformed_request",
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
            | ChargeError::RequestTokenWithoutCard => 422,
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
