//! Several nodes on one PostgreSQL database (issue 17): three real `authkeys serve` processes
//! sharing a fresh database, whatever the suite's store. Once a revocation returns on any node
//! no node accepts the credential, even while 32 clients hammer the others' hot caches; a
//! single-use key has one winner across nodes; a node killed mid-write, PostgreSQL restarted
//! (on a cluster of the test's own, so the rest of the suite is not disturbed) and a node's
//! listening connection cut lose no acknowledged write, never answer with a stale success, and
//! recover without a restart; nodes started at once migrate once; webhooks are delivered and
//! the sweeper's work is done once.

use crate::audit::all_events;
use crate::reliability::races::{concurrent_logins_across, tally, winners_and_losers};
use crate::reliability::raw::{Conn, RawReply};
use crate::support::store::{PgDatabase, restart_throwaway_cluster, start_throwaway_cluster};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The `application_name` of a node's listening connection (its `LISTEN` for invalidations),
/// as ARCHITECTURE.md documents it.
const LISTENER_APPLICATION_NAME: &str = "authkeys-listener";

/// The nodes' lease (`--node-lease-ms`): how long a revocation may wait for a node that was
/// killed, cut off or restarted; long enough for a loaded machine's renewals.
const LEASE_MS: &str = "3000";

/// `count` nodes on `database`, started one after the other. Refused credentials are part of
/// these tests, so the per-address throttle is off.
fn start_nodes(database: &Arc<PgDatabase>, count: usize, options: Options) -> Vec<TestServer> {
    (0..count)
        .map(|_| TestServer::start_with(node_options(database, options.clone())))
        .collect()
}

fn node_options(database: &Arc<PgDatabase>, options: Options) -> Options {
    let mut options = options
        .arg("--login-failures-burst", "0")
        .arg("--node-lease-ms", LEASE_MS);
    options.database = Some(database.clone());
    options
}

fn three_nodes(options: Options) -> Vec<TestServer> {
    start_nodes(&PgDatabase::create(), 3, options)
}

/// `GET /v1/auth/whoami` with `session` on a keep-alive connection.
fn whoami_on(conn: &mut Conn, session: &str) -> RawReply {
    let bearer = format!("Bearer {session}");
    conn.send("GET", "/v1/auth/whoami", &[("Authorization", &bearer)], b"")
}

fn key_path(key: &Value) -> String {
    format!(
        "/v1/apps/{}/keys/{}",
        key["app"].as_str().expect("the key's app"),
        key["id"].as_str().expect("the key's id")
    )
}

/// One request as a hammering client saw it: when it was sent and what came back.
#[derive(Debug, Clone)]
struct Seen {
    node: usize,
    sent: Instant,
    status: u16,
    code: Option<String>,
}

/// Clients sending whoami with `session` to `nodes` in turn, each on its own keep-alive
/// connection, until `stop`; every answer recorded.
struct Hammer {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<Seen>>>,
    clients: usize,
}

impl Hammer {
    fn start(nodes: &[(usize, &TestServer)], clients: usize, session: &str) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (node, server) = nodes[i % nodes.len()];
                let url = server.url.clone();
                let (stop, successes, answered) =
                    (stop.clone(), successes.clone(), answered.clone());
                let session = session.to_string();
                thread::spawn(move || {
                    let mut conn = Conn::open(&url);
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let reply = whoami_on(&mut conn, &session);
                        if reply.status == 200 {
                            successes.fetch_add(1, Ordering::SeqCst);
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                        seen.push(Seen {
                            node,
                            sent,
                            status: reply.status,
                            code: reply.code().map(str::to_string),
                        });
                    }
                    seen
                })
            })
            .collect();
        Hammer {
            stop,
            successes,
            answered,
            threads,
            clients,
        }
    }

    fn successes(&self) -> usize {
        self.successes.load(Ordering::SeqCst)
    }

    /// Keeps going until at least two requests per client were sent after now: at most one
    /// per client is in flight now, so three answers per client from now on are enough.
    fn stop_after_two_rounds_more(self) -> Vec<Seen> {
        let target = self.answered.load(Ordering::SeqCst) + 3 * self.clients;
        wait_for("more answers", Duration::from_secs(60), || {
            self.answered.load(Ordering::SeqCst) >= target
        });
        self.stop()
    }

    fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a hammering client panicked"))
            .collect()
    }
}

