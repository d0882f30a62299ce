//! Hostile and broken input on every endpoint that takes any: each request gets the contract's
//! error, the database is byte-for-byte unchanged (a full dump of every table before and after
//! each request), and the next request on the same keep-alive connection is answered normally.
//! Secrets sent in the wrong place (query strings) are refused and never echoed or logged.

use super::raw::{Conn, RawReply};
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// The world the bad requests are thrown at: an app with one key and one logged-in machine.
struct Target {
    server: TestServer,
    key_id: String,
    auth_key: String,
    session: String,
    machine_id: String,
}

fn target() -> Target {
    // The sweeper would write usage stamps between two dumps; a day's interval keeps it idle.
    let server = TestServer::start_with(Options::default().arg("--sweep-interval", "86400"));
    server.create_app("victim");
    let created = server.create_key("victim", json!({"reusable": true}));
    let login = server.login(created["key"].as_str().unwrap());
    Target {
        key_id: created["id"].as_str().unwrap().into(),
        auth_key: created["key"].as_str().unwrap().into(),
        session: login["session_token"].as_str().unwrap().into(),
        machine_id: login["machine"]["id"].as_str().unwrap().into(),
        server,
    }
}

/// One bad request and the answer the contract gives it.
struct Case {
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The error code, or for verify's 200 the `code` of `{"valid": false}`.
    code: &'static str,
    /// Text the error message must contain (such as the field it names), if any.
    naming: &'static str,
}

fn case(method: &'static str, target: &str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        method,
        target: target.to_string(),
        headers: vec![("Content-Type", "application/json".into())],
        body: body.into(),
        status: 0,
        code: "",
        naming: "",
    }
}

impl Case {
    fn admin(self) -> Case {
        self.bearer(ADMIN_TOKEN)
    }

    fn bearer(mut self, token: &str) -> Case {
        self.headers
            .push(("Authorization", format!("Bearer {token}")));
        self
    }

