//! Matching the README's printed output against a real run's: JSON by value with `...`, text
//! with `...`, and the values that vary per run by their shape (see `tests/readme.rs`).

use serde_json::Value;

/// One element of a text pattern.
enum El {
    Lit(char),
    Class(fn(char) -> bool),
    /// `...`: any text.
    Any,
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

fn upper_or_digit(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

/// The length of an RFC 3339 UTC time at the start of `s` (`2026-11-23T20:44:28Z`, with
/// optional fractional seconds).
fn rfc3339_len(s: &[char]) -> Option<usize> {
    let shape = "dddd-dd-ddTdd:dd:dd";
    if s.len() < shape.len() + 1 {
        return None;
    }
    for (c, want) in s.iter().zip(shape.chars()) {
        let ok = if want == 'd' {
            c.is_ascii_digit()
        } else {
            *c == want
        };
        if !ok {
            return None;
        }
    }
    let mut n = shape.len();
    if s.get(n) == Some(&'.') {
        n += 1;
        while s.get(n).is_some_and(char::is_ascii_digit) {
            n += 1;
        }
    }
    (s.get(n) == Some(&'Z')).then_some(n + 1)
}

/// What a printed word varies by, if it is one of the shapes that vary per run: a pattern for
/// it.
fn varying_word(w: &[char]) -> Option<Vec<El>> {
    let s: String = w.iter().collect();
    // A standard token: 2 digits, the merchant prefix, 6 random characters, the last 4.
    let standard = w.len() == 16
        && w[..2].iter().all(char::is_ascii_digit)
        && w[2..6].iter().all(char::is_ascii_uppercase)
        && w[6..12].iter().all(|c| upper_or_digit(*c))
        && w[12..].iter().all(char::is_ascii_digit);
    if standard {
        let mut p: Vec<El> = w[..6].iter().map(|c| El::Lit(*c)).collect();
        p.extend((0..6).map(|_| El::Class(upper_or_digit)));
        p.extend(w[12..].iter().map(|c| El::Lit(*c)));
        return Some(p);
    }
    // A prefixed random id or key: `mer_`, `pvk_`, `tmp_` and a random part holding a digit.
    if let Some(u) = s.find('_')
        && (2..=4).contains(&u)
        && s[..u].chars().all(|c| c.is_ascii_lowercase())
        && s.len() - u > 8
        && s[u..].chars().any(|c| c.is_ascii_digit())
    {
        let mut p: Vec<El> = w[..=u].iter().map(|c| El::Lit(*c)).collect();
        p.extend(w[u + 1..].iter().map(|_| El::Class(word_char)));
        return Some(p);
    }
    // A hash, MAC or request id: lowercase hex with letters and digits.
    if w.len() >= 16
        && w.iter().all(|c| is_hex(*c))
        && w.iter().any(|c| c.is_ascii_digit())
        && w.iter().any(|c| c.is_ascii_alphabetic())
    {
        return Some(w.iter().map(|_| El::Class(is_hex)).collect());
    }
    None
}

fn compile(expected: &str) -> Vec<El> {
    let s: Vec<char> = expected.chars().collect();
    let mut p = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(&['.', '.', '.']) {
            p.push(El::Any);
            i += 3;
        } else if let Some(n) = rfc3339_len(&s[i..]) {
            p.extend(s[i..i + n].iter().map(|c| {
                if c.is_ascii_digit() {
                    El::Class(is_digit)
                } else {
                    El::Lit(*c)
                }
            }));
            i += n;
        } else if word_char(s[i]) && (i == 0 || !word_char(s[i - 1])) {
            let end = (i..s.len()).find(|&j| !word_char(s[j])).unwrap_or(s.len());
            match varying_word(&s[i..end]) {
                Some(w) => p.extend(w),
                None => p.extend(s[i..end].iter().map(|c| El::Lit(*c))),
            }
            i = end;
        } else {
            p.push(El::Lit(s[i]));
            i += 1;
        }
    }
    p
}

/// Does `text` match `pattern` as a whole?
fn glob(pattern: &[El], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    // ok[j]: the pattern so far matches t[..j].
    let mut ok = vec![false; t.len() + 1];
    ok[0] = true;
    for el in pattern {
        let mut next = vec![false; t.len() + 1];
        match el {
            El::Any => {
                let mut seen = false;
                for j in 0..=t.len() {
                    seen |= ok[j];
                    next[j] = seen;
                }
            }
            El::Lit(c) => {
                for j in 0..t.len() {
                    next[j + 1] = ok[j] && t[j] == *c;
                }
            }
            El::Class(f) => {
                for j in 0..t.len() {
                    next[j + 1] = ok[j] && f(t[j]);
                }
            }
        }
        ok = next;
    }
    ok[t.len()]
}

fn text_matches(expected: &str, actual: &str) -> bool {
    glob(&compile(expected), actual)
}

/// A printed JSON value, where `...` stands for more members, elements or a whole value.
enum Pat {
    Any,
    Object(Vec<(String, Pat)>, bool),
    Array(Vec<Pat>, bool),
    Str(String),
    Scalar(Value),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.i) == Some(&b)).then(|| self.i += 1)
    }

    fn ellipsis(&mut self) -> bool {
        self.ws();
        let yes = self.s[self.i..].starts_with(b"...");
        if yes {
            self.i += 3;
        }
        yes
    }

    fn string(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        loop {
            match self.s.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        serde_json::from_slice(&self.s[start..self.i]).ok()
    }

    fn value(&mut self) -> Option<Pat> {
        if self.ellipsis() {
            return Some(Pat::Any);
        }
        self.ws();
        match self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let (mut members, mut open) = (Vec::new(), false);
                if self.eat(b'}').is_some() {
                    return Some(Pat::Object(members, open));
                }
                loop {
                    if self.ellipsis() {
                        open = true;
                    } else {
                        let k = self.string()?;
                        self.eat(b':')?;
                        members.push((k, self.value()?));
                    }
                    if self.eat(b'}').is_some() {
                        return Some(Pat::Object(members, open));
                    }
                    self.eat(b',')?;
                }
            }
            b'[' => {
                self.i += 1;
                let (mut items, mut open) = (Vec::new(), false);
                if self.eat(b']').is_some() {
                    return Some(Pat::Array(items, open));
                }
                loop {
                    if self.ellipsis() {
                        open = true;
                    } else {
                        items.push(self.value()?);
                    }
                    if self.eat(b']').is_some() {
                        return Some(Pat::Array(items, open));
                    }
                    self.eat(b',')?;
                }
            }
            b'"' => self.string().map(Pat::Str),
            _ => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| !b",]} \t".contains(b)) {
                    self.i += 1;
                }
                serde_json::from_slice(&self.s[start..self.i])
                    .ok()
                    .map(Pat::Scalar)
            }
        }
    }
}