/// Answers to requests sent after `after` that were anything but a refusal of the session.
fn accepted_after(seen: &[Seen], after: Instant) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| {
            s.sent > after && (s.status, s.code.as_deref()) != (401, Some("invalid_credentials"))
        })
        .collect()
}

#[test]
fn a_revocation_on_one_node_is_refused_by_every_node_once_it_returns_over_20_rounds() {
    const ROUNDS: usize = 20;
    const CLIENTS: usize = 32;
    let nodes = three_nodes(Options::default());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    a.create_app("fleet");
    let mut after_total = 0;
    for round in 0..ROUNDS {
        let key = a.create_key("fleet", json!({"reusable": true}));
        let session = session_of(&a.login(key["key"].as_str().unwrap()));
        let hammer = Hammer::start(&[(1, b), (2, c)], CLIENTS, &session);
        // Every client has been answered from a warm cache before the revocation starts.
        wait_for(
            "the hammering clients to be accepted",
            Duration::from_secs(30),
            || hammer.successes() >= 2 * CLIENTS,
        );
        a.admin().delete(&key_path(&key)).expect(204);
        let returned = Instant::now();
        let seen = hammer.stop_after_two_rounds_more();
        let stale = accepted_after(&seen, returned);
        assert!(
            stale.is_empty(),
            "round {round}: {} answers after the DELETE returned were not invalid_credentials \
             (from nodes {:?}), e.g. {:?}\n--- node B ---\n{}\n--- node C ---\n{}",
            stale.len(),
            stale
                .iter()
                .map(|s| s.node)
                .collect::<std::collections::BTreeSet<_>>(),
            &stale[..stale.len().min(5)],
            b.log(),
            c.log()
        );
        let after = seen.iter().filter(|s| s.sent > returned).count();
        assert!(
            after >= CLIENTS,
            "round {round}: only {after} requests after the DELETE"
        );
        after_total += after;
    }
    assert!(after_total >= ROUNDS * CLIENTS);
}

#[test]
fn a_single_use_key_raced_across_three_nodes_has_one_winner_and_max_uses_n_has_n() {
    let nodes = three_nodes(Options::default());
    let servers: Vec<&TestServer> = nodes.iter().collect();
    let app = nodes[0].create_app("race");
    for round in 0..10 {
        for max_uses in [1, 3] {
            let body = match max_uses {
                1 => json!({}),
                n => json!({"reusable": true, "max_uses": n}),
            };
            let key = nodes[round % 3].create_key(&app, body);
            let results = concurrent_logins_across(&servers, key["key"].as_str().unwrap(), 30);
            let (winners, losers) = winners_and_losers(&results);
            assert_eq!(
                (winners.len(), losers),
                (max_uses, 30 - max_uses),
                "round {round}, max_uses {max_uses}: {:?}",
                tally(&results)
            );
            let key_id = key["id"].as_str().unwrap();
            let db = nodes[0].db();
            let machines =
                "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk WHERE k.id = ?1";
            assert_eq!(db.scalar(machines, &[key_id]), max_uses as i64);
            let uses = "SELECT uses FROM keys WHERE id = ?1";
            assert_eq!(db.scalar(uses, &[key_id]), max_uses as i64);
        }
    }
}

