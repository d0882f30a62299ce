//! What every test of the authkeys patches needs: a server on 127.0.0.1:0 with short limits,
//! optionally answered by a worker thread, and a raw TCP client that shows exactly what came
//! back. Std only, so the crate's tests add no dependency.

use std::io::{Cursor, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use authkeys_http::{
    ConfigListenAddr, InlineHandler, Limits, Request, Response, Server, ServerConfig,
};

/// The longest any test waits for something the server should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Small bounds and short deadlines, so that every refusal is quick to provoke and to observe.
pub fn limits() -> Limits {
    Limits {
        max_line: 256,
        max_headers: 8,
        max_head: 1024,
        max_body: 1024,
        idle_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        max_connections: 64,
        ..Limits::default()
    }
}

/// What a worker answers a request with.
pub type Handler = fn(&mut Request) -> Response<Cursor<Vec<u8>>>;

/// Answers 200 with the request's body.
pub fn echo(request: &mut Request) -> Response<Cursor<Vec<u8>>> {
    let mut body = Vec::new();
    request
        .as_reader()
        .read_to_end(&mut body)
        .expect("reading a body");
    Response::from_data(body)
}

pub struct TestServer {
    pub server: Arc<Server>,
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server nobody answers: the test calls `recv` itself.
    pub fn start(limits: Limits) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let server = Server::from_listener_with_limits(listener, limits).expect("server");
        TestServer {
            server: Arc::new(server),
            address,
            stop: Arc::new(AtomicBool::new(false)),
            worker: None,
        }
    }

    /// A server that tries `inline` on each connection's thread first; the test calls `recv`
    /// for the requests it gives back.
    pub fn with_inline(limits: Limits, inline: Arc<InlineHandler>) -> TestServer {
        let server = Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs("127.0.0.1:0").expect("an address"),
            limits,
            inline: Some(inline),
        })
        .expect("server");
        TestServer {
            address: server.server_addr().to_ip().expect("an IP address"),
            server: Arc::new(server),
            stop: Arc::new(AtomicBool::new(false)),
            worker: None,
        }
    }

    /// A server whose worker thread answers every request with `handler`.
    pub fn serving(limits: Limits, handler: Handler) -> TestServer {
        let mut test_server = TestServer::start(limits);
        let server = Arc::clone(&test_server.server);
        let stop = Arc::clone(&test_server.stop);
        test_server.worker = Some(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(20)) {
                    let response = handler(&mut request);
                    request.respond(response).ok();
                }
            }
        }));
        test_server
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).expect("connecting");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        stream
    }

    /// Sends `request` on a new connection (write errors ignored: the server may close first)
    /// and reads until the server closes it, or `PATIENCE` passes.
    pub fn exchange(&self, request: &[u8]) -> Reply {
        let mut stream = self.connect();
        stream.write_all(request).ok();
        read_until_closed(&mut stream, PATIENCE)
    }

    /// The next request, if one arrives within `wait`.
    pub fn recv_within(&self, wait: Duration) -> Option<Request> {
        self.server.recv_timeout(wait).expect("recv")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            worker.join().ok();
        }
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    /// From the start of the read to its end (the close, or the wait running out).
    pub elapsed: Duration,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first response.
    pub fn status(&self) -> Option<u16> {
        let text = self.text();
        let code = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
        code.parse().ok()
    }

    /// The value of the first response's header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The first response's body (everything after its head).
    pub fn body(&self) -> &[u8] {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.bytes.len(), |at| at + 4);
        &self.bytes[end..]
    }

    /// How many responses came back.
    pub fn responses(&self) -> usize {
        self.text().matches("HTTP/1.1 ").count()
    }

    /// Asserts a refusal: one response with `status` and `Connection: close`, then the close.
    #[track_caller]
    pub fn expect_refusal(&self, status: u16, what: &str) {
        assert!(
            self.status() == Some(status)
                && self.responses() == 1
                && self.header("Connection").as_deref() == Some("close")
                && self.closed,
            "{what}: expected one {status} then a close, got (closed: {}):\n{}",
            self.closed,
            self.text()
        );
    }
}

/// Reads from `stream` until the server closes it or `wait` passes.
pub fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Reply {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let closed = loop {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).expect("a read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(read) => bytes.extend_from_slice(&chunk[..read]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break true, // reset
        }
    };
    Reply {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// Reads one response with a `Content-Length` body from a kept-alive connection.
pub fn read_response(stream: &mut TcpStream) -> Reply {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut byte = [0u8];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            _ => {
                return Reply {
                    bytes,
                    closed: true,
                    elapsed: started.elapsed(),
                }
            }
        }
    }
    let mut reply = Reply {
        bytes,
        closed: false,
        elapsed: Duration::ZERO,
    };
    let length: usize = reply
        .header("Content-Length")
        .map_or(0, |value| value.parse().expect("a Content-Length"));
    let mut body = vec![0; length];
    reply.closed = stream.read_exact(&mut body).is_err();
    reply.bytes.extend_from_slice(&body);
    reply.elapsed = started.elapsed();
    reply
}

/// Writes `bytes` one at a time, `every` apart, until all are sent or the server closes.
pub fn trickle(mut stream: TcpStream, bytes: Vec<u8>, every: Duration) -> JoinHandle<()> {
    thread::spawn(move || {
        for byte in bytes {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(every);
        }
    })
}
