//! Keys that carry policy (API.md v2, "Key policy"): tags, metadata, use limits, session
//! lifetimes and idle timeouts, as created, echoed, judged at login and verify, and copied
//! into machines; every rule a 422 naming its field that changes nothing; `GET /v1/server`.

use crate::support::*;
use serde_json::{Value, json};

/// A server with app `ci`.
fn server_with_app() -> TestServer {
    let server = TestServer::start();
    server.create_app("ci");
    server
}

/// Every key of app `ci`, revoked ones included.
fn all_keys(server: &TestServer) -> Value {
    server
        .admin()
        .get("/v1/apps/ci/keys?include_revoked=true")
        .expect(200)["keys"]
        .clone()
}

/// Creating a key with `body` is 422 `invalid_field`, the message names `field`, and no key
/// was created.
#[track_caller]
fn refused(body: Value, field: &str) {
    let server = server_with_app();
    let before = all_keys(&server);
    let error = server
        .admin()
        .post("/v1/apps/ci/keys", &body)
        .expect_error(422, "invalid_field");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("`{field}`")),
        "{body}: {message} does not name {field}"
    );
    assert_eq!(all_keys(&server), before, "{body} changed something");
}

#[test]
fn tags_must_be_an_array_of_strings() {
    refused(json!({"tags": "tag:ci"}), "tags");
    refused(json!({"tags": [1]}), "tags");
}

#[test]
fn each_tag_matches_the_tag_pattern() {
    for bad in ["ci", "tag:", "tag:-ci", "tag:CI", "tag:c_i", "TAG:ci"] {
        refused(json!({"tags": ["tag:ok", bad]}), "tags");
    }
    refused(json!({"tags": [format!("tag:{}", "a".repeat(64))]}), "tags");
}

#[test]
fn at_most_16_tags() {
    let tags: Vec<String> = (0..17).map(|n| format!("tag:t{n}")).collect();
    refused(json!({"tags": tags}), "tags");
}

#[test]
fn tags_are_distinct() {
    refused(json!({"tags": ["tag:a", "tag:b", "tag:a"]}), "tags");
}

#[test]
fn metadata_is_a_json_object() {
    for bad in [json!([1]), json!("x"), json!(1), json!(true)] {
        refused(json!({"metadata": bad}), "metadata");
    }
}

#[test]
fn metadata_is_at_most_1_kib_serialized() {
    // {"k":"…"} is 8 bytes around the value.
    refused(json!({"metadata": {"k": "x".repeat(1017)}}), "metadata");
}

#[test]
fn max_uses_is_at_least_1() {
    refused(json!({"reusable": true, "max_uses": 0}), "max_uses");
    refused(json!({"reusable": true, "max_uses": -3}), "max_uses");
}

#[test]
fn max_uses_is_a_whole_number() {
    refused(json!({"reusable": true, "max_uses": 2.5}), "max_uses");
    refused(json!({"reusable": true, "max_uses": "5"}), "max_uses");
}

#[test]
fn a_single_use_key_allows_no_more_than_one_use() {
    refused(json!({"max_uses": 2}), "max_uses");
    refused(json!({"reusable": false, "max_uses": 5}), "max_uses");
}

#[test]
fn session_ttl_only_with_ephemeral() {
    refused(json!({"session_ttl": 3600}), "session_ttl");
    refused(
        json!({"ephemeral": false, "session_ttl": 3600}),
        "session_ttl",
    );
}

#[test]
fn session_ttl_is_a_minute_to_a_year() {
    for bad in [json!(59), json!(31_536_001), json!(0), json!("1h")] {
        refused(
            json!({"ephemeral": true, "session_ttl": bad}),
            "session_ttl",
        );
    }
}

#[test]
fn idle_timeout_is_a_minute_to_a_year() {
    for bad in [json!(59), json!(31_536_001), json!(-60), json!("30m")] {
        refused(json!({"idle_timeout": bad}), "idle_timeout");
    }
}

