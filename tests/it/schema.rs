//! Schema versions on disk: what a first start creates, and the upgrades of databases written
//! by older releases (versions 1 and 2) to this binary's schema, with their sessions intact.

use crate::support::*;
use serde_json::json;
use std::path::Path;

/// This binary's schema version.
pub(crate) const CURRENT: i64 = 5;

/// The schema of version 1 exactly as it shipped, to build databases an older release wrote.
const SCHEMA_V1: &str = include_str!("fixtures/schema-v1.sql");
/// A whole version 2 database as the last version 2 binary wrote it (`sqlite3 .dump`, with
/// the secrets it was made with in its header).
const DATABASE_V2: &str = include_str!("fixtures/v2-database.sql");
/// The fixture's session tokens and keys (see its header).
const V2_RUNNER_SESSION: &str = "ens_B21gaEpOe1nekO75AxJd6eMOCw0Tx80wZzWr";
const V2_SINGLE_USE_SESSION: &str = "ens_0pMxayiq3LjOU00Uep1mJWRQqvVyi02wAMKn";
const V2_EPHEMERAL_SESSION: &str = "ens_YscJPyZbzUBJ73B4E2MmpCzLdJR2vz34HEP3";
const V2_REUSABLE_KEY: &str = "ena_hIZy7G7lrQkJK4keVMegrvlXF0DCxJ1pA0jU";
const V2_USED_KEY: &str = "ena_DlJpJuUsC8pP9dQPwFzTrglYe8bpQT2cWNyY";

