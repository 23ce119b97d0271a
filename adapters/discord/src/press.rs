//! Button presses: a component interaction (`INTERACTION_CREATE`, which serenity hands to
//! `Handler::interaction_create`) becomes a [`Press`] for the relay, and the relay's answer goes
//! back as the interaction's one callback, an ephemeral message only the presser sees.
//!
//! Discord gives 3 s from the press to the callback, else the presser sees "This interaction
//! failed": the relay gets [`PRESS_WAIT`] to answer, and a press it does not answer in time
//! (or cannot take) is answered to check the chat before pressing again. A press the relay is
//! slow with still runs to its end on its own task: the relay may already have acted on it. Every press is answered; a
//! press replayed on a resumed session is handed over again (the relay dedupes on `press_id`)
//! and its second callback is refused by Discord as already acknowledged, which is harmless.
//!
//! The interaction token in the callback's path is a credential: no log line or error text
//! here carries the path, and network errors are stripped of their URL and the token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use execrelay_channel::{ChatType, InboundSink, Press, Route};
use serde_json::{Value, json};
use serenity::all::{ChannelType, ComponentInteraction, ComponentInteractionDataKind};

use crate::CHANNEL;
use crate::errors::redact;
use crate::outbound::{Answer, DISCORD_LIMIT};
use crate::rest::Rest;

/// How long the relay gets to answer a press: well within Discord's 3 s, which count from the
/// press and include the gateway's and the callback's way.
pub(crate) const PRESS_WAIT: Duration = Duration::from_secs(2);
/// Discord's window for the first answer, from when the press reached us.
const CALLBACK_WINDOW: Duration = Duration::from_secs(3);
/// The least a callback is given, even when the window has (nearly) passed: a late answer is
/// refused (10062), not harmful.
const MIN_CALLBACK_TIMEOUT: Duration = Duration::from_secs(1);
/// What the presser is told when the relay cannot take the press.
/// Also when the relay answered too late, having perhaps acted: not "try again".
pub const CANNOT_TAKE: &str =
    "the relay did not answer in time; check the chat before you press again";

/// Interaction response types: a message (with flag 64, ephemeral), and an acknowledgement
/// that changes nothing.
const CHANNEL_MESSAGE: u8 = 4;
const DEFERRED_UPDATE: u8 = 6;
const EPHEMERAL: u64 = 1 << 6;

const ALREADY_ACKNOWLEDGED: i64 = 40060;
const UNKNOWN_INTERACTION: i64 = 10062;

/// The thread parent an interaction itself names: `Some(Some(parent))` in a thread,
/// `Some(None)` in a channel that is no thread, `None` when it does not say (then look it up).
pub(crate) fn known_parent(interaction: &ComponentInteraction) -> Option<Option<u64>> {
    let channel = interaction.channel.as_ref()?;
    match channel.kind {
        ChannelType::PublicThread | ChannelType::PrivateThread | ChannelType::NewsThread => {
            channel.parent_id.map(|parent| Some(parent.get()))
        }
        _ => Some(None),
    }
}

/// The press a component interaction carries for the relay, routed like a message in the same
/// place: the channel is the chat (a thread's parent, with the thread as `thread_id`), a guild
/// makes it a group, a DM direct. `bot` is the bot's user id (the route's account); `None` for
/// what is not a button (a select menu the relay never sends).
pub fn to_press(
    interaction: &ComponentInteraction,
    bot: u64,
    parent: Option<u64>,
) -> Option<Press> {
    if !matches!(interaction.data.kind, ComponentInteractionDataKind::Button) {
        return None;
    }
    let channel = interaction.channel_id.get().to_string();
    let (chat_id, thread_id) = match parent {
        Some(parent) => (parent.to_string(), Some(channel)),
        None => (channel, None),
    };
    Some(Press {
        route: Route {
            channel: CHANNEL.to_string(),
            account: bot.to_string(),
            chat_id,
            thread_id,
            reply_to_message_id: None,
            chat_type: if interaction.guild_id.is_some() {
                ChatType::Group
            } else {
                ChatType::Direct
            },
        },
        // In a guild serenity fills `user` from `member.user`.
        sender_id: interaction.user.id.get().to_string(),
        action: interaction.data.custom_id.clone(),
        press_id: interaction.id.get().to_string(),
        on_message_id: Some(interaction.message.id.get().to_string()),
    })
}

/// The callback for the relay's answer: `Some(text)` shown to the presser alone (cut to 2000
/// characters; an empty one only acknowledges the press), `None` the [`CANNOT_TAKE`] answer.
pub(crate) fn callback_body(answer: Option<&str>) -> Value {
    let text = answer.unwrap_or(CANNOT_TAKE);
    if text.is_empty() {
        return json!({"type": DEFERRED_UPDATE});
    }
    let content: String = text.chars().take(DISCORD_LIMIT.max).collect();
    json!({
        "type": CHANNEL_MESSAGE,
        "data": {"content": content, "flags": EPHEMERAL, "allowed_mentions": {"parse": []}},
    })
}

