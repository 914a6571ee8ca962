//! Process hardening when `serve` and `demo` start: no core dumps, no swap, and refusal of key
//! and data files that others can read.
//!
//! - Core dumps off: `RLIMIT_CORE` 0 (soft and hard), and after the secrets are read the process
//!   is made not dumpable (`PR_SET_DUMPABLE` 0: no core, no ptrace by the same user, `/proc/PID`
//!   owned by root). Not dumpable comes after reading a passphrase, share or PIN file because it
//!   also closes `/proc/self/fd`, which `--passphrase-file /dev/fd/3` needs.
//! - Memory locked (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`), so keys and card
//!   numbers never reach swap, but only where it cannot later starve the process: with
//!   `CAP_IPC_LOCK` or an unlimited `RLIMIT_MEMLOCK` (`LimitMEMLOCK=infinity` in the unit).
//!   Otherwise, or when the kernel refuses, it is reported and the vault goes on.
//! - Refusals: the data dir, `keys/` or any file under `keys/` readable, writable or searchable
//!   by group or others; a configuration file that holds secrets (gateway credentials) and is
//!   readable by others. Each names the path and its mode.
//!
//! The outcome of each check is kept for the evidence report: [`checks`].
//!
//! The system calls go through `rustix` (safe wrappers; the crate is `forbid(unsafe_code)`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// One hardening check and how it came out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HardeningCheck {
    /// Stable name: `core_dumps`, `not_dumpable`, `memory_locked`, `data_dir_mode`,
    /// `key_files_mode`, `config_mode`, `secret_files_mode`.
    pub name: &'static str,
    /// Whether the protection is in force (a refusal is recorded as `false` before the error).
    pub ok: bool,
    /// What was found or done, for a person.
    pub detail: String,
}

static RESULTS: Mutex<Vec<HardeningCheck>> = Mutex::new(Vec::new());

/// The checks of this process's start, in the order they ran (empty before `serve`/`demo`).
pub fn checks() -> Vec<HardeningCheck> {
    crate::sync::lock(&RESULTS).clone()
}

fn record(check: HardeningCheck) {
    if check.ok {
        tracing::info!(check = check.name, "hardening: {}", check.detail);
    } else {
        tracing::warn!(check = check.name, "hardening: {}", check.detail);
    }
    let mut r = crate::sync::lock(&RESULTS);
    r.retain(|c| c.name != check.name);
    r.push(check);
}

fn check(name: &'static str, ok: bool, detail: String) -> HardeningCheck {
    HardeningCheck { name, ok, detail }
}

/// Everything that runs before any secret is read: core dumps off, the permission refusals,
/// memory locking. `Err` names the path and mode that stop the start.
pub fn at_start(data: &Path, config: Option<&Path>) -> Result<Vec<HardeningCheck>> {
    record(core_dumps_off());
    let perms = permissions(data);
    record(perms.clone());
    if !perms.ok {
        return Err(Error::Config(perms.detail));
    }
    let keys = key_files(data);
    record(keys.clone());
    if !keys.ok {
        return Err(Error::Config(keys.detail));
    }
    if let Some(path) = config {
        let c = config_file(path);
        record(c.clone());
        if !c.ok {
            return Err(Error::Config(c.detail));
        }
    }
    record(lock_memory());
    Ok(checks())
}

/// The passphrase, shares or PIN files given to `serve`: reported (`secret_files_mode`), not
/// refused, when a regular one is open to group or others (a pipe such as `/dev/fd/3` is not
/// checked). Meant to live on tmpfs, owner-only, and be removed once the vault listens.
pub fn secret_files(paths: &[&Path]) -> HardeningCheck {
    let mut open = Vec::new();
    let mut checked = 0usize;
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        checked += 1;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            open.push(format!("{} has mode {mode:04o}", path.display()));
        }
    }
    let c = if open.is_empty() {
        check(
            "secret_files_mode",
            true,
            format!("{checked} secret file(s) given as regular files, all owner-only"),
        )
    } else {
        check(
            "secret_files_mode",
            false,
            format!(
                "{}: open to group or others; keep secret files on tmpfs, mode 0600",
                open.join(", ")
            ),
        )
    };
    record(c.clone());
    c
}

