//! GitLab's Token Revocation API (`--revocation-api-token`): present only when configured,
//! GitLab's token as a bearer token or bare, known tokens revoked, unknown ones ignored.

use super::*;
use serde_json::{Value, json};

const GITLAB_TOKEN: &str = "gitlab-revocation-token-0123456789abcdef";
const AUTH_KEY_TYPE: &str = "gitleaks_rule_id_authkeys_auth_key";
const SESSION_TYPE: &str = "gitleaks_rule_id_authkeys_session_token";

fn gitlab_server(extra: &[&str]) -> TestServer {
    let mut options = Options::default().arg("--revocation-api-token", GITLAB_TOKEN);
    options.args.extend(extra.iter().map(|arg| arg.to_string()));
    TestServer::start_with(options)
}

/// A request as GitLab sends it, with `authorization` as the whole header value.
fn gitlab(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: &str,
    body: &Value,
) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    server.anonymous().send_with_headers(
        method,
        path,
        Some("application/json"),
        &[("Authorization", authorization)],
        Some(body),
    )
}

fn bearer() -> String {
    format!("Bearer {GITLAB_TOKEN}")
}

#[test]
fn the_routes_are_absent_unless_configured() {
    let server = TestServer::start();
    for (method, path) in [
        ("GET", "/v1/revocable_token_types"),
        ("POST", "/v1/revocable_token_types"),
        ("POST", "/v1/revoke_tokens"),
        ("GET", "/v1/revoke_tokens"),
    ] {
        gitlab(&server, method, path, &bearer(), &json!([])).expect_error(404, "not_found");
    }
}

#[test]
fn advertises_the_types_of_the_gitleaks_rules_to_either_form_of_the_token() {
    let server = gitlab_server(&[]);
    for authorization in [bearer(), GITLAB_TOKEN.to_string()] {
        let types = gitlab(
            &server,
            "GET",
            "/v1/revocable_token_types",
            &authorization,
            &json!(null),
        )
        .expect(200);
        assert_eq!(types, json!({"types": [AUTH_KEY_TYPE, SESSION_TYPE]}));
    }
    let rules = include_str!("../../../examples/gitleaks.toml");
    for rule_id in ["authkeys_auth_key", "authkeys_session_token"] {
        assert!(rules.contains(&format!("id = \"{rule_id}\"")), "{rule_id}");
    }
}

#[test]
fn known_tokens_are_revoked_and_unknown_ones_ignored() {
    let server = gitlab_server(&[]);
    let (key, session) = key_with_machine(&server, "leaky");
    let (other_key, other_session) = key_with_machine(&server, "bystander");
    let stranger = key_with_machine(&server, "logged-out").1;
    let unknown = authkeys::ops::generate_token(authkeys::TokenKind::AuthKey);
    let report = json!([
        {"type": AUTH_KEY_TYPE, "token": key, "location": "https://gitlab.test/p/-/blob/main/a.env#L3"},
        {"type": AUTH_KEY_TYPE, "token": unknown.expose(), "location": "x"},
        {"type": AUTH_KEY_TYPE, "token": "ghp_notoursatall"},
        {"type": SESSION_TYPE, "token": stranger, "location": null, "extra": "ignored"},
        {"type": AUTH_KEY_TYPE, "token": key},
    ]);
    gitlab(&server, "POST", "/v1/revoke_tokens", GITLAB_TOKEN, &report).expect(204);
    assert!(revoked(&server, &key));
    assert!(!session_alive(&server, &session));
    assert!(!session_alive(&server, &stranger));
    assert_eq!(verify(&server, &other_key)["valid"], true);
    assert!(session_alive(&server, &other_session));
    let log = server.log();
    assert!(log.contains("revoked key"), "{log}");
    assert!(log.contains("gitlab.test/p/-/blob/main/a.env#L3"), "{log}");
    assert!(!log.contains(&key), "the key itself is never logged");
    // GitLab may send it again: the same answer, nothing more.
    gitlab(&server, "POST", "/v1/revoke_tokens", &bearer(), &report).expect(204);
}

