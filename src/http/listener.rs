//! The authkeys-http adapter: a fixed pool of worker threads that take requests authkeys-http has
//! already read whole within `http::limits`, call the handler (in production `http::handle`)
//! under `catch_unwind`, and write the response. Workers never wait on a client's input.
//! An optional inline handler (in production `http::handle_in_memory`) is tried first on the
//! connection's own thread, for what is answered from memory without a handoff to a worker.
//! Shutdown unblocks and joins every worker after the requests already received are answered.

use super::forwarded::TrustedProxies;
use super::limits::{self, Settings};
use super::{ApiError, MAX_BODY_BYTES, ROUTE_LABELS, Request, Response, routes};
use crate::domain::error::StartError;
use crate::metrics::Metrics;
use std::io::Cursor;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the workers call for each request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// What a connection's own thread calls first for each of its requests: the answer, if it is
/// at hand in memory, or `None` to hand the request to a worker. It must never block (on the
/// database, the network, a lock held across either): every connection has a thread, and
/// only the workers' number bounds what waits.
pub type InlineHandler = dyn Fn(&Request) -> Option<Response> + Send + Sync;

pub struct Listener {
    server: Arc<authkeys_http::Server>,
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// The only strong reference to the inline handler: authkeys-http's connection threads,
    /// which outlive the listener by up to their idle timeout, hold a `Weak` one, so that what
    /// the handler holds (the authority, its store) goes with the listener.
    inline: Option<Arc<InlineHandler>>,
    request_timeout: Duration,
}

impl Listener {
    /// A listener with the default settings, counting its refusals in metrics of its own.
    pub fn start(
        listen: &str,
        handler: Arc<Handler>,
        workers: usize,
    ) -> Result<Listener, StartError> {
        let metrics = Arc::new(Metrics::new(ROUTE_LABELS));
        let settings = Settings::default();
        Listener::start_with(listen, handler, None, workers, &settings, metrics)
    }

