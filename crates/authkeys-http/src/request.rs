use std::io::Error as IoError;
use std::io::{self, Cursor, ErrorKind, Read, Write};

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use crate::limits::{Limits, Rejection};
use crate::util::{read_chunked_body, ChunkedError};
use crate::{HTTPVersion, Header, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, the server will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from (authkeys patch: the whole body, read before the request
    // is handed over; see `body`)
    data_reader: Option<Cursor<Vec<u8>>>,

    // if this writer is empty, then the request has been answered
    response_writer: Option<Box<dyn Write + Send + 'static>>,

    remote_addr: Option<SocketAddr>,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding (authkeys patch: the time it was
    // answered, from which the connection's idle timeout counts)
    notify_when_responded: Option<Sender<Instant>>,

    // authkeys patch: counts this request as in progress until it is answered (dropped).
    in_progress: Option<InProgress>,

    // authkeys patch: what an inline handler that gave the request back left for the worker
    // (see `hand_over`).
    handed_over: Option<Box<dyn Any + Send>>,
}

/// authkeys patch: one request counted in `Server::requests_in_progress`, from its first byte
/// until it is answered (or refused, or its connection fails). Dropping it ends the count.
pub(crate) struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    pub(crate) fn start(counter: &Arc<AtomicUsize>) -> InProgress {
        counter.fetch_add(1, Ordering::SeqCst);
        InProgress(Arc::clone(counter))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct NotifyOnDrop<R> {
    sender: Sender<Instant>,
    inner: R,
}

impl<R: Read> Read for NotifyOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        // authkeys patch: the connection may be gone (server shutting down); not a panic.
        self.sender.send(Instant::now()).ok();
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// authkeys patch: the request is refused before the application sees it (upstream had
    /// only `ExpectationFailed`, now `Rejected(Rejection::ExpectationFailed)`).
    Rejected(Rejection),

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

/// Builds a new request.
///
/// After the request line and headers have been read from the socket, a new `Request` object
/// is built.
///
/// You must pass a `Read` that will allow the `Request` object to read from the incoming data.
/// It is the responsibility of the `Request` to read only the data of the request and not further.
///
/// The `Write` object will be used by the `Request` to write the response.
#[allow(clippy::too_many_arguments)]
pub fn new_request<R, W>(
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut source_data: R,
    mut writer: W,
    limits: &Limits,
) -> Result<Request, RequestCreationError>
where
    R: Read,
    W: Write + Send + 'static,
{
    // authkeys patch: upstream let Transfer-Encoding silently override Content-Length, took
    // the first of several Content-Length headers, and ignored one it could not parse (as no
    // body). Each of those is a way to make two parsers disagree on where a request ends, so
    // each is refused here.
    let framing = body_framing(&headers, &version, limits)?;

    // true if the client sent a `Expect: 100-continue` header
    let expects_continue = {
        match headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Expect"))
            .map(|h| h.value.as_str())
        {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            _ => return Err(RequestCreationError::Rejected(Rejection::ExpectationFailed)),
        }
    };

    // authkeys patch: the body is read whole, within `limits.max_body`, here on the
    // connection's own thread and under its read deadline. Upstream read bodies over 1 KiB
    // lazily from the application's thread (so a client trickling a body held that thread),
    // and on drop drained whatever was left into a buffer as large as the declared
    // Content-Length. `Connection: upgrade` no longer hands the raw socket to the
    // application (authkeys never upgrades).
    if expects_continue && framing != BodyFraming::Empty {
        send_continue(&mut writer, &version, &headers)?;
    }
    let body = match framing {
        BodyFraming::Empty => Vec::new(),
        BodyFraming::Length(length) => {
            let mut body = vec![0; length];
            source_data.read_exact(&mut body).map_err(|err| {
                if err.kind() == ErrorKind::UnexpectedEof {
                    let info = "Connection has been closed before we received enough data";
                    IoError::new(ErrorKind::ConnectionAborted, info)
                } else {
                    err
                }
            })?;
            body
        }
        BodyFraming::Chunked => read_chunked(&mut source_data, limits)?,
    };
    let content_length = match framing {
        BodyFraming::Length(length) => Some(length),
        _ => None,
    };
    let expects_continue = false; // answered above

    Ok(Request {
        in_progress: None,
        handed_over: None,
        data_reader: Some(Cursor::new(body)),
        response_writer: Some(Box::new(writer) as Box<dyn Write + Send + 'static>),
        remote_addr,
        method,
        path,
        http_version: version,
        headers,
        body_length: content_length,
        must_send_continue: expects_continue,
        notify_when_responded: None,
    })
}

impl Request {
    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Sends a response with a `Connection: upgrade` header, then turns the `Request` into a `Stream`.
    ///
    /// The main purpose of this function is to support websockets.
    /// If you detect that the request wants to use some kind of protocol upgrade, you can
    ///  call this function to obtain full control of the socket stream.
    ///
    /// If you call this on a non-websocket request, the server will wait until this `Stream` object
    ///  is destroyed before continuing to read or write on the socket. Therefore you should always
    ///  destroy it as soon as possible.
    pub fn upgrade<R: Read>(
        mut self,
        protocol: &str,
        response: Response<R>,
    ) -> Box<dyn ReadWrite + Send> {
        use crate::util::CustomStream;

        response
            .raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                false,
                Some(protocol),
            )
            .ok(); // TODO: unused result

        self.response_writer.as_mut().unwrap().flush().ok(); // TODO: unused result

        let stream = CustomStream::new(self.extract_reader_impl(), self.extract_writer_impl());
        if let Some(sender) = self.notify_when_responded.take() {
            let stream = NotifyOnDrop {
                sender,
                inner: stream,
            };
            Box::new(stream) as Box<dyn ReadWrite + Send>
        } else {
            Box::new(stream) as Box<dyn ReadWrite + Send>
        }
    }

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # use std::io::Read;
    /// # fn get_content_type(_: &authkeys_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = authkeys_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
        }

        self.data_reader.as_mut().unwrap()
    }

    /// authkeys patch: the whole body, however much of it `as_reader` has read. It was read
    /// (within `Limits::max_body`) before the request was handed over, so this is a borrow:
    /// looking at the body leaves it for whoever answers the request.
    pub fn body(&self) -> &[u8] {
        self.data_reader.as_ref().map_or(&[], |body| body.get_ref())
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop {
                sender,
                inner: writer,
            };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> Box<dyn Write + Send + 'static> {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    fn extract_reader_impl(&mut self) -> Box<dyn Read + Send + 'static> {
        use std::mem;

        assert!(self.data_reader.is_some());

        let mut reader = None;
        mem::swap(&mut self.data_reader, &mut reader);
        Box::new(reader.unwrap())
    }

    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            sender.send(Instant::now()).ok(); // authkeys patch: was unwrap (see NotifyOnDrop)
        }
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        Self::ignore_client_closing_errors(response.raw_print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
        ))?;

        Self::ignore_client_closing_errors(writer.flush())
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }

    /// authkeys patch: leaves `state` with the request for whoever answers it next. An inline
    /// handler that gives a request back keeps what it already worked out (the request as the
    /// application parsed it, say), so the worker does not work it out again.
    pub fn hand_over(&mut self, state: Box<dyn Any + Send>) {
        self.handed_over = Some(state);
    }

    /// authkeys patch: takes what `hand_over` left, if anything.
    pub fn take_handed_over(&mut self) -> Option<Box<dyn Any + Send>> {
        self.handed_over.take()
    }

    /// authkeys patch: attaches the in-progress count this request holds until answered.
    pub(crate) fn with_in_progress(mut self, in_progress: InProgress) -> Self {
        self.in_progress = Some(in_progress);
        self
    }

    pub(crate) fn with_notify_sender(mut self, sender: Sender<Instant>) -> Self {
        self.notify_when_responded = Some(sender);
        self
    }
}

