//! The contract's list features on every list endpoint: `sort`/`order` and `fields`, with 422
//! for unknown sort fields and orders; unknown field names are skipped, but a selection naming
//! no field of the list is 422.

use serde_json::Value;

use crate::common::{TestApp, TestUser, spawn_app};

/// What one list endpoint is checked with.
struct ListCase {
    /// Path with its required query (ends with `?` or `&`-ready query).
    path: String,
    /// The array's key in the body.
    key: &'static str,
    /// A sortable field and the item field it orders by.
    sort: &'static str,
    by: &'static str,
    /// A selectable subset.
    fields: &'static [&'static str],
}

fn join(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

fn values(body: &Value, key: &str, by: &str) -> Vec<Value> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {body}"))
        .iter()
        .map(|item| item[by].clone())
        .collect()
}

/// Orders JSON strings case-insensitively and numbers numerically.
fn sorted(mut v: Vec<Value>, desc: bool) -> Vec<Value> {
    v.sort_by(|a, b| match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
    });
    if desc {
        v.reverse();
    }
    v
}

async fn check(app: &TestApp, user: &TestUser, case: &ListCase) {
    let what = &case.path;
    let mut seen = 0;
    for (order, desc) in [("asc", false), ("desc", true)] {
        let body = app
            .get(
                &join(&case.path, &format!("sort={}&order={order}", case.sort)),
                &user.token,
            )
            .await
            .ok(200);
        let got = values(&body, case.key, case.by);
        assert!(
            got.len() >= 3,
            "{what}: need 3+ items to see an order: {body}"
        );
        assert_eq!(
            got,
            sorted(got.clone(), desc),
            "{what} sort={} order={order}",
            case.sort
        );
        seen = got.len();
    }
    // The selection alone, and with a name this list does not have (the contract shows one
    // `fields=id,username,email` for all lists): the same keys either way.
    for extra in ["", ",no_such_field"] {
        check_fields(app, user, case, extra, seen).await;
    }
    for (query, field) in [
        ("sort=no_such_field", "sort"),
        ("sort=password_hash", "sort"),
        ("order=sideways", "order"),
        ("fields=no_such_field", "fields"),
        ("fields=password_hash,dm_key", "fields"),
    ] {
        let err = app
            .get(&join(&case.path, query), &user.token)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(
            err["error"]["details"]["field"], field,
            "{what}?{query}: {err}"
        );
    }
}

async fn check_fields(app: &TestApp, user: &TestUser, case: &ListCase, extra: &str, seen: usize) {
    let what = &case.path;
    let body = app
        .get(
            &join(
                &case.path,
                &format!("fields={}{extra}", case.fields.join(",")),
            ),
            &user.token,
        )
        .await
        .ok(200);
    let items = body[case.key].as_array().expect("items");
    assert_eq!(
        items.len(),
        seen,
        "{what}: fields must not change the items"
    );
    for item in items {
        let mut keys: Vec<&str> = item
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = case.fields.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{what} fields={}{extra}", case.fields.join(","));
    }
}

/// Workspaces, workspace users, chats, chat members and messages all sort (both orders), select
/// fields, and refuse unknown sort fields, orders and selections of no known field with 422.
#[actix_web::test]
async fn every_list_sorts_and_selects_fields() {
    let app = spawn_app().await;
    let owner = app.register("Owner").await;
    let amy = app.register("amy").await;
    let zed = app.register("Zed").await;
    let ws = app.create_workspace(&owner, "bravo").await;
    app.create_workspace(&owner, "Alpha").await;
    app.create_workspace(&owner, "charlie").await;
    app.add_to_workspace(&owner, ws, &amy).await;
    app.add_to_workspace(&owner, ws, &zed).await;
    let chat = app.create_channel(&owner, ws, "beta").await;
    app.create_channel(&owner, ws, "Alpha-room").await;
    app.create_channel(&owner, ws, "gamma").await;
    app.join(&amy, chat).await;
    app.join(&zed, chat).await;
    for text in ["one", "two", "three"] {
        app.send(&owner, chat, text).await;
    }
    let cases = [
        ListCase {
            path: "/api/workspaces".into(),
            key: "workspaces",
            sort: "name",
            by: "name",
            fields: &["id", "name"],
        },
        ListCase {
            path: format!("/api/users?workspace_id={ws}"),
            key: "users",
            sort: "username",
            by: "username",
            fields: &["id", "username", "role"],
        },
        ListCase {
            path: format!("/api/chats?workspace_id={ws}"),
            key: "chats",
            sort: "name",
            by: "name",
            fields: &["id", "name", "type"],
        },
        ListCase {
            path: format!("/api/chats/{chat}/members"),
            key: "members",
            sort: "username",
            by: "username",
            fields: &["user_id", "username"],
        },
        ListCase {
            path: format!("/api/messages?chat_id={chat}"),
            key: "messages",
            sort: "created_at",
            by: "id",
            fields: &["id", "content"],
        },
    ];
    for case in &cases {
        check(&app, &owner, case).await;
    }
    // Sorting by id agrees with creation order where both apply.
    let by_id = app
        .get("/api/workspaces?sort=id&order=desc&fields=id", &owner.token)
        .await
        .ok(200);
    let ids = values(&by_id, "workspaces", "id");
    assert_eq!(ids, sorted(ids.clone(), true));
}

