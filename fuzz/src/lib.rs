//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`,
//! nightly + libFuzzer) and by the stable runner (`tests/fuzz_stable.rs`, which includes this
//! file with `#[path]`). Each takes arbitrary bytes, must never panic, and asserts the
//! invariants the vault relies on. Only published test PANs appear here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use panvault::audit::{Chain, Entry, Event};
use panvault::gateway::mask::{holds_pan, mask_pans, opaque_digits};
use panvault::gateway::{CardData, Slot, axerve, mpgs, nexi, worldline};
use panvault::pan::{Brand, Cvv, Pan, luhn_valid};
use panvault::token::{self, MerchantPrefix, TokenRequest};

/// The published test PANs the targets and their invariants use.
pub const PANS: [&str; 4] = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "4012888888881881",
];

/// The targets by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
/// A target: its name and body.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: [Target; 7] = [
    ("pan_parse", pan_parse),
    ("custom_token", custom_token),
    ("gateway_rewrite_json", gateway_rewrite_json),
    ("axerve_rewrite_xml", axerve_rewrite_xml),
    ("mask", mask),
    ("audit_decode", audit_decode),
    ("audit_export_line", audit_export_line),
];

/// An independent Luhn check, to hold `pan::luhn_valid` to.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether `s` has `n` or more ASCII digits in a row, `skip` bytes not breaking the run.
fn digit_run(s: &[u8], n: usize, skip: &[u8]) -> bool {
    let mut run = 0;
    for b in s {
        if b.is_ascii_digit() {
            run += 1;
            if run >= n {
                return true;
            }
        } else if !skip.contains(b) {
            run = 0;
        }
    }
    false
}

/// `Pan::parse`: whatever it accepts is 12-19 digits that pass Luhn (checked independently),
/// exactly the input's digits; its masked, Display and Debug forms never show the whole number.
pub fn pan_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(luhn_valid(&digits), luhn(&digits), "luhn_valid disagrees");
    match Pan::parse(s) {
        Ok(p) => {
            assert!((12..=19).contains(&p.len()));
            assert!(luhn(p.digits()), "a non-Luhn PAN was accepted");
            assert_eq!(p.digits(), digits);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-'),
                "a PAN with a character other than digits, space, dash was accepted"
            );
            for shown in [p.masked(), format!("{p}"), format!("{p:?}")] {
                assert!(
                    !shown.contains(p.digits()),
                    "a PAN form shows the whole number"
                );
            }
            assert_eq!(p.last4(), &digits[digits.len() - 4..]);
            let _ = (p.bin(), p.first2(), p.brand(), Brand::detect(p.digits()));
        }
        Err(_) => {
            if (12..=19).contains(&digits.len()) && luhn(&digits) && s.len() == digits.len() {
                panic!("a bare Luhn-valid 12-19 digit number was refused");
            }
        }
    }
    if let Ok(c) = Cvv::parse(s) {
        assert!(!format!("{c:?}").contains(c.digits()) || c.digits().is_empty());
    }
}

/// Custom tokens: an accepted value is 1-21 token characters, never 12 digits in a row (with
/// `_`/`-` ignored), and the token made from it is well formed; `is_well_formed_token` never
/// passes a 12-digit run outside a temporary token.
pub fn custom_token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let prefix = MerchantPrefix::parse("XYZW").unwrap();
    if token::validate_custom_value(s).is_ok() {
        assert!((1..=21).contains(&s.len()));
        assert!(
            !digit_run(s.as_bytes(), 12, b"_-"),
            "a card number hides in {s:?}"
        );
        assert_ne!(s, "MASKEDPAN");
        let t = token::custom_token(&prefix, s);
        assert!(
            token::is_well_formed_token(&t),
            "custom token {t:?} is not well formed"
        );
    }
    if token::is_well_formed_token(s) && !s.starts_with("tmp_") {
        assert!(
            !digit_run(s.as_bytes(), 12, b"_-"),
            "{s:?} passed as a token"
        );
        assert!(s.len() <= 25);
    }
    let _ = TokenRequest::parse(Some(s));
    let _ = MerchantPrefix::parse(s);
}

