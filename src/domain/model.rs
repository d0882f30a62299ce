//! Domain types returned by the store and the authority and serialised as the contract's JSON
//! objects. Internal row keys (`pk`) never leave the process.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A point in time as milliseconds since the Unix epoch, the unit stored in SQLite. Serialises
/// as an RFC 3339 UTC string with a `Z` suffix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub(crate) fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    pub(crate) fn plus_secs(self, secs: u64) -> Timestamp {
        let millis = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn to_rfc3339(self) -> String {
        self.with_rfc3339(str::to_string)
    }

    /// `use_text` given the RFC 3339 form, allocated only outside the years 0 to 9999.
    fn with_rfc3339<R>(self, use_text: impl FnOnce(&str) -> R) -> R {
        let mut text = [0; RFC3339_LEN];
        match self.rfc3339_in(&mut text) {
            Some(text) => use_text(text),
            None => use_text(&self.chrono_rfc3339()),
        }
    }

    /// chrono's RFC 3339 form, milliseconds and `Z`: what `rfc3339_in` writes, and the form of
    /// the times it does not (before year 0, after 9999, or past chrono's range, as its last).
    fn chrono_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The RFC 3339 form written into `text` with no allocation and no formatting machinery
    /// (`YYYY-MM-DDTHH:MM:SS.mmmZ`), for the years 0 to 9999; `None` for any other. Whoami of a
    /// session the cache does not hold encodes a few of these per request, and chrono's
    /// formatter cost about 2,000 instructions each.
    fn rfc3339_in(self, text: &mut [u8; RFC3339_LEN]) -> Option<&str> {
        let at = DateTime::<Utc>::from_timestamp_millis(self.0)?;
        let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
        *text = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0..4, year),
            (5..7, at.month()),
            (8..10, at.day()),
            (11..13, at.hour()),
            (14..16, at.minute()),
            (17..19, at.second()),
            (20..23, at.timestamp_subsec_millis()),
        ];
        for (range, mut value) in fields {
            for digit in text[range].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        Some(std::str::from_utf8(text).expect("ASCII digits and separators"))
    }
}

/// The length of `Timestamp::rfc3339_in`'s form.
const RFC3339_LEN: usize = 24;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_rfc3339(|text| serializer.serialize_str(text))
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
    #[serde(flatten)]
    pub(crate) policy: KeyPolicy,
    /// `None` when unlimited.
    pub(crate) uses_remaining: Option<i64>,
    pub(crate) rotated_from: Option<String>,
    pub(crate) rotated_to: Option<String>,
}

/// What a key imposes on its logins and the machines they create, beyond its flags: stored
/// with the key, copied to a rotated key whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct KeyPolicy {
    /// Sorted, distinct.
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Metadata,
    /// Logins allowed in all; `None` when unlimited (a single-use key has 1).
    pub(crate) max_uses: Option<i64>,
    /// Seconds an ephemeral key's machines live, instead of the server's `--ephemeral-ttl`.
    pub(crate) session_ttl: Option<u64>,
    /// Seconds without an authenticated request after which a machine is logged out.
    pub(crate) idle_timeout: Option<u64>,
}

/// Logins left to a key that allows `max_uses` and has had `uses`.
pub(crate) fn uses_remaining(max_uses: Option<i64>, uses: i64) -> Option<i64> {
    max_uses.map(|max| (max - uses).max(0))
}

/// A key's or machine's metadata: a JSON object kept as its encoded text (at most 1 KiB), so
/// answers copy it instead of encoding it again.
#[derive(Clone, Debug)]
pub(crate) struct Metadata(Box<RawValue>);

impl Metadata {
    /// Metadata read back from the store, which only ever holds an encoded object.
    pub(crate) fn from_stored(text: String) -> Metadata {
        match RawValue::from_string(text) {
            Ok(raw) => Metadata(raw),
            Err(err) => {
                log::error!("stored metadata is not JSON ({err}); answering {{}}");
                Metadata::default()
            }
        }
    }

    /// An object as the store keeps it (serde_json's compact encoding).
    pub(crate) fn from_object(object: &serde_json::Map<String, serde_json::Value>) -> Metadata {
        let text = serde_json::to_string(object).expect("a JSON object always serialises");
        Metadata::from_stored(text)
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata(RawValue::from_string("{}".into()).expect("{} is JSON"))
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One logged-in session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Machine {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) app: String,
    /// `None` for a machine logged in through a trust policy.
    pub(crate) key_id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) ephemeral: bool,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) last_seen_at: Option<Timestamp>,
    /// Copied from the key at login.
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Metadata,
    /// The trust policy of an OIDC login; `None` for a key login.
    pub(crate) trust_policy_id: Option<String>,
    /// When the machine is logged out unless it makes another request: its last stored
    /// activity plus its key's idle timeout. Like `last_seen_at`, it may lag the truth by up
    /// to one sweep interval (earlier, never later); each request is judged on the exact last
    /// activity.
    pub(crate) idle_expires_at: Option<Timestamp>,
    /// The key's idle timeout, copied at login, in seconds.
    #[serde(skip)]
    pub(crate) idle_timeout: Option<u64>,
}

