//! The CLI for scoped admin tokens, the audit log and webhooks, end to end: the real binary
//! against a real server, in the `cli` module's sandbox.

use crate::cli::Sandbox;
use crate::support::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn admin_tokens_are_created_used_listed_and_revoked_from_the_cli() {
    let sandbox = Sandbox::new();
    sandbox.server.create_app("ci");
    let created = sandbox
        .admin(&[
            "admin-tokens",
            "create",
            "--name",
            "ci",
            "--scope",
            "keys:write",
            "--scope",
            "keys:read",
            "--app",
            "ci",
            "--max-key-lifetime",
            "600",
            "--ephemeral-only",
            "--json",
        ])
        .json();
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["apps"], json!(["ci"]));
    assert_eq!(created["allowed_tags"], json!(null));
    let as_token = |args: &[&str]| {
        sandbox.run(
            args,
            &[
                ("AUTHKEYS_SERVER", &sandbox.server.url),
                ("AUTHKEYS_ADMIN_TOKEN", token),
            ],
        )
    };
    let key = as_token(&[
        "keys",
        "create",
        "--app",
        "ci",
        "--ephemeral",
        "--expires-in",
        "5m",
        "--json",
    ])
    .json();
    assert!(key["expires_at"].is_string(), "{key}");
    let refused = as_token(&["keys", "create", "--app", "ci", "--expires-in", "5m"]);
    assert!(
        refused.error().contains("policy_violation"),
        "{}",
        refused.error()
    );
    let forbidden = as_token(&["apps", "create", "other"]);
    assert!(
        forbidden.error().contains("forbidden"),
        "{}",
        forbidden.error()
    );

    let listed = sandbox.admin(&["admin-tokens", "list"]);
    let text = listed.success();
    assert!(
        text.contains(id) && text.contains("keys:write, keys:read"),
        "{text}"
    );
    assert!(
        !text.contains(token),
        "the listing shows the secret: {text}"
    );
    let text = sandbox
        .admin(&["admin-tokens", "revoke", id])
        .success()
        .to_string();
    assert!(text.contains(id), "{text}");
    let after = as_token(&["keys", "list", "--app", "ci"]);
    assert!(
        after
            .error()
            .contains("did not accept AUTHKEYS_ADMIN_TOKEN"),
        "{}",
        after.error()
    );
    let bad = sandbox.admin(&[
        "admin-tokens",
        "create",
        "--name",
        "x",
        "--scope",
        "keys:all",
    ]);
    assert!(bad.error().contains("scopes"), "{}", bad.error());
}

#[test]
fn the_audit_log_is_listed_filtered_and_followed_from_the_cli() {
    let sandbox = Sandbox::new();
    sandbox.server.create_app("ci");
    sandbox.server.create_key("ci", json!({}));
    let listing = sandbox.admin(&["audit", "--json"]).json();
    let actions: Vec<&str> = listing["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["app.created", "key.created"]);
    let table = sandbox
        .admin(&["audit", "--action", "key.created"])
        .success()
        .to_string();
    assert!(
        table.contains("key.created") && !table.contains("app.created"),
        "{table}"
    );
    let bad = sandbox.admin(&["audit", "--action", "nope"]);
    assert!(bad.error().contains("action"), "{}", bad.error());

    let mut follow = Command::new(BIN);
    follow
        .args([
            "audit",
            "--follow",
            "--json",
            "--app",
            "later",
            "--poll-ms",
            "50",
        ])
        .env("AUTHKEYS_SERVER", &sandbox.server.url)
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Reaped::new(follow.spawn().unwrap());
    let stdout = child.child_mut().stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    sandbox.server.create_app("later");
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a followed event");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (event["action"].as_str(), event["app"].as_str()),
        (Some("app.created"), Some("later"))
    );
    sandbox.server.admin().delete("/v1/apps/later").expect(204);
    let line = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.contains("app.deleted"), "{line}");
    child.kill9();
}

#[test]
fn webhooks_are_created_listed_inspected_and_deleted_from_the_cli() {
    let sandbox = Sandbox::new();
    let receiver = Receiver::start();
    let created = sandbox
        .admin(&[
            "webhooks",
            "create",
            "--url",
            &receiver.url(),
            "--event",
            "app.*",
            "--description",
            "ops",
            "--json",
        ])
        .json();
    let id = created["id"].as_str().unwrap();
    receiver.set_secret(id, created["secret"].as_str().unwrap());
    sandbox.server.create_app("ci");
    wait_for("the delivery", Duration::from_secs(20), || {
        !receiver.received().is_empty()
    });
    assert!(receiver.received()[0].signature_ok);
    let text = sandbox.admin(&["webhooks", "list"]).success().to_string();
    assert!(text.contains(id) && text.contains("app.*"), "{text}");
    assert!(
        !text.contains(created["secret"].as_str().unwrap()),
        "{text}"
    );
    // The receiver has it; the server records the attempt once the answer is in.
    let recorded = format!("/v1/webhooks/{id}/deliveries");
    wait_for("the recorded delivery", Duration::from_secs(20), || {
        let page = sandbox.server.admin().get(&recorded).expect(200);
        !page["deliveries"][0]["delivered_at"].is_null()
    });
    let deliveries = sandbox
        .admin(&["webhooks", "deliveries", id, "--json"])
        .json();
    assert_eq!(deliveries["deliveries"][0]["attempts"], 1, "{deliveries}");
    sandbox.admin(&["webhooks", "delete", id]).success();
    let listed = sandbox.admin(&["webhooks", "list", "--json"]).json();
    assert_eq!(listed["webhooks"], json!([]));
    let bad = sandbox.admin(&["webhooks", "create", "--url", "ftp://x/", "--event", "*"]);
    assert!(bad.error().contains("url"), "{}", bad.error());
}
