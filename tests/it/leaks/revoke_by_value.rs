//! `POST /v1/keys/revoke-by-value`: an admin revokes a leaked key, or ends a leaked session,
//! knowing only its value.

use super::*;
use serde_json::json;

fn revoke(server: &TestServer, value: &str) -> serde_json::Value {
    server
        .admin()
        .post("/v1/keys/revoke-by-value", &json!({"key": value}))
        .expect(200)
}

#[test]
fn an_auth_key_is_revoked_by_value_with_its_machines() {
    let server = TestServer::start();
    let (key, session) = key_with_machine(&server, "leaky");
    let (other_key, other_session) = key_with_machine(&server, "bystander");
    let before = revoked_total(&server);

    let answer = revoke(&server, &key);
    assert_eq!(answer["revoked"], true, "{answer}");
    assert_eq!(answer["app"], "leaky");
    assert!(answer["key_id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(answer["machine_id"], serde_json::Value::Null);
    assert!(revoked(&server, &key));
    assert!(
        !session_alive(&server, &session),
        "its machine is logged out"
    );
    assert_eq!(revoked_total(&server) - before, 1.0);
    // Nothing else was touched.
    assert_eq!(verify(&server, &other_key)["valid"], true);
    assert!(session_alive(&server, &other_session));

    assert_eq!(
        revoke(&server, &key),
        json!({"revoked": false, "code": "already_revoked"})
    );
    assert_eq!(revoked_total(&server) - before, 1.0);
}

#[test]
fn a_session_token_logs_its_machine_out_and_nothing_else() {
    let server = TestServer::start();
    let (key, session) = key_with_machine(&server, "leaky");
    let second = server.login(&key)["session_token"]
        .as_str()
        .unwrap()
        .to_string();

    let answer = revoke(&server, &session);
    assert_eq!(answer["revoked"], true, "{answer}");
    assert_eq!(answer["app"], "leaky");
    assert!(answer["machine_id"].as_str().unwrap().starts_with("mch_"));
    assert!(!session_alive(&server, &session));
    assert!(
        session_alive(&server, &second),
        "the key's other machine stays"
    );
    assert_eq!(
        verify(&server, &key)["valid"],
        true,
        "the key is not revoked"
    );
    assert_eq!(
        revoke(&server, &session),
        json!({"revoked": false, "code": "not_found"})
    );
}

#[test]
fn anything_else_is_answered_with_a_code_and_changes_nothing() {
    let server = TestServer::start();
    let (key, session) = key_with_machine(&server, "leaky");
    let unknown = authkeys::ops::generate_token(authkeys::TokenKind::AuthKey);
    let admin = authkeys::ops::generate_token(authkeys::TokenKind::Admin);
    let mut wrong_checksum = key.clone();
    wrong_checksum.replace_range(key.len() - 1.., if key.ends_with('a') { "b" } else { "a" });
    for (value, code) in [
        (unknown.expose(), "not_found"),
        (admin.expose(), "malformed"),
        (wrong_checksum.as_str(), "malformed"),
        ("ena_", "malformed"),
        ("", "malformed"),
        ("ghp_somebodyelsestoken", "malformed"),
    ] {
        assert_eq!(
            revoke(&server, value),
            json!({"revoked": false, "code": code}),
            "{value}"
        );
    }
    assert_eq!(verify(&server, &key)["valid"], true);
    assert!(session_alive(&server, &session));
    // An admin endpoint like the others: no token, no revocation.
    server
        .anonymous()
        .post("/v1/keys/revoke-by-value", &json!({"key": key}))
        .expect_error(401, "missing_credentials");
    server
        .admin()
        .post(
            "/v1/keys/revoke-by-value",
            &json!({"key": key, "why": "typo"}),
        )
        .expect_error(422, "unknown_field");
    assert_eq!(verify(&server, &key)["valid"], true);
}

/// Revoking by value is an admin's revocation: recorded as that admin (root, or the scoped
/// token's id), with the reason `leak_report`; the key's machines as for any revocation, a
/// session's machine as a leak report's logout; nothing for a value that revoked nothing.
#[test]
fn revocations_by_value_are_audited_as_the_admin_who_sent_them() {
    let server = TestServer::start();
    let (key, session) = key_with_machine(&server, "leaky");
    let key_machine = machine_of(&server, &session);
    let other = server.login(&key_with_machine(&server, "other").0)["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other_machine = machine_of(&server, &other);
    let token = crate::scopes::create_token(
        &server,
        json!({"name": "responder", "scopes": ["keys:write"]}),
    );
    let token_id = token["id"].as_str().unwrap();
    let before = last_seq(&server);

    let revoked = revoke(&server, &key);
    let key_id = revoked["key_id"].as_str().unwrap();
    server
        .client(token["token"].as_str())
        .post("/v1/keys/revoke-by-value", &json!({"key": other}))
        .expect(200);
    // Values that revoke nothing record nothing.
    revoke(&server, &key);
    revoke(&server, &other);
    revoke(&server, "ena_nope");

    let root = json!({"type": "root", "id": null});
    let scoped = json!({"type": "admin_token", "id": token_id});
    let secrets = [key.as_str(), session.as_str(), other.as_str()];
    assert_eq!(
        events_after(&server, before, &secrets),
        [
            (
                "key.revoked".to_string(),
                root.clone(),
                key_id.to_string(),
                json!({"reason": "leak_report"})
            ),
            (
                "machine.logged_out".to_string(),
                root,
                key_machine,
                json!({"reason": "key_revoked"})
            ),
            (
                "machine.logged_out".to_string(),
                scoped,
                other_machine,
                json!({"reason": "leak_report"})
            ),
        ]
    );
}
