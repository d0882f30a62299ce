//! An ID token's signature: its header read (RS256 or ES256 only, a `kid` required), the key
//! of its issuer found through `KeySets`, and the signature checked by `jsonwebtoken`. What
//! this returns is the token's claims, trusted as the issuer's; the policy checks are
//! `claims`'.

use super::keys::KeySets;
use crate::domain::json;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The longest ID token accepted (GitHub's are about 1 KiB).
pub(crate) const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// The issuer a token claims, read before its signature is checked: it only chooses whose
/// keys to check the signature with.
pub(crate) fn claimed_issuer(token: &str) -> Result<String, String> {
    // Strictly parsed: a payload with a repeated claim is refused here, before any check.
    let payload = unverified_bytes(token, 1, "payload")?;
    let claims = std::str::from_utf8(&payload)
        .ok()
        .and_then(|text| json::from_str(text).ok())
        .ok_or("format: the token's payload is not JSON without repeated names")?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err("iss: the token names no issuer".into()),
    }
}

/// The claims of `token`, once its signature is verified with `issuer`'s key.
pub(crate) fn verified_claims(
    keys: &KeySets,
    issuer: &str,
    token: &str,
) -> Result<Map<String, Value>, String> {
    let header = unverified_part::<Header>(token, 0, "header")?;
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(format!(
                "alg: {other} is not accepted (only RS256 and ES256)"
            ));
        }
    };
    let kid = header.kid.ok_or("kid: the token's header names no key")?;
    let jwk = keys.key(issuer, &kid)?;
    let key = decoding_key(&jwk, alg)?;
    let mut validation = Validation::new(alg);
    // The time and audience checks are `claims`', with messages naming each one.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| "signature: the token's signature is not valid".into())
}

/// The verifying key for `alg` from a JWKS entry of the matching type, or why it cannot be.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, String> {
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    if !fits {
        return Err("key type: the issuer's key does not fit the token's alg".into());
    }
    DecodingKey::from_jwk(jwk).map_err(|_| "key type: the issuer's key is not usable".into())
}

/// One dot-separated part of a compact JWS, decoded without any check of its signature.
fn unverified_part<T: serde::de::DeserializeOwned>(
    token: &str,
    index: usize,
    name: &str,
) -> Result<T, String> {
    let bytes = unverified_bytes(token, index, name)?;
    serde_json::from_slice(&bytes).map_err(|_| format!("format: the token's {name} is not JSON"))
}

fn unverified_bytes(token: &str, index: usize, name: &str) -> Result<Vec<u8>, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(format!(
            "size: the token is over {} KiB",
            MAX_ID_TOKEN_BYTES / 1024
        ));
    }
    if parts.len() != 3 {
        return Err("format: not a signed JWT (three base64url parts)".into());
    }
    URL_SAFE_NO_PAD
        .decode(parts[index])
        .map_err(|_| format!("format: the token's {name} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::Settings;
    use crate::oidc::dev_issuer::{DevAlg, DevClaims, DevIssuer};

    fn insecure() -> KeySets {
        KeySets::new(Settings {
            allow_insecure_issuer: true,
            ..Settings::default()
        })
    }

    #[test]
    fn tokens_of_both_algorithms_verify_and_forgeries_do_not() {
        let issuer = DevIssuer::start("127.0.0.1:0", DevClaims::default()).expect("issuer");
        let keys = insecure();
        let claims = issuer.claims("authkeys");
        for alg in [DevAlg::RS256, DevAlg::ES256] {
            let token = issuer.mint(alg, &claims);
            assert_eq!(claimed_issuer(&token).as_deref(), Ok(issuer.url()));
            let verified = verified_claims(&keys, issuer.url(), &token).expect("verified");
            assert_eq!(Value::Object(verified), claims);
            // Another payload under the same signature.
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","sub":"evil"}"#);
            parts[1] = &forged;
            let err = verified_claims(&keys, issuer.url(), &parts.join(".")).unwrap_err();
            assert!(err.starts_with("signature:"), "{err}");
        }
        let rs_kid = issuer.current_kid(DevAlg::RS256);
        let mismatched = issuer.mint_with_kid(DevAlg::ES256, &rs_kid, &claims);
        let err = verified_claims(&keys, issuer.url(), &mismatched).unwrap_err();
        assert!(err.starts_with("key type:"), "{err}");
    }
}
