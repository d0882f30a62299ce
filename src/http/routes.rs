//! The route table: which paths exist and which methods each takes. Path segments are matched
//! literally; ids never need percent-decoding because none may contain a reserved character.
//! `TEMPLATES` enumerates every path as written in the OpenAPI document, so a test can hold the
//! two to each other, and the templates (never raw paths) label the request metrics.

/// A known path, with the ids it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Health,
    OpenApi,
    Metrics,
    Apps,
    App(&'a str),
    Keys(&'a str),
    Key(&'a str, &'a str),
    /// `POST /v1/apps/{app}/keys/{key}/rotate`.
    RotateKey(&'a str, &'a str),
    Machines(&'a str),
    Machine(&'a str, &'a str),
    TrustPolicies(&'a str),
    TrustPolicy(&'a str, &'a str),
    AdminTokens,
    AdminToken(&'a str),
    Audit,
    Webhooks,
    Webhook(&'a str),
    Deliveries(&'a str),
    Login,
    Whoami,
    Logout,
    Verify,
    ForwardAuth,
    RevokeByValue,
    /// GitLab's Token Revocation API, when configured.
    RevocableTokenTypes,
    RevokeTokens,
    /// GitHub secret scanning, when configured.
    GithubSecretScanning,
    /// `GET /v1/server`: the server's version and settings a client may show.
    Server,
    /// The admin dashboard's page, `/`.
    Dashboard,
    /// One of the dashboard's static files, `/assets/{name}`.
    Asset(&'a str),
}

/// The label of every route in the request metrics: each path template, in the OpenAPI
/// document's notation, then `UNMATCHED` for paths that match no route.
pub(crate) const ROUTE_LABELS: &[&str] = &[
    "/healthz",
    "/openapi.json",
    "/metrics",
    "/v1/apps",
    "/v1/apps/{app}",
    "/v1/apps/{app}/keys",
    "/v1/apps/{app}/keys/{key}",
    "/v1/apps/{app}/keys/{key}/rotate",
    "/v1/apps/{app}/machines",
    "/v1/apps/{app}/machines/{machine}",
    "/v1/apps/{app}/trust-policies",
    "/v1/apps/{app}/trust-policies/{policy}",
    "/v1/admin-tokens",
    "/v1/admin-tokens/{token}",
    "/v1/audit",
    "/v1/webhooks",
    "/v1/webhooks/{webhook}",
    "/v1/webhooks/{webhook}/deliveries",
    "/v1/auth/login",
    "/v1/auth/whoami",
    "/v1/auth/logout",
    "/v1/keys/verify",
    "/v1/forward-auth",
    "/v1/keys/revoke-by-value",
    "/v1/revocable_token_types",
    "/v1/revoke_tokens",
    "/v1/secret-scanning/github",
    "/v1/server",
    "/",
    "/assets/{asset}",
    UNMATCHED,
];

/// Every route's path template.
#[cfg(test)]
pub(crate) const TEMPLATES: &[&str] = ROUTE_LABELS.split_last().expect("not empty").1;

/// The label for a path that matches no route: unknown paths must not become label values.
pub(crate) const UNMATCHED: &str = "unmatched";

impl<'a> Route<'a> {
    pub(crate) fn parse(path: &'a str) -> Option<Route<'a>> {
        if path == "/" {
            return Some(Route::Dashboard);
        }
        let mut segments = [""; 6];
        let mut count = 0;
        for segment in path.strip_prefix('/')?.split('/') {
            // Empty segments (`//`, a trailing `/`) name no id and no route.
            if segment.is_empty() || count == segments.len() {
                return None;
            }
            segments[count] = segment;
            count += 1;
        }
        let route = match &segments[..count] {
            ["healthz"] => Route::Health,
            ["openapi.json"] => Route::OpenApi,
            ["metrics"] => Route::Metrics,
            ["v1", "apps"] => Route::Apps,
            ["v1", "apps", app] => Route::App(app),
            ["v1", "apps", app, "keys"] => Route::Keys(app),
            ["v1", "apps", app, "keys", key] => Route::Key(app, key),
            ["v1", "apps", app, "keys", key, "rotate"] => Route::RotateKey(app, key),
            ["v1", "apps", app, "machines"] => Route::Machines(app),
            ["v1", "apps", app, "machines", machine] => Route::Machine(app, machine),
            ["v1", "apps", app, "trust-policies"] => Route::TrustPolicies(app),
            ["v1", "apps", app, "trust-policies", policy] => Route::TrustPolicy(app, policy),
            ["v1", "admin-tokens"] => Route::AdminTokens,
            ["v1", "admin-tokens", token] => Route::AdminToken(token),
            ["v1", "audit"] => Route::Audit,
            ["v1", "webhooks"] => Route::Webhooks,
            ["v1", "webhooks", webhook] => Route::Webhook(webhook),
            ["v1", "webhooks", webhook, "deliveries"] => Route::Deliveries(webhook),
            ["v1", "auth", "login"] => Route::Login,
            ["v1", "auth", "whoami"] => Route::Whoami,
            ["v1", "auth", "logout"] => Route::Logout,
            ["v1", "keys", "verify"] => Route::Verify,
            ["v1", "forward-auth"] => Route::ForwardAuth,
            ["v1", "keys", "revoke-by-value"] => Route::RevokeByValue,
            ["v1", "revocable_token_types"] => Route::RevocableTokenTypes,
            ["v1", "revoke_tokens"] => Route::RevokeTokens,
            ["v1", "secret-scanning", "github"] => Route::GithubSecretScanning,
            ["v1", "server"] => Route::Server,
            ["assets", name] => Route::Asset(name),
            _ => return None,
        };
        Some(route)
    }

    /// Whether machines and services call this route on every request, and its answer for a
    /// cached credential needs nothing but memory: what `handle_in_memory` tries first.
    pub(crate) fn is_hot(self) -> bool {
        matches!(
            self,
            Route::Health | Route::Whoami | Route::Verify | Route::ForwardAuth
        )
    }

    /// The methods this route answers, for dispatch and for the `Allow` header of a 405.
    pub(crate) fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Health | Route::OpenApi | Route::Metrics => &["GET"],
            Route::Dashboard | Route::Asset(_) => &["GET"],
            Route::Whoami | Route::ForwardAuth | Route::Machines(_) | Route::Server => &["GET"],
            Route::RevocableTokenTypes => &["GET"],
            Route::RevokeByValue | Route::RevokeTokens | Route::GithubSecretScanning => &["POST"],
            Route::Audit | Route::Deliveries(_) => &["GET"],
            Route::Apps | Route::Keys(_) | Route::AdminTokens | Route::Webhooks => &["GET", "POST"],
            Route::TrustPolicies(_) => &["GET", "POST"],
            Route::App(_) | Route::Key(..) => &["GET", "DELETE"],
            Route::Machine(..) | Route::AdminToken(_) | Route::Webhook(_) => &["DELETE"],
            Route::TrustPolicy(..) => &["DELETE"],
            Route::Login | Route::Logout | Route::Verify | Route::RotateKey(..) => &["POST"],
        }
    }

    /// The path template this route was parsed from (an entry of `TEMPLATES`).
    pub(crate) fn template(self) -> &'static str {
        match self {
            Route::Health => "/healthz",
            Route::OpenApi => "/openapi.json",
            Route::Metrics => "/metrics",
            Route::Apps => "/v1/apps",
            Route::App(_) => "/v1/apps/{app}",
            Route::Keys(_) => "/v1/apps/{app}/keys",
            Route::Key(..) => "/v1/apps/{app}/keys/{key}",
            Route::RotateKey(..) => "/v1/apps/{app}/keys/{key}/rotate",
            Route::Machines(_) => "/v1/apps/{app}/machines",
            Route::Machine(..) => "/v1/apps/{app}/machines/{machine}",
            Route::TrustPolicies(_) => "/v1/apps/{app}/trust-policies",
            Route::TrustPolicy(..) => "/v1/apps/{app}/trust-policies/{policy}",
            Route::AdminTokens => "/v1/admin-tokens",
            Route::AdminToken(_) => "/v1/admin-tokens/{token}",
            Route::Audit => "/v1/audit",
            Route::Webhooks => "/v1/webhooks",
            Route::Webhook(_) => "/v1/webhooks/{webhook}",
            Route::Deliveries(_) => "/v1/webhooks/{webhook}/deliveries",
            Route::Login => "/v1/auth/login",
            Route::Whoami => "/v1/auth/whoami",
            Route::Logout => "/v1/auth/logout",
            Route::Verify => "/v1/keys/verify",
            Route::ForwardAuth => "/v1/forward-auth",
            Route::RevokeByValue => "/v1/keys/revoke-by-value",
            Route::RevocableTokenTypes => "/v1/revocable_token_types",
            Route::RevokeTokens => "/v1/revoke_tokens",
            Route::GithubSecretScanning => "/v1/secret-scanning/github",
            Route::Server => "/v1/server",
            Route::Dashboard => "/",
            Route::Asset(_) => "/assets/{asset}",
        }
    }

    /// The app a path names, which a token limited to some apps must be allowed.
    pub(crate) fn app(self) -> Option<&'a str> {
        match self {
            Route::App(app)
            | Route::Keys(app)
            | Route::Key(app, _)
            | Route::RotateKey(app, _)
            | Route::Machines(app)
            | Route::Machine(app, _)
            | Route::TrustPolicies(app)
            | Route::TrustPolicy(app, _) => Some(app),
            _ => None,
        }
    }
}

/// A concrete path for `template`, with each `{name}` replaced by `name` itself.
#[cfg(test)]
pub(crate) fn example_path(template: &str) -> String {
    template.replace(['{', '}'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_route_and_nothing_else() {
        let cases = [
            ("/healthz", Some(Route::Health)),
            ("/openapi.json", Some(Route::OpenApi)),
            ("/metrics", Some(Route::Metrics)),
            ("/v1/apps", Some(Route::Apps)),
            ("/v1/apps/a", Some(Route::App("a"))),
            ("/v1/apps/a/keys", Some(Route::Keys("a"))),
            ("/v1/apps/a/keys/k", Some(Route::Key("a", "k"))),
            ("/v1/apps/a/machines", Some(Route::Machines("a"))),
            ("/v1/apps/a/trust-policies", Some(Route::TrustPolicies("a"))),
            (
                "/v1/apps/a/trust-policies/p",
                Some(Route::TrustPolicy("a", "p")),
            ),
            ("/v1/apps/a/machines/m", Some(Route::Machine("a", "m"))),
            ("/v1/admin-tokens", Some(Route::AdminTokens)),
            ("/v1/admin-tokens/t", Some(Route::AdminToken("t"))),
            ("/v1/audit", Some(Route::Audit)),
            ("/v1/webhooks", Some(Route::Webhooks)),
            ("/v1/webhooks/w", Some(Route::Webhook("w"))),
            ("/v1/webhooks/w/deliveries", Some(Route::Deliveries("w"))),
            ("/v1/auth/login", Some(Route::Login)),
            ("/v1/auth/whoami", Some(Route::Whoami)),
            ("/v1/auth/logout", Some(Route::Logout)),
            ("/v1/keys/verify", Some(Route::Verify)),
            ("/v1/forward-auth", Some(Route::ForwardAuth)),
            ("/v1/keys/revoke-by-value", Some(Route::RevokeByValue)),
            (
                "/v1/revocable_token_types",
                Some(Route::RevocableTokenTypes),
            ),
            ("/v1/revoke_tokens", Some(Route::RevokeTokens)),
            (
                "/v1/secret-scanning/github",
                Some(Route::GithubSecretScanning),
            ),
            ("/", Some(Route::Dashboard)),
            ("/assets/app.js", Some(Route::Asset("app.js"))),
            ("/assets/", None),
            ("/assets/a/b", None),
            ("/v1/apps/", None),
            ("/v1/apps//keys", None),
            ("/v1/apps/a/keys/k/rotate", Some(Route::RotateKey("a", "k"))),
            ("/v1/server", Some(Route::Server)),
            ("/v1/apps/a/keys/k/x", None),
            ("/v1/apps/a/keys/k/rotate/x", None),
            ("/v1/apps/a/keys/k/x/y/z", None),
            ("v1/apps", None),
            ("", None),
            ("//", None),
            ("/v2/apps", None),
            ("/metrics/", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::parse(path), expected, "{path}");
            if let Some(route) = expected {
                assert!(TEMPLATES.contains(&route.template()), "{path}");
            }
        }
    }

    #[test]
    fn every_template_parses_back_to_itself() {
        for template in TEMPLATES {
            let path = example_path(template);
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{template} does not parse"));
            assert_eq!(route.template(), *template);
        }
    }
}
