//! Domain types returned by the store and the authority and serialised as the contract's JSON
//! objects. Internal row keys (`pk`) never leave the process.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A point in time as milliseconds since the Unix epoch, the unit stored in SQLite. Serialises
/// as an RFC 3339 UTC string with a `Z` suffix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub(crate) fn plus_secs(self, secs: u64) -> Timestamp {
        let millis = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// The identity a machine takes on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct App {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) created_at: Timestamp,
}

/// An auth key as listed: everything but the secret, which is never stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Key {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) app: String,
    pub(crate) description: Option<String>,
    pub(crate) reusable: bool,
    pub(crate) ephemeral: bool,
    pub(crate) hint: String,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) revoked_at: Option<Timestamp>,
    pub(crate) last_used_at: Option<Timestamp>,
    /// Successful logins with this key.
    pub(crate) uses: i64,
    /// Machines logged in with this key that are still active.
    pub(crate) machines: i64,
}

/// One logged-in session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Machine {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) app: String,
    pub(crate) key_id: String,
    pub(crate) name: Option<String>,
    pub(crate) ephemeral: bool,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) last_seen_at: Option<Timestamp>,
}

impl Machine {
    /// Ephemeral machines stop authenticating at `expires_at`, whether or not the sweeper has
    /// removed them yet.
    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a caller asks for when generating a key.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NewKey {
    pub(crate) description: Option<String>,
    pub(crate) reusable: bool,
    pub(crate) ephemeral: bool,
    pub(crate) expires_in_secs: Option<u64>,
}

/// What login and verify need to judge a key: its rules and state, without the counts a
/// listing shows (counting machines would put a scan on the hot path).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KeyStatus {
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) app_pk: i64,
    pub(crate) app: String,
    pub(crate) reusable: bool,
    pub(crate) ephemeral: bool,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) revoked_at: Option<Timestamp>,
    pub(crate) uses: i64,
}

/// What one sweep did, as `Metrics` counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    pub(crate) expired_machines: usize,
    /// Rows stamped; the stamps of rows deleted meanwhile are dropped, not counted.
    pub(crate) stamps_written: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_z() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_500).plus_secs(2).to_rfc3339(),
            "1970-01-01T00:00:03.500Z"
        );
        assert_eq!(Timestamp(1).plus_secs(u64::MAX), Timestamp(i64::MAX));
    }
}
