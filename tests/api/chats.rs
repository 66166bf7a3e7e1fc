//! Chats: channels, direct messages, visibility, membership, lists and read markers.

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser, spawn_app, spawn_app_with, test_config};

/// A workspace owned by `owner` with `others` as members; returns its id.
async fn workspace_with(app: &TestApp, owner: &TestUser, others: &[&TestUser]) -> i64 {
    let w = app.create_workspace(owner, "Workspace").await;
    for u in others {
        app.add_to_workspace(owner, w, u).await;
    }
    w
}

async fn private_channel(app: &TestApp, owner: &TestUser, workspace: i64, name: &str) -> i64 {
    app.post(
        "/api/chats",
        &owner.token,
        json!({"workspace_id": workspace, "name": name, "is_private": true}),
    )
    .await
    .ok(201)["id"]
        .as_i64()
        .expect("chat id")
}

async fn direct(app: &TestApp, caller: &TestUser, workspace: i64, user_ids: Value) -> (u16, Value) {
    let r = app
        .post(
            "/api/chats/direct",
            &caller.token,
            json!({"workspace_id": workspace, "user_ids": user_ids}),
        )
        .await;
    (r.status.as_u16(), r.body)
}

fn ids(list: &Value, key: &str, id_key: &str) -> Vec<i64> {
    list[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c[id_key].as_i64().expect("id"))
        .collect()
}

/// Creating a channel returns the chat object with the creator as owner, one member, nothing
/// unread and no last message.
#[actix_web::test]
async fn create_channel_returns_chat_object() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = workspace_with(&app, &owner, &[]).await;
    let c = app
        .post(
            "/api/chats",
            &owner.token,
            json!({"workspace_id": w, "name": " general ", "description": "General discussion"}),
        )
        .await
        .ok(201);
    assert!(c["id"].as_i64().is_some());
    assert_eq!(c["workspace_id"], w);
    assert_eq!(c["name"], "general");
    assert_eq!(c["type"], "channel");
    assert_eq!(c["description"], "General discussion");
    assert_eq!(c["is_private"], false);
    assert_eq!(c["member_count"], 1);
    assert_eq!(c["unread_count"], 0);
    assert!(c["last_message"].is_null());
    assert_eq!(c["role"], "owner");
    assert!(c["created_at"].is_string());
}

/// Channel input is validated: workspace_id, name 1..80, type only "channel".
#[actix_web::test]
async fn create_channel_validates() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let w = workspace_with(&app, &owner, &[]).await;
    for (body, field) in [
        (json!({"name": "x"}), "workspace_id"),
        (json!({"workspace_id": w}), "name"),
        (json!({"workspace_id": w, "name": ""}), "name"),
        (json!({"workspace_id": w, "name": "x".repeat(81)}), "name"),
        (
            json!({"workspace_id": w, "name": "x", "type": "direct"}),
            "type",
        ),
        (
            json!({"workspace_id": w, "name": "x", "type": "group"}),
            "type",
        ),
    ] {
        let err = app
            .post("/api/chats", &owner.token, body.clone())
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{body}");
    }
    // Wrongly typed values are 422 too.
    for body in [
        json!({"workspace_id": "abc", "name": "x"}),
        json!({"workspace_id": w, "name": "x", "is_private": "yes"}),
    ] {
        app.post("/api/chats", &owner.token, body)
            .await
            .err(422, "VALIDATION_ERROR");
    }
    let err = app
        .post(
            "/api/chats",
            &owner.token,
            json!({"workspace_id": w, "name": "x", "type": "direct"}),
        )
        .await
        .err(422, "VALIDATION_ERROR");
    assert!(
        err["error"]["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/api/chats/direct"))
    );
    app.post(
        "/api/chats",
        &owner.token,
        json!({"workspace_id": w, "name": "x".repeat(80)}),
    )
    .await
    .ok(201);
}

/// Only workspace members create chats there: others 403, missing workspace 404.
#[actix_web::test]
async fn create_channel_needs_membership() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let stranger = app.register("stranger").await;
    let w = app.create_workspace(&owner, "Private Club").await;
    let err = app
        .post(
            "/api/chats",
            &stranger.token,
            json!({"workspace_id": w, "name": "intrude"}),
        )
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Private Club"));
    app.post(
        "/api/chats",
        &owner.token,
        json!({"workspace_id": 777777, "name": "x"}),
    )
    .await
    .err(404, "NOT_FOUND");
}

