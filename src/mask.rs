//! Card numbers found in free text: masked in gateway answers (whatever the format: JSON, SOAP
//! XML, HTML, free-text error strings), refused in names that must never hold one. A masked card
//! number keeps at most its first 6 and last 4 digits; the digits between become `*` so lengths
//! and structure stay as they were.
//!
//! What counts as a card number: the PANs this request put on the wire (at any length), and any
//! other run of 13 to 19 digits (single spaces or dashes between digit groups allowed) that passes
//! the Luhn check and starts like a card brand. Digit runs inside longer runs are not split.

use std::borrow::Cow;

use crate::pan::{Brand, luhn_valid};

/// `body` with every card number masked; borrowed when there was none.
///
/// Passes repeat until one finds nothing: masking a known PAN inside a longer run can leave
/// the digits before it and its first six as a new card-shaped run, which the next pass masks
/// (so the result never [`holds_pan`]). Each pass only turns digits into `*`, so this ends.
pub fn mask_pans<'a>(body: &'a [u8], known: &[&str]) -> Cow<'a, [u8]> {
    let mut out = mask_pass(body, known);
    while let Cow::Owned(o) = &out {
        let next = match mask_pass(o, known) {
            Cow::Owned(n) => n,
            Cow::Borrowed(_) => break,
        };
        if let Cow::Owned(mut old) = std::mem::replace(&mut out, Cow::Owned(next)) {
            zeroize::Zeroize::zeroize(&mut old);
        }
    }
    out
}

fn mask_pass<'a>(body: &'a [u8], known: &[&str]) -> Cow<'a, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < body.len() {
        if !body[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run: digits, with single separators between digits.
        let start = i;
        let mut positions: Vec<usize> = Vec::with_capacity(19);
        let mut j = i;
        while j < body.len() {
            let b = body[j];
            if b.is_ascii_digit() {
                positions.push(j);
                j += 1;
            } else if (b == b' ' || b == b'-')
                && body.get(j + 1).is_some_and(u8::is_ascii_digit)
                && j > start
            {
                j += 1;
            } else {
                break;
            }
        }
        i = j;
        let mut digits = zeroize::Zeroizing::new(String::with_capacity(positions.len()));
        digits.extend(positions.iter().map(|&p| char::from(body[p])));
        let is_card = known.iter().any(|k| !k.is_empty() && *k == digits.as_str())
            || ((13..=19).contains(&positions.len())
                && luhn_valid(&digits)
                && Brand::detect(&digits) != Brand::Unknown);
        let hide: Vec<usize> = if is_card {
            positions
                .get(6..positions.len().saturating_sub(4))
                .unwrap_or_default()
                .to_vec()
        } else {
            // A known PAN inside a longer digit run (glued to other digits).
            let mut hide = Vec::new();
            for k in known.iter().filter(|k| k.len() >= 12) {
                let mut from = 0;
                while let Some(at) = digits.get(from..).and_then(|d| d.find(*k)) {
                    let s = from + at;
                    hide.extend_from_slice(
                        positions.get(s + 6..s + k.len() - 4).unwrap_or_default(),
                    );
                    from = s + k.len();
                }
            }
            // Any card among the run's groups: a single space or dash joins two card numbers
            // ("378282246310005 5555555555554444") or a card and other digits ("... 1230")
            // into one run too long to be a card itself.
            let mut groups = vec![0];
            groups.extend((1..positions.len()).filter(|&k| positions[k] != positions[k - 1] + 1));
            groups.push(positions.len());
            for (a, &s) in groups.iter().enumerate() {
                for &e in &groups[a + 1..] {
                    if e - s > 19 {
                        break;
                    }
                    let d = &digits[s..e];
                    if e - s >= 13 && luhn_valid(d) && Brand::detect(d) != Brand::Unknown {
                        hide.extend_from_slice(&positions[s + 6..e - 4]);
                    }
                }
            }
            hide
        };
        if !hide.is_empty() {
            let o = out.get_or_insert_with(|| body.to_vec());
            for p in hide {
                o[p] = b'*';
            }
        }
    }
    // The PANs this request sent, also when the gateway wrote them with other separators
    // (`4111.1111.1111.1111`, two spaces, a line break, `/`): up to 3 non-alphanumeric ASCII
    // bytes between digits.
    for k in known.iter().filter(|k| k.len() >= 12) {
        let src: &[u8] = out.as_deref().unwrap_or(body);
        let hits = loose_matches(src, k.as_bytes());
        if !hits.is_empty() {
            let o = out.get_or_insert_with(|| body.to_vec());
            for positions in hits {
                for &p in positions.get(6..positions.len() - 4).unwrap_or_default() {
                    o[p] = b'*';
                }
            }
        }
    }
    match out {
        Some(o) => Cow::Owned(o),
        None => Cow::Borrowed(body),
    }
}

/// Every place `pan` occurs in `body` with up to 3 separator bytes (ASCII, neither letter nor
/// digit) between its digits: the positions of its digits.
fn loose_matches(body: &[u8], pan: &[u8]) -> Vec<Vec<usize>> {
    let mut hits = Vec::new();
    for start in 0..body.len() {
        if body[start] != pan[0] || (start > 0 && body[start - 1].is_ascii_digit()) {
            continue;
        }
        let mut positions = vec![start];
        let mut j = start + 1;
        while positions.len() < pan.len() {
            let mut gap = 0;
            while j < body.len()
                && gap <= 3
                && body[j].is_ascii()
                && !body[j].is_ascii_alphanumeric()
            {
                j += 1;
                gap += 1;
            }
            if gap > 3 || j >= body.len() || body[j] != pan[positions.len()] {
                break;
            }
            positions.push(j);
            j += 1;
        }
        if positions.len() == pan.len() && !body.get(j).is_some_and(u8::is_ascii_digit) {
            hits.push(positions);
        }
    }
    hits
}