#[test]
fn three_nodes_started_at_once_on_an_empty_database_all_start_on_one_schema() {
    for round in 0..5 {
        let database = PgDatabase::create();
        let nodes: Vec<TestServer> = thread::scope(|scope| {
            let starting: Vec<_> = (0..3)
                .map(|_| {
                    let options = node_options(&database, Options::default());
                    scope.spawn(move || TestServer::start_with(options))
                })
                .collect();
            starting
                .into_iter()
                .map(|node| node.join().expect("a node did not start"))
                .collect()
        });
        let app = nodes[round % 3].create_app("ci");
        let key = nodes[(round + 1) % 3].create_key(&app, json!({"reusable": true}));
        for node in &nodes {
            node.login(key["key"].as_str().unwrap());
        }
        let db = nodes[0].db();
        assert_eq!(db.scalar("SELECT count(*) FROM apps", &[]), 1);
        assert_eq!(db.scalar("SELECT count(*) FROM machines", &[]), 3);
        for node in &nodes {
            let log = node.log();
            assert!(!log.contains("panicked"), "{log}");
        }
    }
}

#[test]
fn a_second_node_sees_what_the_first_wrote_at_once() {
    let database = PgDatabase::create();
    let nodes = start_nodes(&database, 2, Options::default());
    let (first, second) = (&nodes[0], &nodes[1]);
    // A failed lookup on the second node first, so that nothing it cached can hide the key.
    second
        .admin()
        .get("/v1/apps/ci")
        .expect_error(404, "app_not_found");
    let app = first.create_app("ci");
    second.admin().get("/v1/apps/ci").expect(200);
    let key = first.create_key(&app, json!({"reusable": true}));
    let secret = key["key"].as_str().unwrap();
    assert_eq!(verify(second, secret)["valid"], true);
    let login = second.login(secret);
    let session = session_of(&login);
    whoami(first, &session).expect(200);
    let listed = first.admin().get("/v1/apps/ci/machines").expect(200);
    assert_eq!(listed["machines"][0]["id"], login["machine"]["id"]);
    // A logout on the first node is seen by the second.
    let machine = login["machine"]["id"].as_str().unwrap();
    first
        .admin()
        .delete(&format!("/v1/apps/ci/machines/{machine}"))
        .expect(204);
    assert_eq!(whoami(second, &session).status, 401);
}

/// What a writer was told, so what must survive: apps, and keys with their logins' sessions.
#[derive(Default)]
struct Acknowledged {
    apps: Vec<String>,
    keys: Vec<KeyLogins>,
}

/// A key, the sessions of its acknowledged logins, and whether one more login was sent but
/// never answered (it may or may not have happened).
struct KeyLogins {
    key: Value,
    sessions: Vec<String>,
    login_in_doubt: bool,
}

/// Sends creations and logins to `url` until the node stops answering, counting each
/// acknowledged write in `progress`.
fn write_until_killed(
    url: &str,
    round: usize,
    progress: &AtomicUsize,
    mut done: Acknowledged,
) -> Acknowledged {
    let Ok(mut conn) = Conn::try_open(url, None) else {
        return done;
    };
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("Authorization", admin.as_str()),
        ("Content-Type", "application/json"),
    ];
    for n in 0.. {
        let app = format!("r{round}-{n}");
        let body = serde_json::to_vec(&json!({"id": app})).unwrap();
        match conn.try_send("POST", "/v1/apps", &headers, &body) {
            Ok(reply) if reply.status == 201 => done.apps.push(app.clone()),
            _ => return done,
        }
        progress.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::to_vec(&json!({"reusable": true})).unwrap();
        let key = match conn.try_send("POST", &format!("/v1/apps/{app}/keys"), &headers, &body) {
            Ok(reply) if reply.status == 201 => reply.json,
            _ => return done,
        };
        progress.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::to_vec(&json!({"auth_key": key["key"]})).unwrap();
        done.keys.push(KeyLogins {
            key,
            sessions: Vec::new(),
            login_in_doubt: true,
        });
        let last = done.keys.last_mut().unwrap();
        match conn.try_send("POST", "/v1/auth/login", &headers[1..], &body) {
            Ok(reply) if reply.status == 201 => {
                last.sessions.push(session_of(&reply.json));
                last.login_in_doubt = false;
            }
            _ => return done,
        }
        progress.fetch_add(1, Ordering::SeqCst);
    }
    unreachable!()
}

