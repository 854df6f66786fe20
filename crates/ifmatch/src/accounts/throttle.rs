//! Failed-login back-off, per username and per client address.
//!
//! Every failed login (wrong password or unknown user) counts against the
//! username tried and against the client's address. Up to
//! [`Backoff::free_failures`] failures cost nothing; after that, the `n`-th
//! failure closes the door for
//!
//! ```text
//! min(base * 2^(n - free_failures - 1), max)
//! ```
//!
//! during which every login for that username (or from that address) is
//! refused with [`AccountsError::Throttled`] *before* any password is hashed.
//! A success clears the username's count (not the address's: one valid
//! account must not let an address go on guessing others). A count is
//! forgotten [`ThrottleConfig::forget_after`] after its last failure.
//!
//! The defaults ([`ThrottleConfig::default`]):
//!
//! | key | free failures | first delay | longest delay |
//! |---|---|---|---|
//! | username | 5 | 1 s | 60 s |
//! | client address (IPv6: its /64) | 20 | 1 s | 15 min |
//!
//! and counts are forgotten after an hour without failures. The username
//! back-off is short on purpose: anyone can fail logins for someone else's
//! username, so a long one would let them lock that user out; the address
//! back-off can be long because it only slows the address that fails.
//!
//! The counts live in this process's memory (so each server instance, or
//! Lambda instance, keeps its own), at most [`ThrottleConfig::max_entries`]
//! of them: beyond that, lapsed entries are dropped first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::clock::DynClock;

use super::AccountsError;

/// An exponential back-off after failed logins (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures that cost nothing.
    pub free_failures: u32,
    /// The delay after the first failure beyond the free ones.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// How long logins are refused after the `failures`-th failure.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ifmatch::accounts::Backoff;
    /// let b = Backoff { free_failures: 5, base: Duration::from_secs(1), max: Duration::from_secs(60) };
    /// assert_eq!(b.delay_after(5), Duration::ZERO);
    /// assert_eq!(b.delay_after(6), Duration::from_secs(1));
    /// assert_eq!(b.delay_after(8), Duration::from_secs(4));
    /// assert_eq!(b.delay_after(100), Duration::from_secs(60));
    /// ```
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures - 1).min(32);
        self.base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }
}

/// The settings of the failed-login back-off (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// The back-off per username.
    pub per_username: Backoff,
    /// The back-off per client address (IPv6 addresses by their /64).
    pub per_address: Backoff,
    /// How long after its last failure a count is forgotten.
    pub forget_after: Duration,
    /// The most usernames and addresses tracked at once.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_username: Backoff {
                free_failures: 5,
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            per_address: Backoff {
                free_failures: 20,
                base: Duration::from_secs(1),
                max: Duration::from_secs(15 * 60),
            },
            forget_after: Duration::from_secs(3600),
            max_entries: 100_000,
        }
    }
}