/// The printed line as a JSON pattern, if it is one.
fn json_pattern(line: &str) -> Option<Pat> {
    let t = line.trim();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    let mut p = Parser {
        s: t.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == t.len()).then_some(v)
}

/// Where `actual` differs from `pat`, as a JSON path, or None if it matches.
fn json_mismatch(pat: &Pat, actual: &Value, path: &str) -> Option<String> {
    let at = |what: &str| {
        Some(format!(
            "{}: {what}",
            if path.is_empty() { "." } else { path }
        ))
    };
    match (pat, actual) {
        (Pat::Any, _) => None,
        (Pat::Str(e), Value::String(a)) if text_matches(e, a) => None,
        (Pat::Scalar(e), a) if e == a => None,
        (Pat::Str(_) | Pat::Scalar(_), _) => at("differs"),
        (Pat::Object(members, open), Value::Object(a)) => {
            for (k, p) in members {
                match a.get(k) {
                    Some(v) => {
                        if let Some(m) = json_mismatch(p, v, &format!("{path}.{k}")) {
                            return Some(m);
                        }
                    }
                    None => return at(&format!("no field `{k}`")),
                }
            }
            if !open && let Some(k) = a.keys().find(|k| !members.iter().any(|(m, _)| m == *k)) {
                return at(&format!(
                    "a field `{k}` not printed (add `...` if it may be there)"
                ));
            }
            None
        }
        (Pat::Array(items, open), Value::Array(a)) => {
            if !open {
                if items.len() != a.len() {
                    return at(&format!("{} elements, printed {}", a.len(), items.len()));
                }
                for (n, (p, v)) in items.iter().zip(a).enumerate() {
                    if let Some(m) = json_mismatch(p, v, &format!("{path}[{n}]")) {
                        return Some(m);
                    }
                }
                return None;
            }
            // With `...`: the printed elements appear in this order.
            let mut rest = a.iter();
            for (n, p) in items.iter().enumerate() {
                if !rest.any(|v| json_mismatch(p, v, path).is_none()) {
                    return at(&format!("printed element {n} not found (in order)"));
                }
            }
            None
        }
        _ => at("another kind of value"),
    }
}

