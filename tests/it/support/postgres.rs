//! A real PostgreSQL for the tests: `AUTHKEYS_TEST_POSTGRES_URL` if set, else the throwaway
//! cluster of `scripts/pg-throwaway start target/pg-test` (installed and started if need be;
//! idempotent, so test binaries share it). Each caller gets a fresh database of its own.

use super::{ADMIN_TOKEN, BIN, ServerProcess};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The cluster's URL, ending in `/postgres` (the maintenance database).
fn cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("AUTHKEYS_TEST_POSTGRES_URL") {
            return url;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(root.join("scripts/pg-throwaway"))
            .arg("start")
            .arg(root.join("target/pg-test"))
            .output()
            .expect("running scripts/pg-throwaway");
        assert!(
            output.status.success(),
            "scripts/pg-throwaway start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("a URL")
            .trim()
            .to_string()
    })
}

/// A new, empty database on the test cluster.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let name = format!("authkeys_{:016x}", rand::random::<u64>());
        let mut admin = PgDatabase::admin_client();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
        let base = cluster_url();
        let url = format!(
            "{}/{name}",
            &base[..base.rfind('/').expect("a URL with a path")]
        );
        PgDatabase { name, url }
    }

    /// A client on the cluster's maintenance database.
    pub fn admin_client() -> postgres::Client {
        postgres::Client::connect(cluster_url(), postgres::NoTls)
            .unwrap_or_else(|err| panic!("connecting to the test cluster: {err}"))
    }

    /// A client on this database, to look at what the server stored.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|err| panic!("connecting to {}: {err}", self.name))
    }

    /// The tables in this database's schema, by name.
    pub fn tables(&self) -> Vec<String> {
        self.client()
            .query(
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = current_schema() ORDER BY 1",
                &[],
            )
            .expect("listing the tables")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// `self.url` with another password, for the tests of refused credentials.
    pub fn url_with_password(&self, password: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let (userinfo, host_path) = rest.split_once('@').expect("user:password@");
        let user = userinfo.split(':').next().expect("a user");
        format!("{scheme}://{user}:{password}@{host_path}")
    }

    /// `authkeys serve --db` this database on a free port, with the test admin token.
    pub fn serve(&self, log: &Path, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &self.url])
            .args(args)
            .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "debug");
        ServerProcess::spawn(command, log)
    }
}
