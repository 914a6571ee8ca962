//! The one card-number detector for text the vault keeps in clear (token values, request ids,
//! merchant names, shop logins, key labels, agreement ids): a value holding a card number is
//! refused or replaced before it can be stored, echoed or audited.
//!
//! A *digit run* is a maximal sequence of digits in which anything that is neither a letter nor a
//! digit (spaces of every kind, punctuation, dashes, zero-width and other format characters) is
//! ignored, so `4111--1111--1111--1111`, `4111\u{a0}1111...` and `4111.1111...` are one run of
//! 16 digits; a letter ends a run. Digits are ASCII `0-9` and every other character Unicode
//! calls numeric (fullwidth, Arabic-Indic, ...).
//!
//! Two policies read the same runs:
//! - [`holds_card_number`]: a run holds 12 to 19 consecutive digits that pass the Luhn check
//!   (every card the vault accepts does), or holds 12 or more digits of which one is not ASCII
//!   (its value is not computed: taken for a card). Used for free text.
//! - [`has_long_digit_run`]: any run of `n` or more digits, Luhn or not: the stricter rule of a
//!   custom token's value (Axerve: no 12 digits in a row).

use super::{MAX_PAN_DIGITS, MIN_PAN_DIGITS, luhn_valid};

/// Calls `f` with each digit run of `s` (ASCII digits as bytes; a non-ASCII digit as `b'?'`).
/// Stops and returns true as soon as `f` does.
fn any_run(s: &str, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let mut run: Vec<u8> = Vec::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            run.push(c as u8);
        } else if c.is_numeric() {
            run.push(b'?');
        } else if c.is_alphabetic() {
            if f(&run) {
                return true;
            }
            run.clear();
        }
    }
    f(&run)
}

/// Whether `s` holds a card number: see the module doc. `s` is never copied out of this call.
pub fn holds_card_number(s: &str) -> bool {
    any_run(s, |run| {
        if run.len() < MIN_PAN_DIGITS {
            return false;
        }
        if run.contains(&b'?') {
            return true;
        }
        (MIN_PAN_DIGITS..=MAX_PAN_DIGITS.min(run.len())).any(|n| {
            run.windows(n)
                .any(|w| std::str::from_utf8(w).is_ok_and(luhn_valid))
        })
    })
}

/// Whether `s` holds a digit run of `n` or more digits (see the module doc).
pub fn has_long_digit_run(s: &str, n: usize) -> bool {
    any_run(s, |run| run.len() >= n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Issue 14 finding 6: every way of writing a test card in free text is found.
    #[test]
    fn cards_are_found_whatever_separates_their_digits() {
        for s in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111--1111--1111--1111",
            "4111_1111_1111_1111",
            "req-4111.1111.1111.1111:x",
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
            "4111 / 1111 / 1111 / 1111",
            "Shop 5555-5555-5555-4444",
            "378282246310005",
            "\u{ff14}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{ff11}",
            "x9x4111111111111111x9",
        ] {
            assert!(holds_card_number(s), "{s:?}");
        }
    }

    #[test]
    fn ordinary_text_is_not_a_card() {
        for s in [
            "",
            "ACME Srl",
            "9000001",
            "GESPAY12345",
            "550e8400-e29b-41d4-a716-446655440000",
            "2026-12-04T10:00:00Z",
            "order 123456789012",  // 12 digits failing Luhn
            "4111a1111b1111c1111", // letters end runs
            "AGR-0001",
        ] {
            assert!(!holds_card_number(s), "{s:?}");
        }
    }

    #[test]
    fn digit_runs_ignore_separators_but_not_letters() {
        assert!(has_long_digit_run("1234-5678_9012", 12));
        assert!(has_long_digit_run("123456789012", 12));
        assert!(!has_long_digit_run("12345678901", 12));
        assert!(!has_long_digit_run("123456A789012", 12));
    }
}
