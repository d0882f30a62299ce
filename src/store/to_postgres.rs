//! `authkeys migrate --from FILE --to postgres://…`: copies a SQLite database, row for row,
//! into an empty PostgreSQL database whose schema the PostgreSQL store has just created.
//!
//! The source is opened through the SQLite store first, which upgrades it to this binary's
//! schema, so both sides have the same tables and columns. Everything is then read in one
//! SQLite read transaction (one committed state) and written in ONE PostgreSQL transaction that
//! holds the cluster-wide write lock: a failure part-way leaves the target as empty as it was.
//! Primary keys, public ids, hashes, timestamps and audit `seq`s are copied as they are; each
//! identity sequence is then moved past the highest value copied (and, for `audit_events`, past
//! the highest `seq` SQLite ever handed out), so no id is ever handed out twice.

use super::pg_url::{self, PgUrl};
use super::sql::Value;
use super::{Database, Store, pg};
use crate::domain::error::StartError;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::Path;

/// What was copied: each table's rows, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub tables: Vec<(String, u64)>,
}

/// A SQLite table's name and columns, in order.
struct Table {
    name: String,
    columns: Vec<String>,
}

/// Server-wide values (the generated admin token's hash, the key-expiring horizon): the
/// PostgreSQL store writes some when it creates the schema, so the source's rows replace those
/// of the same name and the others stay.
const SETTINGS: &str = "settings";

pub(crate) fn migrate(source: &Path, target: &PgUrl) -> Result<Migrated, StartError> {
    if !source.is_file() {
        return Err(StartError::new(format!(
            "{}: no such database file",
            source.display()
        )));
    }
    // Upgrades the file to this binary's schema (or refuses a file it cannot read).
    drop(Store::open(&Database::File(source.to_path_buf()))?);
    let from = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|err| StartError::caused(format!("opening {}", source.display()), err))?;
    let tables = tables_in_copy_order(&from)
        .map_err(|err| StartError::caused(format!("reading {}", source.display()), err))?;
    // Every message names the database without its password, and never quotes it.
    let fail = |what: &str, err: Box<dyn StdError + Send + Sync>| {
        StartError::new(format!(
            "{what} {target}: {}",
            target.redact(&err.to_string())
        ))
    };
    // Refused before anything is written: the schema is created only in an empty database
    // (and the store refuses another program's).
    let mut client = pg_url::connect(target)?;
    refuse_unless_empty(&mut client, &tables, target)?;
    drop(Store::open(&Database::Postgres(target.clone()))?);
    let mut tx = client
        .transaction()
        .map_err(|err| fail("starting a transaction on", err.into()))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg::WRITE_LOCK])
        .map_err(|err| fail("locking", err.into()))?;
    // Again under the lock: a server started on the target meanwhile may have written.
    refuse_unless_empty(&mut tx, &tables, target)?;
    // One read transaction: every table from the same committed state.
    from.execute_batch("BEGIN")
        .map_err(|err| StartError::caused(format!("reading {}", source.display()), err))?;
    let mut copied = Vec::new();
    for table in &tables {
        let rows = copy_table(&from, &mut tx, table)
            .map_err(|err| fail(&format!("copying table {} to", table.name), err))?;
        copied.push((table.name.clone(), rows));
    }
    let handed_out = sqlite_sequences(&from)
        .map_err(|err| StartError::caused(format!("reading {}", source.display()), err))?;
    move_sequences_past_copied(&mut tx, &tables, &handed_out)
        .map_err(|err| fail("moving the id sequences of", err))?;
    // The PostgreSQL store's own count of machine rows (`Store::machine_rows`), which SQLite
    // keeps in memory instead.
    tx.execute(
        "UPDATE counters SET value = (SELECT count(*) FROM machines) WHERE name = 'machine_rows'",
        &[],
    )
    .map_err(|err| fail("counting the machines of", err.into()))?;
    tx.commit()
        .map_err(|err| fail("committing the copy to", err.into()))?;
    Ok(Migrated { tables: copied })
}

/// Every table of the source (SQLite's own excepted), each after the tables it references.
fn tables_in_copy_order(conn: &Connection) -> rusqlite::Result<Vec<Table>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema
              WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut references: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &names {
        let referenced = conn
            .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")?
            .query_map([name], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        references.insert(name.clone(), referenced);
    }
    let mut ordered: Vec<String> = Vec::new();
    while ordered.len() < names.len() {
        let before = ordered.len();
        for name in &names {
            let ready = references[name]
                .iter()
                .all(|other| other == name || ordered.contains(other));
            if !ordered.contains(name) && ready {
                ordered.push(name.clone());
            }
        }
        assert!(
            ordered.len() > before,
            "a cycle of foreign keys in schema.sql"
        );
    }
    ordered
        .into_iter()
        .map(|name| {
            let columns = conn
                .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
                .query_map([&name], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Table { name, columns })
        })
        .collect()
}

