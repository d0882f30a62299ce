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
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
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
        // In batches, like the deletions below; rewriting a batch after a failure is harmless
        // because stamps only move forward.
        let written = pending
            .keys
            .chunks(SWEEP_BATCH)
            .try_for_each(|batch| store.write(|w| w.stamp_keys_used(batch)))
            .and_then(|()| {
                pending
                    .machines
                    .chunks(SWEEP_BATCH)
                    .try_for_each(|batch| store.write(|w| w.stamp_machines_seen(batch)))
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

/// Why the sweeper thread wakes before its interval is up.
enum Wake {
    /// Many usage stamps are pending: write them now.
    Flush,
    Stop,
}

/// Owns the sweeper thread. Dropping it stops the thread after one last sweep and joins it.
pub struct Sweeper {
    wake: SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    pub fn start(
        store: Arc<Store>,
        stamps: Arc<UsageStamps>,
        cache: Arc<HotCache>,
        interval: Duration,
    ) -> Sweeper {
        let (wake, woken) = mpsc::sync_channel::<Wake>(4);
        let flush = wake.clone();
        stamps.on_many_pending(move || {
            // A full channel already holds a wake-up; nothing is lost by dropping this one.
            let _ = flush.try_send(Wake::Flush);
        });
        let thread = thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || {
                loop {
                    let stopping = match woken.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) | Ok(Wake::Flush) => false,
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => true,
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
            wake,
            thread: Some(thread),
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // Blocks only while the channel is full, which the thread empties as it runs.
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the sweeper thread panicked");
        }
    }
}
