//! Inbound: `getUpdates` in our own long-polling loop, updates turned into
//! [`InboundMessage`]s (the offset confirmed only after the relay stored each one) and button
//! presses (`callback_query` updates) into [`Press`]es, each answered with
//! `answerCallbackQuery` and confirmed whatever the relay made of it.

use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{
    CancellationToken, ChatType, InboundMessage, InboundSink, Press, Route, SinkError,
};
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::payloads::{AnswerCallbackQuerySetters, GetUpdatesSetters};
use teloxide::prelude::Requester;
use teloxide::requests::Request;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQuery, CallbackQueryId, Chat, Message, MessageKind, Update,
    UpdateKind,
};

use crate::CHANNEL;
use crate::errors::redact;

/// The first wait after a failed poll; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Another poller on the same token: no point asking again within seconds.
const CONFLICT_BACKOFF: Duration = Duration::from_secs(5);
/// At shutdown, how long we spend confirming the offset of what was stored.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest answer to a press Telegram shows, in characters.
const MAX_ANSWER_CHARS: usize = 200;
/// What the presser is told when the relay could not take the press.
pub const PRESS_UNAVAILABLE: &str = "the relay cannot take this now; try again";

/// Who the bot is, from `getMe`: its id names the route's account, its username tells our
/// `/cmd@name` commands from other bots'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotIdentity {
    pub id: u64,
    pub username: String,
}

/// Whether `text` is a command addressed to some other bot (`/cmd@otherbot ...`).
pub fn addressed_to_another_bot(text: &str, our_username: &str) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('/') else {
        return false;
    };
    let word = rest.split(char::is_whitespace).next().unwrap_or("");
    match word.split_once('@') {
        Some((_, bot)) => !bot.eq_ignore_ascii_case(our_username),
        None => false,
    }
}

/// `/cmd@ourbot args` as `/cmd args`; anything else as it is.
fn without_our_name(text: &str, our_username: &str) -> String {
    let trimmed = text.trim_start();
    if let Some(rest) = trimmed.strip_prefix('/') {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if let Some((command, bot)) = rest[..end].split_once('@')
            && bot.eq_ignore_ascii_case(our_username)
        {
            return format!("/{command}{}", &rest[end..]);
        }
    }
    text.to_string()
}

/// The message an update carries for the relay, if any: text messages from people, in private
/// chats, groups, supergroups and forum topics, and media sent to the bot directly (with empty
/// text). Edits, channel posts, service messages, other bots and commands addressed to other
/// bots are not for us.
pub fn to_inbound(update: &Update, me: &BotIdentity) -> Option<InboundMessage> {
    let UpdateKind::Message(message) = &update.kind else {
        return None;
    };
    let sender = message.from.as_ref()?;
    if sender.is_bot {
        return None;
    }
    // A photo, file or sticker sent to the bot directly is passed on with no text, so that the
    // relay can say it reads text only; in groups such messages are for the people there.
    let text = match message.text() {
        Some(text) => text,
        None if message.chat.is_private() && matches!(message.kind, MessageKind::Common(_)) => "",
        None => return None,
    };
    if addressed_to_another_bot(text, &me.username) {
        return None;
    }
    // `/cmd@ourbot` is plainly ours: the relay ignores a command addressed to any bot.
    let text = without_our_name(text, &me.username);
    Some(InboundMessage {
        route: route_of(message, me),
        sender_id: sender.id.0.to_string(),
        text,
        // update_id is unique per bot, and Telegram redelivers an unconfirmed update with it.
        platform_message_id: Some(update.id.0.to_string()),
        // Our polling loop hands updates over one by one, in Telegram's order.
        sent_at_ms: None,
        forwarded: message.forward_origin().is_some(),
    })
}

/// The press a `callback_query` update carries, if the relay can act on it: a button under a
/// message in a chat, with its data. Not: a press under an inline-mode message (no `message`),
/// a game's button (no `data`).
pub fn to_press(update: &Update, me: &BotIdentity) -> Option<Press> {
    let UpdateKind::CallbackQuery(query) = &update.kind else {
        return None;
    };
    press_of(query, me)
}

