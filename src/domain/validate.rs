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

/// The rules for a new app, wherever it comes from (the API or the seed file).
pub(crate) fn new_app(id: &str, name: Option<&str>) -> Result<()> {
    app_id(id)?;
    if let Some(name) = name {
        text("name", name, MAX_APP_NAME_CHARS)?;
    }
    Ok(())
}

/// The rules for a new key, wherever it comes from (the API or the seed file).
pub(crate) fn new_key(new: &NewKey) -> Result<()> {
    if let Some(description) = &new.description {
        text("description", description, MAX_DESCRIPTION_CHARS)?;
    }
    if let Some(secs) = new.expires_in_secs {
        expires_in(secs)?;
    }
    Ok(())
}

/// App ids match `^[a-z0-9][a-z0-9-]{0,62}$`.
pub(crate) fn app_id(id: &str) -> Result<()> {
    let mut bytes = id.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if first_ok && rest_ok && id.len() <= 63 {
        Ok(())
    } else {
        Err(invalid(
            "id",
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
        ))
    }
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

/// Most tags a key may carry, and so a token may allow.
pub(crate) const MAX_TAGS: usize = 16;
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
    if let Some(tags) = &limits.allowed_tags {
        for tag in distinct("allowed_tags", tags, MAX_TAGS)? {
            if !is_tag(tag) {
                return Err(invalid(
                    "allowed_tags",
                    &format!("{tag:?} does not match ^tag:[a-z0-9][a-z0-9-]{{0,62}}$"),
                ));
            }
        }
    }
    Ok(parsed)
}

/// A key tag: `^tag:[a-z0-9][a-z0-9-]{0,62}$`.
pub(crate) fn is_tag(tag: &str) -> bool {
    tag.strip_prefix("tag:")
        .is_some_and(|name| app_id(name).is_ok())
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
    fn expiry_bounds() {
        assert!(expires_in(0).is_err());
        assert!(expires_in(1).is_ok());
        assert!(expires_in(MAX_EXPIRES_IN_SECS).is_ok());
        assert!(expires_in(MAX_EXPIRES_IN_SECS + 1).is_err());
    }
}
