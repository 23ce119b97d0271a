//! Outbound: one `sendMessage` per chunk (with an inline keyboard when the chunk carries
//! buttons), one `editMessageText` per edit, each result classified for the relay ([`classify`]
//! for the outbox, [`classify_edit`] for the edit lane); and the [`Channel`] that ties polling,
//! sending and editing together.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{
    Button, CancellationToken, Channel, ChannelError, CheckOutcome, Edit, EditOutcome, InboundSink,
    MAX_BUTTON_ID_BYTES, OutboundChunk, SendOutcome, TextLimit, TextUnit,
};
use teloxide::payloads::{EditMessageTextSetters, SendMessageSetters};
use teloxide::prelude::Requester;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, MessageId, ThreadId,
};
use teloxide::{ApiError, Bot, RequestError};

use crate::config::TelegramConfig;
use crate::errors::{TelegramError, redact};
use crate::{CHANNEL, inbound};

/// 4096 UTF-16 code units per message; we send plain text (no parse mode), so what we count is
/// what Telegram counts.
pub const TELEGRAM_LIMIT: TextLimit = TextLimit {
    unit: TextUnit::Utf16,
    max: 4096,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// A long poll may legitimately take `poll_timeout`; the HTTP timeout must be longer.
const POLL_SLACK: Duration = Duration::from_secs(15);
/// A misbehaving server must not park a chat's queue for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Telegram as a [`Channel`]. `Debug` prints no token (teloxide's `Bot` would).
pub struct TelegramChannel {
    config: TelegramConfig,
    sender: Bot,
    poller: Bot,
}

impl fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, TelegramError> {
    reqwest::Client::builder()
        // An ambient proxy variable must not reroute bot traffic (or a test's loopback fake).
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|error| TelegramError::Config(format!("cannot build the HTTP client: {error}")))
}

impl TelegramChannel {
    /// Builds the channel. Fails on an empty token or an API URL that is not absolute http(s).
    pub fn new(config: TelegramConfig) -> Result<Self, TelegramError> {
        if config.token.is_empty() {
            return Err(TelegramError::Config("the bot token is empty".into()));
        }
        let url = match reqwest::Url::parse(config.api_url.trim_end_matches('/')) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base() => url,
            _ => {
                return Err(TelegramError::Config(
                    "api_url must be an absolute http:// or https:// URL".into(),
                ));
            }
        };
        let token = config.token.expose();
        let sender = Bot::with_client(token, client(SEND_TIMEOUT)?).set_api_url(url.clone());
        let poller =
            Bot::with_client(token, client(config.poll_timeout + POLL_SLACK)?).set_api_url(url);
        Ok(TelegramChannel {
            config,
            sender,
            poller,
        })
    }
}

/// What the outbox should do after a failed `sendMessage`.
pub fn classify(error: &RequestError, token: &str) -> SendOutcome {
    let shown = || redact(&error.to_string(), token);
    match error {
        RequestError::RetryAfter(wait) => {
            SendOutcome::RetryAfter(wait.duration().min(MAX_RETRY_AFTER))
        }
        RequestError::MigrateToChatId(chat) => SendOutcome::ChatMigrated {
            chat_id: chat.0.to_string(),
        },
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => {
            SendOutcome::Transient(shown())
        }
        // Our configuration, not the message, is wrong: keep it until the token is fixed.
        RequestError::Api(ApiError::InvalidToken) => {
            SendOutcome::Transient(TelegramError::InvalidToken.to_string())
        }
        RequestError::Api(ApiError::Unknown(description)) => match retry_after_in(description) {
            Some(wait) => SendOutcome::RetryAfter(wait.min(MAX_RETRY_AFTER)),
            None if is_server_side(description) => SendOutcome::Transient(shown()),
            None => SendOutcome::Permanent(shown()),
        },
        RequestError::Api(_) => SendOutcome::Permanent(shown()),
    }
}