/// Every acknowledged write is there, as `node` sees it.
fn assert_all_there(node: &TestServer, done: &Acknowledged, context: &str) {
    for app in &done.apps {
        let reply = node.admin().get(&format!("/v1/apps/{app}"));
        assert_eq!(reply.status, 200, "{context}: app {app} was lost");
    }
    for written in &done.keys {
        let stored = node.admin().get(&key_path(&written.key)).expect(200);
        let uses = stored["uses"].as_u64().expect("uses") as usize;
        let acknowledged = written.sessions.len();
        assert!(
            uses == acknowledged || (written.login_in_doubt && uses == acknowledged + 1),
            "{context}: {} has {uses} uses, {acknowledged} acknowledged",
            written.key
        );
        for session in &written.sessions {
            whoami(node, session).expect(200);
        }
    }
}

#[test]
fn a_node_killed_mid_write_loses_no_acknowledged_write_and_the_others_serve_on() {
    let mut nodes = three_nodes(Options::default().arg("--sweep-interval", "3600"));
    let mut done = Acknowledged::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let url = nodes[0].url.clone();
        let progress = Arc::new(AtomicUsize::new(0));
        let written = progress.clone();
        let writer = thread::spawn(move || write_until_killed(&url, round, &written, done));
        // Killed at a random moment once writes are flowing (a loaded machine may take
        // seconds over a new node's first connections).
        wait_for("writes to flow", Duration::from_secs(60), || {
            progress.load(Ordering::SeqCst) >= 3
        });
        thread::sleep(Duration::from_millis(rng % 250));
        nodes[0].kill9();
        done = writer.join().expect("the writer panicked");
        let context = format!("after kill -9 #{round}");
        // The other nodes, never restarted, see everything the killed one acknowledged.
        assert_all_there(&nodes[1], &done, &context);
        assert_all_there(&nodes[2], &done, &context);
        nodes[0].restart();
        assert_all_there(&nodes[0], &done, &context);
    }
    let db = nodes[1].db();
    assert_eq!(db.integrity_check(), "ok");
    assert_eq!(db.half_revoked_machines(), 0);
}

/// The directory of the cluster the restart test owns: restarting the suite's shared cluster
/// would fail every test running beside it.
fn own_cluster_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pg-restart-test")
}

/// A hammering client's answer is acceptable during an outage: the expected one, or 503
/// `database_unavailable`.
fn expected_or_unavailable(reply: &RawReply, expected: (u16, Option<&str>)) -> bool {
    (reply.status, reply.code()) == expected
        || (reply.status, reply.code()) == (503, Some("database_unavailable"))
}

