//! Cost of the answer masker on the proxy's hot path (issue 14 item 5): every proxied answer is
//! read for card numbers in every encoding. Typical answers: a Nexi-like JSON answer with
//! amounts, ids and a masked card (no card to mask), the same with the charged card echoed, and
//! an answer with no digit at all (never copied). Run: `cargo bench --bench mask`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use panvault::mask::{mask_answer, unreadable};

const KNOWN: [&str; 1] = ["4111111111111111"];

fn per_call_ns(body: &[u8], n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let out = mask_answer(std::hint::black_box(body), &KNOWN, &["123"], false);
        std::hint::black_box(unreadable(body, Some(b"application/json")));
        std::hint::black_box(out);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let answer = r#"{"operation":{"orderId":"btid2384983","operationId":"3470744","operationType":"AUTHORIZATION","operationResult":"AUTHORIZED","operationTime":"2026-12-04 18:02:19.0","paymentMethod":"CARDS","paymentCircuit":"VISA","paymentInstrumentInfo":"***1111","paymentEndToEndId":"3470744","cancelledOperationId":null,"operationAmount":"3545","operationCurrency":"EUR","customerInfo":{"cardHolderName":"Mauro Morandi","cardHolderEmail":"mauro.morandi@nexi.it","billingAddress":{"name":"Mario Rossi","street":"Piazza Maggiore, 1","additionalInfo":"Quinto Piano, Scala Destra","city":"Bologna","postCode":"40124","province":"BO","country":"ITA"}},"warnings":[],"paymentLink":null,"additionalData":{"authorizationCode":"123456","rrn":"123456789012","executionMode":"SYNCHRONOUS"}}}"#;
    let echoed = answer.replace("***1111", "4111111111111111");
    let no_digit = answer
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect::<String>();
    println!("# answer masker, ns per answer (mask_answer + unreadable)");
    println!();
    println!("| answer | bytes | ns |");
    println!("|---|---:|---:|");
    for (name, body) in [
        ("JSON answer, no card", answer.to_string()),
        ("JSON answer, card echoed", echoed),
        ("JSON answer, no digit", no_digit),
    ] {
        per_call_ns(body.as_bytes(), 2_000);
        let ns = per_call_ns(body.as_bytes(), 50_000);
        println!("| {name} | {} | {ns:.0} |", body.len());
    }
}
