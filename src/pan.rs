//! Card data: the primary account number ([`Pan`]), its [`Brand`], its [`Expiry`] and the [`Cvv`].
//!
//! The validation rules, each refusal named by its error code:
//! - a PAN is 12 to 19 ASCII digits; single spaces or dashes *between* digit groups are accepted
//!   and removed, anything else is `invalid_pan`; the Luhn check must pass (`luhn_check_failed`);
//! - the expiry month is 1-12 and the year 2000-2099 (`invalid_expiry`); a card is valid through
//!   the last day of its expiry month (UTC);
//! - a CVV is 3 or 4 ASCII digits (`invalid_cvv`).
//!
//! Secrets ([`Pan`], [`Cvv`]) live only in zeroizing buffers and print as `[REDACTED]`. Errors carry
//! static reasons only, never the input.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{Error, Result};

mod detect;
pub use detect::{has_long_digit_run, holds_card_number};

/// Raw input longer than this is rejected before any other work (the longest accepted PAN, 19
/// digits with a separator between each pair, is 37 bytes).
pub const MAX_RAW_PAN_LEN: usize = 64;
/// Fewest digits in a PAN (ISO/IEC 7812).
pub const MIN_PAN_DIGITS: usize = 12;
/// Most digits in a PAN (ISO/IEC 7812).
pub const MAX_PAN_DIGITS: usize = 19;

const REDACTED: &str = "[REDACTED]";

/// A validated card number: 12 to 19 ASCII digits passing the Luhn check, separators removed.
///
/// The digits are held in a [`Zeroizing`] buffer that is wiped on drop; `Debug` and `Display`
/// print `[REDACTED]`. Equality is constant-time.
#[derive(Clone)]
pub struct Pan(Zeroizing<String>);

impl Pan {
    /// Parses and validates a card number.
    ///
    /// Accepts 12 to 19 ASCII digits, optionally split into groups by single spaces or single
    /// dashes (`"4111 1111 1111 1111"`, `"378282-246310005"`). Rejects with
    /// [`Error::InvalidPan`] input longer than [`MAX_RAW_PAN_LEN`] bytes, any other character
    /// (tabs, letters, Unicode digits, `+`, `.`, NUL...), a separator at either end or next to
    /// another one, and a digit count outside 12..=19; then with [`Error::LuhnCheckFailed`] a
    /// number failing the Luhn check.
    ///
    /// The digits are written straight into a zeroizing buffer sized for the longest PAN, so no
    /// unwiped copy is ever made (not even by a reallocation).
    pub fn parse(input: &str) -> Result<Pan> {
        let digit_count = check_shape(input)?;
        if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&digit_count) {
            return Err(Error::InvalidPan {
                reason: "must be 12 to 19 digits",
            });
        }
        let mut digits = Zeroizing::new(String::with_capacity(MAX_PAN_DIGITS));
        for b in input.bytes().filter(u8::is_ascii_digit) {
            digits.push(char::from(b));
        }
        if !luhn_valid(&digits) {
            return Err(Error::LuhnCheckFailed);
        }
        Ok(Pan(digits))
    }

    /// The bare digits. Only for encryption, HMAC and the gateway: never log or return them.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// Number of digits (12 to 19).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid PAN has at least 12 digits (present for API symmetry with `len`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bank identification number: the first 6 digits.
    pub fn bin(&self) -> &str {
        self.0.get(..6).unwrap_or_default()
    }

    /// The first 2 digits (start of a standard token).
    pub fn first2(&self) -> &str {
        self.0.get(..2).unwrap_or_default()
    }

    /// The last 4 digits.
    pub fn last4(&self) -> &str {
        self.0
            .get(self.len().saturating_sub(4)..)
            .unwrap_or_default()
    }

    /// First 6 digits, one `*` per hidden digit, last 4 digits (PCI DSS 3.4.1), e.g.
    /// `"411111******1111"`; always as long as the PAN.
    pub fn masked(&self) -> String {
        let hidden = self.len().saturating_sub(10);
        let mut out = String::with_capacity(self.len());
        out.push_str(self.bin());
        out.extend(std::iter::repeat_n('*', hidden));
        out.push_str(self.last4());
        out
    }

    /// The card brand, from the IIN ranges (see [`Brand::detect`]).
    pub fn brand(&self) -> Brand {
        Brand::detect(&self.0)
    }
}

