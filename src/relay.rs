//! Wiring: builds every stage from the config, starts them in order, and stops them in order.
//!
//! Start: store (migrations, release this node's leases) → channels → outbox → heartbeat →
//! exec runtime → command processor → delivery workers → job reconciliation → wakes for events
//! left queued → HTTP. Stop (SIGTERM/SIGINT): HTTP and inbound stop taking work, the command
//! processor and heartbeat finish their current step, delivery workers record what is in
//! flight (bounded), then the process exits. Jobs keep running under their supervisors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use execrelay_channel::{CancellationToken, Channel, Secret};
use execrelay_webhook::{WebhookChannel, WebhookConfig};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::api::{ApiState, router};
use crate::commands::CommandProcessor;
use crate::config::Config;
use crate::data_dir::{api_token, keep_webhook_secret, lock_store, make_private, webhook_secret};
use crate::exec::{ExecRuntime, resolve_workdir};
use crate::heartbeat::{self, Reason};
use crate::inbound::{Access, InboundHandler};
use crate::jobs::Redactor;
use crate::local::LocalChannel;
use crate::log_throttle::LogThrottle;
use crate::outbox::Outbox;
use crate::store::Store;

/// Past the delivery workers' grace (25 s), for everything else to wind down.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Every channel the config enables, built and ready to run.
struct Channels {
    all: Vec<Arc<dyn Channel>>,
    local: Option<Arc<LocalChannel>>,
    webhook: Option<Arc<WebhookChannel>>,
    feishu: Option<crate::api::FeishuEndpoint>,
}

/// Builds the channels (no I/O: clients and settings only), so that an adapter's refusal stops
/// the relay before it creates anything. `config check` runs the same through [`preflight`].
fn build_channels(config: &Config, webhook_secret: Secret) -> anyhow::Result<Channels> {
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

/// One line that says what this relay is: which config, which store, and each channel with
/// where it listens or whom it calls (URLs shown as scheme and host: they may carry tokens).
fn startup_line(config: &Config, bound: SocketAddr) -> String {
    use execrelay_webhook::redact_url;
    let source = config.source.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |path| format!("config {}", path.display()),
    );
    let store =
        std::path::absolute(&config.store.path).unwrap_or_else(|_| config.store.path.clone());
    let c = &config.channels;
    let mut channels = Vec::new();
    if c.local.enabled {
        channels.push("local (execrelay chat)".to_string());
    }
    if c.webhook.enabled {
        let replies = c.webhook.callback_url.as_deref().map_or_else(
            || "no callback_url: replies dead-letter".to_string(),
            |url| format!("replies to {}", redact_url(url)),
        );
        channels.push(format!("webhook (POST http://{bound}/webhook; {replies})"));
    }
    if c.telegram.enabled {
        channels.push(format!(
            "telegram (long-polls {})",
            redact_url(&c.telegram.api_url)
        ));
    }
    if c.discord.enabled {
        channels.push(format!(
            "discord (gateway and REST at {})",
            redact_url(&c.discord.api_base)
        ));
    }
    if c.feishu.enabled {
        channels.push(format!(
            "feishu (events at http://{bound}{}; API {})",
            c.feishu.path,
            redact_url(&c.feishu.base_url)
        ));
    }
    if c.feishu_bot.enabled {
        let hook = c
            .feishu_bot
            .hook_url
            .as_ref()
            .map_or_else(String::new, |url| redact_url(url.expose()));
        channels.push(format!("feishu_bot (posts to {hook})"));
    }
    let channels = if channels.is_empty() {
        "none".to_string()
    } else {
        channels.join(", ")
    };
    format!(
        "execrelay is running: {source}; store {}; API http://{bound}; channels: {channels}",
        store.display()
    )
}

/// An adapter refused its settings: a config's fault, as `config check` says it (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ChannelRefused(anyhow::Error);

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
    telegram.commands = crate::commands::COMMAND_MENU
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
) -> anyhow::Result<(crate::api::FeishuEndpoint, Arc<dyn Channel>)> {
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
) -> anyhow::Result<(crate::api::FeishuEndpoint, Arc<dyn Channel>)> {
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

fn write_ready_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}

/// Listens for SIGTERM and SIGINT. The handlers are installed here, before the relay says it is
/// ready, so that a signal sent the moment it is ready shuts it down gracefully rather than
/// killing it with the default action.
fn shutdown_signals(stop: CancellationToken) -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    })
}

/// Platforms redeliver for hours at most (Feishu: about 7); a week of dedupe is plenty.
const DEDUPE_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

