//! The cluster against a real PostgreSQL: triggers, barriers, leases, the listener's loss.

use super::listener::APPLICATION_NAME as LISTENER_APPLICATION_NAME;
use super::notice::Notice;
use super::*;
use crate::cache::hot::Invalidation;
use crate::cache::hot::tests::key_status;
use crate::domain::token::TokenHash;
use crate::store::PgUrl;
use crate::store::test_db::TestDb;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::atomic::AtomicBool;

/// A fresh database with the schema (the store creates it) and app 1.
fn database() -> TestDb {
    let db = TestDb::postgres();
    drop(db.open());
    db.client()
        .batch_execute("INSERT INTO apps (pk, id, name, created_at) VALUES (1, 'app', 'App', 0)")
        .unwrap();
    db
}

/// The test database's URL, password and all.
fn raw_url(db: &TestDb) -> String {
    match db {
        TestDb::Postgres { server, name } => crate::store::test_db::with_database(server, name),
        TestDb::Sqlite(_) => unreachable!("a PostgreSQL test database"),
    }
}

fn url(db: &TestDb) -> PgUrl {
    PgUrl::new(&raw_url(db))
}

/// Inserts key `pk` of app 1 with the hash `hash`.
fn insert_key(sql: &mut Client, pk: i64, hash: TokenHash) {
    sql.execute(
        "INSERT INTO keys (pk, id, app_pk, hash, hint, reusable, ephemeral, created_at)
         VALUES ($1, $3, 1, $2, 'h', 1, 0, 0)",
        &[&pk, &&hash.0[..], &format!("key_{pk}")],
    )
    .unwrap();
}

/// Inserts machine `pk` of app 1 with the session token hash `hash`.
fn insert_machine(sql: &mut Client, pk: i64, hash: TokenHash) {
    sql.execute(
        "INSERT INTO machines (pk, id, app_pk, token_hash, ephemeral, created_at)
         VALUES ($1, $3, 1, $2, 0, 0)",
        &[&pk, &&hash.0[..], &format!("mch_{pk}")],
    )
    .unwrap();
}

fn hash(n: u8) -> TokenHash {
    TokenHash([n; 32])
}

/// A short lease, so that the tests that wait one out are quick.
const LEASE: Duration = Duration::from_millis(1500);

fn node(db: &TestDb) -> (Cluster, Arc<HotCache>) {
    node_at(&url(db))
}

fn node_at(url: &PgUrl) -> (Cluster, Arc<HotCache>) {
    let cache = Arc::new(HotCache::default());
    let settings = Settings { lease: LEASE };
    let cluster = Cluster::start(url, Arc::clone(&cache), true, settings).unwrap();
    (cluster, cache)
}

/// Caches a key under `hash` (two misses) and says whether it is cached now.
fn cache_key(cache: &HotCache, hash: TokenHash) -> bool {
    let load = || Ok::<_, ()>(Some(key_status("key_1")));
    cache.key_or_load(hash, load).unwrap();
    cache.key_or_load(hash, load).unwrap();
    is_cached(cache, hash)
}

