//! Webhooks as the domain sees them: what one is, which events it takes (`matches`), what a
//! delivery attempt came to, the back-off between attempts, and the signature each POST
//! carries (`sign`: HMAC-SHA256 of `"<t>.<raw body>"`, the `hmac` crate). No I/O here.

use crate::domain::audit::Action;
use crate::domain::error::{Error, Result};
use crate::domain::model::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::time::Duration;

pub(crate) const MAX_URL_CHARS: usize = 2048;
pub(crate) const MAX_EVENT_PATTERNS: usize = 32;

/// A webhook as listed: everything but its secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Webhook {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    pub(crate) description: Option<String>,
    pub(crate) created_at: Timestamp,
}

/// What the delivery thread needs of a webhook: where, what, how to sign, and how far it got.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    pub(crate) secret: String,
    /// Every matching event up to this seq is done (delivered or given up).
    pub(crate) after_seq: i64,
}

/// One event's delivery to one webhook, as `GET /v1/webhooks/{id}/deliveries` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Delivery {
    pub(crate) seq: i64,
    pub(crate) attempts: i64,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: Option<String>,
    pub(crate) delivered_at: Option<Timestamp>,
    #[serde(skip)]
    pub(crate) next_attempt_at: Option<Timestamp>,
}

/// What one attempt came to: a 2xx (delivered), or a status or error to record and retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered(u16),
    Refused(u16),
    Failed(String),
}

impl Outcome {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered(status) | Outcome::Refused(status) => Some(*status),
            Outcome::Failed(_) => None,
        }
    }

    pub(crate) fn error(&self) -> Option<String> {
        match self {
            Outcome::Delivered(_) => None,
            Outcome::Refused(status) => Some(format!("the receiver answered {status}")),
            Outcome::Failed(error) => Some(error.clone()),
        }
    }
}

/// How the delivery thread retries: `first` after the first failure, doubling up to `max`,
/// for `give_up_after` from the event (24 hours by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
    pub(crate) give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl Retry {
    /// When to try again after `attempts` failed attempts, the last at `now`.
    pub(crate) fn next_attempt(&self, attempts: i64, now: Timestamp) -> Timestamp {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let wait = self
            .first
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max);
        Timestamp(now.0.saturating_add(wait.as_millis() as i64))
    }

    /// Whether an event recorded `at` is past retrying at `now`.
    pub(crate) fn given_up(&self, at: Timestamp, now: Timestamp) -> bool {
        now.0.saturating_sub(at.0) > self.give_up_after.as_millis() as i64
    }
}

/// Whether `action` is one of `patterns`: an action, `prefix.*` or `*`.
pub(crate) fn matches(patterns: &[String], action: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => action.starts_with(prefix),
            None => pattern == action,
        })
}

/// The `Authkeys-Signature` header value for `body` sent at `t` (Unix seconds).
pub(crate) fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The rules for a new webhook: an http(s) URL with a host, and event patterns that can match.
pub(crate) fn check_new(url: &str, events: &[String]) -> Result<()> {
    let invalid = |field, reason: String| Error::InvalidField { field, reason };
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let parsed = url.parse::<ureq::http::Uri>().ok();
    let has_host = parsed
        .as_ref()
        .and_then(|uri| uri.host())
        .is_some_and(|host| !host.is_empty());
    if !scheme_ok || !has_host || url.chars().count() > MAX_URL_CHARS {
        return Err(invalid(
            "url",
            format!(
                "must be an http:// or https:// URL with a host, at most {MAX_URL_CHARS} characters"
            ),
        ));
    }
    if events.is_empty() || events.len() > MAX_EVENT_PATTERNS {
        return Err(invalid(
            "events",
            format!("must name 1 to {MAX_EVENT_PATTERNS} actions or patterns"),
        ));
    }
    for pattern in events {
        let known = match pattern.strip_suffix(".*") {
            _ if pattern == "*" => true,
            Some(prefix) => Action::ALL
                .iter()
                .any(|action| action.target_type() == prefix),
            None => Action::parse(pattern).is_some(),
        };
        if !known {
            return Err(invalid(
                "events",
                format!("{pattern:?} is not an action, `<type>.*` or `*`"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_actions_prefixes_and_everything() {
        let patterns = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert!(matches(&patterns(&["key.revoked"]), "key.revoked"));
        assert!(!matches(&patterns(&["key.revoked"]), "key.created"));
        assert!(matches(&patterns(&["machine.*"]), "machine.logged_out"));
        assert!(!matches(&patterns(&["machine.*"]), "key.created"));
        assert!(matches(&patterns(&["*"]), "app.deleted"));
        assert!(
            check_new(
                "http://127.0.0.1:9/hook",
                &patterns(&["machine.*", "key.revoked"])
            )
            .is_ok()
        );
        for bad in [&["key.nope"][..], &["nope.*"], &["key.*.x"], &[]] {
            assert!(
                check_new("https://example.com/", &patterns(bad)).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            "ftp://example.com/",
            "http://",
            "example.com",
            "javascript:alert(1)",
        ] {
            assert!(check_new(bad, &patterns(&["*"])).is_err(), "{bad}");
        }
    }

    /// The signature is HMAC-SHA256 over "<t>.<body>", checked against a value computed
    /// independently (`printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret`).
    #[test]
    fn signs_t_dot_body() {
        assert_eq!(
            sign("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn retries_back_off_from_five_seconds_and_give_up_after_a_day() {
        let retry = Retry::default();
        let at = |attempts| retry.next_attempt(attempts, Timestamp(0)).0;
        assert_eq!((at(1), at(2), at(3)), (5_000, 10_000, 20_000));
        assert_eq!(at(40), 3_600_000);
        assert!(!retry.given_up(Timestamp(0), Timestamp(24 * 3600 * 1000)));
        assert!(retry.given_up(Timestamp(0), Timestamp(24 * 3600 * 1000 + 1)));
    }
}
