//! When a node may use its hot cache: while its listener is registered (listening, and its
//! node row written after its `LISTEN`) and its lease holds by its own clock. The listener
//! thread reports both; a watchdog thread turns the cache off when the lease's local deadline
//! passes without a renewal, whatever the listener thread is stuck on. The cache itself holds
//! the lease's deadline too (`HotCache::use_until`), and every request checks it: after a
//! freeze longer than the lease, no request is served from the cache even if it runs before
//! the watchdog.

use crate::cache::hot::HotCache;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

pub(crate) struct Gate {
    cache: Arc<HotCache>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Listening, and the node row says so (see `Listener::register`).
    registered: bool,
    /// When the lease stops covering the cache by this node's clock (`None`: no lease).
    deadline: Option<Instant>,
    stopping: bool,
}

impl Gate {
    /// A gate that keeps `cache` off until the listener registers.
    pub(crate) fn new(cache: Arc<HotCache>) -> Gate {
        cache.set_usable(false);
        Gate {
            cache,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Registered (again) with a lease good until `deadline`.
    pub(crate) fn registered(&self, deadline: Instant) {
        self.update(|state| {
            state.registered = true;
            state.deadline = Some(deadline);
        });
    }

    /// The lease was renewed until `deadline`.
    pub(crate) fn renewed(&self, deadline: Instant) {
        self.update(|state| state.deadline = Some(deadline));
    }

    /// The listening connection is gone: off until the listener registers again.
    pub(crate) fn lost(&self) {
        self.update(|state| {
            state.registered = false;
            state.deadline = None;
        });
    }

    /// Off for good, and the watchdog told to stop.
    pub(crate) fn stop(&self) {
        self.update(|state| {
            state.stopping = true;
            state.registered = false;
        });
    }

    /// The watchdog: turns the cache off at the deadline unless renewed meanwhile.
    pub(crate) fn watch(&self) {
        let mut state = self.lock();
        while !state.stopping {
            let now = Instant::now();
            state = match state.deadline {
                Some(at) if at > now => self.wait(state, Some(at - now)),
                _ => {
                    self.apply(&state);
                    self.wait(state, None)
                }
            };
        }
    }

    fn wait<'a>(
        &self,
        state: std::sync::MutexGuard<'a, State>,
        timeout: Option<std::time::Duration>,
    ) -> std::sync::MutexGuard<'a, State> {
        match timeout {
            Some(timeout) => {
                let (state, _) = self
                    .changed
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner);
                state
            }
            None => self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Applies `change`, then turns the cache on or off to match (under the lock, so two
    /// changes cannot apply in the wrong order). The state before the change is applied
    /// first: a lease that ran out while the watchdog was late is seen to have run out, so a
    /// renewal after it still empties the cache before turning it on.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        self.apply(&state);
        change(&mut state);
        self.apply(&state);
        self.changed.notify_all();
    }

    fn apply(&self, state: &State) {
        let now = Instant::now();
        let lease = state
            .deadline
            .filter(|at| *at > now && state.registered && !state.stopping);
        let was_on = self.cache.is_on();
        if let Some(deadline) = lease {
            self.cache.use_until(deadline);
            if !was_on {
                log::info!("cluster: hot cache on (listening, lease held)");
            }
            return;
        }
        if !was_on {
            return;
        }
        self.cache.set_usable(false);
        if !state.stopping {
            let why = if state.registered {
                "the lease ran out before it was renewed"
            } else {
                "the listener is not connected"
            };
            log::warn!("cluster: hot cache off ({why}); every request reads the database");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cache_is_on_only_while_registered_and_within_the_lease() {
        let cache = Arc::new(HotCache::default());
        let gate = Arc::new(Gate::new(Arc::clone(&cache)));
        assert!(!cache.is_usable(), "off until registered");
        let watchdog = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.watch())
        };
        gate.registered(Instant::now() + Duration::from_secs(60));
        assert!(cache.is_usable());
        gate.lost();
        assert!(!cache.is_usable());
        gate.registered(Instant::now() + Duration::from_millis(100));
        assert!(cache.is_usable());
        // Not renewed: the watchdog turns it off at the deadline, by itself (and empties it).
        let started = Instant::now();
        while cache.is_on() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never turned off"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // A renewal that comes too late leaves it off; one in time turns it back on.
        gate.renewed(Instant::now() - Duration::from_millis(1));
        assert!(!cache.is_usable());
        gate.renewed(Instant::now() + Duration::from_secs(60));
        assert!(cache.is_usable());

        gate.stop();
        assert!(!cache.is_usable());
        watchdog.join().unwrap();
    }

    /// A lease that ran out unseen (no watchdog here: as if it were late) still empties the
    /// cache when the next renewal turns it on: entries from before are not served again.
    #[test]
    fn a_renewal_after_an_unseen_lapse_empties_the_cache() {
        let cache = Arc::new(HotCache::default());
        let gate = Gate::new(Arc::clone(&cache));
        gate.registered(Instant::now() + Duration::from_millis(20));
        let ticket = cache.ticket();
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.is_on(), "nobody has turned it off yet");
        assert!(
            !cache.is_usable(),
            "yet past the deadline it serves nothing"
        );
        gate.renewed(Instant::now() + Duration::from_secs(60));
        assert!(cache.is_usable());
        assert_ne!(cache.ticket(), ticket, "emptied on the way");
        // Renewed within the lease: nothing is emptied.
        let ticket = cache.ticket();
        gate.renewed(Instant::now() + Duration::from_secs(60));
        assert_eq!(cache.ticket(), ticket);
    }
}
