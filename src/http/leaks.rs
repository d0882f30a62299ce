//! The leak report endpoints: an admin's revoke-by-value, GitLab's Token Revocation API and
//! GitHub secret scanning. Each decodes its reporter's shape and hands the tokens to
//! `Authority::revoke_leaked`; the two outside reporters' routes exist only when configured.

use super::context::Ctx;
use super::dto::{GithubLabel, GithubMatch, GitlabToken, RevokeByValue, RevokedByValue};
use super::{ApiError, Response};
use crate::authority::leaks::{LeakOutcome, Reported, Reporter};
use crate::domain::access::Principal;
use crate::domain::audit::Actor;
use crate::domain::error::Error;
use crate::domain::token::TokenHash;
use serde::de::DeserializeOwned;

/// Most tokens one GitLab or GitHub report may carry (the 64 KiB body limit allows about
/// 1,500 of the smallest entries): every one is judged in the same transaction.
pub(crate) const MAX_REPORTED_TOKENS: usize = 1000;

/// The token types advertised to GitLab: `gitleaks_rule_id_` and the rule ids of
/// `examples/gitleaks.toml`.
pub(crate) const GITLAB_TOKEN_TYPES: [&str; 2] = [
    "gitleaks_rule_id_authkeys_auth_key",
    "gitleaks_rule_id_authkeys_session_token",
];

/// `POST /v1/keys/revoke-by-value` (admin, already authenticated as `principal`, recorded as
/// the reporter `admin`).
pub(super) fn revoke_by_value(
    ctx: &Ctx,
    principal: &Principal,
    admin: &Actor,
) -> Result<Response, ApiError> {
    let body: RevokeByValue = ctx.request.json()?;
    let reported = [Reported {
        token: &body.key,
        location: None,
    }];
    let outcomes = revoke(ctx, admin, Some(principal), &reported)?;
    let answer = match &outcomes[0] {
        LeakOutcome::KeyRevoked { key_id, app } => RevokedByValue::Revoked {
            revoked: true,
            key_id: Some(key_id),
            app,
            machine_id: None,
        },
        LeakOutcome::MachineLoggedOut {
            machine_id,
            key_id,
            app,
        } => RevokedByValue::Revoked {
            revoked: true,
            key_id: key_id.as_deref(),
            app,
            machine_id: Some(machine_id),
        },
        other => RevokedByValue::NotRevoked {
            revoked: false,
            code: other.code().expect("only revocations have no code"),
        },
    };
    Ok(Response::json(200, &answer))
}

/// `GET /v1/revocable_token_types` and `POST /v1/revoke_tokens`: GitLab's token, as a bearer
/// token or bare, then (for the POST) every known token revoked, unknown ones ignored. Every
/// mistake in the body is a 400, as GitLab's API specifies.
pub(super) fn gitlab(ctx: &Ctx, revoke_tokens: bool) -> Result<Response, ApiError> {
    let presented = ctx
        .request
        .authorization
        .as_deref()
        .ok_or(Error::MissingCredentials)?;
    let token = ctx.request.bearer().unwrap_or(presented.trim());
    ctx.authority.authenticate_revocation_api(token)?;
    ctx.request.query_params(&[])?;
    if !revoke_tokens {
        return Ok(Response::json(
            200,
            &serde_json::json!({"types": GITLAB_TOKEN_TYPES}),
        ));
    }
    let as_400 = |err: ApiError| match err {
        ApiError::InvalidBody(detail) | ApiError::UnknownField(detail) => {
            ApiError::MalformedBody(detail)
        }
        other => other,
    };
    let tokens: Vec<GitlabToken> = report(ctx).map_err(as_400)?;
    if let Some(unknown) = tokens
        .iter()
        .find(|token| !GITLAB_TOKEN_TYPES.contains(&token.kind.as_str()))
    {
        return Err(ApiError::MalformedBody(format!(
            "unknown token type {:?}; known: {}",
            unknown.kind,
            GITLAB_TOKEN_TYPES.join(", ")
        )));
    }
    let reported: Vec<Reported> = tokens
        .iter()
        .map(|token| Reported {
            token: &token.token,
            location: token.location.as_deref(),
        })
        .collect();
    let reporter = Reporter::GitLab.actor(ctx.client_addr());
    revoke(ctx, &reporter, None, &reported)?;
    Ok(Response::no_content())
}

/// `POST /v1/secret-scanning/github`: a report signed by GitHub (checked over the raw body
/// before anything in it is read), answered with a label per match: `true_positive` for a
/// token this report revoked, `false_positive` for anything else.
pub(super) fn github(ctx: &Ctx) -> Result<Response, ApiError> {
    let header = |value: &Option<String>| value.clone().ok_or(Error::MissingCredentials);
    let key_id = header(&ctx.request.github_key_identifier)?;
    let signature = header(&ctx.request.github_signature)?;
    ctx.authority
        .authenticate_github_report(&key_id, &signature, &ctx.request.body)?;
    ctx.request.query_params(&[])?;
    let matches: Vec<GithubMatch> = report(ctx)?;
    let reported: Vec<Reported> = matches
        .iter()
        .map(|found| Reported {
            token: &found.token,
            location: found.url.as_deref(),
        })
        .collect();
    let reporter = Reporter::GitHub.actor(ctx.client_addr());
    let outcomes = revoke(ctx, &reporter, None, &reported)?;
    let labels: Vec<GithubLabel> = matches
        .iter()
        .zip(&outcomes)
        .map(|(found, outcome)| GithubLabel {
            token_hash: hex::encode(TokenHash::of(&found.token).as_bytes()),
            token_type: &found.kind,
            label: match outcome.code() {
                None => "true_positive",
                Some(_) => "false_positive",
            },
        })
        .collect();
    Ok(Response::json(200, &labels))
}

/// Decodes a report: a JSON array of at most `MAX_REPORTED_TOKENS` entries.
fn report<T: DeserializeOwned>(ctx: &Ctx) -> Result<Vec<T>, ApiError> {
    let entries: Vec<T> = ctx.request.json_array()?;
    if entries.len() > MAX_REPORTED_TOKENS {
        return Err(ApiError::InvalidBody(format!(
            "a report holds at most {MAX_REPORTED_TOKENS} tokens; send the rest in another"
        )));
    }
    Ok(entries)
}

/// Revokes what was reported and counts each key revoked.
fn revoke(
    ctx: &Ctx,
    reporter: &Actor,
    within: Option<&Principal>,
    reported: &[Reported],
) -> Result<Vec<LeakOutcome>, ApiError> {
    let outcomes = ctx
        .authority
        .revoke_leaked(reporter, within, reported, ctx.now)?;
    // A key reported twice in one report was revoked once.
    let mut counted: Vec<&str> = Vec::new();
    for outcome in &outcomes {
        if let LeakOutcome::KeyRevoked { key_id, .. } = outcome
            && !counted.contains(&key_id.as_str())
        {
            counted.push(key_id);
            ctx.metrics.revocation("revoked");
            ctx.metrics.key_revoked(key_id);
        }
    }
    Ok(outcomes)
}
