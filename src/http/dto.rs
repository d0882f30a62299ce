//! The JSON shapes of the API's requests (decoded strictly: `deny_unknown_fields`) and of
//! the answers that are not domain objects themselves.

use crate::domain::access::{AdminToken, Scope};
use crate::domain::error::Error;
use crate::domain::model::{Key, KeyPolicy, Machine, Metadata, NewKey, NewTrustPolicy, Timestamp};
use crate::domain::webhook::Webhook;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
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
    // v2's policy fields arrive as JSON values and are decoded by `key_policy`, so that a
    // value of the wrong type is a 422 naming its field (serde's own message names none).
    #[serde(default)]
    pub(super) tags: Option<Value>,
    #[serde(default)]
    pub(super) metadata: Option<Value>,
    #[serde(default)]
    pub(super) max_uses: Option<Value>,
    #[serde(default)]
    pub(super) session_ttl: Option<Value>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Value>,
}

impl CreateKey {
    /// The key asked for. Types are checked here; the rules, by `validate::new_key`.
    pub(super) fn into_new_key(self) -> Result<NewKey, Error> {
        let (tags, metadata) = tags_and_metadata(self.tags, self.metadata)?;
        let max_uses =
            whole_number("max_uses", self.max_uses)?.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        Ok(NewKey {
            description: self.description,
            reusable: self.reusable,
            ephemeral: self.ephemeral,
            expires_in_secs: self.expires_in,
            policy: KeyPolicy {
                tags,
                metadata,
                max_uses,
                session_ttl: whole_number("session_ttl", self.session_ttl)?,
                idle_timeout: whole_number("idle_timeout", self.idle_timeout)?,
            },
            rotated_from: None,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateKey {
    #[serde(default)]
    pub(super) grace_seconds: Option<Value>,
}

/// How long a rotated key keeps working when the request does not say.
pub(super) const DEFAULT_GRACE_SECS: u64 = 3600;

impl RotateKey {
    pub(super) fn grace_secs(self) -> Result<u64, Error> {
        Ok(whole_number("grace_seconds", self.grace_seconds)?.unwrap_or(DEFAULT_GRACE_SECS))
    }
}

/// A whole number, as JSON may spell it (`3600` or `3600.0`), or null; otherwise a 422 naming
/// `field`. Negative and fractional numbers are the wrong type here; ranges are the rules'.
fn whole_number(field: &'static str, value: Option<Value>) -> Result<Option<u64>, Error> {
    let number = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(wrong_type(field, "a whole number")),
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(n) if n.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&n) => Ok(Some(n as u64)),
        _ => Err(wrong_type(field, "a whole number")),
    }
}

fn wrong_type(field: &'static str, expected: &str) -> Error {
    Error::InvalidField {
        field,
        reason: format!("must be {expected}"),
    }
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
    /// Either an auth key, or an OIDC ID token and the app it logs in to.
    #[serde(default)]
    pub(super) auth_key: Option<String>,
    #[serde(default)]
    pub(super) id_token: Option<String>,
    #[serde(default)]
    pub(super) app: Option<String>,
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
    pub(super) tags: &'a [String],
    /// Copied as stored, never re-encoded.
    pub(super) metadata: &'a Metadata,
    pub(super) uses_remaining: Option<i64>,
}

/// `tags` and `metadata` as asked: their types checked, each wrong one a 422 naming it.
fn tags_and_metadata(
    tags: Option<Value>,
    metadata: Option<Value>,
) -> Result<(Vec<String>, Metadata), Error> {
    let tags = match tags {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .into_iter()
            .map(|value| match value {
                Value::String(tag) => Ok(tag),
                _ => Err(wrong_type("tags", "an array of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong_type("tags", "an array of strings")),
    };
    let metadata = match metadata {
        None | Some(Value::Null) => Metadata::default(),
        Some(Value::Object(object)) => Metadata::from_object(&object),
        Some(_) => return Err(wrong_type("metadata", "a JSON object")),
    };
    Ok((tags, metadata))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTrustPolicy {
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) subject: String,
    #[serde(default)]
    pub(super) claims: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) ephemeral: bool,
    #[serde(default)]
    pub(super) session_ttl: Option<Value>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Value>,
    #[serde(default)]
    pub(super) tags: Option<Value>,
    #[serde(default)]
    pub(super) metadata: Option<Value>,
}

impl CreateTrustPolicy {
    /// The policy asked for. Types are checked here; the rules, by
    /// `validate::new_trust_policy`.
    pub(super) fn into_new_trust_policy(self) -> Result<NewTrustPolicy, Error> {
        let (tags, metadata) = tags_and_metadata(self.tags, self.metadata)?;
        Ok(NewTrustPolicy {
            issuer: self.issuer,
            audience: self.audience,
            subject: self.subject,
            claims: self.claims.unwrap_or_default(),
            description: self.description,
            ephemeral: self.ephemeral,
            policy: KeyPolicy {
                tags,
                metadata,
                max_uses: None,
                session_ttl: whole_number("session_ttl", self.session_ttl)?,
                idle_timeout: whole_number("idle_timeout", self.idle_timeout)?,
            },
        })
    }
}

/// `GET /v1/server`: what a client (the dashboard) may want to know of the server's settings.
#[derive(Serialize)]
pub(super) struct ServerInfo<'a> {
    pub(super) version: &'static str,
    /// `--ephemeral-ttl`, in seconds.
    pub(super) ephemeral_ttl: u64,
    /// What the calling token may do, so a client offers only that.
    pub(super) token: TokenInfo<'a>,
}

/// The calling admin token's reach: root, or its scopes and apps (`None`: every app).
#[derive(Serialize)]
pub(super) struct TokenInfo<'a> {
    pub(super) root: bool,
    pub(super) scopes: &'a [Scope],
    pub(super) apps: Option<&'a [String]>,
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

/// `POST /v1/keys/revoke-by-value` takes the same `{"key"}` as verify.
pub(super) type RevokeByValue = Verify;

/// An answer of `POST /v1/keys/revoke-by-value`: either what was revoked or why nothing was.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum RevokedByValue<'a> {
    Revoked {
        revoked: bool,
        /// `None` for a machine logged in through a trust policy.
        key_id: Option<&'a str>,
        app: &'a str,
        /// The machine logged out, when the value was a session token.
        machine_id: Option<&'a str>,
    },
    NotRevoked {
        revoked: bool,
        code: &'static str,
    },
}

/// One entry of GitLab's Token Revocation API request. Fields are GitLab's; any it adds later
/// are ignored rather than refused, so that a GitLab upgrade cannot stop revocations.
#[derive(Deserialize)]
pub(super) struct GitlabToken {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) token: String,
    #[serde(default)]
    pub(super) location: Option<String>,
}

/// One match in a GitHub secret scanning report; fields GitHub adds later are ignored, as for
/// GitLab.
#[derive(Deserialize)]
pub(super) struct GithubMatch {
    pub(super) token: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) source: Option<String>,
}

/// GitHub's label for one reported match.
#[derive(Serialize)]
pub(super) struct GithubLabel<'a> {
    pub(super) token_hash: String,
    pub(super) token_type: &'a str,
    pub(super) label: &'static str,
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
