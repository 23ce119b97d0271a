//! Outbound through the Feishu open API: a cached tenant access token (refreshed once when
//! Feishu refuses it), one `im/v1/messages` call per chunk with `uuid` = the chunk's
//! idempotency key (a text message, or an interactive card when the chunk has buttons), and
//! edits of those cards as `PATCH im/v1/messages/{id}` with the whole new card. Also the
//! channel's entry point for callbacks ([`FeishuChannel::receive`]), which remembers which
//! chats are direct: a card press does not say.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use execrelay_channel::{
    Channel, ChatType, CheckOutcome, Edit, EditOutcome, OutboundChunk, Secret, SendOutcome,
    TextLimit, TextUnit,
};
use reqwest::Method;
use serde_json::{Value, json};

use super::card::card;
use super::config::FeishuConfig;
use super::inbound::{FeishuEvent, FeishuHeaders, receive};
use crate::WebhookError;

/// About 4000 characters a message keeps the body well under 20 KB even for CJK text.
pub const FEISHU_LIMIT: TextLimit = TextLimit {
    unit: TextUnit::Chars,
    max: 4000,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Refresh this long before the token expires (Feishu issues them for about two hours).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(30);
/// Feishu accepts a `uuid` of at most 50 characters.
const MAX_UUID: usize = 50;
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The tenant token is invalid or expired: refresh and send again.
const TOKEN_CODES: [i64; 3] = [99991661, 99991663, 99991668];
const RATE_LIMITED: i64 = 99991400;
/// Too many messages to one chat (im/v1 allows about 5 per second per chat).
const CHAT_RATE_LIMITED: i64 = 230020;
/// The bot is not in the chat (any more).
const BOT_NOT_IN_CHAT: i64 = 230002;
/// The card was recalled.
const RECALLED: i64 = 230011;
/// The card is older than the 14 days updates are allowed for.
const TOO_OLD_TO_UPDATE: i64 = 230031;
/// How many direct chats [`FeishuChannel`] remembers for presses (oldest forgotten first).
const KNOWN_DIRECT_CHATS: usize = 4096;

/// Direct chats seen in messages and in sends with buttons: a `card.action.trigger` carries no
/// chat type, and a press in a chat not known here is taken for a group's, the stricter one.
#[derive(Default)]
struct DirectChats {
    order: VecDeque<String>,
    known: HashSet<String>,
}

impl DirectChats {
    fn remember(&mut self, chat_id: &str) {
        if self.known.contains(chat_id) {
            return;
        }
        if self.order.len() >= KNOWN_DIRECT_CHATS
            && let Some(oldest) = self.order.pop_front()
        {
            self.known.remove(&oldest);
        }
        self.order.push_back(chat_id.to_string());
        self.known.insert(chat_id.to_string());
    }
}

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// The Feishu app as a [`Channel`]. `Debug` prints no secret.
pub struct FeishuChannel {
    config: FeishuConfig,
    client: reqwest::Client,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    direct_chats: std::sync::Mutex<DirectChats>,
}

impl fmt::Debug for FeishuChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A response read whole: Feishu's answers are small JSON documents.
struct Reply {
    status: u16,
    reset_header: Option<String>,
    body: Value,
}

impl Reply {
    fn code(&self) -> Option<i64> {
        self.body["code"].as_i64()
    }

    fn message(&self) -> &str {
        self.body["msg"].as_str().unwrap_or("")
    }

    /// Feishu refused the tenant token, not the request.
    fn token_refused(&self) -> bool {
        self.code().is_some_and(|code| TOKEN_CODES.contains(&code))
    }
}

/// A `x-ogw-ratelimit-reset` header as a wait: seconds, 1 s when missing or unusable, at most
/// an hour.
fn rate_limit_wait(reset: Option<&str>) -> Duration {
    reset
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map_or(DEFAULT_RETRY_AFTER, |secs| {
            Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
        })
}

fn describe(status: u16, code: Option<i64>, message: &str) -> String {
    match code {
        Some(code) => format!("HTTP {status}, code {code}: {message}"),
        None => format!("HTTP {status}: {message}"),
    }
}

/// What the outbox should do after `im/v1/messages` answered (`code` before the HTTP status:
/// Feishu reports most errors in the body).
pub fn classify(status: u16, code: Option<i64>, message: &str, reset: Option<&str>) -> SendOutcome {
    let describe = || describe(status, code, message);
    match (status, code) {
        (200..=299, Some(0)) => SendOutcome::Delivered { platform_id: None },
        (_, Some(RATE_LIMITED | CHAT_RATE_LIMITED)) | (429, _) => {
            SendOutcome::RetryAfter(rate_limit_wait(reset))
        }
        (_, Some(code)) if TOKEN_CODES.contains(&code) => SendOutcome::Transient(describe()),
        (408 | 500..=599, _) => SendOutcome::Transient(describe()),
        _ => SendOutcome::Permanent(describe()),
    }
}

/// What the relay should do after a card update (`PATCH im/v1/messages/{id}`) answered: as
/// [`classify`] for success, rate limits, tokens and 5xx; a recalled card, one past the 14
/// days of updates, or a chat the bot left, is gone; any other refusal (bad card, missing
/// permission, a message that is no card of ours) failed.
pub fn classify_edit(
    status: u16,
    code: Option<i64>,
    message: &str,
    reset: Option<&str>,
) -> EditOutcome {
    let describe = || describe(status, code, message);
    match (status, code) {
        // Feishu documents no "not modified": the same card again is a success like any.
        (200..=299, Some(0)) => EditOutcome::Edited,
        (_, Some(RATE_LIMITED | CHAT_RATE_LIMITED)) | (429, _) => {
            EditOutcome::RetryAfter(rate_limit_wait(reset))
        }
        (_, Some(code)) if TOKEN_CODES.contains(&code) => EditOutcome::Transient(describe()),
        (_, Some(RECALLED | TOO_OLD_TO_UPDATE | BOT_NOT_IN_CHAT)) => EditOutcome::Gone(describe()),
        (408 | 500..=599, _) => EditOutcome::Transient(describe()),
        _ => EditOutcome::Failed(describe()),
    }
}

/// Whether `id` can go into a URL path as it is: Feishu's ids are `om_` and letters and
/// digits; anything else is no message of ours, and must not reach another path.
fn is_message_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The chunk's key as a `uuid`: stable across retries, at most 50 characters.
fn uuid_for(idempotency_key: &str) -> &str {
    execrelay_channel::key_within(idempotency_key, MAX_UUID)
}

impl FeishuChannel {
    pub fn new(config: FeishuConfig) -> Result<Self, WebhookError> {
        if config.app_id.is_empty() || config.app_secret.is_empty() {
            return Err(WebhookError::Config(
                "feishu needs app_id and app_secret".into(),
            ));
        }
        if config.verification_token.is_empty() {
            return Err(WebhookError::Config(
                "feishu needs a verification_token (Events & Callbacks → Encryption)".into(),
            ));
        }
        crate::config::require_http_url(&config.base_url, "feishu base_url")?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| WebhookError::Config(format!("HTTP client: {error}")))?;
        Ok(FeishuChannel {
            config,
            client,
            token: tokio::sync::Mutex::new(None),
            direct_chats: std::sync::Mutex::new(DirectChats::default()),
        })
    }

    /// Verifies and parses one callback (an event or a card press), for the relay's HTTP
    /// handler. A press in a chat known to be direct says so; others are taken for groups'.
    pub fn receive(
        &self,
        headers: FeishuHeaders<'_>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<FeishuEvent, WebhookError> {
        let mut event = receive(&self.config, headers, body, now_unix)?;
        match &mut event {
            FeishuEvent::Message(message) if message.route.chat_type == ChatType::Direct => {
                self.remember_direct(&message.route.chat_id);
            }
            FeishuEvent::Press(press) if self.is_known_direct(&press.route.chat_id) => {
                press.route.chat_type = ChatType::Direct;
            }
            _ => {}
        }
        Ok(event)
    }

    fn direct_chats(&self) -> std::sync::MutexGuard<'_, DirectChats> {
        // The set is only ever whole: a panic elsewhere cannot leave it half-updated.
        self.direct_chats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember_direct(&self, chat_id: &str) {
        self.direct_chats().remember(chat_id);
    }

    fn is_known_direct(&self, chat_id: &str) -> bool {
        self.direct_chats().known.contains(chat_id)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&Secret>,
        body: &Value,
    ) -> Result<Reply, String> {
        let mut request = self.client.request(method.clone(), url).json(body);
        if method == Method::PATCH {
            // What the update API names as its one content type.
            request = request.header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("feishu request failed: {}", error.without_url()))?;
        let status = response.status().as_u16();
        let reset_header = response
            .headers()
            .get("x-ogw-ratelimit-reset")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|error| format!("feishu response unreadable: {}", error.without_url()))?;
        Ok(Reply {
            status,
            reset_header,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The tenant access token, fetched when missing or close to expiry; or why not (worth
    /// trying again later).
    async fn tenant_token(&self) -> Result<Secret, String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let body = json!({
            "app_id": self.config.app_id,
            "app_secret": self.config.app_secret.expose(),
        });
        let url = self.url("/open-apis/auth/v3/tenant_access_token/internal");
        let reply = self.request(Method::POST, &url, None, &body).await?;
        let code = reply.body["code"].as_i64();
        let token = reply.body["tenant_access_token"]
            .as_str()
            .filter(|t| !t.is_empty());
        let (Some(0), Some(token)) = (code, token) else {
            // Usually a wrong app_id/app_secret: keep messages until the config is fixed.
            let message = reply.body["msg"]
                .as_str()
                .unwrap_or("no token in the answer");
            return Err(format!(
                "feishu refused a tenant access token (HTTP {}, code {}): {message}; check app_id and app_secret",
                reply.status,
                code.unwrap_or(-1)
            ));
        };
        let lifetime = Duration::from_secs(reply.body["expire"].as_u64().unwrap_or(7200));
        let refresh_after = lifetime.saturating_sub(REFRESH_MARGIN).max(MIN_TOKEN_LIFE);
        let value = Secret::new(token);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + refresh_after,
        });
        Ok(value)
    }

    /// Drops `refused` from the cache, unless another send has replaced it already.
    async fn forget_token(&self, refused: &Secret) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|token| token.value == *refused) {
            *cached = None;
        }
    }

    /// One call with the tenant token; when Feishu refuses the token (expired or revoked
    /// early), once more with a fresh one. The same body both times: a send's `uuid` keeps
    /// the second from posting twice, and an update is the same card again.
    async fn call(&self, method: Method, url: &str, body: &Value) -> Result<Reply, String> {
        let token = self.tenant_token().await?;
        let reply = self
            .request(method.clone(), url, Some(&token), body)
            .await?;
        if !reply.token_refused() {
            return Ok(reply);
        }
        tracing::info!("feishu tenant token refused; refreshing it");
        self.forget_token(&token).await;
        let token = self.tenant_token().await?;
        self.request(method, url, Some(&token), body).await
    }
}

