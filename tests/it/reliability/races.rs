//! Races: concurrent logins with one key, and revocation while clients keep verifying. Every
//! request is real HTTP on its own connection; the outcome is checked in SQLite too.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::Instant;

/// Runs `n` logins with `auth_key` at once (released together by a barrier); returns each
/// answer's status and body.
pub(super) fn concurrent_logins(
    server: &TestServer,
    auth_key: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    concurrent_logins_across(&[server], auth_key, n)
}

/// `concurrent_logins` spread over `servers` (nodes sharing one database), in turn.
pub(crate) fn concurrent_logins_across(
    servers: &[&TestServer],
    auth_key: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    let barrier = Barrier::new(n);
    thread::scope(|scope| {
        let logins: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, api) = (&barrier, servers[i % servers.len()].anonymous());
                let body = json!({"auth_key": auth_key, "machine": format!("racer-{i}")});
                scope.spawn(move || {
                    barrier.wait();
                    let reply = api.post("/v1/auth/login", &body);
                    (reply.status, reply.json)
                })
            })
            .collect();
        logins
            .into_iter()
            .map(|login| login.join().expect("a login thread panicked"))
            .collect()
    })
}

/// The successful logins' bodies, and how many logins lost to `auth_key_used`.
pub(crate) fn winners_and_losers(results: &[(u16, Value)]) -> (Vec<&Value>, usize) {
    let winners = results
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body)
        .collect();
    let losers = results
        .iter()
        .filter(|(status, body)| *status == 401 && body["error"]["code"] == "auth_key_used")
        .count();
    (winners, losers)
}

/// How many answers of each status and error code, for failure messages.
pub(crate) fn tally(results: &[(u16, Value)]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (status, body) in results {
        let code = body["error"]["code"].as_str().unwrap_or("");
        *counts.entry(format!("{status} {code}")).or_default() += 1;
    }
    counts
}

/// Errors that must never reach a client or the log under concurrency.
fn assert_no_storage_errors(server: &TestServer) {
    let log = server.log();
    for symptom in [
        "storage error",
        "database is locked",
        "SQLITE_BUSY",
        "panicked",
    ] {
        assert!(!log.contains(symptom), "the log shows {symptom:?}:\n{log}");
    }
}

#[test]
fn a_single_use_key_has_exactly_one_winner_among_100_concurrent_logins_20_times() {
    // 20 rounds of 99 losing logins from one address is more failures than the default
    // brute-force throttle allows (the brute_force tests show a burst of 200 passes by
    // default); this test is about atomicity, so the throttle is off.
    let server = TestServer::start_with(Options::default().arg("--login-failures-burst", "0"));
    let app = server.create_app("race");
    for round in 0..20 {
        let created = server.create_key(&app, json!({"description": format!("round {round}")}));
        let results = concurrent_logins(&server, created["key"].as_str().unwrap(), 100);
        let (winners, losers) = winners_and_losers(&results);
        assert_eq!(
            (winners.len(), losers),
            (1, 99),
            "round {round}: expected one 201 and 99 auth_key_used, got {:?}",
            tally(&results)
        );
        let key_id = created["id"].as_str().unwrap();
        let sql = "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk WHERE k.id = ?1";
        assert_eq!(server.db().scalar(sql, &[key_id]), 1, "round {round}");
        let uses = "SELECT uses FROM keys WHERE id = ?1";
        assert_eq!(server.db().scalar(uses, &[key_id]), 1, "round {round}");
        let winner = winners[0]["machine"]["id"].as_str().unwrap();
        let sql = "SELECT count(*) FROM machines WHERE id = ?1";
        assert_eq!(server.db().scalar(sql, &[winner]), 1);
    }
    assert_eq!(server.db().scalar("SELECT count(*) FROM machines", &[]), 20);
    assert_no_storage_errors(&server);
}

