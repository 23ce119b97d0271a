//! Outbound: one `POST /channels/{id}/messages` per chunk, its result classified for the
//! relay's outbox; and the [`Channel`] that ties the gateway and sending together.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::CHANNEL;
use crate::backfill::{SAVE_EVERY, Tracker};
use crate::config::DiscordConfig;
use crate::errors::{DiscordError, redact};
use crate::inbound::Handler;
use crate::rest::{Rest, http_client};
use execrelay_channel::{
    CancellationToken, Channel, ChannelError, InboundSink, OutboundChunk, SendOutcome, TextLimit,
    TextUnit,
};
use serde_json::{Value, json};
use serenity::all::{ClientBuilder, GatewayIntents, HttpBuilder};

/// 2000 characters per message.
pub const DISCORD_LIMIT: TextLimit = TextLimit {
    unit: TextUnit::Chars,
    max: 2000,
};

/// Discord accepts nonces of at most 25 characters.
const MAX_NONCE: usize = 25;
/// Used when a 429 carries neither `retry_after` nor `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long the shard gets to close its session at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How much of an error body goes into the delivery's last error.
const ERROR_BODY_CHARS: usize = 200;

/// Discord as a [`Channel`]. `Debug` prints no token.
pub struct DiscordChannel {
    config: DiscordConfig,
    rest: Arc<Rest>,
    client: reqwest::Client,
}

impl fmt::Debug for DiscordChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DiscordChannel {
    /// Builds the channel. Fails on an empty token or a base URL that is not absolute http(s).
    pub fn new(config: DiscordConfig) -> Result<Self, DiscordError> {
        if config.token.is_empty() {
            return Err(DiscordError::Config("the bot token is empty".into()));
        }
        match reqwest::Url::parse(&config.api_base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base() => {}
            _ => {
                return Err(DiscordError::Config(
                    "api_base must be an absolute http:// or https:// URL".into(),
                ));
            }
        }
        let client = http_client()?;
        let rest = Arc::new(Rest::new(client.clone(), &config.api_base, &config.token));
        Ok(DiscordChannel {
            config,
            rest,
            client,
        })
    }

    /// Asks for the gateway URL until it answers (or `stop` fires).
    async fn gateway_url(&self, stop: &CancellationToken) -> Option<String> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.rest.gateway_url().await {
                Ok(url) => return Some(url),
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "discord gateway discovery failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A nonce for chunk `idempotency_key`: the same on every retry of that chunk, at most 25
/// characters (the key's end is its unique part).
pub fn nonce_for(idempotency_key: &str) -> &str {
    execrelay_channel::key_within(idempotency_key, MAX_NONCE)
}

/// What the outbox should do after a `POST /channels/{id}/messages` answered `status`.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> SendOutcome {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let describe = || {
        let detail = match &parsed {
            Some(error) => match (error["message"].as_str(), error["code"].as_i64()) {
                (Some(message), Some(code)) => format!(": {message} (code {code})"),
                (Some(message), None) => format!(": {message}"),
                _ => String::new(),
            },
            None => {
                let text = String::from_utf8_lossy(body);
                let excerpt: String = text.chars().take(ERROR_BODY_CHARS).collect();
                if excerpt.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", excerpt.trim())
                }
            }
        };
        format!("HTTP {status}{detail}")
    };
    match status {
        200..=299 => SendOutcome::Delivered {
            platform_id: parsed
                .as_ref()
                .and_then(|message| message["id"].as_str())
                .map(str::to_string),
        },
        429 => {
            let from_body = parsed
                .as_ref()
                .and_then(|error| error["retry_after"].as_f64());
            let from_header = retry_after_header.and_then(|value| value.trim().parse::<f64>().ok());
            let wait = from_body
                .or(from_header)
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map_or(DEFAULT_RETRY_AFTER, |secs| {
                    Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
                });
            SendOutcome::RetryAfter(wait)
        }
        // Our configuration, not the message, is wrong: keep it until the token is fixed.
        401 => SendOutcome::Transient(format!("{}; check channels.discord.token", describe())),
        408 | 500..=599 => SendOutcome::Transient(describe()),
        _ => SendOutcome::Permanent(describe()),
    }
}