pub fn line_matches(expected: &str, actual: &str) -> Result<(), String> {
    match json_pattern(expected) {
        Some(p) => {
            let v: Value = serde_json::from_str(actual)
                .map_err(|_| "printed JSON, got something else".to_string())?;
            json_mismatch(&p, &v, "").map_or(Ok(()), Err)
        }
        None if text_matches(expected, actual) => Ok(()),
        None => Err("the text differs".into()),
    }
}

/// Do the actual lines match the printed ones (a printed line `...` being any lines)? The
/// first problem found if not.
pub fn lines_match(expected: &[String], actual: &[&str]) -> Result<(), String> {
    match expected.split_first() {
        None if actual.is_empty() => Ok(()),
        None => Err(format!("{} more line(s) than printed", actual.len())),
        Some((e, rest)) if e.trim() == "..." => {
            let mut last = Err("nothing after `...` matches".to_string());
            for skip in 0..=actual.len() {
                last = lines_match(rest, &actual[skip..]);
                if last.is_ok() {
                    break;
                }
            }
            last
        }
        Some((e, rest)) => {
            let Some((a, more)) = actual.split_first() else {
                return Err(format!("missing line: {e}"));
            };
            line_matches(e, a).map_err(|why| format!("line `{e}`: {why}"))?;
            lines_match(rest, more)
        }
    }
}

/// Card numbers in a message replaced, so that no failure prints one.
pub fn masked(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if (12..=19).contains(&run.len()) {
            out.push_str(&format!("[{} digits]", run.len()));
        } else {
            out.push_str(&run);
        }
        run.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_matcher_takes_shapes_and_refuses_values() {
    let e =
        r#"{"bin":"411111",...,"created_at":"2026-11-23T20:44:28Z","token":"41XYZWQ52J331111"}"#;
    let ok = r#"{"bin":"411111","brand":"visa","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1111"}"#;
    assert_eq!(line_matches(e, ok), Ok(()));
    for bad in [
        r#"{"bin":"411112","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1111"}"#,
        r#"{"bin":"411111","created_at":"soon","token":"41XYZWAB12CD1111"}"#,
        r#"{"bin":"411111","created_at":"2027-01-02T03:04:05Z","token":"41XYZWAB12CD1112"}"#,
        r#"{"bin":"411111","created_at":"2027-01-02T03:04:05Z"}"#,
    ] {
        assert!(line_matches(e, bad).is_err(), "{bad}");
    }
    // No `...`: no other field.
    assert!(line_matches(r#"{"a":1}"#, r#"{"a":1,"b":2}"#).is_err());
    assert!(line_matches(r#"{"a":...}"#, r#"{"a":[1]}"#).is_ok());
    assert!(line_matches(r#"{"a":[...,{"b":2}]}"#, r#"{"a":[{"b":1},{"b":2}]}"#).is_ok());
    assert!(line_matches(r#"{"a":[{"b":2}]}"#, r#"{"a":[{"b":1},{"b":2}]}"#).is_err());
    // Codes and words are values, not shapes.
    assert!(
        line_matches(
            r#"{"code":"luhn_check_failed"}"#,
            r#"{"code":"luhn_check_failes"}"#
        )
        .is_err()
    );
    // Keys, ids and hashes by shape; text with `...`.
    assert!(text_matches(
        "shop key:       pvk_e71d62a37fc5e855_r44qLDxY1KqD-mlFA8S7RQpOv3HqG3UjaNeFDmX02RY  (tokenize)",
        "shop key:       pvk_d2c935e6b1a0425e_J6CxUcLG_rlI8BKXLqKWhO0nV2Y4VJofeVqHE24r-c8  (tokenize)"
    ));
    assert!(!text_matches(
        "audit chain ok: 12 entries",
        "audit chain ok: 13 entries"
    ));
    assert!(text_matches(
        "last hash 1147862e4662b44112a4e854e4d25936a9e28e8bc92683cc532916b449049681",
        "last hash 0905ec51ee2ae6ca5a63a3b917ba90e99b96bb8c216f678c5d6180a60c548d5f"
    ));
    assert!(text_matches("a ... z", "a b c z"));
    assert!(!text_matches(
        "tmp_33F365PIKMGUIJNXWZWRQSX2VIARHJXE",
        "tmp_33F365"
    ));
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(lines_match(&lines(&["a", "...", "z"]), &["a", "b", "c", "z"]).is_ok());
    assert!(lines_match(&lines(&["a", "z"]), &["a", "b", "z"]).is_err());
    assert!(lines_match(&lines(&[]), &["a"]).is_err());
    assert_eq!(
        masked("pan 4111111111111111 and 1234"),
        "pan [16 digits] and 1234"
    );
}
