//! The PostgreSQL engine: several nodes on one database. One writer connection per node, each
//! write transaction opened with `pg_advisory_xact_lock(WRITE_LOCK)`, the cluster-wide twin of
//! SQLite's `BEGIN IMMEDIATE`: writes are serialised across nodes, so every "judge, then
//! record" write (single-use keys, `max_uses`, revocation cascades, the audit event of a change)
//! holds as on one node. Reads use a bounded pool of connections, single statements in
//! autocommit; a snapshot is one REPEATABLE READ READ ONLY transaction. The schema is created
//! or checked at start under `pg_advisory_lock(MIGRATE_LOCK)`, so nodes starting together
//! take turns. A connection that breaks is dropped and a new one made on the next use: the
//! request that met the break gets `Error::Unavailable` (503), the next ones are served.

use super::pg_url::{self, PgUrl};
use super::sql::{Conn, PgConn, SqlResult, args};
use super::{Reader, SCHEMA_VERSION, Writer, audit, lock, storage};
use crate::domain::error::{self, Error, StartError};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Read connections per node, at most (`--pg-pool-size`).
pub const DEFAULT_POOL_SIZE: usize = 8;
const SCHEMA: &str = include_str!("../../schema.postgres.sql");
/// The advisory lock every write transaction takes (a constant of our own: "authkeyW").
pub(crate) const WRITE_LOCK: i64 = 0x6175_7468_6b65_7957;
/// The advisory lock held while the schema is created or checked ("authkeyM").
const MIGRATE_LOCK: i64 = 0x6175_7468_6b65_794d;
/// How long a read waits for a pooled connection when all are busy.
const POOL_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct PgStore {
    url: PgUrl,
    config: postgres::Config,
    writer: Mutex<Option<PgConn>>,
    readers: Pool,
}

impl PgStore {
    /// Connects, creates or checks the schema, and keeps the connection as the writer. Any
    /// failure is a start-up error naming the URL (redacted), and writes nothing.
    pub(crate) fn open(url: &PgUrl, pool_size: usize) -> Result<PgStore, StartError> {
        let config = url.config()?;
        let client = pg_url::connect(url)?;
        let writer = PgConn::new(client);
        migrate(&writer, url)?;
        Ok(PgStore {
            url: url.clone(),
            config,
            writer: Mutex::new(Some(writer)),
            readers: Pool {
                size: pool_size.max(1),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                freed: Condvar::new(),
            },
        })
    }

    #[allow(dead_code)] // Through `Store::postgres_url`.
    pub(crate) fn url(&self) -> &PgUrl {
        &self.url
    }

    fn connect(&self) -> error::Result<PgConn> {
        pg_url::connect_with(&self.url, &self.config)
            .map(PgConn::new)
            .map_err(|err| {
                log::error!("storage error: {err}");
                Error::Unavailable
            })
    }

    /// Runs `work` on a pooled connection, in autocommit: each statement sees the state
    /// committed when it starts.
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&Reader) -> error::Result<T>,
    ) -> error::Result<T> {
        let conn = self.readers.checkout(|| self.connect())?;
        let result = work(&Reader::new(Conn::Postgres(&conn)));
        self.readers.give_back(conn, &result);
        result
    }

    /// Runs `work` in one REPEATABLE READ, READ ONLY transaction: every query sees one
    /// committed state.
    pub(crate) fn snapshot<T>(
        &self,
        work: impl FnOnce(&Reader) -> error::Result<T>,
    ) -> error::Result<T> {
        let conn = self.readers.checkout(|| self.connect())?;
        let result = in_transaction(
            &conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            |conn| work(&Reader::new(conn)),
        );
        self.readers.give_back(conn, &result);
        result
    }

    /// Runs `work` in one transaction on the writer connection, holding the cluster-wide write
    /// lock, and moves the machine counter by what it added, in the same transaction.
    pub(crate) fn write<T>(
        &self,
        work: impl FnOnce(&Writer) -> error::Result<T>,
    ) -> error::Result<T> {
        let mut writer = lock(&self.writer);
        if writer.as_ref().is_none_or(PgConn::is_closed) {
            *writer = None;
            *writer = Some(self.connect()?);
        }
        let conn = writer.as_ref().expect("connected above");
        let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})");
        let result = in_transaction(conn, &begin, |conn| {
            let writer = Writer::new(conn);
            let value = work(&writer)?;
            add_machine_rows(conn, writer.machines_added()).map_err(storage)?;
            Ok(value)
        });
        if matches!(result, Err(Error::Unavailable)) || conn.is_closed() {
            *writer = None;
        }
        result
    }

    /// Sets the machine counter to the rows there are, under the write lock.
    pub(crate) fn count_machines(&self) -> error::Result<u64> {
        self.write(|w| {
            let count = w.machine_rows_of_all_keys()?;
            w.execute(
                "UPDATE counters SET value = ?1 WHERE name = 'machine_rows'",
                args![i64::try_from(count).unwrap_or(i64::MAX)],
            )?;
            Ok(count)
        })
    }

    /// The machine counter every node keeps in the database; `None` if it cannot be read.
    pub(crate) fn machine_rows(&self) -> Option<u64> {
        self.read(|r| {
            r.optional(
                "SELECT value FROM counters WHERE name = 'machine_rows'",
                args![],
                |row| row.get::<i64>(0),
            )
        })
        .ok()
        .flatten()
        .and_then(|count| u64::try_from(count).ok())
    }
}