#[test]
fn a_bad_body_or_unknown_type_is_400_and_revokes_nothing() {
    let server = gitlab_server(&[]);
    let (key, _) = key_with_machine(&server, "leaky");
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": AUTH_KEY_TYPE, "token": "x"}))
        .collect();
    for body in [
        json!([{"type": "gitleaks_rule_id_aws", "token": key}, {"type": AUTH_KEY_TYPE, "token": key}]),
        json!({"type": AUTH_KEY_TYPE, "token": key}),
        json!([{"type": AUTH_KEY_TYPE}]),
        json!([{"type": AUTH_KEY_TYPE, "token": 42}]),
        json!("nope"),
        Value::Array(too_many),
    ] {
        let reply = gitlab(&server, "POST", "/v1/revoke_tokens", &bearer(), &body);
        assert_eq!(reply.status, 400, "{}", reply.body);
    }
    assert_eq!(verify(&server, &key)["valid"], true);
    let reply = server.anonymous().send_with_headers(
        "POST",
        "/v1/revoke_tokens",
        Some("application/json"),
        &[("Authorization", &bearer())],
        Some(b"[{\"type\": ".to_vec()),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[test]
fn a_wrong_token_is_refused_and_throttled_like_other_credentials() {
    let server = gitlab_server(&[
        "--login-failures-burst",
        "2",
        "--login-failures-per-minute",
        "1",
    ]);
    let (key, _) = key_with_machine(&server, "leaky");
    let report = json!([{"type": AUTH_KEY_TYPE, "token": key}]);
    let almost = &GITLAB_TOKEN[..GITLAB_TOKEN.len() - 1];
    server
        .anonymous()
        .post("/v1/revoke_tokens", &report)
        .expect_error(401, "missing_credentials");
    for wrong in [format!("Bearer {almost}"), format!("{GITLAB_TOKEN}x")] {
        gitlab(&server, "POST", "/v1/revoke_tokens", &wrong, &report)
            .expect_error(401, "invalid_credentials");
    }
    // The burst is spent: even the right token waits now.
    let reply = gitlab(&server, "POST", "/v1/revoke_tokens", &bearer(), &report);
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(!server.log().contains("revoked key"), "nothing was revoked");
}

#[test]
fn a_short_revocation_api_token_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = std::process::Command::new(BIN)
        .args(["serve", "--db", ":memory:", "--listen", "127.0.0.1:0"])
        .env("AUTHKEYS_REVOCATION_API_TOKEN", "short")
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
        .current_dir(dir.path())
        .output()
        .expect("running authkeys serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AUTHKEYS_REVOCATION_API_TOKEN is 5 characters long"),
        "{stderr}"
    );
    assert!(!stderr.contains("short"), "{stderr}");
}

/// GitLab's revocations are recorded as the reporter `gitlab` in the audit log, with where the
/// token was found, cut short and redacted as in the log line; a revoked key's machines as
/// for any revocation, a reported session's machine as a leak report's logout.
#[test]
fn its_revocations_are_audited_as_gitlab_with_the_location() {
    let server = gitlab_server(&[]);
    let (key, session) = key_with_machine(&server, "leaky");
    let key_machine = machine_of(&server, &session);
    let second = server.login(&key)["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second_machine = machine_of(&server, &second);
    let (_, reported_session) = key_with_machine(&server, "other");
    let reported_machine = machine_of(&server, &reported_session);
    let key_id = verify(&server, &key)["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A location quoting the key itself, then a control character and far too much text.
    let location = format!(
        "https://gitlab.test/p/-/blob/main/a.env#L3 {key}\n{}",
        "x".repeat(5000)
    );
    let before = last_seq(&server);
    let report = json!([
        {"type": AUTH_KEY_TYPE, "token": key, "location": location},
        {"type": SESSION_TYPE, "token": reported_session},
        {"type": AUTH_KEY_TYPE, "token": key, "location": "elsewhere"},
    ]);
    gitlab(&server, "POST", "/v1/revoke_tokens", &bearer(), &report).expect(204);

    let events = events_after(
        &server,
        before,
        &[&key, &session, &second, &reported_session],
    );
    let gitlab = json!({"type": "leak_report", "id": "gitlab"});
    let (action, actor, target, details) = &events[0];
    assert_eq!(
        (action.as_str(), actor, target),
        ("key.revoked", &gitlab, &key_id)
    );
    assert_eq!(details["reason"], "leak_report");
    let shown = details["location"].as_str().unwrap();
    assert!(
        shown.starts_with("https://gitlab.test/p/-/blob/main/a.env#L3 "),
        "{shown}"
    );
    assert_eq!(shown.chars().count(), 200, "{shown}");
    let mut logouts: Vec<_> = events[1..3].to_vec();
    logouts.sort_by(|a, b| a.2.cmp(&b.2));
    let mut expected = vec![
        (
            "machine.logged_out".to_string(),
            gitlab.clone(),
            key_machine,
            json!({"reason": "key_revoked"}),
        ),
        (
            "machine.logged_out".to_string(),
            gitlab.clone(),
            second_machine,
            json!({"reason": "key_revoked"}),
        ),
    ];
    expected.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(logouts, expected);
    assert_eq!(
        events[3..],
        [(
            "machine.logged_out".to_string(),
            gitlab,
            reported_machine,
            json!({"reason": "leak_report"})
        )],
        "the key reported twice is revoked and recorded once"
    );
}
