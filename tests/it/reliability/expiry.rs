//! Expiry in real time: an ephemeral machine works until its TTL and not a millisecond after,
//! with the sweeper effectively off and across a restart; the sweeper survives a failed sweep
//! (a database locked by another process) and is joined on shutdown.

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Milliseconds since the epoch, the server's clock (same host).
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn parse_ms(rfc3339: &serde_json::Value) -> i64 {
    let text = rfc3339.as_str().expect("a timestamp string");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text}: {err}"))
        .timestamp_millis()
}

const SWEEPER_OFF: &str = "86400";

#[test]
fn an_ephemeral_machine_works_until_its_ttl_and_a_restart_keeps_its_expiry() {
    const TTL_SECS: i64 = 4;
    let options = Options::default()
        .arg("--ephemeral-ttl", &TTL_SECS.to_string())
        .arg("--sweep-interval", SWEEPER_OFF);
    let mut server = TestServer::start_with(options);
    let app = server.create_app("ci");
    let key = server.create_key(&app, json!({"ephemeral": true, "reusable": true}));
    let login = server.login(key["key"].as_str().unwrap());
    let machine = &login["machine"];
    let expires_at = parse_ms(&machine["expires_at"]);
    assert_eq!(
        expires_at - parse_ms(&machine["created_at"]),
        TTL_SECS * 1000
    );

    // A crash and a restart with another TTL: the machine keeps the expiry it was given.
    server.kill9();
    server.restart_with(
        Options::default()
            .arg("--ephemeral-ttl", "3600")
            .arg("--sweep-interval", SWEEPER_OFF),
    );
    let listed = server
        .admin()
        .get(&format!("/v1/apps/{app}/machines"))
        .expect(200);
    assert_eq!(listed["machines"][0]["expires_at"], machine["expires_at"]);

    // Ask whoami across the expiry. A request answered before `expires_at` must succeed; one
    // sent at or after it must be refused. Both bounds are causal: the server reads its clock
    // between our send and our receive.
    let session = server.client(login["session_token"].as_str());
    let mut seen = Vec::new();
    loop {
        let sent = now_ms();
        let reply = session.get("/v1/auth/whoami");
        let received = now_ms();
        seen.push((sent, received, reply.status, reply.body.clone()));
        if sent > expires_at + 600 {
            break;
        }
        std::thread::sleep(Duration::from_millis(if expires_at - received > 1500 {
            200
        } else {
            15
        }));
    }
    for (sent, received, status, body) in &seen {
        if *received < expires_at {
            assert_eq!(
                *status,
                200,
                "refused {} ms before expiry: {body}",
                expires_at - received
            );
        } else if *sent >= expires_at {
            assert_eq!(
                *status,
                401,
                "accepted {} ms after expiry: {body}",
                sent - expires_at
            );
            assert!(body.contains("session_expired"), "{body}");
        }
    }
    let just_before = seen.iter().any(|(_, received, status, _)| {
        *status == 200 && (expires_at - 500..expires_at).contains(received)
    });
    let just_after = seen.iter().any(|(sent, _, status, _)| {
        *status == 401 && (expires_at..expires_at + 500).contains(sent)
    });
    assert!(
        just_before && just_after,
        "no observation close to the expiry: {seen:?}"
    );

    // The sweeper did not run: the row is still there, yet the machine is gone from listings
    // and counts, and stays refused after another restart.
    let sql = "SELECT count(*) FROM machines WHERE id = ?1";
    assert_eq!(
        server.db().scalar(sql, &[machine["id"].as_str().unwrap()]),
        1
    );
    let listed = server
        .admin()
        .get(&format!("/v1/apps/{app}/machines"))
        .expect(200);
    assert_eq!(listed["machines"], json!([]));
    let key_path = format!("/v1/apps/{app}/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(server.admin().get(&key_path).expect(200)["machines"], 0);
    server.kill9();
    server.restart();
    session_of(&server, &login)
        .get("/v1/auth/whoami")
        .expect_error(401, "session_expired");
}

fn session_of(server: &TestServer, login: &serde_json::Value) -> Api {
    server.client(login["session_token"].as_str())
}

#[test]
fn the_sweeper_keeps_going_after_a_failed_sweep() {
    let options = Options::default()
        .arg("--ephemeral-ttl", "1")
        .arg("--sweep-interval-ms", "200")
        .arg("--sqlite-busy-timeout-ms", "200");
    let mut server = TestServer::start_with(options);
    let app = server.create_app("ci");
    let key = server.create_key(&app, json!({"ephemeral": true}));
    let login = server.login(key["key"].as_str().unwrap());
    let machine_id = login["machine"]["id"].as_str().unwrap().to_string();
    let rows = |server: &TestServer| {
        server.db().scalar(
            "SELECT count(*) FROM machines WHERE id = ?1",
            &[&machine_id],
        )
    };

    // Another process holds the write lock for longer than the server's busy timeout, so
    // sweeps fail while the machine expires.
    let locker = rusqlite::Connection::open(server.db_path()).expect("opening the database");
    locker.busy_timeout(Duration::from_secs(10)).unwrap();
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("taking the write lock");
    // A sweep that failed after the machine expired: one that would have deleted its row.
    let failed_sweeps =
        |server: &TestServer| server.log().matches("sweep failed, will retry").count();
    wait_for("the machine to expire", Duration::from_secs(30), || {
        whoami(&server, login["session_token"].as_str().unwrap()).status == 401
    });
    let failed_before_expiry = failed_sweeps(&server);
    wait_for("a failed sweep", Duration::from_secs(30), || {
        failed_sweeps(&server) > failed_before_expiry
    });
    // Expiry does not wait for the sweeper: the machine is refused though its row remains.
    session_of(&server, &login)
        .get("/v1/auth/whoami")
        .expect_error(401, "session_expired");
    assert_eq!(
        rows(&server),
        1,
        "the locked sweep cannot have deleted the row"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    // The same thread sweeps again, and this time succeeds.
    wait_for("a successful sweep", Duration::from_secs(30), || {
        rows(&server) == 0
    });
    // The sweep logs once all its steps are done (idleness, `key.expiring`, retention
    // follow the deletion), a moment after the row is gone.
    wait_for("the sweep's log line", Duration::from_secs(10), || {
        server.log().contains("swept 1 expired machines")
    });
    let log = server.log();
    assert!(log.contains("sweep failed, will retry"), "{log}");
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
}

#[test]
fn shutdown_stops_the_sweeper_at_once_and_joins_it_after_a_last_sweep() {
    let mut server =
        TestServer::start_with(Options::default().arg("--sweep-interval", SWEEPER_OFF));
    let app = server.create_app("ci");
    let key = server.create_key(&app, json!({}));
    let login = server.login(key["key"].as_str().unwrap());
    session_of(&server, &login)
        .get("/v1/auth/whoami")
        .expect(200);
    let machine_id = login["machine"]["id"].as_str().unwrap();
    let seen = "SELECT count(*) FROM machines WHERE id = ?1 AND last_seen_at IS NOT NULL";
    // whoami's stamp waits in memory for the sweeper, which would not run for a day.
    assert_eq!(server.db().scalar(seen, &[machine_id]), 0);

    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The stamp was written before the process exited: the sweeper was woken, ran its last
    // sweep and was joined rather than killed with the process.
    assert_eq!(
        server.db().scalar(seen, &[machine_id]),
        1,
        "{}",
        server.log()
    );
}
