//! Mutations, run inside the writer's `BEGIN IMMEDIATE` transaction. A `Writer` also reads
//! (it derefs to `Reader`) so that a check and the change it guards are one atomic step.

use super::read::{Reader, secs_from_column, secs_to_column};
use super::sql::{Conn, Dialect, Value, args};
use super::storage;
use crate::cache::usage::{HASH_PREFIX_LEN, Stamp};
use crate::domain::error::Result;
use crate::domain::model::{
    App, Batch, Key, KeyPolicy, KeyStatus, Machine, NewKey, NewTrustPolicy, Timestamp, TrustPolicy,
    uses_remaining,
};
use crate::domain::token::TokenHash;
use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Deref;

pub(crate) struct Writer<'c> {
    reader: Reader<'c>,
    /// Machine rows inserted minus deleted in this transaction, for `Store::machine_rows`.
    machines_added: Cell<i64>,
}

impl<'c> Deref for Writer<'c> {
    type Target = Reader<'c>;

    fn deref(&self) -> &Reader<'c> {
        &self.reader
    }
}

/// A machine the sweeper logged out for idleness.
pub(crate) struct IdleMachine {
    pub(crate) pk: i64,
    pub(crate) hash: TokenHash,
    pub(crate) id: String,
    pub(crate) app_pk: i64,
}

/// A machine row about to be inserted.
pub(crate) struct NewMachine<'a> {
    pub(crate) id: String,
    pub(crate) token_hash: TokenHash,
    pub(crate) name: Option<&'a str>,
    pub(crate) expires_at: Option<Timestamp>,
}

/// A machine a write deleted: its key's pk (`None` for a trust policy's machine), its id and its
/// app's pk.
type DeletedMachine = (Option<i64>, String, i64);

/// How many expired machines SQLite's sweep reads at a time (see
/// `Writer::delete_expired_machines_row_by_row`).
const EXPIRED_CHUNK: usize = 500;

/// How many keys a batch of deletions counts machines for before it updates their
/// `machine_rows`: one `UPDATE` per key per batch where a few keys have many machines, and a
/// bounded number left for the end of a batch where each key has few.
const KEY_COUNTERS_HELD: usize = 2_000;

/// Deleted machines counted per key (`None`: trust policies' machines), to take off each key's
/// `machine_rows` with one `UPDATE` per key rather than per machine.
#[derive(Default)]
struct KeyCounters(HashMap<Option<i64>, i64>);

impl KeyCounters {
    fn add(&mut self, w: &Writer, key_pk: Option<i64>) -> Result<()> {
        *self.0.entry(key_pk).or_default() += 1;
        if self.0.len() > KEY_COUNTERS_HELD {
            self.apply(w)?;
        }
        Ok(())
    }

    /// Applies what was counted, in `w`'s transaction, and starts again.
    fn apply(&mut self, w: &Writer) -> Result<()> {
        for (key_pk, count) in self.0.drain() {
            w.machines_deleted(key_pk, count)?;
        }
        Ok(())
    }
}

impl<'c> Writer<'c> {
    pub(super) fn new(conn: Conn<'c>) -> Writer<'c> {
        Writer {
            reader: Reader::new(conn),
            machines_added: Cell::new(0),
        }
    }

    pub(super) fn machines_added(&self) -> i64 {
        self.machines_added.get()
    }

    fn count_machines(&self, added: i64) {
        self.machines_added.set(self.machines_added.get() + added);
    }

    pub(super) fn conn(&self) -> Conn<'c> {
        self.reader.conn()
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&self, sql: &str, args: &[Value]) -> Result<usize> {
        self.conn().execute(sql, args).map_err(storage)
    }

    /// Runs an `INSERT` of one row; returns its `key` (the table's integer primary key).
    pub(super) fn insert(&self, sql: &str, key: &str, args: &[Value]) -> Result<i64> {
        self.conn().insert(sql, key, args).map_err(storage)
    }

    pub(crate) fn delete_setting(&self, name: &str) -> Result<()> {
        self.execute("DELETE FROM settings WHERE name = ?1", args![name])
            .map(drop)
    }

