//! The admin dashboard: the page at `/` and its static files under `/assets/`, compiled into
//! the binary so that running it needs no network and no build step. The files themselves live
//! in `dashboard/` at the repository root; the page is plain HTML, CSS and JavaScript that
//! talks to the JSON API with the admin token, like any other client.

use super::Response;

/// A file the dashboard serves.
struct Asset {
    /// The path it is served at.
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const PAGE: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../dashboard/index.html"),
};

const ASSETS: &[Asset] = &[
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../dashboard/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../dashboard/app.css"),
    },
    Asset {
        path: "/assets/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../dashboard/favicon.svg"),
    },
];

/// What the browser may do with the page: run and style only the files served here, talk only
/// to this server, never be framed, never submit a form natively (so a token typed before the
/// script runs cannot end up in a URL), and send no referrer anywhere.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
];

/// The dashboard's page.
pub(crate) fn page() -> Response {
    serve(&PAGE)
}

/// The static file `/assets/{name}`, if there is one by that name.
pub(crate) fn asset(name: &str) -> Option<Response> {
    ASSETS
        .iter()
        .find(|asset| asset.path.strip_prefix("/assets/") == Some(name))
        .map(serve)
}

fn serve(asset: &Asset) -> Response {
    let mut response = Response::body(200, asset.content_type, asset.body);
    response.headers.extend(
        SECURITY_HEADERS
            .iter()
            .map(|(name, value)| (*name, value.to_string())),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_links_to_is_served() {
        for file in ASSETS {
            assert!(
                PAGE.body.contains(&format!("\"{}\"", file.path)),
                "{} is served but the page never links to it",
                file.path
            );
            let name = file.path.trim_start_matches("/assets/");
            assert_eq!(asset(name).expect("served").body, file.body.as_bytes());
        }
        assert!(asset("missing.js").is_none());
        assert!(asset("../index.html").is_none());
    }
}
