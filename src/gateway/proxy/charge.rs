//! One charge through the proxy, as typed steps: each state owns what the charge has learnt so
//! far, and its one method consumes it and returns the next state (or the charge's error).
//!
//! `Checked` (gateway, path, method and `X-Panvault-Request-Token` checked; nothing read) ->
//! `Received` (the body read, where the card goes found) -> `Authorized` (the stored-credential
//! and request-token rules passed) -> `Revealed` (a token's card revealed, the audit entry of its
//! use written and syncing) -> `Forwarded` (the gateway's answer read, the card's use durable)
//! -> [`ChargeAnswer`] (the outcome audited, the answer masked, the agreement and the token asked
//! for recorded).
//!
//! Nothing goes back to the merchant before the audit entry of a revealed card's use is on disk,
//! and the types make it so: the reveal hands the entry's pending sync to a `CardUse` that only
//! `Revealed` holds; every step after the reveal fails with `Unsettled`, which turns into a
//! [`ChargeError`] only through `CardUse::settle`, which waits for the sync; and `Forwarded`, the
//! only state that leads to a [`ChargeAnswer`], is built from what `settle` returned.

use futures_util::{Stream, StreamExt};
use zeroize::Zeroizing;

use super::forward::{self, Received as GatewayAnswer};
use super::stored::{self, Stored};
use super::{
    ChargeError, PANVAULT_AUTH_HEADER, Proxy, REQUEST_LIMIT, REQUEST_TOKEN_HEADER, Target,
};
use crate::Error;
use crate::access::{Principal, Scope};
use crate::gateway::{CardData, Found, Gateway, Outcome, Slot, axerve, json, mpgs};
use crate::vault::{Agreement, Ctx, Durable, TokenizeRequest, Vault};

/// A proxied request as the HTTP edge hands it over: the caller authenticated (scope `charge`,
/// with the key [`panvault_key`] found), the rest as received.
pub struct ChargeRequest<'r, B> {
    /// The caller.
    pub principal: Principal,
    /// The request's audit context.
    pub ctx: Ctx,
    /// `{gateway}` as routed.
    pub gateway: &'r str,
    /// The raw request path, `/v1/proxy/{gateway}/{path}` (not percent-decoded).
    pub path: &'r str,
    /// The raw query string, without `?`.
    pub query: &'r str,
    /// The method as sent.
    pub method: &'r str,
    /// The vault as the merchant addressed it, `https://{authority}` (the request target's
    /// authority, else `Host`; `http://` when the vault serves plain HTTP): a `Location` or
    /// `Content-Location` of the gateway's comes back as a URL of the vault's own under it.
    pub origin: Option<String>,
    /// The headers in the order received: lower-case name, raw value.
    pub headers: Vec<(&'r str, &'r [u8])>,
    /// The body, read only once the request line and headers passed (at most
    /// [`REQUEST_LIMIT`] bytes).
    pub body: B,
}

/// The gateway's answer, masked, and what panvault adds about the charge.
#[derive(Debug)]
pub struct ChargeAnswer {
    /// The gateway's status.
    pub status: u16,
    /// The gateway's headers with card numbers masked, minus hop-by-hop ones, `Content-Encoding`
    /// and any `X-Panvault-*`, a `Location` or `Content-Location` under the gateway's base URL
    /// made the vault's own proxy URL; appended in the gateway's order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// panvault's own headers about the charge (`X-Panvault-Token`, `...-Error`), each set after
    /// the gateway's, in this order, replacing one of the same name.
    pub panvault_headers: Vec<(&'static str, String)>,
    /// The gateway's body with card numbers masked.
    pub body: Vec<u8>,
}

/// panvault's key on a proxied request: `X-Panvault-Authorization: Bearer ...` when sent (the
/// merchant's `Authorization` then belongs to the gateway), else `Authorization: Bearer ...`;
/// empty when neither holds one.
pub fn panvault_key(headers: &[(&str, &[u8])]) -> Zeroizing<String> {
    let key_header = if own_header(headers) {
        PANVAULT_AUTH_HEADER
    } else {
        "authorization"
    };
    let raw_key = header(headers, key_header)
        .and_then(header_str)
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    Zeroizing::new(raw_key)
}

/// `ANY /v1/proxy/{gateway}/{path}`: checks the request, swaps the card in, forwards it to the
/// gateway and returns its answer masked (see the module's docs for the steps). `proxy` is
/// `None` when the server has no proxy configured.
pub async fn charge<'a, B, E>(
    proxy: Option<&'a Proxy>,
    vault: Vault,
    request: ChargeRequest<'a, B>,
) -> Result<ChargeAnswer, ChargeError>
where
    B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let (checked, body) = Checked::new(proxy, vault, request)?;
    let received = checked.read(body).await?;
    let authorized = received.authorize().await?;
    let revealed = authorized.reveal().await?;
    revealed.forward().await?.answer().await
}

