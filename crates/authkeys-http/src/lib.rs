//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = authkeys_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = authkeys_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = authkeys_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = authkeys_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = authkeys_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = authkeys_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// authkeys: upstream's code predates these lints. Rewriting it to satisfy them would churn
// vendored lines authkeys does not otherwise change, and blur `git diff` against upstream.
#![allow(
    clippy::doc_overindented_list_items, // upstream's doc list style (response.rs)
    clippy::io_other_error, // `IoError::new(Other, ..)` predates `io::Error::other`
    clippy::needless_borrow, // upstream's unit tests pass `&"name"` to `equiv`
    clippy::never_loop, // `ClientConnection::next` keeps upstream's loop shape
    clippy::unbuffered_bytes, // `read_next_line` reads bytes from a `BufReader`: buffered
    clippy::unnecessary_map_or, // `map_or(true, ..)` predates `Option::is_none_or`
)]

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use client::{ClientConnection, NextRequest};
use connection::Connection;
use util::{ConnectionTable, MessagesQueue, Refusal};

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use limits::{empty_rejection_response, Limits, Rejection, RejectionResponse};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod limits;
mod request;
mod response;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // authkeys patch: requests between their first byte and their answer.
    in_progress: Arc<AtomicUsize>,
}

// authkeys patch: a `Request` passes through the queue once; boxing it to keep the rare error
// variant small would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)] // authkeys patch: silences a newer compiler's warning
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// authkeys patch: the bounds enforced on every connection.
    pub limits: Limits,

    /// authkeys patch: a first answer on the connection's own thread (see `InlineHandler`);
    /// `None` hands every request to `recv()`.
    pub inline: Option<Arc<InlineHandler>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("limits", &self.limits)
            .field("inline", &self.inline.is_some())
            .finish()
    }
}

