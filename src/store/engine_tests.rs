//! The store's invariants, run the same way on both engines (a real SQLite file, a real
//! PostgreSQL database), each race through two `Store`s on one database: two nodes' worth.
//! Then what only PostgreSQL has: three nodes creating the schema at once, every start-up
//! failure, the database going away and coming back, the machine count seen by every node,
//! and the URL's password in no error or log line.

use super::test_db::{TestDb, shared_cluster, throwaway, with_database};
use super::{Database, NewMachine, Store};
use crate::authority::Authority;
use crate::cache::hot::HotCache;
use crate::cache::usage::UsageStamps;
use crate::domain::audit::{Action, Actor, EventFilter, NewEvent};
use crate::domain::error::Error;
use crate::domain::model::{NewKey, Timestamp};
use crate::domain::page::PageRequest;
use crate::domain::token::{self, Secret, TokenHash, TokenKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOW: Timestamp = Timestamp(1_000);

fn reusable() -> NewKey {
    NewKey {
        reusable: true,
        ..NewKey::default()
    }
}

/// One node: an authority on its own `Store` of the database.
struct Node {
    store: Arc<Store>,
    authority: Authority,
}

impl std::ops::Deref for Node {
    type Target = Authority;

    fn deref(&self) -> &Authority {
        &self.authority
    }
}

fn node(db: &TestDb) -> Node {
    let store = Arc::new(db.open());
    let authority = Authority::new(
        Arc::clone(&store),
        Arc::new(UsageStamps::default()),
        Arc::new(HotCache::default()),
        TokenHash::of("admin"),
        3600,
    );
    Node { store, authority }
}

/// An app `app` and a key of `new` on `node`; the key's secret.
fn key(node: &Authority, new: &NewKey) -> Secret {
    let root = Actor::system();
    if node.app("app").is_err() {
        node.create_app("app", None, &root, NOW).unwrap();
    }
    node.create_key("app", new, None, &root, NOW).unwrap().1
}

/// `attempts` logins with `key`, spread over `nodes`, all at once; how many succeeded.
fn race_logins(nodes: &[Node], key: &Secret, attempts: usize) -> usize {
    let won = Mutex::new(0);
    std::thread::scope(|scope| {
        for n in 0..attempts {
            let (node, won) = (&nodes[n % nodes.len()], &won);
            scope.spawn(move || match node.login(key.expose(), None, None, NOW) {
                Ok(_) => *won.lock().unwrap() += 1,
                Err(Error::AuthKeyUsed) => {}
                Err(other) => panic!("a racing login failed otherwise: {other:?}"),
            });
        }
    });
    won.into_inner().unwrap()
}

fn machines_in_database(store: &Store) -> u64 {
    store.read(|r| r.machine_rows_of_all_keys()).unwrap()
}

fn a_single_use_key_has_one_winner_across_two_nodes(db: &TestDb) {
    let nodes = [node(db), node(db)];
    let key = key(&nodes[0], &NewKey::default());
    assert_eq!(race_logins(&nodes, &key, 16), 1);
    assert_eq!(machines_in_database(&nodes[1].store), 1);
}

fn max_uses_admits_exactly_that_many_logins_across_two_nodes(db: &TestDb) {
    let nodes = [node(db), node(db)];
    let new = NewKey {
        reusable: true,
        policy: crate::domain::model::KeyPolicy {
            max_uses: Some(5),
            ..Default::default()
        },
        ..NewKey::default()
    };
    let key = key(&nodes[1], &new);
    assert_eq!(race_logins(&nodes, &key, 24), 5);
    let status = nodes[0]
        .store
        .read(|r| r.key_status(&key.hash()))
        .unwrap()
        .unwrap();
    assert_eq!(status.uses, 5);
    assert_eq!(machines_in_database(&nodes[0].store), 5);
}

/// A key revoked on one node: its machines are gone for the other too, with one
/// `machine.logged_out` event each, in the revocation's transaction.
fn a_revocation_cascades_to_the_machines_of_another_node(db: &TestDb) {
    let (a, b) = (node(db), node(db));
    let key = key(&a, &reusable());
    let sessions: Vec<Secret> = (0..3)
        .map(|_| a.login(key.expose(), None, None, NOW).unwrap().0)
        .collect();
    let key_id = a
        .store
        .read(|r| r.key_status(&key.hash()))
        .unwrap()
        .unwrap()
        .id;
    b.revoke_key("app", &key_id, &Actor::system(), NOW).unwrap();
    for session in &sessions {
        let row = a.store.read(|r| r.session(&session.hash())).unwrap();
        assert!(row.is_none(), "a revoked key's machine is still there");
    }
    assert!(matches!(
        a.login(key.expose(), None, None, NOW),
        Err(Error::AuthKeyRevoked)
    ));
    assert_eq!(machines_in_database(&a.store), 0);
    let events = a
        .store
        .read(|r| r.events(&EventFilter::default(), &PageRequest::parse(None, None)?))
        .unwrap()
        .items;
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(count("key.revoked"), 1);
    assert_eq!(count("machine.logged_out"), 3);
}

/// An audit event is part of its change's transaction: kept with it, rolled back with it.
fn an_audit_event_commits_and_rolls_back_with_its_change(db: &TestDb) {
    let store = db.open();
    let system = Actor::system();
    let event = |target: &'static str| NewEvent {
        at: NOW,
        action: Action::AppCreated,
        actor: &system,
        app: Some(target),
        target_id: target,
        details: serde_json::json!({}),
    };
    let failed = store.write(|w| {
        w.insert_app("gone", "Gone", NOW)?;
        w.record(&event("gone"))?;
        Err::<(), _>(Error::AppExists)
    });
    assert!(matches!(failed, Err(Error::AppExists)));
    store
        .write(|w| {
            w.insert_app("kept", "Kept", NOW)?;
            w.record(&event("kept"))
        })
        .unwrap();
    let (apps, events) = store
        .snapshot(|r| {
            let page = PageRequest::parse(None, None)?;
            Ok((
                r.apps(&page)?.items,
                r.events(&EventFilter::default(), &page)?.items,
            ))
        })
        .unwrap();
    let apps: Vec<_> = apps.iter().map(|app| app.id.as_str()).collect();
    let targets: Vec<_> = events.iter().map(|e| e.target.id.as_deref()).collect();
    assert_eq!(apps, ["kept"]);
    assert_eq!(targets, [Some("kept")]);
}

