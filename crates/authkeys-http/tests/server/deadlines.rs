//! Read and write deadlines (CHANGES-authkeys.md, rows `wait_for_request`/`deadline.rs` and
//! accept loop `write_timeout`). `limits()` gives 300 ms for each.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::{echo, limits, read_until_closed, trickle, TestServer, PATIENCE};
use authkeys_http::{Response, StatusCode};

/// Row `wait_for_request`: a connection that never starts a request is closed, without a
/// response, once `idle_timeout` passes (upstream waited forever).
#[test]
fn a_silent_connection_is_closed_without_a_response() {
    let server = TestServer::serving(limits(), echo);
    let reply = read_until_closed(&mut server.connect(), PATIENCE);
    assert!(
        reply.closed && reply.bytes.is_empty(),
        "after {:?} (closed: {}): {}",
        reply.elapsed,
        reply.closed,
        reply.text()
    );
    assert!(
        reply.elapsed >= Duration::from_millis(250),
        "{:?}",
        reply.elapsed
    );
}

/// Row `wait_for_request`, `refined_tcp_stream.rs` `read`: a head trickled a byte every
/// 50 ms gets 408 once `request_timeout` has passed since its first byte. Each read waits
/// only for the time left: a per-read timeout of 300 ms would never fire here.
#[test]
fn a_head_trickled_past_request_timeout_gets_408() {
    let server = TestServer::serving(limits(), echo);
    let mut stream = server.connect();
    let head = format!("GET / HTTP/1.1\r\nX-Slow: {}", "a".repeat(200)).into_bytes();
    let trickler = trickle(
        stream.try_clone().expect("a clone"),
        head,
        Duration::from_millis(50),
    );
    let reply = read_until_closed(&mut stream, PATIENCE);
    reply.expect_refusal(408, "a head trickled for 10 s");
    trickler.join().ok();
}

/// Row `wait_for_request`: the deadline covers the body too, and the trickled request never
/// reaches `recv()`.
#[test]
fn a_body_trickled_past_request_timeout_gets_408() {
    let server = TestServer::start(limits());
    let mut stream = server.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 200\r\n\r\n")
        .expect("sending the head");
    let trickler = trickle(
        stream.try_clone().expect("a clone"),
        vec![b'a'; 200],
        Duration::from_millis(50),
    );
    let reply = read_until_closed(&mut stream, PATIENCE);
    reply.expect_refusal(408, "a body trickled for 10 s");
    assert!(server.recv_within(Duration::ZERO).is_none());
    trickler.join().ok();
}

/// Row accept loop `write_timeout`: writing a response to a client that never reads gives up
/// after `write_timeout`, freeing the application's thread (upstream blocked forever).
#[test]
fn a_response_to_a_client_that_never_reads_gives_up_after_write_timeout() {
    let server = TestServer::start(limits());
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("sending");
    let request = server.recv_within(PATIENCE).expect("the request");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let endless = std::io::repeat(b'x').take(1 << 30);
        let response = Response::new(StatusCode(200), vec![], endless, Some(1 << 30), None);
        done.send(request.respond(response).is_err()).ok();
    });
    let failed = finished
        .recv_timeout(PATIENCE)
        .expect("respond() still blocked 5 s after the client stopped reading");
    assert!(failed, "1 GiB was written to a client that reads nothing");
    drop(stream);
}
