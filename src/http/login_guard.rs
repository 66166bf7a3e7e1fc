//! Brute-force protection for logins, checked before any hashing so refused attempts cost the
//! server nothing.
//!
//! - **Pair** (account, client address): `FECHATTER_LOGIN_FAILURES_PER_PAIR` failures in 15 min
//!   lock that pair — the attacker's address, not the owner's.
//! - **Address**: `FECHATTER_LOGIN_FAILURES_PER_IP` failures in 15 min lock the address.
//! - **Account** (a spread attack): `FECHATTER_LOGIN_FAILURES_PER_ACCOUNT` failures in 15 min from
//!   any addresses put the account under attack: addresses with failures on it are refused;
//!   an address with no recent failures (the owner elsewhere) is still let through, at most one
//!   attempt per second for the account; a recently successful pair always is.
//! - **Server**: failed attempts are hashed at most `FECHATTER_LOGIN_FAILURES_PER_SEC` (bursts of
//!   as many): beyond, attempts from pairs without a recent success are refused (429,
//!   `Retry-After: 1`) before hashing. Recently successful pairs skip this budget and wait in
//!   the hashing pool's priority queue.
//!
//! Each attempt is reserved before hashing (in-flight attempts count), so limits are exact under
//! concurrency. Every map holds at most `FECHATTER_LOGIN_GUARD_KEYS` keys (expired first, then
//! the oldest, are dropped).

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::error::ApiError;
use crate::auth::Priority;
use crate::config::Config;

/// The lock-out window.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a successful (account, address) pair counts as known-good.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(7 * 86_400);
/// Attempts let through per second for an account under a spread attack.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);

/// Failures and in-flight attempts of one key within the window.
#[derive(Clone, Copy)]
struct Count {
    failures: u32,
    inflight: u32,
    since: Instant,
}

impl Count {
    fn fresh() -> Self {
        Count {
            failures: 0,
            inflight: 0,
            since: Instant::now(),
        }
    }

    fn roll(&mut self, window: Duration) {
        if self.since.elapsed() >= window {
            self.failures = 0;
            self.since = Instant::now();
        }
    }

    fn idle(&self, window: Duration) -> bool {
        self.inflight == 0 && self.since.elapsed() >= window
    }
}

/// A bounded map of counts.
struct Counts<K: Hash + Eq + Clone> {
    map: DashMap<K, Count>,
    cap: usize,
    window: Duration,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(cap: usize, window: Duration) -> Self {
        Counts {
            map: DashMap::new(),
            cap,
            window,
        }
    }

    /// Makes room for a new key: drops idle keys, then the oldest tenth.
    fn make_room(&self, key: &K) {
        if self.map.len() < self.cap || self.map.contains_key(key) {
            return;
        }
        self.map.retain(|_, c| !c.idle(self.window));
        if self.map.len() < self.cap {
            return;
        }
        let mut ages: Vec<(Instant, K)> = self
            .map
            .iter()
            .filter(|e| e.value().inflight == 0)
            .map(|e| (e.value().since, e.key().clone()))
            .collect();
        let drop = (self.cap / 10).max(1).min(ages.len());
        if drop == 0 {
            return;
        }
        ages.select_nth_unstable_by_key(drop - 1, |(since, _)| *since);
        for (_, k) in ages.into_iter().take(drop) {
            self.map.remove(&k);
        }
    }

    /// Reserves an attempt unless `refuse(count)` says no.
    fn reserve(&self, key: &K, refuse: impl FnOnce(&Count) -> bool) -> bool {
        self.make_room(key);
        let mut entry = self.map.entry(key.clone()).or_insert_with(Count::fresh);
        entry.roll(self.window);
        if refuse(&entry) {
            return false;
        }
        entry.inflight += 1;
        true
    }

    fn failures(&self, key: &K) -> u32 {
        self.map
            .get(key)
            .map(|c| {
                if c.since.elapsed() >= self.window {
                    0
                } else {
                    c.failures
                }
            })
            .unwrap_or(0)
    }

    fn finish(&self, key: &K, failed: bool) {
        if let Some(mut c) = self.map.get_mut(key) {
            c.inflight = c.inflight.saturating_sub(1);
            if failed {
                c.roll(self.window);
                c.failures += 1;
            }
        }
    }

