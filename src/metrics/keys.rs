//! Successful logins per auth key, so that a reusable key logging in machines by the thousand
//! is visible on a dashboard before anyone reads a key listing. Key ids are not a closed set,
//! but only an admin creates them, and a key's series goes when it is revoked or its app is
//! deleted; past `MAX_KEY_SERIES` keys, logins are counted in one `untracked` counter, so a
//! scrape stays bounded whatever the admins do. Counters restart from 0 with the process, as
//! Prometheus counters do; a key's lifetime total is its `uses` in listings.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// Keys with a series of their own: a listing page's worth.
pub(crate) const MAX_KEY_SERIES: usize = 1000;

#[derive(Default, Debug)]
pub(crate) struct KeyLogins {
    /// Key id → (its app's id, logins since start).
    keys: RwLock<HashMap<String, (String, AtomicU64)>>,
    untracked: AtomicU64,
}

impl KeyLogins {
    /// Counts a login with `key_id` of `app`: an atomic add under a shared lock, the exclusive
    /// lock only for a key's first login since start.
    pub(crate) fn login(&self, app: &str, key_id: &str) {
        if let Some((_, count)) = self.read().get(key_id) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_KEY_SERIES && !keys.contains_key(key_id) {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (_, count) = keys
            .entry(key_id.to_string())
            .or_insert_with(|| (app.to_string(), AtomicU64::new(0)));
        count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove_key(&self, key_id: &str) {
        self.write().remove(key_id);
    }

    pub(crate) fn remove_app(&self, app: &str) {
        self.write().retain(|_, (key_app, _)| key_app != app);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (String, AtomicU64)>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (String, AtomicU64)>> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for KeyLogins {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counters = encoder.encode_descriptor(
            "key_logins",
            "Successful logins per auth key since start; a key's series goes when it is revoked",
            None,
            MetricType::Counter,
        )?;
        for (key_id, (app, count)) in self.read().iter() {
            let labels = [("app", app.as_str()), ("key_id", key_id.as_str())];
            counters
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count.load(Ordering::Relaxed), None)?;
        }
        let untracked = self.untracked.load(Ordering::Relaxed);
        encoder
            .encode_descriptor(
                "key_logins_untracked",
                "Successful logins with keys beyond the per-key series limit, since start",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&untracked, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(logins: KeyLogins) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("authkeys");
        registry.register_collector(Box::new(logins));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// Past `MAX_KEY_SERIES` keys, logins are still counted, in one series: a scrape stays
    /// bounded whatever the admins create. Keys already tracked keep counting.
    #[test]
    fn series_are_bounded_and_the_rest_counted_as_untracked() {
        let logins = KeyLogins::default();
        for n in 0..MAX_KEY_SERIES + 5 {
            logins.login("app", &format!("key_{n}"));
        }
        logins.login("app", "key_0");
        logins.login("app", "key_late");
        let text = encoded(logins);
        let series = text
            .lines()
            .filter(|l| l.starts_with("authkeys_key_logins_total{"))
            .count();
        assert_eq!(series, MAX_KEY_SERIES);
        assert!(
            text.contains(r#"authkeys_key_logins_total{app="app",key_id="key_0"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("authkeys_key_logins_untracked_total 6"),
            "{text}"
        );
    }

    #[test]
    fn revoking_a_key_or_deleting_its_app_removes_its_series() {
        let logins = KeyLogins::default();
        logins.login("a", "key_1");
        logins.login("a", "key_2");
        logins.login("b", "key_3");
        logins.remove_key("key_1");
        logins.remove_app("b");
        let text = encoded(logins);
        assert!(!text.contains("key_1") && !text.contains("key_3"), "{text}");
        assert!(text.contains(r#"key_id="key_2"} 1"#), "{text}");
    }
}
