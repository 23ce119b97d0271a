//! A Feishu custom group bot: outbound only, signed, paced under its limits. Text only: a
//! chunk's buttons are left out (a hook bot has no callbacks to take a press), and `edit` keeps
//! the contract's default, `Unsupported` (a hook bot cannot update what it posted).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use execrelay_channel::{Channel, OutboundChunk, SendOutcome};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::FeishuBotConfig;
use super::outbound::FEISHU_LIMIT;
use crate::WebhookError;

/// Custom bots accept 5 requests a second and 100 a minute.
const WINDOWS: [(Duration, usize); 2] =
    [(Duration::from_secs(1), 5), (Duration::from_secs(60), 100)];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const THROTTLED: i64 = 11232;

/// `sign` for a custom bot: base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = "")).
pub fn bot_sign(timestamp: i64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub struct FeishuBotChannel {
    config: FeishuBotConfig,
    client: reqwest::Client,
    recent: tokio::sync::Mutex<VecDeque<Instant>>,
}

impl fmt::Debug for FeishuBotChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuBotChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long to wait before one more send fits every window, given the send times in `recent`.
fn wait_for_room(recent: &VecDeque<Instant>, now: Instant) -> Duration {
    WINDOWS
        .iter()
        .filter_map(|(window, limit)| {
            let in_window: Vec<&Instant> = recent
                .iter()
                .filter(|at| now.duration_since(**at) < *window)
                .collect();
            (in_window.len() >= *limit).then(|| {
                let oldest = in_window[in_window.len() - limit];
                (*oldest + *window).saturating_duration_since(now)
            })
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

impl FeishuBotChannel {
    pub fn new(config: FeishuBotConfig) -> Result<Self, WebhookError> {
        crate::config::require_http_url(config.hook_url.expose(), "feishu_bot hook_url")?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| WebhookError::Config(format!("HTTP client: {error}")))?;
        Ok(FeishuBotChannel {
            config,
            client,
            recent: tokio::sync::Mutex::new(VecDeque::new()),
        })
    }

    /// Waits until a send fits the bot's rate limits, and records it.
    async fn pace(&self) {
        let mut recent = self.recent.lock().await;
        let wait = wait_for_room(&recent, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOWS[1].0)
        {
            recent.pop_front();
        }
    }
}

#[async_trait::async_trait]
impl Channel for FeishuBotChannel {
    fn name(&self) -> &str {
        super::BOT_CHANNEL
    }

    fn limit(&self) -> execrelay_channel::TextLimit {
        FEISHU_LIMIT
    }

    /// A custom group bot has no call that posts nothing: its hook is not checked.
    async fn check(&self) -> execrelay_channel::CheckOutcome {
        execrelay_channel::CheckOutcome::Ok(
            "not checked: a custom group bot can only be tried by posting to its group".into(),
        )
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        self.pace().await;
        let text = super::defuse_mentions(chunk.text);
        let mut body = json!({"msg_type": "text", "content": {"text": text}});
        if let Some(secret) = &self.config.secret {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            body["timestamp"] = json!(timestamp.to_string());
            body["sign"] = json!(bot_sign(timestamp, secret.expose()));
        }
        let response = match self
            .client
            .post(self.config.hook_url.expose())
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return SendOutcome::Transient(format!(
                    "feishu bot request failed: {}",
                    error.without_url()
                ));
            }
        };
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        // Older hooks answer {"StatusCode": 0}; newer ones {"code": 0}.
        let code = answer["code"].as_i64().or(answer["StatusCode"].as_i64());
        let message = answer["msg"]
            .as_str()
            .or(answer["StatusMessage"].as_str())
            .unwrap_or("");
        match (status, code) {
            (200..=299, Some(0)) => SendOutcome::Delivered { platform_id: None },
            (_, Some(THROTTLED)) | (429, _) => SendOutcome::RetryAfter(Duration::from_secs(1)),
            (408 | 500..=599, _) => SendOutcome::Transient(format!("HTTP {status}: {message}")),
            _ => SendOutcome::Permanent(format!(
                "HTTP {status}, code {}: {message}",
                code.unwrap_or(-1)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_check_value_signs() {
        assert_eq!(
            bot_sign(1599360473, "demo"),
            "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
        );
    }

    #[test]
    fn pacing_keeps_under_both_windows() {
        let start = Instant::now();
        let mut recent = VecDeque::new();
        assert_eq!(wait_for_room(&recent, start), Duration::ZERO);
        for i in 0..5 {
            recent.push_back(start + Duration::from_millis(i * 10));
        }
        let now = start + Duration::from_millis(50);
        let wait = wait_for_room(&recent, now);
        assert_eq!(
            wait,
            Duration::from_millis(950),
            "the sixth send waits for the first to age"
        );
        let minute: VecDeque<Instant> = (0..100)
            .map(|i| start + Duration::from_millis(i * 500))
            .collect();
        let now = start + Duration::from_millis(50_000);
        assert_eq!(wait_for_room(&minute, now), Duration::from_secs(10));
    }
}
