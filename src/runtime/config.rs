//! The server's configuration: one plain struct, built by the CLI (or a test) and passed
//! explicitly. The admin token is a `Secret`, so printing a `Config` never shows it.

use crate::authority::seed::Seed;
use crate::domain::github_keys::GithubKeys;
use crate::domain::token::Secret;
use crate::http;
use crate::store::{self, Database};
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
    /// How long a statement waits for another process's SQLite lock before failing.
    pub busy_timeout: Duration,
    /// PostgreSQL: read connections per node, at most (`--pg-pool-size`).
    pub pg_pool_size: usize,
    /// GitLab's Token Revocation API token (`--revocation-api-token`); its routes are absent
    /// without it.
    pub revocation_api_token: Option<Secret>,
    /// GitHub secret scanning's signing keys (`--github-secret-scanning-keys`); its route is
    /// absent without them.
    pub github_secret_scanning_keys: Option<GithubKeys>,
    /// How long audit events are kept (`--audit-retention`); the sweeper deletes older ones.
    pub audit_retention: Duration,
    /// Webhook delivery: timeouts, how often to look for events, back-off.
    pub webhooks: crate::runtime::webhooks::Delivery,
    /// The least `session_ttl` and `idle_timeout` a key may have (tests lower it).
    pub min_key_timeout_secs: u64,
    /// How OIDC issuers are reached and trusted (`--oidc-*`).
    pub oidc: crate::oidc::Settings,
    /// Whether hot whoami and verify answers are kept in memory (`--cache on|off`); off, every
    /// request reads the database (and, on PostgreSQL, the node holds no lease).
    pub cache: bool,
    /// With several nodes on PostgreSQL: how long a node's lease to use its cache runs, the
    /// longest a revocation waits for a node that stopped answering (tests shorten it).
    pub node_lease: Duration,
}

pub use crate::oidc::{
    DEFAULT_FETCH_TIMEOUT as DEFAULT_OIDC_FETCH_TIMEOUT,
    DEFAULT_JWKS_MAX_AGE as DEFAULT_OIDC_JWKS_MAX_AGE,
    DEFAULT_REFETCH_INTERVAL as DEFAULT_OIDC_REFETCH_INTERVAL,
};
pub const DEFAULT_DB: &str = "./authkeys.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7373";
pub const DEFAULT_EPHEMERAL_TTL_SECS: u64 = 3600;
pub const DEFAULT_SWEEP_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_WORKERS: usize = 8;
/// 90 days.
pub const DEFAULT_AUDIT_RETENTION_SECS: u64 = 90 * 24 * 3600;
/// How long a statement waits for another process's lock on the database file.
pub const DEFAULT_BUSY_TIMEOUT: Duration = store::BUSY_TIMEOUT;
/// Read connections per node on PostgreSQL (`--pg-pool-size`): one per worker thread.
pub const DEFAULT_PG_POOL_SIZE: usize = store::DEFAULT_PG_POOL_SIZE;

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
            busy_timeout: store::BUSY_TIMEOUT,
            pg_pool_size: DEFAULT_PG_POOL_SIZE,
            revocation_api_token: None,
            github_secret_scanning_keys: None,
            audit_retention: Duration::from_secs(DEFAULT_AUDIT_RETENTION_SECS),
            webhooks: crate::runtime::webhooks::Delivery::default(),
            min_key_timeout_secs: crate::domain::validate::MIN_KEY_TIMEOUT_SECS,
            oidc: crate::oidc::Settings::default(),
            cache: true,
            node_lease: crate::cluster::DEFAULT_LEASE,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that wait these out set them short (hidden `--sweep-interval-ms` and
    /// `--sqlite-busy-timeout-ms`); the real defaults stay what `--help` and the store say.
    #[test]
    fn the_default_waits_are_the_documented_ones() {
        let config = Config::default();
        let docs = include_str!("../../docs/configuration.md");
        for (flag, value) in [
            ("--sweep-interval DURATION", config.sweep_interval),
            ("--ephemeral-ttl DURATION", config.ephemeral_ttl),
            ("--audit-retention DURATION", config.audit_retention),
        ] {
            let prefix = format!("| `{flag}` |");
            let row = docs.lines().find(|line| line.starts_with(&prefix));
            let default = format!("| `{}` |", value.as_secs());
            assert!(
                row.is_some_and(|row| row.contains(&default)),
                "docs/configuration.md: {flag} is not documented as {default}: {row:?}"
            );
        }
        let pool = format!("| `{}` |", config.pg_pool_size);
        assert!(
            docs.lines()
                .any(|line| line.starts_with("| `--pg-pool-size N` |") && line.contains(&pool)),
            "docs/configuration.md: --pg-pool-size is not documented as {pool}"
        );
        // Not a flag anyone sets: the wait the store's comment describes.
        assert_eq!(config.busy_timeout, Duration::from_secs(5));
    }
}
