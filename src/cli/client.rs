//! A small HTTP client for the CLI (ureq): sends JSON, turns the contract's error objects into
//! one-line messages.

use super::args::TimeoutArg;
use super::duration;
use authkeys::Secret;
use serde_json::Value;
use std::time::Duration;

/// Why a request failed: the server could not be reached, or what answered is not an authkeys
/// server (exit status 3), or it answered with an error (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// What went wrong and what to check; the transport's error underneath when the message
    /// alone does not explain it.
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        cause: Option<ureq::Error>,
    },
    #[error("{}", api_line(.message, .code, .status))]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

/// The advice every unreachable server ends with.
const CHECK_SERVER: &str = "is --server or AUTHKEYS_SERVER right?";

/// The contract's error object as one line: the message, then its code and status if coded.
fn api_line(message: &str, code: &Option<String>, status: &u16) -> String {
    match code {
        Some(code) => format!("{message} ({code}, HTTP {status})"),
        None => message.to_string(),
    }
}

pub struct Client {
    base: String,
    bearer: Option<Secret>,
    agent: ureq::Agent,
    /// The longest a request may take, in seconds (`--timeout`).
    timeout: u64,
}

impl Client {
    pub fn new(base: &str, bearer: Option<Secret>, timeout: &TimeoutArg) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(timeout.timeout)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            bearer,
            agent,
            timeout: timeout.timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, RequestError> {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, RequestError> {
        self.send("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, RequestError> {
        self.send("DELETE", path, None)
    }

    /// Sends a request and returns the JSON body of a success (`null` for an empty one).
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, RequestError> {
        let url = format!("{}{path}", self.base);
        let mut response = match (method, body) {
            ("GET", _) => self.authorize(self.agent.get(&url)).call(),
            ("DELETE", _) => self.authorize(self.agent.delete(&url)).call(),
            (_, Some(body)) => self.authorize(self.agent.post(&url)).send_json(body),
            (_, None) => self.authorize(self.agent.post(&url)).send_empty(),
        }
        .map_err(|err| self.unreachable(err))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|err| self.unreachable(err))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return match json {
                Some(json) => Ok(json),
                None if text.is_empty() => Ok(Value::Null),
                None => Err(self.not_authkeys(&format!("answered HTTP {status} without JSON"))),
            };
        }
        let error = json.as_ref().and_then(|json| json.get("error"));
        let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);
        let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
        match (code, message) {
            (Some(code), Some(message)) => Err(RequestError::Api {
                status,
                code: Some(code.to_string()),
                message: message.to_string(),
            }),
            // Every authkeys error carries a code and a message: this answer came from
            // something else on that port, or a proxy in front of it.
            _ => Err(self.not_authkeys(&format!(
                "answered {method} {path} with HTTP {status}, which is not an authkeys error"
            ))),
        }
    }

    /// Explains a transport failure in terms of what the user can check.
    fn unreachable(&self, err: ureq::Error) -> RequestError {
        let base = &self.base;
        let (message, cause) = match &err {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
                format!(
                    "cannot reach {base}: connection refused: is `authkeys serve` running \
                     there? {CHECK_SERVER}"
                ),
                None,
            ),
            ureq::Error::Timeout(_) => (
                format!(
                    "{base} did not answer within {} (--timeout): is it an authkeys server, and \
                     is it up? {CHECK_SERVER}",
                    duration::display(self.timeout)
                ),
                None,
            ),
            ureq::Error::HostNotFound => (
                format!("cannot reach {base}: host not found: {CHECK_SERVER}"),
                None,
            ),
            _ if base.starts_with("https://") && tls_failed(&err) => (
                format!(
                    "cannot reach {base}: the TLS handshake failed; if the server speaks plain \
                     HTTP (authkeys itself serves no TLS), use http:// instead: {CHECK_SERVER}"
                ),
                Some(err),
            ),
            ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..) => {
                return self.not_authkeys("answered with something other than HTTP");
            }
            _ => (format!("cannot reach {base}"), Some(err)),
        };
        RequestError::Unreachable { message, cause }
    }

    /// What answered is not an authkeys server.
    fn not_authkeys(&self, what: &str) -> RequestError {
        RequestError::Unreachable {
            message: format!(
                "{} {what}: is it an authkeys server? {CHECK_SERVER}",
                self.base
            ),
            cause: None,
        }
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.bearer {
            Some(token) => request.header("Authorization", format!("Bearer {}", token.expose())),
            None => request,
        }
    }
}

/// Percent-encodes one path segment so that user input cannot change the route.
pub fn segment(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Whether `err` is a TLS failure: rustls reports a handshake gone wrong (such as a plain-HTTP
/// answer to its hello) as an I/O error of kind `InvalidData`.
fn tls_failed(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}
