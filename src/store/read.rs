//! Queries. A `Reader` wraps a connection inside a (deferred) transaction, so a handful of
//! queries made together see one snapshot.

use super::sql::{Conn, Dialect, Row, SqlResult, Value, args};
use super::storage;
use crate::domain::error::Result;
use crate::domain::model::{
    App, Key, KeyPolicy, KeyStatus, Machine, Metadata, Timestamp, TrustPolicy, uses_remaining,
};
use crate::domain::page::{Page, PageRequest, Position};
use crate::domain::token::TokenHash;
use std::collections::HashMap;

const APP_COLUMNS: &str = "a.pk, a.id, a.name, a.created_at";

/// `machines` is first the key's machine rows (a counter, not a count): `with_active_machines`
/// then takes away those expired and not yet swept.
const KEY_SELECT: &str = "SELECT k.pk, k.id, a.id, k.description, k.reusable, k.ephemeral,
        k.hint, k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.uses,
        k.machine_rows, k.rotated_from, k.rotated_to, k.tags, k.metadata, k.max_uses,
        k.session_ttl, k.idle_timeout
    FROM keys k JOIN apps a ON a.pk = k.app_pk";

/// A key's policy columns, in `policy_from_row`'s order.
const KEY_POLICY_COLUMNS: &str = "k.tags, k.metadata, k.max_uses, k.session_ttl, k.idle_timeout";

const MACHINE_COLUMNS: &str = "m.pk, m.id, a.id, m.key_id, m.name, m.ephemeral, m.created_at,
        m.expires_at, m.last_seen_at, m.tags, m.metadata, m.trust_policy_id, m.idle_timeout";
const MACHINE_JOIN: &str = "FROM machines m JOIN apps a ON a.pk = m.app_pk";

const TRUST_POLICY_SELECT: &str = "SELECT p.pk, p.id, a.id, p.issuer, p.audience, p.subject,
        p.claims, p.description, p.ephemeral, p.session_ttl, p.idle_timeout, p.tags, p.metadata,
        p.created_at
    FROM trust_policies p JOIN apps a ON a.pk = p.app_pk";

/// The list queries. Each page is one range of one index (`tests::each_page_is_one_index_range`
/// checks the plans): keyset on the list's order, one row more than the page to learn whether
/// another follows. A first page starts after a position beyond every row.
fn apps_page_sql() -> String {
    format!(
        "SELECT {APP_COLUMNS} FROM apps a
          WHERE a.deleted_at IS NULL AND a.id > ?1 ORDER BY a.id LIMIT ?2"
    )
}

fn keys_page_sql(dialect: Dialect, tagged: bool) -> String {
    let tags = if tagged {
        has_every_tag(dialect, "k", 6)
    } else {
        String::new()
    };
    format!(
        "{KEY_SELECT}
          WHERE k.app_pk = ?1 AND (k.created_at, k.pk) < (?2, ?3)
            AND (?4 OR k.revoked_at IS NULL){tags}
          ORDER BY k.created_at DESC, k.pk DESC LIMIT ?5"
    )
}

/// `owner` is `m.app_pk` (an app's machines) or `m.key_pk` (a key's).
fn machines_page_sql(dialect: Dialect, owner: &str, tagged: bool) -> String {
    let tags = if tagged {
        has_every_tag(dialect, "m", 5)
    } else {
        String::new()
    };
    format!(
        "SELECT {MACHINE_COLUMNS} {MACHINE_JOIN}
          WHERE {owner} = ?1 AND m.pk < ?2 AND (m.expires_at IS NULL OR m.expires_at > ?3){tags}
          ORDER BY m.pk DESC LIMIT ?4"
    )
}

/// A tag filter: the row (`alias`) carries every tag of the JSON array bound at `?param`.
/// It narrows the rows of the list's index range, so the order and the cursors are the
/// unfiltered list's; a page reads on until it has its rows.
fn has_every_tag(dialect: Dialect, alias: &str, param: usize) -> String {
    format!(
        "
            AND {}",
        dialect.has_every_tag(alias, param)
    )
}

/// The tags a filter asks for, bound as one JSON array.
fn tags_param(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("strings always serialise")
}