/// Checks the characters and separator positions of a raw PAN without allocating; returns the
/// number of digits.
fn check_shape(input: &str) -> Result<usize> {
    if input.len() > MAX_RAW_PAN_LEN {
        return Err(Error::InvalidPan {
            reason: "input is too long",
        });
    }
    if input.is_empty() {
        return Err(Error::InvalidPan {
            reason: "must not be empty",
        });
    }
    let mut digits = 0usize;
    let mut prev_digit = false;
    for b in input.bytes() {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                prev_digit = true;
            }
            b' ' | b'-' => {
                if !prev_digit {
                    return Err(Error::InvalidPan {
                        reason: "separators must stand between digit groups",
                    });
                }
                prev_digit = false;
            }
            _ => {
                return Err(Error::InvalidPan {
                    reason: "must contain only ASCII digits, spaces or dashes",
                });
            }
        }
    }
    if !prev_digit {
        return Err(Error::InvalidPan {
            reason: "separators must stand between digit groups",
        });
    }
    Ok(digits)
}

impl PartialEq for Pan {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Pan {}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Sum of the Luhn weights of `digits`, the rightmost digit at position `first_pos`; `None` on a
/// non-digit.
fn luhn_sum(digits: &str, first_pos: usize) -> Option<u32> {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = u32::from(b - b'0');
        sum += if (i + first_pos) % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    Some(sum)
}

/// The Luhn (mod 10) check on a digits-only string. False on an empty string or any non-digit.
/// Does not allocate.
pub fn luhn_valid(digits: &str) -> bool {
    !digits.is_empty() && luhn_sum(digits, 0).is_some_and(|s| s % 10 == 0)
}

/// The check digit that makes `body` followed by it pass [`luhn_valid`]. `None` when `body` is
/// empty or holds a non-digit.
pub fn luhn_check_digit(body: &str) -> Option<u8> {
    if body.is_empty() {
        return None;
    }
    let sum = luhn_sum(body, 1)?;
    u8::try_from((10 - sum % 10) % 10).ok()
}

/// Card brand, detected from the issuer identification number (IIN) prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    /// Visa: IIN 4.
    Visa,
    /// Mastercard: IIN 51-55 and 2221-2720.
    Mastercard,
    /// American Express: IIN 34, 37.
    Amex,
    /// Discover: IIN 6011, 622126-622925, 644-649, 65.
    Discover,
    /// JCB: IIN 3528-3589.
    Jcb,
    /// Diners Club: IIN 300-305, 3095, 36, 38-39.
    Diners,
    /// Maestro: IIN 50, 56-58, 6304, 6390, 67.
    Maestro,
    /// UnionPay: IIN 62 (outside Discover's range), 81.
    Unionpay,
    /// No known range matched; the card is still accepted.
    Unknown,
}

