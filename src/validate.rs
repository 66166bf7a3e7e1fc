//! Input rules shared by the HTTP handlers (pure functions, unit-tested here).
//!
//! - Email: trimmed, at most 254 bytes, one `@`, a non-empty local part, a dotted domain, no
//!   whitespace; compared case-insensitively (stored lower-cased as the login key).
//! - Username: 2 to 32 characters, letters (any script), digits, `_`, `.`, `-`; not unique.
//! - Password: 8 to 128 characters.
//! - Message content: 1 to 4000 characters (Unicode scalar values) after trimming for the
//!   check; the content is stored exactly as sent.
//! - Control characters (Unicode category Cc: U+0000–U+001F, U+007F–U+009F) are refused in
//!   every single-line field (emails, usernames, names, keys, codes, emoji, URLs, queries);
//!   multi-line text (message content, descriptions) may hold newlines and tabs but never NUL,
//!   which PostgreSQL cannot store in text. Each refusal is a 422 naming the field.

use crate::http::error::ApiError;

pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const USERNAME_MIN: usize = 2;
pub const USERNAME_MAX: usize = 32;
pub const MESSAGE_MAX_CHARS: usize = 4000;
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 128;

/// Refuses control characters (single-line fields).
pub fn no_control(field: &str, raw: &str) -> Result<(), ApiError> {
    if raw.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Refuses NUL (multi-line text; PostgreSQL cannot store it).
pub fn no_nul(field: &str, raw: &str) -> Result<(), ApiError> {
    if raw.contains('\0') {
        return Err(ApiError::validation(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Validates an idempotency key: 1 to 128 characters, no control characters, at least one
/// visible character; returned as sent.
pub fn idempotency_key(raw: &str) -> Result<(), ApiError> {
    const FIELD: &str = "idempotency_key";
    let n = raw.chars().count();
    if n == 0 || n > IDEMPOTENCY_KEY_MAX_CHARS || raw.trim().is_empty() {
        return Err(ApiError::validation(
            FIELD,
            format!("must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters, not only spaces"),
        ));
    }
    no_control(FIELD, raw)
}

/// The lock-out and look-up key of a login email: trimmed and lower-cased. Not validated like a
/// registration (an account with an old-style address can still log in), but bounded and free
/// of control characters, so it is always a valid database parameter.
pub fn login_email(raw: &str) -> Result<String, ApiError> {
    let e = raw.trim();
    if e.is_empty() || e.chars().count() > 254 {
        return Err(ApiError::validation("email", "Invalid email format"));
    }
    no_control("email", e)?;
    Ok(e.to_lowercase())
}

/// Validates an email and returns (as typed but trimmed, normalised key).
pub fn email(raw: &str) -> Result<(String, String), ApiError> {
    let e = raw.trim();
    let bad = || ApiError::validation("email", "Invalid email format");
    if e.is_empty()
        || e.chars().count() > 254
        || e.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok((e.to_string(), e.to_lowercase()))
}

/// Validates a username; returns it trimmed.
pub fn username(raw: &str) -> Result<String, ApiError> {
    let u = raw.trim();
    let n = u.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(ApiError::validation(
            "username",
            format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters"),
        ));
    }
    if !u
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ApiError::validation(
            "username",
            "may contain only letters, digits, `_`, `.` and `-`",
        ));
    }
    Ok(u.to_string())
}

/// Validates a new password's length; control characters are refused (they cannot be typed
/// reliably, and NUL would end a C string).
pub fn password(field: &str, raw: &str) -> Result<(), ApiError> {
    no_control(field, raw)?;
    let n = raw.chars().count();
    if n < PASSWORD_MIN {
        return Err(ApiError::validation(
            field,
            format!("must be at least {PASSWORD_MIN} characters"),
        ));
    }
    if n > PASSWORD_MAX {
        return Err(ApiError::validation(
            field,
            format!("must be at most {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

/// Validates an http(s) URL (avatars, logos).
pub fn http_url(field: &str, raw: &str) -> Result<String, ApiError> {
    let s = raw.trim();
    // The URL parser silently drops tabs and newlines and encodes NUL: refuse them instead of
    // storing a value that differs from the one that was checked.
    no_control(field, s)?;
    if s.chars().count() > 2048 {
        return Err(ApiError::validation(
            field,
            "must be at most 2048 characters",
        ));
    }
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(s.to_string()),
        _ => Err(ApiError::validation(field, "must be an http(s) URL")),
    }
}

/// Validates message content; returns it unchanged (byte-exact) when valid.
pub fn message_content(raw: &str) -> Result<(), ApiError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ApiError::validation("content", "must not be empty"));
    }
    if trimmed.chars().count() > MESSAGE_MAX_CHARS {
        return Err(ApiError::validation(
            "content",
            format!("must be at most {MESSAGE_MAX_CHARS} characters"),
        ));
    }
    if raw.contains('\0') {
        return Err(ApiError::validation(
            "content",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// A required, trimmed, bounded text field (names).
pub fn name(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s.to_string())
}

/// An optional bounded text field (descriptions); empty becomes `None`.
pub fn optional_text(
    field: &str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > max => Err(ApiError::validation(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(s) if s.contains('\0') => Err(ApiError::validation(
            field,
            "must not contain NUL characters",
        )),
        Some(s) => Ok(Some(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("  Alice@Example.COM ").expect("valid"),
            (
                "Alice@Example.COM".to_string(),
                "alice@example.com".to_string()
            )
        );
        for bad in [
            "", "a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c", "a@c.", "a@b..c",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        assert_eq!(username(" john_doe ").expect("valid"), "john_doe");
        assert!(username("名前").is_ok());
        for bad in ["a", "has space", "x".repeat(33).as_str(), "semi;colon"] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_characters() {
        assert!(email("a\u{7f}@b.c").is_err());
        assert!(email("a\u{85}@b.c").is_err());
        assert!(http_url("avatar_url", "https://a.example/\tx").is_err());
        assert!(http_url("avatar_url", "https://a.example/\0").is_err());
        assert!(name("name", "a\u{1b}b", 10).is_err());
        assert!(idempotency_key("k\0").is_err());
        assert!(idempotency_key("k\u{9f}").is_err());
        assert!(idempotency_key("   ").is_err());
        assert!(idempotency_key(&"é".repeat(128)).is_ok());
        assert!(idempotency_key(&"é".repeat(129)).is_err());
        assert!(login_email("a\0@b.c").is_err());
        assert_eq!(login_email(" A@B.c ").expect("ok"), "a@b.c");
        assert!(password("password", "12345678\0").is_err());
        assert!(message_content("line\n\ttab").is_ok());
        assert!(message_content("nul\0").is_err());
        assert!(optional_text("description", Some("a\nb"), 10).is_ok());
        assert!(optional_text("description", Some("a\0b"), 10).is_err());
    }

    #[test]
    fn passwords_and_content() {
        assert!(password("password", "1234567").is_err());
        assert!(password("password", "12345678").is_ok());
        assert!(message_content("  ").is_err());
        assert!(message_content(&"é".repeat(4000)).is_ok());
        assert!(message_content(&"é".repeat(4001)).is_err());
        assert!(message_content(&format!("  {}  ", "x".repeat(4000))).is_ok());
    }
}
