//! `panvault audit`: verify the hash chain (of a data dir or of exported files), prune the
//! oldest entries of a stopped vault, export entries as JSON lines.

use std::io::Write;

use crate::vault::{self, Ctx};
use crate::{Error, Result, audit};

use super::unlock::{open_stopped, server_unlock};
use super::{AuditCommand, VerifyArgs};

/// Runs one `audit` subcommand.
pub(super) fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Prune(a) => {
            audit::check_retention(a.retention_days)?;
            let vault = open_stopped(&a.unlock)?;
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
        AuditCommand::Export { data, since } => {
            let store = vault::open_store(&data)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let head = audit::SignedHead::load(store.as_ref())?;
            let mut last = None;
            audit::for_each_since(store.as_ref(), since, |e| {
                last = Some(e.seq);
                write_line(&mut out, e)
            })?;
            if let Some(h) = head.filter(|h| last == Some(h.seq)) {
                write_line(&mut out, &audit::ExportLine::Head { signed_head: h })?;
            }
            out.flush().map_err(|e| Error::io("stdout", e))
        }
    }
}

fn write_line(out: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(|_| Error::Encode {
        what: "audit entry",
    })?;
    out.write_all(b"\n").map_err(|e| Error::io("stdout", e))
}

/// `audit verify`: a data dir's store, or exported files; with the keys when they are at hand.
fn verify(a: VerifyArgs) -> Result<()> {
    let (store, mac) = match &a.data {
        None => (None, None),
        Some(data) => {
            let store = vault::open_store(data)?;
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
                "audit verify needs --data DIR (or PANVAULT_DATA), or exported files".into(),
            ));
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
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&v).map_err(|_| Error::Encode { what: "report" })?
        );
        return Ok(());
    }
    let noun = if v.entries == 1 { "entry" } else { "entries" };
    if a.files.is_empty() {
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
        (false, _) => println!(
            "unsigned check: give the vault's keys (--data with --passphrase-file, \
             --shares-file or --pkcs11-pin-file) to verify the MACs"
        ),
    }
    Ok(())
}
