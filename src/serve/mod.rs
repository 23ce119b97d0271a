//! Serve: the surfaces people and programs use. `http` is the accept loop with its limits,
//! `api` the routes (the local API, the webhook, Feishu's events), `job_actions` a job's
//! tail and [Kill], `console` the web console's embedded page, `tarpit` the pace of
//! refusals, `origin` which clients (and web pages) the API answers, `token_proof` how the
//! console signs its calls instead of sending the token, `metrics` what
//! `GET /metrics` shows, and `cli` the command-line clients that speak the API.

pub mod api;
pub mod cli;
pub mod console;
pub mod http;
pub mod job_actions;
pub mod metrics;
pub mod origin;
pub mod tarpit;
pub mod token_proof;
