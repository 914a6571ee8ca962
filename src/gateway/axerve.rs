//! The Axerve adapter (Axerve Ecommerce Solutions, ex-Gestpay, Banca Sella): where its SOAP and
//! REST requests carry the card, and how its answers read (SPEC.md section 2).
//!
//! **SOAP 1.1 `WSs2s`** (`POST /gestpay/gestpayws/WSs2s.asmx`, `SOAPAction:
//! "https://ecomms2s.sella.it/callPagamS2S"`, body element in namespace
//! `https://ecomms2s.sella.it/`; no HTTP auth header: IP whitelist and/or an `<apikey>` element).
//! `callPagamS2S` takes card data or a token, "exactly one among Credit Card data and Token
//! value": `cardNumber` with `expiryMonth` (MM) and `expiryYear` (YY) as separate two-character
//! fields and an optional `cvv`, or `tokenValue`. A panvault token may stand in either; in
//! `tokenValue` it is replaced by `cardNumber`, `expiryMonth` and `expiryYear`, written in
//! the WSDL's element order (ASMX reads elements in sequence). Envelopes are parsed as XML with
//! namespaces resolved: clients use any prefix (`soap:`, `soapenv:`, `s:`, a default namespace).
//!
//! Answer (`GestPayS2S`): `TransactionResult` `OK` with `ErrorCode` 0 is an approval, `KO` a
//! decline, `ErrorCode` 8006 ("Verify By Visa") the 3-D Secure challenge: the buyer goes to
//! `pagam3d.aspx?a=<shopLogin>&b=<VbVRisp>&c=<returnUrl>`, then a second `callPagamS2S` carries
//! `transKey` and `PARes`.
//!
//! Stored credentials: `callPagamS2S`'s `transDetails.type` says which use of a stored
//! card a payment is: `01F` / `02F` / `03F` the first of a recurring / instalment / unscheduled
//! series (cardholder-initiated: it stores the card), `01N` / `02N` / `03N` a next one
//! (merchant-initiated). Axerve has no agreement id: panvault records the series as
//! `axerve:RECURRING` / `axerve:INSTALLMENT` / `axerve:UNSCHEDULED` ([`AGREEMENT_MARKER`]). The
//! plain `recurrent` flag says nothing about first or next and is passed through. In the REST
//! API `transDetails` goes into `payment/create`, which carries no card, while the card comes
//! with `payment/submit`: nothing there to check.
//!
//! **REST** `POST /api/v1/payment/submit` (`Authorization: apikey ...`, `paymentToken` header):
//! `paymentTypeDetails.creditcard.{number | token, expMonth, expYear, CVV}`; the answer's
//! `payload.transactionResult` / `transactionErrorCode` (8006 with `userRedirect.href`).

use std::borrow::Cow;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use zeroize::Zeroizing;

use super::{CardData, Found, GatewayError, Outcome, Slot, StoredCredential, json};

/// Namespace of the WSs2s operations.
pub const NS: &str = "https://ecomms2s.sella.it/";
const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// Error code of the 3-D Secure challenge ("Verify By Visa").
pub const CHALLENGE_CODE: &str = "8006";

/// `callPagamS2S` elements in WSDL order (gestpay/java-gestpay-s2s CallPagamS2S.java propOrder).
pub const PAGAM_ORDER: &[&str] = &[
    "shopLogin",
    "uicCode",
    "amount",
    "shopTransactionId",
    "cardNumber",
    "expiryMonth",
    "expiryYear",
    "buyerName",
    "buyerEmail",
    "languageId",
    "cvv",
    "min",
    "transKey",
    "PARes",
    "customInfo",
    "IDEA",
    "requestToken",
    "tokenValue",
    "clientIP",
    "itemType",
    "recurrent",
    "subMerchantId",
    "paymentTypes",
    "paymentDeviceDetails",
    "shippingDetails",
    "redFraudPrevention",
    "redCustomerInfo",
    "redShippingInfo",
    "redBillingInfo",
    "applePay",
    "cardReaderPayments",
    "OrderDetails",
    "apikey",
];