/// The list shows the chats the caller is in, per workspace or across all of theirs.
#[actix_web::test]
async fn list_shows_joined_chats() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w1 = workspace_with(&app, &alice, &[&bob]).await;
    let w2 = app.create_workspace(&alice, "Second").await;
    let general = app.create_channel(&alice, w1, "general").await;
    let random = app.create_channel(&alice, w1, "random").await;
    let other = app.create_channel(&alice, w2, "elsewhere").await;
    let (_, dm) = direct(&app, &alice, w1, json!([bob.id])).await;
    let dm = dm["id"].as_i64().expect("dm id");

    let mut all = ids(
        &app.get("/api/chats", &alice.token).await.ok(200),
        "chats",
        "id",
    );
    all.sort();
    assert_eq!(all, vec![general, random, other, dm]);
    let r = app
        .get(&format!("/api/chats?workspace_id={w1}"), &alice.token)
        .await
        .ok(200);
    assert_eq!(r["total"], 3);
    assert_eq!(r["page"], 1);
    let mut got = ids(&r, "chats", "id");
    got.sort();
    assert_eq!(got, vec![general, random, dm]);
    let d = r["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .find(|c| c["id"] == dm)
        .expect("dm listed");
    assert_eq!(d["type"], "direct");
    assert_eq!(d["member_count"], 2);

    // Bob is in the DM only, until he joins a channel.
    let r = app
        .get(&format!("/api/chats?workspace_id={w1}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(ids(&r, "chats", "id"), vec![dm]);
    app.join(&bob, general).await;
    let mut got = ids(
        &app.get(&format!("/api/chats?workspace_id={w1}"), &bob.token)
            .await
            .ok(200),
        "chats",
        "id",
    );
    got.sort();
    assert_eq!(got, vec![general, dm]);
    let err = app
        .get(&format!("/api/chats?workspace_id={w2}"), &bob.token)
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("Second"));
    app.get("/api/chats?workspace_id=555555", &bob.token)
        .await
        .err(404, "NOT_FOUND");
}

/// The chat list sorts, pages and selects; bad values are 422.
#[actix_web::test]
async fn list_sorts_pages_and_selects() {
    let app = spawn_app().await;
    let u = app.register("sorter").await;
    let w = workspace_with(&app, &u, &[]).await;
    let b = app.create_channel(&u, w, "bravo").await;
    let a = app.create_channel(&u, w, "Alpha").await;
    let c = app.create_channel(&u, w, "charlie").await;
    let q = |s: &str| format!("/api/chats?workspace_id={w}&{s}");
    let r = app.get(&q("sort=name"), &u.token).await.ok(200);
    assert_eq!(ids(&r, "chats", "id"), vec![a, b, c]);
    let r = app.get(&q("sort=id&order=desc"), &u.token).await.ok(200);
    assert_eq!(ids(&r, "chats", "id"), vec![c, a, b]);
    let r = app
        .get(&q("sort=created_at&limit=2&page=2"), &u.token)
        .await
        .ok(200);
    assert_eq!(ids(&r, "chats", "id"), vec![c]);
    assert_eq!(
        (r["total"].as_i64(), r["page"].as_i64()),
        (Some(3), Some(2))
    );
    // Default: most recently active first.
    let r = app.get(&q(""), &u.token).await.ok(200);
    assert_eq!(ids(&r, "chats", "id"), vec![c, a, b]);
    let r = app
        .get(
            &q("sort=last_message_at&order=asc&fields=id,name"),
            &u.token,
        )
        .await
        .ok(200);
    assert_eq!(r["chats"][0], json!({"id": b, "name": "bravo"}));
    for (s, field) in [
        ("sort=secret", "sort"),
        ("fields=dm_key", "fields"),
        ("order=sideways", "order"),
        ("limit=1000", "limit"),
        ("page=0", "page"),
        ("workspace_id=x", "workspace_id"),
    ] {
        let err = app
            .get(&format!("/api/chats?{s}"), &u.token)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{s}");
    }
}

/// A private channel is invisible to other workspace members: not listed, 403 on details,
/// members and join, with a body that names nothing of it.
#[actix_web::test]
async fn private_channel_is_invisible() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let peer = app.register("peer").await;
    let w = workspace_with(&app, &owner, &[&peer]).await;
    let secret = private_channel(&app, &owner, w, "war-room").await;
    let listed = app
        .get(&format!("/api/chats?workspace_id={w}"), &peer.token)
        .await
        .ok(200);
    assert!(ids(&listed, "chats", "id").is_empty());
    for path in [
        format!("/api/chats/{secret}"),
        format!("/api/chats/{secret}/members"),
    ] {
        let err = app.get(&path, &peer.token).await.err(403, "FORBIDDEN");
        assert!(!err.to_string().contains("war-room"), "{path}");
    }
    for path in [
        format!("/api/chats/{secret}/join"),
        format!("/api/chats/{secret}/leave"),
        format!("/api/chats/{secret}/members"),
    ] {
        let err = app
            .post(&path, &peer.token, json!({"user_id": peer.id}))
            .await
            .err(403, "FORBIDDEN");
        assert!(!err.to_string().contains("war-room"), "{path}");
    }
    let err = app
        .post(
            &format!("/api/chats/{secret}/read"),
            &peer.token,
            json!({"message_id": 1}),
        )
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("war-room"));
    // The owner sees it as usual.
    let c = app
        .get(&format!("/api/chats/{secret}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(c["is_private"], true);
    assert_eq!(c["name"], "war-room");
}

/// Outsiders of the workspace get 403 on every chat endpoint, even for public channels, and the
/// body names nothing; missing chats are 404 and non-numeric ids 422.
#[actix_web::test]
async fn outsiders_get_403_and_missing_chats_404() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let outsider = app.register("outsider").await;
    let w = workspace_with(&app, &owner, &[]).await;
    let chat = app.create_channel(&owner, w, "lobby-secret").await;
    let gets = [
        format!("/api/chats/{chat}"),
        format!("/api/chats/{chat}/members"),
    ];
    for path in &gets {
        let err = app.get(path, &outsider.token).await.err(403, "FORBIDDEN");
        assert!(!err.to_string().contains("lobby-secret"), "{path}");
    }
    let posts = [
        (format!("/api/chats/{chat}/join"), json!({})),
        (format!("/api/chats/{chat}/leave"), json!({})),
        (
            format!("/api/chats/{chat}/members"),
            json!({"user_id": outsider.id}),
        ),
        (format!("/api/chats/{chat}/read"), json!({"message_id": 1})),
    ];
    for (path, body) in &posts {
        let err = app
            .post(path, &outsider.token, body.clone())
            .await
            .err(403, "FORBIDDEN");
        assert!(!err.to_string().contains("lobby-secret"), "{path}");
    }
    for path in ["/api/chats/999999", "/api/chats/999999/members"] {
        app.get(path, &owner.token).await.err(404, "NOT_FOUND");
    }
    for path in ["/api/chats/999999/join", "/api/chats/999999/leave"] {
        app.post(path, &owner.token, json!({}))
            .await
            .err(404, "NOT_FOUND");
    }
    for path in ["/api/chats/abc", "/api/chats/1x/members"] {
        app.get(path, &owner.token)
            .await
            .err(422, "VALIDATION_ERROR");
    }
    app.post("/api/chats/abc/join", &owner.token, json!({}))
        .await
        .err(422, "VALIDATION_ERROR");
}

