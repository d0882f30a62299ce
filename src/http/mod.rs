//! The HTTP API. `handle` turns a `Request` into a `Response` given the authority and the
//! time, and is testable without a socket; `listener` carries it over authkeys-http. This module
//! decodes, routes and encodes: it contains no SQL and no business rules. It also serves the
//! admin dashboard's static files (`dashboard`), which call the same API.

mod dashboard;
mod errors;
mod forwarded;
pub mod limits;
mod listener;
mod message;
mod routes;
mod throttling;

pub use errors::ApiError;
pub use forwarded::{TrustedProxies, parse_range as parse_trusted_proxy};
pub use limits::Settings;
pub use listener::{Handler, Listener, guarded};
pub use message::{Request, Response};
pub use routes::ROUTE_LABELS;

use crate::authority::Authority;
use crate::metrics::{self, Metrics};
use crate::model::{Key, Machine, NewKey, Timestamp};
use crate::throttle::Throttle;
use routes::Route;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::time::Instant;
use throttling::{Answer, throttled};

/// Largest request body accepted; a larger declared one gets 413 before any of it is read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    reusable: bool,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default, deserialize_with = "whole_seconds")]
    expires_in: Option<u64>,
}

/// JSON does not tell `3600` from `3600.0` (JSON Schema calls both integers, and some
/// encoders write every number as a float), so either spelling of a whole number is accepted.
fn whole_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(secs) = number.as_u64() {
        return Ok(Some(secs));
    }
    match number.as_f64() {
        Some(secs) if secs.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&secs) => {
            Ok(Some(secs as u64))
        }
        _ => Err(D::Error::custom(
            "`expires_in` must be a whole number of seconds",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    auth_key: String,
    #[serde(default)]
    machine: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    key: String,
}

#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    key: &'a Key,
    /// The full secret: in this response and nowhere else, ever.
    #[serde(rename = "key")]
    secret: &'a str,
}

#[derive(Serialize)]
struct ValidKey<'a> {
    valid: bool,
    app: &'a str,
    key_id: &'a str,
    reusable: bool,
    ephemeral: bool,
    expires_at: Option<Timestamp>,
}

#[derive(Serialize)]
struct InvalidKey {
    valid: bool,
    code: &'static str,
}

#[derive(Serialize)]
struct LoggedIn<'a> {
    session_token: &'a str,
    machine: &'a Machine,
}

/// whoami's answer. The app is encoded once per app (`CachedApp::encoded`), the machine once
/// per cached session.
#[derive(Serialize)]
struct Identity<'a> {
    app: &'a RawValue,
    machine: &'a Machine,
}

/// The OpenAPI 3.1 document served at `GET /openapi.json`: a static file, held true to the
/// route table by the tests below.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Answers one request and counts it. Never panics on any input; errors become the contract's
/// JSON shape. `throttle` counts failed credentials per client address (`throttling`).
pub fn handle(
    authority: &Authority,
    throttle: &Throttle,
    metrics: &Metrics,
    request: &Request,
    now: Timestamp,
) -> Response {
    let started = Instant::now();
    let route = Route::parse(&request.path);
    let response = match route {
        Some(route) => dispatch(authority, throttle, metrics, route, request, now),
        None => Err(ApiError::RouteNotFound),
    }
    .unwrap_or_else(|err| Response::error(&err));
    let template = route.map_or(routes::UNMATCHED, Route::template);
    metrics.request(
        template,
        &request.method,
        response.status,
        started.elapsed(),
    );
    response
}

