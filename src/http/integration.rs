//! The endpoints other services call: verify an auth key, and forward auth for a reverse
//! proxy.

use super::context::Ctx;
use super::dto::{InvalidKey, ValidKey, Verify};
use super::throttling::Answer;
use super::{ApiError, Response};

/// `POST /v1/keys/verify`: an auth key in the body, no bearer token. A key that is not good is
/// a 200 `{"valid": false}`, and a refused credential all the same.
pub(super) fn verify(ctx: &Ctx) -> Answer {
    let verdict = (|| {
        ctx.request.query_params(&[])?;
        let body: Verify = ctx.request.json()?;
        Ok::<_, ApiError>(ctx.authority.verify(&body.key, ctx.now)?)
    })();
    match verdict {
        Ok(Ok(key)) => {
            // Encoded once per cached key: the tags and metadata are not re-encoded per request.
            let body = key.encoded.get_or_encode(|| {
                let valid = ValidKey {
                    valid: true,
                    app: &key.app,
                    key_id: &key.id,
                    reusable: key.reusable,
                    ephemeral: key.ephemeral,
                    expires_at: key.expires_at,
                    tags: &key.policy.tags,
                    metadata: &key.policy.metadata,
                    uses_remaining: key.uses_remaining(),
                };
                serde_json::to_vec(&valid).expect("a verdict always serialises")
            });
            Answer::from(Ok(Response::body(200, "application/json", body.clone())))
        }
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

/// `GET /v1/forward-auth`: the session's identity as headers for a reverse proxy to pass on,
/// with an empty body. Same rules as whoami: expiry per request, revocation immediate.
pub(super) fn forward_auth(ctx: &Ctx) -> Result<Response, ApiError> {
    let session = ctx
        .authority
        .authenticate_session(ctx.request.session_hash()?, ctx.now)?;
    Ok(Response {
        status: 200,
        headers: vec![
            ("X-Authkeys-App", session.app.id.clone()),
            ("X-Authkeys-Machine", session.machine.id.clone()),
            (
                "X-Authkeys-Key-Id",
                session.machine.key_id.clone().unwrap_or_default(),
            ),
            (
                "X-Authkeys-Trust-Policy-Id",
                session.machine.trust_policy_id.clone().unwrap_or_default(),
            ),
            (
                "X-Authkeys-Machine-Name",
                session.headers.machine_name.clone(),
            ),
            ("X-Authkeys-Tags", session.headers.tags.clone()),
        ],
        body: Vec::new(),
    })
}