/// Machines expired at ?1 and not yet swept, per key: a range of `machines_by_expiry`, whose
/// length is what the sweeper has yet to delete (at most one sweep interval of expiries),
/// whatever the number of machines.
fn expired_unswept_sql(dialect: Dialect) -> String {
    format!(
        "SELECT key_pk, count(*) FROM machines{}
          WHERE expires_at IS NOT NULL AND expires_at <= ?1 GROUP BY key_pk",
        dialect.indexed_by("machines_by_expiry")
    )
}

pub(crate) struct Reader<'c> {
    conn: Conn<'c>,
}

impl<'c> Reader<'c> {
    pub(super) fn new(conn: Conn<'c>) -> Reader<'c> {
        Reader { conn }
    }

    pub(super) fn conn(&self) -> Conn<'c> {
        self.conn
    }

    pub(crate) fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.optional(
            "SELECT value FROM settings WHERE name = ?1",
            args![name],
            |row| row.get(0),
        )
    }

    /// The live (not deleted) app with this public id.
    pub(crate) fn app(&self, id: &str) -> Result<Option<App>> {
        let sql =
            format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.id = ?1 AND a.deleted_at IS NULL");
        self.optional(&sql, args![id], app_from_row)
    }

    /// A page of the live apps, by id.
    pub(crate) fn apps(&self, page: &PageRequest) -> Result<Page<App>> {
        let after = page.resume(|position| match position {
            Position::App { id } => Some(id.clone()),
            _ => None,
        })?;
        // Every app id sorts after the empty string.
        let rows = self.collect(
            &apps_page_sql(),
            args![after.unwrap_or_default(), page.fetch()],
            app_from_row,
        )?;
        Ok(Page::from_rows(rows, page, |app| Position::App {
            id: app.id.clone(),
        }))
    }

    pub(crate) fn key(&self, app: &App, key_id: &str, now: Timestamp) -> Result<Option<Key>> {
        let sql = format!("{KEY_SELECT} WHERE k.app_pk = ?1 AND k.id = ?2");
        let key = self.optional(&sql, args![app.pk, key_id], key_from_row)?;
        let mut keys = Vec::from_iter(key);
        self.with_active_machines(&mut keys, now)?;
        Ok(keys.pop())
    }

    /// The pk of the app's key with this public id, revoked or not.
    pub(crate) fn key_pk(&self, app: &App, key_id: &str) -> Result<Option<i64>> {
        self.optional(
            "SELECT pk FROM keys WHERE id = ?1 AND app_pk = ?2",
            args![key_id, app.pk],
            |row| row.get(0),
        )
    }

    /// A page of the app's keys, newest first; revoked ones only when asked for.
    pub(crate) fn keys(
        &self,
        app: &App,
        include_revoked: bool,
        tags: &[String],
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Key>> {
        let after = page.resume(|position| match position {
            Position::Key { created_at, pk } => Some((*created_at, *pk)),
            _ => None,
        })?;
        let (created_at, pk) = after.unwrap_or((i64::MAX, i64::MAX));
        let dialect = self.conn.dialect();
        let mut rows = if tags.is_empty() {
            self.collect(
                &keys_page_sql(dialect, false),
                args![app.pk, created_at, pk, include_revoked, page.fetch()],
                key_from_row,
            )?
        } else {
            let tags = tags_param(tags);
            self.collect(
                &keys_page_sql(dialect, true),
                args![app.pk, created_at, pk, include_revoked, page.fetch(), tags],
                key_from_row,
            )?
        };
        self.with_active_machines(&mut rows, now)?;
        Ok(Page::from_rows(rows, page, |key| Position::Key {
            created_at: key.created_at.0,
            pk: key.pk,
        }))
    }

    /// Turns each key's `machines` from its machine rows into its active machines at `now`,
    /// taking away those expired and not yet swept: one range of the expiry index, never a
    /// count of a key's machines.
    fn with_active_machines(&self, keys: &mut [Key], now: Timestamp) -> Result<()> {
        if keys.iter().all(|key| key.machines == 0) {
            return Ok(());
        }
        let expired: HashMap<Option<i64>, i64> = self
            .collect(
                &expired_unswept_sql(self.conn.dialect()),
                args![now.0],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?
            .into_iter()
            .collect();
        for key in keys {
            let unswept = expired.get(&Some(key.pk)).copied().unwrap_or(0);
            key.machines = (key.machines - unswept).max(0);
        }
        Ok(())
    }

    /// The sum of every key's machine rows (one row per key, never one per machine), plus
    /// the machines of trust policies (a range of `machines_by_key`, the NULL `key_pk`s).
    pub(crate) fn machine_rows_of_all_keys(&self) -> Result<u64> {
        let count: i64 = self
            .conn
            .query_one(
                "SELECT CAST(coalesce(sum(machine_rows), 0) AS BIGINT)
                        + (SELECT count(*) FROM machines WHERE key_pk IS NULL) FROM keys",
                args![],
                |row| row.get(0),
            )
            .map_err(storage)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) fn key_status(&self, hash: &TokenHash) -> Result<Option<KeyStatus>> {
        let sql = format!(
            "SELECT k.pk, k.id, a.pk, a.id, k.reusable, k.ephemeral, k.expires_at,
                    k.revoked_at, k.uses, {KEY_POLICY_COLUMNS}
               FROM keys k JOIN apps a ON a.pk = k.app_pk WHERE k.hash = ?1"
        );
        self.optional(&sql, args![hash.as_bytes()], |row| {
            Ok(KeyStatus {
                pk: row.get(0)?,
                id: row.get(1)?,
                app_pk: row.get(2)?,
                app: row.get(3)?,
                reusable: row.get(4)?,
                ephemeral: row.get(5)?,
                expires_at: row.get::<Option<i64>>(6)?.map(Timestamp),
                revoked_at: row.get::<Option<i64>>(7)?.map(Timestamp),
                uses: row.get(8)?,
                policy: policy_from_row(row, 9)?,
            })
        })
    }

    /// The machine holding this session token, and its app's pk. Expired machines are returned
    /// too: judging expiry is the caller's rule. The hot path of whoami reads this one row,
    /// neither keys nor apps: revoking a key deletes its machines in the same transaction, and
    /// so does deleting an app. The machine's `app` (the app's public id) is left empty for the
    /// caller, which resolves the app by pk (see `app_cache`).
    pub(crate) fn session(&self, token_hash: &TokenHash) -> Result<Option<(i64, Machine)>> {
        self.optional(
            // `machine_from_row`'s columns, with '' for the app's public id.
            "SELECT m.pk, m.id, '', m.key_id, m.name, m.ephemeral, m.created_at,
                    m.expires_at, m.last_seen_at, m.tags, m.metadata, m.trust_policy_id,
                    m.idle_timeout, m.app_pk
               FROM machines m WHERE m.token_hash = ?1",
            args![token_hash.as_bytes()],
            |row| Ok((row.get(13)?, machine_from_row(row)?)),
        )
    }

    /// The machine's last stored activity (its last stamped request, or its login), if the
    /// row with this pk still holds this token hash.
    pub(crate) fn machine_last_seen(
        &self,
        pk: i64,
        token_hash: &TokenHash,
    ) -> Result<Option<Timestamp>> {
        let sql = format!(
            "SELECT {}(coalesce(last_seen_at, created_at), created_at) FROM machines
              WHERE pk = ?1 AND token_hash = ?2",
            self.conn.dialect().greatest()
        );
        self.optional(&sql, args![pk, token_hash.as_bytes()], |row| {
            row.get(0).map(Timestamp)
        })
    }

    /// The app with this pk, deleted or not.
    pub(crate) fn app_by_pk(&self, pk: i64) -> Result<Option<App>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.pk = ?1");
        self.optional(&sql, args![pk], app_from_row)
    }

    /// A page of the machines that have not expired at `now`, newest first: the app's, or
    /// only those of the key with pk `key_pk` (which the caller found in this app), and only
    /// those carrying every tag of `tags`.
    pub(crate) fn active_machines(
        &self,
        app: &App,
        key_pk: Option<i64>,
        tags: &[String],
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Machine>> {
        let after = page.resume(|position| match position {
            Position::Machine { pk } => Some(*pk),
            _ => None,
        })?;
        let tagged = !tags.is_empty();
        let dialect = self.conn.dialect();
        let (sql, owner) = match key_pk {
            Some(key_pk) => (machines_page_sql(dialect, "m.key_pk", tagged), key_pk),
            None => (machines_page_sql(dialect, "m.app_pk", tagged), app.pk),
        };
        let after = after.unwrap_or(i64::MAX);
        let rows = if tagged {
            self.collect(
                &sql,
                args![owner, after, now.0, page.fetch(), tags_param(tags)],
                machine_from_row,
            )?
        } else {
            self.collect(
                &sql,
                args![owner, after, now.0, page.fetch()],
                machine_from_row,
            )?
        };
        Ok(Page::from_rows(rows, page, |machine| Position::Machine {
            pk: machine.pk,
        }))
    }

    pub(crate) fn machine(&self, app: &App, machine_id: &str) -> Result<Option<Machine>> {
        let sql =
            format!("SELECT {MACHINE_COLUMNS} {MACHINE_JOIN} WHERE m.app_pk = ?1 AND m.id = ?2");
        self.optional(&sql, args![app.pk, machine_id], machine_from_row)
    }

    /// A page of the app's trust policies, newest first.
    pub(crate) fn trust_policies(
        &self,
        app: &App,
        page: &PageRequest,
    ) -> Result<Page<TrustPolicy>> {
        let after = page.resume(|position| match position {
            Position::TrustPolicy { pk } => Some(*pk),
            _ => None,
        })?;
        let sql = format!(
            "{TRUST_POLICY_SELECT} WHERE p.app_pk = ?1 AND p.pk < ?2 ORDER BY p.pk DESC LIMIT ?3"
        );
        let rows = self.collect(
            &sql,
            args![app.pk, after.unwrap_or(i64::MAX), page.fetch()],
            trust_policy_from_row,
        )?;
        Ok(Page::from_rows(rows, page, |policy| {
            Position::TrustPolicy { pk: policy.pk }
        }))
    }

    /// The app's trust policies of one issuer, for a login.
    pub(crate) fn trust_policies_of_issuer(
        &self,
        app: &App,
        issuer: &str,
    ) -> Result<Vec<TrustPolicy>> {
        let sql = format!("{TRUST_POLICY_SELECT} WHERE p.app_pk = ?1 AND p.issuer = ?2");
        self.collect(&sql, args![app.pk, issuer], trust_policy_from_row)
    }

    pub(crate) fn trust_policy(&self, app: &App, id: &str) -> Result<Option<TrustPolicy>> {
        let sql = format!("{TRUST_POLICY_SELECT} WHERE p.app_pk = ?1 AND p.id = ?2");
        self.optional(&sql, args![app.pk, id], trust_policy_from_row)
    }

    /// Every row of a query, each through `map`.
    pub(super) fn collect<T>(
        &self,
        sql: &str,
        args: &[Value],
        map: impl FnMut(&Row) -> SqlResult<T>,
    ) -> Result<Vec<T>> {
        self.conn.query_map(sql, args, map).map_err(storage)
    }

    /// The first row of a query through `map`, if it has one.
    pub(super) fn optional<T>(
        &self,
        sql: &str,
        args: &[Value],
        map: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> Result<Option<T>> {
        self.conn.query_opt(sql, args, map).map_err(storage)
    }
}
fn app_from_row(row: &Row) -> SqlResult<App> {
    Ok(App {
        pk: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
    })
}

fn key_from_row(row: &Row) -> SqlResult<Key> {
    Ok(Key {
        pk: row.get(0)?,
        id: row.get(1)?,
        app: row.get(2)?,
        description: row.get(3)?,
        reusable: row.get(4)?,
        ephemeral: row.get(5)?,
        hint: row.get(6)?,
        created_at: Timestamp(row.get(7)?),
        expires_at: row.get::<Option<i64>>(8)?.map(Timestamp),
        revoked_at: row.get::<Option<i64>>(9)?.map(Timestamp),
        last_used_at: row.get::<Option<i64>>(10)?.map(Timestamp),
        uses: row.get(11)?,
        machines: row.get(12)?,
        rotated_from: row.get(13)?,
        rotated_to: row.get(14)?,
        policy: policy_from_row(row, 15)?,
        uses_remaining: uses_remaining(row.get(17)?, row.get(11)?),
    })
}

/// `KEY_POLICY_COLUMNS`, from column `first` on.
fn policy_from_row(row: &Row, first: usize) -> SqlResult<KeyPolicy> {
    Ok(KeyPolicy {
        tags: tags_from_column(row, first)?,
        metadata: Metadata::from_stored(row.get(first + 1)?),
        max_uses: row.get(first + 2)?,
        session_ttl: secs_from_column(row, first + 3)?,
        idle_timeout: secs_from_column(row, first + 4)?,
    })
}

/// A duration in seconds (stored as an integer; never negative).
pub(super) fn secs_from_column(row: &Row, column: usize) -> SqlResult<Option<u64>> {
    Ok(row
        .get::<Option<i64>>(column)?
        .map(|secs| secs.unsigned_abs()))
}

/// A duration in seconds as stored (bounded by `validate` far below `i64::MAX`).
pub(super) fn secs_to_column(secs: Option<u64>) -> Option<i64> {
    secs.map(|secs| i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A stored JSON array of tags.
fn tags_from_column(row: &Row, column: usize) -> SqlResult<Vec<String>> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|err| Row::bad_column(column, err))
}

fn trust_policy_from_row(row: &Row) -> SqlResult<TrustPolicy> {
    Ok(TrustPolicy {
        pk: row.get(0)?,
        id: row.get(1)?,
        app: row.get(2)?,
        issuer: row.get(3)?,
        audience: row.get(4)?,
        subject: row.get(5)?,
        claims: Metadata::from_stored(row.get(6)?),
        description: row.get(7)?,
        ephemeral: row.get(8)?,
        session_ttl: secs_from_column(row, 9)?,
        idle_timeout: secs_from_column(row, 10)?,
        tags: tags_from_column(row, 11)?,
        metadata: Metadata::from_stored(row.get(12)?),
        created_at: Timestamp(row.get(13)?),
    })
}

fn machine_from_row(row: &Row) -> SqlResult<Machine> {
    Ok(Machine {
        pk: row.get(0)?,
        id: row.get(1)?,
        app: row.get(2)?,
        key_id: row.get(3)?,
        name: row.get(4)?,
        ephemeral: row.get(5)?,
        created_at: Timestamp(row.get(6)?),
        expires_at: row.get::<Option<i64>>(7)?.map(Timestamp),
        last_seen_at: row.get::<Option<i64>>(8)?.map(Timestamp),
        tags: tags_from_column(row, 9)?,
        metadata: Metadata::from_stored(row.get(10)?),
        trust_policy_id: row.get(11)?,
        idle_timeout: secs_from_column(row, 12)?,
        idle_expires_at: None,
    }
    .with_idle_expiry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Database, Store};

    fn plan(conn: Conn, sql: &str) -> Vec<String> {
        let Conn::Sqlite(conn) = conn else {
            panic!("query plans are SQLite's")
        };
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Unbound parameters are NULL; plans do not depend on values (QPSG is on).
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps
    }

    /// However deep the page, its rows come from one range of one index, in the list's order:
    /// no table scan, no sort. A listing must not cost a count or a sort of every row.
    #[test]
    fn each_page_is_one_index_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        // The steps in any order: the app (one row by pk) may be looked up before or after.
        let check = |sql: &str, expected: &[&str]| {
            let mut steps = store.read(|r| Ok(plan(r.conn(), sql))).unwrap();
            let mut expected = expected.to_vec();
            steps.sort();
            expected.sort();
            assert_eq!(steps, expected, "{sql}");
        };
        let app_by_pk = "SEARCH a USING INTEGER PRIMARY KEY (rowid=?)";
        check(
            &apps_page_sql(),
            &["SEARCH a USING INDEX apps_live_id (id>?)"],
        );
        check(
            &keys_page_sql(Dialect::Sqlite, false),
            // The keys' range ends at the cursor's `created_at`; ties are cut by `pk`
            // (`pages_split_keys_created_in_one_millisecond`).
            &[
                "SEARCH k USING INDEX keys_by_app (app_pk=? AND created_at<?)",
                app_by_pk,
            ],
        );
        check(
            &machines_page_sql(Dialect::Sqlite, "m.app_pk", false),
            &[
                "SEARCH m USING INDEX machines_by_app (app_pk=? AND rowid<?)",
                app_by_pk,
            ],
        );
        check(
            &machines_page_sql(Dialect::Sqlite, "m.key_pk", false),
            &[
                "SEARCH m USING INDEX machines_by_key (key_pk=? AND rowid<?)",
                app_by_pk,
            ],
        );
        // A tag filter narrows the same range (its subqueries read the bound tags and the
        // row's own), so a filtered list keeps the unfiltered list's order and cursors.
        for (sql, range) in [
            (
                keys_page_sql(Dialect::Sqlite, true),
                "SEARCH k USING INDEX keys_by_app (app_pk=? AND created_at<?)",
            ),
            (
                machines_page_sql(Dialect::Sqlite, "m.app_pk", true),
                "SEARCH m USING INDEX machines_by_app (app_pk=? AND rowid<?)",
            ),
            (
                machines_page_sql(Dialect::Sqlite, "m.key_pk", true),
                "SEARCH m USING INDEX machines_by_key (key_pk=? AND rowid<?)",
            ),
        ] {
            let steps = store.read(|r| Ok(plan(r.conn(), &sql))).unwrap();
            // The subquery's steps: EXCEPT of two json_each scans, each sorted (16 tags at
            // most). Whatever remains is the list's own.
            const SORT: &str = "USE TEMP B-TREE FOR ORDER BY";
            let subquery = |step: &&str| {
                step.starts_with("CORRELATED SCALAR SUBQUERY")
                    || step.starts_with("SCAN json_each")
                    || ["MERGE (EXCEPT)", "LEFT", "RIGHT", SORT].contains(step)
            };
            let sorts = steps.iter().filter(|step| *step == SORT).count();
            assert_eq!(sorts, 2, "{sql}: {steps:?}");
            let mut outer: Vec<&str> = steps
                .iter()
                .map(String::as_str)
                .filter(|step| !subquery(step))
                .collect();
            outer.sort();
            let mut expected = vec![app_by_pk, range];
            expected.sort();
            assert_eq!(outer, expected, "{sql}: {steps:?}");
        }
        // A key's active machines: its counter, less what has expired and is not swept yet.
        check(
            &expired_unswept_sql(Dialect::Sqlite),
            &[
                "SEARCH machines USING INDEX machines_by_expiry (expires_at>? AND expires_at<?)",
                "USE TEMP B-TREE FOR GROUP BY",
            ],
        );
        check(
            &format!("{KEY_SELECT} WHERE k.app_pk = ?1 AND k.id = ?2"),
            &[
                "SEARCH k USING INDEX sqlite_autoindex_keys_1 (id=?)",
                app_by_pk,
            ],
        );
    }

    #[test]
    fn pages_split_keys_created_in_one_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        let at = Timestamp(5);
        let app = store
            .write(|w| {
                let app = w.insert_app("app", "App", at)?;
                for n in 0..3 {
                    let secret =
                        crate::domain::token::generate(crate::domain::token::TokenKind::AuthKey);
                    let hint = crate::domain::token::hint(&secret);
                    let new = crate::domain::model::NewKey::default();
                    w.insert_key(&app, format!("key_{n}"), &secret.hash(), hint, &new, at)?;
                }
                Ok(app)
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = PageRequest::parse(Some("1"), cursor.as_deref()).unwrap();
            let keys = store.read(|r| r.keys(&app, false, &[], &page, at)).unwrap();
            seen.extend(keys.items.into_iter().map(|key| key.id));
            match keys.next {
                Some(next) => cursor = Some(next.encode()),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["key_2", "key_1", "key_0"],
            "newest (highest row) first, once each"
        );
    }
}
