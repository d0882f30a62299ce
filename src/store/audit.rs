//! The audit log's SQL: appending an event (always inside the transaction of the change it
//! records), reading pages of it, deleting what retention no longer keeps, and the sweeper's
//! `key.expiring` notices.

use super::read::Reader;
use super::sql::{Conn, Row, SqlResult, args};
use super::write::Writer;
use crate::domain::audit::{Action, Actor, Event, EventFilter, Named, NewEvent};
use crate::domain::error::Result;
use crate::domain::model::Timestamp;
use crate::domain::page::{Page, PageRequest, Position};

/// How far ahead of its expiry a key is announced (`key.expiring`): seven days.
pub(crate) const KEY_EXPIRING_AHEAD_SECS: u64 = 7 * 24 * 3600;
/// The setting holding the end of the window already scanned for `key.expiring` (Unix ms,
/// 8 bytes big-endian): keys expiring up to it have been announced, or were created inside it.
const KEY_EXPIRING_HORIZON: &str = "key_expiring_horizon";

const EVENT_COLUMNS: &str = "seq, at, action, actor_type, actor_id, app, target_type, \
                             target_id, client_addr, details";

/// A page of events between `?1` and `?5` (exclusive), ascending or newest first; `?2` the app
/// and `?3` the action when filtered on (each variant is one range of one index), `?4` the
/// rows to fetch.
fn events_page_sql(filter: &EventFilter) -> String {
    let app = if filter.app.is_some() {
        " AND app = ?2"
    } else {
        ""
    };
    let action = if filter.action.is_some() {
        " AND action = ?3"
    } else {
        ""
    };
    format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > ?1 AND seq < ?5{app}{action}
          ORDER BY seq{order} LIMIT ?4",
        order = if filter.newest_first { " DESC" } else { "" }
    )
}

/// Starts the `key.expiring` window at `now + 7 days` for a database that has none (a new or
/// upgraded one): keys already inside it were created inside it, or existed before this
/// version, and are not announced.
pub(super) fn start_key_expiring_horizon(conn: Conn) -> SqlResult<()> {
    let horizon = Timestamp::now().plus_secs(KEY_EXPIRING_AHEAD_SECS);
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        args![KEY_EXPIRING_HORIZON, horizon.0.to_be_bytes()],
    )
    .map(drop)
}

impl Writer<'_> {
    /// Appends `event` to the log, in the caller's transaction; returns its `seq`.
    pub(crate) fn record(&self, event: &NewEvent) -> Result<i64> {
        let Actor {
            kind,
            id,
            client_addr,
        } = event.actor;
        self.insert(
            "INSERT INTO audit_events (at, action, actor_type, actor_id, app, target_type,
                                       target_id, client_addr, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            "seq",
            args![
                event.at.0,
                event.action.as_str(),
                kind.as_str(),
                id,
                event.app,
                event.action.target_type(),
                event.target_id,
                client_addr,
                event.details.to_string()
            ],
        )
    }

    /// Deletes up to `limit` of the oldest events recorded before `cutoff`; returns how many.
    /// Only the oldest `limit` rows are read (events are recorded in time order), so a pass
    /// with nothing to delete costs one short range of the table, however long it is.
    pub(crate) fn delete_events_before(&self, cutoff: Timestamp, limit: usize) -> Result<usize> {
        self.execute(
            "DELETE FROM audit_events
              WHERE seq IN (SELECT seq FROM audit_events ORDER BY seq LIMIT ?2) AND at < ?1",
            args![cutoff.0, limit as i64],
        )
    }

    /// Records `key.expiring` (actor `system`) for every unrevoked key whose expiry has come
    /// within seven days of `now` since the last call, and moves the window on, in this
    /// transaction: so each key is announced once, whatever the crashes. Returns how many.
    pub(crate) fn announce_expiring_keys(&self, now: Timestamp) -> Result<usize> {
        let from = self
            .setting(KEY_EXPIRING_HORIZON)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(now.0, i64::from_be_bytes);
        let until = now.plus_secs(KEY_EXPIRING_AHEAD_SECS);
        if until.0 <= from {
            return Ok(0);
        }
        let keys: Vec<(String, String, i64)> = self.collect(
            "SELECT k.id, a.id, k.expires_at FROM keys k JOIN apps a ON a.pk = k.app_pk
              WHERE k.expires_at > ?1 AND k.expires_at <= ?2 AND k.revoked_at IS NULL
              ORDER BY k.expires_at",
            args![from, until.0],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let system = Actor::system();
        for (key_id, app, expires_at) in &keys {
            self.record(&NewEvent {
                at: now,
                action: Action::KeyExpiring,
                actor: &system,
                app: Some(app),
                target_id: key_id,
                details: serde_json::json!({"expires_at": Timestamp(*expires_at)}),
            })?;
        }
        self.put_setting(KEY_EXPIRING_HORIZON, &until.0.to_be_bytes())?;
        Ok(keys.len())
    }
}

