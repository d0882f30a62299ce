//! The bounds a client cannot push the server past, enforced by authkeys-http (our fork of
//! tiny_http, `crates/authkeys-http`; see its CHANGES-authkeys.md) before a request reaches a
//! worker, and the translation of its refusals into the contract's errors.

use super::forwarded::TrustedProxies;
use super::{ApiError, MAX_BODY_BYTES};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line or header line, without its CRLF.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most header fields in a request.
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest request head: the request line and every header line.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a connection may sit silent waiting for a request to start (keep-alive idle), by
/// default.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send one whole request, head and body, once started, by
/// default.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a response may block on a client that does not read it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once, by default. Each holds at most one request
/// (`MAX_HEAD_BYTES` + `MAX_BODY_BYTES`), one thread and three descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The HTTP settings that come from `Config` (`--max-connections` and friends).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most connections open at once; at capacity the one idle longest is closed to make room.
    pub max_connections: usize,
    /// Most connections one client address (IPv6: /64) holds; more are closed at once. Peers
    /// in `trusted_proxies` are exempt: a proxy carries many clients.
    pub max_connections_per_client: usize,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// How long a connection may wait for a request to start.
    pub idle_timeout: Duration,
    /// How long a client may take to send a whole request once started.
    pub request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS / 2,
            trusted_proxies: TrustedProxies::default(),
            idle_timeout: IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The limits handed to authkeys-http, with `rejection_response` answering its refusals.
pub(crate) fn limits(
    settings: &Settings,
    rejection_response: Arc<authkeys_http::RejectionResponse>,
) -> authkeys_http::Limits {
    let trusted = settings.trusted_proxies.clone();
    authkeys_http::Limits {
        max_line: MAX_LINE_BYTES,
        max_headers: MAX_HEADERS,
        max_head: MAX_HEAD_BYTES,
        max_body: MAX_BODY_BYTES,
        idle_timeout: settings.idle_timeout,
        request_timeout: settings.request_timeout,
        write_timeout: WRITE_TIMEOUT,
        max_connections: settings.max_connections,
        max_connections_per_client: settings.max_connections_per_client,
        // The same grouping as the login throttle's; a trusted proxy is exempt.
        connection_client: Arc::new(move |peer| {
            (!trusted.contains(peer)).then(|| crate::http::throttle::client_network(peer))
        }),
        rejection_response,
    }
}

/// The contract's error for a request authkeys-http refused.
pub(crate) fn rejection_error(rejection: &authkeys_http::Rejection) -> ApiError {
    use authkeys_http::Rejection;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that wait out these timeouts set them short (hidden `--http-*-timeout-ms`
    /// flags); this holds the real defaults to what docs/api.md ("HTTP limits") promises.
    #[test]
    fn the_default_timeouts_are_the_documented_ones() {
        let docs = include_str!("../../docs/api.md");
        let settings = Settings::default();
        for (bound, value) in [
            (
                "wait for a request to start (idle keep-alive)",
                settings.idle_timeout,
            ),
            ("one whole request, once started", settings.request_timeout),
            (
                "writing a response to a client that does not read",
                WRITE_TIMEOUT,
            ),
        ] {
            let row = format!("| {bound} | {} s |", value.as_secs());
            assert!(docs.contains(&row), "docs/api.md has no row {row:?}");
        }
    }
}