/// What the relay's edit lane should do after a failed `editMessageText`.
pub fn classify_edit(error: &RequestError, token: &str) -> EditOutcome {
    let shown = || redact(&error.to_string(), token);
    match error {
        // The message already shows this text and these buttons: what the edit wanted.
        RequestError::Api(ApiError::MessageNotModified) => EditOutcome::Edited,
        RequestError::RetryAfter(wait) => {
            EditOutcome::RetryAfter(wait.duration().min(MAX_RETRY_AFTER))
        }
        // The message ids of an old group do not carry over to its supergroup.
        RequestError::MigrateToChatId(_) => EditOutcome::Gone(shown()),
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => {
            EditOutcome::Transient(shown())
        }
        RequestError::Api(ApiError::InvalidToken) => {
            EditOutcome::Transient(TelegramError::InvalidToken.to_string())
        }
        RequestError::Api(
            ApiError::MessageToEditNotFound
            | ApiError::MessageCantBeEdited
            | ApiError::MessageIdInvalid
            | ApiError::ChatNotFound
            | ApiError::BotBlocked
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::BotKickedFromChannel
            | ApiError::UserDeactivated
            | ApiError::GroupDeactivated,
        ) => EditOutcome::Gone(shown()),
        RequestError::Api(ApiError::Unknown(description)) => {
            // teloxide knows only the long form of "not modified" word for word.
            if description.starts_with("Bad Request: message is not modified") {
                EditOutcome::Edited
            } else if let Some(wait) = retry_after_in(description) {
                EditOutcome::RetryAfter(wait.min(MAX_RETRY_AFTER))
            } else if is_out_of_the_chat(description) {
                EditOutcome::Gone(shown())
            } else if is_server_side(description) {
                EditOutcome::Transient(shown())
            } else {
                EditOutcome::Failed(shown())
            }
        }
        RequestError::Api(_) => EditOutcome::Failed(shown()),
    }
}

/// The bot left a chat in words teloxide has no variant for ("Forbidden: bot was kicked from
/// the group chat", "Forbidden: bot is not a member of the supergroup chat"): nothing in that
/// chat can be edited any more.
fn is_out_of_the_chat(description: &str) -> bool {
    description.starts_with("Forbidden: bot was kicked")
        || description.starts_with("Forbidden: bot is not a member")
}

/// The inline keyboard for `buttons`: one row, in order; `None` when there is none to show.
/// A button whose id Telegram would refuse as `callback_data` (empty, over 64 bytes) is left
/// out with a warning: Telegram would refuse the whole message for it (`BUTTON_DATA_INVALID`),
/// and a message without one of its buttons is worth more than a dead letter.
pub fn keyboard(buttons: &[Button]) -> Option<InlineKeyboardMarkup> {
    let row: Vec<InlineKeyboardButton> = buttons
        .iter()
        .filter(|button| {
            let fits = !button.id.is_empty() && button.id.len() <= MAX_BUTTON_ID_BYTES;
            if !fits {
                tracing::warn!(
                    label = %button.label,
                    id_bytes = button.id.len(),
                    "a button id telegram cannot carry (1 to 64 bytes); the button is left out"
                );
            }
            fits
        })
        .map(|button| InlineKeyboardButton::callback(button.label.clone(), button.id.clone()))
        .collect();
    // `new([vec![]])` would be one empty row, `[[]]`, not "no keyboard".
    (!row.is_empty()).then(|| InlineKeyboardMarkup::new([row]))
}

/// Link previews off: a command's output that names a URL must not grow a preview card, on
/// sends and edits alike.
fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

