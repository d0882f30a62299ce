//! Which credential and scope each route needs: one table (`access`), consulted in one place
//! (`authorize`, called by `http::credentialed` for every admin route before its handler
//! runs). `access` matches every route with no `_` arm, so a new route cannot compile without
//! a decision here, and the matrix test (tests/it/scopes.rs) walks every operation of the
//! OpenAPI document, whose `x-scope` a unit test below holds to this table.

use super::routes::Route;
use crate::domain::access::{Principal, Scope};
use crate::domain::error::{Error, Result};

/// What a request needs before its handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// No credential at all (health, metrics, the dashboard's files).
    Public,
    /// The caller's own credential: an auth key, a session token (machine and integration
    /// endpoints). Admin tokens do not apply.
    Own,
    /// Any admin token, whatever its scopes (what the server is: version, settings).
    AnyAdmin,
    /// An admin token with this scope (root has every scope).
    Scoped(Scope),
    /// The root admin token only: managing admin tokens and webhooks.
    Root,
}

/// The table: the access `method` on `route` needs.
pub(super) fn access(route: Route, method: &str) -> Access {
    let read = method == "GET";
    let pick =
        |read_scope, write_scope| Access::Scoped(if read { read_scope } else { write_scope });
    match route {
        Route::Health | Route::OpenApi | Route::Metrics | Route::Dashboard | Route::Asset(_) => {
            Access::Public
        }
        Route::Login | Route::Whoami | Route::Logout | Route::Verify | Route::ForwardAuth => {
            Access::Own
        }
        // GitLab's pre-shared token and GitHub's signature: their own credentials.
        Route::RevocableTokenTypes | Route::RevokeTokens | Route::GithubSecretScanning => {
            Access::Own
        }
        Route::RevokeByValue => Access::Scoped(Scope::KeysWrite),
        Route::Apps | Route::App(_) => pick(Scope::AppsRead, Scope::AppsWrite),
        Route::Keys(_) | Route::Key(..) | Route::RotateKey(..) => {
            pick(Scope::KeysRead, Scope::KeysWrite)
        }
        Route::Machines(_) | Route::Machine(..) => pick(Scope::MachinesRead, Scope::MachinesWrite),
        Route::Audit => Access::Scoped(Scope::AuditRead),
        Route::Server => Access::AnyAdmin,
        Route::AdminTokens | Route::AdminToken(_) => Access::Root,
        Route::Webhooks | Route::Webhook(_) | Route::Deliveries(_) => Access::Root,
    }
}

/// Refuses `principal` on `method` `route` unless the table allows it: the scope, then the
/// app the path names. A refusal is 403 `forbidden`, before anything is read.
pub(super) fn authorize(principal: &Principal, route: Route, method: &str) -> Result<()> {
    match access(route, method) {
        Access::Scoped(scope) => principal.require(scope)?,
        Access::Root => principal.require_root()?,
        Access::AnyAdmin => {}
        Access::Public | Access::Own => {
            return Err(Error::Forbidden(
                "this endpoint takes no admin token".into(),
            ));
        }
    }
    match route.app() {
        Some(app) => principal.require_app(app),
        None => Ok(()),
    }
}

/// The name of an access in the OpenAPI document's `x-scope`.
#[cfg(test)]
pub(super) fn x_scope(access: Access) -> Option<&'static str> {
    match access {
        Access::Public | Access::Own => None,
        Access::Scoped(scope) => Some(scope.as_str()),
        Access::Root => Some("root"),
        Access::AnyAdmin => Some("any"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::OPENAPI_JSON;
    use super::super::routes::{Route, TEMPLATES, example_path};
    use super::*;

    /// Every operation of the OpenAPI document states the scope this table gives it
    /// (`x-scope`), and the operations that take none state none: the document users read
    /// and the integration matrix test walk cannot drift from the table.
    #[test]
    fn the_openapi_document_states_each_routes_scope() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
        for template in TEMPLATES {
            let path = example_path(template);
            let route = Route::parse(&path).expect("every template parses");
            for method in route.methods() {
                let operation = &doc["paths"][*template][method.to_ascii_lowercase()];
                assert_eq!(
                    operation["x-scope"].as_str(),
                    x_scope(access(route, method)),
                    "x-scope of {method} {template}"
                );
            }
        }
    }
}
