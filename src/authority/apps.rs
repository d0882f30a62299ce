//! Apps, keys and machines as the admin manages them: create, list, read, revoke, delete.

use super::Authority;
use super::audit::{self, record};
use crate::cache::hot::Invalidation;
use crate::domain::access::KeyLimits;
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::model::{App, Key, Machine, NewKey, Timestamp};
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::{self, Secret, TokenKind};
use crate::domain::validate;
use crate::store::Writer;

impl Authority {
    pub(crate) fn create_app(
        &self,
        id: &str,
        name: Option<&str>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<App> {
        validate::new_app(id, name)?;
        self.store.write(|w| {
            if w.app(id)?.is_some() {
                return Err(Error::AppExists);
            }
            let app = w.insert_app(id, name.unwrap_or(id), now)?;
            let details = serde_json::json!({"name": app.name});
            record(w, actor, now, Action::AppCreated, Some(id), id, details)?;
            Ok(app)
        })
    }

    pub(crate) fn apps(&self, page: &PageRequest) -> Result<Page<App>> {
        self.store.read(|r| r.apps(page))
    }

    pub(crate) fn app(&self, id: &str) -> Result<App> {
        self.store.read(|r| r.app(id)?.ok_or(Error::AppNotFound))
    }

    /// Deletes the app, revoking its keys and logging out its machines in one transaction.
    pub(crate) fn delete_app(&self, id: &str, actor: &Actor, now: Timestamp) -> Result<()> {
        self.store.write(|w| {
            let app = w.app(id)?.ok_or(Error::AppNotFound)?;
            let (keys, machines) = w.delete_app(&app, now)?;
            let reason = serde_json::json!({"reason": "app_deleted"});
            record(
                w,
                actor,
                now,
                Action::AppDeleted,
                Some(id),
                id,
                serde_json::json!({}),
            )?;
            for key in &keys {
                record(
                    w,
                    actor,
                    now,
                    Action::KeyRevoked,
                    Some(id),
                    key,
                    reason.clone(),
                )?;
            }
            audit::logged_out(w, actor, now, id, &machines, "app_deleted")
        })?;
        self.committed(Invalidation::Everything)?;
        log::info!("deleted app {id}: its keys are revoked and its machines logged out");
        Ok(())
    }

    /// Generates a key; the secret is returned here and never again. A scoped token's
    /// `limits` are applied first (a breach is `policy_violation`).
    pub(crate) fn create_key(
        &self,
        app_id: &str,
        new: &NewKey,
        limits: Option<&KeyLimits>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(Key, Secret)> {
        validate::new_key(new, self.min_key_timeout_secs)?;
        let mut new = new.clone();
        new.policy.tags.sort_unstable();
        if let Some(limits) = limits {
            limits.apply(&mut new)?;
        }
        let (key, secret) = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let (key, secret) = insert_key_with_new_secret(w, &app, &new, now)?;
            let details = serde_json::json!({
                "reusable": key.reusable,
                "ephemeral": key.ephemeral,
                "expires_at": key.expires_at,
            });
            let app = Some(app_id);
            record(w, actor, now, Action::KeyCreated, app, &key.id, details)?;
            Ok((key, secret))
        })?;
        log::info!("created key {} for app {app_id}", key.id);
        Ok((key, secret))
    }