/// A key of `max_uses` N, hit by more concurrent logins than it has uses, logs in exactly N
/// machines, whatever N: 1, 5 and 100, each 20 rounds; `uses_remaining` is then exactly 0 and
/// the key verifies as used.
#[test]
fn a_key_of_n_uses_has_exactly_n_winners_among_more_concurrent_logins_20_times() {
    // Most logins lose on purpose: the throttle is off (see the single-use test above).
    let server = TestServer::start_with(Options::default().arg("--login-failures-burst", "0"));
    let app = server.create_app("race");
    let mut machines = 0;
    for (uses, logins) in [(1, 10), (5, 20), (100, 150)] {
        for round in 0..20 {
            let created = server.create_key(
                &app,
                json!({"reusable": true, "max_uses": uses, "description": format!("{uses}/{round}")}),
            );
            let secret = created["key"].as_str().unwrap();
            let results = concurrent_logins(&server, secret, logins);
            let (winners, losers) = winners_and_losers(&results);
            assert_eq!(
                (winners.len(), losers),
                (uses as usize, logins - uses as usize),
                "max_uses {uses}, round {round}: {:?}",
                tally(&results)
            );
            let key_id = created["id"].as_str().unwrap();
            let db = server.db();
            let sql =
                "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk WHERE k.id = ?1";
            assert_eq!(db.scalar(sql, &[key_id]), uses, "round {round}");
            let stored = "SELECT uses FROM keys WHERE id = ?1";
            assert_eq!(db.scalar(stored, &[key_id]), uses, "round {round}");
            let key = server
                .admin()
                .get(&format!("/v1/apps/{app}/keys/{key_id}"))
                .expect(200);
            assert_eq!(
                (&key["uses"], &key["uses_remaining"], &key["machines"]),
                (&json!(uses), &json!(0), &json!(uses)),
                "round {round}"
            );
            let verdict = server
                .anonymous()
                .post("/v1/keys/verify", &json!({"key": secret}))
                .expect(200);
            assert_eq!(verdict, json!({"valid": false, "code": "used"}));
            machines += uses;
        }
    }
    assert_eq!(
        server.db().scalar("SELECT count(*) FROM machines", &[]),
        machines
    );
    assert_no_storage_errors(&server);
}

#[test]
fn a_reusable_key_logs_in_200_concurrent_machines_as_200_distinct_sessions() {
    let server = TestServer::start();
    let app = server.create_app("fleet");
    let created = server.create_key(&app, json!({"reusable": true}));
    let results = concurrent_logins(&server, created["key"].as_str().unwrap(), 200);
    let statuses: Vec<u16> = results.iter().map(|(status, _)| *status).collect();
    assert!(
        statuses.iter().all(|status| *status == 201),
        "every login must succeed: {statuses:?}\n{}",
        server.log()
    );
    let tokens: HashSet<&str> = results
        .iter()
        .map(|(_, body)| body["session_token"].as_str().unwrap())
        .collect();
    let machines: HashSet<&str> = results
        .iter()
        .map(|(_, body)| body["machine"]["id"].as_str().unwrap())
        .collect();
    assert_eq!((tokens.len(), machines.len()), (200, 200));

    let key_id = created["id"].as_str().unwrap();
    let db = server.db();
    let sql = "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk WHERE k.id = ?1";
    assert_eq!(db.scalar(sql, &[key_id]), 200);
    assert_eq!(
        db.scalar("SELECT uses FROM keys WHERE id = ?1", &[key_id]),
        200
    );
    // Each session is its own machine.
    for (_, body) in &results {
        let whoami = server
            .client(body["session_token"].as_str())
            .get("/v1/auth/whoami")
            .expect(200);
        assert_eq!(whoami["machine"]["id"], body["machine"]["id"]);
    }
    assert_no_storage_errors(&server);
}

/// What one client saw of one request.
struct Observation {
    started: Instant,
    finished: Instant,
    target: Target,
    accepted: bool,
    detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The key being revoked, verified.
    RevokedKey,
    /// A machine logged in with the key being revoked, asking whoami.
    RevokedKeysMachine,
    /// Another key of the same app, and a machine of it.
    OtherKey,
    OtherKeysMachine,
    /// A machine of another app.
    OtherAppsMachine,
}

