//! The cluster's own guarantees with real `authkeys serve` nodes on one PostgreSQL database,
//! whatever the suite's store: a node with `--cache off` holds no lease and is never waited
//! for, yet its revocations wait for the others; a node frozen (SIGSTOP) holds revocations up
//! for no longer than its lease, and once it runs again it serves nothing stale. (The
//! three-node tests under load are in `nodes`.)

use crate::support::store::PgDatabase;
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lease the frozen-node test runs with (`--node-lease-ms`): long enough for a loaded
/// machine's renewals, short enough to wait out.
const LEASE: Duration = Duration::from_millis(3000);

fn node(database: &Arc<PgDatabase>, options: Options) -> TestServer {
    let mut options = options.arg("--login-failures-burst", "0");
    options.database = Some(database.clone());
    TestServer::start_with(options)
}

/// Logs a machine in on `server` with a fresh reusable key of app `fleet`; the key and the
/// session.
fn logged_in(server: &TestServer) -> (Value, String) {
    let key = server.create_key("fleet", json!({"reusable": true}));
    let session = session_of(&server.login(key["key"].as_str().expect("the key")));
    (key, session)
}

fn key_path(key: &Value) -> String {
    format!(
        "/v1/apps/fleet/keys/{}",
        key["id"].as_str().expect("the key's id")
    )
}

/// Three answers: the second miss caches the session, the third comes from the cache.
fn warm(server: &TestServer, session: &str) {
    for _ in 0..3 {
        whoami(server, session).expect(200);
    }
}

fn leased_nodes(database: &PgDatabase) -> i64 {
    database
        .connect()
        .query_one("SELECT count(*) FROM nodes WHERE lease_until > now()", &[])
        .expect("reading the nodes table")
        .get(0)
}

#[test]
fn a_node_with_the_cache_off_holds_no_lease_and_its_revocations_wait_for_the_others() {
    let database = PgDatabase::create();
    let cached = node(&database, Options::default());
    let uncached = node(&database, Options::default().arg("--cache", "off"));
    assert_eq!(leased_nodes(&database), 1, "only the node with a cache");
    cached.create_app("fleet");
    for round in 0..5 {
        let (key, session) = logged_in(&cached);
        warm(&cached, &session);
        whoami(&uncached, &session).expect(200);
        uncached.admin().delete(&key_path(&key)).expect(204);
        for node in [&cached, &uncached] {
            assert_eq!(
                whoami(node, &session).status,
                401,
                "round {round}: the revoked session was accepted once the DELETE returned"
            );
        }
    }
}

/// `kill -STOP`s the process, and `-CONT`s it when dropped (even if the test fails).
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        signal(pid, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_frozen_node_holds_revocations_up_for_at_most_its_lease_and_then_serves_nothing_stale() {
    let database = PgDatabase::create();
    let lease = LEASE.as_millis().to_string();
    let options = Options::default().arg("--node-lease-ms", &lease);
    let a = node(&database, options.clone());
    let frozen = node(&database, options);
    a.create_app("fleet");
    let (key, session) = logged_in(&a);
    warm(&frozen, &session);
    assert_eq!(leased_nodes(&database), 2);

    let pause = Frozen::new(frozen.pid());
    let started = Instant::now();
    a.admin().delete(&key_path(&key)).expect(204);
    let waited = started.elapsed();
    // The frozen node could not acknowledge: the revocation waited for its lease to run out
    // (at most one lease after its last renewal), and no longer than the cap of three.
    assert!(
        waited >= LEASE / 5 && waited < 3 * LEASE,
        "the revocation took {waited:?} with a frozen node and a lease of {LEASE:?}"
    );
    whoami(&a, &session).expect_error(401, "invalid_credentials");
    drop(pause);
    // Running again, its lease long gone: its cache is off or emptied, whatever it had.
    whoami(&frozen, &session).expect_error(401, "invalid_credentials");
    wait_for(
        "the thawed node to lease again",
        Duration::from_secs(30),
        || leased_nodes(&database) == 2,
    );
    let (_, fresh) = logged_in(&a);
    warm(&frozen, &fresh);
}