    /// Replaces a key with a new one of the same settings (and, if the old one expires, the
    /// same lifetime from now), in one write: the old key keeps working for `grace_secs` at
    /// most, and its machines stay logged in. A revoked, expired or already rotated key is
    /// inactive: only a live key can be rotated. A scoped token's `limits` hold on the new
    /// key as on any it creates.
    pub(crate) fn rotate_key(
        &self,
        app_id: &str,
        key_id: &str,
        grace_secs: u64,
        limits: Option<&KeyLimits>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(Key, Secret)> {
        validate::grace_seconds(grace_secs)?;
        let (key, secret) = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let old = w.key(&app, key_id, now)?.ok_or(Error::KeyNotFound)?;
            let expired = old.expires_at.is_some_and(|at| at <= now);
            if old.revoked_at.is_some() || expired || old.rotated_to.is_some() {
                return Err(Error::KeyInactive);
            }
            // Whole seconds, as `expires_in` was given (at least one).
            let lifetime = old
                .expires_at
                .map(|at| (at.0 - old.created_at.0).max(1_000).unsigned_abs() / 1_000);
            let mut new = NewKey {
                description: old.description.clone(),
                reusable: old.reusable,
                ephemeral: old.ephemeral,
                expires_in_secs: lifetime,
                policy: old.policy.clone(),
                rotated_from: Some(old.id.clone()),
            };
            if let Some(limits) = limits {
                limits.apply(&mut new)?;
            }
            let (key, secret) = insert_key_with_new_secret(w, &app, &new, now)?;
            w.mark_rotated(&old, &key.id, now.plus_secs(grace_secs))?;
            let details = serde_json::json!({
                "rotated_to": key.id,
                "grace_seconds": grace_secs,
            });
            let app = Some(app_id);
            record(w, actor, now, Action::KeyRotated, app, key_id, details)?;
            Ok((key, secret))
        })?;
        // The old key's expiry moved: a cached verify answer of it may now be wrong.
        self.committed(Invalidation::Everything)?;
        log::info!("rotated key {key_id} of app {app_id} to {}", key.id);
        Ok((key, secret))
    }

    /// A page of the app's keys carrying every tag of `tags` (any key if none).
    pub(crate) fn keys(
        &self,
        app_id: &str,
        include_revoked: bool,
        tags: &[String],
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Key>> {
        validate::tags("tag", tags)?;
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            r.keys(&app, include_revoked, tags, page, now)
        })
    }

    pub(crate) fn key(&self, app_id: &str, key_id: &str, now: Timestamp) -> Result<Key> {
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            r.key(&app, key_id, now)?.ok_or(Error::KeyNotFound)
        })
    }

    /// Revokes the key and logs out every machine it logged in, before returning.
    pub(crate) fn revoke_key(
        &self,
        app_id: &str,
        key_id: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        let logged_out = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let key = w.key(&app, key_id, now)?.ok_or(Error::KeyNotFound)?;
            if key.revoked_at.is_some() {
                return Err(Error::KeyNotFound);
            }
            let reason = serde_json::json!({"reason": "admin"});
            revoke_key_recorded(w, app_id, &key, actor, now, reason)
        })?;
        self.committed(Invalidation::Everything)?;
        log::info!("revoked key {key_id} of app {app_id}; logged out {logged_out} machine(s)");
        Ok(())
    }

    /// A page of the app's active machines, or of those of its key `key_id` only, carrying
    /// every tag of `tags`. A key that is not the app's has no machines here: the filter
    /// matches nothing.
    pub(crate) fn machines(
        &self,
        app_id: &str,
        key_id: Option<&str>,
        tags: &[String],
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Machine>> {
        validate::tags("tag", tags)?;
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            let key_pk = match key_id {
                None => None,
                Some(key_id) => match r.key_pk(&app, key_id)? {
                    Some(pk) => Some(pk),
                    None => return Ok(Page::default()),
                },
            };
            r.active_machines(&app, key_pk, tags, page, now)
        })
    }

    /// How many machine sessions are stored, across all apps, without a query: ephemeral
    /// ones count until the sweeper removes them (at most one sweep interval after they
    /// expire). `None` until the sweeper's first pass has counted them.
    pub(crate) fn machine_rows(&self) -> Option<u64> {
        self.store.machine_rows()
    }

    /// Logs out one machine of the app. Expired machines are already logged out: not found.
    pub(crate) fn logout_machine(
        &self,
        app_id: &str,
        machine_id: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        let deleted = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let machine = w
                .machine(&app, machine_id)?
                .filter(|machine| !machine.is_expired(now))
                .ok_or(Error::MachineNotFound)?;
            let deleted = w.delete_machine(machine.pk)?;
            audit::logged_out(w, actor, now, app_id, &[machine.id], "admin")?;
            Ok((machine.pk, deleted))
        })?;
        if let (pk, Some(hash)) = deleted {
            self.stamps.forget_machine(pk, hash);
        }
        // Admin logouts are rare enough to clear all.
        self.committed(Invalidation::Everything)
    }
}

/// Revokes `key` of the app `app_id` in `w`'s transaction with its events: `key.revoked`
/// (`details`) and `machine.logged_out` (`key_revoked`) for each machine it had logged in,
/// which the revocation deletes. Every revocation of one key goes through here, an admin's
/// and a leak report's alike. Answers how many machines were logged out.
pub(super) fn revoke_key_recorded(
    w: &Writer,
    app_id: &str,
    key: &Key,
    actor: &Actor,
    now: Timestamp,
    details: serde_json::Value,
) -> Result<usize> {
    let machines = w.revoke_key(key, now)?;
    let app = Some(app_id);
    record(w, actor, now, Action::KeyRevoked, app, &key.id, details)?;
    audit::logged_out(w, actor, now, app_id, &machines, "key_revoked")?;
    Ok(machines.len())
}

/// Inserts `new` into `app` with a fresh secret, returned here and never again.
fn insert_key_with_new_secret(
    w: &Writer,
    app: &App,
    new: &NewKey,
    now: Timestamp,
) -> Result<(Key, Secret)> {
    let secret = token::generate(TokenKind::AuthKey);
    let hint = token::hint(&secret);
    let key = w.insert_key(
        app,
        token::random_id("key_"),
        &secret.hash(),
        hint,
        new,
        now,
    )?;
    Ok((key, secret))
}
