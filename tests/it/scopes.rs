//! Scoped admin tokens: the route × scope matrix walked over every operation of the served
//! OpenAPI document, what a token limited to some apps may reach, the limits on the keys a
//! token creates, bad input, `last_used_at`, and revocation that holds from the moment the
//! DELETE returns, under load.

use crate::support::*;
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const SCOPES: &[&str] = &[
    "apps:read",
    "apps:write",
    "keys:read",
    "keys:write",
    "machines:read",
    "machines:write",
    "audit:read",
    "trust_policies:write",
];

/// Creates a scoped token with `body` (root); returns the creation answer (with `token`).
pub fn create_token(server: &TestServer, body: Value) -> Value {
    server.admin().post("/v1/admin-tokens", &body).expect(201)
}

fn secret(created: &Value) -> &str {
    created["token"].as_str().expect("the token's secret")
}

/// Every operation of `/openapi.json` that takes an admin token, with its `x-scope`, on a
/// concrete path (ids that exist nowhere: a scope check comes before any lookup).
fn admin_operations(server: &TestServer) -> Vec<(String, String, String)> {
    let doc = server.anonymous().get("/openapi.json").expect(200);
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(scope) = operation["x-scope"].as_str() else {
                continue;
            };
            let path = template
                .replace("{app}", "matrix-app")
                .replace("{key}", "key_nosuchkey")
                .replace("{machine}", "mch_nosuchmachine")
                .replace("{token}", "tok_nosuchtoken")
                .replace("{webhook}", "whk_nosuchwebhook")
                .replace("{policy}", "tp_nosuchpolicy");
            assert!(!path.contains('{'), "an id the matrix cannot fill: {path}");
            operations.push((method.to_ascii_uppercase(), path, scope.to_string()));
        }
    }
    operations
}

fn send(api: &Api, method: &str, path: &str) -> Reply {
    match method {
        "GET" => api.get(path),
        "DELETE" => api.delete(path),
        _ => api.send(method, path, Some("application/json"), Some(b"{}".to_vec())),
    }
}