#[test]
fn restarting_postgres_is_503_meanwhile_never_stale_and_every_node_recovers_on_its_own() {
    let database = PgDatabase::create_on(&start_throwaway_cluster(&own_cluster_dir()));
    let nodes = start_nodes(&database, 3, Options::default());
    let pids: Vec<u32> = nodes.iter().map(TestServer::pid).collect();
    let app = nodes[0].create_app("ci");
    let live_key = nodes[0].create_key(&app, json!({"reusable": true}));
    let live = session_of(&nodes[1].login(live_key["key"].as_str().unwrap()));
    let revoked_key = nodes[0].create_key(&app, json!({}));
    let revoked = session_of(&nodes[2].login(revoked_key["key"].as_str().unwrap()));
    for node in &nodes {
        whoami(node, &live).expect(200);
        whoami(node, &revoked).expect(200);
    }
    nodes[0].admin().delete(&key_path(&revoked_key)).expect(204);

    // Per node: a client with the live session, one with the revoked one, and a writer.
    let stop = Arc::new(AtomicBool::new(false));
    let unacceptable = Arc::new(Mutex::new(Vec::<String>::new()));
    let outages = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for role in ["live", "revoked", "writer"] {
            let (url, live, revoked) = (node.url.clone(), live.clone(), revoked.clone());
            let (stop, unacceptable) = (stop.clone(), unacceptable.clone());
            let (outages, created) = (outages.clone(), created.clone());
            clients.push(thread::spawn(move || {
                let mut conn = Conn::open(&url);
                let admin = format!("Bearer {ADMIN_TOKEN}");
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (reply, ok) = match role {
                        "live" => {
                            let reply = whoami_on(&mut conn, &live);
                            let ok = expected_or_unavailable(&reply, (200, None));
                            (reply, ok)
                        }
                        "revoked" => {
                            let reply = whoami_on(&mut conn, &revoked);
                            let ok =
                                expected_or_unavailable(&reply, (401, Some("invalid_credentials")));
                            (reply, ok)
                        }
                        _ => {
                            let id = format!("w{n}-{i}");
                            let body = serde_json::to_vec(&json!({"id": id})).unwrap();
                            let headers = [
                                ("Authorization", admin.as_str()),
                                ("Content-Type", "application/json"),
                            ];
                            let reply = conn.send("POST", "/v1/apps", &headers, &body);
                            if reply.status == 201 {
                                created.lock().unwrap().push(id);
                            }
                            let ok = expected_or_unavailable(&reply, (201, None));
                            thread::sleep(Duration::from_millis(20));
                            (reply, ok)
                        }
                    };
                    if reply.status == 503 {
                        outages.fetch_add(1, Ordering::SeqCst);
                    }
                    if !ok {
                        unacceptable.lock().unwrap().push(format!(
                            "node {n} {role}: {} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        ));
                    }
                }
            }));
        }
    }
    thread::sleep(Duration::from_millis(300));
    restart_throwaway_cluster(&own_cluster_dir());
    let restarted = Instant::now();
    // Every node answers again, by itself: the live session, and writes.
    for node in &nodes {
        wait_for("the node to recover", Duration::from_secs(30), || {
            whoami(node, &live).status == 200
        });
        wait_for("writes to succeed again", Duration::from_secs(30), || {
            node.admin()
                .post("/v1/apps", &json!({"id": format!("after-{}", node.pid())}))
                .status
                == 201
        });
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("a client panicked");
    }
    let unacceptable = unacceptable.lock().unwrap();
    assert!(
        unacceptable.is_empty(),
        "{} unacceptable answers, e.g. {:?}",
        unacceptable.len(),
        &unacceptable[..unacceptable.len().min(5)]
    );
    assert!(
        outages.load(Ordering::SeqCst) > 0,
        "no request saw the outage"
    );
    // Recovered in place: the same processes, every acknowledged write kept, and revocation
    // across nodes works again (each node listens again).
    assert_eq!(nodes.iter().map(TestServer::pid).collect::<Vec<_>>(), pids);
    for id in created.lock().unwrap().iter() {
        nodes[2].admin().get(&format!("/v1/apps/{id}")).expect(200);
    }
    assert_revocation_reaches(&nodes, 0);
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
}

/// A new session, accepted (and so cached) by every node, is refused by every node as soon as
/// its key's revocation on node `on` returns.
fn assert_revocation_reaches(nodes: &[TestServer], on: usize) {
    let app = "revocation-check";
    if nodes[on].admin().get(&format!("/v1/apps/{app}")).status == 404 {
        nodes[on].create_app(app);
    }
    let key = nodes[on].create_key(app, json!({"reusable": true}));
    let session = session_of(&nodes[on].login(key["key"].as_str().unwrap()));
    // Three answers per node: the second miss caches the session, the third is the cache's.
    for node in nodes {
        for _ in 0..3 {
            whoami(node, &session).expect(200);
        }
    }
    nodes[on].admin().delete(&key_path(&key)).expect(204);
    for (n, node) in nodes.iter().enumerate() {
        let reply = whoami(node, &session);
        assert_eq!(
            (reply.status, reply.json["error"]["code"].as_str()),
            (401, Some("invalid_credentials")),
            "node {n} after the revocation on node {on}:\n{}",
            node.log()
        );
    }
}