/// After the passphrase, shares or PIN were read: the process becomes not dumpable.
pub fn after_secrets_read() -> Vec<HardeningCheck> {
    let c = match rustix::process::set_dumpable_behavior(
        rustix::process::DumpableBehavior::NotDumpable,
    ) {
        Ok(()) => check(
            "not_dumpable",
            true,
            "PR_SET_DUMPABLE 0: no core file, no ptrace attach by the same user".into(),
        ),
        Err(e) => check(
            "not_dumpable",
            false,
            format!("PR_SET_DUMPABLE 0 failed: {e}"),
        ),
    };
    record(c);
    checks()
}

fn core_dumps_off() -> HardeningCheck {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    match setrlimit(Resource::Core, zero) {
        Ok(()) => check(
            "core_dumps",
            true,
            "RLIMIT_CORE set to 0 (soft and hard)".into(),
        ),
        Err(e) => {
            // Lowering the soft limit alone is always allowed.
            let hard = rustix::process::getrlimit(Resource::Core).maximum;
            match setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(0),
                    maximum: hard,
                },
            ) {
                Ok(()) => check(
                    "core_dumps",
                    true,
                    format!("RLIMIT_CORE soft limit set to 0 (hard limit unchanged: {e})"),
                ),
                Err(e) => check("core_dumps", false, format!("RLIMIT_CORE 0 failed: {e}")),
            }
        }
    }
}

/// Whether this process holds `CAP_IPC_LOCK` in its effective set (from /proc/self/status).
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn lock_memory() -> HardeningCheck {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, getrlimit};
    if std::env::var_os("PANVAULT_NO_MLOCK").is_some() {
        return check(
            "memory_locked",
            false,
            "not locked: PANVAULT_NO_MLOCK is set".into(),
        );
    }
    let limit = getrlimit(Resource::Memlock).current;
    let why = if has_ipc_lock() {
        "CAP_IPC_LOCK".to_string()
    } else if limit.is_none() {
        "RLIMIT_MEMLOCK unlimited".to_string()
    } else {
        return check(
            "memory_locked",
            false,
            format!(
                "not locked: RLIMIT_MEMLOCK is {} bytes and no CAP_IPC_LOCK; locking all memory \
                 under a limit would make later allocations fail (set LimitMEMLOCK=infinity)",
                limit.unwrap_or_default()
            ),
        );
    };
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    match mlockall(flags) {
        Ok(()) => check(
            "memory_locked",
            true,
            format!("mlockall(CURRENT|FUTURE|ONFAULT) in force ({why}): no page goes to swap"),
        ),
        Err(e) => check(
            "memory_locked",
            false,
            format!("not locked: mlockall refused ({e})"),
        ),
    }
}

fn mode_of(path: &Path) -> std::io::Result<u32> {
    std::fs::symlink_metadata(path).map(|m| m.permissions().mode() & 0o7777)
}

fn refusal(name: &'static str, path: &Path, mode: u32, want: &str) -> HardeningCheck {
    check(
        name,
        false,
        format!(
            "refusing to start: {} has mode {mode:04o}, open to group or others; \
             it must be {want} (chmod {want} {})",
            path.display(),
            path.display()
        ),
    )
}

/// The data dir itself: owner only. (Files in the store are set to 0600 when it opens.)
fn permissions(data: &Path) -> HardeningCheck {
    match mode_of(data) {
        Ok(mode) if mode & 0o077 != 0 => refusal("data_dir_mode", data, mode, "0700"),
        Ok(mode) => check(
            "data_dir_mode",
            true,
            format!("{} has mode {mode:04o}", data.display()),
        ),
        // A missing data dir is reported by the store when it opens.
        Err(e) => check(
            "data_dir_mode",
            true,
            format!("{} not checked: {e}", data.display()),
        ),
    }
}

