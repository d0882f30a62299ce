//! `handle_in_memory`: the same answer as `handle` when memory holds it, and no trace at all
//! (no metric, no throttle failure, no usage stamp) when it gives a request back.

use super::throttle::{Limits, Throttle};
use super::{ROUTE_LABELS, Request, Response, handle, handle_in_memory};
use crate::authority::Authority;
use crate::cache::hot::HotCache;
use crate::cache::usage::UsageStamps;
use crate::domain::audit::Actor;
use crate::domain::model::{NewKey, Timestamp};
use crate::domain::token::{self, TokenHash, TokenKind};
use crate::metrics::Metrics;
use crate::store::{Database, Store};
use std::sync::Arc;

const NOW: Timestamp = Timestamp(1_000);

struct Fixture {
    _dir: tempfile::TempDir,
    authority: Authority,
    store: Arc<Store>,
    stamps: Arc<UsageStamps>,
    /// One failed credential per client and none refilled within a test: a failure counted
    /// where none should be makes the next attempt a 429.
    throttle: Throttle,
    metrics: Metrics,
    key: String,
    session: String,
}

impl Fixture {
    /// An app with one reusable key on a fresh file, and a machine logged in with it.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&Database::File(dir.path().join("a.db"))).unwrap());
        let stamps = Arc::new(UsageStamps::default());
        let authority = Authority::new(
            Arc::clone(&store),
            Arc::clone(&stamps),
            Arc::new(HotCache::default()),
            TokenHash::of("admin"),
            3600,
        );
        let system = Actor::system();
        authority.create_app("app", None, &system, NOW).unwrap();
        let new = NewKey {
            reusable: true,
            ..NewKey::default()
        };
        let (_, key) = authority
            .create_key("app", &new, None, &system, NOW)
            .unwrap();
        let (session, _) = authority.login(key.expose(), None, None, NOW).unwrap();
        let throttle = Throttle::new(Limits {
            burst: 1,
            per_minute: 1,
        });
        let session = session.expose().to_string();
        drop(stamps.take()); // the login's own
        Fixture {
            _dir: dir,
            authority,
            store,
            stamps,
            throttle,
            metrics: Metrics::new(ROUTE_LABELS),
            key: key.expose().to_string(),
            session,
        }
    }

    fn handle(&self, request: &Request) -> Response {
        handle(&self.authority, &self.throttle, &self.metrics, request, NOW)
    }

    fn in_memory(&self, request: &Request) -> Option<Response> {
        handle_in_memory(&self.authority, &self.throttle, &self.metrics, request, NOW)
    }

    fn whoami(&self, token: &str) -> Request {
        bearer(Request::new("GET", "/v1/auth/whoami"), token)
    }

    fn forward_auth(&self, token: &str) -> Request {
        bearer(Request::new("GET", "/v1/forward-auth?x=1"), token)
    }

    fn verify(&self, key: &str) -> Request {
        let mut request = client(Request::new("POST", "/v1/keys/verify"));
        request.content_type = Some("application/json".into());
        request.body = serde_json::to_vec(&serde_json::json!({ "key": key })).unwrap();
        request
    }

    /// The metrics as a scrape shows them, and the stamps pending: what a request leaves.
    fn traces(&self) -> (String, usize) {
        let pending = self.stamps.take();
        let count = pending.len();
        self.stamps.restore(pending);
        (self.metrics.encode(None), count)
    }
}

fn client(mut request: Request) -> Request {
    request.remote_addr = Some("192.0.2.7:4000".parse().unwrap());
    request
}

fn bearer(request: Request, token: &str) -> Request {
    let mut request = client(request);
    request.authorization = Some(format!("Bearer {token}"));
    request
}

/// A credential is cached from its second miss on (`HotCache::admit`): two answers by a
/// worker put it there.
fn warm(fixture: &Fixture, request: &Request) {
    for _ in 0..2 {
        assert_eq!(fixture.handle(request).status, 200);
    }
}

#[test]
fn hot_requests_are_answered_in_memory_exactly_as_a_worker_answers_them() {
    let fixture = Fixture::new();
    let health = client(Request::new("GET", "/healthz"));
    let requests = [
        fixture.whoami(&fixture.session),
        fixture.forward_auth(&fixture.session),
        fixture.verify(&fixture.key),
    ];
    for request in &requests {
        warm(&fixture, request);
    }
    for request in requests.iter().chain([&health]) {
        let inline = fixture.in_memory(request).expect("answered in memory");
        assert_eq!(inline, fixture.handle(request), "{}", request.path);
        assert_eq!(inline.status, 200);
    }
    // Counted and stamped as by a worker: two answers per route, one of them in memory.
    let (metrics, stamps) = fixture.traces();
    assert!(
        metrics.contains(r#"route="/v1/auth/whoami",method="GET",status="200"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="valid"} 4"#), "{metrics}");
    assert_eq!(stamps, 2, "the machine's and the key's");
    // Refusals that need no database are answered in memory too, throttle included.
    let malformed = fixture.whoami("not-a-token");
    assert_eq!(fixture.in_memory(&malformed).unwrap().status, 401);
    assert_eq!(fixture.in_memory(&malformed).unwrap().status, 429);
}

#[test]
fn a_request_that_needs_the_database_is_given_back_without_a_trace() {
    let fixture = Fixture::new();
    let unknown = token::generate(TokenKind::Session);
    let unknown = unknown.expose();
    let cold = [
        // Not cached yet.
        fixture.whoami(&fixture.session),
        fixture.forward_auth(&fixture.session),
        fixture.verify(&fixture.key),
        // A well-formed token the database must be asked about (and would refuse).
        fixture.whoami(unknown),
        // Routes never tried in memory, a login and an admin listing.
        client(Request::new("POST", "/v1/auth/login")),
        bearer(Request::new("GET", "/v1/apps"), "admin"),
    ];
    let before = fixture.traces();
    for request in &cold {
        for _ in 0..3 {
            assert_eq!(fixture.in_memory(request), None, "{}", request.path);
        }
    }
    assert_eq!(fixture.traces(), before, "nothing counted or stamped");
    // The one failure the throttle allows is still there for the worker to spend.
    let refused = fixture.handle(&fixture.whoami(unknown));
    assert_eq!(refused.status, 401);
    assert_eq!(fixture.handle(&fixture.whoami(unknown)).status, 429);
}

#[test]
fn the_database_is_closed_only_inside_memory_only_even_after_a_panic() {
    let fixture = Fixture::new();
    let store = &fixture.store;
    let ran = std::cell::Cell::new(false);
    let refused = crate::store::memory_only(|| {
        store.read(|_| {
            ran.set(true);
            Ok(())
        })
    });
    assert_eq!(refused, Err(crate::domain::error::Error::NeedsDatabase));
    assert!(!ran.get(), "the read ran");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::store::memory_only(|| panic!("a bug"))
    }));
    assert!(panicked.is_err());
    store.read(|_| Ok(())).expect("open again after the panic");
    assert_eq!(
        fixture.handle(&fixture.whoami(&fixture.session)).status,
        200
    );
}
