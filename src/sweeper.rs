//! The background thread that deletes expired ephemeral machines and writes usage stamps.
//! Its work is the plain function `sweep`; `Sweeper` only runs it on a timer and is joined when
//! dropped. Expiry itself is enforced on every request: the sweeper removes what has already
//! stopped working, so skipping a sweep never lets anyone in.

use crate::error::Result;
use crate::hot_cache::{HotCache, Invalidation};
use crate::model::Timestamp;
use crate::store::Store;
use crate::usage::UsageStamps;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Rows deleted per write transaction: small enough that the write lock is never held for
/// long, so logins and revocations interleave with a large sweep.
pub const SWEEP_BATCH: usize = 1000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired_machines: usize,
    pub stamps_written: usize,
}

/// Deletes every machine expired at `now`, in batches, and writes pending usage stamps.
pub fn sweep(
    store: &Store,
    stamps: &UsageStamps,
    cache: &HotCache,
    now: Timestamp,
) -> Result<Swept> {
    let pending = stamps.take();
    let stamps_written = pending.len();
    if !pending.is_empty() {
        let written = store.write(|w| {
            w.stamp_keys_used(&pending.keys)?;
            w.stamp_machines_seen(&pending.machines)
        });
        if let Err(err) = written {
            stamps.restore(pending);
            return Err(err);
        }
        // Cached answers carry the stamps they were read with; dropping them keeps what
        // whoami shows within one sweep interval of the truth, as the contract promises.
        cache.invalidate(Invalidation::Everything);
    }
    let mut expired_machines = 0;
    loop {
        let deleted = store.write(|w| w.delete_expired_machines(now, SWEEP_BATCH))?;
        expired_machines += deleted;
        if deleted < SWEEP_BATCH {
            break;
        }
    }
    Ok(Swept {
        expired_machines,
        stamps_written,
    })
}

/// Owns the sweeper thread. Dropping it stops the thread after one last sweep and joins it.
pub struct Sweeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    pub fn start(
        store: Arc<Store>,
        stamps: Arc<UsageStamps>,
        cache: Arc<HotCache>,
        interval: Duration,
    ) -> Sweeper {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || {
                loop {
                    let stopping = match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    // A failed sweep is logged and retried next time: the thread keeps going.
                    let started = std::time::Instant::now();
                    match sweep(&store, &stamps, &cache, Timestamp::now()) {
                        Ok(swept) if swept.expired_machines > 0 => log::info!(
                            "swept {} expired machines in {} ms",
                            swept.expired_machines,
                            started.elapsed().as_millis()
                        ),
                        Ok(_) => {}
                        Err(err) => log::warn!("sweep failed, will retry: {err}"),
                    }
                    if stopping {
                        break;
                    }
                }
            })
            .expect("spawning the sweeper thread");
        Sweeper {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the sweeper thread panicked");
        }
    }
}
