//! The masker's reading of a body: what each piece of it stands for once decoded (a digit, a
//! separator, punctuation or anything else) and how it was written, so that a digit can be
//! masked in its own encoding. Decoded: JSON `\uXXXX` escapes (surrogate pairs too),
//! percent-encoding (UTF-8 sequences too), HTML/XML character references and a few named
//! entities, UTF-8. Every Unicode decimal digit (and the digit-valued forms: superscripts,
//! circled digits, ...) is a digit; Unicode spaces, dashes and format characters (NBSP, zero
//! width space, soft hyphen, ...) are separators, and so are markup tags in an HTML body.
//!
//! One pass over the body, each step bounded: linear in its length.

/// What a piece of the body stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// A decimal digit and its value.
    Digit(u8),
    /// A separator between digit groups; `visible` false for format characters and tags.
    Sep {
        /// A space or a dash, as opposed to an invisible format character or a tag.
        visible: bool,
    },
    /// One ASCII character that is neither a letter, a digit nor a separator (punctuation,
    /// control characters such as a line break).
    Punct(u8),
    /// Anything else (runs of it are one unit).
    Other,
}

/// How a piece was written: its masked form is `*` in the same encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Enc {
    /// As is (ASCII or UTF-8).
    Plain,
    /// A JSON `\uXXXX` escape (or a surrogate pair of them).
    JsonEscape,
    /// Percent-encoded.
    Percent,
    /// A character reference or entity.
    Entity,
}

impl Enc {
    /// `*` written the way `original` (a digit) was: an escape, a percent-encoding or a
    /// character reference keep their form and length (`&#52;` becomes `&#42;`, `&#x0034;`
    /// becomes `&#x002a;`).
    pub(super) fn star(self, original: &[u8]) -> Vec<u8> {
        match self {
            Enc::Plain => b"*".to_vec(),
            Enc::JsonEscape => b"\\u002a".to_vec(),
            Enc::Percent => b"%2A".to_vec(),
            Enc::Entity => {
                let hex = matches!(original.get(2), Some(b'x' | b'X'));
                let head = if hex { 3 } else { 2 };
                let width = original.len().saturating_sub(head + 1);
                let star = if hex {
                    format!("&#x{:0width$x};", 0x2a)
                } else {
                    format!("&#{:0width$};", 42)
                };
                star.into_bytes()
            }
        }
    }
}

/// One piece of the body: `body[start..end]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) class: Class,
    pub(super) enc: Enc,
}

impl Unit {
    pub(super) fn digit(&self) -> Option<u8> {
        match self.class {
            Class::Digit(d) => Some(d),
            _ => None,
        }
    }
}

/// The longest tag read as a separator (bytes, `<` to `>`).
const MAX_TAG: usize = 512;

/// How a body is read into units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// Escapes, percent-encodings, references and UTF-8 characters decoded.
    Text,
    /// As [`Reading::Text`], and markup tags are separators.
    Html,
    /// Byte by byte, nothing decoded: what a reader that ignores the encodings sees (the
    /// ASCII digits inside `%37`, `\u0034` or `&#52;`, which the other readings decode).
    Bytes,
}

/// `body` read as units; consecutive [`Class::Other`] pieces are merged into one.
pub(super) fn read(body: &[u8], reading: Reading) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::with_capacity(body.len() / 4);
    let mut i = 0;
    while i < body.len() {
        // The common case first: a run of ASCII letters is one `Other`.
        if body[i].is_ascii_alphabetic() {
            let run = body[i..]
                .iter()
                .position(|b| !b.is_ascii_alphabetic())
                .unwrap_or(body.len() - i);
            let end = i + run;
            match units.last_mut() {
                Some(last) if last.class == Class::Other => last.end = end,
                _ => units.push(Unit {
                    start: i,
                    end,
                    class: Class::Other,
                    enc: Enc::Plain,
                }),
            }
            i = end;
            continue;
        }
        let (class, enc, len) = match reading {
            Reading::Text => unit_at(body, i, false),
            Reading::Html => unit_at(body, i, true),
            Reading::Bytes if body[i].is_ascii() => (ascii_class(body[i]), Enc::Plain, 1),
            Reading::Bytes => (Class::Other, Enc::Plain, 1),
        };
        let end = i + len.max(1);
        match units.last_mut() {
            Some(last) if class == Class::Other && last.class == Class::Other => last.end = end,
            _ => units.push(Unit {
                start: i,
                end,
                class,
                enc,
            }),
        }
        i = end;
    }
    units
}

