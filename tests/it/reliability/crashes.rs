//! `kill -9` at random moments during a stream of app and key creations, logins and
//! revocations (by an admin, or by value as a leak report), many rounds on one database. After each restart every acknowledged write (a
//! response was received) must be there, the store's integrity check must say `ok`, no key
//! may be half-revoked (revoked, with machines left), and every change has exactly its audit
//! events (written in its transaction: both or neither, whenever the kill lands).

use super::raw::Conn;
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

const ROUNDS: usize = 15;
/// The stream of writes runs for up to this long after its first acknowledged write (a
/// restarted server's first requests may be slow: PostgreSQL connections) before the kill.
const MAX_RUN_MS: u64 = 300;
/// Fixed so that a failure can be replayed; the moments of the kills still vary with timing.
const SEED: u64 = 0x5eed_a17b_0c3d_9e21;

/// xorshift64: a small deterministic generator, enough to pick operations and moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

#[derive(Clone, Debug)]
struct KeyRecord {
    id: String,
    app: String,
    secret: String,
    reusable: bool,
    ephemeral: bool,
    revoked: bool,
    logins: i64,
}

#[derive(Clone, Debug)]
struct MachineRecord {
    id: String,
    key_id: String,
    session: String,
}

/// A write that was sent but never answered: it may or may not have happened.
#[derive(Clone, Debug)]
enum InDoubt {
    CreateApp(String),
    CreateKey,
    Login(String),
    Revoke(String),
}

/// What the server acknowledged, across rounds.
#[derive(Default)]
struct Ledger {
    apps: Vec<String>,
    keys: Vec<KeyRecord>,
    machines: Vec<MachineRecord>,
    in_doubt: Option<InDoubt>,
    acknowledged: usize,
}