impl DiscordChannel {
    async fn post(&self, channel_id: u64, body: &Value) -> SendOutcome {
        match self.rest.post_message(channel_id, body).await {
            Ok(reply) => classify(
                reply.status,
                reply.retry_after_header.as_deref(),
                &reply.body,
            ),
            Err(error) => SendOutcome::Transient(redact(&error, self.config.token.expose())),
        }
    }
}

/// Discord refused a reply because the bot may not read the message it replies to (codes
/// 160002 and 160009).
fn cannot_reply(outcome: &SendOutcome) -> bool {
    matches!(outcome, SendOutcome::Permanent(error)
        if error.contains("(code 160002)") || error.contains("(code 160009)"))
}

/// What a person should do about a gateway that closed for good.
fn gateway_hint(error: &str) -> &'static str {
    if error.contains("Disallowed") || error.contains("intents") {
        "; enable the Message Content intent for the bot in the Discord Developer Portal"
    } else if error.contains("Authentication") || error.contains("token") {
        "; check channels.discord.token"
    } else {
        ""
    }
}

#[async_trait::async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &str {
        CHANNEL
    }

    fn limit(&self) -> TextLimit {
        DISCORD_LIMIT
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        let route = chunk.route;
        // A thread's messages go to the thread; the route's chat is its parent channel.
        let target = route.thread_id.as_deref().unwrap_or(&route.chat_id);
        let Ok(channel_id) = target.parse::<u64>() else {
            return SendOutcome::Permanent(format!("`{target}` is not a discord channel id"));
        };
        let mut body = json!({
            "content": chunk.text,
            "nonce": nonce_for(chunk.idempotency_key),
            "enforce_nonce": true,
            // Command output must never ping @everyone, roles or users.
            "allowed_mentions": {"parse": []},
        });
        if let Some(message_id) = &route.reply_to_message_id
            && chunk.index == 0
        {
            body["message_reference"] = json!({
                "message_id": message_id,
                "fail_if_not_exists": false,
            });
        }
        let mut outcome = self.post(channel_id, &body).await;
        if cannot_reply(&outcome) && body.get("message_reference").is_some() {
            // Without Read Message History a reply is refused; the message itself is not.
            body.as_object_mut()
                .map(|fields| fields.remove("message_reference"));
            outcome = self.post(channel_id, &body).await;
        }
        outcome
    }

    async fn run_inbound(
        &self,
        sink: Arc<dyn InboundSink>,
        stop: CancellationToken,
    ) -> Result<(), ChannelError> {
        let token = self.config.token.expose();
        let Some(gateway) = self.gateway_url(&stop).await else {
            return Ok(());
        };
        // Rate limiter off: with it on, serenity ignores the base URL and talks to the real
        // Discord. Our outbox handles 429s for what we send; serenity's own REST use is tiny.
        let http = HttpBuilder::new(token)
            .client(self.client.clone())
            .proxy(self.config.api_base.trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build();
        let intents = GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let tracker = Arc::new(Tracker::new(sink.clone()));
        let handler = Handler::new(
            sink,
            self.rest.clone(),
            self.config.require_mention,
            stop.clone(),
            tracker.clone(),
        );
        // serenity asks for the gateway itself while building; that must not outlast a stop.
        let built = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            built = ClientBuilder::new_with_http(http, intents).event_handler(handler) => built,
        };
        let mut client =
            built.map_err(|error| ChannelError::Config(redact(&error.to_string(), token)))?;
        // Ours, not serenity's fallback: a failed discovery must never reach the real gateway.
        *client.ws_url.lock().await = gateway;
        let shards = client.shard_manager.clone();
        let saver = tokio::spawn(keep_saving(tracker.clone(), stop.clone()));
        let mut session = tokio::spawn(async move { client.start().await });
        tracing::info!("discord gateway client started");
        let ended = tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, shards.shutdown_all()).await;
                session.abort();
                tracing::info!("discord gateway client stopped");
                Ok(())
            }
            ended = &mut session => match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => {
                    let text = redact(&error.to_string(), token);
                    let hint = gateway_hint(&text);
                    Err(ChannelError::Config(DiscordError::Gateway(format!("{text}{hint}")).to_string()))
                }
                Err(error) => Err(ChannelError::Io(format!("the discord client task failed: {error}"))),
            },
        };
        saver.abort();
        // What moved since the last write, including messages not stored yet, for the next
        // start's backfill.
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.save())
            .await
            .is_err()
        {
            tracing::warn!("cannot save the discord backfill points in time");
        }
        ended
    }
}

