//! authkeys: issues, verifies and revokes pre-authentication keys for machines.
//!
//! The binary is a thin CLI over this library; a Rust test suite can start a throwaway
//! server in one call:
//!
//! ```no_run
//! let server = authkeys::Server::start_throwaway().expect("starting authkeys");
//! let (url, admin_token) = (server.url(), server.admin_token().unwrap());
//! # let _ = (url, admin_token);
//! // ... talk HTTP to `url`; the server stops when `server` is dropped.
//! ```

pub mod authority;
pub mod cache;
pub mod cli;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod store;

pub use runtime::config::Config;
pub use runtime::server::Server;
pub use store::Database;
