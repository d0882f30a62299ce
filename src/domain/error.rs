//! The one domain error type. Storage failures collapse into `Error::Storage` at the store
//! boundary (`store::storage`), where their detail is logged; nothing about them reaches a
//! client.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// No bearer token was sent where one is required.
    MissingCredentials,
    /// A bearer token was sent but is not a valid admin or session token.
    InvalidCredentials,
    /// The session belonged to an ephemeral machine whose time is up, or to a machine idle
    /// for longer than its key's idle timeout.
    SessionExpired,
    /// The auth key is malformed or unknown.
    AuthKeyInvalid,
    AuthKeyRevoked,
    AuthKeyExpired,
    /// A key that has already logged in as many machines as it allows.
    AuthKeyUsed,
    /// An OIDC ID token no trust policy accepts; the text names the failed check and never
    /// quotes the token.
    InvalidIdToken(String),
    AppNotFound,
    KeyNotFound,
    TrustPolicyNotFound,
    MachineNotFound,
    AppExists,
    /// The key is revoked, expired or already rotated, so it cannot be rotated.
    KeyInactive,
    /// A well-formed request whose field `field` breaks a rule; `reason` says which.
    InvalidField {
        field: &'static str,
        reason: String,
    },
    /// Valid credentials without the scope (or the app) the request needs; says which.
    Forbidden(String),
    /// A scoped token's limits refuse the key it asked for; says which limit.
    PolicyViolation(String),
    AdminTokenNotFound,
    WebhookNotFound,
    /// The database failed; the detail was logged where it happened.
    Storage,
    /// The database cannot be reached (PostgreSQL went away); the detail was logged where it
    /// happened. Nothing was done, or, for a write whose commit was cut off, it is unknown.
    Unavailable,
    /// The answer needs the database, which this thread may not use (`store::memory_only`):
    /// nothing was done, and the request goes to a thread that may. Never reaches a client.
    NeedsDatabase,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingCredentials => f.write_str("an Authorization: Bearer token is required"),
            Error::InvalidCredentials => f.write_str("the bearer token is not valid"),
            Error::SessionExpired => f.write_str("the machine's session has expired"),
            Error::AuthKeyInvalid => f.write_str("the auth key is not valid"),
            Error::AuthKeyRevoked => f.write_str("the auth key has been revoked"),
            Error::AuthKeyExpired => f.write_str("the auth key has expired"),
            Error::AuthKeyUsed => f.write_str("the auth key has no uses left"),
            Error::InvalidIdToken(check) => write!(f, "the ID token was refused: {check}"),
            Error::AppNotFound => f.write_str("no such app"),
            Error::TrustPolicyNotFound => f.write_str("no such trust policy"),
            Error::KeyNotFound => f.write_str("no such key (or it is already revoked)"),
            Error::MachineNotFound => f.write_str("no such active machine"),
            Error::AppExists => f.write_str("an app with this id already exists"),
            Error::KeyInactive => {
                f.write_str("the key is revoked, expired or already rotated: it cannot be rotated")
            }
            Error::InvalidField { field, reason } => write!(f, "`{field}` {reason}"),
            Error::Forbidden(reason) => write!(f, "forbidden: {reason}"),
            Error::PolicyViolation(reason) => write!(f, "policy violation: {reason}"),
            Error::AdminTokenNotFound => {
                f.write_str("no such admin token (or it is already revoked)")
            }
            Error::WebhookNotFound => f.write_str("no such webhook"),
            Error::Storage => f.write_str("internal error"),
            Error::Unavailable => f.write_str("the database is unavailable; try again later"),
            Error::NeedsDatabase => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of a `StartError`, kept for `source()`.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the server could not start (or an operation on its database failed): what was being
/// done, and the failure underneath it, if any, as `source()`. `main` prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct StartError {
    context: String,
    #[source]
    cause: Option<Cause>,
}

impl StartError {
    /// A failure with no error underneath (a rule broken, a file refused).
    pub(crate) fn new(context: impl Into<String>) -> StartError {
        StartError {
            context: context.into(),
            cause: None,
        }
    }

    /// `context` failed because of `cause`.
    pub(crate) fn caused(context: impl Into<String>, cause: impl Into<Cause>) -> StartError {
        StartError {
            context: context.into(),
            cause: Some(cause.into()),
        }
    }
}