/// Whether panvault's key came in its own header.
fn own_header(headers: &[(&str, &[u8])]) -> bool {
    headers.iter().any(|(n, _)| *n == PANVAULT_AUTH_HEADER)
}

/// The first value of header `name`.
fn header<'h>(headers: &[(&str, &'h [u8])], name: &str) -> Option<&'h [u8]> {
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A header value as text: visible ASCII and tabs only (as the HTTP header types read them).
fn header_str(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// What every step knows of the charge: who charges, at which gateway, what the request said.
struct Charge<'a> {
    vault: Vault,
    client: &'a reqwest::Client,
    target: &'a Target,
    gateway: Gateway,
    url: reqwest::Url,
    method: &'a str,
    /// The vault as the merchant addressed it.
    origin: Option<String>,
    headers: Vec<(&'a str, &'a [u8])>,
    principal: Principal,
    merchant: String,
    ctx: Ctx,
    /// `X-Panvault-Request-Token` (tokenize the raw card of this charge), and `:FORCED:`.
    request_token: Option<(String, bool)>,
}

impl Charge<'_> {
    /// Audits the charge's outcome (never a raw card: `charged` is the panvault token, if any).
    async fn audit(&self, charged: Option<&str>, outcome: &'static str, detail: String) {
        self.vault
            .audit_charge(&self.ctx, &self.merchant, charged, outcome, detail)
            .await;
    }

    /// The stored-credential rules for a charge on `token` (the body's fields, the token's
    /// agreements).
    fn stored_credential(&self, token: &str, body: &[u8]) -> Result<Stored, ChargeError> {
        let sc = self
            .gateway
            .stored_credential(body)
            .map_err(ChargeError::Unreadable)?;
        stored::on_token(&sc, self.gateway, || {
            Ok(self.vault.get(&self.merchant, token)?.agreements)
        })
    }
}

/// The request line and headers checked, before anything is read.
struct Checked<'a>(Charge<'a>);

