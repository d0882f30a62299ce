//! A bounded in-memory cache of positive answers for the hot read paths: sessions (whoami) and
//! auth keys (verify), so that a hot token costs no database read.
//!
//! Revocation stays immediate through one rule, kept by `Authority`: every write that can make
//! a cached answer wrong calls `invalidate` after it commits and before its response is sent.
//! A reader that raced with such a write cannot put its stale answer back: it takes a
//! `generation` ticket before reading the database and `insert` drops the answer if any
//! invalidation happened since. Expiry is not cached away: callers judge every hit at `now`.

use crate::model::{App, Machine};
use crate::store::KeyStatus;
use crate::token::TokenHash;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// Entries per map. A full map evicts its oldest insertion: O(1), no latency spike, and a hot
/// token that was evicted is back after two misses. About 1 KiB per session.
pub const CAPACITY: usize = 4096;

/// Slots of the doorkeeper (a power of two); see `HotCache::admit`.
const DOORKEEPER_SLOTS: usize = 1 << 16;

/// A valid session as whoami answers it.
#[derive(Debug, Default)]
pub struct Session {
    pub app: App,
    pub machine: Machine,
    /// The HTTP layer's encoding of this answer, made once per cached entry so that a hot
    /// token is not re-encoded on every request. It lives and dies with the entry.
    pub encoded: OnceLock<Vec<u8>>,
}

impl Session {
    pub fn new(app: App, machine: Machine) -> Session {
        Session {
            app,
            machine,
            encoded: OnceLock::new(),
        }
    }
}

/// What a write invalidates.
#[derive(Clone, Copy, Debug)]
pub enum Invalidation {
    /// One session ended (logout).
    Session(TokenHash),
    /// One key's state changed (a login used it).
    Key(TokenHash),
    /// Anything may have changed (revocations, deletions).
    Everything,
}

/// Proof of the cache's state before a database read; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

pub struct HotCache {
    inner: RwLock<Inner>,
    /// Fingerprints of recently missed tokens, one per slot, written without locks. A token is
    /// cached on its second miss: a hot token is cached from its second request on, while a
    /// stream of tokens each seen once (a million clients, or a guesser) never takes the
    /// write lock or evicts the hot ones.
    doorkeeper: Box<[AtomicU64]>,
}

