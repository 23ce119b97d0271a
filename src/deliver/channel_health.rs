//! Which channels are failing as a whole (their platform down or refusing the bot), since
//! when, and why. The delivery workers keep it; `/status` and `execrelay outbox` show it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::store::{Millis, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub since_ms: Millis,
    pub last_error: String,
    /// Sends tried since the channel began to fail (one at a time while it fails).
    pub tries: u64,
}

#[derive(Clone, Default)]
pub struct ChannelHealth(Arc<Mutex<BTreeMap<String, Failing>>>);

impl ChannelHealth {
    /// The failing channels, by name.
    pub fn failing(&self) -> Vec<(String, Failing)> {
        match self.0.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether `channel` fails as a whole now.
    pub fn is_failing(&self, channel: &str) -> bool {
        self.0.lock().is_ok_and(|map| map.contains_key(channel))
    }

    /// A failed send on `channel`: the first marks it failing from now.
    pub(crate) fn failed(&self, channel: &str, error: &str) {
        if let Ok(mut map) = self.0.lock() {
            let entry = map.entry(channel.to_string()).or_insert_with(|| Failing {
                since_ms: now_ms(),
                last_error: String::new(),
                tries: 0,
            });
            entry.last_error = error.to_string();
            entry.tries += 1;
        }
    }

    /// `channel` works again (or has nothing left to try); what its failure was, if any.
    pub(crate) fn recovered(&self, channel: &str) -> Option<Failing> {
        self.0.lock().ok()?.remove(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_from_its_first_send_until_recovery() {
        let health = ChannelHealth::default();
        health.failed("webhook", "503");
        let since = health.failing()[0].1.since_ms;
        health.failed("webhook", "connection refused");
        let failing = health.failing();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].1.since_ms, since);
        assert_eq!(failing[0].1.last_error, "connection refused");
        assert_eq!(failing[0].1.tries, 2);
        assert_eq!(health.recovered("webhook").map(|f| f.tries), Some(2));
        assert!(health.failing().is_empty());
        assert!(health.recovered("webhook").is_none());
    }
}
