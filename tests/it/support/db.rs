//! Inspecting what the server stored, whichever the store: `Db` reads (and for bulk fixtures
//! writes) a test server's SQLite file or PostgreSQL database with the same calls. The SQL the
//! tests pass is written once, with SQLite's `?N` placeholders, in the common subset of both
//! dialects (both schemas use the same tables, columns and integer booleans).

use super::store::{PgDatabase, dollar_placeholders};
use rusqlite::types::ValueRef;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A connection to a test's database file, for inspecting what the server stored.
pub fn open_db(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap_or_else(|err| panic!("opening {}: {err}", db.display()))
}

pub fn integrity_check(db: &Path) -> String {
    open_db(db)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("running PRAGMA integrity_check")
}

pub fn user_version(db: &Path) -> i64 {
    open_db(db)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("reading PRAGMA user_version")
}

/// A test server's database, whichever the store.
#[derive(Clone)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(Arc<PgDatabase>),
}

impl Db {
    /// Every row `sql` returns, each cell as JSON: integers as numbers, text as strings, blobs
    /// as hex strings, NULL as null.
    pub fn rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Value>> {
        match self {
            Db::Sqlite(path) => {
                let conn = open_read_only(path);
                let mut stmt = conn
                    .prepare(sql)
                    .unwrap_or_else(|err| panic!("{sql}: {err}"));
                let columns = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(params), |row| {
                    Ok((0..columns)
                        .map(|i| sqlite_cell(row.get_ref(i).expect("a column in range")))
                        .collect())
                })
                .and_then(Iterator::collect)
                .unwrap_or_else(|err| panic!("{sql}: {err}"))
            }
            Db::Postgres(database) => {
                let params = pg_params(params);
                database
                    .connect()
                    .query(&dollar_placeholders(sql), &params)
                    .unwrap_or_else(|err| panic!("{sql}: {err}"))
                    .iter()
                    .map(|row| (0..row.len()).map(|i| postgres_cell(row, i)).collect())
                    .collect()
            }
        }
    }

    /// The one row `sql` returns, if any.
    pub fn row(&self, sql: &str, params: &[&str]) -> Option<Vec<Value>> {
        let mut rows = self.rows(sql, params);
        assert!(rows.len() <= 1, "{sql} returned {} rows", rows.len());
        rows.pop()
    }

    /// The first column of every row, as text (`NULL` is a failure).
    pub fn strings(&self, sql: &str, params: &[&str]) -> Vec<String> {
        self.rows(sql, params)
            .into_iter()
            .map(|row| match &row[0] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// A single integer, such as a `count(*)` or a `sum(…)`.
    pub fn scalar(&self, sql: &str, params: &[&str]) -> i64 {
        // PostgreSQL's sum() of BIGINTs is NUMERIC: the cast keeps one reading for both stores.
        let sql = match self {
            Db::Sqlite(_) => sql.to_string(),
            Db::Postgres(_) => format!("SELECT ({sql})::bigint"),
        };
        let row = self
            .row(&sql, params)
            .unwrap_or_else(|| panic!("{sql} returned no row"));
        row[0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql} returned {}", row[0]))
    }

    /// Runs `sql` (one statement, no result) and returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match self {
            Db::Sqlite(path) => open_db(path)
                .execute(sql, rusqlite::params_from_iter(params))
                .unwrap_or_else(|err| panic!("{sql}: {err}"))
                as u64,
            Db::Postgres(database) => {
                let params = pg_params(params);
                database
                    .connect()
                    .execute(&dollar_placeholders(sql), &params)
                    .unwrap_or_else(|err| panic!("{sql}: {err}"))
            }
        }
    }

    /// `count` apps written straight into the database, `bulk-0001` … (name `Bulk`, created at
    /// 0), as the server would store them: more rows than a test could create through the API
    /// in its time.
    pub fn insert_apps(&self, count: i64) {
        let sql = match self {
            Db::Sqlite(_) => {
                "INSERT INTO apps (id, name, created_at)
                 SELECT printf('bulk-%04d', i), 'Bulk', 0 FROM {numbers}"
            }
            Db::Postgres(_) => {
                "INSERT INTO apps (id, name, created_at)
                 SELECT 'bulk-' || lpad(i::text, 4, '0'), 'Bulk', 0 FROM {numbers}"
            }
        };
        let sql = sql.replace("{numbers}", self.numbers());
        self.execute(&sql, &[&count.to_string()]);
    }

    /// `count` keys `key_<prefix><i>` (single-use, never used, created at `i`) in the app of
    /// the existing key `beside`, written straight into the database.
    pub fn insert_keys(&self, beside: &str, prefix: &str, count: i64) {
        let sql = format!(
            "INSERT INTO keys (id, app_pk, hash, hint, reusable, ephemeral, created_at)
             SELECT 'key_' || ?3 || i, k.app_pk, {}, 'ena_bulk…', 0, 0, i
               FROM {}, keys k WHERE k.id = ?2",
            self.random_hash(),
            self.numbers()
        );
        self.execute(&sql, &[&count.to_string(), beside, prefix]);
    }

    /// `count` machines `mch_<prefix><i>` of the existing key `key` (created at `created_at(i)`
    /// = `i` when `at_zero` is false, else 0), written straight into the database. The key's
    /// machine counter is the caller's to keep.
    pub fn insert_machines(&self, key: &str, prefix: &str, count: i64, at_zero: bool) {
        let created = if at_zero { "0" } else { "i" };
        let sql = format!(
            "INSERT INTO machines (id, key_pk, app_pk, key_id, token_hash, ephemeral, created_at)
             SELECT 'mch_' || ?3 || i, k.pk, k.app_pk, k.id, {}, 0, {created}
               FROM {}, keys k WHERE k.id = ?2",
            self.random_hash(),
            self.numbers()
        );
        self.execute(&sql, &[&count.to_string(), key, prefix]);
    }

    /// Moves the machine counters by `count` machines of `key` written straight into the
    /// database, as the server's writes do: the key's `machine_rows`, and on PostgreSQL the
    /// database-wide counter row that every node's gauge reads.
    pub fn count_machines_written(&self, key: &str, count: i64) {
        let count = count.to_string();
        let by_key =
            "UPDATE keys SET machine_rows = machine_rows + CAST(CAST(?2 AS TEXT) AS INTEGER)
                       WHERE id = ?1";
        assert_eq!(self.execute(by_key, &[key, &count]), 1, "no key {key}");
        if let Db::Postgres(_) = self {
            let total = "UPDATE counters SET value = value + CAST(CAST(?1 AS TEXT) AS INTEGER)
                          WHERE name = 'machine_rows'";
            assert_eq!(self.execute(total, &[&count]), 1, "no machine_rows counter");
        }
    }

    /// A table `n(i)` of 1 … ?1 (bound as text, as every parameter here).
    fn numbers(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => {
                "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < CAST(?1 AS INTEGER))
                  SELECT i FROM n) n"
            }
            Db::Postgres(_) => "generate_series(1, ?1::text::bigint) n(i)",
        }
    }

    /// 32 random bytes, a hash no token has.
    fn random_hash(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "randomblob(32)",
            Db::Postgres(_) => "sha256(random()::text::bytea)",
        }
    }

    /// Every row of every table, schema included, as text: equal dumps mean an unchanged
    /// database. Schema rows start with `table` or `index`.
    pub fn dump(&self) -> Vec<String> {
        match self {
            Db::Sqlite(path) => dump_sqlite(path),
            Db::Postgres(database) => dump_postgres(&mut database.connect()),
        }
    }

    /// Whether `secret` appears anywhere in what the store keeps (for SQLite the bytes of the
    /// file, its WAL and its shared-memory file; for PostgreSQL every row as text).
    pub fn holds_in_clear(&self, secret: &str) -> bool {
        assert!(!secret.is_empty());
        match self {
            Db::Sqlite(path) => ["", "-wal", "-shm"].iter().any(|suffix| {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                std::fs::read(file).is_ok_and(|bytes| {
                    bytes
                        .windows(secret.len())
                        .any(|window| window == secret.as_bytes())
                })
            }),
            Db::Postgres(_) => self.dump().iter().any(|row| row.contains(secret)),
        }
    }

    /// The store's own consistency check: SQLite's `PRAGMA integrity_check`; on PostgreSQL
    /// amcheck's `bt_index_check` of every index of ours (the extension is created inside a
    /// transaction that is rolled back, leaving the database as it was). `ok` when sound.
    pub fn integrity_check(&self) -> String {
        match self {
            Db::Sqlite(path) => {
                let rows = self.strings("PRAGMA integrity_check", &[]);
                assert!(
                    !rows.is_empty(),
                    "{}: no integrity_check answer",
                    path.display()
                );
                rows.join("; ")
            }
            Db::Postgres(database) => {
                let mut client = database.connect();
                let mut tx = client.transaction().expect("a transaction");
                tx.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                    .expect("creating amcheck");
                let checked = tx.query(
                    "SELECT bt_index_check(c.oid, true), c.relname::text
                       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                       JOIN pg_am am ON am.oid = c.relam
                       JOIN pg_namespace ns ON ns.oid = c.relnamespace
                      WHERE am.amname = 'btree' AND ns.nspname = 'public'",
                    &[],
                );
                let answer = match checked {
                    Ok(rows) if rows.is_empty() => "no index to check".to_string(),
                    Ok(_) => "ok".to_string(),
                    Err(err) => err.to_string(),
                };
                tx.rollback().expect("rolling amcheck back");
                answer
            }
        }
    }

    /// Machines whose key is revoked: a half-done revocation. Must always be zero.
    pub fn half_revoked_machines(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk
              WHERE k.revoked_at IS NOT NULL",
            &[],
        )
    }
}