/// Every field at its bounds is accepted and echoed, in the order API.md lists them, on
/// creation, reading and listing; a key without them carries their empty values.
#[test]
fn a_key_echoes_its_policy_at_the_bounds() {
    let server = server_with_app();
    let tags: Vec<String> = (0..16).rev().map(|n| format!("tag:t{n:02}")).collect();
    let mut sorted = tags.clone();
    sorted.sort();
    let metadata = json!({"k": "x".repeat(1016)});
    assert_eq!(serde_json::to_string(&metadata).unwrap().len(), 1024);
    let created = server.create_key(
        "ci",
        json!({"reusable": true, "ephemeral": true, "tags": tags, "metadata": metadata,
               "max_uses": 9_007_199_254_740_991_i64, "session_ttl": 60,
               "idle_timeout": 31_536_000}),
    );
    let mut with_secret = KEY_FIELDS.to_vec();
    with_secret.push("key");
    let fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, with_secret, "every field, in order");
    assert_eq!(created["tags"], json!(sorted));
    assert_eq!(created["metadata"], metadata);
    assert_eq!(created["max_uses"], 9_007_199_254_740_991_i64);
    assert_eq!(created["uses_remaining"], 9_007_199_254_740_991_i64);
    assert_eq!(created["session_ttl"], 60);
    assert_eq!(created["idle_timeout"], 31_536_000);
    assert_eq!(created["rotated_from"], Value::Null);
    assert_eq!(created["rotated_to"], Value::Null);
    let id = created["id"].as_str().unwrap();
    let read = server
        .admin()
        .get(&format!("/v1/apps/ci/keys/{id}"))
        .expect(200);
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("key");
    assert_eq!(read, expected);
    assert_eq!(all_keys(&server), json!([expected]));

    let plain = server.create_key("ci", json!({}));
    for (field, empty) in [
        ("tags", json!([])),
        ("metadata", json!({})),
        ("max_uses", json!(1)),
        ("uses_remaining", json!(1)),
        ("session_ttl", Value::Null),
        ("idle_timeout", Value::Null),
    ] {
        assert_eq!(plain[field], empty, "{field}");
    }
    let unlimited = server.create_key("ci", json!({"reusable": true, "max_uses": null}));
    assert_eq!(
        (&unlimited["max_uses"], &unlimited["uses_remaining"]),
        (&Value::Null, &Value::Null)
    );
    let single = server.create_key("ci", json!({"reusable": false, "max_uses": 1}));
    assert_eq!(single["max_uses"], 1);
}

/// Verify's valid answer carries the key's tags, metadata and remaining uses, and never
/// consumes one.
#[test]
fn verify_shows_tags_metadata_and_uses_remaining() {
    let server = server_with_app();
    let key = server.create_key(
        "ci",
        json!({"reusable": true, "max_uses": 3, "tags": ["tag:b", "tag:a"],
               "metadata": {"team": "infra", "n": [1, 2]}}),
    );
    let secret = key["key"].as_str().unwrap();
    let answer = verify(&server, secret);
    assert_eq!(
        answer,
        json!({"valid": true, "app": "ci", "key_id": key["id"], "reusable": true,
               "ephemeral": false, "expires_at": null, "tags": ["tag:a", "tag:b"],
               "metadata": {"team": "infra", "n": [1, 2]}, "uses_remaining": 3})
    );
    // Cached from its second miss on; a login must not leave a stale count behind.
    for _ in 0..3 {
        assert_eq!(verify(&server, secret), answer);
    }
    server.login(secret);
    assert_eq!(verify(&server, secret)["uses_remaining"], 2);
    assert_eq!(
        verify(&server, secret)["uses_remaining"],
        2,
        "verify uses nothing"
    );
}

