//! Which store the suite runs against. `AUTHKEYS_TEST_STORE=postgres` gives every `TestServer`
//! its own fresh PostgreSQL database instead of a SQLite file (the same tests, not copies);
//! unset or `sqlite`, the default, a file in the test's temporary directory. PostgreSQL is the
//! one at `AUTHKEYS_TEST_POSTGRES_URL` if set, else the throwaway cluster of
//! `scripts/pg-throwaway start target/pg-test` (idempotent; installs PostgreSQL if missing).
//! Tests that are about the SQLite file itself are listed, with the reason, in
//! `tests/it/sqlite-only.txt`: `scripts/test` prints that list and skips them in the PostgreSQL
//! run, and here such a test keeps its SQLite file whatever the store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// The store `AUTHKEYS_TEST_STORE` names; anything but `sqlite` or `postgres` stops the test.
pub fn configured_store() -> Store {
    match std::env::var("AUTHKEYS_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => Store::Sqlite,
        Ok("postgres" | "postgresql") => Store::Postgres,
        Ok(other) => panic!("AUTHKEYS_TEST_STORE={other:?}: expected sqlite or postgres"),
    }
}

/// The store a server started by the current test uses: the configured one, except for a test
/// listed in `tests/it/sqlite-only.txt`, which is about the SQLite file.
pub fn store_for_this_test() -> Store {
    match configured_store() {
        Store::Postgres if current_test_is_sqlite_only() => Store::Sqlite,
        store => store,
    }
}

/// The tests that only mean something on SQLite, with the reason: the list in
/// `tests/it/sqlite-only.txt` (`name reason`, `#` comments; `module::` and `prefix*` cover
/// several tests).
pub fn sqlite_only() -> Vec<(&'static str, &'static str)> {
    include_str!("../sqlite-only.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, reason) = line
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("sqlite-only.txt: {line:?} gives no reason"));
            (name, reason.trim())
        })
        .collect()
}

/// libtest names each test's thread after the test (`module::test_name`).
fn current_test_is_sqlite_only() -> bool {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or_default();
    sqlite_only()
        .iter()
        .any(|(entry, _)| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *entry || (entry.ends_with("::") && name.starts_with(entry)),
        })
}

/// The URL of the PostgreSQL server the suite uses (its maintenance database `postgres`),
/// found or started once per test binary.
pub fn postgres_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("AUTHKEYS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_throwaway_cluster(&repository().join("target/pg-test")),
    })
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/pg-throwaway start DIR`: starts (creating it the first time) a cluster of its own
/// in `dir` and returns its URL.
pub fn start_throwaway_cluster(dir: &Path) -> String {
    let url = pg_throwaway("start", dir);
    assert!(
        url.starts_with("postgres://"),
        "pg-throwaway printed {url:?}"
    );
    url
}

/// `scripts/pg-throwaway restart DIR`: a fast shutdown of the cluster in `dir`, then a start.
pub fn restart_throwaway_cluster(dir: &Path) {
    pg_throwaway("restart", dir);
}

fn pg_throwaway(command: &str, dir: &Path) -> String {
    let output = Command::new(repository().join("scripts/pg-throwaway"))
        .arg(command)
        .arg(dir)
        .output()
        .expect("running scripts/pg-throwaway");
    assert!(
        output.status.success(),
        "scripts/pg-throwaway {command} {}: {}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("pg-throwaway prints UTF-8")
        .trim()
        .to_string()
}

/// `url` naming database `name` instead of the one it names.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..authority_end])
}

/// A fresh database for one test (several nodes may share it), dropped when the last holder
/// is gone: `DROP DATABASE … WITH (FORCE)` also ends a killed node's leftover connections.
pub struct PgDatabase {
    pub name: String,
    /// What `--db` is given.
    pub url: String,
    /// The maintenance database of the same server, to create and drop this one.
    server_url: String,
}

impl PgDatabase {
    /// A new, empty database on the suite's PostgreSQL.
    pub fn create() -> Arc<PgDatabase> {
        PgDatabase::create_on(postgres_url())
    }

    /// A new, empty database on the server at `server_url`.
    pub fn create_on(server_url: &str) -> Arc<PgDatabase> {
        let name = format!(
            "authkeys_test_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        connect(server_url)
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
        Arc::new(PgDatabase {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_string(),
        })
    }

    /// A connection to this database, as the tests read it.
    pub fn connect(&self) -> postgres::Client {
        connect(&self.url)
    }

    /// The connection to the maintenance database, for statements about this one (terminating
    /// its backends, say).
    pub fn connect_to_server(&self) -> postgres::Client {
        connect(&self.server_url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped =
            postgres::Client::connect(&self.server_url, postgres::NoTls).and_then(|mut client| {
                client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
            });
        if let Err(err) = dropped {
            eprintln!("could not drop test database {}: {err}", self.name);
        }
    }
}

pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|err| panic!("connecting to PostgreSQL ({url}): {err}"))
}

/// Every `?N` placeholder (the suite's SQL is written for SQLite) as PostgreSQL's `$N`.
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn urls_name_the_test_database() {
    let url = "postgres://authkeys:pw@127.0.0.1:5432/postgres";
    assert_eq!(
        with_database(url, "t1"),
        "postgres://authkeys:pw@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://h:1/db?sslmode=disable", "t2"),
        "postgresql://h:1/t2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    assert_eq!(
        dollar_placeholders("a = ?1 AND b = ?12 OR c = '?'"),
        "a = $1 AND b = $12 OR c = '?'"
    );
}

/// Every entry of tests/it/sqlite-only.txt names tests that exist: `module::name` a `fn name`
/// in the module's file, `module::` a module, `prefix*` at least one test starting so.
#[test]
fn every_sqlite_only_entry_names_existing_tests() {
    let suite = repository().join("tests/it");
    for (entry, reason) in sqlite_only() {
        assert!(!reason.is_empty(), "{entry} gives no reason");
        let (module, name) = entry.rsplit_once("::").expect("module::name");
        let file = suite.join(format!("{}.rs", module.replace("::", "/")));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("{entry}: {}: {err}", file.display()));
        let found = match name.strip_suffix('*') {
            _ if name.is_empty() => true,
            Some(prefix) => source.contains(&format!("fn {prefix}")),
            None => source.contains(&format!("fn {name}(")),
        };
        assert!(
            found,
            "sqlite-only.txt: {entry} names no test in {}",
            file.display()
        );
    }
}
