//! Hostile HTTP against the real server process: slow clients, huge and numerous headers,
//! huge declared bodies, ambiguous body framing, file-descriptor exhaustion and CR/LF
//! injection. Malformed traffic goes over raw `TcpStream`s; memory and CPU are read from
//! `/proc/<pid>`. Every wait is bounded.

use crate::support::*;
use authkeys::http::{Listener, Request, Response};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The server's default request bound (docs/api.md, "HTTP limits"; a unit test in
/// src/http/limits.rs holds the docs to it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The bounds the timeout tests set (`--http-request-timeout-ms`, `--http-idle-timeout-ms`),
/// so they wait out a second rather than the defaults.
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
const SHORT_IDLE_TIMEOUT: Duration = Duration::from_millis(700);

fn start_with_short_timeouts() -> TestServer {
    TestServer::start_with(
        Options::default()
            .arg(
                "--http-request-timeout-ms",
                &SHORT_REQUEST_TIMEOUT.as_millis().to_string(),
            )
            .arg(
                "--http-idle-timeout-ms",
                &SHORT_IDLE_TIMEOUT.as_millis().to_string(),
            ),
    )
}

const MIB: u64 = 1024 * 1024;

fn address(server: &TestServer) -> SocketAddr {
    server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the server URL is http://IP:PORT")
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connecting");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("setting a write timeout");
    stream
}

/// What came back on a raw connection: everything read until the server closed it, or until
/// `wait` passed.
struct Raw {
    bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) within the wait.
    closed: bool,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn status(&self) -> Option<u16> {
        let text = self.text();
        let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
        status.parse().ok()
    }

    /// The header lines of the first response, without the status line.
    fn header_lines(&self) -> Vec<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n").skip(1).map(str::to_string).collect()
    }

    fn body_json(&self) -> serde_json::Value {
        let text = self.text();
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body);
        serde_json::from_str(body.unwrap_or_default()).unwrap_or_default()
    }

    /// Exactly one response came back, nothing after its body.
    fn is_one_response(&self) -> bool {
        let text = self.text();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = self
            .header_lines()
            .iter()
            .find_map(|line| line.strip_prefix("Content-Length: ")?.parse::<usize>().ok());
        !head.is_empty() && length == Some(body.len())
    }

    /// Asserts one contract error (status, code, JSON) and a closed connection.
    #[track_caller]
    fn expect_refusal(&self, status: u16, code: &str, what: &str) {
        let lines = self.header_lines();
        let ok = self.status() == Some(status)
            && self.body_json()["error"]["code"] == code
            && lines
                .iter()
                .any(|line| line == "Content-Type: application/json")
            && lines.iter().any(|line| line == "Connection: close")
            && self.closed
            && self.is_one_response();
        assert!(
            ok,
            "{what}: expected one {status} {code} and a closed connection, got (closed: {}):\n{}",
            self.closed,
            self.text()
        );
    }
}

/// Reads from `stream` until the server closes it or `wait` passes.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Raw {
    let deadline = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Raw {
                bytes,
                closed: false,
            };
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => {
                return Raw {
                    bytes,
                    closed: true,
                };
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Raw {
                    bytes,
                    closed: false,
                };
            }
            Err(_) => {
                return Raw {
                    bytes,
                    closed: true,
                };
            }
        }
    }
}

/// Sends `request` on a new connection (write errors ignored: the server may close early)
/// and reads until the server closes it.
fn exchange(address: SocketAddr, request: &[u8]) -> Raw {
    exchange_within(address, request, Duration::from_secs(5))
}

fn exchange_within(address: SocketAddr, request: &[u8], wait: Duration) -> Raw {
    let mut stream = connect(address);
    let _ = stream.write_all(request);
    read_until_closed(&mut stream, wait)
}

