//! The endpoints that take the admin token: apps, keys and machines.

use super::context::Ctx;
use super::dto::{CreateApp, CreateKey, CreatedKey, RotateKey, ServerInfo};
use super::message;
use super::routes::Route;
use super::{ApiError, Response, outcome};

/// Endpoints that take the admin token, which the caller has already checked.
pub(super) fn admin(ctx: &Ctx, route: Route) -> Result<Response, ApiError> {
    let method = ctx.request.method.as_str();
    let is_list = matches!(route, Route::Apps | Route::Keys(_) | Route::Machines(_));
    if !(is_list && method == "GET") {
        ctx.request.query_params(&[])?;
    }
    let response = match (route, method) {
        (Route::Apps, "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            Response::page("apps", ctx.authority.apps(&page)?)
        }
        (Route::Apps, "POST") => {
            let body: CreateApp = ctx.request.json()?;
            Response::json(
                201,
                &ctx.authority
                    .create_app(&body.id, body.name.as_deref(), ctx.now)?,
            )
        }
        (Route::App(app), "GET") => Response::json(200, &ctx.authority.app(app)?),
        (Route::App(app), "DELETE") => {
            ctx.authority.delete_app(app, ctx.now)?;
            ctx.metrics.app_deleted(app);
            Response::no_content()
        }
        (Route::Keys(app), "GET") => {
            let (page, filters) = ctx.request.page_query(&["include_revoked", "tag"])?;
            let include_revoked = include_revoked(&filters)?;
            let tags = all_of(&filters, "tag");
            Response::page(
                "keys",
                ctx.authority
                    .keys(app, include_revoked, &tags, &page, ctx.now)?,
            )
        }
        (Route::Keys(app), "POST") => {
            let body: CreateKey = ctx.request.json()?;
            let new = body.into_new_key()?;
            let (key, secret) = ctx.authority.create_key(app, &new, ctx.now)?;
            Response::json(
                201,
                &CreatedKey {
                    key: &key,
                    secret: secret.expose(),
                },
            )
        }
        (Route::RotateKey(app, key), "POST") => {
            let body: RotateKey = ctx.request.json()?;
            let grace = body.grace_secs()?;
            let (key, secret) = ctx.authority.rotate_key(app, key, grace, ctx.now)?;
            Response::json(
                201,
                &CreatedKey {
                    key: &key,
                    secret: secret.expose(),
                },
            )
        }
        (Route::Server, "GET") => Response::json(
            200,
            &ServerInfo {
                version: env!("CARGO_PKG_VERSION"),
                ephemeral_ttl: ctx.authority.ephemeral_ttl_secs(),
            },
        ),
        (Route::Key(app, key), "GET") => {
            Response::json(200, &ctx.authority.key(app, key, ctx.now)?)
        }
        (Route::Key(app, key), "DELETE") => {
            let revoked = ctx
                .authority
                .revoke_key(app, key, ctx.now)
                .map_err(ApiError::from);
            ctx.metrics.revocation(outcome(&revoked, "revoked"));
            revoked?;
            ctx.metrics.key_revoked(key);
            Response::no_content()
        }
        (Route::Machines(app), "GET") => {
            let (page, filters) = ctx.request.page_query(&["key_id", "tag"])?;
            let key_id = message::single(&filters, "key_id")?;
            let tags = all_of(&filters, "tag");
            Response::page(
                "machines",
                ctx.authority.machines(app, key_id, &tags, &page, ctx.now)?,
            )
        }
        (Route::RevokeByValue, "POST") => super::leaks::revoke_by_value(ctx)?,
        (Route::Machine(app, machine), "DELETE") => {
            ctx.authority.logout_machine(app, machine, ctx.now)?;
            Response::no_content()
        }
        _ => unreachable!("Route::methods lists only the pairs matched above"),
    };
    Ok(response)
}

/// Every value of the repeatable filter `name`.
fn all_of(filters: &[(String, String)], name: &str) -> Vec<String> {
    filters
        .iter()
        .filter(|(given, _)| given == name)
        .map(|(_, value)| value.clone())
        .collect()
}

fn include_revoked(filters: &[(String, String)]) -> Result<bool, ApiError> {
    let mut include = false;
    for value in all_of(filters, "include_revoked") {
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
