//! Usage stamps (`last_used_at` of keys, `last_seen_at` of machines) collected in memory on
//! the read paths and written in batches by the sweeper, so that whoami and verify never take
//! the write lock. The stored values may lag by up to one sweep interval, as the contract says.

use crate::model::Timestamp;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Default)]
pub struct UsageStamps {
    keys: Mutex<HashMap<i64, Timestamp>>,
    machines: Mutex<HashMap<i64, Timestamp>>,
}

/// Stamps taken out for writing: (row pk, latest time).
#[derive(Debug, Default, PartialEq)]
pub struct PendingStamps {
    pub keys: Vec<(i64, Timestamp)>,
    pub machines: Vec<(i64, Timestamp)>,
}

impl PendingStamps {
    pub fn len(&self) -> usize {
        self.keys.len() + self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl UsageStamps {
    pub fn key_used(&self, key_pk: i64, at: Timestamp) {
        record(&self.keys, key_pk, at);
    }

    pub fn machine_seen(&self, machine_pk: i64, at: Timestamp) {
        record(&self.machines, machine_pk, at);
    }

    /// Takes every pending stamp, leaving none behind.
    pub fn take(&self) -> PendingStamps {
        PendingStamps {
            keys: drain(&self.keys),
            machines: drain(&self.machines),
        }
    }

    /// Puts stamps back after a failed write so the next sweep retries them.
    pub fn restore(&self, pending: PendingStamps) {
        for (pk, at) in pending.keys {
            self.key_used(pk, at);
        }
        for (pk, at) in pending.machines {
            self.machine_seen(pk, at);
        }
    }
}

fn record(map: &Mutex<HashMap<i64, Timestamp>>, pk: i64, at: Timestamp) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    let stamp = map.entry(pk).or_insert(at);
    *stamp = (*stamp).max(at);
}

fn drain(map: &Mutex<HashMap<i64, Timestamp>>) -> Vec<(i64, Timestamp)> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.drain().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_stamp_per_row_and_restores_after_failure() {
        let stamps = UsageStamps::default();
        stamps.key_used(1, Timestamp(20));
        stamps.key_used(1, Timestamp(10));
        stamps.machine_seen(7, Timestamp(5));
        let pending = stamps.take();
        assert_eq!(pending.keys, vec![(1, Timestamp(20))]);
        assert_eq!(pending.machines, vec![(7, Timestamp(5))]);
        assert!(stamps.take().is_empty());
        stamps.machine_seen(7, Timestamp(9));
        stamps.restore(pending);
        assert_eq!(stamps.take().machines, vec![(7, Timestamp(9))]);
    }
}
