//! Axerve's `WSs2s` SOAP service (SPEC.md 2.3, 2.4): the envelope parsed as XML with namespaces
//! resolved, the operation (the first element in a SOAP 1.1 or 1.2 `Body`) and its elements
//! matched by local name, whatever prefix or namespace the client gave them; the card written in
//! the WSDL's element order with the prefix the client used.

use std::borrow::Cow;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use zeroize::Zeroizing;

use super::{AGREEMENT_MARKER, PAGAM_ORDER, is_xml};
use crate::gateway::{CardData, Found, GatewayError, Slot, StoredCredential};

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

/// One direct child element of the operation: its local name and the event indexes of its start
/// and end (equal for an empty element).
struct Child {
    local: String,
    start: usize,
    end: usize,
}

/// Where a SOAP request's operation element and its children are, by event index.
struct Located {
    /// The operation's local name, whatever its namespace.
    op: String,
    op_end: usize,
    children: Vec<Child>,
    /// The prefix the operation's children are written with (`None`: default namespace).
    prefix: Option<String>,
}

/// Where the card is in a `callPagamS2S`: the child, which slot it is, its text.
type CardAt<'e> = (&'e Child, Slot, Zeroizing<String>);

/// A SOAP request: every event, and where the operation element and its children are (the
/// fields of [`Located`]).
struct Envelope<'a> {
    events: Vec<Event<'a>>,
    op: String,
    op_end: usize,
    children: Vec<Child>,
    prefix: Option<String>,
}

impl<'a> Envelope<'a> {
    fn new(events: Vec<Event<'a>>, l: Located) -> Self {
        Envelope {
            events,
            op: l.op,
            op_end: l.op_end,
            children: l.children,
            prefix: l.prefix,
        }
    }
}

fn malformed() -> GatewayError {
    GatewayError::Malformed("SOAP XML")
}

fn ns_of(r: &ResolveResult<'_>) -> Option<String> {
    match r {
        ResolveResult::Bound(n) => std::str::from_utf8(n.as_ref()).ok().map(str::to_string),
        _ => None,
    }
}

fn local(s: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(s.local_name().as_ref()).into_owned()
}

fn prefix(s: &BytesStart<'_>) -> Option<String> {
    s.name()
        .prefix()
        .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
}

/// Parses a SOAP envelope and locates the operation (the first element in `Body`). `None` when
/// the document is XML but no SOAP request.
fn parse(text: &str) -> Result<Option<Envelope<'_>>, GatewayError> {
    let (events, located) = read(text)?;
    Ok(located.map(|l| Envelope::new(events, l)))
}

/// Every event of an XML document (a `DOCTYPE` refused), and where the operation is when it is a
/// SOAP 1.1 or 1.2 request: the first element in `Body`, in any namespace.
fn read(text: &str) -> Result<(Vec<Event<'_>>, Option<Located>), GatewayError> {
    let mut r = NsReader::from_str(text);
    let mut events = Vec::new();
    // (local name, namespace) of the open elements.
    let mut stack: Vec<(String, Option<String>)> = Vec::new();
    let mut op: Option<(String, usize)> = None;
    let mut op_end = None;
    let mut children: Vec<Child> = Vec::new();
    let mut prefix_seen: Option<Option<String>> = None;
    let is_envelope = |s: &[(String, Option<String>)]| {
        s.len() == 2
            && s[0].0 == "Envelope"
            && matches!(s[0].1.as_deref(), Some(SOAP11 | SOAP12))
            && s[1].0 == "Body"
            && s[1].1 == s[0].1
    };
    loop {
        let (res, ev) = r.read_resolved_event().map_err(|_| malformed())?;
        let idx = events.len();
        let in_op = op.is_some() && op_end.is_none();
        match &ev {
            Event::Eof => break,
            // Entity declarations would reach the gateway with the card and the apikey, to
            // expand as its parser likes; SOAP forbids a DTD anyway. Refused before any swap.
            Event::DocType(_) => {
                return Err(GatewayError::Field {
                    field: "DOCTYPE",
                    reason: "is refused: a SOAP body takes no document type or entity declarations",
                });
            }
            Event::Start(s) => {
                let name = local(s);
                if op.is_none() && is_envelope(&stack) {
                    prefix_seen = Some(prefix(s));
                    op = Some((name.clone(), idx));
                } else if in_op && stack.len() == 3 {
                    if children.is_empty() {
                        prefix_seen = Some(prefix(s));
                    }
                    children.push(Child {
                        local: name.clone(),
                        start: idx,
                        end: idx,
                    });
                }
                stack.push((name, ns_of(&res)));
            }
            Event::Empty(s) if in_op && stack.len() == 3 => {
                if children.is_empty() {
                    prefix_seen = Some(prefix(s));
                }
                children.push(Child {
                    local: local(s),
                    start: idx,
                    end: idx,
                });
            }
            Event::End(_) => {
                stack.pop();
                if in_op && stack.len() == 2 {
                    op_end = Some(idx);
                } else if in_op
                    && stack.len() == 3
                    && let Some(c) = children.last_mut()
                {
                    c.end = idx;
                }
            }
            _ => {}
        }
        events.push(ev);
    }
    let located = match (op, op_end) {
        (Some((op, _)), Some(op_end)) => Some(Located {
            op,
            op_end,
            children,
            prefix: prefix_seen.flatten(),
        }),
        _ => None,
    };
    Ok((events, located))
}