fn dispatch(
    authority: &Authority,
    throttle: &Throttle,
    metrics: &Metrics,
    route: Route,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let method = request.method.as_str();
    if !route.methods().contains(&method) {
        return Err(ApiError::MethodNotAllowed {
            allow: route.methods(),
        });
    }
    match route {
        Route::Health => {
            request.query_params(&[])?;
            Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
        }
        Route::Dashboard => {
            request.query_params(&[])?;
            Ok(dashboard::page())
        }
        Route::Asset(name) => {
            request.query_params(&[])?;
            dashboard::asset(name).ok_or(ApiError::RouteNotFound)
        }
        Route::OpenApi => {
            request.query_params(&[])?;
            Ok(Response::body(200, "application/json", OPENAPI_JSON))
        }
        Route::Metrics => {
            request.query_params(&[])?;
            // No query: a scrape costs the same whatever the number of rows.
            let machines = authority.machine_rows();
            Ok(Response::body(
                200,
                metrics::CONTENT_TYPE,
                metrics.encode(machines),
            ))
        }
        // Every other route takes a credential, a new one included (it falls to `admin`).
        _ => {
            let answer = throttled(throttle, request, now, || {
                credentialed(authority, metrics, route, request, now)
            });
            match route {
                Route::Login => metrics.login(outcome(&answer.result, "success")),
                Route::Verify => metrics.verify(
                    answer
                        .refused
                        .unwrap_or_else(|| outcome(&answer.result, "valid")),
                ),
                _ => {}
            }
            answer.result
        }
    }
}

/// Routes that take a credential, once the throttle has admitted the attempt.
fn credentialed(
    authority: &Authority,
    metrics: &Metrics,
    route: Route,
    request: &Request,
    now: Timestamp,
) -> Answer {
    match route {
        Route::Login => Answer::from(login(authority, metrics, request, now)),
        Route::Verify => verify(authority, request, now),
        // A proxy's subrequest carries the protected request's query string, which is not
        // ours to judge: forward-auth reads only the bearer token.
        Route::ForwardAuth => Answer::from(
            request
                .bearer()
                .map_err(ApiError::from)
                .and_then(|bearer| forward_auth(authority, bearer, now)),
        ),
        Route::Whoami | Route::Logout => Answer::from((|| {
            request.query_params(&[])?;
            session(authority, route, request.bearer()?, now)
        })()),
        _ => Answer::from((|| {
            authority.authenticate_admin(request.bearer()?)?;
            admin(authority, metrics, route, request, now)
        })()),
    }
}

