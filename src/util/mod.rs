//! Small shared helpers, each owned by no stage: Unix accounts (whom jobs run as), secret shapes to redact (`credentials`),
//! durations and sizes as people write them, log and answer throttles, test crash points, and
//! the tests' seeded random numbers.

pub mod accounts;
pub mod credentials;
pub mod duration;
pub mod failpoint;
pub mod log_throttle;
pub mod once_per_key;
pub mod size;
#[cfg(test)]
pub(crate) mod test_rng;