const REST_CARD: &[&str] = &["paymentTypeDetails", "creditcard"];

/// One direct child element of the operation: its local name and the event indexes of its start
/// and end (equal for an empty element).
struct Child {
    local: String,
    start: usize,
    end: usize,
}

/// A SOAP request: every event, and where the operation element and its children are.
struct Envelope<'a> {
    events: Vec<Event<'a>>,
    op: String,
    /// The operation element's namespace.
    op_ns: Option<String>,
    op_end: usize,
    children: Vec<Child>,
    /// The prefix the operation's children are written with (`None`: default namespace).
    prefix: Option<String>,
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
    let mut r = NsReader::from_str(text);
    let mut events = Vec::new();
    // (local name, namespace) of the open elements.
    let mut stack: Vec<(String, Option<String>)> = Vec::new();
    let mut op: Option<(String, usize)> = None;
    let mut op_ns = None;
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
                    op_ns = ns_of(&res);
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
    let (Some((op, _)), Some(op_end)) = (op, op_end) else {
        return Ok(None);
    };
    Ok(Some(Envelope {
        events,
        op,
        op_ns,
        op_end,
        children,
        prefix: prefix_seen.flatten(),
    }))
}

impl Envelope<'_> {
    /// `callPagamS2S` in the WSs2s namespace.
    fn is_pagam(&self) -> bool {
        self.op == "callPagamS2S" && self.op_ns.as_deref() == Some(NS)
    }

    /// The text of a child element (entity and character references resolved).
    fn text(&self, c: &Child) -> Result<Zeroizing<String>, GatewayError> {
        self.text_between(c.start, c.end)
    }

    /// The text between the events `start` and `end` (an element's start and end).
    fn text_between(&self, start: usize, end: usize) -> Result<Zeroizing<String>, GatewayError> {
        let mut out = Zeroizing::new(String::new());
        for ev in self.events.get(start + 1..end).unwrap_or_default() {
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
                        let s = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(malformed)?;
                        out.push_str(s);
                    }
                }
                Event::Comment(_) | Event::PI(_) => {}
                _ => {
                    return Err(GatewayError::Field {
                        field: "callPagamS2S",
                        reason: "card fields must hold text only",
                    });
                }
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

/// Axerve has no agreement id: the series a token stores its card for is recorded as
/// `axerve:<TYPE>` (`axerve:RECURRING`, `axerve:INSTALLMENT`, `axerve:UNSCHEDULED`).
pub const AGREEMENT_MARKER: &str = "axerve:";

/// `callPagamS2S`'s `transDetails.type` (SPEC.md 2.4): `01F` / `02F` / `03F`
/// cardholder-initiated, storing the card for a RECURRING / INSTALLMENT / UNSCHEDULED series;
/// `01N` / `02N` / `03N` merchant-initiated under it. Other types (`08` mail order, `09`
/// telephone order, `EC`, `NPA`) and no `transDetails` establish nothing; an unknown `F`/`N`
/// series code is refused rather than guessed. REST bodies carry no `transDetails` with the
/// card: nothing.
pub fn stored_credential(body: &[u8]) -> Result<StoredCredential, GatewayError> {
    if !is_xml(body) {
        json_text(body).ok_or(GatewayError::Malformed("JSON or SOAP XML"))?;
        return Ok(StoredCredential::default());
    }
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
        agreement: Some(super::marked_agreement(AGREEMENT_MARKER, agreement_type)),
        merchant_initiated: step == "N",
        stored_on_file: None,
    })
}

fn is_xml(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<')
}

fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

