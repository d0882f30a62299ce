//! The operations the `authkeys` command (and a test fixture or benchmark) runs on a database
//! file or a token without starting a server. A deliberate, small API: each is one call into
//! the module that owns the work.

use crate::authority::seed::{self, Seed};
use crate::domain::error::StartError;
use crate::domain::github_keys::GithubKeys;
use crate::domain::token::{self, Secret, TokenKind};

pub use crate::domain::token::Malformed;
use crate::runtime::admin_token;
use crate::store::{self, Database, PgUrl, Store};
use std::path::{Path, PathBuf};

pub use crate::domain::scan::{Found, MAX_TOKEN_LEN, TokenFinder};
pub use crate::store::{BackedUp, Migrated};

/// Copies the database at `source` to `out` (created or replaced, mode 0600) in one
/// consistent snapshot, while a server may be running on it.
pub fn backup(source: &Path, out: &Path) -> Result<BackedUp, StartError> {
    store::backup(source, out)
}

/// Generates a new admin token for the database, writes it to the token file beside it and
/// stores its hash; returns the file. A running server keeps the old token until restarted.
pub fn rotate_admin_token(database: &Database) -> Result<PathBuf, StartError> {
    admin_token::rotate(database)
}

/// A new random token of `kind` in its wire format (prefix, random part, checksum).
pub fn generate_token(kind: TokenKind) -> Secret {
    token::generate(kind)
}

/// Checks the shape and checksum of `token` as a `kind` token, as the server does before any
/// lookup, so a client can report a typo without sending the token anywhere.
pub fn check_token(kind: TokenKind, token: &str) -> Result<(), Malformed> {
    token::parse(kind, token).map(drop)
}

/// Creates the database if it does not exist and brings its schema to this version.
pub fn migrate(database: &Database) -> Result<(), StartError> {
    Store::open(database).map(drop)
}

/// Copies the SQLite database at `source` (upgraded to this binary's schema first) into the
/// empty PostgreSQL database at `target` (a `postgres://` URL), in one transaction.
pub fn migrate_to_postgres(source: &Path, target: &PgUrl) -> Result<Migrated, StartError> {
    store::migrate_to_postgres(source, target)
}

/// Reads and checks a `serve --seed` file (bounded, unknown fields refused).
pub fn load_seed(path: &Path) -> Result<Seed, StartError> {
    seed::load(path)
}

/// `text` with anything shaped like an authkeys token replaced, for messages that may quote
/// user input.
pub fn redact_secrets(text: &str) -> String {
    token::redact_secrets(text)
}

/// Most bytes read from a `--github-secret-scanning-keys` file: GitHub publishes a few keys.
const MAX_GITHUB_KEYS_BYTES: u64 = 64 * 1024;

/// Reads and checks a GitHub secret scanning key file (GitHub's published JSON shape).
pub fn load_github_keys(path: &Path) -> Result<GithubKeys, StartError> {
    use std::io::Read;
    let context = || format!("reading the GitHub secret scanning keys {}", path.display());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_GITHUB_KEYS_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|err| StartError::caused(context(), err))?;
    if text.len() as u64 > MAX_GITHUB_KEYS_BYTES {
        return Err(StartError::new(format!(
            "{}: larger than {MAX_GITHUB_KEYS_BYTES} bytes",
            context()
        )));
    }
    GithubKeys::from_json(&text).map_err(|err| StartError::new(format!("{}: {err}", context())))
}
