//! The seed file of `authkeys serve --seed FILE`: apps and auth keys to create at start, so
//! a test suite can log in with a key it already knows without any admin call. The caller
//! chooses each key's full secret (e.g. from `authkeys generate-key`); only its hash is
//! stored. This module reads and bounds the file, and applies it (`Authority::seed`).

use super::Authority;
use super::audit::record;
use crate::domain::audit::{Action, Actor};
use crate::domain::error::StartError;
use crate::domain::error::{Error, Result};
use crate::domain::model::{NewKey, Timestamp};
use crate::domain::token::Secret;
use crate::domain::token::{self, TokenKind};
use crate::domain::validate;
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// A seed file larger than this is refused: a seed is a handful of apps and keys.
pub(crate) const MAX_SEED_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub(crate) apps: Vec<SeedApp>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApp {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) keys: Vec<SeedKey>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    /// The full auth key (`ena_…`); `Secret` keeps it out of `Debug` output.
    #[serde(deserialize_with = "secret")]
    pub(crate) key: Secret,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) reusable: bool,
    #[serde(default)]
    pub(crate) ephemeral: bool,
}

fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    String::deserialize(deserializer).map(Secret::new)
}

/// Reads and decodes a seed file. Decoding errors name the line and column, never the
/// content (which holds secrets).
pub(crate) fn load(path: &Path) -> Result<Seed, StartError> {
    let fail = |reason: String| StartError::new(format!("seed file {}: {reason}", path.display()));
    let file = std::fs::File::open(path)
        .map_err(|err| StartError::caused(format!("seed file {}", path.display()), err))?;
    let mut text = Vec::new();
    file.take(MAX_SEED_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|err| StartError::caused(format!("seed file {}", path.display()), err))?;
    if text.len() as u64 > MAX_SEED_BYTES {
        return Err(fail(format!("larger than {MAX_SEED_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&text).map_err(|err| fail(format!("not UTF-8: {err}")))?;
    crate::domain::json::from_str(text)
        .and_then(serde_json::from_value)
        .map_err(|err| {
            let what = if err.is_data() {
                // serde's message for a wrong field names the field, not the value.
                err.to_string()
            } else {
                format!(
                    "not valid JSON (line {}, column {})",
                    err.line(),
                    err.column()
                )
            };
            fail(crate::domain::token::redact_secrets(&what))
        })
}

impl Authority {
    /// Creates the seed's apps and keys that do not exist yet, all in one transaction: a bad
    /// entry changes nothing. A key already stored for the same app is left as it is, so
    /// restarting with the same seed is a no-op and a seeded key that was revoked stays
    /// revoked. Returns how many apps and keys were created.
    pub(crate) fn seed(&self, seed: &Seed, now: Timestamp) -> Result<(usize, usize)> {
        // Every rule is checked before anything is written, with the same checks as the API's
        // create_app and create_key.
        let mut keys = Vec::new();
        for app in &seed.apps {
            validate::new_app(&app.id, app.name.as_deref())?;
            for key in &app.keys {
                let new = NewKey {
                    description: key.description.clone(),
                    reusable: key.reusable,
                    ephemeral: key.ephemeral,
                    ..NewKey::default()
                };
                validate::new_key(&new, self.min_key_timeout_secs)?;
                let hash = token::parse(TokenKind::AuthKey, key.key.expose()).map_err(|_| {
                    Error::InvalidField {
                        field: "key",
                        reason: format!(
                            "of app {} is not an auth key (ena_ plus 36 characters with a valid \
                             checksum; `authkeys generate-key` makes one)",
                            app.id
                        ),
                    }
                })?;
                keys.push((hash, new));
            }
        }
        let mut hashes = keys.into_iter();
        let system = Actor::system();
        self.store.write(|w| {
            let (mut apps_created, mut keys_created) = (0, 0);
            for seeded in &seed.apps {
                let app = match w.app(&seeded.id)? {
                    Some(app) => app,
                    None => {
                        apps_created += 1;
                        let name = seeded.name.as_deref().unwrap_or(&seeded.id);
                        let app = w.insert_app(&seeded.id, name, now)?;
                        let details = serde_json::json!({"name": name, "seeded": true});
                        let id = Some(app.id.as_str());
                        record(w, &system, now, Action::AppCreated, id, &app.id, details)?;
                        app
                    }
                };
                for key in &seeded.keys {
                    let (hash, new) = hashes.next().expect("one hash per seeded key");
                    match w.key_status(&hash)? {
                        Some(existing) if existing.app == app.id => continue,
                        Some(_) => {
                            return Err(Error::InvalidField {
                                field: "key",
                                reason: format!(
                                    "seeded for app {} already belongs to another app",
                                    app.id
                                ),
                            });
                        }
                        None => {}
                    }
                    let hint = token::hint(&key.key);
                    let key_id = token::random_id("key_");
                    w.insert_key(&app, key_id.clone(), &hash, hint, &new, now)?;
                    let details = serde_json::json!({"seeded": true});
                    let id = Some(app.id.as_str());
                    record(w, &system, now, Action::KeyCreated, id, &key_id, details)?;
                    keys_created += 1;
                }
            }
            Ok((apps_created, keys_created))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_seed_and_hides_its_secrets_from_debug() {
        let seed: Seed = serde_json::from_str(
            r#"{"apps": [{"id": "ci", "keys": [{"key": "ena_x", "reusable": true}]}]}"#,
        )
        .expect("a valid seed");
        assert_eq!(seed.apps[0].id, "ci");
        assert!(seed.apps[0].keys[0].reusable);
        assert!(!format!("{seed:?}").contains("ena_x"));
    }

    #[test]
    fn rejects_unknown_fields() {
        let typo = r#"{"apps": [{"id": "ci", "keys": [{"key": "ena_x", "reuseable": true}]}]}"#;
        assert!(serde_json::from_str::<Seed>(typo).is_err());
    }
}
