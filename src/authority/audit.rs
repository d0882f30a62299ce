//! The audit log as the rules use it: `record` (called inside the transaction of every change,
//! so the change and its event commit together or not at all), reading it, and the sweeper's
//! part (expired machines, retention, `key.expiring`).

use super::Authority;
use crate::domain::access::Principal;
use crate::domain::audit::{Action, Actor, Event, EventFilter, NewEvent};
use crate::domain::error::{Error, Result};
use crate::domain::model::{Batch, Timestamp};
use crate::domain::page::{Page, PageRequest};
use crate::store::Writer;
use serde_json::Value;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Appends one event for a change made in `w`'s transaction.
pub(crate) fn record(
    w: &Writer,
    actor: &Actor,
    now: Timestamp,
    action: Action,
    app: Option<&str>,
    target_id: &str,
    details: Value,
) -> Result<()> {
    w.record(&NewEvent {
        at: now,
        action,
        actor,
        app,
        target_id,
        details,
    })
    .map(drop)
}

/// `machine.logged_out` for each machine in `ids`, logged out for `reason`.
pub(crate) fn logged_out(
    w: &Writer,
    actor: &Actor,
    now: Timestamp,
    app: &str,
    ids: &[String],
    reason: &str,
) -> Result<()> {
    for id in ids {
        record(
            w,
            actor,
            now,
            Action::MachineLoggedOut,
            Some(app),
            id,
            serde_json::json!({"reason": reason}),
        )?;
    }
    Ok(())
}

/// Deletes up to `limit` machines expired at `now`, with a `machine.logged_out` event each
/// (actor `system`), in one transaction, stopping early when `give_way` says so (see
/// `Writer::delete_expired_machines`).
pub(crate) fn sweep_expired_machines(
    w: &Writer,
    now: Timestamp,
    limit: usize,
    give_way: impl Fn(usize) -> bool,
) -> Result<Batch> {
    let deleted = w.delete_expired_machines(now, limit, give_way)?;
    swept(
        w,
        now,
        deleted.machines.iter().map(|(id, app)| (id.as_str(), *app)),
        "expired",
    )?;
    Ok(Batch {
        done: deleted.machines.len(),
        more: deleted.more,
    })
}

/// `machine.logged_out` (actor `system`) for each `(machine id, app pk)` the sweeper deleted
/// in `w`'s transaction, for `reason` (`expired`, `idle`).
pub(crate) fn swept<'m>(
    w: &Writer,
    now: Timestamp,
    machines: impl Iterator<Item = (&'m str, i64)>,
    reason: &str,
) -> Result<()> {
    let system = Actor::system();
    let mut apps: HashMap<i64, String> = HashMap::new();
    for (machine, app_pk) in machines {
        let app = match apps.entry(app_pk) {
            Entry::Occupied(known) => known.into_mut(),
            // A machine row belongs to a live app (deleting an app deletes its machines).
            Entry::Vacant(new) => new.insert(w.app_by_pk(app_pk)?.ok_or(Error::AppNotFound)?.id),
        };
        let ids = [machine.to_string()];
        logged_out(w, &system, now, app, &ids, reason)?;
    }
    Ok(())
}

impl Authority {
    /// A page of events. A token limited to some apps must name one of them with `app`.
    pub(crate) fn events(
        &self,
        filter: &EventFilter,
        page: &PageRequest,
        principal: &Principal,
    ) -> Result<Page<Event>> {
        match (&filter.app, principal.apps()) {
            (Some(app), _) => principal.require_app(app)?,
            (None, Some(_)) => {
                return Err(Error::Forbidden(
                    "this token is limited to some apps: ask for one with `app`".into(),
                ));
            }
            (None, None) => {}
        }
        self.store.read(|r| r.events(filter, page))
    }
}
