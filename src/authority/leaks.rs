//! Leaked tokens: revoking a key, or ending a session, by its value, whoever reports it (an
//! admin's revoke-by-value, GitLab's Token Revocation API, GitHub secret scanning), and
//! authenticating the two outside reporters. `revoke_leaked` is the one place where a
//! revocation by leak report happens, and records it in the audit log in its transaction.

use super::Authority;
use super::apps::revoke_key_recorded;
use super::audit::record;
use crate::cache::hot::Invalidation;
use crate::domain::access::Principal;
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::github_keys::GithubKeys;
use crate::domain::model::Timestamp;
use crate::domain::token::{self, Secret, TokenHash, TokenKind};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The outside reporters that are on: each is configured or absent (and then its routes are).
#[derive(Clone, Debug, Default)]
pub(crate) struct LeakReporters {
    /// GitLab's pre-shared token (`--revocation-api-token`).
    pub(crate) revocation_api_token: Option<Secret>,
    /// GitHub's signing keys (`--github-secret-scanning-keys`).
    pub(crate) github_keys: Option<GithubKeys>,
}

/// Most characters of a reporter's location kept in the log line and the audit event.
const MAX_LOCATION_CHARS: usize = 200;

/// The outside reporters, each the audit log's actor `leak_report` with its name as the id.
/// (An admin's revoke-by-value is recorded as that admin, like any revocation of theirs.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reporter {
    GitLab,
    GitHub,
}

impl Reporter {
    /// The reporter as the audit log records it, reporting from `client_addr`.
    pub(crate) fn actor(self, client_addr: Option<String>) -> Actor {
        let name = match self {
            Reporter::GitLab => "gitlab",
            Reporter::GitHub => "github",
        };
        Actor::leak_report(name, client_addr)
    }
}

/// One reported token, and where the reporter says it was found (a URL, a file), if it says.
pub(crate) struct Reported<'a> {
    pub(crate) token: &'a str,
    pub(crate) location: Option<&'a str>,
}

/// What a report did about one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LeakOutcome {
    /// An active auth key, now revoked, its machines logged out.
    KeyRevoked { key_id: String, app: String },
    /// A live session token, whose machine is now logged out.
    MachineLoggedOut {
        machine_id: String,
        /// `None` for a machine of a trust policy.
        key_id: Option<String>,
        app: String,
    },
    /// Not an auth key or session token of ours (a well-formed admin token included: it is
    /// replaced with `rotate-admin-token`, not revoked).
    Malformed,
    /// Well formed, but no such key, or no live session.
    NotFound,
    /// A key revoked before this report.
    AlreadyRevoked,
}

impl LeakOutcome {
    pub(crate) fn code(&self) -> Option<&'static str> {
        match self {
            LeakOutcome::KeyRevoked { .. } | LeakOutcome::MachineLoggedOut { .. } => None,
            LeakOutcome::Malformed => Some("malformed"),
            LeakOutcome::NotFound => Some("not_found"),
            LeakOutcome::AlreadyRevoked => Some("already_revoked"),
        }
    }
}

/// What a well-formed reported token is, before the store is asked.
#[derive(Clone, Copy)]
enum Candidate {
    Key(TokenHash),
    Session(TokenHash),
}

fn candidate(token: &str) -> Option<Candidate> {
    if let Ok(hash) = token::parse(TokenKind::AuthKey, token) {
        Some(Candidate::Key(hash))
    } else {
        token::parse(TokenKind::Session, token)
            .ok()
            .map(Candidate::Session)
    }
}

impl Authority {
    /// Sets which outside reporters are on (at start).
    pub(crate) fn with_leak_reporters(mut self, reporters: LeakReporters) -> Authority {
        self.leak_reporters = reporters;
        self
    }

    pub(crate) fn revocation_api_enabled(&self) -> bool {
        self.leak_reporters.revocation_api_token.is_some()
    }

    pub(crate) fn github_secret_scanning_enabled(&self) -> bool {
        self.leak_reporters.github_keys.is_some()
    }

