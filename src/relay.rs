//! Wiring: builds every stage from the config ([`build`]), starts them in order, and stops them
//! in order ([`serve`]), always: whatever ends the run, a signal or a step that fails, the
//! tail cancels and drains everything started.
//!
//! Start: store (migrations, release this node's leases) → channels → outbox → heartbeat →
//! exec runtime → command processor → delivery workers → job reconciliation → wakes for events
//! left queued → HTTP. Stop (SIGTERM/SIGINT, or an error): HTTP and inbound stop taking work,
//! the command processor and heartbeat finish their current step, delivery workers record
//! what is in flight (bounded), then the process exits. Jobs keep running under their
//! supervisors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use execrelay_channel::CancellationToken;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::channels::{ChannelRefused, Channels, build_channels};
use crate::config::Config;
use crate::data_dir::{api_token, keep_webhook_secret, lock_store, make_private, webhook_secret};
use crate::deliver::heartbeat::{self, Heartbeat, HeartbeatLoop, Reason};
use crate::deliver::outbox::Outbox;
use crate::ingest::commands::CommandProcessor;
use crate::ingest::inbound::{Access, InboundHandler};
use crate::run::exec::{ExecRuntime, resolve_workdir};
use crate::run::jobs::Redactor;
use crate::serve::api::{ApiState, router};
use crate::store::Store;
use crate::util::log_throttle::LogThrottle;

/// Past the delivery workers' grace (25 s), for everything else to wind down.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

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

/// Every stage, built and wired; nothing runs yet.
pub struct Stages {
    config: Config,
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    store: Store,
    channels: Vec<Arc<dyn execrelay_channel::Channel>>,
    outbox: Outbox,
    heartbeat: Heartbeat,
    heartbeat_loop: HeartbeatLoop,
    exec: ExecRuntime,
    inbound: Arc<InboundHandler>,
    commands: CommandProcessor,
    local: Option<Arc<crate::ingest::local::LocalChannel>>,
    webhook: Option<Arc<execrelay_webhook::WebhookChannel>>,
    feishu: Option<crate::serve::api::FeishuEndpoint>,
    api_token: execrelay_channel::Secret,
    /// The API token is the generated one: the API answers local clients only (and no web
    /// page but the console).
    local_only: bool,
}

/// Runs the relay until SIGTERM or SIGINT: [`build`], then [`serve`].
pub async fn run(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Before anything counts: what the stages record from here on shows at `GET /metrics`.
    crate::serve::metrics::install();
    let stages = build(config).await?;
    serve(stages, ready_file).await
}

/// Builds every stage from the config. Everything that can refuse comes before anything is
/// created: a relay that will not start leaves no data directory, database or secret behind.
pub async fn build(config: Config) -> anyhow::Result<Stages> {
    let listen = config.http.listen;
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
    let (heartbeat, heartbeat_loop) =
        heartbeat::new(config.heartbeat.clone(), store.clone(), outbox.clone());
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
        exec.redactor().clone(),
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
    Ok(Stages {
        config,
        listener,
        bound,
        store,
        channels,
        outbox,
        heartbeat,
        heartbeat_loop,
        exec,
        inbound,
        commands,
        local,
        webhook,
        feishu,
        api_token,
        local_only: generated_token.is_some(),
    })
}

/// Starts every stage and serves HTTP until SIGTERM or SIGINT, or until a step fails; either
/// way everything started is then stopped and drained (sends in flight are recorded), within
/// [`SHUTDOWN_DEADLINE`], before the result is returned.
pub async fn serve(stages: Stages, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Before anything starts: a signal during the start, or during a failed start's drain,
    // stops gracefully too.
    let served = match shutdown_signals(stop.clone()) {
        Ok(signals) => {
            tracker.spawn(signals);
            start_and_serve(stages, ready_file, &stop, &tracker).await
        }
        Err(error) => {
            Err(anyhow::Error::new(error).context("cannot listen for SIGTERM and SIGINT"))
        }
    };
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed; unfinished work resumes at the next start");
    }
    tracing::info!("stopped; running jobs continue under their supervisors");
    served
}

/// The start, in order, then HTTP until `stop`. Every task goes on `tracker`.
async fn start_and_serve(
    stages: Stages,
    ready_file: Option<PathBuf>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    tracker.spawn(stages.heartbeat_loop.run(stop.child_token()));
    // Before the command processor: a pending /exec must not be mistaken for a job that was
    // running when the previous relay stopped.
    stages
        .exec
        .reconcile()
        .await
        .context("cannot reconcile jobs")?;
    tracker.spawn(stages.commands.run(stop.child_token()));
    tracker.spawn(
        crate::deliver::progress::ProgressLane::new(
            stages.store.clone(),
            stages.outbox.clone(),
            stages.exec.clone(),
            stages.config.clone(),
        )
        .run(stop.child_token()),
    );
    tracker.spawn(crate::run::retention::prune_dedupe_records(
        stages.store.clone(),
        stop.child_token(),
    ));
    tracker.spawn(crate::run::retention::run(
        stages.store.clone(),
        stages.config.store.jobs_dir(),
        stages.config.exec.keep_jobs,
        stop.child_token(),
    ));
    for channel in &stages.channels {
        let Some(wake) = stages.outbox.waker(channel.name()) else {
            continue;
        };
        tracker.spawn(crate::deliver::delivery::run_worker(
            channel.clone(),
            stages.store.clone(),
            stages.config.outbox.clone(),
            wake,
            stages.outbox.health().clone(),
            stop.child_token(),
        ));
        let (channel, sink, token) = (channel.clone(), stages.inbound.clone(), stop.child_token());
        tracker.spawn(async move {
            if let Err(error) = channel.run_inbound(sink, token).await {
                tracing::error!(channel = channel.name(), error = %error, "inbound stopped");
            }
        });
    }
    if crate::util::failpoint::is_armed(crate::util::failpoint::FAIL_AFTER_START) {
        // A test's stand-in for a step that fails once work is under way: the sends the
        // workers began meanwhile must still be recorded.
        tokio::time::sleep(Duration::from_millis(300)).await;
        anyhow::bail!(
            "{}: a step after the start failed",
            crate::util::failpoint::VARIABLE
        );
    }

    // Events left queued by the previous run go out with the reason they asked for.
    for event in stages.store.all_queued_events().await? {
        if let Some(wake) = &event.wake {
            stages
                .heartbeat
                .request(Reason::parse(wake), Some(event.session.clone()));
        }
    }

    let app = router(ApiState {
        store: stages.store.clone(),
        inbound: stages.inbound,
        heartbeat: stages.heartbeat,
        outbox: stages.outbox,
        local: stages.local,
        exec: stages.exec.clone(),
        webhook: stages.webhook,
        feishu: stages.feishu,
        api_token: stages.api_token,
        local_only: stages.local_only,
        max_queued: stages.config.events.max_queued,
        stop: stop.clone(),
        rejections: Arc::new(LogThrottle::new(Duration::from_secs(1))),
        tarpit: Arc::default(),
        proofs: Arc::default(),
    });
    tracing::info!("{}", startup_line(&stages.config, stages.bound));
    for warning in &stages.config.warnings {
        tracing::warn!("config: {warning}");
    }
    if let Some(path) = &ready_file {
        write_ready_file(path, stages.bound)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    crate::serve::http::serve(stages.listener, app, stop.clone()).await;
    Ok(())
}
