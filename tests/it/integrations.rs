//! The integrations of issue 6, each against the real thing: forward auth through real nginx
//! and Caddy (Debian's, started here on a free loopback port with the configs in `examples/`),
//! the OpenAPI document as served, Prometheus counters moving with real traffic, the three ways
//! a test suite starts authkeys (library, `:memory:` binary, seeded start), and `authkeys
//! backup` of a database that a running server keeps writing.

use crate::reliability::raw::Conn;
use crate::support::store::PgDatabase;
use crate::support::{
    ADMIN_TOKEN, Api, BIN, Options, Reaped, TestServer, eventually, sample, scrape, session_of,
    wait_until_refused,
};
use authkeys::TokenKind;
use authkeys::ops;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Forward auth through nginx and Caddy

/// An upstream that answers every request with the identity headers it received, as JSON.
struct EchoUpstream {
    server: Arc<authkeys_http::Server>,
    address: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    fn start() -> EchoUpstream {
        let server =
            Arc::new(authkeys_http::Server::http("127.0.0.1:0").expect("upstream listens"));
        let address = server.server_addr().to_ip().expect("an IP address");
        let serving = Arc::clone(&server);
        let thread = thread::spawn(move || {
            while let Ok(request) = serving.recv() {
                let header = |name: &'static str| {
                    request
                        .headers()
                        .iter()
                        .filter(|header| header.field.equiv(name))
                        .map(|header| header.value.as_str().to_string())
                        .collect::<Vec<_>>()
                };
                let body = json!({
                    "method": request.method().as_str(),
                    "url": request.url(),
                    "app": header("X-Authkeys-App"),
                    "machine": header("X-Authkeys-Machine"),
                    "key_id": header("X-Authkeys-Key-Id"),
                    "machine_name": header("X-Authkeys-Machine-Name"),
                    "tags": header("X-Authkeys-Tags"),
                    "authorization": header("Authorization"),
                });
                let _ = request.respond(authkeys_http::Response::from_string(body.to_string()));
            }
        });
        EchoUpstream {
            server,
            address,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the upstream thread");
        }
    }
}

/// The reverse proxies whose example configs the tests run.
#[derive(Clone, Copy, Debug)]
enum ProxyKind {
    Nginx,
    /// `examples/nginx-cluster.conf`: nginx in front of three nodes.
    NginxCluster,
    Caddy,
}

/// A real reverse proxy running its example config from `examples/` in a temp dir, as the
/// current user, on a free loopback port, in front of authkeys and an upstream.
struct Proxy {
    url: String,
    dir: tempfile::TempDir,
    _child: Reaped,
}

impl Proxy {
    /// `authkeys`: the URL of each authkeys node the example names (one, or three).
    fn start(kind: ProxyKind, authkeys: &[&str], upstream: SocketAddr) -> Proxy {
        let authkeys: Vec<&str> = authkeys
            .iter()
            .map(|url| url.trim_start_matches("http://"))
            .collect();
        // A port freed just now could be taken again before the proxy binds it: retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("finding a free port")
                .port();
            let dir = tempfile::tempdir().expect("a temp dir for the proxy");
            let mut command = match kind {
                ProxyKind::Nginx => nginx_command(
                    dir.path(),
                    "examples/nginx.conf",
                    &[("server 127.0.0.1:7373;", authkeys[0])],
                    upstream,
                    port,
                ),
                ProxyKind::NginxCluster => nginx_command(
                    dir.path(),
                    "examples/nginx-cluster.conf",
                    &[
                        ("server 127.0.0.1:7371;", authkeys[0]),
                        ("server 127.0.0.1:7372;", authkeys[1]),
                        ("server 127.0.0.1:7373;", authkeys[2]),
                    ],
                    upstream,
                    port,
                ),
                ProxyKind::Caddy => caddy_command(dir.path(), authkeys[0], upstream, port),
            };
            let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("a log");
            let mut child = Reaped::new(
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .unwrap_or_else(|err| {
                        panic!("running {kind:?} (scripts/test installs it): {err}")
                    }),
            );
            let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
            // `Some(None)`: listening; `Some(Some(status))`: exited first.
            let exited = eventually(
                &format!("{kind:?} to listen on {address}"),
                Duration::from_secs(10),
                || {
                    if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                        return Some(None);
                    }
                    let status = child.child_mut().try_wait().expect("waiting for the proxy");
                    status.map(Some)
                },
            );
            let Some(status) = exited else {
                return Proxy {
                    url: format!("http://{address}"),
                    dir,
                    _child: child,
                };
            };
            let log = read_logs(dir.path());
            assert!(
                log.to_lowercase().contains("address already in use"),
                "{kind:?} exited with {status}\n{log}"
            );
        }
        panic!("{kind:?} found no free port in five tries");
    }

    fn log(&self) -> String {
        read_logs(self.dir.path())
    }
}

