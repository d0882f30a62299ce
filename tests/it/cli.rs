//! The client CLI end to end: the real `authkeys` binary run as a subprocess against a real
//! server, each test with its own server, its own HOME and its own config directory, and no
//! `AUTHKEYS_*` variable from the developer's environment. Every failed expectation prints the
//! command, its exit status, stdout, stderr and the server's log.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use tempfile::TempDir;

/// One test's world: a server, and a private HOME (the CLI's working directory too) holding
/// the config directories the CLI writes to.
pub(crate) struct Sandbox {
    pub(crate) server: TestServer,
    home: TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        Sandbox::with(Options::default())
    }

    pub(crate) fn with(options: Options) -> Sandbox {
        Sandbox {
            server: TestServer::start_with(options),
            home: tempfile::tempdir().expect("creating a temp HOME"),
        }
    }

    /// A config directory under HOME, not created: the CLI must create it.
    pub(crate) fn config_dir(&self, name: &str) -> PathBuf {
        self.home.path().join(name).join("authkeys")
    }

    /// Runs `authkeys args…` with HOME set to the sandbox, no `AUTHKEYS_*`, `XDG_CONFIG_HOME`
    /// or `RUST_LOG` from the developer's environment, and exactly `envs` on top.
    pub(crate) fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.run_with_stdin(args, envs, None)
    }

    /// `run`, with `stdin` written to the command's standard input (else it reads nothing).
    pub(crate) fn run_with_stdin(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.home.path())
            .env("HOME", self.home.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            let inherited = name.to_string_lossy();
            if inherited.starts_with("AUTHKEYS_")
                || inherited == "XDG_CONFIG_HOME"
                || inherited == "RUST_LOG"
            {
                command.env_remove(&name);
            }
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("running authkeys");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("a piped stdin");
            pipe.write_all(input.as_bytes()).expect("writing to stdin");
            // Dropped here: the command sees the end of its input.
        }
        let output = child.wait_with_output().expect("running authkeys");
        Output {
            command: format!("{envs:?} authkeys {args:?}"),
            status: output.status,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
            log: self.server.log(),
        }
    }

    /// An admin command: the server and the admin token from the environment.
    pub(crate) fn admin(&self, args: &[&str]) -> Output {
        self.run(
            args,
            &[
                ("AUTHKEYS_SERVER", &self.server.url),
                ("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
        )
    }

    /// A machine command with its session saved in `config`.
    pub(crate) fn machine(&self, config: &Path, args: &[&str]) -> Output {
        self.run(
            args,
            &[
                ("AUTHKEYS_SERVER", &self.server.url),
                ("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8 path")),
            ],
        )
    }

    /// Creates `app` and a key with `flags` through the CLI; returns the `--json` Key.
    fn create_key(&self, app: &str, flags: &[&str]) -> Value {
        if self.server.admin().get(&format!("/v1/apps/{app}")).status == 404 {
            self.admin(&["apps", "create", app]).success();
        }
        let mut args = vec!["keys", "create", "--app", app, "--json"];
        args.extend_from_slice(flags);
        self.admin(&args).json()
    }

    /// The server's view of the app's active machines, over HTTP.
    fn machines(&self, app: &str) -> Vec<Value> {
        let listing = self
            .server
            .admin()
            .get(&format!("/v1/apps/{app}/machines"))
            .expect(200);
        listing["machines"].as_array().expect("machines").clone()
    }
}

/// What one run of the CLI did, with what is needed to explain a failed expectation.
pub(crate) struct Output {
    command: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    log: String,
}

impl Output {
    /// Asserts exit 0 and a silent stderr; returns stdout.
    #[track_caller]
    pub(crate) fn success(&self) -> &str {
        if !self.status.success() || !self.stderr.is_empty() {
            self.fail("expected exit status 0 and nothing on stderr");
        }
        &self.stdout
    }

    /// Asserts success and JSON on stdout; returns it.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.success())
            .unwrap_or_else(|err| self.fail(&format!("stdout is not JSON: {err}")))
    }

    /// Asserts a failure reported as the contract says: non-zero exit, nothing on stdout and
    /// exactly one line on stderr, `authkeys: error: …`. Returns that line.
    #[track_caller]
    pub(crate) fn error(&self) -> &str {
        let one_line = self.stderr.ends_with('\n') && self.stderr.lines().count() == 1;
        if self.status.success()
            || !self.stdout.is_empty()
            || !one_line
            || !self.stderr.starts_with("authkeys: error: ")
        {
            self.fail("expected a non-zero exit and one `authkeys: error:` line on stderr");
        }
        self.stderr.trim_end()
    }

    /// Asserts a failure (as `error`) with exit status `status` whose message contains each
    /// of `expected`; returns the line.
    #[track_caller]
    fn failure(&self, status: i32, expected: &[&str]) -> &str {
        let line = self.error();
        if self.status.code() != Some(status) {
            self.fail(&format!("expected exit status {status}"));
        }
        for text in expected {
            if !line.contains(text) {
                self.fail(&format!("expected the error to mention {text:?}"));
            }
        }
        line
    }

    /// Asserts a failure reported as JSON: exit status `status`, nothing on stdout, and one
    /// line on stderr, `{"error": {"code": code, "message": …}}`; returns the error object.
    #[track_caller]
    fn json_failure(&self, status: i32, code: &str) -> Value {
        let one_line = self.stderr.ends_with('\n') && self.stderr.lines().count() == 1;
        if self.status.code() != Some(status) || !self.stdout.is_empty() || !one_line {
            self.fail(&format!(
                "expected exit status {status}, no stdout and one line of JSON on stderr"
            ));
        }
        let error: Value = serde_json::from_str(&self.stderr)
            .unwrap_or_else(|err| self.fail(&format!("stderr is not JSON: {err}")));
        if error["error"]["code"] != code || !error["error"]["message"].is_string() {
            self.fail(&format!("expected the error object with code {code:?}"));
        }
        error["error"].clone()
    }

    /// Asserts a failure (as `error`) whose message contains `expected`.
    #[track_caller]
    fn error_containing(&self, expected: &str) -> &str {
        let line = self.error();
        if !line.contains(expected) {
            self.fail(&format!("expected the error to mention {expected:?}"));
        }
        line
    }

    /// The stdout line whose first cell is `first` (a table row or `label: value` line).
    #[track_caller]
    fn row(&self, first: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| self.fail(&format!("expected a row starting with {first:?}")))
    }

    #[track_caller]
    fn assert_stdout_contains(&self, expected: &[&str]) {
        self.success();
        for text in expected {
            if !self.stdout.contains(text) {
                self.fail(&format!("expected stdout to contain {text:?}"));
            }
        }
    }

    #[track_caller]
    fn assert_silent_about(&self, secret: &str) {
        if self.stderr.contains(secret) || self.stdout.contains(secret) {
            self.fail(&format!("the output shows the secret {secret:?}"));
        }
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- command ---\n{}\n--- exit ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\
             \n--- server log ---\n{}",
            self.command, self.status, self.stdout, self.stderr, self.log
        )
    }
}

/// The full secret of a key creation response.
fn secret(created: &Value) -> String {
    let key = created["key"].as_str();
    key.unwrap_or_else(|| panic!("no key in {created:#}"))
        .to_string()
}

/// Every `prefix` + base62 token in `text`, in order.
fn tokens(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(start, _)| {
            let rest = &text[start + prefix.len()..];
            let len = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
            format!("{prefix}{}", &rest[..len])
        })
        .filter(|token| token.len() > prefix.len())
        .collect()
}

fn field_names(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .cloned()
        .collect()
}

#[track_caller]
fn assert_fields(value: &Value, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|name| name.to_string()).collect();
    assert_eq!(field_names(value), expected, "fields of {value:#}");
}