/// Appends what `ev` adds to an element's text as the gateway's parser reads it (references
/// resolved, CDATA as is; comments and processing instructions add nothing). `false` for an
/// event that is no part of a text (an element).
fn push_text(out: &mut String, ev: &Event<'_>) -> Result<bool, GatewayError> {
    match ev {
        Event::Text(t) => {
            let raw = t.decode().map_err(|_| malformed())?;
            let s = quick_xml::escape::unescape(&raw).map_err(|_| malformed())?;
            out.push_str(&s);
        }
        Event::CData(t) => out.push_str(&t.decode().map_err(|_| malformed())?),
        Event::GeneralRef(r) => {
            if let Ok(Some(ch)) = r.resolve_char_ref() {
                out.push(ch);
            } else {
                let name = r.decode().map_err(|_| malformed())?;
                let s =
                    quick_xml::escape::resolve_predefined_entity(&name).ok_or_else(malformed)?;
                out.push_str(s);
            }
        }
        Event::Comment(_) | Event::PI(_) => {}
        _ => return Ok(false),
    }
    Ok(true)
}

impl Envelope<'_> {
    /// `callPagamS2S`, by its local name: the namespace is the client's business (the gateway
    /// answers a wrong one as it would; the card goes where the client put it either way).
    fn is_pagam(&self) -> bool {
        self.op == "callPagamS2S"
    }

    /// Where the card is: `cardNumber` when it holds text, else `tokenValue` when it does (the
    /// child, which slot, its text); `None` in another operation.
    fn card(&self) -> Result<Option<CardAt<'_>>, GatewayError> {
        if !self.is_pagam() {
            return Ok(None);
        }
        for (name, slot) in [("cardNumber", Slot::Number), ("tokenValue", Slot::Token)] {
            if let Some(c) = self.child(name)? {
                let text = self.text(c)?;
                if !text.trim().is_empty() {
                    return Ok(Some((c, slot, text)));
                }
            }
        }
        Ok(None)
    }

    /// The text of a child element (entity and character references resolved).
    fn text(&self, c: &Child) -> Result<Zeroizing<String>, GatewayError> {
        self.text_between(c.start, c.end)
    }

    /// The text between the events `start` and `end` (an element's start and end).
    fn text_between(&self, start: usize, end: usize) -> Result<Zeroizing<String>, GatewayError> {
        let mut out = Zeroizing::new(String::new());
        for ev in self.events.get(start + 1..end).unwrap_or_default() {
            if !push_text(&mut out, ev)? {
                return Err(GatewayError::Field {
                    field: "callPagamS2S",
                    reason: "card fields must hold text only",
                });
            }
        }
        Ok(out)
    }

    fn child(&self, name: &str) -> Result<Option<&Child>, GatewayError> {
        let mut found = self.children.iter().filter(|c| c.local == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(GatewayError::Field {
                field: "callPagamS2S",
                reason: "repeats a card element",
            });
        }
        Ok(first)
    }

    /// The non-empty text of child `name`.
    fn value(&self, name: &str) -> Result<Option<Zeroizing<String>>, GatewayError> {
        match self.child(name)? {
            Some(c) => Ok(Some(self.text(c)?).filter(|t| !t.trim().is_empty())),
            None => Ok(None),
        }
    }

    /// The non-empty text of element `name` directly inside child `parent` (`transDetails` /
    /// `type`); a repeated one is refused like a repeated card element.
    fn nested_value(
        &self,
        parent: &str,
        name: &str,
    ) -> Result<Option<Zeroizing<String>>, GatewayError> {
        let Some(c) = self.child(parent)? else {
            return Ok(None);
        };
        let repeated = GatewayError::Field {
            field: "callPagamS2S",
            reason: "repeats a stored-credential element",
        };
        let mut found: Option<Zeroizing<String>> = None;
        let mut depth = 0usize;
        let mut open: Option<usize> = None;
        for i in c.start + 1..c.end {
            match &self.events[i] {
                Event::Start(s) => {
                    if depth == 0 && local(s) == name {
                        open = Some(i);
                    }
                    depth += 1;
                }
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0
                        && let Some(start) = open.take()
                    {
                        if found.is_some() {
                            return Err(repeated);
                        }
                        found = Some(self.text_between(start, i)?);
                    }
                }
                Event::Empty(s) if depth == 0 && local(s) == name => {
                    if found.is_some() {
                        return Err(repeated);
                    }
                    found = Some(Zeroizing::new(String::new()));
                }
                _ => {}
            }
        }
        Ok(found.filter(|t| !t.trim().is_empty()))
    }

    fn qname(&self, local: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}:{local}"),
            None => local.to_string(),
        }
    }
}

