//! Rate limits of the HTTPS edge, per API key, as token buckets: reveals (`GET
//! /v1/tokens/{token}/reveal`) and proxied charges (`/v1/proxy/...`, each of which may put a card
//! on the wire to a gateway that could echo it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One token bucket per API key, refilled at `per_second` up to `burst`. A key's bucket starts
/// full.
struct Buckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    fn new(per_second: f64, burst: f64) -> Self {
        Buckets {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one from `key`'s bucket as of `now`; when it is empty, the whole seconds until
    /// one is back (at least 1), for `Retry-After`.
    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = crate::sync::lock(&self.buckets);
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second).ceil();
            // A float to whole seconds: finite and positive by the checks on `per_second`.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Err((wait as u64).max(1))
        }
    }
}

/// Reveals allowed per API key: a token bucket per key, refilled at `per_second` up to `burst`
/// (default 10/s, burst 20). A key's bucket starts full.
pub struct RevealLimit(Buckets);

impl RevealLimit {
    /// A limit of `per_second` reveals per second per key, at most `burst` at once. Taken as
    /// given: the caller checks `per_second > 0` and `burst >= 1` (a `burst` below 1 lets no
    /// reveal through).
    pub fn new(per_second: f64, burst: f64) -> Self {
        RevealLimit(Buckets::new(per_second, burst))
    }

    /// Takes one reveal from `key`'s bucket; `false` when it is empty.
    pub(super) fn take(&self, key: &str) -> bool {
        self.0.take_at(key, Instant::now()).is_ok()
    }
}

impl Default for RevealLimit {
    fn default() -> Self {
        RevealLimit::new(10.0, 20.0)
    }
}

/// Proxied charges allowed per API key (issue 14 item 5): a gateway that echoes the card would
/// otherwise make the proxy an unlimited reveal channel. A token bucket per key, refilled at
/// `per_second` up to `burst` (default 50/s, burst 100: room for real checkouts). Past it the
/// charge is refused 429 `rate_limited` with `Retry-After`, before its body is read and before
/// anything is revealed or forwarded.
pub struct ChargeLimit(Buckets);

impl ChargeLimit {
    /// A limit of `per_second` charges per second per key, at most `burst` at once. Taken as
    /// given: the caller checks `per_second > 0` and `burst >= 1`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        ChargeLimit(Buckets::new(per_second, burst))
    }

    /// Takes one charge from `key`'s bucket; when it is empty, the seconds to wait.
    pub(super) fn take(&self, key: &str) -> Result<(), u64> {
        self.0.take_at(key, Instant::now())
    }
}

impl Default for ChargeLimit {
    fn default() -> Self {
        ChargeLimit::new(50.0, 100.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate_per_key() {
        let b = Buckets::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take_at("k", t0), Ok(()));
        }
        assert_eq!(b.take_at("k", t0), Err(1));
        // Another key has its own bucket.
        assert_eq!(b.take_at("other", t0), Ok(()));
        // Half a second at 2/s: one back.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take_at("k", t1), Ok(()));
        assert_eq!(b.take_at("k", t1), Err(1));
        // A slow bucket says how long to wait.
        let slow = Buckets::new(0.25, 1.0);
        assert_eq!(slow.take_at("k", t0), Ok(()));
        assert_eq!(slow.take_at("k", t0), Err(4));
    }

    #[test]
    fn the_charge_limit_defaults_to_a_burst_of_100() {
        let l = ChargeLimit::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.0.take_at("k", t0), Ok(()));
        }
        assert_eq!(l.0.take_at("k", t0), Err(1));
    }
}