impl Machine {
    /// Ephemeral machines stop authenticating at `expires_at`, whether or not the sweeper has
    /// removed them yet.
    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The moment a machine last active at `last_active` becomes idle, if its key has an
    /// idle timeout.
    pub(crate) fn idle_deadline(&self, last_active: Timestamp) -> Option<Timestamp> {
        self.idle_timeout.map(|secs| last_active.plus_secs(secs))
    }

    /// Fills `idle_expires_at` from the stored activity.
    pub(crate) fn with_idle_expiry(self) -> Machine {
        Machine {
            idle_expires_at: self.idle_deadline(self.stored_activity()),
            ..self
        }
    }

    /// The last activity the row records: its last stored request, or its login.
    pub(crate) fn stored_activity(&self) -> Timestamp {
        self.last_seen_at
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }
}

/// What a caller asks for when generating a key.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NewKey {
    pub(crate) description: Option<String>,
    pub(crate) reusable: bool,
    pub(crate) ephemeral: bool,
    pub(crate) expires_in_secs: Option<u64>,
    /// As asked; `validate::new_key` checks it against the flags, and `max_uses()` is what
    /// is stored.
    pub(crate) policy: KeyPolicy,
    /// The key this one replaces (rotation only).
    pub(crate) rotated_from: Option<String>,
}

impl NewKey {
    /// What the key allows: a single-use key is a key of one use.
    pub(crate) fn max_uses(&self) -> Option<i64> {
        if self.reusable {
            self.policy.max_uses
        } else {
            Some(1)
        }
    }
}

/// An app's trust in an OIDC issuer's tokens: which tokens may log in (`issuer`,
/// `audience`, the `subject` glob, exact `claims`), and what their machines get (as a key
/// login gets its key's: flags, tags, metadata, lifetimes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct TrustPolicy {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) app: String,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) subject: String,
    /// A JSON object of strings.
    pub(crate) claims: Metadata,
    pub(crate) description: Option<String>,
    pub(crate) ephemeral: bool,
    pub(crate) session_ttl: Option<u64>,
    pub(crate) idle_timeout: Option<u64>,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Metadata,
    pub(crate) created_at: Timestamp,
}

/// A trust policy as asked for; `validate::new_trust_policy` checks it.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewTrustPolicy {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) subject: String,
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    pub(crate) description: Option<String>,
    pub(crate) ephemeral: bool,
    /// `max_uses` unused.
    pub(crate) policy: KeyPolicy,
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
    pub(crate) policy: KeyPolicy,
}

impl KeyStatus {
    pub(crate) fn uses_remaining(&self) -> Option<i64> {
        uses_remaining(self.policy.max_uses, self.uses)
    }
}

/// What one sweep did, as `Metrics` counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    pub(crate) expired_machines: usize,
    /// Machines logged out for making no request within their key's idle timeout.
    pub(crate) idle_machines: usize,
    /// Rows stamped; the stamps of rows deleted meanwhile are dropped, not counted.
    pub(crate) stamps_written: usize,
}

/// What one batch of a sweep's deletions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) done: usize,
    /// Whether more may be left: the batch was full, or stopped early.
    pub(crate) more: bool,
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

    /// The allocation-free form is chrono's, character for character, wherever it applies,
    /// and chrono's own is used everywhere else (serialised as well as `to_rfc3339`).
    #[test]
    fn the_fast_rfc3339_form_is_chronos_own() {
        use rand::RngExt;
        let year_0 = -62_167_219_200_000_i64;
        let year_10000 = 253_402_300_800_000_i64;
        let mut times = vec![
            0,
            -1,
            1,
            999,
            1_000,
            year_0 - 1,
            year_0,
            year_10000 - 1,
            year_10000,
            951_782_400_000,   // 2000-02-29
            4_107_542_399_999, // 2100-02-28T23:59:59.999
            i64::MIN,
            i64::MAX,
        ];
        let mut rng = rand::rng();
        times.extend(
            (0..100_000).map(|_| rng.random_range(year_0 - 1_000_000..year_10000 + 1_000_000)),
        );
        for millis in times {
            let at = Timestamp(millis);
            let expected = at.chrono_rfc3339();
            assert_eq!(at.to_rfc3339(), expected, "{millis}");
            assert_eq!(
                serde_json::to_string(&at).unwrap(),
                format!("\"{expected}\""),
                "{millis}"
            );
            let mut text = [0; RFC3339_LEN];
            let fast = at.rfc3339_in(&mut text).is_some();
            assert_eq!(fast, (year_0..year_10000).contains(&millis), "{millis}");
        }
    }
}