fn press_of(query: &CallbackQuery, me: &BotIdentity) -> Option<Press> {
    let message = query.message.as_ref()?;
    let action = query.data.as_ref().filter(|data| !data.is_empty())?;
    // A message too old for the bot to read comes as "inaccessible": chat and id, no topic.
    let thread_id = query.regular_message().and_then(topic_of);
    Some(Press {
        route: route_in(message.chat(), thread_id, me),
        // The presser; the message's own `from` is the bot.
        sender_id: query.from.id.0.to_string(),
        action: action.clone(),
        // A redelivered update carries the same query id: the relay dedupes on it.
        press_id: query.id.0.clone(),
        on_message_id: Some(message.id().0.to_string()),
    })
}

fn route_of(message: &Message, me: &BotIdentity) -> Route {
    route_in(&message.chat, topic_of(message), me)
}

/// The forum topic `message` is in. In a forum, replies must name the topic or they land in
/// "General". Outside forums a thread id is a reply chain, which sendMessage does not take.
fn topic_of(message: &Message) -> Option<String> {
    message
        .thread_id
        .filter(|_| message.is_topic_message)
        .map(|thread| thread.0.0.to_string())
}

fn route_in(chat: &Chat, thread_id: Option<String>, me: &BotIdentity) -> Route {
    let chat_type = if chat.is_private() {
        ChatType::Direct
    } else {
        ChatType::Group
    };
    Route {
        channel: CHANNEL.to_string(),
        account: me.id.to_string(),
        chat_id: chat.id.0.to_string(),
        thread_id,
        reply_to_message_id: None,
        chat_type,
    }
}

fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// Sleeps `wait` unless `stop` fires first; returns whether to go on.
async fn pause(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Asks `getMe` until it answers. Retries network trouble with backoff; a refused token is
/// final.
pub(crate) async fn identify(
    bot: &teloxide::Bot,
    token: &str,
    stop: &CancellationToken,
) -> Result<Option<BotIdentity>, crate::TelegramError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            result = bot.get_me() => result,
        };
        match result {
            Ok(me) => {
                return Ok(Some(BotIdentity {
                    id: me.user.id.0,
                    username: me.user.username.clone().unwrap_or_default(),
                }));
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                return Err(crate::TelegramError::InvalidToken);
            }
            Err(error) => {
                tracing::warn!(error = %redact(&error.to_string(), token), retry_in_ms = backoff.as_millis() as u64, "telegram getMe failed");
                if !pause(backoff, stop).await {
                    return Ok(None);
                }
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Registers the command list with `setMyCommands`, only when it differs from the one this bot
/// registered last (kept through the sink): calling it on every start can earn a long 429.
pub(crate) async fn register_commands(
    bot: &teloxide::Bot,
    me: &BotIdentity,
    commands: &[(String, String)],
    sink: &dyn InboundSink,
    token: &str,
) {
    if commands.is_empty() {
        return;
    }
    let wanted: String = commands
        .iter()
        .map(|(name, description)| format!("{name}\t{description}\n"))
        .collect();
    let key = format!("{CHANNEL}:{}:commands", me.id);
    match sink.load_state(&key).await {
        Ok(Some(registered)) if registered == wanted => return,
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the registered telegram command list");
            return;
        }
    }
    let list = commands
        .iter()
        .map(|(name, description)| BotCommand::new(name.clone(), description.clone()));
    match bot.set_my_commands(list).await {
        Ok(_) => {
            if let Err(error) = sink.save_state(&key, &wanted).await {
                tracing::warn!(error = %error, "cannot record the registered telegram command list");
            }
            tracing::info!(
                commands = commands.len(),
                "registered the telegram command list"
            );
        }
        Err(error) => tracing::warn!(
            error = %redact(&error.to_string(), token),
            "cannot register the telegram command list; will try at the next start"
        ),
    }
}

/// What a failed `getUpdates` means: how long to wait before polling again (`None`: at once,
/// after a fix such as deleting a webhook).
async fn polling_failed(
    bot: &teloxide::Bot,
    error: &RequestError,
    backoff: Duration,
    token: &str,
) -> Option<Duration> {
    match error {
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => {
            let wait = backoff.max(CONFLICT_BACKOFF);
            tracing::error!(
                retry_in_ms = wait.as_millis() as u64,
                "telegram 409 Conflict: another process is polling this bot token; \
                 stop it (only one getUpdates consumer per token is allowed)"
            );
            Some(wait)
        }
        RequestError::RetryAfter(wait) => {
            tracing::warn!(
                retry_in_ms = wait.duration().as_millis() as u64,
                "telegram asked getUpdates to wait"
            );
            Some(wait.duration().max(backoff))
        }
        RequestError::Api(api) if webhook_is_active(api) => {
            tracing::warn!("telegram has a webhook set for this bot; deleting it to poll");
            match bot.delete_webhook().await {
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(error = %redact(&error.to_string(), token), "cannot delete the telegram webhook");
                    Some(backoff)
                }
            }
        }
        error => {
            tracing::warn!(
                error = %redact(&error.to_string(), token),
                retry_in_ms = backoff.as_millis() as u64,
                "telegram getUpdates failed"
            );
            Some(backoff)
        }
    }
}

