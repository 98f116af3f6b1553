//! Sign-in throttling. An attempt is counted when it starts, before any password is hashed,
//! so parallel guesses cannot all pass before the first failure is counted; an attempt that
//! succeeds is taken back.
//!
//! Three counts over a window: per account and address (5), per address (20, several
//! accounts behind one NAT), and per account from anywhere (50). A stranger guessing the
//! admin's password from one address locks out that address, not the admin signing in from
//! another; only a spread-out guessing campaign reaches the account's own limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed per account from one address within the window.
pub const PER_ACCOUNT_AND_ADDRESS: u32 = 5;
/// Failures allowed per client address within the window, whatever the accounts.
pub const PER_ADDRESS: u32 = 20;
/// Failures allowed per account within the window, from all addresses together.
pub const PER_ACCOUNT: u32 = 50;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Throttle {
    counts: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

/// An attempt under way, counted as a failure unless it ends with [`Attempt::succeeded`]
/// (a client that goes away while its password is checked has used up its try).
pub struct Attempt {
    counts: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
    keys: [String; 3],
}

impl Throttle {
    /// Counts an attempt for `username` from `address`, or `Err(wait)` while one of the
    /// counts is used up.
    pub fn begin(&self, username: &str, address: &str) -> Result<Attempt, Duration> {
        let keys = [
            format!("p:{}:{address}", bounded(username)),
            format!("a:{address}"),
            format!("u:{}", bounded(username)),
        ];
        let limits = [PER_ACCOUNT_AND_ADDRESS, PER_ADDRESS, PER_ACCOUNT];
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        let wait = keys
            .iter()
            .zip(limits)
            .filter_map(|(key, limit)| {
                map.get(key)
                    .filter(|(count, _)| *count >= limit)
                    .map(|(_, since)| WINDOW.saturating_sub(now.duration_since(*since)))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait.max(Duration::from_secs(1)));
        }
        for key in &keys {
            map.entry(key.clone()).or_insert((0, now)).0 += 1;
        }
        Ok(Attempt {
            counts: self.counts.clone(),
            keys,
        })
    }
}

impl Attempt {
    /// The attempt failed: it stays counted (as does one whose request was dropped).
    pub fn failed(self) {}

    /// The password was right but a second factor is still to come: this attempt is taken
    /// back, the earlier failures stay (else a known password would reset the count of
    /// guessed codes).
    pub fn take_back(self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some((count, _)) = map.get_mut(key) {
                *count = count.saturating_sub(1);
            }
        }
    }

    /// The attempt succeeded: it is taken back, and the account's failures from this
    /// address are forgotten (not the address's, nor the account's from elsewhere).
    pub fn succeeded(self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.keys[0]);
        for key in &self.keys[1..] {
            if let Some((count, _)) = map.get_mut(key) {
                *count = count.saturating_sub(1);
            }
        }
    }
}

/// Bounded, so a flood of long made-up names cannot grow the map's keys.
fn bounded(username: &str) -> String {
    username.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_before_they_end_and_a_stranger_locks_out_only_its_address() {
        let t = Throttle::default();
        // Five attempts under way at once use up the allowance before any has failed.
        let running: Vec<Attempt> = (0..PER_ACCOUNT_AND_ADDRESS)
            .map(|_| t.begin("admin", "203.0.113.9").unwrap())
            .collect();
        assert!(t.begin("admin", "203.0.113.9").is_err());
        running.into_iter().for_each(Attempt::failed);
        assert!(t.begin("admin", "203.0.113.9").is_err());
        // The owner, from another address, still signs in.
        t.begin("admin", "198.51.100.1").unwrap().succeeded();
        assert!(t.begin("admin", "198.51.100.1").is_ok());
        // Another account from the stranger's address too, until the address's own limit.
        assert!(t.begin("bob", "203.0.113.9").is_ok());
    }

    #[test]
    fn a_success_gives_its_attempt_back() {
        let t = Throttle::default();
        for _ in 0..20 {
            t.begin("alice", "192.0.2.1").unwrap().succeeded();
        }
        assert!(t.begin("alice", "192.0.2.1").is_ok());
    }

    #[test]
    fn guesses_spread_over_addresses_reach_the_account_limit() {
        let t = Throttle::default();
        for i in 0..PER_ACCOUNT {
            t.begin("admin", &format!("10.0.{}.{}", i / 200, i % 200))
                .unwrap()
                .failed();
        }
        assert!(t.begin("admin", "10.9.9.9").is_err());
    }
}
