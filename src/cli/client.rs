//! A small HTTP client for the CLI (ureq): sends JSON, turns the contract's error objects into
//! one-line messages.

use authkeys::Secret;
use serde_json::Value;
use std::time::Duration;

/// Why a request failed: the server could not be reached (the transport's error as
/// `source()`), or it answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{context}")]
    Unreachable {
        context: String,
        #[source]
        cause: ureq::Error,
    },
    #[error("{}", api_line(.message, .code, .status))]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

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
}

impl Client {
    pub fn new(base: &str, bearer: Option<Secret>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            bearer,
            agent,
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

    /// Sends a request and returns the JSON body of a success (`null` for 204).
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, RequestError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |cause| RequestError::Unreachable {
            context: format!("cannot reach {}", self.base),
            cause,
        };
        let mut response = match (method, body) {
            ("GET", _) => self.authorize(self.agent.get(&url)).call(),
            ("DELETE", _) => self.authorize(self.agent.delete(&url)).call(),
            (_, Some(body)) => self.authorize(self.agent.post(&url)).send_json(body),
            (_, None) => self.authorize(self.agent.post(&url)).send_empty(),
        }
        .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text =
            response
                .body_mut()
                .read_to_string()
                .map_err(|cause| RequestError::Unreachable {
                    context: format!("reading the response from {url}"),
                    cause,
                })?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return Ok(json.unwrap_or(Value::Null));
        }
        let error = json.as_ref().and_then(|json| json.get("error"));
        let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);
        let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
        Err(RequestError::Api {
            status,
            code: code.map(str::to_string),
            message: message.map_or_else(
                || format!("{method} {url} answered HTTP {status}"),
                str::to_string,
            ),
        })
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