/// Every table with its columns and strictness, and every index with its SQL, to compare two
/// databases' schemas. A table's columns rather than its SQL text: a column added by ALTER
/// TABLE changes the text, not the table.
fn schema_of(db: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = open_db(db);
    let objects: Vec<(String, String, Option<String>)> = conn
        // sqlite_sequence is SQLite's own (AUTOINCREMENT's counters), and cannot be dropped.
        .prepare(
            "SELECT type, name, sql FROM sqlite_schema WHERE name != 'sqlite_sequence'
              ORDER BY type, name",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let table = |name: &str| -> String {
        let columns: Vec<String> = conn
            .prepare(
                "SELECT name || ' ' || type || ' ' || \"notnull\" || ' ' ||
                        coalesce(dflt_value, '-') || ' ' || pk
                   FROM pragma_table_info(?1) ORDER BY cid",
            )
            .unwrap()
            .query_map([name], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let strict: i64 = conn
            .query_row(
                "SELECT strict FROM pragma_table_list WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .unwrap();
        format!("strict {strict}: {}", columns.join(", "))
    };
    objects
        .into_iter()
        .map(|(kind, name, sql)| match kind.as_str() {
            "table" => {
                let columns = table(&name);
                (kind, name, Some(columns))
            }
            _ => (kind, name, sql),
        })
        .collect()
}

/// Rewrites the (stopped) server's database as version 1 would have stored the same rows.
fn rewrite_as_version_1(db: &Path) {
    let old = db.with_extension("v1");
    let conn = open_db(&old);
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS current", [db.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "INSERT INTO settings SELECT * FROM current.settings;
         INSERT INTO apps SELECT * FROM current.apps;
         INSERT INTO keys SELECT pk, id, app_pk, hash, hint, description, reusable, ephemeral,
                                 created_at, expires_at, revoked_at, last_used_at, uses
                            FROM current.keys;
         INSERT INTO machines (pk, id, key_pk, token_hash, name, ephemeral, created_at,
                               expires_at, last_seen_at)
         SELECT pk, id, key_pk, token_hash, name, ephemeral, created_at, expires_at,
                last_seen_at FROM current.machines;
         DETACH DATABASE current;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::rename(&old, db).unwrap();
}

/// Takes the (stopped) server's database back to version 2 in place: what version 3 added
/// goes, the rows stay.
fn rewrite_as_version_2(db: &Path) {
    rewrite_as_version_3(db);
    open_db(db)
        .execute_batch(
            "DROP INDEX machines_by_idle_deadline;
             ALTER TABLE keys DROP COLUMN tags;
             ALTER TABLE keys DROP COLUMN metadata;
             ALTER TABLE keys DROP COLUMN max_uses;
             ALTER TABLE keys DROP COLUMN session_ttl;
             ALTER TABLE keys DROP COLUMN idle_timeout;
             ALTER TABLE keys DROP COLUMN rotated_from;
             ALTER TABLE keys DROP COLUMN rotated_to;
             ALTER TABLE machines DROP COLUMN tags;
             ALTER TABLE machines DROP COLUMN metadata;
             ALTER TABLE machines DROP COLUMN trust_policy_id;
             ALTER TABLE machines DROP COLUMN idle_timeout;
             PRAGMA user_version = 2;",
        )
        .unwrap();
}

/// Rewrites the (stopped) server's database as version 3 stored it: without version 4's
/// tables (admin tokens, the audit log, webhooks) and index.
fn rewrite_as_version_3(db: &Path) {
    rewrite_as_version_4(db);
    open_db(db)
        .execute_batch(
            "DROP TABLE admin_tokens; DROP TABLE audit_events; DROP TABLE webhook_deliveries;
             DROP TABLE webhooks; DROP INDEX keys_by_expiry; DELETE FROM sqlite_sequence;
             DELETE FROM settings WHERE name = 'key_expiring_horizon';
             PRAGMA user_version = 3;",
        )
        .unwrap();
}

/// Rewrites the (stopped) server's database as version 4 stored it: without version 5's
/// tables (trust policies, seen `jti`s), and with a machine's key required (NOT NULL), which
/// takes rebuilding the table as version 4 created it.
fn rewrite_as_version_4(db: &Path) {
    open_db(db)
        .execute_batch(
            "DROP TABLE trust_policies;
             DROP TABLE oidc_jtis;
             DROP INDEX machines_by_trust_policy;
             CREATE TABLE machines_v4 (
                 pk           INTEGER PRIMARY KEY,
                 id           TEXT    NOT NULL UNIQUE,
                 key_pk       INTEGER NOT NULL REFERENCES keys (pk),
                 app_pk       INTEGER NOT NULL REFERENCES apps (pk),
                 key_id       TEXT    NOT NULL,
                 token_hash   BLOB    NOT NULL UNIQUE,
                 name         TEXT,
                 ephemeral    INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
                 created_at   INTEGER NOT NULL,
                 expires_at   INTEGER,
                 last_seen_at INTEGER,
                 tags            TEXT    NOT NULL DEFAULT '[]',
                 metadata        TEXT    NOT NULL DEFAULT '{}',
                 trust_policy_id TEXT,
                 idle_timeout    INTEGER
             ) STRICT;
             INSERT INTO machines_v4 SELECT * FROM machines;
             DROP TABLE machines;
             ALTER TABLE machines_v4 RENAME TO machines;
             CREATE INDEX machines_by_key ON machines (key_pk);
             CREATE INDEX machines_by_app ON machines (app_pk);
             CREATE INDEX machines_by_expiry ON machines (expires_at) WHERE expires_at IS NOT NULL;
             CREATE INDEX machines_by_idle_deadline
                 ON machines (coalesce(last_seen_at, created_at) + idle_timeout * 1000)
                 WHERE idle_timeout IS NOT NULL;
             PRAGMA user_version = 4;",
        )
        .unwrap();
}

/// Replaces the (stopped) server's database with the version 2 fixture.
fn install_version_2_fixture(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    open_db(db).execute_batch(DATABASE_V2).unwrap();
    assert_eq!(user_version(db), 2);
}

#[test]
fn first_start_creates_the_current_schema() {
    let server = TestServer::start();
    let db = server.db_path();
    assert_eq!(user_version(&db), CURRENT);
    let tables: Vec<String> = schema_of(&db)
        .into_iter()
        .filter(|(kind, _, _)| kind == "table")
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(
        tables,
        [
            "admin_tokens",
            "apps",
            "audit_events",
            "keys",
            "machines",
            "oidc_jtis",
            "settings",
            "trust_policies",
            "webhook_deliveries",
            "webhooks"
        ]
    );
    let journal: String = open_db(&db)
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn a_version_1_database_is_upgraded_with_its_sessions_intact() {
    let mut server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true, "description": "runners"}));
    let login = server.login(key["key"].as_str().unwrap());
    let session = session_of(&login);
    let before = whoami(&server, &session).expect(200);
    let revoked = server.create_key("ci", json!({}));
    server
        .admin()
        .delete(&format!(
            "/v1/apps/ci/keys/{}",
            revoked["id"].as_str().unwrap()
        ))
        .expect(204);
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    let fresh_schema = schema_of(&db);

    rewrite_as_version_1(&db);
    // A row version 1 would not have honoured (its key is revoked) must not come back to life.
    open_db(&db)
        .execute(
            "INSERT INTO machines (id, key_pk, token_hash, ephemeral, created_at)
             SELECT 'mch_stale', pk, randomblob(32), 0, 0 FROM keys WHERE revoked_at IS NOT NULL",
            [],
        )
        .unwrap();
    assert_eq!(user_version(&db), 1);

    server.restart();
    assert!(
        server
            .log()
            .contains(&format!("from schema version 1 to {CURRENT}")),
        "{}",
        server.log()
    );
    let mut after = whoami(&server, &session).expect(200);
    assert_eq!(after["machine"]["key_id"], key["id"]);
    // The first whoami's usage stamp was written when the server stopped.
    assert!(after["machine"]["last_seen_at"].is_string(), "{after}");
    let machines = server.admin().get("/v1/apps/ci/machines").expect(200);
    assert_eq!(machines["machines"], json!([after["machine"]]));
    after["machine"]["last_seen_at"] = before["machine"]["last_seen_at"].clone();
    assert_eq!(after, before, "the session reads back as it was");
    // Logins after the upgrade write the new columns.
    let second = server.login(key["key"].as_str().unwrap());
    let identity = whoami(&server, &session_of(&second)).expect(200);
    assert_eq!(identity["machine"]["key_id"], key["id"]);
    assert_eq!(identity["app"]["id"], "ci");

    assert_eq!(user_version(&db), CURRENT);
    let conn = open_db(&db);
    let stale: i64 = conn
        .query_row(
            "SELECT count(*) FROM machines WHERE id = 'mch_stale'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(stale, 0);
    let broken_references: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(broken_references, 0);
    assert_eq!(
        schema_of(&db),
        fresh_schema,
        "the same schema a first start creates"
    );
}

/// The upgrade is one transaction: killed part-way (after its first step, with the old
/// machines table already set aside), the database is still version 1 with every row, and
/// the next start upgrades it. The server pauses there on a test-only variable and says so;
/// the kill waits for that line, so it provably lands mid-upgrade.
#[test]
fn an_upgrade_killed_part_way_leaves_version_1_whole() {
    const MACHINES: i64 = 2_000;
    let mut server = TestServer::start();
    server.create_app("ci");
    server.create_key("ci", json!({"reusable": true}));
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    rewrite_as_version_1(&db);
    open_db(&db)
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO machines (id, key_pk, token_hash, ephemeral, created_at)
             SELECT 'mch_' || i, (SELECT pk FROM keys), randomblob(32), 0, 0 FROM n",
            [MACHINES],
        )
        .unwrap();
    let v1_schema = schema_of(&db);

    kill_upgrade_after_its_first_step(&server);

    assert_eq!(integrity_check(&db), "ok");
    assert_eq!(user_version(&db), 1);
    assert_eq!(
        schema_of(&db),
        v1_schema,
        "the set-aside table and dropped indexes rolled back"
    );
    let count: i64 = open_db(&db)
        .query_row("SELECT count(*) FROM machines", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, MACHINES);

    server.restart();
    assert_eq!(user_version(&db), CURRENT);
    let count: i64 = open_db(&db)
        .query_row(
            "SELECT count(*) FROM machines WHERE key_id IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(count, MACHINES);
}

/// Starts the server's command on its (older) database with the test-only pause after the
/// upgrade's first step, waits for the server to say it paused there, and `kill -9`s it.
fn kill_upgrade_after_its_first_step(server: &TestServer) {
    let mut child = server
        .command()
        .env("AUTHKEYS_TEST_PAUSE_UPGRADE_AFTER_FIRST_STEP", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let paused = eventually_line(stderr, "upgrade paused after its first step");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(paused.is_ok(), "the upgrade never paused: {paused:?}");
}

/// Restarts the stopped server on its older database: it must log `marker`, and leave
/// the current version with the schema a first start creates (`fresh_schema`).
fn restart_upgrading(
    server: &mut TestServer,
    marker: &str,
    fresh_schema: &[(String, String, Option<String>)],
) {
    server.restart();
    assert!(server.log().contains(marker), "{}", server.log());
    let db = server.db_path();
    assert_eq!(user_version(&db), CURRENT);
    assert_eq!(
        schema_of(&db),
        fresh_schema,
        "the schema a first start creates"
    );
}

/// Reads `lines` until one contains `marker` (Ok with that line) or they end (Err with all
/// that was read), on a thread, for at most 30 s.
fn eventually_line(
    lines: impl std::io::BufRead + Send + 'static,
    marker: &str,
) -> Result<String, String> {
    let marker = marker.to_string();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in lines.lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = sender.send(Ok(line));
                return;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = sender.send(Err(seen));
    });
    receiver
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| Err("no marker within 30 s".to_string()))
}