fn timestamp(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a time"));
    assert!(text.ends_with('Z'), "{text} is not UTC with a Z suffix");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn mode(path: &Path) -> u32 {
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    metadata.permissions().mode() & 0o777
}

/// The files in `dir` (empty if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("a dir entry").path())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The one credentials file in `dir`: owner-only, and its session token.
#[track_caller]
fn saved_session(dir: &Path) -> String {
    let files = files(dir);
    assert_eq!(
        files.len(),
        1,
        "expected one credentials file in {}: {files:?}",
        dir.display()
    );
    assert_eq!(mode(dir), 0o700, "mode of {}", dir.display());
    assert_eq!(mode(&files[0]), 0o600, "mode of {}", files[0].display());
    let text = std::fs::read_to_string(&files[0]).expect("reading the credentials");
    let sessions = tokens(&text, "ens_");
    assert_eq!(sessions.len(), 1, "one session token in {text}");
    sessions[0].clone()
}

/// A URL where nothing listens: a port the OS just handed out and took back.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A well-formed auth key whose checksum is wrong.
const BAD_KEY: &str = "ena_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn quick_start_creates_a_key_logs_in_and_revoking_the_key_ends_the_session() {
    let s = Sandbox::new();
    let config = s.config_dir("ci");

    let created = s.admin(&["apps", "create", "my-app", "--name", "My App"]);
    created.success();
    created.assert_stdout_contains(&["my-app", "My App"]);

    let apps = s.admin(&["apps", "list"]);
    apps.success();
    assert!(apps.row("my-app").contains("My App"), "{}", apps.stdout);

    let created = s.admin(&["keys", "create", "--app", "my-app", "--description", "ci"]);
    let text = created.success();
    let keys = tokens(text, "ena_");
    let key = keys
        .first()
        .unwrap_or_else(|| created.fail("no key shown"))
        .clone();
    if key.len() != 40 || keys.iter().any(|k| *k != key) || text.matches(&key).count() != 2 {
        created.fail("expected one 40-character key, shown bare and in the login line");
    }
    if text.lines().filter(|line| line.trim() == key).count() != 1 {
        created.fail("expected the key alone on one line");
    }
    let login_line = format!("AUTHKEYS_AUTH_KEY={key} authkeys login");
    if text
        .lines()
        .filter(|line| line.trim() == login_line)
        .count()
        != 1
    {
        created.fail(&format!("expected a ready-to-paste line {login_line:?}"));
    }
    let key_ids = tokens(text, "key_");
    let key_id = key_ids
        .first()
        .unwrap_or_else(|| created.fail("no key id"))
        .clone();
    let verified = s
        .server
        .anonymous()
        .post("/v1/keys/verify", &json!({"key": key}))
        .expect(200);
    assert_eq!(
        (&verified["valid"], &verified["app"], &verified["key_id"]),
        (&json!(true), &json!("my-app"), &json!(key_id)),
        "{verified}"
    );

    let listed = s.admin(&["keys", "list", "--app", "my-app"]);
    listed.success();
    listed.assert_silent_about(&key);
    let row = listed.row(&key_id);
    let hint = format!("ena_{}…{}", &key[4..8], &key[36..]);
    for cell in [hint.as_str(), "single-use", "ci"] {
        if !row.contains(cell) {
            listed.fail(&format!("expected the key's row to show {cell:?}"));
        }
    }

    let login = s.machine(
        &config,
        &["login", &format!("--auth-key={key}"), "--machine", "ci-7"],
    );
    login.success();
    login.assert_silent_about(&key);
    login.assert_stdout_contains(&["my-app", "ci-7"]);
    let machines = s.machines("my-app");
    assert_eq!(machines.len(), 1, "{machines:?}");
    let machine_id = machines[0]["id"].as_str().expect("machine id").to_string();
    assert_eq!(machines[0]["name"], "ci-7");

    let whoami = s.machine(&config, &["whoami"]);
    whoami.success();
    whoami.assert_stdout_contains(&["my-app", "My App", "ci-7", &machine_id, &key_id]);

    let listed = s.admin(&["machines", "list", "--app", "my-app"]);
    listed.success();
    let row = listed.row(&machine_id);
    if !row.contains("ci-7") || !row.contains(&key_id) {
        listed.fail("expected the machine's row to show its name and key");
    }

    let revoked = s.admin(&["keys", "revoke", "--app", "my-app", &key_id]);
    revoked.success();
    revoked.assert_stdout_contains(&[&key_id]);

    s.machine(&config, &["whoami"]).error();
    assert_eq!(s.machines("my-app"), Vec::<Value>::new());

    s.machine(&config, &["logout"]).success();
    assert_eq!(
        files(&config),
        Vec::<PathBuf>::new(),
        "logout forgets the session"
    );
    s.machine(&config, &["whoami"])
        .error_containing("not logged in");
}

#[test]
fn admin_commands_with_json_print_the_contract_objects() {
    let s = Sandbox::new();
    let admin = s.server.admin();

    let app = s
        .admin(&["apps", "create", "a", "--name", "App A", "--json"])
        .json();
    assert_fields(&app, APP_FIELDS);
    assert_eq!((&app["id"], &app["name"]), (&json!("a"), &json!("App A")));
    timestamp(&app["created_at"]);
    let unnamed = s.admin(&["apps", "create", "b", "--json"]).json();
    assert_eq!(
        (&unnamed["id"], &unnamed["name"]),
        (&json!("b"), &json!("b"))
    );

    let apps = s.admin(&["apps", "list", "--json"]).json();
    assert_fields(&apps, &["apps", "next_cursor"]);
    assert_eq!(apps, admin.get("/v1/apps").expect(200));
    assert_eq!(apps["apps"].as_array().map(Vec::len), Some(2), "{apps}");

    let key = s
        .admin(&[
            "keys",
            "create",
            "--app",
            "a",
            "--description",
            "ci",
            "--json",
        ])
        .json();
    let mut with_secret = KEY_FIELDS.to_vec();
    with_secret.push("key");
    assert_fields(&key, &with_secret);
    let secret = key["key"].as_str().expect("key is a string").to_string();
    assert_eq!(tokens(&secret, "ena_"), vec![secret.clone()]);
    assert_eq!(secret.len(), 40, "{secret}");
    let expected = json!({
        "app": "a", "description": "ci", "reusable": false, "ephemeral": false,
        "hint": format!("ena_{}…{}", &secret[4..8], &secret[36..]),
        "revoked_at": null, "last_used_at": null, "uses": 0, "machines": 0,
    });
    for (name, value) in expected.as_object().expect("object") {
        assert_eq!(&key[name], value, "{name} in {key:#}");
    }
    let lifetime = timestamp(&key["expires_at"]) - timestamp(&key["created_at"]);
    assert_eq!(lifetime.num_days(), 90, "the CLI's default expiry: {key:#}");
    let key_id = key["id"].as_str().expect("key id").to_string();
    assert!(key_id.starts_with("key_"), "{key_id}");

    let keys = s.admin(&["keys", "list", "--app", "a", "--json"]).json();
    assert_fields(&keys, &["keys", "next_cursor"]);
    assert_eq!(keys, admin.get("/v1/apps/a/keys").expect(200));
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    assert_fields(&keys["keys"][0], KEY_FIELDS);
    assert_eq!(keys["keys"][0]["id"], key_id);

    let config = s.config_dir("m");
    let login = s.machine(
        &config,
        &["login", "--auth-key", &secret, "--machine", "m1", "--json"],
    );
    let login = login.json();
    assert_fields(&login["machine"], MACHINE_FIELDS);
    assert_eq!(login["machine"]["name"], "m1");
    let machine_id = login["machine"]["id"]
        .as_str()
        .expect("machine id")
        .to_string();

    let whoami = s.machine(&config, &["whoami", "--json"]).json();
    assert_fields(&whoami, &["app", "machine"]);
    assert_eq!(whoami["app"], app);
    assert_fields(&whoami["machine"], MACHINE_FIELDS);
    assert_eq!(
        (&whoami["machine"]["id"], &whoami["machine"]["key_id"]),
        (&json!(machine_id), &json!(key_id))
    );

    let machines = s
        .admin(&["machines", "list", "--app", "a", "--json"])
        .json();
    assert_fields(&machines, &["machines", "next_cursor"]);
    assert_eq!(
        machines["machines"].as_array().map(Vec::len),
        Some(1),
        "{machines}"
    );
    assert_fields(&machines["machines"][0], MACHINE_FIELDS);
    assert_eq!(
        (
            &machines["machines"][0]["id"],
            &machines["machines"][0]["name"]
        ),
        (&json!(machine_id), &json!("m1"))
    );

    let logged_out = s.admin(&["machines", "logout", "--app", "a", &machine_id, "--json"]);
    logged_out.json();
    let revoked = s.admin(&["keys", "revoke", "--app", "a", &key_id, "--json"]);
    revoked.json();
    assert_eq!(
        admin.get("/v1/apps/a/keys").expect(200),
        json!({"keys": [], "next_cursor": null})
    );
}

#[test]
fn keys_list_shows_revoked_keys_only_with_include_revoked() {
    let s = Sandbox::new();
    let kept = s.create_key("a", &["--description", "kept"]);
    let gone = s.create_key("a", &["--description", "gone"]);
    let gone_id = gone["id"].as_str().expect("key id");
    s.admin(&["keys", "revoke", "--app", "a", gone_id])
        .success();

    let ids = |listing: &Value| -> Vec<Value> {
        let keys = listing["keys"].as_array().expect("keys");
        keys.iter().map(|key| key["id"].clone()).collect()
    };
    let active = s.admin(&["keys", "list", "--app", "a", "--json"]).json();
    assert_eq!(ids(&active), vec![kept["id"].clone()]);
    let all = s
        .admin(&["keys", "list", "--app", "a", "--include-revoked", "--json"])
        .json();
    assert_eq!(
        ids(&all),
        vec![gone["id"].clone(), kept["id"].clone()],
        "newest first"
    );
    timestamp(&all["keys"][0]["revoked_at"]);
}

