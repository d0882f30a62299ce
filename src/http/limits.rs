//! The bounds a client cannot push the server past, enforced by the patched tiny_http
//! (`vendor/tiny_http`, see its CHANGES-authkeys.md) before a request reaches a worker, and
//! the translation of its refusals into the contract's errors.

use super::{ApiError, MAX_BODY_BYTES};
use std::time::Duration;

/// Longest request line or header line, without its CRLF.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most header fields in a request.
pub const MAX_HEADERS: usize = 100;
/// Largest request head: the request line and every header line.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a connection may sit silent waiting for a request to start (keep-alive idle).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send one whole request, head and body, once started.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a response may block on a client that does not read it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once; further ones wait in the kernel's listen backlog. Each
/// holds at most one request (`MAX_HEAD_BYTES` + `MAX_BODY_BYTES`) and one thread.
pub const MAX_CONNECTIONS: usize = 1000;

/// The limits handed to tiny_http, with `rejection_response` answering its refusals.
pub fn limits(rejection_response: RejectionResponse) -> tiny_http::Limits {
    tiny_http::Limits {
        max_line: MAX_LINE_BYTES,
        max_headers: MAX_HEADERS,
        max_head: MAX_HEAD_BYTES,
        max_body: MAX_BODY_BYTES,
        idle_timeout: IDLE_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
        rejection_response,
    }
}

pub type RejectionResponse =
    fn(&tiny_http::Rejection) -> tiny_http::Response<std::io::Cursor<Vec<u8>>>;

/// The contract's error for a request tiny_http refused.
pub fn rejection_error(rejection: &tiny_http::Rejection) -> ApiError {
    use tiny_http::Rejection;
    match rejection {
        Rejection::Malformed(what) => ApiError::MalformedRequest(what),
        Rejection::Timeout => ApiError::RequestTimeout,
        Rejection::BodyTooLarge => ApiError::BodyTooLarge,
        Rejection::RequestLineTooLong => ApiError::UriTooLong,
        Rejection::ExpectationFailed => ApiError::ExpectationFailed,
        Rejection::HeadersTooLarge => ApiError::HeadersTooLarge,
        Rejection::VersionNotSupported => ApiError::HttpVersionNotSupported,
    }
}
