//! Card numbers found in free text: masked in gateway answers (whatever the format: JSON, SOAP
//! XML, HTML, free-text error strings), refused in names that must never hold one. A masked card
//! number keeps at most its first 6 and last 4 digits; the digits between become `*` (in the
//! encoding each was written in) so the structure stays as it was.
//!
//! What counts as a card number: the PANs this request put on the wire (at any length), and any
//! other run of 13 to 19 digits (one separator between digit groups allowed) that passes the
//! Luhn check and starts like a card brand. Digit runs inside longer runs are not split.
//!
//! A digit is any of them once decoded (`units.rs`, issue 14 item 5): ASCII, a JSON `\u0034`
//! escape, percent-encoded `%34`, a character reference, any Unicode decimal digit (fullwidth,
//! Arabic-Indic, ...) or digit-valued form. A separator is a space or a dash (ASCII or Unicode),
//! optionally with invisible format characters (zero width space, soft hyphen, ...) and, in an
//! HTML body, markup tags around it. The CVV of the charge's temporary token is masked too where
//! it stands alone.

use std::borrow::Cow;

use zeroize::Zeroizing;

use crate::pan::{Brand, luhn_valid};

mod units;

use units::{Class, Reading, Unit};

/// The most separator units read as one gap between two digit groups (tags and invisible
/// characters, at most one of them visible).
const MAX_GAP: usize = 8;
/// The most separator units between two digits of a known PAN.
const MAX_KNOWN_GAP: usize = 3;

/// `body` with every card number masked; borrowed when there was none.
///
/// Passes repeat until one finds nothing: masking a known PAN inside a longer run can leave
/// the digits before it and its first six as a new card-shaped run, which the next pass masks
/// (so the result never [`holds_pan`]). Each pass only turns digits into `*`, so this ends.
pub fn mask_pans<'a>(body: &'a [u8], known: &[&str]) -> Cow<'a, [u8]> {
    mask_answer(body, known, &[], false)
}

/// [`mask_pans`] for a gateway's answer: also masks each of `cvvs` (the CVV of a temporary
/// token this charge used) where it stands alone, and with `html` reads markup tags between
/// digits as separators (as does a body that looks like HTML).
pub fn mask_answer<'a>(body: &'a [u8], known: &[&str], cvvs: &[&str], html: bool) -> Cow<'a, [u8]> {
    if !units::may_hold_digits(body) {
        return Cow::Borrowed(body);
    }
    let decoded = if html || units::looks_like_html(body) {
        Reading::Html
    } else {
        Reading::Text
    };
    // With escapes in the body, the bytes are masked as read byte by byte too (`%378282...`
    // holds a card for a reader that does not decode it); the readings alternate until neither
    // finds anything. Each pass turns digits into `*`: a decoded pass lowers the decoded digits
    // without adding ASCII ones, a byte pass lowers the ASCII digits, so this ends.
    let readings: &[Reading] = if units::may_hide_digits(body) {
        &[decoded, Reading::Bytes]
    } else {
        &[decoded]
    };
    let mut out = Cow::Borrowed(body);
    loop {
        let mut changed = false;
        for &reading in readings {
            while let Cow::Owned(next) = mask_pass(&out, known, cvvs, reading) {
                changed = true;
                if let Cow::Owned(mut old) = std::mem::replace(&mut out, Cow::Owned(next)) {
                    zeroize::Zeroize::zeroize(&mut old);
                }
            }
        }
        if !changed || readings.len() == 1 {
            return out;
        }
    }
}

fn is_sep(u: &Unit) -> bool {
    matches!(u.class, Class::Sep { .. })
}

/// The end of the gap of separators at `j` when a digit follows it within the rules (at most
/// [`MAX_GAP`] units, at most one visible): the index of that digit.
fn gap_end(units: &[Unit], j: usize) -> Option<usize> {
    let mut visible = 0;
    let mut k = j;
    while k < units.len() && k - j < MAX_GAP {
        match units[k].class {
            Class::Sep { visible: v } => visible += usize::from(v),
            Class::Digit(_) => break,
            _ => return None,
        }
        k += 1;
    }
    (k > j && visible <= 1 && units.get(k).is_some_and(|u| u.digit().is_some())).then_some(k)
}

fn is_card(d: &str) -> bool {
    (13..=19).contains(&d.len()) && luhn_valid(d) && Brand::detect(d) != Brand::Unknown
}

