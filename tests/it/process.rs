//! The server as a process: the ready line on stdout, the admin token (generated, stored only
//! as a hash, or configured), file modes, secrets kept out of logs and storage, durability
//! across `kill -9`, graceful stops on SIGTERM and SIGINT, the `:memory:` scratch directory,
//! schema versions, start-up errors, environment equivalents of the flags, and the library
//! entry points (`Server::start_throwaway`, `Server::start`).

use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// How long any bounded wait in this module may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers: processes this module runs itself, HTTP without the harness, storage inspection.
// ---------------------------------------------------------------------------------------------

/// `authkeys serve` with nothing inherited from the caller's environment that could change
/// its configuration, run in `dir`, logging at the default level.
fn bare_serve_command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.arg("serve").current_dir(dir);
    for name in [
        "AUTHKEYS_ADMIN_TOKEN",
        "AUTHKEYS_DB",
        "AUTHKEYS_LISTEN",
        "AUTHKEYS_EPHEMERAL_TTL",
        "AUTHKEYS_SWEEP_INTERVAL",
        "AUTHKEYS_MAX_CONNECTIONS",
        "AUTHKEYS_MAX_CONNECTIONS_PER_CLIENT",
        "AUTHKEYS_TRUSTED_PROXIES",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
}

/// What the harness runs: a file database in `dir`, a free port, the test admin token and
/// debug logging.
fn serve_command(dir: &Path) -> Command {
    let mut command = bare_serve_command(dir);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(dir.join("authkeys.db"))
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "debug");
    command
}

/// How a process that was expected to exit by itself ended.
struct Exit {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion (bounded), capturing stdout and stderr in anonymous files so
/// a server that wrongly keeps running cannot block on a full pipe.
fn run_to_exit(mut command: Command) -> Exit {
    let mut stdout = tempfile::tempfile().expect("a temporary file");
    let mut stderr = tempfile::tempfile().expect("a temporary file");
    let mut child = command
        .stdout(stdout.try_clone().expect("cloning a file handle"))
        .stderr(stderr.try_clone().expect("cloning a file handle"))
        .spawn()
        .expect("spawning authkeys");
    let status = wait_with_timeout(&mut child, DEADLINE);
    let read = |file: &mut fs::File| {
        let mut text = String::new();
        file.rewind().expect("rewinding");
        file.read_to_string(&mut text).expect("reading output");
        text
    };
    let (stdout, stderr) = (read(&mut stdout), read(&mut stderr));
    let status = status.unwrap_or_else(|| {
        panic!("authkeys kept running when it should have exited\n{stdout}\n{stderr}")
    });
    Exit {
        status,
        stdout,
        stderr,
    }
}

/// Asserts that a start failed as the contract asks: non-zero exit, nothing on stdout (no
/// ready line), and the error as one line, the last one on stderr. Returns that line.
#[track_caller]
fn one_line_start_error(exit: &Exit) -> String {
    let explain = format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        exit.status, exit.stdout, exit.stderr
    );
    assert!(!exit.status.success(), "the start should fail\n{explain}");
    assert_ne!(exit.status.code(), None, "killed by a signal\n{explain}");
    assert_eq!(
        exit.stdout, "",
        "nothing may be printed on stdout\n{explain}"
    );
    let lines: Vec<&str> = exit.stderr.lines().filter(|l| !l.is_empty()).collect();
    let errors: Vec<&&str> = lines
        .iter()
        .filter(|line| line.starts_with("authkeys: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line\n{explain}");
    assert_eq!(
        lines.last(),
        Some(errors[0]),
        "the error is the last line (nothing trails it)\n{explain}"
    );
    errors[0].to_string()
}

/// One HTTP request with ureq, for servers the harness did not start. Returns status and
/// JSON body (`Null` when the body is not JSON).
fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(body) => {
            request = request.header("Content-Type", "application/json");
            serde_json::to_vec(body).expect("serialising a body")
        }
        None => Vec::new(),
    };
    let mut response = agent
        .run(request.body(bytes).expect("building a request"))
        .unwrap_or_else(|err| panic!("{method} {url}: {err}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `path` with `suffix` appended to its file name (`authkeys.db` → `authkeys.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The database, its WAL and its shared-memory file: every place SQLite keeps bytes.
fn storage_files(db: &Path) -> Vec<PathBuf> {
    vec![db.to_path_buf(), sibling(db, "-wal"), sibling(db, "-shm")]
}

/// Asserts that `secret` appears in none of `files` (those that exist), byte for byte.
#[track_caller]
fn assert_not_in_files(secret: &str, what: &str, files: &[PathBuf]) {
    assert!(!secret.is_empty());
    for file in files {
        let Ok(bytes) = fs::read(file) else { continue };
        let found = bytes
            .windows(secret.len())
            .any(|window| window == secret.as_bytes());
        assert!(
            !found,
            "the {what} is stored in clear in {}",
            file.display()
        );
    }
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// The names of the entries of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn port_of(url: &str) -> u16 {
    url.strip_prefix("http://127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{url:?} is not http://127.0.0.1:PORT"))
}

/// Asserts the ready line is `{"url": "http://127.0.0.1:PORT"}` with a real port, plus
/// exactly the `extra` keys.
#[track_caller]
fn check_ready_line(ready: &Value, extra: &[&str]) {
    let mut keys: Vec<&str> = ready
        .as_object()
        .unwrap_or_else(|| panic!("the ready line {ready} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut expected = vec!["url"];
    expected.extend_from_slice(extra);
    expected.sort();
    assert_eq!(keys, expected, "ready line {ready}");
    let url = ready["url"].as_str().expect("url is a string");
    assert_ne!(port_of(url), 0, "the ready line must name the bound port");
}

fn healthz(url: &str) -> (u16, Value) {
    http("GET", &format!("{url}/healthz"), None, None)
}

// ---------------------------------------------------------------------------------------------
// Ready line
// ---------------------------------------------------------------------------------------------

#[test]
fn ready_line_of_a_file_database_is_only_the_url_and_nothing_else_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(serve_command(dir.path()), &dir.path().join("log"));
    check_ready_line(&server.ready(), &[]);
    assert_eq!(
        server.ready_line,
        json!({"url": server.url()}).to_string(),
        "one compact JSON object on one line"
    );
    assert_eq!(healthz(&server.url()), (200, json!({"status": "ok"})));
    let (status, _) = http(
        "POST",
        &format!("{}/v1/apps", server.url()),
        Some(ADMIN_TOKEN),
        Some(&json!({"id": "printed-nothing"})),
    );
    assert_eq!(status, 201);

    server.send_signal("TERM");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert_eq!(
        server.rest_of_stdout(),
        Vec::<String>::new(),
        "stdout carries the ready line only"
    );
}

#[test]
fn ready_line_of_a_memory_database_carries_a_working_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_serve_command(dir.path());
    command.args(["--db", ":memory:", "--listen", "127.0.0.1:0"]);
    let mut server = ServerProcess::spawn(command, &dir.path().join("log"));
    let ready = server.ready();
    check_ready_line(&ready, &["admin_token"]);
    let token = ready["admin_token"]
        .as_str()
        .expect("admin_token is a string");
    assert!(token.len() >= 16, "a guessable admin token: {token:?}");
    let url = server.url();
    assert_eq!(
        http("GET", &format!("{url}/v1/apps"), Some(token), None),
        (200, json!({"apps": [], "next_cursor": null}))
    );
    let (status, body) = http(
        "GET",
        &format!("{url}/v1/apps"),
        Some(&format!("{token}x")),
        None,
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("invalid_credentials"))
    );
    assert!(!server.log().contains(token), "the admin token was logged");

    server.send_signal("TERM");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert_eq!(server.rest_of_stdout(), Vec::<String>::new());
}