/// Every route × every scope: a token without the route's scope is refused with 403 before
/// anything happens; a token with only that scope gets past the check (any answer but 403);
/// root-only routes refuse even a token holding every scope; a token limited to another app
/// is refused on every path naming an app.
#[test]
fn every_route_refuses_a_token_without_its_scope_and_admits_one_with_it() {
    let server = TestServer::start();
    server.create_app("other-app");
    let operations = admin_operations(&server);
    assert!(operations.len() >= 13, "too few operations: {operations:?}");
    let with_only: Vec<(String, Api)> = SCOPES
        .iter()
        .map(|scope| {
            let created = create_token(&server, json!({"name": "only", "scopes": [scope]}));
            (scope.to_string(), server.client(Some(secret(&created))))
        })
        .collect();
    let all_but: Vec<(String, Api)> = SCOPES
        .iter()
        .map(|scope| {
            let others: Vec<&str> = SCOPES.iter().copied().filter(|s| s != scope).collect();
            let created = create_token(&server, json!({"name": "all-but", "scopes": others}));
            (scope.to_string(), server.client(Some(secret(&created))))
        })
        .collect();
    let every_scope = server.client(Some(secret(&create_token(
        &server,
        json!({"name": "every", "scopes": SCOPES}),
    ))));
    let other_app = server.client(Some(secret(&create_token(
        &server,
        json!({"name": "elsewhere", "scopes": SCOPES, "apps": ["other-app"]}),
    ))));
    let forbidden = |reply: Reply, what: &str| {
        assert_eq!(
            (reply.status, reply.json["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{what}: {} {}",
            reply.request,
            reply.body
        );
    };
    for (method, path, scope) in &operations {
        if scope == "root" {
            forbidden(send(&every_scope, method, path), "root-only route");
            for (_, api) in &with_only {
                forbidden(send(api, method, path), "root-only route");
            }
            continue;
        }
        if scope == "any" {
            for (held, api) in with_only.iter().chain(&all_but) {
                let reply = send(api, method, path);
                assert_ne!(
                    reply.status, 403,
                    "{method} {path} with {held}: {}",
                    reply.body
                );
            }
            continue;
        }
        assert!(SCOPES.contains(&scope.as_str()), "unknown x-scope {scope}");
        for (held, api) in &with_only {
            let reply = send(api, method, path);
            if held == scope {
                assert_ne!(
                    reply.status, 403,
                    "{method} {path} with {scope}: {}",
                    reply.body
                );
                assert_ne!(reply.status, 401, "{method} {path}: {}", reply.body);
            } else {
                forbidden(reply, &format!("{method} {path} with only {held}"));
            }
        }
        for (lacking, api) in &all_but {
            let reply = send(api, method, path);
            if lacking == scope {
                forbidden(reply, &format!("{method} {path} without {scope}"));
            } else {
                assert_ne!(reply.status, 403, "{method} {path}: {}", reply.body);
            }
        }
        if path.contains("/v1/apps/matrix-app") {
            forbidden(
                send(&other_app, method, path),
                "an app outside the token's apps",
            );
        }
    }
    // Nothing the refused requests named was created.
    let apps = server.admin().get("/v1/apps").expect(200);
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1, "{apps}");
}

/// A token limited to one app sees and changes only that app, and cannot reach another
/// through any route: listing, creating, reading the audit log.
#[test]
fn a_token_limited_to_one_app_reaches_no_other() {
    let server = TestServer::start();
    server.create_app("mine");
    server.create_app("theirs");
    server.create_app("spare");
    let created = create_token(
        &server,
        json!({"name": "ci", "scopes": ["apps:read", "apps:write", "keys:write", "audit:read"],
               "apps": ["mine", "spare"]}),
    );
    server.admin().delete("/v1/apps/spare").expect(204);
    let token = server.client(Some(secret(&created)));
    let listed = token.get("/v1/apps").expect(200);
    let ids: Vec<&str> = listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mine"]);
    token.get("/v1/apps/mine").expect(200);
    token.get("/v1/apps/theirs").expect(403);
    token.get("/v1/apps/nonexistent").expect(403);
    token.post("/v1/apps/mine/keys", &json!({})).expect(201);
    token.post("/v1/apps/theirs/keys", &json!({})).expect(403);
    token.post("/v1/apps", &json!({"id": "spare"})).expect(201);
    token
        .post("/v1/apps", &json!({"id": "not-mine"}))
        .expect(403);
    token.get("/v1/audit").expect(403);
    token.get("/v1/audit?app=theirs").expect(403);
    let events = token.get("/v1/audit?app=mine").expect(200);
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["app"] == "mine"),
        "{events}"
    );
    assert_eq!(
        server.admin().get("/v1/apps/theirs/keys").expect(200)["keys"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Revoking by value reaches only its apps too: another app's key and session stay live.
    let theirs = server.create_key("theirs", json!({"reusable": true}));
    let their_key = theirs["key"].as_str().unwrap();
    let their_session = server.login(their_key);
    let their_token = their_session["session_token"].as_str().unwrap();
    for value in [their_key, their_token] {
        token
            .post("/v1/keys/revoke-by-value", &json!({"key": value}))
            .expect(403);
    }
    server.login(their_key);
    server
        .client(Some(their_token))
        .get("/v1/auth/whoami")
        .expect(200);
    let mine = token.post("/v1/apps/mine/keys", &json!({})).expect(201);
    let revoked = token
        .post("/v1/keys/revoke-by-value", &json!({"key": mine["key"]}))
        .expect(200);
    assert_eq!(revoked["revoked"], true, "{revoked}");
}

/// `GET /v1/server` tells each admin token what it may do (root: everything), so the
/// dashboard can offer only that; it changes nothing and needs no scope.
#[test]
fn the_server_endpoint_tells_each_token_its_scopes_and_apps() {
    let server = TestServer::start();
    server.create_app("mine");
    let root = server.admin().get("/v1/server").expect(200);
    assert_eq!(
        root["token"],
        json!({"root": true, "scopes": SCOPES, "apps": null})
    );
    let told = |body: Value| {
        let created = create_token(&server, body);
        let client = server.client(Some(secret(&created)));
        client.get("/v1/server").expect(200)["token"].clone()
    };
    assert_eq!(
        told(json!({"name": "ci", "scopes": ["keys:write", "audit:read"], "apps": ["mine"]})),
        json!({"root": false, "scopes": ["keys:write", "audit:read"], "apps": ["mine"]})
    );
    assert_eq!(
        told(json!({"name": "reader", "scopes": ["apps:read"]})),
        json!({"root": false, "scopes": ["apps:read"], "apps": null})
    );
}

/// A token's key limits hold on every key it creates: the lifetime is filled in or refused,
/// non-ephemeral keys refused; a refused creation stores nothing.
#[test]
fn a_scoped_tokens_limits_hold_on_every_key_it_creates() {
    let server = TestServer::start();
    server.create_app("ci");
    let created = create_token(
        &server,
        json!({"name": "ci", "scopes": ["keys:write", "keys:read"], "max_key_lifetime": 600,
               "ephemeral_only": true, "allowed_tags": ["tag:ci"]}),
    );
    assert_eq!(created["max_key_lifetime"], 600);
    assert_eq!(created["allowed_tags"], json!(["tag:ci"]));
    let token = server.client(Some(secret(&created)));
    let violation = |body: Value| {
        let reply = token.post("/v1/apps/ci/keys", &body).expect(422);
        assert_eq!(
            reply["error"]["code"], "policy_violation",
            "{body}: {reply}"
        );
    };
    violation(json!({}));
    violation(json!({"ephemeral": false}));
    violation(json!({"ephemeral": true, "expires_in": 601}));
    let key = token
        .post("/v1/apps/ci/keys", &json!({"ephemeral": true}))
        .expect(201);
    let lifetime = millis(&key["expires_at"]) - millis(&key["created_at"]);
    assert_eq!(lifetime, 600_000, "{key}");
    let short = token
        .post(
            "/v1/apps/ci/keys",
            &json!({"ephemeral": true, "expires_in": 60}),
        )
        .expect(201);
    assert_eq!(
        millis(&short["expires_at"]) - millis(&short["created_at"]),
        60_000
    );
    violation(json!({"ephemeral": true, "tags": ["tag:prod"]}));
    violation(json!({"ephemeral": true, "tags": ["tag:ci", "tag:prod"]}));
    let tagged = token
        .post(
            "/v1/apps/ci/keys",
            &json!({"ephemeral": true, "tags": ["tag:ci"]}),
        )
        .expect(201);
    assert_eq!(tagged["tags"], json!(["tag:ci"]));
    let keys = server.admin().get("/v1/apps/ci/keys").expect(200);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "{keys}");
    // Root is not limited; a rotation by the token is held to its limits like a creation.
    let roots = server.create_key("ci", json!({"tags": ["tag:prod"]}));
    let rotate = format!("/v1/apps/ci/keys/{}/rotate", roots["id"].as_str().unwrap());
    let refused = token.post(&rotate, &json!({})).expect(422);
    assert_eq!(refused["error"]["code"], "policy_violation", "{refused}");
    let rotate = format!("/v1/apps/ci/keys/{}/rotate", tagged["id"].as_str().unwrap());
    let rotated = token
        .post(&rotate, &json!({"grace_seconds": 0}))
        .expect(201);
    assert_eq!(rotated["rotated_from"], tagged["id"]);
}

