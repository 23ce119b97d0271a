//! The credential check `execrelay doctor` runs ([`Channel::check`](execrelay_channel::Channel::check)):
//! `GET /users/@me` says the token works, and `GET /applications/@me` whether the Message
//! Content intent is on. The relay's gateway session asks for it; without it Discord closes
//! the session (4014, disallowed intents) and nothing is received at all.

use execrelay_channel::CheckOutcome;
use serde::Deserialize;

use crate::rest::Rest;

/// The application flag of the Message Content intent for a verified bot (in 100 or more
/// servers, after Discord approved it) ...
pub const GATEWAY_MESSAGE_CONTENT: u64 = 1 << 18;
/// ... and for a bot in fewer than 100 servers, where the toggle alone turns it on.
pub const GATEWAY_MESSAGE_CONTENT_LIMITED: u64 = 1 << 19;

#[derive(Deserialize)]
struct Me {
    id: String,
    username: String,
}

#[derive(Deserialize)]
struct Application {
    #[serde(default)]
    flags: u64,
}

/// The two calls, each once; the first that fails says what to do.
pub(crate) async fn check(rest: &Rest, api_base: &str) -> CheckOutcome {
    let failed = |problem: String, fix: String| CheckOutcome::Failed { problem, fix };
    let unreachable = |what: &str, error: String| {
        failed(
            format!("GET {what} failed: {error}"),
            format!(
                "check that this machine reaches {} (channels.discord.api_base), or try again \
                 if Discord was down",
                host_of(api_base)
            ),
        )
    };
    let me = match rest.get("/users/@me").await {
        Err(error) => return unreachable("/users/@me", error),
        Ok(reply) if reply.status == 401 => {
            return failed(
                "GET /users/@me: Discord refused the bot token (401 Unauthorized)".into(),
                "set channels.discord.token (or token_file, or EXECRELAY_DISCORD_TOKEN) to the \
                 bot's token (Developer Portal → your application → Bot → Reset Token)"
                    .into(),
            );
        }
        Ok(reply) if !(200..300).contains(&reply.status) => {
            return unreachable("/users/@me", format!("HTTP {}", reply.status));
        }
        Ok(reply) => match serde_json::from_slice::<Me>(&reply.body) {
            Ok(me) => me,
            Err(error) => return unreachable("/users/@me", format!("unreadable answer: {error}")),
        },
    };
    let bot = format!("{} (id {})", me.username, me.id);
    let flags = match rest.get("/applications/@me").await {
        Ok(reply) if (200..300).contains(&reply.status) => {
            match serde_json::from_slice::<Application>(&reply.body) {
                Ok(application) => application.flags,
                Err(error) => {
                    return unreachable("/applications/@me", format!("unreadable answer: {error}"));
                }
            }
        }
        Ok(reply) => {
            return CheckOutcome::Warn {
                problem: format!(
                    "the token works ({bot}), but GET /applications/@me answered HTTP {}, so \
                     whether the Message Content intent is on is unknown",
                    reply.status
                ),
                fix: "check Developer Portal → your application → Bot → Privileged Gateway \
                      Intents: Message Content Intent must be on"
                    .into(),
            };
        }
        Err(error) => return unreachable("/applications/@me", error),
    };
    if flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED) == 0 {
        return failed(
            format!(
                "the Message Content intent is off for {bot}: Discord refuses the relay's \
                 gateway session (it asks for the intent), so no message reaches it"
            ),
            "turn on Developer Portal → your application → Bot → Privileged Gateway Intents → \
             Message Content Intent (a bot in 100 or more servers needs Discord's approval)"
                .into(),
        );
    }
    CheckOutcome::Ok(format!(
        "GET /users/@me: {bot}; the Message Content intent is on"
    ))
}

/// The scheme and host of `url`.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "Discord".to_string(),
        |url| format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    )
}