/// teloxide recognises only the short form of this error; Telegram says "Conflict: can't use
/// getUpdates method while webhook is active; use deleteWebhook to delete the webhook first".
fn webhook_is_active(error: &ApiError) -> bool {
    match error {
        ApiError::CantGetUpdates => true,
        ApiError::Unknown(description) => description.contains("webhook is active"),
        _ => false,
    }
}

/// Polling needs the token's webhook gone; checked once at start, as teloxide's own polling
/// does, so that a webhook left by another deployment does not make every poll fail first.
pub(crate) async fn remove_webhook(bot: &teloxide::Bot, token: &str) {
    match bot.get_webhook_info().await {
        Ok(info) if info.url.is_none() => {}
        Ok(_) => {
            tracing::warn!("telegram has a webhook set for this bot; deleting it to poll");
            if let Err(error) = bot.delete_webhook().await {
                tracing::warn!(error = %redact(&error.to_string(), token), "cannot delete the telegram webhook");
            }
        }
        Err(error) => {
            tracing::warn!(error = %redact(&error.to_string(), token), "telegram getWebhookInfo failed")
        }
    }
}

/// Why handing an update to the relay stopped the batch.
enum Handoff {
    /// The relay could not store it: retry from this update after a pause.
    Unavailable(SinkError),
}

/// Who answers presses: the sending bot (the polling one's timeout is the long poll's), and
/// the token to scrub from what it logs.
struct Answerer<'a> {
    bot: &'a teloxide::Bot,
    token: &'a str,
}

impl Answerer<'_> {
    /// Answers the press `query_id`: stops the presser's spinner and shows them `text`, cut to
    /// what Telegram shows (none when empty). In a task of its own, so that a slow answer never
    /// holds up the updates behind it; never retried, since the query goes stale in seconds.
    fn answer(&self, query_id: CallbackQueryId, text: &str) {
        let mut request = self.bot.answer_callback_query(query_id);
        if !text.is_empty() {
            request = request.text(text.chars().take(MAX_ANSWER_CHARS).collect::<String>());
        }
        let token = self.token.to_string();
        tokio::spawn(async move {
            match request.await {
                Ok(_) => {}
                // Answered too late (a press redelivered after a restart): nobody is waiting.
                Err(RequestError::Api(ApiError::InvalidQueryId)) => {
                    tracing::debug!("a telegram button press went stale before its answer")
                }
                Err(error) => tracing::warn!(
                    error = %redact(&error.to_string(), &token),
                    "cannot answer a telegram button press"
                ),
            }
        });
    }
}

/// Hands a press to the relay and answers it. Unlike a message, a press is confirmed whatever
/// the relay made of it: a Kill or Rerun replayed minutes later, after an outage, would
/// surprise its presser, whom the answer told to try again.
async fn take_press(
    update: &Update,
    query: &CallbackQuery,
    me: &BotIdentity,
    sink: &dyn InboundSink,
    answerer: &Answerer<'_>,
) {
    let Some(press) = press_of(query, me) else {
        tracing::debug!(
            update_id = update.id.0,
            "telegram button press not for the relay (no message or no data); skipped"
        );
        answerer.answer(query.id.clone(), "");
        return;
    };
    let text = match sink.press(press).await {
        Ok(answer) => answer.text,
        Err(error) => {
            tracing::warn!(
                update_id = update.id.0,
                error = %error,
                "the relay could not take a telegram button press; its presser is told to try again"
            );
            PRESS_UNAVAILABLE.to_string()
        }
    };
    answerer.answer(query.id.clone(), &text);
}