    fn clear(&self, key: &K) {
        self.map
            .remove_if(key, |_, c| c.inflight == 0 && c.failures == 0);
        if let Some(mut c) = self.map.get_mut(key) {
            c.failures = 0;
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The server-wide budget of hashed failures: a token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

type Pair = (Arc<str>, IpAddr);

/// Failed-login counters; see the module docs.
pub struct LoginGuard {
    pairs: Counts<Pair>,
    accounts: Counts<Arc<str>>,
    ips: Counts<IpAddr>,
    /// Pairs that logged in recently (value: `since` = when).
    known_good: Counts<Pair>,
    /// When an account under attack last let an attempt through.
    trickle: DashMap<Arc<str>, Instant>,
    global: Mutex<Bucket>,
    pair_limit: u32,
    account_limit: u32,
    ip_limit: u32,
    global_rate: f64,
    cap: usize,
}

/// A reserved attempt: report its outcome; dropped unreported, it only frees its reservation.
pub struct Attempt<'g> {
    guard: &'g LoginGuard,
    pair: Pair,
    known: bool,
    done: bool,
}

fn refused(message: &str, retry_after_secs: u64) -> ApiError {
    crate::metrics::rate_limited("login");
    ApiError::RateLimited {
        message: message.into(),
        retry_after_secs: retry_after_secs.max(1),
    }
}

impl LoginGuard {
    pub fn new(config: &Config) -> Self {
        let cap = config.login_guard_keys;
        let rate = config.login_failures_per_sec as f64;
        LoginGuard {
            pairs: Counts::new(cap, WINDOW),
            accounts: Counts::new(cap, WINDOW),
            ips: Counts::new(cap, WINDOW),
            known_good: Counts::new(cap, KNOWN_GOOD_FOR),
            trickle: DashMap::new(),
            global: Mutex::new(Bucket {
                tokens: rate,
                last: Instant::now(),
            }),
            pair_limit: config.login_failures_per_pair,
            account_limit: config.login_failures_per_account,
            ip_limit: config.login_failures_per_ip,
            global_rate: rate,
            cap,
        }
    }

    fn is_known_good(&self, pair: &Pair) -> bool {
        self.known_good
            .map
            .get(pair)
            .is_some_and(|c| c.since.elapsed() < KNOWN_GOOD_FOR)
    }

    fn lock_remaining(&self, since: Instant) -> u64 {
        WINDOW.saturating_sub(since.elapsed()).as_secs() + 1
    }

    fn take_global(&self) -> bool {
        let mut b = self.global.lock();
        let now = Instant::now();
        let dt = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + dt * self.global_rate).min(self.global_rate.max(1.0));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refund_global(&self) {
        let mut b = self.global.lock();
        b.tokens = (b.tokens + 1.0).min(self.global_rate.max(1.0));
    }

    /// Whether an account under attack lets this attempt through now (once per second).
    fn trickle_through(&self, account: &Arc<str>) -> bool {
        if self.trickle.len() >= self.cap && !self.trickle.contains_key(account) {
            self.trickle
                .retain(|_, at| at.elapsed() < TRICKLE_EVERY * 2);
            if self.trickle.len() >= self.cap {
                return false;
            }
        }
        let mut at = self
            .trickle
            .entry(account.clone())
            .or_insert(Instant::now() - TRICKLE_EVERY);
        if at.elapsed() >= TRICKLE_EVERY {
            *at = Instant::now();
            true
        } else {
            false
        }
    }

    /// Reserves a login attempt for `account` from `ip`, or refuses it (429) without hashing.
    pub fn begin(&self, account: &str, ip: IpAddr) -> Result<Attempt<'_>, ApiError> {
        let account: Arc<str> = account.into();
        let pair: Pair = (account.clone(), ip);
        let known = self.is_known_good(&pair);
        let mut retry = 0;
        // The pair first: an attacker's own address is the first thing locked.
        if !self.pairs.reserve(&pair, |c| {
            retry = self.lock_remaining(c.since);
            c.failures + c.inflight >= self.pair_limit
        }) {
            return Err(refused(
                "Too many failed login attempts for this account from this address; try again later",
                retry,
            ));
        }
        let mut attempt = Attempt {
            guard: self,
            pair: pair.clone(),
            known,
            done: false,
        };
        if !self.ips.reserve(&ip, |c| {
            retry = self.lock_remaining(c.since);
            !known && c.failures + c.inflight >= self.ip_limit
        }) {
            self.pairs.finish(&pair, false);
            attempt.done = true;
            return Err(refused(
                "Too many failed login attempts from this address; try again later",
                retry,
            ));
        }
        let pair_failures = self.pairs.failures(&pair);
        if !self.accounts.reserve(&account, |c| {
            let under_attack = c.failures >= self.account_limit;
            under_attack && !known && (pair_failures > 0 || !self.trickle_through(&account))
        }) {
            self.pairs.finish(&pair, false);
            self.ips.finish(&ip, false);
            attempt.done = true;
            return Err(refused(
                "Too many failed login attempts for this account; try again shortly",
                1,
            ));
        }
        if !known && !self.take_global() {
            drop(attempt); // frees the three reservations
            return Err(refused("Too many login attempts; try again shortly", 1));
        }
        Ok(attempt)
    }

    /// Keys held, per map (for tests and the admin view).
    pub fn sizes(&self) -> [usize; 4] {
        [
            self.pairs.len(),
            self.accounts.len(),
            self.ips.len(),
            self.known_good.len(),
        ]
    }
}

impl Attempt<'_> {
    /// The hashing queue this attempt waits in.
    pub fn priority(&self) -> Priority {
        if self.known {
            Priority::High
        } else {
            Priority::Normal
        }
    }