fn millis(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

/// Bad token requests are 422 naming the field, and create nothing.
#[test]
fn bad_token_requests_are_refused_and_create_nothing() {
    let server = TestServer::start();
    server.create_app("ci");
    let cases = [
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["keys:admin"]}), "scopes"),
        (
            json!({"name": "x", "scopes": ["keys:read", "keys:read"]}),
            "scopes",
        ),
        (
            json!({"name": "x", "scopes": ["keys:read"], "apps": []}),
            "apps",
        ),
        (
            json!({"name": "x", "scopes": ["keys:read"], "apps": ["missing"]}),
            "apps",
        ),
        (
            json!({"name": "x", "scopes": ["keys:read"], "apps": ["Bad_Id"]}),
            "apps",
        ),
        (json!({"name": "", "scopes": ["keys:read"]}), "name"),
        (
            json!({"name": "x", "scopes": ["keys:read"], "expires_in": 0}),
            "expires_in",
        ),
        (
            json!({"name": "x", "scopes": ["keys:read"], "max_key_lifetime": 0}),
            "max_key_lifetime",
        ),
        (
            json!({"name": "x", "scopes": ["keys:read"], "allowed_tags": ["ci"]}),
            "allowed_tags",
        ),
    ];
    for (body, field) in cases {
        let reply = server.admin().post("/v1/admin-tokens", &body).expect(422);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let reply = server
        .admin()
        .post(
            "/v1/admin-tokens",
            &json!({"name": "x", "scopes": ["keys:read"], "scope": 1}),
        )
        .expect(422);
    assert_eq!(reply["error"]["code"], "unknown_field");
    let listed = server.admin().get("/v1/admin-tokens").expect(200);
    assert_eq!(listed["admin_tokens"], json!([]));
    assert_eq!(listed["next_cursor"], Value::Null);
}