#[test]
fn keys_create_sends_reusable_ephemeral_and_expires_in_with_units_and_90_days_by_default() {
    let s = Sandbox::new();
    const NINETY_DAYS: i64 = 90 * 86_400;
    let cases: &[(&[&str], bool, bool, Option<i64>)] = &[
        (&[], false, false, Some(NINETY_DAYS)),
        (&["--no-expiry"], false, false, None),
        (&["--reusable"], true, false, Some(NINETY_DAYS)),
        (&["--ephemeral", "--no-expiry"], false, true, None),
        (&["--expires-in", "600"], false, false, Some(600)),
        (&["--expires-in", "10m"], false, false, Some(600)),
        (&["--expires-in", "2h"], false, false, Some(7_200)),
        (&["--expires-in", "7d"], false, false, Some(7 * 86_400)),
        (
            &["--reusable", "--ephemeral", "--expires-in", "90"],
            true,
            true,
            Some(90),
        ),
    ];
    for (flags, reusable, ephemeral, expires_in) in cases {
        let printed = s.create_key("a", flags);
        let id = printed["id"].as_str().expect("key id");
        let stored = s
            .server
            .admin()
            .get(&format!("/v1/apps/a/keys/{id}"))
            .expect(200);
        for key in [&printed, &stored] {
            let context = format!("keys create {flags:?}: {key:#}");
            assert_eq!(key["reusable"], *reusable, "{context}");
            assert_eq!(key["ephemeral"], *ephemeral, "{context}");
            let lifetime = match &key["expires_at"] {
                Value::Null => None,
                expires_at => {
                    let lifetime = timestamp(expires_at) - timestamp(&key["created_at"]);
                    Some(lifetime.num_milliseconds())
                }
            };
            assert_eq!(lifetime, expires_in.map(|secs| secs * 1000), "{context}");
        }
    }
}

#[test]
fn login_reads_the_auth_key_from_authkeys_auth_key_and_prefers_the_flag() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let url = s.server.url.as_str();

    let from_env = s.config_dir("env");
    let dir = from_env.to_str().expect("UTF-8");
    let env = [
        ("AUTHKEYS_SERVER", url),
        ("AUTHKEYS_CONFIG_DIR", dir),
        ("AUTHKEYS_AUTH_KEY", &key),
    ];
    let login = s.run(&["login", "--machine", "from-env"], &env);
    login.success();
    login.assert_silent_about(&key);
    s.machine(&from_env, &["whoami"])
        .assert_stdout_contains(&["from-env"]);

    let from_flag = s.config_dir("flag");
    let dir = from_flag.to_str().expect("UTF-8");
    let env = [
        ("AUTHKEYS_SERVER", url),
        ("AUTHKEYS_CONFIG_DIR", dir),
        ("AUTHKEYS_AUTH_KEY", BAD_KEY),
    ];
    s.run(
        &["login", "--auth-key", &key, "--machine", "from-flag"],
        &env,
    )
    .success();

    let mut names: Vec<Value> = s.machines("a").iter().map(|m| m["name"].clone()).collect();
    names.sort_by_key(|name| name.to_string());
    assert_eq!(names, vec![json!("from-env"), json!("from-flag")]);
}

#[test]
fn login_finds_the_server_in_authkeys_server_or_server_and_remembers_it() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let url = s.server.url.as_str();
    let closed = closed_port_url();

    // (case name, flags, environment)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        ("env", &[], &[("AUTHKEYS_SERVER", url)]),
        ("flag", &["--server", url], &[]),
        (
            "flag-over-env",
            &["--server", url],
            &[("AUTHKEYS_SERVER", closed.as_str())],
        ),
    ];
    for (name, flags, env) in cases {
        let config = s.config_dir(name);
        let mut env = env.to_vec();
        env.push(("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8")));
        let mut args = vec!["login", "--auth-key", &key, "--machine", name];
        args.extend_from_slice(flags);
        s.run(&args, &env).success();

        // whoami needs no server setting: the session remembers where it lives.
        let dir = [("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8"))];
        let whoami = s.run(&["whoami", "--json"], &dir).json();
        assert_eq!(whoami["machine"]["name"], *name, "{whoami:#}");
    }
}

#[test]
fn login_names_the_machine_after_the_host_name_by_default() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    s.machine(&s.config_dir("m"), &["login", "--auth-key", &key])
        .success();

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("the host name");
    let machines = s.machines("a");
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0]["name"], host.trim());
}

#[test]
fn credentials_are_owner_only_and_logout_deletes_them_and_ends_the_session() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let config = s.config_dir("private");
    let xdg = s.home.path().join("xdg");
    let env = [
        ("AUTHKEYS_SERVER", s.server.url.as_str()),
        ("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8")),
        ("XDG_CONFIG_HOME", xdg.to_str().expect("UTF-8")),
    ];
    s.run(&["login", "--auth-key", &key, "--machine", "m1"], &env)
        .success();

    let token = saved_session(&config);
    assert!(
        !xdg.exists(),
        "AUTHKEYS_CONFIG_DIR wins over XDG_CONFIG_HOME"
    );
    assert!(
        !s.home.path().join(".config").exists(),
        "nothing in ~/.config"
    );
    let session = s.server.client(Some(&token));
    let whoami = session.get("/v1/auth/whoami").expect(200);
    assert_eq!(whoami["machine"]["name"], "m1");

    let logout = s.run(&["logout"], &env);
    logout.success();
    logout.assert_silent_about(&token);
    assert_eq!(
        files(&config),
        Vec::<PathBuf>::new(),
        "logout deletes the credentials"
    );
    session
        .get("/v1/auth/whoami")
        .expect_error(401, "invalid_credentials");
    assert_eq!(s.machines("a"), Vec::<Value>::new());
}

#[test]
fn credentials_fall_back_to_xdg_config_home_then_home_dot_config() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let url = s.server.url.as_str();

    let xdg = s.home.path().join("xdg");
    let env = [
        ("AUTHKEYS_SERVER", url),
        ("XDG_CONFIG_HOME", xdg.to_str().expect("UTF-8")),
    ];
    s.run(&["login", "--auth-key", &key, "--machine", "xdg"], &env)
        .success();
    let token = saved_session(&xdg.join("authkeys"));
    let whoami = s
        .server
        .client(Some(&token))
        .get("/v1/auth/whoami")
        .expect(200);
    assert_eq!(whoami["machine"]["name"], "xdg");
    s.run(&["whoami"], &env).assert_stdout_contains(&["xdg"]);

    let home = tempfile::tempdir().expect("a second HOME");
    let env = [
        ("AUTHKEYS_SERVER", url),
        ("HOME", home.path().to_str().expect("UTF-8")),
    ];
    s.run(&["login", "--auth-key", &key, "--machine", "home"], &env)
        .success();
    let token = saved_session(&home.path().join(".config").join("authkeys"));
    let whoami = s
        .server
        .client(Some(&token))
        .get("/v1/auth/whoami")
        .expect(200);
    assert_eq!(whoami["machine"]["name"], "home");
}

