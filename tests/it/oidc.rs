//! Login with a workload identity (API.md v2, "Login with a workload identity (OIDC)"): trust
//! policies, and logins with ID tokens minted by the local dev issuer (`authkeys::DevIssuer`,
//! in this process), each refusal naming its check.

use crate::support::{Api, Options, Reply, TestServer, header, whoami};
use authkeys::{DevAlg, DevClaims, DevIssuer};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A server that trusts http:// issuers (the dev issuer is plain HTTP on loopback), refetches
/// a JWKS at most every `refetch_ms`, and never throttles the deliberate failures here.
fn server_for_issuers(refetch_ms: u64) -> TestServer {
    TestServer::start_with(options_for_issuers(refetch_ms))
}

fn options_for_issuers(refetch_ms: u64) -> Options {
    Options::default()
        .arg("--login-failures-burst", "0")
        .arg("--oidc-refetch-interval-ms", &refetch_ms.to_string())
        .arg("--oidc-fetch-timeout-ms", "1000")
        .flag("--oidc-allow-insecure-issuer")
}

fn issuer() -> DevIssuer {
    DevIssuer::start("127.0.0.1:0", DevClaims::default()).expect("starting the dev issuer")
}

/// A trust policy of `app` for `issuer`'s tokens of acme/api's main branch; `extra` fields
/// are added to (or replace) the defaults.
fn create_policy(server: &TestServer, app: &str, issuer: &str, extra: Value) -> Value {
    let mut body = json!({
        "issuer": issuer,
        "audience": "authkeys",
        "subject": "repo:acme/api:ref:refs/heads/*",
        "claims": {"repository_owner": "acme"},
    });
    for (name, value) in extra.as_object().expect("an object") {
        body[name] = value.clone();
    }
    server
        .admin()
        .post(&format!("/v1/apps/{app}/trust-policies"), &body)
        .expect(201)
}

fn login(server: &TestServer, app: &str, token: &str) -> Reply {
    login_with(&server.anonymous(), app, token)
}

fn login_with(api: &Api, app: &str, token: &str) -> Reply {
    api.post(
        "/v1/auth/login",
        &json!({"id_token": token, "app": app, "machine": "runner"}),
    )
}

/// Asserts a 401 `invalid_id_token` whose message names `check`, and never quotes the token.
#[track_caller]
fn assert_refused(reply: Reply, token: &str, check: &str) {
    let body = reply.body.clone();
    let json = reply.expect_error(401, "invalid_id_token");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{check}:")),
        "expected the check `{check}` named, got: {message}"
    );
    let sample = &token[token.len().saturating_sub(40)..];
    assert!(!body.contains(sample), "the token is echoed: {body}");
}

