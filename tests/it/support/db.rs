//! Inspecting what the server stored: a connection to the test's database file.

use std::path::Path;

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
