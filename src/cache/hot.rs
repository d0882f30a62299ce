//! A bounded in-memory cache of positive answers for the hot read paths: sessions (whoami) and
//! auth keys (verify), so that a hot token costs no database read.
//!
//! Revocation stays immediate through one rule, kept by `Authority`: every write that can make
//! a cached answer wrong calls `invalidate` after it commits and before its response is sent.
//! A reader that raced with such a write cannot put its stale answer back: it takes a
//! `generation` ticket before reading the database and `insert` drops the answer if any
//! invalidation happened since. Expiry is not cached away: callers judge every hit at `now`.
//!
//! With several nodes (`cluster`), a node may use its cache only while it hears every other
//! node's changes and its lease holds: `set_usable(false)` turns hits and insertions off (every
//! request reads the database), `use_until(deadline)` turns them on until the lease's deadline,
//! emptying the cache first unless it was in use, and `set_usable(true)` turns them on for good
//! (one node). The deadline is checked by every request itself, not only by a watchdog: a node
//! frozen past its lease (SIGSTOP, a paused VM) serves nothing from its cache when it runs
//! again, whichever of its threads runs first. The hot path pays one atomic load for it, and
//! a monotonic clock read only while a lease is in force.

use super::Encoded;
use crate::cache::app::CachedApp;
use crate::domain::model::KeyStatus;
use crate::domain::model::Machine;
use crate::domain::token::TokenHash;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::Instant;

/// Entries per map. A full map evicts its oldest insertion: O(1), no latency spike, and a hot
/// token that was evicted is back after two misses. About 1 KiB per session.
pub(crate) const CAPACITY: usize = 4096;

/// Slots of the doorkeeper (a power of two); see `HotCache::admit`.
const DOORKEEPER_SLOTS: usize = 1 << 16;

/// A valid session as whoami answers it.
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub(crate) app: Arc<CachedApp>,
    pub(crate) machine: Machine,
    /// The encoded whoami body, made once per cached entry so that a hot token is not
    /// re-encoded on every request.
    pub(crate) encoded: Encoded<Vec<u8>>,
    /// Forward auth's header values, made once per cached entry.
    pub(crate) headers: ForwardHeaders,
}

/// The values of forward auth's headers that take work to make.
#[derive(Debug, Default)]
pub(crate) struct ForwardHeaders {
    /// `X-Authkeys-Machine-Name`: the name, percent-encoded beyond printable ASCII (a header
    /// value carries bytes, not text), empty when the machine has none.
    pub(crate) machine_name: String,
    /// `X-Authkeys-Tags`: the sorted tags, comma-separated, empty when none.
    pub(crate) tags: String,
}

/// What a machine name keeps of ASCII in a header: printable characters but `%`.
const HEADER_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

impl Session {
    pub(crate) fn new(app: Arc<CachedApp>, machine: Machine) -> Session {
        let headers = ForwardHeaders {
            machine_name: machine.name.as_deref().map_or_else(String::new, |name| {
                percent_encoding::utf8_percent_encode(name, HEADER_ESCAPES).to_string()
            }),
            // Stored sorted (`Authority::create_key`).
            tags: machine.tags.join(","),
        };
        Session {
            app,
            machine,
            encoded: Encoded::default(),
            headers,
        }
    }
}

/// A key that verifies, as verify answers it.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) status: KeyStatus,
    /// The encoded valid answer (with the key's tags and metadata), made once per cached
    /// entry. A login, which changes `uses_remaining`, invalidates the entry.
    pub(crate) encoded: Encoded<Vec<u8>>,
}

impl std::ops::Deref for CachedKey {
    type Target = KeyStatus;

    fn deref(&self) -> &KeyStatus {
        &self.status
    }
}

impl PartialEq for CachedKey {
    fn eq(&self, other: &CachedKey) -> bool {
        self.status == other.status
    }
}

/// What a write invalidates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Invalidation {
    /// One session ended (logout).
    Session(TokenHash),
    /// One key's state changed (a login used it).
    Key(TokenHash),
    /// Anything may have changed (revocations, deletions).
    Everything,
}

/// Proof of the cache's state before a database read; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