impl Default for HotCache {
    fn default() -> HotCache {
        HotCache {
            inner: RwLock::default(),
            doorkeeper: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

#[derive(Default)]
struct Inner {
    generation: u64,
    sessions: Bounded<Session>,
    keys: Bounded<KeyStatus>,
}

/// A map that forgets its oldest insertions beyond `CAPACITY`.
struct Bounded<V> {
    map: HashMap<TokenHash, Arc<V>>,
    /// Insertion order. May name entries already removed, or name one twice; it never holds
    /// more than `CAPACITY` hashes, so neither can the map.
    order: VecDeque<TokenHash>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Bounded<V> {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn get(&self, hash: &TokenHash) -> Option<Arc<V>> {
        self.map.get(hash).cloned()
    }

    fn insert(&mut self, hash: TokenHash, value: Arc<V>) {
        if self.map.insert(hash, value).is_none() {
            self.order.push_back(hash);
        }
        while self.order.len() > CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.map.remove(hash);
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

impl HotCache {
    pub fn ticket(&self) -> Ticket {
        Ticket(self.read().generation)
    }

    pub fn session(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.read().sessions.get(hash)
    }

    pub fn key(&self, hash: &TokenHash) -> Option<Arc<KeyStatus>> {
        self.read().keys.get(hash)
    }

    /// Caches a session read from the database after `ticket` was taken, unless something was
    /// invalidated in between, or this is the token's first miss.
    pub fn insert_session(&self, ticket: Ticket, hash: TokenHash, session: Arc<Session>) {
        if !self.admit(&hash) {
            return;
        }
        let mut inner = self.write();
        if inner.generation == ticket.0 {
            inner.sessions.insert(hash, session);
        }
    }

    pub fn insert_key(&self, ticket: Ticket, hash: TokenHash, key: Arc<KeyStatus>) {
        if !self.admit(&hash) {
            return;
        }
        let mut inner = self.write();
        if inner.generation == ticket.0 {
            inner.keys.insert(hash, key);
        }
    }

    /// Whether a missed token has missed before (recently enough that its slot still holds
    /// its fingerprint); otherwise remembers it. Token hashes are uniformly random, so their
    /// first eight bytes serve as both slot and fingerprint.
    fn admit(&self, hash: &TokenHash) -> bool {
        let bits = u64::from_le_bytes(hash.0[..8].try_into().expect("eight bytes"));
        let fingerprint = bits | 1;
        let slot = &self.doorkeeper[(bits >> 1) as usize % DOORKEEPER_SLOTS];
        slot.swap(fingerprint, Ordering::Relaxed) == fingerprint
    }

    /// Forgets what `what` covers and voids every ticket taken before now.
    pub fn invalidate(&self, what: Invalidation) {
        let mut inner = self.write();
        inner.generation += 1;
        match what {
            Invalidation::Session(hash) => {
                inner.sessions.remove(&hash);
            }
            Invalidation::Key(hash) => {
                inner.keys.remove(&hash);
            }
            Invalidation::Everything => {
                inner.sessions.clear();
                inner.keys.clear();
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts as the second miss does (the first only passes the doorkeeper).
    fn insert_key(cache: &HotCache, ticket: Ticket, hash: TokenHash, key: Arc<KeyStatus>) {
        cache.admit(&hash);
        cache.insert_key(ticket, hash, key);
    }

    fn key(id: &str) -> Arc<KeyStatus> {
        Arc::new(KeyStatus {
            pk: 1,
            id: id.into(),
            app: "app".into(),
            reusable: true,
            ephemeral: false,
            expires_at: None,
            revoked_at: None,
            uses: 0,
        })
    }

    #[test]
    fn a_token_is_cached_on_its_second_miss_only() {
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        cache.insert_key(cache.ticket(), hash, key("first"));
        assert_eq!(cache.key(&hash), None);
        cache.insert_key(cache.ticket(), hash, key("second"));
        assert_eq!(
            cache.key(&hash).map(|k| k.id.clone()),
            Some("second".into())
        );
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_cached() {
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        let ticket = cache.ticket();
        // A revocation commits and invalidates while the reader is still reading.
        cache.invalidate(Invalidation::Everything);
        insert_key(&cache, ticket, hash, key("stale"));
        assert_eq!(cache.key(&hash), None);
        let ticket = cache.ticket();
        insert_key(&cache, ticket, hash, key("fresh"));
        assert_eq!(cache.key(&hash).map(|k| k.id.clone()), Some("fresh".into()));
    }

    #[test]
    fn targeted_invalidation_removes_only_its_entry_but_voids_all_tickets() {
        let cache = HotCache::default();
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        insert_key(&cache, cache.ticket(), a, key("a"));
        insert_key(&cache, cache.ticket(), b, key("b"));
        let ticket = cache.ticket();
        cache.invalidate(Invalidation::Key(a));
        assert_eq!(cache.key(&a), None);
        assert!(cache.key(&b).is_some());
        insert_key(&cache, ticket, a, key("late"));
        assert_eq!(cache.key(&a), None);
    }

    #[test]
    fn stays_within_capacity_by_forgetting_the_oldest() {
        let cache = HotCache::default();
        let hash = |n: usize| TokenHash::of(&n.to_string());
        for n in 0..CAPACITY + 5 {
            insert_key(&cache, cache.ticket(), hash(n), key("k"));
        }
        assert_eq!(cache.read().keys.len(), CAPACITY);
        assert!(cache.key(&hash(4)).is_none());
        assert!(cache.key(&hash(5)).is_some());
        assert!(cache.key(&hash(CAPACITY + 4)).is_some());
        // Invalidations and re-insertions never let the order queue grow past the bound.
        for _ in 0..3 {
            for n in 0..CAPACITY {
                cache.invalidate(Invalidation::Key(hash(n)));
                insert_key(&cache, cache.ticket(), hash(n), key("k"));
            }
        }
        assert!(cache.read().keys.order.len() <= CAPACITY);
    }
}
