//! The route table: which paths exist and which methods each takes. Path segments are matched
//! literally; ids never need percent-decoding because none may contain a reserved character.

/// A known path, with the ids it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Apps,
    App(&'a str),
    Keys(&'a str),
    Key(&'a str, &'a str),
    Machines(&'a str),
    Machine(&'a str, &'a str),
    Login,
    Whoami,
    Logout,
    Verify,
    /// The admin dashboard's page, `/`.
    Dashboard,
    /// One of the dashboard's static files, `/assets/{name}`.
    Asset(&'a str),
}

impl<'a> Route<'a> {
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        if path == "/" {
            return Some(Route::Dashboard);
        }
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let route = match segments.as_slice() {
            ["healthz"] => Route::Health,
            ["v1", "apps"] => Route::Apps,
            ["v1", "apps", app] => Route::App(app),
            ["v1", "apps", app, "keys"] => Route::Keys(app),
            ["v1", "apps", app, "keys", key] => Route::Key(app, key),
            ["v1", "apps", app, "machines"] => Route::Machines(app),
            ["v1", "apps", app, "machines", machine] => Route::Machine(app, machine),
            ["v1", "auth", "login"] => Route::Login,
            ["v1", "auth", "whoami"] => Route::Whoami,
            ["v1", "auth", "logout"] => Route::Logout,
            ["v1", "keys", "verify"] => Route::Verify,
            ["assets", name] => Route::Asset(name),
            _ => return None,
        };
        let ids_present = segments.iter().all(|segment| !segment.is_empty());
        ids_present.then_some(route)
    }

    /// The methods this route answers, for dispatch and for the `Allow` header of a 405.
    pub fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Health | Route::Whoami | Route::Dashboard | Route::Asset(_) => &["GET"],
            Route::Apps | Route::Keys(_) => &["GET", "POST"],
            Route::App(_) | Route::Key(..) => &["GET", "DELETE"],
            Route::Machines(_) => &["GET"],
            Route::Machine(..) => &["DELETE"],
            Route::Login | Route::Logout | Route::Verify => &["POST"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_route_and_nothing_else() {
        let cases = [
            ("/healthz", Some(Route::Health)),
            ("/v1/apps", Some(Route::Apps)),
            ("/v1/apps/a", Some(Route::App("a"))),
            ("/v1/apps/a/keys", Some(Route::Keys("a"))),
            ("/v1/apps/a/keys/k", Some(Route::Key("a", "k"))),
            ("/v1/apps/a/machines", Some(Route::Machines("a"))),
            ("/v1/apps/a/machines/m", Some(Route::Machine("a", "m"))),
            ("/v1/auth/login", Some(Route::Login)),
            ("/v1/auth/whoami", Some(Route::Whoami)),
            ("/v1/auth/logout", Some(Route::Logout)),
            ("/v1/keys/verify", Some(Route::Verify)),
            ("/", Some(Route::Dashboard)),
            ("/assets/app.js", Some(Route::Asset("app.js"))),
            ("/assets/", None),
            ("/assets/a/b", None),
            ("/v1/apps/", None),
            ("/v1/apps//keys", None),
            ("/v1/apps/a/keys/k/x", None),
            ("v1/apps", None),
            ("", None),
            ("//", None),
            ("/v2/apps", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::parse(path), expected, "{path}");
        }
    }
}
