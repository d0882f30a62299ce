//! Where a request's body ends, and how it is read (CHANGES-authkeys.md, rows
//! `body_framing`, `new_request`/`read_chunked`, `reject`/`linger`).

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::{echo, limits, read_response, read_until_closed, TestServer, PATIENCE};
use authkeys_http::Limits;

/// Limits with time to send a body in steps.
fn patient_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(3),
        ..limits()
    }
}

/// Row `body_framing`: every framing two parsers could disagree on gets 400 and a close
/// (upstream let `Transfer-Encoding` win, took the first `Content-Length`, and read an
/// unparsable one as "no body").
#[test]
fn ambiguous_or_malformed_body_framing_gets_400() {
    let server = TestServer::serving(limits(), echo);
    let cases: &[(&str, &str)] = &[
        (
            "Content-Length and Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
        ),
        (
            "two Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 5",
        ),
        ("a negative Content-Length", "Content-Length: -5"),
        ("a signed Content-Length", "Content-Length: +5"),
        ("a Content-Length of two numbers", "Content-Length: 5 5"),
        ("a hexadecimal Content-Length", "Content-Length: 0x10"),
        ("an empty Content-Length", "Content-Length:"),
        (
            "a Transfer-Encoding other than chunked",
            "Transfer-Encoding: gzip",
        ),
        (
            "two Transfer-Encodings",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        ),
    ];
    for (what, headers) in cases {
        let request = format!("POST / HTTP/1.1\r\n{headers}\r\n\r\n0\r\n\r\nhello");
        server
            .exchange(request.as_bytes())
            .expect_refusal(400, what);
    }
    server
        .exchange(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .expect_refusal(400, "Transfer-Encoding in HTTP/1.0");
    // Optional whitespace around a value is not part of it.
    let reply =
        server.exchange(b"POST / HTTP/1.1\r\nContent-Length: 5 \r\nConnection: close\r\n\r\nhello");
    assert_eq!(
        (reply.status(), reply.body()),
        (Some(200), &b"hello"[..]),
        "{}",
        reply.text()
    );
}

/// Row `body_framing`: a declared length over `max_body`, or beyond `usize`, gets 413 at once,
/// before any of the body is sent.
#[test]
fn a_declared_body_over_max_body_gets_413_before_it_is_sent() {
    let server = TestServer::serving(patient_limits(), echo);
    for length in ["1025", "1073741824", "99999999999999999999999999"] {
        let mut stream = server.connect();
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("sending the head");
        let reply = read_until_closed(&mut stream, PATIENCE);
        reply.expect_refusal(413, length);
        assert!(
            reply.elapsed < Duration::from_secs(2),
            "{:?}",
            reply.elapsed
        );
    }
}

/// Row `new_request`, `read_chunked`: a chunked body is bounded by `max_body` once decoded.
#[test]
fn a_chunked_body_over_max_body_gets_413() {
    let server = TestServer::serving(patient_limits(), echo);
    let chunk = format!("320\r\n{}\r\n", "a".repeat(0x320)); // 800 bytes
    let request = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(2)
    );
    server
        .exchange(request.as_bytes())
        .expect_refusal(413, "1600 bytes chunked");
    let request = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n");
    let reply = server.exchange(request.as_bytes());
    assert_eq!(reply.status(), Some(200), "800 bytes: {}", reply.text());
    assert_eq!(reply.body(), "a".repeat(800).as_bytes());
}

/// Rows `new_request`, `read_chunked` and `chunked_body.rs`: a chunk-size line is at most
/// `max_line` (upstream's decoder buffered it without limit), and the wire is capped at four
/// times `max_body`, since many tiny chunks carry more framing than data: both get 413.
#[test]
fn an_endless_chunk_size_line_or_too_much_chunk_framing_gets_413() {
    let server = TestServer::serving(patient_limits(), echo);
    let mut stream = server.connect();
    let request = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "0".repeat(8 * 1024)
    );
    stream.write_all(request.as_bytes()).expect("sending");
    read_until_closed(&mut stream, PATIENCE).expect_refusal(413, "an 8 KiB chunk-size line");
    // 1000 one-byte chunks: 1000 bytes of body (under 1 KiB), 6 KB on the wire (over 5 KiB).
    let request = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        "1\r\na\r\n".repeat(1000)
    );
    server
        .exchange(request.as_bytes())
        .expect_refusal(413, "1000 one-byte chunks");
}