fn read_logs(dir: &Path) -> String {
    ["proxy.log", "stderr.log"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(dir.join(name)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An nginx example with its addresses replaced (each authkeys node's placeholder `server`
/// line by the node's address), inside a minimal main config whose pid, log and temp paths
/// are all in `dir`.
fn nginx_command(
    dir: &Path,
    example: &str,
    nodes: &[(&str, &str)],
    upstream: SocketAddr,
    port: u16,
) -> Command {
    let mut replacements: Vec<(&str, String)> = nodes
        .iter()
        .map(|(placeholder, address)| (*placeholder, format!("server {address};")))
        .collect();
    replacements.push(("server 127.0.0.1:8080;", format!("server {upstream};")));
    replacements.push((
        "listen 127.0.0.1:8000;",
        format!("listen 127.0.0.1:{port};"),
    ));
    let site = example_with(example, &replacements);
    std::fs::write(dir.join("site.conf"), site).expect("writing site.conf");
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/proxy.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("writing nginx.conf");
    let mut command = Command::new(installed(&["/usr/sbin/nginx", "/usr/bin/nginx"]));
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("proxy.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    command
}

/// `examples/Caddyfile` with its addresses replaced; Caddy's own files stay in `dir`.
fn caddy_command(dir: &Path, authkeys: &str, upstream: SocketAddr, port: u16) -> Command {
    let site = example_with(
        "examples/Caddyfile",
        &[
            (
                "forward_auth 127.0.0.1:7373 {",
                format!("forward_auth {authkeys} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:8080",
                format!("reverse_proxy {upstream}"),
            ),
            (
                "http://127.0.0.1:8000 {",
                format!("http://127.0.0.1:{port} {{"),
            ),
        ],
    );
    let config = dir.join("Caddyfile");
    std::fs::write(&config, site).expect("writing the Caddyfile");
    let mut command = Command::new(installed(&["/usr/bin/caddy", "/usr/local/bin/caddy"]));
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir);
    command
}

fn installed(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("none of {candidates:?} exists: run scripts/test, which installs it")
        })
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// An example config with each placeholder (which must occur exactly once) replaced.
fn example_with(example: &str, replacements: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo_path(example))
        .unwrap_or_else(|err| panic!("reading {example}: {err}"));
    for (from, to) in replacements {
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {example}");
        text = text.replace(from, to);
    }
    text
}

/// A request through nginx: (status, the upstream's echo when it was reached).
fn through(
    proxy: &Proxy,
    method: &str,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}/some/service?page=2", proxy.url));
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let body = if method == "POST" {
        b"{\"x\":1}".to_vec()
    } else {
        Vec::new()
    };
    let request = request.body(body).expect("a request");
    let mut response = agent
        .run(request)
        .unwrap_or_else(|err| panic!("{method} through the proxy: {err}\n{}", proxy.log()));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn nginx_forward_auth_passes_the_identity_and_refuses_everyone_else() {
    check_forward_auth(ProxyKind::Nginx);
}

#[test]
fn caddy_forward_auth_passes_the_identity_and_refuses_everyone_else() {
    check_forward_auth(ProxyKind::Caddy);
}

#[test]
fn behind_nginx_forwarded_clients_are_throttled_apart_and_forged_headers_are_ignored() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--login-failures-burst", "2")
            .arg("--login-failures-per-minute", "1")
            .arg("--trusted-proxy", "127.0.0.1/32"),
    );
    let upstream = EchoUpstream::start();
    let proxy = Proxy::start(ProxyKind::Nginx, &[&server.url], upstream.address);
    let client = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    let failed_login = |conn: &mut Conn, target: &str, forged: &str| {
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", forged),
        ];
        conn.send("POST", target, &headers, br#"{"auth_key": "nope"}"#)
    };
    let through_nginx = "/authkeys/v1/auth/login";

    // One client spends its failures, naming another client in a forged header: nginx appends
    // the address it really came from, and that is the one authkeys counts.
    let mut first = Conn::open_from(&proxy.url, client(2));
    for attempt in 0..3 {
        let reply = failed_login(&mut first, through_nginx, "127.0.0.3");
        let expected = if attempt < 2 { 401 } else { 429 };
        assert_eq!(
            reply.status,
            expected,
            "attempt {attempt}: {reply:?}\n{}",
            proxy.log()
        );
    }
    // The client it named, and any other, still gets its own failures.
    let mut second = Conn::open_from(&proxy.url, client(3));
    let reply = failed_login(&mut second, through_nginx, "");
    assert_eq!(reply.status, 401, "another client behind nginx: {reply:?}");

    // From a peer that is not a trusted proxy, the header means nothing.
    let mut direct = Conn::open_from(&server.url, client(4));
    for attempt in 0..3 {
        let forged = format!("10.0.0.{attempt}");
        let reply = failed_login(&mut direct, "/v1/auth/login", &forged);
        let expected = if attempt < 2 { 401 } else { 429 };
        assert_eq!(
            reply.status, expected,
            "direct attempt {attempt}: {reply:?}"
        );
    }
    // The example keeps the scrape endpoint from the proxy's clients.
    let reply = second.send("GET", "/authkeys/metrics", &[], b"");
    assert_eq!(reply.status, 403, "{reply:?}");
}

/// README's three-node example: three real nodes on one PostgreSQL database behind
/// `examples/nginx-cluster.conf`. Logins through nginx land on every node; once a revocation
/// through nginx has returned, each node refuses the key's sessions when asked directly,
/// although each had just accepted them (and cached the answer).
#[test]
fn three_nodes_behind_nginx_share_logins_and_a_revocation_holds_on_every_node() {
    let database = PgDatabase::create();
    let nodes: Vec<TestServer> = (0..3)
        .map(|_| {
            TestServer::start_with(
                Options {
                    database: Some(database.clone()),
                    ..Options::default()
                }
                .arg("--trusted-proxy", "127.0.0.1/32"),
            )
        })
        .collect();
    let urls: Vec<&str> = nodes.iter().map(|node| node.url.as_str()).collect();
    let upstream = EchoUpstream::start();
    let proxy = Proxy::start(ProxyKind::NginxCluster, &urls, upstream.address);
    let through_nginx = |bearer: Option<&str>| {
        let mut api = nodes[0].client(bearer);
        api.url = format!("{}/authkeys", proxy.url);
        api
    };
    let admin = through_nginx(Some(ADMIN_TOKEN));
    admin.post("/v1/apps", &json!({"id": "web"})).expect(201);
    let key = admin
        .post("/v1/apps/web/keys", &json!({"reusable": true}))
        .expect(201);
    let sessions: Vec<String> = (0..6)
        .map(|_| {
            session_of(
                &through_nginx(None)
                    .post("/v1/auth/login", &json!({"auth_key": key["key"]}))
                    .expect(201),
            )
        })
        .collect();
    for node in &nodes {
        let logins = sample(
            &scrape(&node.client(None)),
            "authkeys_logins_total{outcome=\"success\"}",
        );
        assert!(logins >= 1.0, "nginx sent no login to {}", node.url);
        for session in &sessions {
            node.client(Some(session))
                .get("/v1/auth/whoami")
                .expect(200);
        }
    }
    for session in &sessions {
        assert_eq!(through(&proxy, "GET", Some(session), &[]).0, 200);
    }

    admin
        .delete(&format!(
            "/v1/apps/web/keys/{}",
            key["id"].as_str().unwrap()
        ))
        .expect(204);
    for node in &nodes {
        for session in &sessions {
            node.client(Some(session))
                .get("/v1/auth/whoami")
                .expect_error(401, "invalid_credentials");
        }
    }
    for session in &sessions {
        assert_eq!(through(&proxy, "GET", Some(session), &[]).0, 401);
    }
}

fn check_forward_auth(kind: ProxyKind) {
    let server = TestServer::start_with(Options::default().arg("--ephemeral-ttl", "1"));
    let upstream = EchoUpstream::start();
    let proxy = Proxy::start(kind, &[&server.url], upstream.address);
    server.create_app("web");

    let key = server.create_key(
        "web",
        json!({"reusable": true, "tags": ["tag:web", "tag:ci"]}),
    );
    let login = server
        .anonymous()
        .post(
            "/v1/auth/login",
            &json!({"auth_key": key["key"], "machine": "runner ✓ 7"}),
        )
        .expect(201);
    let session = login["session_token"].as_str().unwrap();
    let machine = login["machine"]["id"].as_str().unwrap();

    for method in ["GET", "POST"] {
        let (status, echo) = through(&proxy, method, Some(session), &[]);
        assert_eq!(
            status,
            200,
            "{method} with a valid session\n{}",
            proxy.log()
        );
        assert_eq!(echo["method"], method);
        assert_eq!(echo["url"], "/some/service?page=2");
        assert_eq!(echo["app"], json!(["web"]));
        assert_eq!(echo["machine"], json!([machine]));
        assert_eq!(echo["key_id"], json!([key["id"]]));
        assert_eq!(echo["machine_name"], json!(["runner %E2%9C%93 7"]));
        assert_eq!(echo["tags"], json!(["tag:ci,tag:web"]));
        assert_eq!(
            echo["authorization"],
            json!([]),
            "the session token stays with authkeys"
        );
    }

    // A client cannot claim an identity: its own headers are overwritten or refused.
    let spoof = [
        ("X-Authkeys-App", "admin"),
        ("X-Authkeys-Machine", "mch_spoofed"),
        ("X-Authkeys-Machine-Name", "root"),
        ("X-Authkeys-Tags", "tag:admin"),
    ];
    let (status, echo) = through(&proxy, "GET", Some(session), &spoof);
    assert_eq!(
        (status, &echo["app"], &echo["machine"]),
        (200, &json!(["web"]), &json!([machine]))
    );
    assert_eq!(echo["tags"], json!(["tag:ci,tag:web"]));
    assert_eq!(echo["machine_name"], json!(["runner %E2%9C%93 7"]));
    assert_eq!(through(&proxy, "GET", None, &spoof).0, 401);
    // A machine without tags or a name: the forged values still never arrive (the proxy
    // sends the empty values authkeys answered, or no header at all).
    let plain = server.create_key("web", json!({}));
    let plain_session = session_of(&server.login(plain["key"].as_str().unwrap()));
    let (status, echo) = through(&proxy, "GET", Some(&plain_session), &spoof);
    assert_eq!(status, 200, "{}", proxy.log());
    for field in ["tags", "machine_name"] {
        let values = echo[field].as_array().unwrap();
        assert!(
            values.iter().all(|value| value == ""),
            "{kind:?}: the upstream saw {field} {values:?}"
        );
    }

    // No session, a malformed one, someone else's admin token: 401, upstream never reached.
    assert_eq!(through(&proxy, "GET", None, &[]).0, 401);
    assert_eq!(through(&proxy, "GET", Some("ens_not-a-token"), &[]).0, 401);
    assert_eq!(through(&proxy, "GET", Some(ADMIN_TOKEN), &[]).0, 401);

    // Revocation takes effect at once.
    server
        .admin()
        .delete(&format!(
            "/v1/apps/web/keys/{}",
            key["id"].as_str().unwrap()
        ))
        .expect(204);
    assert_eq!(through(&proxy, "GET", Some(session), &[]).0, 401);

    // An ephemeral machine is refused once its TTL (1 s here) is up, before any sweep.
    let ephemeral = server.create_key("web", json!({"ephemeral": true}));
    let login = server.login(ephemeral["key"].as_str().unwrap());
    let session = login["session_token"].as_str().unwrap();
    assert_eq!(through(&proxy, "GET", Some(session), &[]).0, 200);
    wait_past(&login["machine"]["expires_at"]);
    assert_eq!(through(&proxy, "GET", Some(session), &[]).0, 401);
}

/// Sleeps until just after an RFC 3339 time from the API (at most a couple of seconds here).
fn wait_past(time: &Value) {
    let at =
        chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a time")).expect("RFC 3339");
    let left = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    assert!(left < 5_000, "{time} is too far away for a test");
    if left >= 0 {
        thread::sleep(Duration::from_millis(left as u64 + 50));
    }
}

#[test]
fn forward_auth_answers_headers_and_an_empty_body() {
    let server = TestServer::start();
    server.create_app("ci");
    let key = server.create_key("ci", json!({}));
    let login = server.login(key["key"].as_str().unwrap());
    let session = login["session_token"].as_str().unwrap();

    let reply = server
        .client(Some(session))
        .get("/v1/forward-auth?rd=/anything");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "");
    assert_eq!(reply.header("X-Authkeys-App"), Some("ci"));
    assert_eq!(
        reply.header("X-Authkeys-Machine"),
        login["machine"]["id"].as_str()
    );
    assert_eq!(reply.header("X-Authkeys-Key-Id"), key["id"].as_str());
    assert_eq!(reply.header("X-Authkeys-Machine-Name"), Some(""));
    assert_eq!(reply.header("X-Authkeys-Tags"), Some(""));

    server
        .anonymous()
        .get("/v1/forward-auth")
        .expect_error(401, "missing_credentials");
    server
        .admin()
        .get("/v1/forward-auth")
        .expect_error(401, "invalid_credentials");
    let reply = server
        .client(Some(session))
        .post_raw("/v1/forward-auth", None, b"");
    assert_eq!((reply.status, reply.header("Allow")), (405, Some("GET")));
    server
        .client(Some(session))
        .post("/v1/auth/logout", &json!({}))
        .expect(204);
    server
        .client(Some(session))
        .get("/v1/forward-auth")
        .expect_error(401, "invalid_credentials");
}

