//! Webhooks against a real local receiver (`support::Receiver`): every matching event arrives
//! signed, in `seq` order, none skipped, through failures, stalls, a stopped receiver and a
//! `kill -9` of the server; bad receivers (redirects, huge answers, closed ports) are recorded
//! failures, not a stuck thread; a slow receiver never slows a request.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Short polls, retries and timeouts, so that a test waits out nothing real.
fn fast() -> Options {
    Options::default()
        .arg("--webhook-poll-ms", "50")
        .arg("--webhook-first-retry-ms", "100")
        .arg("--webhook-timeout-ms", "500")
}

fn create_webhook(server: &TestServer, receiver: &Receiver, events: Value) -> Value {
    let created = server
        .admin()
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url(), "events": events, "description": "test"}),
        )
        .expect(201);
    let (id, secret) = (created["id"].as_str(), created["secret"].as_str());
    receiver.set_secret(id.unwrap(), secret.unwrap());
    created
}

/// The audit events after `seq` whose action `keep` accepts, by seq.
fn events_after(server: &TestServer, seq: i64, keep: impl Fn(&str) -> bool) -> Vec<i64> {
    let page = server
        .admin()
        .get(&format!("/v1/audit?after={seq}&limit=1000"))
        .expect(200);
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| keep(event["action"].as_str().unwrap()))
        .map(|event| event["seq"].as_i64().unwrap())
        .collect()
}

/// The seqs `webhook` accepted, in the order they were first accepted.
fn accepted(receiver: &Receiver, webhook: &str) -> Vec<i64> {
    let mut seqs: Vec<i64> = Vec::new();
    for delivery in receiver.received() {
        if delivery.webhook == webhook
            && delivery.answered == Behaviour::Accept
            && !seqs.contains(&delivery.seq)
        {
            assert!(delivery.signature_ok, "a bad signature: {delivery:?}");
            seqs.push(delivery.seq);
        }
    }
    seqs
}

fn deliveries(server: &TestServer, webhook: &str) -> Vec<Value> {
    server
        .admin()
        .get(&format!("/v1/webhooks/{webhook}/deliveries"))
        .expect(200)["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `webhook` has accepted exactly the events `expected`, in that order.
#[track_caller]
fn wait_for_all(receiver: &Receiver, webhook: &str, expected: &[i64]) {
    wait_for(
        &format!("{webhook} to accept {expected:?}"),
        Duration::from_secs(20),
        || accepted(receiver, webhook).len() >= expected.len(),
    );
    assert_eq!(accepted(receiver, webhook), expected, "order or content");
}

#[test]
fn events_arrive_signed_in_order_through_failures_stalls_and_restarts() {
    let mut server = TestServer::start_with(fast());
    let mut receiver = Receiver::start();
    let all = create_webhook(&server, &receiver, json!(["*"]));
    let keys = create_webhook(&server, &receiver, json!(["key.*"]));
    let (all_id, keys_id) = (all["id"].as_str().unwrap(), keys["id"].as_str().unwrap());
    // The first webhook's own creation: it receives everything after it (the second's too).
    let start = events_after(&server, 0, |_| true)[0];
    let every = |server: &TestServer| events_after(server, start, |_| true);
    let key_events =
        |server: &TestServer| events_after(server, start, |action| action.starts_with("key."));

    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true}));
    server.login(key["key"].as_str().unwrap());
    wait_for_all(&receiver, all_id, &every(&server));
    wait_for_all(&receiver, keys_id, &key_events(&server));
    let first = &receiver.received()[0].event;
    assert_eq!(first["action"], "webhook.created");
    assert_eq!(first["target"]["id"], keys_id);
    assert_eq!(first["actor"]["type"], "root");

    // The receiver fails: each event is retried, none overtaken by a later one.
    receiver.behave(Behaviour::Fail);
    server.create_key("ci", json!({}));
    server.create_app("second");
    wait_for("a retried failure", Duration::from_secs(10), || {
        deliveries(&server, all_id)
            .iter()
            .any(|d| d["attempts"].as_i64() >= Some(2) && d["last_status"] == 500)
    });
    receiver.behave(Behaviour::Accept);
    wait_for_all(&receiver, all_id, &every(&server));

    // It stalls past the timeout: a recorded failure, then delivered.
    receiver.behave(Behaviour::Stall(Duration::from_millis(1500)));
    server.create_app("third");
    wait_for("a timed-out attempt", Duration::from_secs(10), || {
        deliveries(&server, all_id)
            .iter()
            .any(|d| d["last_status"].is_null() && d["last_error"].is_string())
    });
    receiver.behave(Behaviour::Accept);
    wait_for_all(&receiver, all_id, &every(&server));

    // It goes away, and the server is killed meanwhile: nothing pending is lost.
    receiver.stop();
    server.create_key("ci", json!({}));
    server.create_app("fourth");
    wait_for("a refused connection", Duration::from_secs(10), || {
        deliveries(&server, all_id)
            .iter()
            .any(|d| d["delivered_at"].is_null() && d["attempts"].as_i64() >= Some(1))
    });
    server.kill9();
    server.restart();
    server.create_app("fifth");
    receiver.restart();
    wait_for_all(&receiver, all_id, &every(&server));
    wait_for_all(&receiver, keys_id, &key_events(&server));
    wait_for(
        "every attempt recorded as delivered",
        Duration::from_secs(10),
        || {
            deliveries(&server, all_id)
                .iter()
                .all(|d| !d["delivered_at"].is_null())
        },
    );
    let log = server.all_logs();
    assert!(
        !log.contains(all["secret"].as_str().unwrap()),
        "the secret was logged"
    );
}