/// The secret is shown once and stored only as a hash; listings show the hint; `last_used_at`
/// is filled in by the sweeper after use (never by the request); an expired token is 401.
#[test]
fn a_token_is_shown_once_stored_hashed_and_stamped_when_used() {
    let server = TestServer::start_with(Options::default().arg("--sweep-interval-ms", "100"));
    let created = create_token(
        &server,
        json!({"name": "reader", "scopes": ["apps:read"], "expires_in": 2}),
    );
    let token = secret(&created).to_string();
    assert!(token.starts_with("ent_") && token.len() == 40, "{token}");
    let fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "id",
        "name",
        "scopes",
        "apps",
        "hint",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "max_key_lifetime",
        "allowed_tags",
        "ephemeral_only",
        "token",
    ] {
        assert!(fields.contains(&field), "{field} missing from {created}");
    }
    let listed = server.admin().get("/v1/admin-tokens").expect(200);
    assert!(!listed.to_string().contains(&token), "{listed}");
    assert_eq!(listed["admin_tokens"][0]["hint"], created["hint"]);
    assert_eq!(listed["admin_tokens"][0]["last_used_at"], Value::Null);
    assert!(
        !server.db().holds_in_clear(&token),
        "the token is stored in clear"
    );
    server.client(Some(&token)).get("/v1/apps").expect(200);
    wait_for(
        "last_used_at to be written",
        Duration::from_secs(10),
        || {
            let listed = server.admin().get("/v1/admin-tokens").expect(200);
            !listed["admin_tokens"][0]["last_used_at"].is_null()
        },
    );
    wait_for("the token to expire", Duration::from_secs(10), || {
        server.client(Some(&token)).get("/v1/apps").status == 401
    });
}

