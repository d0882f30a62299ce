//! Usage stamps never reach another row. whoami's `last_seen_at` waits in memory for the
//! sweeper, and SQLite gives the next machine the pk of the newest machine once that row is
//! deleted. So for every way a machine's row goes (revocation, app deletion, logout, admin
//! logout, expiry, and a `kill -9` in between), machine A is seen, its row is freed while the
//! stamp is pending, and machine B logs in and takes A's pk (checked in the database). B, never
//! seen, must still have no `last_seen_at` after the flush, and its own stamps must still be
//! written. Keys are never deleted, so their pks are never reused: checked too.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Short (`--sweep-interval-ms`), so each scenario waits out a few sweeps in a few seconds,
/// yet long enough for its four requests to fit between two sweeps while other tests run.
const SWEEP_INTERVAL: Duration = Duration::from_millis(600);
/// How many times a scenario that needs a quiet stretch between two sweeps is tried before
/// the test gives up (only a very loaded machine needs more than one).
const ATTEMPTS: usize = 10;

fn start(options: Options) -> TestServer {
    let interval = SWEEP_INTERVAL.as_millis().to_string();
    TestServer::start_with(options.arg("--sweep-interval-ms", &interval))
}

/// A machine's row as stored: its pk, `created_at` and `last_seen_at` (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    pk: i64,
    created_at: i64,
    last_seen_at: Option<i64>,
}

fn machine_row(server: &TestServer, login: &Value) -> Option<Row> {
    let id = login["machine"]["id"].as_str().expect("machine id");
    let row = server.db().row(
        "SELECT pk, created_at, last_seen_at FROM machines WHERE id = ?1",
        &[id],
    )?;
    Some(Row {
        pk: row[0].as_i64().expect("pk"),
        created_at: row[1].as_i64().expect("created_at"),
        last_seen_at: row[2].as_i64(),
    })
}

fn existing_row(server: &TestServer, login: &Value) -> Row {
    machine_row(server, login).unwrap_or_else(|| panic!("no row for {login}"))
}