    /// Accepts GitLab's pre-shared token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the presented token's length, and is constant-time over the
    /// digests.
    pub(crate) fn authenticate_revocation_api(&self, presented: &str) -> Result<()> {
        let expected = self
            .leak_reporters
            .revocation_api_token
            .as_ref()
            .ok_or(Error::InvalidCredentials)?;
        let expected = Sha256::digest(expected.expose().as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        if bool::from(expected.as_slice().ct_eq(presented.as_slice())) {
            Ok(())
        } else {
            Err(Error::InvalidCredentials)
        }
    }

    /// Accepts a report only if `body` carries GitHub's signature by the key `key_id` names.
    pub(crate) fn authenticate_github_report(
        &self,
        key_id: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<()> {
        let keys = self
            .leak_reporters
            .github_keys
            .as_ref()
            .ok_or(Error::InvalidCredentials)?;
        keys.verify(key_id, signature, body)
            .map_err(|_| Error::InvalidCredentials)
    }

    /// Revokes every reported auth key and logs out the machine of every reported session
    /// token, in one transaction (a report of a thousand tokens is one fsync, not a thousand).
    /// Tokens that are not ours are never looked up. A token reported twice is judged once
    /// and answered the same both times. Answers one outcome per reported token, in order.
    /// Each revocation is recorded as `reporter`'s, with the reason `leak_report` and the
    /// location the reporter gave: the key's `key.revoked` and its machines'
    /// `machine.logged_out` as for any revocation, a session's `machine.logged_out`.
    ///
    /// `within`: an admin token limited to some apps may end only their keys and sessions; a
    /// token of another app is refused (403, nothing changed) like any request naming an app
    /// outside the token's. Outside reporters (`None`) prove the leak by holding the value.
    pub(crate) fn revoke_leaked(
        &self,
        reporter: &Actor,
        within: Option<&Principal>,
        reported: &[Reported],
        now: Timestamp,
    ) -> Result<Vec<LeakOutcome>> {
        let may_act_on = |app: &str| within.map_or(Ok(()), |principal| principal.require_app(app));
        let candidates: Vec<Option<Candidate>> =
            reported.iter().map(|r| candidate(r.token)).collect();
        let (judged, forgotten) = self.store.write(|w| {
            let mut judged: HashMap<TokenHash, LeakOutcome> = HashMap::new();
            let mut forgotten = Vec::new();
            for (report, candidate) in reported.iter().zip(&candidates) {
                let outcome = match *candidate {
                    None => continue,
                    Some(Candidate::Key(hash) | Candidate::Session(hash))
                        if judged.contains_key(&hash) =>
                    {
                        continue;
                    }
                    Some(Candidate::Key(hash)) => {
                        let outcome = match w.key_status(&hash)? {
                            None => LeakOutcome::NotFound,
                            Some(status) if status.revoked_at.is_some() => {
                                LeakOutcome::AlreadyRevoked
                            }
                            Some(status) => {
                                let app = w.app(&status.app)?.ok_or(Error::AppNotFound)?;
                                may_act_on(&app.id)?;
                                let key =
                                    w.key(&app, &status.id, now)?.ok_or(Error::KeyNotFound)?;
                                let details = leak_details(report.location);
                                revoke_key_recorded(w, &app.id, &key, reporter, now, details)?;
                                LeakOutcome::KeyRevoked {
                                    key_id: key.id,
                                    app: app.id,
                                }
                            }
                        };
                        (hash, outcome)
                    }
                    Some(Candidate::Session(hash)) => {
                        let outcome = match w.session(&hash)? {
                            Some((app_pk, machine)) if !machine.is_expired(now) => {
                                let app = w.app_by_pk(app_pk)?.ok_or(Error::AppNotFound)?;
                                may_act_on(&app.id)?;
                                if let Some(deleted) = w.delete_machine(machine.pk)? {
                                    forgotten.push((machine.pk, deleted));
                                }
                                record(
                                    w,
                                    reporter,
                                    now,
                                    Action::MachineLoggedOut,
                                    Some(&app.id),
                                    &machine.id,
                                    leak_details(report.location),
                                )?;
                                LeakOutcome::MachineLoggedOut {
                                    machine_id: machine.id,
                                    key_id: machine.key_id,
                                    app: app.id,
                                }
                            }
                            // Expired sessions are already logged out, as for an admin.
                            _ => LeakOutcome::NotFound,
                        };
                        (hash, outcome)
                    }
                };
                log_revocation(reporter, report.location, &outcome.1);
                judged.insert(outcome.0, outcome.1);
            }
            Ok((judged, forgotten))
        })?;
        for (pk, hash) in forgotten {
            self.stamps.forget_machine(pk, hash);
        }
        let changed = judged.values().any(|outcome| outcome.code().is_none());
        if changed {
            self.committed(Invalidation::Everything)?;
        }
        Ok(candidates
            .iter()
            .map(|candidate| match candidate {
                None => LeakOutcome::Malformed,
                Some(Candidate::Key(hash) | Candidate::Session(hash)) => judged[hash].clone(),
            })
            .collect())
    }
}

/// Where a reporter says a token was found, as the log and the audit log keep it: any token
/// in it redacted (before it is cut short, so no cut-off token escapes), at most
/// `MAX_LOCATION_CHARS` characters.
fn shown_location(location: &str) -> String {
    token::redact_secrets(location)
        .chars()
        .take(MAX_LOCATION_CHARS)
        .collect()
}

/// The `details` of a leak report's events: the reason, and the location if one was given.
fn leak_details(location: Option<&str>) -> serde_json::Value {
    let mut details = serde_json::json!({"reason": "leak_report"});
    if let Some(location) = location {
        details["location"] = shown_location(location).into();
    }
    details
}

/// Logs a revocation at info level: who reported it and where the token was found (quoted,
/// so a control character cannot forge a log line, and redacted), never the token.
fn log_revocation(reporter: &Actor, location: Option<&str>, outcome: &LeakOutcome) {
    let location = location.map(|text| format!("{:?}", shown_location(text)));
    let location = location.as_deref().unwrap_or("unknown");
    let reporter = reporter.id.as_deref().unwrap_or(reporter.kind.as_str());
    match outcome {
        LeakOutcome::KeyRevoked { key_id, app } => log::info!(
            "leak report (by {reporter}, found at {location}): revoked key {key_id} of app {app}"
        ),
        LeakOutcome::MachineLoggedOut {
            machine_id, app, ..
        } => log::info!(
            "leak report (by {reporter}, found at {location}): logged out machine {machine_id} \
             of app {app}"
        ),
        LeakOutcome::Malformed | LeakOutcome::NotFound | LeakOutcome::AlreadyRevoked => {}
    }
}