/// The process ids of the backends listening for `database`'s invalidations, by the node's
/// client port (each node's listening connection has its own).
fn listener_backends(database: &PgDatabase) -> Vec<i32> {
    database
        .connect_to_server()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            &[&database.name.as_str(), &LISTENER_APPLICATION_NAME],
        )
        .expect("reading pg_stat_activity")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn cutting_the_listening_connections_accepts_nothing_stale_and_they_come_back_by_themselves() {
    let database = PgDatabase::create();
    let nodes = start_nodes(&database, 3, Options::default());
    let app = nodes[0].create_app("ci");
    wait_for("three listeners", Duration::from_secs(30), || {
        listener_backends(&database).len() == 3
    });
    for round in 0..5 {
        let key = nodes[0].create_key(&app, json!({"reusable": true}));
        let session = session_of(&nodes[0].login(key["key"].as_str().unwrap()));
        let hammer = Hammer::start(&[(1, &nodes[1]), (2, &nodes[2])], 8, &session);
        wait_for("warm caches", Duration::from_secs(30), || {
            hammer.successes() >= 16
        });
        // Every node but the revoking one loses its listening connection, then the key is
        // revoked: the others missed the notification, and must not answer from their cache.
        let mut server = database.connect_to_server();
        let cut: Vec<i32> = listener_backends(&database);
        for pid in &cut {
            server
                .execute("SELECT pg_terminate_backend($1)", &[pid])
                .expect("terminating a listener");
        }
        nodes[0].admin().delete(&key_path(&key)).expect(204);
        let returned = Instant::now();
        let seen = hammer.stop_after_two_rounds_more();
        let stale = accepted_after(&seen, returned);
        assert!(
            stale.is_empty(),
            "round {round}: stale answers after the cut and the revocation: {:?}",
            &stale[..stale.len().min(5)]
        );
        // Each node listens again on its own, and revocation reaches it again through its
        // cache.
        wait_for(
            "the listeners to come back",
            Duration::from_secs(30),
            || {
                let now = listener_backends(&database);
                now.len() == 3 && now.iter().all(|pid| !cut.contains(pid))
            },
        );
        assert_revocation_reaches(&nodes, round % 3);
    }
}

fn fast_webhooks() -> Options {
    Options::default()
        .arg("--webhook-poll-ms", "20")
        .arg("--webhook-first-retry-ms", "100")
        .arg("--webhook-timeout-ms", "2000")
}

#[test]
fn with_two_nodes_each_webhook_event_is_delivered_once() {
    let database = PgDatabase::create();
    let nodes = start_nodes(&database, 2, fast_webhooks());
    let receiver = Receiver::start();
    let created = nodes[0]
        .admin()
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url(), "events": ["app.*"]}),
        )
        .expect(201);
    let webhook = created["id"].as_str().unwrap();
    receiver.set_secret(webhook, created["secret"].as_str().unwrap());
    const APPS: usize = 40;
    for n in 0..APPS {
        nodes[n % 2].create_app(&format!("app-{n}"));
    }
    let distinct = || {
        let mut seqs: Vec<i64> = receiver.received().iter().map(|d| d.seq).collect();
        seqs.sort();
        seqs.dedup();
        seqs.len()
    };
    wait_for("every event delivered", Duration::from_secs(60), || {
        distinct() >= APPS
    });
    // Time for a second delivery of any event to arrive.
    thread::sleep(Duration::from_millis(500));
    let mut by_seq: BTreeMap<i64, usize> = BTreeMap::new();
    for delivery in receiver.received() {
        assert!(delivery.signature_ok, "{delivery:?}");
        *by_seq.entry(delivery.seq).or_default() += 1;
    }
    let twice: Vec<_> = by_seq.iter().filter(|(_, count)| **count > 1).collect();
    assert_eq!(by_seq.len(), APPS, "{by_seq:?}");
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

