//! Credentials: Argon2id password hashing (on the blocking pool, bounded) and HS256 access tokens.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords with Argon2id at OWASP's parameters (19 MiB, t=2, p=1).
///
/// Hashing is CPU- and memory-heavy, so it runs on the blocking pool, and a semaphore bounds how
/// many run at once: a login flood queues instead of exhausting memory.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does not exist, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    // unwrap-free: these are the crate's documented defaults (OWASP minimum).
    Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, Params::default())
}

impl Passwords {
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let dummy = argon2()
            .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string();
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(concurrency)),
            dummy_hash: dummy.into(),
        })
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing: {e}"))
        })
        .await
        .context("hashing task")?
    }

    /// Whether `password` matches `hash`; with `None` verifies against a dummy hash (and fails).
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            Ok::<_, anyhow::Error>(
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .context("verify task")??;
        Ok(ok && real)
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// The user's token version when issued; a password change invalidates older tokens.
    pub tv: i32,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("token too old to refresh")]
    RefreshWindowPassed,
}

/// An issued token and when it expires.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Issues and validates HS256 access tokens. Only HS256 is accepted (no `alg` confusion).
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
    refresh_window_secs: i64,
    /// Built once: validating is on every authenticated request.
    strict: Validation,
    for_refresh: Validation,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64, refresh_window_secs: u64) -> Self {
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs: ttl_secs as i64,
            refresh_window_secs: refresh_window_secs as i64,
            strict: Self::validation(true),
            for_refresh: Self::validation(false),
        }
    }

    /// A fresh token for `user_id` under token version `tv`.
    pub fn issue(&self, user_id: i64, tv: i32) -> anyhow::Result<IssuedToken> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + self.ttl_secs,
            tv,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        let expires_at = Utc
            .timestamp_opt(claims.exp, 0)
            .single()
            .context("expiry out of range")?;
        Ok(IssuedToken { token, expires_at })
    }

    fn validation(check_exp: bool) -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = check_exp;
        v.leeway = 0;
        v.required_spec_claims = ["exp"].iter().map(|s| s.to_string()).collect();
        v
    }

    /// Validates signature, algorithm and expiry.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        match decode::<Claims>(token, &self.decoding, &self.strict) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(_) => Err(TokenError::Invalid),
        }
    }

    /// Validates a token presented for refresh: signature and algorithm must hold; it may have
    /// expired, but less than the refresh window ago.
    pub fn validate_for_refresh(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = decode::<Claims>(token, &self.decoding, &self.for_refresh)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.exp + self.refresh_window_secs < Utc::now().timestamp() {
            return Err(TokenError::RefreshWindowPassed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"0123456789abcdef0123456789abcdef", 60, 600)
    }

    #[test]
    fn signs_and_verifies() {
        let t = tokens();
        let issued = t.issue(7, 3).expect("issue");
        let claims = t.validate(&issued.token).expect("valid");
        assert_eq!((claims.sub, claims.tv), (7, 3));
    }

    #[test]
    fn rejects_other_key_and_alg() {
        let issued = tokens().issue(7, 0).expect("issue");
        let other = Tokens::new(b"another-secret-of-32-bytes-length!!", 60, 600);
        assert_eq!(
            other.validate(&issued.token).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            other.validate_for_refresh(&issued.token).unwrap_err(),
            TokenError::Invalid
        );
        // Same key, other algorithm.
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: 7,
            iat: now,
            exp: now + 60,
            tv: 0,
        };
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .expect("encode");
        assert_eq!(tokens().validate(&hs512).unwrap_err(), TokenError::Invalid);
        assert_eq!(
            tokens().validate("not.a.token").unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn expired_tokens_refresh_only_within_window() {
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let now = Utc::now().timestamp();
        let recent = Claims {
            sub: 1,
            iat: now - 100,
            exp: now - 10,
            tv: 0,
        };
        let old = Claims {
            sub: 1,
            iat: now - 10_000,
            exp: now - 1_000,
            tv: 0,
        };
        let recent = encode(&Header::new(Algorithm::HS256), &recent, &key).expect("encode");
        let old = encode(&Header::new(Algorithm::HS256), &old, &key).expect("encode");
        let t = tokens();
        assert_eq!(t.validate(&recent).unwrap_err(), TokenError::Expired);
        assert!(t.validate_for_refresh(&recent).is_ok());
        assert_eq!(
            t.validate_for_refresh(&old).unwrap_err(),
            TokenError::RefreshWindowPassed
        );
    }

    #[tokio::test]
    async fn password_round_trip() {
        let p = Passwords::new(2).expect("passwords");
        let hash = p.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            p.verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(!p.verify("wrong".into(), Some(hash)).await.expect("verify"));
        assert!(!p.verify("anything".into(), None).await.expect("verify"));
    }
}