    /// A listener with `settings` that tries `inline` first, if given; requests refused before
    /// they reach a handler (malformed, too large, too slow) are counted in `metrics`.
    pub(crate) fn start_with(
        listen: &str,
        handler: Arc<Handler>,
        inline: Option<Arc<InlineHandler>>,
        workers: usize,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Listener, StartError> {
        let cannot_listen = |err: Box<dyn std::error::Error + Send + Sync>| {
            StartError::caused(format!("listening on {listen}"), err)
        };
        let rejection_response = move |rejection: &authkeys_http::Rejection, elapsed: Duration| {
            let response = Response::error(&limits::rejection_error(rejection));
            // The method is not known here (the request line may be what was refused).
            metrics.request(routes::UNMATCHED, "other", response.status, elapsed);
            to_tiny(response)
        };
        let server = authkeys_http::Server::new(authkeys_http::ServerConfig {
            addr: authkeys_http::ConfigListenAddr::from_socket_addrs(listen)
                .map_err(|err| cannot_listen(err.into()))?,
            limits: limits::limits(settings, Arc::new(rejection_response)),
            inline: inline.as_ref().map(|inline| {
                let (inline, trusted) = (Arc::downgrade(inline), settings.trusted_proxies.clone());
                Arc::new(move |raw| match inline.upgrade() {
                    Some(inline) => answer_inline(&*inline, &trusted, raw),
                    None => Some(raw),
                }) as Arc<authkeys_http::InlineHandler>
            }),
        })
        .map_err(cannot_listen)?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| StartError::new(format!("{listen} is not an IP address")))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let workers = (0..workers.max(1))
            .map(|n| {
                let server = Arc::clone(&server);
                let handler = Arc::clone(&handler);
                let stopping = Arc::clone(&stopping);
                let trusted = settings.trusted_proxies.clone();
                thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || serve(&server, &*handler, &trusted, &stopping))
                    .expect("spawning an HTTP worker thread")
            })
            .collect();
        Ok(Listener {
            server,
            address,
            stopping,
            workers,
            inline,
            request_timeout: settings.request_timeout,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, answers what has already been received, then stops every worker and
    /// joins it.
    pub fn shutdown(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Stopping the accept thread first makes new connections be refused instead of
        // queued behind the workers' exit (they would be answered with an empty 500).
        self.server.stop_accepting();
        // Requests that have begun arriving are in flight too: the workers keep answering
        // until every one is answered, or until the deadline any request has anyway.
        let deadline = Instant::now() + self.request_timeout + Duration::from_secs(1);
        while self.server.requests_in_progress() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        // Each unblock is queued behind the requests already received and wakes one worker.
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("an HTTP worker thread panicked");
            }
        }
        self.inline = None;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    server: &authkeys_http::Server,
    handler: &Handler,
    trusted: &TrustedProxies,
    stopping: &AtomicBool,
) {
    loop {
        match server.recv() {
            Ok(request) => respond(handler, trusted, request),
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(err) => log::warn!("accepting a request failed: {err}"),
        }
    }
}

fn respond(handler: &Handler, trusted: &TrustedProxies, mut raw: authkeys_http::Request) {
    // Timed only for the debug line: a clock read per request is not free.
    let started = log::log_enabled!(log::Level::Debug).then(Instant::now);
    // What the connection's thread read, and worked out, before it gave the request back.
    let handed_over = raw
        .take_handed_over()
        .and_then(|state| state.downcast::<Request>().ok());
    let (request, response) =
        match handed_over.map_or_else(|| request_of(trusted, &raw), |r| Ok(*r)) {
            Ok(request) => {
                let response = guarded(|| handler(&request));
                (request, response)
            }
            Err(err) => (
                Request::new(raw.method().as_str(), raw.url()),
                Response::error(&err),
            ),
        };
    write(raw, &request, response, started);
}

/// Answers `raw` with `inline` if it can; otherwise gives it back for a worker, with the request
/// as read here (and what `inline` worked out from it, such as the bearer token's hash), so the
/// worker does not read it again. A request that cannot be read (a bad body, two
/// `Authorization` headers) goes to a worker too, which answers its error.
fn answer_inline(
    inline: &InlineHandler,
    trusted: &TrustedProxies,
    mut raw: authkeys_http::Request,
) -> Option<authkeys_http::Request> {
    let started = log::log_enabled!(log::Level::Debug).then(Instant::now);
    let Ok(request) = request_of(trusted, &raw) else {
        return Some(raw);
    };
    match guarded(|| inline(&request)) {
        None => {
            raw.hand_over(Box::new(request));
            Some(raw)
        }
        Some(response) => {
            write(raw, &request, response, started);
            None
        }
    }
}

/// The request as `http` sees it: method, target, the headers it reads, the body and the
/// client's address. Leaves `raw` as it was, so that a worker can still answer it.
fn request_of(trusted: &TrustedProxies, raw: &authkeys_http::Request) -> Result<Request, ApiError> {
    let mut request = Request::new(raw.method().as_str(), raw.url());
    request.body = body(raw)?;
    request.authorization = authorization(raw)?;
    request.content_type = header(raw, "Content-Type");
    request.github_key_identifier = header(raw, "Github-Public-Key-Identifier");
    request.github_signature = header(raw, "Github-Public-Key-Signature");
    request.remote_addr = client_address(trusted, raw);
    Ok(request)
}

/// Writes `response` to `request`'s connection, and the access line at debug level.
fn write(
    raw: authkeys_http::Request,
    request: &Request,
    response: Response,
    started: Option<Instant>,
) {
    let status = response.status;
    if let Err(err) = raw.respond(to_tiny(response)) {
        log::debug!("writing a response failed (client gone?): {err}");
    }
    if let Some(started) = started {
        log::debug!(
            "{} {} {status} {}µs",
            request.method,
            // A secret pasted into a URL must not reach the log, whatever its shape or encoding.
            crate::domain::token::redact_path(&request.path),
            started.elapsed().as_micros()
        );
    }
}

/// The response authkeys-http writes. One whose headers cannot be sent as they are (a CR, LF or
/// other control character in a value, which would let its source inject headers) becomes a
/// 500 instead.
fn to_tiny(response: Response) -> authkeys_http::Response<Cursor<Vec<u8>>> {
    let Response {
        status,
        headers,
        body,
    } = response;
    let mut out = authkeys_http::Response::from_data(body).with_status_code(status);
    for (name, value) in headers {
        let Ok(header) = tiny_header(name, value) else {
            log::error!(
                "a response carried a header that is not a valid field value; answered 500"
            );
            return to_tiny(Response::error(&ApiError::Internal));
        };
        out.add_header(header);
    }
    for header in &CHECKED_HEADERS[..STANDARD_HEADERS.len()] {
        out.add_header(header.clone());
    }
    out
}

/// Headers every response carries: nothing here may be cached or sniffed.
const STANDARD_HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
];

/// The headers nearly every response carries, checked once: building an `authkeys_http::Header`
/// validates every byte, and cloning a checked one is several times cheaper (callgrind). The
/// standard headers come first.
static CHECKED_HEADERS: LazyLock<Vec<authkeys_http::Header>> = LazyLock::new(|| {
    STANDARD_HEADERS
        .iter()
        .chain(&[("Content-Type", "application/json")])
        .map(|(name, value)| {
            authkeys_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                .expect("a constant header is valid")
        })
        .collect()
});

/// The header, checked; its value's buffer becomes the header's, not copied.
fn tiny_header(name: &str, value: String) -> Result<authkeys_http::Header, ()> {
    let checked = CHECKED_HEADERS
        .iter()
        .find(|h| h.field.as_str().as_str() == name && h.value.as_str() == value);
    match checked {
        Some(header) => Ok(header.clone()),
        None => authkeys_http::Header::from_bytes(name.as_bytes(), value.into_bytes()),
    }
}

