//! Inbound: serenity's gateway events turned into [`InboundMessage`]s.

use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{CancellationToken, ChatType, InboundMessage, InboundSink, Route};
use serenity::all::{Context, EventHandler, Message, MessageType, Ready, ResumedEvent, UserId};
use tokio::sync::watch;

use crate::CHANNEL;
use crate::rest::Rest;

/// How long a message waits for READY to tell who the bot is (serenity runs handlers
/// concurrently, so a message can overtake READY's handler).
const READY_WAIT: Duration = Duration::from_secs(10);
/// The gateway does not redeliver: a message the relay could not store is retried here, for
/// about a minute.
const ACCEPT_ATTEMPTS: u32 = 10;
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(10);

/// `content` without mentions of the bot (`<@id>`, `<@!id>`), trimmed; and whether there were
/// any.
pub fn strip_mentions(content: &str, bot: u64) -> (String, bool) {
    let mut text = content.to_string();
    let mut mentioned = false;
    for form in [format!("<@{bot}>"), format!("<@!{bot}>")] {
        if text.contains(&form) {
            mentioned = true;
            text = text.replace(&form, " ");
        }
    }
    (text.trim().to_string(), mentioned)
}

/// When a snowflake was made: its top 42 bits count milliseconds since Discord's epoch (2015).
fn snowflake_millis(id: u64) -> i64 {
    const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
    (id >> 22) as i64 + DISCORD_EPOCH_MS
}

/// The message a `MESSAGE_CREATE` carries for the relay, if any. `parent` is the channel a
/// thread belongs to (the thread shares its chat, and replies go to the thread). Bots, the bot
/// itself, empty messages and, with `require_mention`, guild chatter that neither mentions the
/// bot nor starts with a command are not for us.
pub fn to_inbound(
    message: &Message,
    bot: UserId,
    parent: Option<u64>,
    require_mention: bool,
) -> Option<InboundMessage> {
    if message.author.bot || message.author.id == bot {
        return None;
    }
    // System messages (a thread created, a channel renamed, a member joined) carry a name or
    // nothing in `content`; a thread named "/exec …" is not a command.
    if !matches!(
        message.kind,
        MessageType::Regular | MessageType::InlineReply
    ) {
        return None;
    }
    let (text, mentioned) = strip_mentions(&message.content, bot.get());
    let mentioned = mentioned || message.mentions.iter().any(|user| user.id == bot);
    let in_guild = message.guild_id.is_some();
    // A file sent to the bot directly is passed on with no text, so that the relay can say it
    // reads text only; anything else without text is not for us.
    if text.is_empty() && (in_guild || message.attachments.is_empty()) {
        return None;
    }
    if in_guild && require_mention && !mentioned && !text.starts_with('/') {
        return None;
    }
    let channel_id = message.channel_id.get().to_string();
    let (chat_id, thread_id) = match parent {
        Some(parent) => (parent.to_string(), Some(channel_id)),
        None => (channel_id, None),
    };
    Some(InboundMessage {
        route: Route {
            channel: CHANNEL.to_string(),
            account: bot.get().to_string(),
            chat_id,
            thread_id,
            reply_to_message_id: Some(message.id.get().to_string()),
            chat_type: if in_guild {
                ChatType::Group
            } else {
                ChatType::Direct
            },
        },
        sender_id: message.author.id.get().to_string(),
        text,
        // Snowflakes are unique across Discord; a resumed session may dispatch one twice.
        platform_message_id: Some(message.id.get().to_string()),
        // serenity dispatches each event on its own task: two messages may arrive swapped.
        sent_at_ms: Some(snowflake_millis(message.id.get())),
        forwarded: false,
    })
}

pub(crate) struct Handler {
    pub(crate) sink: Arc<dyn InboundSink>,
    pub(crate) rest: Arc<Rest>,
    pub(crate) bot: watch::Sender<Option<UserId>>,
    pub(crate) require_mention: bool,
    /// Set at shutdown: serenity may still dispatch while its shard winds down.
    pub(crate) stop: CancellationToken,
}

impl Handler {
    async fn bot_id(&self) -> Option<UserId> {
        let mut known = self.bot.subscribe();
        let wait = known.wait_for(|bot| bot.is_some());
        match tokio::time::timeout(READY_WAIT, wait).await {
            Ok(Ok(bot)) => *bot,
            _ => None,
        }
    }

    async fn handle(&self, message: Message) {
        if self.stop.is_cancelled() {
            return;
        }
        let Some(bot) = self.bot_id().await else {
            tracing::warn!(
                message_id = message.id.get(),
                "discord message before READY; dropped"
            );
            return;
        };
        // A cheap check first: chatter not for us costs no channel lookup.
        if to_inbound(&message, bot, None, self.require_mention).is_none() {
            tracing::debug!(
                message_id = message.id.get(),
                "discord message not for the relay"
            );
            return;
        }
        let parent = match message.guild_id {
            Some(_) => self.rest.thread_parent(message.channel_id.get()).await,
            None => None,
        };
        let Some(inbound) = to_inbound(&message, bot, parent, self.require_mention) else {
            return;
        };
        let mut backoff = FIRST_ACCEPT_BACKOFF;
        for attempt in 1..=ACCEPT_ATTEMPTS {
            match self.sink.accept(inbound.clone()).await {
                Ok(accepted) => {
                    tracing::debug!(
                        message_id = message.id.get(),
                        ?accepted,
                        "discord message stored"
                    );
                    return;
                }
                Err(error) if attempt < ACCEPT_ATTEMPTS => {
                    tracing::warn!(message_id = message.id.get(), attempt, error = %error, "cannot store a discord message; retrying");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
                Err(error) => {
                    tracing::error!(message_id = message.id.get(), error = %error, "cannot store a discord message; giving up");
                }
            }
        }
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _context: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, "discord gateway ready");
        self.bot.send_replace(Some(ready.user.id));
    }

