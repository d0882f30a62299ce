//! The HTTP client the tests use (ureq, bound to one server and one set of credentials),
//! its replies with what explains a failed expectation, and small API and metrics helpers.

use super::TestServer;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// An HTTP client bound to one server and one set of credentials.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub(super) bearer: Option<String>,
    pub(super) log_path: PathBuf,
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
        self.send_with_headers(method, path, content_type, &[], body)
    }

    /// `send` with extra request headers (a signature, an Authorization of another shape).
    pub fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let url = format!("{}{path}", self.url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
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
        let mut response = agent().run(request).unwrap_or_else(|err| {
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

/// The one client of every `Api`: each request on a connection of its own (nothing is kept
/// alive between requests), with buffers a quarter of ureq's 128 KiB defaults, still four
/// times the server's largest request head: the races make thousands of requests, and
/// zero-filling 256 KiB for each was most of their CPU.
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_idle_connections(0)
            .input_buffer_size(64 * 1024)
            .output_buffer_size(64 * 1024)
            .build()
            .into()
    })
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
