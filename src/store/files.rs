//! Where the database file lives and who may read it. The file is created owner-only (0600)
//! before SQLite opens it; SQLite gives its `-wal` and `-shm` files the database file's mode.
//! Files left from an earlier run (the database, a `-wal` or `-shm` a crash left behind, the
//! admin token file) are tightened to 0600 at start, with a warning, if others could read them.

use super::pg_url::PgUrl;
use crate::domain::error::StartError;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the database is: a file, `:memory:` for a throwaway instance, or a PostgreSQL
/// database (a `postgres://` or `postgresql://` URL, shown only redacted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    File(PathBuf),
    Memory,
    Postgres(PgUrl),
}

impl Database {
    pub fn from_arg(arg: &str) -> Database {
        if arg == ":memory:" {
            Database::Memory
        } else if PgUrl::is_postgres(arg) {
            Database::Postgres(PgUrl::new(arg))
        } else {
            Database::File(PathBuf::from(arg))
        }
    }
}

/// A private directory holding a `:memory:` instance's database, removed on drop.
///
/// A true SQLite `:memory:` database is one per connection, which would force readers and the
/// writer onto one connection; a scratch file keeps the same WAL design for both cases.
pub(crate) struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.0) {
            log::warn!("could not remove {}: {err}", self.0.display());
        }
    }
}

/// Returns the database file's path, creating the file owner-only if it does not exist.
pub(crate) fn prepare(database: &Database) -> Result<(PathBuf, Option<ScratchDir>), StartError> {
    match database {
        Database::File(path) => {
            create_owner_only(path)?;
            for suffix in ["-wal", "-shm"] {
                let mut companion = path.as_os_str().to_owned();
                companion.push(suffix);
                tighten(Path::new(&companion))?;
            }
            Ok((path.clone(), None))
        }
        Database::Postgres(url) => Err(StartError::new(format!(
            "{url} is a PostgreSQL database, not a file"
        ))),
        Database::Memory => {
            let dir = std::env::temp_dir().join(crate::domain::token::random_id("authkeys-"));
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|err| StartError::caused(format!("creating {}", dir.display()), err))?;
            let scratch = ScratchDir(dir);
            let path = scratch.0.join("authkeys.db");
            create_owner_only(&path)?;
            Ok((path, Some(scratch)))
        }
    }
}

/// Creates `path` with mode 0600, or tightens an existing file that others could read.
pub(super) fn create_owner_only(path: &Path) -> Result<(), StartError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => tighten(path),
        Err(err) => Err(StartError::caused(
            format!("opening {}", path.display()),
            err,
        )),
    }
}

/// Sets an existing file that others could read or write to 0600, with a warning; a missing
/// file is left missing.
pub(crate) fn tighten(path: &Path) -> Result<(), StartError> {
    let fail = |err: std::io::Error| StartError::caused(format!("opening {}", path.display()), err);
    let mode = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(fail(err)),
    };
    if mode & 0o077 != 0 {
        log::warn!(
            "{} was readable by others (mode {:o}); setting it to 0600",
            path.display(),
            mode & 0o777
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}
