//! Where the admin token comes from: the configuration (`AUTHKEYS_ADMIN_TOKEN`), the hash
//! stored by an earlier start, or a fresh one generated now. Only its hash is ever stored; a
//! generated token is written once to `<db>.admin-token` (0600) or, for `:memory:`, handed
//! back for the ready line.
//!
//! A configured token takes precedence over a generated one but does not erase it: its hash
//! stays stored, and its file stays on disk. So a start without `AUTHKEYS_ADMIN_TOKEN` after
//! starts with it (the variable lost from a unit's environment, say) makes the generated token
//! valid again, silently but for the warning this module logs. To tell that case, a configured
//! start that shadows a stored generated token records it (`SHADOWED`); the next start without
//! a configured token warns and clears the record, and generating a new token clears it too.

use crate::domain::error::{Error, StartError};
use crate::domain::token::{self, Secret, TokenHash, TokenKind};
use crate::store::{self, Database, Store};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const SETTING: &str = "admin_token_sha256";
/// Present while the last start used a configured token other than the stored generated one.
const SHADOWED: &str = "admin_token_shadowed_by_configured";

/// The shortest configured admin token accepted: 32 characters, as long as a generated token's
/// random part, so that a configured root token is never the easy one to guess.
pub(crate) const MIN_CONFIGURED_CHARS: usize = 32;

/// The admin token's hash, and the token itself when this start generated it.
pub(crate) struct AdminToken {
    pub(crate) hash: TokenHash,
    pub(crate) generated: Option<Secret>,
}

/// Refuses a configured token too short to be safe. Checked before anything touches the
/// database, so a refused start leaves nothing behind. The message gives the length, never the
/// token.
pub(crate) fn check_configured(configured: Option<&Secret>) -> Result<(), StartError> {
    check_length("AUTHKEYS_ADMIN_TOKEN", configured)
}

/// Refuses a configured shared secret (`name`, its environment variable) shorter than the
/// admin token's minimum.
pub(crate) fn check_length(name: &str, configured: Option<&Secret>) -> Result<(), StartError> {
    let Some(token) = configured else {
        return Ok(());
    };
    let chars = token.expose().chars().count();
    if chars < MIN_CONFIGURED_CHARS {
        return Err(StartError::new(format!(
            "{name} is {chars} characters long; it must be at least \
             {MIN_CONFIGURED_CHARS} (for example `openssl rand -hex 32`)"
        )));
    }
    Ok(())
}

pub(crate) fn resolve(
    store: &Store,
    database: &Database,
    configured: Option<&Secret>,
) -> Result<AdminToken, StartError> {
    if let Database::File(path) = database {
        store::tighten(&token_file(path))?;
    }
    // On the writer connection, which is open anyway: a start opens no reader it does not need
    // (each holds file descriptors for the server's life).
    let (stored, shadowed) = store
        .write(|w| {
            let stored = w
                .setting(SETTING)?
                .as_deref()
                .and_then(TokenHash::from_slice);
            let shadowed = w.setting(SHADOWED)?.is_some();
            if let Some(token) = configured
                && stored.is_some_and(|hash| hash != token.hash())
                && !shadowed
            {
                w.put_setting(SHADOWED, b"1")?;
            }
            Ok((stored, shadowed))
        })
        .map_err(|err| start_error(&err))?;
    if let Some(token) = configured {
        return Ok(AdminToken {
            hash: token.hash(),
            generated: None,
        });
    }
    if let Some(hash) = stored {
        // Only a file database outlives its server, so only it can have a stored hash.
        if let Database::File(path) = database {
            announce_stored(store, &token_file(path), shadowed)?;
        }
        return Ok(AdminToken {
            hash,
            generated: None,
        });
    }
    let token = generate(store, database)?;
    Ok(AdminToken {
        hash: token.hash(),
        generated: Some(token),
    })
}

/// Says where the stored token is, or, when a configured token shadowed it until now, warns
/// that it is valid again (and forgets the shadowing, so the warning is given once).
fn announce_stored(store: &Store, file: &Path, shadowed: bool) -> Result<(), StartError> {
    if !shadowed {
        log::info!("admin token: see {}", file.display());
        return Ok(());
    }
    log::warn!(
        "AUTHKEYS_ADMIN_TOKEN is not set, but the last start used it: the generated admin \
         token ({}) is valid again. If that is not meant, set AUTHKEYS_ADMIN_TOKEN, or stop \
         the server and run `authkeys rotate-admin-token`",
        file.display()
    );
    store
        .write(|w| w.delete_setting(SHADOWED))
        .map_err(|err| start_error(&err))
}

/// Replaces the stored admin token with a new one, written to `<db>.admin-token`. A running
/// server keeps the token it started with until it is restarted.
pub(crate) fn rotate(database: &Database) -> Result<PathBuf, StartError> {
    let path = match database {
        Database::File(path) => path,
        Database::Memory => {
            return Err(StartError::new(
                "a :memory: database's admin token lives only as long as its server",
            ));
        }
        Database::Postgres(_) => {
            return Err(StartError::new(
                "with PostgreSQL, set AUTHKEYS_ADMIN_TOKEN on every node instead:                  rotate-admin-token writes the token to a file beside a SQLite database",
            ));
        }
    };
    if !path.exists() {
        return Err(StartError::new(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let store = Store::open(database)?;
    generate(&store, database)?;
    Ok(token_file(path))
}

/// Generates a token, writes it to the token file (file databases) and stores its hash.
fn generate(store: &Store, database: &Database) -> Result<Secret, StartError> {
    let token = token::generate(TokenKind::Admin);
    // The file is written before the hash is stored: a crash in between leaves a token no
    // start accepts, and the next start simply generates a new one, never a lost token.
    if let Database::File(path) = database {
        let file = token_file(path);
        write_owner_only(&file, token.expose())
            .map_err(|err| StartError::caused(format!("writing {}", file.display()), err))?;
        log::info!(
            "generated an admin token and wrote it to {}",
            file.display()
        );
    }
    store
        .write(|w| {
            w.put_setting(SETTING, token.hash().as_bytes())?;
            // A new token was never shadowed: nothing is valid again.
            w.delete_setting(SHADOWED)
        })
        .map_err(|err| start_error(&err))?;
    Ok(token)
}

/// `<db path>.admin-token`
pub(crate) fn token_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".admin-token");
    PathBuf::from(name)
}

fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("admin-token.tmp");
    // A leftover from a crash could have another mode; start from nothing.
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

fn start_error(err: &Error) -> StartError {
    StartError::caused("reading the admin token setting", err.clone())
}
