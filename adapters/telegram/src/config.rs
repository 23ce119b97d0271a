//! Settings of the Telegram channel.

use std::fmt;
use std::time::Duration;

use execrelay_channel::Secret;

/// The public Bot API.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// How long one `getUpdates` call may wait for news (Telegram allows up to 50 s).
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the Telegram channel. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TelegramConfig {
    pub token: Secret,
    /// Base URL of the Bot API (tests point it at a fake); `/bot<token>/<Method>` is appended.
    pub api_url: String,
    pub poll_timeout: Duration,
    /// `(name, description)` of the commands to register with `setMyCommands`.
    pub commands: Vec<(String, String)>,
}

impl TelegramConfig {
    pub fn new(token: Secret) -> Self {
        TelegramConfig {
            token,
            api_url: DEFAULT_API_URL.to_string(),
            poll_timeout: DEFAULT_POLL_TIMEOUT,
            commands: Vec::new(),
        }
    }
}

impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .field("poll_timeout", &self.poll_timeout)
            .field("commands", &self.commands.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let config = TelegramConfig::new(Secret::new("123456:AAF7-secret-part"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-part"), "{shown}");
        assert!(shown.contains("api.telegram.org"), "{shown}");
    }
}
