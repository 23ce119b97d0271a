//! Our own calls to Discord's REST API (base URL + `/api/v10`), with the bot token: gateway
//! discovery, thread lookups, message posts and edits, the backfill's message history, and the
//! answers to button presses (interaction callbacks).
//!
//! An interaction callback's path carries the interaction's token, a credential for 15
//! minutes: no URL of a request made here is ever logged or put in an error text
//! ([`Rest::describe`] strips it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use execrelay_channel::Secret;
use serde::Deserialize;

use crate::errors::DiscordError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Remembered channel kinds; cleared when full (a lookup is cheap, memory is not unbounded).
const MAX_KNOWN_CHANNELS: usize = 10_000;

const LOOKUP_ATTEMPTS: u32 = 3;
/// A guess stands this long: a message replayed on a resumed session (seconds later) must map
/// to the same chat, or the relay's dedupe (keyed by chat) would see a new message.
const GUESS_STANDS: Duration = Duration::from_secs(600);
const LOOKUP_PAUSE: Duration = Duration::from_millis(300);
/// The longest 429 a lookup sits out before its next attempt; past it, it guesses at once.
const MAX_LOOKUP_WAIT: Duration = Duration::from_secs(10);

/// Discord's channel types for threads (announcement, public, private).
const THREAD_TYPES: [u8; 3] = [10, 11, 12];

/// What we know of a channel: its parent if it is a thread, and since when that is a guess.
type Known = (Option<u64>, Option<Instant>);

pub(crate) struct Rest {
    client: reqwest::Client,
    api: String,
    authorization: String,
    /// Channel id → its parent when the channel is a thread (`None`: not a thread), and when
    /// that was a guess after failed lookups.
    parents: Mutex<HashMap<u64, Known>>,
}

#[derive(Deserialize)]
struct ChannelInfo {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    parent_id: Option<String>,
}

/// A REST response, read whole (message bodies are small).
pub(crate) struct Reply {
    pub status: u16,
    pub retry_after_header: Option<String>,
    pub body: Vec<u8>,
}

/// A reqwest client that ignores ambient proxy variables: bot traffic (and a test's loopback
/// fake) must not be rerouted.
pub(crate) fn http_client() -> Result<reqwest::Client, DiscordError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!(
            "DiscordBot (https://github.com/execrelay, ",
            env!("CARGO_PKG_VERSION"),
            ")"
        ))
        .build()
        .map_err(|error| DiscordError::Config(format!("cannot build the HTTP client: {error}")))
}

impl Rest {
    pub(crate) fn new(client: reqwest::Client, base: &str, token: &Secret) -> Rest {
        Rest {
            client,
            api: format!("{}/api/v10", base.trim_end_matches('/')),
            authorization: format!("Bot {}", token.expose()),
            parents: Mutex::new(HashMap::new()),
        }
    }

    /// A network error's text, without the URL: a channel's is harmless, but an interaction
    /// callback's carries the interaction token; and the outbox's last error should say what
    /// failed, not where.
    fn describe(error: reqwest::Error) -> String {
        use std::error::Error as _;
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    async fn read(request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let response = request.send().await.map_err(Self::describe)?;
        let status = response.status().as_u16();
        let retry_after_header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(Self::describe)?.to_vec();
        Ok(Reply {
            status,
            retry_after_header,
            body,
        })
    }

    /// `GET /gateway`: the WebSocket URL to connect to.
    pub(crate) async fn gateway_url(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Gateway {
            url: String,
        }
        let request = self
            .client
            .get(format!("{}/gateway", self.api))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        let reply = Self::read(request).await?;
        if !(200..300).contains(&reply.status) {
            return Err(format!("GET /gateway answered HTTP {}", reply.status));
        }
        serde_json::from_slice::<Gateway>(&reply.body)
            .map(|gateway| gateway.url)
            .map_err(|error| format!("GET /gateway: {error}"))
    }

    /// `GET {path}` (under `/api/v10`), for the credential check: `/users/@me`,
    /// `/applications/@me`.
    pub(crate) async fn get(&self, path: &str) -> Result<Reply, String> {
        let request = self
            .client
            .get(format!("{}{path}", self.api))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        Self::read(request).await
    }

    /// `POST /channels/{id}/messages` with `body`.
    pub(crate) async fn post_message(
        &self,
        channel_id: u64,
        body: &serde_json::Value,
    ) -> Result<Reply, String> {
        let request = self
            .client
            .post(format!("{}/channels/{channel_id}/messages", self.api))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .json(body);
        Self::read(request).await
    }

    /// `PATCH /channels/{id}/messages/{message}` with `body`: the message's new content and
    /// components.
    pub(crate) async fn edit_message(
        &self,
        channel_id: u64,
        message_id: u64,
        body: &serde_json::Value,
    ) -> Result<Reply, String> {
        let request = self
            .client
            .patch(format!(
                "{}/channels/{channel_id}/messages/{message_id}",
                self.api
            ))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .json(body);
        Self::read(request).await
    }

    /// `POST /interactions/{id}/{token}/callback` with `body`: the first (and only) answer to
    /// a button press, bounded by `timeout` (Discord gives 3 s, far below the client's
    /// default). The token in the path authorizes it; the bot's header is harmless.
    pub(crate) async fn interaction_callback(
        &self,
        interaction_id: u64,
        token: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let request = self
            .client
            .post(format!(
                "{}/interactions/{interaction_id}/{token}/callback",
                self.api
            ))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .timeout(timeout)
            .json(body);
        Self::read(request).await
    }

    /// `GET /channels/{id}/messages?after={after}&limit={limit}`: the `limit` messages that
    /// follow `after`, newest first (as Discord answers).
    pub(crate) async fn messages_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: u8,
    ) -> Result<Reply, String> {
        let request = self
            .client
            .get(format!(
                "{}/channels/{channel_id}/messages?after={after}&limit={limit}",
                self.api
            ))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        Self::read(request).await
    }