/// The body. authkeys-http has already read it whole and refused one over `MAX_BODY_BYTES`
/// (see `http::limits`); the bound is checked again regardless.
fn body(raw: &authkeys_http::Request) -> Result<Vec<u8>, ApiError> {
    match raw.body() {
        body if body.len() > MAX_BODY_BYTES => Err(ApiError::BodyTooLarge),
        body => Ok(body.to_vec()),
    }
}

/// The client's address: the peer's, or the one a trusted proxy forwarded (`forwarded`). A
/// forwarded address has no port (0).
fn client_address(trusted: &TrustedProxies, raw: &authkeys_http::Request) -> Option<SocketAddr> {
    let peer = raw.remote_addr()?;
    let forwarded_for = raw
        .headers()
        .iter()
        .filter(|header| header.field.equiv("X-Forwarded-For"))
        .map(|header| header.value.as_str());
    let client = trusted.client_address(peer.ip(), forwarded_for);
    Some(if client == peer.ip() {
        *peer
    } else {
        SocketAddr::new(client, 0)
    })
}

/// The one `Authorization` header, if any. Two are refused rather than one picked: a proxy in
/// front may check one and we another.
fn authorization(raw: &authkeys_http::Request) -> Result<Option<String>, ApiError> {
    let mut values = raw
        .headers()
        .iter()
        .filter(|header| header.field.equiv("Authorization"));
    let first = values
        .next()
        .map(|header| header.value.as_str().to_string());
    match values.next() {
        None => Ok(first),
        Some(_) => Err(ApiError::MalformedRequest(
            "more than one Authorization header",
        )),
    }
}

fn header(raw: &authkeys_http::Request, name: &'static str) -> Option<String> {
    raw.headers()
        .iter()
        .find(|header| header.field.equiv(name))
        .map(|header| header.value.as_str().to_string())
}

/// Runs a handler so that a panic (a bug) becomes a 500 and the thread keeps serving. `T` is
/// `Response`, or the inline handler's `Option<Response>`.
fn guarded<T: From<Response>>(work: impl FnOnce() -> T) -> T {
    panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        log::error!("a request handler panicked; answered 500");
        T::from(Response::error(&ApiError::Internal))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A listener on 127.0.0.1:0 with one `worker` and `inline` tried first.
    fn one_worker_listener(
        worker: impl Fn(&Request) -> Response + Send + Sync + 'static,
        inline: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    ) -> Listener {
        let metrics = Arc::new(Metrics::new(ROUTE_LABELS));
        let settings = Settings::default();
        Listener::start_with(
            "127.0.0.1:0",
            Arc::new(worker),
            Some(Arc::new(inline)),
            1,
            &settings,
            metrics,
        )
        .expect("listening")
    }

    /// Sends `request` and reads the first 12 bytes of the answer (`HTTP/1.1 NNN`).
    fn status_line(stream: &mut TcpStream, request: &str) -> [u8; 12] {
        stream.write_all(request.as_bytes()).expect("sending");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).expect("an answer");
        answer
    }

    /// The inline handler, and what it holds (in production the authority and its store), goes
    /// with the listener, though authkeys-http's connection threads live on for kept-alive
    /// connections.
    #[test]
    fn what_the_inline_handler_holds_is_released_with_the_listener() {
        let held = Arc::new(());
        let inline = {
            let held = Arc::clone(&held);
            move |_: &Request| {
                let _ = &held;
                Some(Response::no_content())
            }
        };
        let worker = |_: &Request| Response::error(&ApiError::Internal);
        let listener = one_worker_listener(worker, inline);
        let mut kept_alive = TcpStream::connect(listener.address()).expect("connecting");
        let answer = status_line(&mut kept_alive, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(&answer, b"HTTP/1.1 204", "answered inline");
        drop(listener);
        assert_eq!(Arc::strong_count(&held), 1, "still held after the listener");
    }

    /// A request the inline handler gives back reaches the worker as the inline handler read
    /// it, with what it worked out: the bearer token is hashed once.
    #[test]
    fn a_request_given_back_reaches_the_worker_with_what_was_worked_out() {
        let token = crate::domain::token::generate(crate::domain::token::TokenKind::Session);
        let inline = |request: &Request| {
            assert!(!request.session_hash_worked_out(), "a fresh request");
            request.session_hash().expect("a session token");
            None
        };
        let worker = |request: &Request| match request.session_hash_worked_out() {
            true => Response::no_content(),
            false => Response::error(&ApiError::Internal),
        };
        let listener = one_worker_listener(worker, inline);
        let mut stream = TcpStream::connect(listener.address()).expect("connecting");
        let head = format!(
            "GET /v1/auth/whoami HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n",
            token.expose()
        );
        let answer = status_line(&mut stream, &head);
        assert_eq!(
            &answer, b"HTTP/1.1 204",
            "the worker saw the hash worked out"
        );
    }
}
