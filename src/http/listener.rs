//! The tiny_http adapter: a fixed pool of worker threads that read a bounded body, call the
//! handler (in production `http::handle`) under `catch_unwind`, and write the response. Shutdown unblocks and joins every
//! worker after the requests already received are answered.

use super::{ApiError, MAX_BODY_BYTES, Request, Response};
use crate::error::StartError;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// What the workers call for each request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

pub struct Listener {
    server: Arc<tiny_http::Server>,
    /// The listening socket tiny_http accepts on, kept so shutdown can close it first.
    socket: TcpListener,
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
        let fail =
            |err: &dyn std::fmt::Display| StartError::new(format!("listening on {listen}: {err}"));
        let socket = TcpListener::bind(listen).map_err(|err| fail(&err))?;
        let address = socket.local_addr().map_err(|err| fail(&err))?;
        let accepting = socket.try_clone().map_err(|err| fail(&err))?;
        let server = tiny_http::Server::from_listener(accepting, None).map_err(|err| fail(&err))?;
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
            socket,
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
        // Closing the listening socket first makes new connections be refused instead of
        // queued behind the workers' exit (tiny_http would answer those with an empty 500).
        // Its accept thread sees the error and ends.
        if let Err(err) = socket2::SockRef::from(&self.socket).shutdown(Shutdown::Both) {
            log::warn!("closing the listening socket: {err}");
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
    let started = Instant::now();
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
    let mut out = tiny_http::Response::from_data(response.body).with_status_code(status);
    let own = response
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()));
    for (name, value) in own.chain(STANDARD_HEADERS.iter().copied()) {
        let header = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
            .expect("response headers are built from fixed names and ASCII values");
        out.add_header(header);
    }
    if let Err(err) = raw.respond(out) {
        log::debug!("writing a response failed (client gone?): {err}");
    }
    log::debug!(
        "{method} {} {status} {}µs",
        // A secret pasted into a URL must not reach the log.
        crate::token::redact_secrets(&request.path),
        started.elapsed().as_micros()
    );
}

/// Headers every response carries: nothing here may be cached or sniffed.
const STANDARD_HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
];

/// Reads the body, refusing one declared or found to be larger than `MAX_BODY_BYTES`
/// without reading past the limit.
fn read_body(raw: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    if raw
        .body_length()
        .is_some_and(|length| length > MAX_BODY_BYTES)
    {
        return Err(ApiError::BodyTooLarge);
    }
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
