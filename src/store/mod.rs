//! Storage, on SQLite (a file, the default) or PostgreSQL (`pg.rs`, several nodes): opening
//! and migrating the database, and the two ways in: `read` (a pooled connection of its own, so
//! reads never wait on a write) and `write` (the single writer connection inside
//! `BEGIN IMMEDIATE`, or PostgreSQL's cluster-wide write lock). Every SQL statement of the
//! project lives in this module, written once for both engines (`sql.rs`); it returns domain
//! types and knows nothing of HTTP.

mod admin_tokens;
mod audit;
mod backup;
#[cfg(test)]
mod engine_tests;
mod files;
mod pg;
pub(crate) mod pg_url;
mod read;
mod sql;
#[cfg(test)]
pub(crate) mod test_db;
mod to_postgres;
mod webhooks;
mod write;

pub use backup::BackedUp;
pub(crate) use backup::backup;
pub use files::Database;
pub(crate) use files::tighten;
pub use pg::DEFAULT_POOL_SIZE as DEFAULT_PG_POOL_SIZE;
pub use pg_url::PgUrl;
pub(crate) use read::Reader;
pub use to_postgres::Migrated;
pub(crate) use to_postgres::migrate as migrate_to_postgres;
pub(crate) use webhooks::NewWebhook;
pub(crate) use write::{NewMachine, Writer};