pub(crate) struct HotCache {
    inner: RwLock<Inner>,
    /// Fingerprints of recently missed tokens, one per slot, written without locks. A token is
    /// cached on its second miss: a hot token is cached from its second request on, while a
    /// stream of tokens each seen once (a million clients, or a guesser) never takes the
    /// write lock or evicts the hot ones.
    doorkeeper: Box<[AtomicU64]>,
    /// Until when answers may be served from and put into the cache (see `set_usable`):
    /// `OFF`, `ALWAYS`, or a lease's deadline in nanoseconds since `EPOCH`.
    usable_until: AtomicU64,
}

const OFF: u64 = 0;
const ALWAYS: u64 = u64::MAX;

/// The origin of `usable_until`'s deadlines (a monotonic clock: wall-clock jumps do not move a
/// lease).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `at` as a deadline for `usable_until`: never `OFF` or `ALWAYS` themselves.
fn deadline(at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(*EPOCH).as_nanos();
    u64::try_from(nanos)
        .unwrap_or(ALWAYS)
        .clamp(OFF + 1, ALWAYS - 1)
}

impl Default for HotCache {
    fn default() -> HotCache {
        LazyLock::force(&EPOCH);
        HotCache {
            inner: RwLock::default(),
            doorkeeper: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            usable_until: AtomicU64::new(ALWAYS),
        }
    }
}

/// Empties the maps and voids every ticket taken before.
fn drop_all(inner: &mut Inner) {
    inner.generation += 1;
    inner.sessions.clear();
    inner.keys.clear();
}