#[test]
fn ready_line_of_a_memory_database_does_not_repeat_a_configured_admin_token() {
    // The token is printed only because a generated `:memory:` token exists nowhere else; a
    // configured one is already known to the operator and must not be copied to stdout.
    let server = TestServer::start_with(Options {
        memory: true,
        ..Options::default()
    });
    assert_eq!(server.ready_line, json!({"url": server.url}));
    server.admin().get("/v1/apps").expect(200);
}

// ---------------------------------------------------------------------------------------------
// Admin token
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_admin_token_is_written_owner_only_logged_by_path_and_stored_as_a_hash() {
    let mut server = TestServer::start_with(Options {
        generated_admin_token: true,
        ..Options::default()
    });
    let db = server.db_path();
    let token_file = admin_token_path(&db);
    assert_eq!(mode(&token_file), 0o600, "{}", token_file.display());
    let contents = fs::read_to_string(&token_file).unwrap();
    let token = contents.trim_end_matches('\n').to_string();
    assert_eq!(contents, format!("{token}\n"), "the token and a newline");
    assert!(token.len() >= 16, "a guessable admin token: {token:?}");
    assert_eq!(server.admin_token, token);
    assert_eq!(
        server.ready_line,
        json!({"url": server.url}),
        "not in the ready line"
    );

    server.admin().get("/v1/apps").expect(200);
    server.create_app("made-before-restart");
    server
        .client(Some("not-the-admin-token-at-all"))
        .get("/v1/apps")
        .expect_error(401, "invalid_credentials");

    let log = server.log();
    assert!(
        log.contains(&token_file.display().to_string()),
        "the log must say where the token is\n{log}"
    );
    assert!(!log.contains(&token), "the admin token was logged\n{log}");

    // Stored only as its hash: the one settings row about it holds SHA-256(token) and
    // nothing holds the token itself (the other row is the sweeper's `key.expiring` horizon).
    let settings: Vec<(String, Vec<u8>)> = open_db(&db)
        .prepare("SELECT name, value FROM settings WHERE name != 'key_expiring_horizon'")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(settings.len(), 1, "{settings:?}");
    assert_eq!(
        settings[0].1,
        sha256(&token),
        "the stored value is SHA-256(token)"
    );
    assert_not_in_files(&token, "admin token", &storage_files(&db));

    // A second start keeps the token: same file, same token, no new one generated.
    assert_eq!(server.terminate().code(), Some(0));
    assert_not_in_files(&token, "admin token", &storage_files(&db));
    server.restart();
    assert_eq!(fs::read_to_string(&token_file).unwrap(), contents);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(server.admin_token, token);
    server
        .client(Some(&token))
        .get("/v1/apps/made-before-restart")
        .expect(200);
    let second_log = server.log();
    assert!(
        second_log.contains(&token_file.display().to_string()),
        "{second_log}"
    );
    assert!(
        !second_log.contains("generated"),
        "regenerated\n{second_log}"
    );
    assert!(!second_log.contains(&token), "{second_log}");
    let stored: Vec<u8> = open_db(&db)
        .query_row(
            "SELECT value FROM settings WHERE name = 'admin_token_sha256'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(stored, sha256(&token));
}

#[test]
fn configured_admin_token_works_and_no_token_file_is_written() {
    let server = TestServer::start();
    assert_eq!(server.admin_token, ADMIN_TOKEN);
    server.admin().get("/v1/apps").expect(200);
    server.create_app("configured");
    server
        .client(Some("test-admin-token-0123456780"))
        .get("/v1/apps")
        .expect_error(401, "invalid_credentials");
    server
        .anonymous()
        .get("/v1/apps")
        .expect_error(401, "missing_credentials");
    assert!(!admin_token_path(&server.db_path()).exists());
    assert_eq!(
        listing(server.dir.path())
            .into_iter()
            .filter(|name| name.contains("admin-token"))
            .count(),
        0
    );
    assert!(!server.log().contains(ADMIN_TOKEN));
    assert_not_in_files(
        ADMIN_TOKEN,
        "admin token",
        &storage_files(&server.db_path()),
    );
}

// ---------------------------------------------------------------------------------------------
// File modes and secrets at rest
// ---------------------------------------------------------------------------------------------

#[test]
fn database_wal_shm_and_token_file_are_owner_only() {
    let server = TestServer::start_with(Options {
        generated_admin_token: true,
        ..Options::default()
    });
    server.create_app("a-write");
    let db = server.db_path();
    for file in storage_files(&db)
        .into_iter()
        .chain([admin_token_path(&db)])
    {
        assert!(
            file.exists(),
            "{} should exist after a write",
            file.display()
        );
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn existing_database_readable_by_others_is_tightened_to_owner_only() {
    let mut server = TestServer::start();
    server.create_app("kept");
    assert_eq!(server.terminate().code(), Some(0));
    let db = server.db_path();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(mode(&db), 0o644);

    server.restart();
    assert_eq!(mode(&db), 0o600);
    server.admin().get("/v1/apps/kept").expect(200);
    server.create_app("after-tightening");
    for file in storage_files(&db) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn leftover_wal_shm_and_token_file_open_to_others_are_tightened_with_a_warning() {
    let mut server = TestServer::start_with(Options {
        generated_admin_token: true,
        ..Options::default()
    });
    server.create_app("kept");
    // kill -9 leaves the WAL and its index behind, as a crash would.
    server.kill9();
    let db = server.db_path();
    let files: Vec<(PathBuf, u32)> = storage_files(&db)
        .into_iter()
        .chain([admin_token_path(&db)])
        .zip([0o644, 0o640, 0o604, 0o666])
        .collect();
    for (file, loose) in &files {
        assert!(file.exists(), "{} should be left behind", file.display());
        fs::set_permissions(file, fs::Permissions::from_mode(*loose)).unwrap();
    }

    server.restart();
    let log = server.log();
    for (file, loose) in &files {
        assert_eq!(mode(file), 0o600, "{}\n{log}", file.display());
        let warning = format!(
            "{} was readable by others (mode {loose:o}); setting it to 0600",
            file.display()
        );
        assert!(log.contains(&warning), "no {warning:?}\n{log}");
    }
    server.admin().get("/v1/apps/kept").expect(200);

    // Owner-only files are left alone, without a warning.
    server.kill9();
    server.restart();
    assert!(
        !server.log().contains("readable by others"),
        "{}",
        server.log()
    );
}

#[test]
fn listening_beyond_loopback_warns_that_there_is_no_tls() {
    let dir = tempfile::tempdir().unwrap();
    let warning = "is not a loopback address and authkeys has no TLS";
    let start = |listen: &str, log: &str| {
        let mut command = bare_serve_command(dir.path());
        command
            .args(["--listen", listen, "--db", ":memory:"])
            .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
        ServerProcess::spawn(command, &dir.path().join(log))
    };
    let mut everywhere = start("0.0.0.0:0", "everywhere.log");
    let log = everywhere.log();
    let port = everywhere.url().rsplit(':').next().unwrap().to_string();
    assert!(
        log.contains(&format!("http://0.0.0.0:{port} {warning}")) && log.contains("TLS"),
        "{log}"
    );
    everywhere.send_signal("TERM");
    assert_eq!(everywhere.wait().code(), Some(0));

    let mut loopback = start("127.0.0.1:0", "loopback.log");
    assert!(!loopback.log().contains(warning), "{}", loopback.log());
    loopback.send_signal("TERM");
    assert_eq!(loopback.wait().code(), Some(0));
}

#[test]
fn a_generated_admin_token_valid_again_once_the_configured_one_is_unset_is_warned_about() {
    let generated = Options {
        generated_admin_token: true,
        ..Options::default()
    };
    let mut server = TestServer::start_with(generated.clone());
    let token = server.admin_token.clone();
    let token_file = admin_token_path(&server.db_path());
    let warning = format!(
        "AUTHKEYS_ADMIN_TOKEN is not set, but the last start used it: the generated admin \
         token ({}) is valid again",
        token_file.display()
    );

    // A configured token takes over; the generated one stops working but stays on disk.
    server.terminate();
    server.restart_with(Options::default());
    let configured = server.client(Some(ADMIN_TOKEN));
    configured.get("/v1/apps").expect(200);
    let refused = server.client(Some(&token)).get("/v1/apps");
    refused.expect_error(401, "invalid_credentials");
    assert!(token_file.exists());
    assert!(!server.log().contains("valid again"), "{}", server.log());

    // AUTHKEYS_ADMIN_TOKEN is gone: the file's token works again, and the log says so once.
    server.terminate();
    server.restart_with(generated.clone());
    assert_eq!(server.admin_token, token);
    server.admin().get("/v1/apps").expect(200);
    let refused = server.client(Some(ADMIN_TOKEN)).get("/v1/apps");
    refused.expect_error(401, "invalid_credentials");
    assert!(server.log().contains(&warning), "{}", server.log());
    assert!(!server.log().contains(&token), "{}", server.log());
    server.terminate();
    server.restart();
    assert!(!server.log().contains("valid again"), "{}", server.log());

    // Configured again, and the token rotated before the next start: that token is new, not
    // valid again, so there is nothing to warn about.
    server.terminate();
    server.restart_with(Options::default());
    server.terminate();
    let rotated = Command::new(BIN)
        .args(["rotate-admin-token", "--db"])
        .arg(server.db_path())
        .output()
        .expect("running rotate-admin-token");
    assert!(rotated.status.success(), "{rotated:?}");
    server.restart_with(generated);
    assert_ne!(server.admin_token, token);
    server.admin().get("/v1/apps").expect(200);
    assert!(!server.log().contains("valid again"), "{}", server.log());
}

#[test]
fn keys_and_session_tokens_are_never_logged_or_stored_in_clear() {
    let server = TestServer::start();
    server.create_app("secrets");
    let created = server.create_key("secrets", json!({"reusable": true}));
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    let login = server.login(&key);
    let session = login["session_token"].as_str().unwrap().to_string();
    let machine_id = login["machine"]["id"].as_str().unwrap().to_string();
    let whoami = server
        .client(Some(&session))
        .get("/v1/auth/whoami")
        .expect(200);
    assert_eq!(whoami["machine"]["id"], machine_id);
    let verified = server
        .anonymous()
        .post("/v1/keys/verify", &json!({"key": key}))
        .expect(200);
    assert_eq!(verified["valid"], true);
    // Failed attempts quote client input; they must not echo it either.
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": format!("{key}x")}))
        .expect_error(401, "invalid_auth_key");

    let log = server.log();
    assert!(
        log.contains(&key_id),
        "the log should show some activity\n{log}"
    );
    assert!(!log.contains(&key), "the auth key was logged\n{log}");
    assert!(
        !log.contains(&session),
        "the session token was logged\n{log}"
    );

    let db = server.db();
    assert!(!db.holds_in_clear(&key), "the auth key is stored in clear");
    assert!(
        !db.holds_in_clear(&session),
        "the session token is stored in clear"
    );
    let stored = |sql: &str, id: &str| db.row(sql, &[id]).expect("a row")[0].clone();
    assert_eq!(
        stored("SELECT hash FROM keys WHERE id = ?1", &key_id),
        hex::encode(sha256(&key)),
        "keys.hash is SHA-256 of the full key"
    );
    assert_eq!(
        stored("SELECT token_hash FROM machines WHERE id = ?1", &machine_id),
        hex::encode(sha256(&session)),
        "machines.token_hash is SHA-256"
    );
}

// ---------------------------------------------------------------------------------------------
// Durability across kill -9
// ---------------------------------------------------------------------------------------------

/// What the clients were told, and so what must survive a crash.
#[derive(Default)]
struct Acknowledged {
    /// Creation responses, exactly as returned.
    apps: Vec<Value>,
    keys: Vec<AcknowledgedKey>,
}

struct AcknowledgedKey {
    /// The creation response without the secret.
    created: Value,
    secret: String,
    revoked: bool,
    uses: u64,
    /// Machines still logged in (login response `machine`, session token).
    machines: Vec<(Value, String)>,
    /// Sessions that ended (logout or revocation).
    ended_sessions: Vec<String>,
}

impl Acknowledged {
    fn create_app(&mut self, server: &TestServer, id: &str) {
        let app = server
            .admin()
            .post("/v1/apps", &json!({"id": id, "name": format!("App {id}")}))
            .expect(201);
        self.apps.push(app);
    }

    fn create_key(&mut self, server: &TestServer, app: &str, reusable: bool) -> usize {
        let mut created = server.create_key(
            app,
            json!({"reusable": reusable, "description": format!("{app} key")}),
        );
        let secret = created["key"].as_str().unwrap().to_string();
        created.as_object_mut().unwrap().remove("key");
        self.keys.push(AcknowledgedKey {
            created,
            secret,
            revoked: false,
            uses: 0,
            machines: Vec::new(),
            ended_sessions: Vec::new(),
        });
        self.keys.len() - 1
    }

    fn login(&mut self, server: &TestServer, key: usize) {
        let key = &mut self.keys[key];
        let login = server.login(&key.secret);
        key.uses += 1;
        key.machines.push((
            login["machine"].clone(),
            login["session_token"].as_str().unwrap().to_string(),
        ));
    }

    fn logout_first_machine(&mut self, server: &TestServer, key: usize) {
        let key = &mut self.keys[key];
        let (_, session) = key.machines.remove(0);
        server
            .client(Some(&session))
            .post("/v1/auth/logout", &json!({}))
            .expect(204);
        key.ended_sessions.push(session);
    }

    fn revoke(&mut self, server: &TestServer, key: usize) {
        let key = &mut self.keys[key];
        let path = format!(
            "/v1/apps/{}/keys/{}",
            key.created["app"].as_str().unwrap(),
            key.created["id"].as_str().unwrap()
        );
        server.admin().delete(&path).expect(204);
        key.revoked = true;
        key.ended_sessions
            .extend(key.machines.drain(..).map(|(_, session)| session));
    }

    /// Asserts the server shows exactly what was acknowledged.
    fn check(&self, server: &TestServer) {
        let mut apps = server.admin().get("/v1/apps").expect(200)["apps"]
            .as_array()
            .unwrap()
            .clone();
        apps.sort_by_key(|app| app["id"].to_string());
        let mut expected_apps = self.apps.clone();
        expected_apps.sort_by_key(|app| app["id"].to_string());
        assert_eq!(apps, expected_apps, "apps after restart");

        for app in &self.apps {
            let app_id = app["id"].as_str().unwrap();
            let listed = server
                .admin()
                .get(&format!("/v1/apps/{app_id}/keys?include_revoked=true"))
                .expect(200)["keys"]
                .as_array()
                .unwrap()
                .clone();
            let mine: Vec<&AcknowledgedKey> = self
                .keys
                .iter()
                .filter(|key| key.created["app"] == app["id"])
                .collect();
            assert_eq!(listed.len(), mine.len(), "keys of {app_id}: {listed:#?}");
            for key in &mine {
                let id = &key.created["id"];
                let shown = listed
                    .iter()
                    .find(|listed| &listed["id"] == id)
                    .unwrap_or_else(|| panic!("key {id} is lost"));
                for field in [
                    "id",
                    "app",
                    "description",
                    "reusable",
                    "ephemeral",
                    "hint",
                    "created_at",
                    "expires_at",
                ] {
                    assert_eq!(shown[field], key.created[field], "{field} of {id}");
                }
                assert_eq!(shown["uses"], key.uses, "uses of {id}");
                assert_eq!(shown["machines"], key.machines.len(), "machines of {id}");
                if key.revoked {
                    let revoked_at = shown["revoked_at"]
                        .as_str()
                        .unwrap_or_else(|| panic!("revoked key {id} lost its revoked_at: {shown}"));
                    assert!(revoked_at >= shown["created_at"].as_str().unwrap());
                } else {
                    assert_eq!(shown["revoked_at"], Value::Null, "{id}");
                }
                let verified = server
                    .anonymous()
                    .post("/v1/keys/verify", &json!({"key": key.secret}))
                    .expect(200);
                let expected = if key.revoked {
                    json!({"valid": false, "code": "revoked"})
                } else if !key.created["reusable"].as_bool().unwrap() && key.uses > 0 {
                    json!({"valid": false, "code": "used"})
                } else {
                    json!({
                        "valid": true,
                        "app": app_id,
                        "key_id": id,
                        "reusable": key.created["reusable"],
                        "ephemeral": false,
                        "expires_at": null,
                        "tags": [],
                        "metadata": {},
                        "uses_remaining": if key.created["reusable"] == true {
                            Value::Null
                        } else {
                            json!(1 - key.uses)
                        },
                    })
                };
                assert_eq!(verified, expected, "verify {id}");
            }

            let mut machines: Vec<Value> = server
                .admin()
                .get(&format!("/v1/apps/{app_id}/machines"))
                .expect(200)["machines"]
                .as_array()
                .unwrap()
                .iter()
                .map(without_usage_stamps)
                .collect();
            machines.sort_by_key(|machine| machine["id"].to_string());
            let mut expected: Vec<Value> = mine
                .iter()
                .flat_map(|key| key.machines.iter().map(|(m, _)| without_usage_stamps(m)))
                .collect();
            expected.sort_by_key(|machine| machine["id"].to_string());
            assert_eq!(machines, expected, "machines of {app_id}");
        }

        for key in &self.keys {
            for (machine, session) in &key.machines {
                let whoami = server
                    .client(Some(session))
                    .get("/v1/auth/whoami")
                    .expect(200);
                assert_eq!(whoami["machine"]["id"], machine["id"]);
                assert_eq!(whoami["app"]["id"], key.created["app"]);
            }
            for session in &key.ended_sessions {
                server
                    .client(Some(session))
                    .get("/v1/auth/whoami")
                    .expect_error(401, "invalid_credentials");
            }
        }
    }
}

/// `last_seen_at` and `last_used_at` may lag (and a crash may lose the lag): not compared.
fn without_usage_stamps(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("last_seen_at");
        object.remove("last_used_at");
    }
    value
}

#[test]
fn every_acknowledged_write_survives_repeated_kill_9() {
    let mut server = TestServer::start();
    let db = server.db();
    let mut acknowledged = Acknowledged::default();
    let mut previous_reusable = None;
    for round in 0..3 {
        let app = format!("crash-{round}");
        acknowledged.create_app(&server, &app);
        let single_use = acknowledged.create_key(&server, &app, false);
        acknowledged.login(&server, single_use);
        let reusable = acknowledged.create_key(&server, &app, true);
        for _ in 0..3 {
            acknowledged.login(&server, reusable);
        }
        acknowledged.logout_first_machine(&server, reusable);
        // Revoke a key of the previous round (two machines logged in) and, in the first
        // round, this round's single-use key: both kinds leave a tombstone.
        match previous_reusable {
            Some(key) => acknowledged.revoke(&server, key),
            None => acknowledged.revoke(&server, single_use),
        }
        previous_reusable = Some(reusable);

        // The last response has arrived: crash now, with no chance to flush anything.
        server.kill9();
        server.restart();
        assert_eq!(db.integrity_check(), "ok", "after kill -9 #{round}");
        acknowledged.check(&server);
    }
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(db.integrity_check(), "ok");
    if let Db::Sqlite(path) = &db {
        assert_eq!(user_version(path), crate::schema::CURRENT);
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful stop
// ---------------------------------------------------------------------------------------------

/// The log line the server writes last on a graceful stop.
fn says_stopped(log: &str) -> bool {
    log.lines().any(|line| line.ends_with("] stopped"))
}

#[test]
fn sigterm_stops_the_server_with_exit_status_0_and_keeps_its_data() {
    let mut server = TestServer::start();
    server.create_app("before-sigterm");
    let address: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(says_stopped(&server.log()), "{}", server.log());
    assert!(
        TcpStream::connect(address).is_err(),
        "still listening after exit"
    );

    server.restart();
    server.admin().get("/v1/apps/before-sigterm").expect(200);
}

#[test]
fn sigint_stops_the_server_with_exit_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(serve_command(dir.path()), &dir.path().join("log"));
    let (status, _) = http(
        "POST",
        &format!("{}/v1/apps", server.url()),
        Some(ADMIN_TOKEN),
        Some(&json!({"id": "before-sigint"})),
    );
    assert_eq!(status, 201);
    server.send_signal("INT");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert!(says_stopped(&server.log()), "{}", server.log());
    assert_eq!(server.rest_of_stdout(), Vec::<String>::new());

    let stored: String = open_db(&dir.path().join("authkeys.db"))
        .query_row("SELECT id FROM apps", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, "before-sigint");
}

/// Sends the head of `POST /v1/apps` asking for `100 Continue`, and waits for it: once it
/// arrives a worker holds the request and is reading its body. Returns the stream and the
/// body still to send.
fn start_create_app_request(url: &str, id: &str) -> (TcpStream, Vec<u8>) {
    let body = serde_json::to_vec(&json!({"id": id})).unwrap();
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "POST /v1/apps HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        url.trim_start_matches("http://"),
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).expect("reading 100 Continue");
        assert_eq!(
            read,
            1,
            "closed before 100 Continue: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 100 "),
        "expected 100 Continue, got {head:?}"
    );
    (stream, body)
}

/// Reads a whole `Connection: close` response and returns its status and JSON body, failing
/// if it was cut short.
fn read_complete_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("reading the response to the end");
    parse_complete_response("the in-flight request", &raw)
}

/// Splits a raw HTTP response into status and JSON body, failing if it is cut short or its
/// body is not JSON.
fn parse_complete_response(context: &str, raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{context}: the response was cut before its body: {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{context}: no status line: {text:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{context}: no Content-Length: {text:?}"));
    assert_eq!(
        body.len(),
        length,
        "{context}: the body was cut short: {text:?}"
    );
    let json = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("{context}: the body is not JSON: {text:?}"));
    (status, json)
}

#[test]
fn sigterm_answers_a_request_in_flight_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(serve_command(dir.path()), &dir.path().join("log"));
    let (mut stream, body) = start_create_app_request(&server.url(), "in-flight");

    server.send_signal("TERM");
    server.wait_for_log("received signal");
    // The server is shutting down and this request is half-read: it must still be answered.
    stream.write_all(&body).unwrap();
    let (status, json) = read_complete_response(&mut stream);
    assert_eq!(status, 201, "{json}\n{}", server.log());
    assert_eq!(json["id"], "in-flight");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert!(says_stopped(&server.log()), "{}", server.log());

    let stored: String = open_db(&dir.path().join("authkeys.db"))
        .query_row("SELECT id FROM apps", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, "in-flight", "the answered write is durable");
}

#[test]
fn requests_arriving_during_shutdown_are_refused_or_answered_in_full() {
    // Shutdown is held open by a half-read request; meanwhile a new client arrives. It must
    // see either no server (refused, or closed without a byte) or a complete contract
    // response, never an empty-bodied 500 for a request that was silently dropped.
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(serve_command(dir.path()), &dir.path().join("log"));
    let url = server.url();
    let (mut in_flight, body) = start_create_app_request(&url, "held-open");
    server.send_signal("TERM");
    server.wait_for_log("received signal");

    let late = std::thread::spawn({
        let address = url.trim_start_matches("http://").to_string();
        move || -> Result<Vec<u8>, std::io::Error> {
            let mut stream = TcpStream::connect(address)?;
            stream.set_read_timeout(Some(DEADLINE))?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw)?;
            Ok(raw)
        }
    });
    // Not a readiness wait: this pause only makes it likely that the late request is queued
    // before the in-flight one completes. A correct server passes whatever the timing.
    std::thread::sleep(Duration::from_millis(100));
    in_flight.write_all(&body).unwrap();
    let (status, _) = read_complete_response(&mut in_flight);
    assert_eq!(status, 201);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());

    match late.join().unwrap() {
        Err(_) => {}
        Ok(raw) if raw.is_empty() => {}
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (status, json) =
                parse_complete_response("a request arriving during shutdown", &raw);
            let answered = (status, &json) == (200, &json!({"status": "ok"}));
            let refused_in_contract_shape = status >= 500
                && json["error"]["code"].is_string()
                && json["error"]["message"].is_string();
            assert!(
                answered || refused_in_contract_shape,
                "a request that arrived during shutdown got {text:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// :memory:
// ---------------------------------------------------------------------------------------------

#[test]
fn memory_database_works_end_to_end_and_its_scratch_directory_is_removed_on_stop() {
    let private_tmp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(Options {
        memory: true,
        generated_admin_token: true,
        env: vec![("TMPDIR".into(), private_tmp.path().display().to_string())],
        ..Options::default()
    });
    check_ready_line(&server.ready_line, &["admin_token"]);

    let scratch = listing(private_tmp.path());
    assert_eq!(scratch.len(), 1, "one scratch directory: {scratch:?}");
    assert!(scratch[0].starts_with("authkeys-"), "{scratch:?}");
    let scratch_dir = private_tmp.path().join(&scratch[0]);
    assert_eq!(mode(&scratch_dir), 0o700);
    assert_eq!(mode(&scratch_dir.join("authkeys.db")), 0o600);

    server.create_app("scratch");
    let key = server.create_key("scratch", json!({}));
    let login = server.login(key["key"].as_str().unwrap());
    let session = login["session_token"].as_str().unwrap();
    let whoami = server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect(200);
    assert_eq!(whoami["app"]["id"], "scratch");
    let verified = server
        .anonymous()
        .post("/v1/keys/verify", &json!({"key": key["key"]}))
        .expect(200);
    assert_eq!(verified, json!({"valid": false, "code": "used"}));
    server
        .admin()
        .delete(&format!(
            "/v1/apps/scratch/keys/{}",
            key["id"].as_str().unwrap()
        ))
        .expect(204);
    server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect_error(401, "invalid_credentials");

    // Nothing is written next to the process: no ./authkeys.db, no token file.
    let beside: Vec<String> = listing(server.dir.path())
        .into_iter()
        .filter(|name| !name.starts_with("server-"))
        .collect();
    assert_eq!(beside, Vec::<String>::new());

    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    assert_eq!(
        listing(private_tmp.path()),
        Vec::<String>::new(),
        "scratch left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Schema version
// ---------------------------------------------------------------------------------------------

/// Starts the server on `db` (run in `dir`), expecting it to refuse; returns its error line.
fn refused_start(dir: &Path, db: &Path) -> String {
    let mut command = bare_serve_command(dir);
    command
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
    one_line_start_error(&run_to_exit(command))
}

#[test]
fn database_with_a_newer_schema_version_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authkeys.db");
    open_db(&db)
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let line = refused_start(dir.path(), &db);
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(line.contains("99"), "{line}");
    assert!(line.contains("schema version"), "{line}");
    assert_eq!(user_version(&db), 99, "the database was left as it was");
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    open_db(&db)
        .execute_batch("CREATE TABLE machines (name TEXT); INSERT INTO machines VALUES ('a');")
        .unwrap();

    let line = refused_start(dir.path(), &db);
    assert!(line.contains("not an authkeys database"), "{line}");
    assert_eq!(user_version(&db), 0);
    let tables: i64 = open_db(&db)
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing was created in it");
}

// ---------------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------------

#[test]
fn listen_address_in_use_is_one_line_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut command = bare_serve_command(dir.path());
    command
        .args(["--listen", &address, "--db"])
        .arg(dir.path().join("authkeys.db"))
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
    let line = one_line_start_error(&run_to_exit(command));
    assert!(line.contains(&address), "{line}");
    assert!(line.to_lowercase().contains("in use"), "{line}");
    drop(taken);
}

#[test]
fn database_in_a_missing_directory_is_one_line_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("does-not-exist").join("authkeys.db");
    let line = refused_start(dir.path(), &db);
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
    assert!(!dir.path().join("does-not-exist").exists());
}

#[test]
fn empty_admin_token_is_one_line_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_serve_command(dir.path());
    command
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("authkeys.db"))
        .env("AUTHKEYS_ADMIN_TOKEN", "");
    let line = one_line_start_error(&run_to_exit(command));
    assert_eq!(
        line,
        "authkeys: error: AUTHKEYS_ADMIN_TOKEN is set but empty"
    );
    assert!(
        !admin_token_path(&dir.path().join("authkeys.db")).exists(),
        "an empty token must not fall back to generating one"
    );
}