/// A SOAP operation's name and its fields (child element name, text), in order.
pub type SoapFields = (String, Vec<(String, Zeroizing<String>)>);

/// The operation and its fields (child name, text), for the sandbox's checks. `None` when the
/// body is no SOAP request. A child holding elements (`shippingDetails`, `transDetails`) is
/// listed with an empty text.
pub fn soap_fields(body: &[u8]) -> Result<Option<SoapFields>, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let Some(env) = parse(text)? else {
        return Ok(None);
    };
    let mut fields = Vec::with_capacity(env.children.len());
    for c in &env.children {
        let value = match env.text(c) {
            Err(GatewayError::Field { .. }) => Zeroizing::new(String::new()),
            other => other?,
        };
        fields.push((c.local.clone(), value));
    }
    Ok(Some((env.op.clone(), fields)))
}

/// `callPagamS2S`'s `transDetails.type`, as [`super::stored_credential`] reads it.
pub(super) fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let env = parse(text)?.ok_or_else(malformed)?;
    if !env.is_pagam() {
        return Ok(StoredCredential::default());
    }
    let Some(kind) = env.nested_value("transDetails", "type")? else {
        return Ok(StoredCredential::default());
    };
    let kind = kind.trim();
    if kind.len() != 3 || !kind.is_ascii() {
        return Ok(StoredCredential::default());
    }
    let (series, step) = kind.split_at(2);
    if step != "F" && step != "N" {
        return Ok(StoredCredential::default());
    }
    let agreement_type = match series {
        "01" => "RECURRING",
        "02" => "INSTALLMENT",
        "03" => "UNSCHEDULED",
        _ => {
            return Err(GatewayError::Field {
                field: "transDetails.type",
                reason: "is not a known stored-credential series (01, 02, 03)",
            });
        }
    };
    Ok(StoredCredential {
        agreement: Some(crate::gateway::marked_agreement(
            AGREEMENT_MARKER,
            agreement_type,
        )),
        merchant_initiated: step == "N",
        stored_on_file: None,
    })
}

/// `callPagamS2S`'s `cardNumber`, else its `tokenValue` (each by local name).
pub(super) fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let Some(env) = parse(text)? else {
        return Ok(None);
    };
    Ok(env.card()?.map(|(_, slot, value)| Found { slot, value }))
}

