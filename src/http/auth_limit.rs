//! Failed authentications per source address: a token bucket decides 401 or 429, and the audit
//! trail gets at most two entries per source and window whatever the rate (issue 14 item 1).
//!
//! Each source address has a bucket refilled at `per_second` up to `burst`; a failure takes one
//! token, and a failure finding the bucket empty is answered 429 `too_many_failed_attempts`
//! with `Retry-After` instead of 401. A key that authenticates is never limited here (a valid
//! key behind the same address as a flood still works; guessing one is hopeless anyway).
//!
//! Every failure is counted in the audit trail, none written one by one past the first: the
//! first failure of a source opens a window and is audited at once (`count=1`, so a lone
//! attempt is visible immediately); the window's other failures are summed and audited as one
//! entry (`count=N window=Ws refused=M`) when the window has closed (the flusher in
//! `serve`, every second, and a last flush at shutdown). The table of sources is bounded: idle
//! sources (window closed, bucket full) are dropped, and when `max_sources` are all busy, new
//! sources share one overflow entry (audited without a client address, `sources=overflow`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// `[auth_failures]` in the configuration file: every key optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFailureConfig {
    /// Failed authentications per second a source address may make before 429 (default 5).
    pub per_second: Option<f64>,
    /// Failed authentications a source address may make at once (default 50).
    pub burst: Option<f64>,
    /// The aggregation window of the audit entries, seconds (default 60).
    pub window_seconds: Option<u64>,
    /// Source addresses tracked at once (default 10000); past it, new sources share one entry.
    pub max_sources: Option<usize>,
}

impl AuthFailureConfig {
    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("auth_failures.per_second must be > 0");
        }
        if self.burst.is_some_and(|b| !(b >= 1.0 && b.is_finite())) {
            return Err("auth_failures.burst must be >= 1");
        }
        if self
            .window_seconds
            .is_some_and(|w| !(1..=86_400).contains(&w))
        {
            return Err("auth_failures.window_seconds must be 1 to 86400");
        }
        if self.max_sources == Some(0) {
            return Err("auth_failures.max_sources must be >= 1");
        }
        Ok(())
    }
}

/// What one failed authentication leads to.
#[derive(Debug, PartialEq)]
pub(super) struct Failure {
    /// `Some(seconds)`: answer 429 with this `Retry-After`; `None`: 401.
    pub(super) retry_after: Option<u64>,
    /// Audit this failure at once as `count=1` (the first of its source's window).
    pub(super) audit_now: bool,
    /// The source's previous window had closed: audit it now.
    pub(super) closed: Option<Closed>,
}

/// A closed window's failures, to audit as one entry.
#[derive(Debug, PartialEq)]
pub(super) struct Closed {
    /// The source; `None`: the overflow of sources past `max_sources`.
    pub(super) source: Option<IpAddr>,
    pub(super) count: u64,
    pub(super) refused: u64,
}

struct Window {
    opened: Instant,
    /// Failures after the first, not yet audited.
    count: u64,
    refused: u64,
}

struct Source {
    tokens: f64,
    at: Instant,
    window: Option<Window>,
}

/// The limiter and its counters (for `/metrics`).
pub struct AuthLimit {
    per_second: f64,
    burst: f64,
    window: Duration,
    max_sources: usize,
    sources: std::sync::Mutex<HashMap<Option<IpAddr>, Source>>,
    failures: AtomicU64,
    refused: AtomicU64,
    aggregated: AtomicU64,
    entries: AtomicU64,
}

