//! The credential check `execrelay doctor` runs ([`Channel::check`](execrelay_channel::Channel::check)):
//! `getMe` says the token works, and `getWebhookInfo` that no webhook is set on it, since the
//! relay polls (`getUpdates`) and deletes any webhook when it starts: whatever received this
//! bot's updates through it would stop getting them.

use execrelay_channel::CheckOutcome;
use teloxide::prelude::Requester;
use teloxide::{ApiError, Bot, RequestError};

use crate::errors::redact;

/// `getMe`, then `getWebhookInfo`, each once; the first that fails says what to do.
pub(crate) async fn check(bot: &Bot, token: &str, api_url: &str) -> CheckOutcome {
    let failed = |problem: String, fix: &str| CheckOutcome::Failed {
        problem,
        fix: fix.to_string(),
    };
    let me = match bot.get_me().await {
        Ok(me) => me,
        Err(RequestError::Api(ApiError::InvalidToken)) => {
            return failed(
                "getMe: the Bot API refused the bot token (401 Unauthorized)".into(),
                "set channels.telegram.token (or token_file, or EXECRELAY_TELEGRAM_TOKEN) to \
                 the token @BotFather gave this bot",
            );
        }
        Err(error) => {
            return failed(
                format!("getMe failed: {}", redact(&error.to_string(), token)),
                &format!(
                    "check that this machine reaches {} (channels.telegram.api_url), or try \
                     again if Telegram was down",
                    host_of(api_url)
                ),
            );
        }
    };
    let name = me.user.username.clone().unwrap_or_default();
    match bot.get_webhook_info().await {
        Ok(info) => match info.url {
            None => CheckOutcome::Ok(format!(
                "getMe: @{name} (id {}); no webhook set, so polling works",
                me.user.id.0
            )),
            Some(url) => failed(
                format!(
                    "a webhook is set on @{name}'s token (to {}): this relay polls, and deletes \
                     it when it starts, so whatever receives updates there stops getting them",
                    url.host_str().unwrap_or("?")
                ),
                "give this relay a bot of its own (@BotFather /newbot), or, if nothing uses \
                 that webhook any more, delete it (deleteWebhook) or just start the relay",
            ),
        },
        Err(error) => CheckOutcome::Warn {
            problem: format!(
                "getMe works (@{name}), but getWebhookInfo failed: {}",
                redact(&error.to_string(), token)
            ),
            fix: "run doctor again; if it keeps failing, check the Bot API's status".into(),
        },
    }
}

/// The scheme and host of `url`, never its path (which, for the Bot API, holds the token).
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "the Bot API".to_string(),
        |url| format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    )
}