/// `expiryMonth` / `expiryYear` (MM, YY).
pub(super) fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    let env = parse(std::str::from_utf8(body).ok()?).ok()??;
    let m = env.value("expiryMonth").ok()??;
    let y = env.value("expiryYear").ok()??;
    crate::gateway::month_year(m.trim(), y.trim())
}

/// Writes the card into `callPagamS2S`: `cardNumber` (in place, or instead of `tokenValue`),
/// `expiryMonth` and `expiryYear` (MM, YY) where missing or empty, a temporary token's `cvv`,
/// each new element in WSDL order with the prefix of the operation's children.
pub(super) fn swap(
    body: &[u8],
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let env = parse(text)?.ok_or_else(malformed)?;
    if !env.is_pagam() {
        return Err(malformed());
    }
    let (mm, yy) = (card.mm(), card.yy());
    let filled = |name: &str| -> Result<bool, GatewayError> { Ok(env.value(name)?.is_some()) };
    // The elements to write: (name, value, replace an existing one).
    let mut writes: Vec<(&str, &str)> = vec![("cardNumber", card.pan)];
    if !filled("expiryMonth")? {
        writes.push(("expiryMonth", &mm));
    }
    if !filled("expiryYear")? {
        writes.push(("expiryYear", &yy));
    }
    if let Some(cvv) = card.cvv {
        writes.push(("cvv", cvv));
    }
    let order = |name: &str| PAGAM_ORDER.iter().position(|n| *n == name);
    let w_err = |_| GatewayError::Malformed("SOAP XML");
    let mut w = quick_xml::Writer::new(Vec::with_capacity(body.len() + 256));
    let mut pending: Vec<(&str, &str)> = writes
        .iter()
        .filter(|(n, _)| env.child(n).ok().flatten().is_none())
        .copied()
        .collect();
    let emit = |w: &mut quick_xml::Writer<Vec<u8>>, name: &str, value: &str| {
        let q = env.qname(name);
        w.write_event(Event::Start(BytesStart::new(q.as_str())))?;
        w.write_event(Event::Text(BytesText::new(value)))?;
        w.write_event(Event::End(BytesEnd::new(q.as_str())))
    };
    let mut i = 0;
    while i < env.events.len() {
        if i == env.op_end {
            for (n, v) in pending.drain(..) {
                emit(&mut w, n, v).map_err(w_err)?;
            }
        }
        let Some(c) = env.children.iter().find(|c| c.start == i) else {
            w.write_event(env.events[i].clone()).map_err(w_err)?;
            i += 1;
            continue;
        };
        // Elements that go before this one in WSDL order.
        if let Some(at) = order(&c.local) {
            let (now, later): (Vec<_>, Vec<_>) = pending
                .drain(..)
                .partition(|(n, _)| order(n).is_some_and(|o| o < at));
            pending = later;
            for (n, v) in now {
                emit(&mut w, n, v).map_err(w_err)?;
            }
        }
        let write = writes.iter().find(|(n, _)| *n == c.local);
        if c.local == "tokenValue" && slot == Slot::Token {
            // Dropped: the card replaces it.
        } else if let Some((n, v)) = write {
            emit(&mut w, n, v).map_err(w_err)?;
        } else {
            for ev in &env.events[c.start..=c.end] {
                w.write_event(ev.clone()).map_err(w_err)?;
            }
        }
        i = c.end + 1;
    }
    Ok(Zeroizing::new(w.into_inner()))
}