use crate::domain::error::{self, Error, StartError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use sql::Conn;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

/// Converts a database failure into the opaque `Error::Storage`, logging its detail here, at
/// the store boundary, so that it is recorded once and never sent to a client.
pub(crate) fn storage(err: impl Into<sql::SqlError>) -> Error {
    let err = err.into();
    log::error!("storage error: {err}");
    if err.is_unavailable() {
        Error::Unavailable
    } else {
        Error::Storage
    }
}

thread_local! {
    /// Whether this thread is inside `memory_only`.
    static MEMORY_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with the database closed to this thread: every `read`, `snapshot` and `write`
/// fails at once with `Error::NeedsDatabase`, running nothing. The HTTP connection threads
/// answer the requests they can this way (`http::handle_in_memory`), so that none of them ever
/// waits on the database, whose work stays on the bounded pool of workers.
pub(crate) fn memory_only<T>(work: impl FnOnce() -> T) -> T {
    /// Opens the database to the thread again however `work` ends, a panic included.
    struct Reopen(bool);
    impl Drop for Reopen {
        fn drop(&mut self) {
            MEMORY_ONLY.set(self.0);
        }
    }
    let _reopen = Reopen(MEMORY_ONLY.replace(true));
    work()
}

/// `Err(NeedsDatabase)` inside `memory_only`.
fn database_open() -> error::Result<()> {
    match MEMORY_ONLY.get() {
        true => Err(Error::NeedsDatabase),
        false => Ok(()),
    }
}

/// The schema this binary writes; `PRAGMA user_version` records which one a database has.
const SCHEMA_VERSION: i64 = 5;
const SCHEMA: &str = include_str!("../../schema.sql");

/// Version 2 gave machines `app_pk` and `key_id`. SQLite cannot add NOT NULL columns without
/// a default, so the upgrade rebuilds the table: this sets the old one aside, `SCHEMA` (all
/// IF NOT EXISTS) creates the new one and its indexes, and the copy below fills it.
const UPGRADE_FROM_1_SET_ASIDE: &str = "
    ALTER TABLE machines RENAME TO machines_v1;
    DROP INDEX machines_by_key;
    DROP INDEX machines_by_expiry;";
/// Copies exactly the sessions version 1 honoured: of unrevoked keys of live apps.
const UPGRADE_FROM_1_COPY: &str = "
    INSERT INTO machines (pk, id, key_pk, app_pk, key_id, token_hash, name, ephemeral,
                          created_at, expires_at, last_seen_at)
    SELECT m.pk, m.id, m.key_pk, k.app_pk, k.id, m.token_hash, m.name, m.ephemeral,
           m.created_at, m.expires_at, m.last_seen_at
      FROM machines_v1 m JOIN keys k ON k.pk = m.key_pk JOIN apps a ON a.pk = k.app_pk
     WHERE k.revoked_at IS NULL AND a.deleted_at IS NULL;
    DROP TABLE machines_v1;";
/// Version 3 gave keys and machines their policy (tags, metadata, use limits, session
/// lifetimes, idle timeouts, rotation links): new columns, each with a default or nullable, so
/// the upgrade adds them in place. A single-use key of version 2 is a key with `max_uses` 1.
/// A version 1 file gets the machines' columns from `SCHEMA`, which rebuilds that table.
const UPGRADE_FROM_2_KEYS: &str = "
    ALTER TABLE keys ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE keys ADD COLUMN max_uses INTEGER;
    ALTER TABLE keys ADD COLUMN session_ttl INTEGER;
    ALTER TABLE keys ADD COLUMN idle_timeout INTEGER;
    ALTER TABLE keys ADD COLUMN rotated_from TEXT;
    ALTER TABLE keys ADD COLUMN rotated_to TEXT;
    UPDATE keys SET max_uses = 1 WHERE reusable = 0;";
const UPGRADE_FROM_2_MACHINES: &str = "
    ALTER TABLE machines ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE machines ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE machines ADD COLUMN trust_policy_id TEXT;
    ALTER TABLE machines ADD COLUMN idle_timeout INTEGER;";
/// Version 5 (OIDC) lets a machine log in through a trust policy, without a key: its
/// `key_pk` and `key_id` become nullable, which SQLite can only do by rebuilding the table
/// (set aside, `SCHEMA` creates the new one with the new tables, copy, drop). The columns keep
/// their order, so the copy is row for row. A version 1 file needs none of it: its upgrade
/// already rebuilds machines from `SCHEMA`.
const UPGRADE_TO_5_SET_ASIDE: &str = "
    ALTER TABLE machines RENAME TO machines_v4;
    DROP INDEX IF EXISTS machines_by_key;
    DROP INDEX IF EXISTS machines_by_app;
    DROP INDEX IF EXISTS machines_by_expiry;
    DROP INDEX IF EXISTS machines_by_idle_deadline;
    DROP INDEX IF EXISTS machines_by_trust_policy;";
const UPGRADE_TO_5_COPY: &str = "
    INSERT INTO machines (pk, id, key_pk, app_pk, key_id, token_hash, name, ephemeral,
                          created_at, expires_at, last_seen_at, tags, metadata,
                          trust_policy_id, idle_timeout)
    SELECT pk, id, key_pk, app_pk, key_id, token_hash, name, ephemeral, created_at,
           expires_at, last_seen_at, tags, metadata, trust_policy_id, idle_timeout
      FROM machines_v4;
    DROP TABLE machines_v4;";
const UPGRADE_TO_5: [&str; 3] = [UPGRADE_TO_5_SET_ASIDE, SCHEMA, UPGRADE_TO_5_COPY];
/// `keys.machine_rows` came after version 2 shipped, without a version change (it only adds
/// a column that is derived from rows already there): a version 1 or earlier version 2 file
/// gets it here, filled from the machines it has. This counts every machine once, at the
/// first start of a binary that has the column; never again.
const ADD_MACHINE_ROWS: &str = "
    ALTER TABLE keys ADD COLUMN machine_rows INTEGER NOT NULL DEFAULT 0;
    UPDATE keys SET machine_rows = (SELECT count(*) FROM machines m WHERE m.key_pk = keys.pk);";
/// Page cache of each reader connection (SQLite's default is 2 MiB), by the size of the
/// database when the reader opens. There is one reader per concurrent read, so this is paid
/// about once per worker thread. A random lookup reads the interior pages of an index and of
/// its table, which a cache keeps, and one leaf of each, which it never reuses. A small
/// database's interior pages fit in 1 MiB: with 2 MiB, random reads of one filled eight caches
/// with leaves, a third of the server's memory. A large one's do not: at 1,000,000 machines
/// (96,000 pages) the session lookup's two trees have 201 interior pages, and random session
/// lookups read 2.88 pages each with 1 MiB, 2.54 with 1.5 MiB and 2.32 with 2 MiB (`strace
/// -c`; a bare SQLite connection with 2 MiB doing one lookup of the same rows: 2.35). 2 MiB
/// took the peak RSS of that database under load from 52.7 to 64.2 MiB, 1.5 MiB to 58.1.
fn reader_cache_kib(database_pages: i64) -> i64 {
    if database_pages >= LARGE_DATABASE_PAGES {
        LARGE_READER_CACHE_KIB
    } else {
        READER_CACHE_KIB
    }
}
const READER_CACHE_KIB: i64 = 1024;
const LARGE_READER_CACHE_KIB: i64 = 1536;
/// 64 MiB of 4 KiB pages: past this, the lookups' interior pages outgrow 1 MiB of cache.
const LARGE_DATABASE_PAGES: i64 = 16 * 1024;
/// How long a statement waits for a lock before failing. Writers are serialised by a mutex
/// first, so this only matters when another process (a backup, a second server) holds it.
/// `Config::busy_timeout` by default; the tests that wait one out set it short.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// `Store::machine_rows` before the first count.
const UNKNOWN: i64 = -1;

pub(crate) struct Store {
    engine: Engine,
}

// One per process: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Sqlite(SqliteStore),
    Postgres(pg::PgStore),
}

struct SqliteStore {
    path: PathBuf,
    synchronous: &'static str,
    busy_timeout: Duration,
    writer: Mutex<Connection>,
    /// How many threads wait for `writer` now (see `Store::writer_wanted`).
    writer_waiters: AtomicUsize,
    readers: Mutex<Vec<Connection>>,
    /// How many machine rows exist (`UNKNOWN` until `count_machines` has run): changed only
    /// under the writer lock, after the commit of a write that added or deleted some, so it
    /// is exact without any query. `/metrics` reads it. (PostgreSQL keeps it in the database,
    /// since other nodes write too.)
    machine_rows: AtomicI64,
    /// Keeps a `:memory:` instance's scratch directory alive; removes it on drop.
    _scratch: Option<files::ScratchDir>,
}

/// How a store is opened, beyond where its database is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// SQLite: how long a statement waits for another process's lock.
    pub(crate) busy_timeout: Duration,
    /// PostgreSQL: read connections per node, at most.
    pub(crate) pg_pool_size: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            busy_timeout: BUSY_TIMEOUT,
            pg_pool_size: pg::DEFAULT_POOL_SIZE,
        }
    }
}