#[test]
fn an_admin_token_shorter_than_32_characters_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authkeys.db");
    // 31 characters, counted as characters: "é" is two bytes but one character.
    let short = format!("{}é", "x".repeat(30));
    let mut command = bare_serve_command(dir.path());
    command
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("AUTHKEYS_ADMIN_TOKEN", &short);
    let line = one_line_start_error(&run_to_exit(command));
    assert!(
        line.starts_with("authkeys: error: AUTHKEYS_ADMIN_TOKEN is 31 characters long")
            && line.contains("at least 32"),
        "{line}"
    );
    assert!(!line.contains(&short), "the token is never echoed: {line}");
    assert!(!db.exists(), "refused before touching the database");

    // 32 characters is enough.
    let mut command = bare_serve_command(dir.path());
    command
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("AUTHKEYS_ADMIN_TOKEN", "y".repeat(32));
    let mut server = ServerProcess::spawn(command, &dir.path().join("log"));
    let (status, _) = http(
        "GET",
        &format!("{}/v1/apps", server.url()),
        Some(&"y".repeat(32)),
        None,
    );
    assert_eq!(status, 200);
    server.send_signal("TERM");
    assert_eq!(server.wait().code(), Some(0));
}

/// Runs a start the command line must refuse: exit 2, one error line, and the database at `db`
/// never created. Returns the error line.
fn usage_error(command: Command, db: &Path) -> String {
    let exit = run_to_exit(command);
    let line = one_line_start_error(&exit);
    assert_eq!(
        exit.status.code(),
        Some(2),
        "a usage error\n{}",
        exit.stderr
    );
    assert!(!db.exists(), "rejected before touching the database");
    line
}