/// The first `n` characters of `digits` as a number, if there are `n` of them and all are digits.
fn prefix(digits: &str, n: usize) -> Option<u32> {
    let head = digits.as_bytes().get(..n)?;
    head.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

impl Brand {
    /// Detects the brand from the leading digits, most specific ranges first:
    ///
    /// | brand | IIN ranges |
    /// |---|---|
    /// | amex | 34, 37 |
    /// | diners | 300-305, 3095, 36, 38-39 |
    /// | jcb | 3528-3589 |
    /// | discover | 6011, 622126-622925, 644-649, 65 |
    /// | unionpay | 62 (outside discover's 622126-622925), 81 |
    /// | mastercard | 51-55, 2221-2720 |
    /// | maestro | 50, 56-58, 6304, 6390, 67 (incl. 6759, 676770, 676774) |
    /// | visa | 4 |
    ///
    /// Anything else (or input too short or not digits) is [`Brand::Unknown`].
    pub fn detect(digits: &str) -> Brand {
        let p = |n| prefix(digits, n);
        let in_range = |n, lo, hi| p(n).is_some_and(|v| (lo..=hi).contains(&v));
        if matches!(p(2), Some(34 | 37)) {
            Brand::Amex
        } else if in_range(3, 300, 305) || p(4) == Some(3095) || matches!(p(2), Some(36 | 38 | 39))
        {
            Brand::Diners
        } else if in_range(4, 3528, 3589) {
            Brand::Jcb
        } else if p(4) == Some(6011)
            || in_range(6, 622_126, 622_925)
            || in_range(3, 644, 649)
            || p(2) == Some(65)
        {
            Brand::Discover
        } else if matches!(p(2), Some(62 | 81)) {
            Brand::Unionpay
        } else if in_range(2, 51, 55) || in_range(4, 2221, 2720) {
            Brand::Mastercard
        } else if matches!(p(2), Some(50 | 56..=58 | 67)) || matches!(p(4), Some(6304 | 6390)) {
            Brand::Maestro
        } else if p(1) == Some(4) {
            Brand::Visa
        } else {
            Brand::Unknown
        }
    }

    /// The lowercase name, as serialized (`"visa"`, `"mastercard"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::Maestro => "maestro",
            Brand::Unionpay => "unionpay",
            Brand::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card's expiry month: month 1-12, four-digit year 2000-2099. The card is valid through the
/// last day of that month (UTC). Build it with [`Expiry::new`], which checks both ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expiry {
    /// Month of the year, 1-12.
    pub month: u8,
    /// Four-digit year, 2000-2099.
    pub year: u16,
}

impl Expiry {
    /// Validates month 1-12 and year 2000-2099 (taken as `i64` so any JSON integer can be
    /// checked); else [`Error::InvalidExpiry`].
    pub fn new(month: i64, year: i64) -> Result<Expiry> {
        let month = u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or(Error::InvalidExpiry {
                reason: "month must be 1 to 12",
            })?;
        let year = u16::try_from(year)
            .ok()
            .filter(|y| (2000..=2099).contains(y))
            .ok_or(Error::InvalidExpiry {
                reason: "year must be 2000 to 2099",
            })?;
        Ok(Expiry { month, year })
    }

    /// Whether the card is expired at `unix_secs`: it is valid through the last second of the last
    /// day of its expiry month (UTC), expired from the first instant of the next month.
    pub fn is_expired_at(&self, unix_secs: u64) -> bool {
        let (y, m) = if self.month >= 12 {
            (i64::from(self.year) + 1, 1)
        } else {
            (i64::from(self.year), i64::from(self.month) + 1)
        };
        let end = days_from_civil(y, m, 1).saturating_mul(86_400);
        i64::try_from(unix_secs).map_or(true, |now| now >= end)
    }

    /// [`Expiry::is_expired_at`] the current system time.
    pub fn is_expired(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.is_expired_at(now)
    }

    /// Two-digit month and year, e.g. `"0327"` for March 2027.
    pub fn mmyy(&self) -> String {
        format!("{:02}{:02}", self.month, self.year % 100)
    }
}

/// Expiries order by time: year first, then month (`12/2030` is before `01/2031`).
impl Ord for Expiry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.year, self.month).cmp(&(other.year, other.month))
    }
}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A card verification value: 3 or 4 ASCII digits, zeroized on drop, printed as `[REDACTED]`.
#[derive(Clone)]
pub struct Cvv(Zeroizing<String>);

