//! The rules: who may do what, and what a key or session is worth at a given moment. Issues,
//! logs in, verifies, revokes and expires. Time is passed in; storage goes through `Store`;
//! no sockets and no SQL text here.

pub(crate) mod seed;

use crate::authority::seed::Seed;
use crate::cache::app::AppCache;
use crate::cache::hot::{HotCache, Invalidation, Session};
use crate::cache::usage::UsageStamps;
use crate::domain::error::{Error, Result};
use crate::domain::model::KeyStatus;
use crate::domain::model::{App, Key, Machine, NewKey, Timestamp};
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::{self, Secret, TokenHash, TokenKind};
use crate::domain::validate;
use crate::store::{NewMachine, Store};
use std::sync::Arc;

pub(crate) struct Authority {
    store: Arc<Store>,
    stamps: Arc<UsageStamps>,
    /// Positive answers for whoami and verify. Every write below that could make one wrong
    /// invalidates it after committing and before returning.
    cache: Arc<HotCache>,
    /// Apps by pk for session lookups; never stale (see `app_cache`).
    apps: AppCache,
    admin_token: TokenHash,
    ephemeral_ttl_secs: u64,
}

/// Why a key would not be accepted, as `POST /v1/keys/verify` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    Malformed,
    NotFound,
    Revoked,
    Expired,
    Used,
}

impl KeyProblem {
    pub(crate) fn code(self) -> &'static str {
        match self {
            KeyProblem::Malformed => "malformed",
            KeyProblem::NotFound => "not_found",
            KeyProblem::Revoked => "revoked",
            KeyProblem::Expired => "expired",
            KeyProblem::Used => "used",
        }
    }

    /// The login error for the same problem. Malformed and unknown keys are deliberately one
    /// answer: a guesser learns nothing from the difference.
    fn login_error(self) -> Error {
        match self {
            KeyProblem::Malformed | KeyProblem::NotFound => Error::AuthKeyInvalid,
            KeyProblem::Revoked => Error::AuthKeyRevoked,
            KeyProblem::Expired => Error::AuthKeyExpired,
            KeyProblem::Used => Error::AuthKeyUsed,
        }
    }
}

/// Judges a stored key at `now`. Revocation outranks expiry, which outranks use.
pub(crate) fn judge_key(key: &KeyStatus, now: Timestamp) -> std::result::Result<(), KeyProblem> {
    if key.revoked_at.is_some() {
        Err(KeyProblem::Revoked)
    } else if key.expires_at.is_some_and(|at| at <= now) {
        Err(KeyProblem::Expired)
    } else if !key.reusable && key.uses > 0 {
        Err(KeyProblem::Used)
    } else {
        Ok(())
    }
}

impl Authority {
    pub(crate) fn new(
        store: Arc<Store>,
        stamps: Arc<UsageStamps>,
        cache: Arc<HotCache>,
        admin_token: TokenHash,
        ephemeral_ttl_secs: u64,
    ) -> Authority {
        Authority {
            store,
            stamps,
            cache,
            apps: AppCache::default(),
            admin_token,
            ephemeral_ttl_secs,
        }
    }

    /// Accepts the admin token. Comparing SHA-256 digests rather than the tokens means a
    /// timing difference could only reveal bytes of a hash, which do not help find the token.
    pub(crate) fn authenticate_admin(&self, bearer: &str) -> Result<()> {
        if TokenHash::of(bearer) == self.admin_token {
            Ok(())
        } else {
            Err(Error::InvalidCredentials)
        }
    }

    /// The app and machine behind a session token, if it is still valid at `now`.
    pub(crate) fn authenticate_session(
        &self,
        bearer: &str,
        now: Timestamp,
    ) -> Result<Arc<Session>> {
        let hash =
            token::parse(TokenKind::Session, bearer).map_err(|_| Error::InvalidCredentials)?;
        let session = self
            .cache
            .session_or_load(hash, || {
                self.store.read(|r| {
                    let Some((app_pk, machine)) = r.session(&hash)? else {
                        return Ok(None);
                    };
                    let app = self.apps.get_or_load(app_pk, || r.app_by_pk(app_pk))?;
                    Ok(app.map(|app| {
                        let machine = Machine {
                            app: app.id.clone(),
                            ..machine
                        };
                        Session::new(app, machine)
                    }))
                })
            })?
            .ok_or(Error::InvalidCredentials)?;
        if session.machine.is_expired(now) {
            return Err(Error::SessionExpired);
        }
        self.stamps.machine_seen(session.machine.pk, hash, now);
        Ok(session)
    }

    pub(crate) fn create_app(&self, id: &str, name: Option<&str>, now: Timestamp) -> Result<App> {
        validate::new_app(id, name)?;
        self.store.write(|w| {
            if w.app(id)?.is_some() {
                return Err(Error::AppExists);
            }
            w.insert_app(id, name.unwrap_or(id), now)
        })
    }

