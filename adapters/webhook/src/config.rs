//! Settings of the webhook channel.

use std::fmt;
use std::time::Duration;

use execrelay_channel::Secret;

/// How far a request's timestamp may be from our clock before it is refused as a replay.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);

/// The chunk limit of the generic webhook, in characters.
pub const DEFAULT_MAX_CHARS: usize = 4000;

/// Settings of the webhook channel. `Debug` hides the secret and the callback URL's query
/// string and credentials, which often carry tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Signs outbound requests and verifies inbound ones.
    pub secret: Secret,
    /// Where outbound messages are POSTed; `None` makes every send a permanent failure.
    pub callback_url: Option<String>,
    /// Chunk limit in characters.
    pub max_chars: usize,
    /// Largest accepted difference between a request's timestamp and our clock.
    pub max_skew: Duration,
}

impl WebhookConfig {
    /// A configuration with the given secret, no callback and the default limits.
    pub fn new(secret: Secret) -> Self {
        WebhookConfig {
            secret,
            callback_url: None,
            max_chars: DEFAULT_MAX_CHARS,
            max_skew: DEFAULT_MAX_SKEW,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig::new(Secret::default())
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret)
            .field(
                "callback_url",
                &self.callback_url.as_deref().map(redact_url),
            )
            .field("max_chars", &self.max_chars)
            .field("max_skew", &self.max_skew)
            .finish()
    }
}

/// Refuses anything but an absolute `http://` or `https://` URL; `key` names the setting. The
/// URL itself is not echoed: it may carry a token.
pub(crate) fn require_http_url(url: &str, key: &str) -> Result<(), crate::WebhookError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(crate::WebhookError::Config(format!(
            "{key} must be an absolute http:// or https:// URL"
        ))),
    }
}

/// `scheme://host[:port]` of `url`: safe to log, since callback URLs may carry tokens in
/// their credentials, path or query. Unparseable input is replaced wholesale.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match parsed.host_str() {
            Some(host) => match parsed.port() {
                Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
                None => format!("{}://{host}", parsed.scheme()),
            },
            None => format!("{}:***", parsed.scheme()),
        },
        Err(_) => "<invalid url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret_and_url_tokens() {
        let config = WebhookConfig {
            callback_url: Some("https://user:pw@example.com:8443/hook/abc?token=t0p".into()),
            ..WebhookConfig::new(Secret::new("hunter2"))
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("https://example.com:8443"), "{shown}");
        for leak in ["hunter2", "t0p", "pw", "abc"] {
            assert!(!shown.contains(leak), "{leak} leaked in {shown}");
        }
    }

    #[test]
    fn defaults() {
        let config = WebhookConfig::default();
        assert_eq!(config.max_skew, Duration::from_secs(300));
        assert_eq!(config.max_chars, 4000);
        assert!(config.secret.is_empty() && config.callback_url.is_none());
    }
}
