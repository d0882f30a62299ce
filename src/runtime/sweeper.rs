//! The background thread that deletes expired ephemeral machines and idle ones, and writes
//! usage stamps.
//! Its work is the plain function `sweep`; `Sweeper` only runs it on a timer and is joined when
//! dropped. Expiry itself is enforced on every request: the sweeper removes what has already
//! stopped working, so skipping a sweep never lets anyone in.

use crate::authority::audit;
use crate::cache::hot::{HotCache, Invalidation};
use crate::cache::usage::{PendingStamps, UsageStamps};
use crate::cluster::{Cluster, Exclusive};
use crate::domain::error::Result;
use crate::domain::model::{Batch, Swept, Timestamp};
use crate::metrics::Metrics;
use crate::runtime::priority;
use crate::store::{Store, Writer};
use std::panic;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Rows deleted (or stamped) per write transaction where a batch runs at the request threads'
/// priority or cannot give way to waiting writes: the first batch of expired machines, the
/// backlog on PostgreSQL, idle machines, `jti`s, audit retention. Small enough that logins and
/// revocations interleave with a large sweep. Measured sweeping 1,000,000 expired machines
/// (with their `machine.logged_out` events, in `Store::bulk_writes`) on 2 cores without other
/// load, when every batch was this size: batches of 10,000 took 44.4 s, of 20,000 38.9 s, 0.4
/// and 0.8 s per batch on average (a SQLite backlog now uses `BACKLOG_BATCH`).
pub(crate) const SWEEP_BATCH: usize = 20_000;

/// Deletes every machine expired at `now`, in batches (each with its `machine.logged_out`
/// events), writes pending usage stamps, records `key.expiring` for keys that came within
/// seven days of expiry, and deletes audit events older than `audit_retention`.
pub(crate) fn sweep(
    store: &Store,
    stamps: &UsageStamps,
    cache: &HotCache,
    audit_retention: Duration,
    now: Timestamp,
) -> Result<Swept> {
    let stamps_written = flush(store, stamps, cache, UsageStamps::take)?;
    let swept = sweep_rows(
        store,
        stamps,
        cache,
        audit_retention,
        IDLE_SWEEP_MARGIN_MS,
        now,
    )?;
    Ok(Swept {
        stamps_written,
        ..swept
    })
}

/// Writes the stamps `take` takes out; answers how many rows were stamped.
fn flush(
    store: &Store,
    stamps: &UsageStamps,
    cache: &HotCache,
    take: fn(&UsageStamps) -> PendingStamps,
) -> Result<usize> {
    let pending = take(stamps);
    if pending.is_empty() {
        return Ok(0);
    }
    let written = match write_stamps(store, &pending) {
        Ok(written) => written,
        Err(err) => {
            stamps.restore(pending);
            return Err(err);
        }
    };
    stamps.written();
    // Cached answers carry the stamps they were read with; dropping them keeps what
    // whoami shows within one sweep interval of the truth, as the contract promises.
    cache.invalidate(Invalidation::Everything);
    Ok(written)
}

/// The part of a sweep that one node at a time does (`Cluster::exclusive`): deletions of
/// expired and idle machines (idle ones `idle_margin_ms` late), `key.expiring`, retention.
fn sweep_rows(
    store: &Store,
    stamps: &UsageStamps,
    cache: &HotCache,
    audit_retention: Duration,
    idle_margin_ms: i64,
    now: Timestamp,
) -> Result<Swept> {
    let first = store.write(|w| expired_batch(w, store, now, SWEEP_BATCH, MOST_HELD))?;
    let mut expired_machines = first.done;
    if first.more {
        // A backlog (a mass expiry, or a server that was down), or a first batch that gave
        // way to a write: the rest on the backlog's thread.
        expired_machines += sweep_backlog(store, now)?;
    }
    // Tokens that can no longer be valid cannot be replayed: their `jti`s may go.
    in_counted_batches(|| store.write(|w| w.delete_expired_jtis(now, SWEEP_BATCH)))?;
    let idle_machines = sweep_idle(store, stamps, now.plus_millis(-idle_margin_ms), now)?;
    if idle_machines > 0 {
        // Not needed for safety (idleness is judged on every request), but their cached
        // sessions are dead weight now.
        cache.invalidate(Invalidation::Everything);
    }
    store.write(|w| w.announce_expiring_keys(now))?;
    let cutoff = Timestamp(now.0.saturating_sub(audit_retention.as_millis() as i64));
    in_counted_batches(|| store.write(|w| w.delete_events_before(cutoff, SWEEP_BATCH)))?;
    Ok(Swept {
        expired_machines,
        idle_machines,
        stamps_written: 0,
    })
}

