//! Throttling of failed logins and verifies per client address. The default never refuses a
//! legitimate burst (200 losing logins in a single-use race), slows a sustained guessing loop
//! to the refill rate, and leaves other addresses alone. A second client is a second loopback
//! address (127.0.0.2), which the server sees as another client.

use super::db;
use super::races::{concurrent_logins, tally, winners_and_losers};
use super::raw::{Conn, RawReply};
use crate::support::*;
use authkeys::token::{self, TokenKind};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A well-formed key that exists nowhere: what a guesser sends.
fn guess() -> String {
    token::generate(TokenKind::AuthKey).expose().to_string()
}

fn login(conn: &mut Conn, auth_key: &str) -> RawReply {
    conn.post("/v1/auth/login", None, &json!({"auth_key": auth_key}))
}

fn verify(conn: &mut Conn, key: &str) -> RawReply {
    conn.post("/v1/keys/verify", None, &json!({"key": key}))
}

/// Asserts a contract-shaped 429 and returns its Retry-After in seconds.
#[track_caller]
fn retry_after(reply: &RawReply) -> u64 {
    assert_eq!(reply.status, 429, "{:?}", reply.json);
    assert_eq!(reply.code(), Some("too_many_requests"));
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    reply
        .header("Retry-After")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "a 429 needs Retry-After in whole seconds: {:?}",
                reply.headers
            )
        })
}

#[test]
fn a_burst_of_200_failed_logins_from_one_address_gets_401s_by_default() {
    let server = TestServer::start();
    let app = server.create_app("race");
    let created = server.create_key(&app, json!({}));
    let results = concurrent_logins(&server, created["key"].as_str().unwrap(), 201);
    let (winners, losers) = winners_and_losers(&results);
    assert_eq!((winners.len(), losers), (1, 200), "{:?}", tally(&results));
}

#[test]
fn a_sustained_guessing_loop_is_slowed_by_default_and_other_clients_are_not() {
    let server = TestServer::start();
    let app = server.create_app("fleet");
    let key = server.create_key(&app, json!({"reusable": true}));
    let key = key["key"].as_str().unwrap();

    // Guess, alternating logins and verifies, until refused. The default allows a burst of
    // 300 failures and earns back 5 a second.
    let mut guesser = Conn::open(&server.url);
    let started = Instant::now();
    let mut failures = 0u32;
    let refused = loop {
        let reply = if failures.is_multiple_of(2) {
            login(&mut guesser, &guess())
        } else {
            verify(&mut guesser, &guess())
        };
        match reply.status {
            401 => assert_eq!(reply.code(), Some("invalid_auth_key")),
            200 => assert_eq!(reply.json["code"], "not_found"),
            _ => break reply,
        }
        failures += 1;
        assert!(failures < 2_000, "2,000 failed guesses and never throttled");
    };
    let earned = (started.elapsed().as_secs_f64() * 5.0) as u32;
    assert!(
        (300..=301 + earned).contains(&failures),
        "throttled after {failures} failures in {:?}",
        started.elapsed()
    );
    assert_eq!(
        retry_after(&refused),
        1,
        "five a second: the next one is under a second away"
    );

    // Keep guessing: only the refill gets through.
    let loop_started = Instant::now();
    let (mut attempts, mut allowed) = (0u32, 0u32);
    while loop_started.elapsed() < Duration::from_millis(1500) {
        let reply = login(&mut guesser, &guess());
        attempts += 1;
        if reply.status == 429 {
            retry_after(&reply);
        } else {
            assert_eq!(reply.status, 401);
            allowed += 1;
        }
    }
    let earned = (loop_started.elapsed().as_secs_f64() * 5.0).ceil() as u32;
    assert!(
        (1..=earned + 1).contains(&allowed),
        "{allowed} of {attempts} guesses got through in {:?}",
        loop_started.elapsed()
    );
    assert!(
        attempts > 10 * allowed,
        "the loop was not refused: {allowed} of {attempts}"
    );

    // Another address is not affected: its failures are 401s and its logins work.
    let mut other = Conn::open_from(&server.url, OTHER_CLIENT);
    assert_eq!(login(&mut other, &guess()).code(), Some("invalid_auth_key"));
    assert_eq!(verify(&mut other, key).json["valid"], true);
    let logged_in = login(&mut other, key);
    assert_eq!(logged_in.status, 201);
    // Nor is anything but logins and verifies on the guessing address.
    let session = logged_in.json["session_token"].as_str().unwrap();
    let bearer = format!("Bearer {session}");
    assert_eq!(
        guesser
            .send("GET", "/v1/auth/whoami", &[("Authorization", &bearer)], b"")
            .status,
        200
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        guesser
            .send("GET", "/v1/apps", &[("Authorization", &admin)], b"")
            .status,
        200
    );
    let log = server.log();
    assert!(log.contains("throttling 127.0.0.1"), "{log}");
    assert!(!log.contains("throttling 127.0.0.2"), "{log}");
}