/// A version 2 file written before `keys.machine_rows` and `machines_by_app` existed gains
/// both at its next start, without a version change: the counts filled from the machines it
/// has, the schema then the same as a first start's. Counting happens once, not every start.
#[test]
fn an_early_version_2_database_gains_machine_counts_and_the_index() {
    let mut server = TestServer::start();
    server.create_app("ci");
    let busy = server.create_key("ci", json!({"reusable": true}));
    let quiet = server.create_key("ci", json!({}));
    for _ in 0..3 {
        server.login(busy["key"].as_str().unwrap());
    }
    server.login(quiet["key"].as_str().unwrap());
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    let fresh_schema = schema_of(&db);
    rewrite_as_version_2(&db);
    open_db(&db)
        .execute_batch(
            "DROP INDEX machines_by_app;
             ALTER TABLE keys DROP COLUMN machine_rows;",
        )
        .unwrap();
    assert_ne!(schema_of(&db), fresh_schema);

    restart_upgrading(
        &mut server,
        "counted each key's machines once",
        &fresh_schema,
    );
    let machines_of = |server: &TestServer, key: &serde_json::Value| {
        let path = format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap());
        server.admin().get(&path).expect(200)["machines"].clone()
    };
    assert_eq!(machines_of(&server, &busy), 3);
    assert_eq!(machines_of(&server, &quiet), 1);

    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    assert!(
        !server.log().contains("counted each key's machines"),
        "{}",
        server.log()
    );
    assert_eq!(machines_of(&server, &busy), 3);
}