/// Whether the body holds an escape, a percent-encoding or a reference, whose own ASCII digits
/// a byte-by-byte reader would see (then [`Reading::Bytes`] is masked too).
pub(super) fn may_hide_digits(body: &[u8]) -> bool {
    body.iter().any(|b| matches!(b, b'%' | b'\\' | b'&'))
}

/// Whether the body may hold a digit in any form the reader knows: an ASCII digit (also inside
/// an escape, a percent-encoding or a reference) or a non-ASCII byte. Bodies without one are
/// passed on without being read.
pub(super) fn may_hold_digits(body: &[u8]) -> bool {
    body.iter().any(|&b| b.is_ascii_digit() || b >= 0x80)
}

/// Whether a body is HTML (tags then separate digits): it holds a doctype or an `html`, `body`
/// or `div` tag (any case). Looked for in the whole body, so that masking (which never touches
/// a tag) does not change the answer.
pub(super) fn looks_like_html(body: &[u8]) -> bool {
    const TAGS: [&[u8]; 4] = [b"!doctype html", b"html", b"body", b"div"];
    body.iter().enumerate().any(|(i, &b)| {
        b == b'<'
            && TAGS.iter().any(|t| {
                body.get(i + 1..i + 1 + t.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(t))
            })
    })
}

fn hex(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// The piece of `body` at `i`: its class, encoding and length in bytes.
fn unit_at(body: &[u8], i: usize, html: bool) -> (Class, Enc, usize) {
    let b = body[i];
    match b {
        b'0'..=b'9' => (Class::Digit(b - b'0'), Enc::Plain, 1),
        b'\\' => json_escape(body, i).unwrap_or((Class::Punct(b), Enc::Plain, 1)),
        b'%' => percent(body, i).unwrap_or((Class::Punct(b), Enc::Plain, 1)),
        b'&' => entity(body, i).unwrap_or((Class::Punct(b), Enc::Plain, 1)),
        b'<' if html => tag(body, i).unwrap_or((Class::Punct(b), Enc::Plain, 1)),
        0x80.. => {
            let len = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return (Class::Other, Enc::Plain, 1),
            };
            match body
                .get(i..i + len)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.chars().next())
            {
                Some(c) => (classify(c), Enc::Plain, len),
                None => (Class::Other, Enc::Plain, 1),
            }
        }
        _ => (ascii_class(b), Enc::Plain, 1),
    }
}

/// What one ASCII byte stands for.
#[inline]
fn ascii_class(b: u8) -> Class {
    match b {
        b'0'..=b'9' => Class::Digit(b - b'0'),
        b' ' | b'-' => Class::Sep { visible: true },
        _ if b.is_ascii_alphabetic() => Class::Other,
        _ => Class::Punct(b),
    }
}