/// Runs `batch` until no more is left; returns how much it did in all.
fn in_batches(mut batch: impl FnMut() -> Result<Batch>) -> Result<usize> {
    let mut done = 0;
    loop {
        let did = batch()?;
        done += did.done;
        if !did.more {
            return Ok(done);
        }
    }
}

/// `in_batches` for a `batch` that answers how many rows it did: more are left after a
/// whole `SWEEP_BATCH`.
fn in_counted_batches(mut batch: impl FnMut() -> Result<usize>) -> Result<usize> {
    in_batches(|| {
        let done = batch()?;
        Ok(Batch {
            done,
            more: done == SWEEP_BATCH,
        })
    })
}

/// The fewest rows a batch of expired machines deletes before it gives way to a waiting
/// write, so that a sweep still moves under a steady stream of logins: a few ms of work at
/// the usual priority (a million rows, with their events, take 14–17 s). Measured with one
/// login every 50 ms while 1,000,000 expired machines were swept under verify load: giving
/// way after 1,000 rows, a login waited for the rest of a batch at the backlog's priority and
/// its commit, 0.5–1.5 s; after 200, p50 7 ms, p99 1.3 s (without giving way: 7.7 s).
const GIVE_WAY_AFTER: usize = 200;

/// Rows per batch on the backlog's thread, on SQLite (`Store::long_writes_give_way`; on
/// PostgreSQL a batch is one statement whose transaction holds the cluster's write lock, so
/// it stays at `SWEEP_BATCH`). A batch gives way to any write that waits, with only its key
/// counters and its commit left to do (each event is written with its row), and commits after
/// `MOST_HELD` anyway; what its size sets is how often the backlog commits when nothing
/// waits. Each commit writes again every index page its rows touched, the random ones
/// (`token_hash`, `machines_by_key`) about one page per row. Sweeping 1,000,000 expired
/// machines without other load: batches of 20,000 wrote 3.3 GB in 21–26 s, of 100,000 1.1 GB
/// in 14–22 s (1.4 GB in 21 s with `MOST_HELD`); under `authkeys-bench sweep`, alternated,
/// 53.6–58.2 s against 49.4–50.9 s, logins' p99 alike (0.4–1.3 s). The cost: a WAL that
/// reached 286 MiB (checkpoints every 256 MiB in `Store::bulk_writes`, plus a batch).
const BACKLOG_BATCH: usize = 100_000;

/// How many rows a batch of the backlog deletes on `store`.
fn backlog_batch(store: &Store) -> usize {
    if store.long_writes_give_way() {
        BACKLOG_BATCH
    } else {
        SWEEP_BATCH
    }
}

/// The longest a batch of expired machines holds the write lock before it commits, waiting
/// writes or not (after `GIVE_WAY_AFTER` rows). `Store::writer_wanted` counts this process's
/// writes only: another process writing the same SQLite file (a second server, `authkeys
/// rotate-admin-token`) waits through its busy timeout (5 s by default), and a batch of
/// `BACKLOG_BATCH` rows starved of CPU could outlast it. Without other load a batch of
/// 100,000 rows takes about 1.5 s, so this costs a backlog alone a few commits.
const MOST_HELD: Duration = Duration::from_secs(1);

/// One batch of up to `limit` expired machines, giving way to waiting writes and after
/// holding the write lock for `most_held`.
fn expired_batch(
    w: &Writer,
    store: &Store,
    now: Timestamp,
    limit: usize,
    most_held: Duration,
) -> Result<Batch> {
    let started = Instant::now();
    audit::sweep_expired_machines(w, now, limit, |done| {
        done >= GIVE_WAY_AFTER && (store.writer_wanted() || started.elapsed() >= most_held)
    })
}

