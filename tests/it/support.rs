//! Test harness: runs the real `authkeys` binary on `127.0.0.1:0` with a real SQLite file in a
//! temporary directory, reads its ready line (the bound socket is the readiness signal, no
//! sleeps), and talks HTTP to it. Every failed expectation prints the request, the response
//! and the server's log.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_authkeys");
/// The fields of the contract's objects (API.md), in order.
pub const APP_FIELDS: &[&str] = &["id", "name", "created_at"];
pub const KEY_FIELDS: &[&str] = &[
    "id",
    "app",
    "description",
    "reusable",
    "ephemeral",
    "hint",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "uses",
    "machines",
];
pub const MACHINE_FIELDS: &[&str] = &[
    "id",
    "app",
    "key_id",
    "name",
    "ephemeral",
    "created_at",
    "expires_at",
    "last_seen_at",
];

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghij";

/// How to start a server: extra flags and environment on top of the defaults.
#[derive(Clone, Default)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Do not set AUTHKEYS_ADMIN_TOKEN (let the server generate one).
    pub generated_admin_token: bool,
    /// Use `--db :memory:` instead of a file.
    pub memory: bool,
    /// Run the server with at most this many open file descriptors (`ulimit -n`).
    pub fd_limit: Option<u32>,
}

impl Options {
    pub fn arg(mut self, flag: &str, value: &str) -> Options {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

pub struct TestServer {
    pub dir: TempDir,
    pub url: String,
    pub admin_token: String,
    pub ready_line: Value,
    options: Options,
    child: Option<Child>,
    log_path: PathBuf,
    starts: usize,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut server = TestServer {
            log_path: dir.path().join("server-0.log"),
            dir,
            url: String::new(),
            admin_token: ADMIN_TOKEN.to_string(),
            ready_line: Value::Null,
            options,
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("authkeys.db")
    }

    /// The command line this harness runs, for tests that need to run it themselves.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.arg("serve").arg("--listen").arg("127.0.0.1:0");
        if self.options.memory {
            command.arg("--db").arg(":memory:");
        } else {
            command.arg("--db").arg(self.db_path());
        }
        command.args(&self.options.args);
        command.env_remove("AUTHKEYS_ADMIN_TOKEN");
        if !self.options.generated_admin_token {
            command.env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        for (name, value) in &self.options.env {
            command.env(name, value);
        }
        command
            .env("RUST_LOG", "debug")
            .current_dir(self.dir.path());
        command
    }

    fn spawn(&mut self) {
        self.log_path = self.dir.path().join(format!("server-{}.log", self.starts));
        self.starts += 1;
        let log = std::fs::File::create(&self.log_path).expect("creating the log file");
        let mut command = match self.options.fd_limit {
            Some(limit) => with_fd_limit(&self.command(), limit),
            None => self.command(),
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning authkeys");
        let stdout = child.stdout.take().expect("stdout is piped");
        let line = read_ready_line(stdout, &self.log_path);
        self.ready_line = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("ready line {line:?} is not JSON: {err}"));
        self.url = self.ready_line["url"]
            .as_str()
            .expect("ready line has url")
            .to_string();
        if let Some(token) = self.ready_line["admin_token"].as_str() {
            self.admin_token = token.to_string();
        } else if self.options.generated_admin_token && !self.options.memory {
            self.admin_token = std::fs::read_to_string(admin_token_path(&self.db_path()))
                .expect("reading the generated admin token file")
                .trim()
                .to_string();
        }
        self.child = Some(child);
    }

    /// The server's process id, for reading `/proc/<pid>`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Everything the current server process has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every log line of every process this harness started.
    pub fn all_logs(&self) -> String {
        (0..self.starts)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("server-{n}.log"))))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `kill -9` the server: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the killed server");
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success());
        wait_with_timeout(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("server did not stop on SIGTERM\n{}", self.log()))
    }

    /// Starts the server again on the same database (the old process must be gone).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn();
    }

    /// Starts the server again on the same database with other options.
    pub fn restart_with(&mut self, options: Options) {
        self.options = options;
        self.restart();
    }

    /// A client with the admin token.
    pub fn admin(&self) -> Api {
        self.client(Some(&self.admin_token))
    }

    /// A client with no credentials.
    pub fn anonymous(&self) -> Api {
        self.client(None)
    }

    /// A client presenting `bearer`.
    pub fn client(&self, bearer: Option<&str>) -> Api {
        Api {
            url: self.url.clone(),
            bearer: bearer.map(str::to_string),
            log_path: self.log_path.clone(),
        }
    }

    /// Creates an app and returns its id.
    pub fn create_app(&self, id: &str) -> String {
        self.admin()
            .post("/v1/apps", &json!({"id": id}))
            .expect(201);
        id.to_string()
    }

    /// Creates a key with `body` in `app`; returns the creation response (with `key`).
    pub fn create_key(&self, app: &str, body: Value) -> Value {
        self.admin()
            .post(&format!("/v1/apps/{app}/keys"), &body)
            .expect(201)
    }

    /// Logs a machine in with `auth_key`; returns the login response.
    pub fn login(&self, auth_key: &str) -> Value {
        self.anonymous()
            .post("/v1/auth/login", &json!({"auth_key": auth_key}))
            .expect(201)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `command` run by `sh` after `ulimit -n limit`; `exec` keeps the server's process id.
fn with_fd_limit(command: &Command, limit: u32) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        limited.current_dir(dir);
    }
    limited
}

