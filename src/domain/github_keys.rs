//! GitHub secret scanning's signing keys and the check of a report's signature, exactly as
//! GitHub's partner program specifies: ECDSA over P-256 with SHA-256, computed over the raw
//! request body, sent base64-encoded (ASN.1 DER) in `Github-Public-Key-Signature`, by the key
//! that `Github-Public-Key-Identifier` names among GitHub's published keys. RustCrypto's `p256`
//! does the cryptography. Pure: the key file is read by `ops::load_github_keys`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use std::fmt;

/// The keys a report may be signed with: every key of the file, current or not (GitHub keeps
/// signing with a key for a while after it publishes its successor).
#[derive(Clone)]
pub struct GithubKeys {
    keys: Vec<(String, VerifyingKey)>,
}

/// GitHub's published shape (`GET /meta/public_keys/secret_scanning`); fields GitHub may add
/// are ignored.
#[derive(Deserialize)]
struct KeyFile {
    public_keys: Vec<PublishedKey>,
}

#[derive(Deserialize)]
struct PublishedKey {
    key_identifier: String,
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    key: String,
    #[serde(default)]
    #[allow(dead_code)]
    is_current: bool,
}

/// Why a report is not signed by GitHub: every case is the same 401 to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadSignature {
    UnknownKey,
    NotBase64,
    NotDer,
    Invalid,
}

impl GithubKeys {
    /// Parses a key file: at least one key, each a P-256 public key in PEM, identifiers unique.
    pub fn from_json(text: &str) -> Result<GithubKeys, String> {
        let file: KeyFile = serde_json::from_str(text).map_err(|err| err.to_string())?;
        if file.public_keys.is_empty() {
            return Err("`public_keys` is empty".into());
        }
        let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
        for published in file.public_keys {
            let id = published.key_identifier;
            if id.is_empty() || keys.iter().any(|(seen, _)| *seen == id) {
                return Err(format!("key identifier {id:?} is empty or repeated"));
            }
            let key = published
                .key
                .trim()
                .parse::<VerifyingKey>()
                .map_err(|_| format!("key {id:?} is not a P-256 public key in PEM"))?;
            keys.push((id, key));
        }
        Ok(GithubKeys { keys })
    }

    /// Checks that `body` was signed by the key named `key_id`.
    pub(crate) fn verify(
        &self,
        key_id: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<(), BadSignature> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id.trim())
            .ok_or(BadSignature::UnknownKey)?;
        let der = BASE64
            .decode(signature.trim())
            .map_err(|_| BadSignature::NotBase64)?;
        let signature = Signature::from_der(&der).map_err(|_| BadSignature::NotDer)?;
        key.verify(body, &signature)
            .map_err(|_| BadSignature::Invalid)
    }
}

impl fmt::Debug for GithubKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("GithubKeys").field("ids", &ids).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's own example from its partner-program documentation: a real signature by one of
    /// its keys, so this checks the scheme against GitHub's, not only against ourselves.
    const GITHUB_KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";
    const GITHUB_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq\nkCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==\n-----END PUBLIC KEY-----\n";
    const GITHUB_PAYLOAD: &[u8] =
        br#"[{"token":"some_token","type":"some_type","url":"some_url"}]"#;
    const GITHUB_SIGNATURE: &str = "MEUCIQDKZokqnCjrRtw0tni+2Ltvl/uiMJ1EGumEsp1BsNr32AIgQY1YXD2nlj+XNfGK4rBfkMJ1JDOQcYXxa2sY8FNkrKc=";

    fn github_keys() -> GithubKeys {
        let file = serde_json::json!({"public_keys": [
            {"key_identifier": GITHUB_KEY_ID, "key": GITHUB_KEY, "is_current": false}
        ]});
        GithubKeys::from_json(&file.to_string()).expect("GitHub's published key parses")
    }

    #[test]
    fn githubs_documented_example_verifies() {
        let keys = github_keys();
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, GITHUB_SIGNATURE, GITHUB_PAYLOAD),
            Ok(())
        );
        let mut tampered = GITHUB_PAYLOAD.to_vec();
        tampered[12] = b'S';
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, GITHUB_SIGNATURE, &tampered),
            Err(BadSignature::Invalid)
        );
        assert_eq!(
            keys.verify("another", GITHUB_SIGNATURE, GITHUB_PAYLOAD),
            Err(BadSignature::UnknownKey)
        );
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, "not base64!", GITHUB_PAYLOAD),
            Err(BadSignature::NotBase64)
        );
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, "AAAA", GITHUB_PAYLOAD),
            Err(BadSignature::NotDer)
        );
    }

    #[test]
    fn key_files_are_checked() {
        for bad in [
            "{}".to_string(),
            r#"{"public_keys": []}"#.to_string(),
            r#"{"public_keys": [{"key_identifier": "a", "key": "nope"}]}"#.to_string(),
            serde_json::json!({"public_keys": [
                {"key_identifier": "a", "key": GITHUB_KEY},
                {"key_identifier": "a", "key": GITHUB_KEY},
            ]})
            .to_string(),
        ] {
            assert!(GithubKeys::from_json(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", github_keys())
                .matches(GITHUB_KEY_ID)
                .count(),
            1
        );
    }
}