    fn content_type(mut self, value: &str) -> Case {
        self.headers[0].1 = value.to_string();
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Case {
        (self.status, self.code) = (status, code);
        self
    }

    /// The error message must contain `text`.
    fn naming(mut self, text: &'static str) -> Case {
        self.naming = text;
        self
    }
}

/// Sends every case on one connection, checking each answer, the database and the connection.
fn check_all(target: &Target, cases: Vec<Case>) {
    let db = target.server.db();
    let mut conn = Conn::open(&target.server.url);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    for case in cases {
        let described = format!(
            "{} {} {:?} {}",
            case.method,
            case.target,
            case.headers,
            String::from_utf8_lossy(&case.body)
        );
        let before = db.dump();
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let reply = conn.send(case.method, &case.target, &headers, &case.body);
        let code = if case.status == 200 {
            reply.json["code"].as_str()
        } else {
            reply.code()
        };
        let message_ok = case.status == 200
            || reply.json["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(case.naming));
        if reply.status != case.status || code != Some(case.code) || !message_ok {
            fail(
                target,
                &described,
                &reply,
                &format!("expected {} {}", case.status, case.code),
            );
        }
        for secret in [
            target.auth_key.as_str(),
            target.session.as_str(),
            ADMIN_TOKEN,
        ] {
            if String::from_utf8_lossy(&reply.body).contains(secret) {
                fail(target, &described, &reply, "the response echoes a secret");
            }
        }
        let after = db.dump();
        if before != after {
            let changed: Vec<_> = after.iter().filter(|row| !before.contains(row)).collect();
            let lost: Vec<_> = before.iter().filter(|row| !after.contains(row)).collect();
            fail(
                target,
                &described,
                &reply,
                &format!("the database changed: +{changed:?} -{lost:?}"),
            );
        }
        let next = conn.send(
            "GET",
            "/v1/apps/victim/keys",
            &[("Authorization", &admin)],
            b"",
        );
        if next.status != 200 || next.json["keys"].as_array().map(Vec::len) != Some(1) {
            fail(
                target,
                &described,
                &next,
                "the next request on the connection failed",
            );
        }
    }
    let log = target.server.log();
    for secret in [
        target.auth_key.as_str(),
        target.session.as_str(),
        ADMIN_TOKEN,
    ] {
        assert!(!log.contains(secret), "the log contains a secret:\n{log}");
    }
}

fn fail(target: &Target, request: &str, reply: &RawReply, what: &str) -> ! {
    panic!(
        "{what}\n--- request ---\n{request}\n--- response ---\n{} {:?}\n{}\n--- server log ---\n{}",
        reply.status,
        reply.headers,
        String::from_utf8_lossy(&reply.body),
        target.server.log()
    )
}

/// Bodies that are not a JSON object at all: 400 on every endpoint that reads a body.
const MALFORMED: &[&[u8]] = &[
    b"{",
    b"{\"id\": \"ab",
    b"{\"auth_key\": }",
    b"{\"a\": 1,}",
    b"{'id': 'single-quoted'}",
    b"null",
    b"[]",
    b"[{\"id\": \"x\"}]",
    b"\"victim\"",
    b"42",
    b"true",
    b"{\"id\": \"\xff\xfe\"}",
    b"\xef\xbb\xbf{}",
    b"{\"id\": \"a\x00b\"}",
    b"{\x00}",
    b"{\"id\": \"x\"}{\"id\": \"y\"}",
    b"1e400",
];

const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "x'; DROP TABLE keys; --",
    "\" OR \"\"=\"",
    "1; DELETE FROM machines",
    "ena_' UNION SELECT hash FROM keys --",
];

#[test]
fn malformed_bodies_get_400_change_nothing_and_keep_the_connection() {
    let target = target();
    let mut cases = Vec::new();
    for body in MALFORMED {
        cases.push(
            case("POST", "/v1/apps", *body)
                .admin()
                .expect(400, "malformed_body"),
        );
        cases.push(
            case("POST", "/v1/apps/victim/keys", *body)
                .admin()
                .expect(400, "malformed_body"),
        );
        cases.push(case("POST", "/v1/auth/login", *body).expect(400, "malformed_body"));
        cases.push(case("POST", "/v1/keys/verify", *body).expect(400, "malformed_body"));
    }
    let login = format!(r#"{{"auth_key": "{}"}}"#, target.auth_key);
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        cases.push(
            case("POST", "/v1/auth/login", login.clone())
                .content_type(content_type)
                .expect(415, "unsupported_media_type"),
        );
        cases.push(
            case("POST", "/v1/apps", r#"{"id": "new"}"#)
                .admin()
                .content_type(content_type)
                .expect(415, "unsupported_media_type"),
        );
    }
    check_all(&target, cases);
}

#[test]
fn wrong_types_unknown_fields_and_huge_numbers_get_422_and_change_nothing() {
    let target = target();
    let key = &target.auth_key;
    let long = "x".repeat(201);
    let mut cases = vec![
        // Apps.
        case("POST", "/v1/apps", "{}")
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": null}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": 5}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": ["new"]}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": "new", "name": 7}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": "new", "name": "a\u0000b"}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": "a\u0000b"}"#)
            .admin()
            .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/apps",
            format!(r#"{{"id": "new", "name": "{long}"}}"#),
        )
        .admin()
        .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": "\ud800"}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps", r#"{"id": "new", "owner": "me"}"#)
            .admin()
            .expect(422, "unknown_field"),
        case("POST", "/v1/apps", r#"{"id": "victim"}"#)
            .admin()
            .expect(409, "app_exists"),
        // Keys.
        case("POST", "/v1/apps/victim/keys", r#"{"reuseable": true}"#)
            .admin()
            .expect(422, "unknown_field"),
        case("POST", "/v1/apps/victim/keys", r#"{"reusable": "yes"}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps/victim/keys", r#"{"reusable": 1}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps/victim/keys", r#"{"ephemeral": null}"#)
            .admin()
            .expect(422, "invalid_field"),
        case("POST", "/v1/apps/victim/keys", r#"{"description": ["x"]}"#)
            .admin()
            .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/apps/victim/keys",
            format!(r#"{{"description": "{long}"}}"#),
        )
        .admin()
        .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/apps/victim/keys",
            r#"{"description": "tab\tand\u0000nul"}"#,
        )
        .admin()
        .expect(422, "invalid_field"),
        // Logins: a valid key with a bad field must not log anything in.
        case("POST", "/v1/auth/login", "{}").expect(422, "invalid_field"),
        case("POST", "/v1/auth/login", r#"{"auth_key": null}"#).expect(422, "invalid_field"),
        case("POST", "/v1/auth/login", r#"{"auth_key": 5}"#).expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "machine": 5}}"#),
        )
        .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "machine": "a\u0000b"}}"#),
        )
        .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "machine": "{long}"}}"#),
        )
        .expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "admin": true}}"#),
        )
        .expect(422, "unknown_field"),
        case("POST", "/v1/auth/login", format!(r#"{{"key": "{key}"}}"#))
            .expect(422, "unknown_field"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}\u0000"}}"#),
        )
        .expect(401, "invalid_auth_key"),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": " {key}"}}"#),
        )
        .expect(401, "invalid_auth_key"),
        // Verify.
        case("POST", "/v1/keys/verify", "{}").expect(422, "invalid_field"),
        case("POST", "/v1/keys/verify", r#"{"key": 5}"#).expect(422, "invalid_field"),
        case(
            "POST",
            "/v1/keys/verify",
            format!(r#"{{"key": "{key}", "consume": true}}"#),
        )
        .expect(422, "unknown_field"),
        case(
            "POST",
            "/v1/keys/verify",
            format!(r#"{{"key": "{key}\u0000"}}"#),
        )
        .expect(200, "malformed"),
    ];
    for number in [
        "1e400",
        "-1e400",
        "18446744073709551616",
        "99999999999999999999999999999",
        "-1",
        "0",
        "1.5",
        "315360001",
        "\"60\"",
        "true",
        "[60]",
    ] {
        let body = format!(r#"{{"expires_in": {number}}}"#);
        cases.push(
            case("POST", "/v1/apps/victim/keys", body)
                .admin()
                .expect(422, "invalid_field"),
        );
    }
    check_all(&target, cases);
}

#[test]
fn format_and_bidi_characters_in_names_and_descriptions_get_422_naming_the_field() {
    let target = target();
    let key = &target.auth_key;
    let mut cases = Vec::new();
    // Category Cf: the right-to-left override that makes `admin\u{202E}gnp.exe` display as
    // `adminexe.png`, zero-width space, BOM, the isolates, soft hyphen, a tag character.
    for escape in [
        r"\u202e",
        r"\u202a",
        r"\u200b",
        r"\u200d",
        r"\ufeff",
        r"\u2066",
        r"\u2067",
        r"\u2068",
        r"\u2069",
        r"\u00ad",
        r"\udb40\udc01",
    ] {
        let text = format!("admin{escape}gnp.exe");
        cases.extend([
            case(
                "POST",
                "/v1/apps",
                format!(r#"{{"id": "new", "name": "{text}"}}"#),
            )
            .admin()
            .expect(422, "invalid_field")
            .naming("`name`"),
            case(
                "POST",
                "/v1/apps/victim/keys",
                format!(r#"{{"description": "{text}"}}"#),
            )
            .admin()
            .expect(422, "invalid_field")
            .naming("`description`"),
            // A valid key with a bad machine name logs nothing in.
            case(
                "POST",
                "/v1/auth/login",
                format!(r#"{{"auth_key": "{key}", "machine": "{text}"}}"#),
            )
            .expect(422, "invalid_field")
            .naming("`machine`"),
            // Every other name or description an admin gives: each request valid but for it.
            case(
                "POST",
                "/v1/admin-tokens",
                format!(r#"{{"name": "{text}", "scopes": ["keys:read"]}}"#),
            )
            .admin()
            .expect(422, "invalid_field")
            .naming("`name`"),
            case(
                "POST",
                "/v1/webhooks",
                format!(
                    r#"{{"url": "http://127.0.0.1:9/hook", "events": ["*"], "description": "{text}"}}"#
                ),
            )
            .admin()
            .expect(422, "invalid_field")
            .naming("`description`"),
            case(
                "POST",
                "/v1/apps/victim/trust-policies",
                format!(
                    r#"{{"issuer": "https://issuer.example", "audience": "authkeys",
                         "subject": "repo:acme/api:ref:refs/heads/main", "description": "{text}"}}"#
                ),
            )
            .admin()
            .expect(422, "invalid_field")
            .naming("`description`"),
        ]);
    }
    check_all(&target, cases);
    // Visible non-ASCII text is still welcome.
    let created = target
        .server
        .admin()
        .post(
            "/v1/apps",
            &json!({"id": "intl", "name": "Ünïcödé 日本語 ✓"}),
        )
        .expect(201);
    assert_eq!(created["name"], "Ünïcödé 日本語 ✓");
}

#[test]
fn json_with_a_repeated_key_at_any_depth_gets_400_and_changes_nothing() {
    let target = target();
    let key = &target.auth_key;
    let repeated = "malformed_body";
    let cases = vec![
        // With the last value winning each of these would succeed or fail differently.
        case("POST", "/v1/apps", r#"{"id": "new", "id": "newer"}"#)
            .admin()
            .expect(400, repeated)
            .naming("`id` is repeated"),
        case(
            "POST",
            "/v1/apps",
            r#"{"id": "new", "name": "a", "name": "b"}"#,
        )
        .admin()
        .expect(400, repeated),
        case("POST", "/v1/apps", r#"{"id": "new", "id": "new"}"#)
            .admin()
            .expect(400, repeated),
        case(
            "POST",
            "/v1/apps/victim/keys",
            r#"{"reusable": false, "reusable": true}"#,
        )
        .admin()
        .expect(400, repeated),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "auth_key": "{key}"}}"#),
        )
        .expect(400, repeated),
        case(
            "POST",
            "/v1/auth/login",
            format!(r#"{{"auth_key": "{key}", "machine": "a", "machine": "b"}}"#),
        )
        .expect(400, repeated),
        case(
            "POST",
            "/v1/keys/verify",
            format!(r#"{{"key": "ena_x", "key": "{key}"}}"#),
        )
        .expect(400, repeated),
        // Nested: found while parsing, before any field is looked at.
        case(
            "POST",
            "/v1/apps",
            r#"{"id": "new", "name": {"a": 1, "b": [{"c": 1, "c": 2}]}}"#,
        )
        .admin()
        .expect(400, repeated),
        case(
            "POST",
            "/v1/apps/victim/keys",
            r#"{"metadata": {"team": "a", "team": "b"}}"#,
        )
        .admin()
        .expect(400, repeated),
        // Keys differing in case, or spelled with escapes, are compared as decoded strings.
        case("POST", "/v1/apps", r#"{"id": "new", "i\u0064": "newer"}"#)
            .admin()
            .expect(400, repeated),
        case("POST", "/v1/apps", r#"{"id": "new", "ID": "newer"}"#)
            .admin()
            .expect(422, "unknown_field"),
    ];
    check_all(&target, cases);
}

#[test]
fn more_than_one_authorization_header_gets_400_and_changes_nothing() {
    let target = target();
    let session = &target.session;
    let login = format!(r#"{{"auth_key": "{}"}}"#, target.auth_key);
    let cases = vec![
        // The same good token twice, or a good one and a bad one in either order.
        case("POST", "/v1/apps", r#"{"id": "new"}"#)
            .admin()
            .admin()
            .expect(400, "malformed_request")
            .naming("Authorization"),
        case("POST", "/v1/apps", r#"{"id": "new"}"#)
            .bearer("wrong")
            .admin()
            .expect(400, "malformed_request"),
        case("DELETE", "/v1/apps/victim", "")
            .admin()
            .bearer(session)
            .expect(400, "malformed_request"),
        case("GET", "/v1/auth/whoami", "")
            .bearer(session)
            .bearer(session)
            .expect(400, "malformed_request"),
        case("POST", "/v1/auth/logout", "")
            .bearer(session)
            .bearer("ens_other")
            .expect(400, "malformed_request"),
        case("GET", "/v1/forward-auth", "")
            .bearer("ens_other")
            .bearer(session)
            .expect(400, "malformed_request"),
        // Even where no token is needed: the request is ambiguous all the same.
        case("POST", "/v1/auth/login", login)
            .admin()
            .admin()
            .expect(400, "malformed_request"),
    ];
    check_all(&target, cases);
    // The session is still logged in: the logout above never ran.
    target
        .server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect(200);
}

#[test]
fn hostile_ids_keys_and_tokens_are_refused_and_change_nothing() {
    let target = target();
    let mut cases = Vec::new();
    for text in INJECTIONS {
        let quoted = serde_json::to_string(text).unwrap();
        let escaped: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
        let escaped = escaped.replace('+', "%20");
        cases.extend([
            case("POST", "/v1/apps", format!(r#"{{"id": {quoted}}}"#))
                .admin()
                .expect(422, "invalid_field"),
            case(
                "POST",
                "/v1/auth/login",
                format!(r#"{{"auth_key": {quoted}}}"#),
            )
            .expect(401, "invalid_auth_key"),
            case("POST", "/v1/keys/verify", format!(r#"{{"key": {quoted}}}"#))
                .expect(200, "malformed"),
            case("GET", "/v1/apps", "")
                .bearer(text)
                .expect(401, "invalid_credentials"),
            case("GET", "/v1/auth/whoami", "")
                .bearer(&format!("ens_{text}"))
                .expect(401, "invalid_credentials"),
            case("POST", "/v1/auth/logout", "")
                .bearer(text)
                .expect(401, "invalid_credentials"),
            case("GET", &format!("/v1/apps/{escaped}"), "")
                .admin()
                .expect(404, "app_not_found"),
            case("DELETE", &format!("/v1/apps/{escaped}"), "")
                .admin()
                .expect(404, "app_not_found"),
            case("POST", &format!("/v1/apps/{escaped}/keys"), "{}")
                .admin()
                .expect(404, "app_not_found"),
            case("GET", &format!("/v1/apps/victim/keys/{escaped}"), "")
                .admin()
                .expect(404, "key_not_found"),
            case("DELETE", &format!("/v1/apps/victim/keys/{escaped}"), "")
                .admin()
                .expect(404, "key_not_found"),
            case("DELETE", &format!("/v1/apps/victim/machines/{escaped}"), "")
                .admin()
                .expect(404, "machine_not_found"),
            case(
                "GET",
                &format!("/v1/apps/victim/keys?include_revoked={escaped}"),
                "",
            )
            .admin()
            .expect(400, "invalid_query"),
        ]);
    }
    // NUL bytes, invalid UTF-8 and huge numbers, percent-encoded in paths and queries.
    for odd in ["%00", "victim%00", "%FF%FE", "99999999999999999999999999"] {
        cases.extend([
            case("GET", &format!("/v1/apps/{odd}"), "")
                .admin()
                .expect(404, "app_not_found"),
            case("DELETE", &format!("/v1/apps/victim/keys/{odd}"), "")
                .admin()
                .expect(404, "key_not_found"),
            case(
                "GET",
                &format!("/v1/apps/victim/keys?include_revoked={odd}"),
                "",
            )
            .admin()
            .expect(400, "invalid_query"),
            case("GET", &format!("/v1/apps/victim/keys?{odd}=true"), "")
                .admin()
                .expect(400, "invalid_query"),
        ]);
    }
    // The right ids in the wrong app.
    cases.push(
        case(
            "DELETE",
            &format!("/v1/apps/other/keys/{}", target.key_id),
            "",
        )
        .admin()
        .expect(404, "app_not_found"),
    );
    cases.push(
        case(
            "DELETE",
            &format!("/v1/apps/victim/machines/{}x", target.machine_id),
            "",
        )
        .admin()
        .expect(404, "machine_not_found"),
    );
    check_all(&target, cases);
}

#[test]
fn tokens_in_query_strings_are_refused_and_never_logged() {
    let target = target();
    let (key, session) = (&target.auth_key, &target.session);
    let login = format!(r#"{{"auth_key": "{key}"}}"#);
    let verify = format!(r#"{{"key": "{key}"}}"#);
    let cases = vec![
        case(
            "GET",
            &format!("/v1/auth/whoami?access_token={session}"),
            "",
        )
        .expect(400, "invalid_query"),
        case(
            "GET",
            &format!("/v1/auth/whoami?access_token={session}"),
            "",
        )
        .bearer(session)
        .expect(400, "invalid_query"),
        case("GET", &format!("/v1/auth/whoami?{session}"), "")
            .bearer(session)
            .expect(400, "invalid_query"),
        case("POST", &format!("/v1/auth/logout?token={session}"), "")
            .bearer(session)
            .expect(400, "invalid_query"),
        case(
            "POST",
            &format!("/v1/auth/login?auth_key={key}"),
            login.clone(),
        )
        .expect(400, "invalid_query"),
        case("POST", &format!("/v1/auth/login?{key}"), login).expect(400, "invalid_query"),
        case("POST", &format!("/v1/keys/verify?key={key}"), verify).expect(400, "invalid_query"),
        case("GET", &format!("/v1/apps?token={ADMIN_TOKEN}"), "")
            .admin()
            .expect(400, "invalid_query"),
        case(
            "GET",
            &format!("/v1/apps/victim/keys?include_revoked=true&key={key}"),
            "",
        )
        .admin()
        .expect(400, "invalid_query"),
        case(
            "DELETE",
            &format!(
                "/v1/apps/victim/machines/{}?access_token={session}",
                target.machine_id
            ),
            "",
        )
        .admin()
        .expect(400, "invalid_query"),
        case("GET", &format!("/healthz?key={key}"), "").expect(400, "invalid_query"),
    ];
    check_all(&target, cases);
    // The session still works: nothing above logged it out.
    target
        .server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect(200);
}

#[test]
fn secrets_in_paths_never_reach_the_debug_log_however_encoded() {
    // The harness runs the server with RUST_LOG=debug: every request gets an access log line.
    let target = target();
    let key = &target.auth_key;
    let encoded: String = key.bytes().map(|b| format!("%{b:02x}")).collect();
    let a_secret = "correct-horse-battery-staple-0123";
    let paths = [
        // The configured admin token (not one of our formats) pasted into a URL.
        format!("/v1/apps/{ADMIN_TOKEN}"),
        format!("/v1/apps/victim/keys/{ADMIN_TOKEN}"),
        // Our tokens with an encoded prefix, encoded whole, or split by an encoded byte.
        format!("/v1/apps/%65na_{}", &key[4..]),
        format!("/v1/apps/victim/keys/{encoded}"),
        format!(
            "/v1/apps/{}%{:02X}{}",
            &key[..20],
            key.as_bytes()[20],
            &key[21..]
        ),
        format!("/v1/apps/victim/machines/%65ns_{}", &target.session[4..]),
        // Any long secret, on a route or off it.
        format!("/{a_secret}"),
        format!("/v1/{a_secret}/x"),
    ];
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let mut conn = Conn::open(&target.server.url);
    for path in &paths {
        for method in ["GET", "DELETE"] {
            let reply = conn.send(method, path, &[("Authorization", &admin)], b"");
            assert!(
                [404, 405].contains(&reply.status),
                "{method} {path}: {reply:?}"
            );
        }
    }
    // An ordinary path is still logged as it is.
    conn.send("GET", "/v1/apps/victim", &[("Authorization", &admin)], b"");
    // Each line is written just after its response: wait until every one is there.
    let sent = 2 * paths.len() + 1;
    let access_lines = || {
        let log = target.server.log();
        let lines = log.lines();
        lines
            .filter(|line| line.contains("listener] GET ") || line.contains("listener] DELETE "))
            .count()
    };
    wait_for("every access log line", Duration::from_secs(10), || {
        access_lines() == sent
    });
    let log = target.server.log();
    assert!(log.contains("GET /v1/apps/victim 200"), "{log}");
    assert!(log.contains("GET /v1/apps/… 404"), "{log}");
    let secrets = [
        ADMIN_TOKEN,
        &key[4..],
        &key[..20],
        &key[21..],
        &encoded[12..],
        &target.session[4..],
        a_secret,
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
}

#[test]
fn sql_injection_in_free_text_is_stored_as_plain_text() {
    let server = TestServer::start();
    let schema = |server: &TestServer| {
        server
            .db()
            .dump()
            .into_iter()
            .filter(|row| row.starts_with("table") || row.starts_with("index"))
            .collect::<Vec<_>>()
    };
    let tables_before = schema(&server);
    for (n, text) in INJECTIONS.iter().enumerate() {
        let app = format!("app-{n}");
        let created = server
            .admin()
            .post("/v1/apps", &json!({"id": app, "name": text}))
            .expect(201);
        assert_eq!(created["name"], *text);
        let key = server.create_key(&app, json!({"description": text}));
        assert_eq!(key["description"], *text);
        let login = server
            .anonymous()
            .post(
                "/v1/auth/login",
                &json!({"auth_key": key["key"], "machine": text}),
            )
            .expect(201);
        assert_eq!(login["machine"]["name"], *text);
        let listed = server
            .admin()
            .get(&format!("/v1/apps/{app}/machines"))
            .expect(200);
        assert_eq!(listed["machines"][0]["name"], *text);
    }
    let db = server.db();
    assert_eq!(schema(&server), tables_before);
    let n = INJECTIONS.len() as i64;
    for table in ["apps", "keys", "machines"] {
        assert_eq!(
            db.scalar(&format!("SELECT count(*) FROM {table}"), &[]),
            n,
            "{table}"
        );
    }
    for text in INJECTIONS {
        let stored = "SELECT count(*) FROM apps a JOIN keys k ON k.app_pk = a.pk
                        JOIN machines m ON m.key_pk = k.pk
                       WHERE a.name = ?1 AND k.description = ?1 AND m.name = ?1";
        assert_eq!(db.scalar(stored, &[text]), 1, "{text}");
    }
}
