//! Settings of the Discord channel.

use std::fmt;

use execrelay_channel::Secret;

/// The public API; REST lives under `/api/v10`.
pub const DEFAULT_API_BASE: &str = "https://discord.com";

/// Settings of the Discord channel. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct DiscordConfig {
    pub token: Secret,
    /// Base URL of REST and gateway discovery (tests point it at a fake).
    pub api_base: String,
    /// In guild channels, pass on only messages that mention the bot or start with a command.
    pub require_mention: bool,
}

impl DiscordConfig {
    pub fn new(token: Secret) -> Self {
        DiscordConfig {
            token,
            api_base: DEFAULT_API_BASE.to_string(),
            require_mention: true,
        }
    }
}

impl fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &self.token)
            .field("api_base", &self.api_base)
            .field("require_mention", &self.require_mention)
            .finish()
    }
}
