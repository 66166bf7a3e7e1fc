//! The web client, embedded at compile time from `web/dist` (built by `build.rs`): static files
//! with their content types, ETags and caching headers, and the single-page-app fallback.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "web/dist/"]
struct Bundle;

/// Path prefixes that belong to the server; the client never answers under them.
const RESERVED: &[&str] = &["/api", "/ws", "/metrics", "/admin"];

/// Hashed build output (Vite names files by content), so cacheable forever.
const ASSETS: &str = "assets/";

/// Whether `path` is one of the server's own, not the client's.
fn reserved(path: &str) -> bool {
    RESERVED.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Answers a GET/HEAD outside the server's own paths: the embedded file, or `index.html` for a
/// client route. `None` (the caller's 404) for other methods, reserved paths and missing assets
/// (a stale hashed asset must not be answered with HTML).
pub fn serve(req: &HttpRequest) -> Option<HttpResponse> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let path = req.path();
    if reserved(path) {
        return None;
    }
    let name = path.trim_start_matches('/');
    if name.starts_with('.') {
        return None; // build.rs's stamp
    }
    let (name, file) = match Bundle::get(name) {
        Some(file) if !name.is_empty() => (name, file),
        _ if name.starts_with(ASSETS) => return None,
        _ => ("index.html", Bundle::get("index.html")?),
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cache = if name.starts_with(ASSETS) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = if matches_etag(req, &etag) {
        HttpResponse::build(StatusCode::NOT_MODIFIED).finish()
    } else {
        HttpResponse::Ok()
            .content_type(file.metadata.mimetype())
            .body(file.data.into_owned())
    };
    let headers = resp.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if name == "index.html" {
        set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
             style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; \
             frame-ancestors 'none'",
        );
        set(header::REFERRER_POLICY, "no-referrer");
    }
    Some(resp)
}

fn matches_etag(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::reserved;

    #[test]
    fn server_paths_are_reserved_and_client_routes_are_not() {
        for p in [
            "/api",
            "/api/x",
            "/ws",
            "/metrics",
            "/admin/production/health",
        ] {
            assert!(reserved(p), "{p}");
        }
        for p in [
            "/",
            "/apix",
            "/login",
            "/w/1/c/2",
            "/invite/ABC",
            "/wsx",
            "/assets/a.js",
        ] {
            assert!(!reserved(p), "{p}");
        }
    }
}
