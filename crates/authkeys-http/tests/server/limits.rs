//! The request-head bounds and how a refusal is answered (CHANGES-authkeys.md, rows
//! `src/limits.rs`, `read_next_line`, `read`, `next`/`reject`, `with_connection_close`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{echo, limits, read_until_closed, TestServer, PATIENCE};
use authkeys_http::{Limits, Rejection, Response};

/// Row `src/limits.rs`: the application's `rejection_response` builds the answer to a
/// refusal (authkeys answers in its JSON error shape; upstream answered empty bodies), and is
/// told how long ago the request started.
#[test]
fn the_applications_rejection_response_answers_a_refusal() {
    let server = TestServer::serving(
        Limits {
            rejection_response: Arc::new(|rejection: &Rejection, started: Duration| {
                let status = rejection.status();
                let body = format!("{} after {} ms", status.0, started.as_millis());
                Response::from_string(body).with_status_code(status)
            }),
            ..limits()
        },
        echo,
    );
    let reply = server.exchange(b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n");
    reply.expect_refusal(400, "a NUL in a header");
    assert!(reply.body().starts_with(b"400 after "), "{}", reply.text());
    // A request begun and left unfinished: refused once `request_timeout` (300 ms) has passed.
    let reply = server.exchange(b"GET / HTTP/1.1\r\n");
    reply.expect_refusal(408, "an unfinished head");
    let waited: u128 = String::from_utf8_lossy(reply.body())
        .strip_prefix("408 after ")
        .and_then(|rest| rest.strip_suffix(" ms")?.parse().ok())
        .unwrap_or_else(|| panic!("{}", reply.text()));
    assert!(waited >= 250, "{} ms", waited);
}

/// Row `read_next_line`: a request line longer than `max_line` gets 414, without the server
/// waiting for its end (upstream grew the line buffer until CRLF, without limit).
#[test]
fn a_request_line_longer_than_max_line_gets_414() {
    let server = TestServer::serving(limits(), echo);
    let mut stream = server.connect();
    let line = format!("GET /{} HTTP/1.1", "a".repeat(300));
    stream.write_all(line.as_bytes()).expect("sending"); // no CRLF: the line never ends
    read_until_closed(&mut stream, PATIENCE).expect_refusal(414, "a 300-byte request line");
}

/// Row `read_next_line`: a header line longer than `max_line` gets 431.
#[test]
fn a_header_line_longer_than_max_line_gets_431() {
    let server = TestServer::serving(limits(), echo);
    let mut stream = server.connect();
    let head = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(300));
    stream.write_all(head.as_bytes()).expect("sending");
    read_until_closed(&mut stream, PATIENCE).expect_refusal(431, "a 300-byte header line");
}

/// Row `read_next_line`: a head larger than `max_head` gets 431, though each line is under
/// `max_line` and the headers are fewer than `max_headers`.
#[test]
fn a_head_larger_than_max_head_gets_431() {
    let server = TestServer::serving(limits(), echo);
    let header = format!("X-Filler: {}\r\n", "a".repeat(200));
    let request = format!("GET / HTTP/1.1\r\n{}\r\n", header.repeat(6)); // ~1.3 KiB
    server
        .exchange(request.as_bytes())
        .expect_refusal(431, "a 1.3 KiB head");
}

/// Row `read_next_line`: a control character other than tab in the head (a lone CR or LF,
/// NUL), or a byte that is not ASCII, gets 400. Upstream let lone CRs and LFs into values.
#[test]
fn control_characters_or_non_ascii_in_the_head_get_400() {
    let server = TestServer::serving(limits(), echo);
    let cases: &[(&str, &[u8])] = &[
        (
            "a lone CR in a value",
            b"GET / HTTP/1.1\r\nX-A: a\rSet-Cookie: x=1\r\n\r\n",
        ),
        (
            "a lone LF in a value",
            b"GET / HTTP/1.1\r\nX-A: a\nSet-Cookie: x=1\r\n\r\n",
        ),
        ("a CR in the target", b"GET /a\rb HTTP/1.1\r\n\r\n"),
        ("a NUL in a value", b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"),
        (
            "a non-ASCII byte",
            b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        server.exchange(request).expect_refusal(400, what);
    }
    // A tab is allowed.
    let reply = server.exchange(b"GET / HTTP/1.1\r\nX-A: a\tb\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

/// Row `read`: more than `max_headers` headers get 431 (upstream collected any number).
#[test]
fn more_than_max_headers_get_431() {
    let server = TestServer::serving(limits(), echo);
    let request = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: a\r\n".repeat(9));
    server
        .exchange(request.as_bytes())
        .expect_refusal(431, "nine headers");
    let request = format!(
        "GET / HTTP/1.1\r\n{}Connection: close\r\n\r\n",
        "X-A: a\r\n".repeat(7)
    );
    let reply = server.exchange(request.as_bytes());
    assert_eq!(reply.status(), Some(200), "eight headers: {}", reply.text());
}

/// Row `read`: an HTTP version above 1.1 gets 505 and the connection closes. Upstream's 505
/// waited for the writer of a request it still held: no answer, ever.
#[test]
fn an_http_version_above_1_1_gets_505_and_the_connection_closes() {
    let server = TestServer::serving(limits(), echo);
    server
        .exchange(b"GET / HTTP/2.0\r\n\r\n")
        .expect_refusal(505, "HTTP/2.0");
}

/// Rows `next`, `reject` and `with_connection_close`: a refusal says `Connection: close` and
/// ends the connection, so a request sent after it on the same connection is never read
/// (upstream answered without `Connection: close`, and kept the connection after a 505).
#[test]
fn a_refusal_says_connection_close_and_nothing_after_it_is_read() {
    let server = TestServer::serving(limits(), echo);
    let reply = server.exchange(b"GET / HTTP/1.1\r\nX-A: a\0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    reply.expect_refusal(400, "a NUL, then a valid request");
    assert!(
        reply.elapsed < Duration::from_secs(3),
        "{:?}",
        reply.elapsed
    );
}