/// Three nodes starting at once on a new database: each one starts, the schema is made once.
fn three_nodes_creating_the_schema_at_once_all_start(db: &TestDb) {
    let stores: Vec<Store> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| Store::open(&db.database())))
            .collect();
        opening
            .into_iter()
            .map(|open| open.join().unwrap().expect("every node starts"))
            .collect()
    });
    for (n, store) in stores.iter().enumerate() {
        store
            .write(|w| w.insert_app(&format!("app{n}"), "App", NOW))
            .unwrap();
    }
    let page = PageRequest::parse(None, None).unwrap();
    assert_eq!(stores[0].read(|r| r.apps(&page)).unwrap().items.len(), 3);
}

/// Machine rows added on one node and deleted on another: the kept counts equal the rows.
fn machine_counts_stay_exact_across_two_nodes(db: &TestDb) {
    let (a, b) = (node(db), node(db));
    let key = key(&a, &reusable());
    let status = a
        .store
        .read(|r| r.key_status(&key.hash()))
        .unwrap()
        .unwrap();
    let mut pks = Vec::new();
    for n in 0..6 {
        let machine = NewMachine {
            id: format!("mch_{n}"),
            token_hash: token::generate(TokenKind::Session).hash(),
            name: None,
            expires_at: None,
        };
        let store = if n % 2 == 0 { &a.store } else { &b.store };
        pks.push(
            store
                .write(|w| w.insert_machine(&status, machine, NOW))
                .unwrap()
                .pk,
        );
    }
    b.store.write(|w| w.delete_machine(pks[0])).unwrap();
    a.store.write(|w| w.delete_machine(pks[1])).unwrap();
    assert_eq!(machines_in_database(&a.store), 4);
    let key = a.key("app", &status.id, NOW).unwrap();
    assert_eq!(key.machines, 4);
}

/// Each test above, once per engine.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                super::$test(&super::TestDb::sqlite());
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                super::$test(&super::TestDb::postgres());
            })*
        }
    };
}

on_both_engines!(
    a_single_use_key_has_one_winner_across_two_nodes,
    max_uses_admits_exactly_that_many_logins_across_two_nodes,
    a_revocation_cascades_to_the_machines_of_another_node,
    an_audit_event_commits_and_rolls_back_with_its_change,
    three_nodes_creating_the_schema_at_once_all_start,
    machine_counts_stay_exact_across_two_nodes,
);

/// On PostgreSQL every node's `machine_rows` (the `/metrics` gauge) is the database's count,
/// whichever node wrote.
#[test]
fn postgres_machine_rows_are_right_on_every_node() {
    let db = TestDb::postgres();
    let (a, b) = (node(&db), node(&db));
    let key = key(&a, &reusable());
    a.login(key.expose(), None, None, NOW).unwrap();
    let (session, _) = b.login(key.expose(), None, None, NOW).unwrap();
    assert_eq!(a.store.machine_rows(), Some(2));
    assert_eq!(b.store.machine_rows(), Some(2));
    let pk = a
        .store
        .read(|r| r.session(&session.hash()))
        .unwrap()
        .unwrap()
        .1
        .pk;
    a.store.write(|w| w.delete_machine(pk)).unwrap();
    assert_eq!(b.store.machine_rows(), Some(1));
    // A recount under the write lock finds the same.
    assert_eq!(b.store.count_machines().unwrap(), 1);
    assert_eq!(a.store.machine_rows(), Some(1));
}

