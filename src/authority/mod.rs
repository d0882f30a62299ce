//! The rules: who may do what, and what a key or session is worth at a given moment. Issues,
//! logs in, verifies, revokes and expires. Time is passed in; storage goes through `Store`;
//! no sockets and no SQL text here. Split by use case: `apps` (apps, keys and machines, as
//! the admin manages them), `login` (sessions: login, whoami, logout), `verify` and `seed`.
//! This file holds the `Authority` itself, admin authentication and `judge_key`.

mod admin_tokens;
mod apps;
pub(crate) mod audit;
pub(crate) mod leaks;
mod login;
pub(crate) mod seed;
mod trust;
mod verify;
mod webhooks;
pub(crate) use login::session_hash;

use crate::cache::app::AppCache;
use crate::cache::hot::{HotCache, Invalidation};
use crate::cache::usage::UsageStamps;
use crate::cluster::Cluster;
use crate::domain::error::{Error, Result};
use crate::domain::model::KeyStatus;
use crate::domain::model::Timestamp;
use crate::domain::token::TokenHash;
use crate::oidc::keys::KeySets;
use crate::store::Store;
use std::sync::Arc;

pub(crate) struct Authority {
    store: Arc<Store>,
    stamps: Arc<UsageStamps>,
    /// Positive answers for whoami and verify. Every write below that could make one wrong
    /// invalidates it after committing and before returning (`committed`).
    cache: Arc<HotCache>,
    /// The other nodes on the same PostgreSQL database, if any (`committed` waits for them).
    cluster: Option<Arc<Cluster>>,
    /// Apps by pk for session lookups; never stale (see `app_cache`).
    apps: AppCache,
    admin_token: TokenHash,
    ephemeral_ttl_secs: u64,
    /// GitLab's and GitHub's credentials, when their leak report endpoints are on.
    leak_reporters: leaks::LeakReporters,
    /// The least `session_ttl` and `idle_timeout` a new key may have.
    min_key_timeout_secs: u64,
    /// The OIDC issuers' keys, for logins through trust policies.
    oidc: KeySets,
}

/// Why a key would not be accepted, as `POST /v1/keys/verify` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    Malformed,
    NotFound,
    Revoked,
    Expired,
    Used,
}

impl KeyProblem {
    pub(crate) fn code(self) -> &'static str {
        match self {
            KeyProblem::Malformed => "malformed",
            KeyProblem::NotFound => "not_found",
            KeyProblem::Revoked => "revoked",
            KeyProblem::Expired => "expired",
            KeyProblem::Used => "used",
        }
    }

    /// The login error for the same problem. Malformed and unknown keys are deliberately one
    /// answer: a guesser learns nothing from the difference.
    fn login_error(self) -> Error {
        match self {
            KeyProblem::Malformed | KeyProblem::NotFound => Error::AuthKeyInvalid,
            KeyProblem::Revoked => Error::AuthKeyRevoked,
            KeyProblem::Expired => Error::AuthKeyExpired,
            KeyProblem::Used => Error::AuthKeyUsed,
        }
    }
}

/// Judges a stored key at `now`. Revocation outranks expiry, which outranks use (a key with
/// `max_uses` logins already is used up; a single-use key has one).
pub(crate) fn judge_key(key: &KeyStatus, now: Timestamp) -> std::result::Result<(), KeyProblem> {
    if key.revoked_at.is_some() {
        Err(KeyProblem::Revoked)
    } else if key.expires_at.is_some_and(|at| at <= now) {
        Err(KeyProblem::Expired)
    } else if key.policy.max_uses.is_some_and(|max| key.uses >= max)
        || (!key.reusable && key.uses > 0)
    {
        Err(KeyProblem::Used)
    } else {
        Ok(())
    }
}

impl Authority {
    pub(crate) fn new(
        store: Arc<Store>,
        stamps: Arc<UsageStamps>,
        cache: Arc<HotCache>,
        admin_token: TokenHash,
        ephemeral_ttl_secs: u64,
    ) -> Authority {
        Authority {
            store,
            stamps,
            cache,
            cluster: None,
            apps: AppCache::default(),
            admin_token,
            ephemeral_ttl_secs,
            leak_reporters: leaks::LeakReporters::default(),
            min_key_timeout_secs: crate::domain::validate::MIN_KEY_TIMEOUT_SECS,
            oidc: KeySets::new(crate::oidc::Settings::default()),
        }
    }

    /// Talks to OIDC issuers with `settings` (`Config::oidc`).
    pub(crate) fn with_oidc(self, settings: crate::oidc::Settings) -> Authority {
        Authority {
            oidc: KeySets::new(settings),
            ..self
        }
    }

    /// Shares the database with other nodes: revocations, deletions and logouts return only
    /// once every node that may cache answers has dropped what they changed.
    pub(crate) fn with_cluster(self, cluster: Option<Arc<Cluster>>) -> Authority {
        Authority { cluster, ..self }
    }

    /// After a write that committed: drops what it may have made wrong from this node's hot
    /// cache, then, with several nodes, waits until every other node has too (or has stopped
    /// using its cache: `Cluster::wait_for_peers`). Every revocation, deletion and logout
    /// calls this before it returns.
    fn committed(&self, what: Invalidation) -> Result<()> {
        self.cache.invalidate(what);
        match &self.cluster {
            Some(cluster) => cluster.wait_for_peers(),
            None => Ok(()),
        }
    }

    /// Lets keys have a `session_ttl` or `idle_timeout` as short as `secs` (tests only: the
    /// contract's least is `validate::MIN_KEY_TIMEOUT_SECS`).
    pub(crate) fn with_min_key_timeout(self, secs: u64) -> Authority {
        Authority {
            min_key_timeout_secs: secs,
            ..self
        }
    }

    /// The server's `--ephemeral-ttl`, in seconds.
    pub(crate) fn ephemeral_ttl_secs(&self) -> u64 {
        self.ephemeral_ttl_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reusable: bool, uses: i64) -> KeyStatus {
        KeyStatus {
            pk: 1,
            id: "key_x".into(),
            app_pk: 1,
            app: "app".into(),
            reusable,
            ephemeral: false,
            expires_at: Some(Timestamp(100)),
            revoked_at: None,
            uses,
            policy: crate::domain::model::KeyPolicy {
                max_uses: (!reusable).then_some(1),
                ..Default::default()
            },
        }
    }

    #[test]
    fn judging_keys() {
        let check = |key: KeyStatus, now: i64, expected: std::result::Result<(), KeyProblem>| {
            assert_eq!(
                judge_key(&key, Timestamp(now)),
                expected,
                "{key:?} at {now}"
            );
        };
        check(key(false, 0), 99, Ok(()));
        check(key(false, 0), 100, Err(KeyProblem::Expired));
        check(key(false, 1), 50, Err(KeyProblem::Used));
        check(key(true, 5), 50, Ok(()));
        let limited = |uses| KeyStatus {
            policy: crate::domain::model::KeyPolicy {
                max_uses: Some(3),
                ..Default::default()
            },
            ..key(true, uses)
        };
        check(limited(2), 50, Ok(()));
        check(limited(3), 50, Err(KeyProblem::Used));
        check(limited(3), 100, Err(KeyProblem::Expired));
        check(
            KeyStatus {
                revoked_at: Some(Timestamp(1)),
                ..key(false, 1)
            },
            200,
            Err(KeyProblem::Revoked),
        );
        check(key(false, 1), 200, Err(KeyProblem::Expired));
    }
}