#[test]
fn a_throttled_client_cannot_consume_a_key() {
    // One failure back a minute, so nothing refills during the test.
    let options = Options::default()
        .arg("--login-failures-burst", "3")
        .arg("--login-failures-per-minute", "1");
    let server = TestServer::start_with(options);
    let app = server.create_app("ci");
    let single_use = server.create_key(&app, json!({}));
    let single_use_key = single_use["key"].as_str().unwrap();

    let mut guesser = Conn::open(&server.url);
    for _ in 0..3 {
        assert_eq!(verify(&mut guesser, &guess()).json["code"], "not_found");
    }
    assert_eq!(retry_after(&verify(&mut guesser, &guess())), 60);
    assert_eq!(retry_after(&login(&mut guesser, &guess())), 60);
    // The right key from the throttled address is refused too, before it is looked at.
    retry_after(&login(&mut guesser, single_use_key));
    let uses = "SELECT uses FROM keys WHERE id = ?1";
    let path = server.db_path();
    assert_eq!(
        db::scalar(&path, uses, [single_use["id"].as_str().unwrap()]),
        0
    );
    assert_eq!(db::scalar(&path, "SELECT count(*) FROM machines", []), 0);

    // From another address the key is still good.
    let mut other = Conn::open_from(&server.url, OTHER_CLIENT);
    assert_eq!(verify(&mut other, single_use_key).json["valid"], true);
    assert_eq!(login(&mut other, single_use_key).status, 201);
}

#[test]
fn the_throttle_is_set_by_environment_and_waiting_retry_after_is_enough() {
    let options = Options {
        env: vec![
            ("AUTHKEYS_LOGIN_FAILURES_BURST".into(), "2".into()),
            ("AUTHKEYS_LOGIN_FAILURES_PER_MINUTE".into(), "60".into()),
        ],
        ..Options::default()
    };
    let server = TestServer::start_with(options);
    let mut guesser = Conn::open(&server.url);
    for _ in 0..2 {
        assert_eq!(login(&mut guesser, &guess()).status, 401);
    }
    let wait = retry_after(&login(&mut guesser, &guess()));
    assert_eq!(wait, 1);
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(login(&mut guesser, &guess()).status, 401);
    retry_after(&login(&mut guesser, &guess()));
}

#[test]
fn zero_turns_the_throttle_off() {
    let server = TestServer::start_with(Options::default().arg("--login-failures-per-minute", "0"));
    let mut guesser = Conn::open(&server.url);
    for n in 0..600u32 {
        let reply = if n.is_multiple_of(2) {
            login(&mut guesser, "ena_not-even-well-formed")
        } else {
            verify(&mut guesser, &guess())
        };
        assert!(
            reply.status == 401 || reply.json["valid"] == false,
            "attempt {n}: {:?}",
            reply.json
        );
    }
}
