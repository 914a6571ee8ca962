//! Rate limits of the HTTPS edge: reveals per API key, as a token bucket.

/// Reveals allowed per API key: a token bucket per key, refilled at `per_second` up to `burst`
/// (default 10/s, burst 20). A key's bucket starts full.
pub struct RevealLimit {
    per_second: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl RevealLimit {
    /// A limit of `per_second` reveals per second per key, at most `burst` at once. Taken as
    /// given: the caller checks `per_second > 0` and `burst >= 1` (a `burst` below 1 lets no
    /// reveal through).
    pub fn new(per_second: f64, burst: f64) -> Self {
        RevealLimit {
            per_second,
            burst,
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes one reveal from `key`'s bucket; `false` when it is empty.
    pub(super) fn take(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut buckets = crate::sync::lock(&self.buckets);
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RevealLimit {
    fn default() -> Self {
        RevealLimit::new(10.0, 20.0)
    }
}