fn card(i: usize) -> CardData<'static> {
    CardData {
        pan: PANS[i % PANS.len()],
        month: 12,
        year: 2030,
        cvv: Some("123"),
    }
}

/// The JSON gateways' card swap (Nexi, MPGS, Worldline, Axerve REST): never panics; a swapped
/// body is still JSON and carries the card where it was put, and is found there again.
pub fn gateway_rewrite_json(data: &[u8]) {
    let card = card(data.len());
    type Find =
        fn(&[u8]) -> Result<Option<panvault::gateway::Found>, panvault::gateway::GatewayError>;
    type Swap = fn(
        &[u8],
        Slot,
        &CardData<'_>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, panvault::gateway::GatewayError>;
    type Expiry = fn(&[u8]) -> Option<(u8, u16)>;
    let gateways: [(Find, Swap, Expiry); 4] = [
        (nexi::find_card, nexi::swap, nexi::find_expiry),
        (mpgs::find_card, mpgs::swap, mpgs::find_expiry),
        (
            worldline::find_card,
            worldline::swap,
            worldline::find_expiry,
        ),
        (axerve::find_card, axerve::swap, axerve::find_expiry),
    ];
    let was_json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    for (find, swap, expiry) in gateways {
        let _ = expiry(data);
        // Every slot must be safe to ask for; the card must land where `find` saw it.
        let found = find(data).ok().flatten().map(|f| f.slot);
        for slot in [Slot::Number, Slot::Token] {
            let Ok(out) = swap(data, slot, &card) else {
                continue;
            };
            let out: &[u8] = &out;
            if was_json {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(out).is_ok(),
                    "a swap made invalid JSON"
                );
            }
            if found == Some(slot) {
                let again = find(out).expect("a swapped body is refused");
                let f = again.expect("the swapped card is not found");
                assert_eq!(f.slot, Slot::Number);
                assert_eq!(
                    f.value.as_str(),
                    card.pan,
                    "the card is not where it was put"
                );
            }
        }
    }
    let _ = mpgs::stored_credential(data);
    let _ = nexi::stored_credential(data);
    let _ = worldline::stored_credential(data);
    let _ = axerve::stored_credential(data);
    let _ = mpgs::set_stored_on_file(data, "TO_BE_STORED");
    for status in [200, 402, 500] {
        let _ = (
            nexi::outcome(status, data),
            mpgs::outcome(status, data),
            worldline::outcome(status, data),
        );
    }
}

/// Axerve SOAP: the envelope parser and the card swap never panic; a swapped envelope parses
/// again and its `cardNumber` is the card; the element a token is left in is never named with
/// 12 digits in a row, and the swap leaves no token behind in a body that had none outside
/// the card.
pub fn axerve_rewrite_xml(data: &[u8]) {
    let card = card(data.len());
    let _ = axerve::soap_fields(data);
    let _ = axerve::find_expiry(data);
    let _ = axerve::xml_fields(data, "GestPayS2S");
    let _ = axerve::add_apikey(data, "fuzz-apikey");
    let _ = axerve::stored_credential(data);
    let _ = axerve::outcome(200, data);
    let found = axerve::find_card(data).ok().flatten().map(|f| f.slot);
    // What the proxy looks for where the swap does not write: here any text starting `XYZW`.
    let mine = |v: &str| v.starts_with("XYZW") || v.starts_with("tmp_");
    let left = axerve::unswapped_token(data, mine);
    if let Ok(Some(name)) = &left {
        assert!(
            !digit_run(name.as_bytes(), 12, b""),
            "an element name shown with a card number in it"
        );
    }
    for slot in [Slot::Number, Slot::Token] {
        let Ok(out) = axerve::swap(data, slot, &card) else {
            continue;
        };
        if found == Some(slot) {
            let f = axerve::find_card(&out)
                .expect("a swapped envelope is refused")
                .expect("the swapped card is not found");
            assert_eq!(f.slot, Slot::Number);
            assert_eq!(f.value.as_str(), card.pan, "cardNumber is not the card");
            // The swap leaves no token behind where the body had none outside the card.
            if matches!(left, Ok(None)) {
                assert_eq!(
                    axerve::unswapped_token(&out, mine).ok(),
                    Some(None),
                    "the swap left a token behind"
                );
            }
        }
    }
}

