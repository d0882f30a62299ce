//! Usage stamps (`last_used_at` of keys and admin tokens, `last_seen_at` of machines) collected in memory on
//! the read paths and written in batches by the sweeper, so that whoami and verify never take
//! the write lock. The stored values may lag by up to one sweep interval, as the contract says.

use crate::domain::model::Timestamp;
use crate::domain::token::TokenHash;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Pending stamps (per map) past which an early flush is requested. Large on purpose: each
/// stamp rewrites a page of its table (in the WAL, then again at the checkpoint), and `n`
/// stamps spread over a table of `P` leaf pages touch about `P(1 - e^(-n/P))` of them, so
/// bigger batches, written in row order, rewrite fewer pages per stamp. With whoami over
/// 1,000,000 machines and random tokens, the sweeper's share of the server's CPU fell from a
/// fifth (20,000 stamps in hash order) to 4% (200,000 in row order). A pending stamp takes
/// 24 bytes (see `Stamp`), so 200,000 of them about 6 MiB of map.
pub(crate) const FLUSH_AT: usize = 200_000;
/// Pending stamps (per map) past which new rows' stamps are dropped until the next flush, so
/// that memory stays bounded even if the database cannot be written for a while.
pub(crate) const MAX_PENDING: usize = 2 * FLUSH_AT;

/// The map key: a stamp's row, by pk and token hash prefix (see `Stamp`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct RowId {
    pk: i64,
    hash: HashPrefix,
}

impl RowId {
    fn of(pk: i64, hash: &TokenHash) -> RowId {
        RowId {
            pk,
            hash: HashPrefix::of(hash),
        }
    }
}

/// The first `HASH_PREFIX_LEN` bytes of a row's token hash: what a stamp keeps of it to know
/// its row again (see `Stamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HashPrefix(pub(crate) [u8; HASH_PREFIX_LEN]);

pub(crate) const HASH_PREFIX_LEN: usize = 8;

impl HashPrefix {
    pub(crate) fn of(hash: &TokenHash) -> HashPrefix {
        let mut prefix = [0; HASH_PREFIX_LEN];
        prefix.copy_from_slice(&hash.0[..HASH_PREFIX_LEN]);
        HashPrefix(prefix)
    }
}

/// Hashes the pk alone: only a reused pk is shared by two rows (equality still compares the
/// hash prefix), and 8 bytes hash faster than 16 on the hot path.
impl std::hash::Hash for RowId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pk.hash(state);
    }
}

#[derive(Default)]
pub(crate) struct UsageStamps {
    keys: Mutex<HashMap<RowId, Timestamp>>,
    machines: Mutex<HashMap<RowId, Timestamp>>,
    /// The pending stamps of machines with an idle timeout: kept apart (and never dropped),
    /// so that only they are copied to `machines_in_flight` while a flush writes them.
    idle_limited_machines: Mutex<HashMap<RowId, Timestamp>>,
    admin_tokens: Mutex<HashMap<RowId, Timestamp>>,
    /// Idle-limited machines' stamps taken out by the sweeper and not yet committed: still
    /// the truth about a machine's last request until the database holds them. Only theirs:
    /// copying every machine stamp of a 200,000-stamp flush cost 14 MiB of peak memory.
    machines_in_flight: Mutex<HashMap<RowId, Timestamp>>,
    /// Asks the sweeper to flush now (set once by the sweeper).
    flush_request: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// One stamp taken out for writing: its row's pk, which orders the flush, the first bytes of
/// the token hash stored in that row (`keys.hash`, `machines.token_hash`), which the flush
/// requires to match, and the latest time. SQLite gives the pk of the newest row to the next
/// insert once that row is deleted, so a pk alone could name another machine by the time the
/// stamp is written; a token hash is never reused, and the new row's matches the old one's
/// first 8 bytes with a chance of 2^-64 (the hashes are SHA-256 of random tokens). Keeping 8
/// bytes of 32 halves what pending stamps take: with whoami over 1,000,000 machines and random
/// tokens at about 55,000 requests a second, they had taken the large database's peak RSS
/// past its 64 MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stamp {
    pub(crate) pk: i64,
    pub(crate) hash: HashPrefix,
    pub(crate) at: Timestamp,
}

