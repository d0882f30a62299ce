//! The request and response values `handle` works on, independent of authkeys-http, plus the
//! decoding of bodies, queries and bearer tokens.

use super::errors::ApiError;
use crate::domain::error::Error;
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::TokenHash;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// An HTTP request as the handler sees it: the body is already read and bounded.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// `Github-Public-Key-Identifier` and `Github-Public-Key-Signature`, which sign a GitHub
    /// secret scanning report.
    pub github_key_identifier: Option<String>,
    pub github_signature: Option<String>,
    pub body: Vec<u8>,
    /// The client's address, for throttling failed authentication attempts per client.
    pub remote_addr: Option<SocketAddr>,
    /// The bearer token's hash as a session token (`None`: not one), worked out from
    /// `authorization` once: a request the connection's thread could not answer from memory
    /// reaches a worker with it (see `listener::answer_inline`).
    session_hash: OnceLock<Option<TokenHash>>,
}

impl Request {
    /// Splits a request target such as `/v1/apps?x=1` into path and query.
    pub(crate) fn new(method: &str, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            ..Request::default()
        }
    }

    /// The bearer token. A missing header and a header of another scheme are different
    /// mistakes and get different messages.
    pub(crate) fn bearer(&self) -> Result<&str, Error> {
        let header = self
            .authorization
            .as_deref()
            .ok_or(Error::MissingCredentials)?;
        let (scheme, token) = header.split_once(' ').ok_or(Error::InvalidCredentials)?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            Ok(token.trim())
        } else {
            Err(Error::InvalidCredentials)
        }
    }

    /// The bearer token as a session token: its hash, or why it is not one.
    pub(crate) fn session_hash(&self) -> Result<TokenHash, Error> {
        let bearer = self.bearer()?;
        self.session_hash
            .get_or_init(|| crate::authority::session_hash(bearer).ok())
            .ok_or(Error::InvalidCredentials)
    }

    /// Whether `session_hash` has been worked out already.
    #[cfg(test)]
    pub(crate) fn session_hash_worked_out(&self) -> bool {
        self.session_hash.get().is_some()
    }

    /// Decodes a JSON array body (the leak reports of GitLab and GitHub) into `T`s: 415 unless
    /// JSON, 400 unless a well-formed array without repeated keys, 422 for entries of the
    /// wrong shape.
    pub(crate) fn json_array<T: DeserializeOwned>(&self) -> Result<Vec<T>, ApiError> {
        if !self.is_json() {
            return Err(ApiError::UnsupportedMediaType);
        }
        let malformed = |detail: String| ApiError::MalformedBody(detail);
        let text = std::str::from_utf8(&self.body)
            .map_err(|err| malformed(format!("the body is not UTF-8: {err}")))?;
        match crate::domain::json::from_str(text) {
            Ok(value) if value.is_array() => decode_value(value),
            Ok(_) => Err(malformed("the body must be a JSON array".into())),
            Err(err) => Err(malformed(format!("malformed JSON: {err}"))),
        }
    }

    fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|value| {
            let media_type = value.split(';').next().unwrap_or("").trim();
            media_type.eq_ignore_ascii_case("application/json")
        })
    }

    /// Decodes the JSON body into `T`. An empty body counts as `{}` so that endpoints whose
    /// fields are all optional can be called without one.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return decode_value(serde_json::Value::Object(Default::default()));
        }
        if !self.is_json() {
            return Err(ApiError::UnsupportedMediaType);
        }
        decode_value(parse_object(&self.body)?)
    }

    /// The query parameters, each checked against `allowed`: a parameter an endpoint does not
    /// take is an error, never silently ignored (a token in a URL would end up in logs).
    pub(crate) fn query_params(&self, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(self.query.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        match params
            .iter()
            .find(|(name, _)| !allowed.contains(&name.as_str()))
        {
            Some((name, _)) => Err(ApiError::InvalidQuery(format!(
                "unknown query parameter `{name}`"
            ))),
            None => Ok(params),
        }
    }

    /// A list endpoint's query: the page asked for (`limit`, `cursor`) and the values of its
    /// `filters`, which are the only other parameters it takes.
    pub(crate) fn page_query(
        &self,
        filters: &[&str],
    ) -> Result<(PageRequest, Vec<(String, String)>), ApiError> {
        let mut allowed = vec!["limit", "cursor"];
        allowed.extend_from_slice(filters);
        let params = self.query_params(&allowed)?;
        let page = PageRequest::parse(single(&params, "limit")?, single(&params, "cursor")?)?;
        let filters = params
            .into_iter()
            .filter(|(name, _)| filters.contains(&name.as_str()))
            .collect();
        Ok((page, filters))
    }
}

