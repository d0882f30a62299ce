//! Machine authentication against the real server: login with each type of auth key, whoami,
//! logout, verify, revocation (including under concurrent load), ephemeral expiry, key expiry
//! and the sweeper.

use crate::support::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const APP: &str = "fleet";
/// The four types of key: (reusable, ephemeral).
const KEY_TYPES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

// ---------------------------------------------------------------------------------------------
// Helpers: one place per boundary, so an interface change touches one function.

/// A server with the app `APP`.
fn server_with_app(options: Options) -> TestServer {
    let server = TestServer::start_with(options);
    server.create_app(APP);
    server
}

/// A server whose ephemeral machines live one second and whose sweeper runs every `sweep` s.
fn short_ttl_server(sweep: &str) -> TestServer {
    server_with_app(
        Options::default()
            .arg("--ephemeral-ttl", "1")
            .arg("--sweep-interval", sweep),
    )
}

/// An auth key as created: its id, its secret and the creation response.
struct Issued {
    id: String,
    secret: String,
    created: Value,
}

fn issue(server: &TestServer, body: Value) -> Issued {
    let created = server.create_key(APP, body);
    Issued {
        id: created["id"].as_str().expect("key has an id").to_string(),
        secret: created["key"]
            .as_str()
            .expect("key has a secret")
            .to_string(),
        created,
    }
}

fn issue_type(server: &TestServer, reusable: bool, ephemeral: bool) -> Issued {
    issue(
        server,
        json!({"reusable": reusable, "ephemeral": ephemeral}),
    )
}

/// A logged-in machine: its session token and the Machine the login returned.
#[derive(Clone)]
struct Session {
    token: String,
    machine: Value,
}

impl Session {
    fn id(&self) -> &str {
        self.machine["id"].as_str().expect("machine has an id")
    }
}

/// Logs in with `auth_key` (and a machine name when given); checks the response's shape.
fn login_as(server: &TestServer, auth_key: &str, name: Option<&str>) -> Session {
    let mut body = json!({"auth_key": auth_key});
    if let Some(name) = name {
        body["machine"] = json!(name);
    }
    let reply = server.anonymous().post("/v1/auth/login", &body).expect(201);
    assert_eq!(
        field_names(&reply),
        ["machine", "session_token"],
        "login response: {reply}"
    );
    let token = reply["session_token"]
        .as_str()
        .expect("session_token is a string");
    assert!(
        is_token("ens_", token),
        "session token {token:?} has the wrong shape"
    );
    assert!(
        !token.contains(auth_key),
        "the session token is not the auth key"
    );
    Session {
        token: token.to_string(),
        machine: reply["machine"].clone(),
    }
}

fn login(server: &TestServer, auth_key: &str) -> Session {
    login_as(server, auth_key, None)
}

/// Asserts that logging in with `auth_key` fails with 401 `code`, without echoing the key.
#[track_caller]
fn login_fails(server: &TestServer, auth_key: &str, code: &str) {
    let reply = server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": auth_key}))
        .expect_error(401, code);
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        auth_key.len() < 8 || !message.contains(auth_key),
        "the error message echoes the auth key: {message}"
    );
}

/// Asserts that verify calls `key` invalid for exactly `code`.
#[track_caller]
fn verify_says(server: &TestServer, key: &str, code: &str) {
    assert_eq!(
        verify(server, key),
        json!({"valid": false, "code": code}),
        "verify {key}"
    );
}

/// The exact answer verify must give for a valid key.
fn valid_verdict(key: &Issued) -> Value {
    json!({
        "valid": true,
        "app": APP,
        "key_id": key.id,
        "reusable": key.created["reusable"],
        "ephemeral": key.created["ephemeral"],
        "expires_at": key.created["expires_at"],
        "tags": key.created["tags"],
        "metadata": key.created["metadata"],
        // A key that can still log in one machine more has not used its last use.
        "uses_remaining": key.created["uses_remaining"],
    })
}

fn get_key(server: &TestServer, id: &str) -> Value {
    server
        .admin()
        .get(&format!("/v1/apps/{APP}/keys/{id}"))
        .expect(200)
}

fn list_keys(server: &TestServer, query: &str) -> Vec<Value> {
    let reply = server
        .admin()
        .get(&format!("/v1/apps/{APP}/keys{query}"))
        .expect(200);
    reply["keys"].as_array().expect("keys is an array").clone()
}

fn list_machines(server: &TestServer) -> Vec<Value> {
    let reply = server
        .admin()
        .get(&format!("/v1/apps/{APP}/machines"))
        .expect(200);
    reply["machines"]
        .as_array()
        .expect("machines is an array")
        .clone()
}