/// Public channels are visible to every workspace member; joining is idempotent and shows the
/// caller's role; leaving is 200 once, then 422 "not a member".
#[actix_web::test]
async fn join_and_leave_public_channel() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let peer = app.register("peer").await;
    let w = workspace_with(&app, &owner, &[&peer]).await;
    let chat = app.create_channel(&owner, w, "general").await;
    let c = app
        .get(&format!("/api/chats/{chat}"), &peer.token)
        .await
        .ok(200);
    assert_eq!(c["name"], "general");
    assert!(c["role"].is_null());
    let m = app
        .get(&format!("/api/chats/{chat}/members"), &peer.token)
        .await
        .ok(200);
    assert_eq!(m["total"], 1);

    let c = app
        .post(&format!("/api/chats/{chat}/join"), &peer.token, json!({}))
        .await
        .ok(200);
    assert_eq!(c["role"], "member");
    assert_eq!(c["member_count"], 2);
    let c = app
        .post(&format!("/api/chats/{chat}/join"), &peer.token, json!({}))
        .await
        .ok(200);
    assert_eq!(c["member_count"], 2);

    let r = app
        .post(&format!("/api/chats/{chat}/leave"), &peer.token, json!({}))
        .await
        .ok(200);
    assert_eq!(r, json!({"chat_id": chat, "left": true}));
    let err = app
        .post(&format!("/api/chats/{chat}/leave"), &peer.token, json!({}))
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["reason"], "not a member");
    let c = app
        .get(&format!("/api/chats/{chat}"), &owner.token)
        .await
        .ok(200);
    assert_eq!(c["member_count"], 1);
}

