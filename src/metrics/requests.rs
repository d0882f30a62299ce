//! Request counts and latency histograms per (route template, method, status), kept without
//! locks: every combination has a fixed slot, whose counters are created on first use
//! (`OnceLock`, a single atomic load afterwards) and updated with atomic adds. A scrape walks
//! the slots in use and hands their values to prometheus-client's encoder.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Methods with a label of their own; anything else is counted as `other`.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// Every status authkeys answers with, the HTTP layer's refusals included (see
/// `http::limits`); anything else (a bug) is counted as `other`.
const STATUSES: &[(u16, &str)] = &[
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (409, "409"),
    (413, "413"),
    (414, "414"),
    (415, "415"),
    (417, "417"),
    (422, "422"),
    (429, "429"),
    (431, "431"),
    (500, "500"),
    (505, "505"),
];
/// Status slots: one per entry of `STATUSES`, then `other`.
const STATUS_SLOTS: usize = STATUSES.len() + 1;
/// Upper bounds of the latency buckets, in seconds: 100 µs doubling to about 3.3 s. The hot
/// paths answer in well under a millisecond; a write waiting on `synchronous=FULL` can take
/// tens of milliseconds.
const BUCKETS: [f64; 16] = {
    let mut bounds = [0.0001; 16];
    let mut i = 1;
    while i < bounds.len() {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

#[derive(Default)]
struct Slot {
    count: AtomicU64,
    nanos: AtomicU64,
    /// Observations per bucket (not cumulative); above the last bound only `count` moves.
    buckets: [AtomicU64; BUCKETS.len()],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: &'static str,
}

pub(crate) struct RequestTable {
    routes: &'static [&'static str],
    slots: Box<[OnceLock<Box<Slot>>]>,
}

impl std::fmt::Debug for RequestTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl RequestTable {
    /// A table for these route labels (templates, plus one for paths that match none).
    pub(crate) fn new(routes: &'static [&'static str]) -> RequestTable {
        let len = routes.len() * METHODS.len() * STATUS_SLOTS;
        RequestTable {
            routes,
            slots: (0..len).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let route = position(self.routes, route).unwrap_or(self.routes.len() - 1);
        let method = position(METHODS, method).unwrap_or(METHODS.len() - 1);
        let status = status_index(status);
        let index = (route * METHODS.len() + method) * STATUS_SLOTS + status;
        let slot = self.slots[index].get_or_init(Box::default);
        let secs = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| secs <= *bound) {
            slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        slot.nanos.fetch_add(nanos, Ordering::Relaxed);
        slot.count.fetch_add(1, Ordering::Relaxed);
    }

    fn used(&self) -> impl Iterator<Item = (RequestLabels, &Slot)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let slot = slot.get()?;
            let status = index % STATUS_SLOTS;
            let method = index / STATUS_SLOTS % METHODS.len();
            let route = index / STATUS_SLOTS / METHODS.len();
            let labels = RequestLabels {
                route: self.routes[route],
                method: METHODS[method],
                status: status_label(status),
            };
            Some((labels, &**slot))
        })
    }
}

fn position(labels: &[&str], value: &str) -> Option<usize> {
    labels.iter().position(|label| *label == value)
}

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|(code, _)| *code == status)
        .unwrap_or(STATUSES.len())
}

fn status_label(index: usize) -> &'static str {
    STATUSES.get(index).map_or("other", |(_, label)| label)
}

impl Collector for RequestTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counters = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            None,
            MetricType::Counter,
        )?;
        for (labels, slot) in self.used() {
            let count = slot.count.load(Ordering::Relaxed);
            counters
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        let mut histograms = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            None,
            MetricType::Histogram,
        )?;
        for (labels, slot) in self.used() {
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .zip(&slot.buckets)
                .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
                .collect();
            let sum = slot.nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let count = slot.count.load(Ordering::Relaxed);
            histograms
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}
