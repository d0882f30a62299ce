//! Lists a page at a time (API.md v2, "Lists: pagination and filters"): `limit` (1–1000,
//! default 100), `cursor` and `next_cursor`, for apps, keys and machines. A walk along the
//! cursors returns every row that exists throughout it exactly once, whatever is created or
//! deleted between pages; a bad `limit` or `cursor` is 422 naming the field; keys can be
//! filtered by tags, machines by tags and by key, with cursors that stay correct.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The ids of a page's items.
fn ids(page: &Value, field: &str) -> Vec<String> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("{page} has no {field} array"))
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_string())
        .collect()
}

/// Walks `path` (which may carry a query) `limit` rows at a time, running `between(n)` after
/// the n-th page; returns every id seen, in order. Checks each page's shape on the way: a
/// page that says another follows is full.
fn walk(
    server: &TestServer,
    path: &str,
    field: &str,
    limit: usize,
    mut between: impl FnMut(usize),
) -> Vec<String> {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 1.. {
        let mut url = format!("{path}{joiner}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = server.admin().get(&url).expect(200);
        let fields: BTreeSet<&str> = page
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, BTreeSet::from([field, "next_cursor"]), "{page}");
        let items = ids(&page, field);
        assert!(items.len() <= limit, "{url}: {page}");
        seen.extend(items.iter().cloned());
        match &page["next_cursor"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(items.len(), limit, "a page before the last is full: {page}");
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor is {other}"),
        }
        between(page_number);
        assert!(page_number < 100, "the walk never ends");
    }
    seen
}

/// Asserts that `seen` holds no id twice, every id of `kept` once, and none of `gone`.
#[track_caller]
fn assert_exactly_once(seen: &[String], kept: &[String], gone: &[String]) {
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an id seen twice: {seen:?}");
    for id in kept {
        assert!(unique.contains(id), "{id} was never seen: {seen:?}");
    }
    for id in gone {
        assert!(
            !unique.contains(id),
            "{id} was deleted before it was reached: {seen:?}"
        );
    }
}

#[test]
fn walking_apps_sees_each_once_while_apps_come_and_go() {
    let server = TestServer::start();
    let mut apps: Vec<String> = (0..20)
        .map(|n| server.create_app(&format!("app-{n:02}")))
        .collect();
    let admin = server.admin();
    let (mut deleted_ahead, mut deleted_behind) = (Vec::new(), Vec::new());
    let seen = walk(&server, "/v1/apps", "apps", 3, |page| {
        // Ahead of the walk (the last ids, while it is still on the first few): gone before
        // it gets there.
        if page <= 3 {
            let ahead = apps.pop().expect("apps left to delete");
            admin.delete(&format!("/v1/apps/{ahead}")).expect(204);
            deleted_ahead.push(ahead);
        }
        // Behind it: already seen, and its id reused by a new app (a new row).
        let behind = format!("app-{:02}", page - 1);
        admin.delete(&format!("/v1/apps/{behind}")).expect(204);
        server.create_app(&behind);
        deleted_behind.push(behind);
        // New apps on both sides of the walk.
        server.create_app(&format!("a-new-{page}"));
        server.create_app(&format!("z-new-{page}"));
    });
    let kept: Vec<String> = apps.clone();
    assert_exactly_once(&seen, &kept, &deleted_ahead);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "apps are listed by id");
    assert!(
        seen.iter().all(|id| !id.starts_with("a-new-")),
        "apps created behind the walk are not seen: {seen:?}"
    );
}

