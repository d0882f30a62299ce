//! Prometheus metrics, kept with the `prometheus-client` crate (the Prometheus project's own
//! Rust client: no async runtime, text exposition built in). This module only counts what it
//! is told and encodes it; the HTTP handler and the sweeper decide what happened. Label values
//! come from closed sets (route templates, standard methods, status codes, error codes), so
//! no request can create new series.

use crate::sweeper::Swept;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// `Content-Type` of `GET /metrics`: the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily,
    logins: Family<OutcomeLabels, Counter>,
    verifies: Family<OutcomeLabels, Counter>,
    revocations: Family<OutcomeLabels, Counter>,
    active_machines: Gauge,
    sweeps: Family<OutcomeLabels, Counter>,
    swept_machines: Counter,
    stamps_written: Counter,
}

/// Latency buckets from 100 µs doubling to about 3.3 s: the hot paths answer in well under a
/// millisecond, and a write waiting on `synchronous=FULL` can take tens of milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("authkeys");
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            Clone::clone(&requests),
        );
        let request_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            request_seconds.clone(),
        );
        let logins = Family::default();
        registry.register(
            "logins",
            "Login attempts by outcome: success, or the error code answered",
            Clone::clone(&logins),
        );
        let verifies = Family::default();
        registry.register(
            "verifies",
            "Key verifications by outcome: valid, the reason a key is not, or the error code",
            Clone::clone(&verifies),
        );
        let revocations = Family::default();
        registry.register(
            "revocations",
            "Key revocation requests by outcome: revoked, or the error code answered",
            Clone::clone(&revocations),
        );
        let active_machines = Gauge::default();
        registry.register(
            "active_machines",
            "Machines logged in and not expired, counted at scrape time",
            active_machines.clone(),
        );
        let sweeps = Family::default();
        registry.register(
            "sweeps",
            "Sweeps of expired machines and usage stamps, by outcome (ok, failed)",
            Clone::clone(&sweeps),
        );
        let swept_machines = Counter::default();
        registry.register(
            "swept_machines",
            "Expired machine rows deleted by the sweeper",
            swept_machines.clone(),
        );
        let stamps_written = Counter::default();
        registry.register(
            "usage_stamps_written",
            "Usage stamps (last_used_at, last_seen_at) written by the sweeper",
            stamps_written.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            logins,
            verifies,
            revocations,
            active_machines,
            sweeps,
            swept_machines,
            stamps_written,
        }
    }

    /// Counts one answered request. `route` is a route template, never a raw path.
    pub fn request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn verify(&self, outcome: &'static str) {
        self.verifies
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn revocation(&self, outcome: &'static str) {
        self.revocations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn sweep(&self, result: &crate::error::Result<Swept>) {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.sweeps.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Ok(swept) = result {
            self.swept_machines.inc_by(swept.expired_machines as u64);
            self.stamps_written.inc_by(swept.stamps_written as u64);
        }
    }

    /// The text exposition, with the active machines counted just now by the caller.
    pub fn encode(&self, active_machines: usize) -> String {
        self.active_machines
            .set(i64::try_from(active_machines).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Methods outside the standard set share one label, so a client cannot mint series.
fn method_label(method: &str) -> &'static str {
    const STANDARD: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    STANDARD
        .iter()
        .find(|standard| **standard == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_per_template_and_keeps_unknown_methods_out_of_labels() {
        let metrics = Metrics::new();
        metrics.request("/v1/apps/{app}", "GET", 200, Duration::from_micros(150));
        metrics.request("/v1/apps/{app}", "GET", 200, Duration::from_millis(2));
        metrics.request("unmatched", "BREW", 404, Duration::from_micros(50));
        let text = metrics.encode(3);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                r#"authkeys_http_requests_total{route="/v1/apps/{app}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            has(r#"authkeys_http_requests_total{route="unmatched",method="other",status="404"} 1"#),
            "{text}"
        );
        assert!(
            has(
                r#"authkeys_http_request_duration_seconds_count{route="/v1/apps/{app}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(has("authkeys_active_machines 3"), "{text}");
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn counts_sweeps_and_what_they_removed() {
        let metrics = Metrics::new();
        let swept = Swept {
            expired_machines: 5,
            stamps_written: 2,
        };
        metrics.sweep(&Ok(swept));
        metrics.sweep(&Ok(swept));
        metrics.sweep(&Err(crate::error::Error::Storage));
        let text = metrics.encode(0);
        for line in [
            r#"authkeys_sweeps_total{outcome="ok"} 2"#,
            r#"authkeys_sweeps_total{outcome="failed"} 1"#,
            "authkeys_swept_machines_total 10",
            "authkeys_usage_stamps_written_total 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