impl<'a> Checked<'a> {
    fn new<B>(
        proxy: Option<&'a Proxy>,
        vault: Vault,
        request: ChargeRequest<'a, B>,
    ) -> Result<(Checked<'a>, B), ChargeError> {
        let ChargeRequest {
            principal,
            ctx,
            gateway: name,
            path: raw_path,
            query,
            method,
            origin,
            headers,
            body,
        } = request;
        let merchant = principal.merchant()?.to_string();
        let gateway = Gateway::parse(name).ok_or(ChargeError::UnknownGateway)?;
        let prefix = format!("/v1/proxy/{}/", gateway.name());
        // The raw path must spell the gateway as routed: `/v1/proxy/%6eexi/...` would leave no tail.
        let tail = raw_path
            .strip_prefix(&prefix)
            .ok_or(ChargeError::GatewayNotPlain)?;
        let path = forward::checked_path(tail).map_err(ChargeError::InvalidPath)?;
        let proxy = proxy.ok_or(ChargeError::ProxyUnavailable)?;
        let target = proxy
            .targets
            .get(&gateway)
            .ok_or(ChargeError::GatewayUnconfigured)?;
        let url = forward::target_url(&target.base, path, query).ok_or(ChargeError::OutsideBase)?;

        // `X-Panvault-Request-Token`: tokenize the raw card of this charge (checked before
        // anything is forwarded).
        let request_token = match header(&headers, REQUEST_TOKEN_HEADER) {
            None => None,
            Some(v) => {
                // Making a token takes the `tokenize` scope, through the proxy as on
                // `POST /v1/tokens`: `charge` alone only spends tokens.
                principal.require(Scope::Tokenize)?;
                let v = header_str(v)
                    .ok_or(Error::InvalidCustomToken {
                        reason: "must be ASCII",
                    })?
                    .to_string();
                let parsed = crate::token::TokenRequest::parse(Some(&v))?;
                Some((v, parsed.forced))
            }
        };
        // Only the methods the gateways' APIs use (TRACE would echo the credentials added).
        if !matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(ChargeError::MethodNotAllowed);
        }
        let charge = Charge {
            vault,
            client: &proxy.client,
            target,
            gateway,
            url,
            method,
            origin,
            headers,
            principal,
            merchant,
            ctx,
            request_token,
        };
        Ok((Checked(charge), body))
    }

    /// Reads the body and finds where the card goes.
    async fn read<B, E>(self, body: B) -> Result<Received<'a>, ChargeError>
    where
        B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    {
        let Checked(charge) = self;
        let body = read_body(body).await?;
        // Every format the proxy reads is UTF-8; a body that is not could hold a token the
        // adapters never see, so it is refused rather than forwarded as it is.
        let text = std::str::from_utf8(&body).map_err(|e| ChargeError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        // A JSON body with a duplicate key anywhere is refused: the gateway's parser might read
        // the other value than the one checked here.
        if matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'[')) {
            json::unique_keys(text).map_err(ChargeError::DuplicateKey)?;
        }
        let found = charge
            .gateway
            .find_card(&body)
            .map_err(ChargeError::Unreadable)?;
        // A token of this merchant anywhere the swap does not write would leave as it is: the
        // request is refused instead (before anything is revealed or forwarded).
        let prefix = charge.vault.merchant(&charge.merchant)?.prefix;
        if let Some(element) = charge
            .gateway
            .unswapped_token(&body, |v| is_own_token(v, prefix.as_str()))
            .map_err(ChargeError::Unreadable)?
        {
            return Err(ChargeError::TokenNotSwapped { element });
        }
        Ok(Received {
            charge,
            body,
            found,
        })
    }
}

async fn read_body<B, E>(mut body: B) -> Result<Zeroizing<Vec<u8>>, ChargeError>
where
    B: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let mut read = Zeroizing::new(Vec::with_capacity(4096));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ChargeError::BodyUnreadable)?;
        if read.len() + chunk.len() > REQUEST_LIMIT {
            return Err(ChargeError::BodyTooLarge);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
}

/// The body read and where the card goes found.
struct Received<'a> {
    charge: Charge<'a>,
    body: Zeroizing<Vec<u8>>,
    found: Option<Found>,
}

/// What stands where the gateway takes a card.
enum Card {
    /// Nothing, or a gateway's own token: forwarded as sent.
    None,
    /// A raw card number: masked in the answer, tokenized if `X-Panvault-Request-Token` asked.
    Raw {
        pan: Zeroizing<String>,
        tokenize: Option<Tokenize>,
    },
    /// A panvault token, whose card goes where it stood.
    Token {
        token: Zeroizing<String>,
        slot: Slot,
        stored: Stored,
    },
}

/// The token `X-Panvault-Request-Token` asked for.
struct Tokenize {
    request: TokenizeRequest,
    forced: bool,
    /// The agreement a raw card's charge establishes, for the new token.
    agreement: Option<Agreement>,
}

