//! The dashboard's files as served by the real binary: the page and every asset it links to
//! come with the right content type and strict security headers, the page runs no inline
//! script or style, loads nothing from elsewhere, and the script never builds HTML from
//! strings. (What the page does is tested in a real browser: tests/browser.)

use crate::support::*;

/// The headers every page and asset response must carry, with their exact values.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
];

/// Content-Security-Policy directives that must be present, exactly.
const CSP_DIRECTIVES: &[&str] = &[
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
];

#[track_caller]
fn check_served(reply: &Reply, content_type: &str) {
    if reply.status != 200 || reply.header("Content-Type") != Some(content_type) {
        reply.fail(&format!("expected 200 with Content-Type {content_type}"));
    }
    for (name, value) in SECURITY_HEADERS {
        if reply.header(name) != Some(value) {
            reply.fail(&format!("expected {name}: {value}"));
        }
    }
    let csp = reply.header("Content-Security-Policy").unwrap_or_default();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for wanted in CSP_DIRECTIVES {
        if !directives.contains(wanted) {
            reply.fail(&format!("the CSP lacks `{wanted}`"));
        }
    }
    if csp.contains("unsafe-") || csp.contains('*') || csp.contains("http") {
        reply.fail("the CSP allows inline code, eval or other origins");
    }
}

/// Every value of `attribute="…"` in `html`, in order.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let opening = format!(" {attribute}=\"");
    html.match_indices(&opening)
        .map(|(at, _)| {
            let rest = &html[at + opening.len()..];
            &rest[..rest.find('"').expect("attribute values are closed")]
        })
        .collect()
}

/// Each `<tag …>` opening tag in `html`.
fn opening_tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let opening = format!("<{tag}");
    html.match_indices(&opening)
        .map(|(at, _)| {
            let rest = &html[at..];
            &rest[..=rest.find('>').expect("tags are closed")]
        })
        .collect()
}

#[test]
fn the_page_is_served_with_strict_security_headers_and_no_inline_code() {
    let server = TestServer::start();
    let page = server.anonymous().get("/");
    check_served(&page, "text/html; charset=utf-8");
    let html = page.body.to_ascii_lowercase();
    assert!(html.starts_with("<!doctype html>"), "{html}");

    let scripts = opening_tags(&html, "script");
    assert!(!scripts.is_empty(), "the page loads a script");
    for tag in &scripts {
        assert!(tag.contains(" src=\"/assets/"), "inline script: {tag}");
    }
    assert_eq!(
        html.matches("<script").count(),
        html.matches("></script>").count(),
        "every script element is empty (its code comes from src)"
    );
    assert!(!html.contains("<style"), "inline <style> element");
    assert!(!html.contains(" style=\""), "inline style attribute");
    assert!(!html.contains("javascript:"), "javascript: URL");
    for event in [
        "onclick", "onload", "onerror", "onsubmit", "oninput", "onchange",
    ] {
        assert!(
            !html.contains(&format!(" {event}=")),
            "inline {event} handler"
        );
    }
    // Nothing is loaded from anywhere else: no CDN, no network.
    for url in attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
    {
        assert!(
            url.starts_with("/assets/") || url.starts_with('#'),
            "the page links to {url}"
        );
    }
}

#[test]
fn every_asset_the_page_links_to_is_served_with_its_content_type() {
    let server = TestServer::start();
    let page = server.anonymous().get("/").body;
    let expected_type = |path: &str| match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => panic!("the page links to {path}, of no known type"),
    };
    let mut assets: Vec<&str> = attribute_values(&page, "src")
        .into_iter()
        .chain(attribute_values(&page, "href"))
        .filter(|url| url.starts_with("/assets/"))
        .collect();
    assets.sort_unstable();
    assets.dedup();
    assert_eq!(
        assets,
        ["/assets/app.css", "/assets/app.js", "/assets/favicon.svg"]
    );
    for path in assets {
        let reply = server.anonymous().get(path);
        check_served(&reply, expected_type(path));
        assert!(!reply.body.is_empty(), "{path} is empty");
    }
}

#[test]
fn the_script_never_builds_html_from_strings() {
    let server = TestServer::start();
    let script = server.anonymous().get("/assets/app.js").body;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
    ] {
        assert!(!script.contains(sink), "app.js uses {sink}");
    }
    assert!(script.contains("textContent"));
    assert!(script.contains("sessionStorage"));
}

#[test]
fn unknown_assets_wrong_methods_and_query_strings_are_refused() {
    let server = TestServer::start();
    let anonymous = server.anonymous();
    anonymous
        .get("/assets/missing.js")
        .expect_error(404, "not_found");
    anonymous
        .get("/assets/../index.html")
        .expect_error(404, "not_found");
    anonymous.get("/assets").expect_error(404, "not_found");
    anonymous.get("/index.html").expect_error(404, "not_found");
    let reply = anonymous.post("/", &serde_json::json!({}));
    assert_eq!(reply.header("Allow"), Some("GET"));
    reply.expect_error(405, "method_not_allowed");
    anonymous
        .send("DELETE", "/assets/app.js", None, None)
        .expect_error(405, "method_not_allowed");
    // A token pasted into the URL is refused, never silently accepted into logs and history.
    anonymous
        .get("/?token=enadm_x")
        .expect_error(400, "invalid_query");
}

#[test]
fn api_responses_keep_their_json_behaviour() {
    let server = TestServer::start();
    let health = server.anonymous().get("/healthz");
    assert_eq!(health.header("Content-Type"), Some("application/json"));
    assert_eq!(health.header("Content-Security-Policy"), None);
    assert_eq!(health.expect(200)["status"], "ok");
    server
        .anonymous()
        .get("/v1/apps")
        .expect_error(401, "missing_credentials");
}