/// `exchange` of each request on its own connection, all at once; the replies in order.
fn exchange_concurrently<'a>(
    address: SocketAddr,
    requests: impl Iterator<Item = &'a Vec<u8>>,
) -> Vec<Raw> {
    thread::scope(|scope| {
        let exchanges: Vec<_> = requests
            .map(|request| scope.spawn(move || exchange(address, request)))
            .collect();
        exchanges
            .into_iter()
            .map(|exchange| exchange.join().expect("an exchange panicked"))
            .collect()
    })
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

/// One `GET /healthz` on a new connection; returns how long the answer took.
#[track_caller]
fn healthz(address: SocketAddr, within: Duration) -> Duration {
    let started = Instant::now();
    let mut stream = connect(address);
    stream.write_all(HEALTHZ).expect("sending GET /healthz");
    let reply = read_until_closed(&mut stream, within);
    assert!(
        reply.status() == Some(200) && reply.closed,
        "GET /healthz was not answered 200 within {within:?}: {:?}",
        reply.text()
    );
    started.elapsed()
}

/// A `/proc/<pid>/status` field, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Asserts the server's peak resident memory grew by less than `bound` since `baseline_kib`.
#[track_caller]
fn assert_peak_memory_within(server: &TestServer, baseline_kib: u64, bound: u64, what: &str) {
    let peak = proc_status_kib(server.pid(), "VmHWM");
    let grown = peak.saturating_sub(baseline_kib) * 1024;
    assert!(
        grown < bound,
        "{what}: the server's peak RSS grew by {} MiB (bound {} MiB)",
        grown / MIB,
        bound / MIB
    );
}

#[test]
fn a_normal_request_is_answered_promptly_while_500_slow_clients_trickle() {
    let server = TestServer::start();
    let address = address(&server);
    // Half trickle a request head, half a body: a body read on a worker thread would let 8 of
    // them stall every worker.
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|n| {
            let mut stream = connect(address);
            let start: &[u8] = if n % 2 == 0 {
                b"GET /healthz HTTP/1.1\r\nX-Slow: "
            } else {
                b"POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
                  Content-Length: 60000\r\n\r\n{\"auth_key\": \""
            };
            stream.write_all(start).expect("starting a slow request");
            stream
        })
        .collect();
    // Probe while every slow client is still trickling. The server cuts each off
    // REQUEST_TIMEOUT after it started, so a write may fail only after that.
    let trickling = Instant::now();
    let mut probes_with_all_alive = 0;
    let mut slowest = Duration::ZERO;
    while trickling.elapsed() < Duration::from_secs(3) {
        let mut all_alive = true;
        for stream in &mut slow {
            if let Err(err) = stream.write_all(b"a") {
                let cut_early = opened.elapsed() < REQUEST_TIMEOUT - Duration::from_millis(200);
                assert!(!cut_early, "a slow client was cut off early: {err}");
                all_alive = false;
            }
        }
        slowest = slowest.max(healthz(address, Duration::from_secs(2)));
        if all_alive {
            probes_with_all_alive += 1;
        }
        // A byte per client every 100 ms: slow for a request, busy for the server.
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        probes_with_all_alive > 0,
        "the slow clients were gone before the first probe"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "GET /healthz took {slowest:?} while 500 clients trickled"
    );
}

#[test]
fn a_request_trickled_past_the_deadline_gets_408_and_is_closed() {
    let server = start_with_short_timeouts();
    let mut stream = connect(address(&server));
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .expect("starting");
    let mut writer = stream.try_clone().expect("cloning the stream");
    let trickler = thread::spawn(move || {
        for _ in 0..60 {
            thread::sleep(Duration::from_millis(200));
            if writer.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let reply = read_until_closed(&mut stream, SHORT_REQUEST_TIMEOUT + Duration::from_secs(5));
    let took = started.elapsed();
    reply.expect_refusal(408, "request_timeout", "a trickled request");
    // The server's clock starts at the first byte, after `started`: never sooner than this.
    assert!(
        took >= SHORT_REQUEST_TIMEOUT - Duration::from_millis(50),
        "cut off after only {took:?}"
    );
    trickler.join().expect("the trickler");
}

#[test]
fn an_idle_connection_is_closed_without_a_response() {
    let server = start_with_short_timeouts();
    let started = Instant::now();
    let mut stream = connect(address(&server));
    let reply = read_until_closed(&mut stream, SHORT_IDLE_TIMEOUT + Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        reply.closed && reply.bytes.is_empty(),
        "an idle connection was not closed silently: {:?}",
        reply.text()
    );
    assert!(
        took >= SHORT_IDLE_TIMEOUT - Duration::from_millis(50),
        "closed after only {took:?}"
    );
}

#[test]
fn huge_header_lines_and_header_floods_keep_memory_bounded() {
    let server = TestServer::start();
    let address = address(&server);
    healthz(address, Duration::from_secs(5));
    let baseline = proc_status_kib(server.pid(), "VmRSS");

    // Requests that never finish their head: a server that buffers them whole holds 48 MiB
    // of header lines.
    let line = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}",
        "a".repeat(MIB as usize)
    );
    let mut flood = String::from("GET /healthz HTTP/1.1\r\n");
    for n in 0..10_000 {
        flood.push_str(&format!("X-Header-{n}: value\r\n"));
    }
    let readers: Vec<_> = (0..56)
        .map(|n| {
            let mut stream = connect(address);
            let (request, kind) = if n < 48 {
                (line.as_bytes(), "a 1 MiB header line")
            } else {
                (flood.as_bytes(), "10,000 headers")
            };
            let _ = stream.write_all(request); // the server may refuse and close mid-way
            thread::spawn(move || {
                (
                    read_until_closed(&mut stream, Duration::from_secs(10)),
                    kind,
                )
            })
        })
        .collect();
    // Sample memory until every connection is settled: a server that buffers the lines
    // reads them (slowly) after the writes above have returned.
    while readers.iter().any(|reader| !reader.is_finished()) {
        assert_peak_memory_within(&server, baseline, 32 * MIB, "huge and numerous headers");
        thread::sleep(Duration::from_millis(100));
    }
    assert_peak_memory_within(&server, baseline, 32 * MIB, "huge and numerous headers");
    for reader in readers {
        let (reply, kind) = reader.join().expect("a reader thread");
        // The refusal may be lost to the reset of a connection closed with unread input;
        // what must never happen is a server that waits, or answers the request.
        assert!(reply.closed, "{kind}: the connection was not closed");
        if !reply.bytes.is_empty() {
            reply.expect_refusal(431, "headers_too_large", kind);
        }
    }
    healthz(address, Duration::from_secs(5));
}

#[test]
fn a_long_header_line_too_many_headers_or_a_long_request_line_are_refused() {
    let server = TestServer::start();
    let address = address(&server);
    let long_value = "a".repeat(9000);
    let request = format!("GET /healthz HTTP/1.1\r\nX-Long: {long_value}\r\n\r\n");
    exchange(address, request.as_bytes()).expect_refusal(
        431,
        "headers_too_large",
        "a 9000-byte header line",
    );
    let many: String = (0..101).map(|n| format!("X-{n}: v\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\n{many}\r\n");
    exchange(address, request.as_bytes()).expect_refusal(431, "headers_too_large", "101 headers");
    let many: String = (0..3)
        .map(|n| format!("X-{n}: {}\r\n", "b".repeat(7000)))
        .collect();
    let request = format!("GET /healthz HTTP/1.1\r\n{many}\r\n");
    exchange(address, request.as_bytes()).expect_refusal(
        431,
        "headers_too_large",
        "a 21 KB request head",
    );
    let request = format!("GET /healthz?{long_value} HTTP/1.1\r\n\r\n");
    exchange(address, request.as_bytes()).expect_refusal(414, "uri_too_long", "a 9 KB target");
    // Within the bounds: 100 headers, 7 KB in all, are served.
    let fine: String = (0..99)
        .map(|n| format!("X-{n}: {}\r\n", "c".repeat(60)))
        .collect();
    let request = format!("GET /healthz HTTP/1.1\r\n{fine}Connection: close\r\n\r\n");
    let reply = exchange(address, request.as_bytes());
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

#[test]
fn six_one_gigabyte_bodies_get_413_without_being_read() {
    let server = TestServer::start();
    let address = address(&server);
    healthz(address, Duration::from_secs(5));
    let baseline = proc_status_kib(server.pid(), "VmRSS");
    let virtual_baseline = proc_status_kib(server.pid(), "VmPeak");
    let clients: Vec<_> = (0..6)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = connect(address);
                stream
                    .write_all(
                        b"POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
                          Content-Length: 1073741824\r\n\r\n",
                    )
                    .expect("sending the head");
                let reply = read_until_closed(&mut stream, Duration::from_secs(5));
                // Then push the body anyway: a closed connection stops it well short of 16 MiB.
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0u64;
                while sent < 16 * MIB && stream.write_all(&chunk).is_ok() {
                    sent += chunk.len() as u64;
                }
                (reply, sent)
            })
        })
        .collect();
    let results: Vec<(Raw, u64)> = clients
        .into_iter()
        .map(|client| client.join().expect("a client thread"))
        .collect();
    // Not even reserved: no buffer sized by the declared length, touched or not.
    let reserved = proc_status_kib(server.pid(), "VmPeak").saturating_sub(virtual_baseline) * 1024;
    assert!(
        reserved < 1024 * MIB,
        "the server's address space grew by {} MiB",
        reserved / MIB
    );
    assert_peak_memory_within(&server, baseline, 32 * MIB, "six 1 GB declared bodies");
    for (reply, sent) in results {
        reply.expect_refusal(413, "body_too_large", "a 1 GB Content-Length");
        assert!(
            sent < 16 * MIB,
            "the server kept reading a refused body ({sent} bytes)"
        );
    }
    healthz(address, Duration::from_secs(5));
}

