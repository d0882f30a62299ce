//! The claim checks of an OIDC login, in the order API.md lists them, each failure naming
//! its check. Pure: the token's signature is already verified and `now` is passed in.

use serde_json::{Map, Value};

/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub(crate) const LEEWAY_SECS: i64 = 60;
/// The longest a token may be valid: from `iat` to `exp`.
pub(crate) const MAX_LIFETIME_SECS: i64 = 3600;
/// A `jti` longer than this is refused (it is stored for replay protection).
pub(crate) const MAX_JTI_CHARS: usize = 256;

/// What a trust policy requires of a token's claims.
pub(crate) struct Expectation<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) claims: &'a Map<String, Value>,
}

/// The times and `jti` of a token, checked once whatever the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) jti: String,
    /// `exp` in Unix seconds: the token's `jti` is remembered until then (plus the leeway).
    pub(crate) exp: i64,
}

/// Checks `exp`, `iat`, `nbf`, the lifetime and the presence of `jti` at `now` (Unix seconds).
pub(crate) fn check_times(claims: &Map<String, Value>, now: i64) -> Result<Validity, String> {
    let exp = seconds(claims, "exp")?.ok_or("exp: the token has no expiry")?;
    let iat = seconds(claims, "iat")?.ok_or("iat: the token has no issue time")?;
    if exp + LEEWAY_SECS <= now {
        return Err("exp: the token has expired".into());
    }
    if iat - LEEWAY_SECS > now {
        return Err("iat: the token is issued in the future".into());
    }
    if let Some(nbf) = seconds(claims, "nbf")?
        && nbf - LEEWAY_SECS > now
    {
        return Err("nbf: the token is not valid yet".into());
    }
    if exp - iat > MAX_LIFETIME_SECS {
        return Err("lifetime: more than 1 hour between iat and exp".into());
    }
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.chars().count() <= MAX_JTI_CHARS => {
            jti.clone()
        }
        Some(_) => {
            return Err(format!(
                "jti: not a string of 1 to {MAX_JTI_CHARS} characters"
            ));
        }
        None => return Err("jti: the token has no jti".into()),
    };
    Ok(Validity { jti, exp })
}

/// Checks the claims a policy names: `iss`, `aud`, `sub` and each `claims` entry.
pub(crate) fn check_policy(
    claims: &Map<String, Value>,
    expected: &Expectation<'_>,
) -> Result<(), String> {
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err("iss: the issuer does not match".into());
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(expected.audience)),
        _ => false,
    };
    if !audience_matches {
        return Err("aud: the audience does not match".into());
    }
    let subject = claims.get("sub").and_then(Value::as_str);
    if !subject.is_some_and(|sub| glob_matches(expected.subject, sub)) {
        return Err("sub: the subject does not match".into());
    }
    for (name, value) in expected.claims {
        if claims.get(name) != Some(value) {
            return Err(format!("claims.{name}: the claim does not match"));
        }
    }
    Ok(())
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and every other character for itself. Greedy with backtracking to the last
/// star: linear in practice, at most `pattern × text` steps.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            last_star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = last_star {
            // Let the last star swallow one more character and retry from there.
            p = star + 1;
            t = matched + 1;
            last_star = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A numeric time claim as whole seconds; a present but non-numeric one is refused.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("{name}: not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    #[test]
    fn globs_match_any_run_of_characters_at_stars_only() {
        let pattern = "repo:acme/api:ref:refs/heads/*";
        assert!(glob_matches(pattern, "repo:acme/api:ref:refs/heads/main"));
        assert!(glob_matches(pattern, "repo:acme/api:ref:refs/heads/"));
        assert!(!glob_matches(pattern, "repo:acme/api:ref:refs/tags/v1"));
        assert!(!glob_matches(pattern, "repo:acme/apix:ref:refs/heads/main"));
        assert!(glob_matches("repo:*/api:*", "repo:acme/api:ref:x"));
        assert!(!glob_matches("repo:*/api", "repo:acme/api:ref"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("*", ""));
    }

    #[test]
    fn each_time_check_names_itself() {
        let now = 1_000_000;
        let ok = json!({"exp": now + 600, "iat": now - 10, "jti": "j1"});
        assert_eq!(
            check_times(&map(ok), now),
            Ok(Validity {
                jti: "j1".into(),
                exp: now + 600
            })
        );
        let cases = [
            (
                json!({"exp": now - 61, "iat": now - 100, "jti": "j"}),
                "exp:",
            ),
            (
                json!({"exp": now + 600, "iat": now + 61, "jti": "j"}),
                "iat:",
            ),
            (
                json!({"exp": now + 600, "iat": now, "nbf": now + 61, "jti": "j"}),
                "nbf:",
            ),
            (
                json!({"exp": now + 3601, "iat": now, "jti": "j"}),
                "lifetime:",
            ),
            (json!({"exp": now + 600, "iat": now}), "jti:"),
            (json!({"iat": now, "jti": "j"}), "exp:"),
            (json!({"exp": "soon", "iat": now, "jti": "j"}), "exp:"),
        ];
        for (claims, prefix) in cases {
            let err = check_times(&map(claims.clone()), now).expect_err("refused");
            assert!(err.starts_with(prefix), "{claims}: {err}");
        }
        // Within the leeway is accepted.
        let skewed = json!({"exp": now - 59, "iat": now + 59, "nbf": now + 59, "jti": "j"});
        assert!(check_times(&map(skewed), now).is_ok());
    }

    #[test]
    fn each_policy_check_names_itself() {
        let wanted = map(json!({"repository_owner": "acme"}));
        let expected = Expectation {
            issuer: "https://issuer",
            audience: "authkeys",
            subject: "repo:acme/*",
            claims: &wanted,
        };
        let good = json!({"iss": "https://issuer", "aud": ["x", "authkeys"],
                          "sub": "repo:acme/api", "repository_owner": "acme"});
        assert_eq!(check_policy(&map(good.clone()), &expected), Ok(()));
        let with = |field: &str, value: Value| {
            let mut claims = map(good.clone());
            claims.insert(field.into(), value);
            check_policy(&claims, &expected).expect_err("refused")
        };
        assert!(with("iss", json!("https://issuer/")).starts_with("iss:"));
        assert!(with("aud", json!("other")).starts_with("aud:"));
        assert!(with("aud", json!(["other"])).starts_with("aud:"));
        assert!(with("sub", json!("repo:evil/api")).starts_with("sub:"));
        assert!(with("repository_owner", json!("evil")).starts_with("claims.repository_owner:"));
    }
}