/// The value of a query parameter that may be given at most once: twice is ambiguous (422).
pub(crate) fn single<'p>(
    params: &'p [(String, String)],
    name: &'static str,
) -> Result<Option<&'p str>, ApiError> {
    let mut values = params.iter().filter(|(given, _)| given == name);
    let first = values.next().map(|(_, value)| value.as_str());
    match values.next() {
        None => Ok(first),
        Some(_) => Err(ApiError::Domain(Error::InvalidField {
            field: name,
            reason: "is given more than once".into(),
        })),
    }
}

/// Parses a body that must be a JSON object: 400 when it is not UTF-8, not JSON, not an
/// object or repeats a key, 422 when it is well-formed JSON holding a value serde_json cannot
/// represent.
fn parse_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let malformed = |detail: String| ApiError::MalformedBody(detail);
    let text = std::str::from_utf8(body)
        .map_err(|err| malformed(format!("the body is not UTF-8: {err}")))?;
    match crate::domain::json::from_str(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(malformed("the body must be a JSON object".into())),
        Err(err) if err.is_data() => Err(malformed(format!("ambiguous JSON: {err}"))),
        // JSON's grammar allows numbers beyond f64 (`1e400`) and lone surrogate escapes, which
        // serde_json refuses to put in a `Value`. Skipping values, it checks only the grammar:
        // if that passes, the body is well-formed and one of its values is out of range.
        Err(err) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            if text.trim_start().starts_with('{') {
                Err(ApiError::InvalidBody(format!(
                    "a value cannot be represented: {err}"
                )))
            } else {
                Err(malformed("the body must be a JSON object".into()))
            }
        }
        Err(err) => Err(malformed(format!("malformed JSON: {err}"))),
    }
}

fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|err| {
        let message = err.to_string();
        if message.starts_with("unknown field") {
            ApiError::UnknownField(message)
        } else {
            ApiError::InvalidBody(message)
        }
    })
}

/// A response ready to be written by whatever server carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let body = serde_json::to_vec(value).expect("our response types always serialise");
        Response::body(status, "application/json", body)
    }

    /// A body that is already encoded, such as the OpenAPI document or the metrics text.
    pub fn body(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// A page of a list: `{"<name>": [items], "next_cursor": "…" | null}`.
    pub(crate) fn page<T: Serialize>(name: &str, page: Page<T>) -> Response {
        let mut body = serde_json::Map::new();
        let items = serde_json::to_value(page.items).expect("our list items always serialise");
        body.insert(name.to_string(), items);
        let next = page.next.map(|position| position.encode());
        body.insert("next_cursor".to_string(), next.into());
        Response::json(200, &body)
    }

    pub fn no_content() -> Response {
        Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn error(err: &ApiError) -> Response {
        let (status, code) = err.status_and_code();
        let body = serde_json::json!({"error": {"code": code, "message": err.message()}});
        let mut response = Response::json(status, &body);
        match err {
            ApiError::MethodNotAllowed { allow } => {
                response.headers.push(("Allow", allow.join(", ")));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response
                    .headers
                    .push(("Retry-After", retry_after_secs.to_string()));
            }
            _ if status == 401 => {
                response.headers.push(("WWW-Authenticate", "Bearer".into()));
            }
            _ => {}
        }
        response
    }
}