    pub(crate) fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            args![name, value],
        )
        .map(drop)
    }

    /// Inserts a live app; the caller has checked that no live app has this id.
    pub(crate) fn insert_app(&self, id: &str, name: &str, now: Timestamp) -> Result<App> {
        let pk = self.insert(
            "INSERT INTO apps (id, name, created_at) VALUES (?1, ?2, ?3)",
            "pk",
            args![id, name, now.0],
        )?;
        Ok(App {
            pk,
            id: id.to_string(),
            name: name.to_string(),
            created_at: now,
        })
    }

    /// Revokes every key of the app, logs out every machine and marks the app deleted.
    /// Returns the ids of the keys it revoked and of the machines it logged out.
    pub(crate) fn delete_app(
        &self,
        app: &App,
        now: Timestamp,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let machines = self.strings(
            "DELETE FROM machines WHERE app_pk = ?1 RETURNING id",
            args![app.pk],
        )?;
        self.count_machines(-(machines.len() as i64));
        // Revoked keys have no machines (revoking deleted them), so their count is already 0.
        let keys = self.strings(
            "UPDATE keys SET revoked_at = ?2, machine_rows = 0
              WHERE app_pk = ?1 AND revoked_at IS NULL RETURNING id",
            args![app.pk, now.0],
        )?;
        self.execute(
            "DELETE FROM trust_policies WHERE app_pk = ?1",
            args![app.pk],
        )?;
        self.execute(
            "UPDATE apps SET deleted_at = ?2 WHERE pk = ?1",
            args![app.pk, now.0],
        )?;
        Ok((keys, machines))
    }

    /// Runs a statement returning one text column per row, and collects it.
    fn strings(&self, sql: &str, args: &[Value]) -> Result<Vec<String>> {
        self.collect(sql, args, |row| row.get(0))
    }

    pub(crate) fn insert_key(
        &self,
        app: &App,
        id: String,
        hash: &TokenHash,
        hint: String,
        new: &NewKey,
        now: Timestamp,
    ) -> Result<Key> {
        let expires_at = new.expires_in_secs.map(|secs| now.plus_secs(secs));
        let policy = KeyPolicy {
            max_uses: new.max_uses(),
            ..new.policy.clone()
        };
        let pk = self.insert(
            "INSERT INTO keys (id, app_pk, hash, hint, description, reusable, ephemeral,
                               created_at, expires_at, tags, metadata, max_uses, session_ttl,
                               idle_timeout, rotated_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            "pk",
            args![
                id,
                app.pk,
                hash.as_bytes(),
                hint,
                new.description,
                new.reusable,
                new.ephemeral,
                now.0,
                expires_at.map(|at| at.0),
                tags_json(&policy.tags),
                policy.metadata.as_str(),
                policy.max_uses,
                secs_to_column(policy.session_ttl),
                secs_to_column(policy.idle_timeout),
                new.rotated_from,
            ],
        )?;
        Ok(Key {
            pk,
            id,
            app: app.id.clone(),
            description: new.description.clone(),
            reusable: new.reusable,
            ephemeral: new.ephemeral,
            hint,
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            uses: 0,
            machines: 0,
            uses_remaining: uses_remaining(policy.max_uses, 0),
            policy,
            rotated_from: new.rotated_from.clone(),
            rotated_to: None,
        })
    }

    /// Marks `old` as replaced by the key `new_id`, working until `expires_at` at the latest.
    pub(crate) fn mark_rotated(
        &self,
        old: &Key,
        new_id: &str,
        expires_at: Timestamp,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE keys SET rotated_to = ?2, expires_at = {}(coalesce(expires_at, ?3), ?3)
              WHERE pk = ?1",
            self.conn().dialect().least()
        );
        self.execute(&sql, args![old.pk, new_id, expires_at.0])
            .map(drop)
    }

    /// Marks the key revoked and deletes every machine it logged in. Returns the ids of the
    /// machines logged out.
    pub(crate) fn revoke_key(&self, key: &Key, now: Timestamp) -> Result<Vec<String>> {
        self.execute(
            "UPDATE keys SET revoked_at = ?2, machine_rows = 0 WHERE pk = ?1",
            args![key.pk, now.0],
        )?;
        let deleted = self.strings(
            "DELETE FROM machines WHERE key_pk = ?1 RETURNING id",
            args![key.pk],
        )?;
        self.count_machines(-(deleted.len() as i64));
        Ok(deleted)
    }

    /// Records a successful login with `key` and inserts the machine it created.
    pub(crate) fn insert_machine(
        &self,
        key: &KeyStatus,
        new: NewMachine,
        now: Timestamp,
    ) -> Result<Machine> {
        self.execute(
            "UPDATE keys SET uses = uses + 1, last_used_at = ?2, machine_rows = machine_rows + 1
              WHERE pk = ?1",
            args![key.pk, now.0],
        )?;
        self.count_machines(1);
        let policy = &key.policy;
        let pk = self.insert(
            "INSERT INTO machines (id, key_pk, app_pk, key_id, token_hash, name, ephemeral,
                                   created_at, expires_at, tags, metadata, idle_timeout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            "pk",
            args![
                new.id,
                key.pk,
                key.app_pk,
                key.id,
                new.token_hash.as_bytes(),
                new.name,
                key.ephemeral,
                now.0,
                new.expires_at.map(|at| at.0),
                tags_json(&policy.tags),
                policy.metadata.as_str(),
                secs_to_column(policy.idle_timeout),
            ],
        )?;
        Ok(Machine {
            pk,
            id: new.id,
            app: key.app.clone(),
            key_id: Some(key.id.clone()),
            name: new.name.map(str::to_string),
            ephemeral: key.ephemeral,
            created_at: now,
            expires_at: new.expires_at,
            last_seen_at: None,
            tags: policy.tags.clone(),
            metadata: policy.metadata.clone(),
            trust_policy_id: None,
            idle_timeout: policy.idle_timeout,
            idle_expires_at: None,
        }
        .with_idle_expiry())
    }

    /// Deletes one machine; returns its token hash, or `None` if it was already gone.
    pub(crate) fn insert_trust_policy(
        &self,
        app: &App,
        id: String,
        new: &NewTrustPolicy,
        now: Timestamp,
    ) -> Result<TrustPolicy> {
        let claims = crate::domain::model::Metadata::from_object(&new.claims);
        let policy = &new.policy;
        let pk = self.insert(
            "INSERT INTO trust_policies (id, app_pk, issuer, audience, subject, claims,
                                         description, ephemeral, session_ttl, idle_timeout,
                                         tags, metadata, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            "pk",
            args![
                id,
                app.pk,
                new.issuer,
                new.audience,
                new.subject,
                claims.as_str(),
                new.description,
                new.ephemeral,
                secs_to_column(policy.session_ttl),
                secs_to_column(policy.idle_timeout),
                tags_json(&policy.tags),
                policy.metadata.as_str(),
                now.0,
            ],
        )?;
        Ok(TrustPolicy {
            pk,
            id,
            app: app.id.clone(),
            issuer: new.issuer.clone(),
            audience: new.audience.clone(),
            subject: new.subject.clone(),
            claims,
            description: new.description.clone(),
            ephemeral: new.ephemeral,
            session_ttl: policy.session_ttl,
            idle_timeout: policy.idle_timeout,
            tags: policy.tags.clone(),
            metadata: policy.metadata.clone(),
            created_at: now,
        })
    }

    /// Deletes the policy and logs out every machine that came through it; their ids.
    pub(crate) fn delete_trust_policy(&self, policy: &TrustPolicy) -> Result<Vec<String>> {
        let machines = self.strings(
            "DELETE FROM machines WHERE trust_policy_id = ?1 RETURNING id",
            args![policy.id],
        )?;
        self.count_machines(-(machines.len() as i64));
        self.execute("DELETE FROM trust_policies WHERE pk = ?1", args![policy.pk])?;
        Ok(machines)
    }

    /// Remembers an ID token's `jti` until `expires_at`; `false` if it was already seen.
    pub(crate) fn record_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let inserted = self.execute(
            "INSERT INTO oidc_jtis (issuer, jti, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (issuer, jti) DO NOTHING",
            args![issuer, jti, expires_at.0],
        )?;
        Ok(inserted == 1)
    }

    /// Forgets up to `limit` `jti`s of tokens no longer valid at `now`.
    pub(crate) fn delete_expired_jtis(&self, now: Timestamp, limit: usize) -> Result<usize> {
        self.execute(
            "DELETE FROM oidc_jtis WHERE (issuer, jti) IN (
                 SELECT issuer, jti FROM oidc_jtis WHERE expires_at <= ?1 LIMIT ?2)",
            args![now.0, limit as i64],
        )
    }

    /// A machine logged in through `policy` (of the app `app`).
    pub(crate) fn insert_policy_machine(
        &self,
        app: &App,
        policy: &TrustPolicy,
        new: NewMachine,
        now: Timestamp,
    ) -> Result<Machine> {
        self.count_machines(1);
        let pk = self.insert(
            "INSERT INTO machines (id, app_pk, token_hash, name, ephemeral, created_at,
                                   expires_at, tags, metadata, trust_policy_id, idle_timeout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            "pk",
            args![
                new.id,
                app.pk,
                new.token_hash.as_bytes(),
                new.name,
                policy.ephemeral,
                now.0,
                new.expires_at.map(|at| at.0),
                tags_json(&policy.tags),
                policy.metadata.as_str(),
                policy.id,
                secs_to_column(policy.idle_timeout),
            ],
        )?;
        Ok(Machine {
            pk,
            id: new.id,
            app: app.id.clone(),
            key_id: None,
            name: new.name.map(str::to_string),
            ephemeral: policy.ephemeral,
            created_at: now,
            expires_at: new.expires_at,
            last_seen_at: None,
            tags: policy.tags.clone(),
            metadata: policy.metadata.clone(),
            trust_policy_id: Some(policy.id.clone()),
            idle_timeout: policy.idle_timeout,
            idle_expires_at: None,
        }
        .with_idle_expiry())
    }

    pub(crate) fn delete_machine(&self, machine_pk: i64) -> Result<Option<TokenHash>> {
        let deleted: Option<([u8; 32], Option<i64>)> = self.optional(
            "DELETE FROM machines WHERE pk = ?1 RETURNING token_hash, key_pk",
            args![machine_pk],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let Some((hash, key_pk)) = deleted else {
            return Ok(None);
        };
        self.machines_deleted(key_pk, 1)?;
        Ok(Some(TokenHash(hash)))
    }

    /// Deletes up to `limit` machines that expired at or before `now`: on PostgreSQL in one
    /// statement, on SQLite row by row, stopping early once `give_way(rows deleted so far)`
    /// says so (another write waits). Calls `deleted(id, app pk)` for each machine, in this
    /// transaction, as it goes (on SQLite right after its row), so that what a batch still
    /// has to do when it gives way does not grow with the rows it did. Returns how many it
    /// deleted and whether more may be left.
    pub(crate) fn delete_expired_machines(
        &self,
        now: Timestamp,
        limit: usize,
        give_way: impl Fn(usize) -> bool,
        mut deleted: impl FnMut(&str, i64) -> Result<()>,
    ) -> Result<Batch> {
        let mut counters = KeyCounters::default();
        let mut take = |(key_pk, id, app_pk): DeletedMachine| {
            counters.add(self, key_pk)?;
            deleted(&id, app_pk)
        };
        let batch = match self.conn().dialect() {
            Dialect::Postgres => {
                let rows: Vec<DeletedMachine> = self.collect(
                    "DELETE FROM machines WHERE pk IN (
                         SELECT pk FROM machines WHERE expires_at <= ?1 LIMIT ?2)
                     RETURNING key_pk, id, app_pk",
                    args![now.0, limit as i64],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                let done = rows.len();
                rows.into_iter().try_for_each(&mut take)?;
                Batch {
                    done,
                    more: done == limit,
                }
            }
            Dialect::Sqlite => {
                self.delete_expired_machines_row_by_row(now, limit, give_way, &mut take)?
            }
        };
        counters.apply(self)?;
        Ok(batch)
    }

    /// SQLite's `delete_expired_machines`. Row by row: SQLite keeps a statement journal (a copy
    /// of every page it changes, tens of MiB a batch, written to a temporary file) for a
    /// `DELETE … RETURNING` of many rows inside a transaction, which was most of what a large
    /// sweep wrote. Under the write lock the rows cannot change between the statements. The
    /// rows are read `EXPIRED_CHUNK` at a time, so a batch that gives way early (with a login
    /// every 50 ms during a sweep, every few hundred rows) has not read a whole batch's rows for
    /// nothing.
    fn delete_expired_machines_row_by_row(
        &self,
        now: Timestamp,
        limit: usize,
        give_way: impl Fn(usize) -> bool,
        mut deleted: impl FnMut(DeletedMachine) -> Result<()>,
    ) -> Result<Batch> {
        let mut done = 0;
        while done < limit {
            let wanted = (limit - done).min(EXPIRED_CHUNK);
            let chunk: Vec<(i64, DeletedMachine)> = self.collect(
                "SELECT pk, key_pk, id, app_pk FROM machines WHERE expires_at <= ?1 LIMIT ?2",
                args![now.0, wanted as i64],
                |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?))),
            )?;
            let last = chunk.len() < wanted;
            for (pk, machine) in chunk {
                if give_way(done) {
                    return Ok(Batch { done, more: true });
                }
                self.execute("DELETE FROM machines WHERE pk = ?1", args![pk])?;
                deleted(machine)?;
                done += 1;
            }
            if last {
                return Ok(Batch { done, more: false });
            }
        }
        Ok(Batch { done, more: true })
    }

    /// Deletes up to `limit` machines whose stored activity is older than their idle timeout
    /// at `idle_before`, except those `active(pk, token hash, timeout secs)` says made a
    /// request since (a stamp not written yet). Returns the deleted machines and how many
    /// candidates there were (fewer than `limit`: no more to look at).
    pub(crate) fn delete_idle_machines(
        &self,
        idle_before: Timestamp,
        limit: usize,
        active: impl Fn(i64, &TokenHash, u64) -> bool,
    ) -> Result<(Vec<IdleMachine>, usize)> {
        let candidates: Vec<(IdleMachine, u64)> =
            self.collect(IDLE_MACHINES, args![idle_before.0, limit as i64], |row| {
                let machine = IdleMachine {
                    pk: row.get(0)?,
                    hash: TokenHash(row.get(1)?),
                    id: row.get(3)?,
                    app_pk: row.get(4)?,
                };
                Ok((machine, secs_from_column(row, 2)?.unwrap_or(0)))
            })?;
        let count = candidates.len();
        let mut deleted = Vec::new();
        for (machine, timeout) in candidates {
            if !active(machine.pk, &machine.hash, timeout)
                && self.delete_machine(machine.pk)?.is_some()
            {
                deleted.push(machine);
            }
        }
        Ok((deleted, count))
    }

    /// Takes `count` deleted machines off their key's `machine_rows` and the store's count.
    /// `key_pk` is `None` for machines of trust policies, which have no counter.
    fn machines_deleted(&self, key_pk: Option<i64>, count: i64) -> Result<()> {
        if let Some(key_pk) = key_pk {
            self.execute(
                "UPDATE keys SET machine_rows = machine_rows - ?2 WHERE pk = ?1",
                args![key_pk, count],
            )?;
        }
        self.count_machines(-count);
        Ok(())
    }

    /// Moves `last_used_at` forward (never back) for each stamp whose key row still holds its
    /// hash; returns how many rows were stamped.
    pub(crate) fn stamp_keys_used(&self, stamps: &[Stamp]) -> Result<usize> {
        self.stamp_rows(&stamp_key_used_sql(self.conn().dialect()), stamps)
    }

    /// Moves `last_seen_at` forward (never back) for each stamp whose machine row still holds
    /// its token hash; returns how many rows were stamped.
    pub(crate) fn stamp_machines_seen(&self, stamps: &[Stamp]) -> Result<usize> {
        self.stamp_rows(&stamp_machine_seen_sql(self.conn().dialect()), stamps)
    }

    pub(super) fn stamp_rows(&self, sql: &str, stamps: &[Stamp]) -> Result<usize> {
        stamps.iter().try_fold(0, |stamped, stamp| {
            let changed =
                self.execute(sql, args![stamp.pk, stamp.at.0, stamp.hash.0.as_slice()])?;
            Ok(stamped + changed)
        })
    }
}