/// SOAP: `callPagamS2S`'s `cardNumber`, else its `tokenValue`. REST:
/// `paymentTypeDetails.creditcard.number`, else `.token`.
pub fn find_card(body: &[u8]) -> Result<Option<Found>, GatewayError> {
    if is_xml(body) {
        let text = std::str::from_utf8(body).map_err(|_| malformed())?;
        let Some(env) = parse(text)? else {
            return Ok(None);
        };
        if !env.is_pagam() {
            return Ok(None);
        }
        if let Some(value) = env.value("cardNumber")? {
            return Ok(Some(Found {
                slot: Slot::Number,
                value,
            }));
        }
        return Ok(env.value("tokenValue")?.map(|value| Found {
            slot: Slot::Token,
            value,
        }));
    }
    let Some(text) = json_text(body) else {
        return Ok(None);
    };
    if let Some(value) = json::get_str(text, &["paymentTypeDetails", "creditcard", "number"])? {
        return Ok(Some(Found {
            slot: Slot::Number,
            value,
        }));
    }
    Ok(
        json::get_str(text, &["paymentTypeDetails", "creditcard", "token"])?.map(|value| Found {
            slot: Slot::Token,
            value,
        }),
    )
}

/// SOAP `expiryMonth` / `expiryYear`, REST `expMonth` / `expYear` (MM, YY).
pub fn find_expiry(body: &[u8]) -> Option<(u8, u16)> {
    if is_xml(body) {
        let env = parse(std::str::from_utf8(body).ok()?).ok()??;
        let m = env.value("expiryMonth").ok()??;
        let y = env.value("expiryYear").ok()??;
        return super::month_year(m.trim(), y.trim());
    }
    let text = json_text(body)?;
    let get = |k: &str| {
        json::get_str(text, &["paymentTypeDetails", "creditcard", k])
            .ok()
            .flatten()
    };
    super::month_year(&get("expMonth")?, &get("expYear")?)
}

