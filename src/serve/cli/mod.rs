//! The command line: `run`, `config check`, `doctor`, the hidden `supervise`, and the clients of a
//! running relay (`chat`, `jobs`, `notify`, `outbox`, `events`), which speak its HTTP API and
//! need only its address and API token ([`ClientConfig`]).
//!
//! Here: the arguments, the dispatch, the HTTP client and the output helpers; `listings.rs`
//! the listings and one-shot clients; `chat.rs` the conversation; `doctor.rs` the checks of a
//! relay's setup.
//!
//! Clients print through [`out`]: a reader that goes away (`execrelay jobs | head -2`) ends the
//! command quietly with status 0, without changing how the process treats SIGPIPE.

use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::ClientConfig;
use crate::run::supervisor::SuperviseArgs;

mod chat;
pub mod doctor;
mod listings;

use chat::chat;
use listings::{events, jobs, notify, outbox};

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
    /// Check that this relay would work: config, data directory, store, supervisor, listener
    /// and each channel's credentials with its platform; exit 1 when a check fails.
    Doctor {
        /// Print the checks as one JSON document.
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        keep_background: bool,
        /// Absent (an older relay): no cap.
        #[arg(long)]
        max_output: Option<u64>,
        /// Run the job as this uid (with --gid).
        #[arg(long, requires = "gid")]
        uid: Option<u32>,
        #[arg(long, requires = "uid")]
        gid: Option<u32>,
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Run every check `run` makes before it serves; report every problem (exit 2) and warning.
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
    #[arg(long, default_value = "30m", value_parser = crate::util::duration::parse_duration)]
    pub wait: Duration,
    /// How long to keep trying to reach a relay that went away (a restart) before giving up.
    #[arg(long, default_value = "1m", value_parser = crate::util::duration::parse_duration)]
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
            keep_background,
            max_output,
            uid,
            gid,
            command,
        } => Some(SuperviseArgs {
            job_dir: job_dir.clone(),
            job_id: job_id.clone(),
            shell: shell.clone(),
            workdir: workdir.clone(),
            command: command.join(" "),
            timeout: Duration::from_millis(*timeout_ms),
            grace: Duration::from_millis(*grace_ms),
            keep_background: *keep_background,
            max_output: max_output.unwrap_or(u64::MAX),
            run_as: uid.zip(*gid),
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
    let text = text.to_string();
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", crate::logging::visible(&text)).and_then(|()| stdout.flush()) {
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
        | Command::Doctor { .. }
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
        if let Some(owner) = settings.token_owner {
            check_listener(addr, owner)?;
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

/// The generated token goes only to a listener of the token file's owner: while the relay
/// is down, another local user could listen on its port and collect it.
fn check_listener(addr: SocketAddr, owner: u32) -> anyhow::Result<()> {
    match listener_uids(addr) {
        Some(uids) if !uids.is_empty() && uids.iter().all(|&uid| uid == owner) => Ok(()),
        Some(uids) if !uids.is_empty() => bail!(
            "not sending the relay's API token: what listens on {addr} is uid {uids:?}'s, not \
             the relay's user's (uid {owner}); is the relay running?"
        ),
        _ => bail!("no relay is listening on {addr} (is it running?)"),
    }
}

/// The uids of the TCP sockets listening on `addr` (or on every address at its port), from
/// the kernel's tables; `None` where they cannot be read.
fn listener_uids(addr: SocketAddr) -> Option<Vec<u32>> {
    let mut uids = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(uid)) =
                (fields.get(1), fields.get(3), fields.get(7))
            else {
                continue;
            };
            let Some((ip, port)) = local.split_once(':') else {
                continue;
            };
            let listening = *state == "0A";
            let same_port = u16::from_str_radix(port, 16).ok() == Some(addr.port());
            let any_address = ip.chars().all(|c| c == '0');
            if listening && same_port && (any_address || ip_matches(ip, addr.ip())) {
                uids.push(uid.parse().ok()?);
            }
        }
    }
    Some(uids)
}

/// The kernel's hex form of an address (IPv4: one little-endian word; IPv6: four).
fn ip_matches(hex: &str, ip: std::net::IpAddr) -> bool {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    match ip {
        std::net::IpAddr::V4(v4) => words == [u32::from_le_bytes(v4.octets())],
        std::net::IpAddr::V6(v6) => {
            let octets = v6.octets();
            let expected: Vec<u32> = octets
                .chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            words == expected
        }
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
