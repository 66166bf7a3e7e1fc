//! The caller's profile.

use serde_json::json;

use crate::common::spawn_app;

/// The profile has the contract's fields and default preferences.
#[actix_web::test]
async fn me_has_profile_and_preferences() {
    let app = spawn_app().await;
    let u = app.register("profiled").await;
    let me = app.get("/api/users/me", &u.token).await.ok(200);
    assert_eq!(me["id"], u.id);
    assert_eq!(me["email"], u.email);
    assert_eq!(me["username"], "profiled");
    assert!(me["created_at"].is_string());
    assert!(me["avatar_url"].is_null());
    assert_eq!(me["preferences"]["theme"], "system");
    assert_eq!(me["preferences"]["language"], "en");
    assert_eq!(me["preferences"]["notifications_enabled"], true);
}

/// The contract's `?fields=id,username,email` selects on the profile too (before: ignored).
#[actix_web::test]
async fn me_selects_fields() {
    let app = spawn_app().await;
    let u = app.register("selective").await;
    let me = app
        .get("/api/users/me?fields=id,username,email", &u.token)
        .await
        .ok(200);
    assert_eq!(
        me,
        json!({"id": u.id, "username": "selective", "email": u.email})
    );
    let err = app
        .get("/api/users/me?fields=password_hash", &u.token)
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["field"], "fields");
}

/// Updates are partial: fields not sent keep their values.
#[actix_web::test]
async fn update_is_partial() {
    let app = spawn_app().await;
    let u = app.register("updater").await;
    let r = app
        .put(
            "/api/users/me",
            &u.token,
            json!({"username": "renamed", "avatar_url": "https://img.example.com/a.png",
                   "preferences": {"theme": "dark", "language": "zh"}}),
        )
        .await
        .ok(200);
    assert_eq!(r["username"], "renamed");
    assert_eq!(r["avatar_url"], "https://img.example.com/a.png");
    assert_eq!(r["preferences"]["theme"], "dark");
    assert_eq!(r["preferences"]["language"], "zh");
    let r = app
        .put(
            "/api/users/me",
            &u.token,
            json!({"preferences": {"notifications_enabled": false}}),
        )
        .await
        .ok(200);
    assert_eq!(r["username"], "renamed");
    assert_eq!(r["preferences"]["theme"], "dark");
    assert_eq!(r["preferences"]["notifications_enabled"], false);
    let r = app
        .put("/api/users/me", &u.token, json!({"avatar_url": null}))
        .await
        .ok(200);
    assert!(r["avatar_url"].is_null());
    assert_eq!(
        app.get("/api/users/me", &u.token).await.ok(200)["username"],
        "renamed"
    );
}

/// Invalid values are 422 naming the field, and change nothing.
#[actix_web::test]
async fn update_validates() {
    let app = spawn_app().await;
    let u = app.register("validator").await;
    for (body, field) in [
        (json!({"username": "x"}), "username"),
        (json!({"avatar_url": "javascript:alert(1)"}), "avatar_url"),
        (
            json!({"preferences": {"theme": "neon"}}),
            "preferences.theme",
        ),
        (
            json!({"preferences": {"language": "!!"}}),
            "preferences.language",
        ),
    ] {
        let err = app
            .put("/api/users/me", &u.token, body)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field);
    }
    app.put(
        "/api/users/me",
        &u.token,
        json!({"preferences": {"notifications_enabled": "yes"}}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
    assert_eq!(
        app.get("/api/users/me", &u.token).await.ok(200)["username"],
        "validator"
    );
}
