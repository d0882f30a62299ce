//! The JSON shapes of the API's requests (decoded strictly: `deny_unknown_fields`) and of
//! the answers that are not domain objects themselves.

use crate::domain::access::AdminToken;
use crate::domain::model::{Key, Machine, Timestamp};
use crate::domain::webhook::Webhook;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateApp {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) reusable: bool,
    #[serde(default)]
    pub(super) ephemeral: bool,
    #[serde(default, deserialize_with = "whole_seconds")]
    pub(super) expires_in: Option<u64>,
}

/// JSON does not tell `3600` from `3600.0` (JSON Schema calls both integers, and some
/// encoders write every number as a float), so either spelling of a whole number is accepted.
pub(super) fn whole_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(secs) = number.as_u64() {
        return Ok(Some(secs));
    }
    match number.as_f64() {
        Some(secs) if secs.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&secs) => {
            Ok(Some(secs as u64))
        }
        _ => Err(D::Error::custom("must be a whole number of seconds")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    pub(super) auth_key: String,
    #[serde(default)]
    pub(super) machine: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Verify {
    pub(super) key: String,
}

#[derive(Serialize)]
pub(super) struct CreatedKey<'a> {
    #[serde(flatten)]
    pub(super) key: &'a Key,
    /// The full secret: in this response and nowhere else, ever.
    #[serde(rename = "key")]
    pub(super) secret: &'a str,
}

#[derive(Serialize)]
pub(super) struct ValidKey<'a> {
    pub(super) valid: bool,
    pub(super) app: &'a str,
    pub(super) key_id: &'a str,
    pub(super) reusable: bool,
    pub(super) ephemeral: bool,
    pub(super) expires_at: Option<Timestamp>,
}

#[derive(Serialize)]
pub(super) struct InvalidKey {
    pub(super) valid: bool,
    pub(super) code: &'static str,
}

#[derive(Serialize)]
pub(super) struct LoggedIn<'a> {
    pub(super) session_token: &'a str,
    pub(super) machine: &'a Machine,
}

/// whoami's answer. The app is encoded once per app (`CachedApp::encoded`), the machine once
/// per cached session.
#[derive(Serialize)]
pub(super) struct Identity<'a> {
    pub(super) app: &'a RawValue,
    pub(super) machine: &'a Machine,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateAdminToken {
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) apps: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole_seconds")]
    pub(super) expires_in: Option<u64>,
    #[serde(default, deserialize_with = "whole_seconds")]
    pub(super) max_key_lifetime: Option<u64>,
    #[serde(default)]
    pub(super) allowed_tags: Option<Vec<String>>,
    #[serde(default)]
    pub(super) ephemeral_only: bool,
}

#[derive(Serialize)]
pub(super) struct CreatedAdminToken<'a> {
    #[serde(flatten)]
    pub(super) token: &'a AdminToken,
    /// The full secret: in this response and nowhere else, ever.
    #[serde(rename = "token")]
    pub(super) secret: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWebhook {
    pub(super) url: String,
    pub(super) events: Vec<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
}

#[derive(Serialize)]
pub(super) struct CreatedWebhook<'a> {
    #[serde(flatten)]
    pub(super) webhook: &'a Webhook,
    /// The signing secret: in this response and nowhere else.
    pub(super) secret: &'a str,
}
