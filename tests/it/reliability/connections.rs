//! Connection shares: no client address can lock others out by holding connections. Flooders
//! and victims are different loopback source addresses (raw.rs), so the server sees
//! different clients.

use super::raw::Conn;
use crate::support::{Options, TestServer, wait_for};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A generous bound for a request on a loaded machine; a locked-out client waits for the idle
/// timeout (10 s) instead.
const PROMPT: Duration = Duration::from_secs(1);

/// One `GET /healthz` on `conn`, which must be answered 200 within `PROMPT`.
#[track_caller]
fn prompt_healthz(conn: &mut Conn, who: &str) {
    let started = Instant::now();
    let reply = conn.send("GET", "/healthz", &[], b"");
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{who}: {reply:?}");
    assert!(took < PROMPT, "{who} waited {took:?} for /healthz");
}

/// Floods the server from `source` until `stop`: 24 connections sending a request every
/// 2 s (reopened when closed) and silent connections opened 3 at a time, kept open, up to
/// 300. `opened` counts the connections made.
fn flood(url: String, source: IpAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let open = || {
        opened.fetch_add(1, Ordering::SeqCst);
        Conn::try_open(&url, Some(source)).ok()
    };
    let mut active: Vec<Option<Conn>> = (0..24).map(|_| open()).collect();
    let mut silent = Vec::new();
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        let slot = &mut active[turn % 24];
        let answered = slot
            .as_mut()
            .is_some_and(|conn| conn.try_send("GET", "/healthz", &[], b"").is_ok());
        if !answered {
            *slot = open();
        }
        if silent.len() < 300 {
            silent.extend((0..3).filter_map(|_| open()));
        }
        turn += 1;
        thread::sleep(Duration::from_millis(2000 / 24));
    }
}

#[test]
fn flooding_addresses_cannot_lock_another_client_out() {
    let server = TestServer::start_with(Options::default().arg("--max-connections", "64"));
    let stop = Arc::new(AtomicBool::new(false));
    // Two flooders: each past its share (32), together past the total (64).
    let flooders: Vec<(Arc<AtomicUsize>, thread::JoinHandle<()>)> = [2, 4]
        .into_iter()
        .map(|last| {
            let opened = Arc::new(AtomicUsize::new(0));
            let (url, stop, count) = (server.url.clone(), Arc::clone(&stop), Arc::clone(&opened));
            let handle = thread::spawn(move || flood(url, loopback(last), stop, count));
            (opened, handle)
        })
        .collect();
    wait_for("the flood to get going", Duration::from_secs(30), || {
        flooders
            .iter()
            .all(|(opened, _)| opened.load(Ordering::SeqCst) >= 100)
    });

    let victim = loopback(3);
    let mut kept_alive = Conn::open_from(&server.url, victim);
    for n in 0..20 {
        prompt_healthz(
            &mut Conn::open_from(&server.url, victim),
            &format!("new connection {n}"),
        );
        prompt_healthz(
            &mut kept_alive,
            &format!("kept-alive connection, request {n}"),
        );
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    for (_, handle) in flooders {
        handle.join().expect("a flooder");
    }
    assert!(
        server.log().contains("over its client's share"),
        "{}",
        server.log()
    );
}

/// Sends the head of a login with a 20-byte body and waits for its 100 Continue, which shows
/// the server has read the head: the request is in progress.
fn start_login(conn: &mut Conn) {
    let head = "POST /v1/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Content-Length: 20\r\nExpect: 100-continue\r\n\r\n";
    conn.write_raw(head.as_bytes())
        .expect("sending a request head");
    let interim = conn.read_reply().expect("reading 100 Continue");
    assert_eq!(interim.status, 100, "{interim:?}");
}

#[test]
fn at_capacity_idle_connections_are_closed_first_and_a_request_in_progress_is_not() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--max-connections", "4")
            .arg("--http-request-timeout-ms", "30000"),
    );
    let url = &server.url;
    // The oldest connection is in the middle of a request: it must not be cut.
    let body = br#"{"auth_key": "nope"}"#;
    let mut in_progress = Conn::open_from(url, loopback(2));
    start_login(&mut in_progress);
    in_progress
        .write_raw(&body[..5])
        .expect("sending part of the body");
    // Three idle ones: two kept alive after a request, one silent since it opened.
    let mut kept_alive = Conn::open_from(url, loopback(4));
    prompt_healthz(&mut kept_alive, "the first kept-alive connection");
    let mut silent = Conn::open_from(url, loopback(5));
    let mut kept_alive_too = Conn::open_from(url, loopback(6));
    prompt_healthz(&mut kept_alive_too, "the second kept-alive connection");

    // Every place is taken: each newcomer is served at once, an idle connection making room.
    // Newcomers then start a request of their own and hold their place, so only the three
    // idle connections can make room.
    let mut newcomers = Vec::new();
    for last in [3, 7, 8] {
        let mut newcomer = Conn::open_from(url, loopback(last));
        prompt_healthz(&mut newcomer, &format!("a newcomer from 127.0.0.{last}"));
        start_login(&mut newcomer);
        newcomers.push(newcomer);
    }
    for (what, conn) in [
        ("the first kept-alive connection", &mut kept_alive),
        ("the silent connection", &mut silent),
        ("the second kept-alive connection", &mut kept_alive_too),
    ] {
        assert!(
            conn.closed_within(Duration::from_secs(5)),
            "{what} was not closed"
        );
    }
    in_progress
        .write_raw(&body[5..])
        .expect("sending the rest of the body");
    let reply = in_progress
        .read_reply()
        .expect("the request in progress was cut");
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.code(), Some("invalid_auth_key"), "{reply:?}");
}

#[test]
fn a_connection_over_its_address_share_is_closed_at_once_unless_from_a_trusted_proxy() {
    let options = Options::default()
        .arg("--max-connections", "8")
        .arg("--max-connections-per-client", "2");
    let server = TestServer::start_with(options.clone());
    let flooder = loopback(2);
    let mut held: Vec<Conn> = (0..2)
        .map(|_| Conn::open_from(&server.url, flooder))
        .collect();
    for (n, conn) in held.iter_mut().enumerate() {
        prompt_healthz(conn, &format!("connection {n} within the share"));
    }
    let mut over = Conn::open_from(&server.url, flooder);
    let started = Instant::now();
    assert!(
        over.closed_within(Duration::from_secs(5)),
        "a third connection was kept"
    );
    assert!(
        started.elapsed() < PROMPT,
        "refused only after {:?}",
        started.elapsed()
    );
    prompt_healthz(
        &mut Conn::open_from(&server.url, loopback(3)),
        "another address",
    );
    drop(held.pop());
    // The freed place is the flooder's again (its thread ends promptly, but not instantly).
    wait_for(
        "a freed place to be reusable",
        Duration::from_secs(5),
        || {
            let mut conn = Conn::open_from(&server.url, flooder);
            conn.try_send("GET", "/healthz", &[], b"").is_ok()
        },
    );

    // A trusted proxy carries many clients: it has no share.
    let proxied = TestServer::start_with(options.arg("--trusted-proxy", "127.0.0.2/32"));
    let mut proxy: Vec<Conn> = (0..6)
        .map(|_| Conn::open_from(&proxied.url, flooder))
        .collect();
    for (n, conn) in proxy.iter_mut().enumerate() {
        prompt_healthz(conn, &format!("proxy connection {n}"));
    }
}