/// A DM is named after its participants, has them all as members (creator owner), and the same
/// set in any order, from either side, returns the same chat with 200.
#[actix_web::test]
async fn direct_messages_are_deduplicated() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob, &carol]).await;
    let (status, dm) = direct(&app, &alice, w, json!([carol.id, bob.id])).await;
    assert_eq!(status, 201, "{dm}");
    assert_eq!(dm["type"], "direct");
    assert_eq!(dm["name"], "alice, bob, carol");
    assert_eq!(dm["member_count"], 3);
    assert_eq!(dm["role"], "owner");
    let id = dm["id"].as_i64().expect("id");

    let (status, again) = direct(&app, &alice, w, json!([bob.id, carol.id, alice.id])).await;
    assert_eq!((status, again["id"].as_i64()), (200, Some(id)));
    let (status, from_bob) = direct(&app, &bob, w, json!([carol.id, alice.id])).await;
    assert_eq!((status, from_bob["id"].as_i64()), (200, Some(id)));
    assert_eq!(from_bob["role"], "member");
    // A different set is a different chat.
    let (status, pair) = direct(&app, &alice, w, json!([bob.id])).await;
    assert_eq!(status, 201);
    assert_ne!(pair["id"].as_i64(), Some(id));

    let m = app
        .get(&format!("/api/chats/{id}/members?sort=role"), &bob.token)
        .await
        .ok(200);
    assert_eq!(m["members"][0]["user_id"], alice.id);
    assert_eq!(m["members"][0]["role"], "owner");
    assert_eq!(m["members"][1]["role"], "member");
}

/// Ten concurrent creations of the same DM yield one chat.
#[actix_web::test]
async fn concurrent_direct_creation_yields_one_chat() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let results = futures_util::future::join_all((0..10).map(|i| {
        let (caller, other) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        direct(&app, caller, w, json!([other.id]))
    }))
    .await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|(s, _)| *s == 200 || *s == 201));
    let mut chat_ids: Vec<i64> = results
        .iter()
        .map(|(_, b)| b["id"].as_i64().expect("id"))
        .collect();
    chat_ids.dedup();
    assert_eq!(chat_ids.len(), 1);
    let listed = app
        .get(&format!("/api/chats?workspace_id={w}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(listed["total"], 1);
}

/// DM input: 1..=8 distinct workspace members, at least one besides the caller.
#[actix_web::test]
async fn direct_validates_participants() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let outsider = app.register("outsider").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    for user_ids in [
        json!([]),
        json!([alice.id]),
        json!([bob.id, bob.id]),
        json!([outsider.id]),
        json!([bob.id, 987654]),
        json!((1..=9).collect::<Vec<i64>>()),
    ] {
        let (status, body) = direct(&app, &alice, w, user_ids.clone()).await;
        assert_eq!(status, 422, "{user_ids}: {body}");
        assert_eq!(body["error"]["details"]["field"], "user_ids", "{user_ids}");
    }
    let (status, _) = direct(&app, &alice, w, json!("bob")).await;
    assert_eq!(status, 422);
    let (status, _) = direct(&app, &outsider, w, json!([bob.id])).await;
    assert_eq!(status, 403);
}

