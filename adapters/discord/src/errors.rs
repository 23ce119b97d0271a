//! Errors of the Discord channel, and the one place a token is scrubbed from text.

#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// The channel's own configuration is unusable (empty token, bad base URL, …).
    #[error("discord channel configuration: {0}")]
    Config(String),
    /// The gateway refused the session for good (bad token, intents not enabled, …).
    #[error("the discord gateway stopped: {0}")]
    Gateway(String),
}

/// `text` with every occurrence of `token` replaced by `***`: serenity's errors are shown to
/// people and logged, and a token must never be.
pub fn redact(text: &str, token: &str) -> String {
    if token.len() < 8 {
        return text.to_string();
    }
    text.replace(token, "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_token() {
        let token = "MTAxNTQ.Gx-secret.part-of-token";
        assert_eq!(
            redact(&format!("Bot {token} refused"), token),
            "Bot *** refused"
        );
    }
}
