//! Request counters and latency histograms by route pattern, and the vault's writer and token
//! counters, rendered for `/metrics` in the Prometheus text format.

use crate::vault::Vault;

/// Latency histogram bounds, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Request counts and latencies by route and status, for `/metrics` (Prometheus text format).
/// Labels are route patterns (`/v1/tokens/{token}`), never a token or any request data.
#[derive(Default)]
pub struct Metrics {
    by_route: std::sync::Mutex<std::collections::BTreeMap<String, RouteStats>>,
}

#[derive(Default)]
struct RouteStats {
    by_status: std::collections::BTreeMap<u16, u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub(super) fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut m = crate::sync::lock(&self.by_route);
        let r = m.entry(route.to_string()).or_default();
        *r.by_status.entry(status).or_default() += 1;
        for (b, bound) in r.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *b += 1;
            }
        }
        r.count += 1;
        r.sum += seconds;
    }

    pub(super) fn render(&self, vault: Option<&Vault>) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let m = crate::sync::lock(&self.by_route);
        out.push_str("# TYPE panvault_http_requests_total counter\n");
        for (route, r) in m.iter() {
            for (status, n) in &r.by_status {
                let _ = writeln!(
                    out,
                    "panvault_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# TYPE panvault_http_request_duration_seconds histogram\n");
        for (route, r) in m.iter() {
            for (n, bound) in r.buckets.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(
                    out,
                    "panvault_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                r.sum
            );
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                r.count
            );
        }
        out.push_str("# TYPE panvault_sealed gauge\n");
        let _ = writeln!(out, "panvault_sealed {}", u8::from(vault.is_none()));
        let Some(vault) = vault else { return out };
        let st = vault.writer_stats();
        out.push_str("# TYPE panvault_group_commit_writes_total counter\n");
        let _ = writeln!(
            out,
            "panvault_group_commit_writes_total {}",
            st.writes.load(Relaxed)
        );
        out.push_str("# TYPE panvault_group_commit_batches_total counter\n");
        let _ = writeln!(
            out,
            "panvault_group_commit_batches_total {}",
            st.commits.load(Relaxed)
        );
        out.push_str("# TYPE panvault_group_commit_syncs_total counter\n");
        let _ = writeln!(
            out,
            "panvault_group_commit_syncs_total {}",
            st.syncs.load(Relaxed)
        );
        out.push_str("# TYPE panvault_group_commit_batch_size histogram\n");
        let mut cumulative = 0;
        for (i, n) in st.batch_hist.iter().enumerate() {
            cumulative += n.load(Relaxed);
            let le = if i == st.batch_hist.len() - 1 {
                "+Inf".to_string()
            } else {
                (1u64 << i).to_string()
            };
            let _ = writeln!(
                out,
                "panvault_group_commit_batch_size_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "panvault_group_commit_batch_size_sum {}",
            st.writes.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "panvault_group_commit_batch_size_count {}",
            st.commits.load(Relaxed)
        );
        // What this process's open found in the journal (see `store/replay.rs`).
        let rec = vault.journal_recovery();
        out.push_str("# TYPE panvault_journal_torn_records_dropped gauge\n");
        let _ = writeln!(
            out,
            "panvault_journal_torn_records_dropped {}",
            rec.torn_records_dropped
        );
        out.push_str("# TYPE panvault_journal_records_lost gauge\n");
        let _ = writeln!(out, "panvault_journal_records_lost {}", rec.records_lost);
        out.push_str("# TYPE panvault_tokens_created_total counter\n");
        for (kind, n) in vault.tokens_created() {
            let _ = writeln!(out, "panvault_tokens_created_total{{kind=\"{kind}\"}} {n}");
        }
        // The re-encryption job of this process (cheap to scrape, unlike GET /v1/sys/keys,
        // which counts records).
        if let Some(job) = vault.reencryption() {
            out.push_str(
                "# TYPE panvault_reencrypt_running gauge
",
            );
            let _ = writeln!(out, "panvault_reencrypt_running {}", u8::from(job.running));
            for (name, v) in [("scanned", job.scanned), ("moved", job.moved)] {
                let _ = writeln!(out, "# TYPE panvault_reencrypt_{name}_total counter");
                let _ = writeln!(out, "panvault_reencrypt_{name}_total {v}");
            }
            out.push_str(
                "# TYPE panvault_reencrypt_elapsed_seconds gauge
",
            );
            let _ = writeln!(
                out,
                "panvault_reencrypt_elapsed_seconds {:.3}",
                job.elapsed_ms as f64 / 1000.0
            );
        }
        out
    }
}
