//! End-to-end tests: the real `execrelay` binary on 127.0.0.1, driven through its signed
//! webhook, HTTP API and CLI, delivering to an in-process fake webhook receiver.
//!
//! One test binary (style §10). Every test owns its temp dir, relay process and receiver, so the
//! tests run in parallel. Every wait is bounded and names what it waited for.

mod browser;
mod cli_process;
mod fakes;
mod harness;

mod chaos;
mod chunking;
mod cli;
mod config_check;
mod conformance;
mod console;
mod core_flow;
mod crash;
mod discord;
mod disk_full;
mod doctor;
mod duplicate;
mod fakes_self_test;
mod feishu;
mod heartbeat;
mod http_limits;
mod inbound;
mod last_active;
mod lifecycle;
mod live_jobs;
mod local_chat;
mod logs;
mod metrics;
mod outbox;
mod retention;
mod secrets;
mod service_unit;
mod telegram;
