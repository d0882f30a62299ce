//! Every way a request can fail, and the one function that maps each to a status and a code.

use crate::domain::error::Error;
use crate::domain::token::redact_secrets;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// A rule of the domain said no.
    Domain(Error),
    RouteNotFound,
    MethodNotAllowed {
        allow: &'static [&'static str],
    },
    BodyTooLarge,
    UnsupportedMediaType,
    /// The body is not JSON, or not a JSON object.
    MalformedBody(String),
    /// Well-formed JSON naming a field the endpoint does not take.
    UnknownField(String),
    /// Well-formed JSON with a missing field or a value of the wrong type.
    InvalidBody(String),
    /// A query parameter the endpoint does not take, or a bad value for one.
    InvalidQuery(String),
    /// Too many refused credentials from this client; it may try again after
    /// `retry_after_secs` (sent as `Retry-After`).
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// A handler panicked, or built a response that cannot be sent.
    Internal,
    /// Refused by the HTTP layer before routing (see `http::limits`): a malformed or
    /// ambiguous request line, header or body framing.
    MalformedRequest(&'static str),
    /// The request did not arrive in time.
    RequestTimeout,
    /// The request line is too long.
    UriTooLong,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// A header line too long, too many headers, or a head too large.
    HeadersTooLarge,
    /// An HTTP version other than 1.0 and 1.1.
    HttpVersionNotSupported,
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        ApiError::Domain(err)
    }
}

impl ApiError {
    /// The HTTP status and the contract's error code. Exhaustive on purpose: a new variant
    /// must be given its status here.
    pub(crate) fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ApiError::Domain(err) => match err {
                Error::MissingCredentials => (401, "missing_credentials"),
                Error::InvalidCredentials => (401, "invalid_credentials"),
                Error::SessionExpired => (401, "session_expired"),
                Error::AuthKeyInvalid => (401, "invalid_auth_key"),
                Error::AuthKeyRevoked => (401, "auth_key_revoked"),
                Error::AuthKeyExpired => (401, "auth_key_expired"),
                Error::AuthKeyUsed => (401, "auth_key_used"),
                Error::InvalidIdToken(_) => (401, "invalid_id_token"),
                Error::TrustPolicyNotFound => (404, "trust_policy_not_found"),
                Error::AppNotFound => (404, "app_not_found"),
                Error::KeyNotFound => (404, "key_not_found"),
                Error::MachineNotFound => (404, "machine_not_found"),
                Error::AppExists => (409, "app_exists"),
                Error::KeyInactive => (409, "key_inactive"),
                Error::InvalidField { .. } => (422, "invalid_field"),
                Error::Forbidden(_) => (403, "forbidden"),
                Error::PolicyViolation(_) => (422, "policy_violation"),
                Error::AdminTokenNotFound => (404, "admin_token_not_found"),
                Error::WebhookNotFound => (404, "webhook_not_found"),
                Error::Storage | Error::NeedsDatabase => (500, "internal"),
                Error::Unavailable => (503, "database_unavailable"),
            },
            ApiError::RouteNotFound => (404, "not_found"),
            ApiError::MethodNotAllowed { .. } => (405, "method_not_allowed"),
            ApiError::BodyTooLarge => (413, "body_too_large"),
            ApiError::UnsupportedMediaType => (415, "unsupported_media_type"),
            ApiError::MalformedBody(_) => (400, "malformed_body"),
            ApiError::UnknownField(_) => (422, "unknown_field"),
            ApiError::InvalidBody(_) => (422, "invalid_field"),
            ApiError::InvalidQuery(_) => (400, "invalid_query"),
            ApiError::TooManyRequests { .. } => (429, "too_many_requests"),
            ApiError::Internal => (500, "internal"),
            ApiError::MalformedRequest(_) => (400, "malformed_request"),
            ApiError::RequestTimeout => (408, "request_timeout"),
            ApiError::UriTooLong => (414, "uri_too_long"),
            ApiError::ExpectationFailed => (417, "expectation_failed"),
            ApiError::HeadersTooLarge => (431, "headers_too_large"),
            ApiError::HttpVersionNotSupported => (505, "http_version_not_supported"),
        }
    }

    /// Human text for the client. Anything quoted from the request passes through
    /// `redact_secrets`, so a key pasted into the wrong field is never echoed back.
    pub(crate) fn message(&self) -> String {
        let text = match self {
            ApiError::Domain(err) => err.to_string(),
            ApiError::RouteNotFound => "no such endpoint".to_string(),
            ApiError::MethodNotAllowed { allow } => {
                format!(
                    "method not allowed; this endpoint takes {}",
                    allow.join(", ")
                )
            }
            ApiError::BodyTooLarge => {
                format!("the body is larger than {} bytes", super::MAX_BODY_BYTES)
            }
            ApiError::UnsupportedMediaType => {
                "the body must be sent as Content-Type: application/json".to_string()
            }
            ApiError::MalformedBody(detail)
            | ApiError::UnknownField(detail)
            | ApiError::InvalidBody(detail)
            | ApiError::InvalidQuery(detail) => detail.clone(),
            ApiError::TooManyRequests { retry_after_secs } => format!(
                "too many failed authentication attempts from this address; \
                 try again in {retry_after_secs} s"
            ),
            ApiError::Internal => "internal error".to_string(),
            ApiError::MalformedRequest(what) => format!("malformed request: {what}"),
            // The limit is configurable (`--http-request-timeout-ms`), so it is not quoted.
            ApiError::RequestTimeout => {
                "the request did not arrive within the server's time limit".to_string()
            }
            ApiError::UriTooLong => format!(
                "the request line is longer than {} bytes",
                super::limits::MAX_LINE_BYTES
            ),
            ApiError::ExpectationFailed => "only Expect: 100-continue is supported".to_string(),
            ApiError::HeadersTooLarge => format!(
                "request headers are limited to {} fields, {} bytes a line and {} bytes in all",
                super::limits::MAX_HEADERS,
                super::limits::MAX_LINE_BYTES,
                super::limits::MAX_HEAD_BYTES
            ),
            ApiError::HttpVersionNotSupported => {
                "only HTTP/1.0 and HTTP/1.1 are supported".to_string()
            }
        };
        redact_secrets(&text)
    }
}
