//! execrelay: run long shell commands from chat; every completion reaches the right chat, once.
//!
//! Data flows one way: inbound message → route recorded → command → job → exit → system event
//! → wake(`exec-event`) → heartbeat → target → outbox → adapter. Each stage is one module; see
//! ARCHITECTURE.md for the map and the invariants.

pub mod api;
pub mod channel_health;
pub mod channels;
pub mod chunk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod data_dir;
pub mod delivery;
pub mod duration;
pub mod exec;
pub mod failpoint;
pub mod heartbeat;
pub mod inbound;
pub mod job_env;
pub mod job_user;
pub mod jobs;
pub mod local;
pub mod log_throttle;
pub mod logging;
pub mod once_per_key;
pub mod outbox;
pub mod relay;
pub mod retention;
pub mod serve;
pub mod size;
pub mod store;
pub mod supervisor;
pub mod target;
pub mod tarpit;
#[cfg(test)]
mod test_rng;
