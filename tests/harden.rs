//! Process hardening at `serve` start (issue 6, item 2), black-box: refusals name the path and
//! mode; a started server reports core dumps off and memory locking in its log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_panvault"));
    c.env_remove("PANVAULT_PASSPHRASE_FILE")
        .env_remove("PANVAULT_SHARES_FILE")
        .env_remove("PANVAULT_DATA")
        .env_remove("PANVAULT_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn dev_vault() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = bin()
        .args(["init", "--dev", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `serve` that must stop at once: its exit status and stderr.
fn serve_refused(data: &Path, extra: &[&str]) -> String {
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "serve started: {err}");
    err
}

#[test]
fn readable_key_file_stops_serve_naming_it() {
    let dir = dev_vault();
    let data = dir.path().join("data");
    let keyring = data.join("keys/keyring.json");
    chmod(&keyring, 0o644);
    let err = serve_refused(&data, &[]);
    assert!(err.contains(&keyring.display().to_string()), "{err}");
    assert!(err.contains("0644"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn open_data_dir_stops_serve_naming_it() {
    let dir = dev_vault();
    let data = dir.path().join("data");
    chmod(&data, 0o755);
    let err = serve_refused(&data, &[]);
    assert!(
        err.contains(&data.display().to_string()) && err.contains("0755"),
        "{err}"
    );
}

#[test]
fn world_readable_config_with_secrets_stops_serve() {
    let dir = dev_vault();
    let data = dir.path().join("data");
    let cfg = dir.path().join("panvault.toml");
    std::fs::write(
        &cfg,
        "[gateways.mpgs]\napi_password = \"not-a-real-password\"\n",
    )
    .unwrap();
    chmod(&cfg, 0o644);
    let err = serve_refused(&data, &["--config", cfg.to_str().unwrap()]);
    assert!(
        err.contains("panvault.toml") && err.contains("0644"),
        "{err}"
    );
    assert!(err.contains("gateways.mpgs.api_password"), "{err}");
    assert!(!err.contains("not-a-real-password"), "{err}");
}

#[test]
fn serve_reports_its_hardening() {
    let dir = dev_vault();
    let data = dir.path().join("data");
    let cfg = dir.path().join("panvault.toml");
    std::fs::write(
        &cfg,
        "[gateways.mpgs]\napi_password = \"not-a-real-password\"\n",
    )
    .unwrap();
    chmod(&cfg, 0o600);
    let (child, base, client, log) = common::serve(&data, &["--config".as_ref(), cfg.as_os_str()]);
    let (status, _) = common::send(client.get(format!("{base}/healthz")));
    assert_eq!(status, 200);
    let pid = child.id();
    // Not dumpable: /proc/PID is then owned by root; RLIMIT_CORE is 0 (soft and hard).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    if !limits.is_empty() {
        assert_eq!(core.get(4..6), Some(&["0", "0"][..]), "{limits}");
    }
    common::stop(child);
    let log = log.lock().unwrap().join("\n");
    for name in [
        "core_dumps",
        "not_dumpable",
        "memory_locked",
        "data_dir_mode",
        "key_files_mode",
        "config_mode",
        "secret_files_mode",
    ] {
        assert!(log.contains(name), "no {name} line in:\n{log}");
    }
    assert!(log.contains("RLIMIT_CORE"), "{log}");
    assert!(!log.contains("not-a-real-password"), "{log}");
}