/// `keys/` (0700) and every entry under it (0600 files, 0700 directories), symlinks refused.
fn key_files(data: &Path) -> HardeningCheck {
    let keys = data.join("keys");
    if !keys.exists() {
        return check(
            "key_files_mode",
            true,
            format!("{} absent (no key files to check)", keys.display()),
        );
    }
    let mut stack = vec![keys.clone()];
    let mut count = 0usize;
    while let Some(dir) = stack.pop() {
        match mode_of(&dir) {
            Ok(mode) if mode & 0o077 != 0 => {
                return refusal("key_files_mode", &dir, mode, "0700");
            }
            Ok(_) => {}
            Err(e) => {
                return check(
                    "key_files_mode",
                    false,
                    format!("refusing to start: {}: {e}", dir.display()),
                );
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                return check(
                    "key_files_mode",
                    false,
                    format!("refusing to start: {}: {e}", dir.display()),
                );
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(e) => e.path(),
                Err(e) => {
                    return check(
                        "key_files_mode",
                        false,
                        format!("refusing to start: {}: {e}", dir.display()),
                    );
                }
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    return check(
                        "key_files_mode",
                        false,
                        format!("refusing to start: {}: {e}", path.display()),
                    );
                }
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                return check(
                    "key_files_mode",
                    false,
                    format!(
                        "refusing to start: {} is a symbolic link; key files must be plain files",
                        path.display()
                    ),
                );
            } else {
                count += 1;
                if mode & 0o077 != 0 {
                    return refusal("key_files_mode", &path, mode, "0600");
                }
            }
        }
    }
    check(
        "key_files_mode",
        true,
        format!("{} and its {count} file(s) are owner-only", keys.display()),
    )
}

/// Keys whose values are secrets in a configuration file (gateway credentials, wherever they
/// sit); a `..._file` key names a file and is not itself a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !k.ends_with("_file")
        && (k == "api_key"
            || k == "pin"
            || k.contains("password")
            || k.contains("secret")
            || k.contains("passphrase"))
}

fn secret_keys(value: &toml::Value, path: &str, found: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if is_secret_key(k) && !matches!(v, toml::Value::Table(_)) {
                    found.push(here);
                } else {
                    secret_keys(v, &here, found);
                }
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                secret_keys(v, path, found);
            }
        }
        _ => {}
    }
}

/// Zeroizes every string of a parsed configuration (it may hold gateway credentials).
fn wipe(value: &mut toml::Value) {
    match value {
        toml::Value::String(s) => zeroize::Zeroize::zeroize(s),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| wipe(v)),
        toml::Value::Array(a) => a.iter_mut().for_each(wipe),
        _ => {}
    }
}