#[test]
fn an_id_token_logs_in_with_the_policys_settings_and_whoami_names_the_policy() {
    let issuer = issuer();
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    let policy = create_policy(
        &server,
        &app,
        issuer.url(),
        json!({"ephemeral": true, "session_ttl": 600, "idle_timeout": 300,
               "tags": ["tag:ci", "tag:acme"], "metadata": {"team": "api"},
               "description": "acme/api main"}),
    );
    let policy_id = policy["id"].as_str().unwrap();
    assert!(policy_id.starts_with("tp_"), "{policy}");
    assert_eq!(policy["tags"], json!(["tag:acme", "tag:ci"]));
    assert_eq!(policy["claims"], json!({"repository_owner": "acme"}));
    for alg in [DevAlg::RS256, DevAlg::ES256] {
        let token = issuer.mint(alg, &issuer.claims("authkeys"));
        let logged_in = login(&server, &app, &token).expect(201);
        let machine = &logged_in["machine"];
        assert_eq!(machine["trust_policy_id"], policy_id, "{logged_in}");
        assert_eq!(machine["key_id"], Value::Null);
        assert_eq!(machine["ephemeral"], true);
        assert_eq!(machine["tags"], json!(["tag:acme", "tag:ci"]));
        assert_eq!(machine["metadata"], json!({"team": "api"}));
        let created = chrono::DateTime::parse_from_rfc3339(machine["created_at"].as_str().unwrap());
        let expires = chrono::DateTime::parse_from_rfc3339(machine["expires_at"].as_str().unwrap());
        assert_eq!((expires.unwrap() - created.unwrap()).num_seconds(), 600);
        let session = logged_in["session_token"].as_str().unwrap();
        let me = whoami(&server, session).expect(200);
        assert_eq!(me["machine"]["trust_policy_id"], policy_id);
        assert_eq!(me["app"]["id"], "ci");
        let forward = server.client(Some(session)).get("/v1/forward-auth");
        assert_eq!(forward.status, 200);
        assert_eq!(
            header(&forward.headers, "X-Authkeys-Trust-Policy-Id"),
            Some(policy_id)
        );
        assert_eq!(header(&forward.headers, "X-Authkeys-Key-Id"), Some(""));
    }
    let machines = server
        .admin()
        .get(&format!("/v1/apps/{app}/machines"))
        .expect(200);
    let listed = machines["machines"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m["trust_policy_id"] == policy_id));
    // A second policy; the list pages newest first.
    let second = create_policy(&server, &app, issuer.url(), json!({}));
    let page = server
        .admin()
        .get(&format!("/v1/apps/{app}/trust-policies?limit=1"))
        .expect(200);
    assert_eq!(page["trust_policies"][0]["id"], second["id"]);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let rest = server
        .admin()
        .get(&format!(
            "/v1/apps/{app}/trust-policies?limit=1&cursor={cursor}"
        ))
        .expect(200);
    assert_eq!(rest["trust_policies"][0]["id"], policy_id);
    assert_eq!(rest["next_cursor"], Value::Null);
}

/// alg `none`: a header and payload with an empty signature.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// HS256 with the issuer's public RSA key (its JWK's modulus, as text) as the HMAC secret:
/// the classic key-confusion forgery.
fn hs256_with_public_key(issuer: &DevIssuer, claims: &Value) -> String {
    let jwks: Value = ureq::get(&format!("{}/.well-known/jwks", issuer.url()))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let public = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(issuer.current_kid(DevAlg::RS256));
    let key = jsonwebtoken::EncodingKey::from_secret(public.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[test]
fn every_refused_id_token_is_a_401_naming_its_check() {
    let (issuer, other_issuer) = (self::issuer(), self::issuer());
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    create_policy(
        &server,
        &app,
        other_issuer.url(),
        json!({"subject": "nothing-matches"}),
    );
    let now = chrono::Utc::now().timestamp();
    let with = |changes: Value| {
        let mut claims = issuer.claims("authkeys");
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let rs = |claims: &Value| issuer.mint(DevAlg::RS256, claims);
    let replayed = rs(&with(json!({})));
    login(&server, &app, &replayed).expect(201);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an issuer no policy trusts",
            rs(&with(json!({"iss": "https://elsewhere"}))),
            "iss",
        ),
        (
            "wrong audience",
            rs(&with(json!({"aud": "someone-else"}))),
            "aud",
        ),
        (
            "subject not matching",
            rs(&with(json!({"sub": "repo:acme/api:ref:refs/tags/v1"}))),
            "sub",
        ),
        (
            "a claim not matching",
            rs(&with(json!({"repository_owner": "evil"}))),
            "claims.repository_owner",
        ),
        (
            "expired",
            rs(&with(json!({"iat": now - 900, "exp": now - 300}))),
            "exp",
        ),
        ("not yet valid", rs(&with(json!({"nbf": now + 600}))), "nbf"),
        (
            "issued in the future",
            rs(&with(json!({"iat": now + 600, "exp": now + 900}))),
            "iat",
        ),
        (
            "valid for over an hour",
            rs(&with(json!({"iat": now, "exp": now + 3601}))),
            "lifetime",
        ),
        ("replayed jti", replayed.clone(), "jti"),
        ("alg none", unsigned(&with(json!({}))), "alg"),
        (
            "HS256 with the public key",
            hs256_with_public_key(&issuer, &with(json!({}))),
            "alg",
        ),
        // Signed by another issuer's key, claiming to be this issuer: not in its JWKS.
        (
            "a key of another issuer",
            other_issuer.mint(DevAlg::RS256, &with(json!({}))),
            "kid",
        ),
        (
            "an unknown kid",
            issuer.mint_with_kid(DevAlg::RS256, "no-such-kid", &with(json!({}))),
            "kid",
        ),
        // The JWKS entry for the kid is an RSA key; the token says ES256.
        (
            "a key of the wrong type",
            issuer.mint_with_kid(
                DevAlg::ES256,
                &issuer.current_kid(DevAlg::RS256),
                &with(json!({})),
            ),
            "key type",
        ),
        (
            "over 16 KiB",
            rs(&with(json!({"padding": "x".repeat(17 * 1024)}))),
            "size",
        ),
        ("garbage", "not.a-jwt".to_string(), "format"),
        (
            "garbage in three parts",
            "eyJub3QiOg.eyJ.c2ln".to_string(),
            "format",
        ),
        (
            "a forged signature",
            {
                let token = rs(&with(json!({})));
                let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
                parts[1] = URL_SAFE_NO_PAD.encode(
                    serde_json::to_vec(&with(json!({"sub": "repo:acme/api:ref:refs/heads/x"})))
                        .unwrap(),
                );
                parts.join(".")
            },
            "signature",
        ),
    ];
    for (what, token, check) in &cases {
        let reply = login(&server, &app, token);
        if reply.status != 401 {
            reply.fail(what);
        }
        assert_refused(reply, token, check);
    }
    // None of them logged a machine in: only the first, good login did.
    let machines = server
        .admin()
        .get(&format!("/v1/apps/{app}/machines"))
        .expect(200);
    assert_eq!(machines["machines"].as_array().unwrap().len(), 1);
}

#[test]
fn refused_id_tokens_are_throttled_like_refused_keys() {
    let issuer = issuer();
    let server = TestServer::start_with(
        Options::default()
            .arg("--login-failures-burst", "3")
            .arg("--login-failures-per-minute", "1")
            .flag("--oidc-allow-insecure-issuer"),
    );
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    let mut claims = issuer.claims("wrong-audience");
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            claims["jti"] = json!(format!("{}", rand_jti()));
            login(&server, &app, &issuer.mint(DevAlg::RS256, &claims)).status
        })
        .collect();
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
}

