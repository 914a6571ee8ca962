//! What the HTTPS black-box tests share: starting `panvault serve`, stopping it, one request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

pub fn send(b: RequestBuilder) -> (StatusCode, Value) {
    let r = b.send().unwrap();
    let status = r.status();
    (status, r.json().unwrap_or(Value::Null))
}

/// `panvault serve` on a free loopback port with `extra` arguments (no passphrase or shares
/// unless given there): its child, base URL, an HTTPS client trusting the vault's CA, and every
/// stderr line so far.
pub fn serve(data: &Path, extra: &[&OsStr]) -> (Child, String, Client, Arc<Mutex<Vec<String>>>) {
    // A config file holding gateway credentials must be closed to others, or `serve` refuses to
    // start (src/harden.rs): make the tests' configs owner-only as an operator would.
    if let Some(i) = extra.iter().position(|a| *a == OsStr::new("--config"))
        && let Some(cfg) = extra.get(i + 1)
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(cfg, std::fs::Permissions::from_mode(0o600));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("PANVAULT_PASSPHRASE_FILE")
        .env_remove("PANVAULT_SHARES_FILE")
        .env("PANVAULT_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("listening on https://").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a `listening on` line");
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(data.join("tls/ca.pem")).unwrap()).unwrap();
    let client = Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    (child, format!("https://{addr}"), client, log)
}

pub fn stop(child: Child) {
    stop_by(child, "TERM");
}

/// [`stop`] with another signal (`INT`: Ctrl-C).
pub fn stop_by(mut child: Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}

/// `panvault sandbox` on free loopback ports: its child and shared base URL (`http://127.0.0.1:N`,
/// every gateway under its prefix), once it has printed where its request log is.
pub fn start_sandbox() -> (Child, String) {
    let (child, base, _) = start_sandbox_roots();
    (child, base)
}

/// [`start_sandbox`], with each gateway's own root as `panvault sandbox` prints it
/// (`PANVAULT_GATEWAY_NEXI_URL`, `http://127.0.0.1:...`), in the printed order.
pub fn start_sandbox_roots() -> (Child, String, Vec<(String, String)>) {
    let mut roots = Vec::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .env("PANVAULT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut base = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("http://").nth(1)
            && base.is_none()
        {
            base = Some(format!(
                "http://{}",
                rest.split_whitespace().next().unwrap()
            ));
        }
        if let Some((var, url)) = line.split_once('=')
            && var.starts_with("PANVAULT_GATEWAY_")
        {
            roots.push((var.to_string(), url.to_string()));
        }
        if line.starts_with("request log:") {
            break;
        }
    }
    (child, base.unwrap(), roots)
}

/// `panvault init --dev --json` in `data`: the admin API key it printed once.
pub fn init_dev(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_panvault"))
        .args(["init", "--dev", "--json", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["admin_api_key"]
        .as_str()
        .unwrap()
        .to_string()
}
