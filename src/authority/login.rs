//! Machine sessions: logging in with an auth key, the session behind a token, logging out.

use super::audit::{self, record};
use super::{Authority, KeyProblem, judge_key};
use crate::cache::hot::{Invalidation, Session};
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::model::{Machine, Timestamp};
use crate::domain::token::{self, Secret, TokenHash, TokenKind};
use crate::domain::validate;
use crate::store::NewMachine;
use std::sync::Arc;

/// The hash of `bearer` if it is a well-formed session token (shape and checksum; no lookup).
pub(crate) fn session_hash(bearer: &str) -> Result<TokenHash> {
    token::parse(TokenKind::Session, bearer).map_err(|_| Error::InvalidCredentials)
}

impl Authority {
    /// The app and machine behind a session token, if it is still valid at `now`.
    pub(crate) fn authenticate_session(
        &self,
        hash: TokenHash,
        now: Timestamp,
    ) -> Result<Arc<Session>> {
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
        if session.machine.is_expired(now) || self.is_idle(&session.machine, hash, now)? {
            return Err(Error::SessionExpired);
        }
        let (pk, stamps) = (session.machine.pk, &self.stamps);
        match session.machine.idle_timeout {
            Some(_) => stamps.idle_limited_machine_seen(pk, hash, now),
            None => stamps.machine_seen(pk, hash, now),
        }
        Ok(session)
    }