impl Store {
    /// Opens (creating if needed, owner-only for a file) and migrates the database.
    pub(crate) fn open(database: &Database) -> Result<Store, StartError> {
        Store::open_with(database, Options::default())
    }

    /// `open`, with `options`.
    pub(crate) fn open_with(database: &Database, options: Options) -> Result<Store, StartError> {
        let engine = match database {
            Database::Postgres(url) => {
                Engine::Postgres(pg::PgStore::open(url, options.pg_pool_size)?)
            }
            _ => Engine::Sqlite(SqliteStore::open(database, options.busy_timeout)?),
        };
        Ok(Store { engine })
    }

    /// The PostgreSQL database's URL (for connections of its own, `pg_url::connect`), `None`
    /// on SQLite.
    pub(crate) fn postgres_url(&self) -> Option<&PgUrl> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(pg) => Some(pg.url()),
        }
    }

    /// Runs `work` on a read connection of its own, for reads of one statement each: each
    /// statement reads one committed state, so no transaction is needed (the hot paths save a
    /// BEGIN and a ROLLBACK). Reads never wait on the writer.
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&Reader) -> error::Result<T>,
    ) -> error::Result<T> {
        database_open()?;
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.read(work),
            Engine::Postgres(pg) => pg.read(work),
        }
    }

    /// Like `read`, inside one transaction, so that several queries see the same committed
    /// state.
    pub(crate) fn snapshot<T>(
        &self,
        work: impl FnOnce(&Reader) -> error::Result<T>,
    ) -> error::Result<T> {
        database_open()?;
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.snapshot(work),
            Engine::Postgres(pg) => pg.snapshot(work),
        }
    }

    /// Runs `work` in one write transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the
    /// cluster-wide write lock), committing if it returns `Ok` and rolling back otherwise.
    /// Keep `work` short: it holds the lock.
    pub(crate) fn write<T>(
        &self,
        work: impl FnOnce(&Writer) -> error::Result<T>,
    ) -> error::Result<T> {
        database_open()?;
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.write(work),
            Engine::Postgres(pg) => pg.write(work),
        }
    }

    /// Runs `work`, many write transactions deleting or changing a large backlog of rows, with
    /// the SQLite writer given a larger page cache and fewer WAL checkpoints (see
    /// `BULK_WRITER_CACHE_KIB`); afterwards the usual ones are back and the WAL is
    /// checkpointed. Other writes that interleave run the same way meanwhile. PostgreSQL: just
    /// `work`.
    pub(crate) fn bulk_writes<T>(
        &self,
        work: impl FnOnce() -> error::Result<T>,
    ) -> error::Result<T> {
        database_open()?;
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.bulk_writes(work),
            Engine::Postgres(_) => work(),
        }
    }

    /// Whether another write waits for the one running now (SQLite; always `false` on
    /// PostgreSQL, whose long writes are single statements). A long batch of deletions checks
    /// it between rows and commits early, so that a thread running it at a low CPU priority
    /// never keeps logins and revocations waiting (see `sweeper::sweep_backlog`).
    pub(crate) fn writer_wanted(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.writer_waiters.load(Ordering::Relaxed) > 0,
            Engine::Postgres(_) => false,
        }
    }

    /// Whether a long write gives way to writes that wait (`writer_wanted`) between its rows:
    /// on SQLite a batch of expired machines is deleted row by row and may commit early; on
    /// PostgreSQL it is one statement, and its transaction holds the cluster's write lock
    /// (`pg_advisory_xact_lock`) until it commits, whatever waits.
    pub(crate) fn long_writes_give_way(&self) -> bool {
        matches!(self.engine, Engine::Sqlite(_))
    }

    /// How many machine rows exist (logged in, including ephemeral ones expired since the
    /// last sweep), without a count of rows; `None` until `count_machines` has run once (or,
    /// on PostgreSQL, while the database cannot be read).
    pub(crate) fn machine_rows(&self) -> Option<u64> {
        match &self.engine {
            Engine::Sqlite(sqlite) => {
                u64::try_from(sqlite.machine_rows.load(Ordering::Relaxed)).ok()
            }
            Engine::Postgres(pg) => pg.machine_rows(),
        }
    }

    /// Counts the machine rows from the per-key counters (one row per key, not per machine)
    /// and keeps the count from now on. Under the writer lock, so no write is missed or
    /// counted twice. The sweeper calls it once, off the start-up path.
    pub(crate) fn count_machines(&self) -> error::Result<u64> {
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.count_machines(),
            Engine::Postgres(pg) => pg.count_machines(),
        }
    }
}