/// DMs cannot be joined by others, nor get added members.
#[actix_web::test]
async fn direct_messages_are_closed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let w = workspace_with(&app, &alice, &[&bob, &eve]).await;
    let (_, dm) = direct(&app, &bob, w, json!([eve.id])).await;
    let id = dm["id"].as_i64().expect("id");
    app.post(&format!("/api/chats/{id}/join"), &alice.token, json!({}))
        .await
        .err(403, "FORBIDDEN");
    let err = app
        .get(&format!("/api/chats/{id}"), &alice.token)
        .await
        .err(403, "FORBIDDEN");
    assert!(!err.to_string().contains("eve"));
    app.post(
        &format!("/api/chats/{id}/members"),
        &bob.token,
        json!({"user_id": alice.id}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
}

/// Private channels get members from chat or workspace owners/admins; others are 403; the
/// target must be in the workspace; adding twice is 200.
#[actix_web::test]
async fn add_member_rules() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let creator = app.register("creator").await;
    let peer = app.register("peer").await;
    let other = app.register("other").await;
    let outsider = app.register("outsider").await;
    let w = workspace_with(&app, &owner, &[&creator, &peer, &other]).await;
    let secret = private_channel(&app, &creator, w, "secret").await;

    // The chat owner adds a member: 201, then 200.
    let m = app
        .post(
            &format!("/api/chats/{secret}/members"),
            &creator.token,
            json!({"user_id": peer.id}),
        )
        .await
        .ok(201);
    assert_eq!(m["user_id"], peer.id);
    assert_eq!(m["username"], "peer");
    assert_eq!(m["role"], "member");
    assert!(m["joined_at"].is_string());
    app.post(
        &format!("/api/chats/{secret}/members"),
        &creator.token,
        json!({"user_id": peer.id}),
    )
    .await
    .ok(200);
    // A plain member cannot add.
    app.post(
        &format!("/api/chats/{secret}/members"),
        &peer.token,
        json!({"user_id": other.id}),
    )
    .await
    .err(403, "FORBIDDEN");
    // The workspace owner can, though not in the chat.
    let m = app
        .post(
            &format!("/api/chats/{secret}/members"),
            &owner.token,
            json!({"user_id": other.id, "role": "admin"}),
        )
        .await
        .ok(201);
    assert_eq!(m["role"], "admin");
    // Not in the workspace: 422; bad role: 422; missing user_id: 422.
    for (body, field) in [
        (json!({"user_id": outsider.id}), "user_id"),
        (json!({"user_id": peer.id, "role": "owner"}), "role"),
        (json!({}), "user_id"),
    ] {
        let err = app
            .post(
                &format!("/api/chats/{secret}/members"),
                &creator.token,
                body.clone(),
            )
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{body}");
    }
    // The added member now sees it and can list its members.
    let listed = app
        .get(&format!("/api/chats?workspace_id={w}"), &peer.token)
        .await
        .ok(200);
    assert_eq!(ids(&listed, "chats", "id"), vec![secret]);
    let r = app
        .get(&format!("/api/chats/{secret}/members"), &peer.token)
        .await
        .ok(200);
    assert_eq!(r["total"], 3);
}

/// The members list has roles and joined_at, sorts by joined_at/username/role, pages and
/// selects fields.
#[actix_web::test]
async fn members_list() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let zoe = app.register("zoe").await;
    let adam = app.register("adam").await;
    let w = workspace_with(&app, &owner, &[&zoe, &adam]).await;
    let chat = app.create_channel(&owner, w, "general").await;
    app.join(&zoe, chat).await;
    app.join(&adam, chat).await;
    let path = |q: &str| format!("/api/chats/{chat}/members?{q}");
    let r = app.get(&path(""), &zoe.token).await.ok(200);
    assert_eq!(r["total"], 3);
    assert_eq!(
        ids(&r, "members", "user_id"),
        vec![owner.id, zoe.id, adam.id]
    );
    let first = &r["members"][0];
    assert_eq!(first["username"], "owner");
    assert_eq!(first["role"], "owner");
    assert!(first["joined_at"].is_string());
    assert!(first.get("avatar_url").is_some());
    let r = app.get(&path("sort=username"), &zoe.token).await.ok(200);
    assert_eq!(
        ids(&r, "members", "user_id"),
        vec![adam.id, owner.id, zoe.id]
    );
    let r = app
        .get(&path("sort=joined_at&order=desc&limit=2"), &zoe.token)
        .await
        .ok(200);
    assert_eq!(ids(&r, "members", "user_id"), vec![adam.id, zoe.id]);
    let r = app
        .get(
            &path("sort=joined_at&order=desc&limit=2&page=2"),
            &zoe.token,
        )
        .await
        .ok(200);
    assert_eq!(ids(&r, "members", "user_id"), vec![owner.id]);
    let r = app
        .get(&path("sort=role&fields=username,role"), &zoe.token)
        .await
        .ok(200);
    assert_eq!(
        r["members"][0],
        json!({"username": "owner", "role": "owner"})
    );
    // The contract's `sort=created_at`: a membership is created when its user joins.
    let by_created = app
        .get(&path("sort=created_at&order=desc"), &zoe.token)
        .await
        .ok(200);
    let by_joined = app
        .get(&path("sort=joined_at&order=desc"), &zoe.token)
        .await
        .ok(200);
    assert_eq!(
        ids(&by_created, "members", "user_id"),
        ids(&by_joined, "members", "user_id")
    );
    for q in ["sort=email", "fields=email", "order=x", "limit=0"] {
        app.get(&path(q), &zoe.token)
            .await
            .err(422, "VALIDATION_ERROR");
    }
}

