//! When a key leaks (API.md v2, "Leaked keys"): revoke-by-value, GitLab's Token Revocation
//! API, GitHub secret scanning, and `authkeys scan` with its pre-commit hook's rules.

mod github;
mod gitlab;
mod gitleaks;
mod revoke_by_value;
mod scan;

use crate::support::*;
use serde_json::{Value, json};

/// An app with one reusable key and a machine logged in with it: `(key, session)`.
fn key_with_machine(server: &TestServer, app: &str) -> (String, String) {
    server.create_app(app);
    let key = server.create_key(app, json!({"reusable": true}))["key"]
        .as_str()
        .expect("key")
        .to_string();
    let session = server.login(&key)["session_token"]
        .as_str()
        .expect("session token")
        .to_string();
    (key, session)
}

/// Whether `key` is revoked, by verifying it.
fn revoked(server: &TestServer, key: &str) -> bool {
    verify(server, key)["code"] == "revoked"
}

/// Whether the session still authenticates.
fn session_alive(server: &TestServer, session: &str) -> bool {
    match whoami(server, session).status {
        200 => true,
        401 => false,
        other => panic!("whoami answered {other}"),
    }
}

/// `authkeys_revocations_total{outcome="revoked"}` now.
fn revoked_total(server: &TestServer) -> f64 {
    let text = scrape(&server.anonymous());
    sample(&text, r#"authkeys_revocations_total{outcome="revoked"}"#)
}

/// The machine id of a live session.
fn machine_of(server: &TestServer, session: &str) -> String {
    whoami(server, session).expect(200)["machine"]["id"]
        .as_str()
        .expect("a machine id")
        .to_string()
}

/// The newest audit event's seq (0 if none).
fn last_seq(server: &TestServer) -> i64 {
    crate::audit::all_events(&server.admin(), "", 1000)
        .last()
        .map_or(0, |event| event["seq"].as_i64().expect("a seq"))
}

/// The audit events after `seq`, each as `(action, actor, target id, details)`, and checked
/// on the way: from 127.0.0.1, holding none of `secrets`.
fn events_after(
    server: &TestServer,
    seq: i64,
    secrets: &[&str],
) -> Vec<(String, Value, String, Value)> {
    let events = crate::audit::all_events(&server.admin(), &format!("after={seq}"), 1000);
    events
        .iter()
        .map(|event| {
            let text = event.to_string();
            for secret in secrets {
                assert!(!text.contains(secret), "a secret in the audit log: {text}");
            }
            assert_eq!(event["client_addr"], "127.0.0.1", "{event}");
            (
                event["action"].as_str().expect("an action").to_string(),
                event["actor"].clone(),
                event["target"]["id"]
                    .as_str()
                    .expect("a target")
                    .to_string(),
                event["details"].clone(),
            )
        })
        .collect()
}
