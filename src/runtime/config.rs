//! The server's configuration: one plain struct, built by the CLI (or a test) and passed
//! explicitly. The admin token is a `Secret`, so printing a `Config` never shows it.

use crate::authority::seed::Seed;
use crate::domain::token::Secret;
use crate::http;
use crate::store::Database;
use std::time::Duration;

pub use crate::http::throttle::{
    DEFAULT_BURST as DEFAULT_THROTTLE_BURST, DEFAULT_PER_MINUTE as DEFAULT_THROTTLE_PER_MINUTE,
    Limits as ThrottleLimits,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// How long after login an ephemeral machine is logged out.
    pub ephemeral_ttl: Duration,
    /// How often expired machines are removed and usage stamps written.
    pub sweep_interval: Duration,
    /// `AUTHKEYS_ADMIN_TOKEN`; when absent one is generated on first start.
    pub admin_token: Option<Secret>,
    /// Threads answering requests.
    pub workers: usize,
    /// Apps and keys to create at start if they do not exist (`--seed FILE`).
    pub seed: Option<Seed>,
    /// Failed authentication attempts allowed per client address before it gets 429.
    pub login_failures: ThrottleLimits,
    /// Connection caps, trusted proxies and HTTP timeouts.
    pub http: http::Settings,
}

pub const DEFAULT_DB: &str = "./authkeys.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7373";
pub const DEFAULT_EPHEMERAL_TTL_SECS: u64 = 3600;
pub const DEFAULT_SWEEP_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_WORKERS: usize = 8;

impl Default for Config {
    fn default() -> Config {
        Config {
            database: Database::from_arg(DEFAULT_DB),
            listen: DEFAULT_LISTEN.to_string(),
            ephemeral_ttl: Duration::from_secs(DEFAULT_EPHEMERAL_TTL_SECS),
            sweep_interval: Duration::from_secs(DEFAULT_SWEEP_INTERVAL_SECS),
            admin_token: None,
            workers: DEFAULT_WORKERS,
            seed: None,
            login_failures: ThrottleLimits::default(),
            http: http::Settings::default(),
        }
    }
}

impl Config {
    /// A throwaway instance for tests: in-memory database on a free loopback port, with a
    /// generated admin token.
    pub(crate) fn throwaway() -> Config {
        Config {
            database: Database::Memory,
            listen: "127.0.0.1:0".to_string(),
            ..Config::default()
        }
    }
}