    async fn resume(&self, _context: Context, _event: ResumedEvent) {
        tracing::info!("discord gateway session resumed");
    }

    async fn message(&self, _context: Context, message: Message) {
        self.handle(message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: u64 = 900;

    #[test]
    fn a_snowflake_tells_when_it_was_made() {
        // The example in Discord's reference: 2016-04-30 11:18:25.796 UTC.
        assert_eq!(snowflake_millis(175_928_847_299_117_063), 1_462_015_105_796);
    }

    fn message(content: &str, guild: bool) -> Message {
        let mut d = json!({
            "id": "1001", "channel_id": "200",
            "author": {"id": "400", "username": "alice"}, "content": content,
            "timestamp": "2026-05-01T12:00:00.000000+00:00", "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": false, "type": 0,
        });
        if guild {
            d["guild_id"] = json!("300");
        }
        serde_json::from_value(d).unwrap()
    }

    fn bot() -> UserId {
        UserId::new(BOT)
    }

    #[test]
    fn dms_are_direct_and_reply_to_the_message() {
        let inbound = to_inbound(&message("/exec ls", false), bot(), None, true).unwrap();
        assert_eq!(inbound.route.chat_type, ChatType::Direct);
        assert_eq!(inbound.route.chat_id, "200");
        assert_eq!(inbound.route.account, "900");
        assert_eq!(inbound.route.reply_to_message_id.as_deref(), Some("1001"));
        assert_eq!(inbound.sender_id, "400");
        assert_eq!(inbound.platform_message_id.as_deref(), Some("1001"));
        // Plain DM text is passed on: it records where the person last spoke.
        assert!(to_inbound(&message("hello", false), bot(), None, true).is_some());
    }

    #[test]
    fn guild_chatter_needs_a_mention_or_a_command() {
        assert!(to_inbound(&message("hello all", true), bot(), None, true).is_none());
        assert!(to_inbound(&message("hello all", true), bot(), None, false).is_some());
        let command = to_inbound(&message("/jobs", true), bot(), None, true).unwrap();
        assert_eq!(command.route.chat_type, ChatType::Group);
        let mentioned = to_inbound(&message("<@900> /exec ls", true), bot(), None, true).unwrap();
        assert_eq!(mentioned.text, "/exec ls");
        let nick = to_inbound(&message("<@!900>  /status", true), bot(), None, true).unwrap();
        assert_eq!(nick.text, "/status");
        assert!(to_inbound(&message("<@901> hi", true), bot(), None, true).is_none());
        assert!(to_inbound(&message("<@900>", true), bot(), None, true).is_none());
    }

    #[test]
    fn system_messages_are_not_commands() {
        // A thread created with the name "/exec …": Discord puts the name in `content`.
        let mut created = message("/exec rm -rf ~", true);
        created.kind = MessageType::ThreadCreated;
        assert!(to_inbound(&created, bot(), None, true).is_none());
        let mut reply = message("/jobs", true);
        reply.kind = MessageType::InlineReply;
        assert!(to_inbound(&reply, bot(), None, true).is_some());
    }

    #[test]
    fn threads_share_their_parents_chat() {
        let inbound = to_inbound(&message("/exec ls", true), bot(), Some(150), true).unwrap();
        assert_eq!(inbound.route.chat_id, "150");
        assert_eq!(inbound.route.thread_id.as_deref(), Some("200"));
    }

    #[test]
    fn a_file_sent_directly_has_no_text_and_elsewhere_is_skipped() {
        let attach = |guild| {
            let mut m = message("", guild);
            let file = json!({"id": "1", "filename": "a.png", "size": 1,
                              "url": "https://x/a.png", "proxy_url": "https://x/a.png"});
            m.attachments = vec![serde_json::from_value(file).unwrap()];
            m
        };
        let dm = to_inbound(&attach(false), bot(), None, true).unwrap();
        assert_eq!(dm.text, "");
        assert!(to_inbound(&attach(true), bot(), None, false).is_none());
        assert!(to_inbound(&message("", false), bot(), None, true).is_none());
    }

    #[test]
    fn bots_and_the_bot_itself_are_ignored() {
        let mut from_bot = message("/exec ls", false);
        from_bot.author.bot = true;
        assert!(to_inbound(&from_bot, bot(), None, true).is_none());
        let mut itself = message("/exec ls", false);
        itself.author.id = bot();
        assert!(to_inbound(&itself, bot(), None, true).is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_content_is_handled_without_panicking(content in "(?s).{0,200}", guild in proptest::bool::ANY) {
            let (stripped, _) = strip_mentions(&content, BOT);
            proptest::prop_assert!(!stripped.contains("<@900>"));
            if let Some(inbound) = to_inbound(&message(&content, guild), bot(), None, true) {
                proptest::prop_assert!(!inbound.text.is_empty());
                proptest::prop_assert_eq!(inbound.route.chat_type == ChatType::Group, guild);
            }
        }
    }
}
