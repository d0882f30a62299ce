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

impl Authority {
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

    /// Exchanges an auth key for a machine session. Judging the key and recording the login
    /// happen in one write transaction, so of any number of concurrent logins with a
    /// single-use key exactly one succeeds.
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
            let expires_at = key
                .ephemeral
                .then(|| now.plus_secs(self.ephemeral_ttl_secs));
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
    pub(crate) fn logout(
        &self,
        bearer: &str,
        client_addr: Option<String>,
        now: Timestamp,
    ) -> Result<()> {
        let session = self.authenticate_session(bearer, now)?;
        let hash = TokenHash::of(bearer);
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
        self.cache.invalidate(Invalidation::Session(hash));
        Ok(())
    }
}