/// Whether an answer is in a form whose card numbers [`mask_pans`] cannot see: XML/HTML
/// numeric character references for digits (`&#52;`, `&#x34;`). The proxy refuses to pass
/// such an answer on rather than risk an unmasked card.
pub fn opaque_digits(body: &[u8]) -> bool {
    body.windows(3).enumerate().any(|(i, w)| {
        w[0] == b'&' && w[1] == b'#' && {
            let rest = &body[i + 2..];
            let (hex, digits) = match rest.first() {
                Some(b'x' | b'X') => (true, &rest[1..]),
                _ => (false, rest),
            };
            let end = digits
                .iter()
                .position(|&b| b == b';')
                .unwrap_or(digits.len());
            let n = std::str::from_utf8(&digits[..end.min(8)])
                .ok()
                .and_then(|t| u32::from_str_radix(t, if hex { 16 } else { 10 }).ok());
            n.is_some_and(|n| (0x30..=0x39).contains(&n))
        }
    })
}

/// Whether `text` still holds a card number [`mask_pans`] would mask.
pub fn holds_pan(text: &[u8], known: &[&str]) -> bool {
    matches!(mask_pans(text, known), Cow::Owned(_))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Found by the fuzz runner (tests/fuzz_stable.rs): cards a single space joins to other
    /// digits were passed on whole, and a pass could leave a new card-shaped run.
    #[test]
    fn cards_joined_to_other_digits_are_masked_and_masking_is_a_fixed_point() {
        let known = ["4111111111111111"];
        for (input, want) in [
            (
                "cards 378282246310005 5555555555554444 end",
                "cards 378282*****0005 555555******4444 end",
            ),
            (
                "card 4012888888881881-5555555555554444",
                "card 401288******1881-555555******4444",
            ),
            ("x 5555555555554444 1230", "x 555555******4444 1230"),
        ] {
            assert_eq!(
                mask_pans(input.as_bytes(), &known).as_ref(),
                want.as_bytes()
            );
        }
        let glued = b"MASKEDPAN37828224634111 1111 1111 11111>";
        let once = mask_pans(glued, &known);
        assert!(
            !holds_pan(&once, &known),
            "{}",
            String::from_utf8_lossy(&once)
        );
    }

    fn m(s: &str, known: &[&str]) -> String {
        String::from_utf8(mask_pans(s.as_bytes(), known).into_owned()).unwrap()
    }

    #[test]
    fn masks_json_xml_and_free_text() {
        assert_eq!(
            m(r#"{"number":"4111111111111111"}"#, &[]),
            r#"{"number":"411111******1111"}"#
        );
        assert_eq!(
            m("<cardNumber>5555555555554444</cardNumber>", &[]),
            "<cardNumber>555555******4444</cardNumber>"
        );
        assert_eq!(
            m(
                "VALUE 378282246310005 OF FIELD CREDITCARDNUMBER IS WRONG",
                &[]
            ),
            "VALUE 378282*****0005 OF FIELD CREDITCARDNUMBER IS WRONG"
        );
        assert_eq!(
            m("card 4012 8888 8888 1881 refused", &[]),
            "card 4012 88** **** 1881 refused"
        );
        assert_eq!(m("x4111-1111-1111-1111y", &[]), "x4111-11**-****-1111y");
    }

    #[test]
    fn leaves_ids_amounts_and_masked_numbers_alone() {
        for s in [
            r#"{"amount":"24.21","id":"1234567890123","receipt":"410810111333"}"#,
            "411111******1111 ***1111 512345xxxxxx0008",
            "4111111111111112",
            "41111111111111110000",
        ] {
            assert!(
                matches!(mask_pans(s.as_bytes(), &[]), Cow::Borrowed(_)),
                "{s}"
            );
        }
    }

    #[test]
    fn a_known_pan_is_masked_whatever_its_separators() {
        let k = ["4111111111111111"];
        for (s, want) in [
            ("pan 4111.1111.1111.1111 x", "pan 4111.11**.****.1111 x"),
            ("4111  1111  1111  1111", "4111  11**  ****  1111"),
            ("4111\n1111\r\n1111/1111", "4111\n11**\r\n****/1111"),
        ] {
            assert_eq!(m(s, &k), want, "{s:?}");
        }
        // More than 3 separators, or letters between: not read as the card.
        for s in ["4111....1111....1111....1111", "4111a1111b1111c1111"] {
            assert_eq!(m(s, &k), s);
        }
    }

    #[test]
    fn numeric_character_references_for_digits_are_opaque() {
        assert!(opaque_digits(b"<n>&#52;111</n>"));
        assert!(opaque_digits(b"<n>&#x34;111</n>"));
        assert!(!opaque_digits(b"<n>&#38; &amp; &#x41;</n>"));
    }

    #[test]
    fn known_pan_masked_anywhere() {
        // A known PAN glued to other digits is still masked.
        assert_eq!(
            m("00004111111111111111", &["4111111111111111"]),
            "0000411111******1111"
        );
        assert!(!holds_pan(m("4111111111111111", &[]).as_bytes(), &[]));
    }
}
