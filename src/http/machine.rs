//! The endpoints a machine calls: login with an auth key, then whoami and logout with its
//! session token.

use super::context::Ctx;
use super::dto::{Identity, LoggedIn, Login};
use super::routes::Route;
use super::{ApiError, Response};

/// `POST /v1/auth/login`: an auth key in the body, no bearer token.
pub(super) fn login(ctx: &Ctx) -> Result<Response, ApiError> {
    ctx.request.query_params(&[])?;
    let body: Login = ctx.request.json()?;
    let (session, machine) = ctx.authority.login(
        &body.auth_key,
        body.machine.as_deref(),
        ctx.client_addr(),
        ctx.now,
    )?;
    ctx.metrics.key_login(&machine.app, &machine.key_id);
    let logged_in = LoggedIn {
        session_token: session.expose(),
        machine: &machine,
    };
    Ok(Response::json(201, &logged_in))
}

/// Endpoints that take a machine's session token.
pub(super) fn session(ctx: &Ctx, route: Route, bearer: &str) -> Result<Response, ApiError> {
    if route == Route::Logout {
        ctx.authority.logout(bearer, ctx.client_addr(), ctx.now)?;
        return Ok(Response::no_content());
    }
    let session = ctx.authority.authenticate_session(bearer, ctx.now)?;
    let body = session.encoded.get_or_encode(|| {
        let app = session.app.encoded.get_or_encode(|| {
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