/// `GET /v1/server` tells any holder of the admin token the version and the real
/// `--ephemeral-ttl`; nobody else.
#[test]
fn the_server_endpoint_states_the_version_and_the_ephemeral_ttl() {
    let server = TestServer::start_with(Options::default().arg("--ephemeral-ttl", "1234"));
    assert_eq!(
        server.admin().get("/v1/server").expect(200),
        json!({"version": env!("CARGO_PKG_VERSION"), "ephemeral_ttl": 1234,
               "token": {"root": true, "scopes": crate::scopes::SCOPES, "apps": null}})
    );
    server
        .anonymous()
        .get("/v1/server")
        .expect_error(401, "missing_credentials");
    server
        .client(Some("ens_not-a-session-token"))
        .get("/v1/server")
        .expect_error(401, "invalid_credentials");
    let default = TestServer::start();
    assert_eq!(
        default.admin().get("/v1/server").expect(200)["ephemeral_ttl"],
        3600
    );
}

/// A login is a use: `uses_remaining` counts down exactly, a used-up key refuses the next
/// login with `auth_key_used` and verifies as `used`, and its machines stay logged in.
#[test]
fn each_login_uses_one_use_until_none_is_left() {
    let server = server_with_app();
    let key = server.create_key("ci", json!({"reusable": true, "max_uses": 3}));
    let secret = key["key"].as_str().unwrap();
    let path = format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap());
    let mut sessions = Vec::new();
    for remaining in [2, 1, 0] {
        sessions.push(session_of(&server.login(secret)));
        let read = server.admin().get(&path).expect(200);
        assert_eq!(read["uses_remaining"], remaining);
        assert_eq!(read["uses"], 3 - remaining);
    }
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": secret}))
        .expect_error(401, "auth_key_used");
    assert_eq!(
        verify(&server, secret),
        json!({"valid": false, "code": "used"})
    );
    let read = server.admin().get(&path).expect(200);
    assert_eq!((&read["uses"], &read["machines"]), (&json!(3), &json!(3)));
    for session in &sessions {
        whoami(&server, session).expect(200);
    }
}

/// A machine carries its key's tags and metadata from its login on: in the login answer,
/// whoami (cached or not) and the machines list.
#[test]
fn machines_copy_the_keys_tags_and_metadata_at_login() {
    let server = server_with_app();
    let key = server.create_key(
        "ci",
        json!({"reusable": true, "tags": ["tag:prod", "tag:ci"], "metadata": {"pool": "arm64"}}),
    );
    let login = server.login(key["key"].as_str().unwrap());
    let machine = &login["machine"];
    assert_eq!(machine["tags"], json!(["tag:ci", "tag:prod"]));
    assert_eq!(machine["metadata"], json!({"pool": "arm64"}));
    assert_eq!(machine["trust_policy_id"], Value::Null);
    assert_eq!(machine["idle_expires_at"], Value::Null);
    let session = session_of(&login);
    for _ in 0..3 {
        let identity = whoami(&server, &session).expect(200);
        assert_eq!(identity["machine"]["tags"], machine["tags"]);
        assert_eq!(identity["machine"]["metadata"], machine["metadata"]);
    }
    let listed = server.admin().get("/v1/apps/ci/machines").expect(200);
    assert_eq!(listed["machines"][0]["tags"], machine["tags"]);
    assert_eq!(listed["machines"][0]["metadata"], machine["metadata"]);
}

/// An ephemeral key's `session_ttl` replaces the server's `--ephemeral-ttl` for its machines;
/// without one, the server's applies.
#[test]
fn session_ttl_sets_how_long_an_ephemeral_keys_machines_live() {
    let server = server_with_app();
    let lifetime = |body: Value| -> i64 {
        let key = server.create_key("ci", body);
        let machine = server.login(key["key"].as_str().unwrap())["machine"].clone();
        millis(&machine["expires_at"]) - millis(&machine["created_at"])
    };
    assert_eq!(
        lifetime(json!({"ephemeral": true, "session_ttl": 90})),
        90_000
    );
    assert_eq!(lifetime(json!({"ephemeral": true})), 3_600_000);
    assert_eq!(
        lifetime(json!({"ephemeral": true, "session_ttl": 31_536_000})),
        31_536_000_000
    );
}

