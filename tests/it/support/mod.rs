//! Test harness: runs the real `authkeys` binary on `127.0.0.1:0` with a real SQLite file in a
//! temporary directory (or its own PostgreSQL database: `store`), reads its ready line (the bound socket is the readiness signal, no
//! sleeps), and talks HTTP to it. Every failed expectation prints the request, the response
//! and the server's log. One file per concern: `server` (the process and how it is started),
//! `process` (children killed and reaped however a test ends), `http` (the client and its
//! replies), `db` (inspecting what the server stored, in either store), `store` (which store, and
//! the PostgreSQL databases); waits are all `eventually`.

mod db;
mod http;
mod process;
mod receiver;
mod server;
pub mod store;

pub use db::*;
pub use http::*;
pub use process::*;
pub use receiver::*;
pub use server::*;

use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_authkeys");
/// The fields of the contract's objects (API.md), in order.
pub const APP_FIELDS: &[&str] = &["id", "name", "created_at"];
pub const KEY_FIELDS: &[&str] = &[
    "id",
    "app",
    "description",
    "reusable",
    "ephemeral",
    "hint",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "uses",
    "machines",
    "tags",
    "metadata",
    "max_uses",
    "session_ttl",
    "idle_timeout",
    "uses_remaining",
    "rotated_from",
    "rotated_to",
];
pub const MACHINE_FIELDS: &[&str] = &[
    "id",
    "app",
    "key_id",
    "name",
    "ephemeral",
    "created_at",
    "expires_at",
    "last_seen_at",
    "tags",
    "metadata",
    "trust_policy_id",
    "idle_expires_at",
];

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghij";

/// Polls `check` every 10 ms until it returns `Some`, and returns that; panics naming `what`
/// once `timeout` has passed. The one way tests wait for something to happen.
#[track_caller]
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `eventually` for a condition with nothing to return.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    eventually(what, limit, || done().then_some(()));
}

/// Waits until connecting to `address` is refused: authkeys-http's accept thread notices a closed
/// server on its own schedule.
#[track_caller]
pub fn wait_until_refused(address: std::net::SocketAddr) {
    wait_for(
        &format!("{address} to refuse connections"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
    );
}
