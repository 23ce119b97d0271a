//! Serve: the surfaces people and programs use. `http` is the accept loop with its limits,
//! `api` the routes (the local API, the webhook, Feishu's events), `tarpit` the pace of
//! refusals, `metrics` what `GET /metrics` shows, and `cli` the command-line clients that
//! speak the API.

pub mod api;
pub mod cli;
pub mod http;
pub mod metrics;
pub mod tarpit;
