//! The contract between the relay and its chat adapters.
//!
//! An adapter turns platform traffic into [`InboundMessage`]s and delivers outbound text; it
//! knows nothing of jobs, events or storage. The key decision: inbound hand-off is
//! *acknowledged*. An adapter calls [`InboundSink::accept`] and only confirms the message to its
//! platform (a 200, a polling offset, …) once that returns `Ok`, because by then the relay has
//! stored it durably. Outbound sends report a [`SendOutcome`] and never retry on their own:
//! retries, backoff, ordering and dead-lettering live once, in the relay's outbox.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use tokio_util::sync::CancellationToken;

/// Whether a conversation is one person's (DM) or shared (group, channel, thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    Direct,
    Group,
}

impl ChatType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Direct => "direct",
            ChatType::Group => "group",
        }
    }
}

/// Where a message can be posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `webhook`, `local`, `telegram`, …: the name of the adapter that owns the route.
    pub channel: String,
    /// The bot account on that platform (one relay may serve several).
    #[serde(default)]
    pub account: String,
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<String>,
    pub chat_type: ChatType,
}

/// A message a person sent to the bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessage {
    pub route: Route,
    /// The platform's id of the sender, without the channel prefix.
    pub sender_id: String,
    /// Empty when the message carried no text (an image, a file): the relay answers that it
    /// reads text only, rather than staying silent.
    pub text: String,
    /// The platform's id of the message (or update/event): the relay dedupes on it, so a
    /// redelivered message is never run twice. `None` when the platform has no such id.
    pub platform_message_id: Option<String>,
    /// When the platform says the message was sent (unix milliseconds), where the adapter may
    /// hand over messages out of order (Discord dispatches each event on its own task; webhook
    /// requests run concurrently). A session's last route then only moves forward in this time
    /// within one channel; and an `/exec` that arrives more than a day after it was sent is
    /// not run. `None` where messages arrive in order (Telegram's update loop).
    pub sent_at_ms: Option<i64>,
    /// Forwarded from someone else (Telegram's `forward_origin`): someone else's words, so
    /// never run as the forwarder's command.
    pub forwarded: bool,
}

/// What [`InboundSink::accept`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored durably; the relay will act on it.
    Stored,
    /// Seen before (same channel and platform message id); nothing new happened.
    Duplicate,
    /// Not stored, on purpose (the relay's disk is full): the relay has told the sender why.
    /// Confirm it to the platform all the same; a redelivery must not run it later.
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The relay could not store the message; the adapter must not confirm it to the platform.
    #[error("the relay could not store the message: {0}")]
    Unavailable(String),
}

/// The relay's side of inbound hand-off.
#[async_trait::async_trait]
pub trait InboundSink: Send + Sync {
    /// Returns once the message is durably stored (or recognised as a duplicate).
    async fn accept(&self, message: InboundMessage) -> Result<Accepted, SinkError>;

    /// A small value the adapter kept across restarts under `key` (e.g. the command list it
    /// registered last), so that it need not repeat platform calls that are rate-limited.
    async fn load_state(&self, key: &str) -> Result<Option<String>, SinkError>;

    /// Durably keeps `value` under `key` for [`InboundSink::load_state`].
    async fn save_state(&self, key: &str, value: &str) -> Result<(), SinkError>;

    /// Takes a button press: returns at once with the answer for the person who pressed (the
    /// platforms give a few seconds), having stored what it will act on. An adapter answers
    /// the press and confirms it to its platform whatever this returns: a press replayed
    /// minutes later would surprise its presser.
    async fn press(&self, press: Press) -> Result<PressAnswer, SinkError> {
        let _ = press;
        Err(SinkError::Unavailable(
            "this relay takes no button presses".into(),
        ))
    }
}

/// How a platform measures message length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextUnit {
    /// Unicode scalar values (Discord, the generic webhook).
    Chars,
    /// UTF-16 code units (Telegram).
    Utf16,
    /// UTF-8 bytes.
    Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextLimit {
    pub unit: TextUnit,
    pub max: usize,
}