pub fn admin_token_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.admin-token", db.display()))
}

fn read_ready_line(stdout: std::process::ChildStdout, log_path: &Path) -> String {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    match receiver.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if !line.trim().is_empty() => line,
        _ => panic!(
            "authkeys printed no ready line\n--- server log ---\n{}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        ),
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP client bound to one server and one set of credentials.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    bearer: Option<String>,
    log_path: PathBuf,
}

impl Api {
    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).expect("serialising a test body");
        self.send("POST", path, Some("application/json"), Some(bytes))
    }

    /// Sends `body` as-is with the given content type (`None`: no Content-Type header).
    pub fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        self.send("POST", path, content_type, Some(body.to_vec()))
    }

    /// Any method, any body: for 405s and odd requests.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let description = format!(
            "{method} {path} {}",
            body.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        );
        let request = request
            .body(body.unwrap_or_default())
            .expect("building a request");
        let mut response = agent.run(request).unwrap_or_else(|err| {
            panic!("{description}: {err}\n--- server log ---\n{}", self.log())
        });
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Reply {
            request: description,
            status,
            headers,
            json: serde_json::from_str(&body).unwrap_or(Value::Null),
            body,
            log_path: self.log_path.clone(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// The value of header `name` (case-insensitive) in a response's `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// A response, with what is needed to explain a failed expectation.
pub struct Reply {
    pub request: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Value,
    log_path: PathBuf,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        if self.status != status {
            self.fail(&format!("expected status {status}"));
        }
        self.json
    }

    /// Asserts a contract error: status, `error.code`, a message, and the right headers.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        let shape_ok = self.json["error"]["code"] == code
            && self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
            && self.header("Content-Type") == Some("application/json");
        if self.status != status || !shape_ok {
            self.fail(&format!("expected error {status} {code}"));
        }
        if status == 401 && self.header("WWW-Authenticate") != Some("Bearer") {
            self.fail("a 401 must carry WWW-Authenticate: Bearer");
        }
        self.json
    }

    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- request ---\n{}\n--- response ---\n{} {:?}\n{}\n--- server log ---\n{}",
            self.request,
            self.status,
            self.headers,
            self.body,
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        )
    }
}

/// Polls until connecting to `address` is refused: authkeys-http's accept thread notices a closed
/// server on its own schedule.
pub fn wait_until_refused(address: std::net::SocketAddr) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Err(_) => return Ok(()),
            Ok(_) if std::time::Instant::now() > deadline => {
                return Err(format!("{address} still accepts connections"));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Polls `done` every 20 ms for up to `limit`; panics with `what` if it never holds.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection to a test's database file, for inspecting what the server stored.
pub fn open_db(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap_or_else(|err| panic!("opening {}: {err}", db.display()))
}

pub fn integrity_check(db: &Path) -> String {
    open_db(db)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("running PRAGMA integrity_check")
}

pub fn user_version(db: &Path) -> i64 {
    open_db(db)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("reading PRAGMA user_version")
}

/// `GET /v1/auth/whoami` with `session`.
pub fn whoami(server: &TestServer, session: &str) -> Reply {
    server.client(Some(session)).get("/v1/auth/whoami")
}

/// `POST /v1/keys/verify` for `key`; verify always answers 200.
pub fn verify(server: &TestServer, key: &str) -> Value {
    server
        .anonymous()
        .post("/v1/keys/verify", &json!({"key": key}))
        .expect(200)
}

/// The session token of a login response.
pub fn session_of(login: &Value) -> String {
    login["session_token"]
        .as_str()
        .expect("session token")
        .to_string()
}

/// The value of one sample line, e.g. `authkeys_logins_total{outcome="success"}`; 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a sample value"))
}

pub fn scrape(api: &Api) -> String {
    let reply = api.get("/metrics");
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(reply.status, 200);
    reply.body
}
