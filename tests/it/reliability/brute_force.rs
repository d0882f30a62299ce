//! Throttling of failed authentication attempts (logins, verifies, session and admin tokens)
//! per client address. The default never refuses a
//! legitimate burst (200 losing logins in a single-use race), slows a sustained guessing loop
//! to the refill rate, and leaves other addresses alone. A second client is a second loopback
//! address (127.0.0.2), which the server sees as another client.

use super::races::{concurrent_logins, tally, winners_and_losers};
use super::raw::{Conn, RawReply};
use crate::support::*;
use authkeys::TokenKind;
use authkeys::ops;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A well-formed key that exists nowhere: what a guesser sends.
fn guess() -> String {
    ops::generate_token(TokenKind::AuthKey).expose().to_string()
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

/// Guesses until refused, then GETs `path` with `authorization`: the reply is the refusal
/// unless the address earned a try back (one every 200 ms) in between, which a loaded machine
/// can take; so it tries again, a bounded number of times, and returns the first refusal.
#[track_caller]
fn refused_with(guesser: &mut Conn, path: &str, authorization: &str) -> RawReply {
    let mut got_through = Vec::new();
    for _ in 0..10 {
        while login(guesser, &guess()).status != 429 {}
        let reply = guesser.send("GET", path, &[("Authorization", authorization)], b"");
        if reply.status == 429 {
            return reply;
        }
        got_through.push(reply.status);
    }
    panic!("{path} was never refused right after a refused guess: {got_through:?}")
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
    // The guessing address is refused wherever it presents a credential, a good one included
    // (as its logins are: the throttle is asked first), but not where it presents none.
    let session = logged_in.json["session_token"].as_str().unwrap();
    let bearer = format!("Bearer {session}");
    retry_after(&refused_with(&mut guesser, "/v1/auth/whoami", &bearer));
    let admin = format!("Bearer {ADMIN_TOKEN}");
    retry_after(&refused_with(&mut guesser, "/v1/apps", &admin));
    assert_eq!(guesser.send("GET", "/healthz", &[], b"").status, 200);
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
    let db = server.db();
    assert_eq!(db.scalar(uses, &[single_use["id"].as_str().unwrap()]), 0);
    assert_eq!(db.scalar("SELECT count(*) FROM machines", &[]), 0);

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

/// An endpoint that takes a bearer token, as a guesser would knock on it.
#[derive(Clone, Copy, Debug)]
enum Door {
    AdminToken,
    Whoami,
    ForwardAuth,
    Logout,
}

impl Door {
    fn knock(self, conn: &mut Conn, bearer: Option<&str>) -> RawReply {
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        let (method, path) = match self {
            Door::AdminToken => ("GET", "/v1/apps"),
            Door::Whoami => ("GET", "/v1/auth/whoami"),
            Door::ForwardAuth => ("GET", "/v1/forward-auth"),
            Door::Logout => ("POST", "/v1/auth/logout"),
        };
        conn.send(method, path, &headers, b"")
    }

    /// A wrong token of the right shape: what a guesser sends.
    fn guess(self) -> String {
        let kind = match self {
            Door::AdminToken => TokenKind::Admin,
            _ => TokenKind::Session,
        };
        ops::generate_token(kind).expose().to_string()
    }
}

#[test]
fn brute_forcing_the_admin_token_whoami_forward_auth_and_logout_ends_in_429_per_address() {
    const BURST: usize = 5;
    // One failure back a minute, so nothing refills during the test.
    let options = Options::default()
        .arg("--login-failures-burst", &BURST.to_string())
        .arg("--login-failures-per-minute", "1");
    let server = TestServer::start_with(options);
    let app = server.create_app("fleet");
    let key = server.create_key(&app, json!({"reusable": true}));
    let session = session_of(&server.login(key["key"].as_str().unwrap()));
    let doors = [
        Door::AdminToken,
        Door::Whoami,
        Door::ForwardAuth,
        Door::Logout,
    ];
    for (n, door) in doors.into_iter().enumerate() {
        let good = match door {
            Door::AdminToken => ADMIN_TOKEN,
            _ => session.as_str(),
        };
        // Each door from its own address, so that each one alone is shown to end in 429.
        let guesser_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n as u8));
        let mut guesser = Conn::open_from(&server.url, guesser_ip);
        // Neither successes nor requests without a credential drain the bucket.
        if !matches!(door, Door::Logout) {
            for _ in 0..3 * BURST {
                assert_eq!(door.knock(&mut guesser, Some(good)).status, 200, "{door:?}");
            }
        }
        for _ in 0..3 * BURST {
            let reply = door.knock(&mut guesser, None);
            assert_eq!(reply.code(), Some("missing_credentials"), "{door:?}");
        }
        for _ in 0..BURST {
            let reply = door.knock(&mut guesser, Some(&door.guess()));
            assert_eq!(reply.code(), Some("invalid_credentials"), "{door:?}");
        }
        assert_eq!(
            retry_after(&door.knock(&mut guesser, Some(&door.guess()))),
            60,
            "{door:?}"
        );
        // A throttled client is refused before its credential is looked at, a good one
        // included, as its logins are: a throttled logout logs nothing out.
        retry_after(&door.knock(&mut guesser, Some(good)));

        // Another address is unaffected: its good token works, its wrong one is a 401.
        let mut other = Conn::open_from(&server.url, OTHER_CLIENT);
        let reply = door.knock(&mut other, Some(&door.guess()));
        assert_eq!(reply.code(), Some("invalid_credentials"), "{door:?}");
        if !matches!(door, Door::Logout) {
            assert_eq!(door.knock(&mut other, Some(good)).status, 200, "{door:?}");
        }
        let log = server.log();
        assert!(log.contains(&format!("throttling {guesser_ip}")), "{log}");
    }
    // The session survived the throttled logout, and another address can still end it.
    let mut other = Conn::open_from(&server.url, OTHER_CLIENT);
    assert_eq!(Door::Whoami.knock(&mut other, Some(&session)).status, 200);
    assert_eq!(Door::Logout.knock(&mut other, Some(&session)).status, 204);
    assert!(!server.log().contains("throttling 127.0.0.2"));
}
