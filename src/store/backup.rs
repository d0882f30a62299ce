//! `authkeys backup`: a consistent copy of a live database through SQLite's online backup
//! API. The copy is taken in one step, inside one read transaction: in WAL mode that sees a
//! single committed state and never blocks the server's writer, so the server keeps serving
//! while it runs. The copy is written owner-only next to its destination and renamed into
//! place, so `OUT` is never a half-written file.

use super::files::create_owner_only;
use super::{BUSY_TIMEOUT, SCHEMA_VERSION};
use crate::domain::error::StartError;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a finished backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackedUp {
    pub bytes: u64,
}

/// Copies the authkeys database at `source` to `out` (created or replaced, mode 0600).
pub(crate) fn backup(source: &Path, out: &Path) -> Result<BackedUp, StartError> {
    let fail = |what: &str, err: rusqlite::Error| StartError::caused(what, err);
    // Never create an empty database where the user meant an existing one.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let from = Connection::open_with_flags(source, flags)
        .map_err(|err| fail(&format!("opening {}", source.display()), err))?;
    from.busy_timeout(BUSY_TIMEOUT)
        .map_err(|err| fail("setting the busy timeout", err))?;
    let version: i64 = from
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| fail(&format!("reading {}", source.display()), err))?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(StartError::new(format!(
            "{} is not an authkeys database this binary knows (schema version {version})",
            source.display()
        )));
    }
    let partial = partial_path(out);
    // A leftover from an interrupted backup is ours to replace.
    let _ = fs::remove_file(&partial);
    create_owner_only(&partial)?;
    let copied = copy(&from, &partial).and_then(|()| {
        fs::rename(&partial, out).map_err(|err| {
            StartError::caused(
                format!("moving {} to {}", partial.display(), out.display()),
                err,
            )
        })
    });
    if copied.is_err() {
        let _ = fs::remove_file(&partial);
    }
    copied?;
    let bytes = fs::metadata(out)
        .map_err(|err| StartError::caused(format!("reading {}", out.display()), err))?
        .len();
    Ok(BackedUp { bytes })
}

fn copy(from: &Connection, to_path: &Path) -> Result<(), StartError> {
    let fail = |err: rusqlite::Error| {
        StartError::caused(
            format!("copying the database to {}", to_path.display()),
            err,
        )
    };
    let mut to = Connection::open(to_path).map_err(fail)?;
    {
        let backup = Backup::new(from, &mut to).map_err(fail)?;
        let deadline = Instant::now() + BUSY_TIMEOUT;
        // -1: every page in one step, so the copy is one snapshot and is never restarted by
        // the server's writes. Busy or locked only while another process holds a lock the
        // step needs: retry until the same timeout as any other statement.
        loop {
            match backup.step(-1).map_err(fail)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    return Err(StartError::new(format!(
                        "copying the database to {}: gave up waiting ({other:?})",
                        to_path.display()
                    )));
                }
            }
        }
    }
    let check: String = to
        .pragma_query_value(None, "quick_check", |row| row.get(0))
        .map_err(fail)?;
    if check != "ok" {
        return Err(StartError::new(format!(
            "the copy at {} failed its integrity check: {check}",
            to_path.display()
        )));
    }
    // Fold any WAL into the file and make it durable before it is renamed into place.
    to.pragma_update(None, "journal_mode", "DELETE")
        .map_err(fail)?;
    to.close().map_err(|(_, err)| fail(err))?;
    fs::File::open(to_path)
        .and_then(|file| file.sync_all())
        .map_err(|err| StartError::caused(format!("syncing {}", to_path.display()), err))
}

/// `OUT.partial`, in the same directory so that the rename is atomic.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
