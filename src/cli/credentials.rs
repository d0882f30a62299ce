//! The saved session of `authkeys login`: `credentials.json` (0600, in a 0700 directory) under
//! `$AUTHKEYS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/authkeys`, else `~/.config/authkeys`.

use super::CliError;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// Deliberately not `Debug`: it holds a session token.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub session_token: String,
    pub app: String,
    pub machine_id: String,
}

pub fn path() -> Result<PathBuf, CliError> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let dir = if let Some(dir) = non_empty("AUTHKEYS_CONFIG_DIR") {
        PathBuf::from(dir)
    } else if let Some(config) = non_empty("XDG_CONFIG_HOME") {
        PathBuf::from(config).join("authkeys")
    } else if let Some(home) = non_empty("HOME") {
        PathBuf::from(home).join(".config").join("authkeys")
    } else {
        return Err(CliError::Message(
            "cannot find a config directory: set AUTHKEYS_CONFIG_DIR".into(),
        ));
    };
    Ok(dir.join("credentials.json"))
}

/// Writes the credentials atomically (temporary file, then rename), owner-only.
pub fn save(credentials: &Credentials) -> Result<PathBuf, CliError> {
    let path = path()?;
    let fail = |err: std::io::Error| CliError::caused(format!("saving {}", path.display()), err);
    let dir = path.parent().expect("the credentials path has a directory");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let temporary = path.with_extension("json.tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    let json = serde_json::to_vec_pretty(credentials).expect("credentials serialise");
    file.write_all(&json).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&temporary, &path).map_err(fail)?;
    Ok(path)
}

pub fn load() -> Result<Credentials, CliError> {
    load_if_any()?
        .ok_or_else(|| CliError::Message("not logged in: run `authkeys login` first".into()))
}

/// The saved session, or `None` when there is none.
pub fn load_if_any() -> Result<Option<Credentials>, CliError> {
    let path = path()?;
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(CliError::caused(format!("reading {}", path.display()), err)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| CliError::caused(format!("{} is not valid", path.display()), err))
}

pub fn remove() -> Result<(), CliError> {
    let path = path()?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(CliError::caused(
            format!("removing {}", path.display()),
            err,
        )),
    }
}