fn machine_ids(server: &TestServer) -> Vec<String> {
    let mut ids: Vec<String> = list_machines(server)
        .iter()
        .map(|machine| machine["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted_ids(sessions: &[&Session]) -> Vec<String> {
    let mut ids: Vec<String> = sessions.iter().map(|s| s.id().to_string()).collect();
    ids.sort();
    ids
}

/// Rows in the `machines` table, read straight from the database: the only way to tell a
/// machine that has expired (and no longer counts anywhere) from one the sweeper deleted.
fn machine_rows(server: &TestServer) -> i64 {
    server.db().scalar("SELECT count(*) FROM machines", &[])
}

/// Asserts every field of a Machine returned for a login made in `[before, after]` with `key`.
#[track_caller]
fn check_machine(
    machine: &Value,
    key: &Issued,
    name: Option<&str>,
    ttl_secs: Option<i64>,
    window: (i64, i64),
) {
    let names: Vec<&str> = field_names(machine);
    let mut expected = MACHINE_FIELDS.to_vec();
    expected.sort();
    assert_eq!(names, expected, "Machine fields: {machine}");
    let id = machine["id"].as_str().expect("id is a string");
    assert!(
        id.strip_prefix("mch_")
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())),
        "machine id {id:?}"
    );
    assert_eq!(machine["app"], APP, "{machine}");
    assert_eq!(machine["key_id"], key.id.as_str(), "{machine}");
    assert_eq!(machine["name"], json!(name), "{machine}");
    assert_eq!(machine["ephemeral"], key.created["ephemeral"], "{machine}");
    assert_eq!(machine["last_seen_at"], Value::Null, "{machine}");
    let created = millis(&machine["created_at"]);
    assert!(
        (window.0..=window.1).contains(&created),
        "created_at {} is outside the request's window {window:?}",
        machine["created_at"]
    );
    match ttl_secs {
        Some(ttl) => assert_eq!(
            millis(&machine["expires_at"]) - created,
            ttl * 1000,
            "ephemeral expires_at is created_at + TTL: {machine}"
        ),
        None => assert_eq!(machine["expires_at"], Value::Null, "{machine}"),
    }
}

fn field_names(object: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("{object} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    names
}

/// A contract time (RFC 3339, UTC, `Z`) as Unix milliseconds.
#[track_caller]
fn millis(time: &Value) -> i64 {
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("{time} is not a time string"));
    assert!(text.ends_with('Z'), "{text:?} is not UTC with a Z suffix");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text:?} is not RFC 3339: {err}"))
        .timestamp_millis()
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Sleeps until just past `time` (a contract time). Never long: callers use one-second TTLs.
fn sleep_past(time: &Value) {
    let wait = millis(time) + 100 - now_millis();
    assert!(wait <= 2500, "refusing to sleep {wait} ms");
    if wait > 0 {
        thread::sleep(Duration::from_millis(wait as u64));
    }
}

/// `prefix` + 30 random characters + their 6-character base62 CRC32, as the contract says.
fn token_with_checksum(prefix: &str, random: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    assert_eq!(random.len(), 30);
    let mut value = crc32fast::hash(random.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!(
        "{prefix}{random}{}",
        String::from_utf8(digits.to_vec()).unwrap()
    )
}

/// `^{prefix}[0-9A-Za-z]{36}$` with a valid checksum.
fn is_token(prefix: &str, token: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|body| {
        body.len() == 36
            && body.chars().all(|c| c.is_ascii_alphanumeric())
            && token_with_checksum(prefix, &body[..30]) == token
    })
}

fn flip_last_char(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    format!("{head}{}", if last == "a" { "b" } else { "a" })
}

// ---------------------------------------------------------------------------------------------
// Login

