//! Log lines that something outside the relay can multiply are written sparingly: a rejected
//! webhook request (anyone on the network can send a flood) at most once per interval with a
//! count of those held back ([`LogThrottle`]), and a retry loop's failures (a full disk fails
//! every try) once per failing streak ([`FailStreak`]). Neither may cost a write per event nor
//! fill the disk with the relay's log.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct LogThrottle {
    origin: Instant,
    interval_ms: i64,
    /// Milliseconds after `origin` of the last line written; `i64::MIN` before the first.
    last_ms: AtomicI64,
    held_back: AtomicU64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            origin: Instant::now(),
            interval_ms: interval.as_millis() as i64,
            last_ms: AtomicI64::new(i64::MIN),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were held back
    /// since the last line; `None` when it is counted instead.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.origin.elapsed())
    }

    /// [`LogThrottle::admit`] at `elapsed` since the throttle was made.
    fn admit_at(&self, elapsed: Duration) -> Option<u64> {
        let now = elapsed.as_millis() as i64;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == i64::MIN || now - last >= self.interval_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A retry loop's failures: the first of a streak is worth a line, the rest are not, and the
/// end of the streak is worth one more.
#[derive(Debug, Default)]
pub struct FailStreak {
    failing: bool,
}

impl FailStreak {
    /// Records a failure; `true` when it starts a streak (log it).
    pub fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// Records a success; `true` when it ends a streak (say so).
    pub fn recovered(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }

    pub fn is_failing(&self) -> bool {
        self.failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_count_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.admit(), None);
        }
        let throttle = LogThrottle::new(Duration::ZERO);
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), Some(0));
    }

    #[test]
    fn a_streak_is_announced_once_and_its_end_once() {
        let mut streak = FailStreak::default();
        assert!(!streak.recovered());
        assert!(streak.failed());
        assert!(!streak.failed());
        assert!(streak.is_failing());
        assert!(streak.recovered());
        assert!(!streak.recovered());
    }

    #[test]
    fn after_the_interval_the_held_back_count_is_reported_once() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        let at = Duration::from_millis;
        assert_eq!(throttle.admit_at(at(5)), Some(0));
        assert_eq!(throttle.admit_at(at(6)), None);
        assert_eq!(throttle.admit_at(at(999)), None);
        assert_eq!(throttle.admit_at(at(1005)), Some(2));
        assert_eq!(throttle.admit_at(at(1006)), None);
        assert_eq!(throttle.admit_at(at(2006)), Some(1));
    }
}