/// Revoking a scoped token while 8 clients keep using it: every request that starts after the
/// DELETE returns is refused, every one that ended before it was accepted, and other tokens
/// keep working throughout.
#[test]
fn revoking_a_token_while_8_clients_use_it_refuses_everything_that_starts_after() {
    const CLIENTS: usize = 8;
    let server = TestServer::start_with(Options::default().arg("--login-failures-burst", "0"));
    server.create_app("fleet");
    let doomed = create_token(&server, json!({"name": "doomed", "scopes": ["keys:read"]}));
    let other = create_token(&server, json!({"name": "other", "scopes": ["keys:read"]}));
    let rounds = AtomicUsize::new(0);
    let revoked: OnceLock<(Instant, Instant)> = OnceLock::new();
    let stop = AtomicBool::new(false);
    // (started, finished, doomed token?, accepted)
    let seen: Vec<(Instant, Instant, bool, bool)> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let doomed = server.client(Some(secret(&doomed)));
                let other = server.client(Some(secret(&other)));
                let (rounds, revoked, stop) = (&rounds, &revoked, &stop);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let mut after = 0;
                    while !stop.load(Ordering::SeqCst) && after < 10 {
                        let round_started = Instant::now();
                        for (api, is_doomed) in [(&doomed, true), (&other, false)] {
                            let started = Instant::now();
                            let reply = api.get("/v1/apps/fleet/keys");
                            assert!(
                                reply.status == 200 || reply.status == 401,
                                "{} {}",
                                reply.status,
                                reply.body
                            );
                            seen.push((started, Instant::now(), is_doomed, reply.status == 200));
                        }
                        rounds.fetch_add(1, Ordering::SeqCst);
                        if revoked.get().is_some_and(|(_, done)| round_started > *done) {
                            after += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while rounds.load(Ordering::SeqCst) < CLIENTS * 5 {
            assert!(Instant::now() < deadline, "the clients made no progress");
            thread::yield_now();
        }
        let sent = Instant::now();
        let path = format!("/v1/admin-tokens/{}", doomed["id"].as_str().unwrap());
        let reply = server.admin().delete(&path);
        let returned = Instant::now();
        revoked.set((sent, returned)).unwrap();
        if reply.status != 204 {
            stop.store(true, Ordering::SeqCst);
        }
        assert_eq!(reply.status, 204, "{}", reply.body);
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("a client panicked"))
            .collect()
    });
    let (sent, returned) = *revoked.get().unwrap();
    let mut refused_after = 0;
    for (started, finished, is_doomed, accepted) in &seen {
        if !is_doomed {
            assert!(accepted, "another token stopped working");
        } else if *started > returned {
            assert!(
                !accepted,
                "the revoked token worked after the DELETE returned"
            );
            refused_after += 1;
        } else if *finished < sent {
            assert!(accepted, "the token failed before it was revoked");
        }
    }
    assert!(
        refused_after >= CLIENTS * 9,
        "too few requests after: {refused_after}"
    );
    server
        .admin()
        .delete(&format!(
            "/v1/admin-tokens/{}",
            doomed["id"].as_str().unwrap()
        ))
        .expect(404);
}

/// Refused scoped tokens (revoked, expired or unknown, well-formed or not) drain the client's
/// failure budget like a wrong root token: then even a good token gets 429 from that address,
/// while a token without the scope (403) costs nothing.
#[test]
fn refused_scoped_tokens_are_throttled_and_forbidden_ones_are_not() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--login-failures-burst", "3")
            .arg("--login-failures-per-minute", "1"),
    );
    let good = create_token(&server, json!({"name": "good", "scopes": ["apps:read"]}));
    let revoked = create_token(&server, json!({"name": "gone", "scopes": ["apps:read"]}));
    let path = format!("/v1/admin-tokens/{}", revoked["id"].as_str().unwrap());
    server.admin().delete(&path).expect(204);
    let good = server.client(Some(secret(&good)));
    for _ in 0..5 {
        good.get("/v1/audit").expect(403);
    }
    let revoked = server.client(Some(secret(&revoked)));
    revoked.get("/v1/apps").expect(401);
    server
        .client(Some("ent_notarealtoken"))
        .get("/v1/apps")
        .expect(401);
    revoked.get("/v1/apps").expect(401);
    let throttled = good.get("/v1/apps");
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.header("Retry-After").is_some());
}