async fn prune_dedupe_records(store: Store, stop: CancellationToken) {
    loop {
        match store
            .prune_seen(crate::store::now_ms() - DEDUPE_KEEP_MS)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot old inbound dedupe records"),
            Err(error) => tracing::warn!(error = %error, "cannot prune dedupe records"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

pub async fn run(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let listen = config.http.listen;
    // Everything that can refuse comes before anything is created: a relay that will not
    // start leaves no data directory, database or secret behind.
    let (secret, generated_secret) = webhook_secret(&config);
    let Channels {
        all: channels,
        local,
        webhook,
        feishu,
    } = build_channels(&config, secret.clone()).map_err(ChannelRefused)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another program using it?)"))?;
    let bound = listener.local_addr()?;
    make_private(&config.store.path)
        .with_context(|| format!("cannot prepare {}", config.store.data_dir().display()))?;
    // Held until the process ends, past the runtime's last blocking task (the kernel lets go
    // of it then, even after a SIGKILL): never dropped.
    std::mem::forget(lock_store(&config.store.path)?);
    if generated_secret && webhook.is_some() {
        keep_webhook_secret(&config, &secret)?;
    }
    let (api_token, generated_token) = api_token(&config)?;
    if let Some(path) = &generated_token {
        tracing::info!(
            path = %path.display(),
            "the local API's token is in this file, which only this user (and root) can read; \
             execrelay chat, jobs, outbox, events and notify use it"
        );
    }
    let (path, node) = (config.store.path.clone(), config.store.node.clone());
    // Migrations and the first fsync happen here: off the async runtime.
    let store = tokio::task::spawn_blocking(move || Store::open(&path, &node))
        .await?
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
    let released = store.release_own_leases().await?;
    if released > 0 {
        tracing::info!(
            released,
            "released delivery leases left by the previous run"
        );
    }
    // Dead letters a missing callback_url caused go out again once the config has one.
    if config.channels.webhook.enabled && config.channels.webhook.callback_url.is_some() {
        let revived = store.retry_unconfigured("webhook").await?;
        if !revived.is_empty() {
            tracing::info!(
                revived = revived.len(),
                "retrying webhook dead letters: callback_url is set now"
            );
        }
    }

    let mut secrets = config.secrets();
    if webhook.is_some() {
        secrets.push(secret);
    }
    let outbox = Outbox::new(store.clone(), channels.clone());

    let (heartbeat, start_heartbeat) =
        heartbeat::spawn(config.heartbeat.clone(), store.clone(), outbox.clone());
    let exec = ExecRuntime::new(
        store.clone(),
        config.exec.clone(),
        config.store.jobs_dir(),
        heartbeat.clone(),
        Redactor::new(secrets),
        config.events.max_queued,
    )
    .context("cannot prepare the jobs directory")?;
    let command_wake = Arc::new(Notify::new());
    let inbound = Arc::new(InboundHandler::new(
        store.clone(),
        Access::from_config(&config),
        outbox.clone(),
        heartbeat.clone(),
        command_wake.clone(),
    ));
    let workdir = resolve_workdir(&config.exec.workdir)
        .to_string_lossy()
        .into_owned();
    let commands = CommandProcessor::new(
        store.clone(),
        outbox.clone(),
        exec.clone(),
        workdir,
        command_wake,
        crate::data_dir::FreeSpace {
            dir: config.store.data_dir(),
            min_free: config.store.min_free,
        },
    );

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let heartbeat_task = start_heartbeat(stop.child_token());
    // Before the command processor: a pending /exec must not be mistaken for a job that was
    // running when the previous relay stopped.
    exec.reconcile().await.context("cannot reconcile jobs")?;
    tracker.spawn(commands.run(stop.child_token()));
    tracker.spawn(prune_dedupe_records(store.clone(), stop.child_token()));
    tracker.spawn(crate::retention::run(
        store.clone(),
        config.store.jobs_dir(),
        config.exec.keep_jobs,
        stop.child_token(),
    ));
    for channel in &channels {
        let Some(wake) = outbox.waker(channel.name()) else {
            continue;
        };
        tracker.spawn(crate::delivery::run_worker(
            channel.clone(),
            store.clone(),
            config.outbox.clone(),
            wake,
            outbox.health().clone(),
            stop.child_token(),
        ));
        let (channel, sink, token) = (channel.clone(), inbound.clone(), stop.child_token());
        tracker.spawn(async move {
            if let Err(error) = channel.run_inbound(sink, token).await {
                tracing::error!(channel = channel.name(), error = %error, "inbound stopped");
            }
        });
    }

    // Events left queued by the previous run go out with the reason they asked for.
    for event in store.all_queued_events().await? {
        if let Some(wake) = &event.wake {
            heartbeat.request(Reason::parse(wake), Some(event.session.clone()));
        }
    }

    let app = router(ApiState {
        store: store.clone(),
        inbound,
        heartbeat,
        outbox,
        local,
        webhook,
        feishu,
        api_token: api_token.clone(),
        local_only: generated_token.is_some(),
        max_queued: config.events.max_queued,
        stop: stop.clone(),
        rejections: Arc::new(LogThrottle::new(Duration::from_secs(1))),
        tarpit: Arc::default(),
    });
    let signals = shutdown_signals(stop.clone()).context("cannot listen for SIGTERM and SIGINT")?;
    tokio::spawn(signals);
    tracing::info!("{}", startup_line(&config, bound));
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    if let Some(path) = &ready_file {
        write_ready_file(path, bound)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    crate::serve::serve(listener, app, stop.clone()).await;

    stop.cancel();
    tracker.close();
    let drained = async {
        tracker.wait().await;
        let _ = heartbeat_task.await;
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, drained)
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed; unfinished work resumes at the next start");
    }
    tracing::info!("stopped; running jobs continue under their supervisors");
    Ok(())
}
