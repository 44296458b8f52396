//! Sign-in throttling: how many password attempts a client address and an account may make,
//! checked before any password is hashed.
//!
//! Each key (a client IP, an account name) may fail [`Limits::free_failures`] times within
//! [`Limits::window`]; every failure beyond that locks the key for a delay that doubles with
//! each further failure (30 s, 1 min, 2 min, … up to [`Limits::max_lockout`]). An attempt is
//! counted when it *starts* ([`Throttle::begin`]), so a burst of concurrent guesses cannot all
//! pass the check before the first one fails; a successful sign-in takes its attempt back and
//! clears the account's count. State lives in memory: each map holds at most
//! [`Limits::max_keys`] keys, expired ones are dropped first, and when every key is live the
//! one with the fewest failures goes, so memory stays bounded however many addresses or names
//! an attacker uses.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rules of one kind of key.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures allowed within `window` before lockouts start.
    pub free_failures: u32,
    /// How long a failure counts.
    pub window: Duration,
    /// The first lockout; each further failure doubles it.
    pub first_lockout: Duration,
    pub max_lockout: Duration,
    /// Keys remembered at once.
    pub max_keys: usize,
}

/// Per account: five failures in 15 minutes, then 30 s, doubling up to 15 minutes.
pub const ACCOUNT_LIMITS: Limits = Limits {
    free_failures: 5,
    window: Duration::from_secs(15 * 60),
    first_lockout: Duration::from_secs(30),
    max_lockout: Duration::from_secs(15 * 60),
    max_keys: 50_000,
};

/// Per client address: more room (a family or an office shares one address), same growth.
pub const IP_LIMITS: Limits = Limits {
    free_failures: 20,
    window: Duration::from_secs(15 * 60),
    first_lockout: Duration::from_secs(30),
    max_lockout: Duration::from_secs(15 * 60),
    max_keys: 50_000,
};

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, limits: &Limits, now: Instant) -> bool {
        now.duration_since(self.last_failure) >= limits.window
            && self.locked_until.is_none_or(|until| until <= now)
    }
}

/// One map of keys under one set of limits.
#[derive(Debug)]
struct Counter<K> {
    limits: Limits,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
        }
    }

    /// How long `key` must still wait, if it is locked out.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        let until = entry.locked_until?;
        (until > now).then(|| until - now)
    }

    fn fail(&mut self, key: &K, now: Instant) {
        let limits = self.limits;
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if entry.expired(&limits, now) {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures > limits.free_failures {
            let doublings = (entry.failures - limits.free_failures - 1).min(16);
            let lockout = limits
                .first_lockout
                .saturating_mul(1 << doublings)
                .min(limits.max_lockout);
            entry.locked_until = Some(now + lockout);
        }
    }

    /// Takes back one failure (an attempt counted when it began turned out right).
    fn forgive_one(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures <= self.limits.free_failures {
                entry.locked_until = None;
            }
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Below `max_keys` again: expired keys go first, then the one with the fewest failures.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.limits.max_keys {
            return;
        }
        let limits = self.limits;
        self.entries.retain(|_, entry| !entry.expired(&limits, now));
        if self.entries.len() < self.limits.max_keys {
            return;
        }
        let weakest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| (entry.failures, entry.last_failure))
            .map(|(key, _)| key.clone());
        if let Some(key) = weakest {
            self.entries.remove(&key);
        }
    }
}

/// Who is signing in: the client's address and, for the sign-in form, the account name.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub ip: Option<IpAddr>,
    /// Trimmed and lowercased, so `Alice` and `alice ` count together.
    pub account: Option<String>,
}

/// Account names are counted by at most this many characters (a login has at most 64), so a
/// key never holds more than a few hundred bytes whatever was typed.
const MAX_ACCOUNT_CHARS: usize = 64;

impl Attempt {
    pub fn new(ip: Option<IpAddr>, account: Option<&str>) -> Self {
        let account = account.map(|name| {
            let name: String = name.trim().chars().take(MAX_ACCOUNT_CHARS + 1).collect();
            name.to_lowercase()
        });
        Self { ip, account }
    }
}

/// The sign-in throttle of one server. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Throttle {
    inner: Mutex<(Counter<IpAddr>, Counter<String>)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(IP_LIMITS, ACCOUNT_LIMITS)
    }
}

impl Throttle {
    pub fn new(ip: Limits, account: Limits) -> Self {
        Self {
            inner: Mutex::new((Counter::new(ip), Counter::new(account))),
        }
    }

    /// Checks `attempt` and counts it as a failure until [`Throttle::succeeded`] says
    /// otherwise. `Err` holds how long the client must wait (at least one second); nothing
    /// is counted then.
    pub fn begin(&self, attempt: &Attempt) -> Result<(), Duration> {
        self.begin_at(attempt, Instant::now())
    }

