//! Connections and the server's lifecycle (CHANGES-authkeys.md, rows `connection_table.rs`,
//! `task_pool.rs` `spawn`, `serve_connection`, `NotifyOnDrop`, `stop_accepting`,
//! `requests_in_progress` and `TCP_NODELAY`).

use std::io::{Cursor, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{echo, limits, read_response, read_until_closed, TestServer, PATIENCE};
use authkeys_http::{Limits, Request, Response};

/// Limits under which connections stay open while a test holds them.
fn patient_limits() -> Limits {
    Limits {
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..limits()
    }
}

/// Row accept loop and `admit`, `connection_table.rs`: at capacity, an idle kept-alive
/// connection is closed to make room, but a connection in the middle of a request never is:
/// then a new connection waits in the backlog until a place frees. Upstream accepted every
/// connection; a plain cap let idle connections lock everyone else out.
#[test]
fn at_capacity_an_idle_connection_makes_room_and_a_busy_one_never_does() {
    let server = TestServer::serving(
        Limits {
            max_connections: 1,
            ..patient_limits()
        },
        echo,
    );
    let mut idle = server.connect();
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("sending");
    assert_eq!(read_response(&mut idle).status(), Some(200)); // kept alive, now idle
    let reply = server.exchange(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let evicted = read_until_closed(&mut idle, PATIENCE);
    assert!(
        evicted.closed && evicted.bytes.is_empty(),
        "{}",
        evicted.text()
    );

    let mut busy = server.connect();
    busy.write_all(b"GET / HTTP/1.1\r\n")
        .expect("starting a request");
    let started = Instant::now();
    while server.server.requests_in_progress() != 1 {
        assert!(started.elapsed() < PATIENCE, "the request never started");
        thread::sleep(Duration::from_millis(10));
    }
    let mut waiting = server.connect();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("sending");
    let early = read_until_closed(&mut waiting, Duration::from_millis(500));
    assert!(
        early.bytes.is_empty() && !early.closed,
        "the busy connection's place was taken: {}",
        early.text()
    );
    busy.write_all(b"Connection: close\r\n\r\n")
        .expect("ending the request");
    assert_eq!(read_until_closed(&mut busy, PATIENCE).status(), Some(200));
    let reply = read_until_closed(&mut waiting, PATIENCE);
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

/// Row accept loop and `admit`, `connection_table.rs`: a connection over its client's
/// `max_connections_per_client` is closed at once, without a response; a peer that
/// `connection_client` exempts (a trusted proxy) is not counted.
#[test]
fn a_connection_over_its_clients_share_is_closed_unless_the_peer_is_exempt() {
    let share = |exempt: bool| Limits {
        max_connections_per_client: 2,
        connection_client: Arc::new(move |ip: IpAddr| if exempt { None } else { Some(ip) }),
        ..patient_limits()
    };
    for exempt in [false, true] {
        let server = TestServer::serving(share(exempt), echo);
        let held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = server.connect();
                stream
                    .write_all(b"GET / HTTP/1.1\r\n\r\n")
                    .expect("sending");
                assert_eq!(read_response(&mut stream).status(), Some(200));
                stream
            })
            .collect();
        let third = server.exchange(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        if exempt {
            assert_eq!(third.status(), Some(200), "{}", third.text());
        } else {
            assert!(
                third.closed && third.bytes.is_empty() && third.elapsed < Duration::from_secs(2),
                "a third connection from one client: {:?}",
                third
            );
        }
        drop(held);
    }
}

/// Row `task_pool.rs` `spawn`: a burst of new kept-alive connections is served in full.
/// Upstream counted a thread already woken for one connection as free for the next, so a
/// burst left a connection queued, unread, until another closed.
#[test]
fn a_burst_of_kept_alive_connections_is_served_in_full() {
    const BURST: usize = 5;
    for round in 0..20 {
        // each round needs a fresh pool, so a fresh server
        let server = TestServer::serving(patient_limits(), echo);
        let barrier = Arc::new(Barrier::new(BURST));
        let clients: Vec<_> = (0..BURST)
            .map(|_| {
                let mut stream = server.connect();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(3)))
                        .expect("a read timeout");
                    barrier.wait();
                    stream
                        .write_all(b"GET / HTTP/1.1\r\n\r\n")
                        .expect("sending");
                    let answered = read_response(&mut stream).status() == Some(200);
                    barrier.wait(); // hold the connection until every client has its answer
                    answered
                })
            })
            .collect();
        let answered = clients
            .into_iter()
            .map(|client| client.join().expect("a client"))
            .filter(|answered| *answered)
            .count();
        assert_eq!(
            answered, BURST,
            "round {}: a connection was never served",
            round
        );
    }
}