/// authkeys patch: how the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    Empty,
    Length(usize),
    Chunked,
}

/// authkeys patch: the body framing of a request, or why it is refused. At most one
/// `Content-Length` (digits only) or one `Transfer-Encoding: chunked` (HTTP/1.1 only), never
/// both; a declared length over `limits.max_body` is refused before any of it is read.
fn body_framing(
    headers: &[Header],
    version: &HTTPVersion,
    limits: &Limits,
) -> Result<BodyFraming, Rejection> {
    let named = |name: &'static str| -> Vec<&str> {
        headers
            .iter()
            .filter(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
            .collect()
    };
    let lengths = named("Content-Length");
    let encodings = named("Transfer-Encoding");
    match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Ok(BodyFraming::Empty),
        ([_], [_]) => Err(Rejection::Malformed(
            "both Content-Length and Transfer-Encoding",
        )),
        ([length], []) => {
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Rejection::Malformed("a malformed Content-Length"));
            }
            // All digits: the only parse failure left is overflow, which is too large too.
            match length.parse::<usize>() {
                Ok(0) => Ok(BodyFraming::Empty),
                Ok(length) if length <= limits.max_body => Ok(BodyFraming::Length(length)),
                _ => Err(Rejection::BodyTooLarge),
            }
        }
        ([], [encoding]) => {
            if *version < HTTPVersion(1, 1) {
                Err(Rejection::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ))
            } else if encoding.eq_ignore_ascii_case("chunked") {
                Ok(BodyFraming::Chunked)
            } else {
                Err(Rejection::Malformed(
                    "a Transfer-Encoding other than chunked",
                ))
            }
        }
        ([_, _, ..], _) => Err(Rejection::Malformed("more than one Content-Length")),
        (_, _) => Err(Rejection::Malformed("more than one Transfer-Encoding")),
    }
}

