//! The endpoints that take an admin token: apps, keys, machines, admin tokens and the audit
//! log. `http::access` has already checked the token's scope and apps for the route.

use super::context::Ctx;
use super::dto::{
    CreateAdminToken, CreateApp, CreateKey, CreateTrustPolicy, CreateWebhook, CreatedAdminToken,
    CreatedKey, CreatedWebhook, RotateKey, ServerInfo, TokenInfo,
};
use super::message;
use super::routes::Route;
use super::{ApiError, Response, outcome};
use crate::domain::access::{KeyLimits, NewAdminToken, Principal};
use crate::domain::audit::{Action, EventFilter};
use crate::domain::error::Error;
use crate::domain::validate;

/// Endpoints that take an admin token, which the caller has already authenticated as
/// `principal` and authorized for `route`.
pub(super) fn admin(ctx: &Ctx, route: Route, principal: &Principal) -> Result<Response, ApiError> {
    let method = ctx.request.method.as_str();
    let actor = ctx.actor(principal);
    let is_list = matches!(
        route,
        Route::Apps
            | Route::Keys(_)
            | Route::Machines(_)
            | Route::AdminTokens
            | Route::Audit
            | Route::Webhooks
            | Route::Deliveries(_)
            | Route::TrustPolicies(_)
    );
    if !(is_list && method == "GET") {
        ctx.request.query_params(&[])?;
    }
    let response = match (route, method) {
        (Route::Apps, "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            let mut apps = ctx.authority.apps(&page)?;
            // A token limited to some apps sees only those (pages may come out short).
            apps.items
                .retain(|app| principal.require_app(&app.id).is_ok());
            Response::page("apps", apps)
        }
        (Route::Apps, "POST") => {
            let body: CreateApp = ctx.request.json()?;
            principal.require_app(&body.id)?;
            let name = body.name.as_deref();
            Response::json(
                201,
                &ctx.authority.create_app(&body.id, name, &actor, ctx.now)?,
            )
        }
        (Route::App(app), "GET") => Response::json(200, &ctx.authority.app(app)?),
        (Route::App(app), "DELETE") => {
            ctx.authority.delete_app(app, &actor, ctx.now)?;
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
            let limits = principal.key_limits();
            let (key, secret) = ctx
                .authority
                .create_key(app, &new, limits, &actor, ctx.now)?;
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
            let limits = principal.key_limits();
            let (key, secret) = ctx
                .authority
                .rotate_key(app, key, grace, limits, &actor, ctx.now)?;
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
                token: TokenInfo {
                    root: matches!(principal, Principal::Root),
                    scopes: principal.scopes(),
                    apps: principal.apps(),
                },
            },
        ),
        (Route::Key(app, key), "GET") => {
            Response::json(200, &ctx.authority.key(app, key, ctx.now)?)
        }
        (Route::Key(app, key), "DELETE") => {
            let revoked = ctx
                .authority
                .revoke_key(app, key, &actor, ctx.now)
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
        (Route::RevokeByValue, "POST") => super::leaks::revoke_by_value(ctx, principal, &actor)?,
        (Route::Machine(app, machine), "DELETE") => {
            ctx.authority
                .logout_machine(app, machine, &actor, ctx.now)?;
            Response::no_content()
        }
        (Route::AdminTokens, "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            Response::page("admin_tokens", ctx.authority.admin_tokens(&page)?)
        }
        (Route::AdminTokens, "POST") => {
            let body: CreateAdminToken = ctx.request.json()?;
            let limits = KeyLimits {
                max_key_lifetime: body.max_key_lifetime,
                allowed_tags: body.allowed_tags,
                ephemeral_only: body.ephemeral_only,
            };
            let scopes = validate::new_admin_token(
                &body.name,
                &body.scopes,
                body.apps.as_deref(),
                body.expires_in,
                &limits,
            )?;
            let new = NewAdminToken {
                name: body.name,
                scopes,
                apps: body.apps,
                expires_in_secs: body.expires_in,
                limits,
            };
            let (token, secret) = ctx.authority.create_admin_token(&new, &actor, ctx.now)?;
            Response::json(
                201,
                &CreatedAdminToken {
                    token: &token,
                    secret: secret.expose(),
                },
            )
        }
        (Route::AdminToken(id), "DELETE") => {
            ctx.authority.revoke_admin_token(id, &actor, ctx.now)?;
            Response::no_content()
        }
        (Route::Webhooks, "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            Response::page("webhooks", ctx.authority.webhooks(&page)?)
        }
        (Route::Webhooks, "POST") => {
            let body: CreateWebhook = ctx.request.json()?;
            let description = body.description.as_deref();
            let (webhook, secret) = ctx.authority.create_webhook(
                &body.url,
                &body.events,
                description,
                &actor,
                ctx.now,
            )?;
            Response::json(
                201,
                &CreatedWebhook {
                    webhook: &webhook,
                    secret: secret.expose(),
                },
            )
        }
        (Route::Webhook(id), "DELETE") => {
            ctx.authority.delete_webhook(id, &actor, ctx.now)?;
            Response::no_content()
        }
        (Route::Deliveries(id), "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            Response::page("deliveries", ctx.authority.deliveries(id, &page)?)
        }
        (Route::Audit, "GET") => {
            let (page, filters) = ctx
                .request
                .page_query(&["after", "app", "action", "order"])?;
            let filter = event_filter(&filters)?;
            Response::page("events", ctx.authority.events(&filter, &page, principal)?)
        }
        (Route::TrustPolicies(app), "GET") => {
            let (page, _) = ctx.request.page_query(&[])?;
            Response::page("trust_policies", ctx.authority.trust_policies(app, &page)?)
        }
        (Route::TrustPolicies(app), "POST") => {
            let body: CreateTrustPolicy = ctx.request.json()?;
            let new = body.into_new_trust_policy()?;
            let policy = ctx
                .authority
                .create_trust_policy(app, &new, &actor, ctx.now)?;
            Response::json(201, &policy)
        }
        (Route::TrustPolicy(app, policy), "DELETE") => {
            ctx.authority
                .delete_trust_policy(app, policy, &actor, ctx.now)?;
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

/// `GET /v1/audit`'s filters: `after` a seq (a whole number ≥ 0), one `app`, one `action`.
fn event_filter(filters: &[(String, String)]) -> Result<EventFilter, ApiError> {
    let after = match message::single(filters, "after")? {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| Error::InvalidField {
                field: "after",
                reason: "must be a whole number ≥ 0 (an event's seq)".into(),
            })?,
    };
    let action = match message::single(filters, "action")? {
        None => None,
        Some(text) => Some(Action::parse(text).ok_or_else(|| Error::InvalidField {
            field: "action",
            reason: format!("{text:?} is not an audit action"),
        })?),
    };
    let newest_first = match message::single(filters, "order")? {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(Error::InvalidField {
                field: "order",
                reason: "must be asc or desc".into(),
            }
            .into());
        }
    };
    let app = message::single(filters, "app")?;
    if let Some(app) = app {
        // Not echoed: a query string may be long.
        validate::app_id(app).map_err(|_| Error::InvalidField {
            field: "app",
            reason: "must be an app id (1 to 63 characters of a-z, 0-9 and '-')".into(),
        })?;
    }
    Ok(EventFilter {
        after,
        app: app.map(str::to_string),
        action,
        newest_first,
    })
}