impl AuthLimit {
    /// The limit from the configuration (defaults for what it leaves out); the values are
    /// taken as [`AuthFailureConfig::check`] passed them.
    pub fn new(cfg: &AuthFailureConfig) -> Self {
        AuthLimit {
            per_second: cfg.per_second.unwrap_or(5.0),
            burst: cfg.burst.unwrap_or(50.0),
            window: Duration::from_secs(cfg.window_seconds.unwrap_or(60)),
            max_sources: cfg.max_sources.unwrap_or(10_000),
            sources: std::sync::Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            aggregated: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// The aggregation window, in seconds.
    pub(super) fn window_seconds(&self) -> u64 {
        self.window.as_secs()
    }

    /// Counts one failed authentication from `ip` at `now`.
    pub(super) fn failure(&self, ip: Option<IpAddr>, now: Instant) -> Failure {
        self.failures.fetch_add(1, Relaxed);
        let mut sources = crate::sync::lock(&self.sources);
        let mut key = ip;
        if !sources.contains_key(&key) && sources.len() >= self.max_sources {
            self.evict_idle(&mut sources, now);
            if sources.len() >= self.max_sources {
                key = None;
            }
        }
        let src = sources.entry(key).or_insert(Source {
            tokens: self.burst,
            at: now,
            window: None,
        });
        src.tokens = (src.tokens
            + now.saturating_duration_since(src.at).as_secs_f64() * self.per_second)
            .min(self.burst);
        src.at = now;
        let retry_after = if src.tokens >= 1.0 {
            src.tokens -= 1.0;
            None
        } else {
            self.refused.fetch_add(1, Relaxed);
            let wait = (1.0 - src.tokens) / self.per_second;
            Some((wait.ceil() as u64).max(1))
        };
        let refused = u64::from(retry_after.is_some());
        let mut closed = None;
        if let Some(w) = src
            .window
            .take_if(|w| now.saturating_duration_since(w.opened) >= self.window)
            && w.count > 0
        {
            closed = Some(Closed {
                source: key,
                count: w.count,
                refused: w.refused,
            });
        }
        let audit_now = match &mut src.window {
            Some(w) => {
                w.count += 1;
                w.refused += refused;
                self.aggregated.fetch_add(1, Relaxed);
                false
            }
            None => {
                src.window = Some(Window {
                    opened: now,
                    count: 0,
                    refused: 0,
                });
                true
            }
        };
        if audit_now {
            self.entries.fetch_add(1, Relaxed);
        }
        if closed.is_some() {
            self.entries.fetch_add(1, Relaxed);
        }
        Failure {
            retry_after,
            audit_now,
            closed,
        }
    }

    /// The windows closed by `now` (every window when `all`, at shutdown), taken out to be
    /// audited; idle sources are dropped on the way.
    pub(super) fn flush(&self, now: Instant, all: bool) -> Vec<Closed> {
        let mut sources = crate::sync::lock(&self.sources);
        let mut out = Vec::new();
        for (key, src) in sources.iter_mut() {
            if let Some(w) = src
                .window
                .take_if(|w| all || now.saturating_duration_since(w.opened) >= self.window)
                && w.count > 0
            {
                out.push(Closed {
                    source: *key,
                    count: w.count,
                    refused: w.refused,
                });
            }
        }
        self.evict_idle(&mut sources, now);
        self.entries.fetch_add(out.len() as u64, Relaxed);
        out
    }

    /// Drops the sources with no open window and a full bucket: they hold nothing to audit
    /// and would start over the same.
    fn evict_idle(&self, sources: &mut HashMap<Option<IpAddr>, Source>, now: Instant) {
        sources.retain(|_, s| {
            let tokens =
                s.tokens + now.saturating_duration_since(s.at).as_secs_f64() * self.per_second;
            s.window.is_some() || tokens < self.burst
        });
    }

    /// The counters, in the Prometheus text format.
    pub(super) fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let sources = crate::sync::lock(&self.sources).len();
        for (name, help, v) in [
            (
                "panvault_auth_failures_total",
                "failed authentications (unknown, malformed or revoked API key)",
                self.failures.load(Relaxed),
            ),
            (
                "panvault_auth_failures_refused_total",
                "failed authentications answered 429 (over the source's rate)",
                self.refused.load(Relaxed),
            ),
            (
                "panvault_auth_failures_aggregated_total",
                "failed authentications counted in a window's audit entry rather than one each",
                self.aggregated.load(Relaxed),
            ),
            (
                "panvault_auth_failure_audit_entries_total",
                "audit entries written for failed authentications",
                self.entries.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE panvault_auth_failure_sources gauge\npanvault_auth_failure_sources {sources}"
        );
    }
}

/// Audits a closed window's failures as one entry (a failure to write is logged with the
/// count, which is then lost: the metrics still hold it).
pub(super) async fn audit_closed(vault: &crate::vault::Vault, c: Closed, window: u64) {
    let ctx = crate::vault::Ctx {
        actor: "anonymous".into(),
        client: c.source.map(|ip| ip.to_string()),
        request_id: None,
    };
    let overflow = c.source.is_none();
    if let Err(e) = vault
        .audit_auth_failures(&ctx, c.count, c.refused, window, overflow)
        .await
    {
        tracing::warn!(
            count = c.count,
            code = e.code(),
            "failed authentications could not be audited"
        );
    }
}

impl Default for AuthLimit {
    fn default() -> Self {
        AuthLimit::new(&AuthFailureConfig::default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn limit(per_second: f64, burst: f64, window: u64, max_sources: usize) -> AuthLimit {
        AuthLimit::new(&AuthFailureConfig {
            per_second: Some(per_second),
            burst: Some(burst),
            window_seconds: Some(window),
            max_sources: Some(max_sources),
        })
    }

    #[test]
    fn a_flood_is_two_entries_per_window_and_every_failure_is_counted() {
        let l = limit(1.0, 3.0, 60, 10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut audited = 0;
        let mut entries = 0;
        let mut answers = Vec::new();
        for i in 0..100 {
            let f = l.failure(Some(ip), t0 + Duration::from_millis(i));
            answers.push(f.retry_after);
            if f.audit_now {
                audited += 1;
                entries += 1;
            }
            assert!(f.closed.is_none());
        }
        // Three 401s (the burst), then 429 with Retry-After 1 (one token a second).
        assert_eq!(answers[..3], [None, None, None]);
        assert!(answers[3..].iter().all(|a| *a == Some(1)));
        // Nothing due before the window closes; then one entry with the other 99.
        assert!(l.flush(t0 + Duration::from_secs(59), false).is_empty());
        let closed = l.flush(t0 + Duration::from_secs(61), false);
        assert_eq!(
            closed,
            [Closed {
                source: Some(ip),
                count: 99,
                refused: 97
            }]
        );
        entries += closed.len();
        audited += closed.iter().map(|c| c.count).sum::<u64>();
        assert_eq!((audited, entries), (100, 2));
        let mut m = String::new();
        l.render(&mut m);
        for line in [
            "panvault_auth_failures_total 100",
            "panvault_auth_failures_refused_total 97",
            "panvault_auth_failures_aggregated_total 99",
            "panvault_auth_failure_audit_entries_total 2",
        ] {
            assert!(m.contains(line), "{line} in\n{m}");
        }
    }

    #[test]
    fn the_next_failure_after_a_window_closes_it_and_opens_another() {
        let l = limit(1000.0, 1000.0, 10, 10);
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.failure(Some(ip), t0).audit_now);
        assert!(!l.failure(Some(ip), t0 + Duration::from_secs(1)).audit_now);
        let f = l.failure(Some(ip), t0 + Duration::from_secs(11));
        assert!(f.audit_now);
        assert_eq!(
            f.closed,
            Some(Closed {
                source: Some(ip),
                count: 1,
                refused: 0
            })
        );
        // At shutdown, every open window is taken, closed or not.
        assert!(!l.failure(Some(ip), t0 + Duration::from_secs(12)).audit_now);
        assert_eq!(l.flush(t0 + Duration::from_secs(12), true).len(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_idle_sources_leave_it() {
        let l = limit(1.0, 2.0, 1, 2);
        let t0 = Instant::now();
        let ips: Vec<IpAddr> = (1..=5)
            .map(|i| format!("192.0.2.{i}").parse().unwrap())
            .collect();
        for ip in &ips {
            l.failure(Some(*ip), t0);
        }
        // Two tracked, the other three share the overflow entry and its bucket (burst 2: the
        // third is refused).
        assert_eq!(crate::sync::lock(&l.sources).len(), 3);
        assert!(crate::sync::lock(&l.sources).contains_key(&None));
        let closed = l.flush(t0 + Duration::from_secs(2), false);
        assert_eq!(
            closed,
            [Closed {
                source: None,
                count: 2,
                refused: 1
            }]
        );
        // Windows closed and buckets refilled: nothing left.
        l.flush(t0 + Duration::from_secs(10), false);
        assert!(crate::sync::lock(&l.sources).is_empty());
        assert!(AuthFailureConfig::default().check().is_ok());
        let bad = AuthFailureConfig {
            per_second: Some(0.0),
            ..Default::default()
        };
        assert!(bad.check().is_err());
    }
}