    /// Whether the machine has made no request for its key's idle timeout at `now`. Its last
    /// activity is the latest of what the cached row says, its pending usage stamp and, only
    /// when those two say idle, the row read again: a stamp leaves the map for the database
    /// only after its write commits (`UsageStamps::take` keeps it as in flight until then),
    /// so reading the stamps first and the row second misses no request. No write here.
    fn is_idle(&self, machine: &Machine, hash: TokenHash, now: Timestamp) -> Result<bool> {
        let Some(timeout) = machine.idle_timeout else {
            return Ok(false);
        };
        let idle_at = |last: Timestamp| last.plus_secs(timeout) <= now;
        let stamped = self.stamps.machine_last_seen(machine.pk, hash);
        let known = stamped.map_or(machine.stored_activity(), |at| {
            at.max(machine.stored_activity())
        });
        if !idle_at(known) {
            return Ok(false);
        }
        // The cached row may predate a flush: read the stored activity as it is now.
        let stamped = self.stamps.machine_last_seen(machine.pk, hash);
        let stored = self
            .store
            .read(|r| r.machine_last_seen(machine.pk, &hash))?;
        let Some(stored) = stored else {
            // Gone meanwhile (logged out, revoked, swept): nothing to let in.
            return Ok(true);
        };
        let last = [Some(known), stamped, Some(stored)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(known);
        Ok(idle_at(last))
    }

    /// Exchanges an auth key for a machine session. Judging the key and recording the login
    /// (a use) happen in one write transaction, so of any number of concurrent logins with a
    /// key of `max_uses` exactly `max_uses` succeed. The machine copies the key's tags,
    /// metadata and idle timeout, and an ephemeral one its `session_ttl`.
    pub(crate) fn login(
        &self,
        auth_key: &str,
        machine_name: Option<&str>,
        client_addr: Option<String>,
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
            let ttl = key.policy.session_ttl.unwrap_or(self.ephemeral_ttl_secs);
            let expires_at = key.ephemeral.then(|| now.plus_secs(ttl));
            let new = NewMachine {
                id: token::random_id("mch_"),
                token_hash: session.hash(),
                name: machine_name,
                expires_at,
            };
            let machine = w.insert_machine(&key, new, now)?;
            let actor = Actor::machine(&machine.id, client_addr);
            let details = serde_json::json!({"key_id": key.id});
            let app = Some(key.app.as_str());
            record(
                w,
                &actor,
                now,
                Action::MachineLoggedIn,
                app,
                &machine.id,
                details,
            )?;
            Ok(machine)
        })?;
        // The login used the key: a cached "valid" for a single-use key is now wrong. Other
        // nodes hear it from the database without this login waiting for them: a login makes
        // no credential stop working, and a second login is judged in the write anyway.
        self.cache.invalidate(Invalidation::Key(hash));
        log::info!(
            "machine {} logged in to app {} with key {}",
            machine.id,
            machine.app,
            machine.key_id.as_deref().unwrap_or_default()
        );
        Ok((session, machine))
    }

    /// Ends the session whose token's hash is `hash`.
    pub(crate) fn logout(
        &self,
        hash: TokenHash,
        client_addr: Option<String>,
        now: Timestamp,
    ) -> Result<()> {
        let session = self.authenticate_session(hash, now)?;
        let machine = &session.machine;
        let actor = Actor::machine(&machine.id, client_addr);
        self.store.write(|w| {
            // Already gone (a racing logout or revocation): that change recorded its event.
            if w.delete_machine(machine.pk)?.is_some() {
                let ids = std::slice::from_ref(&machine.id);
                audit::logged_out(w, &actor, now, &session.app.id, ids, "logout")?;
            }
            Ok(())
        })?;
        // Authenticating just stamped the machine; its row is gone, so is the stamp.
        self.stamps.forget_machine(session.machine.pk, hash);
        self.committed(Invalidation::Session(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::hot::HotCache;
    use crate::cache::usage::UsageStamps;
    use crate::domain::model::{KeyPolicy, NewKey};
    use crate::runtime::sweeper::sweep;
    use crate::store::{Database, Store};

    const TIMEOUT_SECS: u64 = 60;
    const RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

    /// An authority on a fresh file, with a key of `TIMEOUT_SECS` idle timeout, and a machine
    /// logged in with it at time 0: the session token.
    fn idle_machine() -> (tempfile::TempDir, Authority, Secret) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&Database::File(dir.path().join("a.db"))).unwrap());
        let authority = Authority::new(
            store,
            Arc::new(UsageStamps::default()),
            Arc::new(HotCache::default()),
            TokenHash::of("admin"),
            3600,
        );
        let system = Actor::system();
        authority
            .create_app("app", None, &system, Timestamp(0))
            .unwrap();
        let new = NewKey {
            reusable: true,
            policy: KeyPolicy {
                idle_timeout: Some(TIMEOUT_SECS),
                ..KeyPolicy::default()
            },
            ..NewKey::default()
        };
        let (_, key) = authority
            .create_key("app", &new, None, &system, Timestamp(0))
            .unwrap();
        let (session, _) = authority
            .login(key.expose(), None, None, Timestamp(0))
            .unwrap();
        (dir, authority, session)
    }

    /// A sweep at `millis`: writes the pending stamps and drops the cached sessions.
    fn flush(authority: &Authority, millis: i64) {
        let (store, stamps, cache) = (&authority.store, &authority.stamps, &authority.cache);
        sweep(store, stamps, cache, RETENTION, Timestamp(millis)).unwrap();
    }

    fn at(authority: &Authority, session: &Secret, millis: i64) -> Result<()> {
        authority
            .authenticate_session(session.hash(), Timestamp(millis))
            .map(drop)
    }

    /// Judged to the millisecond on the last request, whether the cache, the pending stamps,
    /// stamps being written or the database holds it; a refused request restarts nothing.
    #[test]
    fn idleness_is_judged_to_the_millisecond_wherever_the_last_request_is_kept() {
        let (_dir, authority, session) = idle_machine();
        let timeout = TIMEOUT_SECS as i64 * 1000;
        // From the login: the last moment in time, then the first one too late.
        at(&authority, &session, timeout - 1).unwrap();
        // That request restarted the clock (its stamp is pending, in memory only).
        let last = timeout - 1;
        at(&authority, &session, last + timeout - 1).unwrap();
        let last = last + timeout - 1;
        // A stamp taken out for writing, not yet committed, still counts.
        let pending = authority.stamps.take();
        at(&authority, &session, last + timeout - 1).unwrap();
        let last = last + timeout - 1;
        authority.stamps.restore(pending);
        // Written to the database by a sweep, which also drops the cached session.
        flush(&authority, last);
        assert!(
            authority
                .stamps
                .machine_last_seen(1, TokenHash::of(session.expose()))
                .is_none()
        );
        at(&authority, &session, last + timeout - 1).unwrap();
        let last = last + timeout - 1;
        flush(&authority, last);
        // Loaded again, cached on its second miss, then judged from the cache.
        assert_eq!(
            at(&authority, &session, last + timeout),
            Err(Error::SessionExpired)
        );
        assert_eq!(
            at(&authority, &session, last + timeout + 1),
            Err(Error::SessionExpired),
            "a refused request does not restart the clock"
        );
    }
}
