//! The throttle rule, in one place: which requests ask the `Throttle`, when, and what counts
//! against the client. Every request that presents a credential (an auth key to log in with or
//! verify, a session token, the admin token) asks before its credential is looked at; a
//! credential the server refuses keeps the failure reserved for it; anything else gives it
//! back. So a throttled client reaches no credential check at all: it cannot consume a key,
//! nor learn whether a token is good, even by sending a good one, exactly as for logins. Only
//! a client's own refused credentials drain its bucket: successes, bad input, missing
//! credentials and other clients' failures never do.

use super::{ApiError, Request, Response};
use crate::domain::error::Error;
use crate::domain::model::Timestamp;
use crate::http::throttle::Throttle;

/// What a request that presented a credential came to.
pub(super) struct Answer {
    pub(crate) result: Result<Response, ApiError>,
    /// The code of the refusal when the credential itself was refused: what a guesser
    /// produces, and what the throttle counts.
    pub(crate) refused: Option<&'static str>,
}

impl From<Result<Response, ApiError>> for Answer {
    /// Judges an answer by its error: a refused credential is a domain error that says so.
    fn from(result: Result<Response, ApiError>) -> Answer {
        let refused = match &result {
            Err(err @ ApiError::Domain(domain)) if refuses_credential(domain) => {
                Some(err.status_and_code().1)
            }
            _ => None,
        };
        Answer { result, refused }
    }
}

/// Runs `attempt` for `request` if its client may make one now; otherwise answers 429 with how
/// long to wait.
pub(super) fn throttled(
    throttle: &Throttle,
    request: &Request,
    now: Timestamp,
    attempt: impl FnOnce() -> Answer,
) -> Answer {
    let client = request.remote_addr.map(|addr| addr.ip());
    match throttle.admit(client, now) {
        Ok(reserved) => {
            let answer = attempt();
            if answer.refused.is_some() {
                reserved.failed();
            }
            answer
        }
        Err(retry) => Answer::from(Err(ApiError::TooManyRequests {
            retry_after_secs: retry.secs,
        })),
    }
}

/// Whether `err` refuses the credential presented: wrong, unknown, malformed, revoked, expired
/// or used. Exhaustive on purpose, so a new error must be placed on one side or the other.
fn refuses_credential(err: &Error) -> bool {
    match err {
        Error::InvalidCredentials
        | Error::SessionExpired
        | Error::AuthKeyInvalid
        | Error::AuthKeyRevoked
        | Error::AuthKeyExpired
        | Error::AuthKeyUsed
        | Error::InvalidIdToken(_) => true,
        // No credential is no guess; the rest is about the request, not the credential.
        Error::MissingCredentials
        | Error::KeyInactive
        | Error::AppNotFound
        | Error::KeyNotFound
        | Error::MachineNotFound
        | Error::TrustPolicyNotFound
        | Error::AppExists
        | Error::InvalidField { .. }
        | Error::AdminTokenNotFound
        | Error::WebhookNotFound
        | Error::Storage
        | Error::Unavailable
        | Error::NeedsDatabase => false,
        // A valid credential without the scope: not a guess either.
        Error::Forbidden(_) | Error::PolicyViolation(_) => false,
    }
}
