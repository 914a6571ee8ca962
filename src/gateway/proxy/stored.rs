//! The stored-credential rules (card on file, merchant-initiated series) as the proxy enforces
//! them, whatever the gateway's words for them (each gateway module reads its own fields into a
//! [`StoredCredential`]): which agreement a charge runs under or establishes, what it may do with
//! it, and what MPGS `storedOnFile` says.

use crate::Error;
use crate::gateway::{Gateway, StoredCredential};
use crate::vault::Agreement;

use super::ChargeError;

/// What the stored-credential rules make of a charge on a token.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Stored {
    /// MPGS `storedOnFile` to fill in where the merchant left it out.
    pub(super) fill_stored_on_file: Option<&'static str>,
    /// The agreement this (cardholder-initiated) charge establishes, if new to the token.
    pub(super) record: Option<Agreement>,
}

/// The stored-credential rules, on every gateway that has the fields (see each module's
/// `stored_credential`): a merchant-initiated transaction must run under an agreement this token
/// established (else 422 `agreement_required`) of the same type (else 422 `agreement_mismatch`);
/// a cardholder-initiated one naming an agreement new to the token establishes it (recorded once
/// approved). MPGS names the agreement (`agreement.id`); Worldline and Axerve name only the
/// series' type, so there the token's agreements at that gateway (ids `<marker><TYPE>`) are what
/// counts, and one of another type is a mismatch. MPGS `storedOnFile` is `TO_BE_STORED` on the
/// first use under an agreement and `STORED` after, unless the merchant gave it.
///
/// `agreements` reads the token's agreements; it is called only when the charge names an
/// agreement or is merchant-initiated.
pub(super) fn on_token(
    sc: &StoredCredential,
    gateway: Gateway,
    agreements: impl FnOnce() -> Result<Vec<Agreement>, Error>,
) -> Result<Stored, ChargeError> {
    if sc.agreement.is_none() && !sc.merchant_initiated {
        return Ok(Stored::default());
    }
    let agreements = agreements()?;
    let known = sc
        .agreement
        .as_ref()
        .and_then(|(id, _)| agreements.iter().find(|a| a.id == *id));
    // At a gateway without agreement ids: any agreement this token made there.
    let made_there = gateway
        .agreement_marker()
        .is_some_and(|m| agreements.iter().any(|a| a.id.starts_with(m)));
    if sc.merchant_initiated {
        let Some((_, kind)) = &sc.agreement else {
            return Err(ChargeError::AgreementNotNamed);
        };
        match known {
            Some(a) if a.kind == *kind => {}
            Some(_) => return Err(ChargeError::AgreementMismatch),
            None if made_there => {
                return Err(ChargeError::SeriesMismatch {
                    gateway,
                    kind: kind.clone(),
                });
            }
            None => return Err(ChargeError::AgreementUnknown),
        }
    }
    let fill_stored_on_file = match (&sc.agreement, sc.stored_on_file) {
        (Some(_), Some(false)) => Some(if known.is_some() {
            "STORED"
        } else {
            "TO_BE_STORED"
        }),
        _ => None,
    };
    let record = match (&sc.agreement, known, sc.merchant_initiated) {
        (Some((id, kind)), None, false) => Some(Agreement {
            id: id.clone(),
            kind: kind.clone(),
        }),
        _ => None,
    };
    Ok(Stored {
        fill_stored_on_file,
        record,
    })
}

