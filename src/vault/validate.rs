//! Validation of a tokenize request: a `TokenizeRequest` as it arrives becomes a `Card` (a
//! parsed PAN, expiry, name and token request) or a typed error naming the field.

use zeroize::Zeroizing;

use super::types::TokenizeRequest;
use crate::pan::{Cvv, Expiry, Pan};
use crate::token::TokenRequest;
use crate::{Error, Result};

/// Lifetime of a temporary token whose request gives no `ttl_seconds`, in seconds.
pub const TEMP_TTL_DEFAULT: u64 = 900;
/// Longest lifetime a temporary token may ask for, in seconds.
pub const TEMP_TTL_MAX: u64 = 3600;
/// Longest cardholder name accepted, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// A validated card.
pub(super) struct Card {
    pub(super) pan: Pan,
    pub(super) expiry: Expiry,
    pub(super) name: Option<Zeroizing<String>>,
    pub(super) request: TokenRequest,
    /// Whether `expiry` had already passed at validation: such a card gets no new token
    /// ([`Error::CardExpired`]), though a token it already has is answered.
    pub(super) expired: bool,
    /// For a temporary token: its CVV, if given, and its lifetime in seconds.
    pub(super) temporary: Option<(Option<Cvv>, u64)>,
}

/// Checks every field of `req`; the first that fails names itself in the error. A temporary
/// token is always new, so an expired card is refused here; for a stored token that is decided
/// on the writer, where it is known whether the card already has one.
pub(super) fn validate(req: &TokenizeRequest) -> Result<Card> {
    let pan = Pan::parse(&req.pan)?;
    let expiry = Expiry::new(req.expiry_month, req.expiry_year)?;
    let expired = expiry.is_expired();
    if expired && req.temporary {
        return Err(expired_error(expiry));
    }
    let request = TokenRequest::parse(req.request_token.as_deref())?;
    let name = match &req.cardholder_name {
        None => None,
        Some(n) => {
            if n.chars().count() > MAX_NAME_LEN {
                return Err(Error::InvalidField {
                    field: "cardholder_name",
                    reason: "at most 128 characters",
                });
            }
            if n.chars().any(char::is_control) {
                return Err(Error::InvalidField {
                    field: "cardholder_name",
                    reason: "control characters are not allowed",
                });
            }
            Some(n.clone())
        }
    };
    let temporary = if req.temporary {
        let cvv = req.cvv.as_deref().map(|c| Cvv::parse(c)).transpose()?;
        let ttl = match req.ttl_seconds {
            None => TEMP_TTL_DEFAULT,
            Some(t) if (1..=TEMP_TTL_MAX as i64).contains(&t) => t as u64,
            Some(_) => {
                return Err(Error::InvalidField {
                    field: "ttl_seconds",
                    reason: "must be 1 to 3600",
                });
            }
        };
        Some((cvv, ttl))
    } else {
        if req.cvv.is_some() {
            return Err(Error::InvalidField {
                field: "cvv",
                reason: "a CVV is only accepted on a temporary token and is never stored",
            });
        }
        if req.ttl_seconds.is_some() {
            return Err(Error::InvalidField {
                field: "ttl_seconds",
                reason: "only for temporary tokens",
            });
        }
        None
    };
    Ok(Card {
        pan,
        expiry,
        name,
        request,
        expired,
        temporary,
    })
}

/// The refusal of a new token for a card whose expiry has passed.
pub(super) fn expired_error(expiry: Expiry) -> Error {
    Error::CardExpired {
        month: expiry.month,
        year: expiry.year,
    }
}