impl<'a> Received<'a> {
    /// The rules that need no card: a token's stored credentials (a refusal is audited), and
    /// what `X-Panvault-Request-Token` needs.
    async fn authorize(self) -> Result<Authorized<'a>, ChargeError> {
        let Received {
            charge,
            mut body,
            found,
        } = self;
        let mut card = Card::None;
        if let Some(found) = found {
            // May be a raw card (request-token flow): zeroized like the body it came from.
            let value = Zeroizing::new(found.value.trim().to_string());
            if is_panvault_token(&value) {
                // Stored credentials: checked before the card is even revealed.
                let stored = match charge.stored_credential(&value, &body) {
                    Ok(st) => st,
                    Err(e) => {
                        let refused = charge.gateway.name().to_string();
                        charge.audit(Some(&value), "refused", refused).await;
                        return Err(e);
                    }
                };
                if charge.request_token.is_some() {
                    return Err(ChargeError::RequestTokenOnToken);
                }
                card = Card::Token {
                    token: value,
                    slot: found.slot,
                    stored,
                };
            } else if found.slot == Slot::Number && value.bytes().all(|b| b.is_ascii_digit()) {
                // A raw card where the card number goes (a gateway's own token in its token
                // field is neither masked nor tokenized).
                let tokenize = match &charge.request_token {
                    None => None,
                    Some((rt, forced)) => {
                        Some(to_tokenize(&charge, &value, rt, *forced, &mut body)?)
                    }
                };
                card = Card::Raw {
                    pan: value,
                    tokenize,
                };
            }
        }
        if charge.request_token.is_some()
            && !matches!(
                card,
                Card::Raw {
                    tokenize: Some(_),
                    ..
                }
            )
        {
            return Err(ChargeError::RequestTokenWithoutCard);
        }
        Ok(Authorized { charge, body, card })
    }
}

/// The token a raw card's charge asks for with `X-Panvault-Request-Token: rt`. A
/// cardholder-initiated charge that stores the card under an agreement (its first storing use)
/// puts the agreement on the new token once approved, and MPGS `storedOnFile` becomes
/// `TO_BE_STORED` in `body` when the merchant left it out.
fn to_tokenize(
    charge: &Charge<'_>,
    pan: &Zeroizing<String>,
    rt: &str,
    forced: bool,
    body: &mut Zeroizing<Vec<u8>>,
) -> Result<Tokenize, ChargeError> {
    crate::pan::Pan::parse(pan)?;
    let (month, year) = charge
        .gateway
        .find_expiry(body)
        .ok_or(Error::InvalidExpiry {
            reason: "the request carries no expiry in the gateway's format",
        })?;
    let request = TokenizeRequest {
        pan: pan.clone(),
        expiry_month: i64::from(month),
        expiry_year: i64::from(year),
        request_token: Some(rt.to_string()),
        ..Default::default()
    };
    let sc = charge
        .gateway
        .stored_credential(body)
        .map_err(ChargeError::Unrewritable)?;
    let mut agreement = None;
    if let Some((fill_to_be_stored, a)) = stored::on_raw_card(sc) {
        if fill_to_be_stored {
            *body = mpgs::set_stored_on_file(body, "TO_BE_STORED")
                .map_err(ChargeError::Unrewritable)?;
        }
        agreement = Some(a);
    }
    Ok(Tokenize {
        request,
        forced,
        agreement,
    })
}

/// Whether `v` is shaped like a panvault token: `tmp_...`, or a well-formed standard (`NN` +
/// prefix + 6 + 4 digits) or custom token (prefix + value) whose prefix would be a merchant
/// prefix (four uppercase letters). Whether that prefix is registered does not matter: a
/// token-shaped value of no merchant is looked up like any other and refused 404
/// `token_not_found`, so the answer never tells which prefixes exist (issue 14 item 9). A
/// gateway's own token of that shape is refused likewise (documented); other values pass.
fn is_panvault_token(v: &str) -> bool {
    token_shaped(v, |_| true)
}

