//! The tiny_http adapter: a fixed pool of worker threads that take requests tiny_http has
//! already read whole within `http::limits`, call the handler (in production `http::handle`)
//! under `catch_unwind`, and write the response. Workers never wait on a client's input.
//! Shutdown unblocks and joins every worker after the requests already received are answered.

use super::limits;
use super::{ApiError, MAX_BODY_BYTES, Request, Response};
use crate::error::StartError;
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the workers call for each request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

pub struct Listener {
    server: Arc<tiny_http::Server>,
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Listener {
    pub fn start(
        listen: &str,
        handler: Arc<Handler>,
        workers: usize,
    ) -> Result<Listener, StartError> {
        let cannot_listen =
            |err: &dyn std::fmt::Display| StartError::new(format!("listening on {listen}: {err}"));
        let server = tiny_http::Server::new(tiny_http::ServerConfig {
            addr: tiny_http::ConfigListenAddr::from_socket_addrs(listen)
                .map_err(|err| cannot_listen(&err))?,
            ssl: None,
            limits: limits::limits(rejection_response),
        })
        .map_err(|err| cannot_listen(&err))?;
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
                thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || serve(&server, &*handler, &stopping))
                    .expect("spawning an HTTP worker thread")
            })
            .collect();
        Ok(Listener {
            server,
            address,
            stopping,
            workers,
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
        let deadline = Instant::now() + limits::REQUEST_TIMEOUT + Duration::from_secs(1);
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
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(server: &tiny_http::Server, handler: &Handler, stopping: &AtomicBool) {
    loop {
        match server.recv() {
            Ok(request) => respond(handler, request),
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(err) => log::warn!("accepting a request failed: {err}"),
        }
    }
}

fn respond(handler: &Handler, mut raw: tiny_http::Request) {
    // Timed only for the debug line: a clock read per request is not free.
    let started = log::log_enabled!(log::Level::Debug).then(Instant::now);
    let method = raw.method().as_str().to_string();
    let mut request = Request::new(&method, raw.url());
    let response = match read_body(&mut raw) {
        Ok(body) => {
            request.body = body;
            request.authorization = header(&raw, "Authorization");
            request.content_type = header(&raw, "Content-Type");
            request.remote_addr = raw.remote_addr().copied();
            guarded(|| handler(&request))
        }
        Err(err) => Response::error(&err),
    };
    let status = response.status;
    if let Err(err) = raw.respond(to_tiny(response)) {
        log::debug!("writing a response failed (client gone?): {err}");
    }
    if let Some(started) = started {
        log::debug!(
            "{method} {} {status} {}µs",
            // A secret pasted into a URL must not reach the log.
            crate::token::redact_secrets(&request.path),
            started.elapsed().as_micros()
        );
    }
}

/// The response tiny_http writes. One whose headers cannot be sent as they are (a CR, LF or
/// other control character in a value, which would let its source inject headers) becomes a
/// 500 instead.
fn to_tiny(response: Response) -> tiny_http::Response<Cursor<Vec<u8>>> {
    let own = response
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()));
    let mut out = tiny_http::Response::from_data(response.body).with_status_code(response.status);
    for (name, value) in own.chain(STANDARD_HEADERS.iter().copied()) {
        let Ok(header) = tiny_header(name, value) else {
            log::error!(
                "a response carried a header that is not a valid field value; answered 500"
            );
            return to_tiny(Response::error(&ApiError::Internal));
        };
        out.add_header(header);
    }
    out
}

/// How a request tiny_http refused (malformed, too large, too slow) is answered: the
/// contract's error shape, like every other error.
fn rejection_response(rejection: &tiny_http::Rejection) -> tiny_http::Response<Cursor<Vec<u8>>> {
    to_tiny(Response::error(&limits::rejection_error(rejection)))
}

/// Headers every response carries: nothing here may be cached or sniffed.
const STANDARD_HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
];

/// The headers nearly every response carries, checked once: building a `tiny_http::Header`
/// validates every byte, and cloning a checked one is several times cheaper (callgrind).
static CHECKED_HEADERS: LazyLock<Vec<tiny_http::Header>> = LazyLock::new(|| {
    STANDARD_HEADERS
        .iter()
        .chain(&[("Content-Type", "application/json")])
        .map(|(name, value)| {
            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                .expect("a constant header is valid")
        })
        .collect()
});

fn tiny_header(name: &str, value: &str) -> Result<tiny_http::Header, ()> {
    let checked = CHECKED_HEADERS
        .iter()
        .find(|h| h.field.as_str().as_str() == name && h.value.as_str() == value);
    match checked {
        Some(header) => Ok(header.clone()),
        None => tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()),
    }
}

/// Takes the body. tiny_http has already read it whole and refused one over `MAX_BODY_BYTES`
/// (see `http::limits`), so this reads from memory; the bound is checked again regardless.
fn read_body(raw: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    raw.as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|err| ApiError::MalformedBody(format!("reading the body failed: {err}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge);
    }
    Ok(body)
}

fn header(raw: &tiny_http::Request, name: &'static str) -> Option<String> {
    raw.headers()
        .iter()
        .find(|header| header.field.equiv(name))
        .map(|header| header.value.as_str().to_string())
}

/// Runs a handler so that a panic (a bug) becomes a 500 and the worker keeps serving.
pub fn guarded(work: impl FnOnce() -> Response) -> Response {
    panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        log::error!("a request handler panicked; answered 500");
        Response::error(&ApiError::Internal)
    })
}