#[test]
fn login_returns_a_session_and_the_machine_and_counts_a_use_of_the_key() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": true}));
    let fresh = get_key(&server, &key.id);
    assert_eq!(
        (&fresh["uses"], &fresh["last_used_at"]),
        (&json!(0), &Value::Null)
    );

    let before = now_millis();
    let named = login_as(&server, &key.secret, Some("ci-runner-7"));
    let unnamed = login(&server, &key.secret);
    let after = now_millis();
    check_machine(
        &named.machine,
        &key,
        Some("ci-runner-7"),
        None,
        (before, after),
    );
    check_machine(&unnamed.machine, &key, None, None, (before, after));
    assert_ne!(named.id(), unnamed.id());
    assert_ne!(named.token, unnamed.token);

    let used = get_key(&server, &key.id);
    assert_eq!(used["uses"], 2, "{used}");
    assert_eq!(used["machines"], 2, "{used}");
    assert_eq!(
        used["last_used_at"], unnamed.machine["created_at"],
        "last_used_at is the time of the last login: {used}"
    );
    assert_eq!(
        list_machines(&server),
        [unnamed.machine.clone(), named.machine.clone()],
        "the listing shows the machines as logged in, newest first"
    );

    let app = server.admin().get(&format!("/v1/apps/{APP}")).expect(200);
    for session in [&named, &unnamed] {
        assert_eq!(
            whoami(&server, &session.token).expect(200),
            json!({"app": app, "machine": session.machine})
        );
    }
}

#[test]
fn ephemeral_logins_expire_one_ttl_after_login() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": true, "ephemeral": true}));
    let before = now_millis();
    let session = login_as(&server, &key.secret, Some("build-42"));
    let after = now_millis();
    check_machine(
        &session.machine,
        &key,
        Some("build-42"),
        Some(3600),
        (before, after),
    );
    assert_eq!(
        whoami(&server, &session.token).expect(200)["machine"],
        session.machine
    );
}

#[test]
fn failed_logins_are_401_with_the_reason_and_log_nothing_in() {
    let server = server_with_app(Options::default());
    let expiring = issue(&server, json!({"reusable": true, "expires_in": 1}));
    let revoked = issue(&server, json!({"reusable": true}));
    server
        .admin()
        .delete(&format!("/v1/apps/{APP}/keys/{}", revoked.id))
        .expect(204);
    let used = issue(&server, json!({}));
    let first = login(&server, &used.secret);
    let good = issue(&server, json!({"reusable": true}));
    let unknown = token_with_checksum("ena_", "abcdefghijklmnopqrstuvwxyz0123");
    // The helper makes well-formed keys: the server must see this one as unknown, not garbled.
    verify_says(&server, &unknown, "not_found");
    sleep_past(&expiring.created["expires_at"]);

    let cases: &[(&str, String, &str)] = &[
        ("unknown key", unknown.clone(), "invalid_auth_key"),
        ("empty", String::new(), "invalid_auth_key"),
        ("not a key", "not-a-key".into(), "invalid_auth_key"),
        ("too short", "ena_abc".into(), "invalid_auth_key"),
        ("too long", format!("{}x", good.secret), "invalid_auth_key"),
        (
            "session prefix",
            good.secret.replacen("ena_", "ens_", 1),
            "invalid_auth_key",
        ),
        (
            "wrong checksum",
            flip_last_char(&good.secret),
            "invalid_auth_key",
        ),
        (
            "wrong checksum, unknown",
            flip_last_char(&unknown),
            "invalid_auth_key",
        ),
        ("revoked", revoked.secret.clone(), "auth_key_revoked"),
        ("expired", expiring.secret.clone(), "auth_key_expired"),
        ("single-use, used", used.secret.clone(), "auth_key_used"),
        ("the session token", first.token.clone(), "invalid_auth_key"),
    ];
    for (what, auth_key, code) in cases {
        println!("case: {what}");
        login_fails(&server, auth_key, code);
    }
    assert_eq!(machine_ids(&server), [first.id().to_string()]);
    for (key, uses) in [(&expiring, 0), (&used, 1), (&good, 0)] {
        assert_eq!(get_key(&server, &key.id)["uses"], uses, "{}", key.id);
    }
    // The key whose checksum was tampered with is untouched and still logs in.
    login(&server, &good.secret);
}

#[test]
fn login_rejects_bad_bodies() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": true}));
    let secret = key.secret.as_str();
    let long_name = "m".repeat(101);
    let cases: &[(Value, u16, &str)] = &[
        (
            json!({"auth_key": secret, "machin": "x"}),
            422,
            "unknown_field",
        ),
        (json!({"authkey": secret}), 422, "unknown_field"),
        (json!({}), 422, "invalid_field"),
        (json!({"auth_key": 7}), 422, "invalid_field"),
        (
            json!({"auth_key": secret, "machine": ""}),
            422,
            "invalid_field",
        ),
        (
            json!({"auth_key": secret, "machine": long_name}),
            422,
            "invalid_field",
        ),
        (
            json!({"auth_key": secret, "machine": "a\nb"}),
            422,
            "invalid_field",
        ),
        (json!([secret]), 400, "malformed_body"),
    ];
    for (body, status, code) in cases {
        let reply = server
            .anonymous()
            .post("/v1/auth/login", body)
            .expect_error(*status, code);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(!message.contains(secret), "the key is echoed: {message}");
    }
    let reply = server.anonymous().post_raw(
        "/v1/auth/login",
        Some("text/plain"),
        br#"{"auth_key": "x"}"#,
    );
    reply.expect_error(415, "unsupported_media_type");
    // None of this counted as a login.
    assert_eq!(get_key(&server, &key.id)["uses"], 0);
    assert_eq!(list_machines(&server), Vec::<Value>::new());
    login_as(&server, secret, Some("m".repeat(100).as_str()));
}