#[test]
fn every_failure_exits_non_zero_with_one_error_line_and_no_secret() {
    let s = Sandbox::new();
    let used = secret(&s.create_key("a", &[]));
    let revoked = s.create_key("a", &[]);
    let revoked_key = secret(&revoked);
    s.admin(&[
        "keys",
        "revoke",
        "--app",
        "a",
        revoked["id"].as_str().expect("id"),
    ])
    .success();
    let first = s.config_dir("first");
    s.machine(&first, &["login", "--auth-key", &used]).success();

    let url = s.server.url.as_str();
    let closed = closed_port_url();
    let fresh = s.config_dir("fresh");
    let fresh = fresh.to_str().expect("UTF-8");
    let wrong_token = "wrong-admin-token-9876543210";
    let admin = [
        ("AUTHKEYS_SERVER", url),
        ("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let machine = [("AUTHKEYS_SERVER", url), ("AUTHKEYS_CONFIG_DIR", fresh)];
    let unknown_key = authkeys::ops::generate_token(authkeys::TokenKind::AuthKey);
    let secrets = [
        ADMIN_TOKEN,
        wrong_token,
        &used,
        &revoked_key,
        BAD_KEY,
        unknown_key.expose(),
    ];

    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no admin token",
            vec!["apps", "list"],
            vec![("AUTHKEYS_SERVER", url)],
            "AUTHKEYS_ADMIN_TOKEN",
        ),
        (
            "wrong admin token",
            vec!["apps", "list"],
            vec![
                ("AUTHKEYS_SERVER", url),
                ("AUTHKEYS_ADMIN_TOKEN", wrong_token),
            ],
            "did not accept AUTHKEYS_ADMIN_TOKEN (invalid_credentials",
        ),
        (
            "server without a scheme",
            vec!["apps", "list", "--server", "127.0.0.1:1"],
            admin.to_vec(),
            "expected a URL such as http://127.0.0.1:7373",
        ),
        (
            "unknown app",
            vec!["keys", "list", "--app", "nope"],
            admin.to_vec(),
            "app_not_found",
        ),
        (
            "key for unknown app",
            vec!["keys", "create", "--app", "nope"],
            admin.to_vec(),
            "app_not_found",
        ),
        (
            "existing app",
            vec!["apps", "create", "a"],
            admin.to_vec(),
            "app_exists",
        ),
        (
            "invalid app id",
            vec!["apps", "create", "Not Valid"],
            admin.to_vec(),
            "invalid_field",
        ),
        (
            "unknown key",
            vec!["keys", "revoke", "--app", "a", "key_nope"],
            admin.to_vec(),
            "key_not_found",
        ),
        (
            "unknown machine",
            vec!["machines", "logout", "--app", "a", "mch_nope"],
            admin.to_vec(),
            "machine_not_found",
        ),
        (
            "bad key",
            vec!["login", "--auth-key", BAD_KEY],
            machine.to_vec(),
            "this key has a typo (checksum mismatch)",
        ),
        (
            "unknown key",
            vec!["login", "--auth-key", unknown_key.expose()],
            machine.to_vec(),
            "invalid_auth_key",
        ),
        (
            "used key",
            vec!["login", "--auth-key", &used],
            machine.to_vec(),
            "auth_key_used",
        ),
        (
            "revoked key",
            vec!["login", "--auth-key", &revoked_key],
            machine.to_vec(),
            "auth_key_revoked",
        ),
        (
            "no key",
            vec!["login"],
            machine.to_vec(),
            "AUTHKEYS_AUTH_KEY",
        ),
        (
            "whoami before login",
            vec!["whoami"],
            machine.to_vec(),
            "not logged in",
        ),
        (
            "logout before login",
            vec!["logout"],
            machine.to_vec(),
            "not logged in",
        ),
        (
            "admin, server unreachable",
            vec!["apps", "list"],
            vec![
                ("AUTHKEYS_SERVER", closed.as_str()),
                ("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
            "cannot reach",
        ),
        (
            "login, server unreachable",
            vec![
                "login",
                "--auth-key",
                &revoked_key,
                "--server",
                closed.as_str(),
            ],
            vec![("AUTHKEYS_CONFIG_DIR", fresh)],
            "cannot reach",
        ),
    ];
    for (name, args, env, expected) in cases {
        let output = s.run(&args, &env);
        let line = output.error();
        if !line.contains(expected) {
            output.fail(&format!(
                "{name}: expected the error to mention {expected:?}"
            ));
        }
        for secret in secrets {
            // The random part alone: `ena_…` is a redacted key, `ena_` + anything is not.
            let secret = secret.strip_prefix("ena_").unwrap_or(secret);
            if output.stderr.contains(secret) {
                output.fail(&format!("{name}: stderr shows the secret {secret:?}"));
            }
        }
    }
    assert_eq!(
        files(Path::new(fresh)),
        Vec::<PathBuf>::new(),
        "failed logins save nothing"
    );
}

#[test]
fn login_with_the_key_as_a_positional_argument_fails_without_echoing_it() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let output = s.machine(&s.config_dir("m"), &["login", &key]);
    assert!(!output.status.success(), "{}", output.stderr);
    output.assert_silent_about(&key[4..]);
}

#[test]
fn whoami_and_logout_report_an_unreachable_server_and_keep_the_session_until_logout_local() {
    let mut s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let config = s.config_dir("m");
    s.machine(&config, &["login", "--auth-key", &key]).success();
    let token = saved_session(&config);
    s.server.kill9();

    let dir = [("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8"))];
    for command in ["whoami", "logout"] {
        let output = s.run(&[command], &dir);
        output.failure(3, &["cannot reach", "connection refused"]);
        output.assert_silent_about(&token);
    }
    assert_eq!(
        saved_session(&config),
        token,
        "a failed logout keeps the session to retry"
    );
    let local = s.run(&["logout", "--local"], &dir);
    local.assert_stdout_contains(&[
        "Forgot the saved session",
        "authkeys machines logout --app a",
    ]);
    local.assert_silent_about(&token);
    assert_eq!(files(&config), Vec::<PathBuf>::new());
    s.run(&["whoami"], &dir).failure(1, &["not logged in"]);
}

#[test]
fn machines_logout_ends_that_machine_and_only_that_one() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let (one, two) = (s.config_dir("one"), s.config_dir("two"));
    s.machine(&one, &["login", "--auth-key", &key, "--machine", "one"])
        .success();
    s.machine(&two, &["login", "--auth-key", &key, "--machine", "two"])
        .success();
    let (one_token, two_token) = (saved_session(&one), saved_session(&two));
    let whoami = s.machine(&one, &["whoami", "--json"]).json();
    let one_id = whoami["machine"]["id"]
        .as_str()
        .expect("machine id")
        .to_string();

    let logout = s.admin(&["machines", "logout", "--app", "a", &one_id]);
    logout.success();
    logout.assert_stdout_contains(&[&one_id]);

    s.server
        .client(Some(&one_token))
        .get("/v1/auth/whoami")
        .expect_error(401, "invalid_credentials");
    s.machine(&one, &["whoami"]).error();
    let still = s
        .server
        .client(Some(&two_token))
        .get("/v1/auth/whoami")
        .expect(200);
    assert_eq!(still["machine"]["name"], "two");
    s.machine(&two, &["whoami"])
        .assert_stdout_contains(&["two"]);
    let names: Vec<Value> = s.machines("a").iter().map(|m| m["name"].clone()).collect();
    assert_eq!(names, vec![json!("two")]);
}

#[test]
fn help_exits_zero_and_never_shows_the_auth_key_from_the_environment() {
    let s = Sandbox::new();
    let help = s.run(&["--help"], &[]);
    help.success();
    help.assert_stdout_contains(&["login", "whoami", "logout", "apps", "keys", "machines"]);

    let help = s.run(&["keys", "create", "--help"], &[]);
    help.success();
    help.assert_stdout_contains(&[
        "--app",
        "--description",
        "--reusable",
        "--ephemeral",
        "--expires-in",
        "--json",
    ]);

    let key = secret(&s.create_key("a", &[]));
    let help = s.run(&["login", "--help"], &[("AUTHKEYS_AUTH_KEY", &key)]);
    help.success();
    help.assert_stdout_contains(&["--auth-key", "AUTHKEYS_AUTH_KEY", "--server", "--machine"]);
    help.assert_silent_about(&key[4..]);

    let version = s.run(&["--version"], &[]);
    version.success();
    version.assert_stdout_contains(&[env!("CARGO_PKG_VERSION")]);
}

/// List commands print every row, following the server's pages (at most 1,000 rows each),
/// unless `--limit` caps them; `--json` prints the listing in the shape of one page, its
/// `next_cursor` saying where a capped listing stopped. `machines list --key` filters.
#[test]
fn list_commands_follow_cursors_to_the_end_and_stop_at_the_limit() {
    const BULK: usize = 1_002;
    let s = Sandbox::new();
    let reusable = s.create_key("a", &["--reusable"]);
    let other = s.create_key("a", &[]);
    // More apps than one page holds, written straight into the database.
    s.server.db().insert_apps(BULK as i64);
    let ids = |listing: &Value, field: &str| -> Vec<String> {
        listing[field]
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_string())
            .collect()
    };

    let all = s.admin(&["apps", "list", "--json"]).json();
    let mut expected: Vec<String> = (1..=BULK).map(|i| format!("bulk-{i:04}")).collect();
    expected.insert(0, "a".into());
    assert_eq!(ids(&all, "apps"), expected, "every app once, by id");
    assert_eq!(all["next_cursor"], Value::Null);
    let table = s.admin(&["apps", "list"]);
    assert_eq!(
        table.success().lines().count(),
        BULK + 2,
        "a header and every app"
    );
    table.row("bulk-1002");

    let capped = s
        .admin(&["apps", "list", "--json", "--limit", "1001"])
        .json();
    assert_eq!(ids(&capped, "apps"), expected[..1001]);
    let cursor = capped["next_cursor"]
        .as_str()
        .expect("a capped listing says where it stopped");
    let rest = s
        .server
        .admin()
        .get(&format!("/v1/apps?cursor={cursor}"))
        .expect(200);
    assert_eq!(ids(&rest, "apps"), expected[1001..]);
    let short = s.admin(&["apps", "list", "--limit", "2"]);
    let lines: Vec<&str> = short.success().lines().collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[3].contains("more rows follow"), "{lines:?}");
    s.admin(&["apps", "list", "--limit", "0"])
        .error_containing("--limit");

    // Keys: newest first, capped.
    let newest = s
        .admin(&["keys", "list", "--app", "a", "--limit", "1", "--json"])
        .json();
    assert_eq!(ids(&newest, "keys"), [other["id"].as_str().unwrap()]);
    assert!(newest["next_cursor"].is_string());

    // Machines of one key only.
    let mut reusable_machines = Vec::new();
    for _ in 0..3 {
        let login = s.server.login(reusable["key"].as_str().unwrap());
        reusable_machines.push(login["machine"]["id"].as_str().unwrap().to_string());
    }
    s.server.login(other["key"].as_str().unwrap());
    reusable_machines.reverse();
    let key_id = reusable["id"].as_str().unwrap();
    let filtered = s
        .admin(&["machines", "list", "--app", "a", "--key", key_id, "--json"])
        .json();
    assert_eq!(
        ids(&filtered, "machines"),
        reusable_machines,
        "newest first"
    );
    let table = s.admin(&["machines", "list", "--app", "a", "--key", key_id]);
    assert_eq!(
        table.success().lines().count(),
        4,
        "a header and three machines"
    );
    let everything = s
        .admin(&["machines", "list", "--app", "a", "--json"])
        .json();
    assert_eq!(ids(&everything, "machines").len(), 4);
}

