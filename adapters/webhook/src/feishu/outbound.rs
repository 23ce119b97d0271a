//! Outbound through the Feishu open API: a cached tenant access token, one `im/v1/messages`
//! call per chunk with `uuid` = the chunk's idempotency key.

use std::fmt;
use std::time::{Duration, Instant};

use execrelay_channel::{Channel, OutboundChunk, Secret, SendOutcome, TextLimit, TextUnit};
use serde_json::{Value, json};

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

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// The Feishu app as a [`Channel`]. `Debug` prints no secret.
pub struct FeishuChannel {
    config: FeishuConfig,
    client: reqwest::Client,
    token: tokio::sync::Mutex<Option<CachedToken>>,
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

/// What the outbox should do after `im/v1/messages` answered (`code` before the HTTP status:
/// Feishu reports most errors in the body).
pub fn classify(status: u16, code: Option<i64>, message: &str, reset: Option<&str>) -> SendOutcome {
    let describe = || match code {
        Some(code) => format!("HTTP {status}, code {code}: {message}"),
        None => format!("HTTP {status}: {message}"),
    };
    match (status, code) {
        (200..=299, Some(0)) => SendOutcome::Delivered { platform_id: None },
        (_, Some(RATE_LIMITED | CHAT_RATE_LIMITED)) | (429, _) => {
            let wait = reset
                .and_then(|value| value.trim().parse::<f64>().ok())
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map_or(DEFAULT_RETRY_AFTER, |secs| {
                    Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
                });
            SendOutcome::RetryAfter(wait)
        }
        (_, Some(code)) if TOKEN_CODES.contains(&code) => SendOutcome::Transient(describe()),
        (408 | 500..=599, _) => SendOutcome::Transient(describe()),
        _ => SendOutcome::Permanent(describe()),
    }
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
        })
    }

    /// Verifies and parses one event callback, for the relay's HTTP handler.
    pub fn receive(
        &self,
        headers: FeishuHeaders<'_>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<FeishuEvent, WebhookError> {
        receive(&self.config, headers, body, now_unix)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    async fn post(
        &self,
        url: &str,
        bearer: Option<&Secret>,
        body: &Value,
    ) -> Result<Reply, String> {
        let mut request = self.client.post(url).json(body);
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

    /// The tenant access token, fetched when missing or close to expiry.
    async fn tenant_token(&self) -> Result<Secret, SendOutcome> {
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
        let reply = self
            .post(&url, None, &body)
            .await
            .map_err(SendOutcome::Transient)?;
        let code = reply.body["code"].as_i64();
        let token = reply.body["tenant_access_token"]
            .as_str()
            .filter(|t| !t.is_empty());
        let (Some(0), Some(token)) = (code, token) else {
            // Usually a wrong app_id/app_secret: keep messages until the config is fixed.
            let message = reply.body["msg"]
                .as_str()
                .unwrap_or("no token in the answer");
            return Err(SendOutcome::Transient(format!(
                "feishu refused a tenant access token (HTTP {}, code {}): {message}; check app_id and app_secret",
                reply.status,
                code.unwrap_or(-1)
            )));
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

    /// One send; `true` alongside when Feishu refused the token (not the message).
    async fn send_once(&self, chunk: &OutboundChunk<'_>, token: &Secret) -> (SendOutcome, bool) {
        let content = json!({ "text": super::defuse_mentions(chunk.text) }).to_string();
        let body = json!({
            "receive_id": chunk.route.chat_id,
            "msg_type": "text",
            "content": content,
            "uuid": uuid_for(chunk.idempotency_key),
        });
        let url = self.url("/open-apis/im/v1/messages?receive_id_type=chat_id");
        let reply = match self.post(&url, Some(token), &body).await {
            Ok(reply) => reply,
            Err(error) => return (SendOutcome::Transient(error), false),
        };
        let code = reply.body["code"].as_i64();
        let token_refused = code.is_some_and(|code| TOKEN_CODES.contains(&code));
        let message = reply.body["msg"].as_str().unwrap_or("");
        let outcome = match classify(reply.status, code, message, reply.reset_header.as_deref()) {
            SendOutcome::Delivered { .. } => SendOutcome::Delivered {
                platform_id: reply.body["data"]["message_id"]
                    .as_str()
                    .map(str::to_string),
            },
            other => other,
        };
        (outcome, token_refused)
    }
}

#[async_trait::async_trait]
impl Channel for FeishuChannel {
    fn name(&self) -> &str {
        super::CHANNEL
    }

    fn limit(&self) -> TextLimit {
        FEISHU_LIMIT
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        let token = match self.tenant_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let (outcome, token_refused) = self.send_once(&chunk, &token).await;
        if !token_refused {
            return outcome;
        }
        // Expired or revoked early: a fresh token, and the same uuid, so no double post.
        tracing::info!("feishu tenant token refused; refreshing it");
        self.forget_token(&token).await;
        match self.tenant_token().await {
            Ok(token) => self.send_once(&chunk, &token).await.0,
            Err(outcome) => outcome,
        }
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