#[test]
fn reusable_keys_log_in_many_machines_and_single_use_keys_exactly_one() {
    let server = server_with_app(Options::default());
    for (reusable, ephemeral) in KEY_TYPES {
        let case = format!("reusable={reusable} ephemeral={ephemeral}");
        let key = issue_type(&server, reusable, ephemeral);
        assert_eq!(verify(&server, &key.secret), valid_verdict(&key), "{case}");
        let attempts = 3;
        let mut sessions = Vec::new();
        for n in 0..attempts {
            let before = now_millis();
            if reusable || n == 0 {
                let session = login_as(&server, &key.secret, Some(&format!("m{n}")));
                let ttl = ephemeral.then_some(3600);
                let window = (before, now_millis());
                check_machine(&session.machine, &key, Some(&format!("m{n}")), ttl, window);
                sessions.push(session);
            } else {
                login_fails(&server, &key.secret, "auth_key_used");
            }
        }
        let expected = if reusable { attempts } else { 1 };
        let stored = get_key(&server, &key.id);
        assert_eq!(stored["uses"], expected, "{case}: {stored}");
        assert_eq!(stored["machines"], expected, "{case}: {stored}");
        for session in &sessions {
            whoami(&server, &session.token).expect(200);
        }
        let distinct: std::collections::HashSet<&str> = sessions.iter().map(Session::id).collect();
        assert_eq!(
            distinct.len(),
            sessions.len(),
            "{case}: machine ids are distinct"
        );
        if !reusable {
            verify_says(&server, &key.secret, "used");
        }
    }
    assert_eq!(list_machines(&server).len(), 3 + 3 + 1 + 1);
}

#[test]
fn of_64_concurrent_logins_with_a_single_use_key_exactly_one_succeeds() {
    const CLIENTS: usize = 64;
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": false}));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let api = server.anonymous();
            let barrier = Arc::clone(&barrier);
            let body = json!({"auth_key": key.secret, "machine": format!("racer-{n}")});
            thread::spawn(move || {
                barrier.wait();
                let reply = api.post("/v1/auth/login", &body);
                (reply.status, reply.json)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let winners: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, j)| j)
        .collect();
    let used = results
        .iter()
        .filter(|(status, json)| *status == 401 && json["error"]["code"] == "auth_key_used")
        .count();
    let others: Vec<&(u16, Value)> = results
        .iter()
        .filter(|(status, json)| {
            *status != 201 && !(*status == 401 && json["error"]["code"] == "auth_key_used")
        })
        .collect();
    assert_eq!(others, Vec::<&(u16, Value)>::new(), "unexpected answers");
    assert_eq!((winners.len(), used), (1, CLIENTS - 1), "{results:?}");

    let winner = winners[0];
    assert_eq!(list_machines(&server), [winner["machine"].clone()]);
    let stored = get_key(&server, &key.id);
    assert_eq!(
        (&stored["uses"], &stored["machines"]),
        (&json!(1), &json!(1)),
        "{stored}"
    );
    let token = winner["session_token"].as_str().unwrap();
    assert_eq!(
        whoami(&server, token).expect(200)["machine"],
        winner["machine"]
    );
    verify_says(&server, &key.secret, "used");
}

// ---------------------------------------------------------------------------------------------
// whoami and logout

#[test]
fn whoami_rejects_missing_and_invalid_credentials() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": true}));
    let session = login(&server, &key.secret);
    let unknown_session = token_with_checksum("ens_", "abcdefghijklmnopqrstuvwxyz0123");
    let admin_token = server.admin_token.clone();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("no header", None, "missing_credentials"),
        ("garbage", Some("garbage"), "invalid_credentials"),
        ("admin token", Some(&admin_token), "invalid_credentials"),
        (
            "unknown session",
            Some(&unknown_session),
            "invalid_credentials",
        ),
        (
            "bad checksum",
            Some(&flip_last_char(&session.token)),
            "invalid_credentials",
        ),
        ("auth key", Some(&key.secret), "invalid_credentials"),
    ];
    for (what, bearer, code) in cases {
        println!("case: {what}");
        server
            .client(*bearer)
            .get("/v1/auth/whoami")
            .expect_error(401, code);
    }
    whoami(&server, &session.token).expect(200);
}