/// A database the last version 2 binary wrote (the fixture) is upgraded to version 4 at the
/// next start: its sessions go on working (the ephemeral one with its expiry), the used
/// single-use key is a used-up key of one use, and the schema is the one a first start
/// creates.
#[test]
fn a_version_2_database_is_upgraded_with_its_sessions_intact() {
    let mut server = TestServer::start();
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    let fresh_schema = schema_of(&db);
    install_version_2_fixture(&db);
    // Written by a helper from a version 4 file, version 2 is what the release wrote.
    let mut rewritten = TestServer::start();
    assert_eq!(rewritten.terminate().code(), Some(0));
    rewrite_as_version_2(&rewritten.db_path());
    assert_eq!(schema_of(&rewritten.db_path()), schema_of(&db));

    restart_upgrading(&mut server, "from schema version 2 to 5", &fresh_schema);

    let runner = whoami(&server, V2_RUNNER_SESSION).expect(200);
    assert_eq!(runner["app"]["id"], "ci");
    assert_eq!(runner["machine"]["id"], "mch_Anpwx2T6kMz4jmu84oZI");
    assert_eq!(runner["machine"]["name"], "runner-1");
    assert_eq!(
        runner["machine"]["last_seen_at"],
        "2026-12-01T16:12:22.917Z"
    );
    assert_eq!(runner["machine"]["tags"], json!([]));
    assert_eq!(runner["machine"]["metadata"], json!({}));
    assert_eq!(runner["machine"]["trust_policy_id"], json!(null));
    assert_eq!(runner["machine"]["idle_expires_at"], json!(null));
    whoami(&server, V2_SINGLE_USE_SESSION).expect(200);
    let ephemeral = whoami(&server, V2_EPHEMERAL_SESSION).expect(200);
    assert_eq!(
        ephemeral["machine"]["expires_at"],
        "2100-01-01T00:00:00.000Z"
    );

    let max_uses: Vec<(String, Option<i64>)> = open_db(&db)
        .prepare("SELECT id, max_uses FROM keys ORDER BY pk")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let single_use = |id: &str| (id.to_string(), Some(1));
    let unlimited = |id: &str| (id.to_string(), None);
    assert_eq!(
        max_uses,
        [
            unlimited("key_9TPENVxMvlbkjDt5VQky"),
            single_use("key_3F8BWryIVoqTDS5fFwjG"),
            unlimited("key_NzRKBtAXH14HUtF4NaaL"),
            single_use("key_lh3SSoex1OqqMFdV14Ht"),
        ]
    );
    assert_eq!(
        verify(&server, V2_USED_KEY),
        json!({"valid": false, "code": "used"})
    );
    let used = server
        .admin()
        .get("/v1/apps/ci/keys/key_3F8BWryIVoqTDS5fFwjG")
        .expect(200);
    assert_eq!(
        (&used["max_uses"], &used["uses_remaining"], &used["uses"]),
        (&json!(1), &json!(0), &json!(1))
    );
    let reusable = server
        .admin()
        .get("/v1/apps/ci/keys/key_9TPENVxMvlbkjDt5VQky")
        .expect(200);
    assert_eq!(
        (
            &reusable["max_uses"],
            &reusable["uses_remaining"],
            &reusable["tags"]
        ),
        (&json!(null), &json!(null), &json!([]))
    );
    let second = server.login(V2_REUSABLE_KEY);
    whoami(&server, &session_of(&second)).expect(200);
    let broken_references: i64 = open_db(&db)
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(broken_references, 0);
}

