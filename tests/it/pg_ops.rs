//! Operating on PostgreSQL (README, "Operations"): `authkeys migrate` of a SQLite database
//! full of every kind of row into a new PostgreSQL database, served afterwards by a real
//! `authkeys serve --db postgres://…` that accepts and refuses exactly what SQLite did; its
//! refusals (a database that is not empty, another program's, bad credentials), which write
//! nothing; and a `pg_dump`/`pg_restore` backup served from a new database.

use crate::support::store::PgDatabase;
use crate::support::{ADMIN_TOKEN, Api, BIN, Options, TestServer, open_db, session_of};
use authkeys::{DevClaims, DevIssuer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// What the SQLite server held, and the credentials to try on PostgreSQL afterwards.
struct Fixture {
    server: TestServer,
    /// Sessions still logged in, with their machine ids.
    live_sessions: Vec<(String, String)>,
    /// Sessions ended: logged out, or their key revoked.
    ended_sessions: Vec<String>,
    /// Keys that verify as valid: a reusable one and an unused single-use one.
    reusable_key: String,
    unused_single_use_key: String,
    revoked_key: String,
    used_key: String,
    scoped_token: String,
}

/// A SQLite database with a row in every table: two apps (one deleted), keys of every kind
/// (reusable with tags, metadata and a use limit; ephemeral with a session lifetime and an
/// idle timeout; single-use used and unused; revoked; rotated), machines of keys and of a
/// trust policy, a logged-out machine, a scoped admin token, a webhook and its deliveries,
/// and the audit events of all of it.
fn sqlite_with_every_kind_of_row(issuer: &DevIssuer) -> Fixture {
    let server = TestServer::start_with(
        Options::default()
            .arg("--login-failures-burst", "0")
            .flag("--oidc-allow-insecure-issuer"),
    );
    let admin = server.admin();
    server.create_app("web");
    server.create_app("old");
    let key = |app: &str, body: Value| server.create_key(app, body);
    let secret = |created: &Value| created["key"].as_str().unwrap().to_string();
    let reusable = key(
        "web",
        json!({"reusable": true, "tags": ["tag:ci", "tag:web"], "metadata": {"team": "web"},
               "max_uses": 50, "description": "CI"}),
    );
    let ephemeral = key(
        "web",
        json!({"reusable": true, "ephemeral": true, "session_ttl": 3600, "idle_timeout": 600}),
    );
    let used = key("web", json!({}));
    let unused = key("web", json!({}));
    let revoked = key("web", json!({"reusable": true}));
    let rotated = key("web", json!({"reusable": true, "expires_in": 86400}));
    key("old", json!({"reusable": true}));

    let mut live_sessions = Vec::new();
    let mut login = |key: &str| {
        let login = server.login(key);
        let session = session_of(&login);
        live_sessions.push((
            session.clone(),
            login["machine"]["id"].as_str().unwrap().into(),
        ));
        session
    };
    login(&secret(&reusable));
    let logged_out = login(&secret(&reusable));
    login(&secret(&ephemeral));
    login(&secret(&used));
    let of_revoked = login(&secret(&revoked));
    login(&secret(&rotated));
    // Ended: a logout, a revoked key's machine.
    server
        .client(Some(&logged_out))
        .post("/v1/auth/logout", &json!({}))
        .expect(204);
    admin
        .delete(&format!(
            "/v1/apps/web/keys/{}",
            revoked["id"].as_str().unwrap()
        ))
        .expect(204);
    live_sessions.retain(|(session, _)| *session != logged_out && *session != of_revoked);
    admin
        .post(
            &format!(
                "/v1/apps/web/keys/{}/rotate",
                rotated["id"].as_str().unwrap()
            ),
            &json!({"grace_seconds": 3600}),
        )
        .expect(201);
    admin.delete("/v1/apps/old").expect(204);

    // A machine of a trust policy (no key).
    admin
        .post(
            "/v1/apps/web/trust-policies",
            &json!({"issuer": issuer.url(), "audience": "authkeys", "subject": "repo:*",
                    "ephemeral": true, "tags": ["tag:ci"]}),
        )
        .expect(201);
    let token = issuer.mint(authkeys::DevAlg::ES256, &issuer.claims("authkeys"));
    let oidc = server
        .anonymous()
        .post(
            "/v1/auth/login",
            &json!({"id_token": token, "app": "web", "machine": "runner"}),
        )
        .expect(201);
    live_sessions.push((
        session_of(&oidc),
        oidc["machine"]["id"].as_str().unwrap().into(),
    ));

    let scoped = admin
        .post(
            "/v1/admin-tokens",
            &json!({"name": "ci", "scopes": ["keys:write"], "apps": ["web"],
                    "ephemeral_only": true}),
        )
        .expect(201);
    // Nothing listens on port 9: its deliveries fail and are recorded.
    admin
        .post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .expect(201);
    for (session, _) in &live_sessions {
        server
            .client(Some(session))
            .get("/v1/auth/whoami")
            .expect(200);
    }
    Fixture {
        live_sessions,
        ended_sessions: vec![logged_out, of_revoked],
        reusable_key: secret(&reusable),
        unused_single_use_key: secret(&unused),
        revoked_key: secret(&revoked),
        used_key: secret(&used),
        scoped_token: scoped["token"].as_str().unwrap().to_string(),
        server,
    }
}

/// Every list the API has, as the root admin sees it: what a migration must keep.
fn every_list(api: &Api) -> Value {
    let mut lists = json!({});
    for path in [
        "/v1/apps",
        "/v1/apps/web/keys?include_revoked=true&limit=1000",
        "/v1/apps/web/machines?limit=1000",
        "/v1/apps/web/trust-policies",
        "/v1/admin-tokens",
        "/v1/webhooks",
        "/v1/audit?limit=1000",
    ] {
        lists[path] = api.get(path).expect(200);
    }
    let webhook = lists["/v1/webhooks"]["webhooks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deliveries = format!("/v1/webhooks/{webhook}/deliveries");
    lists[&deliveries] = api.get(&deliveries).expect(200);
    lists
}

/// `authkeys migrate --from db --to url`.
fn migrate(from: &Path, to: &str) -> Output {
    Command::new(BIN)
        .args(["migrate", "--from"])
        .arg(from)
        .args(["--to", to])
        .env_remove("AUTHKEYS_DB")
        .output()
        .expect("running authkeys migrate")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn migrate_copies_every_row_and_a_postgres_server_accepts_and_refuses_as_sqlite_did() {
    let issuer = DevIssuer::start("127.0.0.1:0", DevClaims::default()).unwrap();
    let mut fixture = sqlite_with_every_kind_of_row(&issuer);
    // A restart flushes the usage stamps; the lists are then read without stamping anything.
    fixture.server.terminate();
    fixture.server.restart();
    let before = every_list(&fixture.server.admin());
    let audit_seqs: Vec<i64> = before["/v1/audit?limit=1000"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert!(before["/v1/webhooks"]["webhooks"][0]["id"].is_string());
    fixture.server.terminate();

    let target = PgDatabase::create();
    let output = migrate(&fixture.server.db_path(), &target.url);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains("authkeys-test-password"),
        "the password is shown: {said}"
    );
    for counted in [
        "apps 2",
        "keys 8",
        "machines 5",
        "trust_policies 1",
        "admin_tokens 1",
        "webhooks 1",
    ] {
        assert!(said.contains(counted), "{counted:?} missing from {said}");
    }

    let node = serve(
        &target,
        Options::default()
            .arg("--login-failures-burst", "0")
            .flag("--oidc-allow-insecure-issuer"),
    );
    let admin = node.client(Some(ADMIN_TOKEN));
    assert_eq!(
        every_list(&admin),
        before,
        "the lists differ after migrating"
    );

    for (session, machine) in &fixture.live_sessions {
        let me = node
            .client(Some(session))
            .get("/v1/auth/whoami")
            .expect(200);
        assert_eq!(me["machine"]["id"], *machine);
    }
    for session in &fixture.ended_sessions {
        node.client(Some(session))
            .get("/v1/auth/whoami")
            .expect_error(401, "invalid_credentials");
    }
    let anonymous = node.client(None);
    let verify = |key: &str| {
        anonymous
            .post("/v1/keys/verify", &json!({"key": key}))
            .expect(200)
    };
    assert_eq!(verify(&fixture.reusable_key)["valid"], true);
    assert_eq!(verify(&fixture.revoked_key)["code"], "revoked");
    assert_eq!(verify(&fixture.used_key)["code"], "used");
    let login = |key: &str| anonymous.post("/v1/auth/login", &json!({"auth_key": key}));
    login(&fixture.revoked_key).expect_error(401, "auth_key_revoked");
    login(&fixture.used_key).expect_error(401, "auth_key_used");
    // The single-use key still has its one use, and only one.
    login(&fixture.unused_single_use_key).expect(201);
    login(&fixture.unused_single_use_key).expect_error(401, "auth_key_used");
    // The scoped token keeps its scope and limits.
    let scoped = node.client(Some(&fixture.scoped_token));
    scoped
        .post("/v1/apps/web/keys", &json!({"ephemeral": true}))
        .expect(201);
    scoped
        .post("/v1/apps/web/keys", &json!({}))
        .expect_error(422, "policy_violation");
    scoped.get("/v1/apps").expect_error(403, "forbidden");
    // New rows take ids after the copied ones: the audit log goes on from the last seq.
    let events = admin.get("/v1/audit?limit=1000").expect(200)["events"]
        .as_array()
        .unwrap()
        .clone();
    let newest_copied = *audit_seqs.iter().max().unwrap();
    let new: Vec<i64> = events
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .filter(|seq| !audit_seqs.contains(seq))
        .collect();
    assert!(
        !new.is_empty() && new.iter().all(|seq| *seq > newest_copied),
        "{new:?}"
    );
}

/// A server on `database` (a PostgreSQL one, whatever the suite's store).
fn serve(database: &Arc<PgDatabase>, options: Options) -> TestServer {
    TestServer::start_with(Options {
        database: Some(database.clone()),
        ..options
    })
}

/// The tables in `database`'s schema, by name.
fn tables(database: &PgDatabase) -> Vec<String> {
    database
        .connect()
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .expect("listing the tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// `url` with another password, for the test of refused credentials.
fn url_with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host_path) = rest.split_once('@').expect("user:password@");
    let user = userinfo.split(':').next().expect("a user");
    format!("{scheme}://{user}:{password}@{host_path}")
}

/// Asserts that `output` is a refusal (exit 1) saying `says`, and returns what it printed.
#[track_caller]
fn assert_refused(output: &Output, says: &str) -> String {
    let said = text(output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains(says), "{says:?} missing from: {said}");
    said
}

#[test]
fn migrate_refuses_a_database_that_is_not_empty_and_writes_nothing() {
    let server = TestServer::start();
    server.create_app("web");
    let db = server.db_path();
    let target = PgDatabase::create();
    assert!(migrate(&db, &target.url).status.success());
    let count = |table: &str| -> i64 {
        target
            .connect()
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    let audit_events = count("audit_events");
    assert_refused(&migrate(&db, &target.url), "is not empty (apps 1");
    assert_eq!((count("apps"), count("audit_events")), (1, audit_events));

    // Another program's database: refused, and nothing of ours created in it.
    let foreign = PgDatabase::create();
    foreign
        .connect()
        .batch_execute("CREATE TABLE customers (id bigint PRIMARY KEY, name text)")
        .unwrap();
    assert_refused(&migrate(&db, &foreign.url), "not an authkeys database");
    assert_eq!(tables(&foreign), ["customers"]);

    // Bad credentials: a clear error that never shows the password given.
    let fresh = PgDatabase::create();
    let wrong = migrate(&db, &url_with_password(&fresh.url, "not-the-password-42"));
    let said = assert_refused(&wrong, "password authentication failed");
    assert!(!said.contains("not-the-password-42"), "{said}");
    // A source that does not exist is not created, and the target stays empty.
    let missing = server.dir.path().join("missing.db");
    assert_refused(&migrate(&missing, &fresh.url), "no such database file");
    assert!(!missing.exists());
    assert!(tables(&fresh).is_empty());
}

/// The newest PostgreSQL client binaries (those scripts/pg-throwaway's cluster runs).
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/pg-throwaway installs it)")
        .map(|entry| entry.unwrap().path().join("bin"))
        .collect();
    dirs.sort_by_key(|dir| {
        dir.parent()
            .and_then(|version| version.file_name()?.to_str()?.parse::<u32>().ok())
    });
    dirs.last().expect("a PostgreSQL version").join(name)
}

#[test]
fn a_pg_dump_backup_restored_into_a_new_database_serves_the_same_keys() {
    let source = PgDatabase::create();
    let node = serve(&source, Options::default());
    let admin = node.client(Some(ADMIN_TOKEN));
    admin.post("/v1/apps", &json!({"id": "web"})).expect(201);
    let key = admin
        .post("/v1/apps/web/keys", &json!({"reusable": true}))
        .expect(201);
    let revoked = admin
        .post("/v1/apps/web/keys", &json!({"reusable": true}))
        .expect(201);
    let anonymous = node.client(None);
    let session = session_of(
        &anonymous
            .post("/v1/auth/login", &json!({"auth_key": key["key"]}))
            .expect(201),
    );
    admin
        .delete(&format!(
            "/v1/apps/web/keys/{}",
            revoked["id"].as_str().unwrap()
        ))
        .expect(204);

    // As docs/operations.md says: a dump while the node serves, restored into a new database.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("authkeys.dump");
    let run = |command: &mut Command| {
        let output = command.output().expect("running a PostgreSQL client");
        assert!(output.status.success(), "{command:?}: {}", text(&output));
    };
    run(Command::new(pg_bin("pg_dump"))
        .args(["--format=custom", "--exclude-table-data=nodes", "--file"])
        .arg(&dump)
        .arg(format!("--dbname={}", source.url)));
    drop(node);
    let restored = PgDatabase::create();
    run(Command::new(pg_bin("pg_restore"))
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={}", restored.url))
        .arg(&dump));

    let node = serve(&restored, Options::default());
    let anonymous = node.client(None);
    let verify = |key: &Value| {
        anonymous
            .post("/v1/keys/verify", &json!({"key": key["key"]}))
            .expect(200)
    };
    assert_eq!(verify(&key)["valid"], true);
    assert_eq!(verify(&revoked)["code"], "revoked");
    node.client(Some(&session))
        .get("/v1/auth/whoami")
        .expect(200);
    // The restored database goes on: a new login, a new key.
    anonymous
        .post("/v1/auth/login", &json!({"auth_key": key["key"]}))
        .expect(201);
    node.client(Some(ADMIN_TOKEN))
        .post("/v1/apps/web/keys", &json!({}))
        .expect(201);
}

/// Retention may have deleted every event: the copy's `seq`s still continue after the
/// highest SQLite ever handed out, so a webhook or `?after=` never skips a new event.
#[test]
fn migrate_continues_audit_seqs_after_the_highest_ever_handed_out() {
    let mut server = TestServer::start();
    server.create_app("web");
    server.create_app("api");
    let events = server.admin().get("/v1/audit").expect(200)["events"].clone();
    let highest = events.as_array().unwrap().last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    server.terminate();
    // What the sweeper's retention does once every event is older than the retention.
    open_db(&server.db_path())
        .execute("DELETE FROM audit_events", [])
        .unwrap();

    let target = PgDatabase::create();
    let output = migrate(&server.db_path(), &target.url);
    assert!(output.status.success(), "{}", text(&output));
    let node = serve(&target, Options::default());
    let admin = node.client(Some(ADMIN_TOKEN));
    admin.post("/v1/apps", &json!({"id": "new"})).expect(201);
    let events = admin.get("/v1/audit").expect(200)["events"].clone();
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [highest + 1], "{events}");
}