/// Name searches select fields (a fellow member's email only when named), sort by relevance
/// (both orders) or by a column (before: only `relevance` was accepted and `order` ignored),
/// and refuse unknown sorts, orders and selections of no known field.
#[actix_web::test]
async fn name_searches_select_fields_and_sort() {
    let app = crate::common::spawn_app().await;
    let owner = app.register("findme").await;
    let ws = app.create_workspace(&owner, "Acme").await;
    // Signed up in this order; `findme` is the exact match, `findmeb` a prefix match and
    // `a-findme` a substring match (alphabetically first).
    let b = app.register("findmeb").await;
    let a = app.register("a-findme").await;
    for u in [&b, &a] {
        app.add_to_workspace(&owner, ws, u).await;
    }
    let names = |r: &serde_json::Value, key: &str, by: &str| -> Vec<String> {
        r[key]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i[by].as_str().expect("name").to_string())
            .collect()
    };
    let users = |query: &str| {
        let app = &app;
        let token = owner.token.clone();
        let path = format!("/api/search/users?q=findme&workspace_id={ws}&{query}");
        async move { app.get(&path, &token).await }
    };
    let by_relevance = users("").await.ok(200);
    assert_eq!(
        names(&by_relevance, "users", "username"),
        ["findme", "findmeb", "a-findme"]
    );
    assert!(
        by_relevance["users"][0].get("email").is_none(),
        "{by_relevance}"
    );
    let least_relevant = users("sort=relevance&order=asc").await.ok(200);
    assert_eq!(
        names(&least_relevant, "users", "username"),
        ["a-findme", "findmeb", "findme"]
    );
    let by_name = users("sort=name").await.ok(200);
    assert_eq!(
        names(&by_name, "users", "username"),
        ["a-findme", "findme", "findmeb"]
    );
    let newest = users("sort=created_at&order=desc").await.ok(200);
    assert_eq!(
        names(&newest, "users", "username"),
        ["a-findme", "findmeb", "findme"]
    );
    // The contract's selection: the email of each, nothing else.
    let selected = users("fields=id,username,email&sort=id").await.ok(200);
    assert_eq!(selected["users"][2]["email"], a.email);
    assert_eq!(selected["users"][0].as_object().map(|o| o.len()), Some(3));

    for name in ["general", "gen", "a-gen"] {
        app.create_channel(&owner, ws, name).await;
    }
    let chats = app
        .get(
            &format!("/api/search/chats?q=gen&workspace_id={ws}&fields=name,type&sort=relevance"),
            &owner.token,
        )
        .await
        .ok(200);
    assert_eq!(names(&chats, "chats", "name"), ["gen", "general", "a-gen"]);
    assert_eq!(chats["chats"][0].as_object().map(|o| o.len()), Some(2));
    let chats = app
        .get(
            &format!("/api/search/chats?q=gen&workspace_id={ws}&sort=name&order=desc"),
            &owner.token,
        )
        .await
        .ok(200);
    assert_eq!(names(&chats, "chats", "name"), ["general", "gen", "a-gen"]);
    for bad in [
        "fields=password",
        "sort=password",
        "order=sideways",
        "sort=email",
    ] {
        for kind in ["users", "chats"] {
            app.get(
                &format!("/api/search/{kind}?q=g&workspace_id={ws}&{bad}"),
                &owner.token,
            )
            .await
            .err(422, "VALIDATION_ERROR");
        }
    }
}
