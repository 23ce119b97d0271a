//! The Feishu (Lark) flavour of the webhook channel.
//!
//! Inbound, Feishu posts event callbacks to the relay's HTTP server: [`FeishuChannel::receive`]
//! answers `url_verification`, decrypts `{"encrypt": ...}` bodies (AES-256-CBC, key =
//! SHA-256(encrypt key)), verifies `X-Lark-Signature` (plain SHA-256 over timestamp + nonce +
//! encrypt key + body, compared in constant time) and the verification token, refuses stale
//! timestamps, and turns `im.message.receive_v1` into an
//! [`InboundMessage`](execrelay_channel::InboundMessage) whose id is the `event_id` (Feishu
//! redelivers an event for hours; the relay dedupes it durably). Outbound, each chunk is one
//! `im/v1/messages` call with a cached tenant access token and `uuid` = the chunk's idempotency
//! key, which Feishu dedupes. [`FeishuBotChannel`] posts to a custom group bot's hook (signed,
//! paced under its 5/s and 100/min limits), for use as an explicit heartbeat target.
//!
//! Buttons: a chunk with buttons is sent as an interactive card (`card.rs`) instead of text,
//! and only such a card can be edited (`PATCH`, the whole card again). A press comes back as a
//! `card.action.trigger` callback at the same path as events, verified the same way, and
//! becomes a [`FeishuEvent::Press`] (dedupe id: the `event_id`); [`answer_press`] turns the
//! relay's answer into the toast Feishu shows the presser, within its 3 s. The custom group bot
//! sends text only: it ignores buttons and cannot edit.

mod bot;
mod card;
mod config;
mod crypto;
mod inbound;
mod outbound;

pub use bot::{FeishuBotChannel, bot_sign};
pub use config::{DEFAULT_BASE_URL, DEFAULT_EVENTS_PATH, FeishuBotConfig, FeishuConfig};
pub use crypto::{decrypt, event_signature};
pub use inbound::{
    FeishuEvent, FeishuHeaders, NONCE_HEADER, PRESS_ANSWER_WITHIN, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, answer_press,
};
pub use outbound::{FEISHU_LIMIT, FeishuChannel, classify, classify_edit};

/// The route `channel` names of the two flavours.
pub const CHANNEL: &str = "feishu";
pub const BOT_CHANNEL: &str = "feishu_bot";

/// Feishu reads `<at user_id="all"></at>` in a text message as a mention of everyone: output
/// that contains one must not ping a whole group. A zero-width space after the `<` keeps the
/// text as it reads and makes it no tag.
pub(crate) fn defuse_mentions(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains("<at") {
        std::borrow::Cow::Owned(text.replace("<at", "<\u{200B}at"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_tags_in_output_are_defused() {
        let output = r#"echo '<at user_id="all"></at>' > notify.txt"#;
        let sent = defuse_mentions(output);
        assert!(!sent.contains("<at"), "{sent}");
        assert_eq!(sent.replace('\u{200B}', ""), output, "reads the same");
        assert!(matches!(
            defuse_mentions("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }
}