/// `unread_count` saturates at `--unread-count-max` in the chat list, the chat and the read
/// marker's answer (before: it counted every unread message, a scan of the whole history of a
/// chat left unread for long, per chat, on every list); below the cap it stays exact.
#[actix_web::test]
async fn unread_count_saturates_at_its_cap() {
    let app = spawn_app_with(test_config(&["--unread-count-max", "3"])).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let chat = app.create_channel(&alice, w, "busy").await;
    app.join(&bob, chat).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(app.send(&alice, chat, &format!("m{i}")).await);
    }
    let listed = app
        .get(&format!("/api/chats?workspace_id={w}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(listed["chats"][0]["unread_count"], 3, "{listed}");
    let one = app
        .get(&format!("/api/chats/{chat}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(one["unread_count"], 3, "{one}");
    let marked = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob.token,
            json!({"message_id": sent[0]["id"]}),
        )
        .await
        .ok(200);
    assert_eq!(marked["unread_count"], 3, "4 unread, capped: {marked}");
    let marked = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob.token,
            json!({"message_id": sent[2]["id"]}),
        )
        .await
        .ok(200);
    assert_eq!(marked["unread_count"], 2, "exact below the cap: {marked}");
}

/// unread_count counts others' messages after the read marker, last_message is the newest
/// message with its sender, and the read marker moves forward only.
#[actix_web::test]
async fn unread_last_message_and_read_marker() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let chat = app.create_channel(&alice, w, "general").await;
    app.join(&bob, chat).await;
    let m1 = app.send(&alice, chat, "one").await;
    let m2 = app.send(&alice, chat, "two").await;
    app.send(&bob, chat, "mine").await;
    let m4 = app.send(&alice, chat, "Hello everyone!").await;

    let listed = app
        .get(&format!("/api/chats?workspace_id={w}"), &bob.token)
        .await
        .ok(200);
    let c = &listed["chats"][0];
    assert_eq!(c["unread_count"], 3, "bob's own message is not unread");
    assert_eq!(c["last_message"]["id"], m4["id"]);
    assert_eq!(c["last_message"]["content"], "Hello everyone!");
    assert_eq!(
        c["last_message"]["sender"],
        json!({"id": alice.id, "username": "alice"})
    );
    assert!(c["last_message"]["created_at"].is_string());
    let c = app
        .get(&format!("/api/chats/{chat}"), &alice.token)
        .await
        .ok(200);
    assert_eq!(c["unread_count"], 1);

    let r = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob.token,
            json!({"message_id": m2["id"]}),
        )
        .await
        .ok(200);
    assert_eq!(
        r,
        json!({"chat_id": chat, "last_read_message_id": m2["id"], "unread_count": 1})
    );
    // Marking an older message does not move the marker back.
    let r = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob.token,
            json!({"message_id": m1["id"]}),
        )
        .await
        .ok(200);
    assert_eq!(r["last_read_message_id"], m2["id"]);
    assert_eq!(r["unread_count"], 1);
    let r = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob.token,
            json!({"message_id": m4["id"]}),
        )
        .await
        .ok(200);
    assert_eq!(r["unread_count"], 0);
    let c = app
        .get(&format!("/api/chats/{chat}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(c["unread_count"], 0);
}

/// The read marker takes only a message of this chat, and only from members.
#[actix_web::test]
async fn read_marker_validates() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let general = app.create_channel(&alice, w, "general").await;
    let random = app.create_channel(&alice, w, "random").await;
    let elsewhere = app.send(&alice, random, "elsewhere").await;
    let here = app.send(&alice, general, "here").await;
    let path = format!("/api/chats/{general}/read");
    for body in [
        json!({"message_id": elsewhere["id"]}),
        json!({"message_id": 99999999}),
        json!({}),
    ] {
        let err = app
            .post(&path, &alice.token, body.clone())
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "message_id", "{body}");
    }
    app.post(&path, &alice.token, json!({"message_id": "x"}))
        .await
        .err(422, "VALIDATION_ERROR");
    // Bob sees the public channel but is not a member.
    let err = app
        .post(&path, &bob.token, json!({"message_id": here["id"]}))
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["reason"], "not a member");
}