impl Stamp {
    fn row(&self) -> RowId {
        RowId {
            pk: self.pk,
            hash: self.hash,
        }
    }
}

/// Stamps taken out for writing, each list in row order.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PendingStamps {
    pub(crate) keys: Vec<Stamp>,
    pub(crate) machines: Vec<Stamp>,
    pub(crate) admin_tokens: Vec<Stamp>,
}

impl PendingStamps {
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.machines.len() + self.admin_tokens.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl UsageStamps {
    /// `hash` is the key's own (`keys.hash`).
    pub(crate) fn key_used(&self, key_pk: i64, hash: TokenHash, at: Timestamp) {
        self.record(&self.keys, RowId::of(key_pk, &hash), at, MAX_PENDING);
    }

    /// `hash` is the machine's session token hash (`machines.token_hash`).
    pub(crate) fn machine_seen(&self, machine_pk: i64, hash: TokenHash, at: Timestamp) {
        let row = RowId::of(machine_pk, &hash);
        self.record(&self.machines, row, at, MAX_PENDING);
    }

    /// `machine_seen` for a machine with an idle timeout, whose stamp is the truth about its
    /// last request (a dropped one would log it out early): kept even past `MAX_PENDING`. The
    /// map holds one stamp per machine row at most, and asks for a flush as usual.
    pub(crate) fn idle_limited_machine_seen(
        &self,
        machine_pk: i64,
        hash: TokenHash,
        at: Timestamp,
    ) {
        let row = RowId::of(machine_pk, &hash);
        self.record(&self.idle_limited_machines, row, at, usize::MAX);
    }

    /// `hash` is the scoped admin token's own (`admin_tokens.hash`).
    pub(crate) fn admin_token_used(&self, token_pk: i64, hash: TokenHash, at: Timestamp) {
        let row = RowId::of(token_pk, &hash);
        self.record(&self.admin_tokens, row, at, MAX_PENDING);
    }

    /// The latest stamp, not yet in the database (pending, or being written), of a machine
    /// with an idle timeout (whose stamps are recorded by `idle_limited_machine_seen`).
    pub(crate) fn machine_last_seen(&self, machine_pk: i64, hash: TokenHash) -> Option<Timestamp> {
        let row = RowId::of(machine_pk, &hash);
        // Pending first, in flight second: `take` fills the in-flight map, under its lock,
        // before it empties the pending one, so a stamp is always in one of the two.
        let pending = lock(&self.idle_limited_machines).get(&row).copied();
        let in_flight = lock(&self.machines_in_flight).get(&row).copied();
        pending.max(in_flight)
    }

    /// Drops the pending stamp of a machine whose row was just deleted. Only saves memory and
    /// a write: a stamp left behind (or recorded later by a request already under way) matches
    /// no row when it is flushed.
    pub(crate) fn forget_machine(&self, machine_pk: i64, hash: TokenHash) {
        let row = RowId::of(machine_pk, &hash);
        lock(&self.machines).remove(&row);
        lock(&self.idle_limited_machines).remove(&row);
    }

    /// Registers how to ask for an early flush when many stamps are pending.
    pub(crate) fn on_many_pending(&self, request: impl Fn() + Send + Sync + 'static) {
        let _ = self.flush_request.set(Box::new(request));
    }

    /// Records `row`'s stamp, unless `bound` stamps are pending and `row` is not among them.
    fn record(
        &self,
        map: &Mutex<HashMap<RowId, Timestamp>>,
        row: RowId,
        at: Timestamp,
        bound: usize,
    ) {
        let pending = {
            let mut map = lock(map);
            if map.len() < bound || map.contains_key(&row) {
                let stamp = map.entry(row).or_insert(at);
                *stamp = (*stamp).max(at);
            }
            map.len()
        };
        if pending >= FLUSH_AT
            && let Some(request) = self.flush_request.get()
        {
            request();
        }
    }

    /// Takes every pending stamp, leaving none behind, in row order: a batch of neighbouring
    /// rows shares pages, which keeps each write transaction (and the WAL) small.
    /// Idle-limited machines' stamps stay visible to `machine_last_seen` as in flight until
    /// `written`.
    pub(crate) fn take(&self) -> PendingStamps {
        let mut machines = drain(&self.machines);
        machines.extend(self.take_idle_limited_machines());
        machines.sort_unstable_by_key(|stamp| stamp.pk);
        PendingStamps {
            keys: drain(&self.keys),
            machines,
            admin_tokens: drain(&self.admin_tokens),
        }
    }

    /// Takes only the idle-limited machines' stamps, as `take` does. With several nodes these
    /// are written often (`sweeper`): another node judges the machine's idleness, and sweeps
    /// it, from the database.
    pub(crate) fn take_idle_limited(&self) -> PendingStamps {
        PendingStamps {
            machines: self.take_idle_limited_machines(),
            ..PendingStamps::default()
        }
    }

    fn take_idle_limited_machines(&self) -> Vec<Stamp> {
        let mut in_flight = lock(&self.machines_in_flight);
        let idle_limited = drain(&self.idle_limited_machines);
        in_flight.extend(idle_limited.iter().map(|stamp| (stamp.row(), stamp.at)));
        idle_limited
    }

    /// The stamps last taken are committed: the database now holds them.
    pub(crate) fn written(&self) {
        lock(&self.machines_in_flight).clear();
    }

    /// Puts stamps back after a failed write so the next sweep retries them.
    pub(crate) fn restore(&self, pending: PendingStamps) {
        // Pending again before they stop being in flight, so they are never in neither.
        self.put_back(pending);
        self.written();
    }

    fn put_back(&self, pending: PendingStamps) {
        for stamp in pending.keys {
            self.record(&self.keys, stamp.row(), stamp.at, MAX_PENDING);
        }
        // An idle-limited machine's stamp is the one in flight: back without a bound.
        for stamp in pending.machines {
            let row = stamp.row();
            if lock(&self.machines_in_flight).contains_key(&row) {
                self.record(&self.idle_limited_machines, row, stamp.at, usize::MAX);
            } else {
                self.record(&self.machines, row, stamp.at, MAX_PENDING);
            }
        }
        for stamp in pending.admin_tokens {
            self.record(&self.admin_tokens, stamp.row(), stamp.at, MAX_PENDING);
        }
    }
}

fn lock(
    map: &Mutex<HashMap<RowId, Timestamp>>,
) -> std::sync::MutexGuard<'_, HashMap<RowId, Timestamp>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

fn drain(map: &Mutex<HashMap<RowId, Timestamp>>) -> Vec<Stamp> {
    let mut stamps: Vec<_> = lock(map)
        .drain()
        .map(|(RowId { pk, hash }, at)| Stamp { pk, hash, at })
        .collect();
    stamps.sort_unstable_by_key(|stamp| stamp.pk);
    stamps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    fn stamp(pk: i64, n: u8, at: i64) -> Stamp {
        Stamp {
            pk,
            hash: HashPrefix::of(&hash(n)),
            at: Timestamp(at),
        }
    }

    #[test]
    fn keeps_the_latest_stamp_per_row_and_restores_after_failure() {
        let stamps = UsageStamps::default();
        stamps.key_used(1, hash(1), Timestamp(20));
        stamps.key_used(1, hash(1), Timestamp(10));
        // Machine 7 has an idle timeout, machine 3 none: both are written in row order, and
        // only 7's stamp is kept in flight (nothing asks for 3's).
        stamps.idle_limited_machine_seen(7, hash(7), Timestamp(5));
        stamps.machine_seen(3, hash(3), Timestamp(6));
        let pending = stamps.take();
        assert_eq!(
            stamps.machine_last_seen(7, hash(7)),
            Some(Timestamp(5)),
            "in flight"
        );
        assert_eq!(lock(&stamps.machines_in_flight).len(), 1, "only 7's");
        assert_eq!(pending.keys, vec![stamp(1, 1, 20)]);
        assert_eq!(pending.machines, vec![stamp(3, 3, 6), stamp(7, 7, 5)]);
        assert!(stamps.take().is_empty());
        stamps.idle_limited_machine_seen(7, hash(7), Timestamp(9));
        stamps.restore(pending);
        assert_eq!(stamps.machine_last_seen(7, hash(7)), Some(Timestamp(9)));
        assert_eq!(
            lock(&stamps.idle_limited_machines).len(),
            1,
            "7 back unbounded"
        );
        assert_eq!(stamps.take().machines, vec![stamp(3, 3, 6), stamp(7, 7, 9)]);
        stamps.written();
        assert_eq!(stamps.machine_last_seen(7, hash(7)), None, "written");
    }

    #[test]
    fn taking_only_the_idle_limited_stamps_leaves_the_others_and_keeps_them_in_flight() {
        let stamps = UsageStamps::default();
        stamps.key_used(1, hash(1), Timestamp(1));
        stamps.machine_seen(3, hash(3), Timestamp(2));
        stamps.idle_limited_machine_seen(7, hash(7), Timestamp(3));
        let idle = stamps.take_idle_limited();
        assert_eq!(
            idle,
            PendingStamps {
                machines: vec![stamp(7, 7, 3)],
                ..PendingStamps::default()
            }
        );
        assert_eq!(
            stamps.machine_last_seen(7, hash(7)),
            Some(Timestamp(3)),
            "in flight"
        );
        stamps.restore(idle);
        assert_eq!(
            stamps.machine_last_seen(7, hash(7)),
            Some(Timestamp(3)),
            "pending"
        );
        let all = stamps.take();
        assert_eq!(all.keys, vec![stamp(1, 1, 1)]);
        assert_eq!(all.machines, vec![stamp(3, 3, 2), stamp(7, 7, 3)]);
    }

    #[test]
    fn a_reused_pk_keeps_each_rows_stamp_apart_and_forgetting_takes_only_its_own() {
        let stamps = UsageStamps::default();
        // Machine 5 seen, deleted; a new machine takes pk 5 and is seen, earlier by the clock.
        stamps.machine_seen(5, hash(1), Timestamp(30));
        stamps.machine_seen(5, hash(2), Timestamp(20));
        let mut both = stamps.take().machines;
        both.sort_unstable_by_key(|stamp| stamp.at.0);
        assert_eq!(both, vec![stamp(5, 2, 20), stamp(5, 1, 30)]);

        stamps.machine_seen(5, hash(1), Timestamp(30));
        stamps.machine_seen(5, hash(2), Timestamp(20));
        stamps.forget_machine(5, hash(1));
        assert_eq!(stamps.take().machines, vec![stamp(5, 2, 20)]);
    }

    #[test]
    fn asks_for_a_flush_when_many_are_pending_and_stays_bounded() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let stamps = UsageStamps::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        stamps.on_many_pending(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        for pk in 0..FLUSH_AT as i64 - 1 {
            stamps.machine_seen(pk, hash(0), Timestamp(1));
        }
        assert_eq!(requests.load(Ordering::SeqCst), 0);
        stamps.machine_seen(-1, hash(0), Timestamp(1));
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        // Well past the bound: every row beyond it is dropped.
        for pk in 0..MAX_PENDING as i64 + 1_000 {
            stamps.machine_seen(pk, hash(0), Timestamp(2));
        }
        // A machine with an idle timeout is stamped all the same.
        stamps.idle_limited_machine_seen(-2, hash(0), Timestamp(3));
        assert_eq!(stamps.machine_last_seen(-2, hash(0)), Some(Timestamp(3)));
        assert_eq!(stamps.take().machines.len(), MAX_PENDING + 1);
    }
}