/// Adds `<apikey>` (last in WSDL order) to a `callPagamS2S` that has none, for the apikey
/// authentication configured in panvault; `None` when there is nothing to add.
pub fn add_apikey(body: &[u8], key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, GatewayError> {
    if !is_xml(body) {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let Some(env) = parse(text)? else {
        return Ok(None);
    };
    if !env.is_pagam() || env.child("apikey")?.is_some() {
        return Ok(None);
    }
    let w_err = |_| malformed();
    let mut w = quick_xml::Writer::new(Vec::with_capacity(body.len() + 64));
    for (i, ev) in env.events.iter().enumerate() {
        if i == env.op_end {
            let q = env.qname("apikey");
            w.write_event(Event::Start(BytesStart::new(q.as_str())))
                .map_err(w_err)?;
            w.write_event(Event::Text(BytesText::new(key)))
                .map_err(w_err)?;
            w.write_event(Event::End(BytesEnd::new(q.as_str())))
                .map_err(w_err)?;
        }
        w.write_event(ev.clone()).map_err(w_err)?;
    }
    Ok(Some(Zeroizing::new(w.into_inner())))
}

/// The leaf texts under the first element named `container` (e.g. `GestPayS2S`), by local name.
pub fn xml_fields(body: &[u8], container: &str) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut r = NsReader::from_str(text);
    let mut out = Vec::new();
    let mut depth_in: Option<usize> = None;
    let mut stack: Vec<String> = Vec::new();
    let mut current = String::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(s)) => {
                let name = local(&s);
                if depth_in.is_none() && name == container {
                    depth_in = Some(stack.len());
                }
                stack.push(name);
                current.clear();
            }
            Ok(Event::Text(t)) => {
                if let Ok(s) = t.decode() {
                    current.push_str(&quick_xml::escape::unescape(&s).unwrap_or(Cow::Borrowed("")));
                }
            }
            Ok(Event::End(_)) => {
                if let Some(name) = stack.pop()
                    && depth_in.is_some_and(|d| stack.len() > d)
                {
                    out.push((name, std::mem::take(&mut current)));
                }
                if depth_in.is_some_and(|d| stack.len() <= d) {
                    break;
                }
            }
            Ok(Event::Empty(s)) if depth_in.is_some() => {
                out.push((local(&s), String::new()));
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// `GestPayS2S`'s `TransactionResult` and `ErrorCode`, trimmed.
pub(super) fn result_and_code(body: &[u8]) -> (Option<String>, Option<String>) {
    let f = xml_fields(body, "GestPayS2S");
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    (get("TransactionResult"), get("ErrorCode"))
}

/// The element whose text, outside the place the card goes, is a value `is_token` takes for a
/// token: what would reach the gateway unswapped. Every text node of the document is read as
/// the gateway's parser reads it (references resolved, CDATA as is, the pieces around a comment
/// joined) and trimmed; the `cardNumber` or `tokenValue` [`find_card`](super::find_card) takes
/// (and the swap rewrites) is left out. `None` for a JSON body or when nothing is left.
///
/// The element is named by its local name when that is a plain name (ASCII letters, digits,
/// `_`, `-`, `.`, at most 64, no run of 12 digits in it), else as `(element)`: never the value.
pub fn unswapped_token(
    body: &[u8],
    is_token: impl Fn(&str) -> bool,
) -> Result<Option<String>, GatewayError> {
    if !is_xml(body) {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let (events, located) = read(text)?;
    let (events, skip) = match located {
        None => (events, None),
        Some(l) => {
            let env = Envelope::new(events, l);
            let skip = env.card()?.map(|(c, _, _)| (c.start, c.end));
            (env.events, skip)
        }
    };
    let mut open: Vec<String> = Vec::new();
    let mut node = Zeroizing::new(String::new());
    let left = |node: &mut Zeroizing<String>, open: &[String]| {
        let found = is_token(node.trim());
        node.clear();
        found.then(|| shown_name(open.last().map_or("", String::as_str)))
    };
    for (i, ev) in events.iter().enumerate() {
        if skip.is_some_and(|(start, end)| start < i && i < end) {
            continue;
        }
        if push_text(&mut node, ev)? {
            continue;
        }
        if let Some(name) = left(&mut node, &open) {
            return Ok(Some(name));
        }
        match ev {
            Event::Start(s) => open.push(local(s)),
            Event::End(_) => {
                open.pop();
            }
            _ => {}
        }
    }
    Ok(left(&mut node, &open))
}

/// An element's local name as an error may show it: a plain name, else `(element)`.
fn shown_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !crate::pan::holds_card_number(name)
        && !crate::pan::has_long_digit_run(name, crate::token::FORBIDDEN_DIGIT_RUN);
    if plain {
        name.to_string()
    } else {
        "(element)".to_string()
    }
}
