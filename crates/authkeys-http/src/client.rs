use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::limits::{Limits, Rejection};
use crate::request::InProgress;
use crate::util::{Deadline, RefinedTcpStream, SharedWriter, Slot};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // authkeys patch: upstream passed the reader and the writer from request to request
    // through a channel each (`SequentialReader`, `SequentialWriter`), so that pipelined
    // requests were read and answered in order: two channels per request. A request is now
    // read whole here (body included) and a connection has at most one request in flight
    // (`serve_connection`), so the connection keeps its reader and shares its writer.
    reader: BufReader<RefinedTcpStream>,
    writer: SharedWriter<BufWriter<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // authkeys patch: the bounds enforced on this connection, and the read deadline that
    // `read` moves as a request progresses.
    limits: Arc<Limits>,
    deadline: Deadline,

    // authkeys patch: the server's count of requests in progress (see `InProgress`).
    in_progress: Arc<AtomicUsize>,

    // authkeys patch: this connection's place among those served (see `ConnectionTable`);
    // dropped with the connection. `marked_idle` says whether the table was told the
    // connection waits for a request, so that it may be closed to make room.
    slot: Slot,
    marked_idle: bool,

    // authkeys patch: when the request being read started, for `rejection_response`.
    request_started: Instant,
}

/// authkeys patch: how long, and how much, a refused connection is drained before closing, and
/// the pause that shows the client has stopped sending.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_QUIET: Duration = Duration::from_millis(200);

/// authkeys patch: while the previous answer is still being written, how long
/// `wait_for_next` looks for a next request before it waits for the answer instead. The
/// connection is busy until answered, so it is marked idle (and may be closed to make room)
/// only once the answer is out; a client that sends its next request as soon as it has read an
/// answer (the common case, and every benchmark) never waits this long.
const ANSWER_GRACE: Duration = Duration::from_millis(50);

/// authkeys patch: what `wait_for_next` saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NextRequest {
    /// The next request has begun arriving.
    Arrived,
    /// The connection stayed idle for `idle_timeout`.
    TimedOut,
    /// The connection ended, failed, or will carry no more requests.
    Closed,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// authkeys patch: every refusal that gets a response, then a closed connection
    /// (upstream's WrongRequestLine, WrongHeader and ExpectationFailed are among them).
    Rejected(Rejection),
    /// authkeys patch: the connection ended, or stayed idle past `idle_timeout`, before a
    /// request started: it is closed without a response.
    Closed,
    ReadIoError(IoError),
}

impl From<Rejection> for ReadError {
    fn from(rejection: Rejection) -> ReadError {
        ReadError::Rejected(rejection)
    }
}

