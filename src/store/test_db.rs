//! Test databases of both engines: a SQLite file in a temporary directory, or a fresh
//! database on the throwaway PostgreSQL cluster (`AUTHKEYS_TEST_POSTGRES_URL` if set, else
//! `scripts/pg-throwaway start target/pg-test`, which installs and starts it as needed). A
//! test never skips because PostgreSQL is missing: it fails, saying why.

use super::{Database, Store};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub(crate) enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { server: String, name: String },
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A new, empty database on the shared throwaway cluster.
    pub(crate) fn postgres() -> TestDb {
        TestDb::postgres_on(shared_cluster())
    }

    /// A new, empty database on the cluster at `server` (a URL naming any database).
    pub(crate) fn postgres_on(server: &str) -> TestDb {
        let name = crate::domain::token::random_id("authkeys_").to_lowercase();
        admin(server)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        TestDb::Postgres {
            server: server.to_string(),
            name,
        }
    }

    pub(crate) fn database(&self) -> Database {
        match self {
            TestDb::Sqlite(dir) => Database::File(dir.path().join("authkeys.db")),
            TestDb::Postgres { server, name } => Database::from_arg(&with_database(server, name)),
        }
    }

    /// A store on this database: one node's worth (open several for several nodes).
    pub(crate) fn open(&self) -> Store {
        Store::open(&self.database()).expect("opening the test database")
    }

    /// A plain PostgreSQL connection to this database, for checks the store does not offer.
    pub(crate) fn client(&self) -> postgres::Client {
        let TestDb::Postgres { server, name } = self else {
            panic!("a SQLite test database has no PostgreSQL client")
        };
        admin(&with_database(server, name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { server, name } = self
            && let Ok(mut client) = postgres::Client::connect(server, postgres::NoTls)
        {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|err| panic!("connecting to the test cluster: {err}"))
}

/// `url` naming the database `name` instead of its own.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The shared throwaway cluster's URL, started once per test process.
pub(crate) fn shared_cluster() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("AUTHKEYS_TEST_POSTGRES_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| throwaway("start", "target/pg-test"))
    })
}

/// Runs `scripts/pg-throwaway COMMAND DIR` (DIR under the crate) and returns what it printed.
pub(crate) fn throwaway(command: &str, dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/pg-throwaway"))
        .arg(command)
        .arg(root.join(dir))
        .output()
        .expect("running scripts/pg-throwaway");
    assert!(
        output.status.success(),
        "scripts/pg-throwaway {command} {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("a UTF-8 URL")
        .trim()
        .to_string()
}

#[test]
fn a_url_names_another_database() {
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres", "x"),
        "postgres://u:p@h:5/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres?connect_timeout=1", "x"),
        "postgres://u:p@h:5/x?connect_timeout=1"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
}
