//! Outbound: one `POST /channels/{id}/messages` per chunk (the last one with its buttons), its
//! result classified for the relay's outbox; one `PATCH` per edit (bodies and classification in
//! `edit.rs`); and the [`Channel`] that ties the gateway, sending and editing together.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::CHANNEL;
use crate::backfill::{SAVE_EVERY, Tracker};
use crate::config::DiscordConfig;
use crate::edit::{classify_edit, components, edit_body};
use crate::errors::{DiscordError, redact};
use crate::inbound::Handler;
use crate::rest::{Rest, http_client};
use execrelay_channel::{
    CancellationToken, Channel, ChannelError, CheckOutcome, Edit, EditOutcome, InboundSink,
    OutboundChunk, SendOutcome, TextLimit, TextUnit,
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

/// A Discord answer's body, parsed once: what `classify` and `classify_edit` read.
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    retry_after_header: Option<&'a str>,
    body: &'a [u8],
    pub(crate) parsed: Option<Value>,
}

impl<'a> Answer<'a> {
    pub(crate) fn new(status: u16, retry_after_header: Option<&'a str>, body: &'a [u8]) -> Self {
        Answer {
            status,
            retry_after_header,
            body,
            parsed: serde_json::from_slice(body).ok(),
        }
    }

    /// Discord's JSON error code (`{"code": 10008, …}`), if the body has one.
    pub(crate) fn code(&self) -> Option<i64> {
        self.parsed
            .as_ref()
            .and_then(|error| error["code"].as_i64())
    }

    /// `HTTP {status}: {message} (code {code})`, or an excerpt of a body that is not JSON.
    pub(crate) fn describe(&self) -> String {
        let detail = match &self.parsed {
            Some(error) => match (error["message"].as_str(), error["code"].as_i64()) {
                (Some(message), Some(code)) => format!(": {message} (code {code})"),
                (Some(message), None) => format!(": {message}"),
                _ => String::new(),
            },
            None => {
                let text = String::from_utf8_lossy(self.body);
                let excerpt: String = text.chars().take(ERROR_BODY_CHARS).collect();
                if excerpt.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", excerpt.trim())
                }
            }
        };
        format!("HTTP {}{detail}", self.status)
    }

    /// How long a 429 asks to wait: the body's `retry_after` (seconds, fractional), else the
    /// `Retry-After` header, else [`DEFAULT_RETRY_AFTER`]; at most [`MAX_RETRY_AFTER`].
    pub(crate) fn retry_after(&self) -> Duration {
        let from_body = self
            .parsed
            .as_ref()
            .and_then(|error| error["retry_after"].as_f64());
        let from_header = self
            .retry_after_header
            .and_then(|value| value.trim().parse::<f64>().ok());
        from_body
            .or(from_header)
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map_or(DEFAULT_RETRY_AFTER, |secs| {
                Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
            })
    }
}

/// What the outbox should do after a `POST /channels/{id}/messages` answered `status`.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> SendOutcome {
    let answer = Answer::new(status, retry_after_header, body);
    match status {
        200..=299 => SendOutcome::Delivered {
            platform_id: answer
                .parsed
                .as_ref()
                .and_then(|message| message["id"].as_str())
                .map(str::to_string),
        },
        429 => SendOutcome::RetryAfter(answer.retry_after()),
        // Our configuration, not the message, is wrong: keep it until the token is fixed.
        401 => SendOutcome::Transient(format!(
            "{}; check channels.discord.token",
            answer.describe()
        )),
        408 | 500..=599 => SendOutcome::Transient(answer.describe()),
        _ => SendOutcome::Permanent(answer.describe()),
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

/// The body of a chunk's `POST /channels/{id}/messages`. Buttons (only on a message's last
/// chunk) become components; without them the body has no `components` at all.
fn message_body(chunk: &OutboundChunk<'_>) -> Value {
    let mut body = json!({
        "content": chunk.text,
        "nonce": nonce_for(chunk.idempotency_key),
        "enforce_nonce": true,
        // Command output must never ping @everyone, roles or users.
        "allowed_mentions": {"parse": []},
    });
    if let Some(message_id) = &chunk.route.reply_to_message_id
        && chunk.index == 0
    {
        body["message_reference"] = json!({
            "message_id": message_id,
            "fail_if_not_exists": false,
        });
    }
    if !chunk.buttons.is_empty() {
        body["components"] = components(chunk.buttons);
    }
    body
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

    /// `GET /users/@me` and the application's Message Content flags (`check.rs`).
    async fn check(&self) -> CheckOutcome {
        crate::check::check(&self.rest, &self.config.api_base).await
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        let route = chunk.route;
        // A thread's messages go to the thread; the route's chat is its parent channel.
        let target = route.thread_id.as_deref().unwrap_or(&route.chat_id);
        let Ok(channel_id) = target.parse::<u64>() else {
            return SendOutcome::Permanent(format!("`{target}` is not a discord channel id"));
        };
        let mut body = message_body(&chunk);
        let mut outcome = self.post(channel_id, &body).await;
        if cannot_reply(&outcome) && body.get("message_reference").is_some() {
            // Without Read Message History a reply is refused; the message itself is not.
            body.as_object_mut()
                .map(|fields| fields.remove("message_reference"));
            outcome = self.post(channel_id, &body).await;
        }
        outcome
    }

    async fn edit(&self, edit: Edit<'_>) -> EditOutcome {
        let route = edit.route;
        // The message lives where it was sent: in the thread, if the route has one.
        let target = route.thread_id.as_deref().unwrap_or(&route.chat_id);
        let Ok(channel_id) = target.parse::<u64>() else {
            return EditOutcome::Failed(format!("`{target}` is not a discord channel id"));
        };
        let Ok(message_id) = edit.message_id.parse::<u64>() else {
            return EditOutcome::Failed(format!(
                "`{}` is not a discord message id",
                edit.message_id
            ));
        };
        let body = edit_body(edit.text, edit.buttons);
        match self.rest.edit_message(channel_id, message_id, &body).await {
            Ok(reply) => classify_edit(
                reply.status,
                reply.retry_after_header.as_deref(),
                &reply.body,
            ),
            Err(error) => EditOutcome::Transient(redact(&error, self.config.token.expose())),
        }
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
    fn only_a_chunk_with_buttons_carries_components() {
        let route = execrelay_channel::Route {
            channel: CHANNEL.into(),
            account: "900".into(),
            chat_id: "200".into(),
            thread_id: None,
            reply_to_message_id: Some("1001".into()),
            chat_type: execrelay_channel::ChatType::Direct,
        };
        let buttons = [execrelay_channel::Button {
            id: "k:7f3a9c".into(),
            label: "Kill".into(),
        }];
        let mut chunk = OutboundChunk {
            route: &route,
            text: "started job 7f3a9c: make",
            idempotency_key: "abcd1f.0",
            index: 0,
            count: 1,
            buttons: &[],
        };
        let plain = message_body(&chunk);
        assert_eq!(
            plain,
            json!({"content": "started job 7f3a9c: make", "nonce": "abcd1f.0",
                   "enforce_nonce": true, "allowed_mentions": {"parse": []},
                   "message_reference": {"message_id": "1001", "fail_if_not_exists": false}}),
            "a send without buttons is what it was before buttons existed"
        );
        chunk.buttons = &buttons;
        let with_buttons = message_body(&chunk);
        assert_eq!(
            with_buttons["components"][0]["components"][0]["custom_id"],
            "k:7f3a9c"
        );
        assert_eq!(with_buttons["content"], plain["content"]);
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