#[test]
fn zero_ephemeral_ttl_is_rejected_by_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_serve_command(dir.path());
    command
        .args(["--listen", "127.0.0.1:0", "--ephemeral-ttl", "0", "--db"])
        .arg(dir.path().join("authkeys.db"))
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
    let line = usage_error(command, &dir.path().join("authkeys.db"));
    assert!(
        line.contains("--ephemeral-ttl") && line.contains("'0'"),
        "the error names the flag and the value: {line}"
    );
}

#[test]
fn a_malformed_trusted_proxy_range_is_rejected_by_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, env) in [
        (Some("10.0.0.0/33"), None),
        (None, Some("127.0.0.1/32,proxy.example")),
    ] {
        let mut command = bare_serve_command(dir.path());
        command
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("authkeys.db"))
            .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
        if let Some(range) = flag {
            command.args(["--trusted-proxy", range]);
        }
        if let Some(ranges) = env {
            command.env("AUTHKEYS_TRUSTED_PROXIES", ranges);
        }
        let line = usage_error(command, &dir.path().join("authkeys.db"));
        let bad = flag.unwrap_or("proxy.example");
        assert!(
            line.contains("--trusted-proxy") && line.contains(bad) && line.contains("CIDR"),
            "the error names the flag, the value and what was expected: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Environment equivalents of the flags
// ---------------------------------------------------------------------------------------------

#[test]
fn authkeys_trusted_proxies_is_a_comma_separated_list_of_ranges() {
    let options = Options {
        env: vec![(
            "AUTHKEYS_TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8, 127.0.0.1".to_string(),
        )],
        ..Options::default()
    };
    let server = TestServer::start_with(options.arg("--login-failures-burst", "1"));
    let mut conn = crate::reliability::raw::Conn::open(&server.url);
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Forwarded-For", "192.0.2.7"),
    ];
    let statuses: Vec<u16> = (0..2)
        .map(|_| {
            let reply = conn.send(
                "POST",
                "/v1/auth/login",
                &headers,
                br#"{"auth_key": "nope"}"#,
            );
            reply.status
        })
        .collect();
    assert_eq!(statuses, [401, 429]);
    // The second range (a bare address) was taken: the client is the forwarded one.
    let log = server.log();
    assert!(log.contains("throttling 192.0.2.7"), "{log}");
}