fn mask_pass<'a>(body: &'a [u8], known: &[&str], cvvs: &[&str], reading: Reading) -> Cow<'a, [u8]> {
    let units = units::read(body, reading);
    // Indexes of the digit units to mask.
    let mut hide: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        if units[i].digit().is_none() {
            i += 1;
            continue;
        }
        // A run: digits, with one gap of separators between digits.
        let mut positions: Vec<usize> = Vec::with_capacity(19);
        let mut j = i;
        while j < units.len() {
            if units[j].digit().is_some() {
                positions.push(j);
                j += 1;
            } else if let Some(k) = is_sep(&units[j]).then(|| gap_end(&units, j)).flatten() {
                j = k;
            } else {
                break;
            }
        }
        i = j;
        let mut digits = Zeroizing::new(String::with_capacity(positions.len()));
        digits.extend(
            positions
                .iter()
                .filter_map(|&p| units[p].digit())
                .map(|d| char::from(b'0' + d)),
        );
        if known.iter().any(|k| !k.is_empty() && *k == digits.as_str()) || is_card(&digits) {
            hide.extend_from_slice(
                positions
                    .get(6..positions.len().saturating_sub(4))
                    .unwrap_or_default(),
            );
            continue;
        }
        // A known PAN inside a longer digit run (glued to other digits).
        for k in known
            .iter()
            .filter(|k| k.len() >= 12 && k.len() < digits.len())
        {
            let mut from = 0;
            while let Some(at) = digits.get(from..).and_then(|d| d.find(*k)) {
                let s = from + at;
                hide.extend_from_slice(positions.get(s + 6..s + k.len() - 4).unwrap_or_default());
                from = s + k.len();
            }
        }
        // Any card among the run's groups: a single space or dash joins two card numbers
        // ("378282246310005 5555555555554444") or a card and other digits ("... 1230") into
        // one run too long to be a card itself.
        let mut groups = vec![0];
        groups.extend((1..positions.len()).filter(|&k| positions[k] != positions[k - 1] + 1));
        groups.push(positions.len());
        for (a, &s) in groups.iter().enumerate() {
            for &e in &groups[a + 1..] {
                if e - s > 19 {
                    break;
                }
                if is_card(&digits[s..e]) {
                    hide.extend_from_slice(&positions[s + 6..e - 4]);
                }
            }
        }
        // The temporary token's CVV, where a group of the run is exactly it.
        for w in groups.windows(2) {
            let (s, e) = (w[0], w[1]);
            let d = &digits[s..e];
            if cvvs.iter().any(|c| !c.is_empty() && *c == d)
                && !part_of_a_number(body, &units, positions[s], positions[e - 1])
            {
                hide.extend_from_slice(&positions[s..e]);
            }
        }
    }
    // The PANs this request sent, also when the gateway wrote them with other separators
    // (`4111.1111.1111.1111`, two spaces, a line break, `/`): up to 3 separators or
    // punctuation characters between digits.
    for k in known.iter().filter(|k| k.len() >= 12) {
        for positions in loose_matches(&units, k.as_bytes()) {
            hide.extend_from_slice(positions.get(6..positions.len() - 4).unwrap_or_default());
        }
    }
    if hide.is_empty() {
        return Cow::Borrowed(body);
    }
    hide.sort_unstable();
    hide.dedup();
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for &u in &hide {
        let unit = &units[u];
        out.extend_from_slice(&body[at..unit.start]);
        out.extend_from_slice(&unit.enc.star(&body[unit.start..unit.end]));
        at = unit.end;
    }
    out.extend_from_slice(&body[at..]);
    Cow::Owned(out)
}

/// Whether the digit units `first..=last` are part of a number rather than a value of their
/// own: a decimal (`12.34`, `1,234`) or a bare JSON number (`"amount":123`), which masking would
/// turn into invalid JSON. A CVV is never sent as either.
fn part_of_a_number(body: &[u8], units: &[Unit], first: usize, last: usize) -> bool {
    let decimal_mark =
        |u: Option<&Unit>| matches!(u.map(|u| u.class), Some(Class::Punct(b'.' | b',')));
    let digit = |u: Option<&Unit>| u.is_some_and(|u| u.digit().is_some());
    if (decimal_mark(first.checked_sub(1).and_then(|p| units.get(p)))
        && digit(first.checked_sub(2).and_then(|p| units.get(p))))
        || (decimal_mark(units.get(last + 1)) && digit(units.get(last + 2)))
    {
        return true;
    }
    let before = body[..units[first].start]
        .iter()
        .rev()
        .copied()
        .filter(|b| !b.is_ascii_whitespace());
    let mut before = before.take(2);
    let after = body[units[last].end..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace());
    before.next() == Some(b':')
        && before.next() == Some(b'"')
        && matches!(after, None | Some(b',' | b'}' | b']'))
}

