//! Queries. A `Reader` wraps a connection inside a (deferred) transaction, so a handful of
//! queries made together see one snapshot.

use crate::error::{Result, storage};
use crate::model::{App, Key, Machine, Timestamp};
use crate::token::TokenHash;
use rusqlite::{Connection, OptionalExtension, Row, params};

const APP_COLUMNS: &str = "a.pk, a.id, a.name, a.created_at";

/// `?1` is "now": only machines that have not expired are counted as active.
const KEY_SELECT: &str = "SELECT k.pk, k.id, a.id, k.description, k.reusable, k.ephemeral,
        k.hint, k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.uses,
        (SELECT count(*) FROM machines m
          WHERE m.key_pk = k.pk AND (m.expires_at IS NULL OR m.expires_at > ?1))
    FROM keys k JOIN apps a ON a.pk = k.app_pk";

const MACHINE_COLUMNS: &str = "m.pk, m.id, a.id, m.key_id, m.name, m.ephemeral, m.created_at,
        m.expires_at, m.last_seen_at";
/// Listings find an app's machines through its keys (`keys_by_app`, then `machines_by_key`).
const MACHINE_JOIN: &str =
    "FROM machines m JOIN keys k ON k.pk = m.key_pk JOIN apps a ON a.pk = k.app_pk";

/// What login and verify need to judge a key: its rules and state, without the counts a
/// listing shows (counting machines would put a scan on the hot path).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyStatus {
    pub pk: i64,
    pub id: String,
    pub app_pk: i64,
    pub app: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub uses: i64,
}

pub struct Reader<'c> {
    conn: &'c Connection,
}