async fn hand_over(
    update: &Update,
    me: &BotIdentity,
    sink: &dyn InboundSink,
    answerer: &Answerer<'_>,
) -> Result<(), Handoff> {
    if let UpdateKind::CallbackQuery(query) = &update.kind {
        take_press(update, query, me, sink, answerer).await;
        return Ok(());
    }
    let Some(message) = to_inbound(update, me) else {
        if matches!(update.kind, UpdateKind::Error(_)) {
            // Confirmed anyway: asking again would get the same undecodable update forever.
            tracing::warn!(
                update_id = update.id.0,
                "cannot decode a telegram update; skipped"
            );
        } else {
            tracing::debug!(
                update_id = update.id.0,
                "telegram update not for the relay; skipped"
            );
        }
        return Ok(());
    };
    match sink.accept(message).await {
        Ok(accepted) => {
            tracing::debug!(update_id = update.id.0, ?accepted, "telegram update stored");
            Ok(())
        }
        Err(error) => Err(Handoff::Unavailable(error)),
    }
}

/// Long-polls until `stop` fires. The offset sent with each `getUpdates` confirms exactly the
/// updates the relay has stored, and the presses it was handed; nothing else moves it.
/// `answerer` answers presses.
pub(crate) async fn poll(
    bot: teloxide::Bot,
    answerer: teloxide::Bot,
    me: BotIdentity,
    sink: Arc<dyn InboundSink>,
    poll_timeout: Duration,
    token: String,
    stop: CancellationToken,
) {
    let mut offset: Option<i32> = None;
    let mut backoff = FIRST_BACKOFF;
    let timeout_secs = poll_timeout.as_secs().min(50) as u32;
    let answerer = Answerer {
        bot: &answerer,
        token: &token,
    };
    tracing::info!(bot = %me.username, "telegram long polling started");
    'polling: loop {
        let mut request = bot
            .get_updates()
            .timeout(timeout_secs)
            // Telegram keeps the last list it was given; without callback_query no press comes.
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
        if let Some(offset) = offset {
            request = request.offset(offset);
        }
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            result = request.send() => result,
        };
        let updates = match result {
            Ok(updates) => updates,
            Err(error) => {
                let Some(wait) = polling_failed(&bot, &error, backoff, &token).await else {
                    continue;
                };
                if !pause(wait, &stop).await {
                    break;
                }
                backoff = next_backoff(wait.max(backoff));
                continue;
            }
        };
        for update in &updates {
            match hand_over(update, &me, sink.as_ref(), &answerer).await {
                Ok(()) => offset = Some(update.id.as_offset()),
                Err(Handoff::Unavailable(error)) => {
                    // Not confirmed: the next getUpdates asks from this update again.
                    tracing::error!(update_id = update.id.0, error = %error, retry_in_ms = backoff.as_millis() as u64, "cannot store a telegram update");
                    if !pause(backoff, &stop).await {
                        break 'polling;
                    }
                    backoff = next_backoff(backoff);
                    continue 'polling;
                }
            }
        }
        // Only a batch stored whole shows the relay healthy again.
        backoff = FIRST_BACKOFF;
    }
    // Confirm what was stored, so a restart is not handed it again (it would be deduped, but
    // there is no need to ask).
    if let Some(offset) = offset {
        let confirm = bot.get_updates().offset(offset).timeout(0).limit(1);
        let _ = tokio::time::timeout(CONFIRM_TIMEOUT, confirm.send()).await;
    }
    tracing::info!("telegram long polling stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> BotIdentity {
        BotIdentity {
            id: 4242,
            username: "relay_bot".into(),
        }
    }

    /// Parsed from text, as teloxide parses a getUpdates answer: its `UpdateKind` does not
    /// decode from a `serde_json::Value`.
    fn parse(update: serde_json::Value) -> Update {
        serde_json::from_str(&update.to_string()).unwrap()
    }

    fn update(message: serde_json::Value) -> Update {
        parse(json!({"update_id": 17, "message": message}))
    }

    fn message(chat: serde_json::Value, text: &str) -> serde_json::Value {
        json!({
            "message_id": 5, "date": 1700000000, "chat": chat, "text": text,
            "from": {"id": 111, "is_bot": false, "first_name": "Alice"},
        })
    }

    #[test]
    fn private_chat_is_direct() {
        let chat = json!({"id": 111, "type": "private", "first_name": "Alice"});
        let inbound = to_inbound(&update(message(chat, "/exec ls")), &me()).unwrap();
        assert_eq!(inbound.route.chat_type, ChatType::Direct);
        assert_eq!(inbound.route.chat_id, "111");
        assert_eq!(inbound.route.account, "4242");
        assert_eq!(inbound.route.thread_id, None);
        assert_eq!(inbound.sender_id, "111");
        assert_eq!(inbound.text, "/exec ls");
        assert_eq!(inbound.platform_message_id.as_deref(), Some("17"));
    }

    #[test]
    fn forum_topic_keeps_its_thread() {
        let chat = json!({"id": -1001, "type": "supergroup", "title": "ops", "is_forum": true});
        let mut m = message(chat, "/exec@relay_bot make");
        m["message_thread_id"] = json!(77);
        m["is_topic_message"] = json!(true);
        let inbound = to_inbound(&update(m), &me()).unwrap();
        assert_eq!(inbound.route.chat_type, ChatType::Group);
        assert_eq!(inbound.route.chat_id, "-1001");
        assert_eq!(inbound.route.thread_id.as_deref(), Some("77"));
    }

    #[test]
    fn reply_threads_outside_forums_are_not_topics() {
        let chat = json!({"id": -5, "type": "group", "title": "g"});
        let mut m = message(chat, "hi");
        m["message_thread_id"] = json!(3);
        assert_eq!(to_inbound(&update(m), &me()).unwrap().route.thread_id, None);
    }

    #[test]
    fn other_bots_and_their_commands_are_ignored() {
        let chat = json!({"id": -5, "type": "group", "title": "g"});
        assert!(to_inbound(&update(message(chat.clone(), "/exec@other_bot ls")), &me()).is_none());
        assert!(to_inbound(&update(message(chat.clone(), "/exec@Relay_Bot ls")), &me()).is_some());
        let mut from_bot = message(chat, "/exec ls");
        from_bot["from"]["is_bot"] = json!(true);
        assert!(to_inbound(&update(from_bot), &me()).is_none());
        assert!(addressed_to_another_bot("/jobs@x", "relay_bot"));
        assert_eq!(
            without_our_name("/exec@Relay_Bot ls -l", "relay_bot"),
            "/exec ls -l"
        );
        assert_eq!(without_our_name("/jobs@relay_bot", "relay_bot"), "/jobs");
        assert_eq!(
            without_our_name("/exec echo a@b", "relay_bot"),
            "/exec echo a@b"
        );
        assert!(!addressed_to_another_bot("mail me@x", "relay_bot"));
        assert!(!addressed_to_another_bot("/jobs", "relay_bot"));
    }

    #[test]
    fn edits_and_service_messages_are_skipped_and_dm_media_has_no_text() {
        let chat = json!({"id": 111, "type": "private", "first_name": "Alice"});
        let edit =
            parse(json!({"update_id": 1, "edited_message": message(chat.clone(), "/exec ls")}));
        assert!(matches!(edit.kind, UpdateKind::EditedMessage(_)));
        assert!(to_inbound(&edit, &me()).is_none());
        let mut photo = message(chat.clone(), "");
        photo.as_object_mut().unwrap().remove("text");
        photo["photo"] = json!([{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]);
        let photo = to_inbound(&update(photo), &me()).expect("a photo in a DM is passed on");
        assert_eq!(
            photo.text, "",
            "with no text: the relay answers it reads text only"
        );
        let mut joined = message(chat, "");
        joined.as_object_mut().unwrap().remove("text");
        joined["new_chat_members"] = json!([{"id": 9, "is_bot": false, "first_name": "B"}]);
        assert!(to_inbound(&update(joined), &me()).is_none());
    }

    /// A `callback_query` update as Telegram sends it: `who` pressed `data` under the bot's
    /// message 12 in `chat`.
    fn pressed(chat: serde_json::Value, who: i64, data: Option<&str>) -> serde_json::Value {
        let mut query = json!({
            "id": "4382bfdwdsb323b2d9",
            "from": {"id": who, "is_bot": false, "first_name": "Alice"},
            "message": {
                "message_id": 12, "date": 1700000000, "chat": chat,
                "from": {"id": 4242, "is_bot": true, "first_name": "execrelay", "username": "relay_bot"},
                "text": "started job 7f3a9c: make",
                "reply_markup": {"inline_keyboard": [[
                    {"text": "Tail", "callback_data": "t:7f3a9c"},
                    {"text": "Kill", "callback_data": "k:7f3a9c"},
                ]]},
            },
            "chat_instance": "-5",
        });
        if let Some(data) = data {
            query["data"] = json!(data);
        }
        json!({"update_id": 1003, "callback_query": query})
    }

    #[test]
    fn a_press_names_its_presser_message_and_button() {
        let chat = json!({"id": 111, "type": "private", "first_name": "Alice"});
        let press = to_press(&parse(pressed(chat, 111, Some("k:7f3a9c"))), &me()).unwrap();
        assert_eq!(press.route.chat_id, "111");
        assert_eq!(press.route.chat_type, ChatType::Direct);
        assert_eq!(press.route.account, "4242");
        assert_eq!(press.route.thread_id, None);
        assert_eq!(
            press.sender_id, "111",
            "the presser, not the bot that sent the message"
        );
        assert_eq!(press.action, "k:7f3a9c");
        assert_eq!(press.press_id, "4382bfdwdsb323b2d9");
        assert_eq!(press.on_message_id.as_deref(), Some("12"));
    }

    #[test]
    fn a_press_in_a_forum_topic_keeps_its_thread() {
        let chat =
            json!({"id": -1001000000123_i64, "type": "supergroup", "title": "g", "is_forum": true});
        let mut update = pressed(chat, 6, Some("t:7f3a9c"));
        update["callback_query"]["message"]["message_thread_id"] = json!(77);
        update["callback_query"]["message"]["is_topic_message"] = json!(true);
        let press = to_press(&parse(update), &me()).unwrap();
        assert_eq!(press.route.chat_id, "-1001000000123");
        assert_eq!(press.route.chat_type, ChatType::Group);
        assert_eq!(press.route.thread_id.as_deref(), Some("77"));
        assert_eq!(press.sender_id, "6");
    }

    #[test]
    fn a_press_under_an_inaccessible_message_keeps_its_chat() {
        let chat = json!({"id": -5, "type": "group", "title": "g"});
        let mut update = pressed(chat, 6, Some("t:7f3a9c"));
        // Telegram's "inaccessible message": date 0, too old for the bot to read.
        update["callback_query"]["message"] = json!({
            "message_id": 12, "date": 0, "chat": {"id": -5, "type": "group", "title": "g"},
        });
        let press = to_press(&parse(update), &me()).unwrap();
        assert_eq!(press.route.chat_id, "-5");
        assert_eq!(press.route.chat_type, ChatType::Group);
        assert_eq!(press.on_message_id.as_deref(), Some("12"));
    }

    #[test]
    fn presses_without_data_or_message_are_not_for_the_relay() {
        let chat = json!({"id": 111, "type": "private", "first_name": "Alice"});
        let no_data = parse(pressed(chat.clone(), 111, None));
        assert!(matches!(no_data.kind, UpdateKind::CallbackQuery(_)));
        assert!(to_press(&no_data, &me()).is_none());
        let mut inline = pressed(chat, 111, Some("k:7f3a9c"));
        inline["callback_query"]
            .as_object_mut()
            .unwrap()
            .remove("message");
        inline["callback_query"]["inline_message_id"] = json!("AAAA");
        let inline = parse(inline);
        assert!(matches!(inline.kind, UpdateKind::CallbackQuery(_)));
        assert!(to_press(&inline, &me()).is_none());
        // A message is no press, and a press no message.
        let message = update(message(
            json!({"id": 1, "type": "private", "first_name": "A"}),
            "hi",
        ));
        assert!(to_press(&message, &me()).is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_text_in_any_chat_is_handled_without_panicking(
            text in "(?s).{0,200}",
            chat in proptest::num::i64::ANY,
            kind in 0usize..3,
            thread in proptest::option::of(1i32..100_000),
        ) {
            let kind = ["private", "group", "supergroup"][kind];
            let chat = json!({"id": chat, "type": kind, "first_name": "A", "title": "T"});
            let mut m = message(chat, &text);
            if let Some(thread) = thread {
                m["message_thread_id"] = json!(thread);
                m["is_topic_message"] = json!(true);
            }
            let Ok(update) = serde_json::from_str::<Update>(&json!({"update_id": 1, "message": m}).to_string()) else {
                return Ok(());
            };
            if let Some(inbound) = to_inbound(&update, &me()) {
                proptest::prop_assert_eq!(inbound.text, text);
                proptest::prop_assert_eq!(inbound.route.chat_type == ChatType::Direct, kind == "private");
            }
        }

        #[test]
        fn addressing_never_panics(text in "(?s).{0,80}", name in "[a-zA-Z_]{0,20}") {
            let _ = addressed_to_another_bot(&text, &name);
        }
    }
}