pub fn open_read_only(path: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|err| panic!("opening {} read-only: {err}", path.display()));
    conn.busy_timeout(Duration::from_secs(10))
        .expect("setting a busy timeout");
    conn
}

fn sqlite_cell(value: ValueRef) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(x) => x.into(),
        ValueRef::Text(text) => String::from_utf8_lossy(text).into(),
        ValueRef::Blob(blob) => hex::encode(blob).into(),
    }
}

fn postgres_cell(row: &postgres::Row, i: usize) -> Value {
    use postgres::types::Type;
    let column = &row.columns()[i];
    let ty = column.type_();
    let cell = if *ty == Type::INT8 {
        row.get::<_, Option<i64>>(i).map(Value::from)
    } else if *ty == Type::INT4 {
        row.get::<_, Option<i32>>(i).map(Value::from)
    } else if *ty == Type::INT2 {
        row.get::<_, Option<i16>>(i).map(Value::from)
    } else if *ty == Type::BOOL {
        row.get::<_, Option<bool>>(i)
            .map(|b| Value::from(i64::from(b)))
    } else if *ty == Type::BYTEA {
        row.get::<_, Option<Vec<u8>>>(i)
            .map(|b| hex::encode(b).into())
    } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(ty) {
        row.get::<_, Option<String>>(i).map(Value::from)
    } else {
        panic!(
            "column {} is {ty}: cast it to bigint or text in the test's SQL",
            column.name()
        )
    };
    cell.unwrap_or(Value::Null)
}