    fn release(&mut self, failed: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let g = self.guard;
        g.pairs.finish(&self.pair, failed);
        g.ips.finish(&self.pair.1, failed);
        g.accounts.finish(&self.pair.0, failed);
    }

    /// The password was wrong (or the account unknown).
    pub fn failed(mut self) {
        self.release(true);
    }

    /// The password was right: the pair's failures are forgotten and the pair becomes known-good.
    pub fn succeeded(mut self) {
        self.release(false);
        let g = self.guard;
        g.pairs.clear(&self.pair);
        if !self.known {
            g.refund_global();
        }
        g.known_good.make_room(&self.pair);
        g.known_good.map.insert(self.pair.clone(), Count::fresh());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.release(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(extra: &[&str]) -> LoginGuard {
        let mut args = vec![
            "--login-failures-per-pair",
            "3",
            "--login-failures-per-account",
            "5",
            "--login-failures-per-ip",
            "100",
            "--login-failures-per-sec",
            "1000",
        ];
        args.extend_from_slice(extra);
        LoginGuard::new(&Config::from_args(args).expect("config"))
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_pair_is_locked_not_the_owner() {
        let g = guard(&[]);
        for _ in 0..3 {
            g.begin("a@x.io", ip(1)).expect("allowed").failed();
        }
        assert!(
            g.begin("a@x.io", ip(1)).is_err(),
            "the attacker's pair is locked"
        );
        g.begin("a@x.io", ip(2))
            .expect("the owner elsewhere")
            .succeeded();
        g.begin("b@x.io", ip(1)).expect("another account").failed();
    }

    #[test]
    fn reservations_make_counts_exact() {
        let g = guard(&[]);
        let held: Vec<_> = (0..3).map(|_| g.begin("a@x.io", ip(1))).collect();
        assert!(held.iter().all(Result::is_ok));
        assert!(
            g.begin("a@x.io", ip(1)).is_err(),
            "in flight attempts count"
        );
        drop(held); // unreported: freed, not counted
        assert!(g.begin("a@x.io", ip(1)).is_ok());
    }

    #[test]
    fn a_spread_attack_locks_failing_addresses_and_trickles_new_ones() {
        let g = guard(&[]);
        for n in 1..=5 {
            g.begin("a@x.io", ip(n)).expect("allowed").failed();
        }
        assert!(g.begin("a@x.io", ip(1)).is_err(), "a failing address");
        let first = g.begin("a@x.io", ip(50));
        assert!(first.is_ok(), "one new address per second");
        assert!(
            g.begin("a@x.io", ip(51)).is_err(),
            "a second within the second"
        );
        drop(first);
    }

    #[test]
    fn the_global_budget_spares_known_pairs() {
        let g = guard(&["--login-failures-per-sec", "2"]);
        g.begin("owner@x.io", ip(9)).expect("first").succeeded();
        g.begin("x@x.io", ip(1)).expect("1").failed();
        g.begin("y@x.io", ip(2)).expect("2").failed();
        let _ = g.begin("z@x.io", ip(3)).map(Attempt::failed);
        let mut refused = 0;
        for n in 0..5 {
            if g.begin(&format!("w{n}@x.io"), ip(4))
                .map(Attempt::failed)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused >= 4, "{refused}");
        let known = g.begin("owner@x.io", ip(9)).expect("a known pair passes");
        assert_eq!(known.priority(), Priority::High);
    }

    #[test]
    fn maps_are_bounded() {
        let g = guard(&["--login-guard-keys", "100"]);
        for n in 0..1000u32 {
            let _ = g
                .begin(&format!("u{n}@x.io"), IpAddr::from(n.to_be_bytes()))
                .map(Attempt::failed);
        }
        assert!(g.sizes().iter().all(|n| *n <= 100), "{:?}", g.sizes());
    }
}
