//! The database as the tests see it: opened read-only beside the running server, to compare
//! full dumps, run `PRAGMA integrity_check` and count rows.

use rusqlite::{Connection, OpenFlags, types::ValueRef};
use std::path::Path;
use std::time::Duration;

pub fn open_read_only(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|err| panic!("opening {} read-only: {err}", path.display()));
    conn.busy_timeout(Duration::from_secs(10))
        .expect("setting a busy timeout");
    conn
}

/// Every row of every table, schema included, as text: equal dumps mean an unchanged database.
pub fn dump(path: &Path) -> Vec<String> {
    let conn = open_read_only(path);
    let tx = conn
        .unchecked_transaction()
        .expect("one snapshot for the dump");
    let tables: Vec<String> = query_strings(
        &tx,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    );
    assert!(!tables.is_empty(), "{} has no tables", path.display());
    let mut rows = query_rows(&tx, "SELECT * FROM sqlite_master ORDER BY type, name");
    for table in tables {
        let sql = format!("SELECT * FROM \"{table}\" ORDER BY rowid");
        rows.extend(
            query_rows(&tx, &sql)
                .into_iter()
                .map(|row| format!("{table}: {row}")),
        );
    }
    rows
}

pub fn integrity_check(path: &Path) -> String {
    query_strings(&open_read_only(path), "PRAGMA integrity_check").join("; ")
}

/// A single integer, such as a `count(*)`.
pub fn scalar(path: &Path, sql: &str, params: impl rusqlite::Params) -> i64 {
    open_read_only(path)
        .query_row(sql, params, |row| row.get(0))
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// Machines whose key is revoked: a half-done revocation. Must always be zero.
pub fn half_revoked_machines(path: &Path) -> i64 {
    scalar(
        path,
        "SELECT count(*) FROM machines m JOIN keys k ON k.pk = m.key_pk
          WHERE k.revoked_at IS NOT NULL",
        [],
    )
}

fn query_strings(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).expect(sql);
    stmt.query_map([], |row| row.get::<_, String>(0))
        .and_then(Iterator::collect)
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

fn query_rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).expect(sql);
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
}
