//! Prometheus metrics, kept with the `prometheus-client` crate (the Prometheus project's own
//! Rust client: no async runtime, text exposition built in). This module only counts what it
//! is told and encodes it; the HTTP handler and the sweeper decide what happened. Label values
//! come from closed sets (route templates, standard methods, status codes, error codes), so
//! no request can create new series.

mod keys;
mod requests;

use crate::domain::model::Swept;
use keys::KeyLogins;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use requests::RequestTable;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// `Content-Type` of `GET /metrics`: the Prometheus text exposition format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Arc<RequestTable>,
    key_logins: Arc<KeyLogins>,
    logins: Outcomes,
    verifies: Outcomes,
    revocations: Outcomes,
    /// Set from the caller's count at each encoding; absent until the count is known.
    machines: Arc<MachineGauge>,
    sweeps: Outcomes,
    swept_machines: Counter,
    stamps_written: Counter,
}

impl Metrics {
    /// Metrics for a server whose request routes are labelled with `routes`: every route
    /// template, then the label for paths that match none (also used for any other value).
    pub(crate) fn new(routes: &'static [&'static str]) -> Metrics {
        let mut registry = Registry::with_prefix("authkeys");
        let requests = Arc::new(RequestTable::new(routes));
        registry.register_collector(Box::new(Arc::clone(&requests)));
        let key_logins = Arc::new(KeyLogins::default());
        registry.register_collector(Box::new(Arc::clone(&key_logins)));
        let logins = Outcomes::register(
            &mut registry,
            "logins",
            "Login attempts by outcome: success, or the error code answered",
            &[
                "success",
                "invalid_auth_key",
                "auth_key_revoked",
                "auth_key_expired",
                "auth_key_used",
            ],
        );
        let verifies = Outcomes::register(
            &mut registry,
            "verifies",
            "Key verifications by outcome: valid, the reason a key is not, or the error code",
            &[
                "valid",
                "malformed",
                "not_found",
                "revoked",
                "expired",
                "used",
            ],
        );
        let revocations = Outcomes::register(
            &mut registry,
            "revocations",
            "Key revocation requests by outcome: revoked, or the error code answered",
            &["revoked", "key_not_found", "app_not_found"],
        );
        let machines = Arc::new(MachineGauge::default());
        registry.register_collector(Box::new(Arc::clone(&machines)));
        let sweeps = Outcomes::register(
            &mut registry,
            "sweeps",
            "Sweeps of expired machines and usage stamps, by outcome (ok, failed)",
            &["ok", "failed"],
        );
        let swept_machines = Counter::default();
        registry.register(
            "swept_machines",
            "Expired or idle machine rows deleted by the sweeper",
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
            key_logins,
            logins,
            verifies,
            revocations,
            machines,
            sweeps,
            swept_machines,
            stamps_written,
        }
    }

    /// Counts one answered request, without taking a lock. `route` is a route template,
    /// never a raw path.
    pub(crate) fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests.observe(route, method, status, elapsed);
    }

    pub(crate) fn login(&self, outcome: &'static str) {
        self.logins.inc(outcome);
    }

    /// A successful login with `key_id` of `app`.
    pub(crate) fn key_login(&self, app: &str, key_id: &str) {
        self.key_logins.login(app, key_id);
    }

    /// The key was revoked: its login series goes.
    pub(crate) fn key_revoked(&self, key_id: &str) {
        self.key_logins.remove_key(key_id);
    }

    /// The app was deleted, revoking its keys: their login series go.
    pub(crate) fn app_deleted(&self, app: &str) {
        self.key_logins.remove_app(app);
    }

    pub(crate) fn verify(&self, outcome: &'static str) {
        self.verifies.inc(outcome);
    }

    pub(crate) fn revocation(&self, outcome: &'static str) {
        self.revocations.inc(outcome);
    }

    pub(crate) fn sweep(&self, result: &crate::domain::error::Result<Swept>) {
        self.sweeps
            .inc(if result.is_ok() { "ok" } else { "failed" });
        if let Ok(swept) = result {
            self.swept_machines
                .inc_by((swept.expired_machines + swept.idle_machines) as u64);
            self.stamps_written.inc_by(swept.stamps_written as u64);
        }
    }

    /// The text exposition, with the caller's count of stored machine sessions (`None`
    /// while it is not known yet, which leaves the gauge out).
    pub(crate) fn encode(&self, machines: Option<u64>) -> String {
        let value = machines.map_or(-1, |count| i64::try_from(count).unwrap_or(i64::MAX));
        self.machines.0.store(value, Ordering::Relaxed);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// `authkeys_active_machines`: a gauge that is absent (rather than a false 0) until its value
/// is known; -1 stands for unknown.
#[derive(Debug)]
struct MachineGauge(AtomicI64);

impl Default for MachineGauge {
    fn default() -> MachineGauge {
        MachineGauge(AtomicI64::new(-1))
    }
}

impl prometheus_client::collector::Collector for MachineGauge {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let value = self.0.load(Ordering::Relaxed);
        if value < 0 {
            return Ok(());
        }
        encoder
            .encode_descriptor(
                "active_machines",
                "Machine sessions logged in; an ephemeral one counts until the sweeper removes \
                 it, at most one sweep interval after it expires. Kept by every login, logout, \
                 revocation and sweep, never counted at scrape time",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?
            .encode_gauge(&value)
    }
}

/// A counter per outcome. The expected outcomes are created up front (so they read 0 rather
/// than being absent) and counted with one atomic add; any other outcome, such as a rare
/// error code, goes through the family's lock.
struct Outcomes {
    family: Family<OutcomeLabels, Counter>,
    expected: Vec<(&'static str, Counter)>,
}

impl Outcomes {
    fn register(
        registry: &mut Registry,
        name: &str,
        help: &str,
        expected: &[&'static str],
    ) -> Outcomes {
        let family = Family::<OutcomeLabels, Counter>::default();
        registry.register(name, help, family.clone());
        let expected = expected
            .iter()
            .map(|outcome| {
                let counter = family.get_or_create_owned(&OutcomeLabels { outcome });
                (*outcome, counter)
            })
            .collect();
        Outcomes { family, expected }
    }

    fn inc(&self, outcome: &'static str) {
        match self.expected.iter().find(|(known, _)| *known == outcome) {
            Some((_, counter)) => counter.inc(),
            None => self.family.get_or_create(&OutcomeLabels { outcome }).inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_per_template_and_keeps_unknown_methods_out_of_labels() {
        let metrics = Metrics::new(&["/v1/apps/{app}", "unmatched"]);
        metrics.request("/v1/apps/{app}", "GET", 200, Duration::from_micros(150));
        metrics.request("/v1/apps/{app}", "GET", 200, Duration::from_millis(2));
        metrics.request("unmatched", "BREW", 404, Duration::from_micros(50));
        let text = metrics.encode(Some(3));
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
        let bucket = |le: &str, count: u32| {
            format!(
                r#"authkeys_http_request_duration_seconds_bucket{{route="/v1/apps/{{app}}",method="GET",status="200",le="{le}"}} {count}"#
            )
        };
        // 150 µs and 2 ms: buckets are cumulative, and +Inf holds every observation.
        for (le, count) in [("0.0001", 0), ("0.0002", 1), ("0.0016", 1), ("0.0032", 2)] {
            assert!(has(&bucket(le, count)), "{}\n{text}", bucket(le, count));
        }
        assert!(has(&bucket("+Inf", 2)), "{text}");
        assert!(
            has(
                r#"authkeys_http_request_duration_seconds_sum{route="/v1/apps/{app}",method="GET",status="200"} 0.00215"#
            ),
            "{text}"
        );
        assert!(
            has(r#"authkeys_logins_total{outcome="auth_key_used"} 0"#),
            "{text}"
        );
        assert!(has("authkeys_active_machines 3"), "{text}");
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn counts_sweeps_and_outcomes_expected_or_not() {
        let metrics = Metrics::new(&["unmatched"]);
        let swept = Swept {
            expired_machines: 5,
            stamps_written: 2,
            ..Swept::default()
        };
        metrics.sweep(&Ok(swept));
        metrics.sweep(&Ok(swept));
        metrics.sweep(&Err(crate::domain::error::Error::Storage));
        metrics.login("success");
        metrics.login("invalid_field");
        let text = metrics.encode(None);
        for line in [
            r#"authkeys_sweeps_total{outcome="ok"} 2"#,
            r#"authkeys_sweeps_total{outcome="failed"} 1"#,
            "authkeys_swept_machines_total 10",
            "authkeys_usage_stamps_written_total 4",
            r#"authkeys_logins_total{outcome="success"} 1"#,
            r#"authkeys_logins_total{outcome="invalid_field"} 1"#,
            r#"authkeys_logins_total{outcome="auth_key_used"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
