//! Login throttling: failed sign-ins counted per account and per client address over a
//! window; past the allowance the next attempt is refused with a time to wait, before any
//! password is checked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per account within the window.
pub const PER_ACCOUNT: u32 = 5;
/// Failures allowed per client address within the window (several accounts behind one NAT).
pub const PER_ADDRESS: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// `Err(wait)` while the account or the address has used up its failures.
    pub fn check(&self, username: &str, address: &str) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        let wait = |key: String, limit: u32| {
            map.get(&key)
                .filter(|(count, _)| *count >= limit)
                .map(|(_, since)| WINDOW.saturating_sub(now.duration_since(*since)))
        };
        match wait(account_key(username), PER_ACCOUNT)
            .or_else(|| wait(address_key(address), PER_ADDRESS))
        {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    pub fn failed(&self, username: &str, address: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for key in [account_key(username), address_key(address)] {
            map.entry(key).or_insert((0, now)).0 += 1;
        }
    }

    /// A successful sign-in clears the account's count (not the address's).
    pub fn succeeded(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&account_key(username));
    }
}

fn account_key(username: &str) -> String {
    // Bounded, so a flood of long made-up names cannot grow the map's keys.
    format!("u:{}", username.chars().take(64).collect::<String>())
}

fn address_key(address: &str) -> String {
    format!("a:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_allowance() {
        let t = Throttle::default();
        for _ in 0..PER_ACCOUNT {
            assert!(t.check("alice", "1.2.3.4").is_ok());
            t.failed("alice", "1.2.3.4");
        }
        assert!(t.check("alice", "5.6.7.8").is_err());
        assert!(t.check("bob", "1.2.3.4").is_ok());
        t.succeeded("alice");
        assert!(t.check("alice", "1.2.3.4").is_ok());
    }
}
