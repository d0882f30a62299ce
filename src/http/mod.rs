//! The HTTP API. `handle` turns a `Request` into a `Response` given the authority and the
//! time, and is testable without a socket; `listener` carries it over authkeys-http. This module
//! decodes, routes and encodes: it contains no SQL and no business rules. It also serves the
//! admin dashboard's static files (`dashboard`), which call the same API. Here: `handle`,
//! routing to the handlers by audience (`machine`, `integration`, `admin`), each given one
//! `Ctx`, through the throttle rule (`throttling`) when a credential is presented.

mod access;
mod admin;
mod context;
mod dashboard;
mod dto;
mod errors;
mod forwarded;
#[cfg(test)]
mod in_memory_tests;
mod integration;
mod leaks;
mod limits;
mod listener;
mod machine;
mod message;
mod routes;
pub(crate) mod throttle;
mod throttling;

// The public seam: a `Listener` carries any `Handler` (`Request` -> `Response`) over HTTP;
// `Settings` and `TrustedProxies` are the part of it that `Config` sets.
pub use forwarded::{TrustedProxies, parse_range as parse_trusted_proxy};
pub use limits::{DEFAULT_MAX_CONNECTIONS, Settings};
pub use listener::{Handler, Listener};
pub use message::{Request, Response};

pub(crate) use errors::ApiError;
pub(crate) use routes::ROUTE_LABELS;

use crate::authority::Authority;
use crate::domain::error::Error;
use crate::domain::model::Timestamp;
use crate::http::throttle::Throttle;
use crate::metrics::{self, Metrics};
use context::Ctx;
use routes::Route;
use std::time::Instant;
use throttling::{Answer, throttled};

/// Largest request body accepted; a larger declared one gets 413 before any of it is read.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document served at `GET /openapi.json`: a static file, held true to the
/// route table by the tests below.
pub(crate) const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Answers one request and counts it. Never panics on any input; errors become the contract's
/// JSON shape. `throttle` counts failed credentials per client address (`throttling`).
pub(crate) fn handle(
    authority: &Authority,
    throttle: &Throttle,
    metrics: &Metrics,
    request: &Request,
    now: Timestamp,
) -> Response {
    let started = Instant::now();
    let route = Route::parse(&request.path);
    let ctx = Ctx::new(authority, throttle, metrics, request, now);
    let response = match route {
        Some(route) => dispatch(&ctx, route),
        None => Err(ApiError::RouteNotFound),
    };
    counted(&ctx, route, response, started)
}

/// Answers `request` exactly as `handle` would, if that takes nothing but memory; `None` if it
/// would need the database, and then nothing was counted, throttled or stamped: a worker
/// answers it with `handle`. Tried only for the routes machines and services call on every
/// request (`Route::is_hot`), whose answer for a cached credential is in memory; the listener
/// calls this on the connection's own thread, which saves handing the request to a worker.
pub(crate) fn handle_in_memory(
    authority: &Authority,
    throttle: &Throttle,
    metrics: &Metrics,
    request: &Request,
    now: Timestamp,
) -> Option<Response> {
    let started = Instant::now();
    let route = Route::parse(&request.path).filter(|route| route.is_hot())?;
    let ctx = Ctx::new(authority, throttle, metrics, request, now);
    match crate::store::memory_only(|| dispatch(&ctx, route)) {
        Err(ApiError::Domain(Error::NeedsDatabase)) => None,
        response => Some(counted(&ctx, Some(route), response, started)),
    }
}

/// The response for `response`, counted under its route.
fn counted(
    ctx: &Ctx,
    route: Option<Route>,
    response: Result<Response, ApiError>,
    started: Instant,
) -> Response {
    let response = response.unwrap_or_else(|err| Response::error(&err));
    let template = route.map_or(routes::UNMATCHED, Route::template);
    ctx.metrics.request(
        template,
        &ctx.request.method,
        response.status,
        started.elapsed(),
    );
    response
}

fn dispatch(ctx: &Ctx, route: Route) -> Result<Response, ApiError> {
    let Ctx {
        authority,
        throttle,
        metrics,
        request,
        now,
    } = *ctx;
    let method = request.method.as_str();
    // The outside reporters' routes exist only when configured: otherwise 404, whatever the
    // method, before any throttle or credential.
    let configured = match route {
        Route::RevocableTokenTypes | Route::RevokeTokens => authority.revocation_api_enabled(),
        Route::GithubSecretScanning => authority.github_secret_scanning_enabled(),
        _ => true,
    };
    if !configured {
        return Err(ApiError::RouteNotFound);
    }
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
            let answer = throttled(throttle, request, now, || credentialed(ctx, route));
            if let Err(err @ ApiError::Domain(Error::NeedsDatabase)) = answer.result {
                return Err(err); // not answered: nothing to count
            }
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
fn credentialed(ctx: &Ctx, route: Route) -> Answer {
    let request = ctx.request;
    match route {
        Route::Login => Answer::from(machine::login(ctx)),
        Route::Verify => integration::verify(ctx),
        // A proxy's subrequest carries the protected request's query string, which is not
        // ours to judge: forward-auth reads only the bearer token.
        Route::ForwardAuth => Answer::from(integration::forward_auth(ctx)),
        Route::RevocableTokenTypes => Answer::from(leaks::gitlab(ctx, false)),
        Route::RevokeTokens => Answer::from(leaks::gitlab(ctx, true)),
        Route::GithubSecretScanning => Answer::from(leaks::github(ctx)),
        Route::Whoami | Route::Logout => Answer::from((|| {
            request.query_params(&[])?;
            machine::session(ctx, route)
        })()),
        // The admin routes: the token, then its scope and apps (`access`), then the handler.
        _ => Answer::from((|| {
            let principal = ctx
                .authority
                .authenticate_admin(request.bearer()?, ctx.now)?;
            access::authorize(&principal, route, &request.method)?;
            admin::admin(ctx, route, &principal)
        })()),
    }
}

/// The label a result is counted under: `success`, or the error code answered.
pub(super) fn outcome<T>(result: &Result<T, ApiError>, success: &'static str) -> &'static str {
    match result {
        Ok(_) => success,
        Err(err) => err.status_and_code().1,
    }
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
    use super::dto::CreateKey;

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
