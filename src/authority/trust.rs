//! Logging in with a workload identity: trust policies as the admin manages them (create,
//! list, delete), and the login with an OIDC ID token that one of them accepts. The token's
//! keys are fetched (by `oidc::keys`) before any write, so a slow issuer never holds the
//! writer lock; the write then checks that the policy still exists, records the `jti` and
//! creates the machine together, so a deleted policy lets nobody in once its DELETE returns
//! and a token logs in once.

use super::Authority;
use super::audit::{self, record};
use crate::cache::hot::Invalidation;
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::model::{Machine, NewTrustPolicy, Timestamp, TrustPolicy};
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::{self, Secret, TokenKind};
use crate::domain::validate;
use crate::oidc::claims::{self, Expectation};
use crate::oidc::verify;
use crate::store::NewMachine;

impl Authority {
    pub(crate) fn create_trust_policy(
        &self,
        app_id: &str,
        new: &NewTrustPolicy,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<TrustPolicy> {
        let allow_http = self.oidc.allows_insecure_issuers();
        validate::new_trust_policy(new, self.min_key_timeout_secs, allow_http)?;
        let mut new = new.clone();
        new.policy.tags.sort_unstable();
        let policy = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let policy = w.insert_trust_policy(&app, token::random_id("tp_"), &new, now)?;
            let details = serde_json::json!({
                "issuer": policy.issuer,
                "audience": policy.audience,
                "subject": policy.subject,
            });
            let created = Action::TrustPolicyCreated;
            record(w, actor, now, created, Some(app_id), &policy.id, details)?;
            Ok(policy)
        })?;
        log::info!(
            "created trust policy {} for app {app_id} (issuer {})",
            policy.id,
            policy.issuer
        );
        Ok(policy)
    }

    pub(crate) fn trust_policies(
        &self,
        app_id: &str,
        page: &PageRequest,
    ) -> Result<Page<TrustPolicy>> {
        self.store.read(|r| {
            let app = r.app(app_id)?.ok_or(Error::AppNotFound)?;
            r.trust_policies(&app, page)
        })
    }

    /// Deletes the policy and logs out every machine that logged in through it, before
    /// returning.
    pub(crate) fn delete_trust_policy(
        &self,
        app_id: &str,
        policy_id: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        let logged_out = self.store.write(|w| {
            let app = w.app(app_id)?.ok_or(Error::AppNotFound)?;
            let policy = w
                .trust_policy(&app, policy_id)?
                .ok_or(Error::TrustPolicyNotFound)?;
            let machines = w.delete_trust_policy(&policy)?;
            let deleted = Action::TrustPolicyDeleted;
            record(
                w,
                actor,
                now,
                deleted,
                Some(app_id),
                policy_id,
                serde_json::json!({}),
            )?;
            audit::logged_out(w, actor, now, app_id, &machines, "trust_policy_deleted")?;
            Ok(machines.len())
        })?;
        self.committed(Invalidation::Everything)?;
        log::info!(
            "deleted trust policy {policy_id} of app {app_id}; logged out {logged_out} machine(s)"
        );
        Ok(())
    }

    /// Exchanges an OIDC ID token for a machine session of `app_id`, if a trust policy of
    /// the app accepts it. Every refusal is `Error::InvalidIdToken` naming the failed check.
    pub(crate) fn login_with_id_token(
        &self,
        id_token: &str,
        app_id: &str,
        machine_name: Option<&str>,
        client_addr: Option<String>,
        now: Timestamp,
    ) -> Result<(Secret, Machine)> {
        if let Some(name) = machine_name {
            validate::text("machine", name, validate::MAX_MACHINE_NAME_CHARS)?;
        }
        let refused = Error::InvalidIdToken;
        let issuer = verify::claimed_issuer(id_token).map_err(refused)?;
        let (app, policies) = self
            .store
            .read(|r| {
                let Some(app) = r.app(app_id)? else {
                    return Ok(None);
                };
                let policies = r.trust_policies_of_issuer(&app, &issuer)?;
                Ok(Some((app, policies)))
            })?
            .filter(|(_, policies)| !policies.is_empty())
            .ok_or_else(|| refused("iss: no trust policy of this app trusts the issuer".into()))?;
        if !self.oidc.issuer_allowed(&issuer) {
            return Err(refused("iss: the issuer is not https".into()));
        }
        // Outside every lock: this may fetch the issuer's keys.
        let claims = verify::verified_claims(&self.oidc, &issuer, id_token).map_err(refused)?;
        let validity = claims::check_times(&claims, now.0.div_euclid(1000)).map_err(refused)?;
        let mut first_failure = None;
        let policy = policies.into_iter().find(|policy| {
            let wanted = serde_json::from_str(policy.claims.as_str()).unwrap_or_default();
            let expected = Expectation {
                issuer: &policy.issuer,
                audience: &policy.audience,
                subject: &policy.subject,
                claims: &wanted,
            };
            let checked = claims::check_policy(&claims, &expected);
            if let Err(failure) = &checked {
                first_failure.get_or_insert_with(|| failure.clone());
            }
            checked.is_ok()
        });
        let Some(policy) = policy else {
            return Err(refused(first_failure.unwrap_or_default()));
        };
        // Who logged in, for the audit log: the token's subject (never the token).
        let subject = claims.get("sub").cloned().unwrap_or_default();
        let remember_until = Timestamp((validity.exp + claims::LEEWAY_SECS) * 1000);
        let session = token::generate(TokenKind::Session);
        let machine = self.store.write(|w| {
            // The policy may have been deleted since it was read: its DELETE has committed
            // and its machines are gone, so this login must not add one.
            let policy = w
                .trust_policy(&app, &policy.id)?
                .ok_or_else(|| refused("policy: the trust policy was deleted".into()))?;
            if !w.record_jti(&issuer, &validity.jti, remember_until)? {
                return Err(refused("jti: the token has already been used".into()));
            }
            let ttl = policy.session_ttl.unwrap_or(self.ephemeral_ttl_secs);
            let new = NewMachine {
                id: token::random_id("mch_"),
                token_hash: session.hash(),
                name: machine_name,
                expires_at: policy.ephemeral.then(|| now.plus_secs(ttl)),
            };
            let machine = w.insert_policy_machine(&app, &policy, new, now)?;
            let actor = Actor::machine(&machine.id, client_addr);
            let details = serde_json::json!({"trust_policy_id": policy.id, "sub": subject});
            let logged_in = Action::MachineLoggedIn;
            record(
                w,
                &actor,
                now,
                logged_in,
                Some(app_id),
                &machine.id,
                details,
            )?;
            Ok(machine)
        })?;
        log::info!(
            "machine {} logged in to app {app_id} through trust policy {}",
            machine.id,
            policy.id
        );
        Ok((session, machine))
    }
}
