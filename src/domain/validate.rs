//! Rules for client-supplied fields: formats and length bounds. Each check names the field
//! it rejects so the client sees exactly what to fix.

use crate::domain::access::{KeyLimits, Scope};
use crate::domain::error::{Error, Result};
use crate::domain::model::NewKey;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

pub(crate) const MAX_APP_NAME_CHARS: usize = 100;
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 200;
pub const MAX_MACHINE_NAME_CHARS: usize = 100;
/// Ten years: long enough for any real key, short enough that `now + expires_in` cannot
/// overflow.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;
pub(crate) const MAX_TAGS: usize = 16;
pub(crate) const MAX_METADATA_BYTES: usize = 1024;
/// The bounds of `session_ttl` and `idle_timeout`: a minute to a year. The least is
/// `Authority`'s to set (tests lower it with a hidden flag to wait out seconds, not minutes).
pub const MIN_KEY_TIMEOUT_SECS: u64 = 60;
pub(crate) const MAX_KEY_TIMEOUT_SECS: u64 = 365 * 24 * 3600;
/// JavaScript's largest exact integer: a bound every client can represent.
pub(crate) const MAX_MAX_USES: i64 = (1 << 53) - 1;

/// The rules for a new app, wherever it comes from (the API or the seed file).
pub(crate) fn new_app(id: &str, name: Option<&str>) -> Result<()> {
    app_id(id)?;
    if let Some(name) = name {
        text("name", name, MAX_APP_NAME_CHARS)?;
    }
    Ok(())
}

/// The rules for a new key, wherever it comes from (the API or the seed file), with
/// `session_ttl` and `idle_timeout` no shorter than `min_timeout_secs`.
pub(crate) fn new_key(new: &NewKey, min_timeout_secs: u64) -> Result<()> {
    if let Some(description) = &new.description {
        text("description", description, MAX_DESCRIPTION_CHARS)?;
    }
    if let Some(secs) = new.expires_in_secs {
        expires_in(secs)?;
    }
    tags("tags", &new.policy.tags)?;
    if new.policy.metadata.as_str().len() > MAX_METADATA_BYTES {
        return Err(invalid(
            "metadata",
            &format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    match new.policy.max_uses {
        Some(max) if !(1..=MAX_MAX_USES).contains(&max) => {
            return Err(invalid(
                "max_uses",
                &format!("must be a whole number from 1 to {MAX_MAX_USES}, or null"),
            ));
        }
        Some(max) if max > 1 && !new.reusable => {
            return Err(invalid(
                "max_uses",
                "must be 1 or null for a single-use key (`reusable: false`)",
            ));
        }
        _ => {}
    }
    let timeout = |field: &'static str, value: Option<u64>| match value {
        Some(secs) if !(min_timeout_secs..=MAX_KEY_TIMEOUT_SECS).contains(&secs) => Err(invalid(
            field,
            &format!(
                "must be a whole number of seconds from {min_timeout_secs} to \
                     {MAX_KEY_TIMEOUT_SECS}, or null"
            ),
        )),
        _ => Ok(()),
    };
    timeout("session_ttl", new.policy.session_ttl)?;
    timeout("idle_timeout", new.policy.idle_timeout)?;
    if new.policy.session_ttl.is_some() && !new.ephemeral {
        return Err(invalid(
            "session_ttl",
            "applies only to ephemeral keys (`ephemeral: true`)",
        ));
    }
    Ok(())
}

/// Tags match `^tag:[a-z0-9][a-z0-9-]{0,62}$`, at most `MAX_TAGS` of them, each once.
pub(crate) fn tags(field: &'static str, tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            field,
            &format!("must hold at most {MAX_TAGS} tags"),
        ));
    }
    for (n, value) in tags.iter().enumerate() {
        tag(field, value)?;
        if tags[..n].contains(value) {
            return Err(invalid(field, &format!("must not repeat `{value}`")));
        }
    }
    Ok(())
}

/// One tag: `tag:` and then what an app id may be.
pub(crate) fn tag(field: &'static str, value: &str) -> Result<()> {
    let name = value.strip_prefix("tag:").unwrap_or("");
    if is_app_id(name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be `tag:` followed by 1 to 63 characters of a-z, 0-9 and '-', starting with \
             a letter or digit",
        ))
    }
}

/// App ids match `^[a-z0-9][a-z0-9-]{0,62}$`.
pub(crate) fn app_id(id: &str) -> Result<()> {
    if is_app_id(id) {
        Ok(())
    } else {
        Err(invalid(
            "id",
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
        ))
    }
}

/// `^[a-z0-9][a-z0-9-]{0,62}$`, the shape of app ids and of tags after `tag:`.
fn is_app_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    first_ok && rest_ok && id.len() <= 63
}