#[test]
fn logout_ends_the_session_once() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": true}));
    let leaving = login(&server, &key.secret);
    let staying = login(&server, &key.secret);
    server
        .anonymous()
        .post("/v1/auth/logout", &json!({}))
        .expect_error(401, "missing_credentials");

    let reply = server
        .client(Some(&leaving.token))
        .post("/v1/auth/logout", &json!({}));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (204, ""),
        "{}",
        reply.request
    );
    whoami(&server, &leaving.token).expect_error(401, "invalid_credentials");
    server
        .client(Some(&leaving.token))
        .post("/v1/auth/logout", &json!({}))
        .expect_error(401, "invalid_credentials");

    whoami(&server, &staying.token).expect(200);
    assert_eq!(machine_ids(&server), [staying.id().to_string()]);
    let stored = get_key(&server, &key.id);
    assert_eq!(
        (&stored["uses"], &stored["machines"]),
        (&json!(2), &json!(1)),
        "{stored}"
    );
}

// ---------------------------------------------------------------------------------------------
// verify

#[test]
fn verify_reports_valid_keys_and_why_others_are_not() {
    let server = server_with_app(Options::default());
    let dated = issue(&server, json!({"reusable": true, "expires_in": 3600}));
    let used = issue(&server, json!({}));
    login(&server, &used.secret);
    let revoked = issue(&server, json!({"reusable": true}));
    let used_then_revoked = issue(&server, json!({}));
    login(&server, &used_then_revoked.secret);
    for key in [&revoked, &used_then_revoked] {
        server
            .admin()
            .delete(&format!("/v1/apps/{APP}/keys/{}", key.id))
            .expect(204);
    }
    let types: Vec<Issued> = KEY_TYPES
        .iter()
        .map(|&(reusable, ephemeral)| issue_type(&server, reusable, ephemeral))
        .collect();
    // Two seconds, issued just before its first verify, which must come before expiry on a
    // loaded machine.
    let expiring = issue(&server, json!({"expires_in": 2}));
    assert_eq!(verify(&server, &expiring.secret), valid_verdict(&expiring));
    sleep_past(&expiring.created["expires_at"]);

    for key in types.iter().chain([&dated]) {
        assert_eq!(
            verify(&server, &key.secret),
            valid_verdict(key),
            "{}",
            key.id
        );
    }
    assert_ne!(dated.created["expires_at"], Value::Null);

    let unknown = token_with_checksum("ena_", "ZYXWVUTSRQPONMLKJIHGFEDCBA9876");
    let cases: &[(&str, String, &str)] = &[
        ("empty", String::new(), "malformed"),
        ("not a key", "hello".into(), "malformed"),
        ("wrong checksum", flip_last_char(&dated.secret), "malformed"),
        (
            "session prefix",
            dated.secret.replacen("ena_", "ens_", 1),
            "malformed",
        ),
        ("unknown", unknown, "not_found"),
        ("revoked", revoked.secret.clone(), "revoked"),
        ("expired", expiring.secret.clone(), "expired"),
        ("used", used.secret.clone(), "used"),
        (
            "revocation outranks use",
            used_then_revoked.secret.clone(),
            "revoked",
        ),
    ];
    for (what, key, code) in cases {
        println!("case: {what}");
        verify_says(&server, key, code);
    }
}

#[test]
fn verify_never_consumes_a_single_use_key() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({"reusable": false}));
    for _ in 0..5 {
        assert_eq!(verify(&server, &key.secret), valid_verdict(&key));
    }
    let stored = get_key(&server, &key.id);
    assert_eq!(
        (&stored["uses"], &stored["machines"]),
        (&json!(0), &json!(0)),
        "{stored}"
    );
    let session = login(&server, &key.secret);
    whoami(&server, &session.token).expect(200);
    verify_says(&server, &key.secret, "used");
    assert_eq!(get_key(&server, &key.id)["uses"], 1);
}