fn is_cached(cache: &HotCache, hash: TokenHash) -> bool {
    let mut loaded = false;
    cache
        .key_or_load(hash, || {
            loaded = true;
            Ok::<_, ()>(None)
        })
        .unwrap();
    !loaded
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the triggers announce for each kind of change, committed (and nothing for a rollback,
/// a usage stamp or a counter).
#[test]
fn the_triggers_announce_each_change_that_can_make_a_cached_answer_wrong() {
    let db = database();
    let mut listener = db.client();
    listener
        .batch_execute("LISTEN authkeys_invalidate")
        .unwrap();
    let mut writer = db.client();
    insert_key(&mut writer, 1, hash(1));
    insert_key(&mut writer, 2, hash(2));
    for (pk, n) in [(1, 3), (2, 4), (3, 5)] {
        insert_machine(&mut writer, pk, hash(n));
    }
    let mut heard = |sql: &str| -> Vec<Notice> {
        writer.batch_execute(sql).unwrap();
        // A round trip on the listening connection delivers what was committed before it.
        listener.batch_execute("SELECT 1").unwrap();
        let mut notices = Vec::new();
        let mut notifications = listener.notifications();
        let mut iter = notifications.iter();
        while let Some(n) = iter.next().unwrap() {
            notices.push(Notice::parse(n.channel(), n.payload()).expect("readable"));
        }
        notices
    };
    let key = |n| Notice::Invalidate(Invalidation::Key(hash(n)));
    let session = |n| Notice::Invalidate(Invalidation::Session(hash(n)));
    let everything = Notice::Invalidate(Invalidation::Everything);
    assert_eq!(
        heard("UPDATE keys SET uses = uses + 1, last_used_at = 5 WHERE pk = 1"),
        [key(1)]
    );
    assert_eq!(
        heard("UPDATE keys SET last_used_at = 9"),
        [],
        "usage stamps"
    );
    assert_eq!(
        heard("UPDATE keys SET machine_rows = 3 WHERE pk = 2"),
        [],
        "counters"
    );
    assert_eq!(heard("UPDATE keys SET revoked_at = 7"), [everything]);
    assert_eq!(
        heard("UPDATE machines SET last_seen_at = 9"),
        [],
        "usage stamps"
    );
    assert_eq!(
        heard("UPDATE machines SET name = 'x' WHERE pk = 1"),
        [session(3)]
    );
    assert_eq!(
        heard("BEGIN; DELETE FROM machines WHERE pk = 1; ROLLBACK"),
        [],
        "rolled back"
    );
    assert_eq!(heard("DELETE FROM machines WHERE pk = 1"), [session(3)]);
    assert_eq!(
        heard("DELETE FROM machines WHERE pk = 42"),
        [],
        "nothing deleted"
    );
    assert_eq!(
        heard(
            "BEGIN; DELETE FROM machines WHERE pk = 2; UPDATE keys SET uses = 9 WHERE pk = 2; COMMIT"
        ),
        [session(4), key(2)],
        "in order, at commit"
    );
    assert_eq!(heard("DELETE FROM machines"), [session(5)]);
    assert_eq!(
        heard(
            "INSERT INTO machines (pk, id, app_pk, token_hash, ephemeral, created_at)
             VALUES (6, 'mch_6', 1, '\\x06', 0, 0), (7, 'mch_7', 1, '\\x07', 0, 0)"
        ),
        [],
        "logins announce through their key"
    );
    assert_eq!(
        heard("DELETE FROM machines"),
        [everything],
        "more than one row"
    );
    assert_eq!(heard("UPDATE apps SET deleted_at = 1"), [everything]);
}

/// A change committed on one node is out of every other node's cache when the writer's
/// `wait_for_peers` returns, through the listener, with no call on the other node.
#[test]
fn a_write_returns_only_after_the_other_nodes_dropped_what_it_changed() {
    let db = database();
    let (a, _) = node(&db);
    let (b, b_cache) = node(&db);
    let (c, c_cache) = node(&db);
    let mut writer = db.client();
    for round in 0..20u8 {
        let key = hash(round);
        insert_key(&mut writer, i64::from(round) + 10, key);
        assert!(cache_key(&b_cache, key) && cache_key(&c_cache, key));
        writer
            .execute(
                "UPDATE keys SET revoked_at = 1 WHERE pk = $1",
                &[&(i64::from(round) + 10)],
            )
            .unwrap();
        a.wait_for_peers().unwrap();
        assert!(!is_cached(&b_cache, key), "round {round}: b still has it");
        assert!(!is_cached(&c_cache, key), "round {round}: c still has it");
    }
    drop((b, c));
}

/// A node that holds a lease but does not acknowledge holds writers up until its lease runs
/// out by the database's clock; one whose lease ran out, or a stopped one, not at all.
#[test]
fn writers_wait_for_a_silent_node_until_its_lease_runs_out_and_not_for_gone_ones() {
    let db = database();
    let (a, _) = node(&db);
    let mut sql = db.client();
    let waited = || {
        let started = Instant::now();
        a.wait_for_peers().unwrap();
        started.elapsed()
    };
    assert!(waited() < Duration::from_millis(500), "nobody to wait for");
    sql.execute(
        "INSERT INTO nodes VALUES ('node_silent', now() + interval '1 second', 0)",
        &[],
    )
    .unwrap();
    let silent = waited();
    assert!(
        silent >= Duration::from_millis(700),
        "waited {silent:?} only"
    );
    assert!(silent < Duration::from_secs(5), "waited {silent:?}");
    assert!(
        waited() < Duration::from_millis(500),
        "its lease has run out"
    );
    // A node stopped cleanly leaves: no wait at all.
    let (b, _) = node(&db);
    let rows = |sql: &mut Client| {
        sql.query_one("SELECT count(*) FROM nodes WHERE lease_until > now()", &[])
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(rows(&mut sql), 2);
    b.stop();
    assert_eq!(rows(&mut sql), 1);
    assert!(waited() < Duration::from_millis(500));
}

/// The stop can come before the listener thread first runs (a loaded machine): the node still
/// leaves, with the connection its start registered on, and writers do not wait for it.
#[test]
fn a_node_stopped_before_its_listener_first_ran_still_leaves() {
    let db = database();
    let (a, cache) = node(&db);
    a.stop();
    let mut sql = db.client();
    let rows = |sql: &mut Client| {
        sql.query_one("SELECT count(*) FROM nodes", &[])
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(rows(&mut sql), 0, "stopped after its listener ran: gone");
    // As `Cluster::start` hands the thread its registered connection, but already stopping.
    let gate = Gate::new(cache);
    let registered = listener::register(&a.node, &gate).unwrap();
    assert_eq!(rows(&mut sql), 1);
    listener::run(&a.node, &gate, Some(registered));
    assert_eq!(
        rows(&mut sql),
        0,
        "stopped before its listener ran: gone too"
    );
}

/// Cutting the listening connection (found by its `application_name`) empties the node's cache
/// at once (nothing else in this test can: it writes nothing the triggers announce), and the
/// node comes back by itself with an empty cache; meanwhile writers do not wait for it past its
/// new registration. That the cache is off until then is `gate::tests`'.
#[test]
fn a_node_that_loses_its_listener_stops_using_its_cache_and_recovers_empty() {
    let db = database();
    let (a, _) = node(&db);
    let (b, b_cache) = node(&db);
    let key = hash(1);
    assert!(cache_key(&b_cache, key));
    let before = b_cache.ticket();
    let mut sql = db.client();
    let killed: i64 = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name = $1 AND datname = current_database()",
            &[&LISTENER_APPLICATION_NAME],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 2, "both nodes' listeners");
    // Without a query of its own, the node notices within a slice of its listener's loop and
    // empties its cache (voiding every ticket). Watched by the ticket, not the off window: a
    // listener that reconnects between two of `eventually`'s 10 ms polls turns the cache off
    // and on again unseen.
    eventually("the cache is dropped", || b_cache.ticket() != before);
    assert!(!is_cached(&b_cache, key));
    eventually("the cache is back on", || b_cache.is_usable());
    assert!(!is_cached(&b_cache, key), "it comes back empty");
    assert!(cache_key(&b_cache, key), "and caches again");
    let started = Instant::now();
    a.wait_for_peers().unwrap();
    assert!(started.elapsed() < LEASE / 2, "b acknowledges again");
    drop(b);
}

/// One node at a time runs an exclusive piece of work; the others skip it meanwhile.
#[test]
fn exclusive_work_runs_on_one_node_at_a_time() {
    let db = database();
    let (a, _) = node(&db);
    let (b, _) = node(&db);
    let ran = a
        .exclusive(Exclusive::Sweep, || {
            assert_eq!(
                b.exclusive(Exclusive::Sweep, || ()).unwrap(),
                None,
                "b skips"
            );
            assert_eq!(
                b.exclusive(Exclusive::Webhooks, || 2).unwrap(),
                Some(2),
                "other work"
            );
            1
        })
        .unwrap();
    assert_eq!(ran, Some(1));
    assert_eq!(
        b.exclusive(Exclusive::Sweep, || 3).unwrap(),
        Some(3),
        "released"
    );
}

/// A TCP forwarder between a node and PostgreSQL that can stop passing bytes while keeping
/// every connection open: a connection that dies silently, as in a network partition.
struct Freezer {
    address: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    fn start(upstream: std::net::SocketAddr) -> Freezer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let accepting = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let frozen = Arc::clone(&accepting);
                    std::thread::spawn(move || pump(from, to, &frozen));
                }
            }
        });
        Freezer { address, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    /// `url` with this forwarder in place of the server.
    fn url(&self, url: &str, upstream: std::net::SocketAddr) -> String {
        url.replacen(&upstream.to_string(), &self.address.to_string(), 1)
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.freeze(false);
    }
}

fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, frozen: &AtomicBool) {
    use std::io::{Read, Write};
    let mut buffer = [0; 16 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        from.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        match from.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                while frozen.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn upstream(url: &str) -> std::net::SocketAddr {
    let config: postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("expected a TCP host, got {other:?}"),
    };
    format!("{host}:{}", config.get_ports()[0]).parse().unwrap()
}

/// A node whose connections go silent (no error, no answer) cannot acknowledge or renew: the
/// writer waits until its lease has run out by the database's clock, and by then the node has
/// turned its cache off by its own clock, so it serves nothing stale; it comes back by itself.
#[test]
fn a_node_cut_off_silently_stops_using_its_cache_before_writers_stop_waiting_for_it() {
    let db = database();
    let (a, _) = node(&db);
    let db_url = raw_url(&db);
    let upstream = upstream(&db_url);
    // Declared before the forwarder, so that a failing test thaws it before stopping b.
    let b;
    let freezer = Freezer::start(upstream);
    let (cluster, cache) = node_at(&PgUrl::new(&freezer.url(&db_url, upstream)));
    b = cluster;
    let mut writer = db.client();
    let key = hash(9);
    insert_key(&mut writer, 9, key);
    assert!(cache_key(&cache, key));
    freezer.freeze(true);
    writer
        .execute("UPDATE keys SET revoked_at = 1 WHERE pk = 9", &[])
        .unwrap();
    let started = Instant::now();
    a.wait_for_peers().unwrap();
    let waited = started.elapsed();
    assert!(
        !cache.is_usable(),
        "b's cache must be off before the writer stops waiting for it"
    );
    assert!(!is_cached(&cache, key));
    assert!(
        waited >= LEASE / 2 && waited < 3 * LEASE,
        "the writer waited {waited:?} for a lease of {LEASE:?}"
    );
    freezer.freeze(false);
    eventually("b's cache is back on", || cache.is_usable());
    assert!(!is_cached(&cache, key), "and empty");
    drop(b);
}