/// The `im/v1/messages` body of a chunk: a text message as ever, or, with buttons, an
/// interactive card (which is what makes it editable later).
fn message_body(chunk: &OutboundChunk<'_>) -> Value {
    let (msg_type, content) = if chunk.buttons.is_empty() {
        (
            "text",
            json!({ "text": super::defuse_mentions(chunk.text) }),
        )
    } else {
        ("interactive", card(chunk.text, chunk.buttons))
    };
    json!({
        "receive_id": chunk.route.chat_id,
        "msg_type": msg_type,
        "content": content.to_string(),
        "uuid": uuid_for(chunk.idempotency_key),
    })
}

#[async_trait::async_trait]
impl Channel for FeishuChannel {
    fn name(&self) -> &str {
        super::CHANNEL
    }

    fn limit(&self) -> TextLimit {
        FEISHU_LIMIT
    }

    /// A tenant access token, fetched anew: the app's id and secret work.
    async fn check(&self) -> CheckOutcome {
        match self.tenant_token().await {
            Ok(_) => CheckOutcome::Ok(format!(
                "a tenant access token was obtained for app {}",
                self.config.app_id
            )),
            Err(problem) => CheckOutcome::Failed {
                problem,
                fix: "set channels.feishu.app_id and app_secret as the Feishu console shows                       them (Credentials & Basic Info), and check that this machine reaches                       channels.feishu.base_url"
                    .into(),
            },
        }
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        if !chunk.buttons.is_empty() && chunk.route.chat_type == ChatType::Direct {
            // Its buttons' presses will not say the chat is direct.
            self.remember_direct(&chunk.route.chat_id);
        }
        let url = self.url("/open-apis/im/v1/messages?receive_id_type=chat_id");
        let reply = match self.call(Method::POST, &url, &message_body(&chunk)).await {
            Ok(reply) => reply,
            Err(error) => return SendOutcome::Transient(error),
        };
        let reset = reply.reset_header.as_deref();
        match classify(reply.status, reply.code(), reply.message(), reset) {
            SendOutcome::Delivered { .. } => SendOutcome::Delivered {
                platform_id: reply.body["data"]["message_id"]
                    .as_str()
                    .map(str::to_string),
            },
            other => other,
        }
    }