impl ThrottleConfig {
    /// No back-off at all (for tests and trusted batch tools).
    pub fn off() -> Self {
        let never = Backoff {
            free_failures: u32::MAX,
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        ThrottleConfig {
            per_username: never,
            per_address: never,
            ..ThrottleConfig::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Username(String),
    Address(IpAddr),
}

impl Key {
    fn username(username: &str) -> Key {
        // Folded like usernames are, and bounded: any string may be tried.
        Key::Username(username.to_ascii_lowercase().chars().take(64).collect())
    }

    fn address(addr: IpAddr) -> Key {
        Key::Address(match addr.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        })
    }

    fn scope(&self) -> &'static str {
        match self {
            Key::Username(_) => "for this username",
            Key::Address(_) => "from this address",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: SystemTime,
    blocked_until: SystemTime,
}

/// The failed-login counts of one process; see the module docs.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    config: ThrottleConfig,
    clock: DynClock,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl LoginThrottle {
    pub(crate) fn new(config: ThrottleConfig, clock: DynClock) -> Self {
        LoginThrottle {
            config,
            clock,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Every update leaves the map consistent, so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys(username: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::username(username)).chain(addr.map(Key::address))
    }

    fn policy(&self, key: &Key) -> &Backoff {
        match key {
            Key::Username(_) => &self.config.per_username,
            Key::Address(_) => &self.config.per_address,
        }
    }

    /// [`AccountsError::Throttled`] if the username or the address is in its back-off.
    pub(crate) fn check(&self, username: &str, addr: Option<IpAddr>) -> Result<(), AccountsError> {
        let now = self.clock.now();
        let entries = self.entries();
        for key in Self::keys(username, addr) {
            if let Some(e) = entries.get(&key)
                && let Ok(left) = e.blocked_until.duration_since(now)
                && !left.is_zero()
            {
                metrics::counter!("ifmatch_login_throttled_total").increment(1);
                return Err(AccountsError::Throttled {
                    scope: key.scope(),
                    retry_after: left,
                });
            }
        }
        Ok(())
    }

    /// Counts a failed login against the username and the address.
    pub(crate) fn failure(&self, username: &str, addr: Option<IpAddr>) {
        let now = self.clock.now();
        let mut entries = self.entries();
        for key in Self::keys(username, addr) {
            let delay_policy = *self.policy(&key);
            let forget = self.config.forget_after;
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                blocked_until: now,
            });
            if now.duration_since(e.last_failure).unwrap_or_default() >= forget {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            e.blocked_until = now + delay_policy.delay_after(e.failures);
        }
        if entries.len() > self.config.max_entries {
            self.prune(&mut entries, now);
        }
    }

    /// Clears the username's count after a successful login.
    pub(crate) fn success(&self, username: &str) {
        self.entries().remove(&Key::username(username));
    }

    /// Drops forgotten entries, then the oldest, down to 90 % of the capacity.
    fn prune(&self, entries: &mut HashMap<Key, Entry>, now: SystemTime) {
        let forget = self.config.forget_after;
        entries.retain(|_, e| now.duration_since(e.last_failure).unwrap_or_default() < forget);
        let target = self.config.max_entries / 10 * 9;
        if entries.len() > target {
            let mut by_age: Vec<(SystemTime, Key)> = entries
                .iter()
                .map(|(k, e)| (e.last_failure, k.clone()))
                .collect();
            by_age.sort_by_key(|(t, _)| *t);
            for (_, k) in by_age.into_iter().take(entries.len() - target) {
                entries.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn throttle(config: ThrottleConfig) -> (LoginThrottle, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        (LoginThrottle::new(config, Arc::new(clock.clone())), clock)
    }

    fn retry_after(r: Result<(), AccountsError>) -> Option<(&'static str, Duration)> {
        match r {
            Ok(()) => None,
            Err(AccountsError::Throttled { scope, retry_after }) => Some((scope, retry_after)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn username_back_off_doubles_up_to_its_cap_and_a_success_clears_it() {
        let (t, clock) = throttle(ThrottleConfig::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(retry_after(t.check("Alice", Some(ip))), None);
            t.failure("Alice", Some(ip));
        }
        assert_eq!(retry_after(t.check("alice", None)), None, "five are free");
        let mut delays = Vec::new();
        for _ in 0..9 {
            t.failure("alice", None);
            let (scope, d) = retry_after(t.check("ALICE", None)).unwrap();
            assert_eq!(scope, "for this username");
            delays.push(d.as_secs());
            clock.advance(d);
            assert_eq!(
                retry_after(t.check("alice", None)),
                None,
                "open after the delay"
            );
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Other usernames are not affected; a success clears alice's count.
        assert_eq!(retry_after(t.check("bob", None)), None);
        t.success("alice");
        t.failure("alice", None);
        assert_eq!(retry_after(t.check("alice", None)), None);
    }

    #[test]
    fn address_back_off_spans_usernames_and_ipv6_64s() {
        let (t, clock) = throttle(ThrottleConfig::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for i in 0..21 {
            t.failure(&format!("user{i}"), Some(a));
        }
        let (scope, d) = retry_after(t.check("fresh", Some(same_64))).unwrap();
        assert_eq!((scope, d), ("from this address", Duration::from_secs(1)));
        assert_eq!(retry_after(t.check("fresh", Some(other_64))), None);
        // A success for one username does not clear the address.
        t.success("user0");
        assert!(retry_after(t.check("user0", Some(a))).is_some());
        // Forgotten after an hour without failures.
        clock.advance(Duration::from_secs(3600));
        t.failure("someone", Some(a));
        assert_eq!(retry_after(t.check("someone", Some(a))), None);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let (t, _) = throttle(ThrottleConfig::default());
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        for i in 0..21 {
            t.failure(&format!("u{i}"), Some(mapped));
        }
        assert!(retry_after(t.check("x", Some(v4))).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let (t, clock) = throttle(ThrottleConfig {
            max_entries: 100,
            ..ThrottleConfig::default()
        });
        for i in 0..1000u32 {
            clock.advance(Duration::from_millis(1));
            t.failure(&format!("name{i}"), None);
            assert!(t.len() <= 100);
        }
        // The newest are kept.
        for _ in 0..5 {
            t.failure("name999", None);
        }
        assert!(retry_after(t.check("name999", None)).is_some());
    }

    #[test]
    fn off_never_throttles() {
        let (t, _) = throttle(ThrottleConfig::off());
        for _ in 0..1000 {
            t.failure("alice", Some("192.0.2.1".parse().unwrap()));
        }
        assert_eq!(
            retry_after(t.check("alice", Some("192.0.2.1".parse().unwrap()))),
            None
        );
    }
}