/// A short `session_ttl` (through the hidden test knob) is enforced like the server's own:
/// refused once it has passed, cached or not, with the sweeper off.
#[test]
fn a_machine_is_refused_once_its_keys_session_ttl_has_passed() {
    let server = TestServer::start_with(quick_timeouts());
    server.create_app("ci");
    let key = server.create_key("ci", json!({"ephemeral": true, "session_ttl": 1}));
    let login = server.login(key["key"].as_str().unwrap());
    let session = session_of(&login);
    for _ in 0..3 {
        whoami(&server, &session).expect(200);
    }
    sleep_until_millis(millis(&login["machine"]["expires_at"]) + 50);
    whoami(&server, &session).expect_error(401, "session_expired");
}

/// Flags for tests of idle timeouts and session lifetimes in seconds: keys may have timeouts
/// from 1 s, and the sweeper never runs (so only the per-request judgement is at work, and no
/// usage stamp reaches the database).
fn quick_timeouts() -> Options {
    Options::default()
        .arg("--min-key-timeout-secs", "1")
        .arg("--sweep-interval-ms", "3600000")
}

fn millis(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn sleep_until_millis(at: i64) {
    let wait = at - now_millis();
    if wait > 0 {
        std::thread::sleep(std::time::Duration::from_millis(wait as u64));
    }
}

/// Idle timeout, to the second, with the sweeper off: every authenticated request (whoami,
/// forward auth) restarts the clock although nothing is written (the stamps stay in memory:
/// `last_seen_at` is still null in the database), and once the timeout has passed since the
/// last one the machine is refused, its cached session included, and stays refused.
#[test]
fn a_machine_idle_for_its_keys_idle_timeout_is_refused_on_its_next_request() {
    // The shortest timeout that still leaves each request a second of margin.
    const TIMEOUT_MS: i64 = 2_000;
    let server = TestServer::start_with(quick_timeouts());
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true, "idle_timeout": 2}));
    let login = server.login(key["key"].as_str().unwrap());
    let session = session_of(&login);
    let created = millis(&login["machine"]["created_at"]);
    assert_eq!(
        millis(&login["machine"]["idle_expires_at"]),
        created + TIMEOUT_MS
    );
    // Each request's own time lies between its sending and its answer: sent 1 s before the
    // deadline the previous request set at the latest, it is in time; sent after the deadline
    // the previous request set at the latest (its answer + the timeout), it is not.
    let mut sent = now_millis();
    let mut last_answer = sent;
    for round in 0..3 {
        // The first round's requests also fill the hot cache.
        sleep_until_millis(sent + TIMEOUT_MS - 1_000);
        sent = now_millis();
        if round % 2 == 0 {
            whoami(&server, &session).expect(200);
        } else {
            let reply = server.client(Some(&session)).get("/v1/forward-auth");
            assert_eq!(reply.status, 200, "{}", server.log());
        }
        whoami(&server, &session).expect(200);
        last_answer = now_millis();
    }
    // On PostgreSQL an idle-limited machine's stamps are written every second (another node
    // must see the activity to judge idleness), so only SQLite keeps them all in memory.
    if let db @ Db::Sqlite(_) = server.db() {
        let stored = db
            .row("SELECT last_seen_at FROM machines", &[])
            .expect("the machine's row")[0]
            .as_i64();
        assert_eq!(stored, None, "no request wrote anything");
    }
    assert!(
        now_millis() > created + TIMEOUT_MS,
        "past the login's own deadline"
    );
    sleep_until_millis(last_answer + TIMEOUT_MS + 100);
    whoami(&server, &session).expect_error(401, "session_expired");
    let reply = server.client(Some(&session)).get("/v1/forward-auth");
    assert_eq!(reply.status, 401);
    whoami(&server, &session).expect_error(401, "session_expired");
}

