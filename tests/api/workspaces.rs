//! Workspaces, invites and workspace member lists.

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser, spawn_app};

/// Creates an invite as `inviter` with `body`; returns the response body (201 asserted).
async fn invite(app: &TestApp, inviter: &TestUser, workspace: i64, body: Value) -> Value {
    app.post(
        &format!("/api/workspaces/{workspace}/invites"),
        &inviter.token,
        body,
    )
    .await
    .ok(201)
}

fn code(invite: &Value) -> String {
    invite["invite_code"]
        .as_str()
        .expect("invite code")
        .to_string()
}

/// Backdates an invite's expiry directly in the database (no sleeping for expiry).
async fn expire_invite(app: &TestApp, code: &str) {
    let client = app.state.store.client().await.expect("db");
    client
        .execute(
            "UPDATE invites SET expires_at = now() - interval '1 minute' WHERE code = $1",
            &[&code],
        )
        .await
        .expect("expire");
}

/// Creating a workspace returns it with the creator as owner, default settings and real stats.
#[actix_web::test]
async fn create_returns_owner_settings_and_stats() {
    let app = spawn_app().await;
    let u = app.register("creator").await;
    let w = app
        .post(
            "/api/workspaces",
            &u.token,
            json!({"name": "  Acme Corp ", "description": "Company workspace",
                   "logo_url": "https://img.example.com/logo.png"}),
        )
        .await
        .ok(201);
    assert!(w["id"].as_i64().is_some());
    assert_eq!(w["name"], "Acme Corp");
    assert_eq!(w["description"], "Company workspace");
    assert_eq!(w["logo_url"], "https://img.example.com/logo.png");
    assert_eq!(w["role"], "owner");
    assert_eq!(w["member_count"], 1);
    assert!(w["created_at"].is_string());
    assert_eq!(
        w["settings"],
        json!({"allow_guest_access": false, "require_2fa": false, "retention_days": 90})
    );
    assert_eq!(
        w["stats"],
        json!({"member_count": 1, "channel_count": 0, "message_count": 0})
    );
}

/// Workspace input is validated: name 1..100, description up to 1000, logo an http(s) URL.
#[actix_web::test]
async fn create_validates_input() {
    let app = spawn_app().await;
    let u = app.register("validator").await;
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (
            json!({"name": "ok", "description": "d".repeat(1001)}),
            "description",
        ),
        (
            json!({"name": "ok", "logo_url": "ftp://x.example.com/a"}),
            "logo_url",
        ),
    ] {
        let err = app
            .post("/api/workspaces", &u.token, body.clone())
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{body}");
    }
    app.post("/api/workspaces", &u.token, json!({"name": 5}))
        .await
        .err(422, "VALIDATION_ERROR");
    app.post(
        "/api/workspaces",
        &u.token,
        json!({"name": "x".repeat(100)}),
    )
    .await
    .ok(201);
}

/// The list holds only the caller's workspaces, with their role and member count.
#[actix_web::test]
async fn list_shows_own_workspaces_with_role() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let a = app.create_workspace(&alice, "Alpha").await;
    let b = app.create_workspace(&bob, "Beta").await;
    app.add_to_workspace(&bob, b, &alice).await;

    let list = app.get("/api/workspaces", &alice.token).await.ok(200);
    let items = list["workspaces"].as_array().expect("array");
    assert_eq!(items.len(), 2);
    assert_eq!(list["total"], 2);
    let alpha = items.iter().find(|w| w["id"] == a).expect("alpha");
    assert_eq!(alpha["role"], "owner");
    assert_eq!(alpha["member_count"], 1);
    let beta = items.iter().find(|w| w["id"] == b).expect("beta");
    assert_eq!(beta["role"], "member");
    assert_eq!(beta["member_count"], 2);
    for key in ["name", "description", "logo_url", "created_at"] {
        assert!(beta.get(key).is_some(), "{key}");
    }

    let list = app.get("/api/workspaces", &bob.token).await.ok(200);
    assert_eq!(list["total"], 1);
    assert_eq!(list["workspaces"][0]["id"], b);
}

