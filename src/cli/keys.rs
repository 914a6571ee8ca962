//! `panvault keys`: key operations on a stopped vault (rotate the KEK, print the key status,
//! re-encrypt records under older DEKs), each printing its report as text, or as JSON with
//! `--json`.

use crate::vault::{self, Ctx, Vault};
use crate::{Error, Result};

use super::failure::Failure;
use super::unlock::open_stopped;
use super::{KeysCommand, text};

/// Runs one `keys` subcommand on the stopped vault it names and prints its report.
pub(super) fn run(command: KeysCommand) -> std::result::Result<(), Failure> {
    let (a, instead) = match &command {
        KeysCommand::Rotate(a) => (
            a,
            "stop it, or use `POST /v1/sys/keys/rotate` (scope `keys`)",
        ),
        KeysCommand::Status(a) => (a, "stop it, or use `GET /v1/sys/keys` (scope `keys`)"),
        KeysCommand::Reencrypt(a) => (
            a,
            "stop it, or use `POST /v1/sys/keys/reencrypt` (scope `keys`)",
        ),
    };
    let json = a.json;
    let vault = open_stopped(&a.unlock, instead)?;
    let ctx = vault::Ctx {
        actor: "cli".into(),
        ..vault::Ctx::default()
    };
    let report = match command {
        KeysCommand::Rotate(_) => actix_web::rt::System::new()
            .block_on(vault.rotate_kek(&ctx))
            .and_then(|r| report(json, &r, text::rotation)),
        KeysCommand::Reencrypt(_) => actix_web::rt::System::new()
            .block_on(reencrypt(&vault, &ctx))
            .and_then(|r| report(json, &r, |j| text::reencrypt_summary(j) + "\n")),
        KeysCommand::Status(_) => vault
            .key_status()
            .and_then(|r| report(json, &r, text::key_status)),
    };
    vault.shutdown();
    print!("{}", report?);
    Ok(())
}

/// The report as one JSON line (`--json`) or as the text a person reads.
fn report<T: serde::Serialize>(json: bool, r: &T, text: impl Fn(&T) -> String) -> Result<String> {
    if json {
        serde_json::to_string(r)
            .map(|s| s + "\n")
            .map_err(|_| Error::Encode { what: "report" })
    } else {
        Ok(text(r))
    }
}

/// What the bar shows after the counts: tokens per second as an integer, and the time left at
/// that rate.
fn rate_and_eta(done: u64, total: u64, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return "starting".into();
    }
    let rate = done as f64 / secs;
    let left = total.saturating_sub(done) as f64 / rate;
    format!(
        "{} tokens/s, eta {}",
        rate as u64,
        text::age(left.ceil() as u64)
    )
}

/// `keys reencrypt` on a stopped vault: the job's steps back to back (no live traffic to make
/// room for), an indicatif bar on stderr (drawn only on a terminal) and cleared at the end,
/// where the summary follows on its own line.
async fn reencrypt(vault: &Vault, ctx: &Ctx) -> Result<vault::ReencryptJob> {
    let below = vault.reencrypt_below()?;
    let mut job = vault::ReencryptJob {
        below,
        total: vault.key_status()?.deks.iter().map(|d| d.records).sum(),
        ..vault::ReencryptJob::default()
    };
    let bar = indicatif::ProgressBar::new(job.total).with_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} tokens, {msg}")
            .map_err(|_| Error::Config("progress bar template".into()))?
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("re-encrypting records under DEKs below {below}"));
    bar.set_message("starting");
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
        bar.set_message(rate_and_eta(job.scanned, job.total, started.elapsed()));
        job.elapsed_ms = started.elapsed().as_millis() as u64;
        if step.finished {
            break;
        }
    }
    bar.finish_and_clear();
    vault.audit_reencrypt_end(ctx, "ok", &job).await?;
    Ok(job)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::rate_and_eta;
    use std::time::Duration;

    #[test]
    fn the_bar_shows_an_integer_rate_and_the_time_left() {
        assert_eq!(
            rate_and_eta(512, 2048, Duration::from_secs(2)),
            "256 tokens/s, eta 6 s"
        );
        assert_eq!(
            rate_and_eta(1000, 1000, Duration::from_millis(333)),
            "3003 tokens/s, eta 0 s"
        );
        assert_eq!(rate_and_eta(0, 10, Duration::ZERO), "starting");
    }
}
