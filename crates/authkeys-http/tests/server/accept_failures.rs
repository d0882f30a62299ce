//! The accept thread survives running out of file descriptors or threads (CHANGES-authkeys.md,
//! rows `accept_failed`, `RefinedTcpStream::new` and `add_thread`). The server runs in a child
//! process, this test binary run again under a resource limit, so that only the server runs
//! out; this process is its client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{echo, limits, read_response, read_until_closed, TestServer};
use authkeys_http::Limits;

/// Set in the child's environment: serve instead of testing.
const CHILD: &str = "TINY_HTTP_TEST_SERVE_UNDER_A_LIMIT";
/// The child's descriptor limits: room for about fifteen connections, three descriptors each
/// (the accepted socket, the connection table's handle on it, and the duplicate the connection
/// reads from). They cover the three remainders modulo 3, so whatever the child's other
/// descriptors, the last free one goes to `accept` under one limit, to the table's handle under
/// another, and to the read duplicate under the third: each way of running out happens.
const FD_LIMITS: [u32; 3] = [48, 49, 50];

/// What the child logs when `accept` itself, or either duplication, fails.
const ACCEPT_FAILED: &str = "accepting a connection failed";
/// What it adds when duplicating a socket for the connection table fails: the same wait, and
/// one log line per run of failures, not one per queued connection.
const TABLE_DUP_FAILED: &str = "accepting a connection failed: duplicating its socket failed";

/// Rows `accept_failed` and `RefinedTcpStream::new`: while accept fails with EMFILE (or
/// duplicating an accepted socket does), the accept loop logs once, retries every 100 ms
/// without spinning, and serves again once descriptors are free. Upstream ended the accept
/// loop at the first failed accept, and panicked the accept thread at a failed duplication:
/// either way the server never accepted again.
#[test]
fn running_out_of_file_descriptors_is_survived_without_spinning() {
    if std::env::var_os(CHILD).is_some() {
        return serve_until_stdin_closes();
    }
    // One child per limit, at the same time: each is its own process with its own limit.
    let runs: Vec<_> = FD_LIMITS
        .iter()
        .map(|&fd_limit| {
            thread::spawn(move || {
                survives_running_out(ChildServer::start(
                    "running_out_of_file_descriptors_is_survived_without_spinning",
                    &format!("ulimit -n {}", fd_limit),
                ))
            })
        })
        .collect();
    let logs: Vec<String> = runs
        .into_iter()
        .map(|run| run.join().expect("a run"))
        .collect();
    for failure in [ACCEPT_FAILED, TABLE_DUP_FAILED] {
        assert!(
            logs.iter().any(|log| log.contains(failure)),
            "no run logged {:?}:\n{}",
            failure,
            logs.join("\n---\n")
        );
    }
}

/// Runs `server` out of descriptors and back; returns its log.
fn survives_running_out(server: ChildServer) -> String {
    let address = server.address;
    let get = b"GET / HTTP/1.1\r\n\r\n";

    // 60 kept-alive connections need 180 descriptors: some are served, the others are refused
    // or wait in the backlog while accept fails.
    let clients: Vec<_> = (0..60)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connecting");
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("a read timeout");
                stream.write_all(get).ok(); // a refused connection may be closed already
                let answered = read_response(&mut stream).status() == Some(200);
                (stream, answered)
            })
        })
        .collect();
    let connections: Vec<(TcpStream, bool)> = clients
        .into_iter()
        .map(|client| client.join().expect("a client"))
        .collect();
    let answered = connections.iter().filter(|(_, ok)| *ok).count();
    assert!(
        answered > 0 && answered < connections.len(),
        "{} of {} answered: the limit was not what the test expects\n{}",
        answered,
        connections.len(),
        server.log()
    );
    server.wait_for_log_of_any(&[ACCEPT_FAILED]);

    // While out of descriptors the accept loop waits, it does not spin.
    let busy = server.cpu_share_over(Duration::from_secs(1));
    assert!(
        busy < 0.5,
        "{:.0}% of a core while out of descriptors",
        busy * 100.0
    );
    // Logged once per run of failures, not ten times a second. A second run may start as
    // queued connections are accepted and closed.
    let logged = server.log().matches(ACCEPT_FAILED).count();
    assert!(logged <= 2, "logged {} times:\n{}", logged, server.log());

    drop(connections);
    let recovering = Instant::now();
    loop {
        let mut stream = TcpStream::connect(address).expect("connecting");
        stream
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .ok();
        if read_until_closed(&mut stream, Duration::from_secs(2)).status() == Some(200) {
            break;
        }
        assert!(
            recovering.elapsed() < Duration::from_secs(20),
            "not serving 20 s after the clients left:\n{}",
            server.log()
        );
    }
    if server.log().contains(ACCEPT_FAILED) {
        server.wait_for_log_of_any(&["accepting connections again"]);
    }
    server.log()
}