#[test]
fn verify_rejects_bad_bodies() {
    let server = server_with_app(Options::default());
    let key = issue(&server, json!({}));
    let secret = key.secret.as_str();
    let cases: &[(Value, u16, &str)] = &[
        (json!({"key": secret, "extra": true}), 422, "unknown_field"),
        (json!({"auth_key": secret}), 422, "unknown_field"),
        (json!({}), 422, "invalid_field"),
        (json!({"key": null}), 422, "invalid_field"),
        (json!({"key": ["x"]}), 422, "invalid_field"),
        (json!("just a string"), 400, "malformed_body"),
    ];
    for (body, status, code) in cases {
        let reply = server
            .anonymous()
            .post("/v1/keys/verify", body)
            .expect_error(*status, code);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(!message.contains(secret), "the key is echoed: {message}");
    }
    server
        .anonymous()
        .post_raw("/v1/keys/verify", Some("application/json"), b"{\"key\": ")
        .expect_error(400, "malformed_body");
    server
        .anonymous()
        .post_raw("/v1/keys/verify", Some("text/plain"), b"{}")
        .expect_error(415, "unsupported_media_type");
    assert_eq!(verify(&server, secret), valid_verdict(&key));
}

// ---------------------------------------------------------------------------------------------
// Revocation

#[test]
fn revoking_a_key_logs_out_its_machines_at_once_and_spares_other_keys() {
    let server = server_with_app(Options::default());
    let doomed = issue(&server, json!({"reusable": true, "description": "doomed"}));
    let sessions: Vec<Session> = (0..3).map(|_| login(&server, &doomed.secret)).collect();
    let other = issue(&server, json!({"reusable": true, "description": "other"}));
    let survivor = login(&server, &other.secret);
    for session in sessions.iter().chain([&survivor]) {
        whoami(&server, &session.token).expect(200);
    }
    let everyone: Vec<&Session> = sessions.iter().chain([&survivor]).collect();
    assert_eq!(machine_ids(&server), sorted_ids(&everyone));

    let before = now_millis();
    let reply = server
        .admin()
        .delete(&format!("/v1/apps/{APP}/keys/{}", doomed.id));
    let after = now_millis();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (204, ""),
        "{}",
        reply.request
    );

    // The very next requests already see the revocation.
    for session in &sessions {
        whoami(&server, &session.token).expect_error(401, "invalid_credentials");
    }
    verify_says(&server, &doomed.secret, "revoked");
    login_fails(&server, &doomed.secret, "auth_key_revoked");
    assert_eq!(
        whoami(&server, &survivor.token).expect(200)["machine"],
        survivor.machine
    );
    assert_eq!(verify(&server, &other.secret), valid_verdict(&other));
    server
        .client(Some(&sessions[0].token))
        .post("/v1/auth/logout", &json!({}))
        .expect_error(401, "invalid_credentials");

    assert_eq!(machine_ids(&server), [survivor.id().to_string()]);
    let listed: Vec<Value> = list_keys(&server, "")
        .iter()
        .map(|k| k["id"].clone())
        .collect();
    assert_eq!(
        listed,
        [json!(other.id)],
        "revoked keys are hidden by default"
    );
    let all = list_keys(&server, "?include_revoked=true");
    let ids: Vec<&Value> = all.iter().map(|k| &k["id"]).collect();
    assert_eq!(ids, [&json!(other.id), &json!(doomed.id)], "newest first");
    let revoked = &all[1];
    let revoked_at = millis(&revoked["revoked_at"]);
    assert!(
        (before..=after).contains(&revoked_at),
        "revoked_at {revoked}"
    );
    assert_eq!(
        (&revoked["machines"], &revoked["uses"]),
        (&json!(0), &json!(3)),
        "{revoked}"
    );
    assert_eq!(
        (&all[0]["revoked_at"], &all[0]["machines"]),
        (&Value::Null, &json!(1)),
        "{}",
        all[0]
    );
    assert_eq!(get_key(&server, &doomed.id), *revoked);
    server
        .admin()
        .delete(&format!("/v1/apps/{APP}/keys/{}", doomed.id))
        .expect_error(404, "key_not_found");
}

#[test]
fn revoking_any_type_of_key_logs_its_machine_out() {
    let server = server_with_app(Options::default());
    let bystander = issue(&server, json!({"reusable": true, "ephemeral": true}));
    let bystander_session = login(&server, &bystander.secret);
    for (reusable, ephemeral) in KEY_TYPES {
        let case = format!("reusable={reusable} ephemeral={ephemeral}");
        let key = issue_type(&server, reusable, ephemeral);
        let session = login(&server, &key.secret);
        whoami(&server, &session.token).expect(200);
        server
            .admin()
            .delete(&format!("/v1/apps/{APP}/keys/{}", key.id))
            .expect(204);
        println!("case: {case}");
        whoami(&server, &session.token).expect_error(401, "invalid_credentials");
        verify_says(&server, &key.secret, "revoked");
        login_fails(&server, &key.secret, "auth_key_revoked");
        assert_eq!(get_key(&server, &key.id)["machines"], 0, "{case}");
        whoami(&server, &bystander_session.token).expect(200);
    }
    assert_eq!(machine_ids(&server), [bystander_session.id().to_string()]);
}

