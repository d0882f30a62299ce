//! The admin API over real HTTP: every admin endpoint of API.md, the exact shapes of App, Key
//! and Machine, every error code an admin request can reach, and the promises around them
//! (bad input changes nothing, deleting an app revokes and logs out, no secret is ever
//! echoed or logged).

use crate::support::*;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers: shapes, times, listings.

/// Parses a contract time: RFC 3339, UTC, with a `Z` suffix.
#[track_caller]
fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a time string"));
    assert!(text.ends_with('Z'), "{text} is not UTC with a Z suffix");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text} is not RFC 3339: {err}"))
        .with_timezone(&Utc)
}

/// Asserts that `value` is a time taken between `before` and `after` (the server may keep
/// only milliseconds, so `before` is rounded down to the millisecond).
#[track_caller]
fn assert_time_between(value: &Value, before: DateTime<Utc>, after: DateTime<Utc>) {
    let at = time(value);
    let before = before - TimeDelta::milliseconds(1);
    assert!(
        before <= at && at <= after,
        "{at} is not between {before} and {after}"
    );
}

/// Asserts that an object has exactly these fields, no more and no fewer.
#[track_caller]
fn assert_fields(value: &Value, expected: &[&str]) {
    let mut actual: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    actual.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(actual, expected, "fields of {value}");
}

/// Asserts an opaque id such as `key_3kTq…`: the prefix and then base62 characters.
#[track_caller]
fn assert_id(value: &Value, prefix: &str) -> String {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not an id string"));
    let rest = id
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{id} does not start with {prefix}"));
    assert!(
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id} is not {prefix} followed by base62"
    );
    id.to_string()
}

/// Asserts the auth-key format `^ena_[0-9A-Za-z]{36}$` and returns the key.
#[track_caller]
fn assert_auth_key(value: &Value) -> String {
    let key = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a key string"));
    let body = key
        .strip_prefix("ena_")
        .unwrap_or_else(|| panic!("{key} lacks the ena_ prefix"));
    assert!(
        body.len() == 36 && body.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{key} is not ena_ + 36 base62 characters"
    );
    key.to_string()
}

/// The display hint the contract defines for a key: prefix, first four, `…`, last four.
fn hint_of(key: &str) -> String {
    format!("ena_{}…{}", &key[4..8], &key[key.len() - 4..])
}

/// `value` with `field` removed.
fn without(value: &Value, field: &str) -> Value {
    let mut value = value.clone();
    value
        .as_object_mut()
        .expect("an object")
        .remove(field)
        .unwrap_or_else(|| panic!("{field} missing"));
    value
}

/// Asserts a 204 with an empty body.
#[track_caller]
fn expect_no_content(reply: Reply) {
    if reply.status != 204 || !reply.body.is_empty() {
        reply.fail("expected 204 with an empty body");
    }
}

/// Asserts a 2xx JSON reply and returns its body.
#[track_caller]
fn expect_json(reply: Reply, status: u16) -> Value {
    if reply.header("Content-Type") != Some("application/json") {
        reply.fail("expected Content-Type: application/json");
    }
    reply.expect(status)
}

fn key_ids(listing: &Value) -> Vec<String> {
    listing["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing} has no keys array"))
        .iter()
        .map(|key| key["id"].as_str().expect("key id").to_string())
        .collect()
}