/// At most how long a backlog's thread waits for the writes it gave way to to take the lock.
const HAND_OVER: Duration = Duration::from_millis(100);

/// Waits until no write waits for the lock any more (each has taken it), or `HAND_OVER` has
/// passed. A batch that gave way commits and returns the lock, but the woken write must be
/// scheduled before it can take it, and without this the backlog's thread, still on the CPU,
/// takes it back first (measured: logins waited behind up to ten batches, 2.2 s).
fn hand_over(store: &Store) {
    let started = Instant::now();
    while store.writer_wanted() && started.elapsed() < HAND_OVER {
        thread::sleep(Duration::from_millis(1));
    }
}

/// Deletes a backlog of expired machines (a mass expiry, or a server that was down) in bulk,
/// on a thread of its own at a lower CPU priority (`priority::BACKLOG_NICENESS`): requests
/// answered meanwhile keep their latency, and the backlog takes the CPU they leave. Its
/// batches hold the write lock, so each gives way (commits early, see `expired_batch`) once
/// another write waits, and lets that write take the lock before the next (`hand_over`): a
/// login or a revocation waits behind a batch starved of CPU for at most `GIVE_WAY_AFTER` rows
/// and the commit of what the batch had done. Returns how many machines it deleted.
fn sweep_backlog(store: &Store, now: Timestamp) -> Result<usize> {
    let backlog = || {
        store.bulk_writes(|| {
            in_batches(|| {
                let limit = backlog_batch(store);
                let batch = store.write(|w| expired_batch(w, store, now, limit, MOST_HELD))?;
                hand_over(store);
                Ok(batch)
            })
        })
    };
    thread::scope(|scope| {
        let lowered = thread::Builder::new()
            .name("sweep-backlog".into())
            .spawn_scoped(scope, move || {
                // One way only (see `priority`), hence a thread that ends with the backlog.
                priority::lower_this_thread(priority::BACKLOG_NICENESS);
                backlog()
            });
        match lowered {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| panic::resume_unwind(panic)),
            Err(err) => {
                log::warn!("no thread for the sweep's backlog ({err}): sweeping it here");
                backlog()
            }
        }
    })
}

/// How long past its idle deadline the sweeper leaves a machine. Requests judge idleness
/// exactly; this margin only keeps the sweeper from deleting a machine whose last request
/// was judged (not idle) a moment before `now` but had not yet recorded its stamp.
pub(crate) const IDLE_SWEEP_MARGIN_MS: i64 = 1_000;

/// With several nodes, how often each writes its idle-limited machines' stamps: another node
/// judges those machines' idleness, and sweeps them, from the database.
pub(crate) const CLUSTER_STAMP_INTERVAL: Duration = Duration::from_secs(1);
/// With several nodes, the idle sweep's margin: above `CLUSTER_STAMP_INTERVAL` with room for
/// a slow flush, so a machine active on another node is never swept as idle.
pub(crate) const CLUSTER_IDLE_SWEEP_MARGIN_MS: i64 = 5_000;

/// Logs out the machines idle before `idle_before` (by their stored activity, then by their
/// pending stamps, which the flush before this one has mostly written), in batches.
fn sweep_idle(
    store: &Store,
    stamps: &UsageStamps,
    idle_before: Timestamp,
    now: Timestamp,
) -> Result<usize> {
    let mut idle_machines = 0;
    loop {
        let (deleted, candidates) = store.write(|w| {
            let (deleted, candidates) =
                w.delete_idle_machines(idle_before, SWEEP_BATCH, |pk, hash, timeout| {
                    stamps
                        .machine_last_seen(pk, *hash)
                        .is_some_and(|at| at.plus_secs(timeout) > idle_before)
                })?;
            let machines = deleted.iter().map(|m| (m.id.as_str(), m.app_pk));
            audit::swept(w, now, machines, "idle")?;
            Ok((deleted, candidates))
        })?;
        for machine in &deleted {
            stamps.forget_machine(machine.pk, machine.hash);
        }
        idle_machines += deleted.len();
        if candidates < SWEEP_BATCH {
            return Ok(idle_machines);
        }
    }
}

