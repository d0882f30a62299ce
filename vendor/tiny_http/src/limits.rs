//! authkeys patch: the bounds a hostile client cannot push the server past, and the ways a
//! request is refused before it reaches the application. See CHANGES-authkeys.md.

use std::io::Cursor;
use std::time::Duration;

use crate::{Response, StatusCode};

/// What the server enforces on every connection. Upstream tiny_http enforces none of these.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line or header line, in bytes, without its CRLF.
    pub max_line: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Largest request head (request line and all header lines), in bytes.
    pub max_head: usize,
    /// Largest request body, in bytes. Bodies are read whole, inside this bound, before the
    /// request is handed to `recv()`, so that a slow body never holds an application thread.
    pub max_body: usize,
    /// How long a connection may stay silent while the server waits for a request to start.
    pub idle_timeout: Duration,
    /// How long a client may take to send a whole request (head and body) once it has started.
    pub request_timeout: Duration,
    /// How long writing a response may block on a client that does not read it.
    pub write_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Builds the response sent, followed by closing the connection, when a request is refused
    /// before it reaches the application.
    pub rejection_response: fn(&Rejection) -> Response<Cursor<Vec<u8>>>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: 8 * 1024,
            max_headers: 100,
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 1000,
            rejection_response: empty_rejection_response,
        }
    }
}

/// Why a request was refused before the application saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400: the request line, a header or the body framing is malformed or ambiguous.
    Malformed(&'static str),
    /// 408: the request did not arrive within `request_timeout`.
    Timeout,
    /// 413: the body is (or is declared to be) larger than `max_body`.
    BodyTooLarge,
    /// 414: the request line is longer than `max_line`.
    RequestLineTooLong,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 431: a header line longer than `max_line`, more than `max_headers` headers, or a head
    /// larger than `max_head`.
    HeadersTooLarge,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        StatusCode(match self {
            Rejection::Malformed(_) => 400,
            Rejection::Timeout => 408,
            Rejection::BodyTooLarge => 413,
            Rejection::RequestLineTooLong => 414,
            Rejection::ExpectationFailed => 417,
            Rejection::HeadersTooLarge => 431,
            Rejection::VersionNotSupported => 505,
        })
    }
}

/// Upstream's behaviour: the status and no body.
pub fn empty_rejection_response(rejection: &Rejection) -> Response<Cursor<Vec<u8>>> {
    Response::from_data(Vec::new()).with_status_code(rejection.status())
}