fn machine_ids(listing: &Value) -> Vec<String> {
    let mut ids: Vec<String> = listing["machines"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing} has no machines array"))
        .iter()
        .map(|machine| machine["id"].as_str().expect("machine id").to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn app_ids(server: &TestServer) -> Vec<String> {
    let listing = expect_json(server.admin().get("/v1/apps"), 200);
    sorted(
        listing["apps"]
            .as_array()
            .unwrap_or_else(|| panic!("{listing} has no apps array"))
            .iter()
            .map(|app| app["id"].as_str().expect("app id").to_string())
            .collect(),
    )
}

/// Logs a machine in with a name; returns the login response.
fn login_named(server: &TestServer, auth_key: &str, name: &str) -> Value {
    server
        .anonymous()
        .post(
            "/v1/auth/login",
            &json!({"auth_key": auth_key, "machine": name}),
        )
        .expect(201)
}

fn machine_id_of(login: &Value) -> String {
    login["machine"]["id"]
        .as_str()
        .expect("machine id")
        .to_string()
}

/// Sends `body` to `path` and expects the error `status`/`code`; then checks that every
/// listing in `listings` reads exactly as before: bad input changes nothing.
#[track_caller]
fn check_rejected(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    status: u16,
    code: &str,
    listings: &[&str],
) {
    let admin = server.admin();
    let read = |listing: &&str| admin.get(listing).expect(200);
    let before: Vec<Value> = listings.iter().map(read).collect();
    admin
        .post_raw(path, content_type, body)
        .expect_error(status, code);
    let after: Vec<Value> = listings.iter().map(read).collect();
    assert_eq!(
        before,
        after,
        "POST {path} {} was rejected but changed a listing",
        String::from_utf8_lossy(body)
    );
}

const UNKNOWN_FIELD: (u16, &str) = (422, "unknown_field");
const INVALID_FIELD: (u16, &str) = (422, "invalid_field");
const MALFORMED_BODY: (u16, &str) = (400, "malformed_body");

/// A body-rejection case: the body and the status and code it must get.
type Rejection = (String, u16, &'static str);

fn unknown_field(body: &str) -> Rejection {
    (body.to_string(), UNKNOWN_FIELD.0, UNKNOWN_FIELD.1)
}

fn invalid_field(body: &str) -> Rejection {
    (body.to_string(), INVALID_FIELD.0, INVALID_FIELD.1)
}

fn malformed_body(body: &str) -> Rejection {
    (body.to_string(), MALFORMED_BODY.0, MALFORMED_BODY.1)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP, for what the harness client cannot send: other Authorization schemes and chunked
// bodies.

struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    #[track_caller]
    fn expect_error(&self, status: u16, code: &str, context: &str, server: &TestServer) {
        let json: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        let ok = self.status == status
            && json["error"]["code"] == code
            && json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
            && self.header("Content-Type") == Some("application/json")
            && (status != 401 || self.header("WWW-Authenticate") == Some("Bearer"));
        assert!(
            ok,
            "{context}: expected error {status} {code}\n--- response ---\n{} {:?}\n{}\n\
             --- server log ---\n{}",
            self.status,
            self.headers,
            self.body,
            server.log()
        );
    }
}

/// Sends `request` as-is on a fresh connection and reads the whole response. The server may
/// answer before reading the whole body (413), so write errors are ignored.
fn raw_exchange(server: &TestServer, request: &[u8]) -> RawReply {
    let address = server.url.strip_prefix("http://").expect("an http url");
    let mut stream = TcpStream::connect(address).expect("connecting to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a read timeout");
    let _ = stream.write_all(request);
    let _ = stream.flush();
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}\n{}", server.log()));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    RawReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A request with a Content-Length body and an optional Authorization header, sent raw.
fn raw_request(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> RawReply {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(authorization) = authorization {
        request.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    raw_exchange(server, &bytes)
}

// ---------------------------------------------------------------------------------------------
// Health.

#[test]
fn healthz_answers_ok_without_credentials() {
    let server = TestServer::start();
    let reply = server.anonymous().get("/healthz");
    assert_eq!(expect_json(reply, 200), json!({"status": "ok"}));
    let reply = server.admin().get("/healthz");
    assert_eq!(expect_json(reply, 200), json!({"status": "ok"}));
}

// ---------------------------------------------------------------------------------------------
// Apps.

#[test]
fn creating_an_app_returns_it_and_the_name_defaults_to_the_id() {
    let server = TestServer::start();
    let admin = server.admin();

    let before = Utc::now();
    let named = expect_json(
        admin.post("/v1/apps", &json!({"id": "my-app", "name": "My App"})),
        201,
    );
    let unnamed = expect_json(admin.post("/v1/apps", &json!({"id": "ci"})), 201);
    let null_name = expect_json(
        admin.post("/v1/apps", &json!({"id": "nul", "name": null})),
        201,
    );
    let after = Utc::now();

    for app in [&named, &unnamed, &null_name] {
        assert_fields(app, APP_FIELDS);
        assert_time_between(&app["created_at"], before, after);
    }
    assert_eq!(
        named,
        json!({"id": "my-app", "name": "My App", "created_at": named["created_at"]})
    );
    assert_eq!(
        unnamed,
        json!({"id": "ci", "name": "ci", "created_at": unnamed["created_at"]})
    );
    assert_eq!(null_name["name"], "nul");

    // GET of one app and the listing show exactly what creation returned.
    assert_eq!(expect_json(admin.get("/v1/apps/my-app"), 200), named);
    assert_eq!(expect_json(admin.get("/v1/apps/ci"), 200), unnamed);
    let listing = expect_json(admin.get("/v1/apps"), 200);
    assert_fields(&listing, &["apps", "next_cursor"]);
    let mut apps = listing["apps"].as_array().expect("apps array").clone();
    apps.sort_by_key(|app| app["id"].as_str().unwrap_or_default().to_string());
    assert_eq!(apps, vec![unnamed, named, null_name]);
}

#[test]
fn an_empty_server_lists_no_apps() {
    let server = TestServer::start();
    assert_eq!(
        expect_json(server.admin().get("/v1/apps"), 200),
        json!({"apps": [], "next_cursor": null})
    );
}

#[test]
fn app_ids_at_the_edges_of_the_pattern_are_accepted() {
    let server = TestServer::start();
    let longest = "a".repeat(63);
    let ids = ["a", "0", "a-", "0-9", "my-app-2", longest.as_str()];
    for id in ids {
        let app = expect_json(server.admin().post("/v1/apps", &json!({"id": id})), 201);
        assert_eq!(app["id"], id);
        let fetched = expect_json(server.admin().get(&format!("/v1/apps/{id}")), 200);
        assert_eq!(fetched, app);
    }
    let unicode = "é".repeat(100);
    let app = expect_json(
        server
            .admin()
            .post("/v1/apps", &json!({"id": "wide", "name": unicode})),
        201,
    );
    assert_eq!(app["name"], unicode);
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.push("wide".into());
    assert_eq!(app_ids(&server), sorted(expected));
}

#[test]
fn creating_an_existing_app_is_a_conflict_and_keeps_the_original() {
    let server = TestServer::start();
    let original = expect_json(
        server
            .admin()
            .post("/v1/apps", &json!({"id": "ci", "name": "Original"})),
        201,
    );
    for body in [json!({"id": "ci"}), json!({"id": "ci", "name": "Impostor"})] {
        check_rejected(
            &server,
            "/v1/apps",
            Some("application/json"),
            body.to_string().as_bytes(),
            409,
            "app_exists",
            &["/v1/apps"],
        );
    }
    assert_eq!(
        expect_json(server.admin().get("/v1/apps/ci"), 200),
        original
    );
}

#[test]
fn invalid_app_bodies_are_rejected_and_change_nothing() {
    let server = TestServer::start();
    server.create_app("existing");
    let long_name = "n".repeat(101);
    let cases: Vec<Rejection> = vec![
        // Unknown fields: never ignored.
        unknown_field(r#"{"id": "x", "nmae": "X"}"#),
        unknown_field(r#"{"id": "x", "Id": "y"}"#),
        unknown_field(r#"{"id": "x", "created_at": "2020-01-01T00:00:00Z"}"#),
        // Missing or wrongly typed fields.
        invalid_field("{}"),
        invalid_field(r#"{"name": "No Id"}"#),
        invalid_field(r#"{"id": null}"#),
        invalid_field(r#"{"id": 5}"#),
        invalid_field(r#"{"id": ["a"]}"#),
        invalid_field(r#"{"id": {"x": 1}}"#),
        invalid_field(r#"{"id": "x", "name": 5}"#),
        invalid_field(r#"{"id": "x", "name": true}"#),
        // Ids outside ^[a-z0-9][a-z0-9-]{0,62}$.
        invalid_field(r#"{"id": ""}"#),
        invalid_field(r#"{"id": "-a"}"#),
        invalid_field(r#"{"id": "A"}"#),
        invalid_field(r#"{"id": "My-App"}"#),
        invalid_field(r#"{"id": "my_app"}"#),
        invalid_field(r#"{"id": "my app"}"#),
        invalid_field(r#"{"id": " a"}"#),
        invalid_field(r#"{"id": "a\n"}"#),
        invalid_field(r#"{"id": "a.b"}"#),
        invalid_field(r#"{"id": "a/b"}"#),
        invalid_field(r#"{"id": "é"}"#),
        invalid_field(&json!({"id": "a".repeat(64)}).to_string()),
        // Names: empty, too long, control characters.
        invalid_field(r#"{"id": "x", "name": ""}"#),
        invalid_field(r#"{"id": "x", "name": "   "}"#),
        invalid_field(&json!({"id": "x", "name": long_name}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\u{0}b"}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\nb"}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\tb"}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\u{1b}[31mb"}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\u{7f}b"}).to_string()),
        invalid_field(&json!({"id": "x", "name": "a\u{9b}b"}).to_string()),
        // Not JSON, or not a JSON object.
        malformed_body(r#"{"id": "x","#),
        malformed_body(r#"{"id": "x""#),
        malformed_body(r#"{"id" "x"}"#),
        malformed_body(r#"{'id': 'x'}"#),
        malformed_body(r#"{"id": "x"} trailing"#),
        malformed_body(r#"{"id": "x"}{"id": "y"}"#),
        malformed_body(" "),
        malformed_body("null"),
        malformed_body("[]"),
        malformed_body(r#"[{"id": "x"}]"#),
        malformed_body(r#""x""#),
        malformed_body("42"),
        malformed_body("true"),
    ];
    for (body, status, code) in &cases {
        check_rejected(
            &server,
            "/v1/apps",
            Some("application/json"),
            body.as_bytes(),
            *status,
            code,
            &["/v1/apps"],
        );
    }
    // Invalid UTF-8 inside an otherwise well-formed object.
    check_rejected(
        &server,
        "/v1/apps",
        Some("application/json"),
        b"{\"id\": \"a\xffb\"}",
        400,
        "malformed_body",
        &["/v1/apps"],
    );
    assert_eq!(app_ids(&server), vec!["existing".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Keys.

#[test]
fn a_created_key_has_the_documented_shape_and_its_secret_is_shown_once() {
    let server = TestServer::start();
    server.create_app("ci");
    let admin = server.admin();

    let before = Utc::now();
    let created = expect_json(admin.post("/v1/apps/ci/keys", &json!({})), 201);
    let after = Utc::now();

    let mut fields = KEY_FIELDS.to_vec();
    fields.push("key");
    assert_fields(&created, &fields);
    let secret = assert_auth_key(&created["key"]);
    let id = assert_id(&created["id"], "key_");
    assert_time_between(&created["created_at"], before, after);
    assert_eq!(
        created,
        json!({
            "id": id,
            "app": "ci",
            "description": null,
            "reusable": false,
            "ephemeral": false,
            "hint": hint_of(&secret),
            "created_at": created["created_at"],
            "expires_at": null,
            "revoked_at": null,
            "last_used_at": null,
            "uses": 0,
            "machines": 0,
            "tags": [],
            "metadata": {},
            "max_uses": 1,
            "session_ttl": null,
            "idle_timeout": null,
            "uses_remaining": 1,
            "rotated_from": null,
            "rotated_to": null,
            "key": secret,
        })
    );

    // GET and both listings show the same key, without the secret anywhere in the body.
    let stored = without(&created, "key");
    let get = admin.get(&format!("/v1/apps/ci/keys/{id}"));
    assert!(!get.body.contains(&secret[4..]), "GET key shows the secret");
    assert_eq!(expect_json(get, 200), stored);
    for path in [
        "/v1/apps/ci/keys",
        "/v1/apps/ci/keys?include_revoked=true",
        "/v1/apps/ci/keys?include_revoked=false",
    ] {
        let listing = admin.get(path);
        assert!(
            !listing.body.contains(&secret[4..]),
            "{path} shows the secret"
        );
        assert_eq!(
            expect_json(listing, 200),
            json!({"keys": [stored], "next_cursor": null}),
            "{path}"
        );
    }
    // The secret is not kept anywhere the server can be asked for it, nor logged.
    let apps = admin.get("/v1/apps");
    assert!(!apps.body.contains(&secret[4..]));
    assert!(
        !server.log().contains(&secret[4..]),
        "the log shows the secret"
    );

    // Two keys never share a secret or an id.
    let second = server.create_key("ci", json!({}));
    assert_ne!(second["key"], created["key"]);
    assert_ne!(second["id"], created["id"]);
}

#[test]
fn a_key_without_a_body_gets_the_defaults() {
    let server = TestServer::start();
    server.create_app("ci");
    let created = expect_json(
        server.admin().send("POST", "/v1/apps/ci/keys", None, None),
        201,
    );
    assert_eq!(
        (
            &created["reusable"],
            &created["ephemeral"],
            &created["description"],
            &created["expires_at"]
        ),
        (&json!(false), &json!(false), &Value::Null, &Value::Null)
    );
    assert_auth_key(&created["key"]);
}

#[test]
fn key_options_are_stored_as_given() {
    let server = TestServer::start();
    server.create_app("ci");
    let description_200 = "d".repeat(200);
    let description_wide = "é✓".repeat(100);
    let ten_years = 10 * 365 * 24 * 3600;
    // (request body, expected description, reusable, ephemeral, expiry seconds)
    let cases: Vec<(Value, Value, bool, bool, Option<i64>)> = vec![
        (
            json!({"description": "ci", "reusable": false, "ephemeral": false, "expires_in": null}),
            json!("ci"),
            false,
            false,
            None,
        ),
        (json!({"reusable": true}), Value::Null, true, false, None),
        (json!({"ephemeral": true}), Value::Null, false, true, None),
        (
            json!({"reusable": true, "ephemeral": true, "expires_in": 3600}),
            Value::Null,
            true,
            true,
            Some(3600),
        ),
        (json!({"expires_in": 1}), Value::Null, false, false, Some(1)),
        (
            json!({"expires_in": ten_years}),
            Value::Null,
            false,
            false,
            Some(ten_years),
        ),
        (
            json!({"description": null}),
            Value::Null,
            false,
            false,
            None,
        ),
        (
            json!({"description": description_200}),
            json!(description_200),
            false,
            false,
            None,
        ),
        (
            json!({"description": description_wide}),
            json!(description_wide),
            false,
            false,
            None,
        ),
    ];
    for (body, description, reusable, ephemeral, expires_in) in cases {
        let created = server.create_key("ci", body.clone());
        let context = format!("{body} -> {created}");
        assert_eq!(created["description"], description, "{context}");
        assert_eq!(created["reusable"], reusable, "{context}");
        assert_eq!(created["ephemeral"], ephemeral, "{context}");
        match expires_in {
            None => assert_eq!(created["expires_at"], Value::Null, "{context}"),
            Some(secs) => assert_eq!(
                time(&created["expires_at"]) - time(&created["created_at"]),
                TimeDelta::seconds(secs),
                "{context}"
            ),
        }
        let id = created["id"].as_str().expect("key id");
        let stored = expect_json(server.admin().get(&format!("/v1/apps/ci/keys/{id}")), 200);
        assert_eq!(stored, without(&created, "key"), "{context}");
    }
}

#[test]
fn invalid_key_bodies_are_rejected_and_change_nothing() {
    let server = TestServer::start();
    server.create_app("ci");
    server.create_key("ci", json!({"description": "existing"}));
    let long_description = "d".repeat(201);
    let cases: Vec<Rejection> = vec![
        // Unknown fields: a typo must never be silently ignored.
        unknown_field(r#"{"reuseable": true}"#),
        unknown_field(r#"{"reusable": true, "ephemeal": true}"#),
        unknown_field(r#"{"Reusable": true}"#),
        unknown_field(r#"{"expires_at": "2030-01-01T00:00:00Z"}"#),
        unknown_field(r#"{"app": "other"}"#),
        unknown_field(r#"{"id": "key_mine"}"#),
        unknown_field(r#"{"uses": 0}"#),
        // Wrong types.
        invalid_field(r#"{"reusable": "true"}"#),
        invalid_field(r#"{"reusable": 1}"#),
        invalid_field(r#"{"reusable": null}"#),
        invalid_field(r#"{"ephemeral": "yes"}"#),
        invalid_field(r#"{"ephemeral": 0}"#),
        invalid_field(r#"{"description": 5}"#),
        invalid_field(r#"{"description": ["ci"]}"#),
        // expires_in: whole seconds, at least 1, not absurd.
        invalid_field(r#"{"expires_in": 0}"#),
        invalid_field(r#"{"expires_in": -1}"#),
        invalid_field(r#"{"expires_in": -3600}"#),
        invalid_field(r#"{"expires_in": 1.5}"#),
        invalid_field(r#"{"expires_in": 0.5}"#),
        invalid_field(r#"{"expires_in": "60"}"#),
        invalid_field(r#"{"expires_in": true}"#),
        invalid_field(r#"{"expires_in": [60]}"#),
        invalid_field(r#"{"expires_in": 1e100}"#),
        invalid_field(r#"{"expires_in": 9223372036854775807}"#),
        invalid_field(r#"{"expires_in": 18446744073709551615}"#),
        invalid_field(r#"{"expires_in": 18446744073709551616}"#),
        invalid_field(r#"{"expires_in": 99999999999999999999999999999999}"#),
        // Descriptions: empty, too long, control characters.
        invalid_field(r#"{"description": ""}"#),
        invalid_field(r#"{"description": "  "}"#),
        invalid_field(&json!({"description": long_description}).to_string()),
        invalid_field(&json!({"description": "a\u{0}b"}).to_string()),
        invalid_field(&json!({"description": "line\nbreak"}).to_string()),
        invalid_field(&json!({"description": "carriage\rreturn"}).to_string()),
        invalid_field(&json!({"description": "bell\u{7}"}).to_string()),
        // Not JSON, or not a JSON object.
        malformed_body(r#"{"reusable": true"#),
        malformed_body(r#"{"reusable": tru}"#),
        malformed_body(r#"{"reusable": true,}"#),
        malformed_body("null"),
        malformed_body("[]"),
        malformed_body(r#"[{"reusable": true}]"#),
        malformed_body("3600"),
    ];
    let listings = ["/v1/apps/ci/keys?include_revoked=true", "/v1/apps"];
    for (body, status, code) in &cases {
        check_rejected(
            &server,
            "/v1/apps/ci/keys",
            Some("application/json"),
            body.as_bytes(),
            *status,
            code,
            &listings,
        );
    }
    check_rejected(
        &server,
        "/v1/apps/ci/keys",
        Some("application/json"),
        b"{\"description\": \"\xc3\x28\"}",
        400,
        "malformed_body",
        &listings,
    );
    let listing = expect_json(
        server.admin().get("/v1/apps/ci/keys?include_revoked=true"),
        200,
    );
    assert_eq!(listing["keys"].as_array().map(Vec::len), Some(1));
}

#[test]
fn keys_are_listed_newest_first_and_revoked_ones_only_when_asked() {
    let server = TestServer::start();
    server.create_app("ci");
    let admin = server.admin();
    let first = server.create_key("ci", json!({"description": "first"}));
    let second = server.create_key("ci", json!({"description": "second"}));
    let third = server.create_key("ci", json!({"description": "third"}));
    let id = |key: &Value| key["id"].as_str().expect("key id").to_string();

    let all = vec![id(&third), id(&second), id(&first)];
    assert_eq!(
        key_ids(&expect_json(admin.get("/v1/apps/ci/keys"), 200)),
        all
    );

    let before = Utc::now();
    expect_no_content(admin.delete(&format!("/v1/apps/ci/keys/{}", id(&second))));
    let after = Utc::now();

    let active = vec![id(&third), id(&first)];
    assert_eq!(
        key_ids(&expect_json(admin.get("/v1/apps/ci/keys"), 200)),
        active
    );
    assert_eq!(
        key_ids(&expect_json(
            admin.get("/v1/apps/ci/keys?include_revoked=false"),
            200
        )),
        active
    );
    let with_revoked = expect_json(admin.get("/v1/apps/ci/keys?include_revoked=true"), 200);
    assert_eq!(key_ids(&with_revoked), all);

    // The revoked key is still readable, with its revocation time and nothing else changed.
    let revoked = expect_json(admin.get(&format!("/v1/apps/ci/keys/{}", id(&second))), 200);
    assert_time_between(&revoked["revoked_at"], before, after);
    let mut expected = without(&second, "key");
    expected["revoked_at"] = revoked["revoked_at"].clone();
    assert_eq!(revoked, expected);
    assert_eq!(with_revoked["keys"][1], expected);
    for key in [&first, &third] {
        assert_eq!(
            expect_json(admin.get(&format!("/v1/apps/ci/keys/{}", id(key))), 200),
            without(key, "key")
        );
    }

    // It no longer verifies; the others still do.
    let secret = |key: &Value| key["key"].as_str().expect("secret").to_string();
    assert_eq!(
        verify(&server, &secret(&second)),
        json!({"valid": false, "code": "revoked"})
    );
    assert_eq!(verify(&server, &secret(&first))["valid"], true);
    assert_eq!(verify(&server, &secret(&third))["valid"], true);
}

#[test]
fn revoking_a_key_logs_out_its_machines_at_once() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true}));
    let other = server.create_key("ci", json!({"reusable": true}));
    let secret = key["key"].as_str().expect("secret");
    let sessions: Vec<String> = (0..2).map(|_| session_of(&server.login(secret))).collect();
    let survivor = session_of(&server.login(other["key"].as_str().expect("secret")));

    let id = key["id"].as_str().expect("key id");
    expect_no_content(server.admin().delete(&format!("/v1/apps/ci/keys/{id}")));
    for session in &sessions {
        whoami(&server, session).expect_error(401, "invalid_credentials");
    }
    whoami(&server, &survivor).expect(200);
    let listing = expect_json(server.admin().get("/v1/apps/ci/machines"), 200);
    assert_eq!(listing["machines"].as_array().map(Vec::len), Some(1));
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": secret}))
        .expect_error(401, "auth_key_revoked");
}

// ---------------------------------------------------------------------------------------------
// Not found, wrong method, credentials, queries, bodies.

#[test]
fn unknown_apps_keys_and_machines_are_not_found_with_their_own_codes() {
    let server = TestServer::start();
    server.create_app("ci");
    server.create_app("other");
    let admin = server.admin();
    let ci_key = server.create_key("ci", json!({"reusable": true}));
    let ci_key_id = ci_key["id"].as_str().expect("key id").to_string();
    let ci_machine = server.login(ci_key["key"].as_str().expect("secret"));
    let ci_machine_id = machine_id_of(&ci_machine);

    // Every path under an app that does not exist: app_not_found, even with real ids.
    let ghost_cases = [
        ("GET", "/v1/apps/ghost".to_string()),
        ("DELETE", "/v1/apps/ghost".to_string()),
        ("GET", "/v1/apps/ghost/keys".to_string()),
        (
            "GET",
            "/v1/apps/ghost/keys?include_revoked=true".to_string(),
        ),
        ("POST", "/v1/apps/ghost/keys".to_string()),
        ("GET", format!("/v1/apps/ghost/keys/{ci_key_id}")),
        ("DELETE", format!("/v1/apps/ghost/keys/{ci_key_id}")),
        ("GET", "/v1/apps/ghost/machines".to_string()),
        ("DELETE", format!("/v1/apps/ghost/machines/{ci_machine_id}")),
        // App ids are matched exactly: no case folding.
        ("GET", "/v1/apps/CI".to_string()),
    ];
    for (method, path) in &ghost_cases {
        let body = (*method == "POST").then(|| b"{}".to_vec());
        admin
            .send(method, path, Some("application/json"), body)
            .expect_error(404, "app_not_found");
    }

    // Keys and machines are scoped to their app.
    let key_cases = [
        ("GET", "/v1/apps/ci/keys/key_doesnotexist".to_string()),
        ("DELETE", "/v1/apps/ci/keys/key_doesnotexist".to_string()),
        ("GET", format!("/v1/apps/other/keys/{ci_key_id}")),
        ("DELETE", format!("/v1/apps/other/keys/{ci_key_id}")),
        ("GET", format!("/v1/apps/ci/keys/{ci_machine_id}")),
    ];
    for (method, path) in &key_cases {
        admin
            .send(method, path, None, None)
            .expect_error(404, "key_not_found");
    }
    let machine_cases = [
        "/v1/apps/ci/machines/mch_doesnotexist".to_string(),
        format!("/v1/apps/other/machines/{ci_machine_id}"),
        format!("/v1/apps/ci/machines/{ci_key_id}"),
    ];
    for path in &machine_cases {
        admin.delete(path).expect_error(404, "machine_not_found");
    }

    // None of that touched the real key or machine.
    let key = expect_json(admin.get(&format!("/v1/apps/ci/keys/{ci_key_id}")), 200);
    assert_eq!(key["revoked_at"], Value::Null);
    assert_eq!(key["machines"], 1);
    whoami(&server, &session_of(&ci_machine)).expect(200);
    assert_eq!(
        app_ids(&server),
        vec!["ci".to_string(), "other".to_string()]
    );
}

#[test]
fn revoking_a_key_twice_is_key_not_found() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({}));
    let path = format!("/v1/apps/ci/keys/{}", key["id"].as_str().expect("key id"));
    expect_no_content(server.admin().delete(&path));
    let revoked_at = expect_json(server.admin().get(&path), 200)["revoked_at"].clone();
    server
        .admin()
        .delete(&path)
        .expect_error(404, "key_not_found");
    // The second DELETE did not move the revocation time.
    assert_eq!(
        expect_json(server.admin().get(&path), 200)["revoked_at"],
        revoked_at
    );
}

#[test]
fn unknown_routes_are_not_found() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({}));
    let key_id = key["id"].as_str().expect("key id");
    let paths = [
        "/v1/apps/".to_string(),
        "/v1/apps/ci/".to_string(),
        "/v1/apps/ci/keys/".to_string(),
        format!("/v1/apps/ci/keys/{key_id}/"),
        "/v1/apps/ci/machines/".to_string(),
        "/healthz/".to_string(),
        "/v1/apps//keys".to_string(),
        format!("/v1/apps/ci/keys/{key_id}/extra"),
        "/v1/app".to_string(),
        "/v1/Apps".to_string(),
        "/v2/apps".to_string(),
        "/v1".to_string(),
        "/v1/keys".to_string(),
        "/v1/apps/ci/tokens".to_string(),
        "/nope".to_string(),
    ];
    for path in &paths {
        server.admin().get(path).expect_error(404, "not_found");
    }
    // A POST to a near-miss of a real route creates nothing.
    server
        .admin()
        .post("/v1/apps/", &json!({"id": "slash"}))
        .expect_error(404, "not_found");
    server
        .admin()
        .post("/v1/apps/ci/keys/", &json!({}))
        .expect_error(404, "not_found");
    assert_eq!(app_ids(&server), vec!["ci".to_string()]);
    let listing = expect_json(server.admin().get("/v1/apps/ci/keys"), 200);
    assert_eq!(key_ids(&listing), vec![key_id.to_string()]);
}

#[test]
fn wrong_methods_get_405_with_the_allowed_ones() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({}));
    let key_path = format!("/v1/apps/ci/keys/{}", key["id"].as_str().expect("key id"));
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("PUT", "/v1/apps".into(), &["GET", "POST"]),
        ("DELETE", "/v1/apps".into(), &["GET", "POST"]),
        ("PATCH", "/v1/apps".into(), &["GET", "POST"]),
        ("POST", "/v1/apps/ci".into(), &["GET", "DELETE"]),
        ("PUT", "/v1/apps/ci".into(), &["GET", "DELETE"]),
        ("PATCH", "/v1/apps/ci".into(), &["GET", "DELETE"]),
        ("DELETE", "/v1/apps/ci/keys".into(), &["GET", "POST"]),
        ("PUT", "/v1/apps/ci/keys".into(), &["GET", "POST"]),
        ("POST", key_path.clone(), &["GET", "DELETE"]),
        ("PATCH", key_path.clone(), &["GET", "DELETE"]),
        ("POST", "/v1/apps/ci/machines".into(), &["GET"]),
        ("DELETE", "/v1/apps/ci/machines".into(), &["GET"]),
        ("GET", "/v1/apps/ci/machines/mch_x".into(), &["DELETE"]),
        ("POST", "/v1/apps/ci/machines/mch_x".into(), &["DELETE"]),
        ("POST", "/healthz".into(), &["GET"]),
        ("DELETE", "/healthz".into(), &["GET"]),
    ];
    for (method, path, allowed) in &cases {
        let reply = server.admin().send(method, path, None, None);
        let allow = reply.header("Allow").map(str::to_string);
        let mut listed: Vec<String> = allow
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        listed.sort();
        let mut expected: Vec<String> = allowed.iter().map(|m| m.to_string()).collect();
        expected.sort();
        if listed != expected {
            reply.fail(&format!("{method} {path}: Allow should list {expected:?}"));
        }
        reply.expect_error(405, "method_not_allowed");
    }
    // None of the refused requests changed anything.
    assert_eq!(app_ids(&server), vec!["ci".to_string()]);
    assert_eq!(
        expect_json(server.admin().get(&key_path), 200)["revoked_at"],
        Value::Null
    );
}

#[test]
fn admin_endpoints_require_the_admin_token() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true}));
    let key_id = key["id"].as_str().expect("key id").to_string();
    let login = server.login(key["key"].as_str().expect("secret"));
    let session = session_of(&login);
    let machine_id = machine_id_of(&login);

    let endpoints: Vec<(&str, String, &[u8])> = vec![
        ("POST", "/v1/apps".into(), br#"{"id": "intruder"}"#),
        ("GET", "/v1/apps".into(), b""),
        ("GET", "/v1/apps/ci".into(), b""),
        ("DELETE", "/v1/apps/ci".into(), b""),
        ("POST", "/v1/apps/ci/keys".into(), br#"{"reusable": true}"#),
        ("GET", "/v1/apps/ci/keys".into(), b""),
        ("GET", "/v1/apps/ci/keys?include_revoked=true".into(), b""),
        ("GET", format!("/v1/apps/ci/keys/{key_id}"), b""),
        ("DELETE", format!("/v1/apps/ci/keys/{key_id}"), b""),
        ("GET", "/v1/apps/ci/machines".into(), b""),
        ("DELETE", format!("/v1/apps/ci/machines/{machine_id}"), b""),
    ];
    let admin_token = server.admin_token.clone();
    let basic = format!("Basic {admin_token}");
    let token_scheme = format!("Token {admin_token}");
    let longer = format!("Bearer {admin_token}x");
    let session_bearer = format!("Bearer {session}");
    let auth_key_bearer = format!("Bearer {}", key["key"].as_str().expect("secret"));
    // (Authorization header, expected code)
    let credentials: Vec<(Option<&str>, &str)> = vec![
        (None, "missing_credentials"),
        (Some("Bearer wrong-token"), "invalid_credentials"),
        (Some(&longer), "invalid_credentials"),
        (Some(&session_bearer), "invalid_credentials"),
        (Some(&auth_key_bearer), "invalid_credentials"),
        (Some(&basic), "invalid_credentials"),
        (Some(&token_scheme), "invalid_credentials"),
        (Some(&admin_token), "invalid_credentials"),
        (Some("Bearer"), "invalid_credentials"),
        (Some("Basic dXNlcjpwYXNz"), "invalid_credentials"),
    ];
    for (method, path, body) in &endpoints {
        for (authorization, code) in &credentials {
            let reply = raw_request(&server, method, path, *authorization, body);
            let context = format!("{method} {path} with Authorization {authorization:?}");
            reply.expect_error(401, code, &context, &server);
        }
        // The same through the harness client, for the plain cases.
        server
            .anonymous()
            .send(method, path, None, None)
            .expect_error(401, "missing_credentials");
        server
            .client(Some("wrong-token"))
            .send(method, path, None, None)
            .expect_error(401, "invalid_credentials");
    }

    // Nothing was done by any of them.
    assert_eq!(app_ids(&server), vec!["ci".to_string()]);
    let listing = expect_json(
        server.admin().get("/v1/apps/ci/keys?include_revoked=true"),
        200,
    );
    assert_eq!(key_ids(&listing), vec![key_id.clone()]);
    assert_eq!(listing["keys"][0]["revoked_at"], Value::Null);
    whoami(&server, &session).expect(200);

    // The scheme name is case-insensitive (RFC 9110), the token is not.
    let lower = raw_request(
        &server,
        "GET",
        "/v1/apps",
        Some(&format!("bearer {admin_token}")),
        b"",
    );
    assert_eq!(lower.status, 200, "lowercase bearer: {}", lower.body);
    let upper_token = admin_token.to_uppercase();
    if upper_token != admin_token {
        raw_request(
            &server,
            "GET",
            "/v1/apps",
            Some(&format!("Bearer {upper_token}")),
            b"",
        )
        .expect_error(401, "invalid_credentials", "upper-cased token", &server);
    }
    assert!(
        !server.log().contains(&admin_token),
        "the log shows the admin token"
    );
}

#[test]
fn query_parameters_are_checked_and_rejected_ones_change_nothing() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({}));
    let key_id = key["id"].as_str().expect("key id").to_string();
    let admin = server.admin();

    let cases: Vec<(&str, String)> = vec![
        ("GET", "/healthz?verbose=1".into()),
        ("GET", "/v1/apps?include_revoked=true".into()),
        ("GET", "/v1/apps/ci?x=1".into()),
        ("GET", "/v1/apps/ci/keys?include_revoked=maybe".into()),
        ("GET", "/v1/apps/ci/keys?include_revoked=".into()),
        ("GET", "/v1/apps/ci/keys?include_revoked=1".into()),
        (
            "GET",
            "/v1/apps/ci/keys?include_revoked=true&key_id=key_x".into(),
        ),
        ("GET", "/v1/apps/ci/machines?include_revoked=true".into()),
        ("GET", "/v1/apps/ci/keys?include-revoked=true".into()),
        ("GET", "/v1/apps/ci/keys?revoked=true".into()),
        (
            "GET",
            format!("/v1/apps/ci/keys/{key_id}?include_revoked=true"),
        ),
        ("GET", "/v1/apps/ci/machines?all=true".into()),
        // Refused writes must not happen.
        ("DELETE", "/v1/apps/ci?force=true".into()),
        ("DELETE", format!("/v1/apps/ci/keys/{key_id}?x=1")),
        ("DELETE", "/v1/apps/ci/machines/mch_x?x=1".into()),
    ];
    for (method, path) in &cases {
        admin
            .send(method, path, None, None)
            .expect_error(400, "invalid_query");
    }
    check_rejected(
        &server,
        "/v1/apps?dry_run=false",
        Some("application/json"),
        br#"{"id": "queried"}"#,
        400,
        "invalid_query",
        &["/v1/apps"],
    );
    check_rejected(
        &server,
        "/v1/apps/ci/keys?include_revoked=true",
        Some("application/json"),
        b"{}",
        400,
        "invalid_query",
        &["/v1/apps/ci/keys?include_revoked=true"],
    );
    assert_eq!(app_ids(&server), vec!["ci".to_string()]);
    let stored = expect_json(admin.get(&format!("/v1/apps/ci/keys/{key_id}")), 200);
    assert_eq!(stored, without(&key, "key"));
}

#[test]
fn bodies_must_be_json_when_there_is_one() {
    let server = TestServer::start();
    server.create_app("ci");
    let cases: Vec<(&str, Option<&str>, &[u8])> = vec![
        ("/v1/apps", Some("text/plain"), br#"{"id": "plain"}"#),
        ("/v1/apps", None, br#"{"id": "untyped"}"#),
        (
            "/v1/apps",
            Some("application/x-www-form-urlencoded"),
            b"id=form",
        ),
        (
            "/v1/apps",
            Some("multipart/form-data; boundary=x"),
            br#"{"id": "multi"}"#,
        ),
        ("/v1/apps", Some("text/json"), br#"{"id": "textjson"}"#),
        ("/v1/apps", Some("application/jsonx"), br#"{"id": "jsonx"}"#),
        (
            "/v1/apps",
            Some("application/json-patch+json"),
            br#"{"id": "patch"}"#,
        ),
        (
            "/v1/apps/ci/keys",
            Some("text/plain"),
            br#"{"reusable": true}"#,
        ),
        ("/v1/apps/ci/keys", None, br#"{"reusable": true}"#),
    ];
    let listings = ["/v1/apps", "/v1/apps/ci/keys?include_revoked=true"];
    for (path, content_type, body) in &cases {
        check_rejected(
            &server,
            path,
            *content_type,
            body,
            415,
            "unsupported_media_type",
            &listings,
        );
    }
    // Parameters and letter case of the media type do not matter.
    for (content_type, id) in [
        ("application/json; charset=utf-8", "charset"),
        ("Application/JSON", "upper"),
    ] {
        let body = json!({"id": id}).to_string();
        let reply = server
            .admin()
            .post_raw("/v1/apps", Some(content_type), body.as_bytes());
        assert_eq!(expect_json(reply, 201)["id"], id);
    }
}

#[test]
fn bodies_over_64_kib_are_refused_and_64_kib_exactly_is_read() {
    let server = TestServer::start();
    server.create_app("ci");
    /// `prefix`, padded with JSON whitespace to `len` bytes, then `}`.
    fn padded(prefix: &str, len: usize) -> Vec<u8> {
        let mut body = prefix.as_bytes().to_vec();
        body.resize(len - 1, b' ');
        body.push(b'}');
        assert_eq!(body.len(), len);
        body
    }
    let admin = server.admin();

    let exact = admin.post_raw(
        "/v1/apps",
        Some("application/json"),
        &padded(r#"{"id": "exact""#, 65536),
    );
    assert_eq!(expect_json(exact, 201)["id"], "exact");
    let exact_key = admin.post_raw(
        "/v1/apps/ci/keys",
        Some("application/json"),
        &padded(r#"{"reusable": true"#, 65536),
    );
    assert_eq!(expect_json(exact_key, 201)["reusable"], true);

    let listings = ["/v1/apps", "/v1/apps/ci/keys?include_revoked=true"];
    check_rejected(
        &server,
        "/v1/apps",
        Some("application/json"),
        &padded(r#"{"id": "over""#, 65537),
        413,
        "body_too_large",
        &listings,
    );
    check_rejected(
        &server,
        "/v1/apps/ci/keys",
        Some("application/json"),
        &padded(r#"{"reusable": true"#, 65537),
        413,
        "body_too_large",
        &listings,
    );
    // A much larger body, and one without a declared length (chunked), are refused too.
    check_rejected(
        &server,
        "/v1/apps",
        Some("application/json"),
        &padded(r#"{"id": "huge""#, 1024 * 1024),
        413,
        "body_too_large",
        &listings,
    );
    let body = padded(r#"{"id": "chunked""#, 65537);
    let mut request = format!(
        "POST /v1/apps HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        server.admin_token
    )
    .into_bytes();
    for chunk in body.chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    raw_exchange(&server, &request).expect_error(
        413,
        "body_too_large",
        "chunked 65537 bytes",
        &server,
    );

    assert_eq!(
        app_ids(&server),
        vec!["ci".to_string(), "exact".to_string()]
    );
    expect_json(server.anonymous().get("/healthz"), 200);
}

// ---------------------------------------------------------------------------------------------
// Deleting apps.

#[test]
fn deleting_an_app_revokes_its_keys_and_logs_out_its_machines() {
    let server = TestServer::start();
    let admin = server.admin();
    admin
        .post("/v1/apps", &json!({"id": "doomed", "name": "Doomed App"}))
        .expect(201);
    server.create_app("keeper");
    let reusable = server.create_key("doomed", json!({"reusable": true}));
    let unused = server.create_key("doomed", json!({}));
    let ephemeral = server.create_key("doomed", json!({"ephemeral": true, "reusable": true}));
    let secret = |key: &Value| key["key"].as_str().expect("secret").to_string();
    let doomed_logins = [
        server.login(&secret(&reusable)),
        login_named(&server, &secret(&reusable), "runner-2"),
        server.login(&secret(&ephemeral)),
    ];
    let keeper_key = server.create_key("keeper", json!({"reusable": true}));
    let keeper_login = server.login(&secret(&keeper_key));
    // Answered (and so cached) before the deletion.
    for login in &doomed_logins {
        let identity = expect_json(whoami(&server, &session_of(login)), 200);
        assert_eq!(identity["app"]["name"], "Doomed App");
    }

    expect_no_content(admin.delete("/v1/apps/doomed"));

    // The app is gone from every admin path.
    for path in [
        "/v1/apps/doomed",
        "/v1/apps/doomed/keys",
        "/v1/apps/doomed/keys?include_revoked=true",
        "/v1/apps/doomed/machines",
    ] {
        admin.get(path).expect_error(404, "app_not_found");
    }
    admin
        .delete("/v1/apps/doomed")
        .expect_error(404, "app_not_found");
    assert_eq!(app_ids(&server), vec!["keeper".to_string()]);

    // Its keys are revoked and its machines logged out.
    for key in [&reusable, &unused, &ephemeral] {
        assert_eq!(
            verify(&server, &secret(key)),
            json!({"valid": false, "code": "revoked"})
        );
        server
            .anonymous()
            .post("/v1/auth/login", &json!({"auth_key": secret(key)}))
            .expect_error(401, "auth_key_revoked");
    }
    for login in &doomed_logins {
        whoami(&server, &session_of(login)).expect_error(401, "invalid_credentials");
    }

    // Other apps are untouched.
    assert_eq!(verify(&server, &secret(&keeper_key))["valid"], true);
    let identity = expect_json(whoami(&server, &session_of(&keeper_login)), 200);
    assert_eq!(identity["app"]["id"], "keeper");
    let keeper_machines = expect_json(admin.get("/v1/apps/keeper/machines"), 200);
    assert_eq!(
        machine_ids(&keeper_machines),
        vec![machine_id_of(&keeper_login)]
    );

    // The id can be used again; the new app starts empty and does not see the old keys.
    let before = Utc::now();
    let reborn = expect_json(admin.post("/v1/apps", &json!({"id": "doomed"})), 201);
    assert_eq!(reborn["name"], "doomed");
    assert_time_between(&reborn["created_at"], before, Utc::now());
    for path in [
        "/v1/apps/doomed/keys",
        "/v1/apps/doomed/keys?include_revoked=true",
    ] {
        assert_eq!(
            expect_json(admin.get(path), 200),
            json!({"keys": [], "next_cursor": null}),
            "{path}"
        );
    }
    assert_eq!(
        expect_json(admin.get("/v1/apps/doomed/machines"), 200),
        json!({"machines": [], "next_cursor": null})
    );
    let old_key_path = format!(
        "/v1/apps/doomed/keys/{}",
        reusable["id"].as_str().expect("id")
    );
    admin.get(&old_key_path).expect_error(404, "key_not_found");
    admin
        .delete(&old_key_path)
        .expect_error(404, "key_not_found");
    let old_machine = format!(
        "/v1/apps/doomed/machines/{}",
        machine_id_of(&doomed_logins[0])
    );
    admin
        .delete(&old_machine)
        .expect_error(404, "machine_not_found");
    assert_eq!(
        verify(&server, &secret(&reusable)),
        json!({"valid": false, "code": "revoked"})
    );
    for login in &doomed_logins {
        whoami(&server, &session_of(login)).expect_error(401, "invalid_credentials");
    }

    // And it works like any new app.
    let fresh = server.create_key("doomed", json!({}));
    let identity = expect_json(
        whoami(&server, &session_of(&server.login(&secret(&fresh)))),
        200,
    );
    assert_eq!(identity["app"], reborn);
    assert_eq!(
        key_ids(&expect_json(
            admin.get("/v1/apps/doomed/keys?include_revoked=true"),
            200
        )),
        vec![fresh["id"].as_str().expect("id").to_string()]
    );
}

// ---------------------------------------------------------------------------------------------
// Machines.

#[test]
fn machines_listing_shows_active_machines_only() {
    let server = TestServer::start_with(Options::default().arg("--ephemeral-ttl", "1"));
    server.create_app("fleet");
    server.create_app("elsewhere");
    let admin = server.admin();
    assert_eq!(
        expect_json(admin.get("/v1/apps/fleet/machines"), 200),
        json!({"machines": [], "next_cursor": null})
    );
    let reusable = server.create_key("fleet", json!({"reusable": true}));
    let ephemeral = server.create_key("fleet", json!({"reusable": true, "ephemeral": true}));
    let to_revoke = server.create_key("fleet", json!({}));
    let elsewhere = server.create_key("elsewhere", json!({}));
    let secret = |key: &Value| key["key"].as_str().expect("secret").to_string();

    let before = Utc::now();
    let named = login_named(&server, &secret(&reusable), "runner-1");
    let unnamed = server.login(&secret(&reusable));
    let after = Utc::now();
    let leaving = server.login(&secret(&reusable));
    let short_lived = server.login(&secret(&ephemeral));
    let revoked = server.login(&secret(&to_revoke));
    server.login(&secret(&elsewhere));

    // The machine objects of the login responses are what the contract says.
    let reusable_id = reusable["id"].as_str().expect("key id");
    for (login, name) in [(&named, json!("runner-1")), (&unnamed, Value::Null)] {
        let machine = &login["machine"];
        assert_fields(machine, MACHINE_FIELDS);
        let id = assert_id(&machine["id"], "mch_");
        assert_time_between(&machine["created_at"], before, after);
        let last_seen = &machine["last_seen_at"];
        assert!(last_seen.is_null() || last_seen.is_string(), "{machine}");
        assert_eq!(
            machine,
            &json!({
                "id": id,
                "app": "fleet",
                "key_id": reusable_id,
                "name": name,
                "ephemeral": false,
                "created_at": machine["created_at"],
                "expires_at": null,
                "last_seen_at": last_seen,
                "tags": [],
                "metadata": {},
                "trust_policy_id": null,
                "idle_expires_at": null,
            })
        );
    }
    let short = &short_lived["machine"];
    assert_eq!(short["ephemeral"], true);
    assert_eq!(
        time(&short["expires_at"]) - time(&short["created_at"]),
        TimeDelta::seconds(1)
    );

    // End three of the five sessions in the three ways an admin listing must reflect.
    expect_no_content(server.client(Some(&session_of(&leaving))).send(
        "POST",
        "/v1/auth/logout",
        None,
        None,
    ));
    let revoke_path = format!(
        "/v1/apps/fleet/keys/{}",
        to_revoke["id"].as_str().expect("id")
    );
    expect_no_content(admin.delete(&revoke_path));
    eventually(
        "the ephemeral session to expire",
        Duration::from_secs(5),
        || {
            let reply = whoami(&server, &session_of(&short_lived));
            (reply.status == 401).then_some(reply)
        },
    )
    .expect_error(401, "session_expired");
    whoami(&server, &session_of(&revoked)).expect_error(401, "invalid_credentials");

    let listing = expect_json(admin.get("/v1/apps/fleet/machines"), 200);
    assert_fields(&listing, &["machines", "next_cursor"]);
    assert_eq!(
        machine_ids(&listing),
        sorted(vec![machine_id_of(&named), machine_id_of(&unnamed)])
    );
    for listed in listing["machines"].as_array().expect("machines") {
        let login = [&named, &unnamed]
            .into_iter()
            .find(|login| login["machine"]["id"] == listed["id"])
            .expect("a listed machine is one of ours");
        assert_fields(listed, MACHINE_FIELDS);
        // last_seen_at may lag the truth; everything else is exactly the login's answer.
        assert_eq!(
            without(listed, "last_seen_at"),
            without(&login["machine"], "last_seen_at")
        );
    }

    // Key counts agree: three logins with the reusable key, two still active.
    let reusable_now = expect_json(
        admin.get(&format!("/v1/apps/fleet/keys/{reusable_id}")),
        200,
    );
    assert_eq!(
        (&reusable_now["uses"], &reusable_now["machines"]),
        (&json!(3), &json!(2))
    );
    let ephemeral_id = ephemeral["id"].as_str().expect("key id");
    let ephemeral_now = expect_json(
        admin.get(&format!("/v1/apps/fleet/keys/{ephemeral_id}")),
        200,
    );
    assert_eq!(
        (&ephemeral_now["uses"], &ephemeral_now["machines"]),
        (&json!(1), &json!(0))
    );

    // An expired or logged-out machine cannot be logged out again.
    for login in [&short_lived, &leaving, &revoked] {
        admin
            .delete(&format!("/v1/apps/fleet/machines/{}", machine_id_of(login)))
            .expect_error(404, "machine_not_found");
    }
}

#[test]
fn deleting_a_machine_logs_out_that_machine_only() {
    let server = TestServer::start();
    server.create_app("fleet");
    server.create_app("other");
    let key = server.create_key("fleet", json!({"reusable": true}));
    let secret = key["key"].as_str().expect("secret");
    let target = server.login(secret);
    let bystander = server.login(secret);
    let other_key = server.create_key("other", json!({}));
    let outsider = server.login(other_key["key"].as_str().expect("secret"));
    let admin = server.admin();

    let path = format!("/v1/apps/fleet/machines/{}", machine_id_of(&target));
    expect_no_content(admin.delete(&path));

    whoami(&server, &session_of(&target)).expect_error(401, "invalid_credentials");
    let identity = expect_json(whoami(&server, &session_of(&bystander)), 200);
    assert_eq!(
        identity["machine"]["id"],
        machine_id_of(&bystander).as_str()
    );
    whoami(&server, &session_of(&outsider)).expect(200);
    let listing = expect_json(admin.get("/v1/apps/fleet/machines"), 200);
    assert_eq!(machine_ids(&listing), vec![machine_id_of(&bystander)]);
    admin.delete(&path).expect_error(404, "machine_not_found");

    // The key itself is untouched: still valid, counted once as used per login.
    let key_id = key["id"].as_str().expect("key id");
    let stored = expect_json(admin.get(&format!("/v1/apps/fleet/keys/{key_id}")), 200);
    assert_eq!(
        (&stored["revoked_at"], &stored["uses"], &stored["machines"]),
        (&Value::Null, &json!(2), &json!(1))
    );
    assert_eq!(verify(&server, secret)["valid"], true);
    let again = server.login(secret);
    whoami(&server, &session_of(&again)).expect(200);
}

// ---------------------------------------------------------------------------------------------
// Secrets.

/// Asserts the error `status`/`code` and that its body shows none of `secrets` (by their random
/// part: a hint may legitimately show four characters of each end).
#[track_caller]
fn check_secret_free(reply: Reply, secrets: &[&str], status: u16, code: &str) {
    if secrets
        .iter()
        .any(|secret| reply.body.contains(&secret[4..]))
    {
        reply.fail("the error message echoes a secret");
    }
    reply.expect_error(status, code);
}

/// Asserts that the server log shows none of `secrets`.
#[track_caller]
fn assert_log_secret_free(server: &TestServer, secrets: &[(&str, &str)]) {
    let log = server.log();
    assert!(!log.is_empty(), "the server logged nothing at debug level");
    for (what, secret) in secrets {
        assert!(!log.contains(secret), "the log shows the {what}:\n{log}");
    }
}

#[test]
fn error_messages_and_logs_never_contain_a_secret() {
    let server = TestServer::start();
    server.create_app("ci");
    let created = server.create_key("ci", json!({"reusable": true}));
    let key = created["key"].as_str().expect("secret").to_string();
    let session = session_of(&server.login(&key));
    let secrets = [key.as_str(), session.as_str()];
    let admin = server.admin();

    let keys = "/v1/apps/ci/keys";
    let apps = "/v1/apps";
    let bodies: Vec<(&str, String, (u16, &str))> = vec![
        (keys, json!({"reusable": key}).to_string(), INVALID_FIELD),
        (
            keys,
            json!({"ephemeral": session}).to_string(),
            INVALID_FIELD,
        ),
        (keys, json!({"expires_in": key}).to_string(), INVALID_FIELD),
        (
            keys,
            json!({"description": [key]}).to_string(),
            INVALID_FIELD,
        ),
        (
            keys,
            json!({ key.clone(): true }).to_string(),
            UNKNOWN_FIELD,
        ),
        (keys, json!({ "key": key }).to_string(), UNKNOWN_FIELD),
        (keys, format!(r#"{{"reusable": {key}}}"#), MALFORMED_BODY),
        (keys, format!(r#"{{"reusable": "{key}"#), MALFORMED_BODY),
        (
            keys,
            format!(r#"{{"description": "{key}\x"}}"#),
            MALFORMED_BODY,
        ),
        (apps, json!({"id": key}).to_string(), INVALID_FIELD),
        (
            apps,
            json!({"id": 1, "name": key}).to_string(),
            INVALID_FIELD,
        ),
        (
            apps,
            json!({"id": "x", "auth_key": key}).to_string(),
            UNKNOWN_FIELD,
        ),
        (
            apps,
            json!({ "id": "x", session.clone(): 1 }).to_string(),
            UNKNOWN_FIELD,
        ),
    ];
    for (path, body, (status, code)) in &bodies {
        let reply = admin.post_raw(path, Some("application/json"), body.as_bytes());
        check_secret_free(reply, &secrets, *status, code);
    }
    let queries = [
        format!("/v1/apps?{key}=1"),
        format!("/v1/apps/ci/keys?include_revoked={key}"),
        format!("/v1/apps/ci/keys?{session}=true"),
    ];
    for path in &queries {
        check_secret_free(admin.get(path), &secrets, 400, "invalid_query");
    }
    for bearer in secrets {
        let reply = server.client(Some(bearer)).get("/v1/apps");
        check_secret_free(reply, &secrets, 401, "invalid_credentials");
    }
    assert_log_secret_free(
        &server,
        &[
            ("auth key", &key[4..]),
            ("session token", &session[4..]),
            ("admin token", &server.admin_token),
        ],
    );
}

#[test]
fn a_secret_pasted_into_a_url_path_is_neither_echoed_nor_logged() {
    let server = TestServer::start();
    server.create_app("ci");
    let created = server.create_key("ci", json!({"reusable": true}));
    let key = created["key"].as_str().expect("secret").to_string();
    let session = session_of(&server.login(&key));
    let secrets = [key.as_str(), session.as_str()];
    let admin = server.admin();

    let reply = admin.get(&format!("/v1/apps/{key}/keys"));
    check_secret_free(reply, &secrets, 404, "app_not_found");
    let reply = admin.get(&format!("/v1/apps/ci/keys/{key}"));
    check_secret_free(reply, &secrets, 404, "key_not_found");
    let reply = admin.delete(&format!("/v1/apps/ci/machines/{session}"));
    check_secret_free(reply, &secrets, 404, "machine_not_found");
    assert_log_secret_free(
        &server,
        &[("auth key", &key[4..]), ("session token", &session[4..])],
    );
}