impl SqliteStore {
    fn open(database: &Database, busy_timeout: Duration) -> Result<SqliteStore, StartError> {
        let (path, scratch) = files::prepare(database)?;
        // A throwaway instance has nothing to keep across a power cut; everything else makes
        // each acknowledged write durable before the response is sent.
        let synchronous = if scratch.is_some() { "OFF" } else { "FULL" };
        let writer = open_connection(&path, synchronous, busy_timeout)
            .and_then(|conn| {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                // A WAL grown past this (a backlog swept in `bulk_writes`) is cut back to it
                // when it next starts over; the usual writes never grow it this far.
                conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
                Ok(conn)
            })
            .map_err(|err| StartError::caused(format!("opening {}", path.display()), err))?;
        migrate(&writer, &path)?;
        Ok(SqliteStore {
            path,
            synchronous,
            busy_timeout,
            writer: Mutex::new(writer),
            writer_waiters: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            machine_rows: AtomicI64::new(UNKNOWN),
            _scratch: scratch,
        })
    }

    /// Reads never wait on the writer (WAL mode).
    fn read<T>(&self, work: impl FnOnce(&Reader) -> error::Result<T>) -> error::Result<T> {
        let conn = self.checkout_reader()?;
        let result = work(&Reader::new(Conn::Sqlite(&conn)));
        self.return_reader(conn);
        result
    }

