//! The server under test as a process: `TestServer` (the harness: a temp dir, a file
//! database, the test admin token, restarts on the same file) on top of `ServerProcess` (any
//! `authkeys serve` command line, its ready line and every later stdout line, signals, exit).

use super::store::{PgDatabase, Store, store_for_this_test};
use super::{ADMIN_TOKEN, Api, BIN, Db, Reaped, eventually};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tempfile::TempDir;

/// How long a start, an exit or a log line may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

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
    /// Use this PostgreSQL database (shared with other nodes) whatever the suite's store.
    pub database: Option<Arc<PgDatabase>>,
    /// Keep the database on the disk under the system's temp dir rather than in `/dev/shm`
    /// (see `scratch_dir`).
    pub on_disk: bool,
}

impl Options {
    /// A flag without a value, such as `--oidc-allow-insecure-issuer`.
    pub fn flag(mut self, flag: &str) -> Options {
        self.args.push(flag.to_string());
        self
    }

    /// The database on the disk (`Options::on_disk`).
    pub fn on_disk(mut self) -> Options {
        self.on_disk = true;
        self
    }

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
    process: Option<ServerProcess>,
    /// The PostgreSQL database, if the server uses one; after `process`, so that it is dropped
    /// once the server is gone.
    database: Option<Arc<PgDatabase>>,
    log_path: PathBuf,
    starts: usize,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> TestServer {
        let dir = scratch_dir(options.on_disk);
        let database = match (&options.database, options.memory) {
            (Some(database), _) => Some(database.clone()),
            (None, false) if store_for_this_test() == Store::Postgres => Some(PgDatabase::create()),
            _ => None,
        };
        let mut server = TestServer {
            log_path: dir.path().join("server-0.log"),
            dir,
            url: String::new(),
            admin_token: ADMIN_TOKEN.to_string(),
            ready_line: Value::Null,
            options,
            process: None,
            database,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// The SQLite file. A test that reads it is about SQLite: on PostgreSQL it must read through
    /// `db()` instead, or be listed in tests/it/sqlite-only.txt.
    #[track_caller]
    pub fn db_path(&self) -> PathBuf {
        if let Some(database) = &self.database {
            panic!(
                "this test reads the SQLite file, but the server uses PostgreSQL database {}: read \
                 through TestServer::db(), or list the test in tests/it/sqlite-only.txt",
                database.name
            );
        }
        self.sqlite_path()
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("authkeys.db")
    }

    /// What the server stored, whichever the store.
    pub fn db(&self) -> Db {
        match &self.database {
            Some(database) => Db::Postgres(database.clone()),
            None => Db::Sqlite(self.db_path()),
        }
    }

    /// What `--db` is given: `:memory:`, the SQLite file or the PostgreSQL URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match (&self.database, self.options.memory) {
            (Some(database), _) => database.url.clone().into(),
            (None, true) => ":memory:".into(),
            (None, false) => self.sqlite_path().into(),
        }
    }

    /// The command line this harness runs, for tests that need to run it themselves.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.arg("serve").arg("--listen").arg("127.0.0.1:0");
        command.arg("--db").arg(self.db_arg());
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
        let command = match self.options.fd_limit {
            Some(limit) => with_fd_limit(&self.command(), limit),
            None => self.command(),
        };
        let process = ServerProcess::spawn(command, &self.log_path);
        self.ready_line = process.ready();
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
        self.process = Some(process);
    }

    /// The server's process id, for reading `/proc/<pid>`.
    pub fn pid(&self) -> u32 {
        self.running().child.id()
    }

    fn running(&self) -> &ServerProcess {
        self.process.as_ref().expect("the server is running")
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
        if let Some(mut process) = self.process.take() {
            process.child.kill9();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut process = self.process.take().expect("the server is running");
        process.send_signal("TERM");
        process.wait()
    }

    /// Starts the server again on the same database (the old process must be gone).
    pub fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "stop the server before restarting it"
        );
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

/// A temporary directory for a server's files, in memory (`/dev/shm`) where there is one.
/// The server commits with `synchronous=FULL`, and on a disk each commit's fsync was most of
/// the wall time of the tests that log in thousands of machines; on tmpfs it returns at once.
/// Nothing a test proves needs the disk: a `kill -9` kills the process, not the kernel that
/// holds what it wrote, and the database is the same SQLite file with the same WAL.
fn scratch_dir(on_disk: bool) -> TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("authkeys-it-");
    match !on_disk && shm.is_dir() {
        true => builder.tempdir_in(shm),
        false => builder.tempdir(),
    }
    .expect("creating a temp dir")
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

/// One `authkeys serve` process: the harness's, or one a test runs with its own command line
/// to see every line it prints on stdout and send it any signal.
pub struct ServerProcess {
    child: Reaped,
    stdout_lines: mpsc::Receiver<String>,
    /// The first stdout line, as printed.
    pub ready_line: String,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Spawns `command`, logging to `log_path`, and waits (bounded) for its first stdout line.
    pub fn spawn(mut command: Command, log_path: &Path) -> ServerProcess {
        let log = std::fs::File::create(log_path).expect("creating the log file");
        let child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning authkeys");
        let mut child = Reaped::new(child);
        let stdout = child.child_mut().stdout.take().expect("stdout is piped");
        let (sender, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let log = || std::fs::read_to_string(log_path).unwrap_or_default();
        let ready_line = match stdout_lines.recv_timeout(DEADLINE) {
            Ok(line) if !line.trim().is_empty() => line,
            _ => panic!(
                "authkeys printed no ready line\n--- server log ---\n{}",
                log()
            ),
        };
        ServerProcess {
            child,
            stdout_lines,
            ready_line,
            log_path: log_path.to_path_buf(),
        }
    }

    pub fn ready(&self) -> Value {
        serde_json::from_str(&self.ready_line)
            .unwrap_or_else(|err| panic!("ready line {:?} is not JSON: {err}", self.ready_line))
    }

    pub fn url(&self) -> String {
        self.ready()["url"]
            .as_str()
            .expect("the ready line has a url")
            .to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `INT`, …) and returns at once.
    pub fn send_signal(&self, signal: &str) {
        self.child.signal(signal);
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child
            .wait_within(DEADLINE)
            .unwrap_or_else(|| panic!("the server did not exit\n--- log ---\n{}", self.log()))
    }

    /// Every stdout line after the ready line; call once the process has exited.
    pub fn rest_of_stdout(&self) -> Vec<String> {
        let mut lines = Vec::new();
        eventually("stdout to be closed", DEADLINE, || {
            loop {
                match self.stdout_lines.try_recv() {
                    Ok(line) => lines.push(line),
                    Err(mpsc::TryRecvError::Disconnected) => return Some(()),
                    Err(mpsc::TryRecvError::Empty) => return None,
                }
            }
        });
        lines
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        eventually(&format!("the log to say {needle:?}"), DEADLINE, || {
            self.log().contains(needle).then_some(())
        });
    }
}