/// Row `task_pool.rs` `add_thread`: a connection whose thread cannot be created is closed
/// unanswered and logged, and the server goes on serving with the threads it has. Upstream's
/// `thread::spawn` panicked, killing the accept thread: the server never accepted again.
#[test]
fn a_connection_thread_that_cannot_start_costs_that_connection_only() {
    if std::env::var_os(CHILD).is_some() {
        return serve_until_stdin_closes();
    }
    // Every thread started from here on asks for a 64 MiB stack, and all threads allocate from
    // one arena (a new thread's own arena would need 64 MiB of address space too)...
    let server = ChildServer::start(
        "a_connection_thread_that_cannot_start_costs_that_connection_only",
        "export RUST_MIN_STACK=67108864 MALLOC_ARENA_MAX=1",
    );
    let get = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let mut warm_up = TcpStream::connect(server.address).expect("connecting");
    warm_up.write_all(get).expect("sending");
    let reply = read_until_closed(&mut warm_up, Duration::from_secs(5));
    assert_eq!(reply.status(), Some(200), "{}", server.log());
    // ...which, once the server runs with its idle pool threads, no longer fits.
    let room_kib = server.status_kib("VmSize") + 16 * 1024;
    let limited = Command::new("prlimit")
        .arg(format!("--pid={}", server.child.id()))
        .arg(format!("--as={}", room_kib * 1024))
        .status()
        .expect("running prlimit");
    assert!(limited.success(), "prlimit failed");

    // Kept-alive connections take the pool's threads until one needs a new thread: that one
    // is closed unanswered.
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() < 20,
            "20 connections served: no thread failed to start"
        );
        let mut stream = TcpStream::connect(server.address).expect("connecting");
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").ok();
        let reply = read_response(&mut stream);
        match reply.status() {
            Some(200) => held.push(stream),
            _ => break reply,
        }
    };
    assert!(
        refused.closed && refused.bytes.is_empty(),
        "after {} served: {}",
        held.len(),
        refused.text()
    );
    server.wait_for_log_of_any(&["could not start a connection thread"]);

    drop(held);
    let recovering = Instant::now();
    loop {
        let mut stream = TcpStream::connect(server.address).expect("connecting");
        stream.write_all(get).ok();
        if read_until_closed(&mut stream, Duration::from_secs(2)).status() == Some(200) {
            break;
        }
        assert!(
            recovering.elapsed() < Duration::from_secs(10),
            "not serving 10 s after the held connections closed:\n{}",
            server.log()
        );
    }
}

/// The child's side: serve on 127.0.0.1:0, print the address, log to stderr, and stop when
/// the parent closes stdin.
fn serve_until_stdin_closes() {
    log::set_logger(&StderrLogger).expect("a logger");
    log::set_max_level(log::LevelFilter::Info);
    let server = TestServer::serving(
        Limits {
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_connections: 1000,
            ..limits()
        },
        echo,
    );
    println!("listening on {}", server.address);
    io::stdout().flush().expect("flushing stdout");
    io::stdin().read_to_end(&mut Vec::new()).ok();
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

/// This test binary, run again as the server under a low descriptor limit.
struct ChildServer {
    child: Child,
    address: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl ChildServer {
    /// Runs `test`, a test of this module (which must call `serve_until_stdin_closes` in the
    /// child), after the shell command `setup`.
    fn start(test: &str, setup: &str) -> ChildServer {
        let exe = std::env::current_exe().expect("the test binary");
        // libtest names a test by its path without the crate: `accept_failures::NAME`.
        let module = module_path!().split_once("::").expect("a module").1;
        let test = format!("{module}::{test}");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{setup} && exec \"$0\" \"$@\""))
            .arg(exe)
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the child server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let address = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split_once("listening on ")?.1.parse().ok())
            .unwrap_or_else(|| panic!("the child never listened:\n{}", log.lock().unwrap()));
        ChildServer {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for one of `lines` in the log, which the child writes a little after it acts.
    fn wait_for_log_of_any(&self, lines: &[&str]) {
        let started = Instant::now();
        while !lines.iter().any(|line| self.log().contains(line)) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "none of {:?} logged:\n{}",
                lines,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The share of one core the child used over `period`.
    fn cpu_share_over(&self, period: Duration) -> f64 {
        let before = self.cpu_ticks();
        let started = Instant::now();
        thread::sleep(period);
        let ticks = self.cpu_ticks() - before;
        ticks as f64 / clock_ticks_per_second() / started.elapsed().as_secs_f64()
    }

    /// A `/proc/<pid>/status` field, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading the child's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix(" kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {} in {}", field, status))
    }

    /// utime + stime from /proc/<pid>/stat.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("reading the child's /proc stat");
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the child stops serving
        let stopping = Instant::now();
        while stopping.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("running getconf CLK_TCK");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}