fn sweeping_every_100_ms() -> Options {
    Options::default().arg("--sweep-interval-ms", "100")
}

#[test]
fn with_three_nodes_sweeping_each_expired_machine_is_logged_out_once() {
    const MACHINES: usize = 30;
    let database = PgDatabase::create();
    let nodes = start_nodes(
        &database,
        3,
        sweeping_every_100_ms().arg("--ephemeral-ttl", "1"),
    );
    let app = nodes[0].create_app("ci");
    let key = nodes[0].create_key(&app, json!({"reusable": true, "ephemeral": true}));
    let mut machines = Vec::new();
    for n in 0..MACHINES {
        let login = nodes[n % 3].login(key["key"].as_str().unwrap());
        machines.push(login["machine"]["id"].as_str().unwrap().to_string());
    }
    let db = nodes[0].db();
    wait_for("every machine swept", Duration::from_secs(30), || {
        db.scalar("SELECT count(*) FROM machines", &[]) == 0
    });
    // A few more sweeps on every node.
    thread::sleep(Duration::from_millis(500));
    let events = all_events(&nodes[1].admin(), "action=machine.logged_out", 1000);
    let mut logged_out: Vec<String> = events
        .iter()
        .map(|event| event["target"]["id"].as_str().unwrap().to_string())
        .collect();
    logged_out.sort();
    machines.sort();
    assert_eq!(logged_out, machines, "one logout event per machine");
    let swept: usize = nodes
        .iter()
        .flat_map(|node| {
            node.log()
                .lines()
                .filter_map(|line| {
                    let rest = line.split("swept ").nth(1)?;
                    rest.split(" expired machines")
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(
        swept, MACHINES,
        "the nodes' sweeps add up to each machine once"
    );
}

#[test]
fn a_machine_active_on_one_node_is_not_swept_as_idle_by_another() {
    let database = PgDatabase::create();
    let sweeper = Options::default()
        .arg("--min-key-timeout-secs", "1")
        .arg("--sweep-interval-ms", "100");
    // The node the machine talks to never sweeps (nor flushes stamps with a sweep) in this
    // test's time; the other sweeps every 100 ms.
    let quiet = Options::default()
        .arg("--min-key-timeout-secs", "1")
        .arg("--sweep-interval", "3600");
    let nodes = [
        TestServer::start_with(node_options(&database, sweeper)),
        TestServer::start_with(node_options(&database, quiet)),
    ];
    let app = nodes[0].create_app("ci");
    let key = nodes[0].create_key(&app, json!({"reusable": true, "idle_timeout": 3}));
    let secret = key["key"].as_str().unwrap();
    let idle = nodes[0].login(secret);
    let idle_id = idle["machine"]["id"].as_str().unwrap();
    let active_login = nodes[1].login(secret);
    let (active, active_id) = (session_of(&active_login), &active_login["machine"]["id"]);
    // The active machine keeps talking to the quiet node, for twice its idle timeout and
    // until the sweeping node has logged the idle one out.
    let started = Instant::now();
    let machines = || nodes[0].db().strings("SELECT id FROM machines", &[]);
    while started.elapsed() < Duration::from_secs(6) || machines().contains(&idle_id.to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the idle machine was never swept\n{}",
            nodes[0].log()
        );
        whoami(&nodes[1], &active).expect(200);
        thread::sleep(Duration::from_millis(300));
    }
    // The sweeping node judges it active too, from what the quiet node recorded.
    whoami(&nodes[0], &active).expect(200);
    assert_eq!(json!(machines()), json!([active_id]), "{}", nodes[0].log());
    let events = all_events(&nodes[0].admin(), "action=machine.logged_out", 1000);
    let ids: Vec<&Value> = events.iter().map(|event| &event["target"]["id"]).collect();
    assert_eq!(
        ids,
        vec![&idle["machine"]["id"]],
        "only the idle machine, once"
    );
}