impl Ledger {
    fn key_mut(&mut self, id: &str) -> &mut KeyRecord {
        self.keys
            .iter_mut()
            .find(|key| key.id == id)
            .expect("a known key")
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9_and_nothing_is_half_revoked() {
    // Checking every revoked session is a stream of refused credentials from one address;
    // this test is about durability, not throttling, so the throttle is off.
    // On the disk: each round re-reads every write acknowledged so far, and in memory the
    // writer gets several times as many acknowledged per round, which makes the rounds slow.
    let options = Options::default()
        .on_disk()
        .arg("--sweep-interval", "3600")
        .arg("--login-failures-burst", "0");
    let mut server = TestServer::start_with(options);
    let mut rng = Rng(SEED);
    let mut ledger = Ledger::default();
    for round in 0..ROUNDS {
        let run_for = Duration::from_millis(rng.below(MAX_RUN_MS));
        let url = server.url.clone();
        let seed = rng.below(u64::MAX) | 1;
        let progress = Arc::new(AtomicUsize::new(0));
        let written = progress.clone();
        let writer =
            thread::spawn(move || write_until_refused(&url, ledger, Rng(seed), round, &written));
        wait_for("the round's first write", Duration::from_secs(30), || {
            progress.load(Ordering::SeqCst) > 0
        });
        thread::sleep(run_for);
        server.kill9();
        ledger = writer.join().expect("the writer thread panicked");
        server.restart();
        check(&server, &mut ledger, round);
    }
    assert!(
        ledger.acknowledged >= ROUNDS * 3,
        "only {} writes were acknowledged in {ROUNDS} rounds: the test exercised little",
        ledger.acknowledged
    );
    assert!(ledger.keys.iter().any(|key| key.revoked));
    assert!(ledger.machines.len() >= ROUNDS);
    let logs = server.all_logs();
    for symptom in ["storage error", "panicked"] {
        assert!(!logs.contains(symptom), "a log shows {symptom:?}:\n{logs}");
    }
}

/// Sends writes until the server stops answering, recording each acknowledged one (and
/// counting it in `progress`).
fn write_until_refused(
    url: &str,
    mut ledger: Ledger,
    mut rng: Rng,
    round: usize,
    progress: &AtomicUsize,
) -> Ledger {
    let Ok(mut conn) = Conn::try_open(url, None) else {
        return ledger; // killed before the first connection
    };
    for n in 0.. {
        let live: Vec<KeyRecord> = ledger
            .keys
            .iter()
            .filter(|key| !key.revoked)
            .cloned()
            .collect();
        let usable: Vec<KeyRecord> = live
            .iter()
            .filter(|key| key.reusable || key.logins == 0)
            .cloned()
            .collect();
        let choice = rng.below(100);
        let (op, method, target, body) = if ledger.apps.is_empty() || choice < 5 {
            let id = format!("app-{round}-{n}");
            let body = json!({"id": id});
            (InDoubt::CreateApp(id), "POST", "/v1/apps".to_string(), body)
        } else if choice < 40 || usable.is_empty() {
            let app = rng.pick(&ledger.apps).unwrap().clone();
            let body = json!({"reusable": rng.below(4) != 0, "ephemeral": rng.below(3) == 0});
            (
                InDoubt::CreateKey,
                "POST",
                format!("/v1/apps/{app}/keys"),
                body,
            )
        } else if choice < 80 || live.is_empty() {
            let key = rng.pick(&usable).unwrap();
            let body = json!({"auth_key": key.secret});
            (
                InDoubt::Login(key.id.clone()),
                "POST",
                "/v1/auth/login".to_string(),
                body,
            )
        } else if rng.below(2) == 0 {
            let key = rng.pick(&live).unwrap();
            let target = format!("/v1/apps/{}/keys/{}", key.app, key.id);
            (
                InDoubt::Revoke(key.id.clone()),
                "DELETE",
                target,
                Value::Null,
            )
        } else {
            // A leak report's revocation: the same change and events, by another path.
            let key = rng.pick(&live).unwrap();
            let target = "/v1/keys/revoke-by-value".to_string();
            let body = json!({"key": key.secret});
            (InDoubt::Revoke(key.id.clone()), "POST", target, body)
        };
        ledger.in_doubt = Some(op.clone());
        let authorization = format!("Bearer {ADMIN_TOKEN}");
        let mut headers = vec![("Content-Type", "application/json")];
        if !matches!(op, InDoubt::Login(_)) {
            headers.push(("Authorization", authorization.as_str()));
        }
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let Ok(reply) = conn.try_send(method, &target, &headers, &bytes) else {
            return ledger; // the server died: this write stays in doubt
        };
        ledger.in_doubt = None;
        let expected = match (&op, method) {
            (_, "DELETE") => 204,
            (InDoubt::Revoke(_), _) => 200,
            _ => 201,
        };
        assert_eq!(
            reply.status, expected,
            "{method} {target} {body}: {:?}",
            reply.json
        );
        ledger.acknowledged += 1;
        progress.fetch_add(1, Ordering::SeqCst);
        match op {
            InDoubt::CreateApp(id) => ledger.apps.push(id),
            InDoubt::CreateKey => ledger.keys.push(KeyRecord {
                id: reply.json["id"].as_str().unwrap().into(),
                app: reply.json["app"].as_str().unwrap().into(),
                secret: reply.json["key"].as_str().unwrap().into(),
                reusable: reply.json["reusable"] == true,
                ephemeral: reply.json["ephemeral"] == true,
                revoked: false,
                logins: 0,
            }),
            InDoubt::Login(key_id) => {
                ledger.key_mut(&key_id).logins += 1;
                ledger.machines.push(MachineRecord {
                    id: reply.json["machine"]["id"].as_str().unwrap().into(),
                    key_id,
                    session: reply.json["session_token"].as_str().unwrap().into(),
                });
            }
            InDoubt::Revoke(key_id) => {
                // By value, a live key is revoked (a 200 that says otherwise revoked nothing).
                assert_ne!(reply.json["revoked"], false, "{target}: {:?}", reply.json);
                ledger.key_mut(&key_id).revoked = true;
            }
        }
    }
    unreachable!("the loop ends when the server is killed")
}

/// After a restart: the database is sound, nothing is half-revoked, and every acknowledged write
/// is there. The write in doubt is settled from what the server now says.
fn check(server: &TestServer, ledger: &mut Ledger, round: usize) {
    let db = server.db();
    let context = format!("round {round} (seed {SEED:#x})");
    assert_eq!(db.integrity_check(), "ok", "{context}");
    assert_eq!(
        db.half_revoked_machines(),
        0,
        "{context}: a half-revoked key"
    );
    assert_changes_match_their_events(&db, &context);

    let mut conn = Conn::open(&server.url);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let mut get = |target: &str| conn.send("GET", target, &[("Authorization", &admin)], b"");
    match ledger.in_doubt.take() {
        Some(InDoubt::CreateApp(id)) if get(&format!("/v1/apps/{id}")).status == 200 => {
            ledger.apps.push(id);
        }
        Some(InDoubt::Revoke(key_id)) => {
            let key = ledger.key_mut(&key_id).clone();
            let reply = get(&format!("/v1/apps/{}/keys/{}", key.app, key.id));
            ledger.key_mut(&key_id).revoked = !reply.json["revoked_at"].is_null();
        }
        Some(InDoubt::Login(key_id)) => {
            let key = ledger.key_mut(&key_id).clone();
            let uses = get(&format!("/v1/apps/{}/keys/{}", key.app, key.id)).json["uses"]
                .as_i64()
                .unwrap();
            assert!(
                uses == key.logins || uses == key.logins + 1,
                "{context}: {key:?} has {uses} uses"
            );
            ledger.key_mut(&key_id).logins = uses;
        }
        _ => {}
    }
    for app in &ledger.apps {
        let reply = get(&format!("/v1/apps/{app}"));
        assert_eq!(reply.status, 200, "{context}: app {app} was lost");
    }
    for key in &ledger.keys {
        let reply = get(&format!("/v1/apps/{}/keys/{}", key.app, key.id));
        assert_eq!(reply.status, 200, "{context}: key {} was lost", key.id);
        let stored = &reply.json;
        let found = (
            stored["reusable"] == key.reusable,
            stored["ephemeral"] == key.ephemeral,
            !stored["revoked_at"].is_null(),
            stored["uses"].as_i64(),
        );
        assert_eq!(
            found,
            (true, true, key.revoked, Some(key.logins)),
            "{context}: {key:?} is stored as {stored}"
        );
    }
    for machine in &ledger.machines {
        let bearer = format!("Bearer {}", machine.session);
        let reply = conn.send("GET", "/v1/auth/whoami", &[("Authorization", &bearer)], b"");
        let revoked = ledger
            .keys
            .iter()
            .any(|key| key.id == machine.key_id && key.revoked);
        if revoked {
            assert_eq!(
                reply.status, 401,
                "{context}: {machine:?} outlived its key's revocation"
            );
        } else {
            assert_eq!(
                reply.status, 200,
                "{context}: {machine:?} was lost: {:?}",
                reply.json
            );
            assert_eq!(reply.json["machine"]["id"], machine.id.as_str());
        }
    }
}

/// Each kind of change in the database equals the events recorded for it: apps and keys created,
/// keys revoked, logins (each key's `uses`), and machines logged out by revocation (the logins
/// whose machine is gone: nothing else deletes machines here, the sweeper is idle).
fn assert_changes_match_their_events(db: &Db, context: &str) {
    let count = |sql: &str| db.scalar(sql, &[]);
    let events = |action: &str| {
        db.scalar(
            "SELECT count(*) FROM audit_events WHERE action = ?1",
            &[action],
        )
    };
    let logins = count("SELECT coalesce(sum(uses), 0) FROM keys");
    let pairs = [
        (
            "apps",
            count("SELECT count(*) FROM apps"),
            events("app.created"),
        ),
        (
            "keys",
            count("SELECT count(*) FROM keys"),
            events("key.created"),
        ),
        (
            "revocations",
            count("SELECT count(*) FROM keys WHERE revoked_at IS NOT NULL"),
            events("key.revoked"),
        ),
        ("logins", logins, events("machine.logged_in")),
        (
            "logouts",
            logins - count("SELECT count(*) FROM machines"),
            events("machine.logged_out"),
        ),
    ];
    for (what, changes, recorded) in pairs {
        assert_eq!(changes, recorded, "{context}: {what} vs their audit events");
    }
}