/// Whether `v` is shaped like a token of the merchant whose prefix is `prefix` (or like a
/// temporary token): [`is_panvault_token`] with that one prefix. What is looked for where the
/// swap does not write: a shape with any prefix would take Axerve's own shop logins
/// (`GESPAY65987`) and many order ids for tokens, and a token of another merchant reveals no card.
fn is_own_token(v: &str, prefix: &str) -> bool {
    token_shaped(v, |p| p == prefix)
}

/// [`is_panvault_token`], the prefix found further checked by `prefix_ok`.
fn token_shaped(v: &str, prefix_ok: impl Fn(&str) -> bool) -> bool {
    if v.starts_with(crate::token::TEMPORARY_PREFIX) {
        return true;
    }
    if !crate::token::is_well_formed_token(v) {
        return false;
    }
    let b = v.as_bytes();
    let standard = (b.len() == crate::token::MASKED_TOKEN_LEN
        && b[..2].iter().all(u8::is_ascii_digit)
        && b[12..].iter().all(u8::is_ascii_digit))
    .then(|| v.get(2..6))
    .flatten();
    [standard, v.get(..4)]
        .into_iter()
        .flatten()
        .any(|p| crate::token::MerchantPrefix::parse(p).is_ok() && prefix_ok(p))
}

/// The rules passed: what remains is the card, if a token stands for one.
struct Authorized<'a> {
    charge: Charge<'a>,
    body: Zeroizing<Vec<u8>>,
    card: Card,
}

/// What the charge does once the gateway answered.
#[derive(Default)]
struct FollowUp {
    /// The panvault token this charge uses, for its audit entries (never a raw card).
    charged: Option<Zeroizing<String>>,
    /// Card numbers to mask in the answer whatever the gateway does with them.
    known: Vec<Zeroizing<String>>,
    /// The CVV of the temporary token this charge used, masked in the answer too.
    cvvs: Vec<Zeroizing<String>>,
    /// An agreement a cardholder-initiated charge establishes on its token, once approved.
    record: Option<(String, Agreement)>,
    /// The token `X-Panvault-Request-Token` asked for.
    tokenize: Option<Tokenize>,
}

/// A token's card, revealed, and where it goes.
struct Swap {
    card: crate::vault::Revealed,
    slot: Slot,
    /// MPGS `storedOnFile` to fill in (`None` elsewhere).
    fill_stored_on_file: Option<&'static str>,
    /// A temporary token, used up just before the request leaves.
    temporary: Option<Zeroizing<String>>,
}

impl<'a> Authorized<'a> {
    /// Reveals a token's card. Its use is audited: written before the card leaves, synced while
    /// it travels; from here on the charge holds that sync as a [`CardUse`].
    async fn reveal(self) -> Result<Revealed<'a>, ChargeError> {
        let Authorized { charge, body, card } = self;
        let mut follow = FollowUp::default();
        let (swap, card_use) = match card {
            Card::None => (None, CardUse(None)),
            Card::Raw { pan, tokenize } => {
                follow.known.push(pan);
                follow.tokenize = tokenize;
                (None, CardUse(None))
            }
            Card::Token {
                token,
                slot,
                stored,
            } => {
                let (card, use_audited) = charge
                    .vault
                    .reveal_for_charge(&charge.ctx, &charge.merchant, &token)
                    .await?;
                // Nothing below can fail before the `Revealed` state holds the sync.
                let temporary = token.starts_with(crate::token::TEMPORARY_PREFIX);
                if !temporary {
                    follow.record = stored.record.map(|a| (token.to_string(), a));
                }
                let swap = Swap {
                    card,
                    slot,
                    fill_stored_on_file: stored.fill_stored_on_file,
                    temporary: temporary.then(|| token.clone()),
                };
                follow.charged = Some(token);
                (Some(swap), CardUse(Some(use_audited)))
            }
        };
        Ok(Revealed {
            charge,
            body,
            swap,
            card_use,
            follow,
        })
    }
}

/// The pending sync of a revealed card's use (its audit entry); `None` when no card was
/// revealed. Consumed only by [`CardUse::settle`].
#[must_use = "the card's audit entry must be durable before any answer"]
struct CardUse(Option<Durable>);