/// A configuration file holding secrets must not be readable (or writable) by others.
fn config_file(path: &Path) -> HardeningCheck {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        // Unreadable or missing: `load_config` reports it.
        Err(e) => {
            return check(
                "config_mode",
                true,
                format!("{} not checked: {e}", path.display()),
            );
        }
    };
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).unwrap_or_default());
    let mut found = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(&text) {
        let mut value = toml::Value::Table(table);
        secret_keys(&value, "", &mut found);
        wipe(&mut value);
    }
    if found.is_empty() {
        return check(
            "config_mode",
            true,
            format!("{} (mode {mode:04o}) holds no secrets", path.display()),
        );
    }
    if mode & 0o007 != 0 {
        return check(
            "config_mode",
            false,
            format!(
                "refusing to start: {} has mode {mode:04o} and holds secrets ({}); \
                 it must not be readable by others (chmod 0640 or 0600 {})",
                path.display(),
                found.join(", "),
                path.display()
            ),
        );
    }
    check(
        "config_mode",
        true,
        format!(
            "{} (mode {mode:04o}) holds secrets and is closed to others",
            path.display()
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn data_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        std::fs::create_dir(d.path().join("keys")).unwrap();
        chmod(&d.path().join("keys"), 0o700);
        let f = d.path().join("keys/keyring.json");
        std::fs::write(&f, "{}").unwrap();
        chmod(&f, 0o600);
        d
    }

    #[test]
    fn owner_only_data_and_keys_pass() {
        let d = data_dir();
        assert!(permissions(d.path()).ok);
        let k = key_files(d.path());
        assert!(k.ok, "{}", k.detail);
    }

    #[test]
    fn open_data_dir_is_refused_naming_it() {
        let d = data_dir();
        chmod(d.path(), 0o750);
        let c = permissions(d.path());
        assert!(!c.ok);
        assert!(
            c.detail.contains(&d.path().display().to_string()),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("0750"), "{}", c.detail);
    }

    #[test]
    fn readable_key_file_is_refused_naming_it() {
        let d = data_dir();
        let f = d.path().join("keys/keyring.json");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            chmod(&f, mode);
            let c = key_files(d.path());
            assert!(!c.ok, "{mode:o}");
            assert!(c.detail.contains("keys/keyring.json"), "{}", c.detail);
            assert!(c.detail.contains(&format!("{mode:04o}")), "{}", c.detail);
        }
        chmod(&f, 0o600);
        chmod(&d.path().join("keys"), 0o755);
        let c = key_files(d.path());
        assert!(!c.ok && c.detail.contains("0755"), "{}", c.detail);
    }

    #[test]
    fn symlinked_key_file_is_refused() {
        let d = data_dir();
        let other = d.path().join("elsewhere.json");
        std::fs::write(&other, "{}").unwrap();
        chmod(&other, 0o600);
        std::os::unix::fs::symlink(&other, d.path().join("keys/extra.json")).unwrap();
        let c = key_files(d.path());
        assert!(!c.ok && c.detail.contains("symbolic link"), "{}", c.detail);
    }

    #[test]
    fn config_with_secrets_must_be_closed_to_others() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain.toml");
        std::fs::write(
            &plain,
            "listen = \"127.0.0.1:8443\"\npassphrase_file = \"/run/p\"\n[gateways.nexi]\nbase_url = \"https://x\"\n",
        )
        .unwrap();
        chmod(&plain, 0o644);
        assert!(config_file(&plain).ok);

        let secret = d.path().join("secret.toml");
        std::fs::write(
            &secret,
            "[gateways.nexi.shops.\"9000001\"]\napi_key = \"k\"\n[gateways.mpgs]\napi_password = \"p\"\n",
        )
        .unwrap();
        chmod(&secret, 0o644);
        let c = config_file(&secret);
        assert!(!c.ok, "{}", c.detail);
        assert!(c.detail.contains("secret.toml") && c.detail.contains("0644"));
        assert!(
            c.detail.contains("gateways.nexi.shops.9000001.api_key"),
            "{}",
            c.detail
        );
        assert!(
            c.detail.contains("gateways.mpgs.api_password"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains("\"k\"") && !c.detail.contains("= \"p\""));
        chmod(&secret, 0o640);
        assert!(config_file(&secret).ok);
    }

    #[test]
    fn open_secret_file_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("passphrase");
        std::fs::write(&f, "x").unwrap();
        chmod(&f, 0o600);
        assert!(secret_files(&[&f, Path::new("/nonexistent/p")]).ok);
        chmod(&f, 0o644);
        let c = secret_files(&[&f]);
        assert!(
            !c.ok && c.detail.contains("passphrase has mode 0644"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn secret_key_names() {
        for k in [
            "api_key",
            "secret_api_key",
            "api_password",
            "passphrase",
            "pin",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "api_key_id",
            "passphrase_file",
            "pkcs11_pin_file",
            "base_url",
            "listen",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