/// The wait named by a 429 that came without `parameters`: "Too Many Requests: retry after 7".
fn retry_after_in(description: &str) -> Option<Duration> {
    let seconds = description.strip_prefix("Too Many Requests: retry after ")?;
    seconds.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether an error description teloxide did not recognise is the server's trouble (5xx, an
/// unparameterised 429) rather than a refusal of this request.
fn is_server_side(description: &str) -> bool {
    let refusal = [
        "Bad Request",
        "Forbidden",
        "Unauthorized",
        "Not Found",
        "Conflict",
    ];
    !refusal.iter().any(|prefix| description.starts_with(prefix))
}

#[async_trait::async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &str {
        CHANNEL
    }

    fn limit(&self) -> TextLimit {
        TELEGRAM_LIMIT
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        let route = chunk.route;
        let Ok(chat_id) = route.chat_id.parse::<i64>() else {
            return SendOutcome::Permanent(format!(
                "`{}` is not a telegram chat id",
                route.chat_id
            ));
        };
        let mut request = self
            .sender
            .send_message(ChatId(chat_id), chunk.text)
            .link_preview_options(no_preview());
        // No buttons, no `reply_markup`: the request stays what it was before buttons existed.
        if let Some(keyboard) = keyboard(chunk.buttons) {
            request = request.reply_markup(keyboard);
        }
        if let Some(thread) = &route.thread_id {
            let Ok(thread) = thread.parse::<i32>() else {
                return SendOutcome::Permanent(format!("`{thread}` is not a telegram topic id"));
            };
            request = request.message_thread_id(ThreadId(MessageId(thread)));
        }
        match request.await {
            Ok(message) => SendOutcome::Delivered {
                platform_id: Some(message.id.0.to_string()),
            },
            Err(error) => classify(&error, self.config.token.expose()),
        }
    }

    async fn edit(&self, edit: Edit<'_>) -> EditOutcome {
        let Ok(chat_id) = edit.route.chat_id.parse::<i64>() else {
            return EditOutcome::Failed(format!(
                "`{}` is not a telegram chat id",
                edit.route.chat_id
            ));
        };
        let Ok(message_id) = edit.message_id.parse::<i32>() else {
            return EditOutcome::Failed(format!(
                "`{}` is not a telegram message id",
                edit.message_id
            ));
        };
        // No thread id: a chat and a message id name the message, in a forum topic too. The
        // keyboard is always sent, empty to remove the buttons: whether leaving it out keeps
        // or drops them is not settled, and this way it does not matter.
        let request = self
            .sender
            .edit_message_text(ChatId(chat_id), MessageId(message_id), edit.text)
            .link_preview_options(no_preview())
            .reply_markup(keyboard(edit.buttons).unwrap_or_default());
        match request.await {
            Ok(_) => EditOutcome::Edited,
            Err(error) => classify_edit(&error, self.config.token.expose()),
        }
    }

    /// `getMe` and `getWebhookInfo` with the sending bot (`check.rs`).
    async fn check(&self) -> CheckOutcome {
        crate::check::check(
            &self.sender,
            self.config.token.expose(),
            &self.config.api_url,
        )
        .await
    }

    async fn run_inbound(
        &self,
        sink: Arc<dyn InboundSink>,
        stop: CancellationToken,
    ) -> Result<(), ChannelError> {
        let token = self.config.token.expose();
        let me = match inbound::identify(&self.poller, token, &stop).await {
            Ok(Some(me)) => me,
            Ok(None) => return Ok(()),
            Err(error) => return Err(ChannelError::Config(error.to_string())),
        };
        inbound::remove_webhook(&self.poller, token).await;
        inbound::register_commands(
            &self.sender,
            &me,
            &self.config.commands,
            sink.as_ref(),
            token,
        )
        .await;
        inbound::poll(
            self.poller.clone(),
            self.sender.clone(),
            me,
            sink,
            self.config.poll_timeout,
            token.to_string(),
            stop,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execrelay_channel::Secret;
    use teloxide::types::Seconds;

    const TOKEN: &str = "123456:AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao";

    #[test]
    fn errors_map_to_the_contract() {
        let retry = classify(&RequestError::RetryAfter(Seconds::from_seconds(3)), TOKEN);
        assert_eq!(retry, SendOutcome::RetryAfter(Duration::from_secs(3)));
        let moved = classify(&RequestError::MigrateToChatId(ChatId(-100777)), TOKEN);
        assert_eq!(
            moved,
            SendOutcome::ChatMigrated {
                chat_id: "-100777".into()
            }
        );
        for permanent in [
            ApiError::BotBlocked,
            ApiError::ChatNotFound,
            ApiError::MessageIsTooLong,
        ] {
            assert!(
                matches!(
                    classify(&RequestError::Api(permanent.clone()), TOKEN),
                    SendOutcome::Permanent(_)
                ),
                "{permanent:?}"
            );
        }
        let bad = ApiError::Unknown("Bad Request: something new".into());
        assert!(matches!(
            classify(&RequestError::Api(bad), TOKEN),
            SendOutcome::Permanent(_)
        ));
        let unparameterised = ApiError::Unknown("Too Many Requests: retry after 7".into());
        assert_eq!(
            classify(&RequestError::Api(unparameterised), TOKEN),
            SendOutcome::RetryAfter(Duration::from_secs(7))
        );
        for server in ["Internal Server Error", "Bad Gateway", "Too Many Requests"] {
            let error = RequestError::Api(ApiError::Unknown(server.into()));
            assert!(
                matches!(classify(&error, TOKEN), SendOutcome::Transient(_)),
                "{server}"
            );
        }
        let token = classify(&RequestError::Api(ApiError::InvalidToken), TOKEN);
        assert!(matches!(token, SendOutcome::Transient(_)));
    }

    #[test]
    fn edit_errors_map_to_the_contract() {
        let edit = |error: RequestError| classify_edit(&error, TOKEN);
        let not_modified = ApiError::Unknown("Bad Request: message is not modified".into());
        assert_eq!(
            edit(RequestError::Api(ApiError::MessageNotModified)),
            EditOutcome::Edited
        );
        assert_eq!(
            edit(RequestError::Api(not_modified)),
            EditOutcome::Edited,
            "the short form, which teloxide does not know"
        );
        assert_eq!(
            edit(RequestError::RetryAfter(Seconds::from_seconds(5))),
            EditOutcome::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            edit(RequestError::RetryAfter(Seconds::from_seconds(1_000_000))),
            EditOutcome::RetryAfter(MAX_RETRY_AFTER),
            "capped"
        );
        let unparameterised = ApiError::Unknown("Too Many Requests: retry after 7".into());
        assert_eq!(
            edit(RequestError::Api(unparameterised)),
            EditOutcome::RetryAfter(Duration::from_secs(7))
        );
        for gone in [
            ApiError::MessageToEditNotFound,
            ApiError::MessageCantBeEdited,
            ApiError::MessageIdInvalid,
            ApiError::ChatNotFound,
            ApiError::BotBlocked,
            ApiError::BotKicked,
            ApiError::BotKickedFromSupergroup,
            ApiError::UserDeactivated,
            ApiError::Unknown("Forbidden: bot was kicked from the group chat".into()),
        ] {
            let outcome = edit(RequestError::Api(gone.clone()));
            assert!(
                matches!(outcome, EditOutcome::Gone(_)),
                "{gone:?}: {outcome:?}"
            );
        }
        let migrated = edit(RequestError::MigrateToChatId(ChatId(-100777)));
        assert!(matches!(migrated, EditOutcome::Gone(_)), "{migrated:?}");
        for server in ["Internal Server Error", "Bad Gateway", "Too Many Requests"] {
            let outcome = edit(RequestError::Api(ApiError::Unknown(server.into())));
            assert!(matches!(outcome, EditOutcome::Transient(_)), "{server}");
        }
        let token = edit(RequestError::Api(ApiError::InvalidToken));
        assert!(matches!(token, EditOutcome::Transient(_)), "{token:?}");
        for refused in [
            ApiError::EditedMessageIsTooLong,
            ApiError::ButtonDataInvalid,
            ApiError::Unknown("Bad Request: something new".into()),
        ] {
            let outcome = edit(RequestError::Api(refused.clone()));
            assert!(
                matches!(outcome, EditOutcome::Failed(_)),
                "{refused:?}: {outcome:?}"
            );
        }
    }

    fn button(id: &str, label: &str) -> Button {
        Button {
            id: id.into(),
            label: label.into(),
        }
    }

    #[test]
    fn buttons_are_one_row_of_callback_buttons() {
        let keyboard = keyboard(&[button("t:7f3a9c", "Tail"), button("k:7f3a9c", "Kill")]);
        assert_eq!(
            serde_json::to_value(keyboard).unwrap(),
            serde_json::json!({"inline_keyboard": [[
                {"text": "Tail", "callback_data": "t:7f3a9c"},
                {"text": "Kill", "callback_data": "k:7f3a9c"},
            ]]})
        );
    }

    #[test]
    fn buttons_telegram_would_refuse_are_left_out() {
        let long = "x".repeat(MAX_BUTTON_ID_BYTES + 1);
        let fits = "é".repeat(MAX_BUTTON_ID_BYTES / 2);
        let kept = keyboard(&[
            button("", "Empty"),
            button(&long, "Long"),
            button(&fits, "Fits"),
        ]);
        assert_eq!(
            serde_json::to_value(kept).unwrap(),
            serde_json::json!({"inline_keyboard": [[{"text": "Fits", "callback_data": fits}]]})
        );
        assert!(keyboard(&[]).is_none(), "no buttons, no keyboard");
        assert!(
            keyboard(&[button("", "Empty")]).is_none(),
            "not an empty row: `[[]]` is not \"no keyboard\""
        );
        assert_eq!(
            serde_json::to_value(InlineKeyboardMarkup::default()).unwrap(),
            serde_json::json!({"inline_keyboard": []}),
            "what an edit sends to remove the buttons"
        );
    }

    #[test]
    fn rejects_unusable_config() {
        let mut config = TelegramConfig::new(Secret::new(""));
        assert!(TelegramChannel::new(config.clone()).is_err());
        config.token = Secret::new(TOKEN);
        config.api_url = "not a url".into();
        assert!(TelegramChannel::new(config.clone()).is_err());
        config.api_url = "http://127.0.0.1:9/tg/".into();
        let channel = TelegramChannel::new(config).unwrap();
        assert!(!format!("{channel:?}").contains("g0gYnc"));
    }

    #[tokio::test]
    async fn network_errors_never_show_the_token() {
        // Nothing listens on port 9 of loopback: a connection error naming the request URL.
        // Under a path prefix, so that teloxide's own scrubbing (which expects `/bot<token>`
        // first) misses it and only ours can hide the token.
        let mut config = TelegramConfig::new(Secret::new(TOKEN));
        config.api_url = "http://127.0.0.1:9/tg".into();
        let channel = TelegramChannel::new(config).unwrap();
        let route = execrelay_channel::Route {
            channel: CHANNEL.into(),
            account: String::new(),
            chat_id: "42".into(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type: execrelay_channel::ChatType::Direct,
        };
        let outcome = channel
            .send(OutboundChunk {
                route: &route,
                text: "hi",
                idempotency_key: "k",
                index: 0,
                count: 1,
                buttons: &[],
            })
            .await;
        let SendOutcome::Transient(error) = outcome else {
            panic!("expected a transient error, got {outcome:?}")
        };
        assert!(
            !error.contains("g0gYnc") && !error.contains(TOKEN),
            "{error}"
        );
    }
}