/// Machines idle at ?1, a range of `machines_by_idle_deadline` (its expression, verbatim).
pub(super) const IDLE_MACHINES: &str =
    "SELECT pk, token_hash, idle_timeout, id, app_pk FROM machines
     WHERE idle_timeout IS NOT NULL
       AND coalesce(last_seen_at, created_at) + idle_timeout * 1000 <= ?1
     LIMIT ?2";

/// Tags as stored: a JSON array (of strings already validated and sorted).
fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("strings always serialise")
}

/// The usage-stamp updates: `?1` pk, `?2` time, `?3` the first `HASH_PREFIX_LEN` bytes of the
/// row's token hash (all a pending stamp keeps, see `usage::Stamp`). The pk finds the row (the
/// stamps come in pk order, so neighbours share pages); the hash prefix, compared on that same
/// row, makes sure it is still the row that was stamped: SQLite reuses the pk of a deleted
/// newest row, never a token hash. A stamp whose row is gone changes nothing.
fn stamp_key_used_sql(dialect: Dialect) -> String {
    stamp_sql(dialect, "keys", "last_used_at", "hash")
}

fn stamp_machine_seen_sql(dialect: Dialect) -> String {
    stamp_sql(dialect, "machines", "last_seen_at", "token_hash")
}

/// Moves `table.column` forward to `?2` (never back) on the row with pk `?1` if its
/// `hash_column` still holds `?3`.
pub(super) fn stamp_sql(dialect: Dialect, table: &str, column: &str, hash_column: &str) -> String {
    format!(
        "UPDATE {table} SET {column} = {}(coalesce({column}, 0), ?2)
          WHERE pk = ?1 AND substr({hash_column}, 1, {HASH_PREFIX_LEN}) = ?3",
        dialect.greatest()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Database, Store};

    /// The query plan of `sql` (with parameters `params`) on a fresh store.
    fn plan(sql: &str, args: &[Value]) -> Vec<String> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).expect("a store");
        store
            .write(|w| w.collect(&format!("EXPLAIN QUERY PLAN {sql}"), args, |row| row.get(3)))
            .expect("explaining the statement")
    }

    /// The hash check must not change how a stamp finds its row: by pk, the order the flush
    /// writes in, not through the token-hash index.
    #[test]
    fn a_stamp_finds_its_row_by_pk() {
        let sqlite = Dialect::Sqlite;
        for (sql, table) in [
            (stamp_key_used_sql(sqlite), "keys"),
            (stamp_machine_seen_sql(sqlite), "machines"),
        ] {
            let plan = plan(&sql, args![1_i64, 1_i64, [0u8; 32]]);
            assert_eq!(
                plan,
                [format!(
                    "SEARCH {table} USING INTEGER PRIMARY KEY (rowid=?)"
                )]
            );
        }
    }

    /// Each key's `machine_rows` and the store's count stay exact after a batch of expiries
    /// spread over more keys than a batch holds counters for (so they are applied as it goes).
    #[test]
    fn key_counters_stay_exact_when_a_batch_spans_more_keys_than_it_holds() {
        use crate::domain::model::NewKey;
        use crate::domain::token::{self, TokenKind};
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).expect("a store");
        let reusable = NewKey {
            reusable: true,
            ..NewKey::default()
        };
        let keys = KEY_COUNTERS_HELD + 500;
        store
            .write(|w| {
                let app = w.insert_app("app", "App", Timestamp(0))?;
                for n in 0..keys {
                    let secret = token::generate(TokenKind::AuthKey);
                    let hint = token::hint(&secret);
                    let hash = secret.hash();
                    w.insert_key(
                        &app,
                        format!("key_{n}"),
                        &hash,
                        hint,
                        &reusable,
                        Timestamp(0),
                    )?;
                    let key = w.key_status(&hash)?.expect("the key just inserted");
                    // Two machines for the first key, one expired and one not for the rest.
                    for (m, expires_at) in [(0, Some(10)), (1, (n == 0).then_some(10))] {
                        let machine = NewMachine {
                            id: format!("mch_{n}_{m}"),
                            token_hash: token::generate(TokenKind::Session).hash(),
                            name: None,
                            expires_at: expires_at.map(Timestamp),
                        };
                        w.insert_machine(&key, machine, Timestamp(0))?;
                    }
                }
                Ok(())
            })
            .unwrap();
        store.count_machines().unwrap();
        let batch = store
            .write(|w| {
                w.delete_expired_machines(Timestamp(10), usize::MAX, |_| false, |_, _| Ok(()))
            })
            .unwrap();
        assert_eq!(
            batch,
            Batch {
                done: keys + 1,
                more: false
            }
        );
        let count = |sql: &str| -> i64 {
            store
                .read(|r| r.optional(sql, args![], |row| row.get(0)))
                .unwrap()
                .unwrap()
        };
        assert_eq!(count("SELECT count(*) FROM machines"), keys as i64 - 1);
        assert_eq!(store.machine_rows(), Some(keys as u64 - 1));
        let drifted = count(
            "SELECT count(*) FROM keys k
              WHERE k.machine_rows != (SELECT count(*) FROM machines m WHERE m.key_pk = k.pk)",
        );
        assert_eq!(drifted, 0);
    }

    /// The sweeper finds idle machines with one range of their index, however many there are.
    #[test]
    fn idle_machines_are_one_index_range() {
        assert_eq!(
            plan(IDLE_MACHINES, args![0_i64, 1_i64]),
            ["SEARCH machines USING INDEX machines_by_idle_deadline (<expr><?)"]
        );
    }
}