    /// A deferred transaction on a read connection.
    fn snapshot<T>(&self, work: impl FnOnce(&Reader) -> error::Result<T>) -> error::Result<T> {
        let conn = self.checkout_reader()?;
        let result = conn
            .unchecked_transaction()
            .map_err(storage)
            .and_then(|tx| work(&Reader::new(Conn::Sqlite(&tx))));
        self.return_reader(conn);
        result
    }

    fn write<T>(&self, work: impl FnOnce(&Writer) -> error::Result<T>) -> error::Result<T> {
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let writer = Writer::new(Conn::Sqlite(&tx));
        let value = work(&writer)?;
        let machines_added = writer.machines_added();
        tx.commit().map_err(storage)?;
        // Still under the writer lock: no other change or count can interleave.
        self.add_machine_rows(machines_added);
        Ok(value)
    }

    /// The writer, counted in `writer_waiters` while it has to wait for it.
    fn lock_writer(&self) -> MutexGuard<'_, Connection> {
        match self.writer.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.writer_waiters.fetch_add(1, Ordering::Relaxed);
                let conn = lock(&self.writer);
                self.writer_waiters.fetch_sub(1, Ordering::Relaxed);
                conn
            }
        }
    }

    /// See `Store::bulk_writes`.
    fn bulk_writes<T>(&self, work: impl FnOnce() -> error::Result<T>) -> error::Result<T> {
        set_writer_pragmas(
            &self.lock_writer(),
            BULK_WRITER_CACHE_KIB,
            BULK_AUTOCHECKPOINT,
        )
        .map_err(storage)?;
        let done = work();
        let conn = self.lock_writer();
        let restored = set_writer_pragmas(&conn, WRITER_CACHE_KIB, AUTOCHECKPOINT)
            .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())));
        let value = done?;
        restored.map_err(storage)?;
        Ok(value)
    }

    fn count_machines(&self) -> error::Result<u64> {
        let conn = self.lock_writer();
        let count = Reader::new(Conn::Sqlite(&conn)).machine_rows_of_all_keys()?;
        self.machine_rows
            .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(count)
    }

    /// Called with the writer lock held (see `write`).
    fn add_machine_rows(&self, added: i64) {
        let count = self.machine_rows.load(Ordering::Relaxed);
        if added != 0 && count != UNKNOWN {
            self.machine_rows
                .store(count.saturating_add(added).max(0), Ordering::Relaxed);
        }
    }

    fn checkout_reader(&self) -> error::Result<Connection> {
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        open_connection(&self.path, self.synchronous, self.busy_timeout)
            .and_then(|conn| {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
                conn.pragma_update(None, "cache_size", -reader_cache_kib(pages))?;
                Ok(conn)
            })
            .map_err(storage)
    }

    fn return_reader(&self, conn: Connection) {
        lock(&self.readers).push(conn);
    }
}

/// A panic while a lock was held has already rolled its transaction back (rusqlite rolls back
/// on drop), so the connection is still usable: poisoning carries no information here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer's page cache (SQLite's default) and automatic checkpoint (SQLite's default, in
/// pages: about 4 MiB of WAL).
const WRITER_CACHE_KIB: i64 = 2000;
const AUTOCHECKPOINT: i64 = 1000;
/// The same during `Store::bulk_writes`. Deleting a million expired machines in batches dirties
/// thousands of random index pages per batch (`token_hash` above all); a cache that holds them
/// reads each once, and a WAL of many MiB between checkpoints (`BULK_AUTOCHECKPOINT`) writes a
/// page rewritten by several batches to the database file once. Measured sweeping 1,000,000 expired machines
/// (no other load, batches of 20,000): 38.9 s, against 58.2 s with the defaults; with batches
/// of 10,000, a 16 / 32 / 48 MiB cache took 48.8 / 46.6 / 44.4 s. The cache holds up to
/// 48 MiB more memory while a backlog is swept (peak RSS 64 MiB in that run); SQLite frees
/// its pages when the usual size is restored.
const BULK_WRITER_CACHE_KIB: i64 = 48 * 1024;
/// Checkpoints during `Store::bulk_writes` every 256 MiB of WAL: each checkpoint writes every
/// page the WAL holds to the database file once, and a longer WAL holds more rewrites of the
/// same random index pages per page written. Measured sweeping 1,000,000 expired machines,
/// alternated with 64 MiB (16,384 pages): without other load 28.4 s against 33.5 s (mean of
/// two), 3.3 GB written to disk against 6.1 GB; under `authkeys-bench sweep`'s verify load and
/// logins 60.0 and 54.1 s against 60.7 and 62.4 s. The WAL file may grow to 256 MiB and a
/// batch meanwhile; `WAL_SIZE_LIMIT_BYTES` gives the disk back afterwards.
const BULK_AUTOCHECKPOINT: i64 = 64 * 1024;
/// What a WAL file is cut back to when it starts over (SQLite's `journal_size_limit`).
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

