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

pub mod admin_token;
pub mod app_cache;
pub mod authority;
pub mod cli;
pub mod config;
pub mod error;
pub mod hot_cache;
pub mod http;
pub mod json;
pub mod metrics;
pub mod model;
pub mod page;
pub mod seed;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod throttle;
pub mod token;
pub mod usage;
pub mod validate;

pub use config::Config;
pub use server::Server;
pub use store::Database;