/// Row `serve_connection`: a connection has one request in flight at a time; the next one
/// it pipelined is read only once the first is answered (upstream queued them all).
#[test]
fn a_pipelined_request_waits_until_the_previous_one_is_answered() {
    let server = TestServer::start(patient_limits());
    let mut stream = server.connect();
    stream
        .write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        .expect("sending two requests");
    let first = server.recv_within(PATIENCE).expect("the first request");
    assert_eq!(first.url(), "/1");
    assert!(
        server.recv_within(Duration::from_millis(300)).is_none(),
        "the second request arrived before the first was answered"
    );
    first
        .respond(Response::from_string("one"))
        .expect("answering");
    let second = server.recv_within(PATIENCE).expect("the second request");
    assert_eq!(second.url(), "/2");
    second
        .respond(Response::from_string("two"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"one");
    assert_eq!(read_response(&mut stream).body(), b"two");
}

/// Row `NotifyOnDrop`, `respond`, `Drop`: answering (or dropping) a request after the server
/// and its connection thread are gone does not panic.
#[test]
fn answering_after_the_server_is_gone_does_not_panic() {
    let server = TestServer::start(patient_limits());
    let mut stream = server.connect();
    stream
        .write_all(b"GET /1 HTTP/1.1\r\n\r\n")
        .expect("sending");
    let answered = server.recv_within(PATIENCE).expect("a request");
    let mut other = server.connect();
    other
        .write_all(b"GET /2 HTTP/1.1\r\n\r\n")
        .expect("sending");
    let dropped = server.recv_within(PATIENCE).expect("another request");
    drop(server);
    // The connection threads notice the close within 200 ms and stop waiting for answers.
    thread::sleep(Duration::from_millis(600));
    answered
        .respond(Response::from_string("late"))
        .expect("answering");
    drop(dropped); // answers 500
    assert_eq!(read_response(&mut stream).body(), b"late");
    assert_eq!(read_response(&mut other).status(), Some(500));
}

/// Row `Server::stop_accepting`: new connections are refused while a request already
/// received can still be answered.
#[test]
fn stop_accepting_refuses_new_connections_but_answers_received_requests() {
    let server = TestServer::start(patient_limits());
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("sending");
    let request = server.recv_within(PATIENCE).expect("a request");
    server.server.stop_accepting();
    let stopped = Instant::now();
    loop {
        // The accept thread ends within its 100 ms slot wait, closing the listener; until then
        // a connection may still land in the backlog, where it is never served.
        match TcpStream::connect(server.address) {
            Err(_) => break,
            Ok(mut late) => {
                late.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .ok();
                let reply = read_until_closed(&mut late, Duration::from_millis(300));
                assert!(reply.bytes.is_empty(), "served: {}", reply.text());
            }
        }
        assert!(stopped.elapsed() < PATIENCE, "still accepting connections");
    }
    request
        .respond(Response::from_string("answered"))
        .expect("answering");
    assert_eq!(read_response(&mut stream).body(), b"answered");
}

/// Row `InProgress`, `Server::requests_in_progress`: a request counts from its first byte,
/// while its body is still arriving, until it is answered.
#[test]
fn a_request_counts_as_in_progress_from_its_first_byte_until_answered() {
    let server = TestServer::start(patient_limits());
    assert_eq!(server.server.requests_in_progress(), 0);
    let mut stream = server.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello")
        .expect("sending half a request");
    let started = Instant::now();
    while server.server.requests_in_progress() != 1 {
        assert!(started.elapsed() < PATIENCE, "the request never counted");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(server.recv_within(Duration::from_millis(100)).is_none());
    stream.write_all(b"world").expect("sending the rest");
    let request = server.recv_within(PATIENCE).expect("the request");
    assert_eq!(server.server.requests_in_progress(), 1);
    request.respond(Response::empty(204)).expect("answering");
    assert_eq!(server.server.requests_in_progress(), 0);
}

/// 8 KiB of text: more than the connection's 1 KiB write buffer.
fn large(_: &mut Request) -> Response<Cursor<Vec<u8>>> {
    Response::from_data(vec![b'x'; 8 * 1024])
}

/// Row accept loop `TCP_NODELAY`: a response larger than the 1 KiB write buffer is not held
/// back by Nagle's algorithm until the client's delayed ACK (about 45 ms per request on a
/// kept-alive connection instead of about 1: Linux delays an ACK at least 40 ms). The bound
/// is far from both.
#[test]
fn a_response_larger_than_the_write_buffer_is_not_held_back_by_nagle() {
    let server = TestServer::serving(patient_limits(), large);
    let mut stream = server.connect();
    stream.set_nodelay(true).expect("client nodelay");
    let mut times: Vec<Duration> = (0..11)
        .map(|_| {
            let started = Instant::now();
            stream
                .write_all(b"GET / HTTP/1.1\r\n\r\n")
                .expect("sending");
            let reply = read_response(&mut stream);
            assert_eq!(reply.body().len(), 8 * 1024, "{}", reply.text());
            started.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(30),
        "median {:?} of {:?}",
        median,
        times
    );
}