/// A refusal or failure after the reveal: it becomes a [`ChargeError`] only through
/// [`CardUse::settle`].
struct Unsettled(ChargeError);

impl From<ChargeError> for Unsettled {
    fn from(e: ChargeError) -> Self {
        Unsettled(e)
    }
}

impl From<Error> for Unsettled {
    fn from(e: Error) -> Self {
        Unsettled(ChargeError::Vault(e))
    }
}

impl CardUse {
    /// Waits for the card use's audit entry, then hands back what the steps after the reveal
    /// came to. If that sync failed the gateway may still have acted on the charge, so its answer
    /// goes back (a retry could charge twice); the store refuses every later write and `/readyz`
    /// fails.
    async fn settle<T>(self, outcome: Result<T, Unsettled>) -> Result<T, ChargeError> {
        if let Some(d) = self.0
            && let Err(e) = d.wait().await
        {
            tracing::error!(
                code = e.code(),
                "the audit entry of a charge's card use did not become durable"
            );
        }
        outcome.map_err(|Unsettled(e)| e)
    }
}

/// The card revealed (if a token stood for one) and its use's audit entry syncing.
struct Revealed<'a> {
    charge: Charge<'a>,
    body: Zeroizing<Vec<u8>>,
    swap: Option<Swap>,
    card_use: CardUse,
    follow: FollowUp,
}

impl<'a> Revealed<'a> {
    /// Swaps the card in, adds the gateway's credentials, sends, reads the answer; then waits
    /// for the card use's audit entry, whatever came of it. A gateway that failed the charge is
    /// audited (after that entry).
    async fn forward(self) -> Result<Forwarded<'a>, ChargeError> {
        let Revealed {
            charge,
            body,
            swap,
            card_use,
            mut follow,
        } = self;
        let sent = send(&charge, body, swap, &mut follow).await;
        // The card's use is on disk before the outcome's entry and before anything goes back.
        match card_use.settle(sent).await {
            Ok(answer) => Ok(Forwarded {
                charge,
                follow,
                answer,
            }),
            Err(e) => {
                if e.is_gateway_failure() {
                    let detail = format!("{}: {}", charge.gateway.name(), e.code());
                    let charged = follow.charged.as_deref().map(|t| t.as_str());
                    charge.audit(charged, "failed", detail).await;
                }
                Err(e)
            }
        }
    }
}

