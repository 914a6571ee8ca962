//! The Axerve adapter on the SPEC's fixtures and on envelopes as SOAP clients write them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::gateway::mask::mask_pans;
use crate::gateway::testing::{fixture_json, replace, value};

const PAN: &str = "5555555555554444";
const CARD_XML: &str =
    include_str!("../../../tests/fixtures/gateways/axerve/callPagamS2S_request_card.xml");
const TOKEN_XML: &str =
    include_str!("../../../tests/fixtures/gateways/axerve/callPagamS2S_request_token.xml");

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
    let refused = |r: Result<(), GatewayError>| r.is_err_and(|e| e.to_string().contains("DOCTYPE"));
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
    // Not SOAP, or another operation: no card.
    assert!(
        find_card(b"<x><cardNumber>1</cardNumber></x>")
            .unwrap()
            .is_none()
    );
    let other_op = body.replace("callPagamS2S", "callSettleS2S");
    assert!(find_card(other_op.as_bytes()).unwrap().is_none());
    assert!(find_card(b"<a><b></a>").is_err());
}

/// Issue 15 point 1: the operation and its elements by local name, in whatever namespace and
/// with whatever prefix the client wrote them, in a SOAP 1.1 or 1.2 envelope.
#[test]
fn any_namespace_and_prefix_the_client_used() {
    let op = |open: &str, close: &str, p: &str| {
        format!(
            "{open}<{p}shopLogin>GESPAY65987</{p}shopLogin><{p}uicCode>242</{p}uicCode><{p}amount>1.00</{p}amount><{p}shopTransactionId>T2</{p}shopTransactionId><{p}tokenValue>XYZWDEMO_VISA_1111</{p}tokenValue>{close}"
        )
    };
    let soap11 = |inner: &str| {
        format!(
            r#"<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/"><soap-env:Body>{inner}</soap-env:Body></soap-env:Envelope>"#
        )
    };
    let soap12 = |inner: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Body>{inner}</soap12:Body></soap12:Envelope>"#
        )
    };
    let cases = [
        // zeep: ns0 on the operation and every element.
        soap11(&op(
            r#"<ns0:callPagamS2S xmlns:ns0="https://ecomms2s.sella.it/">"#,
            "</ns0:callPagamS2S>",
            "ns0:",
        )),
        // .NET: a default namespace, SOAP 1.2.
        soap12(&op(
            r#"<callPagamS2S xmlns="https://ecomms2s.sella.it/">"#,
            "</callPagamS2S>",
            "",
        )),
        // PHP SoapClient against a guessed namespace: ns1 bound on the envelope.
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://ecomms2s.sella.it"><SOAP-ENV:Body>{}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
            op("<ns1:callPagamS2S>", "</ns1:callPagamS2S>", "ns1:")
        ),
        // The operation qualified, its elements in no namespace (elementFormDefault unqualified).
        soap11(&op(
            r#"<e:callPagamS2S xmlns:e="urn:not-axerve">"#,
            "</e:callPagamS2S>",
            "",
        )),
    ];
    for body in &cases {
        let f = find_card(body.as_bytes()).unwrap().expect(body);
        assert_eq!(
            (f.slot, f.value.as_str()),
            (Slot::Token, "XYZWDEMO_VISA_1111")
        );
        let out = swap(body.as_bytes(), f.slot, &card(None)).unwrap();
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
                "expiryYear"
            ],
            "{body}"
        );
        assert_eq!(get(&sent, "cardNumber"), Some(PAN));
        // The new elements in the same namespace as their siblings (prefix or none).
        let text = String::from_utf8(out.to_vec()).unwrap();
        let p = if text.contains("<ns0:shopLogin>") {
            "ns0:"
        } else if text.contains("<ns1:shopLogin>") {
            "ns1:"
        } else {
            ""
        };
        assert!(
            text.contains(&format!("<{p}cardNumber>{PAN}</{p}cardNumber>")),
            "{text}"
        );
        assert_eq!(
            unswapped_token(&out, |v| v.starts_with("XYZW")).unwrap(),
            None
        );
    }
    // Not in a SOAP envelope: no card (and the scan below still reads it).
    let bare = op("<callPagamS2S>", "</callPagamS2S>", "");
    assert!(find_card(bare.as_bytes()).unwrap().is_none());
}

