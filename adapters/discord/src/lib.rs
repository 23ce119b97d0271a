//! The Discord channel, on serenity.
//!
//! Owns Discord's side of the contract: serenity's gateway client receives `MESSAGE_CREATE`s,
//! which become [`InboundMessage`](execrelay_channel::InboundMessage)s (DMs direct, guild
//! channels group, threads keep their parent as the chat and themselves as the thread); each
//! outbound chunk is one `POST /channels/{id}/messages` with a `nonce` and `enforce_nonce`, so a
//! retried send does not post twice.
//!
//! Live jobs: a message's last chunk carries the relay's buttons as components (`edit`), and
//! such a message is edited in place with `PATCH /channels/{id}/messages/{id}`; a button press
//! comes on the gateway as `INTERACTION_CREATE`, goes to the relay as a press, and is answered
//! with an ephemeral interaction callback (`press`).
//!
//! The gateway does not replay what was sent while no session was up: at every READY the
//! channels where the relay received messages are fetched from where it left them
//! (`backfill`), through the same path as gateway messages.
//!
//! The key decision: serenity owns the gateway, but all REST is ours: messages are posted and
//! edited, and presses answered, with our own HTTP calls (`rest`). With a custom base URL
//! serenity's rate limiter must be off (with it on, the base URL is ignored and requests go to
//! the real Discord), and without it serenity's errors drop the `retry_after` a 429 carries;
//! the outbox needs that value. serenity's HTTP spans and errors also name the route, which for
//! an interaction callback holds the interaction's token. Gateway discovery is also ours, so a
//! failing fake can never make serenity fall back to the real gateway. Not owned here: chunking
//! (the relay splits at 2000 characters, [`DISCORD_LIMIT`]), retries, when to edit, what a press
//! does, access control.

mod backfill;
mod check;
mod config;
mod edit;
mod errors;
mod inbound;
mod outbound;
mod press;
mod rest;

pub use check::{GATEWAY_MESSAGE_CONTENT, GATEWAY_MESSAGE_CONTENT_LIMITED};
pub use config::{DEFAULT_API_BASE, DiscordConfig};
pub use edit::classify_edit;
pub use errors::{DiscordError, redact};
pub use inbound::{strip_mentions, to_inbound};
pub use outbound::{DISCORD_LIMIT, DiscordChannel, classify, nonce_for};
pub use press::{CANNOT_TAKE, to_press};

/// The route `channel` name of this adapter.
pub const CHANNEL: &str = "discord";