// ---------------------------------------------------------------------------------------
// OpenAPI and Prometheus

/// JSON Schema (and so the OpenAPI document, and schemathesis) counts `1e3` and `1000.0` as
/// integers: a whole number of seconds is accepted in any spelling, a fraction is not.
#[test]
fn expires_in_is_any_spelling_of_a_whole_number() {
    let server = TestServer::start();
    server.create_app("ci");
    for spelling in ["1000", "1000.0", "1e3"] {
        let body = format!(r#"{{"expires_in": {spelling}}}"#);
        let key = server
            .admin()
            .post_raw(
                "/v1/apps/ci/keys",
                Some("application/json"),
                body.as_bytes(),
            )
            .expect(201);
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(key[field].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(at("expires_at") - at("created_at"), 1_000_000, "{spelling}");
    }
    let body = br#"{"expires_in": 1000.5}"#;
    server
        .admin()
        .post_raw("/v1/apps/ci/keys", Some("application/json"), body)
        .expect_error(422, "invalid_field");
}

#[test]
fn openapi_document_is_served_as_json() {
    let server = TestServer::start();
    let reply = server.anonymous().get("/openapi.json");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    let served = reply.expect(200);
    let file: Value = serde_json::from_str(include_str!("../../src/http/openapi.json"))
        .expect("src/http/openapi.json is JSON");
    assert_eq!(served, file);
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn metrics_move_with_real_traffic() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--ephemeral-ttl", "1")
            .arg("--sweep-interval", "1"),
    );
    let anonymous = server.anonymous();
    let before = scrape(&anonymous);
    server.create_app("ci");
    let key = server.create_key("ci", json!({"reusable": true, "ephemeral": true}));
    let secret = key["key"].as_str().unwrap();
    let login = server.login(secret);
    let session = login["session_token"].as_str().unwrap();
    let mid = scrape(&anonymous);
    assert_eq!(
        sample(&mid, "authkeys_active_machines") - sample(&before, "authkeys_active_machines"),
        1.0
    );

    anonymous
        .post("/v1/auth/login", &json!({"auth_key": "ena_wrong"}))
        .expect_error(401, "invalid_auth_key");
    anonymous
        .post("/v1/keys/verify", &json!({"key": secret}))
        .expect(200);
    anonymous
        .post("/v1/keys/verify", &json!({"key": "ena_x"}))
        .expect(200);
    server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect(200);
    server
        .admin()
        .get("/v1/apps/ci/keys/key_nope")
        .expect_error(404, "key_not_found");
    server
        .admin()
        .delete("/v1/apps/ci/keys/key_nope")
        .expect_error(404, "key_not_found");
    let victim = server.create_key("ci", json!({}));
    server
        .admin()
        .delete(&format!(
            "/v1/apps/ci/keys/{}",
            victim["id"].as_str().unwrap()
        ))
        .expect(204);
    anonymous
        .get("/no/such/path/12345")
        .expect_error(404, "not_found");

    let after = scrape(&anonymous);
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let checks = [
        (r#"authkeys_logins_total{outcome="success"}"#, 1.0),
        (r#"authkeys_logins_total{outcome="invalid_auth_key"}"#, 1.0),
        (r#"authkeys_verifies_total{outcome="valid"}"#, 1.0),
        (r#"authkeys_verifies_total{outcome="malformed"}"#, 1.0),
        (r#"authkeys_revocations_total{outcome="revoked"}"#, 1.0),
        (
            r#"authkeys_revocations_total{outcome="key_not_found"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="/v1/auth/login",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="/v1/auth/login",method="POST",status="401"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="/v1/auth/whoami",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="/v1/apps/{app}/keys/{key}",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="unmatched",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"authkeys_http_requests_total{route="/metrics",method="GET",status="200"}"#,
            2.0,
        ),
        (
            r#"authkeys_http_request_duration_seconds_count{route="/v1/auth/login",method="POST",status="201"}"#,
            1.0,
        ),
    ];
    for (series, delta) in checks {
        assert_eq!(moved(series), delta, "{series}\n{after}");
    }
    assert!(
        !after.contains("key_nope"),
        "a raw path became a label:\n{after}"
    );
    assert!(
        !after.contains("/no/such/path"),
        "a raw path became a label:\n{after}"
    );

    // The ephemeral machine expires after 1 s; a sweep (every 1 s) then deletes it.
    wait_past(&login["machine"]["expires_at"]);
    let now = eventually(
        "a sweep to remove the expired machine",
        Duration::from_secs(10),
        || {
            let now = scrape(&anonymous);
            (sample(&now, "authkeys_swept_machines_total") >= 1.0).then_some(now)
        },
    );
    assert!(
        sample(&now, r#"authkeys_sweeps_total{outcome="ok"}"#) >= 1.0,
        "{now}"
    );
    assert_eq!(sample(&now, "authkeys_active_machines"), 0.0, "{now}");
}

// ---------------------------------------------------------------------------------------
// Starting authkeys inside a test suite

#[test]
fn library_fixture_starts_in_one_call_and_stops_on_drop() {
    let server = authkeys::Server::start_throwaway().expect("starting authkeys in-process");
    let url = server.url().to_string();
    let token = server
        .admin_token()
        .expect("a generated admin token")
        .to_string();
    let api = |bearer: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(format!("{url}/v1/apps"))
            .header("Authorization", format!("Bearer {bearer}"))
            .send_json(json!({"id": "fixture"}))
            .expect("talking to the in-process server")
            .status()
            .as_u16()
    };
    assert_eq!(api(&token), 201);
    assert_eq!(api("wrong-token"), 401);
    let address: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    drop(server);
    wait_until_refused(address);
}

#[test]
fn memory_binary_prints_its_url_and_admin_token_in_the_ready_line() {
    let server = TestServer::start_with(Options {
        memory: true,
        generated_admin_token: true,
        ..Options::default()
    });
    let token = server.ready_line["admin_token"]
        .as_str()
        .expect("admin_token in the ready line");
    assert!(token.starts_with("enadm_"));
    assert!(
        server.ready_line["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    server.create_app("scratch");
    assert!(
        !server.dir.path().join("authkeys.db").exists(),
        "nothing on disk in the test dir"
    );
}

fn write_seed(dir: &Path, seed: &Value) -> PathBuf {
    let path = dir.join("seed.json");
    std::fs::write(&path, seed.to_string()).expect("writing the seed");
    path
}

#[test]
fn seeded_start_logs_in_without_admin_calls_and_is_idempotent() {
    let reusable = ops::generate_token(TokenKind::AuthKey);
    let single = ops::generate_token(TokenKind::AuthKey);
    let seed = json!({"apps": [{"id": "ci", "name": "CI", "keys": [
        {"key": reusable.expose(), "reusable": true, "description": "fixture"},
        {"key": single.expose()},
    ]}]});
    let seed_dir = tempfile::tempdir().expect("a temp dir");
    let path = write_seed(seed_dir.path(), &seed);
    let options = Options::default().arg("--seed", path.to_str().unwrap());
    let mut server = TestServer::start_with(options);

    let login = server.login(reusable.expose());
    assert_eq!(login["machine"]["app"], "ci");
    let single_login = server.login(single.expose());
    assert_eq!(single_login["machine"]["app"], "ci");
    let keys = server.admin().get("/v1/apps/ci/keys").expect(200)["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        !server.log().contains(reusable.expose()),
        "a seeded key was logged"
    );
    assert!(
        !server.log().contains(single.expose()),
        "a seeded key was logged"
    );

    // Revoke one seeded key, then restart with the same seed: nothing is duplicated, the
    // revocation holds, the used single-use key stays used, and sessions survive.
    let reusable_id = login["machine"]["key_id"].as_str().unwrap();
    server
        .admin()
        .delete(&format!("/v1/apps/ci/keys/{reusable_id}"))
        .expect(204);
    server.terminate();
    server.restart();
    let keys = server
        .admin()
        .get("/v1/apps/ci/keys?include_revoked=true")
        .expect(200);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": reusable.expose()}))
        .expect_error(401, "auth_key_revoked");
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": single.expose()}))
        .expect_error(401, "auth_key_used");
    let session = single_login["session_token"].as_str().unwrap();
    server
        .client(Some(session))
        .get("/v1/auth/whoami")
        .expect(200);
    let logs = server.all_logs();
    assert!(logs.contains("created 1 app(s) and 2 key(s)"), "{logs}");
    assert!(logs.contains("created 0 app(s) and 0 key(s)"), "{logs}");
}

/// Runs `authkeys serve --seed SEED` on `db` to its end (a bad seed stops the start).
fn serve_seeded(db: &Path, seed: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--seed")
        .arg(seed)
        .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("running authkeys")
}

#[test]
fn a_seed_with_a_repeated_key_at_any_depth_is_refused() {
    let key = ops::generate_token(TokenKind::AuthKey);
    let key = key.expose();
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("authkeys.db");
    let path = dir.path().join("seed.json");
    for text in [
        format!(r#"{{"apps": [{{"id": "ci", "keys": [{{"key": "{key}"}}]}}], "apps": []}}"#),
        format!(r#"{{"apps": [{{"id": "ci", "id": "cd", "keys": [{{"key": "{key}"}}]}}]}}"#),
        format!(
            r#"{{"apps": [{{"id": "ci", "keys": [{{"key": "{key}", "reusable": false, "reusable": true}}]}}]}}"#
        ),
    ] {
        std::fs::write(&path, &text).expect("writing the seed");
        let output = serve_seeded(&db, &path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text} was accepted\n{stderr}");
        assert!(output.stdout.is_empty(), "a ready line for {text}");
        assert!(
            stderr.contains("seed file") && stderr.contains("is repeated"),
            "{text}\n{stderr}"
        );
        assert!(!stderr.contains(key), "the key was echoed:\n{stderr}");
    }
    // Without the repetition the same seed is good (and so the refusals above were for it).
    let fixed =
        format!(r#"{{"apps": [{{"id": "ci", "keys": [{{"key": "{key}", "reusable": true}}]}}]}}"#);
    std::fs::write(&path, fixed).expect("writing the seed");
    let options = Options::default().arg("--seed", path.to_str().unwrap());
    let server = TestServer::start_with(options);
    assert_eq!(server.login(key)["machine"]["app"], "ci");
}

#[test]
fn a_bad_seed_stops_the_start_and_changes_nothing() {
    let good = ops::generate_token(TokenKind::AuthKey);
    let mut bad = good.expose().to_string();
    // Break the checksum: the last character changes.
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("authkeys.db");
    let run = |seed: &Value| serve_seeded(&db, &write_seed(dir.path(), seed));
    let cases = [
        // A good first app and a bad key in the second: the good one is not created either.
        json!({"apps": [{"id": "ok", "keys": [{"key": good.expose()}]},
                        {"id": "ci", "keys": [{"key": bad}]}]}),
        json!({"apps": [{"id": "Bad_Id", "keys": []}]}),
        json!({"apps": [{"id": "ci", "keys": [{"key": good.expose(), "reuseable": true}]}]}),
        json!({"apps": [{"id": "ci", "keys": [{"key": good.expose()}]},
                        {"id": "cd", "keys": [{"key": good.expose()}]}]}),
    ];
    for seed in &cases {
        let output = run(seed);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{seed} was accepted\n{stderr}");
        assert!(
            output.stdout.is_empty(),
            "a ready line for a bad seed: {seed}"
        );
        assert!(stderr.contains("seed"), "{stderr}");
        assert!(
            !stderr.contains(&bad) && !stderr.contains(good.expose()),
            "a key was echoed:\n{stderr}"
        );
    }
    // Nothing of any of them was stored.
    let server = server_on_copy_of(&db);
    assert_eq!(
        server.admin().get("/v1/apps").expect(200),
        json!({"apps": [], "next_cursor": null})
    );
}

// ---------------------------------------------------------------------------------------
// Backups

/// A server started on a copy of `db` (docs/operations.md's restore: put the file in place, start).
fn server_on_copy_of(db: &Path) -> TestServer {
    let mut server = TestServer::start();
    server.kill9();
    // The harness's own fresh database goes, WAL included, so nothing of it is replayed.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.db_path().display()));
    }
    std::fs::copy(db, server.db_path()).expect("restoring the copy");
    server.restart();
    server
}

fn run_backup(db: &Path, out: &Path) {
    let output = Command::new(BIN)
        .args(["backup", "--db"])
        .arg(db)
        .arg(out)
        .output()
        .expect("running authkeys backup");
    assert!(
        output.status.success(),
        "authkeys backup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One round of the writer thread: a key created, used, and (every other round) revoked.
struct Churned {
    key: String,
    session: String,
}

#[test]
fn backup_of_a_busy_server_restores_every_key_and_revocation() {
    let server = TestServer::start();
    server.create_app("ci");
    // The state before the backup: valid and revoked keys, each with a logged-in machine.
    let mut before = Vec::new();
    for n in 0..6 {
        let key = server.create_key("ci", json!({"reusable": true}));
        let login = server.login(key["key"].as_str().unwrap());
        if n % 2 == 1 {
            server
                .admin()
                .delete(&format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap()))
                .expect(204);
        }
        before.push((key, login, n % 2 == 1));
    }

    // Keep logging in and revoking while backups run.
    let stop = Arc::new(AtomicBool::new(false));
    let (started, writing) = std::sync::mpsc::channel();
    let writer = {
        let stop = Arc::clone(&stop);
        let admin = server.admin();
        let anonymous = server.anonymous();
        thread::spawn(move || {
            let mut churned = Vec::new();
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) && round < 2_000 {
                let key = admin
                    .post("/v1/apps/ci/keys", &json!({"reusable": true}))
                    .expect(201);
                let secret = key["key"].as_str().unwrap().to_string();
                let login = anonymous
                    .post("/v1/auth/login", &json!({"auth_key": secret}))
                    .expect(201);
                if round % 2 == 0 {
                    admin
                        .delete(&format!("/v1/apps/ci/keys/{}", key["id"].as_str().unwrap()))
                        .expect(204);
                }
                churned.push(Churned {
                    key: secret,
                    session: login["session_token"].as_str().unwrap().to_string(),
                });
                round += 1;
                let _ = started.send(());
            }
            churned
        })
    };
    writing
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer thread got going");
    let out_dir = tempfile::tempdir().expect("a temp dir");
    let copies: Vec<PathBuf> = (0..4)
        .map(|n| {
            let out = out_dir.path().join(format!("copy-{n}.db"));
            run_backup(&server.db_path(), &out);
            out
        })
        .collect();
    stop.store(true, Ordering::SeqCst);
    let churned = writer.join().expect("the writer thread");
    assert!(
        churned.len() > 1,
        "the server was not written to during the backups"
    );

    for copy in &copies {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", copy.display());
        let restored = server_on_copy_of(copy);
        let anonymous = restored.anonymous();
        for (key, login, revoked) in &before {
            let verdict = anonymous
                .post("/v1/keys/verify", &json!({"key": key["key"]}))
                .expect(200);
            let whoami = restored
                .client(login["session_token"].as_str())
                .get("/v1/auth/whoami");
            if *revoked {
                assert_eq!(verdict, json!({"valid": false, "code": "revoked"}));
                whoami.expect_error(401, "invalid_credentials");
            } else {
                assert_eq!(verdict["valid"], true, "{verdict}");
                whoami.expect(200);
            }
        }
        // Rounds caught in flight appear as a committed prefix: never a revoked key whose
        // machine still authenticates, never a machine without its key.
        for round in &churned {
            let verdict = anonymous
                .post("/v1/keys/verify", &json!({"key": round.key}))
                .expect(200);
            let whoami = restored.client(Some(&round.session)).get("/v1/auth/whoami");
            match (verdict["valid"].as_bool(), verdict["code"].as_str()) {
                (Some(true), _) => assert!(matches!(whoami.status, 200 | 401)),
                (Some(false), Some("revoked" | "not_found")) => {
                    whoami.expect_error(401, "invalid_credentials");
                }
                _ => panic!("unexpected verdict {verdict}"),
            }
        }
    }
}

#[test]
fn backup_refuses_what_it_cannot_copy() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("out.db");
    let fails = |db: &str| {
        let output = Command::new(BIN)
            .args(["backup", "--db", db])
            .arg(&out)
            .output()
            .expect("running authkeys backup");
        assert!(!output.status.success(), "backup of {db} succeeded");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let missing = dir.path().join("missing.db");
    assert!(fails(missing.to_str().unwrap()).contains("missing.db"));
    assert!(
        !missing.exists(),
        "backup created the database it was asked to copy"
    );
    let not_db = dir.path().join("notes.txt");
    std::fs::write(&not_db, "hello").unwrap();
    fails(not_db.to_str().unwrap());
    assert!(fails(":memory:").contains(":memory:"));
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------
// Operations

#[test]
fn rotating_the_generated_admin_token_retires_the_old_one() {
    let mut server = TestServer::start_with(Options {
        generated_admin_token: true,
        ..Options::default()
    });
    let old = server.admin_token.clone();
    server.create_app("kept");
    server.terminate();
    let output = Command::new(BIN)
        .args(["rotate-admin-token", "--db"])
        .arg(server.db_path())
        .env_remove("AUTHKEYS_ADMIN_TOKEN")
        .output()
        .expect("running authkeys rotate-admin-token");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(".admin-token"), "{stdout}");
    server.restart();
    assert_ne!(server.admin_token, old, "the token file was not replaced");
    assert!(
        !stdout.contains(&server.admin_token),
        "the new token was printed"
    );
    server
        .client(Some(&old))
        .get("/v1/apps")
        .expect_error(401, "invalid_credentials");
    let apps = server.admin().get("/v1/apps").expect(200);
    assert_eq!(apps["apps"][0]["id"], "kept");
    use std::os::unix::fs::PermissionsExt;
    let file = crate::support::admin_token_path(&server.db_path());
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Scrapes until `series` appears (the machine count is known once the sweeper thread has
/// counted, just after start); returns its value.
fn scrape_until_present(api: &Api, series: &str) -> f64 {
    eventually(
        &format!("{series} to appear"),
        Duration::from_secs(10),
        || {
            let text = scrape(api);
            text.lines()
                .any(|line| line.starts_with(&format!("{series} ")))
                .then(|| sample(&text, series))
        },
    )
}

/// `authkeys_active_machines` is kept by the writes that add and remove machines, not counted
/// when scraped: machines written behind the server's back do not move it (a scrape runs no
/// query), and the next start counts them (from the per-key counters, off the start-up path).
#[test]
fn the_machine_gauge_is_kept_by_writes_and_never_counted_at_scrape() {
    const GAUGE: &str = "authkeys_active_machines";
    let mut server = TestServer::start();
    let anonymous = server.anonymous();
    assert_eq!(scrape_until_present(&anonymous, GAUGE), 0.0);
    let gauge = || sample(&scrape(&anonymous), GAUGE);
    server.create_app("ci");
    server.create_app("cd");
    let first = server.create_key("ci", json!({"reusable": true}));
    let second = server.create_key("ci", json!({"reusable": true}));
    let elsewhere = server.create_key("cd", json!({"reusable": true}));
    let logins: Vec<Value> = (0..3)
        .map(|_| server.login(first["key"].as_str().unwrap()))
        .collect();
    server.login(second["key"].as_str().unwrap());
    server.login(elsewhere["key"].as_str().unwrap());
    assert_eq!(gauge(), 5.0);
    server
        .client(Some(&session_of(&logins[0])))
        .post("/v1/auth/logout", &json!({}))
        .expect(204);
    assert_eq!(gauge(), 4.0, "a logout");
    let machine = logins[1]["machine"]["id"].as_str().unwrap();
    let admin = server.admin();
    admin
        .delete(&format!("/v1/apps/ci/machines/{machine}"))
        .expect(204);
    assert_eq!(gauge(), 3.0, "an admin logout");
    admin
        .delete(&format!(
            "/v1/apps/ci/keys/{}",
            first["id"].as_str().unwrap()
        ))
        .expect(204);
    assert_eq!(gauge(), 2.0, "a revocation");
    admin.delete("/v1/apps/cd").expect(204);
    assert_eq!(gauge(), 1.0, "an app deletion");

    // Five machines written straight into the database: a scrape that counted rows would see
    // them. Then the counters moved as the server's writes move them (the key's, and on
    // PostgreSQL the database's counter row): after a restart the gauge has them.
    let second_id = second["id"].as_str().unwrap();
    let db = server.db();
    db.insert_machines(second_id, "behind", 5, true);
    assert_eq!(gauge(), 1.0, "a scrape counts nothing");
    db.count_machines_written(second_id, 5);
    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    assert_eq!(scrape_until_present(&server.anonymous(), GAUGE), 6.0);
}

/// Every successful login is counted under its key, so one key logging in machines by the
/// thousand shows; a revoked key's series goes, and so do a deleted app's keys'.
#[test]
fn logins_are_counted_per_key_until_the_key_is_revoked() {
    let server = TestServer::start();
    server.create_app("ci");
    server.create_app("cd");
    let busy = server.create_key("ci", json!({"reusable": true}));
    let once = server.create_key("ci", json!({}));
    let other = server.create_key("cd", json!({"reusable": true}));
    let log_in = |key: &Value, times: usize| {
        for _ in 0..times {
            server.login(key["key"].as_str().unwrap());
        }
    };
    log_in(&busy, 3);
    log_in(&once, 1);
    log_in(&other, 2);
    server
        .anonymous()
        .post("/v1/auth/login", &json!({"auth_key": once["key"]}))
        .expect_error(401, "auth_key_used");
    let series = |app: &str, key: &Value| {
        format!(
            r#"authkeys_key_logins_total{{app="{app}",key_id="{}"}}"#,
            key["id"].as_str().unwrap()
        )
    };
    let present = |text: &str, series: &str| text.lines().any(|line| line.starts_with(series));
    let text = scrape(&server.anonymous());
    assert_eq!(sample(&text, &series("ci", &busy)), 3.0, "{text}");
    assert_eq!(
        sample(&text, &series("ci", &once)),
        1.0,
        "a failed login is not counted"
    );
    assert_eq!(sample(&text, &series("cd", &other)), 2.0, "{text}");
    assert!(
        present(&text, "authkeys_key_logins_untracked_total 0"),
        "{text}"
    );

    let admin = server.admin();
    admin
        .delete(&format!(
            "/v1/apps/ci/keys/{}",
            busy["id"].as_str().unwrap()
        ))
        .expect(204);
    let text = scrape(&server.anonymous());
    assert!(
        !present(&text, &series("ci", &busy)),
        "a revoked key's series goes\n{text}"
    );
    assert!(present(&text, &series("ci", &once)), "{text}");
    admin.delete("/v1/apps/cd").expect(204);
    let text = scrape(&server.anonymous());
    assert!(
        !present(&text, &series("cd", &other)),
        "a deleted app's keys go\n{text}"
    );
    assert!(present(&text, &series("ci", &once)), "{text}");
}