/// What one request of the load test saw.
#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted,
    Refused,
    Unexpected(String),
}

#[test]
fn no_request_started_after_a_revocation_returned_is_accepted() {
    const CLIENTS: usize = 8;
    // Every client keeps presenting revoked credentials, from one address: a stream of refused
    // credentials that the throttle would turn into 429s. This test is about revocation, so
    // the throttle is off.
    let server = server_with_app(Options::default().arg("--login-failures-burst", "0"));
    let doomed = issue(&server, json!({"reusable": true, "ephemeral": true}));
    let tokens: Vec<String> = (0..3)
        .map(|_| login(&server, &doomed.secret).token)
        .collect();
    let other = issue(&server, json!({"reusable": true}));
    let survivor = login(&server, &other.secret);

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
            let token = tokens[n % tokens.len()].clone();
            let session_api = server.client(Some(&token));
            let anonymous = server.anonymous();
            let secret = doomed.secret.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut round = n;
                while !stop.load(Ordering::SeqCst) {
                    round += 1;
                    let started = Instant::now();
                    let outcome = if round % 2 == 0 {
                        let reply = session_api.get("/v1/auth/whoami");
                        match (reply.status, reply.json["error"]["code"].as_str()) {
                            (200, _) => Outcome::Accepted,
                            (401, Some("invalid_credentials")) => Outcome::Refused,
                            _ => Outcome::Unexpected(format!(
                                "whoami {} {}",
                                reply.status, reply.body
                            )),
                        }
                    } else {
                        let reply = anonymous.post("/v1/keys/verify", &json!({"key": secret}));
                        match (reply.status, &reply.json) {
                            (200, json) if json["valid"] == true => Outcome::Accepted,
                            (200, json) if *json == json!({"valid": false, "code": "revoked"}) => {
                                Outcome::Refused
                            }
                            _ => Outcome::Unexpected(format!(
                                "verify {} {}",
                                reply.status, reply.body
                            )),
                        }
                    };
                    if outcome == Outcome::Accepted {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.push((started, outcome));
                }
                seen
            })
        })
        .collect();
    let bystander = {
        let (stop, api) = (Arc::clone(&stop), server.client(Some(&survivor.token)));
        thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                statuses.push(api.get("/v1/auth/whoami").status);
            }
            statuses
        })
    };

    wait_for("the clients to get going", Duration::from_secs(5), || {
        accepted.load(Ordering::SeqCst) >= 4 * CLIENTS
    });
    server
        .admin()
        .delete(&format!("/v1/apps/{APP}/keys/{}", doomed.id))
        .expect(204);
    let revoked = Instant::now();
    thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::SeqCst);

    let seen: Vec<(Instant, Outcome)> = clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let unexpected: Vec<&Outcome> = seen
        .iter()
        .map(|(_, outcome)| outcome)
        .filter(|outcome| matches!(outcome, Outcome::Unexpected(_)))
        .collect();
    assert_eq!(unexpected, Vec::<&Outcome>::new());
    let late: Vec<&Outcome> = seen
        .iter()
        .filter(|(started, _)| *started > revoked)
        .map(|(_, outcome)| outcome)
        .collect();
    assert!(
        late.len() >= CLIENTS,
        "only {} requests after the revocation",
        late.len()
    );
    let late_accepted = late.iter().filter(|o| ***o == Outcome::Accepted).count();
    assert_eq!(
        late_accepted,
        0,
        "{late_accepted} of {} requests started after DELETE returned were accepted",
        late.len()
    );
    let statuses = bystander.join().unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|status| *status == 200),
        "the other key's machine was refused: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry and the sweeper

