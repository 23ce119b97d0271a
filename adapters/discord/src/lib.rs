//! The Discord channel, on serenity.
//!
//! Owns Discord's side of the contract: serenity's gateway client receives `MESSAGE_CREATE`s,
//! which become [`InboundMessage`](execrelay_channel::InboundMessage)s (DMs direct, guild
//! channels group, threads keep their parent as the chat and themselves as the thread); each
//! outbound chunk is one `POST /channels/{id}/messages` with a `nonce` and `enforce_nonce`, so a
//! retried send does not post twice.
//!
//! The gateway does not replay what was sent while no session was up: at every READY the
//! channels where the relay received messages are fetched from where it left them
//! (`backfill`), through the same path as gateway messages.
//!
//! The key decision: serenity owns the gateway, but messages are posted with our own HTTP
//! call. With a custom base URL serenity's rate limiter must be off (with it on, the base URL is
//! ignored and requests go to the real Discord), and without it serenity's errors drop the
//! `retry_after` a 429 carries; the outbox needs that value. Gateway discovery is also ours, so
//! a failing fake can never make serenity fall back to the real gateway. Not owned here:
//! chunking (the relay splits at 2000 characters, [`DISCORD_LIMIT`]), retries, access control.

mod backfill;
mod config;
mod errors;
mod inbound;
mod outbound;
mod rest;

pub use config::{DEFAULT_API_BASE, DiscordConfig};
pub use errors::{DiscordError, redact};
pub use inbound::{strip_mentions, to_inbound};
pub use outbound::{DISCORD_LIMIT, DiscordChannel, classify, nonce_for};

/// The route `channel` name of this adapter.
pub const CHANNEL: &str = "discord";