/// Output into a pipe whose reader has gone (`authkeys apps list | head`, here `| true`, which
/// exits before the CLI writes) ends the command quietly with status 0, not with a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let sandbox = Sandbox::new();
    sandbox.server.create_app("piped");
    let script = format!("'{BIN}' apps list | true; echo \"status=${{PIPESTATUS[0]}}\"");
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(sandbox.home.path())
        .env("HOME", sandbox.home.path())
        .env("AUTHKEYS_SERVER", &sandbox.server.url)
        .env("AUTHKEYS_ADMIN_TOKEN", &sandbox.server.admin_token)
        .env_remove("RUST_LOG")
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stdout.trim(), "status=0", "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr, "", "nothing to say about a reader that left");
}

/// A TCP server on 127.0.0.1:0 that is not authkeys: for one connection it reads the request's
/// head, then sends `answer` and closes, or, with `None`, never answers and holds the
/// connection until the client gives up. Returns its URL.
fn impostor(answer: Option<&'static [u8]>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    std::thread::spawn(move || {
        let (connection, _) = listener.accept().expect("accepting the CLI");
        let mut reader = BufReader::new(connection);
        match answer {
            Some(answer) => {
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                    line.clear();
                }
                let _ = reader.get_mut().write_all(answer);
            }
            None => {
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
        }
    });
    url
}

