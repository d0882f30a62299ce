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
    let name = body.machine.as_deref();
    let client_addr = ctx.client_addr();
    let (session, machine) = match (&body.auth_key, &body.id_token, &body.app) {
        (Some(auth_key), None, None) => {
            ctx.authority.login(auth_key, name, client_addr, ctx.now)?
        }
        (None, Some(id_token), Some(app)) => {
            ctx.authority
                .login_with_id_token(id_token, app, name, client_addr, ctx.now)?
        }
        (None, Some(_), None) => return Err(missing_field("app", "is required with `id_token`")),
        (None, None, _) => {
            return Err(missing_field(
                "auth_key",
                "or `id_token` and `app` is required",
            ));
        }
        (Some(_), ..) => {
            return Err(missing_field(
                "auth_key",
                "cannot be combined with `id_token` or `app`",
            ));
        }
    };
    if let Some(key_id) = &machine.key_id {
        ctx.metrics.key_login(&machine.app, key_id);
    }
    let logged_in = LoggedIn {
        session_token: session.expose(),
        machine: &machine,
    };
    Ok(Response::json(201, &logged_in))
}

fn missing_field(field: &'static str, reason: &str) -> ApiError {
    ApiError::from(crate::domain::error::Error::InvalidField {
        field,
        reason: reason.to_string(),
    })
}

/// The bytes reserved for an encoded identity (see `session`).
const IDENTITY_CAPACITY: usize = 512;

/// Endpoints that take a machine's session token.
pub(super) fn session(ctx: &Ctx, route: Route) -> Result<Response, ApiError> {
    let hash = ctx.request.session_hash()?;
    if route == Route::Logout {
        ctx.authority.logout(hash, ctx.client_addr(), ctx.now)?;
        return Ok(Response::no_content());
    }
    let session = ctx.authority.authenticate_session(hash, ctx.now)?;
    let body = session.encoded.get_or_encode(|| {
        let app = session.app.encoded.get_or_encode(|| {
            serde_json::value::to_raw_value(&session.app.app).expect("an app always serialises")
        });
        let identity = Identity {
            app,
            machine: &session.machine,
        };
        // Room for the usual identity (about 320 bytes with no tags or metadata), so that
        // encoding it does not grow the buffer several times over.
        let mut body = Vec::with_capacity(IDENTITY_CAPACITY);
        serde_json::to_writer(&mut body, &identity).expect("an identity always serialises");
        body
    });
    Ok(Response::body(200, "application/json", body.clone()))
}