#[test]
fn revoking_while_8_clients_verify_stops_everything_that_starts_after_it_returns() {
    const CLIENTS: usize = 8;
    const ROUNDS_BEFORE: usize = 5;
    const ROUNDS_AFTER: usize = 10;
    // After the revocation every client presents refused credentials from one address, which
    // the throttle would turn into 429s; this test is about revocation, so it is off.
    let server = TestServer::start_with(Options::default().arg("--login-failures-burst", "0"));
    let app = server.create_app("fleet");
    let other_app = server.create_app("elsewhere");
    let doomed = server.create_key(&app, json!({"reusable": true}));
    let other = server.create_key(&app, json!({"reusable": true}));
    let elsewhere = server.create_key(&other_app, json!({"reusable": true}));
    let doomed_key = doomed["key"].as_str().unwrap();
    let other_key = other["key"].as_str().unwrap();
    let doomed_sessions: Vec<String> = (0..CLIENTS)
        .map(|_| {
            server.login(doomed_key)["session_token"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    let other_session = server.login(other_key)["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere_session = server.login(elsewhere["key"].as_str().unwrap())["session_token"]
        .as_str()
        .unwrap()
        .to_string();

    let rounds_done = AtomicUsize::new(0);
    let revoked: OnceLock<(Instant, Instant)> = OnceLock::new();
    let stop = AtomicBool::new(false);
    let observations: Vec<Observation> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (server, rounds_done, revoked, stop) = (&server, &rounds_done, &revoked, &stop);
                let requests: Vec<(Target, Probe)> = vec![
                    (Target::RevokedKey, verify(server, doomed_key)),
                    (
                        Target::RevokedKeysMachine,
                        whoami(server, &doomed_sessions[n]),
                    ),
                    (Target::OtherKey, verify(server, other_key)),
                    (Target::OtherKeysMachine, whoami(server, &other_session)),
                    (Target::OtherAppsMachine, whoami(server, &elsewhere_session)),
                ];
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let mut rounds_after = 0;
                    while !stop.load(Ordering::SeqCst) && rounds_after < ROUNDS_AFTER {
                        let round_started = Instant::now();
                        for (target, request) in &requests {
                            let started = Instant::now();
                            let (accepted, detail) = request();
                            let finished = Instant::now();
                            seen.push(Observation {
                                started,
                                finished,
                                target: *target,
                                accepted,
                                detail,
                            });
                        }
                        rounds_done.fetch_add(1, Ordering::SeqCst);
                        if revoked
                            .get()
                            .is_some_and(|(_, returned)| round_started > *returned)
                        {
                            rounds_after += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        // Whatever happens below (a failed assertion included), the clients stop, so the scope
        // can end.
        let _stop_clients = SetOnDrop(&stop);
        // Revoke once every client is well into its loop.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while rounds_done.load(Ordering::SeqCst) < CLIENTS * ROUNDS_BEFORE {
            assert!(Instant::now() < deadline, "the clients made no progress");
            thread::yield_now();
        }
        let sent = Instant::now();
        server
            .admin()
            .delete(&format!(
                "/v1/apps/{app}/keys/{}",
                doomed["id"].as_str().unwrap()
            ))
            .expect(204);
        revoked.set((sent, Instant::now())).expect("revoked once");
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("a client thread panicked"))
            .collect()
    });

    let (revoke_sent, revoke_returned) = *revoked.get().unwrap();
    let mut after = 0;
    for seen in &observations {
        let doomed = matches!(seen.target, Target::RevokedKey | Target::RevokedKeysMachine);
        if !doomed {
            assert!(
                seen.accepted,
                "{:?} stopped working: {}",
                seen.target, seen.detail
            );
        } else if seen.started > revoke_returned {
            after += 1;
            assert!(
                !seen.accepted,
                "{:?} succeeded after the revocation returned: {}",
                seen.target, seen.detail
            );
        } else if seen.finished < revoke_sent {
            assert!(
                seen.accepted,
                "{:?} failed before the revocation: {}",
                seen.target, seen.detail
            );
        }
    }
    assert!(
        after >= CLIENTS * ROUNDS_AFTER * 2,
        "too few requests after the revocation"
    );
    assert_eq!(server.db().half_revoked_machines(), 0);
    assert_no_storage_errors(&server);
}

/// One request a client repeats: whether it was accepted, and what was answered.
type Probe<'a> = Box<dyn Fn() -> (bool, String) + Send + Sync + 'a>;

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn verify<'a>(server: &'a TestServer, key: &'a str) -> Probe<'a> {
    let api = server.anonymous();
    Box::new(move || {
        let reply = api.post("/v1/keys/verify", &json!({"key": key}));
        let accepted = reply.status == 200 && reply.json["valid"] == true;
        let expected_refusal = reply.status == 200 && reply.json["code"] == "revoked";
        assert!(
            accepted || expected_refusal,
            "unexpected verify answer {} {}",
            reply.status,
            reply.body
        );
        (accepted, format!("{} {}", reply.status, reply.body))
    })
}

fn whoami<'a>(server: &'a TestServer, session: &'a str) -> Probe<'a> {
    let api = server.client(Some(session));
    Box::new(move || {
        let reply = api.get("/v1/auth/whoami");
        let refused = reply.status == 401 && reply.json["error"]["code"] == "invalid_credentials";
        assert!(
            reply.status == 200 || refused,
            "unexpected whoami answer {} {}",
            reply.status,
            reply.body
        );
        (
            reply.status == 200,
            format!("{} {}", reply.status, reply.body),
        )
    })
}