#[test]
fn ambiguous_or_malformed_body_framing_is_refused_and_the_connection_closed() {
    let server = TestServer::start();
    let address = address(&server);
    // Each carries a second, smuggled request after the first one's head: it must never be
    // answered, since after a refusal nobody knows where it starts.
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    let cases: &[(&str, &str)] = &[
        (
            "Content-Length and Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "Transfer-Encoding and Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        (
            "two different Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 60\r\n",
        ),
        (
            "two equal Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("a list Content-Length", "Content-Length: 5, 5\r\n"),
        ("a negative Content-Length", "Content-Length: -5\r\n"),
        ("a signed Content-Length", "Content-Length: +5\r\n"),
        ("a non-numeric Content-Length", "Content-Length: five\r\n"),
        ("a hex Content-Length", "Content-Length: 0x10\r\n"),
        ("an empty Content-Length", "Content-Length:\r\n"),
        ("gzip", "Transfer-Encoding: gzip\r\n"),
        ("chunked twice", "Transfer-Encoding: chunked, chunked\r\n"),
        (
            "two Transfer-Encodings",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("a space before the colon", "Content-Length : 5\r\n"),
        ("a folded header", "X-A: a\r\n Content-Length: 5\r\n"),
    ];
    let mut refused: Vec<(&str, Vec<u8>, u16, &str)> = cases
        .iter()
        .map(|(what, headers)| {
            let request =
                format!("POST /v1/auth/login HTTP/1.1\r\n{headers}\r\n0\r\n\r\n{smuggled}");
            (*what, request.into_bytes(), 400, "malformed_request")
        })
        .collect();
    let request = format!(
        "POST /v1/auth/login HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    refused.push((
        "chunked in HTTP/1.0",
        request.into_bytes(),
        400,
        "malformed_request",
    ));
    let request = format!(
        "POST /v1/auth/login HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n{smuggled}"
    );
    refused.push((
        "a Content-Length beyond 64 bits",
        request.into_bytes(),
        413,
        "body_too_large",
    ));
    let oversized = format!(
        "POST /v1/auth/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n{smuggled}",
        70_000,
        "x".repeat(70_000)
    );
    refused.push((
        "a chunked body over 64 KiB",
        oversized.into_bytes(),
        413,
        "body_too_large",
    ));
    let request = b"POST /v1/auth/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    refused.push((
        "a bad chunk size",
        request.to_vec(),
        400,
        "malformed_request",
    ));
    let request = format!("GET /healthz HTTP/2.0\r\n\r\n{smuggled}");
    refused.push((
        "HTTP/2.0",
        request.into_bytes(),
        505,
        "http_version_not_supported",
    ));
    // Each on its own connection, all at once: after each refusal the server lingers until the
    // client is quiet, which one after another would add up to seconds.
    let replies = exchange_concurrently(address, refused.iter().map(|(_, request, ..)| request));
    for ((what, _, status, code), reply) in refused.iter().zip(replies) {
        reply.expect_refusal(*status, code, what);
    }

    // Well-framed bodies still work, chunked included.
    let login = "{\"auth_key\": \"nope\"}";
    let chunked = format!(
        "POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{login}\r\n0\r\n\r\n",
        login.len()
    );
    let reply = exchange(address, chunked.as_bytes());
    assert_eq!(reply.status(), Some(401), "{}", reply.text());
    let sized = format!(
        "POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{login}",
        login.len()
    );
    let reply = exchange(address, sized.as_bytes());
    assert_eq!(reply.status(), Some(401), "{}", reply.text());
}

