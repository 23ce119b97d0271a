//! The channels the config enables, built from their settings (no I/O: clients and settings
//! only), so that an adapter's refusal stops the relay before it creates anything; `config
//! check` builds the same through [`preflight`]. The only place that names a concrete adapter
//! besides the wiring that runs them.

use std::sync::Arc;

use anyhow::{Context, bail};
use execrelay_channel::{Channel, Secret};
use execrelay_webhook::{WebhookChannel, WebhookConfig};

use crate::config::Config;
use crate::data_dir::webhook_secret;
use crate::ingest::local::LocalChannel;

/// Every channel the config enables, built and ready to run.
pub struct Channels {
    pub all: Vec<Arc<dyn Channel>>,
    pub local: Option<Arc<LocalChannel>>,
    pub webhook: Option<Arc<WebhookChannel>>,
    pub feishu: Option<crate::serve::api::FeishuEndpoint>,
}

/// Builds the channels (no I/O: clients and settings only), so that an adapter's refusal stops
/// the relay before it creates anything. `config check` runs the same through [`preflight`].
pub fn build_channels(config: &Config, webhook_secret: Secret) -> anyhow::Result<Channels> {
    let mut all: Vec<Arc<dyn Channel>> = Vec::new();
    let local = config
        .channels
        .local
        .enabled
        .then(|| Arc::new(LocalChannel::default()));
    if let Some(local) = &local {
        all.push(local.clone());
    }
    let webhook = if config.channels.webhook.enabled {
        let mut webhook_config = WebhookConfig::new(webhook_secret);
        webhook_config.callback_url = config.channels.webhook.callback_url.clone();
        webhook_config.max_chars = config.channels.webhook.max_chars;
        let channel = Arc::new(
            WebhookChannel::new(webhook_config).context("cannot set up the webhook channel")?,
        );
        all.push(channel.clone());
        Some(channel)
    } else {
        None
    };
    if config.channels.telegram.enabled {
        all.push(telegram_channel(config)?);
    }
    if config.channels.discord.enabled {
        all.push(discord_channel(config)?);
    }
    let feishu = if config.channels.feishu.enabled {
        let (endpoint, channel) = feishu_channel(config)?;
        all.push(channel);
        Some(endpoint)
    } else {
        None
    };
    if config.channels.feishu_bot.enabled {
        all.push(feishu_bot_channel(config)?);
    }
    Ok(Channels {
        all,
        local,
        webhook,
        feishu,
    })
}

/// An adapter refused its settings: a config's fault, as `config check` says it (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ChannelRefused(pub anyhow::Error);

/// What `run` would refuse after the config's own checks: the channels, built and dropped.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    build_channels(config, webhook_secret(config).0).map(drop)
}

#[cfg(feature = "telegram")]
fn telegram_channel(config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    use execrelay_telegram::{TelegramChannel, TelegramConfig};
    let settings = &config.channels.telegram;
    let Some(token) = settings.token.clone() else {
        bail!(
            "channels.telegram is enabled but has no token: set channels.telegram.token, \
             token_file or EXECRELAY_TELEGRAM_TOKEN"
        );
    };
    let mut telegram = TelegramConfig::new(token);
    telegram.api_url = settings.api_url.clone();
    telegram.poll_timeout = settings.poll_timeout;
    telegram.commands = crate::ingest::commands::COMMAND_MENU
        .iter()
        .map(|(name, description)| (name.to_string(), description.to_string()))
        .collect();
    let channel = TelegramChannel::new(telegram).context("cannot set up the telegram channel")?;
    Ok(Arc::new(channel))
}

#[cfg(not(feature = "telegram"))]
fn telegram_channel(_config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    bail!(
        "channels.telegram is enabled, but this execrelay was built without the `telegram` feature"
    )
}

#[cfg(feature = "discord")]
fn discord_channel(config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    use execrelay_discord::{DiscordChannel, DiscordConfig};
    let settings = &config.channels.discord;
    let Some(token) = settings.token.clone() else {
        bail!(
            "channels.discord is enabled but has no token: set channels.discord.token, \
             token_file or EXECRELAY_DISCORD_TOKEN"
        );
    };
    let mut discord = DiscordConfig::new(token);
    discord.api_base = settings.api_base.clone();
    discord.require_mention = settings.require_mention;
    let channel = DiscordChannel::new(discord).context("cannot set up the discord channel")?;
    Ok(Arc::new(channel))
}

/// The channel, and the endpoint that receives its events.
#[cfg(feature = "feishu")]
fn feishu_channel(
    config: &Config,
) -> anyhow::Result<(crate::serve::api::FeishuEndpoint, Arc<dyn Channel>)> {
    use execrelay_webhook::feishu::{FeishuChannel, FeishuConfig};
    let settings = &config.channels.feishu;
    let (Some(app_secret), Some(verification_token)) = (
        settings.app_secret.clone(),
        settings.verification_token.clone(),
    ) else {
        bail!(
            "channels.feishu is enabled but needs app_secret and verification_token (or their \
             *_file keys, or EXECRELAY_FEISHU_APP_SECRET / EXECRELAY_FEISHU_VERIFICATION_TOKEN)"
        );
    };
    let mut feishu = FeishuConfig::new(&settings.app_id, app_secret, verification_token);
    feishu.encrypt_key = settings.encrypt_key.clone();
    feishu.base_url = settings.base_url.clone();
    let channel = Arc::new(FeishuChannel::new(feishu).context("cannot set up the feishu channel")?);
    Ok(((settings.path.clone(), channel.clone()), channel))
}

#[cfg(feature = "feishu")]
fn feishu_bot_channel(config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    use execrelay_webhook::feishu::{FeishuBotChannel, FeishuBotConfig};
    let settings = &config.channels.feishu_bot;
    let Some(hook_url) = settings.hook_url.clone() else {
        bail!("channels.feishu_bot is enabled but has no hook_url");
    };
    let bot = FeishuBotConfig {
        hook_url,
        secret: settings.secret.clone(),
    };
    let channel = FeishuBotChannel::new(bot).context("cannot set up the feishu_bot channel")?;
    Ok(Arc::new(channel))
}

#[cfg(not(feature = "feishu"))]
fn feishu_channel(
    _config: &Config,
) -> anyhow::Result<(crate::serve::api::FeishuEndpoint, Arc<dyn Channel>)> {
    bail!("channels.feishu is enabled, but this execrelay was built without the `feishu` feature")
}

#[cfg(not(feature = "feishu"))]
fn feishu_bot_channel(_config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    bail!(
        "channels.feishu_bot is enabled, but this execrelay was built without the `feishu` feature"
    )
}

#[cfg(not(feature = "discord"))]
fn discord_channel(_config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    bail!("channels.discord is enabled, but this execrelay was built without the `discord` feature")
}