#[test]
fn redirects_huge_answers_and_closed_ports_are_recorded_failures_not_a_stuck_thread() {
    let server = TestServer::start_with(fast());
    let receiver = Receiver::start();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nowhere = server
        .admin()
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://{closed}/hook"), "events": ["*"]}),
        )
        .expect(201);
    let hook = create_webhook(&server, &receiver, json!(["app.*"]));
    let (nowhere_id, hook_id) = (
        nowhere["id"].as_str().unwrap(),
        hook["id"].as_str().unwrap(),
    );
    let failure = |webhook: &str, check: &dyn Fn(&Value) -> bool| {
        wait_for("a recorded failure", Duration::from_secs(10), || {
            deliveries(&server, webhook).first().is_some_and(check)
        });
    };
    receiver.behave(Behaviour::Redirect);
    server.create_app("one");
    failure(hook_id, &|d| {
        d["last_status"] == 302 && d["delivered_at"].is_null()
    });
    failure(nowhere_id, &|d| {
        d["last_status"].is_null() && d["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    receiver.behave(Behaviour::Huge);
    failure(hook_id, &|d| {
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("65536"))
    });
    receiver.behave(Behaviour::Accept);
    server.create_app("two");
    let expected = events_after(&server, 0, |action| action.starts_with("app."));
    wait_for_all(&receiver, hook_id, &expected);
    // Deleting a webhook stops it, and its deliveries are gone.
    server
        .admin()
        .delete(&format!("/v1/webhooks/{nowhere_id}"))
        .expect(204);
    server
        .admin()
        .get(&format!("/v1/webhooks/{nowhere_id}/deliveries"))
        .expect(404);
    let listed = server.admin().get("/v1/webhooks").expect(200);
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(listed["webhooks"][0].get("secret").is_none(), "{listed}");
}

#[test]
fn a_stalled_receiver_never_slows_a_request() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--webhook-poll-ms", "20")
            .arg("--webhook-timeout-ms", "3000"),
    );
    let receiver = Receiver::start();
    receiver.behave(Behaviour::Stall(Duration::from_secs(3)));
    create_webhook(&server, &receiver, json!(["*"]));
    // The delivery thread is now held by the stalled receiver for seconds at a time.
    server.create_app("warm");
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let started = Instant::now();
        server.create_app(&format!("app-{n}"));
        server.admin().get("/v1/apps").expect(200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "a request waited on the stalled receiver: {slowest:?}"
    );
}

#[test]
fn bad_webhooks_are_refused_and_create_nothing() {
    let server = TestServer::start();
    for (body, field) in [
        (json!({"url": "ftp://example.com/", "events": ["*"]}), "url"),
        (json!({"url": "example.com", "events": ["*"]}), "url"),
        (json!({"url": "http://", "events": ["*"]}), "url"),
        (json!({"url": "http://127.0.0.1/", "events": []}), "events"),
        (
            json!({"url": "http://127.0.0.1/", "events": ["key.nope"]}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1/", "events": ["nope.*"]}),
            "events",
        ),
    ] {
        let reply = server.admin().post("/v1/webhooks", &body).expect(422);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    server.admin().delete("/v1/webhooks/whk_nope").expect(404);
    server
        .admin()
        .get("/v1/webhooks/whk_nope/deliveries")
        .expect(404);
    let listed = server.admin().get("/v1/webhooks").expect(200);
    assert_eq!(listed["webhooks"], json!([]));
    let events = server.admin().get("/v1/audit").expect(200);
    assert_eq!(events["events"], json!([]));
}

/// `key.expiring` reaches a webhook once per key, like any other event of the log.
#[test]
fn key_expiring_is_delivered_once_per_key() {
    let server = TestServer::start_with(fast().arg("--sweep-interval-ms", "100"));
    let receiver = Receiver::start();
    let hook = create_webhook(&server, &receiver, json!(["key.expiring"]));
    let hook_id = hook["id"].as_str().unwrap();
    server.create_app("ci");
    // Within seven days of its expiry a second after creation; the others never come close
    // or were created inside the window.
    let expiring = server.create_key("ci", json!({"expires_in": 7 * 24 * 3600 + 1}));
    server.create_key("ci", json!({"expires_in": 30 * 24 * 3600}));
    server.create_key("ci", json!({"expires_in": 60}));
    wait_for("the notice", Duration::from_secs(15), || {
        !accepted(&receiver, hook_id).is_empty()
    });
    std::thread::sleep(Duration::from_millis(700));
    let received: Vec<Received> = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].event["action"], "key.expiring");
    assert_eq!(received[0].event["target"]["id"], expiring["id"]);
    assert_eq!(received[0].event["actor"]["type"], "system");
}