#[test]
fn a_chunk_size_is_hex_digits_only_with_optional_extensions() {
    let server = TestServer::start();
    let address = address(&server);
    let login = "{\"auth_key\": \"nope\"}"; // 20 bytes, 0x14
    let request = |size: &str| {
        format!(
            "POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{size}\r\n{login}\r\n0\r\n\r\n"
        )
    };
    // Each is read as 0x14 by a lenient parser (trimming, or a sign) and refused by a strict
    // one: the disagreement request smuggling is made of.
    let sizes = ["+14", " 14", "14 ", "14\t", "0x14", "14 ;ext=1"];
    let requests: Vec<Vec<u8>> = sizes
        .iter()
        .map(|size| request(size).into_bytes())
        .collect();
    for (size, reply) in sizes
        .iter()
        .zip(exchange_concurrently(address, requests.iter()))
    {
        reply.expect_refusal(400, "malformed_request", &format!("chunk size {size:?}"));
    }
    for size in ["14", "14;ext=1", "014"] {
        let reply = exchange(address, request(size).as_bytes());
        assert_eq!(
            reply.status(),
            Some(401),
            "chunk size {size:?}: {}",
            reply.text()
        );
    }
}

#[test]
fn refusals_before_routing_and_429s_are_counted_in_metrics() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--login-failures-burst", "1")
            .arg("--http-request-timeout-ms", "300"),
    );
    let address = address(&server);
    let long_line = "a".repeat(9000);
    let refusals: &[(u16, String)] = &[
        (
            400,
            "GET /healthz HTTP/1.1\r\nBad header\r\n\r\n".to_string(),
        ),
        (408, "GET /healthz HTTP/1.1\r\n".to_string()), // and then silence
        (
            413,
            "POST /v1/auth/login HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n".to_string(),
        ),
        (414, format!("GET /healthz?{long_line} HTTP/1.1\r\n\r\n")),
        (
            431,
            format!("GET /healthz HTTP/1.1\r\nX-Long: {long_line}\r\n\r\n"),
        ),
        (505, "GET /healthz HTTP/2.0\r\n\r\n".to_string()),
    ];
    for (status, request) in refusals {
        let reply = exchange(address, request.as_bytes());
        assert_eq!(reply.status(), Some(*status), "{}", reply.text());
    }
    let anonymous = server.anonymous();
    let bad_login = serde_json::json!({"auth_key": "nope"});
    anonymous
        .post("/v1/auth/login", &bad_login)
        .expect_error(401, "invalid_auth_key");
    anonymous
        .post("/v1/auth/login", &bad_login)
        .expect_error(429, "too_many_requests");

    let text = scrape(&anonymous);
    let count = |route: &str, method: &str, status: u16| {
        let series = format!(
            r#"authkeys_http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#
        );
        sample(&text, &series)
    };
    for (status, _) in refusals {
        assert_eq!(
            count("unmatched", "other", *status),
            1.0,
            "{status}: {text}"
        );
    }
    assert_eq!(count("/v1/auth/login", "POST", 429), 1.0, "{text}");
    assert!(!text.contains(r#"status="other""#), "{text}");
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').expect("stat has a command name").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("running getconf CLK_TCK");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

#[test]
fn running_out_of_file_descriptors_is_survived_without_spinning() {
    let server = TestServer::start_with(Options {
        fd_limit: Some(64),
        ..Options::default()
    });
    let address = address(&server);
    healthz(address, Duration::from_secs(5));

    // 120 keep-alive connections need 240 descriptors (authkeys-http holds two per connection):
    // some are answered, the rest wait in the backlog while accept fails with EMFILE.
    let clients: Vec<_> = (0..120)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = connect(address);
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                    .expect("sending a request");
                let reply = read_until_closed(&mut stream, Duration::from_secs(2));
                (stream, reply.status() == Some(200))
            })
        })
        .collect();
    let connections: Vec<(TcpStream, bool)> = clients
        .into_iter()
        .map(|client| client.join().expect("a client thread"))
        .collect();
    let answered = connections.iter().filter(|(_, ok)| *ok).count();
    assert!(
        answered < connections.len(),
        "all {answered} connections were answered: the descriptor limit was never reached"
    );
    assert!(
        server.log().contains("accepting a connection failed"),
        "no accept failure was logged:\n{}",
        server.log()
    );

    // While exhausted the accept loop must wait, not spin.
    let before = cpu_seconds(server.pid());
    let measured = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let busy = (cpu_seconds(server.pid()) - before) / measured.elapsed().as_secs_f64();
    assert!(
        busy < 0.5,
        "the server used {:.0}% of a core while out of descriptors",
        busy * 100.0
    );
    // Once per run of failures, not once per retry (ten a second). A second run may start if
    // the server's idle timeout frees a descriptor meanwhile.
    let logged = server
        .log()
        .matches("accepting a connection failed")
        .count();
    assert!(logged <= 2, "accept failures logged {logged} times");

    drop(connections);
    // The freed descriptors are taken first by the dead connections still queued in the
    // backlog, and a connection made while the queue overflowed waits for the kernel's SYN-ACK
    // retries: ask on fresh connections until answered, within a bound.
    wait_for(
        "serving again after the clients left",
        Duration::from_secs(20),
        || exchange_within(address, HEALTHZ, Duration::from_secs(2)).status() == Some(200),
    );
    assert!(
        server.log().contains("accepting connections again"),
        "{}",
        server.log()
    );
}