/// The label a result is counted under: `success`, or the error code answered.
fn outcome<T>(result: &Result<T, ApiError>, success: &'static str) -> &'static str {
    match result {
        Ok(_) => success,
        Err(err) => err.status_and_code().1,
    }
}

/// `POST /v1/auth/login`: an auth key in the body, no bearer token.
fn login(
    authority: &Authority,
    metrics: &Metrics,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    request.query_params(&[])?;
    let body: Login = request.json()?;
    let (session, machine) = authority.login(&body.auth_key, body.machine.as_deref(), now)?;
    metrics.key_login(&machine.app, &machine.key_id);
    let logged_in = LoggedIn {
        session_token: session.expose(),
        machine: &machine,
    };
    Ok(Response::json(201, &logged_in))
}

/// `POST /v1/keys/verify`: an auth key in the body, no bearer token. A key that is not good is
/// a 200 `{"valid": false}`, and a refused credential all the same.
fn verify(authority: &Authority, request: &Request, now: Timestamp) -> Answer {
    let verdict = (|| {
        request.query_params(&[])?;
        let body: Verify = request.json()?;
        Ok::<_, ApiError>(authority.verify(&body.key, now)?)
    })();
    match verdict {
        Ok(Ok(key)) => Answer::from(Ok(Response::json(
            200,
            &ValidKey {
                valid: true,
                app: &key.app,
                key_id: &key.id,
                reusable: key.reusable,
                ephemeral: key.ephemeral,
                expires_at: key.expires_at,
            },
        ))),
        Ok(Err(problem)) => Answer {
            result: Ok(Response::json(
                200,
                &InvalidKey {
                    valid: false,
                    code: problem.code(),
                },
            )),
            refused: Some(problem.code()),
        },
        Err(err) => Answer::from(Err(err)),
    }
}

/// Endpoints that take a machine's session token.
fn session(
    authority: &Authority,
    route: Route,
    bearer: &str,
    now: Timestamp,
) -> Result<Response, ApiError> {
    if route == Route::Logout {
        authority.logout(bearer, now)?;
        return Ok(Response::no_content());
    }
    let session = authority.authenticate_session(bearer, now)?;
    let body = session.encoded.get_or_init(|| {
        let app = session.app.encoded.get_or_init(|| {
            serde_json::value::to_raw_value(&session.app.app).expect("an app always serialises")
        });
        let identity = Identity {
            app,
            machine: &session.machine,
        };
        serde_json::to_vec(&identity).expect("an identity always serialises")
    });
    Ok(Response::body(200, "application/json", body.clone()))
}

/// `GET /v1/forward-auth`: the session's identity as headers for a reverse proxy to pass on,
/// with an empty body. Same rules as whoami: expiry per request, revocation immediate.
fn forward_auth(authority: &Authority, bearer: &str, now: Timestamp) -> Result<Response, ApiError> {
    let session = authority.authenticate_session(bearer, now)?;
    Ok(Response {
        status: 200,
        headers: vec![
            ("X-Authkeys-App", session.app.id.clone()),
            ("X-Authkeys-Machine", session.machine.id.clone()),
            ("X-Authkeys-Key-Id", session.machine.key_id.clone()),
        ],
        body: Vec::new(),
    })
}

/// Endpoints that take the admin token, which the caller has already checked.
fn admin(
    authority: &Authority,
    metrics: &Metrics,
    route: Route,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let method = request.method.as_str();
    let is_list = matches!(route, Route::Apps | Route::Keys(_) | Route::Machines(_));
    if !(is_list && method == "GET") {
        request.query_params(&[])?;
    }
    let response = match (route, method) {
        (Route::Apps, "GET") => {
            let (page, _) = request.page_query(&[])?;
            Response::page("apps", authority.apps(&page)?)
        }
        (Route::Apps, "POST") => {
            let body: CreateApp = request.json()?;
            Response::json(
                201,
                &authority.create_app(&body.id, body.name.as_deref(), now)?,
            )
        }
        (Route::App(app), "GET") => Response::json(200, &authority.app(app)?),
        (Route::App(app), "DELETE") => {
            authority.delete_app(app, now)?;
            metrics.app_deleted(app);
            Response::no_content()
        }
        (Route::Keys(app), "GET") => {
            // `tag` (v2's key tags) joins these filters when keys have tags.
            let (page, filters) = request.page_query(&["include_revoked"])?;
            let include_revoked = include_revoked(&filters)?;
            Response::page("keys", authority.keys(app, include_revoked, &page, now)?)
        }
        (Route::Keys(app), "POST") => {
            let body: CreateKey = request.json()?;
            let new = NewKey {
                description: body.description,
                reusable: body.reusable,
                ephemeral: body.ephemeral,
                expires_in_secs: body.expires_in,
            };
            let (key, secret) = authority.create_key(app, &new, now)?;
            Response::json(
                201,
                &CreatedKey {
                    key: &key,
                    secret: secret.expose(),
                },
            )
        }
        (Route::Key(app, key), "GET") => Response::json(200, &authority.key(app, key, now)?),
        (Route::Key(app, key), "DELETE") => {
            let revoked = authority.revoke_key(app, key, now).map_err(ApiError::from);
            metrics.revocation(outcome(&revoked, "revoked"));
            revoked?;
            metrics.key_revoked(key);
            Response::no_content()
        }
        (Route::Machines(app), "GET") => {
            let (page, filters) = request.page_query(&["key_id"])?;
            let key_id = message::single(&filters, "key_id")?;
            Response::page("machines", authority.machines(app, key_id, &page, now)?)
        }
        (Route::Machine(app, machine), "DELETE") => {
            authority.logout_machine(app, machine, now)?;
            Response::no_content()
        }
        _ => unreachable!("Route::methods lists only the pairs matched above"),
    };
    Ok(response)
}

fn include_revoked(filters: &[(String, String)]) -> Result<bool, ApiError> {
    let mut include = false;
    for (_, value) in filters {
        include = match value.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::InvalidQuery(
                    "`include_revoked` must be true or false".into(),
                ));
            }
        };
    }
    Ok(include)
}

