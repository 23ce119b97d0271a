//! The generic signed-webhook channel.
//!
//! Owns the webhook's wire format: HMAC-SHA256 request signing and verification (with a
//! timestamp window against replays), parsing inbound JSON into an
//! [`InboundMessage`](execrelay_channel::InboundMessage) or a button
//! [`Press`](execrelay_channel::Press) (and the answer to a press, [`answer_press`]), delivering
//! each outbound chunk as one signed POST (its buttons as `"actions"`) whose HTTP result is
//! mapped to a [`SendOutcome`](execrelay_channel::SendOutcome), and edits as signed POSTs with
//! `"edit_of"` mapped to an [`EditOutcome`](execrelay_channel::EditOutcome). It does not own
//! the HTTP server that receives `POST /webhook` (the relay calls
//! [`WebhookChannel::authenticate`] from its handler), nor chunking, retries, backoff,
//! deduplication, access control or the choice to edit at all (`[channels.webhook] progress`):
//! those live in the relay.

mod check;
mod config;
mod errors;
#[cfg(feature = "feishu")]
pub mod feishu;
mod inbound;
mod outbound;

pub use check::PROBE_BODY;
pub use config::{DEFAULT_MAX_CHARS, DEFAULT_MAX_SKEW, WebhookConfig, redact_url};
pub use errors::WebhookError;
pub use inbound::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookInbound, answer_press, parse_inbound, parse_request,
    sign, verify_request,
};
pub use outbound::{WebhookChannel, classify, classify_edit};
