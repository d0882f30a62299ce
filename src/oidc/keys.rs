//! The issuers' signing keys: discovery (`<issuer>/.well-known/openid-configuration`), then
//! the JWKS it names, cached per issuer. An unknown `kid` refetches, at most once per
//! `Settings::refetch_interval` per issuer. Keys older than `Settings::jwks_max_age` (1 h) are
//! not used: the next login of their issuer fetches them again (and is refused if that fails),
//! so a key the issuer removed stops verifying within that age. Fetches run outside every
//! lock, with ureq's timeouts, so an issuer that is down or slow delays only the logins that
//! need its keys, and those by at most `Settings::fetch_timeout`.

use super::Settings;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The largest discovery document or JWKS read (GitHub's JWKS is about 2 KiB).
const MAX_DOCUMENT_BYTES: u64 = 256 * 1024;
/// Issuers remembered at once; each is named by a trust policy, so this is never reached by
/// honest use. Past it the cache starts afresh rather than growing.
const MAX_ISSUERS: usize = 1024;

pub(crate) struct KeySets {
    settings: Settings,
    agent: ureq::Agent,
    issuers: Mutex<HashMap<String, Arc<Issuer>>>,
}

/// One issuer's cached keys, and the fetch in flight that logins of it wait for.
#[derive(Default)]
struct Issuer {
    fetched: Mutex<Fetched>,
    /// Signalled when a fetch ends.
    fetch_ended: Condvar,
}

#[derive(Default)]
struct Fetched {
    keys: Option<JwkSet>,
    /// When `keys` were fetched: past `Settings::jwks_max_age` they are not used.
    fetched_at: Option<Instant>,
    /// When the last fetch began, successful or not: the refetch limit counts from here.
    last_attempt: Option<Instant>,
    /// A fetch is running: logins of this issuer wait for it (at most its timeout) rather
    /// than start another or fail while the keys are on their way.
    in_flight: bool,
}

/// How much longer than a fetch's own timeout a waiting login waits for it.
const WAIT_MARGIN: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl KeySets {
    pub(crate) fn new(settings: Settings) -> KeySets {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.fetch_timeout))
            .http_status_as_error(true)
            .max_redirects(0)
            .build()
            .into();
        KeySets {
            settings,
            agent,
            issuers: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn allows_insecure_issuers(&self) -> bool {
        self.settings.allow_insecure_issuer
    }

    /// Whether `issuer` may be trusted at all: `https`, or `http` when the server allows it.
    pub(crate) fn issuer_allowed(&self, issuer: &str) -> bool {
        issuer.starts_with("https://")
            || (self.settings.allow_insecure_issuer && issuer.starts_with("http://"))
    }

    /// The key `kid` of `issuer`, fetching its JWKS when it is not cached, lacks `kid` or is
    /// older than the maximum age, and the last fetch is older than the refetch interval.
    /// The error names the check.
    pub(crate) fn key(&self, issuer: &str, kid: &str) -> Result<Jwk, String> {
        let entry = {
            let mut issuers = self.issuers.lock().unwrap_or_else(PoisonError::into_inner);
            if issuers.len() >= MAX_ISSUERS && !issuers.contains_key(issuer) {
                issuers.clear();
            }
            Arc::clone(issuers.entry(issuer.to_string()).or_default())
        };
        let mut fetched = entry.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        let waited_since = Instant::now();
        loop {
            if let Some(key) = self.current_keys(&fetched).and_then(|keys| keys.find(kid)) {
                return Ok(key.clone());
            }
            if !fetched.in_flight {
                break;
            }
            // A fetch is two requests (discovery, then the JWKS), each within the timeout.
            let patience = self.settings.fetch_timeout * 2 + WAIT_MARGIN;
            let Some(left) = patience.checked_sub(waited_since.elapsed()) else {
                return Err("jwks: the issuer's keys are still being fetched".into());
            };
            fetched = entry
                .fetch_ended
                .wait_timeout(fetched, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // A maximum age shorter than the interval (in tests) limits refetches instead.
        let least_interval = self
            .settings
            .refetch_interval
            .min(self.settings.jwks_max_age);
        let recent = fetched
            .last_attempt
            .is_some_and(|at| at.elapsed() < least_interval);
        if recent {
            return Err(match (self.current_keys(&fetched), &fetched.keys) {
                (Some(_), _) => "kid: no key with this kid in the issuer's JWKS".into(),
                (None, Some(_)) => "jwks: the issuer's keys are out of date and could not be \
                                    fetched again"
                    .into(),
                (None, None) => "jwks: the issuer's keys could not be fetched".into(),
            });
        }
        fetched.last_attempt = Some(Instant::now());
        fetched.in_flight = true;
        drop(fetched);
        // Outside the lock: other logins of this issuer answer from the cache meanwhile, or
        // wait for this fetch; other issuers' logins are not concerned.
        let result = self.fetch(issuer);
        let mut fetched = entry.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        fetched.in_flight = false;
        entry.fetch_ended.notify_all();
        match result {
            Ok(keys) => {
                let key = keys.find(kid).cloned();
                fetched.keys = Some(keys);
                fetched.fetched_at = Some(Instant::now());
                key.ok_or_else(|| "kid: no key with this kid in the issuer's JWKS".into())
            }
            Err(reason) => {
                log::warn!("fetching the keys of issuer {issuer}: {reason}");
                Err(format!(
                    "jwks: the issuer's keys could not be fetched ({reason})"
                ))
            }
        }
    }

    /// The cached keys, unless they are older than the maximum age.
    fn current_keys<'a>(&self, fetched: &'a Fetched) -> Option<&'a JwkSet> {
        let fresh = fetched
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.settings.jwks_max_age);
        fetched.keys.as_ref().filter(|_| fresh)
    }

    fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url)?;
        if discovery.issuer != issuer {
            return Err("the discovery document names another issuer".into());
        }
        if !self.issuer_allowed(&discovery.jwks_uri) {
            return Err("the jwks_uri is not https".into());
        }
        self.get_json(&discovery.jwks_uri)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut response = self.agent.get(url).call().map_err(|err| err.to_string())?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_json()
            .map_err(|err| err.to_string())
    }
}