/// Every place `pan` occurs among `units` with up to [`MAX_KNOWN_GAP`] separator or punctuation
/// units between its digits: the units of its digits.
fn loose_matches(units: &[Unit], pan: &[u8]) -> Vec<Vec<usize>> {
    let want = |n: usize| pan.get(n).map(|b| b - b'0');
    let mut hits = Vec::new();
    for start in 0..units.len() {
        if units[start].digit() != want(0)
            || start
                .checked_sub(1)
                .is_some_and(|p| units[p].digit().is_some())
        {
            continue;
        }
        let mut positions = vec![start];
        let mut j = start + 1;
        while positions.len() < pan.len() {
            let mut gap = 0;
            while j < units.len()
                && gap <= MAX_KNOWN_GAP
                && matches!(units[j].class, Class::Sep { .. } | Class::Punct(_))
            {
                j += 1;
                gap += 1;
            }
            if gap > MAX_KNOWN_GAP || j >= units.len() || units[j].digit() != want(positions.len())
            {
                break;
            }
            positions.push(j);
            j += 1;
        }
        if positions.len() == pan.len() && units.get(j).is_none_or(|u| u.digit().is_none()) {
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

/// Whether an answer is in a form the masker cannot read at all: compressed without saying so
/// (gzip, zlib or zstd magic bytes at the start), or UTF-16/UTF-32 (a byte-order mark, or that
/// charset in `content_type`), where a digit is not one byte; or digits written as character
/// references ([`opaque_digits`]). The proxy refuses to pass such an answer on.
pub fn unreadable(body: &[u8], content_type: Option<&[u8]>) -> bool {
    let compressed = body.starts_with(&[0x1f, 0x8b])
        || body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (body.len() >= 2
            && body[0] == 0x78
            && matches!(body[1], 0x01 | 0x9c | 0xda)
            && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0);
    let wide_bom = [&[0xff, 0xfe][..], &[0xfe, 0xff], &[0, 0, 0xfe, 0xff]]
        .iter()
        .any(|bom| body.starts_with(bom));
    let wide_charset = content_type.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        [
            &b"utf-16"[..],
            b"utf-32",
            b"ucs-2",
            b"ucs-4",
            b"utf16",
            b"utf32",
        ]
        .iter()
        .any(|c| t.windows(c.len()).any(|w| w == *c))
    });
    compressed || wide_bom || wide_charset || opaque_digits(body)
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

    /// Issue 14 item 5: encodings a gateway or a WAF page may use for the digits.
    #[test]
    fn json_escaped_digits_are_masked_in_their_encoding() {
        let esc = |s: &str| {
            s.chars()
                .map(|c| format!("\\u{:04x}", u32::from(c)))
                .collect::<String>()
        };
        let body = format!(r#"{{"number":"{}"}}"#, esc("4111111111111111"));
        let want = format!(
            r#"{{"number":"{}{}{}"}}"#,
            esc("411111"),
            "\\u002a".repeat(6),
            esc("1111")
        );
        assert_eq!(m(&body, &[]), want);
        // Escaped and plain mixed, an escaped space between groups.
        assert_eq!(
            m(r"5555\u0035555\u00205555\u0034444", &[]),
            r"5555\u00355**\u0020****\u0034444"
        );
    }

    #[test]
    fn percent_encoded_digits_are_masked_in_their_encoding() {
        let pct: String = "378282246310005"
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let want = format!("{}{}{}", &pct[..18], "%2A".repeat(5), &pct[33..]);
        assert_eq!(
            m(&format!("card={pct}&x=1"), &[]),
            format!("card={want}&x=1")
        );
        // Percent-encoded NBSP (UTF-8) between groups.
        assert_eq!(
            m("4111%C2%A01111%C2%A01111%C2%A01111", &[]),
            "4111%C2%A011**%C2%A0****%C2%A01111"
        );
    }

    #[test]
    fn a_card_is_masked_for_readers_that_decode_escapes_and_for_those_that_do_not() {
        // `%37` decodes to `7`: a decoding reader sees 14 digits here, a byte reader the card
        // (found by the stable fuzz run, seed 0x5eed).
        let amex = "378282246310005";
        assert_eq!(m("x=%378282246310005%", &[amex]), "x=%378282*****0005%");
        assert_eq!(m("x=%378282246310005%", &[]), "x=%378282*****0005%");
        // `&#52;` is a `4` for one reader, `52` for the other.
        assert_eq!(
            m("&#52;111111111111111;", &["4111111111111111"]),
            "&#52;11111******1111;"
        );
    }

    #[test]
    fn unicode_digits_of_any_script_are_masked() {
        let in_script = |zero: u32, s: &str| -> String {
            s.chars()
                .map(|c| match c.to_digit(10) {
                    Some(d) => char::from_u32(zero + d).unwrap(),
                    None => c,
                })
                .collect()
        };
        for zero in [0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE] {
            let card = in_script(zero, "4111111111111111");
            let masked = format!(
                "{}******{}",
                in_script(zero, "411111"),
                in_script(zero, "1111")
            );
            assert_eq!(
                m(&format!("n {card} x"), &[]),
                format!("n {masked} x"),
                "{zero:x}"
            );
        }
        // Mixed with ASCII digits.
        assert_eq!(m("5555\u{FF15}55555554444", &[]), "5555\u{FF15}5******4444");
    }

    #[test]
    fn unicode_spaces_and_format_characters_separate_groups() {
        for sep in [
            "\u{a0}", "\u{2009}", "\u{202f}", "\u{3000}", "\u{2013}", "&nbsp;",
        ] {
            let s = ["4111", "1111", "1111", "1111"].join(sep);
            let want = ["4111", "11**", "****", "1111"].join(sep);
            assert_eq!(m(&s, &[]), want, "{sep:?}");
        }
        // Invisible characters between every digit, with or without a space too.
        let zw: String = "4111111111111111"
            .chars()
            .flat_map(|c| [c, '\u{200b}'])
            .collect();
        let want: String = "411111******1111"
            .chars()
            .flat_map(|c| [c, '\u{200b}'])
            .collect();
        assert_eq!(m(&zw, &[]), want);
        assert_eq!(
            m("4111\u{ad} 1111\u{feff}1111\u{2060}1111", &[]),
            "4111\u{ad} 11**\u{feff}****\u{2060}1111"
        );
        // Two visible separators between groups: not one card.
        assert_eq!(
            m("4111 \u{a0}1111 \u{a0}1111 \u{a0}1111", &[]),
            "4111 \u{a0}1111 \u{a0}1111 \u{a0}1111"
        );
    }

    #[test]
    fn digits_split_by_markup_in_html_are_masked() {
        let page = "<!DOCTYPE html><html><body><p>Card <b>4111</b><i>1111</i> <span class=\"x\">1111</span>-<!-- c -->1111</p></body></html>";
        assert_eq!(
            m(page, &[]),
            "<!DOCTYPE html><html><body><p>Card <b>4111</b><i>11**</i> <span class=\"x\">****</span>-<!-- c -->1111</p></body></html>"
        );
        // In XML, elements are fields: digits of two elements are not one number.
        let xml = "<a>4111</a><b>111111111111</b>";
        assert_eq!(m(xml, &[]), xml);
        assert_eq!(
            mask_answer(xml.as_bytes(), &[], &[], true).as_ref(),
            b"<a>4111</a><b>11******1111</b>"
        );
    }

    #[test]
    fn character_references_for_digits_are_masked_keeping_their_length() {
        assert_eq!(
            m("<n>4111&#49;111111&#x31;1111</n>", &[]),
            "<n>4111&#49;1*****&#x2a;1111</n>"
        );
        assert_eq!(m("41111111&#00049;1111111", &[]), "411111**&#00042;***1111");
    }

    #[test]
    fn a_temporary_tokens_cvv_is_masked_where_it_stands_alone() {
        let body = r#"{"cvv":"123","amount":"123.45","n":123,"id":"A1234","msg":"CVV 123 refused","c":"\u0031\u0032\u0033"}"#;
        let out = mask_answer(body.as_bytes(), &[], &["123"], false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"cvv":"***","amount":"123.45","n":123,"id":"A1234","msg":"CVV *** refused","c":"\u002a\u002a\u002a"}"#
        );
        // No CVV given: nothing.
        assert!(matches!(
            mask_answer(body.as_bytes(), &[], &[], false),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_body_without_digits_is_not_copied() {
        let body = br#"{"status":"ok","message":"approved"}"#;
        assert!(matches!(
            mask_answer(body, &["4111111111111111"], &["123"], true),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn compressed_or_wide_answers_are_unreadable() {
        assert!(unreadable(&[0x1f, 0x8b, 8, 0], None));
        assert!(unreadable(&[0x78, 0x9c, 0xcb, 0x48], None));
        assert!(unreadable(&[0x28, 0xb5, 0x2f, 0xfd, 0], None));
        let utf16: Vec<u8> = "\u{feff}4111"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(unreadable(&utf16, None));
        assert!(unreadable(
            b"4\x001\x00",
            Some(b"application/json; charset=UTF-16LE")
        ));
        assert!(unreadable(b"<n>&#52;</n>", None));
        for fine in [&b"x^ is text"[..], b"{\"a\":1}", b"xyz"] {
            assert!(!unreadable(fine, Some(b"application/json; charset=utf-8")));
        }
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