    pub(crate) fn apps(&self, page: &PageRequest) -> Result<Page<App>> {
        self.store.read(|r| r.apps(page))
    }

    pub(crate) fn app(&self, id: &str) -> Result<App> {
        self.store.read(|r| r.app(id)?.ok_or(Error::AppNotFound))
    }

    /// Deletes the app, revoking its keys and logging out its machines in one transaction.
    pub(crate) fn delete_app(&self, id: &str, now: Timestamp) -> Result<()> {
        self.store.write(|w| {
            let app = w.app(id)?.ok_or(Error::AppNotFound)?;
            w.delete_app(&app, now)
        })?;
        self.cache.invalidate(Invalidation::Everything);
        log::info!("deleted app {id}: its keys are revoked and its machines logged out");
        Ok(())
    }

    /// Generates a key; the secret is returned here and never again.
    pub(crate) fn create_key(
        &self,
        app_id: &str,
        new: &NewKey,
        now: Timestamp,
    ) -> Result<(Key, Secret)> {
        validate::new_key(new)?;
        let secret = token::generate(TokenKind::AuthKey);
        let hint = token::hint(&secret);
        let key = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            w.insert_key(
                &app,
                token::random_id("key_"),
                &secret.hash(),
                hint,
                new,
                now,
            )
        })?;
        log::info!("created key {} for app {app_id}", key.id);
        Ok((key, secret))
    }

    pub(crate) fn keys(
        &self,
        app_id: &str,
        include_revoked: bool,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Key>> {
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            r.keys(&app, include_revoked, page, now)
        })
    }

    pub(crate) fn key(&self, app_id: &str, key_id: &str, now: Timestamp) -> Result<Key> {
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            r.key(&app, key_id, now)?.ok_or(Error::KeyNotFound)
        })
    }

    /// Revokes the key and logs out every machine it logged in, before returning.
    pub(crate) fn revoke_key(&self, app_id: &str, key_id: &str, now: Timestamp) -> Result<()> {
        let logged_out = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let key = w.key(&app, key_id, now)?.ok_or(Error::KeyNotFound)?;
            if key.revoked_at.is_some() {
                return Err(Error::KeyNotFound);
            }
            w.revoke_key(&key, now)
        })?;
        self.cache.invalidate(Invalidation::Everything);
        log::info!("revoked key {key_id} of app {app_id}; logged out {logged_out} machine(s)");
        Ok(())
    }

    /// A page of the app's active machines, or of those of its key `key_id` only. A key
    /// that is not the app's has no machines here: the filter matches nothing.
    pub(crate) fn machines(
        &self,
        app_id: &str,
        key_id: Option<&str>,
        page: &PageRequest,
        now: Timestamp,
    ) -> Result<Page<Machine>> {
        self.store.snapshot(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            let key_pk = match key_id {
                None => None,
                Some(key_id) => match r.key_pk(&app, key_id)? {
                    Some(pk) => Some(pk),
                    None => return Ok(Page::default()),
                },
            };
            r.active_machines(&app, key_pk, page, now)
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
        now: Timestamp,
    ) -> Result<()> {
        let deleted = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let machine = w
                .machine(&app, machine_id)?
                .filter(|machine| !machine.is_expired(now))
                .ok_or(Error::MachineNotFound)?;
            Ok((machine.pk, w.delete_machine(machine.pk)?))
        })?;
        if let (pk, Some(hash)) = deleted {
            self.stamps.forget_machine(pk, hash);
        }
        // Admin logouts are rare enough to clear all.
        self.cache.invalidate(Invalidation::Everything);
        Ok(())
    }

    /// Creates the seed's apps and keys that do not exist yet, all in one transaction: a bad
    /// entry changes nothing. A key already stored for the same app is left as it is, so
    /// restarting with the same seed is a no-op and a seeded key that was revoked stays
    /// revoked. Returns how many apps and keys were created.
    pub(crate) fn seed(&self, seed: &Seed, now: Timestamp) -> Result<(usize, usize)> {
        // Every rule is checked before anything is written, with the same checks as the API's
        // create_app and create_key.
        let mut keys = Vec::new();
        for app in &seed.apps {
            validate::new_app(&app.id, app.name.as_deref())?;
            for key in &app.keys {
                let new = NewKey {
                    description: key.description.clone(),
                    reusable: key.reusable,
                    ephemeral: key.ephemeral,
                    expires_in_secs: None,
                };
                validate::new_key(&new)?;
                let hash = token::parse(TokenKind::AuthKey, key.key.expose()).map_err(|_| {
                    Error::InvalidField {
                        field: "key",
                        reason: format!(
                            "of app {} is not an auth key (ena_ plus 36 characters with a valid \
                             checksum; `authkeys generate-key` makes one)",
                            app.id
                        ),
                    }
                })?;
                keys.push((hash, new));
            }
        }
        let mut hashes = keys.into_iter();
        self.store.write(|w| {
            let (mut apps_created, mut keys_created) = (0, 0);
            for seeded in &seed.apps {
                let app = match w.app(&seeded.id)? {
                    Some(app) => app,
                    None => {
                        apps_created += 1;
                        let name = seeded.name.as_deref().unwrap_or(&seeded.id);
                        w.insert_app(&seeded.id, name, now)?
                    }
                };
                for key in &seeded.keys {
                    let (hash, new) = hashes.next().expect("one hash per seeded key");
                    match w.key_status(&hash)? {
                        Some(existing) if existing.app == app.id => continue,
                        Some(_) => {
                            return Err(Error::InvalidField {
                                field: "key",
                                reason: format!(
                                    "seeded for app {} already belongs to another app",
                                    app.id
                                ),
                            });
                        }
                        None => {}
                    }
                    let hint = token::hint(&key.key);
                    w.insert_key(&app, token::random_id("key_"), &hash, hint, &new, now)?;
                    keys_created += 1;
                }
            }
            Ok((apps_created, keys_created))
        })
    }

    /// Exchanges an auth key for a machine session. Judging the key and recording the login
    /// happen in one write transaction, so of any number of concurrent logins with a
    /// single-use key exactly one succeeds.
    pub(crate) fn login(
        &self,
        auth_key: &str,
        machine_name: Option<&str>,
        now: Timestamp,
    ) -> Result<(Secret, Machine)> {
        let hash = token::parse(TokenKind::AuthKey, auth_key).map_err(|_| Error::AuthKeyInvalid)?;
        if let Some(name) = machine_name {
            validate::text("machine", name, validate::MAX_MACHINE_NAME_CHARS)?;
        }
        let session = token::generate(TokenKind::Session);
        let machine = self.store.write(|w| {
            let key = w.key_status(&hash)?.ok_or(Error::AuthKeyInvalid)?;
            judge_key(&key, now).map_err(KeyProblem::login_error)?;
            let expires_at = key
                .ephemeral
                .then(|| now.plus_secs(self.ephemeral_ttl_secs));
            let new = NewMachine {
                id: token::random_id("mch_"),
                token_hash: session.hash(),
                name: machine_name,
                expires_at,
            };
            w.insert_machine(&key, new, now)
        })?;
        // The login used the key: a cached "valid" for a single-use key is now wrong.
        self.cache.invalidate(Invalidation::Key(hash));
        log::info!(
            "machine {} logged in to app {} with key {}",
            machine.id,
            machine.app,
            machine.key_id
        );
        Ok((session, machine))
    }

    /// Ends the session behind `bearer`.
    pub(crate) fn logout(&self, bearer: &str, now: Timestamp) -> Result<()> {
        let session = self.authenticate_session(bearer, now)?;
        let hash = TokenHash::of(bearer);
        self.store.write(|w| w.delete_machine(session.machine.pk))?;
        // Authenticating just stamped the machine; its row is gone, so is the stamp.
        self.stamps.forget_machine(session.machine.pk, hash);
        self.cache.invalidate(Invalidation::Session(hash));
        Ok(())
    }

    /// Whether `auth_key` would be accepted by a login at `now`. Never consumes the key.
    pub(crate) fn verify(
        &self,
        auth_key: &str,
        now: Timestamp,
    ) -> Result<std::result::Result<Arc<KeyStatus>, KeyProblem>> {
        let Ok(hash) = token::parse(TokenKind::AuthKey, auth_key) else {
            return Ok(Err(KeyProblem::Malformed));
        };
        let found = self
            .cache
            .key_or_load(hash, || self.store.read(|r| r.key_status(&hash)))?;
        let Some(key) = found else {
            return Ok(Err(KeyProblem::NotFound));
        };
        if let Err(problem) = judge_key(&key, now) {
            return Ok(Err(problem));
        }
        self.stamps.key_used(key.pk, hash, now);
        Ok(Ok(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reusable: bool, uses: i64) -> KeyStatus {
        KeyStatus {
            pk: 1,
            id: "key_x".into(),
            app_pk: 1,
            app: "app".into(),
            reusable,
            ephemeral: false,
            expires_at: Some(Timestamp(100)),
            revoked_at: None,
            uses,
        }
    }

    #[test]
    fn judging_keys() {
        let check = |key: KeyStatus, now: i64, expected: std::result::Result<(), KeyProblem>| {
            assert_eq!(
                judge_key(&key, Timestamp(now)),
                expected,
                "{key:?} at {now}"
            );
        };
        check(key(false, 0), 99, Ok(()));
        check(key(false, 0), 100, Err(KeyProblem::Expired));
        check(key(false, 1), 50, Err(KeyProblem::Used));
        check(key(true, 5), 50, Ok(()));
        check(
            KeyStatus {
                revoked_at: Some(Timestamp(1)),
                ..key(false, 1)
            },
            200,
            Err(KeyProblem::Revoked),
        );
        check(key(false, 1), 200, Err(KeyProblem::Expired));
    }
}