/// Writes the stamps in batches, like the deletions; returns how many rows were stamped.
/// Rewriting a batch after a failure is harmless because stamps only move forward. A stamp
/// whose row is gone (logged out, revoked, expired) is written nowhere, even if a new row has
/// taken its pk: see `usage::Stamp`.
fn write_stamps(store: &Store, pending: &PendingStamps) -> Result<usize> {
    let mut written = 0;
    for batch in pending.keys.chunks(SWEEP_BATCH) {
        written += store.write(|w| w.stamp_keys_used(batch))?;
    }
    for batch in pending.machines.chunks(SWEEP_BATCH) {
        written += store.write(|w| w.stamp_machines_seen(batch))?;
    }
    for batch in pending.admin_tokens.chunks(SWEEP_BATCH) {
        written += store.write(|w| w.stamp_admin_tokens_used(batch))?;
    }
    Ok(written)
}

fn count_machines(store: &Store) {
    let started = std::time::Instant::now();
    match store.count_machines() {
        Ok(count) => log::debug!(
            "counted {count} machines in {} ms",
            started.elapsed().as_millis()
        ),
        Err(err) => log::warn!("counting machines failed, will retry: {err}"),
    }
}

/// Why the sweeper thread wakes before its interval is up.
enum Wake {
    /// Many usage stamps are pending: write them now.
    Flush,
    Stop,
}

