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
    let mut events = SweptMachines::new(w, now, "expired");
    w.delete_expired_machines(now, limit, give_way, |id, app_pk| {
        events.logged_out(id, app_pk)
    })
}

/// `machine.logged_out` (actor `system`) for each `(machine id, app pk)` the sweeper deleted
/// in `w`'s transaction, for `reason` (`expired`, `idle`).
pub(crate) fn swept<'m>(
    w: &Writer,
    now: Timestamp,
    machines: impl Iterator<Item = (&'m str, i64)>,
    reason: &'static str,
) -> Result<()> {
    let mut events = SweptMachines::new(w, now, reason);
    machines
        .into_iter()
        .try_for_each(|(id, app_pk)| events.logged_out(id, app_pk))
}

/// Records `machine.logged_out` (actor `system`) for machines the sweeper deletes in one
/// transaction, one at a time, looking each app's id up once.
struct SweptMachines<'w, 'c> {
    w: &'w Writer<'c>,
    now: Timestamp,
    reason: &'static str,
    system: Actor,
    apps: HashMap<i64, String>,
}

impl<'w, 'c> SweptMachines<'w, 'c> {
    fn new(w: &'w Writer<'c>, now: Timestamp, reason: &'static str) -> Self {
        SweptMachines {
            w,
            now,
            reason,
            system: Actor::system(),
            apps: HashMap::new(),
        }
    }

    fn logged_out(&mut self, machine: &str, app_pk: i64) -> Result<()> {
        let app = match self.apps.entry(app_pk) {
            Entry::Occupied(known) => known.into_mut(),
            // A machine row belongs to a live app (deleting an app deletes its machines).
            Entry::Vacant(new) => {
                new.insert(self.w.app_by_pk(app_pk)?.ok_or(Error::AppNotFound)?.id)
            }
        };
        let ids = [machine.to_string()];
        logged_out(self.w, &self.system, self.now, app, &ids, self.reason)
    }
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