impl TextLimit {
    /// The length of `text` in this limit's unit.
    pub fn measure(&self, text: &str) -> usize {
        match self.unit {
            TextUnit::Chars => text.chars().count(),
            TextUnit::Utf16 => text.encode_utf16().count(),
            TextUnit::Bytes => text.len(),
        }
    }

    /// The size of one character in this limit's unit.
    pub fn char_len(&self, c: char) -> usize {
        match self.unit {
            TextUnit::Chars => 1,
            TextUnit::Utf16 => c.len_utf16(),
            TextUnit::Bytes => c.len_utf8(),
        }
    }
}

/// How one send attempt ended; the outbox decides what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The platform accepted the message.
    Delivered { platform_id: Option<String> },
    /// The platform asked us to wait before trying again.
    RetryAfter(Duration),
    /// Worth retrying with backoff: 5xx, network errors, timeouts.
    Transient(String),
    /// Nobody has taken it yet (no local chat client connected, or none that acknowledged it
    /// in time): kept and retried like `Transient`, but expected, so not logged as a failure.
    NoReceiver(String),
    /// Retrying cannot help: bad request, chat gone, bot blocked.
    Permanent(String),
    /// The channel lacks a setting it needs to send at all (the webhook's `callback_url`):
    /// dead-lettered like `Permanent`, but retried at the next start once the setting is there.
    Unconfigured(String),
    /// The chat lives on under a new id (a Telegram group upgraded to a supergroup): the relay
    /// rewrites every stored route to the old id and sends again.
    ChatMigrated { chat_id: String },
}

/// The most a button id may take, in bytes: Telegram's `callback_data` limit, the smallest of
/// the platforms'.
pub const MAX_BUTTON_ID_BYTES: usize = 64;

/// A button under a message. Pressing it comes back as a [`Press`] carrying `id`, which is
/// opaque to the adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// At most [`MAX_BUTTON_ID_BYTES`].
    pub id: String,
    pub label: String,
}

/// One piece of an outbound message, already within the channel's [`TextLimit`].
#[derive(Clone, Debug)]
pub struct OutboundChunk<'a> {
    pub route: &'a Route,
    pub text: &'a str,
    /// Stable across retries of the same chunk: platforms that dedupe use it.
    pub idempotency_key: &'a str,
    /// Position of this chunk in its message, from 0.
    pub index: u32,
    pub count: u32,
    /// Buttons under this chunk: only a message's last chunk carries them. A chunk sent with
    /// buttons is one the relay may [`Channel::edit`] later (Feishu sends it as a card).
    pub buttons: &'a [Button],
}

/// Replaces the text (and buttons) of a message the relay sent earlier with buttons.
#[derive(Clone, Debug)]
pub struct Edit<'a> {
    pub route: &'a Route,
    /// The platform's id of the message, as [`SendOutcome::Delivered`] returned it.
    pub message_id: &'a str,
    /// Within the channel's [`TextLimit`]: an edit is never split.
    pub text: &'a str,
    /// The buttons the message keeps; empty removes them.
    pub buttons: &'a [Button],
}

/// How one edit attempt ended. Edits are a lane of their own: the relay may drop them, and
/// never lets them hold back a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditOutcome {
    /// The message shows the new text (an edit to the same text counts).
    Edited,
    /// The platform asked for a pause: no edit to this chat before it ends.
    RetryAfter(Duration),
    /// Allowed, but too often for this message (Discord's edits to messages older than an
    /// hour): edit it less often.
    SlowDown,
    /// Worth trying again later: 5xx, network errors, timeouts.
    Transient(String),
    /// The message cannot be edited any more (deleted, too old, chat gone): stop editing it.
    Gone(String),
    /// The platform refused this edit: trying the same again cannot help.
    Failed(String),
    /// This channel does not edit messages.
    Unsupported,
}

/// Someone pressed a button the relay sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Press {
    /// Where the pressed message is; answers in the chat go here.
    pub route: Route,
    /// The platform's id of the person who pressed, without the channel prefix.
    pub sender_id: String,
    /// The [`Button::id`] pressed.
    pub action: String,
    /// The platform's id of this press (callback query, interaction, event): the relay
    /// dedupes on it, so a redelivered press never acts twice.
    pub press_id: String,
    /// The message the button sat on, where the platform says.
    pub on_message_id: Option<String>,
}