/// The upgrade from version 2 is one transaction too: killed after its first step (the keys'
/// new columns added), the file is still the fixture's version 2, every row there, and the
/// next start upgrades it.
#[test]
fn an_upgrade_from_version_2_killed_part_way_leaves_version_2_whole() {
    const MACHINES: i64 = 2_000;
    let mut server = TestServer::start();
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    install_version_2_fixture(&db);
    open_db(&db)
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO machines (id, key_pk, app_pk, key_id, token_hash, ephemeral, created_at)
             SELECT 'mch_' || i, 1, 1, 'key_9TPENVxMvlbkjDt5VQky', randomblob(32), 0, 0 FROM n",
            [MACHINES],
        )
        .unwrap();
    let v2_schema = schema_of(&db);

    kill_upgrade_after_its_first_step(&server);

    assert_eq!(integrity_check(&db), "ok");
    assert_eq!(user_version(&db), 2);
    assert_eq!(schema_of(&db), v2_schema, "the added columns rolled back");
    let count = |sql: &str| -> i64 { open_db(&db).query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM machines"), MACHINES + 3);

    server.restart();
    assert_eq!(user_version(&db), CURRENT);
    assert_eq!(
        count("SELECT count(*) FROM machines WHERE tags = '[]' AND metadata = '{}'"),
        MACHINES + 3
    );
    assert_eq!(count("SELECT count(*) FROM keys WHERE max_uses = 1"), 2);
    whoami(&server, V2_RUNNER_SESSION).expect(200);
}

/// Version 4's tables (admin tokens, audit log, webhooks) come in one transaction: killed
/// part-way, a version 3 file is still version 3 with every row and no new table; the next
/// start upgrades it, and the new tables work.
#[test]
fn an_upgrade_from_version_3_killed_part_way_leaves_version_3_whole() {
    let mut server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true}));
    let session = session_of(&server.login(key["key"].as_str().unwrap()));
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    rewrite_as_version_3(&db);
    assert_eq!(user_version(&db), 3);
    let v3_schema = schema_of(&db);
    let v3_rows = |db: &Path| -> i64 {
        open_db(db)
            .query_row(
                "SELECT (SELECT count(*) FROM apps) + (SELECT count(*) FROM keys)
                      + (SELECT count(*) FROM machines)",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    assert_eq!(v3_rows(&db), 3);

    kill_upgrade_after_its_first_step(&server);
    assert_eq!(integrity_check(&db), "ok");
    assert_eq!(user_version(&db), 3);
    assert_eq!(schema_of(&db), v3_schema, "the new tables rolled back");
    assert_eq!(v3_rows(&db), 3);

    server.restart();
    assert_eq!(user_version(&db), CURRENT);
    whoami(&server, &session).expect(200);
    server.create_app("after");
    let events = server.admin().get("/v1/audit").expect(200);
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events["events"][0]["action"], "app.created");
}