/// A raw card's cardholder-initiated charge that stores the card under an agreement (the first
/// storing use, with `X-Panvault-Request-Token`): the agreement goes on the new token once
/// approved, and MPGS `storedOnFile` is `TO_BE_STORED` when the merchant left it out (the `bool`).
pub(super) fn on_raw_card(sc: StoredCredential) -> Option<(bool, Agreement)> {
    match (sc.agreement, sc.merchant_initiated) {
        (Some((id, kind)), false) => {
            Some((sc.stored_on_file == Some(false), Agreement { id, kind }))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn sc(agreement: Option<(&str, &str)>, mit: bool, sof: Option<bool>) -> StoredCredential {
        StoredCredential {
            agreement: agreement.map(|(i, k)| (i.to_string(), k.to_string())),
            merchant_initiated: mit,
            stored_on_file: sof,
        }
    }

    fn agreement(id: &str, kind: &str) -> Agreement {
        Agreement {
            id: id.into(),
            kind: kind.into(),
        }
    }

    fn has(list: &[Agreement]) -> impl FnOnce() -> Result<Vec<Agreement>, Error> + '_ {
        move || Ok(list.to_vec())
    }

    #[test]
    fn a_charge_without_stored_fields_reads_nothing() {
        let never = || -> Result<Vec<Agreement>, Error> { panic!("read the agreements") };
        assert_eq!(
            on_token(&sc(None, false, Some(false)), Gateway::Mpgs, never).unwrap(),
            Stored::default()
        );
    }

    #[test]
    fn a_cardholder_initiated_charge_establishes_a_new_agreement() {
        let st = on_token(
            &sc(Some(("A-1", "RECURRING")), false, Some(false)),
            Gateway::Mpgs,
            has(&[]),
        )
        .unwrap();
        assert_eq!(st.fill_stored_on_file, Some("TO_BE_STORED"));
        assert_eq!(st.record, Some(agreement("A-1", "RECURRING")));
        // Known already: nothing to record, and MPGS says STORED.
        let known = [agreement("A-1", "RECURRING")];
        let st = on_token(
            &sc(Some(("A-1", "RECURRING")), false, Some(false)),
            Gateway::Mpgs,
            has(&known),
        )
        .unwrap();
        assert_eq!(st.fill_stored_on_file, Some("STORED"));
        assert_eq!(st.record, None);
        // The merchant gave storedOnFile: left as it is.
        let st = on_token(
            &sc(Some(("A-2", "RECURRING")), false, Some(true)),
            Gateway::Mpgs,
            has(&known),
        )
        .unwrap();
        assert_eq!(st.fill_stored_on_file, None);
    }

    #[test]
    fn a_merchant_initiated_charge_needs_the_tokens_own_agreement() {
        let known = [agreement("A-1", "RECURRING")];
        let mit = |a| on_token(&sc(a, true, None), Gateway::Mpgs, has(&known));
        assert_eq!(mit(Some(("A-1", "RECURRING"))).unwrap(), Stored::default());
        assert!(matches!(mit(None), Err(ChargeError::AgreementNotNamed)));
        assert!(matches!(
            mit(Some(("A-1", "UNSCHEDULED"))),
            Err(ChargeError::AgreementMismatch)
        ));
        assert!(matches!(
            mit(Some(("A-9", "RECURRING"))),
            Err(ChargeError::AgreementUnknown)
        ));
    }

    #[test]
    fn without_agreement_ids_another_series_type_is_a_mismatch() {
        let marker = Gateway::Worldline.agreement_marker().unwrap();
        let known = [agreement(&format!("{marker}RECURRING"), "RECURRING")];
        let other = format!("{marker}INSTALLMENT");
        let e = on_token(
            &sc(Some((&other, "INSTALLMENT")), true, None),
            Gateway::Worldline,
            has(&known),
        )
        .unwrap_err();
        assert_eq!(e.code(), "agreement_mismatch");
        assert_eq!(
            e.to_string(),
            "this token stored its card at worldline for another type of series than INSTALLMENT"
        );
        // No agreement made there at all: required, not a mismatch.
        let e = on_token(
            &sc(Some((&other, "INSTALLMENT")), true, None),
            Gateway::Worldline,
            has(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code(), "agreement_required");
    }

    #[test]
    fn a_failed_agreement_read_is_the_librarys_error() {
        let e = on_token(&sc(None, true, None), Gateway::Nexi, || {
            Err(Error::TokenNotFound)
        })
        .unwrap_err();
        assert!(matches!(e, ChargeError::Vault(Error::TokenNotFound)));
    }

    #[test]
    fn a_raw_cards_first_storing_use() {
        assert_eq!(
            on_raw_card(sc(Some(("A-1", "RECURRING")), false, Some(false))),
            Some((true, agreement("A-1", "RECURRING")))
        );
        assert_eq!(
            on_raw_card(sc(Some(("A-1", "RECURRING")), false, None)),
            Some((false, agreement("A-1", "RECURRING")))
        );
        assert_eq!(
            on_raw_card(sc(Some(("A-1", "RECURRING")), true, None)),
            None
        );
        assert_eq!(on_raw_card(sc(None, false, Some(false))), None);
    }
}
