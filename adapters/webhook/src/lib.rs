//! The generic signed-webhook channel.
//!
//! Owns the webhook's wire format: HMAC-SHA256 request signing and verification (with a
//! timestamp window against replays), parsing inbound JSON into an
//! [`InboundMessage`](execrelay_channel::InboundMessage), and delivering each outbound chunk as
//! one signed POST whose HTTP result is mapped to a
//! [`SendOutcome`](execrelay_channel::SendOutcome). It does not own the HTTP server that
//! receives `POST /webhook` (the relay calls [`verify_request`] and [`parse_inbound`], or
//! [`WebhookChannel::authenticate`], from its handler), nor chunking, retries, backoff,
//! deduplication or access control: those live in the relay.

mod config;
mod errors;
#[cfg(feature = "feishu")]
pub mod feishu;
mod inbound;
mod outbound;

pub use config::{DEFAULT_MAX_CHARS, DEFAULT_MAX_SKEW, WebhookConfig, redact_url};
pub use errors::WebhookError;
pub use inbound::{SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_inbound, sign, verify_request};
pub use outbound::{WebhookChannel, classify};