fn set_writer_pragmas(
    conn: &Connection,
    cache_kib: i64,
    autocheckpoint: i64,
) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)
}

fn open_connection(
    path: &std::path::Path,
    synchronous: &str,
    busy_timeout: Duration,
) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // Query-plan stability: without it SQLite (built with STAT4, as the bundled one is) marks
    // statements with joins for re-preparing whenever a bound value changes, so every session
    // and key lookup was parsed and planned again. Profiled with callgrind: a re-prepare per
    // request, two thirds of all instructions; measured on 1,000,000 rows: 25 µs → 6 µs per
    // session lookup. Our queries have one right plan each.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &std::path::Path) -> Result<(), StartError> {
    let fail =
        |err: rusqlite::Error| StartError::caused(format!("migrating {}", path.display()), err);
    // The version is read under the write lock, so two processes starting on one file cannot
    // both decide to upgrade it. All steps and the new version commit together, or nothing
    // changes (an early return rolls back).
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    // schema.sql (all IF NOT EXISTS) runs at every start: an index added to it reaches
    // existing version 4 files without a version change. The columns added to keys after they
    // shipped are added in schema.sql's order: `machine_rows` (to a version 1 file, or a
    // version 2 file from before it, counted once), then version 3's.
    let machine_rows = if has_column(&tx, "keys", "machine_rows").map_err(fail)? {
        None
    } else {
        Some(ADD_MACHINE_ROWS)
    };
    let steps: Vec<&str> = match version {
        0 if has_tables(&tx).map_err(fail)? => {
            // Some other program's database: schema.sql's IF NOT EXISTS must not adopt it.
            return Err(StartError::new(format!(
                "{} is not an authkeys database: it has tables but no schema version",
                path.display()
            )));
        }
        0 => vec![SCHEMA],
        1 => [UPGRADE_FROM_1_SET_ASIDE, SCHEMA, UPGRADE_FROM_1_COPY]
            .into_iter()
            .chain(machine_rows)
            .chain([UPGRADE_FROM_2_KEYS])
            .collect(),
        2 => machine_rows
            .into_iter()
            .chain([UPGRADE_FROM_2_KEYS, UPGRADE_FROM_2_MACHINES])
            .chain(UPGRADE_TO_5)
            .collect(),
        // Version 4 (admin tokens, the audit log, webhooks) only added tables and an index,
        // all in `SCHEMA`, which version 5's rebuild applies.
        3 | 4 => UPGRADE_TO_5.to_vec(),
        SCHEMA_VERSION => vec![SCHEMA],
        newer => {
            return Err(StartError::new(format!(
                "{} has schema version {newer}, newer than this binary's {SCHEMA_VERSION}: \
                 run a newer authkeys",
                path.display()
            )));
        }
    };
    let upgrading = version != 0 && version != SCHEMA_VERSION;
    for (done, step) in steps.iter().enumerate() {
        tx.execute_batch(step).map_err(fail)?;
        if done == 0 && upgrading {
            pause_if_testing_an_interrupted_upgrade(path);
        }
    }
    if machine_rows.is_some() && matches!(version, 1 | 2) {
        log::info!("{}: counted each key's machines once", path.display());
    }
    audit::start_key_expiring_horizon(Conn::Sqlite(&tx))
        .map_err(|err| StartError::caused(format!("migrating {}", path.display()), err))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)?;
    match version {
        SCHEMA_VERSION => {}
        0 => log::info!(
            "created schema version {SCHEMA_VERSION} in {}",
            path.display()
        ),
        old => log::info!(
            "upgraded {} from schema version {old} to {SCHEMA_VERSION}",
            path.display()
        ),
    }
    Ok(())
}