/// Refuses a target that holds any row of the source's tables (other than the store's own
/// server-wide values), naming what it holds.
fn refuse_unless_empty(
    client: &mut impl postgres::GenericClient,
    tables: &[Table],
    target: &PgUrl,
) -> Result<(), StartError> {
    let reading = |err: postgres::Error| {
        StartError::new(format!(
            "reading {target}: {}",
            target.redact(&err.to_string())
        ))
    };
    let existing: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = current_schema()",
            &[],
        )
        .map_err(reading)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut held = Vec::new();
    for table in tables {
        if table.name == SETTINGS || !existing.contains(&table.name) {
            continue;
        }
        // Table names come from our own schema, never from input.
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .map_err(reading)?
            .get(0);
        if rows > 0 {
            held.push(format!("{} {rows}", table.name));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(StartError::new(format!(
        "{target} is not empty ({}): migrate only into a new database, nothing was written",
        held.join(", ")
    )))
}

/// Copies one table with `COPY … FROM STDIN (FORMAT binary)`; returns the rows copied.
fn copy_table(
    from: &Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &Table,
) -> Result<u64, Box<dyn StdError + Send + Sync>> {
    let columns = table.columns.join(", ");
    // The target's types, column by column (an error here names a column it lacks).
    let types: Vec<Type> = tx
        .prepare(&format!("SELECT {columns} FROM {} LIMIT 0", table.name))?
        .columns()
        .iter()
        .map(|column| column.type_().clone())
        .collect();
    if table.name == SETTINGS {
        return upsert_settings(from, tx);
    }
    let sink = tx.copy_in(&format!(
        "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
        table.name
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut select = from.prepare(&format!("SELECT {columns} FROM {}", table.name))?;
    let mut rows = select.query([])?;
    let mut copied = 0u64;
    while let Some(row) = rows.next()? {
        let values = (0..types.len())
            .map(|i| value_of(row.get_ref(i)?))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let params: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value as &(dyn ToSql + Sync))
            .collect();
        writer.write(&params)?;
        copied += 1;
    }
    writer.finish()?;
    Ok(copied)
}

fn upsert_settings(
    from: &Connection,
    tx: &mut postgres::Transaction<'_>,
) -> Result<u64, Box<dyn StdError + Send + Sync>> {
    let upsert = tx.prepare(
        "INSERT INTO settings (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )?;
    let mut select = from.prepare("SELECT name, value FROM settings")?;
    let mut rows = select.query([])?;
    let mut copied = 0;
    while let Some(row) = rows.next()? {
        let (name, value): (String, Vec<u8>) = (row.get(0)?, row.get(1)?);
        tx.execute(&upsert, &[&name, &value])?;
        copied += 1;
    }
    Ok(copied)
}

/// The highest value SQLite ever handed out per AUTOINCREMENT table (it can exceed the
/// highest row left, once the newest rows were deleted).
fn sqlite_sequences(conn: &Connection) -> rusqlite::Result<BTreeMap<String, i64>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    conn.prepare("SELECT name, seq FROM sqlite_sequence")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

/// Sets each identity (or serial) column's sequence so that its next value is above every
/// value copied and every value SQLite handed out.
fn move_sequences_past_copied(
    tx: &mut postgres::Transaction<'_>,
    tables: &[Table],
    handed_out: &BTreeMap<String, i64>,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    for table in tables {
        for column in &table.columns {
            let sequence: Option<String> = tx
                .query_one(
                    "SELECT pg_get_serial_sequence($1, $2)",
                    &[&table.name, column],
                )?
                .get(0);
            if sequence.is_none() {
                continue;
            }
            let copied: Option<i64> = tx
                .query_one(
                    &format!("SELECT max({column})::bigint FROM {}", table.name),
                    &[],
                )?
                .get(0);
            let highest = copied.max(handed_out.get(&table.name).copied());
            if let Some(highest) = highest {
                tx.execute(
                    "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                    &[&table.name, column, &highest],
                )?;
            }
        }
    }
    Ok(())
}

/// A SQLite value as the adapter's `Value`, which PostgreSQL receives as the column's type.
fn value_of(value: ValueRef<'_>) -> rusqlite::Result<Value<'_>> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Text(text) => Value::Text(
            std::str::from_utf8(text).map_err(|err| rusqlite::Error::Utf8Error(0, err))?,
        ),
        ValueRef::Blob(bytes) => Value::Blob(bytes),
        // STRICT tables hold no REAL column.
        ValueRef::Real(_) => {
            return Err(rusqlite::Error::InvalidColumnType(
                0,
                "a REAL value".into(),
                rusqlite::types::Type::Real,
            ));
        }
    })
}