#[test]
fn exit_status_is_1_refused_2_usage_3_unreachable_as_help_documents() {
    let s = Sandbox::new();
    s.admin(&["keys", "list", "--app", "nope"])
        .failure(1, &["app_not_found"]);
    s.admin(&["keys", "list"]).failure(2, &["--app"]);
    s.admin(&["keys", "create", "--app", "a", "--expires-in", "1w"])
        .failure(2, &["unit", "s, m, h or d"]);
    s.run(&["apps", "list"], &[("AUTHKEYS_SERVER", &s.server.url)])
        .failure(2, &["AUTHKEYS_ADMIN_TOKEN"]);
    let closed = closed_port_url();
    s.run(
        &["apps", "list", "--server", &closed],
        &[("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .failure(3, &["cannot reach"]);
    let help = s.run(&["--help"], &[]);
    help.assert_stdout_contains(&[
        "Exit status:",
        "1  the server refused",
        "2  usage",
        "3  the server could not be reached",
    ]);
}

#[test]
fn mistyped_subcommands_and_flags_suggest_the_right_one_and_the_failing_commands_help() {
    let s = Sandbox::new();
    type Case<'a> = (&'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["keys", "lst"],
            &[
                "'lst'",
                "did you mean `list`?",
                "see `authkeys keys --help`",
            ],
        ),
        (
            &["keys", "create", "--app", "a", "--reuseable"],
            &[
                "'--reuseable'",
                "did you mean `--reusable`?",
                "see `authkeys keys create --help`",
            ],
        ),
        (
            &["machines", "list", "--jsn"],
            &[
                "did you mean `--json`?",
                "see `authkeys machines list --help`",
            ],
        ),
        (
            &["lgoin"],
            &["did you mean `login`?", "see `authkeys --help`"],
        ),
        (
            &["apps"],
            &[
                "a subcommand is needed: create, list, delete",
                "see `authkeys apps --help`",
            ],
        ),
        (
            &["keys", "create"],
            &["missing --app", "see `authkeys keys create --help`"],
        ),
        (
            &["completions", "tcsh"],
            &["possible values: bash", "fish", "zsh"],
        ),
    ];
    for (args, expected) in cases {
        s.admin(args).failure(2, expected);
    }
}

#[test]
fn with_json_every_error_is_one_json_object_on_stderr() {
    let s = Sandbox::new();
    let usage = s.admin(&["keys", "lst", "--json"]).json_failure(2, "usage");
    assert_eq!(usage["help"], "authkeys keys --help", "{usage}");
    assert!(
        usage["message"]
            .as_str()
            .is_some_and(|m| m.contains("did you mean `list`")),
        "{usage}"
    );
    let refused = s
        .admin(&["keys", "list", "--app", "nope", "--json"])
        .json_failure(1, "app_not_found");
    assert!(refused.get("help").is_none(), "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| !m.contains("HTTP 404")),
        "the code is a field of its own, not repeated in the message: {refused}"
    );
    s.run(
        &["apps", "list", "--json"],
        &[
            ("AUTHKEYS_SERVER", &s.server.url),
            ("AUTHKEYS_ADMIN_TOKEN", "wrong-admin-token-9876543210"),
        ],
    )
    .json_failure(1, "invalid_credentials");
    s.run(
        &["login", "--auth-key", BAD_KEY, "--json"],
        &[("AUTHKEYS_SERVER", &s.server.url)],
    )
    .json_failure(2, "usage");
    s.run(
        &["apps", "list", "--json", "--server", &closed_port_url()],
        &[("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .json_failure(3, "unreachable");
    // Without --json, the same failure is the human line.
    s.admin(&["keys", "list", "--app", "nope"])
        .failure(1, &["app_not_found"]);
}

/// A pasted key keeps the spaces and newline around it; a key with a typo is refused by the
/// CLI itself, before any request: against a closed port it still says "typo", not
/// "cannot reach".
#[test]
fn pasted_keys_are_trimmed_and_a_typo_is_caught_before_any_request() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let config = s.config_dir("m");
    let dir = config.to_str().expect("UTF-8");
    let pasted = format!("  {key} \n");
    let url = s.server.url.as_str();
    s.run(
        &["login", "--machine", "pasted"],
        &[
            ("AUTHKEYS_SERVER", url),
            ("AUTHKEYS_CONFIG_DIR", dir),
            ("AUTHKEYS_AUTH_KEY", &pasted),
        ],
    )
    .success();
    s.machine(&config, &["whoami"])
        .assert_stdout_contains(&["pasted"]);

    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ASCII");
    let closed = closed_port_url();
    let cases: Vec<(String, &str)> = vec![
        (typo, "this key has a typo (checksum mismatch)"),
        (
            BAD_KEY.to_string(),
            "this key has a typo (checksum mismatch)",
        ),
        (
            key[..39].to_string(),
            "an auth key is 40 characters, this one is 39",
        ),
        (
            format!("{}-{}", &key[..20], &key[21..]),
            "only letters and digits",
        ),
        (
            format!("ens_{}", &key[4..]),
            "session token, not an auth key",
        ),
    ];
    for (bad, expected) in &cases {
        for server in [url, closed.as_str()] {
            let output = s.run(
                &["login", "--auth-key", bad, "--server", server],
                &[("AUTHKEYS_CONFIG_DIR", dir)],
            );
            output.failure(2, &[expected, "see `authkeys login --help`"]);
            output.assert_silent_about(&bad[4..]);
        }
        s.run(
            &["keys", "verify", "--auth-key", bad, "--server", &closed],
            &[],
        )
        .failure(2, &[expected]);
    }
    let metrics = s.server.anonymous().get("/metrics").body;
    assert!(
        !metrics.contains(r#"route="/v1/auth/login",method="POST",status="401""#),
        "no refused login reached the server:\n{metrics}"
    );
}

#[test]
fn auth_key_file_path_reads_the_key_from_a_file() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let file = s.home.path().join("key.txt");
    std::fs::write(&file, format!("{key}\n")).expect("writing the key file");
    let config = s.config_dir("m");
    let flag = format!("file:{}", file.display());
    let login = s.machine(&config, &["login", "--auth-key", &flag, "--machine", "f"]);
    login.success();
    login.assert_silent_about(&key[4..]);
    assert_eq!(s.machines("a").len(), 1);
    let missing = format!("file:{}", s.home.path().join("nope.txt").display());
    s.machine(&s.config_dir("n"), &["login", "--auth-key", &missing])
        .failure(2, &["cannot read the auth key from file", "nope.txt"]);
}

#[test]
fn an_admin_token_with_spaces_or_a_newline_around_it_works() {
    let s = Sandbox::new();
    let token = format!(" {ADMIN_TOKEN}\n");
    s.run(
        &["apps", "create", "a"],
        &[
            ("AUTHKEYS_SERVER", &s.server.url),
            ("AUTHKEYS_ADMIN_TOKEN", &token),
        ],
    )
    .success();
}

#[test]
fn network_errors_say_what_to_check() {
    // A TLS ClientHello never completes an HTTP head: the server answers it once the request
    // deadline passes, so a short one spares the wait (the CLI's message is the same).
    let s = Sandbox::with(Options::default().arg("--http-request-timeout-ms", "300"));
    let admin = [("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)];
    let list = |server: &str| s.run(&["apps", "list", "--server", server], &admin);

    list(&closed_port_url()).failure(
        3,
        &[
            "connection refused",
            "is `authkeys serve` running",
            "--server or AUTHKEYS_SERVER",
        ],
    );
    let https = s.server.url.replacen("http://", "https://", 1);
    list(&https).failure(3, &["TLS handshake failed", "use http://"]);
    let html = impostor(Some(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\
          Connection: close\r\n\r\nNot Found",
    ));
    list(&html).failure(3, &["HTTP 404", "is it an authkeys server?"]);
    let ok_html = impostor(Some(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\
          Connection: close\r\n\r\n<html>",
    ));
    list(&ok_html).failure(3, &["without JSON", "is it an authkeys server?"]);
    let ssh = impostor(Some(b"SSH-2.0-OpenSSH_9.2\r\n"));
    list(&ssh).failure(
        3,
        &["something other than HTTP", "is it an authkeys server?"],
    );

    let silent = impostor(None);
    let started = std::time::Instant::now();
    s.run(
        &["apps", "list", "--server", &silent, "--timeout", "1"],
        &admin,
    )
    .failure(3, &["did not answer within 1s (--timeout)"]);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(8),
        "--timeout 1 waited {waited:?}"
    );

    let with_path = format!("{}/v1", s.server.url);
    list(&with_path).failure(
        2,
        &[
            "takes no path",
            &format!("use {}", s.server.url),
            "see `authkeys apps list --help`",
        ],
    );
    // The default wait is named in the help, and shorter than 30 s.
    s.run(&["apps", "list", "--help"], &[])
        .assert_stdout_contains(&["--timeout <DURATION>", "[default: 10s]"]);
}

#[test]
fn whoami_says_the_session_expired_when_the_server_says_session_expired() {
    let s = Sandbox::with(Options::default().arg("--ephemeral-ttl", "1"));
    let key = secret(&s.create_key("a", &["--ephemeral"]));
    let config = s.config_dir("m");
    s.machine(&config, &["login", "--auth-key", &key]).success();
    let session = saved_session(&config);
    eventually(
        "the session to expire",
        std::time::Duration::from_secs(10),
        || {
            let reply = whoami(&s.server, &session);
            (reply.status == 401).then_some(())
        },
    );
    whoami(&s.server, &session).expect_error(401, "session_expired");
    s.machine(&config, &["whoami"]).failure(
        1,
        &[
            "the saved session expired",
            "authkeys login",
            "session_expired",
        ],
    );
    s.machine(&config, &["whoami", "--json"])
        .json_failure(1, "session_expired");
}

#[test]
fn apps_delete_revokes_the_apps_keys_and_logs_out_its_machines() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("gone", &["--reusable"]));
    s.create_key("kept", &[]);
    let config = s.config_dir("m");
    s.machine(&config, &["login", "--auth-key", &key]).success();
    let session = saved_session(&config);

    s.admin(&["apps", "delete", "gone"])
        .assert_stdout_contains(&["Deleted app gone"]);
    s.server
        .admin()
        .get("/v1/apps/gone")
        .expect_error(404, "app_not_found");
    s.server.admin().get("/v1/apps/kept").expect(200);
    whoami(&s.server, &session).expect_error(401, "invalid_credentials");
    assert_eq!(verify(&s.server, &key)["valid"], false);
    s.admin(&["apps", "delete", "gone", "--json"])
        .json_failure(1, "app_not_found");
    assert_eq!(
        s.admin(&["apps", "delete", "kept", "--json"]).json(),
        json!({"ok": true})
    );
}

#[test]
fn keys_verify_reports_a_valid_key_without_using_it_and_why_others_are_not() {
    let s = Sandbox::new();
    let created = s.create_key("a", &["--ephemeral", "--no-expiry"]);
    let key = secret(&created);
    let verify_env = |key: &str| {
        s.run(
            &["keys", "verify"],
            &[
                ("AUTHKEYS_SERVER", &s.server.url),
                ("AUTHKEYS_AUTH_KEY", key),
            ],
        )
    };
    for _ in 0..2 {
        let valid = verify_env(&key);
        valid.assert_stdout_contains(&[
            "Valid",
            created["id"].as_str().expect("id"),
            "app a",
            "single-use, ephemeral",
            "expires never",
        ]);
        valid.assert_silent_about(&key[4..]);
    }
    let json = s
        .run(
            &["keys", "verify", "--json", "--auth-key", &key],
            &[("AUTHKEYS_SERVER", &s.server.url)],
        )
        .json();
    assert_eq!(
        (&json["valid"], &json["key_id"]),
        (&json!(true), &created["id"])
    );
    // Verifying used nothing up: the single-use key still logs a machine in, once.
    s.server.login(&key);
    verify_env(&key).failure(1, &["not valid", "single-use and has been used", "(used)"]);

    let revoked = s.create_key("a", &[]);
    let id = revoked["id"].as_str().expect("id");
    s.admin(&["keys", "revoke", "--app", "a", id]).success();
    verify_env(&secret(&revoked)).failure(1, &["revoked"]);
    let unknown = authkeys::ops::generate_token(authkeys::TokenKind::AuthKey);
    s.run(
        &["keys", "verify", "--json", "--auth-key", unknown.expose()],
        &[("AUTHKEYS_SERVER", &s.server.url)],
    )
    .json_failure(1, "not_found");
}

#[test]
fn machines_list_without_app_lists_every_apps_machines() {
    let s = Sandbox::new();
    let one = secret(&s.create_key("one", &["--reusable"]));
    let two = secret(&s.create_key("two", &[]));
    s.create_key("empty", &[]);
    let first = s.server.login(&one);
    let second = s.server.login(&one);
    let third = s.server.login(&two);
    let id = |login: &Value| login["machine"]["id"].clone();

    let all = s.admin(&["machines", "list", "--json"]).json();
    let ids: Vec<Value> = all["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|machine| machine["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![id(&second), id(&first), id(&third)],
        "by app, newest first"
    );
    assert_eq!(all["next_cursor"], Value::Null);

    let table = s.admin(&["machines", "list"]);
    let lines: Vec<&str> = table.success().lines().collect();
    assert_eq!(lines.len(), 4, "a header and three machines: {lines:?}");
    assert!(lines[0].starts_with("APP"), "{lines:?}");
    assert!(table.row("two").contains(id(&third).as_str().expect("id")));

    let capped = s
        .admin(&["machines", "list", "--limit", "2", "--json"])
        .json();
    assert_eq!(capped["machines"].as_array().map(Vec::len), Some(2));
    assert!(capped["next_cursor"].is_string(), "{capped}");
    let key_id = third["machine"]["key_id"].as_str().expect("key id");
    let filtered = s
        .admin(&["machines", "list", "--key", key_id, "--json"])
        .json();
    assert_eq!(filtered["machines"].as_array().map(Vec::len), Some(1));
}

#[test]
fn session_token_prints_the_saved_token_for_forward_auth() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let config = s.config_dir("m");
    s.machine(&config, &["session-token"])
        .failure(1, &["not logged in"]);
    s.machine(&config, &["login", "--auth-key", &key]).success();
    let printed = s.machine(&config, &["session-token"]);
    let token = printed.success().to_string();
    assert_eq!(token, format!("{}\n", saved_session(&config)));
    let reply = s
        .server
        .client(Some(token.trim_end()))
        .get("/v1/forward-auth");
    assert_eq!(reply.status, 200, "forward auth with the printed token");
    assert_eq!(reply.header("X-Authkeys-App"), Some("a"));
}

/// The completion script is what a real bash loads: `complete -p` shows it registered, and
/// its function completes subcommands at each level.
#[test]
fn completions_load_in_a_real_bash_and_complete_subcommands() {
    let s = Sandbox::new();
    let bin_dir = Path::new(BIN).parent().expect("the binary has a directory");
    let bash = |script: &str| -> String {
        let output = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("running bash");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{script}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let registered = bash("source <(authkeys completions bash); complete -p authkeys");
    assert!(
        registered.contains("_authkeys") && registered.ends_with("authkeys\n"),
        "{registered}"
    );
    let complete = |words: &str, cword: usize| -> BTreeSet<String> {
        let script = format!(
            "source <(authkeys completions bash); COMP_WORDS=({words}); COMP_CWORD={cword}; \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _authkeys authkeys \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        bash(&script).lines().map(str::to_string).collect()
    };
    let set =
        |words: &[&str]| -> BTreeSet<String> { words.iter().map(|w| w.to_string()).collect() };
    assert_eq!(complete("authkeys ke", 1), set(&["keys"]));
    assert_eq!(complete("authkeys comp", 1), set(&["completions"]));
    assert!(
        set(&["create", "list", "revoke", "verify"]).is_subset(&complete("authkeys keys ''", 2)),
        "{:?}",
        complete("authkeys keys ''", 2)
    );
    assert!(complete("authkeys keys create --reu", 3).contains("--reusable"));

    for shell in ["zsh", "fish"] {
        let script = s.run(&["completions", shell], &[]);
        script.assert_stdout_contains(&["authkeys", "keys", "reusable", "expires-in"]);
    }
}

#[test]
fn the_man_page_is_generated_from_the_same_definitions() {
    let s = Sandbox::new();
    let page = s.run(&["man"], &[]);
    let roff = page.success();
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH authkeys 1"),
        "{roff}"
    );
    page.assert_stdout_contains(&["authkeys", "keys", "machines", "completions", "Exit status"]);
    let dir = s.home.path().join("man");
    s.run(&["man", "--out-dir", dir.to_str().expect("UTF-8")], &[])
        .success();
    for name in [
        "authkeys.1",
        "authkeys-keys-create.1",
        "authkeys-keys-verify.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(text.contains(".TH"), "{name}: {text}");
    }
    let create = std::fs::read_to_string(dir.join("authkeys-keys-create.1")).expect("page");
    assert!(create.contains("reusable"), "{create}");
}

#[test]
fn empty_lists_say_so_instead_of_printing_a_lone_header() {
    let s = Sandbox::new();
    assert_eq!(s.admin(&["apps", "list"]).success(), "No apps.\n");
    s.server.create_app("a");
    assert_eq!(
        s.admin(&["keys", "list", "--app", "a"]).success(),
        "No keys.\n"
    );
    assert_eq!(
        s.admin(&["machines", "list", "--app", "a"]).success(),
        "No machines.\n"
    );
    assert_eq!(s.admin(&["machines", "list"]).success(), "No machines.\n");
    assert_eq!(
        s.admin(&["keys", "list", "--app", "a", "--json"]).json(),
        json!({"keys": [], "next_cursor": null})
    );
}

/// Logging in again replaces the saved session: the old machine is logged out on the server
/// (or, with --keep-old, left logged in), and the CLI says which.
#[test]
fn logging_in_again_logs_the_saved_session_out_unless_keep_old() {
    let s = Sandbox::new();
    let key = secret(&s.create_key("a", &["--reusable"]));
    let config = s.config_dir("m");
    s.machine(
        &config,
        &["login", "--auth-key", &key, "--machine", "first"],
    )
    .success();
    let first = saved_session(&config);
    let first_id = s.machine(&config, &["whoami", "--json"]).json()["machine"]["id"].clone();

    let again = s.machine(
        &config,
        &["login", "--auth-key", &key, "--machine", "second"],
    );
    again.assert_stdout_contains(&[
        "Logged out the previous session",
        first_id.as_str().expect("id"),
    ]);
    again.assert_silent_about(&first);
    whoami(&s.server, &first).expect_error(401, "invalid_credentials");
    let second = saved_session(&config);
    whoami(&s.server, &second).expect(200);

    let kept = s
        .machine(
            &config,
            &[
                "login",
                "--auth-key",
                &key,
                "--machine",
                "third",
                "--keep-old",
                "--json",
            ],
        )
        .json();
    assert_eq!(kept["replaced"]["logged_out"], false, "{kept:#}");
    assert_eq!(kept["machine"]["name"], "third");
    whoami(&s.server, &second).expect(200);
    let names: BTreeSet<String> = s
        .machines("a")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, BTreeSet::from(["second".into(), "third".into()]));

    // A failed login keeps the saved session.
    let third = saved_session(&config);
    s.machine(&config, &["login", "--auth-key", BAD_KEY])
        .failure(2, &["typo"]);
    s.machine(
        &config,
        &["login", "--auth-key", &secret(&s.create_key("a", &[]))[..]],
    )
    .success();
    whoami(&s.server, &third).expect_error(401, "invalid_credentials");
}

/// Every duration flag takes the same units through the one parser (`serve`'s included), and
/// refuses anything else as a usage error saying what it accepts, before any request.
#[test]
fn durations_take_s_m_h_d_everywhere_and_anything_else_is_a_usage_error() {
    let s = Sandbox::with(Options::default().arg("--ephemeral-ttl", "2m"));
    let key = secret(&s.create_key("a", &["--ephemeral"]));
    let login = s.server.login(&key);
    let machine = &login["machine"];
    let ttl = timestamp(&machine["expires_at"]) - timestamp(&machine["created_at"]);
    assert_eq!(ttl.num_seconds(), 120, "--ephemeral-ttl 2m: {machine:#}");

    let create = ["keys", "create", "--app", "a"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        create.iter().chain(extra).copied().collect()
    };
    for bad in ["1.5h", "1h30m", "2w", "+1", "h"] {
        let cases: Vec<Vec<&str>> = vec![
            with(&["--expires-in", bad]),
            with(&["--ephemeral", "--session-ttl", bad]),
            with(&["--idle-timeout", bad]),
            vec!["keys", "rotate", "--app", "a", "key_x", "--grace", bad],
            vec!["apps", "list", "--timeout", bad],
            vec!["serve", "--db", ":memory:", "--ephemeral-ttl", bad],
            vec!["serve", "--db", ":memory:", "--sweep-interval", bad],
        ];
        for args in cases {
            s.admin(&args).failure(2, &["s, m, h or d", "--help"]);
        }
    }
    type Case<'a> = (Vec<&'a str>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (with(&["--session-ttl", "2h"]), &["--ephemeral"]),
        (
            with(&["--no-expiry", "--expires-in", "1d"]),
            &["cannot be used with"],
        ),
        (with(&["--metadata", "novalue"]), &["KEY=VALUE"]),
        (with(&["--metadata", "=v"]), &["KEY=VALUE"]),
        (
            with(&["--metadata", "k=1", "--metadata", "k=2"]),
            &["--metadata k= is given twice"],
        ),
        (with(&["--max-uses", "0"]), &["--max-uses"]),
        (with(&["--expires-in", "0"]), &["longer than 0"]),
        (vec!["apps", "list", "--timeout", "0s"], &["longer than 0"]),
    ];
    for (args, expected) in cases {
        s.admin(&args).failure(2, expected);
    }
    assert_eq!(
        s.server.admin().get("/v1/apps/a/keys").expect(200)["keys"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "no refused command created a key"
    );
}

/// `keys create`'s policy flags reach the server as API.md v2's fields (durations in seconds,
/// `--max-uses` above 1 making the key reusable), and the one-time display, `keys list` and
/// `keys verify` show what the key carries.
#[test]
fn keys_create_sends_the_key_policy_and_the_listings_show_it() {
    let s = Sandbox::new();
    let created = s.create_key(
        "a",
        &[
            "--tag",
            "tag:ci",
            "--tag",
            "tag:web",
            "--metadata",
            "team=infra",
            "--metadata",
            "region=eu-1",
            "--max-uses",
            "5",
            "--ephemeral",
            "--session-ttl",
            "2h",
            "--idle-timeout",
            "30m",
            "--expires-in",
            "90d",
            "--description",
            "fleet",
        ],
    );
    let id = created["id"].as_str().expect("id").to_string();
    let stored = s
        .server
        .admin()
        .get(&format!("/v1/apps/a/keys/{id}"))
        .expect(200);
    for key in [&created, &stored] {
        assert_eq!(key["tags"], json!(["tag:ci", "tag:web"]), "{key:#}");
        assert_eq!(
            key["metadata"],
            json!({"team": "infra", "region": "eu-1"}),
            "{key:#}"
        );
        assert_eq!(
            (&key["max_uses"], &key["uses_remaining"], &key["reusable"]),
            (&json!(5), &json!(5), &json!(true)),
            "{key:#}"
        );
        assert_eq!(
            (&key["session_ttl"], &key["idle_timeout"]),
            (&json!(7_200), &json!(1_800)),
            "{key:#}"
        );
        let lifetime = timestamp(&key["expires_at"]) - timestamp(&key["created_at"]);
        assert_eq!(lifetime.num_days(), 90, "{key:#}");
    }
    let single = s.create_key("a", &["--max-uses", "1"]);
    assert_eq!(
        (&single["reusable"], &single["max_uses"]),
        (&json!(false), &json!(1)),
        "{single:#}"
    );

    let shown = s.admin(&[
        "keys",
        "create",
        "--app",
        "a",
        "--tag",
        "tag:ci",
        "--max-uses",
        "3",
        "--ephemeral",
        "--session-ttl",
        "90m",
        "--idle-timeout",
        "1d",
        "--no-expiry",
    ]);
    shown.assert_stdout_contains(&[
        "tags:         tag:ci\n",
        "max uses:     3\n",
        "session TTL:  90m after login\n",
        "idle timeout: 1d\n",
        "expires:      never\n",
    ]);

    let key = secret(&created);
    s.server.login(&key);
    let listed = s.admin(&["keys", "list", "--app", "a"]);
    let row = listed.row(&id);
    for cell in ["tag:ci,tag:web", " 1/5 ", "fleet"] {
        if !row.contains(cell) {
            listed.fail(&format!("expected the key's row to show {cell:?}"));
        }
    }
    let header = listed.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("TAGS") && header.contains("ROTATED"),
        "{header}"
    );
    s.run(
        &["keys", "verify", "--auth-key", &key],
        &[("AUTHKEYS_SERVER", &s.server.url)],
    )
    .assert_stdout_contains(&["tags tag:ci,tag:web", "4 logins left"]);

    // What the server refuses comes back as its 422, naming the field, and creates nothing.
    s.admin(&["keys", "create", "--app", "a", "--tag", "CI"])
        .failure(1, &["tags", "invalid_field"]);
}