/// Owns the sweeper thread. Dropping it stops the thread after one last sweep and joins it.
pub(crate) struct Sweeper {
    wake: SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// With a `cluster`, every node writes its own stamps (its idle-limited machines' every
    /// `CLUSTER_STAMP_INTERVAL`) and one node at a time does the rest of the sweep.
    pub(crate) fn start(
        store: Arc<Store>,
        stamps: Arc<UsageStamps>,
        cache: Arc<HotCache>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
        interval: Duration,
        audit_retention: Duration,
    ) -> Sweeper {
        let (wake, woken) = mpsc::sync_channel::<Wake>(4);
        let flush_wake = wake.clone();
        stamps.on_many_pending(move || {
            // A full channel already holds a wake-up; nothing is lost by dropping this one.
            let _ = flush_wake.try_send(Wake::Flush);
        });
        let tick = match cluster {
            Some(_) => interval.min(CLUSTER_STAMP_INTERVAL),
            None => interval,
        };
        let thread = thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || {
                // First, off the start-up path: the machine count `/metrics` shows from then on
                // (kept by every write). Retried each pass until it succeeds.
                count_machines(&store);
                let mut next_sweep = Instant::now() + interval;
                loop {
                    if store.machine_rows().is_none() {
                        count_machines(&store);
                    }
                    let (stopping, woken_early) = match woken.recv_timeout(tick) {
                        Err(RecvTimeoutError::Timeout) => (false, false),
                        Ok(Wake::Flush) => (false, true),
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => (true, true),
                    };
                    if !woken_early && Instant::now() < next_sweep {
                        // Only with a cluster: a tick between two sweeps.
                        let take = UsageStamps::take_idle_limited;
                        if let Err(err) = flush(&store, &stamps, &cache, take) {
                            log::warn!("writing usage stamps failed, will retry: {err}");
                        }
                        continue;
                    }
                    next_sweep = Instant::now() + interval;
                    // A failed sweep is logged and retried next time: the thread keeps going.
                    let started = Instant::now();
                    let now = Timestamp::now();
                    let result = match &cluster {
                        None => sweep(&store, &stamps, &cache, audit_retention, now),
                        Some(cluster) => {
                            sweep_shared(&store, &stamps, &cache, cluster, audit_retention, now)
                        }
                    };
                    metrics.sweep(&result);
                    match result {
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

/// `sweep` on one of several nodes: this node's stamps, then the rest unless another node is
/// sweeping now (its sweep covers this one's: nothing here is per node).
fn sweep_shared(
    store: &Store,
    stamps: &UsageStamps,
    cache: &HotCache,
    cluster: &Cluster,
    audit_retention: Duration,
    now: Timestamp,
) -> Result<Swept> {
    let stamps_written = flush(store, stamps, cache, UsageStamps::take)?;
    let margin = CLUSTER_IDLE_SWEEP_MARGIN_MS;
    let rows = cluster.exclusive(Exclusive::Sweep, || {
        sweep_rows(store, stamps, cache, audit_retention, margin, now)
    })?;
    Ok(Swept {
        stamps_written,
        ..rows.transpose()?.unwrap_or_default()
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{Machine, NewKey};
    use crate::domain::token::{self, TokenHash, TokenKind};
    use crate::store::{Database, NewMachine, Writer};

    const APP: &str = "app";
    const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

    /// A store in a temp dir with app `APP`, one reusable ephemeral key (returned: its hash),
    /// and machines `mch_0`, `mch_1`, … that expire at each of `expiries` (`None`: never).
    fn store_with_machines(expiries: &[Option<i64>]) -> (tempfile::TempDir, Store, TokenHash) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        let secret = token::generate(TokenKind::AuthKey);
        let new_key = NewKey {
            reusable: true,
            ephemeral: true,
            ..NewKey::default()
        };
        store
            .write(|w| {
                let app = w.insert_app(APP, "App", Timestamp(0))?;
                let hint = token::hint(&secret);
                w.insert_key(
                    &app,
                    "key_1".into(),
                    &secret.hash(),
                    hint,
                    &new_key,
                    Timestamp(0),
                )?;
                for (n, expires_at) in expiries.iter().enumerate() {
                    log_in(w, &secret.hash(), &format!("mch_{n}"), *expires_at, 0)?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store, secret.hash())
    }

    /// Logs machine `id` in with the key `key` at `now`; returns it and its session's hash.
    fn log_in(
        w: &Writer,
        key: &TokenHash,
        id: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(Machine, TokenHash)> {
        let key = w.key_status(key)?.expect("the key exists");
        let session = token::generate(TokenKind::Session).hash();
        let machine = NewMachine {
            id: id.to_string(),
            token_hash: session,
            name: None,
            expires_at: expires_at.map(Timestamp),
        };
        Ok((w.insert_machine(&key, machine, Timestamp(now))?, session))
    }

    fn machine(store: &Store, id: &str) -> Option<Machine> {
        store
            .read(|r| r.machine(&r.app(APP)?.expect("the app"), id))
            .unwrap()
    }

    /// Every machine row of the app, expired or not, walking the listing's pages.
    fn machine_ids(store: &Store) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                crate::domain::page::PageRequest::parse(Some("1000"), cursor.as_deref()).unwrap();
            let machines = store
                .read(|r| {
                    let app = r.app(APP)?.expect("the app exists");
                    r.active_machines(&app, None, &[], &page, Timestamp(i64::MIN))
                })
                .unwrap();
            ids.extend(machines.items.into_iter().map(|machine| machine.id));
            match machines.next {
                Some(next) => cursor = Some(next.encode()),
                None => return ids,
            }
        }
    }

    /// The ids of the machines the audit log says were logged out as expired, in order.
    fn expired_events(store: &Store) -> Vec<String> {
        let filter = crate::domain::audit::EventFilter {
            action: Some(crate::domain::audit::Action::MachineLoggedOut),
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                crate::domain::page::PageRequest::parse(Some("1000"), cursor.as_deref()).unwrap();
            let events = store.read(|r| r.events(&filter, &page)).unwrap();
            for event in events.items {
                assert_eq!(event.details.get(), r#"{"reason":"expired"}"#);
                ids.push(event.target.id.expect("a machine id"));
            }
            match events.next {
                Some(next) => cursor = Some(next.encode()),
                None => return ids,
            }
        }
    }

    /// The key's `machines` as listed at `now`, and the store's count of machine rows.
    fn counts(store: &Store, now: i64) -> (i64, Option<u64>) {
        let key = store
            .read(|r| r.key(&r.app(APP)?.expect("the app"), "key_1", Timestamp(now)))
            .unwrap()
            .expect("the key");
        (key.machines, store.machine_rows())
    }

    #[test]
    fn deletes_exactly_what_has_expired_at_now_in_batches() {
        // More expired machines than one batch, one that expires later, one that never does.
        let mut expiries = vec![Some(1_000); SWEEP_BATCH + 2];
        expiries.extend([Some(5_000), None]);
        let (_dir, store, _) = store_with_machines(&expiries);
        let stamps = UsageStamps::default();
        let cache = HotCache::default();
        let swept = |now| sweep(&store, &stamps, &cache, RETENTION, Timestamp(now)).unwrap();

        store.count_machines().unwrap();
        let all = SWEEP_BATCH as i64 + 4;
        assert_eq!(swept(999), Swept::default());
        assert_eq!(machine_ids(&store).len(), SWEEP_BATCH + 4);
        assert_eq!(counts(&store, 999), (all, Some(all as u64)));
        // Expired, not yet swept: no longer active, still stored.
        assert_eq!(counts(&store, 1_000), (2, Some(all as u64)));
        assert_eq!(swept(1_000).expired_machines, SWEEP_BATCH + 2);
        assert_eq!(counts(&store, 1_000), (2, Some(2)));
        // One event per machine, the first batch's and the rest's (swept in bulk) alike.
        let mut logged_out = expired_events(&store);
        logged_out.sort();
        let mut expected: Vec<String> = (0..SWEEP_BATCH + 2).map(|n| format!("mch_{n}")).collect();
        expected.sort();
        assert_eq!(logged_out, expected);
        let left = [
            format!("mch_{}", SWEEP_BATCH + 2),
            format!("mch_{}", SWEEP_BATCH + 3),
        ];
        let mut ids = machine_ids(&store);
        ids.sort();
        assert_eq!(ids, left);
        assert_eq!(swept(4_999), Swept::default());
        assert_eq!(swept(i64::MAX).expired_machines, 1);
        assert_eq!(machine_ids(&store), [left[1].clone()]);
        assert_eq!(counts(&store, i64::MAX), (1, Some(1)));
    }

    /// A batch of expired machines stops where `give_way` says, and says more are left; each
    /// machine it deleted was handed on before it stopped.
    #[test]
    fn a_batch_of_expired_machines_stops_when_told_to_give_way() {
        let (_dir, store, _) = store_with_machines(&[Some(10); 10]);
        store.count_machines().unwrap();
        let expired = |give_way: fn(usize) -> bool| {
            let mut handed_on = Vec::new();
            let batch = store
                .write(|w| {
                    w.delete_expired_machines(Timestamp(10), 8, give_way, |id, _| {
                        handed_on.push(id.to_string());
                        Ok(())
                    })
                })
                .unwrap();
            assert_eq!(handed_on.len(), batch.done);
            assert!(machine_ids(&store).iter().all(|id| !handed_on.contains(id)));
            (batch.done, batch.more, store.machine_rows())
        };
        assert_eq!(expired(|done| done >= 3), (3, true, Some(7)));
        assert_eq!(counts(&store, 0), (7, Some(7)));
        assert_eq!(expired(|_| false), (7, false, Some(0)));
        assert_eq!(expired(|_| false), (0, false, Some(0)));
    }

    /// A batch of expired machines commits once it has held the write lock for its time,
    /// with no write waiting (one from another process would not be counted), after the
    /// fewest rows it deletes before giving way.
    #[test]
    fn a_batch_of_expired_machines_commits_after_holding_the_lock_for_its_time() {
        let (_dir, store, _) = store_with_machines(&[Some(10); GIVE_WAY_AFTER + 100]);
        let batch = |most_held| {
            store
                .write(|w| expired_batch(w, &store, Timestamp(10), 1_000, most_held))
                .unwrap()
        };
        let done = Batch {
            done: GIVE_WAY_AFTER,
            more: true,
        };
        assert_eq!(batch(Duration::ZERO), done);
        assert_eq!(machine_ids(&store).len(), 100);
        let rest = Batch {
            done: 100,
            more: false,
        };
        assert_eq!(batch(Duration::from_secs(3600)), rest);
    }

    /// A backlog's batches give way to writes that wait: with writes arriving all the time,
    /// some run in the middle of its batches. The first batch gives way once (the rest is a
    /// backlog, fewer rows than one of its batches); a backlog that never gave way would let
    /// the writes see only that and none left, and batches that never gave way only all the
    /// rows, the backlog after a whole first batch, or none.
    #[test]
    fn a_backlog_gives_way_to_waiting_writes_in_the_middle_of_its_batches() {
        let backlog = 5 * GIVE_WAY_AFTER;
        let (_dir, store, _) = store_with_machines(&vec![Some(1_000); SWEEP_BATCH + backlog]);
        let stamps = UsageStamps::default();
        let cache = HotCache::default();
        let swept = &std::sync::atomic::AtomicBool::new(false);
        let store = &store;
        let (writing, first_write) = std::sync::mpsc::channel();
        let seen = std::thread::scope(|scope| {
            let writes = scope.spawn(move || {
                let mut seen = Vec::new();
                while !swept.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.push(store.write(|w| w.machine_rows_of_all_keys()).unwrap() as usize);
                    let _ = writing.send(());
                }
                seen
            });
            // Writes already arrive when the sweep starts, whenever the thread is scheduled.
            first_write.recv().unwrap();
            let done = sweep(store, &stamps, &cache, RETENTION, Timestamp(1_000)).unwrap();
            swept.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(done.expired_machines, SWEEP_BATCH + backlog);
            writes.join().unwrap()
        });
        let mut seen = seen;
        seen.dedup();
        let all = SWEEP_BATCH + backlog;
        let inside = seen
            .iter()
            .filter(|&&left| 0 < left && left < all && left != backlog);
        assert!(
            inside.count() >= 2,
            "writes ran only between batches: rows left as they saw them {seen:?}"
        );
        assert_eq!(machine_ids(store), Vec::<String>::new());
    }

    #[test]
    fn writes_pending_usage_stamps() {
        let (_dir, store, key) = store_with_machines(&[]);
        let (seen, session) = store.write(|w| log_in(w, &key, "mch_0", None, 0)).unwrap();
        let stamps = UsageStamps::default();
        stamps.machine_seen(seen.pk, session, Timestamp(42_000));
        let cache = HotCache::default();
        let ticket = cache.ticket();
        let swept = sweep(&store, &stamps, &cache, RETENTION, Timestamp(50_000)).unwrap();
        assert_eq!(swept.stamps_written, 1);
        assert_ne!(
            cache.ticket(),
            ticket,
            "cached answers carrying old stamps must be dropped"
        );
        let machine = machine(&store, "mch_0").expect("the machine");
        assert_eq!(machine.last_seen_at, Some(Timestamp(42_000)));
        assert_eq!(
            sweep(&store, &stamps, &cache, RETENTION, Timestamp(60_000)).unwrap(),
            Swept::default()
        );
    }

    /// A whoami that judged its machine live just before expiry records its stamp just after
    /// the sweep that deleted the machine; the next login takes the freed pk.
    #[test]
    fn a_stamp_of_a_swept_machine_never_reaches_the_machine_that_takes_its_pk() {
        let (_dir, store, key) = store_with_machines(&[]);
        let stamps = UsageStamps::default();
        let cache = HotCache::default();
        let swept = |now| sweep(&store, &stamps, &cache, RETENTION, Timestamp(now)).unwrap();
        let log_in = |id, expires_at, now| {
            store
                .write(|w| log_in(w, &key, id, expires_at, now))
                .unwrap()
        };
        let (old, old_session) = log_in("mch_old", Some(1_000), 0);
        assert_eq!(swept(1_000).expired_machines, 1);
        stamps.machine_seen(old.pk, old_session, Timestamp(999));
        let (new, new_session) = log_in("mch_new", None, 1_500);
        assert_eq!(
            new.pk, old.pk,
            "SQLite reuses the pk of the deleted newest row"
        );

        assert_eq!(swept(2_000).stamps_written, 0);
        assert_eq!(machine(&store, "mch_new").unwrap().last_seen_at, None);
        stamps.machine_seen(new.pk, new_session, Timestamp(2_500));
        assert_eq!(swept(3_000).stamps_written, 1);
        let seen = machine(&store, "mch_new").unwrap().last_seen_at;
        assert_eq!(seen, Some(Timestamp(2_500)));
    }
}
