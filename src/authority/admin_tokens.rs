//! Admin authentication and scoped admin tokens: root's token, or an `ent_…` token created by
//! root, looked up on every request (a read, so revocation is effective the moment its write
//! commits) and stamped as used in memory (written by the sweeper, never on the request path).

use super::Authority;
use super::audit::record;
use crate::domain::access::{AdminToken, NewAdminToken, Principal};
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::model::Timestamp;
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::{self, Secret, TokenHash, TokenKind};

impl Authority {
    /// Who `bearer` is: root, or a live scoped token. Comparing SHA-256 digests rather than
    /// the tokens means a timing difference could only reveal bytes of a hash, which do not
    /// help find the token.
    pub(crate) fn authenticate_admin(&self, bearer: &str, now: Timestamp) -> Result<Principal> {
        if TokenHash::of(bearer) == self.admin_token {
            return Ok(Principal::Root);
        }
        let hash =
            token::parse(TokenKind::ScopedAdmin, bearer).map_err(|_| Error::InvalidCredentials)?;
        let grant = self
            .store
            .read(|r| r.admin_grant(&hash, now))?
            .ok_or(Error::InvalidCredentials)?;
        self.stamps.admin_token_used(grant.pk, grant.hash, now);
        Ok(Principal::Scoped(grant))
    }

    /// Creates a scoped token; the secret is returned here and never again. Every app it
    /// names must exist.
    pub(crate) fn create_admin_token(
        &self,
        new: &NewAdminToken,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(AdminToken, Secret)> {
        let secret = token::generate(TokenKind::ScopedAdmin);
        let hint = token::hint(&secret);
        let created = self.store.write(|w| {
            for app in new.apps.iter().flatten() {
                if w.app(app)?.is_none() {
                    return Err(Error::InvalidField {
                        field: "apps",
                        reason: format!("names the app {app}, which does not exist"),
                    });
                }
            }
            let id = token::random_id("tok_");
            let created = w.insert_admin_token(id, &secret.hash(), hint, new, now)?;
            let details = serde_json::json!({
                "name": created.name,
                "scopes": created.scopes,
                "apps": created.apps,
            });
            let action = Action::AdminTokenCreated;
            record(w, actor, now, action, None, &created.id, details)?;
            Ok(created)
        })?;
        log::info!("created admin token {} ({})", created.id, created.name);
        Ok((created, secret))
    }

    pub(crate) fn admin_tokens(&self, page: &PageRequest) -> Result<Page<AdminToken>> {
        self.store.read(|r| r.admin_tokens(page))
    }

    /// Revokes the token: refused from the moment this returns (every request reads it).
    pub(crate) fn revoke_admin_token(&self, id: &str, actor: &Actor, now: Timestamp) -> Result<()> {
        self.store.write(|w| {
            w.revoke_admin_token(id, now)?
                .ok_or(Error::AdminTokenNotFound)?;
            let details = serde_json::json!({});
            record(w, actor, now, Action::AdminTokenRevoked, None, id, details)
        })?;
        log::info!("revoked admin token {id}");
        Ok(())
    }
}