impl<'c> Reader<'c> {
    pub(super) fn new(conn: &'c Connection) -> Reader<'c> {
        Reader { conn }
    }

    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT value FROM settings WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)).optional())
            .map_err(storage)
    }

    /// The live (not deleted) app with this public id.
    pub fn app(&self, id: &str) -> Result<Option<App>> {
        let sql =
            format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.id = ?1 AND a.deleted_at IS NULL");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], app_from_row).optional())
            .map_err(storage)
    }

    pub fn apps(&self) -> Result<Vec<App>> {
        let sql =
            format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.deleted_at IS NULL ORDER BY a.id");
        self.collect(&sql, params![], app_from_row)
    }

    pub fn key(&self, app: &App, key_id: &str, now: Timestamp) -> Result<Option<Key>> {
        let sql = format!("{KEY_SELECT} WHERE k.app_pk = ?2 AND k.id = ?3");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(params![now.0, app.pk, key_id], key_from_row)
                    .optional()
            })
            .map_err(storage)
    }

    /// The app's keys, newest first; revoked ones only when asked for.
    pub fn keys(&self, app: &App, include_revoked: bool, now: Timestamp) -> Result<Vec<Key>> {
        let sql = format!(
            "{KEY_SELECT} WHERE k.app_pk = ?2 AND (?3 OR k.revoked_at IS NULL)
             ORDER BY k.created_at DESC, k.pk DESC"
        );
        self.collect(&sql, params![now.0, app.pk, include_revoked], key_from_row)
    }

    pub fn key_status(&self, hash: &TokenHash) -> Result<Option<KeyStatus>> {
        self.conn
            .prepare_cached(
                "SELECT k.pk, k.id, a.pk, a.id, k.reusable, k.ephemeral, k.expires_at,
                        k.revoked_at, k.uses
                   FROM keys k JOIN apps a ON a.pk = k.app_pk WHERE k.hash = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([hash.as_bytes()], |row| {
                    Ok(KeyStatus {
                        pk: row.get(0)?,
                        id: row.get(1)?,
                        app_pk: row.get(2)?,
                        app: row.get(3)?,
                        reusable: row.get(4)?,
                        ephemeral: row.get(5)?,
                        expires_at: row.get::<_, Option<i64>>(6)?.map(Timestamp),
                        revoked_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
                        uses: row.get(8)?,
                    })
                })
                .optional()
            })
            .map_err(storage)
    }

    /// The machine holding this session token, and its app's pk. Expired machines are returned
    /// too: judging expiry is the caller's rule. The hot path of whoami reads this one row,
    /// neither keys nor apps: revoking a key deletes its machines in the same transaction, and
    /// so does deleting an app. The machine's `app` (the app's public id) is left empty for the
    /// caller, which resolves the app by pk (see `app_cache`).
    pub fn session(&self, token_hash: &TokenHash) -> Result<Option<(i64, Machine)>> {
        self.conn
            .prepare_cached(
                // `machine_from_row`'s columns, with '' for the app's public id.
                "SELECT m.pk, m.id, '', m.key_id, m.name, m.ephemeral, m.created_at,
                        m.expires_at, m.last_seen_at, m.app_pk
                   FROM machines m WHERE m.token_hash = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([token_hash.as_bytes()], |row| {
                    Ok((row.get(9)?, machine_from_row(row)?))
                })
                .optional()
            })
            .map_err(storage)
    }

    /// The app with this pk, deleted or not.
    pub fn app_by_pk(&self, pk: i64) -> Result<Option<App>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.pk = ?1");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([pk], app_from_row).optional())
            .map_err(storage)
    }

    /// How many machines, across all apps, are logged in and not expired at `now`.
    pub fn count_active_machines(&self, now: Timestamp) -> Result<usize> {
        self.conn
            .prepare_cached(
                "SELECT count(*) FROM machines WHERE expires_at IS NULL OR expires_at > ?1",
            )
            .and_then(|mut stmt| stmt.query_row([now.0], |row| row.get::<_, i64>(0)))
            .map(|count| usize::try_from(count).unwrap_or(0))
            .map_err(storage)
    }

    /// The app's machines that have not expired, newest first.
    pub fn active_machines(&self, app: &App, now: Timestamp) -> Result<Vec<Machine>> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} {MACHINE_JOIN}
              WHERE k.app_pk = ?1 AND (m.expires_at IS NULL OR m.expires_at > ?2)
              ORDER BY m.created_at DESC, m.pk DESC"
        );
        self.collect(&sql, params![app.pk, now.0], machine_from_row)
    }

    pub fn machine(&self, app: &App, machine_id: &str) -> Result<Option<Machine>> {
        let sql =
            format!("SELECT {MACHINE_COLUMNS} {MACHINE_JOIN} WHERE k.app_pk = ?1 AND m.id = ?2");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(params![app.pk, machine_id], machine_from_row)
                    .optional()
            })
            .map_err(storage)
    }

    fn collect<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: fn(&Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_map(params, map)?.collect())
            .map_err(storage)
    }
}

fn app_from_row(row: &Row) -> rusqlite::Result<App> {
    Ok(App {
        pk: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
    })
}

fn key_from_row(row: &Row) -> rusqlite::Result<Key> {
    Ok(Key {
        pk: row.get(0)?,
        id: row.get(1)?,
        app: row.get(2)?,
        description: row.get(3)?,
        reusable: row.get(4)?,
        ephemeral: row.get(5)?,
        hint: row.get(6)?,
        created_at: Timestamp(row.get(7)?),
        expires_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
        revoked_at: row.get::<_, Option<i64>>(9)?.map(Timestamp),
        last_used_at: row.get::<_, Option<i64>>(10)?.map(Timestamp),
        uses: row.get(11)?,
        machines: row.get(12)?,
    })
}

fn machine_from_row(row: &Row) -> rusqlite::Result<Machine> {
    Ok(Machine {
        pk: row.get(0)?,
        id: row.get(1)?,
        app: row.get(2)?,
        key_id: row.get(3)?,
        name: row.get(4)?,
        ephemeral: row.get(5)?,
        created_at: Timestamp(row.get(6)?),
        expires_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
        last_seen_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
    })
}