    /// `PATCH im/v1/messages/{id}` with the whole new card; no buttons leaves the card
    /// without its action block.
    async fn edit(&self, edit: Edit<'_>) -> EditOutcome {
        if !is_message_id(edit.message_id) {
            return EditOutcome::Failed("not a feishu message id".into());
        }
        let body = json!({ "content": card(edit.text, edit.buttons).to_string() });
        let url = self.url(&format!("/open-apis/im/v1/messages/{}", edit.message_id));
        let reply = match self.call(Method::PATCH, &url, &body).await {
            Ok(reply) => reply,
            Err(error) => return EditOutcome::Transient(error),
        };
        let reset = reply.reset_header.as_deref();
        classify_edit(reply.status, reply.code(), reply.message(), reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_the_contract() {
        assert!(matches!(
            classify(200, Some(0), "success", None),
            SendOutcome::Delivered { .. }
        ));
        assert_eq!(
            classify(429, Some(RATE_LIMITED), "too many", Some("3")),
            SendOutcome::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            classify(400, Some(RATE_LIMITED), "too many", None),
            SendOutcome::RetryAfter(DEFAULT_RETRY_AFTER)
        );
        assert!(matches!(
            classify(400, Some(99991663), "expired", None),
            SendOutcome::Transient(_)
        ));
        assert!(matches!(
            classify(503, None, "", None),
            SendOutcome::Transient(_)
        ));
        assert!(matches!(
            classify(400, Some(230002), "bot not in chat", None),
            SendOutcome::Permanent(_)
        ));
        assert!(matches!(
            classify(200, Some(230001), "bad param", None),
            SendOutcome::Permanent(_)
        ));
    }

    #[test]
    fn edit_answers_map_to_the_contract() {
        assert_eq!(
            classify_edit(200, Some(0), "success", None),
            EditOutcome::Edited
        );
        for (status, code) in [(429, None), (400, Some(RATE_LIMITED)), (400, Some(230020))] {
            assert_eq!(
                classify_edit(status, code, "slow down", Some("2")),
                EditOutcome::RetryAfter(Duration::from_secs(2)),
                "{status} {code:?}"
            );
        }
        assert_eq!(
            classify_edit(429, None, "", Some("soon")),
            EditOutcome::RetryAfter(DEFAULT_RETRY_AFTER)
        );
        for transient in [
            classify_edit(400, Some(99991663), "expired", None),
            classify_edit(503, None, "", None),
            classify_edit(408, None, "", None),
        ] {
            assert!(
                matches!(transient, EditOutcome::Transient(_)),
                "{transient:?}"
            );
        }
        for code in [RECALLED, TOO_OLD_TO_UPDATE, BOT_NOT_IN_CHAT] {
            let outcome = classify_edit(400, Some(code), "gone", None);
            assert!(matches!(&outcome, EditOutcome::Gone(why) if why.contains(&code.to_string())));
        }
        for code in [230001, 230025, 230099, 230027, 12345] {
            let outcome = classify_edit(400, Some(code), "refused", None);
            assert!(matches!(outcome, EditOutcome::Failed(_)), "{code}");
        }
        assert!(matches!(
            classify_edit(200, None, "", None),
            EditOutcome::Failed(_)
        ));
    }

    #[test]
    fn only_plain_ids_name_a_message() {
        assert!(is_message_id("om_dc13264520392913993dd051dba21dcf"));
        for bad in ["", "om_1/../../auth", "om_1?x=1", "om 1", "om_1#", "%2e"] {
            assert!(!is_message_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_chunk_with_buttons_is_a_card_and_one_without_stays_text() {
        use execrelay_channel::{Button, Route};
        let route = Route {
            channel: "feishu".into(),
            account: "cli_a".into(),
            chat_id: "oc_1".into(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type: ChatType::Group,
        };
        let buttons = [Button {
            id: "k:1".into(),
            label: "Kill".into(),
        }];
        let chunk = OutboundChunk {
            route: &route,
            text: "started job 1: make",
            idempotency_key: "key.0",
            index: 0,
            count: 1,
            buttons: &[],
        };
        assert_eq!(
            message_body(&chunk),
            json!({"receive_id": "oc_1", "msg_type": "text",
                   "content": "{\"text\":\"started job 1: make\"}", "uuid": "key.0"})
        );
        let with_buttons = OutboundChunk {
            buttons: &buttons,
            ..chunk
        };
        let body = message_body(&with_buttons);
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["uuid"], "key.0");
        let card: Value = serde_json::from_str(body["content"].as_str().unwrap()).unwrap();
        assert_eq!(card, super::card("started job 1: make", &buttons));
    }

    #[test]
    fn presses_in_chats_seen_direct_say_so_and_the_memory_is_bounded() {
        let mut chats = DirectChats::default();
        for n in 0..KNOWN_DIRECT_CHATS + 10 {
            chats.remember(&format!("oc_{n}"));
        }
        chats.remember("oc_20");
        assert_eq!(chats.order.len(), KNOWN_DIRECT_CHATS);
        assert_eq!(chats.known.len(), KNOWN_DIRECT_CHATS);
        assert!(!chats.known.contains("oc_0") && chats.known.contains("oc_20"));
    }

    #[test]
    fn uuids_are_stable_and_short() {
        assert_eq!(uuid_for("abcd1f.0"), "abcd1f.0");
        let long = "k".repeat(60) + ".3";
        assert_eq!(uuid_for(&long).chars().count(), 50);
        assert!(uuid_for(&long).ends_with(".3"));
    }

    #[test]
    fn config_is_checked_and_secrets_hidden() {
        let config = FeishuConfig::new("cli_a", Secret::new("app-secret-value"), Secret::new(""));
        assert!(FeishuChannel::new(config.clone()).is_err());
        let config = FeishuConfig {
            verification_token: Secret::new("vt"),
            ..config
        };
        let channel = FeishuChannel::new(config).unwrap();
        assert!(!format!("{channel:?}").contains("app-secret-value"));
    }
}