#[test]
fn ephemeral_machines_expire_on_time_even_without_a_sweep() {
    let server = short_ttl_server("3600");
    let ephemeral = issue(&server, json!({"reusable": true, "ephemeral": true}));
    let plain = issue(&server, json!({"reusable": true}));
    let before = now_millis();
    let short = login_as(&server, &ephemeral.secret, Some("short-lived"));
    let window = (before, now_millis());
    check_machine(
        &short.machine,
        &ephemeral,
        Some("short-lived"),
        Some(1),
        window,
    );
    let lasting = login(&server, &plain.secret);
    assert_eq!(
        whoami(&server, &short.token).expect(200)["machine"],
        short.machine
    );
    assert_eq!(get_key(&server, &ephemeral.id)["machines"], 1);

    sleep_past(&short.machine["expires_at"]);
    whoami(&server, &short.token).expect_error(401, "session_expired");
    server
        .client(Some(&short.token))
        .post("/v1/auth/logout", &json!({}))
        .expect_error(401, "session_expired");
    assert_eq!(machine_ids(&server), [lasting.id().to_string()]);
    assert_eq!(get_key(&server, &ephemeral.id)["machines"], 0);
    assert_eq!(get_key(&server, &ephemeral.id)["uses"], 1);
    server
        .admin()
        .delete(&format!("/v1/apps/{APP}/machines/{}", short.id()))
        .expect_error(404, "machine_not_found");
    assert_eq!(
        machine_rows(&server),
        2,
        "the sweeper has not run: the row is still there"
    );

    assert_eq!(
        whoami(&server, &lasting.token).expect(200)["machine"],
        lasting.machine
    );
    // The key itself is fine: a new login gets a fresh second.
    let again = login(&server, &ephemeral.secret);
    whoami(&server, &again.token).expect(200);
}

#[test]
fn the_sweeper_deletes_expired_machines_and_writes_usage_stamps() {
    let server = short_ttl_server("1");
    let ephemeral = issue(&server, json!({"reusable": true, "ephemeral": true}));
    let plain = issue(&server, json!({"reusable": true}));
    let verified = issue(&server, json!({"reusable": true}));
    let expiring: Vec<Session> = (0..2).map(|_| login(&server, &ephemeral.secret)).collect();
    let lasting = login(&server, &plain.secret);
    assert_eq!(machine_rows(&server), 3);

    let before = now_millis();
    whoami(&server, &lasting.token).expect(200);
    assert_eq!(verify(&server, &verified.secret), valid_verdict(&verified));
    wait_for("usage stamps to be written", Duration::from_secs(4), || {
        let seen = list_machines(&server)
            .into_iter()
            .find(|m| m["id"] == lasting.id())
            .expect("the lasting machine is listed")["last_seen_at"]
            .clone();
        let used = get_key(&server, &verified.id)["last_used_at"].clone();
        !seen.is_null() && !used.is_null()
    });
    let after = now_millis();
    let seen = list_machines(&server)
        .into_iter()
        .find(|m| m["id"] == lasting.id())
        .unwrap();
    let used = get_key(&server, &verified.id);
    for stamp in [&seen["last_seen_at"], &used["last_used_at"]] {
        assert!(
            (before..=after).contains(&millis(stamp)),
            "stamp {stamp} not in the window"
        );
    }
    assert_eq!(used["uses"], 0, "verifying is not a use: {used}");

    wait_for(
        "expired machines to be deleted",
        Duration::from_secs(5),
        || machine_rows(&server) == 1,
    );
    for session in &expiring {
        // The row is gone, so the token is now simply unknown.
        whoami(&server, &session.token).expect_error(401, "invalid_credentials");
    }
    assert_eq!(machine_ids(&server), [lasting.id().to_string()]);
    assert_eq!(get_key(&server, &ephemeral.id)["machines"], 0);
    whoami(&server, &lasting.token).expect(200);
}

#[test]
fn an_expired_key_refuses_new_logins_but_keeps_its_machines() {
    let server = server_with_app(Options::default());
    // Two seconds, so that the login and verify below come before expiry on a loaded machine.
    let key = issue(&server, json!({"reusable": true, "expires_in": 2}));
    let created = millis(&key.created["created_at"]);
    assert_eq!(millis(&key.created["expires_at"]) - created, 2000);
    let session = login(&server, &key.secret);
    assert_eq!(verify(&server, &key.secret), valid_verdict(&key));

    sleep_past(&key.created["expires_at"]);
    login_fails(&server, &key.secret, "auth_key_expired");
    verify_says(&server, &key.secret, "expired");
    assert_eq!(
        whoami(&server, &session.token).expect(200)["machine"],
        session.machine
    );
    let stored = get_key(&server, &key.id);
    assert_eq!(
        (&stored["uses"], &stored["machines"], &stored["revoked_at"]),
        (&json!(1), &json!(1), &Value::Null),
        "{stored}"
    );
    assert_eq!(
        list_keys(&server, "").len(),
        1,
        "an expired key is still listed"
    );
    assert_eq!(machine_ids(&server), [session.id().to_string()]);
}
