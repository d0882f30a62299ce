//! An auth key as a user hands it over: from `--auth-key` or `AUTHKEYS_AUTH_KEY`, either the
//! key itself or `file:PATH` (as Tailscale takes it), trimmed of the spaces and newlines a
//! paste or a file adds, and checked locally (prefix, length, checksum), so a typo is reported
//! without a request, which would count against the server's throttle.

use super::CliError;
use authkeys::ops::{self, Malformed};
use authkeys::{Secret, TokenKind};
use std::io::Read;

/// The most of a `file:` file read: a key is 40 characters, so anything much longer is the
/// wrong file.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The key from `value` (the flag or its environment variable), trimmed and checked.
pub fn read(value: Option<String>) -> Result<Secret, CliError> {
    let value = value
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| {
            CliError::Usage("no auth key: pass --auth-key or set AUTHKEYS_AUTH_KEY".into())
        })?;
    let key = match value.trim().strip_prefix("file:") {
        Some(path) => from_file(path)?,
        None => value.trim().to_string(),
    };
    check(&key)?;
    Ok(Secret::new(key))
}

fn from_file(path: &str) -> Result<String, CliError> {
    let unreadable = |err: std::io::Error| {
        CliError::Usage(format!("cannot read the auth key from file {path}: {err}"))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(CliError::Usage(format!(
            "{path} is longer than {MAX_KEY_FILE_BYTES} bytes: it does not hold just an auth key"
        )));
    }
    Ok(text.trim().to_string())
}

/// Says what is wrong with a key that cannot be one, without quoting it.
fn check(key: &str) -> Result<(), CliError> {
    let problem = match ops::check_token(TokenKind::AuthKey, key) {
        Ok(()) => return Ok(()),
        Err(Malformed::Prefix) if key.starts_with("ens_") => {
            "this is a session token, not an auth key (auth keys start with ena_)".to_string()
        }
        Err(Malformed::Prefix) => "this is not an auth key (auth keys start with ena_)".into(),
        Err(Malformed::Length) => format!(
            "this key has a typo (an auth key is 40 characters, this one is {})",
            key.chars().count()
        ),
        Err(Malformed::Characters) => {
            "this key has a typo (an auth key holds only letters and digits after ena_)".into()
        }
        Err(Malformed::Checksum) => "this key has a typo (checksum mismatch)".into(),
    };
    Err(CliError::Usage(problem))
}