/// The request as it leaves: the card swapped in, the gateway's credentials added, a temporary
/// token used up (the last local step); then sent and its answer read.
async fn send(
    charge: &Charge<'_>,
    mut body: Zeroizing<Vec<u8>>,
    swap: Option<Swap>,
    follow: &mut FollowUp,
) -> Result<GatewayAnswer, Unsettled> {
    let mut consume_temporary = None;
    if let Some(swap) = swap {
        // A temporary token serves exactly one charge: its CVV comes out with it, and it is
        // gone once every local check has passed (just before the request leaves).
        let cvv = match &swap.temporary {
            Some(t) => charge.vault.peek_temporary_cvv(&charge.merchant, t)?,
            None => None,
        };
        let card = &swap.card;
        let data = CardData {
            pan: card.pan.digits(),
            month: card.expiry.month,
            year: card.expiry.year,
            cvv: cvv.as_ref().map(|c| c.digits()),
        };
        body = charge
            .gateway
            .swap(&body, swap.slot, &data)
            .map_err(ChargeError::Unrewritable)?;
        follow
            .known
            .push(Zeroizing::new(card.pan.digits().to_string()));
        if let Some(c) = &cvv {
            follow.cvvs.push(Zeroizing::new(c.digits().to_string()));
        }
        // Only MPGS has `storedOnFile` (`fill_stored_on_file` is `None` elsewhere).
        if let Some(v) = swap.fill_stored_on_file {
            body = mpgs::set_stored_on_file(&body, v).map_err(ChargeError::Unrewritable)?;
        }
        consume_temporary = swap.temporary;
    }
    let p = &charge.principal;
    let creds = charge
        .target
        .cfg
        .creds(p.shop_login.as_deref(), p.merchant_id.as_deref());
    // Axerve SOAP takes its apikey in the body.
    if charge.gateway == Gateway::Axerve
        && let Some(k) = creds.api_key
        && let Some(with_key) = axerve::add_apikey(&body, k).map_err(ChargeError::ApiKeyNotAdded)?
    {
        body = with_key;
    }

    // Headers: the merchant's, minus panvault's own and hop-by-hop ones.
    let method = reqwest::Method::from_bytes(charge.method.as_bytes())
        .map_err(|_| ChargeError::UnsupportedMethod)?;
    let mut headers = forward::merchant_headers(&charge.headers, own_header(&charge.headers));
    forward::add_gateway_headers(charge.gateway, creds, &method, &charge.url, &mut headers);
    // The last local step: a temporary token is used up now (a concurrent charge that took it
    // first wins; this one then forwards nothing).
    if let Some(t) = &consume_temporary {
        charge.vault.take_temporary(&charge.merchant, t)?;
    }

    let mut request = charge
        .client
        .request(method, charge.url.clone())
        .headers(headers)
        .timeout(charge.target.timeout);
    // No body, no Content-Length: 0 (a GET stays a plain GET).
    if !body.is_empty() {
        // Handed over, not copied: the buffer (card, CVV) is wiped when the client drops it.
        request = request.body(bytes::Bytes::from_owner(body));
    }
    Ok(forward::send(request, charge.gateway, charge.target.timeout).await?)
}

/// The gateway's answer read, and the card's use durable.
struct Forwarded<'a> {
    charge: Charge<'a>,
    follow: FollowUp,
    answer: GatewayAnswer,
}