    pub fn begin_at(&self, attempt: &Attempt, now: Instant) -> Result<(), Duration> {
        let mut guard = self.lock();
        let (ips, accounts) = &mut *guard;
        let wait = [
            attempt.ip.and_then(|ip| ips.wait(&ip, now)),
            attempt
                .account
                .as_ref()
                .and_then(|account| accounts.wait(account, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait.max(Duration::from_secs(1)));
        }
        if let Some(ip) = attempt.ip {
            ips.fail(&ip, now);
        }
        if let Some(account) = &attempt.account {
            accounts.fail(account, now);
        }
        Ok(())
    }

    /// The attempt begun with `attempt` was right: it is not a failure, and the account starts
    /// afresh.
    pub fn succeeded(&self, attempt: &Attempt) {
        let mut guard = self.lock();
        let (ips, accounts) = &mut *guard;
        if let Some(ip) = attempt.ip {
            ips.forgive_one(&ip);
        }
        if let Some(account) = &attempt.account {
            accounts.clear(account);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Counter<IpAddr>, Counter<String>)> {
        // A panic while holding the lock leaves counts that are still counts.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many keys are remembered (addresses, accounts).
    pub fn len(&self) -> (usize, usize) {
        let guard = self.lock();
        (guard.0.entries.len(), guard.1.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn lockouts_start_after_the_free_failures_and_double() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let attempt = Attempt::new(ip(1), Some("Alice"));
        for _ in 0..ACCOUNT_LIMITS.free_failures {
            assert_eq!(throttle.begin_at(&attempt, start), Ok(()));
        }
        // The sixth failure locks the account for 30 s.
        assert_eq!(throttle.begin_at(&attempt, start), Ok(()));
        let wait = throttle.begin_at(&attempt, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        // The same account under another spelling, from another address, is locked too.
        let other = Attempt::new(ip(2), Some(" alice"));
        assert!(throttle.begin_at(&other, start).is_err());
        // After the lockout, one more failure locks it for twice as long.
        let later = start + Duration::from_secs(30);
        assert_eq!(throttle.begin_at(&attempt, later), Ok(()));
        assert_eq!(
            throttle.begin_at(&attempt, later),
            Err(Duration::from_secs(60))
        );
        // Other accounts from another address are not affected.
        assert_eq!(
            throttle.begin_at(&Attempt::new(ip(3), Some("bob")), later),
            Ok(())
        );
    }

    #[test]
    fn a_success_clears_the_account_and_takes_its_attempt_back() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let attempt = Attempt::new(ip(1), Some("alice"));
        for _ in 0..ACCOUNT_LIMITS.free_failures {
            throttle.begin_at(&attempt, now).unwrap();
        }
        throttle.begin_at(&attempt, now).unwrap();
        throttle.succeeded(&attempt);
        for _ in 0..ACCOUNT_LIMITS.free_failures {
            assert_eq!(throttle.begin_at(&attempt, now), Ok(()));
        }
    }

    #[test]
    fn an_address_guessing_many_accounts_is_locked_out() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..=IP_LIMITS.free_failures {
            let attempt = Attempt::new(ip(9), Some(&format!("user{n}")));
            assert_eq!(throttle.begin_at(&attempt, now), Ok(()), "attempt {n}");
        }
        let attempt = Attempt::new(ip(9), Some("yet-another"));
        assert!(throttle.begin_at(&attempt, now).is_err());
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let attempt = Attempt::new(None, Some("alice"));
        for _ in 0..ACCOUNT_LIMITS.free_failures {
            throttle.begin_at(&attempt, start).unwrap();
        }
        let later = start + ACCOUNT_LIMITS.window;
        for _ in 0..ACCOUNT_LIMITS.free_failures {
            assert_eq!(throttle.begin_at(&attempt, later), Ok(()));
        }
    }

    #[test]
    fn a_huge_account_name_is_kept_short() {
        let attempt = Attempt::new(None, Some(&"x".repeat(1_000_000)));
        assert!(attempt.account.unwrap().len() <= 4 * (MAX_ACCOUNT_CHARS + 1));
    }

    #[test]
    fn memory_stays_bounded_however_many_keys_are_tried() {
        let small = Limits {
            max_keys: 100,
            ..ACCOUNT_LIMITS
        };
        let throttle = Throttle::new(small, small);
        let now = Instant::now();
        for n in 0..10_000u32 {
            let address = IpAddr::from(n.to_be_bytes());
            let attempt = Attempt::new(Some(address), Some(&format!("name{n}")));
            throttle.begin_at(&attempt, now).unwrap();
        }
        assert_eq!(throttle.len(), (100, 100));
    }
}