#[cfg(test)]
mod tests {
    use super::OPENAPI_JSON;
    use super::routes::{Route, TEMPLATES, example_path};
    use std::collections::BTreeSet;

    /// The document and the route table describe the same paths and methods: a route without
    /// a description, or a description without a route, fails here.
    #[test]
    fn openapi_describes_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let routed: BTreeSet<&str> = TEMPLATES.iter().copied().collect();
        assert_eq!(documented, routed, "documented paths vs the route table");
        for template in TEMPLATES {
            let path = example_path(template);
            let route = Route::parse(&path).expect("every template parses");
            let item = paths[*template].as_object().expect("path item");
            let methods: BTreeSet<String> = item
                .keys()
                .filter(|key| *key != "parameters")
                .map(|method| method.to_ascii_uppercase())
                .collect();
            let answered: BTreeSet<String> =
                route.methods().iter().map(|m| m.to_string()).collect();
            assert_eq!(methods, answered, "methods of {template}");
            for method in &methods {
                let operation = &item[&method.to_ascii_lowercase()];
                for field in ["summary", "description"] {
                    let text = operation[field].as_str().unwrap_or("");
                    assert!(!text.is_empty(), "{method} {template} has no {field}");
                }
                let responses = operation["responses"].as_object().expect("responses");
                assert!(
                    !responses.is_empty(),
                    "{method} {template} has no responses"
                );
            }
        }
    }

    /// The users' API reference (`docs/api.md`) has a `### `METHOD /path`` section for every
    /// operation of the document and none that the document lacks, and lists every field of
    /// the contract's objects, so neither can drift from the other.
    #[test]
    fn api_reference_documents_every_route_of_the_openapi_document() {
        const REFERENCE: &str = include_str!("../../docs/api.md");
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
        let operations: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("path item").keys();
                methods
                    .filter(|key| *key != "parameters")
                    .map(move |method| format!("{} {path}", method.to_ascii_uppercase()))
            })
            .collect();
        let documented: BTreeSet<String> = REFERENCE
            .lines()
            .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
            .map(str::to_string)
            .collect();
        assert_eq!(
            documented, operations,
            "docs/api.md sections vs openapi.json"
        );
        for object in ["App", "Key", "Machine"] {
            let schema = &doc["components"]["schemas"][object]["properties"];
            let heading = format!("**{object}**: `{{");
            let start = REFERENCE
                .find(&heading)
                .unwrap_or_else(|| panic!("no {heading}"));
            let description = &REFERENCE[start..start + REFERENCE[start..].find("}`").unwrap()];
            for field in schema.as_object().expect("properties").keys() {
                let quoted = format!("\"{field}\"");
                assert!(
                    description.contains(&quoted),
                    "docs/api.md's {object} lacks {field}"
                );
            }
        }
    }
}

#[cfg(test)]
mod decoding_tests {
    use super::CreateKey;

    #[test]
    fn expires_in_takes_whole_seconds_in_either_spelling() {
        let decode = |body: &str| serde_json::from_str::<CreateKey>(body).map(|k| k.expires_in);
        assert_eq!(decode(r#"{"expires_in": 3600}"#).ok(), Some(Some(3600)));
        assert_eq!(decode(r#"{"expires_in": 3600.0}"#).ok(), Some(Some(3600)));
        assert_eq!(decode(r#"{"expires_in": null}"#).ok(), Some(None));
        assert_eq!(decode("{}").ok(), Some(None));
        for bad in ["3600.5", "-1", "-1.0", "1e300", "\"3600\"", "true"] {
            let body = format!(r#"{{"expires_in": {bad}}}"#);
            assert!(decode(&body).is_err(), "{body}");
        }
    }
}