/// `\uXXXX`, or a surrogate pair `\uD8XX\uDCXX`.
fn json_escape(body: &[u8], i: usize) -> Option<(Class, Enc, usize)> {
    let code = |at: usize| -> Option<u32> {
        if body.get(at + 1) != Some(&b'u') {
            return None;
        }
        hex(body.get(at + 2..at + 6)?)
    };
    let hi = code(i)?;
    let (cp, len) = if (0xD800..0xDC00).contains(&hi) {
        match code(i + 6).filter(|lo| (0xDC00..0xE000).contains(lo)) {
            Some(lo) if body.get(i + 6) == Some(&b'\\') => {
                (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
            }
            _ => return None,
        }
    } else {
        (hi, 6)
    };
    let c = char::from_u32(cp)?;
    Some((classify(c), Enc::JsonEscape, len))
}

/// `%XX`, or the `%XX` bytes of one UTF-8 character.
fn percent(body: &[u8], i: usize) -> Option<(Class, Enc, usize)> {
    let byte = |k: usize| -> Option<u8> {
        let at = i + 3 * k;
        if body.get(at) != Some(&b'%') {
            return None;
        }
        hex(body.get(at + 1..at + 3)?).and_then(|v| u8::try_from(v).ok())
    };
    let first = byte(0)?;
    let n = match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let mut bytes = [first, 0, 0, 0];
    for (k, slot) in bytes.iter_mut().enumerate().take(n).skip(1) {
        *slot = byte(k)?;
    }
    let c = std::str::from_utf8(&bytes[..n]).ok()?.chars().next()?;
    Some((classify(c), Enc::Percent, 3 * n))
}

/// `&#NN;`, `&#xHH;` or a named entity of a space, dash or format character.
fn entity(body: &[u8], i: usize) -> Option<(Class, Enc, usize)> {
    let rest = body.get(i + 1..body.len().min(i + 12))?;
    let end = rest.iter().position(|&b| b == b';')?;
    let name = &rest[..end];
    let len = end + 2;
    let c = match name {
        [b'#', b'x' | b'X', h @ ..] => char::from_u32(hex(h)?)?,
        [b'#', d @ ..] => {
            let s = std::str::from_utf8(d).ok()?;
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            char::from_u32(s.parse().ok()?)?
        }
        b"nbsp" | b"ensp" | b"emsp" | b"thinsp" | b"numsp" | b"puncsp" | b"MediumSpace" => '\u{a0}',
        b"zwnj" | b"zwj" | b"shy" | b"ZeroWidthSpace" | b"NoBreak" | b"lrm" | b"rlm" => '\u{200b}',
        b"ndash" | b"mdash" | b"hyphen" | b"dash" | b"minus" => '\u{2010}',
        _ => return None,
    };
    Some((classify(c), Enc::Entity, len))
}

/// `<...>` (a tag, comment or declaration) up to [`MAX_TAG`] bytes, no `<` inside.
fn tag(body: &[u8], i: usize) -> Option<(Class, Enc, usize)> {
    let next = *body.get(i + 1)?;
    if !(next.is_ascii_alphabetic() || matches!(next, b'/' | b'!' | b'?')) {
        return None;
    }
    let window = &body[i + 1..body.len().min(i + MAX_TAG)];
    let end = window.iter().position(|&b| b == b'>' || b == b'<')?;
    (window[end] == b'>').then_some((Class::Sep { visible: false }, Enc::Plain, end + 2))
}

/// What one character stands for.
pub(super) fn classify(c: char) -> Class {
    if let Ok(b) = u8::try_from(u32::from(c))
        && b.is_ascii()
    {
        return ascii_class(b);
    }
    if let Some(d) = digit_value(c) {
        return Class::Digit(d);
    }
    let cp = u32::from(c);
    match SEPARATORS
        .iter()
        .find(|&&(lo, hi, _)| (lo..=hi).contains(&cp))
    {
        Some(&(_, _, visible)) => Class::Sep { visible },
        None => Class::Other,
    }
}

/// The value of a non-ASCII digit: a decimal digit (`Nd`), a digit-valued form (superscript,
/// subscript, circled, ...), or another numeric character of a newer Unicode block than these
/// tables (its value counted from the start of its run of numeric characters).
fn digit_value(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if let Some(z) = DECIMAL_ZEROS.iter().find(|&&z| (z..z + 10).contains(&cp)) {
        return u8::try_from(cp - z).ok();
    }
    if let Some(&(lo, _, first)) = DIGIT_FORMS
        .iter()
        .find(|&&(lo, hi, _)| (lo..=hi).contains(&cp))
    {
        return u8::try_from(first + (cp - lo)).ok();
    }
    if !c.is_numeric() {
        return None;
    }
    let mut v = 0;
    while v < 9 && char::from_u32(cp - v - 1).is_some_and(|p| p.is_numeric()) {
        v += 1;
    }
    u8::try_from(v).ok()
}

/// The zero of each run of ten Unicode decimal digits (`Nd`) outside ASCII (Unicode 14).
const DECIMAL_ZEROS: [u32; 65] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// Digit-valued characters that are no decimal digits: `(first, last, value of first)`, values
/// rising by one.
const DIGIT_FORMS: [(u32, u32, u32); 21] = [
    (0xB2, 0xB3, 2),
    (0xB9, 0xB9, 1),
    (0x1369, 0x1371, 1),
    (0x19DA, 0x19DA, 1),
    (0x2070, 0x2070, 0),
    (0x2074, 0x2079, 4),
    (0x2080, 0x2089, 0),
    (0x2460, 0x2468, 1),
    (0x2474, 0x247C, 1),
    (0x2488, 0x2490, 1),
    (0x24EA, 0x24EA, 0),
    (0x24F5, 0x24FD, 1),
    (0x24FF, 0x24FF, 0),
    (0x2776, 0x277E, 1),
    (0x2780, 0x2788, 1),
    (0x278A, 0x2792, 1),
    (0x10A40, 0x10A43, 1),
    (0x10E60, 0x10E68, 1),
    (0x11052, 0x1105A, 1),
    (0x1F100, 0x1F100, 0),
    (0x1F101, 0x1F10A, 0),
];

/// Non-ASCII separators: Unicode spaces (`Zs`, `Zl`, `Zp`) and dashes (`Pd`, visible) and
/// format characters (`Cf`, invisible), plus the minus sign. `(first, last, visible)`.
const SEPARATORS: [(u32, u32, bool); 47] = [
    (0xA0, 0xA0, true),
    (0xAD, 0xAD, false),
    (0x58A, 0x58A, true),
    (0x5BE, 0x5BE, true),
    (0x600, 0x605, false),
    (0x61C, 0x61C, false),
    (0x6DD, 0x6DD, false),
    (0x70F, 0x70F, false),
    (0x890, 0x891, false),
    (0x8E2, 0x8E2, false),
    (0x1400, 0x1400, true),
    (0x1680, 0x1680, true),
    (0x1806, 0x1806, true),
    (0x180E, 0x180E, false),
    (0x2000, 0x200A, true),
    (0x200B, 0x200F, false),
    (0x2010, 0x2015, true),
    (0x2028, 0x2029, true),
    (0x202A, 0x202E, false),
    (0x202F, 0x202F, true),
    (0x205F, 0x205F, true),
    (0x2060, 0x2064, false),
    (0x2066, 0x206F, false),
    (0x2212, 0x2212, true),
    (0x2E17, 0x2E17, true),
    (0x2E1A, 0x2E1A, true),
    (0x2E3A, 0x2E3B, true),
    (0x2E40, 0x2E40, true),
    (0x2E5D, 0x2E5D, true),
    (0x3000, 0x3000, true),
    (0x301C, 0x301C, true),
    (0x3030, 0x3030, true),
    (0x30A0, 0x30A0, true),
    (0xFE31, 0xFE32, true),
    (0xFE58, 0xFE58, true),
    (0xFE63, 0xFE63, true),
    (0xFEFF, 0xFEFF, false),
    (0xFF0D, 0xFF0D, true),
    (0xFFF9, 0xFFFB, false),
    (0x10EAD, 0x10EAD, true),
    (0x110BD, 0x110BD, false),
    (0x110CD, 0x110CD, false),
    (0x13430, 0x13438, false),
    (0x1BCA0, 0x1BCA3, false),
    (0x1D173, 0x1D17A, false),
    (0xE0001, 0xE0001, false),
    (0xE0020, 0xE007F, false),
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn classes(s: &str, html: bool) -> Vec<Class> {
        let reading = if html { Reading::Html } else { Reading::Text };
        read(s.as_bytes(), reading)
            .iter()
            .map(|u| u.class)
            .collect()
    }

    #[test]
    fn digits_in_every_form_read_as_their_value() {
        for s in [
            "7",
            "\\u0037",
            "%37",
            "&#55;",
            "&#x37;",
            "\u{FF17}",
            "\u{667}",
            "\u{96D}",
            "\u{2077}",
            "\u{1D7D5}",
            "\\ud835\\udfd5",
        ] {
            assert_eq!(classes(s, false), [Class::Digit(7)], "{s:?}");
        }
        // Every Unicode decimal digit Rust knows has a value.
        for c in (0x80..0x11_0000).filter_map(char::from_u32) {
            if c.is_numeric() && c.to_string().parse::<f64>().is_err() {
                assert!(digit_value(c).is_some_and(|v| v <= 9), "{c:?}");
            }
        }
    }

    #[test]
    fn separators_and_tags() {
        for s in [
            "\u{a0}", "\u{2007}", "&nbsp;", "%C2%A0", "\\u00a0", "\u{2013}", "-", " ",
        ] {
            assert_eq!(classes(s, false), [Class::Sep { visible: true }], "{s:?}");
        }
        for s in [
            "\u{200b}",
            "\u{ad}",
            "\u{feff}",
            "&zwj;",
            "%E2%80%8B",
            "\\u200B",
        ] {
            assert_eq!(classes(s, false), [Class::Sep { visible: false }], "{s:?}");
        }
        assert_eq!(
            classes("1<b class=\"x\">2", true),
            [
                Class::Digit(1),
                Class::Sep { visible: false },
                Class::Digit(2)
            ]
        );
        // Not HTML: a tag is punctuation and text.
        assert_eq!(
            classes("<b>", false),
            [Class::Punct(b'<'), Class::Other, Class::Punct(b'>')]
        );
        assert_eq!(classes("a < b", true)[1], Class::Sep { visible: true });
    }
}
