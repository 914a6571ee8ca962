//! The operations drill (deploy/drill.sh) run against this build: init, sealed start, unseal,
//! tokenize, backup with the keys kept apart, restore into a new data dir, unseal, reveal and
//! compare, `audit verify` on both (issue 6 acceptance).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn operations_drill_passes() {
    for tool in ["bash", "curl", "jq", "tar", "sha256sum"] {
        if !have(tool) {
            eprintln!("SKIP operations_drill_passes: {tool} is not installed");
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/drill.sh"))
        .env("PANVAULT_BIN", env!("CARGO_BIN_EXE_panvault"))
        .env("DRILL_DIR", work.path().join("drill"))
        .env_remove("PANVAULT_PASSPHRASE_FILE")
        .env_remove("PANVAULT_SHARES_FILE")
        .env_remove("PANVAULT_DATA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "drill failed: {stderr}");
    assert!(stdout.contains("drill: OK"), "{stdout}");
    assert_eq!(stdout.matches("audit chain ok").count(), 2, "{stdout}");
    assert!(!stdout.contains("4111111111111111") && !stderr.contains("4111111111111111"));
}