/// The sweeper logs out machines idle past their timeout (their rows go), and spares one that
/// keeps making requests although its stamps have not reached the database between sweeps.
#[test]
fn the_sweeper_logs_out_idle_machines_and_spares_active_ones() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--min-key-timeout-secs", "1")
            .arg("--sweep-interval-ms", "100"),
    );
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true, "idle_timeout": 2}));
    let secret = key["key"].as_str().unwrap();
    let idle = server.login(secret);
    let active = session_of(&server.login(secret));
    let start = now_millis();
    let rows = || server.db().strings("SELECT id FROM machines", &[]);
    let idle_id = idle["machine"]["id"].as_str().unwrap().to_string();
    // At least twice the timeout, and until the idle machine is gone (a loaded machine's
    // sweeps come late).
    while now_millis() < start + 4_500 || rows().contains(&idle_id) {
        assert!(
            now_millis() < start + 30_000,
            "the idle machine was never swept"
        );
        whoami(&server, &active).expect(200);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let rows = rows();
    let active_id = whoami(&server, &active).expect(200)["machine"]["id"].clone();
    assert_eq!(json!(rows), json!([active_id]), "{}", server.log());
    let listed = server.admin().get("/v1/apps/ci/machines").expect(200);
    assert_eq!(listed["machines"].as_array().unwrap().len(), 1);
    assert_ne!(listed["machines"][0]["id"], idle["machine"]["id"]);
    let key = server
        .admin()
        .get(&format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap()))
        .expect(200);
    assert_eq!(key["machines"], 1);
}

// ---------------------------------------------------------------------------------------------
// Rotation

fn rotate(server: &TestServer, key: &Value, body: Value) -> Reply {
    let path = format!("/v1/apps/ci/keys/{}/rotate", key["id"].as_str().unwrap());
    server.admin().post(&path, &body)
}

fn read_key(server: &TestServer, key: &Value) -> Value {
    let path = format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap());
    server.admin().get(&path).expect(200)
}

/// The new key has the old one's settings and lifetime from now, is shown once with its
/// secret, and works; the old one links to it, works until now + grace, and its machines
/// stay logged in past that.
#[test]
fn rotation_copies_the_key_and_gives_the_old_one_a_grace_period() {
    let server = TestServer::start_with(quick_timeouts());
    server.create_app("ci");
    let old = server.create_key(
        "ci",
        json!({"description": "fleet", "reusable": true, "ephemeral": true, "expires_in": 7200,
               "tags": ["tag:ci"], "metadata": {"pool": "a"}, "max_uses": 5,
               "session_ttl": 600, "idle_timeout": 300}),
    );
    let old_secret = old["key"].as_str().unwrap();
    let machine = session_of(&server.login(old_secret));
    let new = rotate(&server, &old, json!({"grace_seconds": 2})).expect(201);
    let new_secret = new["key"].as_str().unwrap();
    assert_ne!(new_secret, old_secret);
    assert_ne!(new["id"], old["id"]);
    for field in [
        "description",
        "reusable",
        "ephemeral",
        "tags",
        "metadata",
        "max_uses",
        "session_ttl",
        "idle_timeout",
    ] {
        assert_eq!(new[field], old[field], "{field}");
    }
    assert_eq!(
        (&new["uses"], &new["uses_remaining"], &new["machines"]),
        (&json!(0), &json!(5), &json!(0))
    );
    assert_eq!(new["rotated_from"], old["id"]);
    assert_eq!(new["rotated_to"], Value::Null);
    let rotated_at = millis(&new["created_at"]);
    assert_eq!(millis(&new["expires_at"]) - rotated_at, 7_200_000);

    let old_now = read_key(&server, &old);
    assert_eq!(old_now["rotated_to"], new["id"]);
    assert_eq!(old_now["rotated_from"], Value::Null);
    assert_eq!(millis(&old_now["expires_at"]), rotated_at + 2_000);
    assert_eq!(read_key(&server, &new)["rotated_from"], old["id"]);

    // Within the grace both keys log in; after it only the new one does.
    session_of(&server.login(old_secret));
    session_of(&server.login(new_secret));
    sleep_until_millis(rotated_at + 2_100);
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": old_secret}))
        .expect_error(401, "auth_key_expired");
    assert_eq!(verify(&server, old_secret)["code"], "expired");
    server.login(new_secret);
    whoami(&server, &machine).expect(200);
}