#[test]
fn cr_and_lf_from_a_request_never_reach_a_response_header() {
    let server = TestServer::start();
    let address = address(&server);
    let injected = |reply: &Raw| {
        reply
            .header_lines()
            .iter()
            .any(|line| line.to_ascii_lowercase().starts_with("set-cookie"))
    };
    // Percent-encoded CR LF in the target is just text in a 404.
    let request = format!(
        "GET /v1/apps/x%0D%0ASet-Cookie:%20evil=1 HTTP/1.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    let reply = exchange(address, request.as_bytes());
    assert!(
        reply.status() == Some(404) && !injected(&reply),
        "{}",
        reply.text()
    );
    // A lone CR or LF, or another control character, in the head is refused outright.
    let cases: &[(&str, &[u8])] = &[
        (
            "a CR in a header value",
            b"GET /healthz HTTP/1.1\r\nX-A: a\rSet-Cookie: evil=1\r\n\r\n",
        ),
        (
            "an LF in a header value",
            b"GET /healthz HTTP/1.1\r\nX-A: a\nSet-Cookie: evil=1\r\n\r\n",
        ),
        (
            "a CR in the target",
            b"GET /healthz\rSet-Cookie:evil=1 HTTP/1.1\r\n\r\n",
        ),
        (
            "a NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let reply = exchange(address, request);
        reply.expect_refusal(400, "malformed_request", what);
        assert!(!injected(&reply), "{what}: {}", reply.text());
    }
}

#[test]
fn a_handler_echoing_cr_lf_into_a_header_gets_a_500_not_an_injected_header() {
    // A handler that reflects its decoded path into a header: the kind of bug the adapter
    // must contain.
    let handler = |request: &Request| {
        let echoed = request.path.replace("%0D", "\r").replace("%0A", "\n");
        let mut response = Response::json(200, &serde_json::json!({}));
        response.headers.push(("X-Echo", echoed));
        response
    };
    let listener = Listener::start("127.0.0.1:0", Arc::new(handler), 1).expect("listening");
    let reply = exchange(
        listener.address(),
        b"GET /a%0D%0ASet-Cookie:%20evil=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let lines = reply.header_lines();
    assert!(
        reply.status() == Some(500)
            && reply.body_json()["error"]["code"] == "internal"
            && !lines.iter().any(|line| line.starts_with("Set-Cookie")),
        "{}",
        reply.text()
    );
    let reply = exchange(
        listener.address(),
        b"GET /plain HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply
            .header_lines()
            .iter()
            .any(|line| line == "X-Echo: /plain"),
        "{}",
        reply.text()
    );
}

#[test]
fn expect_100_continue_is_answered_before_the_body_and_other_expectations_are_refused() {
    let server = TestServer::start();
    let address = address(&server);
    let login = "{\"auth_key\": \"nope\"}";
    let mut stream = connect(address);
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        login.len()
    );
    stream.write_all(head.as_bytes()).expect("sending the head");
    let mut interim = [0u8; 25];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .read_exact(&mut interim)
        .expect("reading 100 Continue");
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stream
        .write_all(login.as_bytes())
        .expect("sending the body");
    let reply = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        reply.text().contains("HTTP/1.1 401 ") && reply.text().contains("invalid_auth_key"),
        "{}",
        reply.text()
    );

    let request = b"POST /v1/auth/login HTTP/1.1\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\n{}";
    exchange(address, request).expect_refusal(417, "expectation_failed", "Expect: 200-ok");
}
