//! authkeys patch: the bounds a hostile client cannot push the server past, and the ways a
//! request is refused before it reaches the application. See CHANGES-authkeys.md.

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Response, StatusCode};

/// What the server enforces on every connection. Upstream tiny_http enforces none of these.
#[derive(Clone)]
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
    /// Most connections served at once. When all are taken, the connection idle longest is
    /// closed to make room; if none is idle, new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Most connections one client holds at once; a connection over this is closed at once.
    pub max_connections_per_client: usize,
    /// The client a peer's connections count against for `max_connections_per_client`
    /// (authkeys: the address, IPv6 by /64), or `None` to exempt the peer (a trusted proxy,
    /// which carries many clients).
    pub connection_client: Arc<dyn Fn(IpAddr) -> Option<IpAddr> + Send + Sync>,
    /// Builds the response sent, followed by closing the connection, when a request is refused
    /// before it reaches the application; also given how long ago the request started.
    pub rejection_response: Arc<RejectionResponse>,
}

/// See `Limits::rejection_response`.
pub type RejectionResponse =
    dyn Fn(&Rejection, Duration) -> Response<Cursor<Vec<u8>>> + Send + Sync;

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("max_line", &self.max_line)
            .field("max_headers", &self.max_headers)
            .field("max_head", &self.max_head)
            .field("max_body", &self.max_body)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .finish_non_exhaustive()
    }
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
            max_connections_per_client: 500,
            connection_client: Arc::new(Some),
            rejection_response: Arc::new(empty_rejection_response),
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
pub fn empty_rejection_response(rejection: &Rejection, _: Duration) -> Response<Cursor<Vec<u8>>> {
    Response::from_data(Vec::new()).with_status_code(rejection.status())
}
