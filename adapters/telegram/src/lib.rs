//! The Telegram channel, on teloxide.
//!
//! Owns Telegram's side of the contract: long polling `getUpdates` in our own loop (teloxide
//! does the HTTP and the parsing), turning messages into
//! [`InboundMessage`](execrelay_channel::InboundMessage)s and button presses
//! (`callback_query`) into [`Press`](execrelay_channel::Press)es answered with
//! `answerCallbackQuery`; sending each outbound chunk with `sendMessage` (its buttons as an
//! inline keyboard), its result mapped to a [`SendOutcome`](execrelay_channel::SendOutcome);
//! and editing a message with `editMessageText`, mapped to an
//! [`EditOutcome`](execrelay_channel::EditOutcome).
//!
//! The key decision: the polling offset advances past an update only after
//! [`InboundSink::accept`](execrelay_channel::InboundSink::accept) returned, so a crash never
//! skips a message; Telegram redelivers what was not confirmed and the relay dedupes on
//! `update_id`. A press is the exception: confirmed whatever the relay answered, since a press
//! replayed later would surprise its presser (the relay dedupes presses on the query id).
//! teloxide's stock dispatcher confirms before the handler has stored anything, which is why it
//! is not used. Not owned here: chunking (the relay splits at 4096 UTF-16 units,
//! [`TELEGRAM_LIMIT`]), retries and backoff of sends and edits, pacing of edits, what a press
//! does, access control, sessions.

mod check;
mod config;
mod errors;
mod inbound;
mod outbound;

pub use config::{DEFAULT_API_URL, DEFAULT_POLL_TIMEOUT, TelegramConfig};
pub use errors::{TelegramError, redact};
pub use inbound::{BotIdentity, PRESS_UNAVAILABLE, addressed_to_another_bot, to_inbound, to_press};
pub use outbound::{TELEGRAM_LIMIT, TelegramChannel, classify, classify_edit, keyboard};

/// The route `channel` name of this adapter.
pub const CHANNEL: &str = "telegram";