/// The old key's expiry only moves earlier; a key without an expiry gives one without; the
/// grace defaults to an hour; a grace of 0 ends the old key at once.
#[test]
fn rotation_grace_is_the_earlier_of_the_keys_expiry_and_now_plus_grace() {
    let server = server_with_app();
    let soon = server.create_key("ci", json!({"reusable": true, "expires_in": 60}));
    let new = rotate(&server, &soon, json!({"grace_seconds": 3600})).expect(201);
    assert_eq!(read_key(&server, &soon)["expires_at"], soon["expires_at"]);
    assert_eq!(
        millis(&new["expires_at"]) - millis(&new["created_at"]),
        60_000
    );

    let lasting = server.create_key("ci", json!({"reusable": true}));
    let new = rotate(&server, &lasting, json!({})).expect(201);
    assert_eq!(new["expires_at"], Value::Null);
    assert_eq!(
        millis(&read_key(&server, &lasting)["expires_at"]),
        millis(&new["created_at"]) + 3_600_000
    );

    let ended = server.create_key("ci", json!({}));
    let new = rotate(&server, &ended, json!({"grace_seconds": 0})).expect(201);
    assert_eq!(read_key(&server, &ended)["expires_at"], new["created_at"]);
    assert_eq!(
        verify(&server, ended["key"].as_str().unwrap())["code"],
        "expired"
    );
    // A single-use key rotates into a fresh single use.
    assert_eq!(
        (&new["max_uses"], &new["uses_remaining"]),
        (&json!(1), &json!(1))
    );
}

/// Only a live key rotates: revoked, expired and already rotated keys are 409 `key_inactive`;
/// unknown ones 404; a bad grace 422 naming it. None of these changes anything.
#[test]
fn rotating_an_inactive_key_is_409_and_bad_requests_change_nothing() {
    let server = server_with_app();
    let revoked = server.create_key("ci", json!({}));
    server
        .admin()
        .delete(&format!(
            "/v1/apps/ci/keys/{}",
            revoked["id"].as_str().unwrap()
        ))
        .expect(204);
    let expired = server.create_key("ci", json!({"expires_in": 1}));
    let rotated = server.create_key("ci", json!({}));
    rotate(&server, &rotated, json!({})).expect(201);
    sleep_until_millis(millis(&expired["expires_at"]) + 20);
    let before = all_keys(&server);
    for key in [&revoked, &expired, &rotated] {
        rotate(&server, key, json!({})).expect_error(409, "key_inactive");
    }
    rotate(&server, &json!({"id": "key_unknown"}), json!({})).expect_error(404, "key_not_found");
    server
        .admin()
        .post(
            &format!(
                "/v1/apps/nope/keys/{}/rotate",
                rotated["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .expect_error(404, "app_not_found");
    let live = server.create_key("ci", json!({}));
    let before_live = all_keys(&server);
    for bad in [json!(2_592_001), json!(-1), json!("1h"), json!(1.5)] {
        let error = rotate(&server, &live, json!({"grace_seconds": bad}))
            .expect_error(422, "invalid_field");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`grace_seconds`")
        );
    }
    rotate(&server, &live, json!({"grace": 5})).expect_error(422, "unknown_field");
    assert_eq!(all_keys(&server), before_live);
    assert_eq!(
        before_live.as_array().unwrap().len(),
        before.as_array().unwrap().len() + 1
    );
    rotate(&server, &live, json!({"grace_seconds": 2_592_000})).expect(201);
}
