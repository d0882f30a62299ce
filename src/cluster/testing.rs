//! A fresh PostgreSQL database per test: `AUTHKEYS_TEST_POSTGRES_URL`, else the throwaway
//! cluster of `scripts/pg-throwaway` (started, and PostgreSQL installed, if need be). Never
//! skipped: a missing PostgreSQL fails the test.

use postgres::{Client, NoTls};

pub(crate) struct TestDatabase {
    pub(crate) url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    pub(crate) fn new() -> TestDatabase {
        let server = server_url();
        let name = format!("authkeys_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = Client::connect(&server, NoTls).expect("connecting to PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        let url = server.replacen("/postgres", &format!("/{name}"), 1);
        assert!(url.ends_with(&name), "unexpected test URL {server}");
        TestDatabase { url, server, name }
    }

    pub(crate) fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connecting to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.server, NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name));
        }
    }
}

/// Asked once per test binary: the script is not safe to run several times at once.
fn server_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(start_server).clone()
}

fn start_server() -> String {
    if let Ok(url) = std::env::var("AUTHKEYS_TEST_POSTGRES_URL") {
        return url;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new(format!("{root}/scripts/pg-throwaway"))
        .args(["start", &format!("{root}/target/pg-test")])
        .output()
        .expect("running scripts/pg-throwaway");
    assert!(
        output.status.success(),
        "scripts/pg-throwaway failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("a URL")
        .trim()
        .to_string()
}