/// What [`unswapped_token`] finds: a token-shaped text outside the card's element, named by
/// its local name; the card's own element is what the swap rewrites.
#[test]
fn tokens_left_where_the_swap_does_not_write() {
    let mine = |v: &str| v.starts_with("XYZW") || v.starts_with("tmp_");
    let with = |extra: &str| {
        TOKEN_XML
            .replace("40L76FDIEFMH1112", "XYZWDEMO_VISA_1111")
            .replace(
                "<recurrent>true</recurrent>",
                &format!("<recurrent>true</recurrent>{extra}"),
            )
    };
    let found = |body: &str| unswapped_token(body.as_bytes(), mine).unwrap();
    // The token in tokenValue is swapped: nothing left.
    assert_eq!(found(&with("")), None);
    assert_eq!(
        found(&with("<customInfo> XYZWDEMO_VISA_1111 </customInfo>")),
        Some("customInfo".into())
    );
    // Nested, written with references, in CDATA, split by a comment: read as the gateway does.
    assert_eq!(
        found(&with(
            "<shippingDetails><shipToName>&#88;YZWDEMO</shipToName></shippingDetails>"
        )),
        Some("shipToName".into())
    );
    assert_eq!(
        found(&with("<buyerName><![CDATA[XYZWX]]></buyerName>")),
        Some("buyerName".into())
    );
    assert_eq!(
        found(&with("<IDEA>XYZ<!-- -->WDEMO</IDEA>")),
        Some("IDEA".into())
    );
    // A card number where the card goes, a token in tokenValue too: tokenValue is left.
    let both = with("").replace(
        "<shopTransactionId>MYSHOP-0002</shopTransactionId>",
        "<shopTransactionId>MYSHOP-0002</shopTransactionId><cardNumber>4111111111111111</cardNumber>",
    );
    assert_eq!(found(&both), Some("tokenValue".into()));
    // Another operation is not swapped at all; a name holding a card number is not shown.
    let settle = with("").replace("callPagamS2S", "callSettleS2S");
    assert_eq!(found(&settle), Some("tokenValue".into()));
    assert_eq!(
        found(&with("<x4111111111111111>tmp_A</x4111111111111111>")),
        Some("(element)".into())
    );
    // Any XML, SOAP or not; JSON is not read here; a DOCTYPE is refused as everywhere.
    assert_eq!(found("<a><b>XYZWQ</b></a>"), Some("b".into()));
    assert_eq!(found(r#"{"a":"XYZWQ"}"#), None);
    let doctype = with("").replacen("?>", "?><!DOCTYPE x>", 1);
    assert!(
        unswapped_token(doctype.as_bytes(), mine).is_err_and(|e| e.to_string().contains("DOCTYPE"))
    );
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
        "../../../tests/fixtures/gateways/axerve/rest_payment_submit_request.json"
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
                "../../../tests/fixtures/gateways/axerve/callPagamS2S_response_ok.xml"
            ))
        ),
        Outcome::Approved
    );
    assert_eq!(
        outcome(
            200,
            &x(include_str!(
                "../../../tests/fixtures/gateways/axerve/callPagamS2S_response_ko.xml"
            ))
        ),
        Outcome::Declined
    );
    assert_eq!(
        outcome(
            200,
            &x(include_str!(
                "../../../tests/fixtures/gateways/axerve/callPagamS2S_response_3ds_8006.xml"
            ))
        ),
        Outcome::Challenge
    );
    assert_eq!(
        outcome(
            200,
            &fixture_json(include_str!(
                "../../../tests/fixtures/gateways/axerve/rest_payment_submit_response_ok.json"
            ))
        ),
        Outcome::Approved
    );
    assert_eq!(
        outcome(
            200,
            &fixture_json(include_str!(
                "../../../tests/fixtures/gateways/axerve/rest_payment_submit_response_3ds.json"
            ))
        ),
        Outcome::Challenge
    );
}

#[test]
fn pan_masked_in_xml_answers() {
    let ok = include_str!("../../../tests/fixtures/gateways/axerve/callPagamS2S_response_ok.xml");
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
        "../../../tests/fixtures/gateways/axerve/rest_payment_submit_request.json"
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
        text.contains("<recurrent>true</recurrent><transDetails><type>03N</type></transDetails>"),
        "{text}"
    );
    assert_eq!(get(&fields(&out), "transDetails"), Some(""));
}