impl From<Rejection> for RequestCreationError {
    fn from(rejection: Rejection) -> RequestCreationError {
        RequestCreationError::Rejected(rejection)
    }
}

/// authkeys patch: the interim `100 Continue`, sent before reading a body the client holds
/// back until it is asked for it (upstream sent it from `as_reader`).
fn send_continue<W: Write>(
    writer: &mut W,
    version: &HTTPVersion,
    headers: &[Header],
) -> Result<(), RequestCreationError> {
    Response::new_empty(StatusCode(100)).raw_print(
        writer.by_ref(),
        version.clone(),
        headers,
        true,
        None,
    )?;
    writer.flush()?;
    Ok(())
}

/// authkeys patch: reads a chunked body whole, strictly (`util::chunked_body`). At most
/// `max_body` decoded bytes, lines of at most `max_line`, and at most four times `max_body` on
/// the wire (many tiny chunks carry more framing than data).
fn read_chunked<R: Read>(source: &mut R, limits: &Limits) -> Result<Vec<u8>, RequestCreationError> {
    let wire_limit = (limits.max_body as u64)
        .saturating_mul(4)
        .saturating_add(1024);
    let mut wire = source.take(wire_limit);
    match read_chunked_body(&mut wire, limits.max_body, limits.max_line) {
        Ok(body) => Ok(body),
        Err(ChunkedError::Io(err)) if err.kind() == ErrorKind::TimedOut => Err(err.into()),
        Err(ChunkedError::TooLarge) => Err(Rejection::BodyTooLarge.into()),
        Err(_) if wire.limit() == 0 => Err(Rejection::BodyTooLarge.into()),
        Err(_) => Err(Rejection::Malformed("a malformed chunked body").into()),
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            let response = Response::empty(500);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                sender.send(Instant::now()).ok(); // authkeys patch: was unwrap (see NotifyOnDrop)
            }
        }
    }
}

/// Dummy trait that regroups the `Read` and `Write` traits.
///
/// Automatically implemented on all types that implement both `Read` and `Write`.
pub trait ReadWrite: Read + Write {}
impl<T> ReadWrite for T where T: Read + Write {}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