/// The answer masker: the result is a fixed point (nothing left to mask) and none of the known
/// PANs survives whole between non-digits. In plain ASCII (no escape, percent-encoding or
/// reference, where a digit is one byte) length and every non-digit byte are kept too; an
/// encoded digit becomes `*` in its own encoding.
pub fn mask(data: &[u8]) {
    let known: Vec<&str> = PANS.iter().take(1 + data.len() % 4).copied().collect();
    let out = mask_pans(data, &known);
    let plain = data.is_ascii() && !data.iter().any(|b| matches!(b, b'\\' | b'%' | b'&'));
    if plain {
        assert_eq!(out.len(), data.len(), "masking changed the length");
        for (a, b) in data.iter().zip(out.iter()) {
            if a != b {
                assert!(
                    a.is_ascii_digit() && *b == b'*',
                    "masking changed a non-digit"
                );
            }
        }
    }
    assert!(
        !holds_pan(&out, &known),
        "a masked body still holds a card number"
    );
    for pan in &known {
        let p = pan.as_bytes();
        for (i, w) in out.windows(p.len()).enumerate() {
            let before = i.checked_sub(1).and_then(|j| out.get(j));
            let after = out.get(i + p.len());
            if w == p
                && !before.is_some_and(u8::is_ascii_digit)
                && !after.is_some_and(u8::is_ascii_digit)
            {
                panic!("known PAN survived masking at byte {i}");
            }
        }
    }
    let _ = opaque_digits(data);
}

/// Audit entries from bytes: decoding never panics; a decoded entry re-encodes to a form that
/// decodes to the same entry, and hashing and checking it never panic.
pub fn audit_decode(data: &[u8]) {
    let Ok(e) = Entry::decode(data) else {
        return;
    };
    let bytes = e.encode().unwrap();
    let back = Entry::decode(&bytes).unwrap();
    assert_eq!(back, e, "re-encoding changed the entry");
    let _ = e.compute_hash();
    let _ = e.canonical_bytes();
    let _ = panvault::audit::check(&e, e.seq, &e.prev_hash);
}

/// One line of an audit export (`audit verify FILES`): parsing never panics, and feeding it to
/// a verifier, with or without a key, only ever answers Ok or a named break.
pub fn audit_export_line(data: &[u8]) {
    use panvault::audit::{ExportLine, Verifier};
    let Ok(line) = serde_json::from_slice::<ExportLine>(data) else {
        return;
    };
    let key = panvault::crypto::MacKey::new(&panvault::crypto::SecretKey::random()).unwrap();
    for k in [None, Some(&key)] {
        let mut v = Verifier::anywhere(k);
        let r = match &line {
            ExportLine::Entry(e) => v.feed(e).and_then(|()| v.feed(e)),
            ExportLine::Head { signed_head } => v.head_here(signed_head),
        };
        if let Err(e) = r {
            assert!(
                e.to_string().starts_with("audit chain broken at entry "),
                "{e}"
            );
        }
        let _ = v.finish();
    }
}

/// A valid encoded audit entry, as a seed.
pub fn audit_seed(n: usize) -> Vec<u8> {
    let mut chain = Chain::default();
    let mut last = Vec::new();
    for i in 0..=n {
        let e = chain
            .append(
                Event {
                    actor: format!("merchant:M{i}"),
                    merchant: Some("M1".into()),
                    action: "tokenize",
                    token: Some("41XYZWABCDEF1111".into()),
                    outcome: "ok",
                    request_id: Some(format!("req-{i}")),
                    client: Some("127.0.0.1".into()),
                    detail: (i % 2 == 1).then(|| "kek v1 -> v2".into()),
                },
                "2026-01-01T00:00:00Z".into(),
            )
            .unwrap();
        last = e.encode().unwrap();
    }
    last
}
