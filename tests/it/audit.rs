//! The audit log over HTTP: one event per change with the right actor, app, target, details
//! and client address; nothing for reads; `seq` strictly increasing and never reused; filters
//! and pages; the sweeper's events (expiry, `key.expiring`) and retention.

use crate::scopes::create_token;
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Every event, walking the pages `limit` at a time with `query` (e.g. `app=x`).
pub(crate) fn all_events(api: &Api, query: &str, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit?limit={limit}");
        if !query.is_empty() {
            path = format!("{path}&{query}");
        }
        if let Some(cursor) = &cursor {
            path = format!("{path}&cursor={cursor}");
        }
        let page = api.get(&path).expect(200);
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
}

/// (action, actor type, actor id, app, target id, details.reason) of an event.
type Summary = (String, String, Value, Value, String, Value);
/// (action, (actor type, actor id), app, target id, details.reason), as a test expects it.
type Expected<'a> = (&'a str, (String, Value), Value, &'a str, Value);

fn summary(events: &[Value]) -> Vec<Summary> {
    events
        .iter()
        .map(|event| {
            (
                event["action"].as_str().unwrap().to_string(),
                event["actor"]["type"].as_str().unwrap().to_string(),
                event["actor"]["id"].clone(),
                event["app"].clone(),
                event["target"]["id"].as_str().unwrap().to_string(),
                event["details"]["reason"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_change_records_one_event_with_its_actor_and_reads_record_none() {
    let server = TestServer::start();
    let admin = server.admin();
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true}));
    let key_id = key["id"].as_str().unwrap();
    let login = server.login(key["key"].as_str().unwrap());
    let machine = login["machine"]["id"].as_str().unwrap();
    let session = server.client(login["session_token"].as_str());
    // Reads: none of these is a change.
    session.get("/v1/auth/whoami").expect(200);
    server
        .anonymous()
        .post("/v1/keys/verify", &json!({"key": key["key"]}))
        .expect(200);
    session.get("/v1/forward-auth").expect(200);
    admin.get("/v1/apps/ci/keys").expect(200);
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": "ena_nope"}))
        .expect(401);
    let before_token = all_events(&admin, "", 100).len();
    assert_eq!(before_token, 3, "{:?}", all_events(&admin, "", 100));

    let token = create_token(&server, json!({"name": "ci", "scopes": ["keys:write"]}));
    let token_id = token["id"].as_str().unwrap();
    let scoped = server.client(token["token"].as_str());
    let second = scoped.post("/v1/apps/ci/keys", &json!({})).expect(201);
    let second_id = second["id"].as_str().unwrap();
    let second_machine = server.login(second["key"].as_str().unwrap())["machine"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    scoped
        .delete(&format!("/v1/apps/ci/keys/{key_id}"))
        .expect(204);
    let rotate = format!("/v1/apps/ci/keys/{second_id}/rotate");
    let rotated = scoped
        .post(&rotate, &json!({"grace_seconds": 60}))
        .expect(201);
    let rotated_id = rotated["id"].as_str().unwrap();
    let third = server.create_key("ci", json!({"reusable": true}));
    let third_login = server.login(third["key"].as_str().unwrap());
    server
        .client(third_login["session_token"].as_str())
        .post("/v1/auth/logout", &json!({}))
        .expect(204);
    let fourth_login = server.login(third["key"].as_str().unwrap());
    let fourth_machine = fourth_login["machine"]["id"].as_str().unwrap();
    admin
        .delete(&format!("/v1/apps/ci/machines/{fourth_machine}"))
        .expect(204);
    admin.delete("/v1/apps/ci").expect(204);
    admin
        .delete(&format!("/v1/admin-tokens/{token_id}"))
        .expect(204);

    let events = all_events(&admin, "", 3);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ci = json!("ci");
    let third_id = third["id"].as_str().unwrap();
    let third_machine = third_login["machine"]["id"].as_str().unwrap();
    let reason = |r: &str| json!(r);
    let root = || ("root".to_string(), Value::Null);
    let expected: Vec<Expected> = vec![
        ("app.created", root(), ci.clone(), "ci", Value::Null),
        ("key.created", root(), ci.clone(), key_id, Value::Null),
        (
            "machine.logged_in",
            ("machine".into(), json!(machine)),
            ci.clone(),
            machine,
            Value::Null,
        ),
        (
            "admin_token.created",
            root(),
            Value::Null,
            token_id,
            Value::Null,
        ),
        (
            "key.created",
            ("admin_token".into(), json!(token_id)),
            ci.clone(),
            second_id,
            Value::Null,
        ),
        (
            "machine.logged_in",
            ("machine".into(), json!(second_machine)),
            ci.clone(),
            &second_machine,
            Value::Null,
        ),
        (
            "key.revoked",
            ("admin_token".into(), json!(token_id)),
            ci.clone(),
            key_id,
            reason("admin"),
        ),
        (
            "machine.logged_out",
            ("admin_token".into(), json!(token_id)),
            ci.clone(),
            machine,
            reason("key_revoked"),
        ),
        (
            "key.rotated",
            ("admin_token".into(), json!(token_id)),
            ci.clone(),
            second_id,
            Value::Null,
        ),
        ("key.created", root(), ci.clone(), third_id, Value::Null),
        (
            "machine.logged_in",
            ("machine".into(), json!(third_machine)),
            ci.clone(),
            third_machine,
            Value::Null,
        ),
        (
            "machine.logged_out",
            ("machine".into(), json!(third_machine)),
            ci.clone(),
            third_machine,
            reason("logout"),
        ),
        (
            "machine.logged_in",
            ("machine".into(), json!(fourth_machine)),
            ci.clone(),
            fourth_machine,
            Value::Null,
        ),
        (
            "machine.logged_out",
            root(),
            ci.clone(),
            fourth_machine,
            reason("admin"),
        ),
        ("app.deleted", root(), ci.clone(), "ci", Value::Null),
        (
            "key.revoked",
            root(),
            ci.clone(),
            second_id,
            reason("app_deleted"),
        ),
        (
            "key.revoked",
            root(),
            ci.clone(),
            rotated_id,
            reason("app_deleted"),
        ),
        (
            "key.revoked",
            root(),
            ci.clone(),
            third_id,
            reason("app_deleted"),
        ),
        (
            "machine.logged_out",
            root(),
            ci.clone(),
            &second_machine,
            reason("app_deleted"),
        ),
        (
            "admin_token.revoked",
            root(),
            Value::Null,
            token_id,
            Value::Null,
        ),
    ];
    let mut found = summary(&events);
    // The app deletion's keys come in the order SQLite returns them: compare them as a set.
    found[16..19].sort_by(|a, b| a.4.cmp(&b.4));
    let mut expected: Vec<_> = expected
        .into_iter()
        .map(|(action, (kind, id), app, target, reason)| {
            (
                action.to_string(),
                kind,
                id,
                app,
                target.to_string(),
                reason,
            )
        })
        .collect();
    expected[16..19].sort_by(|a, b| a.4.cmp(&b.4));
    assert_eq!(found, expected);
    let rotation = &events[8];
    assert_eq!(rotation["details"]["rotated_to"], rotated_id, "{rotation}");
    for event in &events {
        let addr = &event["client_addr"];
        assert_eq!(addr, "127.0.0.1", "{event}");
        assert_eq!(
            event["target"]["type"],
            event["action"].as_str().unwrap().split('.').next().unwrap()
        );
        let text = event.to_string();
        let secrets = [
            &token["token"],
            &key["key"],
            &second["key"],
            &login["session_token"],
        ];
        for secret in secrets {
            assert!(!text.contains(secret.as_str().unwrap()), "{text}");
        }
    }
}

/// A server whose log holds 8 events: apps `a` and `b` created, three keys each.
fn two_apps_with_three_keys_each() -> TestServer {
    let server = TestServer::start();
    for app in ["a", "b"] {
        server.create_app(app);
        for _ in 0..3 {
            server.create_key(app, json!({}));
        }
    }
    server
}

#[test]
fn events_are_filtered_and_paged_and_bad_filters_are_refused() {
    let server = two_apps_with_three_keys_each();
    let admin = server.admin();
    let all = all_events(&admin, "", 2);
    assert_eq!(all.len(), 8);
    assert_eq!(all, all_events(&admin, "", 1000));
    let of_a = all_events(&admin, "app=a", 1);
    assert_eq!(of_a.len(), 4);
    assert!(of_a.iter().all(|event| event["app"] == "a"));
    let keys_of_b = all_events(&admin, "app=b&action=key.created", 2);
    assert_eq!(keys_of_b.len(), 3);
    let created = all_events(&admin, "action=app.created", 1);
    assert_eq!(created.len(), 2);
    let third = all[2]["seq"].as_i64().unwrap();
    let after = all_events(&admin, &format!("after={third}"), 3);
    assert_eq!(after, all[3..].to_vec());
    let too_long = format!("app={}", "a".repeat(64));
    for bad in [
        "action=key.nope",
        "action=key.*",
        "after=-1",
        "after=x",
        "limit=0",
        "cursor=zz",
        "app=a&app=b",
        // Not an app id: no app could have it, so the filter is a mistake, not an empty page.
        &too_long,
        "app=A",
        "app=-a",
        "app=",
    ] {
        let reply = admin.get(&format!("/v1/audit?{bad}"));
        assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
        assert_eq!(reply.json["error"]["code"], "invalid_field", "{bad}");
    }
    // An app id that names no app is a filter that matches nothing.
    assert_eq!(all_events(&admin, "app=gone", 10), Vec::<Value>::new());
    admin.get("/v1/audit?nope=1").expect(400);
    // Another list's cursor is refused.
    let apps = admin.get("/v1/apps?limit=1").expect(200);
    let cursor = apps["next_cursor"].as_str().unwrap();
    admin.get(&format!("/v1/audit?cursor={cursor}")).expect(422);
}

/// `?order=desc` pages from the newest event back, with or without filters and `after`, and
/// its cursor keeps the order: every event once, reversed.
#[test]
fn newest_first_pages_walk_the_log_backwards() {
    let server = two_apps_with_three_keys_each();
    let admin = server.admin();
    let reversed = |mut events: Vec<Value>| {
        events.reverse();
        events
    };
    let all = all_events(&admin, "", 1000);
    assert_eq!(all.len(), 8);
    assert_eq!(all_events(&admin, "order=desc", 3), reversed(all.clone()));
    assert_eq!(
        all_events(&admin, "order=desc&app=a", 1),
        reversed(all_events(&admin, "app=a", 1000))
    );
    assert_eq!(
        all_events(&admin, "order=desc&action=key.created&app=b", 2),
        reversed(all_events(&admin, "action=key.created&app=b", 1000))
    );
    let third = all[2]["seq"].as_i64().unwrap();
    assert_eq!(
        all_events(&admin, &format!("order=desc&after={third}"), 2),
        reversed(all[3..].to_vec())
    );
    assert_eq!(all_events(&admin, "order=asc", 3), all);
    for bad in ["order=newest", "order=desc&order=asc", "order="] {
        let reply = admin.get(&format!("/v1/audit?{bad}"));
        assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
    }
}

/// Behind a trusted proxy the event records the forwarded client; from any other peer the
/// header is ignored.
#[test]
fn the_client_address_honours_trusted_proxies_only() {
    let post_app = |server: &TestServer, id: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .post(&format!("{}/v1/apps", server.url))
            .header("Authorization", &format!("Bearer {}", server.admin_token))
            .header("X-Forwarded-For", "198.51.100.9, 203.0.113.7")
            .header("Content-Type", "application/json")
            .send(json!({"id": id}).to_string())
            .unwrap();
        assert_eq!(response.status(), 201);
    };
    let event_addr = |server: &TestServer, app: &str| {
        let events = all_events(&server.admin(), &format!("app={app}"), 10);
        events[0]["client_addr"].clone()
    };
    let trusting =
        TestServer::start_with(Options::default().arg("--trusted-proxy", "127.0.0.1/32"));
    post_app(&trusting, "behind");
    assert_eq!(event_addr(&trusting, "behind"), "203.0.113.7");
    let direct = TestServer::start();
    post_app(&direct, "direct");
    assert_eq!(event_addr(&direct, "direct"), "127.0.0.1");
}

/// The sweeper records expired machines (actor `system`), `key.expiring` once per key, and
/// deletes events past `--audit-retention`; `seq` is never reused after that.
#[test]
fn the_sweeper_records_expiry_and_key_expiring_once_and_enforces_retention() {
    let options = Options::default()
        .arg("--sweep-interval-ms", "100")
        .arg("--ephemeral-ttl", "1")
        .arg("--audit-retention", "3");
    let server = TestServer::start_with(options);
    let admin = server.admin();
    server.create_app("ci");
    let ephemeral = server.create_key("ci", json!({"ephemeral": true}));
    let machine = server.login(ephemeral["key"].as_str().unwrap())["machine"]["id"].clone();
    // Comes within 7 days of its expiry a second after creation.
    let expiring = server.create_key("ci", json!({"expires_in": 7 * 24 * 3600 + 1}));
    let _far = server.create_key("ci", json!({"expires_in": 30 * 24 * 3600}));
    let _short = server.create_key("ci", json!({"expires_in": 3600}));
    let expired = eventually("the expiry event", Duration::from_secs(10), || {
        let events = all_events(&admin, "action=machine.logged_out", 100);
        events.first().cloned()
    });
    assert_eq!(expired["actor"], json!({"type": "system", "id": null}));
    assert_eq!(expired["target"]["id"], machine);
    assert_eq!(expired["details"]["reason"], "expired");
    assert_eq!(expired["client_addr"], Value::Null);
    let notice = eventually("key.expiring", Duration::from_secs(10), || {
        all_events(&admin, "action=key.expiring", 100)
            .first()
            .cloned()
    });
    assert_eq!(notice["target"]["id"], expiring["id"]);
    assert_eq!(notice["details"]["expires_at"], expiring["expires_at"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(all_events(&admin, "action=key.expiring", 100).len(), 1);

    let last = all_events(&admin, "", 100).last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    wait_for(
        "retention to delete every event",
        Duration::from_secs(15),
        || all_events(&admin, "", 100).is_empty(),
    );
    server.create_app("later");
    let events = all_events(&admin, "", 100);
    assert_eq!(events.len(), 1);
    assert!(
        events[0]["seq"].as_i64().unwrap() > last,
        "a seq was reused: {events:?}"
    );
}

/// A machine the sweeper logs out for idleness is recorded as such, by `system`.
#[test]
fn the_sweeper_records_idle_logouts() {
    let options = Options::default()
        .arg("--sweep-interval-ms", "100")
        .arg("--min-key-timeout-secs", "1");
    let server = TestServer::start_with(options);
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true, "idle_timeout": 1}));
    let machine = server.login(key["key"].as_str().unwrap())["machine"]["id"].clone();
    let admin = server.admin();
    let event = eventually("the idle logout", Duration::from_secs(15), || {
        all_events(&admin, "action=machine.logged_out", 100)
            .first()
            .cloned()
    });
    assert_eq!(event["target"]["id"], machine);
    assert_eq!(event["actor"], json!({"type": "system", "id": null}));
    assert_eq!(event["details"]["reason"], "idle");
}
