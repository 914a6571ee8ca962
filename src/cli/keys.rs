//! `panvault keys`: key operations on a stopped vault (rotate the KEK, print the key status,
//! re-encrypt records under older DEKs), each printing its report as JSON.

use crate::vault::{self, Ctx, Vault};
use crate::{Error, Result};

use super::KeysCommand;
use super::unlock::open_stopped;

/// Runs one `keys` subcommand on the stopped vault it names and prints its report.
pub(super) fn run(command: KeysCommand) -> Result<()> {
    let a = match &command {
        KeysCommand::Rotate(a) | KeysCommand::Status(a) | KeysCommand::Reencrypt(a) => a,
    };
    let vault = open_stopped(a)?;
    let ctx = vault::Ctx {
        actor: "cli".into(),
        ..vault::Ctx::default()
    };
    let report = match command {
        KeysCommand::Rotate(_) => actix_web::rt::System::new()
            .block_on(vault.rotate_kek(&ctx))
            .and_then(|r| serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })),
        KeysCommand::Reencrypt(_) => actix_web::rt::System::new()
            .block_on(reencrypt(&vault, &ctx))
            .and_then(|r| serde_json::to_string(&r).map_err(|_| Error::Encode { what: "report" })),
        KeysCommand::Status(_) => vault.key_status().and_then(|r| {
            serde_json::to_string_pretty(&r).map_err(|_| Error::Encode { what: "report" })
        }),
    };
    vault.shutdown();
    println!("{}", report?);
    Ok(())
}

/// `keys reencrypt` on a stopped vault: the job's steps back to back (no live traffic to make
/// room for), an indicatif bar on stderr.
async fn reencrypt(vault: &Vault, ctx: &Ctx) -> Result<vault::ReencryptJob> {
    let below = vault.reencrypt_below()?;
    let mut job = vault::ReencryptJob {
        below,
        total: vault.key_status()?.deks.iter().map(|d| d.records).sum(),
        ..vault::ReencryptJob::default()
    };
    let bar = indicatif::ProgressBar::new(job.total).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} tokens, {per_sec}, eta {eta}",
        )
        .map_err(|_| Error::Config("progress bar template".into()))?
        .progress_chars("=> "),
    );
    bar.set_message(format!("re-encrypting records under dek < {below}"));
    vault.audit_reencrypt_start(ctx, below).await?;
    let started = std::time::Instant::now();
    loop {
        let step = match vault
            .reencrypt_step(ctx, below, vault::REENCRYPT_BATCH)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                vault.audit_reencrypt_end(ctx, "failed", &job).await?;
                return Err(e);
            }
        };
        job.scanned += step.scanned;
        job.moved += step.moved;
        job.destroyed.extend(step.destroyed);
        bar.set_position(job.scanned);
        job.elapsed_ms = started.elapsed().as_millis() as u64;
        if step.finished {
            break;
        }
    }
    bar.finish_with_message(format!(
        "moved {}, destroyed dek {:?}",
        job.moved, job.destroyed
    ));
    vault.audit_reencrypt_end(ctx, "ok", &job).await?;
    Ok(job)
}
