//! The TLS policy seen from outside: the real `panvault serve`, probed with `openssl s_client`
//! (a client that, unlike rustls, still speaks the old protocols and weak suites). TLS 1.0 and
//! 1.1 are refused, TLS 1.2 with a CBC (non-AEAD) or static-RSA suite is refused, TLS 1.2
//! ECDHE with AES-GCM or ChaCha20-Poly1305 and TLS 1.3 are accepted.
//!
//! `.ci/run` installs openssl, so CI always runs these; locally they are skipped, with a line
//! saying so, only when no `openssl` binary is on the PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: no `openssl` binary on the PATH (.ci/run installs it; CI runs this)");
    }
    ok
}

/// One handshake with `openssl s_client` and `args`; returns whether it completed (a protocol
/// and cipher were agreed) and s_client's whole output for the failure message.
fn handshake(addr: &str, ca: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error", "-no_ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An immediate EOF on stdin: s_client closes once the handshake is over (or failed).
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenSSL prints "Cipher is (NONE)" / "no peer certificate available" when nothing was
    // agreed; a completed handshake names its protocol and cipher and verifies the chain.
    let agreed = text.contains("Verify return code: 0 (ok)")
        && !text.contains("Cipher is (NONE)")
        && !text.contains("Cipher    : 0000");
    (out.status.success() && agreed, text)
}

#[test]
fn tls_policy_refuses_old_protocols_and_weak_suites() {
    if !openssl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let init = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["init", "--dev", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let (child, base, _client, _log) = common::serve(&data, &[]);
    let addr = base.trim_start_matches("https://").to_string();
    let ca = data.join("tls/ca.pem");

    // `@SECLEVEL=0` lets this OpenSSL offer what its own defaults would already refuse, so a
    // failure is the server's refusal and not the client's.
    let refused: [(&str, &[&str]); 6] = [
        (
            "TLS 1.0",
            &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"] as &[&str],
        ),
        ("TLS 1.1", &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        (
            "TLS 1.2 ECDHE AES128-CBC-SHA",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
            ],
        ),
        (
            "TLS 1.2 static RSA AES128-SHA",
            &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"],
        ),
        (
            "TLS 1.2 CBC-SHA256/384",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:\
                 ECDHE-RSA-AES256-SHA384:AES256-SHA256:@SECLEVEL=0",
            ],
        ),
        (
            "TLS 1.2 3DES / RC4 / NULL",
            &[
                "-tls1_2",
                "-cipher",
                "DES-CBC3-SHA:ECDHE-RSA-DES-CBC3-SHA:RC4-SHA:NULL-SHA256:eNULL:@SECLEVEL=0",
            ],
        ),
    ];
    for (name, args) in refused {
        let (ok, text) = handshake(&addr, &ca, args);
        assert!(!ok, "{name} was accepted, it must be refused:\n{text}");
        // The refusal must be the server's: the client did offer what was asked.
        assert!(
            !text.contains("no protocols available")
                && !text.contains("no ciphers available")
                && !text.contains("no cipher match"),
            "{name}: this openssl would not offer it, so nothing was proven:\n{text}"
        );
    }

    let accepted: [(&str, &[&str], &str); 4] = [
        (
            "TLS 1.2 ECDHE AES-GCM",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
                 ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
            ] as &[&str],
            "TLSv1.2",
        ),
        (
            "TLS 1.2 ECDHE ChaCha20-Poly1305",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
            ],
            "TLSv1.2",
        ),
        ("TLS 1.3", &["-tls1_3"], "TLSv1.3"),
        (
            "TLS 1.3 ChaCha20-Poly1305",
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            "TLSv1.3",
        ),
    ];
    for (name, args, proto) in accepted {
        let (ok, text) = handshake(&addr, &ca, args);
        assert!(ok, "{name} was refused, it must be accepted:\n{text}");
        assert!(
            text.contains(&format!("Protocol  : {proto}"))
                || text.contains(&format!("New, {proto}")),
            "{name}: expected {proto}:\n{text}"
        );
    }
    common::stop(child);
}
