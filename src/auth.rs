//! Credentials: Argon2id password hashing (on a small fixed pool of dedicated threads, each
//! reusing one memory block) and HS256 access tokens.

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Block, Params, Version};
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// Hashes and verifies passwords with Argon2id at OWASP's parameters (19 MiB, t=2, p=1).
///
/// Hashing is CPU- and memory-heavy, so it runs on `concurrency` dedicated threads, each
/// allocating its 19 MiB block once and reusing it: memory is bounded by the hashing
/// concurrency (on the blocking pool each hash allocated afresh on whichever thread ran it,
/// and the allocator kept it per thread). Requests wait in two queues; the priority queue
/// (logins from an address the account recently logged in from) is served first.
#[derive(Clone)]
pub struct Passwords {
    pool: Arc<PoolHandle>,
    /// A hash of a random password, verified against when the account does not exist, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

/// Which queue a hashing job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Default)]
struct Queues {
    high: VecDeque<Job>,
    normal: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

/// Owns the threads: dropping the last `Passwords` stops them.
struct PoolHandle {
    shared: Arc<Shared>,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.shared.queues.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: the nice value is per
/// thread), so request threads preempt a running hash; a failure is logged and hashing goes on.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread, no pointers.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice.min(19))
        };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), nice, "could not lower the hashing thread's priority");
        }
    }
}

/// Hashing threads for a configured concurrency (0: half the cores, at least one).
fn threads_for(concurrency: usize) -> usize {
    if concurrency > 0 {
        return concurrency;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
pub fn current_thread_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; errno is reset first because -1 is a
        // valid nice value.
        unsafe {
            *libc::__errno_location() = 0;
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn worker(shared: Arc<Shared>, nice: i32) {
    lower_priority(nice);
    // Allocated on the first job, then reused for every hash this thread computes.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let mut q = shared.queues.lock();
            loop {
                if let Some(job) = q.high.pop_front().or_else(|| q.normal.pop_front()) {
                    break job;
                }
                if q.closed {
                    return;
                }
                shared.ready.wait(&mut q);
            }
        };
        job(&mut memory);
    }
}

fn params() -> Params {
    Params::default()
}

/// `memory` sized for `params` (grown once; kept).
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let n = params.block_count();
    if memory.len() < n {
        memory.resize(n, Block::default());
    }
    &mut memory[..n]
}

/// Hashes `password` with a fresh salt into a PHC string, in `memory`.
fn hash_with(password: &[u8], memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let params = params();
    let argon = Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks(memory, &params))
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let phc = PasswordHash {
        algorithm: ArgonAlgorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash`, computed in `memory`.
fn verify_with(password: &[u8], hash: &str, memory: &mut Vec<Block>) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let algorithm = ArgonAlgorithm::try_from(parsed.algorithm)
        .map_err(|e| anyhow::anyhow!("stored hash algorithm: {e}"))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| anyhow::anyhow!("stored hash version: {e}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("stored params: {e}"))?;
    let expected = parsed.hash.context("stored hash has no output")?;
    let salt = parsed.salt.context("stored hash has no salt")?;
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("stored salt: {e}"))?;
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    argon
        .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks(memory, &params))
        .map_err(|e| anyhow::anyhow!("verifying: {e}"))?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

impl Passwords {
    /// `concurrency` hashing threads at the default priority.
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        Self::with_nice(concurrency, 0)
    }

    /// `concurrency` hashing threads at nice value `nice` (`FECHATTER_HASH_NICE`): a hash then
    /// uses only the CPU that request threads leave, so a flood of logins (the failed-login
    /// budget's hashes) does not queue honest requests behind it on the cores.
    /// `concurrency` 0 means half the cores (at least one), so hashes never hold every core.
    pub fn with_nice(concurrency: usize, nice: i32) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        for i in 0..threads_for(concurrency) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(shared, nice))
                .context("starting a hashing thread")?;
        }
        let pool = Arc::new(PoolHandle { shared });
        let mut memory = Vec::new();
        let dummy = hash_with(uuid::Uuid::new_v4().as_bytes(), &mut memory)?;
        Ok(Passwords {
            pool,
            dummy_hash: dummy.into(),
        })
    }

    /// Runs `f` on a hashing thread (with its reusable memory) and awaits the result.
    async fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        f: impl FnOnce(&mut Vec<Block>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        {
            let mut q = self.pool.shared.queues.lock();
            match priority {
                Priority::High => q.high.push_back(job),
                Priority::Normal => q.normal.push_back(job),
            }
        }
        self.pool.shared.ready.notify_one();
        rx.await.context("hashing thread stopped")?
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.run(Priority::Normal, move |memory| {
            hash_with(password.as_bytes(), memory)
        })
        .await
    }

    /// Whether `password` matches `hash`; with `None` verifies against a dummy hash (and fails).
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        self.verify_with_priority(password, hash, Priority::Normal)
            .await
    }

    /// [`Passwords::verify`], queued at `priority`.
    pub async fn verify_with_priority(
        &self,
        password: String,
        hash: Option<String>,
        priority: Priority,
    ) -> anyhow::Result<bool> {
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self
            .run(priority, move |memory| {
                verify_with(password.as_bytes(), &hash, memory)
            })
            .await?;
        Ok(ok && real)
    }

    /// Runs `f` on a hashing thread (tests: what the thread sees).
    pub async fn on_hash_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        self.run(Priority::Normal, move |_| Ok(f())).await
    }

    /// Jobs waiting for a hashing thread.
    pub fn queued(&self) -> usize {
        let q = self.pool.shared.queues.lock();
        q.high.len() + q.normal.len()
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

    /// The hashing threads run at the configured nice value, so request threads preempt them;
    /// with 0 they keep the process's priority.
    #[tokio::test]
    async fn hashing_threads_run_at_their_nice_value() {
        let low = Passwords::with_nice(2, 19).expect("passwords");
        for _ in 0..4 {
            let nice = low.on_hash_thread(current_thread_nice).await.expect("job");
            assert_eq!(nice, Some(19));
        }
        let ours = current_thread_nice();
        let plain = Passwords::new(1).expect("passwords");
        assert_eq!(
            plain
                .on_hash_thread(current_thread_nice)
                .await
                .expect("job"),
            ours
        );
    }

    /// Concurrency 0 leaves half the cores free of hashing (at least one thread).
    #[test]
    fn automatic_concurrency_is_half_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_for(0), (cores / 2).max(1));
        assert!(threads_for(0) < cores || cores == 1);
        assert_eq!(threads_for(3), 3);
    }

    /// Hashes of the pool and of the crate's own API verify each other (stored hashes from
    /// before the pool keep working).
    #[tokio::test]
    async fn pool_hashes_match_the_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let p = Passwords::new(1).expect("passwords");
        let ours = p.hash("s3cret pass".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("parse");
        let crate_argon = Argon2::default();
        assert!(crate_argon.verify_password(b"s3cret pass", &parsed).is_ok());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = crate_argon
            .hash_password(b"other pass", &salt)
            .expect("hash")
            .to_string();
        assert!(
            p.verify("other pass".into(), Some(theirs.clone()))
                .await
                .expect("verify")
        );
        assert!(!p.verify("nope".into(), Some(theirs)).await.expect("verify"));
        assert!(
            p.verify_with_priority("s3cret pass".into(), Some(ours), Priority::High)
                .await
                .expect("verify")
        );
    }
}
