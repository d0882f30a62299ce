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
        json!({"version": env!("CARGO_PKG_VERSION"), "ephemeral_ttl": 1234})
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