/// The workspace list sorts, pages and selects fields; unknown sort/field names are 422.
#[actix_web::test]
async fn list_sorts_pages_and_selects() {
    let app = spawn_app().await;
    let u = app.register("sorter").await;
    for name in ["bravo", "Alpha", "charlie"] {
        app.create_workspace(&u, name).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["workspaces"]
            .as_array()
            .expect("array")
            .iter()
            .map(|w| w["name"].as_str().expect("name").to_string())
            .collect()
    };
    let r = app
        .get("/api/workspaces?sort=name&order=asc", &u.token)
        .await
        .ok(200);
    assert_eq!(names(&r), ["Alpha", "bravo", "charlie"]);
    let r = app
        .get(
            "/api/workspaces?sort=name&order=desc&limit=2&page=1",
            &u.token,
        )
        .await
        .ok(200);
    assert_eq!(names(&r), ["charlie", "bravo"]);
    assert_eq!(
        (r["total"].as_i64(), r["pages"].as_i64()),
        (Some(3), Some(2))
    );
    let r = app
        .get(
            "/api/workspaces?sort=name&order=desc&limit=2&page=2",
            &u.token,
        )
        .await
        .ok(200);
    assert_eq!(names(&r), ["Alpha"]);
    let r = app
        .get("/api/workspaces?sort=created_at&fields=id,name", &u.token)
        .await
        .ok(200);
    assert_eq!(names(&r), ["bravo", "Alpha", "charlie"]);
    let first = r["workspaces"][0].as_object().expect("object");
    assert_eq!(first.len(), 2);
    for (q, field) in [
        ("sort=owner_id", "sort"),
        ("fields=secret", "fields"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("page=abc", "page"),
    ] {
        let err = app
            .get(&format!("/api/workspaces?{q}"), &u.token)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{q}");
    }
}

/// Details are for members only: 404 when the workspace does not exist, 403 (naming nothing)
/// otherwise; invalid ids are 422.
#[actix_web::test]
async fn details_are_for_members() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let stranger = app.register("stranger").await;
    let w = app.create_workspace(&owner, "Secret Garden").await;
    let d = app
        .get(&format!("/api/workspaces/{w}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(d["name"], "Secret Garden");
    assert_eq!(d["role"], "owner");
    let err = app
        .get(&format!("/api/workspaces/{w}"), &stranger.token)
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Secret Garden"));
    app.get("/api/workspaces/999999", &owner.token)
        .await
        .err(404, "NOT_FOUND");
    app.get("/api/workspaces/abc", &owner.token)
        .await
        .err(422, "VALIDATION_ERROR");
    app.call(
        reqwest::Method::GET,
        &format!("/api/workspaces/{w}"),
        None,
        None,
    )
    .await
    .err(401, "UNAUTHORIZED");
}

/// Stats count members, channels (not DMs) and non-deleted messages for real.
#[actix_web::test]
async fn stats_are_counted() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let w = app.create_workspace(&owner, "Counted").await;
    app.add_to_workspace(&owner, w, &member).await;
    app.create_channel(&owner, w, "general").await;
    app.create_channel(&owner, w, "random").await;
    app.post(
        "/api/chats/direct",
        &owner.token,
        json!({"workspace_id": w, "user_ids": [member.id]}),
    )
    .await
    .ok(201);
    let d = app
        .get(&format!("/api/workspaces/{w}"), &member.token)
        .await
        .ok(200);
    assert_eq!(
        d["stats"],
        json!({"member_count": 2, "channel_count": 2, "message_count": 0})
    );
    assert_eq!(d["role"], "member");
}

/// message_count counts the workspace's messages, excluding deleted ones.
#[actix_web::test]
async fn message_count_excludes_deleted() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let w = app.create_workspace(&owner, "Counted").await;
    app.add_to_workspace(&owner, w, &member).await;
    let general = app.create_channel(&owner, w, "general").await;
    app.join(&member, general).await;
    app.send(&owner, general, "one").await;
    app.send(&member, general, "two").await;
    let third = app.send(&member, general, "three").await;
    let d = app
        .get(&format!("/api/workspaces/{w}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(d["stats"]["message_count"], 3);
    let id = third["id"].as_i64().expect("message id");
    let del = app
        .delete(&format!("/api/messages/{id}"), &member.token)
        .await;
    assert!(del.status.is_success(), "delete: {}", del.body);
    let d = app
        .get(&format!("/api/workspaces/{w}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(d["stats"]["message_count"], 2);
}

/// The message count is kept by the commits (not counted from the rows): a retried send with
/// the same idempotency key, an edit, a reaction and a second delete of the same message leave
/// it alone; messages of every chat of the workspace count, and it matches the rows after all.
#[actix_web::test]
async fn message_count_is_kept_by_commits() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = app.create_workspace(&owner, "Kept").await;
    let general = app.create_channel(&owner, w, "general").await;
    let random = app.create_channel(&owner, w, "random").await;
    let count = || async {
        app.get(&format!("/api/workspaces/{w}"), &owner.token)
            .await
            .ok(200)["stats"]["message_count"]
            .as_i64()
            .expect("message_count")
    };
    let keyed = json!({"chat_id": general, "content": "once", "idempotency_key": "k-1"});
    let first = app.post("/api/messages", &owner.token, keyed.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = app.post("/api/messages", &owner.token, keyed).await;
    assert!(again.status.is_success(), "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(count().await, 1, "a retried send counted twice");
    let id = first.body["id"].as_i64().expect("id");
    for i in 0..4 {
        app.send(&owner, random, &format!("r{i}")).await;
    }
    assert_eq!(count().await, 5);
    let edit = app
        .put(
            &format!("/api/messages/{id}"),
            &owner.token,
            json!({"content": "edited"}),
        )
        .await;
    assert!(edit.status.is_success(), "{}", edit.body);
    let react = app
        .post(
            &format!("/api/messages/{id}/reactions"),
            &owner.token,
            json!({"emoji": "👍"}),
        )
        .await;
    assert!(react.status.is_success(), "{}", react.body);
    assert_eq!(count().await, 5);
    let del = app
        .delete(&format!("/api/messages/{id}"), &owner.token)
        .await;
    assert!(del.status.is_success(), "{}", del.body);
    let twice = app
        .delete(&format!("/api/messages/{id}"), &owner.token)
        .await;
    assert_eq!(twice.status, 404, "{}", twice.body);
    assert_eq!(count().await, 4, "a second delete counted again");
    let rows: i64 = app
        .state
        .store
        .client()
        .await
        .expect("client")
        .query_one(
            "SELECT count(*) FROM messages g JOIN chats c ON c.id = g.chat_id \
             WHERE c.workspace_id = $1 AND g.deleted_at IS NULL",
            &[&w],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 4);
}

/// An invite has a 16-character [A-Z0-9] code, a URL on the public base, and an expiry
/// `expires_in_days` ahead; the defaults are member, 7 days, one use.
#[actix_web::test]
async fn invite_shape_and_defaults() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = app.create_workspace(&owner, "Invites").await;
    let before = chrono::Utc::now();
    let inv = invite(&app, &owner, w, json!({"expires_in_days": 3})).await;
    let c = code(&inv);
    assert_eq!(c.len(), 16);
    assert!(
        c.chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
    );
    assert_eq!(
        inv["invite_url"],
        format!("https://chat.example.test/invite/{c}")
    );
    let expires: chrono::DateTime<chrono::Utc> = inv["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("timestamp");
    let days = (expires - before).num_hours();
    assert!((71..=72).contains(&days), "{days} hours");

    let inv = invite(&app, &owner, w, json!({})).await;
    let expires: chrono::DateTime<chrono::Utc> = inv["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("timestamp");
    assert!(((7 * 24 - 1)..=(7 * 24)).contains(&(expires - before).num_hours()));
    assert_ne!(code(&inv), c, "codes are random");

    // Default role member, default single use.
    let joiner = app.register("joiner").await;
    let ws = app
        .post(
            &format!("/api/invites/{}/accept", code(&inv)),
            &joiner.token,
            json!({}),
        )
        .await
        .ok(200);
    assert_eq!(ws["role"], "member");
    let late = app.register("late").await;
    let err = app
        .post(
            &format!("/api/invites/{}/accept", code(&inv)),
            &late.token,
            json!({}),
        )
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["reason"], "used");
}

/// Invite input is validated: role, expires_in_days 1..=30, max_uses 1..=1000, email format.
#[actix_web::test]
async fn invite_validates_input() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = app.create_workspace(&owner, "Invites").await;
    for (body, field) in [
        (json!({"role": "owner"}), "role"),
        (json!({"expires_in_days": 0}), "expires_in_days"),
        (json!({"expires_in_days": 31}), "expires_in_days"),
        (json!({"max_uses": 0}), "max_uses"),
        (json!({"max_uses": 1001}), "max_uses"),
        (json!({"email": "not-an-email"}), "email"),
    ] {
        let err = app
            .post(
                &format!("/api/workspaces/{w}/invites"),
                &owner.token,
                body.clone(),
            )
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{body}");
    }
    invite(
        &app,
        &owner,
        w,
        json!({"expires_in_days": 30, "max_uses": 1000}),
    )
    .await;
}

/// Only owners and admins invite: a member gets 403, a non-member 403, a missing workspace 404.
#[actix_web::test]
async fn only_owners_and_admins_invite() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let admin = app.register("admin").await;
    let stranger = app.register("stranger").await;
    let w = app.create_workspace(&owner, "Roles Inc").await;
    app.add_to_workspace(&owner, w, &member).await;
    let inv = invite(
        &app,
        &owner,
        w,
        json!({"email": admin.email, "role": "admin"}),
    )
    .await;
    let ws = app
        .post(
            &format!("/api/invites/{}/accept", code(&inv)),
            &admin.token,
            json!({}),
        )
        .await
        .ok(200);
    assert_eq!(ws["role"], "admin");

    invite(&app, &admin, w, json!({})).await;
    let err = app
        .post(
            &format!("/api/workspaces/{w}/invites"),
            &member.token,
            json!({}),
        )
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Roles Inc"));
    let err = app
        .post(
            &format!("/api/workspaces/{w}/invites"),
            &stranger.token,
            json!({}),
        )
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Roles Inc"));
    app.post("/api/workspaces/424242/invites", &owner.token, json!({}))
        .await
        .err(404, "NOT_FOUND");
}

/// Accepting returns the workspace; accepting again is a 200 that consumes no use; unknown codes
/// are 404.
#[actix_web::test]
async fn accept_is_idempotent_and_unknown_is_404() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let a = app.register("ann").await;
    let b = app.register("ben").await;
    let w = app.create_workspace(&owner, "Accepting").await;
    let inv = invite(&app, &owner, w, json!({"max_uses": 2})).await;
    let path = format!("/api/invites/{}/accept", code(&inv));
    let ws = app.post(&path, &a.token, json!({})).await.ok(200);
    assert_eq!(ws["id"], w);
    assert_eq!(ws["name"], "Accepting");
    assert_eq!(ws["stats"]["member_count"], 2);
    // Again: still 200, and the second use is still there for b.
    app.post(&path, &a.token, json!({})).await.ok(200);
    app.post(&path, &b.token, json!({})).await.ok(200);
    // The owner, already a member, is fine too even with the invite used up.
    app.post(&path, &owner.token, json!({})).await.ok(200);
    let d = app
        .get(&format!("/api/workspaces/{w}"), &b.token)
        .await
        .ok(200);
    assert_eq!(d["stats"]["member_count"], 3);
    app.post("/api/invites/NOSUCHCODE000000/accept", &a.token, json!({}))
        .await
        .err(404, "NOT_FOUND");
}

/// max_uses bounds acceptances, also when they race.
#[actix_web::test]
async fn max_uses_holds_under_concurrency() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = app.create_workspace(&owner, "Limited").await;
    let inv = invite(&app, &owner, w, json!({"max_uses": 3})).await;
    let path = format!("/api/invites/{}/accept", code(&inv));
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(app.register(&format!("racer{i}")).await);
    }
    let results =
        futures_util::future::join_all(users.iter().map(|u| app.post(&path, &u.token, json!({}))))
            .await;
    let ok = results.iter().filter(|r| r.status.as_u16() == 200).count();
    let used = results
        .iter()
        .filter(|r| r.status.as_u16() == 422 && r.body["error"]["details"]["reason"] == "used")
        .count();
    assert_eq!((ok, used), (3, 5));
    let d = app
        .get(&format!("/api/workspaces/{w}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(d["stats"]["member_count"], 4);
}

/// An expired invite is 422 with reason "expired" and adds nobody.
#[actix_web::test]
async fn expired_invite_is_rejected() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let late = app.register("late").await;
    let w = app.create_workspace(&owner, "Expiring").await;
    let inv = invite(&app, &owner, w, json!({"max_uses": 5})).await;
    expire_invite(&app, &code(&inv)).await;
    let err = app
        .post(
            &format!("/api/invites/{}/accept", code(&inv)),
            &late.token,
            json!({}),
        )
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["field"], "code");
    assert_eq!(err["error"]["details"]["reason"], "expired");
    app.get(&format!("/api/workspaces/{w}"), &late.token)
        .await
        .err(403, "FORBIDDEN");
}

