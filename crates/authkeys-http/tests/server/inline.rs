//! The inline handler (CHANGES-authkeys.md, row `InlineHandler`): requests it answers are
//! written by the connection's own thread and never reach `recv()`; requests it gives back
//! reach `recv()` whole, in order, one in flight per connection.

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{limits, read_response, TestServer, PATIENCE};
use authkeys_http::{Limits, Request, Response};

/// Answers `/inline` with the body it was sent, prefixed; gives back every other request after
/// looking at its body, as authkeys does before it finds it needs its database, and leaves a
/// note of what it saw with `/handed` ones.
fn inline(mut request: Request) -> Option<Request> {
    if request.url() != "/inline" {
        assert!(request.body().len() <= 1024, "bodies are bounded");
        if request.url() == "/handed" {
            let seen = format!("saw {} bytes", request.body().len());
            request.hand_over(Box::new(seen));
        }
        return Some(request);
    }
    let body = [b"inline: ".as_slice(), request.body()].concat();
    request
        .respond(Response::from_data(body))
        .expect("answering");
    None
}

fn server() -> TestServer {
    let limits = Limits {
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..limits()
    };
    TestServer::with_inline(limits, Arc::new(inline))
}

#[test]
fn a_request_answered_inline_never_reaches_recv_and_one_given_back_arrives_whole() {
    let server = server();
    let mut stream = server.connect();
    stream
        .write_all(b"POST /inline HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        .expect("sending");
    // Nobody calls `recv`: the connection's thread wrote this.
    assert_eq!(read_response(&mut stream).body(), b"inline: hello");
    assert!(server.recv_within(Duration::from_millis(200)).is_none());
    assert_eq!(server.server.requests_in_progress(), 0);

    stream
        .write_all(b"POST /queued HTTP/1.1\r\nContent-Length: 5\r\n\r\nworld")
        .expect("sending");
    let mut queued = server
        .recv_within(PATIENCE)
        .expect("the request given back");
    assert_eq!(queued.url(), "/queued");
    assert_eq!(queued.body(), b"world");
    let mut read = Vec::new();
    queued
        .as_reader()
        .read_to_end(&mut read)
        .expect("reading the body");
    assert_eq!(read, b"world", "looking at the body left it to be read");
    assert_eq!(server.server.requests_in_progress(), 1);
    queued
        .respond(Response::from_string("from recv"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"from recv");
    assert_eq!(server.server.requests_in_progress(), 0);
}

/// What the inline handler hands over with a request it gives back reaches the worker with
/// that request only, once.
#[test]
fn what_the_inline_handler_hands_over_reaches_the_worker_with_its_request() {
    let server = server();
    let mut stream = server.connect();
    stream
        .write_all(b"POST /handed HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        .expect("sending");
    let mut handed = server
        .recv_within(PATIENCE)
        .expect("the request given back");
    let note = handed.take_handed_over().expect("the handler's note");
    assert_eq!(
        note.downcast_ref::<String>().map(String::as_str),
        Some("saw 5 bytes")
    );
    assert!(handed.take_handed_over().is_none(), "taken once");
    handed
        .respond(Response::from_string("ok"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"ok");

    stream
        .write_all(b"GET /queued HTTP/1.1\r\n\r\n")
        .expect("sending");
    let mut queued = server
        .recv_within(PATIENCE)
        .expect("the request given back");
    assert!(
        queued.take_handed_over().is_none(),
        "nothing was handed over with it"
    );
    queued
        .respond(Response::from_string("ok"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"ok");
}

/// Pipelined requests keep their order whichever thread answers each: the one after a request
/// given back is read only once that one is answered, even if it could be answered inline.
#[test]
fn pipelined_requests_keep_their_order_across_inline_and_queued_answers() {
    let server = server();
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /inline HTTP/1.1\r\n\r\nGET /queued HTTP/1.1\r\n\r\nGET /inline HTTP/1.1\r\n\r\n",
        )
        .expect("sending three requests");
    assert_eq!(read_response(&mut stream).body(), b"inline: ");
    let queued = server.recv_within(PATIENCE).expect("the second request");
    // The third is not answered while the second waits.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a timeout");
    let mut byte = [0u8; 1];
    assert!(stream.read(&mut byte).is_err(), "answered out of order");
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    queued
        .respond(Response::from_string("second"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"second");
    assert_eq!(read_response(&mut stream).body(), b"inline: ");
}

/// Requests answered inline go on while every thread calling `recv` is busy: nothing answered
/// inline waits for them.
#[test]
fn requests_answered_inline_are_not_held_up_by_busy_workers() {
    let server = server();
    let mut blocked = server.connect();
    blocked
        .write_all(b"GET /queued HTTP/1.1\r\n\r\n")
        .expect("sending");
    let held = server.recv_within(PATIENCE).expect("the queued request");
    let started = Instant::now();
    let answered: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = server.connect();
            thread::spawn(move || {
                for _ in 0..10 {
                    stream
                        .write_all(b"GET /inline HTTP/1.1\r\n\r\n")
                        .expect("sending");
                    assert_eq!(read_response(&mut stream).status(), Some(200));
                }
            })
        })
        .collect();
    for client in answered {
        client.join().expect("a client");
    }
    assert!(started.elapsed() < PATIENCE);
    held.respond(Response::from_string("late"))
        .expect("answering");
    assert_eq!(read_response(&mut blocked).body(), b"late");
}