/// Hands `press` to the relay (unless it is stopping) and answers `interaction` with what the
/// relay says, within Discord's window. `received`: when the press reached the handler.
pub(crate) async fn take(
    sink: Arc<dyn InboundSink>,
    rest: &Rest,
    press: Option<Press>,
    interaction: &ComponentInteraction,
    received: Instant,
) {
    let interaction_id = interaction.id.get();
    let answer = match press {
        Some(press) => ask(sink, press, interaction_id).await,
        None => None,
    };
    let body = callback_body(answer.as_deref());
    let timeout = CALLBACK_WINDOW
        .saturating_sub(received.elapsed())
        .max(MIN_CALLBACK_TIMEOUT);
    let token = interaction.token.as_str();
    match rest
        .interaction_callback(interaction_id, token, &body, timeout)
        .await
    {
        Ok(reply) if (200..300).contains(&reply.status) => {
            tracing::debug!(interaction_id, "discord press answered");
        }
        Ok(reply) => {
            let answer = Answer::new(reply.status, None, &reply.body);
            let error = redact(&answer.describe(), token);
            match answer.code() {
                Some(ALREADY_ACKNOWLEDGED) => tracing::info!(
                    interaction_id,
                    "discord press already answered (a replayed press)"
                ),
                Some(UNKNOWN_INTERACTION) => tracing::warn!(
                    interaction_id,
                    error = %error,
                    "discord press answered too late; the presser saw it fail"
                ),
                _ => {
                    tracing::warn!(interaction_id, error = %error, "discord refused a press answer")
                }
            }
        }
        Err(error) => {
            tracing::warn!(interaction_id, error = %redact(&error, token), "cannot answer a discord press");
        }
    }
}

/// The relay's answer to `press`, or `None` if it has none in [`PRESS_WAIT`]. The press runs
/// on its own task, so a slow relay finishes taking it after the wait.
async fn ask(sink: Arc<dyn InboundSink>, press: Press, interaction_id: u64) -> Option<String> {
    let pending = tokio::spawn(async move { sink.press(press).await });
    match tokio::time::timeout(PRESS_WAIT, pending).await {
        Ok(Ok(Ok(answer))) => Some(answer.text),
        Ok(Ok(Err(error))) => {
            tracing::warn!(interaction_id, error = %error, "the relay cannot take a discord press");
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(interaction_id, error = %error, "taking a discord press failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                interaction_id,
                wait_ms = PRESS_WAIT.as_millis() as u64,
                "the relay did not answer a discord press in time; its presser is told to check the chat"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execrelay_fakes::discord::{PressAt, bot_message, interaction_payload};
    use serenity::all::Interaction;

    /// The fake's exact payload decodes into serenity's interaction: a field serenity requires
    /// and the fake forgot would make every press vanish silently (an unknown event at DEBUG).
    fn decode(at: PressAt) -> ComponentInteraction {
        let message = bot_message(
            1_396_999_990_000_005_003,
            at.channel_id,
            "started job 7f3a9c: make",
            Some(json!([{"type": 1, "components": [
                {"type": 2, "style": 2, "label": "Kill", "custom_id": "k:7f3a9c"}]}])),
        );
        let payload = interaction_payload(1_397_000_000_000_005_011, at, 400, "k:7f3a9c", &message);
        match serde_json::from_value::<Interaction>(payload) {
            Ok(Interaction::Component(interaction)) => interaction,
            Ok(other) => panic!("not a component interaction: {other:?}"),
            Err(error) => panic!("the fake's INTERACTION_CREATE does not decode: {error}"),
        }
    }

    #[test]
    fn a_dm_press_is_direct_and_names_its_message() {
        let interaction = decode(PressAt {
            channel_id: 200,
            guild: false,
            thread_of: None,
        });
        assert_eq!(known_parent(&interaction), Some(None));
        let press = to_press(&interaction, 900, None).unwrap();
        assert_eq!(press.route.chat_type, ChatType::Direct);
        assert_eq!(press.route.chat_id, "200");
        assert_eq!(press.route.account, "900");
        assert_eq!(press.route.thread_id, None);
        assert_eq!(press.sender_id, "400");
        assert_eq!(press.action, "k:7f3a9c");
        assert_eq!(press.press_id, "1397000000000005011");
        assert_eq!(press.on_message_id.as_deref(), Some("1396999990000005003"));
        assert!(!interaction.token.is_empty());
    }

    #[test]
    fn a_guild_press_is_a_group_and_its_presser_is_the_member() {
        let interaction = decode(PressAt {
            channel_id: 210,
            guild: true,
            thread_of: None,
        });
        assert_eq!(known_parent(&interaction), Some(None));
        let press = to_press(&interaction, 900, None).unwrap();
        assert_eq!(press.route.chat_type, ChatType::Group);
        assert_eq!(press.route.chat_id, "210");
        assert_eq!(press.sender_id, "400");
    }

    #[test]
    fn a_thread_press_keeps_the_parent_as_its_chat() {
        let interaction = decode(PressAt {
            channel_id: 220,
            guild: true,
            thread_of: Some(210),
        });
        let parent = known_parent(&interaction).flatten();
        assert_eq!(parent, Some(210));
        let press = to_press(&interaction, 900, parent).unwrap();
        assert_eq!(press.route.chat_id, "210");
        assert_eq!(press.route.thread_id.as_deref(), Some("220"));
        assert_eq!(press.route.chat_type, ChatType::Group);
    }

    #[test]
    fn answers_are_ephemeral_and_within_the_limit() {
        let body = callback_body(Some("killing 7f3a9c"));
        assert_eq!(
            body,
            json!({"type": 4, "data": {"content": "killing 7f3a9c", "flags": 64,
                                       "allowed_mentions": {"parse": []}}})
        );
        assert_eq!(callback_body(None)["data"]["content"], CANNOT_TAKE);
        assert_eq!(callback_body(Some("")), json!({"type": 6}));
        let long = "é".repeat(3000);
        let cut = callback_body(Some(&long));
        assert_eq!(
            cut["data"]["content"].as_str().unwrap().chars().count(),
            2000
        );
    }
}
