//! The command line: `run`, `config check`, the hidden `supervise`, and the clients of a
//! running relay (`chat`, `jobs`, `notify`, `outbox`, `events`), which speak its HTTP API and
//! need only its address and API token ([`ClientConfig`]).
//!
//! Clients print through [`out`]: a reader that goes away (`execrelay jobs | head -2`) ends the
//! command quietly with status 0, without changing how the process treats SIGPIPE.

use std::collections::HashSet;
use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::ClientConfig;
use crate::supervisor::SuperviseArgs;

#[derive(Parser, Debug)]
#[command(
    name = "execrelay",
    version,
    about = "Run long shell commands from chat; every completion reaches the right chat, once."
)]
pub struct Cli {
    /// Config file (default: ./execrelay.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "EXECRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay.
    Run {
        /// Write the bound HTTP address here once the relay is ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Copy the database, consistently, while the relay runs (or not): a file a relay can
    /// start on as it is.
    Backup {
        /// Where the copy goes; must not exist yet.
        path: PathBuf,
    },
    /// Check the config file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Talk to the running relay as the local user (type /exec ..., see the completion).
    Chat(ChatArgs),
    /// List recent jobs: state, exit, start time and duration.
    Jobs(ListArgs),
    /// Queue a system event for a session.
    Notify {
        text: String,
        /// Session key (default: the local user's, user:local:local).
        #[arg(long)]
        session: Option<String>,
        #[arg(long, default_value = "now", value_parser = ["now", "next-heartbeat"])]
        mode: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show pending and dead-lettered deliveries; retry or drop them.
    Outbox {
        #[command(subcommand)]
        action: Option<OutboxAction>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show queued events (and why any are blocked); drop them.
    Events {
        #[command(subcommand)]
        action: Option<EventsAction>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Internal: supervise one job (started by the relay).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        job_dir: PathBuf,
        #[arg(long)]
        job_id: String,
        #[arg(long)]
        shell: PathBuf,
        #[arg(long)]
        workdir: PathBuf,
        #[arg(long)]
        timeout_ms: u64,
        #[arg(long)]
        grace_ms: u64,
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate the config file; exits non-zero on the first error.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum OutboxAction {
    /// Send a dead letter again (fresh attempts, due now, behind its chat's queue).
    Retry {
        /// The delivery's id (the first column of `execrelay outbox`).
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Never send a pending or dead delivery.
    Drop {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsAction {
    /// Take a queued event out of the queue without sending it (recorded as dropped).
    Drop {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The relay's address (default: [http] listen from the config).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the API's JSON as it is (one document).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Once input ends, how long to wait at most for the completions of the jobs this chat
    /// started (e.g. 90s, 30m).
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse_duration)]
    pub wait: Duration,
    /// How long to keep trying to reach a relay that went away (a restart) before giving up.
    #[arg(long, default_value = "1m", value_parser = crate::duration::parse_duration)]
    pub reconnect_for: Duration,
}

pub fn supervise_args(command: &Command) -> Option<SuperviseArgs> {
    match command {
        Command::Supervise {
            job_dir,
            job_id,
            shell,
            workdir,
            timeout_ms,
            grace_ms,
            command,
        } => Some(SuperviseArgs {
            job_dir: job_dir.clone(),
            job_id: job_id.clone(),
            shell: shell.clone(),
            workdir: workdir.clone(),
            command: command.join(" "),
            timeout: Duration::from_millis(*timeout_ms),
            grace: Duration::from_millis(*grace_ms),
        }),
        _ => None,
    }
}

/// Stdout went away (a reader such as `head` closed the pipe): the command stops quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Prints `text` and a newline to stdout, flushed. A closed pipe is [`StdoutClosed`], which
/// [`quietly`] turns into success; any other write error is an error.
pub fn out(text: impl Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(anyhow::Error::new(error).context("cannot write to stdout")),
    }
}

/// [`out`] for a line outside the clients (`config check`'s `ok`): a closed stdout is done.
pub fn write_line(text: impl Display) -> anyhow::Result<()> {
    quietly(out(text))
}

/// A command's result, with a closed stdout counting as done.
pub fn quietly(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if error.downcast_ref::<StdoutClosed>().is_some() => Ok(()),
        other => other,
    }
}

/// Runs a client subcommand; a reader that closed stdout early is not a failure.
pub async fn run_client(settings: &ClientConfig, command: &Command) -> anyhow::Result<()> {
    quietly(match command {
        Command::Chat(args) => chat(settings, args).await,
        Command::Jobs(args) => jobs(settings, args).await,
        Command::Outbox { action, list } => outbox(settings, action.as_ref(), list).await,
        Command::Events { action, list } => events(settings, action.as_ref(), list).await,
        Command::Notify {
            text,
            session,
            mode,
            client,
        } => notify(settings, client, text, session.as_deref(), mode).await,
        Command::Run { .. }
        | Command::Backup { .. }
        | Command::Config { .. }
        | Command::Supervise { .. } => {
            bail!("not a client command")
        }
    })
}

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(settings: &ClientConfig, args: &ClientArgs) -> anyhow::Result<Client> {
        let addr = args.addr.unwrap_or(settings.listen);
        if addr.port() == 0 {
            bail!("the relay listens on a random port; pass --addr HOST:PORT");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Client {
            base: format!("http://{addr}"),
            token: settings.api_token.as_ref().map(|t| t.expose().to_string()),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|error| ClientError::Unreachable {
                base: self.base.clone(),
                error,
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Refused {
                status,
                error: body["error"].as_str().unwrap_or("?").to_string(),
            });
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}

#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("cannot reach the relay at {base} (is it running?): {error}")]
    Unreachable { base: String, error: reqwest::Error },
    /// The relay's own words first: they name what was wrong (`no delivery 42`).
    #[error("{error} (the relay answered {status})")]
    Refused {
        status: reqwest::StatusCode,
        error: String,
    },
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A store timestamp (unix ms) as local time.
fn local_time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// How long a job ran, or has been running.
fn job_duration(job: &Value, now_ms: i64) -> String {
    let since = |from: i64, to: i64| {
        crate::duration::format_duration(Duration::from_millis(
            to.saturating_sub(from).max(0) as u64
        ))
    };
    match (job["started_at"].as_i64(), job["finished_at"].as_i64()) {
        (Some(start), Some(end)) => since(start, end),
        (Some(start), None) => format!("running {}", since(start, now_ms)),
        _ => "-".into(),
    }
}

fn job_outcome(job: &Value) -> String {
    match (&job["exit_code"], &job["signal"]) {
        (Value::Number(code), _) => format!("{} {code}", text(&job["state"])),
        (_, Value::Number(signal)) => format!("{} signal {signal}", text(&job["state"])),
        _ => text(&job["state"]),
    }
}

/// GET `path`: with `--json`, prints the answer as it is and returns `None`; else the rows
/// under `key`.
async fn listing(
    settings: &ClientConfig,
    args: &ListArgs,
    path: &str,
    key: &str,
) -> anyhow::Result<Option<Vec<Value>>> {
    let body = Client::new(settings, &args.client)?.get(path).await?;
    if args.json {
        out(body)?;
        return Ok(None);
    }
    Ok(Some(body[key].as_array().cloned().unwrap_or_default()))
}

pub async fn jobs(settings: &ClientConfig, args: &ListArgs) -> anyhow::Result<()> {
    let Some(jobs) = listing(settings, args, "/v1/jobs", "jobs").await? else {
        return Ok(());
    };
    if jobs.is_empty() {
        return out("no jobs");
    }
    let now = crate::store::now_ms();
    out(format!(
        "{:<8} {:<18} {:<19} {:<16} {:<24} COMMAND",
        "ID", "STATE", "STARTED", "DURATION", "SESSION"
    ))?;
    for job in jobs {
        out(format!(
            "{:<8} {:<18} {:<19} {:<16} {:<24} {}",
            text(&job["id"]),
            job_outcome(&job),
            local_time(&job["started_at"]),
            job_duration(&job, now),
            text(&job["session"]),
            crate::jobs::one_line(&text(&job["command"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn outbox(
    settings: &ClientConfig,
    action: Option<&OutboxAction>,
    list: &ListArgs,
) -> anyhow::Result<()> {
    match action {
        None => list_outbox(settings, list).await,
        // Clap requires an id or `--all`.
        Some(OutboxAction::Retry { id, client, .. }) => {
            let client = Client::new(settings, client)?;
            let path = match id {
                Some(id) => format!("/v1/outbox/{id}/retry"),
                None => "/v1/outbox/retry".to_string(),
            };
            let answer = client.post(&path, json!({})).await?;
            let retried = answer["retried"].as_array().cloned().unwrap_or_default();
            if retried.is_empty() {
                return out("no dead letters to retry");
            }
            for row in retried {
                out(format!(
                    "retrying delivery {} on {} (now delivery {})",
                    text(&row["was"]),
                    text(&row["channel"]),
                    text(&row["id"])
                ))?;
            }
            Ok(())
        }
        Some(OutboxAction::Drop { id, client }) => {
            Client::new(settings, client)?
                .delete(&format!("/v1/outbox/{id}"))
                .await?;
            out(format!("dropped delivery {id}"))
        }
    }
}

async fn list_outbox(settings: &ClientConfig, args: &ListArgs) -> anyhow::Result<()> {
    let Some(deliveries) = listing(settings, args, "/v1/outbox", "deliveries").await? else {
        return Ok(());
    };
    if deliveries.is_empty() {
        return out("outbox empty: nothing pending, nothing dead-lettered");
    }
    for d in deliveries {
        let cause = match d["dead_cause"].as_str() {
            Some(cause) => format!(" ({cause}: retried at start once configured)"),
            None => String::new(),
        };
        out(format!(
            "{:>6} {:<8} {}  {}:{}  attempts {}  last error: {}{cause}  | {}",
            text(&d["id"]),
            text(&d["state"]),
            text(&d["key"]),
            text(&d["channel"]),
            text(&d["chat_id"]),
            text(&d["attempts"]),
            text(&d["last_error"]),
            crate::jobs::one_line(&text(&d["text"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn events(
    settings: &ClientConfig,
    action: Option<&EventsAction>,
    list: &ListArgs,
) -> anyhow::Result<()> {
    if let Some(EventsAction::Drop { id, client }) = action {
        Client::new(settings, client)?
            .delete(&format!("/v1/events/{id}"))
            .await?;
        return out(format!("dropped event {id}"));
    }
    let Some(events) = listing(settings, list, "/v1/events", "events").await? else {
        return Ok(());
    };
    if events.is_empty() {
        return out("no queued events");
    }
    for e in events {
        let why = match e["blocked"].as_str() {
            Some(reason) => format!("blocked: {reason}"),
            None => "queued".into(),
        };
        out(format!(
            "{:>6} {:<24} {:<28} queued {}  | {}",
            text(&e["id"]),
            text(&e["session"]),
            why,
            local_time(&e["created_at"]),
            crate::jobs::one_line(&text(&e["text"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn notify(
    settings: &ClientConfig,
    args: &ClientArgs,
    message: &str,
    session: Option<&str>,
    mode: &str,
) -> anyhow::Result<()> {
    let mut body = json!({"text": message, "mode": mode});
    if let Some(session) = session {
        body["session"] = json!(session);
    }
    let answer = Client::new(settings, args)?
        .post("/v1/events", body)
        .await?;
    out(format!("queued event {}", text(&answer["event_id"])))
}

/// The first pause before reconnecting a chat stream, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often a chat client asks the relay what its messages produced, while it waits.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

type ChatStream = futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>;

/// A message this chat sent, and what it is still owed: its processing, its last reply and
/// its job's completion, each seen whole on the stream (by message key, not by its text).
struct Followed {
    inbox_id: i64,
    text: String,
    processed: bool,
    reply_key: Option<String>,
    job: Option<String>,
    completion_key: Option<String>,
    /// The job's completion will not reach this chat (another channel, dropped): said once.
    completion_elsewhere: bool,
    /// Where the job's completion stands, for the report when the wait runs out.
    status: String,
}

impl Followed {
    fn job_done(&self, seen: &HashSet<String>) -> bool {
        self.job.is_none()
            || self.completion_elsewhere
            || self
                .completion_key
                .as_ref()
                .is_some_and(|k| seen.contains(k))
    }

    fn done(&self, seen: &HashSet<String>) -> bool {
        self.processed
            && self.reply_key.as_ref().is_none_or(|k| seen.contains(k))
            && self.job_done(seen)
    }

    /// Asks the relay what is still unknown; quiet about a relay that is away (the stream
    /// notices that and reconnects).
    async fn poll(&mut self, client: &Client) -> anyhow::Result<()> {
        if !self.processed {
            let Ok(status) = client.get(&format!("/v1/inbox/{}", self.inbox_id)).await else {
                return Ok(());
            };
            if status["processed"] != json!(true) {
                return Ok(());
            }
            self.processed = true;
            self.reply_key = local_key(&status["last_reply"]);
            self.job = status["job_id"].as_str().map(str::to_string);
            self.status = "running".into();
        }
        let Some(job) = self.job.clone() else {
            return Ok(());
        };
        if self.completion_key.is_some() || self.completion_elsewhere {
            return Ok(());
        }
        let Ok(body) = client.get(&format!("/v1/jobs/{job}")).await else {
            return Ok(());
        };
        let completion = &body["completion"];
        self.status = match (completion["event_state"].as_str(), &completion["delivery"]) {
            (None, _) => text(&body["state"]),
            (Some("dropped"), _) => {
                self.completion_elsewhere = true;
                eprintln!(
                    "job {job} ended ({}); its completion was dropped",
                    job_outcome(&body)
                );
                return Ok(());
            }
            (Some(_), Value::Null) => match completion["blocked"].as_str() {
                Some(reason) => format!("finished; its completion waits: {reason}"),
                None => "finished; its completion is queued".into(),
            },
            (Some(_), delivery) => {
                if let Some(key) = local_key(delivery)
                    && delivery["state"] != "dropped"
                {
                    self.completion_key = Some(key);
                } else {
                    self.completion_elsewhere = true;
                    out(format!(
                        "job {job} ended ({}); its completion went to {} ({})",
                        job_outcome(&body),
                        text(&delivery["channel"]),
                        text(&delivery["state"])
                    ))?;
                }
                "finished; its completion is on its way".into()
            }
        };
        Ok(())
    }

    fn describe(&self) -> String {
        match (&self.job, self.processed) {
            (_, false) => format!("`{}`: not processed yet", self.text),
            (Some(job), true) => format!("job {job} ({}): {}", self.text, self.status),
            (None, true) => format!("`{}`: its reply has not arrived", self.text),
        }
    }
}

/// The key of a message bound for this chat (`DeliveryRef` JSON), if it is one.
fn local_key(delivery: &Value) -> Option<String> {
    (delivery["channel"] == crate::inbound::LOCAL_CHANNEL)
        .then(|| delivery["key"].as_str().map(str::to_string))
        .flatten()
}

async fn open_stream(client: &Client) -> anyhow::Result<ChatStream> {
    use futures_util::StreamExt;
    let stream = client
        .request(reqwest::Method::GET, "/v1/chat/stream")
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {} (is it running?)", client.base))?;
    if !stream.status().is_success() {
        bail!("the relay refused the chat stream: {}", stream.status());
    }
    Ok(stream.bytes_stream().boxed())
}

/// Opens the stream again, backing off, for at most `bound`. The relay keeps what it could
/// not send meanwhile and sends it to the new stream at once.
async fn reconnect(client: &Client, bound: Duration) -> anyhow::Result<ChatStream> {
    eprintln!(
        "the relay closed the chat stream; reconnecting (for up to {})",
        crate::duration::format_duration(bound)
    );
    let start = Instant::now();
    let mut pause = RECONNECT_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        match open_stream(client).await {
            Ok(stream) => {
                eprintln!(
                    "reconnected to {}; what waited for this chat follows",
                    client.base
                );
                return Ok(stream);
            }
            Err(error) if start.elapsed() >= bound => {
                bail!(
                    "could not reconnect within {}: {error:#}",
                    crate::duration::format_duration(bound)
                )
            }
            Err(_) => pause = (pause * 2).min(RECONNECT_MAX),
        }
    }
}

/// Posts one line as the local user; `Some(inbox id)` to follow. A relay that is away (a
/// restart) is tried again for up to `bound` with the same message id, which the relay
/// dedupes, so a line whose answer was lost does not run twice.
async fn post_line(
    client: &Client,
    line: &str,
    id: &str,
    bound: Duration,
) -> anyhow::Result<Option<i64>> {
    let start = Instant::now();
    let mut pause = RECONNECT_FIRST;
    loop {
        match client
            .post("/v1/chat", json!({"text": line, "id": id}))
            .await
        {
            Ok(answer) => {
                if answer["duplicate"] == json!(true) {
                    eprintln!(
                        "the relay had `{line}` already (its answer was lost); not following it"
                    );
                }
                return Ok(answer["inbox_id"].as_i64());
            }
            Err(error @ ClientError::Refused { .. }) => {
                eprintln!("not sent: {error}");
                return Ok(None);
            }
            Err(error) if start.elapsed() >= bound => return Err(error.into()),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Prints each whole line of the stream (one JSON object per chunk) and notes the messages
/// seen whole.
fn print_stream_lines(pending: &mut Vec<u8>, seen: &mut HashSet<String>) -> anyhow::Result<()> {
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let Ok(value) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let Some(message) = value["text"].as_str() else {
            continue;
        };
        out(format!("bot> {}", message.replace('\n', "\n     ")))?;
        // Chunks of a message arrive in order: the last one completes it.
        if let (Some(key), Some(chunk), Some(chunks)) = (
            value["key"].as_str(),
            value["chunk"].as_u64(),
            value["chunks"].as_u64(),
        ) && chunk + 1 >= chunks
        {
            seen.insert(key.to_string());
        }
    }
    Ok(())
}

/// Lines of stdin, read on a thread of their own: a blocking read must not hold the runtime
/// open when the client leaves (a relay that never came back) while input is still open.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// An interactive conversation: lines typed go to the relay as the local user; the bot's
/// messages print as they arrive. A relay that goes away is reconnected to (within
/// `--reconnect-for`), and what it could not send meanwhile is shown then. Once input ends,
/// the client waits (within `--wait`) for the replies to its messages and the completions of
/// the jobs they started, then exits: 0 if all came, non-zero naming those that did not.
pub async fn chat(settings: &ClientConfig, args: &ChatArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt;

    let client = Client::new(settings, &args.client)?;
    let mut stream = open_stream(&client).await?;
    eprintln!(
        "connected to {}; type /help, /exec <command>; Ctrl-D quits",
        client.base
    );
    let mut lines = stdin_lines();
    let mut input_open = true;
    let mut deadline: Option<Instant> = None;
    let mut followed: Vec<Followed> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pending = Vec::new();
    let mut next_poll = Instant::now();
    // Unique per run, so that the relay's dedupe only ever folds a resend of the same line.
    let run_id = format!("cli-{}-{}", std::process::id(), crate::store::now_ms());
    let mut sent = 0u64;
    loop {
        followed.retain(|f| !f.done(&seen));
        if !input_open {
            if followed.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                let owed: Vec<String> = followed.iter().map(Followed::describe).collect();
                bail!(
                    "gave up waiting after {}; still owed:\n  {}",
                    crate::duration::format_duration(args.wait),
                    owed.join("\n  ")
                );
            }
        }
        let wake_at = match (followed.is_empty(), deadline) {
            (false, Some(at)) => next_poll.min(at),
            (false, None) => next_poll,
            (true, Some(at)) => at,
            (true, None) => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                None => {
                    input_open = false;
                    deadline = Some(Instant::now() + args.wait);
                    if !followed.is_empty() {
                        eprintln!(
                            "input ended; waiting up to {} for what {} message(s) started",
                            crate::duration::format_duration(args.wait),
                            followed.len()
                        );
                    }
                }
                Some(line) => {
                    let line = line.context("cannot read stdin")?;
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    sent += 1;
                    let id = format!("{run_id}-{sent}");
                    if let Some(inbox_id) = post_line(&client, line, &id, args.reconnect_for).await? {
                        followed.push(Followed {
                            inbox_id,
                            text: crate::jobs::one_line(line, 60),
                            processed: false,
                            reply_key: None,
                            job: None,
                            completion_key: None,
                            completion_elsewhere: false,
                            status: "sent".into(),
                        });
                    }
                }
            },
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    print_stream_lines(&mut pending, &mut seen)?;
                }
                Some(Err(_)) | None => {
                    pending.clear();
                    stream = reconnect(&client, args.reconnect_for).await?;
                }
            },
            _ = tokio::time::sleep_until(wake_at.into()) => {
                if Instant::now() >= next_poll {
                    for f in &mut followed {
                        if !f.done(&seen) {
                            f.poll(&client).await?;
                        }
                    }
                    next_poll = Instant::now() + FOLLOW_POLL;
                }
            }
        }
    }
}