/// Sweeps the server has completed.
fn sweeps(server: &TestServer) -> u64 {
    let metrics = scrape(&server.anonymous());
    sample(&metrics, r#"authkeys_sweeps_total{outcome="ok"}"#) as u64
}

/// A stretch in which no sweep starts: the sweeper waits a whole interval after each sweep,
/// so from the last moment a sweep was seen unfinished, the next one is an interval away.
struct Quiet {
    sweeps: u64,
    until: Instant,
}

fn wait_for_quiet(server: &TestServer) -> Quiet {
    let mut unfinished_at = Instant::now();
    let before = sweeps(server);
    eventually("a sweep to finish", 10 * SWEEP_INTERVAL, || {
        let asked = Instant::now();
        let now = sweeps(server);
        let quiet = (now > before).then_some(Quiet {
            sweeps: now,
            until: unfinished_at + SWEEP_INTERVAL,
        });
        unfinished_at = asked;
        quiet
    })
}

/// Returns once a sweep that started after this call has finished: one may be running now.
fn wait_for_flush(server: &TestServer) {
    let target = sweeps(server) + 2;
    wait_for("a sweep", 10 * SWEEP_INTERVAL, || sweeps(server) >= target);
}

/// B took A's pk, was never seen, and its first stamp is its own. The pending stamp of A had
/// its chance to land: a sweep ran after B logged in.
#[track_caller]
fn assert_only_its_own_stamps(server: &TestServer, a: Row, b_login: &Value) {
    let b = existing_row(server, b_login);
    assert_eq!(
        b.pk, a.pk,
        "B must reuse A's pk for this test to mean anything"
    );
    assert_eq!(
        b.last_seen_at,
        None,
        "B (created at {}) was never seen, yet carries a last_seen_at: the stamp of the \
         machine that had its pk before\n{}",
        b.created_at,
        server.all_logs()
    );
    let asked = chrono::Utc::now().timestamp_millis();
    whoami(server, &session_of(b_login)).expect(200);
    wait_for_flush(server);
    let seen = existing_row(server, b_login).last_seen_at;
    assert!(
        seen.is_some_and(|seen| seen >= asked && seen >= b.created_at),
        "B's own whoami at {asked} must be written: {seen:?}"
    );
}

/// The four ways an admin or the machine itself frees a row while the server runs: log A
/// in (`log_in_a`), have it seen, free its row (`end_a`) and log B in with `key_b`, all
/// inside one quiet stretch so that A's stamp is still pending when B takes A's pk.
fn check_row_freed_by(
    server: &TestServer,
    mut log_in_a: impl FnMut(&TestServer) -> Value,
    mut end_a: impl FnMut(&TestServer, &Value),
    key_b: &str,
) {
    for _ in 0..ATTEMPTS {
        let a_login = log_in_a(server);
        let a = existing_row(server, &a_login);
        let quiet = wait_for_quiet(server);
        whoami(server, &session_of(&a_login)).expect(200);
        end_a(server, &a_login);
        let b_login = server.login(key_b);
        if Instant::now() >= quiet.until {
            continue; // A sweep may have written A's stamp before A's row went: try again.
        }
        assert_eq!(machine_row(server, &a_login), None, "A's row must be gone");
        wait_for("the next sweep", 10 * SWEEP_INTERVAL, || {
            sweeps(server) > quiet.sweeps
        });
        assert_only_its_own_stamps(server, a, &b_login);
        return;
    }
    panic!("no attempt ran between two sweeps\n{}", server.log());
}

/// A server with app `stay` and its reusable key for machine B; returns the server and the key.
fn server_with_key_b(options: Options) -> (TestServer, String) {
    let server = start(options);
    server.create_app("stay");
    let key = server.create_key("stay", json!({"reusable": true}));
    let secret = key["key"].as_str().expect("key").to_string();
    (server, secret)
}

fn login_with_new_key(server: &TestServer, app: &str) -> Value {
    let key = server.create_key(app, json!({}));
    server.login(key["key"].as_str().expect("key"))
}

/// Revokes the key (of app `ci`) that `login`'s machine logged in with.
fn revoke_key_of(server: &TestServer, login: &Value) {
    let key = login["machine"]["key_id"].as_str().expect("key id");
    server
        .admin()
        .delete(&format!("/v1/apps/ci/keys/{key}"))
        .expect(204);
}

#[test]
fn a_revoked_keys_pending_stamp_never_reaches_the_next_machine() {
    let (server, key_b) = server_with_key_b(Options::default());
    server.create_app("ci");
    check_row_freed_by(
        &server,
        |server| login_with_new_key(server, "ci"),
        revoke_key_of,
        &key_b,
    );
}

#[test]
fn a_deleted_apps_pending_stamp_never_reaches_the_next_machine() {
    let (server, key_b) = server_with_key_b(Options::default());
    check_row_freed_by(
        &server,
        |server| {
            let app = server.create_app("doomed");
            login_with_new_key(server, &app)
        },
        |server, _| {
            server.admin().delete("/v1/apps/doomed").expect(204);
        },
        &key_b,
    );
}

#[test]
fn a_logged_out_machines_pending_stamp_never_reaches_the_next_machine() {
    let (server, key_b) = server_with_key_b(Options::default());
    check_row_freed_by(
        &server,
        |server| server.login(&key_b),
        |server, a| {
            let reply =
                server
                    .client(Some(&session_of(a)))
                    .send("POST", "/v1/auth/logout", None, None);
            if reply.status != 204 {
                reply.fail("logging A out");
            }
        },
        &key_b,
    );
}

#[test]
fn an_admin_logouts_pending_stamp_never_reaches_the_next_machine() {
    let (server, key_b) = server_with_key_b(Options::default());
    check_row_freed_by(
        &server,
        |server| server.login(&key_b),
        |server, a| {
            let machine = a["machine"]["id"].as_str().expect("machine id");
            server
                .admin()
                .delete(&format!("/v1/apps/stay/machines/{machine}"))
                .expect(204);
        },
        &key_b,
    );
}

#[test]
fn an_expired_machines_pending_stamp_never_reaches_the_next_machine() {
    let (server, key_b) = server_with_key_b(Options::default().arg("--ephemeral-ttl", "1"));
    server.create_app("ci");
    let key = server.create_key("ci", json!({"ephemeral": true}));
    let a_login = server.login(key["key"].as_str().expect("key"));
    let a = existing_row(&server, &a_login);
    // Seen up to its last millisecond, so the last stamps race the sweep that deletes it.
    let session = server.client(Some(&session_of(&a_login)));
    wait_for("A to expire", 10 * SWEEP_INTERVAL, || {
        session.get("/v1/auth/whoami").status == 401
    });
    wait_for("the sweeper to delete A", 10 * SWEEP_INTERVAL, || {
        machine_row(&server, &a_login).is_none()
    });
    let b_login = server.login(&key_b);
    wait_for_flush(&server);
    assert_only_its_own_stamps(&server, a, &b_login);
}

#[test]
fn a_stamp_pending_at_a_kill_9_never_reaches_the_next_machine() {
    let (mut server, key_b) = server_with_key_b(Options::default());
    server.create_app("ci");
    let a_login = login_with_new_key(&server, "ci");
    let a = existing_row(&server, &a_login);
    let mut attempts = 0;
    loop {
        let stored = existing_row(&server, &a_login).last_seen_at;
        let quiet = wait_for_quiet(&server);
        whoami(&server, &session_of(&a_login)).expect(200);
        server.kill9();
        let in_time = Instant::now() < quiet.until;
        server.restart();
        if in_time {
            // The stamp died with the process, unwritten.
            assert_eq!(existing_row(&server, &a_login).last_seen_at, stored);
            break;
        }
        attempts += 1;
        assert!(attempts < ATTEMPTS, "no kill landed between two sweeps");
    }
    revoke_key_of(&server, &a_login);
    let b_login = server.login(&key_b);
    wait_for_flush(&server);
    assert_only_its_own_stamps(&server, a, &b_login);
}

/// Keys are revoked, never deleted (revoked rows answer verify's "revoked"), so no key ever
/// takes another's pk and a pending `last_used_at` can only reach its own key.
#[test]
fn key_rows_outlive_revocation_and_app_deletion_so_key_stamps_stay_with_their_key() {
    let server = start(Options::default());
    let key_row = |key: &Value| {
        let id = key["id"].as_str().expect("key id");
        let row = server
            .db()
            .row(
                "SELECT pk, last_used_at, revoked_at FROM keys WHERE id = ?1",
                &[id],
            )
            .unwrap_or_else(|| panic!("key {id} has no row"));
        (
            row[0].as_i64().expect("pk"),
            row[1].as_i64(),
            row[2].as_i64(),
        )
    };
    server.create_app("gone");
    let revoked = server.create_key("gone", json!({}));
    let with_app = server.create_key("gone", json!({}));
    let asked = chrono::Utc::now().timestamp_millis();
    for key in [&revoked, &with_app] {
        assert_eq!(verify(&server, key["key"].as_str().unwrap())["valid"], true);
    }
    let revoked_id = revoked["id"].as_str().unwrap();
    server
        .admin()
        .delete(&format!("/v1/apps/gone/keys/{revoked_id}"))
        .expect(204);
    server.admin().delete("/v1/apps/gone").expect(204);
    server.create_app("next");
    let next = server.create_key("next", json!({}));
    wait_for_flush(&server);

    let (next_pk, next_used, _): (i64, Option<i64>, Option<i64>) = key_row(&next);
    for key in [&revoked, &with_app] {
        let (pk, used, revoked_at): (i64, Option<i64>, Option<i64>) = key_row(key);
        assert!(next_pk > pk, "a new key took pk {next_pk} of an old one");
        assert!(
            used.is_some_and(|used| used >= asked) && revoked_at.is_some(),
            "the verify stamp belongs to the revoked key {key}: {used:?}"
        );
    }
    assert_eq!(next_used, None, "the new key was never used");
}