fn dump_sqlite(path: &Path) -> Vec<String> {
    let conn = open_read_only(path);
    let tx = conn
        .unchecked_transaction()
        .expect("one snapshot for the dump");
    let strings = |sql: &str| -> Vec<String> {
        let mut stmt = tx.prepare(sql).expect(sql);
        stmt.query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect)
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    };
    let tables = strings("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
    assert!(!tables.is_empty(), "{} has no tables", path.display());
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = tx.prepare(sql).expect(sql);
        let columns = stmt.column_count();
        stmt.query_map([], |row| {
            let cells: Vec<String> = (0..columns)
                .map(|i| match row.get_ref(i).expect("a column in range") {
                    ValueRef::Null => "NULL".to_string(),
                    ValueRef::Integer(n) => n.to_string(),
                    ValueRef::Real(x) => x.to_string(),
                    ValueRef::Text(text) => format!("{:?}", String::from_utf8_lossy(text)),
                    ValueRef::Blob(blob) => format!("x'{}'", hex::encode(blob)),
                })
                .collect();
            Ok(cells.join(" | "))
        })
        .and_then(Iterator::collect)
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
    };
    let mut dump = rows("SELECT * FROM sqlite_master ORDER BY type, name");
    for table in tables {
        let sql = format!("SELECT * FROM \"{table}\" ORDER BY rowid");
        dump.extend(rows(&sql).into_iter().map(|row| format!("{table}: {row}")));
    }
    dump
}

/// The schema (tables with their columns, indexes with their definitions) and every row of
/// every table in `public`, in one REPEATABLE READ snapshot.
fn dump_postgres(client: &mut postgres::Client) -> Vec<String> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .expect("one snapshot for the dump");
    let strings = |tx: &mut postgres::Transaction, sql: &str| -> Vec<String> {
        tx.query(sql, &[])
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect()
    };
    // `nodes` holds the cluster's leases and barrier acknowledgements, which each node's
    // listener renews on its own schedule: bookkeeping, not data a request changes.
    let tables = strings(
        &mut tx,
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'nodes'
          ORDER BY 1",
    );
    assert!(!tables.is_empty(), "the database has no tables");
    let mut dump = strings(
        &mut tx,
        "SELECT 'table | ' || table_name || ' | ' || string_agg(
                    column_name || ' ' || data_type || ' ' || is_nullable || ' '
                    || coalesce(column_default, ''), ', ' ORDER BY ordinal_position)
           FROM information_schema.columns WHERE table_schema = 'public'
          GROUP BY table_name ORDER BY table_name",
    );
    dump.extend(strings(
        &mut tx,
        "SELECT 'index | ' || indexname || ' | ' || indexdef FROM pg_indexes
          WHERE schemaname = 'public' ORDER BY indexname",
    ));
    for table in tables {
        let sql = format!("SELECT t::text FROM \"{table}\" t ORDER BY 1");
        dump.extend(
            strings(&mut tx, &sql)
                .into_iter()
                .map(|row| format!("{table}: {row}")),
        );
    }
    dump
}

/// Text parameters as the postgres crate takes them.
fn pg_params<'a>(params: &'a [&'a str]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|param| param as &(dyn postgres::types::ToSql + Sync))
        .collect()
}