    fn remember(&self, channel_id: u64, parent: Option<u64>, guessed: Option<Instant>) {
        if let Ok(mut known) = self.parents.lock() {
            if known.len() >= MAX_KNOWN_CHANNELS {
                known.clear();
            }
            known.insert(channel_id, (parent, guessed));
        }
    }

    /// The parent channel of `channel_id` if it is a thread. Looked up once per channel (with
    /// a few retries, a 429's `retry_after` waited out up to [`MAX_LOOKUP_WAIT`]); a lookup that keeps failing counts as "not a thread" for a while: the
    /// message still runs, and its replies land where it was posted.
    pub(crate) async fn thread_parent(&self, channel_id: u64) -> Option<u64> {
        if let Ok(known) = self.parents.lock()
            && let Some((parent, guessed)) = known.get(&channel_id)
            && guessed.is_none_or(|at| at.elapsed() < GUESS_STANDS)
        {
            return *parent;
        }
        let mut info = None;
        let mut pause = None;
        for attempt in 0..LOOKUP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(pause.take().unwrap_or(LOOKUP_PAUSE * attempt)).await;
            }
            let request = self
                .client
                .get(format!("{}/channels/{channel_id}", self.api))
                .header(reqwest::header::AUTHORIZATION, &self.authorization);
            match Self::read(request).await {
                Ok(reply) if (200..300).contains(&reply.status) => {
                    info = serde_json::from_slice::<ChannelInfo>(&reply.body).ok();
                    break;
                }
                Ok(reply) if reply.status == 429 => {
                    let wait = match crate::outbound::classify(
                        429,
                        reply.retry_after_header.as_deref(),
                        &reply.body,
                    ) {
                        execrelay_channel::SendOutcome::RetryAfter(wait) => wait,
                        _ => LOOKUP_PAUSE,
                    };
                    tracing::warn!(
                        channel_id,
                        retry_after_ms = wait.as_millis() as u64,
                        "discord channel lookup rate-limited"
                    );
                    if wait > MAX_LOOKUP_WAIT {
                        break;
                    }
                    pause = Some(wait);
                }
                Ok(reply) => tracing::warn!(
                    channel_id,
                    status = reply.status,
                    "cannot look up a discord channel"
                ),
                Err(error) => {
                    tracing::warn!(channel_id, error = %error, "cannot look up a discord channel")
                }
            }
        }
        let Some(info) = info else {
            self.remember(channel_id, None, Some(Instant::now()));
            return None;
        };
        let parent = THREAD_TYPES
            .contains(&info.kind)
            .then(|| info.parent_id.and_then(|id| id.parse().ok()))
            .flatten();
        self.remember(channel_id, parent, None);
        parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A channel lookup rate-limited once waits the `retry_after` it is told before asking
    /// again (not its own shorter pause), so that it is not refused again and left guessing.
    #[tokio::test]
    async fn a_rate_limited_lookup_waits_retry_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut asked = Vec::new();
            for answer in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    request.extend_from_slice(&buf[..n]);
                }
                asked.push(Instant::now());
                let (status, body) = if answer == 0 {
                    (
                        "429 Too Many Requests",
                        r#"{"retry_after": 1.0, "global": false}"#,
                    )
                } else {
                    ("200 OK", r#"{"id": "220", "type": 11, "parent_id": "210"}"#)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
            asked
        });
        let rest = Rest::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &Secret::new("test-token-value"),
        );
        assert_eq!(rest.thread_parent(220).await, Some(210));
        let asked = server.await.unwrap();
        let waited = asked[1] - asked[0];
        assert!(
            waited >= Duration::from_millis(900),
            "asked again after {waited:?}"
        );
    }
}