/// Row `chunked_body.rs`: a chunk size is hex digits only; upstream's decoder trimmed and
/// parsed `+b`, ` b` or `b ` as 11, sizes other parsers read differently.
#[test]
fn a_chunk_size_other_than_hex_digits_gets_400() {
    let server = TestServer::serving(patient_limits(), echo);
    for size in ["+b", " b", "b ", "0x5"] {
        let request = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\n{}\r\n0\r\n\r\n",
            size,
            "a".repeat(11)
        );
        server
            .exchange(request.as_bytes())
            .expect_refusal(400, size);
    }
}

/// Row `new_request`: the body is read whole on the connection's thread before the request
/// reaches `recv()`. Upstream handed over a request with a body over 1 KiB at once and read
/// the body from the application's thread, so a trickling client held that thread.
#[test]
fn the_body_is_read_whole_before_the_request_reaches_recv() {
    let server = TestServer::start(Limits {
        max_body: 4096,
        ..patient_limits()
    });
    let mut stream = server.connect();
    let body: Vec<u8> = (0..4096).map(|i| b'a' + (i % 26) as u8).collect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n")
        .expect("sending the head");
    stream.write_all(&body[..2048]).expect("sending half");
    assert!(
        server.recv_within(Duration::from_millis(300)).is_none(),
        "the request reached recv() with half its body"
    );
    stream.write_all(&body[2048..]).expect("sending the rest");
    let mut request = server.recv_within(PATIENCE).expect("the whole request");
    let mut received = Vec::new();
    request
        .as_reader()
        .read_to_end(&mut received)
        .expect("reading");
    assert!(received == body, "the body read differs from the one sent");
}

/// Row `new_request`: `Expect: 100-continue` is answered on the connection's thread before
/// the body is read; the application sees the request only with its body. Upstream sent
/// `100 Continue` only once the application asked for the body.
#[test]
fn expect_100_continue_is_answered_before_the_application_sees_the_request() {
    let server = TestServer::start(patient_limits());
    let mut stream = server.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .expect("sending the head");
    let interim = read_response(&mut stream);
    assert_eq!(interim.status(), Some(100), "{}", interim.text());
    assert!(server.recv_within(Duration::ZERO).is_none());
    stream.write_all(b"hello").expect("sending the body");
    let mut request = server.recv_within(PATIENCE).expect("the request");
    let mut body = String::new();
    request.as_reader().read_to_string(&mut body).expect("body");
    assert_eq!(body, "hello");
}

/// Row `new_request`: `Connection: upgrade` no longer hands the raw socket to the application
/// as the body: what follows the head is not the request's to read.
#[test]
fn connection_upgrade_does_not_hand_the_socket_to_the_application() {
    let server = TestServer::start(patient_limits());
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nnext bytes")
        .expect("sending");
    let mut request = server.recv_within(PATIENCE).expect("the request");
    let (done, body) = mpsc::channel();
    thread::spawn(move || {
        let mut read = Vec::new();
        request.as_reader().read_to_end(&mut read).ok();
        done.send(read).ok();
    });
    let body = body
        .recv_timeout(Duration::from_secs(2))
        .expect("reading the body waited on the socket");
    assert!(body.is_empty(), "{:?}", String::from_utf8_lossy(&body));
}

/// Row `reject`, `linger`: a client still sending a body after its refusal can go on sending
/// it, rather than meeting a reset. Closing with unread input made the kernel reset the
/// connection, which could destroy the 413 before the client read it; a client that sends
/// its whole body before reading saw "broken pipe" instead. The refusal is flushed before the
/// lingering (this client waits for it), not when the connection is dropped after it.
#[test]
fn a_client_still_sending_a_refused_body_is_not_reset() {
    let server = TestServer::serving(limits(), echo);
    for _ in 0..3 {
        let mut stream = server.connect();
        stream
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 131072\r\n\r\n")
            .expect("sending the head");
        let refusal = read_response(&mut stream); // sent as soon as the head is read
        assert_eq!(refusal.status(), Some(413), "{}", refusal.text());
        for _ in 0..16 {
            stream
                .write_all(&[b'a'; 8192])
                .expect("sending the body after the refusal");
            thread::sleep(Duration::from_millis(1)); // time for a reset to come back
        }
        let rest = read_until_closed(&mut stream, PATIENCE);
        assert!(rest.closed && rest.bytes.is_empty(), "{}", rest.text());
    }
}