/// authkeys patch: called on the connection's own thread with each request, read whole within
/// the limits, before it is queued for `recv()`. It answers the request (`respond`) and returns
/// `None`, or returns it untouched to have it queued. Answering here saves handing the request
/// to another thread and waking it: for what can be answered from memory at once. Anything that
/// may block (a database, the network) belongs to the threads calling `recv()`, so that their
/// number bounds it.
pub type InlineHandler = dyn Fn(Request) -> Option<Request> + Send + Sync;

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            limits: Limits::default(),
            inline: None,
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            limits: Limits::default(),
            inline: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::start(listener, config.limits, config.inline)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, Limits::default())
    }

    /// authkeys patch: `from_listener` with explicit limits.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), limits, None)
    }

    fn start(
        listener: Listener,
        limits: Limits,
        inline: Option<Arc<InlineHandler>>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let limits = Arc::new(limits);
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let in_progress = Arc::new(AtomicUsize::new(0));
        let inside_in_progress = Arc::clone(&in_progress);
        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            // authkeys patch: at most `max_connections` connections at once, at most
            // `max_connections_per_client` from one client, idle ones closed first to make
            // room (see `ConnectionTable`).
            let table =
                ConnectionTable::new(limits.max_connections, limits.max_connections_per_client);
            let mut accept_failures = 0u32;

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                let (sock, slot) = match server.accept() {
                    Ok((sock, peer)) => {
                        match admit(&table, &limits, &inside_close_trigger, sock, peer) {
                            Ok(Some(admitted)) => admitted,
                            Ok(None) => continue,
                            // Out of descriptors after the accept: the same wait as a
                            // failed accept, not one warning per queued connection.
                            Err(e) => {
                                accept_failed(e, &mut accept_failures);
                                continue;
                            }
                        }
                    }
                    // authkeys patch: upstream pushed the error to `recv()` and ended the accept
                    // loop, so one EMFILE stopped the server accepting for good.
                    Err(e) => {
                        accept_failed(e, &mut accept_failures);
                        continue;
                    }
                };
                let new_client = {
                    use util::RefinedTcpStream;
                    // authkeys patch: no response write blocks forever (reads are bounded
                    // by the connection's deadline, see ClientConnection).
                    sock.set_write_timeout(Some(limits.write_timeout)).ok();
                    // authkeys patch: responses go out as soon as they are written. With
                    // Nagle's algorithm, a response larger than the 1 KiB write buffer left
                    // its last segment waiting for the client's delayed ACK: 45 ms per
                    // request instead of 1 (measured on a key listing).
                    sock.set_nodelay(true).ok();
                    let (read_closable, write_closable) = RefinedTcpStream::new(sock)
                        .map_err(|e| accept_failed(e, &mut accept_failures))
                        .ok()
                        .unzip();
                    match (read_closable, write_closable) {
                        (Some(read), Some(write)) => {
                            if accept_failures > 0 {
                                log::info!(
                                    "accepting connections again after {} failed attempts",
                                    accept_failures
                                );
                                accept_failures = 0;
                            }
                            ClientConnection::new(
                                write,
                                read,
                                Arc::clone(&limits),
                                Arc::clone(&inside_in_progress),
                                slot,
                            )
                        }
                        _ => continue,
                    }
                };

                let messages = inside_messages.clone();
                let close = inside_close_trigger.clone();
                let inline = inline.clone();
                let mut client = Some(new_client);
                tasks_pool.spawn(Box::new(move || {
                    if let Some(client) = client.take() {
                        serve_connection(client, &messages, inline.as_deref(), &close);
                    }
                }));
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            in_progress,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }

    /// authkeys patch: how many requests have begun arriving (their first byte was read) and
    /// are not answered yet. A graceful shutdown waits for this to reach 0 before it stops
    /// answering: those requests are in flight, even if they are still being read.
    pub fn requests_in_progress(&self) -> usize {
        self.in_progress.load(Relaxed)
    }

    /// authkeys patch: stops accepting connections now, without waiting for the `Server` to be
    /// dropped, so that a graceful shutdown can refuse new connections while it answers the
    /// requests already received. The accept thread ends and closes the listening socket.
    pub fn stop_accepting(&self) {
        if self.close.swap(true, Relaxed) {
            return;
        }
        self.wake_accept_thread();
    }

    /// Connects briefly to ourselves so that an accept thread blocked in `accept` sees the
    /// close flag.
    fn wake_accept_thread(&self) {
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// authkeys patch: gives an accepted connection its place in `table`. A connection over its
/// client's share is closed at once, without a response (reading its request first would let
/// it hold a thread). When every place is taken by a connection in the middle of a request,
/// waits for one to end, as the accept loop did before per-client shares (the rest wait in the
/// listen backlog). `None`: the connection was refused, or the server is closing. An error:
/// its socket could not be duplicated (out of descriptors, say); the connection is closed.
fn admit(
    table: &Arc<ConnectionTable>,
    limits: &Limits,
    close: &AtomicBool,
    sock: Connection,
    peer: Option<std::net::SocketAddr>,
) -> Result<Option<(Connection, util::Slot)>, IoError> {
    let client = peer.and_then(|peer| (limits.connection_client)(peer.ip()));
    let mut handle = sock.try_clone().map_err(|err| {
        IoError::new(
            err.kind(),
            format!("duplicating its socket failed: {}", err),
        )
    })?;
    loop {
        match table.admit(client, handle) {
            Ok(slot) => return Ok(Some((sock, slot))),
            Err((Refusal::OverShare, _)) => {
                log::debug!(
                    "refused a connection from {:?}: over its client's share",
                    peer
                );
                sock.shutdown(Shutdown::Both).ok();
                return Ok(None);
            }
            Err((Refusal::Full, returned)) if !close.load(Relaxed) => {
                handle = returned;
                table.wait_for_room(Duration::from_millis(100));
            }
            Err((Refusal::Full, _)) => return Ok(None),
        }
    }
}

/// authkeys patch: how long the accept loop pauses after a failed accept (out of file
/// descriptors, say) before it tries again: long enough not to spin, short enough to recover
/// promptly once descriptors are free.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// authkeys patch: logs a failed accept (once per run of failures) and pauses before the next.
fn accept_failed(err: IoError, failures: &mut u32) {
    if matches!(
        err.kind(),
        IoErrorKind::ConnectionAborted | IoErrorKind::Interrupted
    ) {
        return; // that one client gave up: nothing to wait for
    }
    if *failures == 0 {
        log::error!(
            "accepting a connection failed: {}; retrying every {} ms",
            err,
            ACCEPT_RETRY.as_millis()
        );
    }
    *failures += 1;
    thread::sleep(ACCEPT_RETRY);
}

/// authkeys patch: hands a connection's requests to `recv()` one at a time, reading the next
/// only once the previous one is answered (upstream did this for HTTPS only). A pipelining
/// client therefore cannot queue requests without bound, and at most one request per
/// connection waits for the application. Gives up waiting once the server is closing.
///
/// While the application answers, this thread waits for the client (`wait_for_next`), not
/// for the answer: a client that waits for its response sends nothing before the answer has
/// been written, so by the time its next request arrives the answer's notice is already
/// there, and the worker had nobody to wake. Waiting for the answer first cost a sleep and a
/// wake-up of this thread per request. The idle timeout still counts from the answer (the
/// notice carries its time): a wait that timed out while the answer was pending goes on for
/// what is left.
///
/// One channel per connection carries every "answered" notice (each request sends exactly
/// one, when answered or dropped): a channel per request cost an allocation of its first
/// block on every request.
///
/// A request `inline` answers is answered by this thread and not queued; its notice is then
/// already there, and the next wait finds it.
fn serve_connection(
    mut client: ClientConnection,
    messages: &MessagesQueue<Message>,
    inline: Option<&InlineHandler>,
    close: &AtomicBool,
) {
    let (sender, answered) = mpsc::channel();
    // A request has been handed to the application and its notice not yet received.
    let mut pending = false;
    let mut idle_since = Instant::now();
    loop {
        let next = client.wait_for_next(idle_since, pending);
        if pending {
            let Some(answered_at) = wait_for_answer(&answered, close) else {
                return;
            };
            pending = false;
            idle_since = answered_at;
            if next == NextRequest::TimedOut {
                continue;
            }
        }
        if next != NextRequest::Arrived || close.load(Relaxed) {
            return;
        }
        let Some(rq) = client.next() else { return };
        let rq = rq.with_notify_sender(sender.clone());
        let unanswered = match inline {
            Some(answer) => answer(rq),
            None => Some(rq),
        };
        if let Some(rq) = unanswered {
            messages.push(rq.into());
        }
        pending = true;
    }
}

/// authkeys patch: waits for the application's answer to a connection's request; when it
/// was answered, or `None` if the server started closing first.
fn wait_for_answer(answered: &mpsc::Receiver<Instant>, close: &AtomicBool) -> Option<Instant> {
    loop {
        match answered.recv_timeout(Duration::from_millis(200)) {
            Ok(at) => return Some(at),
            Err(RecvTimeoutError::Disconnected) => return Some(Instant::now()),
            Err(RecvTimeoutError::Timeout) if close.load(Relaxed) => return None,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
