//! The HTTP API. `handle` turns a `Request` into a `Response` given the authority and the
//! time, and is testable without a socket; `listener` carries it over tiny_http. This module
//! decodes, routes and encodes: it contains no SQL and no business rules.

mod errors;
mod listener;
mod message;
mod routes;

pub use errors::ApiError;
pub use listener::{Handler, Listener, guarded};
pub use message::{Request, Response};

use crate::authority::Authority;
use crate::error::Error;
use crate::model::{App, Key, Machine, NewKey, Timestamp};
use crate::throttle::Throttle;
use routes::Route;
use serde::{Deserialize, Serialize};

/// Largest request body accepted; larger ones get 413 before they are read.
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
    #[serde(default)]
    expires_in: Option<u64>,
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

#[derive(Serialize)]
struct Identity<'a> {
    app: &'a App,
    machine: &'a Machine,
}

/// Answers one request. Never panics on any input; errors become the contract's JSON shape.
/// `throttle` counts failed logins and verifies per client address.
pub fn handle(
    authority: &Authority,
    throttle: &Throttle,
    request: &Request,
    now: Timestamp,
) -> Response {
    route(authority, throttle, request, now).unwrap_or_else(|err| Response::error(&err))
}

fn route(
    authority: &Authority,
    throttle: &Throttle,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let route = Route::parse(&request.path).ok_or(ApiError::RouteNotFound)?;
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
        Route::Login | Route::Verify => {
            request.query_params(&[])?;
            machine_auth(authority, throttle, route, request, now)
        }
        Route::Whoami | Route::Logout => {
            request.query_params(&[])?;
            let bearer = request.bearer()?;
            session(authority, route, bearer, now)
        }
        _ => {
            authority.authenticate_admin(request.bearer()?)?;
            admin(authority, route, request, now)
        }
    }
}

/// Endpoints that take an auth key in the body and no bearer token. The throttle is asked
/// first, so a throttled client never reaches the login transaction and cannot consume a key.
fn machine_auth(
    authority: &Authority,
    throttle: &Throttle,
    route: Route,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let attempt = throttle
        .admit(request.remote_addr.map(|addr| addr.ip()), now)
        .map_err(|retry| ApiError::TooManyRequests {
            retry_after_secs: retry.secs,
        })?;
    if route == Route::Login {
        let body: Login = request.json()?;
        let logged_in = authority.login(&body.auth_key, body.machine.as_deref(), now);
        let (session, machine) = match logged_in {
            Ok(logged_in) => logged_in,
            Err(err) => {
                if is_refused_auth_key(&err) {
                    attempt.failed();
                }
                return Err(err.into());
            }
        };
        let logged_in = LoggedIn {
            session_token: session.expose(),
            machine: &machine,
        };
        return Ok(Response::json(201, &logged_in));
    }
    let body: Verify = request.json()?;
    let response = match authority.verify(&body.key, now)? {
        Ok(key) => Response::json(
            200,
            &ValidKey {
                valid: true,
                app: &key.app,
                key_id: &key.id,
                reusable: key.reusable,
                ephemeral: key.ephemeral,
                expires_at: key.expires_at,
            },
        ),
        Err(problem) => {
            attempt.failed();
            Response::json(
                200,
                &InvalidKey {
                    valid: false,
                    code: problem.code(),
                },
            )
        }
    };
    Ok(response)
}

/// Whether a login failed because of the key itself: what a guesser produces, and what the
/// throttle counts. Bad input and server errors do not count.
fn is_refused_auth_key(err: &Error) -> bool {
    matches!(
        err,
        Error::AuthKeyInvalid | Error::AuthKeyRevoked | Error::AuthKeyExpired | Error::AuthKeyUsed
    )
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
        let identity = Identity {
            app: &session.app,
            machine: &session.machine,
        };
        serde_json::to_vec(&identity).expect("an identity always serialises")
    });
    Ok(Response::json_bytes(200, body.clone()))
}

/// Endpoints that take the admin token, which the caller has already checked.
fn admin(
    authority: &Authority,
    route: Route,
    request: &Request,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let method = request.method.as_str();
    if !matches!((route, method), (Route::Keys(_), "GET")) {
        request.query_params(&[])?;
    }
    let response = match (route, method) {
        (Route::Apps, "GET") => {
            Response::json(200, &serde_json::json!({"apps": authority.apps()?}))
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
            Response::no_content()
        }
        (Route::Keys(app), "GET") => {
            let include_revoked = include_revoked(request)?;
            let keys = authority.keys(app, include_revoked, now)?;
            Response::json(200, &serde_json::json!({"keys": keys}))
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
            authority.revoke_key(app, key, now)?;
            Response::no_content()
        }
        (Route::Machines(app), "GET") => {
            let machines = authority.machines(app, now)?;
            Response::json(200, &serde_json::json!({"machines": machines}))
        }
        (Route::Machine(app, machine), "DELETE") => {
            authority.logout_machine(app, machine, now)?;
            Response::no_content()
        }
        _ => unreachable!("Route::methods lists only the pairs matched above"),
    };
    Ok(response)
}

fn include_revoked(request: &Request) -> Result<bool, ApiError> {
    let mut include = false;
    for (_, value) in request.query_params(&["include_revoked"])? {
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
