//! `panvault audit`: verify the hash chain (of a data dir, of exported files, or read through a
//! running vault's API), prune the oldest entries of a stopped vault, export entries as JSON
//! lines.

use std::io::Write;
use std::path::Path;

use crate::vault::{self, Ctx};
use crate::{Error, Result, audit};

use super::failure::{Failure, require_vault};
use super::unlock::{open_stopped, server_unlock};
use super::{AuditCommand, ExportArgs, VerifyArgs, remote};

/// Opens the store of a stopped vault for `audit verify|export`; a running one is refused with
/// the `--url` form of the same command.
fn open_store(
    data: &Path,
    command: &str,
) -> std::result::Result<std::sync::Arc<dyn crate::store::Store>, Failure> {
    require_vault(data)?;
    vault::open_store(data).map_err(|e| {
        Failure::running_or(
            e,
            data,
            &format!(
                "stop it, or read it through its API: `panvault audit {command} --url \
                 https://HOST:PORT --api-key-file FILE --cacert {}` (a key with the `audit` scope)",
                crate::tls::ca_path(data).display()
            ),
        )
    })
}

/// Runs one `audit` subcommand.
pub(super) fn run(command: AuditCommand) -> std::result::Result<(), Failure> {
    match command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Prune(a) => {
            audit::check_retention(a.retention_days)?;
            let vault = open_stopped(
                &a.unlock,
                "stop it first: `audit prune` deletes entries only from a stopped vault",
            )?;
            let ctx = Ctx {
                actor: "cli".into(),
                ..Ctx::default()
            };
            let report = actix_web::rt::System::new()
                .block_on(vault.audit_prune(&ctx, a.retention_days, a.exported_through))
                .and_then(|r| {
                    serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })
                });
            vault.shutdown();
            println!("{}", report?);
            Ok(())
        }
        AuditCommand::Export(a) => export(a),
    }
}

/// `audit export`: from a stopped vault's store, or page by page through a running vault's API;
/// the same lines either way.
fn export(a: ExportArgs) -> std::result::Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match (&a.remote.url, &a.data) {
        (Some(_), _) => {
            let r = remote::Remote::new(&a.remote)?;
            r.audit_lines(a.since, |line| write_line(&mut out, &line))?;
        }
        (None, Some(data)) => {
            let store = open_store(data, "export")?;
            let head = audit::SignedHead::load(store.as_ref())?;
            let mut last = None;
            audit::for_each_since(store.as_ref(), a.since, |e| {
                last = Some(e.seq);
                write_line(&mut out, e)
            })?;
            if let Some(h) = head.filter(|h| last == Some(h.seq)) {
                write_line(&mut out, &audit::ExportLine::Head { signed_head: h })?;
            }
        }
        (None, None) => {
            return Err(Error::Config(
                "audit export needs --data DIR (or PANVAULT_DATA), or --url".into(),
            )
            .into());
        }
    }
    Ok(out.flush().map_err(|e| Error::io("stdout", e))?)
}

fn write_line(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(|_| Error::Encode {
        what: "audit entry",
    })?;
    out.write_all(b"\n").map_err(|e| Error::io("stdout", e))
}

/// `audit verify`: a data dir's store, exported files, or the lines a running vault's API
/// pages out; with the keys when they are at hand.
fn verify(a: VerifyArgs) -> std::result::Result<(), Failure> {
    if a.remote.url.is_some() {
        let r = remote::Remote::new(&a.remote)?;
        let mut v = audit::Verifier::anywhere(None);
        r.audit_lines(1, |line| match line {
            audit::ExportLine::Entry(e) => v.feed(&e),
            audit::ExportLine::Head { signed_head } => v.head_here(&signed_head),
        })?;
        return print_verified(&a, &v.finish(), true);
    }
    let (store, mac) = match &a.data {
        None => (None, None),
        Some(data) => {
            let store = open_store(data, "verify")?;
            let unlock = server_unlock(
                data,
                a.keys.passphrase_file.as_deref(),
                a.keys.shares_file.as_deref(),
                a.keys.pkcs11_pin_file.as_deref(),
            )?;
            let mac = match unlock {
                Some(u) => Some(vault::audit_mac_key(data, store.as_ref(), &u)?.ok_or_else(
                    || {
                        Error::Config(
                            "this vault has no audit MAC key yet: start it once with this \
                             version (it makes one), then verify"
                                .into(),
                        )
                    },
                )?),
                None => None,
            };
            (Some(store), mac)
        }
    };
    let v = match (a.files.is_empty(), store) {
        (true, Some(store)) => audit::verify(store.as_ref(), mac.as_ref(), false)?,
        (true, None) => {
            return Err(Error::Config(
                "audit verify needs --data DIR (or PANVAULT_DATA), exported files, or --url".into(),
            )
            .into());
        }
        (false, _) => {
            let mut v = audit::Verifier::anywhere(mac.as_ref());
            for path in &a.files {
                audit::verify_export(&mut v, path)?;
            }
            v.require_signed_end()?;
            v.finish()
        }
    };
    print_verified(&a, &v, false)
}

/// Prints what `audit verify` found: one JSON object with `--json`, else lines.
fn print_verified(
    a: &VerifyArgs,
    v: &audit::Verified,
    remote: bool,
) -> std::result::Result<(), Failure> {
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&v).map_err(|_| Error::Encode { what: "report" })?
        );
        return Ok(());
    }
    let noun = if v.entries == 1 { "entry" } else { "entries" };
    if remote {
        println!(
            "audit trail ok: {} {noun} ({}..={}) read through the API, last hash {}",
            v.entries, v.first_seq, v.last_seq, v.last_hash
        );
    } else if a.files.is_empty() {
        println!(
            "audit chain ok: {} {noun}, last hash {}",
            v.entries, v.last_hash
        );
    } else {
        println!(
            "audit export ok: {} {noun} ({}..={}), last hash {}",
            v.entries, v.first_seq, v.last_seq, v.last_hash
        );
    }
    match (v.macs_verified, v.signed_through) {
        (true, Some(s)) => println!(
            "signed: MACs verified through entry {s} ({} checkpoints{})",
            v.checkpoints,
            if v.head_seq == Some(v.last_seq) {
                ", signed head"
            } else {
                ""
            }
        ),
        (true, None) => println!("signed: nothing to sign (no entries)"),
        (false, _) if remote => println!(
            "unsigned check: the MACs need the vault's keys and its store (`audit verify --data \
             DIR` on the stopped vault, or on this export with `--data DIR`)"
        ),
        (false, _) => println!(
            "unsigned check: give the vault's keys (--data with --passphrase-file, \
             --shares-file or --pkcs11-pin-file) to verify the MACs"
        ),
    }
    Ok(())
}