fn add_machine_rows(conn: Conn, added: i64) -> SqlResult<()> {
    if added != 0 {
        conn.execute(
            "UPDATE counters SET value = value + ?1 WHERE name = 'machine_rows'",
            args![added],
        )?;
    }
    Ok(())
}

/// Runs `work` between `begin` and COMMIT (ROLLBACK if it fails). A COMMIT cut off by a lost
/// connection is `Unavailable`: never reported as done.
fn in_transaction<T>(
    conn: &PgConn,
    begin: &str,
    work: impl FnOnce(Conn) -> error::Result<T>,
) -> error::Result<T> {
    conn.client().batch_execute(begin).map_err(storage)?;
    match work(Conn::Postgres(conn)) {
        Ok(value) => {
            conn.client().batch_execute("COMMIT").map_err(storage)?;
            Ok(value)
        }
        Err(err) => {
            if !conn.is_closed() {
                let _ = conn.client().batch_execute("ROLLBACK");
            }
            Err(err)
        }
    }
}

/// The read connections: at most `size` open, idle ones kept for the next read.
struct Pool {
    size: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    /// Connections open, idle or checked out (or being opened).
    open: usize,
}

impl Pool {
    fn checkout(&self, connect: impl FnOnce() -> error::Result<PgConn>) -> error::Result<PgConn> {
        let mut state = lock(&self.state);
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                let conn = connect();
                if conn.is_err() {
                    lock(&self.state).open -= 1;
                    self.freed.notify_one();
                }
                return conn;
            }
            let (next, waited) = self
                .freed
                .wait_timeout(state, POOL_WAIT)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state = next;
            if waited.timed_out() && state.idle.is_empty() && state.open >= self.size {
                log::error!("storage error: no read connection free within {POOL_WAIT:?}");
                return Err(Error::Unavailable);
            }
        }
    }

    /// Takes a connection back after a read. One that broke is closed, and so is every idle
    /// one: a break is most often the server restarting, which broke them all.
    fn give_back<T>(&self, conn: PgConn, result: &error::Result<T>) {
        let mut state = lock(&self.state);
        if matches!(result, Err(Error::Unavailable)) || conn.is_closed() {
            let dropped = 1 + state.idle.len();
            state.idle.clear();
            state.open -= dropped;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.freed.notify_all();
    }
}

/// Creates the schema in an empty database, or checks that an existing one is ours and not
/// newer, and re-applies `schema.postgres.sql` (all IF NOT EXISTS); all in one transaction,
/// under the migration lock, so nodes starting together take turns and a failure writes
/// nothing.
fn migrate(conn: &PgConn, url: &PgUrl) -> Result<(), StartError> {
    let fail = |err: postgres::Error| {
        StartError::new(format!(
            "migrating {}: {}",
            url.redacted(),
            url.redact(&super::sql::SqlError::Postgres(err).to_string())
        ))
    };
    conn.client()
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(fail)?;
    let migrated = migrate_locked(conn, url, &fail);
    if !conn.is_closed() {
        let _ = conn
            .client()
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    }
    migrated
}

fn migrate_locked(
    conn: &PgConn,
    url: &PgUrl,
    fail: &dyn Fn(postgres::Error) -> StartError,
) -> Result<(), StartError> {
    conn.client().batch_execute("BEGIN").map_err(fail)?;
    let result = (|| {
        let mut client = conn.client();
        let ours: bool = client
            .query_one("SELECT to_regclass('authkeys_schema') IS NOT NULL", &[])
            .map_err(fail)?
            .get(0);
        let version: i64 = if ours {
            client
                .query_one("SELECT coalesce(max(version), 0) FROM authkeys_schema", &[])
                .map_err(fail)?
                .get(0)
        } else {
            let tables: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                      WHERE table_schema = current_schema()",
                    &[],
                )
                .map_err(fail)?
                .get(0);
            if tables > 0 {
                return Err(StartError::new(format!(
                    "{} is not an authkeys database: it has tables but no authkeys_schema",
                    url.redacted()
                )));
            }
            0
        };
        if version > SCHEMA_VERSION {
            return Err(StartError::new(format!(
                "{} has schema version {version}, newer than this binary's {SCHEMA_VERSION}: \
                 run a newer authkeys",
                url.redacted()
            )));
        }
        client.batch_execute(SCHEMA).map_err(fail)?;
        if version == 0 {
            client
                .execute(
                    "INSERT INTO authkeys_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .map_err(fail)?;
        }
        client
            .batch_execute(
                "INSERT INTO counters (name, value) VALUES ('machine_rows', 0)
                 ON CONFLICT (name) DO NOTHING",
            )
            .map_err(fail)?;
        drop(client);
        audit::start_key_expiring_horizon(Conn::Postgres(conn)).map_err(|err| {
            StartError::new(format!(
                "migrating {}: {}",
                url.redacted(),
                url.redact(&err.to_string())
            ))
        })?;
        Ok(version)
    })();
    match result {
        Ok(version) => {
            conn.client().batch_execute("COMMIT").map_err(fail)?;
            if version == 0 {
                log::info!(
                    "created schema version {SCHEMA_VERSION} in {}",
                    url.redacted()
                );
            }
            Ok(())
        }
        Err(err) => {
            let _ = conn.client().batch_execute("ROLLBACK");
            Err(err)
        }
    }
}