#[test]
fn authkeys_db_and_authkeys_listen_replace_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env.db");
    // A port that was free a moment ago, so the URL proves which address was used.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = bare_serve_command(dir.path());
    command
        .env("AUTHKEYS_DB", &db)
        .env("AUTHKEYS_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN);
    let mut server = ServerProcess::spawn(command, &dir.path().join("log"));
    assert_eq!(server.url(), format!("http://127.0.0.1:{port}"));
    let (status, _) = http(
        "POST",
        &format!("{}/v1/apps", server.url()),
        Some(ADMIN_TOKEN),
        Some(&json!({"id": "from-env"})),
    );
    assert_eq!(status, 201);
    server.send_signal("TERM");
    assert_eq!(server.wait().code(), Some(0));

    let stored: String = open_db(&db)
        .query_row("SELECT id FROM apps", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, "from-env");
    assert!(
        !dir.path().join("authkeys.db").exists(),
        "the default path was used"
    );
}

// ---------------------------------------------------------------------------------------------
// Library API
// ---------------------------------------------------------------------------------------------

#[test]
fn start_throwaway_serves_http_in_process_and_stops_on_drop() {
    let server = authkeys::Server::start_throwaway().expect("starting a throwaway server");
    let url = server.url().to_string();
    let port = port_of(&url);
    assert_ne!(port, 0);
    let token = server
        .admin_token()
        .expect("a generated admin token")
        .to_string();
    assert!(token.len() >= 16);

    let (status, app) = http(
        "POST",
        &format!("{url}/v1/apps"),
        Some(&token),
        Some(&json!({"id": "in-process", "name": "In Process"})),
    );
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["id"], "in-process");
    assert_eq!(app["name"], "In Process");
    assert_eq!(
        http(
            "GET",
            &format!("{url}/v1/apps/in-process"),
            Some(&token),
            None
        ),
        (200, app)
    );
    let (status, _) = http("GET", &format!("{url}/v1/apps"), Some("wrong"), None);
    assert_eq!(status, 401);

    drop(server);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until_refused(address);
}

