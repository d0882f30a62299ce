//! The client CLI end to end: the real `authkeys` binary run as a subprocess against a real
//! server, each test with its own server, its own HOME and its own config directory, and no
//! `AUTHKEYS_*` variable from the developer's environment. Every failed expectation prints the
//! command, its exit status, stdout, stderr and the server's log.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
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
        Sandbox {
            server: TestServer::start(),
            home: tempfile::tempdir().expect("creating a temp HOME"),
        }
    }

    /// A config directory under HOME, not created: the CLI must create it.
    fn config_dir(&self, name: &str) -> PathBuf {
        self.home.path().join(name).join("authkeys")
    }

    /// Runs `authkeys args…` with HOME set to the sandbox, no `AUTHKEYS_*`, `XDG_CONFIG_HOME`
    /// or `RUST_LOG` from the developer's environment, and exactly `envs` on top.
    pub(crate) fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.home.path())
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
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
        let output = command.output().expect("running authkeys");
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
    fn machine(&self, config: &Path, args: &[&str]) -> Output {
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
    status: ExitStatus,
    stdout: String,
    stderr: String,
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
        "expires_at": null, "revoked_at": null, "last_used_at": null, "uses": 0, "machines": 0,
    });
    for (name, value) in expected.as_object().expect("object") {
        assert_eq!(&key[name], value, "{name} in {key:#}");
    }
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
fn keys_create_sends_reusable_ephemeral_and_expires_in() {
    let s = Sandbox::new();
    let cases: &[(&[&str], bool, bool, Option<i64>)] = &[
        (&[], false, false, None),
        (&["--reusable"], true, false, None),
        (&["--ephemeral"], false, true, None),
        (&["--expires-in", "600"], false, false, Some(600)),
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
    let secrets = [ADMIN_TOKEN, wrong_token, &used, &revoked_key, BAD_KEY];

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
fn whoami_and_logout_report_an_unreachable_server_and_keep_the_session() {
    let mut s = Sandbox::new();
    let key = secret(&s.create_key("a", &[]));
    let config = s.config_dir("m");
    s.machine(&config, &["login", "--auth-key", &key]).success();
    let token = saved_session(&config);
    s.server.kill9();

    let dir = [("AUTHKEYS_CONFIG_DIR", config.to_str().expect("UTF-8"))];
    for command in ["whoami", "logout"] {
        let output = s.run(&[command], &dir);
        output.error_containing("cannot reach");
        output.assert_silent_about(&token);
    }
    assert_eq!(
        saved_session(&config),
        token,
        "a failed logout keeps the session to retry"
    );
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
    open_db(&s.server.db_path())
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO apps (id, name, created_at) SELECT printf('bulk-%04d', i), 'Bulk', 0 FROM n",
            [BULK as i64],
        )
        .unwrap();
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