/// Set only by the test that kills an upgrade part-way (tests/it/schema.rs): with it, an
/// upgrade stops after its first step, inside the open transaction, and
/// says so, so the test's `kill -9` lands exactly there rather than at a guessed moment.
const PAUSE_UPGRADE_ENV: &str = "AUTHKEYS_TEST_PAUSE_UPGRADE_AFTER_FIRST_STEP";

fn pause_if_testing_an_interrupted_upgrade(path: &std::path::Path) {
    if std::env::var_os(PAUSE_UPGRADE_ENV).is_some() {
        log::warn!(
            "{}: upgrade paused after its first step ({PAUSE_UPGRADE_ENV})",
            path.display()
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |row| row.get(0),
    )
}

fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) > 0 FROM sqlite_schema", [], |row| {
        row.get(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{NewKey, Timestamp};
    use crate::domain::token::{self, TokenKind};

    fn sqlite_of(store: &Store) -> &SqliteStore {
        let Engine::Sqlite(sqlite) = &store.engine else {
            panic!("a SQLite store")
        };
        sqlite
    }

    /// The writer's cache size and automatic checkpoint, as SQLite reports them.
    fn writer_pragmas(store: &Store) -> (i64, i64) {
        let sqlite = sqlite_of(store);
        let conn = lock(&sqlite.writer);
        let get = |name| {
            conn.pragma_query_value(None, name, |row| row.get(0))
                .unwrap()
        };
        (get("cache_size"), get("wal_autocheckpoint"))
    }

    #[test]
    fn bulk_writes_widen_the_writer_only_while_they_run_even_when_they_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        let usual = (-WRITER_CACHE_KIB, AUTOCHECKPOINT);
        let bulk = (-BULK_WRITER_CACHE_KIB, BULK_AUTOCHECKPOINT);
        assert_eq!(writer_pragmas(&store), usual);
        let inside = store.bulk_writes(|| Ok(writer_pragmas(&store))).unwrap();
        assert_eq!(inside, bulk);
        assert_eq!(writer_pragmas(&store), usual);
        let failed: error::Result<()> = store.bulk_writes(|| {
            store.write(|w| w.insert_app("app", "App", Timestamp(0)))?;
            Err(error::Error::AppNotFound)
        });
        assert!(matches!(failed, Err(error::Error::AppNotFound)));
        assert_eq!(writer_pragmas(&store), usual);
        let kept = store.read(|r| r.app("app")).unwrap();
        assert!(kept.is_some(), "a write that committed inside stays");
    }

    /// The cache size of a reader opened now, as SQLite reports it.
    fn new_reader_cache_size(store: &Store) -> i64 {
        let sqlite = sqlite_of(store);
        lock(&sqlite.readers).clear();
        let conn = sqlite.checkout_reader().unwrap();
        conn.pragma_query_value(None, "cache_size", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn readers_of_a_large_database_get_the_larger_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        assert_eq!(new_reader_cache_size(&store), -READER_CACHE_KIB);
        let sqlite = sqlite_of(&store);
        let bytes = LARGE_DATABASE_PAGES * 4096;
        lock(&sqlite.writer)
            .execute_batch(&format!(
                "CREATE TABLE filler (b BLOB); INSERT INTO filler VALUES (zeroblob({bytes}));"
            ))
            .unwrap();
        assert_eq!(new_reader_cache_size(&store), -LARGE_READER_CACHE_KIB);
    }

    /// A WAL that grew past `WAL_SIZE_LIMIT_BYTES` in `bulk_writes` (which checkpoints only
    /// every 256 MiB) is cut back to it by the next write once it has been checkpointed.
    #[test]
    fn a_wal_grown_by_bulk_writes_is_cut_back_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authkeys.db");
        let store = Store::open(&Database::File(path.clone())).unwrap();
        let wal_bytes = || {
            std::fs::metadata(dir.path().join("authkeys.db-wal"))
                .unwrap()
                .len()
        };
        let bytes = WAL_SIZE_LIMIT_BYTES + 16 * 1024 * 1024;
        store
            .bulk_writes(|| {
                let sqlite = sqlite_of(&store);
                lock(&sqlite.writer)
                    .execute_batch(&format!(
                        "CREATE TABLE filler (b BLOB); INSERT INTO filler VALUES (zeroblob({bytes}));"
                    ))
                    .map_err(storage)
            })
            .unwrap();
        assert!(
            wal_bytes() > WAL_SIZE_LIMIT_BYTES as u64,
            "grown: {}",
            wal_bytes()
        );
        store
            .write(|w| w.insert_app("app", "App", Timestamp(0)))
            .unwrap();
        assert!(
            wal_bytes() <= WAL_SIZE_LIMIT_BYTES as u64,
            "cut back: {}",
            wal_bytes()
        );
    }

    /// `writer_wanted` holds exactly while another write waits for the running one.
    #[test]
    fn a_running_write_sees_when_another_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        assert!(!store.writer_wanted());
        let (started, running) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let first = scope.spawn(|| {
                store.write(|_| {
                    started.send(()).unwrap();
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !store.writer_wanted() {
                        assert!(std::time::Instant::now() < deadline, "never saw it waiting");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(())
                })
            });
            running.recv().unwrap();
            store
                .write(|w| w.insert_app("app", "App", Timestamp(0)))
                .unwrap();
            first.join().unwrap().unwrap();
        });
        assert!(!store.writer_wanted(), "no write waits any more");
    }

    /// The kept count of machine rows, and each key's counter, equal the rows themselves after
    /// writers that add and delete machines race with the first count.
    #[test]
    fn kept_machine_counts_match_the_rows_after_racing_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        let reusable = NewKey {
            reusable: true,
            ..NewKey::default()
        };
        let keys: Vec<_> = store
            .write(|w| {
                let app = w.insert_app("app", "App", Timestamp(0))?;
                (0..3)
                    .map(|n| {
                        let secret = token::generate(TokenKind::AuthKey);
                        let hint = token::hint(&secret);
                        w.insert_key(
                            &app,
                            format!("key_{n}"),
                            &secret.hash(),
                            hint,
                            &reusable,
                            Timestamp(0),
                        )?;
                        Ok(w.key_status(&secret.hash())?
                            .expect("the key just inserted"))
                    })
                    .collect()
            })
            .unwrap();
        assert_eq!(store.machine_rows(), None, "not counted yet");
        std::thread::scope(|scope| {
            for key in &keys {
                let store = &store;
                scope.spawn(move || {
                    for n in 0..100 {
                        let machine = NewMachine {
                            id: format!("mch_{}_{n}", key.id),
                            token_hash: token::generate(TokenKind::Session).hash(),
                            name: None,
                            expires_at: (n % 2 == 0).then_some(Timestamp(10)),
                        };
                        let pk = store
                            .write(|w| w.insert_machine(key, machine, Timestamp(0)))
                            .unwrap()
                            .pk;
                        if n % 3 == 0 {
                            store.write(|w| w.delete_machine(pk)).unwrap();
                        }
                    }
                });
            }
            scope.spawn(|| store.count_machines().unwrap());
        });
        store
            .write(|w| w.delete_expired_machines(Timestamp(10), 7, |_| false, |_, _| Ok(())))
            .unwrap();
        let rows = |sql: &str| -> i64 {
            store
                .read(|r| r.optional(sql, sql::args![], |row| row.get(0)))
                .unwrap()
                .unwrap()
        };
        let stored = rows("SELECT count(*) FROM machines");
        assert_eq!(store.machine_rows(), Some(stored as u64));
        assert_eq!(rows("SELECT sum(machine_rows) FROM keys"), stored);
        let drifted = rows(
            "SELECT count(*) FROM keys k
              WHERE k.machine_rows != (SELECT count(*) FROM machines m WHERE m.key_pk = k.pk)",
        );
        assert_eq!(drifted, 0);
    }
}