/// Display text: non-empty, at most `max_chars` characters, no control characters and no
/// format characters (general category Cf: bidi controls such as U+202E, zero-width ones such
/// as U+200B, U+FEFF), which make text display as something other than what it is
/// (`admin\u{202E}gnp.exe` shows as `adminexe.png`).
pub(crate) fn text(field: &'static str, value: &str, max_chars: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(
            field,
            &format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err(invalid(
            field,
            &format!(
                "must not contain invisible format or bidi-control characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn expires_in(secs: u64) -> Result<()> {
    if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(invalid(
            "expires_in",
            &format!("must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECS}"),
        ))
    }
}

pub(crate) const MAX_ADMIN_TOKEN_NAME_CHARS: usize = 100;

/// The rules for a new scoped admin token (the apps it names must also exist: checked where
/// it is stored, in the same transaction).
pub(crate) fn new_admin_token(
    name: &str,
    scopes: &[String],
    apps: Option<&[String]>,
    expires_in_secs: Option<u64>,
    limits: &KeyLimits,
) -> Result<Vec<Scope>> {
    text("name", name, MAX_ADMIN_TOKEN_NAME_CHARS)?;
    let parsed = distinct("scopes", scopes, Scope::ALL.len())?
        .iter()
        .map(|scope| {
            Scope::parse(scope).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|scope| scope.as_str()).collect();
                invalid(
                    "scopes",
                    &format!(
                        "names an unknown scope {scope:?}; known: {}",
                        known.join(", ")
                    ),
                )
            })
        })
        .collect::<Result<Vec<Scope>>>()?;
    if parsed.is_empty() {
        return Err(invalid("scopes", "must name at least one scope"));
    }
    if let Some(apps) = apps {
        if apps.is_empty() {
            return Err(invalid(
                "apps",
                "must name at least one app, or be null for every app",
            ));
        }
        for app in distinct("apps", apps, 1000)? {
            app_id(app).map_err(|_| invalid("apps", &format!("{app:?} is not an app id")))?;
        }
    }
    if let Some(secs) = expires_in_secs {
        expires_in(secs)?;
    }
    if let Some(secs) = limits.max_key_lifetime
        && !(1..=MAX_EXPIRES_IN_SECS).contains(&secs)
    {
        return Err(invalid(
            "max_key_lifetime",
            &format!("must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECS}"),
        ));
    }
    if let Some(allowed) = &limits.allowed_tags {
        tags("allowed_tags", allowed)?;
    }
    Ok(parsed)
}

/// `values` when they are at most `max` and all different; else a 422 naming `field`.
fn distinct<'v>(field: &'static str, values: &'v [String], max: usize) -> Result<&'v [String]> {
    if values.len() > max {
        return Err(invalid(field, &format!("may have at most {max} entries")));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(repeated) = values.iter().find(|value| !seen.insert(value.as_str())) {
        return Err(invalid(field, &format!("names {repeated:?} twice")));
    }
    Ok(values)
}

/// How long a rotated key keeps working: 0 to 30 days.
pub(crate) const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;

pub(crate) fn grace_seconds(secs: u64) -> Result<()> {
    if secs <= MAX_GRACE_SECS {
        Ok(())
    } else {
        Err(invalid(
            "grace_seconds",
            &format!("must be a whole number of seconds from 0 to {MAX_GRACE_SECS}"),
        ))
    }
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids() {
        for ok in ["a", "0", "my-app", "a-", &"a".repeat(63)] {
            assert!(app_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "my_app", "my app", "é", &"a".repeat(64)] {
            assert!(app_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_bounds() {
        assert!(text("name", "CI runner ✓", 100).is_ok());
        assert!(text("name", &"é".repeat(100), 100).is_ok());
        assert!(text("name", &"é".repeat(101), 100).is_err());
        assert!(text("name", " ", 100).is_err());
        assert!(text("name", "a\u{0}b", 100).is_err());
        assert!(text("name", "a\nb", 100).is_err());
    }

    #[test]
    fn text_refuses_every_format_character() {
        // A sample across Cf: bidi embeddings, overrides and isolates, zero-width characters,
        // the BOM, the soft hyphen, Arabic and Syriac marks, tags, and the invisible operators.
        let format = [
            '\u{AD}',
            '\u{600}',
            '\u{61C}',
            '\u{6DD}',
            '\u{70F}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{110BD}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E007F}',
        ];
        for c in format {
            let value = format!("admin{c}gnp.exe");
            let err = text("name", &value, 100).expect_err(&format!("U+{:04X}", u32::from(c)));
            assert!(err.to_string().contains("`name`"), "{err}");
        }
        // Every Cf character there is: the rule is the category, not a list.
        let all_cf = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.general_category() == GeneralCategory::Format);
        for c in all_cf {
            assert!(text("description", &format!("x{c}"), 100).is_err());
        }
        // Visible non-ASCII text is still fine, combining marks included.
        for ok in ["Ünïcödé", "日本語", "e\u{301}", "✓ ci"] {
            assert!(text("name", ok, 100).is_ok(), "{ok}");
        }
    }

    #[test]
    fn tag_rules() {
        let tags =
            |values: &[&str]| -> Vec<String> { values.iter().map(|v| v.to_string()).collect() };
        assert!(
            super::tags(
                "tags",
                &tags(&["tag:ci", "tag:a-1", &format!("tag:{}", "a".repeat(63))])
            )
            .is_ok()
        );
        for bad in [
            "ci",
            "tag:",
            "tag:-a",
            "tag:CI",
            "tag:a_b",
            "Tag:a",
            &format!("tag:{}", "a".repeat(64)),
        ] {
            assert!(super::tags("tags", &tags(&[bad])).is_err(), "{bad}");
        }
        assert!(super::tags("tags", &tags(&["tag:a", "tag:a"])).is_err());
        let sixteen: Vec<String> = (0..16).map(|n| format!("tag:t{n}")).collect();
        assert!(super::tags("tags", &sixteen).is_ok());
        let seventeen: Vec<String> = (0..17).map(|n| format!("tag:t{n}")).collect();
        assert!(super::tags("tags", &seventeen).is_err());
    }

    #[test]
    fn expiry_bounds() {
        assert!(expires_in(0).is_err());
        assert!(expires_in(1).is_ok());
        assert!(expires_in(MAX_EXPIRES_IN_SECS).is_ok());
        assert!(expires_in(MAX_EXPIRES_IN_SECS + 1).is_err());
    }
}