#[test]
fn start_throwaway_port_is_closed_when_drop_returns() {
    // Dropping the server is its shutdown: when drop returns nothing may still listen.
    let server = authkeys::Server::start_throwaway().expect("starting a throwaway server");
    let address: SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    assert_eq!(healthz(server.url()).0, 200);
    drop(server);
    let connected = TcpStream::connect(address);
    assert!(
        connected.is_err(),
        "{address} accepted a connection after drop"
    );
}

#[test]
fn start_with_a_file_database_persists_and_writes_the_generated_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("library.db");
    let config = authkeys::Config {
        database: authkeys::Database::File(db.clone()),
        listen: "127.0.0.1:0".into(),
        admin_token: None,
        ..authkeys::Config::default()
    };
    let server = authkeys::Server::start(config.clone()).expect("starting on a file");
    let token = server
        .admin_token()
        .expect("generated by this start")
        .to_string();
    let token_file = admin_token_path(&db);
    assert_eq!(
        fs::read_to_string(&token_file).unwrap(),
        format!("{token}\n")
    );
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(
        server.ready_line(&config.database),
        json!({"url": server.url()}).to_string()
    );
    let (status, _) = http(
        "POST",
        &format!("{}/v1/apps", server.url()),
        Some(&token),
        Some(&json!({"id": "library"})),
    );
    assert_eq!(status, 201);
    drop(server);

    // A second start on the same file: the data and the token are still there, and the
    // token is not handed out again (it was not generated by this start).
    let server = authkeys::Server::start(config).expect("starting again");
    assert_eq!(server.admin_token(), None);
    let (status, app) = http(
        "GET",
        &format!("{}/v1/apps/library", server.url()),
        Some(&token),
        None,
    );
    assert_eq!((status, &app["id"]), (200, &json!("library")));
    drop(server);
    assert_eq!(integrity_check(&db), "ok");
}

#[test]
fn start_with_a_configured_token_uses_it_and_writes_no_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("configured.db");
    let server = authkeys::Server::start(authkeys::Config {
        database: authkeys::Database::File(db.clone()),
        listen: "127.0.0.1:0".into(),
        admin_token: Some(authkeys::Secret::new(ADMIN_TOKEN.into())),
        ..authkeys::Config::default()
    })
    .expect("starting");
    assert_eq!(server.admin_token(), Some(ADMIN_TOKEN));
    let (status, _) = http(
        "GET",
        &format!("{}/v1/apps", server.url()),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 200);
    assert!(!admin_token_path(&db).exists());
}