impl Reader<'_> {
    /// A page of events matching `filter`, by `seq`.
    pub(crate) fn events(&self, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>> {
        let resume = page.resume(|position| match position {
            Position::Event { seq } => Some(*seq),
            _ => None,
        })?;
        // The cursor continues from the last event of the previous page, in the page's order.
        let (after, before) = match resume {
            Some(seq) if filter.newest_first => (filter.after, seq),
            Some(seq) => (seq.max(filter.after), i64::MAX),
            None => (filter.after, i64::MAX),
        };
        let rows = self.collect(
            &events_page_sql(filter),
            args![
                after,
                filter.app,
                filter.action.map(Action::as_str),
                page.fetch(),
                before
            ],
            event_from_row,
        )?;
        Ok(Page::from_rows(rows, page, |event| Position::Event {
            seq: event.seq,
        }))
    }

    /// Up to `limit` events after `seq`, for the webhook delivery thread.
    pub(crate) fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<Event>> {
        self.collect(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ),
            args![seq, limit as i64],
            event_from_row,
        )
    }
}

fn event_from_row(row: &Row) -> SqlResult<Event> {
    let details: String = row.get(9)?;
    Ok(Event {
        seq: row.get(0)?,
        at: Timestamp(row.get(1)?),
        action: row.get(2)?,
        actor: Named {
            kind: row.get(3)?,
            id: row.get(4)?,
        },
        app: row.get(5)?,
        target: Named {
            kind: row.get(6)?,
            id: Some(row.get(7)?),
        },
        client_addr: row.get(8)?,
        details: serde_json::value::RawValue::from_string(details)
            .map_err(|err| Row::bad_column(9, err))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Database, Store};

    /// Each filter's page is one range of one index, never a scan of the log.
    #[test]
    fn each_events_page_is_one_index_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Database::File(dir.path().join("authkeys.db"))).unwrap();
        let plan = |filter: EventFilter| -> Vec<String> {
            store
                .read(|r| {
                    r.collect(
                        &format!("EXPLAIN QUERY PLAN {}", events_page_sql(&filter)),
                        args![0_i64, "a", "app.created", 1_i64, 9_i64],
                        |row| row.get(3),
                    )
                })
                .unwrap()
        };
        let all = plan(EventFilter::default());
        assert_eq!(
            all,
            ["SEARCH audit_events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"]
        );
        let by_app = plan(EventFilter {
            app: Some("a".into()),
            ..EventFilter::default()
        });
        assert_eq!(
            by_app,
            ["SEARCH audit_events USING INDEX audit_by_app (app=? AND seq>? AND seq<?)"]
        );
        let by_action = plan(EventFilter {
            action: Some(Action::AppCreated),
            ..EventFilter::default()
        });
        assert_eq!(
            by_action,
            ["SEARCH audit_events USING INDEX audit_by_action (action=? AND seq>? AND seq<?)"]
        );
        let newest_first = plan(EventFilter {
            app: Some("a".into()),
            newest_first: true,
            ..EventFilter::default()
        });
        assert_eq!(
            newest_first,
            ["SEARCH audit_events USING INDEX audit_by_app (app=? AND seq>? AND seq<?)"]
        );
    }
}
