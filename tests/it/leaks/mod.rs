//! When a key leaks (API.md v2, "Leaked keys"): revoke-by-value, GitLab's Token Revocation
//! API, GitHub secret scanning, and `authkeys scan` with its pre-commit hook's rules.

mod github;
mod gitlab;
mod gitleaks;
mod revoke_by_value;
mod scan;

use crate::support::*;
use serde_json::json;

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