/// An email-bound invite is 403 for another email, and matches case-insensitively.
#[actix_web::test]
async fn email_bound_invite() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let intended = app.register("intended").await;
    let other = app.register("other").await;
    let w = app.create_workspace(&owner, "Bound").await;
    let inv = invite(
        &app,
        &owner,
        w,
        json!({"email": intended.email.to_uppercase()}),
    )
    .await;
    let path = format!("/api/invites/{}/accept", code(&inv));
    let err = app
        .post(&path, &other.token, json!({}))
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Bound"));
    app.post(&path, &intended.token, json!({})).await.ok(200);
}

/// The workspace user list: members with role and status, total/page/pages, sort and fields;
/// non-members 403, missing workspace 404, missing or bad workspace_id 422.
#[actix_web::test]
async fn users_list() {
    let app = spawn_app().await;
    let owner = app.register("zed").await;
    let w = app.create_workspace(&owner, "People").await;
    let mut names = vec!["zed".to_string()];
    for i in 0..4 {
        let u = app.register(&format!("user{i}")).await;
        app.add_to_workspace(&owner, w, &u).await;
        names.push(format!("user{i}"));
    }
    let stranger = app.register("stranger").await;
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&page=1&limit=2"),
            &owner.token,
        )
        .await
        .ok(200);
    assert_eq!(
        (r["total"].as_i64(), r["page"].as_i64(), r["pages"].as_i64()),
        (Some(5), Some(1), Some(3))
    );
    let users = r["users"].as_array().expect("users");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["username"], "user0");
    assert_eq!(users[0]["role"], "member");
    assert_eq!(users[0]["status"], "offline");
    assert!(users[0]["id"].as_i64().is_some());
    assert!(users[0].get("avatar_url").is_some());
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&page=3&limit=2"),
            &owner.token,
        )
        .await
        .ok(200);
    assert_eq!(r["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["users"][0]["username"], "zed");
    assert_eq!(r["users"][0]["role"], "owner");
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&sort=role&fields=username,role"),
            &owner.token,
        )
        .await
        .ok(200);
    assert_eq!(r["users"][0], json!({"username": "zed", "role": "owner"}));
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&sort=username&order=desc"),
            &owner.token,
        )
        .await
        .ok(200);
    let got: Vec<&str> = r["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("username"))
        .collect();
    names.sort();
    names.reverse();
    assert_eq!(got, names);

    let err = app
        .get(&format!("/api/users?workspace_id={w}"), &stranger.token)
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("People"));
    app.get("/api/users?workspace_id=987654", &owner.token)
        .await
        .err(404, "NOT_FOUND");
    for q in ["", "?workspace_id=abc", "?workspace_id=-1"] {
        let err = app
            .get(&format!("/api/users{q}"), &owner.token)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "workspace_id", "{q}");
    }
    for q in ["sort=email", "fields=password_hash", "limit=500"] {
        app.get(&format!("/api/users?workspace_id={w}&{q}"), &owner.token)
            .await
            .err(422, "VALIDATION_ERROR");
    }
}

/// The contract's own examples of sorting and field selection work on the users list as
/// written (before: `sort=created_at` and `fields=id,username,email` were 422s); a fellow
/// member's email appears only when `fields=` names it.
#[actix_web::test]
async fn users_list_takes_the_contracts_examples() {
    let app = spawn_app().await;
    let owner = app.register("first").await;
    let w = app.create_workspace(&owner, "Examples").await;
    let later = app.register("later").await;
    app.add_to_workspace(&owner, w, &later).await;
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&page=1&limit=20&sort=created_at&order=desc"),
            &owner.token,
        )
        .await
        .ok(200);
    let order: Vec<i64> = r["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .collect();
    assert_eq!(order, [later.id, owner.id], "newest sign-up first: {r}");
    assert!(
        !r.to_string().contains(&later.email),
        "no email unless asked: {r}"
    );
    let r = app
        .get(
            &format!("/api/users?workspace_id={w}&fields=id,username,email&sort=created_at"),
            &later.token,
        )
        .await
        .ok(200);
    assert_eq!(
        r["users"],
        json!([
            {"id": owner.id, "username": "first", "email": owner.email},
            {"id": later.id, "username": "later", "email": later.email},
        ])
    );
}