/// Deleted messages are neither unread nor the last message.
#[actix_web::test]
async fn deleted_messages_do_not_count() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let chat = app.create_channel(&alice, w, "general").await;
    app.join(&bob, chat).await;
    let first = app.send(&alice, chat, "kept").await;
    let second = app.send(&alice, chat, "deleted").await;
    let id = second["id"].as_i64().expect("id");
    let del = app
        .delete(&format!("/api/messages/{id}"), &alice.token)
        .await;
    assert!(del.status.is_success(), "delete: {}", del.body);
    let c = app
        .get(&format!("/api/chats/{chat}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(c["unread_count"], 1);
    assert_eq!(c["last_message"]["id"], first["id"]);
}

/// A participant who left a DM is back in when the same set is asked for again.
#[actix_web::test]
async fn direct_message_brings_back_a_leaver() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let (_, dm) = direct(&app, &alice, w, json!([bob.id])).await;
    let id = dm["id"].as_i64().expect("id");
    app.post(&format!("/api/chats/{id}/leave"), &bob.token, json!({}))
        .await
        .ok(200);
    app.get(&format!("/api/chats/{id}"), &bob.token)
        .await
        .err(403, "FORBIDDEN");
    let (status, again) = direct(&app, &alice, w, json!([bob.id])).await;
    assert_eq!((status, again["id"].as_i64()), (200, Some(id)));
    assert_eq!(again["member_count"], 2);
    let c = app
        .get(&format!("/api/chats/{id}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(c["role"], "member");
}

/// Messages sent before someone joined are not unread for them; later ones are.
#[actix_web::test]
async fn unread_starts_at_join() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let chat = app.create_channel(&alice, w, "general").await;
    app.send(&alice, chat, "before one").await;
    app.send(&alice, chat, "before two").await;
    app.join(&bob, chat).await;
    let c = app
        .get(&format!("/api/chats/{chat}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(c["unread_count"], 0);
    assert_eq!(c["last_message"]["content"], "before two");
    app.send(&alice, chat, "after").await;
    let listed = app.get("/api/chats", &bob.token).await.ok(200);
    assert_eq!(listed["chats"][0]["unread_count"], 1);
    assert_eq!(listed["chats"][0]["last_message"]["content"], "after");
}

/// A public channel's details and members are visible to a workspace member who has not
/// joined, without a read marker of their own (unread 0, role null).
#[actix_web::test]
async fn public_channel_visible_to_workspace_members() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let w = workspace_with(&app, &alice, &[&bob]).await;
    let chat = app.create_channel(&alice, w, "general").await;
    app.send(&alice, chat, "hello").await;
    let c = app
        .get(&format!("/api/chats/{chat}"), &bob.token)
        .await
        .ok(200);
    assert_eq!(c["unread_count"], 0);
    assert!(c["role"].is_null());
    assert_eq!(c["last_message"]["content"], "hello");
    let m = app
        .get(&format!("/api/chats/{chat}/members"), &bob.token)
        .await
        .ok(200);
    assert_eq!(ids(&m, "members", "user_id"), vec![alice.id]);
    // Not listed among bob's chats until he joins.
    let listed = app.get("/api/chats", &bob.token).await.ok(200);
    assert_eq!(listed["total"], 0);
}