impl Cvv {
    /// Accepts exactly 3 or 4 ASCII digits; else [`Error::InvalidCvv`].
    pub fn parse(input: &str) -> Result<Cvv> {
        if !(3..=4).contains(&input.len()) || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidCvv);
        }
        let mut digits = Zeroizing::new(String::with_capacity(4));
        digits.push_str(input);
        Ok(Cvv(digits))
    }

    /// The bare digits, only for the gateway call.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Published test PANs with their brands.
    const TEST_PANS: &[(&str, Brand)] = &[
        ("4111111111111111", Brand::Visa),
        ("4012888888881881", Brand::Visa),
        ("4242424242424242", Brand::Visa),
        ("4000000000000002", Brand::Visa),
        ("4222222222222", Brand::Visa),
        ("5555555555554444", Brand::Mastercard),
        ("5105105105105100", Brand::Mastercard),
        ("2223003122003222", Brand::Mastercard),
        ("378282246310005", Brand::Amex),
        ("371449635398431", Brand::Amex),
        ("6011111111111117", Brand::Discover),
        ("6011000990139424", Brand::Discover),
        ("3530111333300000", Brand::Jcb),
        ("3566002020360505", Brand::Jcb),
        ("30569309025904", Brand::Diners),
        ("36227206271667", Brand::Diners),
        ("6759649826438453", Brand::Maestro),
        ("6200000000000005", Brand::Unionpay),
        ("6250941006528599", Brand::Unionpay),
    ];

    fn pan_reason(input: &str) -> &'static str {
        match Pan::parse(input) {
            Err(Error::InvalidPan { reason }) => reason,
            other => panic!("expected InvalidPan, got {other:?}"),
        }
    }

    /// A 19-digit Luhn-valid PAN built from a known body.
    fn pan19() -> String {
        let body = "400000000000000000";
        let mut s = body.to_owned();
        s.push(char::from(b'0' + luhn_check_digit(body).unwrap()));
        s
    }

    #[test]
    fn published_test_pans_parse_with_their_brand() {
        for &(raw, brand) in TEST_PANS {
            let pan = Pan::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(pan.digits(), raw);
            assert_eq!(pan.len(), raw.len());
            assert!(!pan.is_empty());
            assert_eq!(pan.brand(), brand, "{raw}");
            assert_eq!(Brand::detect(raw), brand);
        }
    }

    #[test]
    fn separators_between_groups_are_removed() {
        for raw in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111 1111-1111 1111",
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ] {
            assert_eq!(Pan::parse(raw).unwrap().digits(), "4111111111111111");
        }
        assert_eq!(
            Pan::parse("378282-246310005").unwrap().digits(),
            "378282246310005"
        );
        assert_eq!(
            Pan::parse("3782 822463 10005").unwrap().digits(),
            "378282246310005"
        );
    }

    #[test]
    fn misplaced_separators_are_rejected() {
        let r = "separators must stand between digit groups";
        for raw in [
            " 4111111111111111",
            "4111111111111111 ",
            "-4111111111111111",
            "4111111111111111-",
            "4111  1111 1111 1111",
            "4111--1111-1111-1111",
            "4111 -1111-1111-1111",
            " ",
            "-",
        ] {
            assert_eq!(pan_reason(raw), r, "{raw:?}");
        }
    }

    #[test]
    fn foreign_characters_are_rejected() {
        let r = "must contain only ASCII digits, spaces or dashes";
        for raw in [
            "4111\t1111111111111",
            "4111\n1111111111111",
            "4111111111111111\0",
            "41111111111111a1",
            "+4111111111111111",
            "4111.1111.1111.1111",
            "4111/1111/1111/1111",
            "4111_1111_1111_1111",
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            // Arabic-Indic, fullwidth and Devanagari digits are not ASCII digits.
            "\u{664}\u{661}\u{661}\u{661}111111111111",
            "\u{ff14}\u{ff11}\u{ff11}\u{ff11}111111111111",
            "\u{96a}111111111111111",
        ] {
            assert_eq!(pan_reason(raw), r, "{raw:?}");
        }
    }

    #[test]
    fn empty_and_oversized_input_is_rejected() {
        assert_eq!(pan_reason(""), "must not be empty");
        let long = "4".repeat(MAX_RAW_PAN_LEN + 1);
        assert_eq!(pan_reason(&long), "input is too long");
        let long_garbage = "x".repeat(10_000);
        assert_eq!(pan_reason(&long_garbage), "input is too long");
    }

    #[test]
    fn digit_count_must_be_12_to_19() {
        let r = "must be 12 to 19 digits";
        // Build Luhn-valid numbers of each length so only the length rule can fail.
        for len in 2..=25usize {
            let body = format!("4{}", "0".repeat(len - 2));
            let raw = format!("{body}{}", luhn_check_digit(&body).unwrap());
            assert!(luhn_valid(&raw));
            let res = Pan::parse(&raw);
            if (12..=19).contains(&len) {
                assert_eq!(res.unwrap().len(), len);
            } else {
                assert_eq!(pan_reason(&raw), r, "len {len}");
            }
        }
        // Separators do not count as digits.
        assert_eq!(pan_reason("4111 1111 111"), r);
    }

    #[test]
    fn luhn_failure_is_its_own_error() {
        for raw in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "378282246310006",
            "0000000000001",
        ] {
            assert!(
                matches!(Pan::parse(raw), Err(Error::LuhnCheckFailed)),
                "{raw}"
            );
        }
    }

    #[test]
    fn luhn_functions() {
        for &(raw, _) in TEST_PANS {
            assert!(luhn_valid(raw));
            let (body, check) = raw.split_at(raw.len() - 1);
            assert_eq!(luhn_check_digit(body), Some(check.as_bytes()[0] - b'0'));
        }
        assert!(luhn_valid("0"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("4111 1111 1111 1111"));
        assert!(!luhn_valid("411111111111111a"));
        assert!(!luhn_valid("\u{664}"));
        assert_eq!(luhn_check_digit("7992739871"), Some(3));
        assert_eq!(luhn_check_digit(""), None);
        assert_eq!(luhn_check_digit("41x1"), None);
        // Every body gets exactly one valid check digit.
        for body in ["1", "12", "123456789", "400000000000000000"] {
            let valid: Vec<u8> = (0..10u8)
                .filter(|d| luhn_valid(&format!("{body}{d}")))
                .collect();
            assert_eq!(valid, vec![luhn_check_digit(body).unwrap()]);
        }
    }

    #[test]
    fn accessors_and_masking_for_every_length() {
        let pan = Pan::parse("4111111111111111").unwrap();
        assert_eq!(pan.bin(), "411111");
        assert_eq!(pan.first2(), "41");
        assert_eq!(pan.last4(), "1111");
        assert_eq!(pan.masked(), "411111******1111");

        let amex = Pan::parse("378282246310005").unwrap();
        assert_eq!(amex.masked(), "378282*****0005");
        let visa13 = Pan::parse("4222222222222").unwrap();
        assert_eq!(visa13.masked(), "422222***2222");
        let diners = Pan::parse("36227206271667").unwrap();
        assert_eq!(diners.masked(), "362272****1667");

        let raw19 = pan19();
        let p19 = Pan::parse(&raw19).unwrap();
        assert_eq!(p19.len(), 19);
        assert_eq!(p19.brand(), Brand::Visa);
        assert_eq!(p19.bin(), "400000");
        assert_eq!(p19.last4(), &raw19[15..]);
        assert_eq!(p19.masked(), format!("400000*********{}", &raw19[15..]));

        let body12 = "40000000000";
        let raw12 = format!("{body12}{}", luhn_check_digit(body12).unwrap());
        let p12 = Pan::parse(&raw12).unwrap();
        assert_eq!(p12.masked(), format!("400000**{}", &raw12[8..]));
        for p in [&pan, &amex, &visa13, &diners, &p19, &p12] {
            assert_eq!(p.masked().len(), p.len());
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let pan = Pan::parse("4111 1111 1111 1111").unwrap();
        assert_eq!(format!("{pan}"), "[REDACTED]");
        assert_eq!(format!("{pan:?}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(pan.clone())), "Some([REDACTED])");
        let cvv = Cvv::parse("123").unwrap();
        assert_eq!(format!("{cvv}"), "[REDACTED]");
        assert_eq!(format!("{cvv:?}"), "[REDACTED]");
    }

    #[test]
    fn errors_never_echo_input() {
        for raw in [
            "4111111111111112",
            "4111x11111111111",
            "41111111111",
            " 4111111111111111",
        ] {
            let err = Pan::parse(raw).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("4111"), "{text}");
        }
        let err = Cvv::parse("12345").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("12345"));
    }

    #[test]
    fn pan_equality() {
        let a = Pan::parse("4111111111111111").unwrap();
        let b = Pan::parse("4111-1111-1111-1111").unwrap();
        let c = Pan::parse("4242424242424242").unwrap();
        let d = Pan::parse("378282246310005").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn brand_boundaries() {
        let cases: &[(&str, Brand)] = &[
            // Mastercard 2-series.
            ("2220999999999999", Brand::Unknown),
            ("2221000000000000", Brand::Mastercard),
            ("2720999999999999", Brand::Mastercard),
            ("2721000000000000", Brand::Unknown),
            ("50", Brand::Maestro),
            ("51", Brand::Mastercard),
            ("55", Brand::Mastercard),
            ("56", Brand::Maestro),
            ("58", Brand::Maestro),
            ("59", Brand::Unknown),
            // Amex / diners.
            ("34", Brand::Amex),
            ("37", Brand::Amex),
            ("35", Brand::Unknown),
            ("300", Brand::Diners),
            ("305", Brand::Diners),
            ("306", Brand::Unknown),
            ("3095", Brand::Diners),
            ("3096", Brand::Unknown),
            ("36", Brand::Diners),
            ("38", Brand::Diners),
            ("39", Brand::Diners),
            // JCB.
            ("3527", Brand::Unknown),
            ("3528", Brand::Jcb),
            ("3589", Brand::Jcb),
            ("3590", Brand::Unknown),
            // Discover vs unionpay.
            ("6011", Brand::Discover),
            ("6012", Brand::Unknown),
            ("622125", Brand::Unionpay),
            ("622126", Brand::Discover),
            ("622925", Brand::Discover),
            ("622926", Brand::Unionpay),
            ("62", Brand::Unionpay),
            ("81", Brand::Unionpay),
            ("643", Brand::Unknown),
            ("644", Brand::Discover),
            ("649", Brand::Discover),
            ("65", Brand::Discover),
            // Maestro.
            ("6304", Brand::Maestro),
            ("6390", Brand::Maestro),
            ("6391", Brand::Unknown),
            ("6759", Brand::Maestro),
            ("676770", Brand::Maestro),
            ("676774", Brand::Maestro),
            ("67", Brand::Maestro),
            // Visa and the rest.
            ("4", Brand::Visa),
            ("1234567890123456", Brand::Unknown),
            ("9", Brand::Unknown),
            ("", Brand::Unknown),
            ("4x", Brand::Visa),
            ("x4", Brand::Unknown),
            ("3x", Brand::Unknown),
        ];
        for &(digits, brand) in cases {
            assert_eq!(Brand::detect(digits), brand, "{digits:?}");
        }
        // A short input matches only the ranges it is long enough for.
        assert_eq!(Brand::detect("6"), Brand::Unknown);
        assert_eq!(Brand::detect("2"), Brand::Unknown);
    }

    #[test]
    fn brand_names_and_serde() {
        let all = [
            Brand::Visa,
            Brand::Mastercard,
            Brand::Amex,
            Brand::Discover,
            Brand::Jcb,
            Brand::Diners,
            Brand::Maestro,
            Brand::Unionpay,
            Brand::Unknown,
        ];
        for b in all {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
            assert_eq!(b.to_string(), b.as_str());
            assert_eq!(serde_json::from_str::<Brand>(&json).unwrap(), b);
        }
        assert_eq!(Brand::Unionpay.as_str(), "unionpay");
    }

    #[test]
    fn expiry_ranges() {
        assert_eq!(
            Expiry::new(3, 2027).unwrap(),
            Expiry {
                month: 3,
                year: 2027
            }
        );
        assert!(Expiry::new(1, 2000).is_ok());
        assert!(Expiry::new(12, 2099).is_ok());
        for (m, y) in [(0, 2027), (13, 2027), (-1, 2027), (256 + 3, 2027)] {
            assert!(
                matches!(Expiry::new(m, y), Err(Error::InvalidExpiry { reason }) if reason.contains("month")),
                "{m}/{y}"
            );
        }
        for (m, y) in [
            (3, 1999),
            (3, 2100),
            (3, 27),
            (3, -2027),
            (3, 65_536 + 2027),
        ] {
            assert!(
                matches!(Expiry::new(m, y), Err(Error::InvalidExpiry { reason }) if reason.contains("year")),
                "{m}/{y}"
            );
        }
        assert!(Expiry::new(i64::MAX, i64::MIN).is_err());
    }

    #[test]
    fn expiry_is_inclusive_of_its_month() {
        // 2027-03-31T23:59:59Z and 2027-04-01T00:00:00Z.
        let last_second_of_march = 1_806_537_599;
        let april_first = 1_806_537_600;
        let e = Expiry::new(3, 2027).unwrap();
        assert!(!e.is_expired_at(0));
        assert!(!e.is_expired_at(last_second_of_march));
        assert!(e.is_expired_at(april_first));
        assert!(e.is_expired_at(u64::MAX));

        // December rolls over to January 1st of the next year: 2026-01-01T00:00:00Z.
        let dec = Expiry::new(12, 2025).unwrap();
        assert!(!dec.is_expired_at(1_767_225_599));
        assert!(dec.is_expired_at(1_767_225_600));

        // Leap year February: valid through 2024-02-29.
        let feb = Expiry::new(2, 2024).unwrap();
        assert!(!feb.is_expired_at(1_709_251_199)); // 2024-02-29T23:59:59Z
        assert!(feb.is_expired_at(1_709_251_200)); // 2024-03-01T00:00:00Z

        assert!(Expiry::new(1, 2000).unwrap().is_expired());
        assert!(!Expiry::new(12, 2099).unwrap().is_expired());
    }

    #[test]
    fn expiries_order_by_year_then_month() {
        let e = |m, y| Expiry::new(m, y).unwrap();
        assert!(e(12, 2030) < e(1, 2031));
        assert!(e(2, 2030) > e(1, 2030));
        assert_eq!(e(12, 2030).max(e(1, 2020)), e(12, 2030));
        assert_eq!(e(1, 2031).cmp(&e(1, 2031)), std::cmp::Ordering::Equal);
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2100, 1, 1), 47_482);
    }

    #[test]
    fn mmyy_and_serde() {
        assert_eq!(Expiry::new(3, 2027).unwrap().mmyy(), "0327");
        assert_eq!(Expiry::new(12, 2000).unwrap().mmyy(), "1200");
        assert_eq!(Expiry::new(1, 2099).unwrap().mmyy(), "0199");
        let e = Expiry::new(3, 2027).unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"month":3,"year":2027}"#);
        assert_eq!(serde_json::from_str::<Expiry>(&json).unwrap(), e);
    }

    #[test]
    fn cvv_rules() {
        assert_eq!(Cvv::parse("123").unwrap().digits(), "123");
        assert_eq!(Cvv::parse("0000").unwrap().digits(), "0000");
        for bad in [
            "",
            "1",
            "12",
            "12345",
            "12a",
            " 123",
            "123 ",
            "1 23",
            "١٢٣",
            "１２３",
            "-12",
            "+123",
        ] {
            assert!(matches!(Cvv::parse(bad), Err(Error::InvalidCvv)), "{bad:?}");
        }
    }
}