/// authkeys patch: the write buffer of each connection (see `ClientConnection::new`).
pub(crate) const RESPONSE_BUFFER: usize = 8 * 1024;

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Arc<Limits>,
        in_progress: Arc<AtomicUsize>,
        slot: Slot,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let deadline = Deadline::default();
        read_socket.set_deadline(deadline.clone());

        ClientConnection {
            reader: BufReader::with_capacity(1024, read_socket),
            // authkeys patch: a response's head and a body of up to a few KiB (a whoami with
            // tags and metadata) leave in one write; with upstream's 1 KiB the head was
            // flushed first and the body written on its own, two syscalls per response.
            writer: SharedWriter::new(BufWriter::with_capacity(RESPONSE_BUFFER, write_socket)),
            remote_addr,
            no_more_requests: false,
            limits,
            deadline,
            in_progress,
            slot,
            marked_idle: false,
            request_started: Instant::now(),
        }
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// authkeys patch: upstream grew the line without limit. A line longer than `max_line`
    /// (or than what is left of `max_head`, counted in `head_left`) is refused with
    /// `too_long`, a line that is not printable ASCII with 400.
    fn read_next_line(
        &mut self,
        head_left: &mut usize,
        too_long: Rejection,
    ) -> Result<AsciiString, ReadError> {
        let limit = self.limits.max_line.min(*head_left);
        let mut buf: Vec<u8> = Vec::new();

        // authkeys patch: upstream read the line one byte at a time through `Read::bytes`
        // (a call through two readers per byte); this takes what the buffer holds up to the
        // next LF at once. A line ends at CR LF; a lone LF stays in the line (and is refused
        // below, as a control character).
        loop {
            let available = self.reader.fill_buf().map_err(ReadError::ReadIoError)?;
            if available.is_empty() {
                return Err(ReadError::ReadIoError(IoError::new(
                    ErrorKind::ConnectionAborted,
                    "Unexpected EOF",
                )));
            }
            let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(lf) => (&available[..=lf], true),
                None => (available, false),
            };
            buf.extend_from_slice(taken);
            let used = taken.len();
            self.reader.consume(used);

            if complete && buf.len() >= 2 && buf[buf.len() - 2] == b'\r' {
                buf.truncate(buf.len() - 2); // removing the CR LF
                if buf.len() > limit {
                    return Err(too_long.into());
                }
                *head_left = head_left.saturating_sub(buf.len() + 2);
                // Control characters (a lone CR or LF, NUL, ...) in a line are refused, so
                // that nothing the client sends can end up splitting a header downstream.
                if buf.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
                    return Err(
                        Rejection::Malformed("a control character in the request head").into(),
                    );
                }
                return AsciiString::from_ascii(buf)
                    .map_err(|_| Rejection::Malformed("the request head is not ASCII").into());
            }
            // (+1: the line's CR may be in `buf` until its LF arrives)
            if buf.len() > limit + 1 {
                return Err(too_long.into());
            }
        }
    }

    /// authkeys patch: waits up to `idle_timeout` until the next request has begun arriving,
    /// without reading it: its first bytes are only buffered (at most the reader's 1 KiB).
    /// `serve_connection` waits here, for the client, while the application answers the
    /// previous request, and only then (once it is answered) reads the request.
    /// The idle timeout counts from `idle_since`. While `answer_pending`, the connection is
    /// busy: it looks only `ANSWER_GRACE` ahead (then `TimedOut`), and is marked idle in the
    /// connection table only once nothing is pending.
    pub(crate) fn wait_for_next(
        &mut self,
        idle_since: Instant,
        answer_pending: bool,
    ) -> NextRequest {
        if self.no_more_requests {
            return NextRequest::Closed;
        }
        let idle_left = self
            .limits
            .idle_timeout
            .saturating_sub(idle_since.elapsed());
        if answer_pending {
            self.deadline.set(idle_left.min(ANSWER_GRACE));
        } else {
            if !self.marked_idle {
                self.slot.idle();
                self.marked_idle = true;
            }
            self.deadline.set(idle_left);
        }
        match self.reader.fill_buf() {
            Ok(buffered) if !buffered.is_empty() => NextRequest::Arrived,
            Err(err) if err.kind() == ErrorKind::TimedOut => NextRequest::TimedOut,
            _ => NextRequest::Closed,
        }
    }

    /// authkeys patch: waits up to `idle_timeout` for the first byte of the next request,
    /// then gives the whole request `request_timeout`. `Closed` when the connection closed,
    /// stayed idle, or was closed to make room while idle: there is nobody to answer.
    fn wait_for_request(&mut self) -> Result<u8, ReadError> {
        self.deadline.set(self.limits.idle_timeout);
        let mut first = [0u8];
        match self.reader.read(&mut first) {
            // A connection marked idle may have been closed to make room just as its request
            // arrived (`busy` says so); one never marked idle cannot have been.
            Ok(1) if !std::mem::take(&mut self.marked_idle) || self.slot.busy() => {
                self.request_started = Instant::now();
                self.deadline.set(self.limits.request_timeout);
                Ok(first[0])
            }
            _ => Err(ReadError::Closed),
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let first_byte = self.wait_for_request()?;
        // authkeys patch: from its first byte, the request counts as in progress until it is
        // answered (the guard travels in the `Request`) or fails here (the guard drops).
        let in_progress = InProgress::start(&self.in_progress);
        let mut head_left = self.limits.max_head;
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let rest = self.read_next_line(&mut head_left, Rejection::RequestLineTooLong)?;
                let mut line = String::with_capacity(rest.len() + 1);
                line.push(char::from(first_byte));
                line.push_str(rest.as_str());
                if !first_byte.is_ascii() || first_byte.is_ascii_control() {
                    return Err(Rejection::Malformed("a malformed request line").into());
                }

                let (method, path, version) = parse_request_line(
                    line.trim(), // TODO: remove this conversion
                )?;
                // authkeys patch: checked here, before the request owns this connection's
                // next writer (upstream checked later and deadlocked writing its 505).
                if version > (1, 1) {
                    return Err(Rejection::VersionNotSupported.into());
                }
                (method, path, version)
            };

            // getting all headers
            let headers = {
                let mut headers: Vec<Header> = Vec::new();
                loop {
                    let line = self.read_next_line(&mut head_left, Rejection::HeadersTooLarge)?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() == self.limits.max_headers {
                        return Err(Rejection::HeadersTooLarge.into());
                    }
                    // authkeys patch: upstream trimmed the line, so an obsolete folded
                    // continuation (" Content-Length: 5") became a header of its own.
                    if line.as_str().starts_with([' ', '\t']) {
                        return Err(Rejection::Malformed("a folded header line").into());
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(Rejection::Malformed("a malformed header").into()),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the request, its body read whole from this connection's reader
        let request = crate::request::new_request(
            method,
            path,
            version,
            headers,
            *self.remote_addr.as_ref().unwrap(),
            &mut self.reader,
            self.writer.clone(),
            &self.limits,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::Rejected(rejection) => {
                    ReadError::Rejected(rejection)
                }
            }
        })?;

        // return the request
        Ok(request.with_in_progress(in_progress))
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            // authkeys patch: every refusal is answered with `limits.rejection_response`
            // and closes the connection, since where the next request would start is unknown
            // (upstream answered empty 400/408/417 bodies, and 505 on an open connection).
            let rq = match self.read() {
                Err(ReadError::Rejected(rejection)) => {
                    self.reject(&rejection);
                    return None;
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    self.reject(&Rejection::Timeout);
                    return None;
                }

                Err(ReadError::ReadIoError(_)) | Err(ReadError::Closed) => return None,

                Ok(rq) => rq,
            };

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

impl ClientConnection {
    /// authkeys patch: answers a refused request and marks the connection for closing.
    fn reject(&mut self, rejection: &Rejection) {
        self.no_more_requests = true;
        {
            let mut writer = self.writer.clone();
            let response =
                (self.limits.rejection_response)(rejection, self.request_started.elapsed())
                    .with_connection_close();
            response
                .raw_print(&mut writer, HTTPVersion(1, 1), &[], false, None)
                .ok();
            // Sent now, not when the connection is dropped after lingering.
            std::io::Write::flush(&mut writer).ok();
        }
        self.linger();
    }

    /// authkeys patch: a lingering close. Closing a socket that still has unread input makes
    /// the kernel send a reset, which can destroy the response before the client has read it:
    /// a client still sending a refused body would see "broken pipe" instead of the 413. So
    /// what the client is still sending is read and discarded, into a fixed buffer, until it
    /// pauses for `LINGER_QUIET`, or `LINGER_BYTES` or `LINGER_TIME` are reached.
    fn linger(&mut self) {
        let started = Instant::now();
        let mut discard = [0u8; 8192];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            let left = LINGER_TIME.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            self.deadline.set(left.min(LINGER_QUIET));
            match self.reader.read(&mut discard) {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(Rejection::Malformed("a malformed request line").into()),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::Rejected(Rejection::Malformed(
            "a malformed request line",
        )))
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }

    /// A writer that counts the writes reaching it (each would be a `send` on the socket).
    #[derive(Default)]
    struct CountedWrites {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl std::io::Write for CountedWrites {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Row `RESPONSE_BUFFER`: a response with a 4 KiB body (a whoami with tags and 1 KiB of
    /// metadata is about 1.5 KiB) reaches the socket in one write, head and body together.
    /// With upstream's 1 KiB buffer it took two.
    #[test]
    fn a_response_of_a_few_kib_leaves_in_one_write() {
        let send = |capacity: usize| {
            let mut writer = std::io::BufWriter::with_capacity(capacity, CountedWrites::default());
            Response::from_data(vec![b'x'; 4096])
                .raw_print(
                    &mut writer,
                    crate::common::HTTPVersion(1, 1),
                    &[],
                    false,
                    None,
                )
                .unwrap();
            writer.flush().unwrap();
            let sent = writer.into_inner().map_err(|_| ()).unwrap();
            assert!(sent.bytes.ends_with(&[b'x'; 4096]));
            sent.writes
        };
        assert_eq!(send(super::RESPONSE_BUFFER), 1);
        assert_eq!(send(1024), 2, "upstream's buffer, for contrast");
    }

    // authkeys patch: the socket's read timeout is set lazily (see `RefinedTcpStream::read`),
    // so a read may wake before its deadline; these hold the deadlines to what they were.

    use crate::{Limits, Response, Server};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    const IDLE: Duration = Duration::from_millis(1500);
    const REQUEST: Duration = Duration::from_millis(1000);

    /// A server answering every request with `ok`, under short deadlines.
    fn server() -> TcpStream {
        slow_server(Duration::ZERO)
    }

    /// A server answering every request with `ok` after `delay`, under short deadlines.
    fn slow_server(delay: Duration) -> TcpStream {
        answering_after(move |_| delay)
    }

    /// A server answering request `n` (from 0) with `ok` after `delay(n)`, under short
    /// deadlines.
    fn answering_after(delay: impl Fn(usize) -> Duration + Send + 'static) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            idle_timeout: IDLE,
            request_timeout: REQUEST,
            ..Limits::default()
        };
        let server = Server::from_listener_with_limits(listener, limits).unwrap();
        std::thread::spawn(move || {
            for (n, request) in server.incoming_requests().enumerate() {
                std::thread::sleep(delay(n));
                let _ = request.respond(Response::from_string("ok"));
            }
        });
        TcpStream::connect(address).unwrap()
    }

    /// Reads one response (whose body is `ok`); its status line.
    fn response(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..read]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        text.lines().next().unwrap().to_string()
    }

    #[test]
    fn a_connection_kept_alive_after_a_slow_request_waits_its_whole_idle_timeout() {
        let mut stream = server();
        // A body sent late in the request's deadline leaves the socket a short timeout...
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        std::thread::sleep(REQUEST * 7 / 10);
        stream.write_all(b"ok").unwrap();
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
        // ...which must not end the next idle wait early.
        std::thread::sleep(IDLE * 6 / 10);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
    }

    #[test]
    fn the_idle_timeout_counts_from_the_answer_not_from_the_request() {
        // The connection waits for the client while the application answers; an answer
        // slower than the idle timeout must not use the client's idle time up. Only that first
        // answer is slow: the second only shows the connection was still open.
        let mut stream = answering_after(|n| if n == 0 { IDLE * 3 / 2 } else { Duration::ZERO });
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
        std::thread::sleep(IDLE / 2);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
    }

    #[test]
    fn pipelined_requests_are_all_answered() {
        // The next request's first bytes are buffered while the previous one is answered.
        let mut stream = slow_server(Duration::from_millis(50));
        let request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok";
        stream.write_all(&request.repeat(3)).unwrap();
        stream.set_read_timeout(Some(IDLE * 5)).unwrap();
        let mut got = String::new();
        let mut chunk = [0u8; 1024];
        while got.matches("HTTP/1.1 200 OK").count() < 3 {
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0, "closed after {:?}", got);
            got.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }

    #[test]
    fn a_head_arriving_one_byte_at_a_time_is_read_whole() {
        // Each CR and its LF arrive in separate reads, so every line is assembled from
        // several fills of the connection's buffer.
        let mut stream = server();
        stream.set_nodelay(true).unwrap();
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: abcdef\r\n\r\n" {
            stream.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
    }

    #[test]
    fn an_idle_connection_is_closed_at_its_idle_timeout_neither_before_nor_long_after() {
        let mut stream = server();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut stream), "HTTP/1.1 200 OK");
        let answered = Instant::now();
        stream.set_read_timeout(Some(IDLE * 5)).unwrap();
        let read = stream.read(&mut [0u8; 16]).unwrap();
        let waited = answered.elapsed();
        assert_eq!(read, 0, "closed without a response");
        assert!(waited >= IDLE - Duration::from_millis(100), "{:?}", waited);
        assert!(waited <= IDLE + Duration::from_secs(2), "{:?}", waited);
    }

    #[test]
    fn a_request_trickled_past_its_deadline_gets_408_at_the_deadline() {
        let mut stream = server();
        let started = Instant::now();
        stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut got = String::new();
        stream.set_read_timeout(Some(REQUEST * 5)).unwrap();
        let _ = stream.read_to_string(&mut got);
        let waited = started.elapsed();
        assert!(got.starts_with("HTTP/1.1 408"), "{:?}", got);
        assert!(
            waited >= REQUEST - Duration::from_millis(100),
            "{:?}",
            waited
        );
        // the 408 comes at the deadline; closing waits for the 200 ms lingering pause
        assert!(waited <= REQUEST + Duration::from_secs(2), "{:?}", waited);
    }
}
