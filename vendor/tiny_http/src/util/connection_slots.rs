//! authkeys patch: a cap on concurrent connections. Upstream accepted every connection and
//! gave each its own thread, without bound.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct ConnectionSlots {
    taken: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// One connection's place; dropping it frees the place.
pub struct Slot(Arc<ConnectionSlots>);

impl ConnectionSlots {
    pub fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            taken: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Takes a free place, waiting at most `timeout` for one.
    pub fn acquire(self: &Arc<Self>, timeout: Duration) -> Option<Slot> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let (mut taken, _) = self
            .freed
            .wait_timeout_while(taken, timeout, |taken| *taken >= self.max)
            .unwrap_or_else(|e| e.into_inner());
        if *taken >= self.max {
            return None;
        }
        *taken += 1;
        Some(Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}
