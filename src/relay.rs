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

/// The webhook secret when none is configured: generated once, kept beside the database.
fn webhook_secret(config: &Config) -> anyhow::Result<Secret> {
    if let Some(secret) = &config.channels.webhook.secret {
        return Ok(secret.clone());
    }
    let path = config.store.data_dir().join("webhook.secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(Secret::new(existing));
        }
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    write_private(&path, &secret)
        .with_context(|| format!("cannot write the webhook secret to {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a webhook secret (no channels.webhook.secret configured)");
    Ok(Secret::new(secret))
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
    // Without `allow_unsigned_events` the config refused this already (`validate_secrets`).
    if feishu.encrypt_key.is_none() {
        tracing::warn!(
            "channels.feishu has no encrypt_key: events are neither encrypted nor signed, only \
             the verification token proves the sender; set an Encrypt Key in the Feishu console"
        );
    }
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

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
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

/// Job output and message texts live in the data directory: keep it to this user.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let jobs = dir.join("jobs");
    if !jobs.exists() {
        std::fs::DirBuilder::new().mode(0o700).create(&jobs)?;
    }
    std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o700))
}

/// One relay per store file: a second one would release the first one's delivery leases and
/// resend what it is sending, and start jobs it is starting. So the second one stops here,
/// before it touches anything.
fn lock_store(store: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("{}.lock", store.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; the file is close-on-exec, so no
    // job or supervisor inherits the lock.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another execrelay is already running on {} (it holds {}); stop it first",
                store.display(),
                path.display()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}

pub async fn run(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let listen = config.http.listen;
    if config.http.api_token.is_none() && !listen.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {listen} without http.api_token: set a token or listen on 127.0.0.1"
        );
    }
    make_private_dir(&config.store.data_dir())
        .with_context(|| format!("cannot prepare {}", config.store.data_dir().display()))?;
    // Held until the process ends, past the runtime's last blocking task (the kernel lets go
    // of it then, even after a SIGKILL): never dropped.
    std::mem::forget(lock_store(&config.store.path)?);
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

    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    let local = config
        .channels
        .local
        .enabled
        .then(|| Arc::new(LocalChannel::default()));
    if let Some(local) = &local {
        channels.push(local.clone());
    }
    let mut secrets = config.secrets();
    let webhook = if config.channels.webhook.enabled {
        let secret = webhook_secret(&config)?;
        secrets.push(secret.clone());
        let mut webhook_config = WebhookConfig::new(secret);
        webhook_config.callback_url = config.channels.webhook.callback_url.clone();
        webhook_config.max_chars = config.channels.webhook.max_chars;
        let channel = Arc::new(
            WebhookChannel::new(webhook_config).context("cannot set up the webhook channel")?,
        );
        channels.push(channel.clone());
        Some(channel)
    } else {
        None
    };
    if config.channels.telegram.enabled {
        channels.push(telegram_channel(&config)?);
    }
    if config.channels.discord.enabled {
        channels.push(discord_channel(&config)?);
    }
    let feishu = if config.channels.feishu.enabled {
        let (endpoint, channel) = feishu_channel(&config)?;
        channels.push(channel);
        Some(endpoint)
    } else {
        None
    };
    if config.channels.feishu_bot.enabled {
        channels.push(feishu_bot_channel(&config)?);
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

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    if config.http.api_token.is_none() {
        tracing::warn!(addr = %bound, "no http.api_token: the API is open to local processes, on loopback only");
    }
    let app = router(ApiState {
        store: store.clone(),
        inbound,
        heartbeat,
        outbox,
        local,
        webhook,
        feishu,
        api_token: config.http.api_token.clone(),
        max_queued: config.events.max_queued,
        stop: stop.clone(),
        rejections: Arc::new(LogThrottle::new(Duration::from_secs(1))),
    });
    let signals = shutdown_signals(stop.clone()).context("cannot listen for SIGTERM and SIGINT")?;
    tokio::spawn(signals);
    tracing::info!(addr = %bound, db = %config.store.path.display(), "execrelay is running");
    if let Some(path) = &ready_file {
        write_ready_file(path, bound)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    let server_stop = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { server_stop.cancelled().await })
        .await
        .context("the HTTP server failed")?;

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
