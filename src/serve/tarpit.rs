//! Answers to requests that fail authentication go out at a bounded pace, one queue for them
//! all: a client flooding forged webhooks then mostly waits for its answers, instead of
//! keeping the cores busy that carry job completions. A request that authenticates is never
//! held.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One refusal per this interval, at most: 2,000 a second.
const EVERY: Duration = Duration::from_micros(500);
/// The longest a refusal waits for its turn (the connection cap bounds the queue long before
/// a flood could reach this).
const MAX_WAIT: Duration = Duration::from_secs(2);

pub struct Tarpit {
    next: Mutex<Instant>,
    every: Duration,
}

impl Default for Tarpit {
    fn default() -> Tarpit {
        Tarpit::new(EVERY)
    }
}

impl Tarpit {
    pub fn new(every: Duration) -> Tarpit {
        Tarpit {
            next: Mutex::new(Instant::now()),
            every,
        }
    }

    /// When a refusal asked for at `now` goes out; each call takes the next turn.
    fn turn(&self, now: Instant) -> Instant {
        let Ok(mut next) = self.next.lock() else {
            return now;
        };
        let at = (*next).max(now).min(now + MAX_WAIT);
        *next = at + self.every;
        at
    }

    /// Waits for this refusal's turn.
    pub async fn hold(&self) {
        tokio::time::sleep_until(self.turn(Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_take_turns_and_wait_a_bounded_time() {
        let tarpit = Tarpit::new(Duration::from_millis(1));
        let now = Instant::now();
        assert_eq!(tarpit.turn(now), now, "the first goes at once");
        assert_eq!(tarpit.turn(now), now + Duration::from_millis(1));
        assert_eq!(tarpit.turn(now), now + Duration::from_millis(2));
        let later = now + Duration::from_secs(1);
        assert_eq!(tarpit.turn(later), later, "a quiet spell owes nothing");
        for _ in 0..5000 {
            tarpit.turn(later);
        }
        assert_eq!(tarpit.turn(later), later + MAX_WAIT);
    }
}