/// `keys rotate` shows the new key once, with when the old one stops; the new key has the old
/// one's settings, the old one's machines stay logged in, and the listing shows the link.
#[test]
fn keys_rotate_shows_the_new_key_once_and_when_the_old_one_stops() {
    let s = Sandbox::new();
    let old = s.create_key(
        "a",
        &[
            "--reusable",
            "--tag",
            "tag:ci",
            "--expires-in",
            "30d",
            "--description",
            "ci",
        ],
    );
    let old_id = old["id"].as_str().expect("id").to_string();
    let config = s.config_dir("m");
    s.machine(&config, &["login", "--auth-key", &secret(&old)])
        .success();
    let session = saved_session(&config);

    let before = chrono::Utc::now();
    let rotated = s.admin(&["keys", "rotate", "--app", "a", &old_id, "--grace", "1h"]);
    let after = chrono::Utc::now();
    let text = rotated.success();
    let keys = tokens(text, "ena_");
    let new_key = keys
        .first()
        .unwrap_or_else(|| rotated.fail("no key shown"))
        .clone();
    if keys.iter().any(|k| *k != new_key) || text.matches(&new_key).count() != 2 {
        rotated.fail("expected the new key, shown bare and in the login line");
    }
    rotated.assert_stdout_contains(&[
        &format!("Rotated key {old_id} of app a into key_"),
        "stops accepting logins at",
        "tags:         tag:ci",
    ]);
    let new_id = tokens(text, "key_")
        .into_iter()
        .find(|id| *id != old_id)
        .unwrap_or_else(|| rotated.fail("no new key id"));

    let admin = s.server.admin();
    let old_now = admin.get(&format!("/v1/apps/a/keys/{old_id}")).expect(200);
    let new = admin.get(&format!("/v1/apps/a/keys/{new_id}")).expect(200);
    assert_eq!(old_now["rotated_to"], new_id.as_str(), "{old_now:#}");
    assert_eq!(new["rotated_from"], old_id.as_str(), "{new:#}");
    let stops = timestamp(&old_now["expires_at"]);
    let hour = chrono::Duration::hours(1);
    assert!(
        stops >= before - chrono::Duration::seconds(1) + hour && stops <= after + hour,
        "the old key stops an hour after the rotation: {old_now:#}"
    );
    if !text.contains(old_now["expires_at"].as_str().expect("a time")) {
        rotated.fail("expected the old key's new expiry in the output");
    }
    for field in ["description", "reusable", "ephemeral", "tags"] {
        assert_eq!(new[field], old[field], "{field}: {new:#}");
    }
    let lifetime = timestamp(&new["expires_at"]) - timestamp(&new["created_at"]);
    assert_eq!(
        lifetime.num_days(),
        30,
        "the old key's lifetime, from now: {new:#}"
    );
    whoami(&s.server, &session).expect(200);
    s.server.login(&new_key);

    let listed = s.admin(&["keys", "list", "--app", "a"]);
    assert!(
        listed.row(&old_id).contains(&format!("to {new_id}")),
        "{}",
        listed.stdout
    );
    assert!(
        listed.row(&new_id).contains(&format!("from {old_id}")),
        "{}",
        listed.stdout
    );

    s.admin(&["keys", "rotate", "--app", "a", &old_id])
        .failure(1, &["key_inactive"]);
    let newest = s
        .admin(&[
            "keys", "rotate", "--app", "a", &new_id, "--grace", "0", "--json",
        ])
        .json();
    assert!(newest["key"].is_string(), "{newest:#}");
    assert_eq!(newest["rotated_from"], new_id.as_str());
    assert_eq!(
        verify(&s.server, &new_key)["valid"],
        false,
        "--grace 0 ends it now"
    );
}