/// `Store::open`'s error on `url`, shown as `main` shows it (the whole chain).
fn start_error(url: &str) -> String {
    let err = Store::open(&Database::from_arg(url))
        .err()
        .expect("the start is refused");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The password of the test cluster's URL.
fn password(url: &str) -> String {
    let userinfo = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    userinfo.split_once(':').unwrap().1.to_string()
}

fn tables(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn postgres_start_errors_are_clear_show_no_password_and_write_nothing() {
    let server = shared_cluster();
    let secret = password(server);
    let db = TestDb::postgres();
    let url = with_database(
        server,
        match &db {
            TestDb::Postgres { name, .. } => name,
            TestDb::Sqlite(_) => unreachable!(),
        },
    );
    let check = |err: String, expected: &str| {
        assert!(err.contains(expected), "{err:?} does not say {expected:?}");
        assert!(!err.contains(&secret), "{err:?} shows the password");
    };

    // A malformed URL.
    check(
        start_error(&url.replace("127.0.0.1:", "127.0.0.1:x")),
        "is not a valid PostgreSQL URL",
    );
    // Bad credentials.
    let wrong = url.replace(&secret, "not-the-password-1234");
    let err = start_error(&wrong);
    check(err.clone(), "password authentication failed");
    assert!(!err.contains("not-the-password-1234"), "{err}");
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("postgres://authkeys:{secret}@127.0.0.1:{port}/x");
    check(
        start_error(&unreachable),
        "connecting to postgres://authkeys:***@",
    );
    // A server that accepts and never answers: bounded by the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = start_error(&format!(
        "postgres://authkeys:{secret}@127.0.0.1:{port}/x?connect_timeout=1"
    ));
    check(err, "no answer within 1000 ms");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
    assert!(tables(&db).is_empty(), "a refused start wrote something");

    // Another program's database: refused, left as it was.
    db.client()
        .batch_execute("CREATE TABLE other (x int)")
        .unwrap();
    check(start_error(&url), "is not an authkeys database");
    assert_eq!(tables(&db), ["other"]);
    db.client().batch_execute("DROP TABLE other").unwrap();

    // A newer schema: refused, left as it was (the start would have set this setting).
    drop(db.open());
    let mut client = db.client();
    client
        .batch_execute(
            "UPDATE authkeys_schema SET version = 6;
             DELETE FROM settings WHERE name = 'key_expiring_horizon'",
        )
        .unwrap();
    check(
        start_error(&url),
        "has schema version 6, newer than this binary's 5",
    );
    let settings: i64 = client
        .query_one("SELECT count(*) FROM settings", &[])
        .unwrap()
        .get(0);
    assert_eq!(settings, 0, "a refused start wrote something");
}

/// PostgreSQL going away while serving: reads and writes fail with `Unavailable` (503), and
/// once it is back the same store serves again, without a restart. On a cluster of its own,
/// so the other tests keep theirs. No log line of it shows the password.
#[test]
fn postgres_lost_then_back_is_unavailable_then_served_again() {
    let logs = capture_logs();
    let dir = "target/pg-test-restart";
    let server = throwaway("start", dir);
    let db = TestDb::postgres_on(&server);
    let store = db.open();
    store.write(|w| w.insert_app("before", "B", NOW)).unwrap();
    let read = || store.read(|r| r.app("before"));

    throwaway("stop", dir);
    assert!(matches!(read(), Err(Error::Unavailable)));
    assert!(matches!(
        store.write(|w| w.insert_app("during", "D", NOW)),
        Err(Error::Unavailable)
    ));
    throwaway("start", dir);
    assert!(read().unwrap().is_some(), "reads are served again");
    store.write(|w| w.insert_app("after", "A", NOW)).unwrap();

    // A restart between two requests: at most the request that meets the broken connection
    // fails; the next is served.
    throwaway("restart", dir);
    let first = read();
    assert!(
        matches!(first, Ok(Some(_)) | Err(Error::Unavailable)),
        "{first:?}"
    );
    assert!(read().unwrap().is_some());
    let write = store.write(|w| w.insert_app("after2", "A", NOW));
    if write.is_err() {
        store.write(|w| w.insert_app("after2", "A", NOW)).unwrap();
    }
    assert!(store.read(|r| r.app("during")).unwrap().is_none());

    let secret = password(&server);
    let logged = logs.lock().unwrap().join("\n");
    assert!(logged.contains("storage error"), "the failures were logged");
    assert!(!logged.contains(&secret), "a log line shows the password");
}

/// Every log record of this test process, from now on.
fn capture_logs() -> Arc<Mutex<Vec<String>>> {
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<String>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        log::set_boxed_logger(Box::new(Capture(Arc::clone(&logs))))
            .expect("no other logger in the library's tests");
        log::set_max_level(log::LevelFilter::Trace);
        logs
    })
    .clone()
}
