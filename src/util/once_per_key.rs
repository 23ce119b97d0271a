//! "At most once per interval for each key", for answers that a sender could otherwise draw
//! in a loop (a "not authorized" reply, a disk-full notice). The memory is bounded: past
//! `memory` keys, answers stop rather than amplify a flood of distinct senders.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct OncePerKey {
    interval: Duration,
    memory: usize,
    last: Mutex<HashMap<String, Instant>>,
}

impl OncePerKey {
    pub fn new(interval: Duration, memory: usize) -> OncePerKey {
        OncePerKey {
            interval,
            memory,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may have its answer now (and, if so, it is counted as answered).
    pub fn admit(&self, key: &str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.len() >= self.memory {
            last.retain(|_, at| now.duration_since(*at) < self.interval);
        }
        match last.get(key) {
            Some(at) if now.duration_since(*at) < self.interval => false,
            _ if last.len() >= self.memory => false,
            _ => {
                last.insert(key.to_string(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_per_key_and_silent_past_the_memory() {
        let once = OncePerKey::new(Duration::from_secs(3600), 2);
        assert!(once.admit("a"));
        assert!(!once.admit("a"));
        assert!(once.admit("b"));
        assert!(!once.admit("c"), "memory full of recent keys: stay silent");
        let again = OncePerKey::new(Duration::ZERO, 2);
        assert!(again.admit("a"));
        assert!(again.admit("a"));
    }
}
