//! authkeys: issues, verifies and revokes pre-authentication keys for machines.
//!
//! The library is the server; the `authkeys` binary (`src/main.rs`, `src/cli/`) is a CLI over
//! it. The public API is what a library user needs and no more: `Server` and its `Config`
//! (with `config`'s defaults), the store choice `Database`, the HTTP seam (`http::Listener`
//! carrying any `http::Handler` from `Request` to `Response`), the token types, and `ops`, the
//! operations the CLI runs without a server. Everything else is crate-private, so the compiler
//! reports what nobody uses. A Rust test suite can start a throwaway server in one call:
//!
//! ```no_run
//! let server = authkeys::Server::start_throwaway().expect("starting authkeys");
//! let (url, admin_token) = (server.url(), server.admin_token().unwrap());
//! # let _ = (url, admin_token);
//! // ... talk HTTP to `url`; the server stops when `server` is dropped.
//! ```

#![forbid(unsafe_code)]

mod authority;
mod cache;
mod domain;
pub mod http;
mod metrics;
mod oidc;
pub mod ops;
mod runtime;
mod store;

pub use authority::seed::Seed;
pub use domain::error::StartError;
pub use domain::github_keys::GithubKeys;
pub use domain::model::Timestamp;
pub use domain::page::MAX_LIMIT as MAX_PAGE_LIMIT;
pub use domain::token::{Secret, TokenHash, TokenKind};
pub use domain::validate::MAX_MACHINE_NAME_CHARS;
pub use oidc::Settings as OidcSettings;
pub use oidc::dev_issuer::{DevAlg, DevClaims, DevIssuer};
/// `Config` and the defaults of its fields.
pub use runtime::config;
pub use runtime::config::Config;
pub use runtime::server::Server;
/// Webhook delivery settings (`Config::webhooks`).
pub use runtime::webhooks;
pub use store::{Database, PgUrl};
