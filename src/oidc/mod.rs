//! Login with a workload identity: an OIDC ID token (a CI job's, say) checked against an
//! app's trust policies. `keys` fetches and caches the issuers' JWKS (the only I/O here),
//! `verify` checks a token's signature, `claims` its claims, and `dev_issuer` is a local
//! issuer for trying trust policies out and for the tests.

pub(crate) mod claims;
pub mod dev_issuer;
pub(crate) mod keys;
pub(crate) mod verify;

use std::time::Duration;

/// How the server talks to OIDC issuers (part of `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Trust `http://` issuers too (`--oidc-allow-insecure-issuer`; for tests only).
    pub allow_insecure_issuer: bool,
    /// The longest a discovery or JWKS request may take (`--oidc-fetch-timeout-ms`, hidden).
    pub fetch_timeout: Duration,
    /// The least time between two fetches of one issuer's JWKS, so that tokens with made-up
    /// `kid`s cannot make the server hammer an issuer (`--oidc-refetch-interval-ms`, hidden).
    pub refetch_interval: Duration,
    /// The longest an issuer's fetched JWKS is trusted: past it the next login of that issuer
    /// fetches it again, so a key the issuer removed stops verifying
    /// (`--oidc-jwks-max-age-ms`, hidden).
    pub jwks_max_age: Duration,
}

pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow_insecure_issuer: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        }
    }
}