fn rand_jti() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_used_token_is_still_refused_after_a_restart() {
    let issuer = issuer();
    let mut server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    let token = issuer.mint(DevAlg::ES256, &issuer.claims("authkeys"));
    login(&server, &app, &token).expect(201);
    server.kill9();
    server.restart();
    assert_refused(login(&server, &app, &token), &token, "jti");
    // A fresh token of the same job still logs in.
    let fresh = issuer.mint(DevAlg::ES256, &issuer.claims("authkeys"));
    login(&server, &app, &fresh).expect(201);
}

#[test]
fn a_rotated_key_is_fetched_but_unknown_kids_refetch_at_most_once_per_interval() {
    let issuer = issuer();
    let server = server_for_issuers(1_500);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    login(
        &server,
        &app,
        &issuer.mint(DevAlg::RS256, &issuer.claims("authkeys")),
    )
    .expect(201);
    assert_eq!(issuer.jwks_served(), 1);
    // Known kids are answered from the cache.
    login(
        &server,
        &app,
        &issuer.mint(DevAlg::ES256, &issuer.claims("authkeys")),
    )
    .expect(201);
    assert_eq!(issuer.jwks_served(), 1);
    // Made-up kids: refused, and the issuer asked again at most once per interval (a loaded
    // machine may take more than one interval for the loop).
    let started = Instant::now();
    for _ in 0..5 {
        let token = issuer.mint_with_kid(DevAlg::RS256, "made-up", &issuer.claims("authkeys"));
        assert_refused(login(&server, &app, &token), &token, "kid");
    }
    let intervals = (started.elapsed().as_millis() / 1_500) as usize + 1;
    let refetches = issuer.jwks_served() - 1;
    assert!(
        refetches <= intervals,
        "{refetches} refetches in {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1_600));
    issuer.rotate().expect("rotating");
    let before = issuer.jwks_served();
    let rotated = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    login(&server, &app, &rotated).expect(201);
    assert_eq!(
        issuer.jwks_served(),
        before + 1,
        "one refetch for the new kid"
    );
}

/// A key the issuer stopped publishing is trusted no longer than the JWKS's maximum age,
/// though its `kid` is still cached and unknown kids refetch only once a minute.
#[test]
fn a_key_the_issuer_dropped_is_refused_once_the_cached_jwks_is_too_old() {
    const MAX_AGE: Duration = Duration::from_millis(1_000);
    let issuer = issuer();
    let server = TestServer::start_with(
        options_for_issuers(60_000).arg("--oidc-jwks-max-age-ms", &MAX_AGE.as_millis().to_string()),
    );
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    let fetched = Instant::now();
    login(
        &server,
        &app,
        &issuer.mint(DevAlg::RS256, &issuer.claims("authkeys")),
    )
    .expect(201);
    assert_eq!(issuer.jwks_served(), 1);
    // Signed by the key about to be dropped: two rotations unpublish it.
    let old = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    let old_kid = issuer.current_kid(DevAlg::RS256);
    issuer.rotate().expect("rotating");
    issuer.rotate().expect("rotating again");
    std::thread::sleep((MAX_AGE + Duration::from_millis(300)).saturating_sub(fetched.elapsed()));
    assert_refused(login(&server, &app, &old), &old, "kid");
    assert_eq!(issuer.jwks_served(), 2, "the old JWKS was fetched again");
    // The current key, published by the refetch, verifies.
    assert_ne!(issuer.current_kid(DevAlg::RS256), old_kid);
    let current = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    login(&server, &app, &current).expect(201);
}

#[test]
fn an_issuer_that_never_answers_delays_only_its_own_logins() {
    let issuer = issuer();
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    create_policy(&server, &app, &silent_url, json!({}));
    // Warm the good issuer's keys.
    login(
        &server,
        &app,
        &issuer.mint(DevAlg::RS256, &issuer.claims("authkeys")),
    )
    .expect(201);
    std::thread::scope(|scope| {
        let stuck: Vec<_> = (0..3)
            .map(|_| {
                let mut claims = issuer.claims("authkeys");
                claims["iss"] = json!(silent_url);
                let token = issuer.mint(DevAlg::RS256, &claims);
                let (api, app) = (server.anonymous(), &app);
                scope.spawn(move || {
                    let started = Instant::now();
                    let reply = login_with(&api, app, &token);
                    (reply.status, reply.body, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..5 {
            let started = Instant::now();
            login(
                &server,
                &app,
                &issuer.mint(DevAlg::ES256, &issuer.claims("authkeys")),
            )
            .expect(201);
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(800),
                "a good login took {took:?}"
            );
        }
        for handle in stuck {
            let (status, body, took) = handle.join().unwrap();
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("jwks:"), "{body}");
            assert!(
                took < Duration::from_secs(5),
                "the fetch was not cut short: {took:?}"
            );
        }
    });
}

#[test]
fn issuers_must_be_https_unless_the_server_allows_http() {
    let issuer = issuer();
    let mut server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    let token = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    // The same database, without --oidc-allow-insecure-issuer.
    server.terminate();
    server.restart_with(Options::default().arg("--login-failures-burst", "0"));
    let refused = server.admin().post(
        &format!("/v1/apps/{app}/trust-policies"),
        &json!({"issuer": issuer.url(), "audience": "a", "subject": "*"}),
    );
    let error = refused.expect_error(422, "invalid_field");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("issuer"),
        "{error}"
    );
    assert_refused(login(&server, &app, &token), &token, "iss");
    assert_eq!(issuer.jwks_served(), 0, "an http issuer was contacted");
    create_policy(
        &server,
        &app,
        "https://token.actions.githubusercontent.com",
        json!({}),
    );
}

#[test]
fn bad_trust_policies_are_422_naming_the_field_and_change_nothing() {
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    let base = json!({"issuer": "https://issuer.example", "audience": "a", "subject": "*"});
    let cases = [
        (json!({"session_ttl": 600}), "session_ttl"),
        (json!({"ephemeral": true, "session_ttl": 5}), "session_ttl"),
        (json!({"idle_timeout": 1}), "idle_timeout"),
        (json!({"tags": ["nope"]}), "tags"),
        (json!({"tags": "tag:x"}), "tags"),
        (json!({"metadata": {"x": "y".repeat(2000)}}), "metadata"),
        (json!({"claims": {"repository_owner": 7}}), "claims"),
        (json!({"issuer": "ftp://issuer.example"}), "issuer"),
        (json!({"issuer": "https://issuer.example?x=1"}), "issuer"),
        (json!({"audience": ""}), "audience"),
        (json!({"subject": "a\u{202e}b"}), "subject"),
    ];
    for (change, field) in cases {
        let mut body = base.clone();
        for (name, value) in change.as_object().unwrap() {
            body[name] = value.clone();
        }
        let reply = server
            .admin()
            .post(&format!("/v1/apps/{app}/trust-policies"), &body);
        let error = reply.expect_error(422, "invalid_field");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let unknown = server.admin().post(
        &format!("/v1/apps/{app}/trust-policies"),
        &json!({"issuer": "https://i", "audience": "a", "subject": "*", "audiance": "x"}),
    );
    unknown.expect_error(422, "unknown_field");
    let listed = server
        .admin()
        .get(&format!("/v1/apps/{app}/trust-policies"))
        .expect(200);
    assert_eq!(listed["trust_policies"], json!([]));
    server
        .admin()
        .delete(&format!("/v1/apps/{app}/trust-policies/tp_nope"))
        .expect_error(404, "trust_policy_not_found");
}

/// The CLI end to end: a trust policy made with `trust-policies create`, logins with
/// `--id-token-file` and with `--github-actions` against the dev issuer standing in for
/// GitHub's token endpoint (which checks the request token and the audience), and
/// `trust-policies delete` logging the machines out.
#[test]
fn the_cli_makes_policies_and_logs_in_with_a_token_file_or_github_actions() {
    use crate::cli::Sandbox;
    let issuer = issuer();
    let s = Sandbox::with(Options::default().flag("--oidc-allow-insecure-issuer"));
    s.admin(&["apps", "create", "ci"]).success();
    let created = s
        .admin(&[
            "trust-policies",
            "create",
            "--app",
            "ci",
            "--issuer",
            issuer.url(),
            "--audience",
            "authkeys",
            "--subject",
            "repo:acme/api:ref:refs/heads/*",
            "--claim",
            "repository_owner=acme",
            "--ephemeral",
            "--tag",
            "tag:ci",
            "--json",
        ])
        .json();
    let policy_id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["claims"], json!({"repository_owner": "acme"}));
    let listed = s.admin(&["trust-policies", "list", "--app", "ci"]);
    assert!(listed.success().contains(&policy_id), "{}", listed.stdout);

    let config = s.config_dir("job");
    let token_file = config.parent().unwrap().join("id-token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    let token = issuer.mint(DevAlg::ES256, &issuer.claims("authkeys"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let file = token_file.to_str().unwrap();
    let login = s.machine(
        &config,
        &["login", "--app", "ci", "--id-token-file", file, "--json"],
    );
    let logged_in = login.json();
    assert_eq!(logged_in["machine"]["trust_policy_id"], policy_id.as_str());
    let listed = s.admin(&["machines", "list", "--app", "ci"]);
    assert!(
        listed.success().contains(&policy_id),
        "the KEY column names the policy: {}",
        listed.stdout
    );
    let me = s.machine(&config, &["whoami", "--json"]).json();
    assert_eq!(me["machine"]["tags"], json!(["tag:ci"]));
    // The same token again: refused, naming the check, never echoing the token.
    let replay = s.machine(&config, &["login", "--app", "ci", "--id-token-file", file]);
    assert!(!replay.status.success(), "{}", replay.stdout);
    assert!(replay.stderr.contains("jti"), "{}", replay.stderr);
    assert!(
        !replay.stderr.contains(&token[token.len() - 30..]),
        "{}",
        replay.stderr
    );

    let actions_url = format!("{}/token", issuer.url());
    let actions = |request_token: &str, audience: &str| {
        s.run(
            &[
                "login",
                "--app",
                "ci",
                "--github-actions",
                "--audience",
                audience,
                "--json",
            ],
            &[
                ("AUTHKEYS_SERVER", &s.server.url),
                ("AUTHKEYS_CONFIG_DIR", config.to_str().unwrap()),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &actions_url),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
            ],
        )
    };
    let from_actions = actions(issuer.request_token(), "authkeys").json();
    assert_eq!(
        from_actions["machine"]["trust_policy_id"],
        policy_id.as_str()
    );
    // The stand-in refuses a wrong request token; a token for another audience is refused by
    // the server.
    let wrong_request_token = actions("not-the-token", "authkeys");
    assert!(!wrong_request_token.status.success());
    assert!(
        wrong_request_token.stderr.contains("401"),
        "{}",
        wrong_request_token.stderr
    );
    let other_audience = actions(issuer.request_token(), "someone-else");
    assert!(!other_audience.status.success());
    assert!(
        other_audience.stderr.contains("aud"),
        "{}",
        other_audience.stderr
    );
    let outside_actions = s.machine(&config, &["login", "--app", "ci", "--github-actions"]);
    assert!(
        outside_actions
            .stderr
            .contains("ACTIONS_ID_TOKEN_REQUEST_URL"),
        "{}",
        outside_actions.stderr
    );

    let session = s.run(
        &["session-token"],
        &[("AUTHKEYS_CONFIG_DIR", config.to_str().unwrap())],
    );
    let session = session.success().trim().to_string();
    s.admin(&["trust-policies", "delete", "--app", "ci", &policy_id])
        .success();
    whoami(&s.server, &session).expect_error(401, "invalid_credentials");
}

/// `login --app APP --id-token-file -` reads the token from stdin (as a CI step pipes it);
/// empty input is refused before anything is sent.
#[test]
fn the_cli_reads_the_id_token_from_stdin() {
    use crate::cli::Sandbox;
    let issuer = issuer();
    let s = Sandbox::with(Options::default().flag("--oidc-allow-insecure-issuer"));
    let app = s.server.create_app("ci");
    let policy = create_policy(&s.server, &app, issuer.url(), json!({}));
    let config = s.config_dir("job");
    let env = [
        ("AUTHKEYS_SERVER", s.server.url.as_str()),
        ("AUTHKEYS_CONFIG_DIR", config.to_str().unwrap()),
    ];
    let login_args = ["login", "--app", "ci", "--id-token-file", "-", "--json"];
    let token = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    let piped = s.run_with_stdin(&login_args, &env, Some(&format!("{token}\n")));
    let logged_in = piped.json();
    assert_eq!(logged_in["machine"]["trust_policy_id"], policy["id"]);
    let me = s.machine(&config, &["whoami", "--json"]).json();
    assert_eq!(me["machine"]["trust_policy_id"], policy["id"]);

    let empty = s.run_with_stdin(&login_args, &env, Some(""));
    assert!(!empty.status.success(), "{}", empty.stdout);
    assert!(
        empty.stderr.contains("holds no ID token"),
        "{}",
        empty.stderr
    );
    let machines = s.server.admin().get("/v1/apps/ci/machines").expect(200);
    assert_eq!(machines["machines"].as_array().unwrap().len(), 1);
}

/// `authkeys dev-oidc-issuer` serves an issuer a server trusts (with
/// --oidc-allow-insecure-issuer) and a GitHub-Actions-like token endpoint for `login
/// --github-actions`, as docs/cli.md shows.
#[test]
fn the_dev_oidc_issuer_command_lets_a_machine_log_in_locally() {
    use crate::cli::Sandbox;
    use crate::support::ServerProcess;
    let s = Sandbox::with(Options::default().flag("--oidc-allow-insecure-issuer"));
    let mut command = std::process::Command::new(crate::support::BIN);
    command.args([
        "dev-oidc-issuer",
        "--repository",
        "octo/tools",
        "--ref",
        "refs/heads/dev",
    ]);
    let log = s.config_dir("issuer").with_extension("log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let dev = ServerProcess::spawn(command, &log);
    let ready = dev.ready();
    let issuer_url = ready["issuer"].as_str().expect("issuer").to_string();
    s.admin(&["apps", "create", "tools"]).success();
    s.admin(&[
        "trust-policies",
        "create",
        "--app",
        "tools",
        "--issuer",
        &issuer_url,
        "--audience",
        "authkeys",
        "--subject",
        "repo:octo/tools:ref:refs/heads/*",
        "--claim",
        "repository=octo/tools",
    ])
    .success();
    let config = s.config_dir("runner");
    let login = s.run(
        &["login", "--app", "tools", "--github-actions", "--json"],
        &[
            ("AUTHKEYS_SERVER", &s.server.url),
            ("AUTHKEYS_CONFIG_DIR", config.to_str().unwrap()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                ready["ACTIONS_ID_TOKEN_REQUEST_URL"].as_str().unwrap(),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                ready["ACTIONS_ID_TOKEN_REQUEST_TOKEN"].as_str().unwrap(),
            ),
        ],
    );
    assert_eq!(login.json()["machine"]["app"], "tools");
    dev.send_signal("TERM");
}

/// One request of the deletion race: when it started and ended, and whether it was let in.
struct Seen {
    started: Instant,
    finished: Instant,
    login: bool,
    accepted: bool,
    detail: String,
}

/// Deleting a trust policy while 6 clients log in through it and call whoami: every request
/// that starts after the DELETE returned is refused, logins and sessions alike, and no machine
/// of the policy is left, whichever way each racing login went.
#[test]
fn deleting_a_policy_while_clients_log_in_through_it_leaves_nobody_in() {
    const CLIENTS: usize = 6;
    const TOKENS: usize = 30;
    let issuer = issuer();
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    let policy = create_policy(&server, &app, issuer.url(), json!({}));
    let policy_id = policy["id"].as_str().unwrap().to_string();
    // A key login of the same app must survive the deletion.
    let key = server.create_key(&app, json!({}));
    let keyed = crate::support::session_of(&server.login(key["key"].as_str().unwrap()));
    let tokens: Vec<Vec<String>> = (0..CLIENTS)
        .map(|_| {
            (0..TOKENS)
                .map(|_| issuer.mint(DevAlg::ES256, &issuer.claims("authkeys")))
                .collect()
        })
        .collect();
    let deleted: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let logins_done = std::sync::atomic::AtomicUsize::new(0);
    let seen: Vec<Seen> = std::thread::scope(|scope| {
        let clients: Vec<_> = tokens
            .iter()
            .map(|tokens| {
                let (api, app, deleted, done) = (server.anonymous(), &app, &deleted, &logins_done);
                let url = server.url.clone();
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let mut sessions: Vec<String> = Vec::new();
                    for token in tokens {
                        let started = Instant::now();
                        let reply = login_with(&api, app, token);
                        let finished = Instant::now();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if reply.status == 201 {
                            sessions.push(reply.json["session_token"].as_str().unwrap().into());
                        }
                        seen.push(Seen {
                            started,
                            finished,
                            login: true,
                            accepted: reply.status == 201,
                            detail: reply.body.clone(),
                        });
                        for session in &sessions {
                            let started = Instant::now();
                            let status = ureq::get(&format!("{url}/v1/auth/whoami"))
                                .header("Authorization", &format!("Bearer {session}"))
                                .config()
                                .http_status_as_error(false)
                                .build()
                                .call()
                                .map(|response| response.status().as_u16())
                                .unwrap_or(0);
                            seen.push(Seen {
                                started,
                                finished: Instant::now(),
                                login: false,
                                accepted: status == 200,
                                detail: format!("whoami {status}"),
                            });
                        }
                        if deleted.get().is_some_and(|at| started > *at) && sessions.len() > 3 {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        crate::support::wait_for("some logins", Duration::from_secs(30), || {
            logins_done.load(std::sync::atomic::Ordering::SeqCst) >= CLIENTS * 3
        });
        server
            .admin()
            .delete(&format!("/v1/apps/{app}/trust-policies/{policy_id}"))
            .expect(204);
        deleted.set(Instant::now()).unwrap();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect()
    });
    let returned = *deleted.get().unwrap();
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started > returned).collect();
    assert!(
        after.iter().any(|s| s.login),
        "no login started after the deletion"
    );
    for s in &after {
        assert!(
            !s.accepted,
            "let in after the DELETE returned: {}",
            s.detail
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.login && s.accepted && s.finished < returned),
        "no login succeeded before the deletion"
    );
    let machines = server
        .admin()
        .get(&format!("/v1/apps/{app}/machines"))
        .expect(200);
    let left: Vec<&Value> = machines["machines"].as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "only the key's machine remains: {left:?}");
    assert_eq!(left[0]["trust_policy_id"], Value::Null);
    whoami(&server, &keyed).expect(200);
}

/// Creating a policy, logging in through it and deleting it are each audited in their own
/// transaction; a token with only `trust_policies:write` may manage policies, one without it
/// may not.
#[test]
fn policies_and_their_logins_are_audited_and_need_their_scope() {
    let issuer = issuer();
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    let scoped = |scopes: Value| {
        let created = server
            .admin()
            .post("/v1/admin-tokens", &json!({"name": "t", "scopes": scopes}))
            .expect(201);
        server.client(Some(created["token"].as_str().unwrap()))
    };
    let body = json!({"issuer": issuer.url(), "audience": "authkeys", "subject": "repo:acme/*"});
    let path = format!("/v1/apps/{app}/trust-policies");
    scoped(json!(["keys:write"]))
        .post(&path, &body)
        .expect_error(403, "forbidden");
    let writer = scoped(json!(["trust_policies:write"]));
    let policy = writer.post(&path, &body).expect(201);
    let policy_id = policy["id"].as_str().unwrap();
    writer.get(&path).expect(200);
    let token = issuer.mint(DevAlg::RS256, &issuer.claims("authkeys"));
    let machine = login(&server, &app, &token).expect(201)["machine"]["id"].clone();
    writer.delete(&format!("{path}/{policy_id}")).expect(204);
    let events = server.admin().get("/v1/audit?app=ci").expect(200)["events"].clone();
    let summary: Vec<(String, String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["action"].as_str().unwrap().to_string(),
                event["actor"]["type"].as_str().unwrap().to_string(),
                event["target"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let machine = machine.as_str().unwrap().to_string();
    let expected = [
        ("app.created", "root", "ci".to_string()),
        ("trust_policy.created", "admin_token", policy_id.to_string()),
        ("machine.logged_in", "machine", machine.clone()),
        ("trust_policy.deleted", "admin_token", policy_id.to_string()),
        ("machine.logged_out", "admin_token", machine),
    ]
    .map(|(action, actor, target)| (action.to_string(), actor.to_string(), target));
    assert_eq!(summary, expected, "{events}");
    assert!(
        !events.to_string().contains(&token[token.len() - 30..]),
        "the token was logged"
    );
}

/// Many runners start at once (a matrix job): the first logins of a new issuer wait for the
/// one fetch of its keys instead of failing or fetching again.
#[test]
fn simultaneous_first_logins_share_one_fetch_of_the_keys() {
    let issuer = issuer();
    let server = server_for_issuers(60_000);
    let app = server.create_app("ci");
    create_policy(&server, &app, issuer.url(), json!({}));
    let tokens: Vec<String> = (0..8)
        .map(|_| issuer.mint(DevAlg::ES256, &issuer.claims("authkeys")))
        .collect();
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (api, app) = (server.anonymous(), &app);
                scope.spawn(move || {
                    let reply = login_with(&api, app, token);
                    (reply.status, reply.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &statuses {
        assert_eq!(*status, 201, "{body}");
    }
    assert_eq!(issuer.jwks_served(), 1);
}