#[derive(Default)]
struct Inner {
    generation: u64,
    sessions: Bounded<Session>,
    keys: Bounded<CachedKey>,
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
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.read().generation)
    }

    /// The session behind `hash`, from the cache or else from `load` (a database read).
    pub(crate) fn session_or_load<E>(
        &self,
        hash: TokenHash,
        load: impl FnOnce() -> Result<Option<Session>, E>,
    ) -> Result<Option<Arc<Session>>, E> {
        self.read_through(
            hash,
            |inner| &inner.sessions,
            |inner| &mut inner.sessions,
            load,
        )
    }

    /// The key status behind `hash`, from the cache or else from `load` (a database read).
    pub(crate) fn key_or_load<E>(
        &self,
        hash: TokenHash,
        load: impl FnOnce() -> Result<Option<KeyStatus>, E>,
    ) -> Result<Option<Arc<CachedKey>>, E> {
        let load = || {
            Ok(load()?.map(|status| CachedKey {
                status,
                encoded: Encoded::default(),
            }))
        };
        self.read_through(hash, |inner| &inner.keys, |inner| &mut inner.keys, load)
    }

    /// The one place the race rule lives: a ticket is taken before `load` reads the database,
    /// and its answer is cached only if no invalidation happened meanwhile (and this is not
    /// the token's first miss). Absent answers are never cached.
    fn read_through<V, E>(
        &self,
        hash: TokenHash,
        map: fn(&Inner) -> &Bounded<V>,
        map_mut: fn(&mut Inner) -> &mut Bounded<V>,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<Arc<V>>, E> {
        if !self.is_usable() {
            return Ok(load()?.map(Arc::new));
        }
        if let Some(hit) = map(&self.read()).get(&hash) {
            return Ok(Some(hit));
        }
        let ticket = self.ticket();
        let Some(value) = load()? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        self.insert(ticket, hash, Arc::clone(&value), map_mut);
        Ok(Some(value))
    }

    /// Caches `value` read after `ticket` was taken, unless something was invalidated in
    /// between, or this is the token's first miss.
    fn insert<V>(
        &self,
        ticket: Ticket,
        hash: TokenHash,
        value: Arc<V>,
        map_mut: fn(&mut Inner) -> &mut Bounded<V>,
    ) {
        if !self.admit(&hash) {
            return;
        }
        let mut inner = self.write();
        // Checked under the lock that `set_usable` empties the cache under.
        if inner.generation == ticket.0 && self.is_usable() {
            map_mut(&mut inner).insert(hash, value);
        }
    }

    /// Turns the cache off (`false`: nothing is served from it or put into it, and it is
    /// emptied) or on again (`true`: emptied first, so nothing cached before is served, and
    /// every ticket taken before is void).
    pub(crate) fn set_usable(&self, usable: bool) {
        let mut inner = self.write();
        drop_all(&mut inner);
        let until = if usable { ALWAYS } else { OFF };
        self.usable_until.store(until, Ordering::Release);
    }

    /// Turns the cache on until `until` (a lease's deadline by this node's clock). If it was in
    /// use, only the deadline moves; if it was off or its last deadline had passed, it is
    /// emptied first, as by `set_usable(true)`.
    pub(crate) fn use_until(&self, until: Instant) {
        let until = deadline(until);
        let mut inner = self.write();
        if !self.is_usable() {
            drop_all(&mut inner);
        }
        self.usable_until.store(until, Ordering::Release);
    }

    /// Whether answers may be served from and put into the cache now.
    pub(crate) fn is_usable(&self) -> bool {
        match self.usable_until.load(Ordering::Acquire) {
            ALWAYS => true,
            OFF => false,
            until => deadline(Instant::now()) < until,
        }
    }

    /// Whether the cache is turned on, though its deadline may have passed.
    pub(crate) fn is_on(&self) -> bool {
        self.usable_until.load(Ordering::Acquire) != OFF
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
    pub(crate) fn invalidate(&self, what: Invalidation) {
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
pub(crate) mod tests {
    use super::*;

    /// What the cache holds for `hash`, without loading anything.
    fn cached(cache: &HotCache, hash: &TokenHash) -> Option<Arc<CachedKey>> {
        cache.read().keys.get(hash)
    }

    /// Offers a key read after `ticket`, as a miss does.
    fn offer(cache: &HotCache, ticket: Ticket, hash: TokenHash, key: Arc<CachedKey>) {
        cache.insert(ticket, hash, key, |inner| &mut inner.keys);
    }

    /// Inserts as the second miss does (the first only passes the doorkeeper).
    fn insert_key(cache: &HotCache, ticket: Ticket, hash: TokenHash, key: Arc<CachedKey>) {
        cache.admit(&hash);
        offer(cache, ticket, hash, key);
    }

    fn key(id: &str) -> Arc<CachedKey> {
        Arc::new(CachedKey {
            status: key_status(id),
            encoded: Encoded::default(),
        })
    }

    /// A valid key status with id `id` (also the cluster's tests).
    pub(crate) fn key_status(id: &str) -> KeyStatus {
        KeyStatus {
            pk: 1,
            id: id.into(),
            app_pk: 1,
            app: "app".into(),
            reusable: true,
            ephemeral: false,
            expires_at: None,
            revoked_at: None,
            uses: 0,
            policy: Default::default(),
        }
    }

    #[test]
    fn a_token_is_cached_on_its_second_miss_only() {
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        offer(&cache, cache.ticket(), hash, key("first"));
        assert_eq!(cached(&cache, &hash), None);
        offer(&cache, cache.ticket(), hash, key("second"));
        assert_eq!(
            cached(&cache, &hash).map(|k| k.id.clone()),
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
        assert_eq!(cached(&cache, &hash), None);
        let ticket = cache.ticket();
        insert_key(&cache, ticket, hash, key("fresh"));
        assert_eq!(
            cached(&cache, &hash).map(|k| k.id.clone()),
            Some("fresh".into())
        );
    }

    #[test]
    fn reading_through_caches_from_the_second_miss_unless_a_write_raced_with_the_load() {
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        let load = |id: &'static str| move || Ok::<_, ()>(Some(key_status(id)));
        assert_eq!(
            cache.key_or_load(hash, load("first")).unwrap().unwrap().id,
            "first"
        );
        // Second miss, but a revocation commits while the database is being read.
        let raced = cache.key_or_load(hash, || {
            cache.invalidate(Invalidation::Everything);
            load("stale")()
        });
        assert_eq!(raced.unwrap().unwrap().id, "stale");
        assert_eq!(cached(&cache, &hash), None);
        cache.key_or_load(hash, load("fresh")).unwrap();
        let hit = cache.key_or_load(hash, || -> Result<Option<KeyStatus>, ()> {
            panic!("a cached key is not loaded again")
        });
        assert_eq!(hit.unwrap().unwrap().id, "fresh");
        assert_eq!(
            cache.key_or_load(TokenHash::of("absent"), || Ok::<_, ()>(None)),
            Ok(None)
        );
    }

    #[test]
    fn targeted_invalidation_removes_only_its_entry_but_voids_all_tickets() {
        let cache = HotCache::default();
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        insert_key(&cache, cache.ticket(), a, key("a"));
        insert_key(&cache, cache.ticket(), b, key("b"));
        let ticket = cache.ticket();
        cache.invalidate(Invalidation::Key(a));
        assert_eq!(cached(&cache, &a), None);
        assert!(cached(&cache, &b).is_some());
        insert_key(&cache, ticket, a, key("late"));
        assert_eq!(cached(&cache, &a), None);
    }

    #[test]
    fn an_unusable_cache_serves_and_keeps_nothing_and_comes_back_empty() {
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        let load = |id: &'static str| move || Ok::<_, ()>(Some(key_status(id)));
        cache.key_or_load(hash, load("a")).unwrap();
        cache.key_or_load(hash, load("cached")).unwrap();
        assert!(cached(&cache, &hash).is_some());
        // A read under way when the cache is turned off does not put its answer back.
        let ticket = cache.ticket();
        cache.set_usable(false);
        assert_eq!(cached(&cache, &hash), None, "emptied");
        assert_eq!(
            cache.key_or_load(hash, load("db")).unwrap().unwrap().id,
            "db",
            "every request reads"
        );
        assert_eq!(cached(&cache, &hash), None, "nothing kept while off");
        insert_key(&cache, cache.ticket(), hash, key("while off"));
        assert_eq!(cached(&cache, &hash), None);
        cache.set_usable(true);
        insert_key(&cache, ticket, hash, key("stale"));
        assert_eq!(cached(&cache, &hash), None, "a ticket from before is void");
        cache.key_or_load(hash, load("fresh")).unwrap();
        assert_eq!(
            cached(&cache, &hash).map(|k| k.id.clone()),
            Some("fresh".into())
        );
    }

    /// A node frozen past its lease may run a request before anything turns its cache off:
    /// the deadline alone stops the cache from answering, and a renewal after the lapse
    /// empties it.
    #[test]
    fn past_its_deadline_the_cache_serves_nothing_until_renewed_and_emptied() {
        // Long enough that a loaded machine runs the first three reads within it.
        const LEASE: std::time::Duration = std::time::Duration::from_secs(2);
        let cache = HotCache::default();
        let hash = TokenHash::of("k");
        let load = |id: &'static str| move || Ok::<_, ()>(Some(key_status(id)));
        cache.use_until(Instant::now() + LEASE);
        cache.key_or_load(hash, load("a")).unwrap();
        cache.key_or_load(hash, load("cached")).unwrap();
        assert_eq!(
            cache.key_or_load(hash, load("db")).unwrap().unwrap().id,
            "cached",
            "served from the cache within the lease"
        );
        // A renewal within the lease keeps what is cached.
        let ticket = cache.ticket();
        cache.use_until(Instant::now() + LEASE);
        assert_eq!(cache.ticket(), ticket);
        std::thread::sleep(LEASE + LEASE / 4);
        assert!(cache.is_on(), "nothing turned it off");
        assert_eq!(
            cache.key_or_load(hash, load("db")).unwrap().unwrap().id,
            "db",
            "past the deadline every request reads"
        );
        insert_key(&cache, cache.ticket(), hash, key("late"));
        cache.use_until(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(
            cached(&cache, &hash),
            None,
            "a renewal after the lapse empties it"
        );
    }

    #[test]
    fn stays_within_capacity_by_forgetting_the_oldest() {
        let cache = HotCache::default();
        let hash = |n: usize| TokenHash::of(&n.to_string());
        for n in 0..CAPACITY + 5 {
            insert_key(&cache, cache.ticket(), hash(n), key("k"));
        }
        assert_eq!(cache.read().keys.len(), CAPACITY);
        assert!(cached(&cache, &hash(4)).is_none());
        assert!(cached(&cache, &hash(5)).is_some());
        assert!(cached(&cache, &hash(CAPACITY + 4)).is_some());
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