/// Writes the card: SOAP `cardNumber` (in place, or instead of `tokenValue`), `expiryMonth` and
/// `expiryYear` (MM, YY) where missing or empty, a temporary token's `cvv`; REST the same under
/// `paymentTypeDetails.creditcard` (`number`, `expMonth`, `expYear`, `CVV`).
pub fn swap(
    body: &[u8],
    slot: Slot,
    card: &CardData<'_>,
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    if is_xml(body) {
        return swap_soap(body, slot, card);
    }
    let text = json_text(body).ok_or(GatewayError::Malformed("JSON"))?;
    let out = json::edit(text, REST_CARD, "paymentTypeDetails.creditcard", |m| {
        if slot == Slot::Token {
            m.remove("token");
        }
        m.set_str("number", card.pan);
        m.set_str_if_absent("expMonth", &card.mm());
        m.set_str_if_absent("expYear", &card.yy());
        if let Some(cvv) = card.cvv {
            m.set_str("CVV", cvv);
        }
    })?;
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

fn swap_soap(
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

/// SOAP `GestPayS2S` or REST `payload`: OK/0 approved, 8006 challenge, KO declined.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    if status != 200 {
        return Outcome::Other;
    }
    let (result, code) = if is_xml(body) {
        let f = xml_fields(body, "GestPayS2S");
        let get = |k: &str| {
            f.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
        };
        (get("TransactionResult"), get("ErrorCode"))
    } else {
        let Some(text) = json_text(body) else {
            return Outcome::Other;
        };
        let get = |k: &str| {
            json::get_str(text, &["payload", k])
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
        };
        (get("transactionResult"), get("transactionErrorCode"))
    };
    if code.as_deref() == Some(CHALLENGE_CODE) {
        return Outcome::Challenge;
    }
    match result.as_deref() {
        Some("OK") => Outcome::Approved,
        Some("KO") => Outcome::Declined,
        _ => Outcome::Other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::gateway::mask::mask_pans;
    use crate::gateway::testing::{fixture_json, replace, value};

    const PAN: &str = "5555555555554444";
    const CARD_XML: &str =
        include_str!("../../tests/fixtures/gateways/axerve/callPagamS2S_request_card.xml");
    const TOKEN_XML: &str =
        include_str!("../../tests/fixtures/gateways/axerve/callPagamS2S_request_token.xml");

    fn card(cvv: Option<&str>) -> CardData<'_> {
        CardData {
            pan: PAN,
            month: 3,
            year: 2031,
            cvv,
        }
    }

    fn fields(body: &[u8]) -> Vec<(String, String)> {
        soap_fields(body)
            .unwrap()
            .unwrap()
            .1
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }

    fn get<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
        f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn card_number_token_swapped_in_place() {
        let found = find_card(CARD_XML.as_bytes()).unwrap().unwrap();
        assert_eq!(found.slot, Slot::Number);
        let with_token = replace(CARD_XML.as_bytes(), &found.value, "55XYZWAB12CD4444");
        let f = find_card(&with_token).unwrap().unwrap();
        assert_eq!(f.value.as_str(), "55XYZWAB12CD4444");
        let out = swap(&with_token, f.slot, &card(None)).unwrap();
        let sent = fields(&out);
        let orig = fields(CARD_XML.as_bytes());
        assert_eq!(get(&sent, "cardNumber"), Some(PAN));
        // Everything else (expiry given by the merchant included) as it was, in order.
        let strip = |f: &[(String, String)]| -> Vec<(String, String)> {
            f.iter()
                .filter(|(k, _)| k != "cardNumber")
                .cloned()
                .collect()
        };
        assert_eq!(strip(&sent), strip(&orig));
        let names: Vec<&str> = sent.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &names[..7],
            [
                "shopLogin",
                "uicCode",
                "amount",
                "shopTransactionId",
                "cardNumber",
                "expiryMonth",
                "expiryYear"
            ]
        );
    }

    #[test]
    fn a_doctype_is_refused_before_any_swap() {
        let refused =
            |r: Result<(), GatewayError>| r.is_err_and(|e| e.to_string().contains("DOCTYPE"));
        for dtd in [
            "<!DOCTYPE x [<!ENTITY e SYSTEM 'http://e.example/'>]>",
            "<!DOCTYPE x>",
        ] {
            let doc = CARD_XML.replacen("?>", &format!("?>{dtd}"), 1);
            let doc = doc.as_bytes();
            assert!(refused(find_card(doc).map(drop)), "{dtd}");
            assert!(refused(stored_credential(doc).map(drop)), "{dtd}");
            assert!(refused(add_apikey(doc, "k").map(drop)), "{dtd}");
            assert!(
                refused(swap(doc, Slot::Number, &card(None)).map(drop)),
                "{dtd}"
            );
        }
    }

    #[test]
    fn token_value_replaced_by_card_fields_in_wsdl_order() {
        let with_token = replace(TOKEN_XML.as_bytes(), "40L76FDIEFMH1112", "55XYZWAB12CD4444");
        let f = find_card(&with_token).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Token);
        let out = swap(&with_token, f.slot, &card(Some("123"))).unwrap();
        let sent = fields(&out);
        let names: Vec<&str> = sent.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "shopLogin",
                "uicCode",
                "amount",
                "shopTransactionId",
                "cardNumber",
                "expiryMonth",
                "expiryYear",
                "cvv",
                "recurrent"
            ]
        );
        assert_eq!(get(&sent, "cardNumber"), Some(PAN));
        assert_eq!(get(&sent, "expiryMonth"), Some("03"));
        assert_eq!(get(&sent, "expiryYear"), Some("31"));
        assert_eq!(get(&sent, "cvv"), Some("123"));
        // Still a SOAP envelope with the same namespaces.
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            s.contains(r#"<callPagamS2S xmlns="https://ecomms2s.sella.it/">"#),
            "{s}"
        );
        assert!(!s.contains("<tokenValue>"));
    }

    #[test]
    fn prefixes_vary_parse_not_string_match() {
        let body = r#"<?xml version="1.0"?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ecom="https://ecomms2s.sella.it/">
 <env:Header/>
 <env:Body><ecom:callPagamS2S><ecom:shopLogin>GESPAY65987</ecom:shopLogin><ecom:uicCode>242</ecom:uicCode><ecom:amount>1.00</ecom:amount><ecom:shopTransactionId>T1</ecom:shopTransactionId><ecom:tokenValue>tmp_ABC</ecom:tokenValue></ecom:callPagamS2S></env:Body>
</env:Envelope>"#;
        let f = find_card(body.as_bytes()).unwrap().unwrap();
        assert_eq!((f.slot, f.value.as_str()), (Slot::Token, "tmp_ABC"));
        let out = swap(body.as_bytes(), f.slot, &card(None)).unwrap();
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.contains("<ecom:shopTransactionId>T1</ecom:shopTransactionId><ecom:cardNumber>5555555555554444</ecom:cardNumber><ecom:expiryMonth>03</ecom:expiryMonth><ecom:expiryYear>31</ecom:expiryYear></ecom:callPagamS2S>"), "{s}");
        // Not SOAP, another operation, or a card element in the wrong namespace: no card.
        assert!(
            find_card(b"<x><cardNumber>1</cardNumber></x>")
                .unwrap()
                .is_none()
        );
        let other = body.replace("https://ecomms2s.sella.it/", "urn:other");
        assert!(find_card(other.as_bytes()).unwrap().is_none());
        assert!(find_card(b"<a><b></a>").is_err());
    }

    #[test]
    fn apikey_added_last_when_configured() {
        let out = add_apikey(CARD_XML.as_bytes(), "k&1").unwrap().unwrap();
        let f = fields(&out);
        assert_eq!(
            f.last().unwrap(),
            &("apikey".to_string(), "k&1".to_string())
        );
        assert!(
            add_apikey(&out, "other").unwrap().is_none(),
            "one already there"
        );
        assert!(add_apikey(b"{}", "k").unwrap().is_none());
    }

    #[test]
    fn rest_submit_token_and_number() {
        let fixture = fixture_json(include_str!(
            "../../tests/fixtures/gateways/axerve/rest_payment_submit_request.json"
        ));
        let f = find_card(&fixture).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Number);
        let body = br#"{"shopLogin":"GESPAY65987","paymentTypeDetails":{"creditcard":{"token":"55XYZWAB12CD4444"}},"buyer":{"name":"M"}}"#;
        let f = find_card(body).unwrap().unwrap();
        assert_eq!(f.slot, Slot::Token);
        let sent = value(&swap(body, f.slot, &card(None)).unwrap());
        assert_eq!(
            sent["paymentTypeDetails"]["creditcard"],
            serde_json::json!({"number": PAN, "expMonth": "03", "expYear": "31"})
        );
        assert_eq!(sent["buyer"]["name"], "M");
    }

    #[test]
    fn outcomes_from_fixtures() {
        let x = |t: &str| t.as_bytes().to_vec();
        assert_eq!(
            outcome(
                200,
                &x(include_str!(
                    "../../tests/fixtures/gateways/axerve/callPagamS2S_response_ok.xml"
                ))
            ),
            Outcome::Approved
        );
        assert_eq!(
            outcome(
                200,
                &x(include_str!(
                    "../../tests/fixtures/gateways/axerve/callPagamS2S_response_ko.xml"
                ))
            ),
            Outcome::Declined
        );
        assert_eq!(
            outcome(
                200,
                &x(include_str!(
                    "../../tests/fixtures/gateways/axerve/callPagamS2S_response_3ds_8006.xml"
                ))
            ),
            Outcome::Challenge
        );
        assert_eq!(
            outcome(
                200,
                &fixture_json(include_str!(
                    "../../tests/fixtures/gateways/axerve/rest_payment_submit_response_ok.json"
                ))
            ),
            Outcome::Approved
        );
        assert_eq!(
            outcome(
                200,
                &fixture_json(include_str!(
                    "../../tests/fixtures/gateways/axerve/rest_payment_submit_response_3ds.json"
                ))
            ),
            Outcome::Challenge
        );
    }

    #[test]
    fn pan_masked_in_xml_answers() {
        let ok = include_str!("../../tests/fixtures/gateways/axerve/callPagamS2S_response_ok.xml");
        assert_eq!(mask_pans(ok.as_bytes(), &[PAN]).as_ref(), ok.as_bytes());
        let leaky = ok.replace(
            "<MaskedPAN>40L76FDIEFMH1112</MaskedPAN>",
            "<MaskedPAN>5555555555554444</MaskedPAN>",
        );
        let masked = String::from_utf8(mask_pans(leaky.as_bytes(), &[]).into_owned()).unwrap();
        assert!(masked.contains("<MaskedPAN>555555******4444</MaskedPAN>"));
    }

    #[test]
    fn trans_details_type_reads_as_stored_credentials() {
        let with = |details: &str| {
            TOKEN_XML
                .replace("40L76FDIEFMH1112", "55XYZWAB12CD4444")
                .replace(
                    "<recurrent>true</recurrent>",
                    &format!("<recurrent>true</recurrent>{details}"),
                )
        };
        let sc = |details: &str| stored_credential(with(details).as_bytes());
        let agr = |kind: &str, mit: bool| StoredCredential {
            agreement: Some((format!("axerve:{kind}"), kind.to_string())),
            merchant_initiated: mit,
            stored_on_file: None,
        };
        for (t, want) in [
            ("01F", agr("RECURRING", false)),
            ("01N", agr("RECURRING", true)),
            ("02F", agr("INSTALLMENT", false)),
            ("02N", agr("INSTALLMENT", true)),
            ("03F", agr("UNSCHEDULED", false)),
            (" 03N ", agr("UNSCHEDULED", true)),
            ("EC", StoredCredential::default()),
            ("09", StoredCredential::default()),
            ("NPA", StoredCredential::default()),
            ("", StoredCredential::default()),
        ] {
            let details = format!(
                "<transDetails><threeDsAuthResult><ECI>05</ECI></threeDsAuthResult><type>{t}</type><recurringTransaction><frequency>30</frequency></recurringTransaction></transDetails>"
            );
            assert_eq!(sc(&details).unwrap(), want, "{t}");
        }
        // A prefixed client, an unknown series, a repeated type, and no transDetails at all.
        let prefixed = with("<transDetails><type>01N</type></transDetails>")
            .replace(
                "<callPagamS2S xmlns=\"https://ecomms2s.sella.it/\">",
                "<ecom:callPagamS2S xmlns:ecom=\"https://ecomms2s.sella.it/\">",
            )
            .replace("</callPagamS2S>", "</ecom:callPagamS2S>");
        assert!(stored_credential(prefixed.as_bytes()).is_ok_and(|s| s.merchant_initiated));
        assert_eq!(
            sc("<transDetails><type>07N</type></transDetails>")
                .unwrap_err()
                .code(),
            "invalid_field"
        );
        assert!(sc("<transDetails><type>01F</type><type>01N</type></transDetails>").is_err());
        assert_eq!(sc("").unwrap(), StoredCredential::default());
        assert_eq!(
            stored_credential(CARD_XML.as_bytes()).unwrap(),
            StoredCredential::default()
        );
        // REST: the card comes with payment/submit, which has no transDetails.
        let rest = fixture_json(include_str!(
            "../../tests/fixtures/gateways/axerve/rest_payment_submit_request.json"
        ));
        assert_eq!(
            stored_credential(&rest).unwrap(),
            StoredCredential::default()
        );
        // The swap keeps transDetails as it was; the sandbox's field list still reads.
        let body = with("<transDetails><type>03N</type></transDetails>");
        let out = swap(body.as_bytes(), Slot::Token, &card(None)).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains(
                "<recurrent>true</recurrent><transDetails><type>03N</type></transDetails>"
            ),
            "{text}"
        );
        assert_eq!(get(&fields(&out), "transDetails"), Some(""));
    }
}