/// What the person who pressed is told; only they see it (Telegram's callback answer,
/// Discord's ephemeral message, Feishu's toast).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PressAnswer {
    pub text: String,
}

/// `key` cut to its last `max_chars` characters, for platforms whose dedupe ids are short
/// (Discord nonces: 25, Feishu uuids: 50). The end is the unique part of the relay's keys.
pub fn key_within(key: &str, max_chars: usize) -> &str {
    let skip = key.chars().count().saturating_sub(max_chars);
    key.char_indices()
        .nth(skip)
        .map_or("", |(at, _)| &key[at..])
}

/// What [`Channel::check`] found: whether the channel's credentials and settings work as the
/// platform sees them now (`execrelay doctor` shows it). Every text is free of secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It works: what was checked and what the platform said (the bot's name, ...).
    Ok(String),
    /// It works, but something may not: what, and what to do about it.
    Warn { problem: String, fix: String },
    /// It does not work: what failed, and what to do about it.
    Failed { problem: String, fix: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
}

/// A chat platform as the relay sees it. Object-safe: the relay holds `Arc<dyn Channel>`.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// The route `channel` name this adapter owns.
    fn name(&self) -> &str;

    /// The largest message the platform accepts.
    fn limit(&self) -> TextLimit;

    /// Attempts one send. Must not retry by itself and must not panic on platform input.
    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome;

    /// Attempts one edit of a message sent with buttons. Must not retry by itself. By default
    /// the channel edits nothing.
    async fn edit(&self, edit: Edit<'_>) -> EditOutcome {
        let _ = edit;
        EditOutcome::Unsupported
    }

    /// Receives platform traffic until `stop` fires, handing each message to `sink`. By
    /// default nothing: adapters whose inbound traffic arrives through the relay's HTTP server
    /// (the webhook, Feishu) or that have none (a custom group bot) keep it.
    async fn run_inbound(
        &self,
        sink: Arc<dyn InboundSink>,
        stop: CancellationToken,
    ) -> Result<(), ChannelError> {
        let _ = (sink, stop);
        Ok(())
    }

    /// Checks with the platform that the channel's credentials really work, as the platform
    /// answers a harmless call (Telegram's `getMe`, Discord's `GET /users/@me`, Feishu's tenant
    /// token, a signed probe to the webhook receiver), without sending anyone a message. Must
    /// not retry by itself and must never show a secret. By default there is nothing to check.
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::Ok("nothing to check".into())
    }
}

/// Wraps a secret so that `Debug` and `Display` never print it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is this secret, in time that tells nothing of where they differ or
    /// of the secret's length: digests of both are compared, every byte. An empty secret
    /// matches nothing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let (ours, theirs) = (Sha256::digest(self.0.as_bytes()), Sha256::digest(presented));
        !self.0.is_empty() && constant_time_eq(&ours, &theirs)
    }
}

/// Equality that takes the same time wherever the inputs differ (not whatever their lengths:
/// for secrets of unknown length, [`Secret::matches`]).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_itself_only() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3creT") && !secret.matches(b"s3cre") && !secret.matches(b""));
        assert!(
            !Secret::default().matches(b""),
            "an empty secret matches nothing"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn measures_in_each_unit() {
        let text = "a😀é";
        assert_eq!(
            TextLimit {
                unit: TextUnit::Chars,
                max: 0
            }
            .measure(text),
            3
        );
        assert_eq!(
            TextLimit {
                unit: TextUnit::Utf16,
                max: 0
            }
            .measure(text),
            4
        );
        assert_eq!(
            TextLimit {
                unit: TextUnit::Bytes,
                max: 0
            }
            .measure(text),
            7
        );
    }

    #[test]
    fn keys_keep_their_end() {
        assert_eq!(key_within("abcd1f.0", 25), "abcd1f.0");
        assert_eq!(key_within("abcdef.12", 5), "ef.12");
        assert_eq!(key_within("", 5), "");
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