#[test]
fn walking_keys_sees_each_once_newest_first_while_keys_come_and_go() {
    let server = TestServer::start();
    server.create_app("ci");
    let admin = server.admin();
    let mut keys: Vec<String> = (0..12)
        .map(|_| {
            server.create_key("ci", json!({}))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    keys.reverse(); // newest first, the listing's order
    let (mut revoked_ahead, mut created) = (Vec::new(), Vec::new());
    let seen = walk(&server, "/v1/apps/ci/keys", "keys", 4, |page| {
        // The oldest key left is always ahead of a newest-first walk.
        let ahead = keys.pop().expect("keys left to revoke");
        admin
            .delete(&format!("/v1/apps/ci/keys/{ahead}"))
            .expect(204);
        revoked_ahead.push(ahead);
        // A revoked key already seen stays seen once; a new key is behind the walk.
        let seen_one = &keys[page - 1];
        admin
            .delete(&format!("/v1/apps/ci/keys/{seen_one}"))
            .expect(204);
        created.push(
            server.create_key("ci", json!({}))["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    });
    let mut expected_order = seen.clone();
    expected_order.retain(|id| keys.contains(id));
    assert_eq!(expected_order, keys, "newest first");
    assert_exactly_once(&seen, &keys, &revoked_ahead);
    assert_exactly_once(&seen, &[], &created);

    // With revoked keys, every key there is, once.
    let everything = walk(
        &server,
        "/v1/apps/ci/keys?include_revoked=true",
        "keys",
        5,
        |_| {},
    );
    let all: Vec<String> = keys
        .iter()
        .chain(&revoked_ahead)
        .chain(&created)
        .cloned()
        .collect();
    assert_exactly_once(&everything, &all, &[]);
    assert_eq!(everything.len(), all.len());
}

#[test]
fn walking_machines_sees_each_once_newest_first_while_machines_come_and_go() {
    let server = TestServer::start();
    server.create_app("fleet");
    let key = server.create_key("fleet", json!({"reusable": true}));
    let secret = key["key"].as_str().unwrap().to_string();
    let login = |server: &TestServer| -> String {
        server.login(&secret)["machine"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut machines: Vec<String> = (0..14).map(|_| login(&server)).collect();
    machines.reverse(); // newest first
    let admin = server.admin();
    let (mut gone_ahead, mut created) = (Vec::new(), Vec::new());
    let seen = walk(&server, "/v1/apps/fleet/machines", "machines", 4, |page| {
        let ahead = machines.pop().expect("machines left to log out");
        admin
            .delete(&format!("/v1/apps/fleet/machines/{ahead}"))
            .expect(204);
        gone_ahead.push(ahead);
        let seen_one = machines.remove(page - 1);
        admin
            .delete(&format!("/v1/apps/fleet/machines/{seen_one}"))
            .expect(204);
        created.push(login(&server));
    });
    assert_exactly_once(&seen, &machines, &gone_ahead);
    assert_exactly_once(&seen, &[], &created);
    let mut order = seen.clone();
    order.retain(|id| machines.contains(id));
    assert_eq!(order, machines, "newest first");
}

#[test]
fn pages_hold_100_rows_by_default_and_at_most_1000() {
    const ROWS: i64 = 1_001;
    let server = TestServer::start();
    server.create_app("fleet");
    let key = server.create_key("fleet", json!({"reusable": true}));
    let key_id = key["id"].as_str().unwrap();
    // More rows than the largest page, written straight into the database.
    let db = server.db();
    db.insert_apps(ROWS);
    db.insert_keys(key_id, "bulk", ROWS);
    db.insert_machines(key_id, "bulk", ROWS, false);
    server.login(key["key"].as_str().unwrap());
    let admin = server.admin();
    for (path, field) in [
        ("/v1/apps", "apps"),
        ("/v1/apps/fleet/keys", "keys"),
        ("/v1/apps/fleet/machines", "machines"),
    ] {
        let first = admin.get(path).expect(200);
        assert_eq!(ids(&first, field).len(), 100, "{path}: the default page");
        assert!(first["next_cursor"].is_string(), "{path}");
        let largest = admin.get(&format!("{path}?limit=1000")).expect(200);
        assert_eq!(ids(&largest, field).len(), 1000, "{path}");
        let cursor = largest["next_cursor"].as_str().expect("a next page");
        let rest = admin
            .get(&format!("{path}?limit=1000&cursor={cursor}"))
            .expect(200);
        // 1,001 bulk rows and the one made over HTTP.
        assert_eq!(ids(&rest, field).len(), 2, "{path}");
        assert_eq!(rest["next_cursor"], Value::Null, "{path}");
        let error = admin
            .get(&format!("{path}?limit=1001"))
            .expect_error(422, "invalid_field");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`limit`"),
            "{error}"
        );
    }
}

#[test]
fn bad_limits_and_cursors_are_422_naming_the_field() {
    let server = TestServer::start();
    server.create_app("ci");
    server.create_app("cd");
    let admin = server.admin();
    let apps_cursor = admin.get("/v1/apps?limit=1").expect(200)["next_cursor"]
        .as_str()
        .expect("a second app")
        .to_string();
    let not_a_cursor = hex::encode(r#"{"Machine":{"pk":"x"}}"#);
    let too_long = "7b".repeat(400);
    for list in ["/v1/apps", "/v1/apps/ci/keys", "/v1/apps/ci/machines"] {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("limit=", "limit"),
            ("limit=1.5", "limit"),
            ("limit=1&limit=2", "limit"),
            ("cursor=", "cursor"),
            ("cursor=not-hex", "cursor"),
            (&format!("cursor={not_a_cursor}"), "cursor"),
            (&format!("cursor={too_long}"), "cursor"),
            (
                &format!("cursor={apps_cursor}&cursor={apps_cursor}"),
                "cursor",
            ),
        ] {
            let error = admin
                .get(&format!("{list}?{query}"))
                .expect_error(422, "invalid_field");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("`{field}`")),
                "{list}?{query}: {message}"
            );
        }
        // Parameters a list does not take stay what they were: 400 invalid_query.
        for query in ["offset=5", "page=2", "sort=id"] {
            admin
                .get(&format!("{list}?{query}"))
                .expect_error(400, "invalid_query");
        }
    }
    // A cursor of one list is not a cursor of another.
    for list in ["/v1/apps/ci/keys", "/v1/apps/ci/machines"] {
        admin
            .get(&format!("{list}?cursor={apps_cursor}"))
            .expect_error(422, "invalid_field");
    }
    admin
        .get(&format!("/v1/apps?cursor={apps_cursor}"))
        .expect(200);
}

#[test]
fn machines_can_be_listed_for_one_key() {
    let server = TestServer::start();
    server.create_app("fleet");
    server.create_app("other");
    let admin = server.admin();
    let key = |app: &str| server.create_key(app, json!({"reusable": true}));
    let (a, b, elsewhere) = (key("fleet"), key("fleet"), key("other"));
    let log_in = |key: &Value, times: usize| -> Vec<String> {
        let mut ids: Vec<String> = (0..times)
            .map(|_| {
                let login = server.login(key["key"].as_str().unwrap());
                login["machine"]["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.reverse();
        ids
    };
    let of_a = log_in(&a, 3);
    log_in(&b, 2);
    log_in(&elsewhere, 1);
    let id = |key: &Value| key["id"].as_str().unwrap().to_string();

    let path = format!("/v1/apps/fleet/machines?key_id={}", id(&a));
    assert_eq!(walk(&server, &path, "machines", 2, |_| {}), of_a);
    let listed = admin.get(&path).expect(200);
    for machine in listed["machines"].as_array().unwrap() {
        assert_eq!(machine["key_id"], a["id"]);
    }
    assert_eq!(
        ids(
            &admin.get("/v1/apps/fleet/machines").expect(200),
            "machines"
        )
        .len(),
        5
    );
    // A key of another app, an unknown key and a revoked key have no machines here.
    admin
        .delete(&format!("/v1/apps/fleet/keys/{}", id(&b)))
        .expect(204);
    for key_id in [id(&elsewhere), "key_unknown".into(), id(&b)] {
        assert_eq!(
            admin
                .get(&format!("/v1/apps/fleet/machines?key_id={key_id}"))
                .expect(200),
            json!({"machines": [], "next_cursor": null}),
            "{key_id}"
        );
    }
    let twice = format!("/v1/apps/fleet/machines?key_id={0}&key_id={0}", id(&a));
    admin.get(&twice).expect_error(422, "invalid_field");
}

/// `?tag=` on keys: only keys carrying every tag given (repeatable), newest first, walked a
/// page at a time with cursors that stay correct while matching and other keys are created
/// between pages; with `include_revoked` too. A malformed tag is 422 naming `tag`.
#[test]
fn keys_can_be_filtered_by_tags_and_walked_with_cursors() {
    let server = TestServer::start();
    server.create_app("fleet");
    let admin = server.admin();
    let create = |tags: Value| -> String {
        let key = server.create_key("fleet", json!({"reusable": true, "tags": tags}));
        key["id"].as_str().unwrap().to_string()
    };
    let (mut both, mut ci) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        let id = create(json!(["tag:prod", "tag:ci"]));
        both.push(id.clone());
        ci.push(id);
        ci.push(create(json!(["tag:ci"])));
        create(json!(["tag:prod"]));
        create(json!([]));
    }
    both.reverse();
    ci.reverse();
    let mut added = Vec::new();
    let path = "/v1/apps/fleet/keys?tag=tag:ci&tag=tag:prod";
    let seen = walk(&server, path, "keys", 3, |_| {
        // Created after the walk began: newer than every page, so never reached.
        added.push(create(json!(["tag:ci", "tag:prod"])));
        create(json!(["tag:ci"]));
    });
    assert_eq!(seen, both, "newest first, each once");
    assert_exactly_once(&seen, &both, &added);
    let seen_ci = walk(&server, "/v1/apps/fleet/keys?tag=tag:ci", "keys", 5, |_| {});
    let tail = &seen_ci[seen_ci.len() - ci.len()..];
    assert_eq!(
        tail,
        &ci[..],
        "the keys created before, after the ones added since"
    );

    // Revoked keys only with include_revoked, filtered all the same.
    admin
        .delete(&format!("/v1/apps/fleet/keys/{}", both[0]))
        .expect(204);
    assert!(!ids(&admin.get(path).expect(200), "keys").contains(&both[0]));
    let with_revoked = format!("{path}&include_revoked=true&limit=1000");
    assert!(ids(&admin.get(&with_revoked).expect(200), "keys").contains(&both[0]));
    assert_eq!(
        admin.get("/v1/apps/fleet/keys?tag=tag:nowhere").expect(200),
        json!({"keys": [], "next_cursor": null})
    );
    for bad in ["ci", "tag:", "tag:CI", "tag:a%2Cb"] {
        let error = admin
            .get(&format!("/v1/apps/fleet/keys?tag={bad}"))
            .expect_error(422, "invalid_field");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`tag`")
        );
    }
}

/// `?tag=` on machines, alone and with `?key_id=`: the machines whose key had every tag given
/// at their login, newest first, walked with cursors.
#[test]
fn machines_can_be_filtered_by_tags_and_by_key() {
    let server = TestServer::start();
    server.create_app("fleet");
    let admin = server.admin();
    let key = |tags: Value| server.create_key("fleet", json!({"reusable": true, "tags": tags}));
    let keys = [
        key(json!(["tag:prod", "tag:web"])),
        key(json!(["tag:db", "tag:prod"])),
        key(json!([])),
    ];
    // Every login, newest first, with the index of its key.
    let mut logins: Vec<(usize, String)> = Vec::new();
    for _ in 0..3 {
        for (n, key) in keys.iter().enumerate() {
            let login = server.login(key["key"].as_str().unwrap());
            logins.push((n, login["machine"]["id"].as_str().unwrap().to_string()));
        }
    }
    logins.reverse();
    let of = |wanted: &[usize]| -> Vec<String> {
        logins
            .iter()
            .filter(|(n, _)| wanted.contains(n))
            .map(|(_, id)| id.clone())
            .collect()
    };
    let walked = |query: &str, limit| {
        walk(
            &server,
            &format!("/v1/apps/fleet/machines?{query}"),
            "machines",
            limit,
            |_| {},
        )
    };
    assert_eq!(walked("tag=tag:prod", 2), of(&[0, 1]));
    assert_eq!(walked("tag=tag:prod&tag=tag:web", 2), of(&[0]));
    assert_eq!(walked("tag=tag:web&tag=tag:db", 2), Vec::<String>::new());
    let key_id = |n: usize| keys[n]["id"].as_str().unwrap().to_string();
    assert_eq!(
        walked(&format!("key_id={}&tag=tag:db", key_id(1)), 1),
        of(&[1])
    );
    assert_eq!(
        walked(&format!("key_id={}&tag=tag:db", key_id(0)), 1),
        Vec::<String>::new()
    );
    admin
        .get("/v1/apps/fleet/machines?tag=prod")
        .expect_error(422, "invalid_field");
}
