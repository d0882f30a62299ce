use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::limits::{Limits, Rejection};
use crate::request::InProgress;
use crate::util::{Deadline, RefinedTcpStream, Slot};
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // authkeys patch: the bounds enforced on this connection, and the read deadline that
    // `read` moves as a request progresses.
    limits: Arc<Limits>,
    deadline: Deadline,

    // authkeys patch: the server's count of requests in progress (see `InProgress`).
    in_progress: Arc<AtomicUsize>,

    // authkeys patch: this connection's place among those served (see `ConnectionTable`);
    // dropped with the connection.
    slot: Slot,

    // authkeys patch: when the request being read started, for `rejection_response`.
    request_started: Instant,
}

/// authkeys patch: how long, and how much, a refused connection is drained before closing, and
/// the pause that shows the client has stopped sending.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_QUIET: Duration = Duration::from_millis(200);

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
        let secure = read_socket.secure();
        let deadline = Deadline::default();
        read_socket.set_deadline(deadline.clone());

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            deadline,
            in_progress,
            slot,
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
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(ReadError::ReadIoError)?,
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
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

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
            if buf.len() > limit + 1 {
                // (+1: the line's CR is in `buf` until its LF arrives)
                return Err(too_long.into());
            }
        }
    }

    /// authkeys patch: waits up to `idle_timeout` for the first byte of the next request,
    /// then gives the whole request `request_timeout`. `Closed` when the connection closed,
    /// stayed idle, or was closed to make room while idle: there is nobody to answer.
    fn wait_for_request(&mut self) -> Result<u8, ReadError> {
        self.deadline.set(self.limits.idle_timeout);
        self.slot.idle();
        let mut first = [0u8];
        match self.next_header_source.read(&mut first) {
            Ok(1) if self.slot.busy() => {
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

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version,
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
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
            let mut writer = self.sink.next().unwrap();
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
            match self.next_header_source.read(&mut discard) {
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
}
