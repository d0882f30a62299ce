//! The hot-path cache must be invisible: every write that changes an answer changes it for the
//! very next request, even when that answer was cached, and cached answers show usage stamps
//! no older than one sweep interval.

use crate::support::store::{Store, store_for_this_test};
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Asks three times: the second miss caches the session, the third answer comes from the cache.
fn whoami_cached(server: &TestServer, session: &str) -> Value {
    let api = server.client(Some(session));
    api.get("/v1/auth/whoami").expect(200);
    api.get("/v1/auth/whoami").expect(200);
    api.get("/v1/auth/whoami").expect(200)
}

/// Logs a machine in with a fresh key of app `hot` and warms the cache with its session.
fn cached_session(server: &TestServer) -> Value {
    let key = server.create_key("hot", json!({}));
    let login = server.login(key["key"].as_str().expect("key"));
    whoami_cached(server, &session_of(&login));
    login
}

#[track_caller]
fn assert_ended(server: &TestServer, login: &Value) {
    server
        .client(Some(&session_of(login)))
        .get("/v1/auth/whoami")
        .expect_error(401, "invalid_credentials");
}

#[test]
fn a_cached_session_ends_with_each_way_of_ending_it() {
    let server = TestServer::start();
    server.create_app("hot");
    let admin = server.admin();

    let login = cached_session(&server);
    let own = server.client(Some(&session_of(&login)));
    assert_eq!(own.send("POST", "/v1/auth/logout", None, None).status, 204);
    assert_ended(&server, &login);

    let login = cached_session(&server);
    let machine = login["machine"]["id"].as_str().expect("machine id");
    admin
        .delete(&format!("/v1/apps/hot/machines/{machine}"))
        .expect(204);
    assert_ended(&server, &login);

    let login = cached_session(&server);
    let key = login["machine"]["key_id"].as_str().expect("key id");
    admin
        .delete(&format!("/v1/apps/hot/keys/{key}"))
        .expect(204);
    assert_ended(&server, &login);

    let login = cached_session(&server);
    admin.delete("/v1/apps/hot").expect(204);
    assert_ended(&server, &login);
}

#[test]
fn a_cached_valid_verdict_changes_with_the_login_that_uses_the_key() {
    let server = TestServer::start();
    server.create_app("hot");
    let key = server.create_key("hot", json!({}));
    let secret = key["key"].as_str().expect("key");
    for _ in 0..3 {
        assert_eq!(verify(&server, secret)["valid"], true);
    }
    server.login(secret);
    assert_eq!(
        verify(&server, secret),
        json!({"valid": false, "code": "used"})
    );
}

#[test]
fn a_cached_valid_verdict_changes_with_revocation() {
    let server = TestServer::start();
    server.create_app("hot");
    let key = server.create_key("hot", json!({"reusable": true}));
    let secret = key["key"].as_str().expect("key");
    for _ in 0..3 {
        assert_eq!(verify(&server, secret)["valid"], true);
    }
    let id = key["id"].as_str().expect("id");
    server
        .admin()
        .delete(&format!("/v1/apps/hot/keys/{id}"))
        .expect(204);
    assert_eq!(
        verify(&server, secret),
        json!({"valid": false, "code": "revoked"})
    );
}

#[test]
fn a_cached_session_still_expires_on_time() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--ephemeral-ttl", "1")
            .arg("--sweep-interval", "3600"),
    );
    server.create_app("hot");
    let key = server.create_key("hot", json!({"ephemeral": true}));
    let session = session_of(&server.login(key["key"].as_str().expect("key")));
    whoami_cached(&server, &session);
    std::thread::sleep(Duration::from_millis(1100));
    server
        .client(Some(&session))
        .get("/v1/auth/whoami")
        .expect_error(401, "session_expired");
}

#[test]
fn whoami_shows_last_seen_within_a_sweep_interval_even_when_cached() {
    let server = TestServer::start_with(Options::default().arg("--sweep-interval", "1"));
    server.create_app("hot");
    let key = server.create_key("hot", json!({}));
    let session = session_of(&server.login(key["key"].as_str().expect("key")));
    let first = whoami_cached(&server, &session);
    assert_eq!(first["machine"]["last_seen_at"], Value::Null);
    wait_for("last_seen_at to appear", Duration::from_secs(5), || {
        whoami_cached(&server, &session)["machine"]["last_seen_at"].is_string()
    });
}

/// `--cache off`: every request reads the database, so a session deleted behind the server's
/// back (no invalidation: another process wrote the SQLite file) ends at once. With the cache
/// on, on SQLite, the same change stays unseen while the answer is cached: the contrast shows
/// that the test can tell the two apart.
#[test]
fn with_the_cache_off_every_request_reads_the_database() {
    let behind_the_back = |server: &TestServer, login: &Value| {
        let machine = login["machine"]["id"].as_str().expect("the machine's id");
        let deleted = server
            .db()
            .execute("DELETE FROM machines WHERE id = ?1", &[machine]);
        assert_eq!(deleted, 1);
    };
    let off = TestServer::start_with(Options::default().arg("--cache", "off"));
    off.create_app("hot");
    let login = cached_session(&off);
    behind_the_back(&off, &login);
    assert_ended(&off, &login);

    if store_for_this_test() == Store::Sqlite {
        let on = TestServer::start();
        on.create_app("hot");
        let login = cached_session(&on);
        behind_the_back(&on, &login);
        whoami(&on, &session_of(&login)).expect(200);
    }
}
