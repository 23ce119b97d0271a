//! Settings of the Feishu channel and of the custom group bot.

use std::fmt;
use std::time::Duration;

use execrelay_channel::Secret;

pub const DEFAULT_BASE_URL: &str = "https://open.feishu.cn";
pub const DEFAULT_EVENTS_PATH: &str = "/feishu/events";

/// Feishu retries an unanswered event for about 7 hours (15 s, 5 min, 1 h, 6 h); whether a
/// retry carries a new `X-Lark-Request-Timestamp` is not documented, so the window admits the
/// whole schedule. Replays inside it are harmless: events are deduped on `event_id` for days.
pub const FEISHU_MAX_SKEW: Duration = Duration::from_secs(12 * 3600);

/// The Feishu app. `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct FeishuConfig {
    pub app_id: String,
    pub app_secret: Secret,
    /// Compared with the `token` of every event (and of `url_verification`).
    pub verification_token: Secret,
    /// When set, events arrive encrypted and signed.
    pub encrypt_key: Option<Secret>,
    /// `https://open.feishu.cn`, or `https://open.larksuite.com` for Lark.
    pub base_url: String,
    /// Largest accepted difference between `X-Lark-Request-Timestamp` and our clock.
    pub max_skew: Duration,
}

impl FeishuConfig {
    pub fn new(app_id: &str, app_secret: Secret, verification_token: Secret) -> Self {
        FeishuConfig {
            app_id: app_id.to_string(),
            app_secret,
            verification_token,
            encrypt_key: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            max_skew: FEISHU_MAX_SKEW,
        }
    }
}

impl fmt::Debug for FeishuConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuConfig")
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .field("verification_token", &self.verification_token)
            .field("encrypt_key", &self.encrypt_key)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// A custom group bot: outbound only. The hook URL carries its token, so it is a secret too.
#[derive(Clone, PartialEq, Eq)]
pub struct FeishuBotConfig {
    pub hook_url: Secret,
    /// Signing secret ("signature verification" in the bot's security settings), if enabled.
    pub secret: Option<Secret>,
}

impl fmt::Debug for FeishuBotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeishuBotConfig")
            .field("hook_url", &crate::redact_url(self.hook_url.expose()))
            .field("secret", &self.secret)
            .finish()
    }
}