/// Writes the backfill points every [`SAVE_EVERY`] when they changed, rather than once per
/// message: after a crash the backfill fetches a few again, and dedupe drops them.
async fn keep_saving(tracker: Arc<Tracker>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAVE_EVERY) => {}
        }
        tracker.save().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execrelay_channel::Secret;

    #[test]
    fn refused_replies_and_fatal_closes_are_recognised() {
        let refused = classify(403, None, br#"{"message":"Cannot reply without permission to read message history","code":160002}"#);
        assert!(cannot_reply(&refused));
        assert!(!cannot_reply(&classify(
            403,
            None,
            br#"{"message":"Missing Access","code":50001}"#
        )));
        assert!(
            gateway_hint("Disallowed gateway intents were provided").contains("Message Content")
        );
        assert!(gateway_hint("Authentication failed").contains("token"));
        assert_eq!(gateway_hint("something else"), "");
    }

    #[test]
    fn nonces_are_stable_and_short() {
        assert_eq!(nonce_for("abcd1f.0"), "abcd1f.0");
        let long = "abcd".to_string() + &"f".repeat(30) + ".12";
        let nonce = nonce_for(&long);
        assert_eq!(nonce.chars().count(), 25);
        assert!(nonce.ends_with(".12"));
        assert_eq!(nonce, nonce_for(&long));
    }

    #[test]
    fn responses_map_to_the_contract() {
        let ok = classify(200, None, br#"{"id":"77","content":"hi"}"#);
        assert_eq!(
            ok,
            SendOutcome::Delivered {
                platform_id: Some("77".into())
            }
        );
        let limited =
            br#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#;
        assert_eq!(
            classify(429, Some("9"), limited),
            SendOutcome::RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            classify(429, Some("2"), b""),
            SendOutcome::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            classify(429, None, b"{}"),
            SendOutcome::RetryAfter(DEFAULT_RETRY_AFTER)
        );
        for status in [500, 502, 503, 408, 401] {
            assert!(
                matches!(classify(status, None, b""), SendOutcome::Transient(_)),
                "{status}"
            );
        }
        let missing = classify(403, None, br#"{"message":"Missing Access","code":50001}"#);
        assert_eq!(
            missing,
            SendOutcome::Permanent("HTTP 403: Missing Access (code 50001)".into())
        );
        let unknown = classify(404, None, br#"{"message":"Unknown Channel","code":10003}"#);
        assert!(matches!(unknown, SendOutcome::Permanent(_)));
        let too_long = classify(
            400,
            None,
            br#"{"message":"Invalid Form Body","code":50035}"#,
        );
        assert!(matches!(too_long, SendOutcome::Permanent(_)));
    }

    #[test]
    fn rejects_unusable_config_and_hides_the_token() {
        let mut config = DiscordConfig::new(Secret::new(""));
        assert!(DiscordChannel::new(config.clone()).is_err());
        config.token = Secret::new("MTAxNTQ.secret-token-value");
        config.api_base = "discord.com".into();
        assert!(DiscordChannel::new(config.clone()).is_err());
        config.api_base = "http://127.0.0.1:9".into();
        let channel = DiscordChannel::new(config).unwrap();
        assert!(!format!("{channel:?}").contains("secret-token-value"));
    }
}
