//! Authentication: register, login, refresh, change password, brute-force protection.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::json;

use crate::common::{JWT_SECRET, spawn_app, spawn_app_with, test_config};

fn token_with(secret: &[u8], alg: Algorithm, sub: i64, exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "iat": now - 10, "exp": now + exp_offset, "tv": 0});
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

/// Register returns a token, the user, and an expiry; the token works.
#[actix_web::test]
async fn register_returns_a_working_token() {
    let app = spawn_app().await;
    let r = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "New.User@Example.com", "username": "newuser", "password": "securepassword"})),
        )
        .await
        .ok(201);
    assert_eq!(r["user"]["email"], "New.User@Example.com");
    assert_eq!(r["user"]["username"], "newuser");
    assert!(r["user"]["id"].is_i64());
    assert!(r["user"].get("avatar_url").is_some());
    assert!(r["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    let token = r["token"].as_str().expect("token");
    let me = app.get("/api/users/me", token).await.ok(200);
    assert_eq!(me["username"], "newuser");
}

/// Emails are unique case-insensitively; bad input names its field.
#[actix_web::test]
async fn register_validates_input() {
    let app = spawn_app().await;
    let reg =
        |body: serde_json::Value| app.call(Method::POST, "/api/auth/register", None, Some(body));
    reg(json!({"email": "dup@example.com", "username": "dup", "password": "password1"}))
        .await
        .ok(201);
    reg(json!({"email": " DUP@example.COM ", "username": "dup2", "password": "password1"}))
        .await
        .err(409, "CONFLICT");
    for (body, field) in [
        (
            json!({"email": "not-an-email", "username": "abc", "password": "password1"}),
            "email",
        ),
        (
            json!({"email": "a@b.io", "username": "a", "password": "password1"}),
            "username",
        ),
        (
            json!({"email": "a@b.io", "username": "bad name", "password": "password1"}),
            "username",
        ),
        (
            json!({"email": "a@b.io", "username": "abc", "password": "short"}),
            "password",
        ),
        (json!({"username": "abc", "password": "password1"}), "email"),
        (
            json!({"email": "a@b.io", "password": "password1"}),
            "username",
        ),
        (json!({"email": "a@b.io", "username": "abc"}), "password"),
    ] {
        let err = reg(body).await.err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{err}");
        assert!(err["error"]["details"]["reason"].is_string());
    }
}

/// Login accepts any casing of the email; wrong password and unknown email are the same 401.
#[actix_web::test]
async fn login_checks_credentials() {
    let app = spawn_app().await;
    let u = app.register("loginuser").await;
    let ok = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": u.email.to_uppercase(), "password": u.password})),
        )
        .await
        .ok(200);
    assert_eq!(ok["user"]["id"], u.id);
    assert!(ok["token"].is_string());
    let wrong = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": u.email, "password": "wrong-password"})),
        )
        .await
        .err(401, "UNAUTHORIZED");
    let unknown = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "wrong-password"})),
        )
        .await
        .err(401, "UNAUTHORIZED");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": u.email})),
    )
    .await
    .err(422, "VALIDATION_ERROR");
}

/// After repeated failures the account is locked (429 + Retry-After), even for the right password.
#[actix_web::test]
async fn repeated_login_failures_lock_the_account() {
    let app = spawn_app_with(test_config(&["--login-failures-per-account", "3"])).await;
    let u = app.register("victim").await;
    for _ in 0..3 {
        app.call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": u.email, "password": "nope-nope"})),
        )
        .await
        .err(401, "UNAUTHORIZED");
    }
    let r = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": u.email, "password": u.password})),
        )
        .await;
    assert!(r.headers.get("retry-after").is_some());
    r.err(429, "RATE_LIMITED");
    // Another account from the same IP is unaffected.
    let other = app.register("bystander").await;
    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": other.email, "password": other.password})),
    )
    .await
    .ok(200);
}

/// Refresh accepts a valid or recently expired token, never a forged or stale one.
#[actix_web::test]
async fn refresh_rules() {
    let app = spawn_app().await;
    let u = app.register("refresher").await;
    let refresh = |t: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/api/auth/refresh"))
                .bearer_auth(t)
                .send()
                .await
                .expect("send")
        }
    };
    let r = refresh(u.token.clone()).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["token"].is_string() && body["expires_at"].is_string());

    // Expired a minute ago: refreshable, but not usable.
    let expired = token_with(JWT_SECRET.as_bytes(), Algorithm::HS256, u.id, -60);
    app.get("/api/users/me", &expired)
        .await
        .err(401, "UNAUTHORIZED");
    let r = refresh(expired).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    let fresh = body["token"].as_str().expect("token");
    app.get("/api/users/me", fresh).await.ok(200);

    // Expired past the 7-day window, another key, another alg, garbage, nothing.
    for t in [
        token_with(JWT_SECRET.as_bytes(), Algorithm::HS256, u.id, -8 * 86_400),
        token_with(
            b"some-other-secret-that-is-long-enough",
            Algorithm::HS256,
            u.id,
            600,
        ),
        token_with(JWT_SECRET.as_bytes(), Algorithm::HS512, u.id, 600),
        "garbage".to_string(),
    ] {
        assert_eq!(refresh(t).await.status(), 401);
    }
    let r = app
        .http
        .post(app.url("/api/auth/refresh"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
}

/// Changing the password revokes earlier tokens and switches which password logs in.
#[actix_web::test]
async fn change_password_revokes_old_tokens() {
    let app = spawn_app().await;
    let u = app.register("changer").await;
    app.put(
        "/api/auth/change-password",
        &u.token,
        json!({"current_password": "wrong-one", "new_password": "new-password-1"}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
    app.put(
        "/api/auth/change-password",
        &u.token,
        json!({"current_password": u.password, "new_password": "short"}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
    let r = app
        .put(
            "/api/auth/change-password",
            &u.token,
            json!({"current_password": u.password, "new_password": "new-password-1"}),
        )
        .await
        .ok(200);
    let new_token = r["token"].as_str().expect("new token");
    app.get("/api/users/me", &u.token)
        .await
        .err(401, "UNAUTHORIZED");
    app.get("/api/users/me", new_token).await.ok(200);
    let r = app
        .http
        .post(app.url("/api/auth/refresh"))
        .bearer_auth(&u.token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": u.email, "password": u.password})),
    )
    .await
    .err(401, "UNAUTHORIZED");
    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": u.email, "password": "new-password-1"})),
    )
    .await
    .ok(200);
}

/// Endpoints that need a token refuse missing, malformed and forged ones.
#[actix_web::test]
async fn protected_endpoints_need_a_valid_token() {
    let app = spawn_app().await;
    app.call(Method::GET, "/api/users/me", None, None)
        .await
        .err(401, "UNAUTHORIZED");
    app.get("/api/users/me", "nonsense")
        .await
        .err(401, "UNAUTHORIZED");
    let forged = token_with(
        b"some-other-secret-that-is-long-enough",
        Algorithm::HS256,
        1,
        600,
    );
    app.get("/api/users/me", &forged)
        .await
        .err(401, "UNAUTHORIZED");
    let r = app
        .http
        .get(app.url("/api/users/me"))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
}