impl Forwarded<'_> {
    /// Audits the outcome, masks the answer, records the agreement of an approved charge and the
    /// token asked for. The charge happened either way, so a failure of those last two is a
    /// header of the answer, not an error.
    async fn answer(self) -> Result<ChargeAnswer, ChargeError> {
        let Forwarded {
            charge,
            follow,
            answer,
        } = self;
        let status = answer.status;
        let outcome = charge.gateway.outcome(status, &answer.body);
        // The charge's outcome, audited (the card's use was audited as a reveal before it left,
        // and is durable by now).
        let word = match outcome {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::Challenge => "challenge",
            Outcome::Other => "other",
        };
        let charged = follow.charged.as_deref().map(|t| t.as_str());
        let detail = format!("{}: HTTP {status}", charge.gateway.name());
        charge.audit(charged, word, detail).await;
        let forward::Masked { mut headers, body } =
            forward::masked(&answer, &follow.known, &follow.cvvs)?;
        drop(answer);
        // The gateway's own address never reaches the merchant: its URLs become the vault's.
        let root = charge
            .origin
            .as_deref()
            .and_then(|o| forward::proxy_root(o, charge.gateway));
        forward::own_urls(&mut headers, &charge.target.base, root.as_deref());
        let approved = outcome == Outcome::Approved;
        let (vault, ctx, merchant) = (&charge.vault, &charge.ctx, charge.merchant.as_str());
        let mut panvault_headers = Vec::new();
        if let Some((token, agreement)) = follow.record
            && approved
            && let Err(e) = vault.add_agreement(ctx, merchant, &token, agreement).await
        {
            tracing::warn!(
                code = e.code(),
                "the agreement of an approved charge was not recorded"
            );
            panvault_headers.push(("X-Panvault-Agreement-Error", e.code().to_string()));
        }
        // The token asked for: when the gateway approved, or whatever the outcome with
        // `:FORCED:`.
        if let Some(t) = follow.tokenize
            && (t.forced || approved)
        {
            match vault.tokenize(ctx, merchant, &t.request).await {
                Ok(new) => {
                    if let Some(a) = t.agreement
                        && approved
                        && let Err(e) = vault.add_agreement(ctx, merchant, &new.info.token, a).await
                    {
                        panvault_headers.push(("X-Panvault-Agreement-Error", e.code().to_string()));
                    }
                    panvault_headers.push(("X-Panvault-Token", new.info.token.clone()));
                    panvault_headers.push((
                        "X-Panvault-Token-Expiry-Month",
                        new.info.token_expiry_month.to_string(),
                    ));
                    panvault_headers.push((
                        "X-Panvault-Token-Expiry-Year",
                        new.info.token_expiry_year.to_string(),
                    ));
                }
                Err(e) => panvault_headers.push(("X-Panvault-Token-Error", e.code().to_string())),
            }
        }
        Ok(ChargeAnswer {
            status,
            headers,
            panvault_headers,
            body,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn panvaults_key_comes_from_its_own_header_first() {
        let gateway_auth: &[u8] = b"Basic bWVyY2hhbnQ6cHc=";
        let both = [
            ("authorization", gateway_auth),
            (PANVAULT_AUTH_HEADER, b"Bearer  pvk_own ".as_slice()),
        ];
        assert_eq!(panvault_key(&both).as_str(), "pvk_own");
        let plain = [("authorization", b"Bearer pvk_plain".as_slice())];
        assert_eq!(panvault_key(&plain).as_str(), "pvk_plain");
        // The gateway's own Authorization is not panvault's key.
        assert_eq!(
            panvault_key(&[("authorization", gateway_auth)]).as_str(),
            ""
        );
        // Its own header present but not Bearer: no key (Authorization is not looked at).
        let odd = [
            (PANVAULT_AUTH_HEADER, b"pvk_x".as_slice()),
            ("authorization", b"Bearer pvk_plain".as_slice()),
        ];
        assert_eq!(panvault_key(&odd).as_str(), "");
        assert_eq!(panvault_key(&[]).as_str(), "");
    }

    /// Issue 14 item 9: the shape decides, never whether the prefix is registered (the
    /// function has no vault to ask).
    #[test]
    fn token_shape_alone_makes_a_panvault_token() {
        for t in [
            "tmp_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            "ZQZQSHOP_9",
            "37ZQZQAB12CD0005",
            "ABCD1",
        ] {
            assert!(is_panvault_token(t), "{t}");
        }
        for v in [
            "4111111111111111",
            "b5c5f0a1-2a2c-4f6e-8b39-0c7f6b5a1234",
            "zqzq-own-token-1",
            "ABC",
            "411111******1111",
            "Abcd1234",
        ] {
            assert!(!is_panvault_token(v), "{v}");
        }
    }

    /// Issue 15: where the swap does not write, only this merchant's token shapes (and temporary
    /// tokens) count, so a shop login such as `GESPAY65987` passes.
    #[test]
    fn own_token_shapes_only_under_the_merchants_prefix() {
        for t in [
            "tmp_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            "XYZWDEMO_VISA_1111",
            "41XYZW7QK2ZD1111",
            "XYZW1",
        ] {
            assert!(is_own_token(t, "XYZW"), "{t}");
        }
        for v in [
            "GESPAY65987",
            "ZQZQSHOP_9",
            "37ZQZQAB12CD0005",
            "4111111111111111",
            "xyzwdemo",
            "XYZ",
            "XYZW.1",
        ] {
            assert!(!is_own_token(v, "XYZW"), "{v}");
        }
    }

    #[test]
    fn header_text_is_visible_ascii_and_tabs() {
        assert_eq!(header_str(b"Bearer\tpvk_1 ~"), Some("Bearer\tpvk_1 ~"));
        assert_eq!(header_str(b"caf\xc3\xa9"), None);
        assert_eq!(header_str(b"a\x7fb"), None);
        assert_eq!(header_str(b"a\nb"), None);
        let h = [("x-a", b"1".as_slice()), ("x-a", b"2".as_slice())];
        assert_eq!(header(&h, "x-a"), Some(b"1".as_slice()));
        assert_eq!(header(&h, "x-b"), None);
    }
}