#[test]
fn keys_list_and_machines_list_filter_by_tag() {
    let s = Sandbox::new();
    let ci = s.create_key(
        "a",
        &["--reusable", "--tag", "tag:ci", "--tag", "tag:linux"],
    );
    let web = s.create_key("a", &["--reusable", "--tag", "tag:web"]);
    s.create_key("a", &[]);
    let other = s.create_key("b", &["--tag", "tag:web"]);
    let ids = |listing: &Value, field: &str| -> Vec<Value> {
        listing[field]
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| item["id"].clone())
            .collect()
    };
    let keys = |tags: &[&str]| -> Vec<Value> {
        let mut args = vec!["keys", "list", "--app", "a", "--json"];
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        ids(&s.admin(&args).json(), "keys")
    };
    assert_eq!(keys(&["tag:ci"]), vec![ci["id"].clone()]);
    assert_eq!(keys(&["tag:ci", "tag:linux"]), vec![ci["id"].clone()]);
    assert_eq!(
        keys(&["tag:ci", "tag:web"]),
        Vec::<Value>::new(),
        "every tag must match"
    );
    assert_eq!(keys(&["tag:web"]), vec![web["id"].clone()]);
    assert_eq!(
        s.admin(&["keys", "list", "--app", "a", "--tag", "tag:none"])
            .success(),
        "No keys.\n"
    );

    let ci_machines = [s.server.login(&secret(&ci)), s.server.login(&secret(&ci))];
    let web_machine = s.server.login(&secret(&web));
    let other_machine = s.server.login(&secret(&other));
    let machines = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["machines", "list", "--json"];
        all.extend_from_slice(args);
        ids(&s.admin(&all).json(), "machines")
    };
    let id = |login: &Value| login["machine"]["id"].clone();
    assert_eq!(
        machines(&["--app", "a", "--tag", "tag:ci"]),
        vec![id(&ci_machines[1]), id(&ci_machines[0])]
    );
    assert_eq!(
        machines(&["--tag", "tag:web"]),
        vec![id(&web_machine), id(&other_machine)],
        "every app's machines with the tag"
    );
    let web_id = web["id"].as_str().expect("id");
    assert_eq!(
        machines(&["--app", "a", "--tag", "tag:ci", "--key", web_id]),
        Vec::<Value>::new()
    );
    assert_eq!(
        machines(&["--tag", "tag:ci", "--tag", "tag:linux"]),
        vec![id(&ci_machines[1]), id(&ci_machines[0])]
    );
    assert_eq!(
        machines(&["--tag", "tag:ci", "--tag", "tag:web"]),
        Vec::<Value>::new(),
        "every tag must match"
    );
    let table = s.admin(&["machines", "list", "--app", "a", "--tag", "tag:linux"]);
    assert_eq!(
        table.success().lines().count(),
        3,
        "a header and two machines"
    );
    let first = id(&ci_machines[0]);
    assert!(
        table
            .row(first.as_str().expect("id"))
            .contains("tag:ci,tag:linux"),
        "{}",
        table.stdout
    );
}
