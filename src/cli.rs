//! The command line: `run`, `config check`, the hidden `supervise`, and the clients of a
//! running relay (`chat`, `jobs`, `notify`, `outbox`), which speak its HTTP API.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::Config;
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
    /// Check the config file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Talk to the running relay as the local user (type /exec ..., see the completion).
    Chat(ClientArgs),
    /// List recent jobs.
    Jobs(ClientArgs),
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
    /// Show pending and dead-lettered deliveries.
    Outbox(ClientArgs),
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

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The relay's address (default: [http] listen from the config).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
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

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
        let addr = args.addr.unwrap_or(config.http.listen);
        if addr.port() == 0 {
            bail!("the relay listens on a random port; pass --addr HOST:PORT");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Client {
            base: format!("http://{addr}"),
            token: config
                .http
                .api_token
                .as_ref()
                .map(|t| t.expose().to_string()),
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

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the relay at {} (is it running?)", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "the relay answered {status}: {}",
                body["error"].as_str().unwrap_or("?")
            );
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn jobs(config: &Config, args: &ClientArgs) -> anyhow::Result<()> {
    let body = Client::new(config, args)?.get("/v1/jobs").await?;
    let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!("no jobs");
    }
    for job in jobs {
        let outcome = match (&job["exit_code"], &job["signal"]) {
            (Value::Number(code), _) => format!("{} {code}", text(&job["state"])),
            (_, Value::Number(signal)) => format!("{} signal {signal}", text(&job["state"])),
            _ => text(&job["state"]),
        };
        println!(
            "{}  {:<18} {:<24} {}",
            text(&job["id"]),
            outcome,
            text(&job["session"]),
            crate::jobs::one_line(&text(&job["command"]), 80)
        );
    }
    Ok(())
}

pub async fn outbox(config: &Config, args: &ClientArgs) -> anyhow::Result<()> {
    let body = Client::new(config, args)?.get("/v1/outbox").await?;
    let deliveries = body["deliveries"].as_array().cloned().unwrap_or_default();
    if deliveries.is_empty() {
        println!("outbox empty: nothing pending, nothing dead-lettered");
    }
    for d in deliveries {
        println!(
            "{:<8} {}  {}:{}  attempts {}  last error: {}  | {}",
            text(&d["state"]),
            text(&d["key"]),
            text(&d["channel"]),
            text(&d["chat_id"]),
            text(&d["attempts"]),
            text(&d["last_error"]),
            crate::jobs::one_line(&text(&d["text"]), 80)
        );
    }
    Ok(())
}

pub async fn notify(
    config: &Config,
    args: &ClientArgs,
    message: &str,
    session: Option<&str>,
    mode: &str,
) -> anyhow::Result<()> {
    let mut body = json!({"text": message, "mode": mode});
    if let Some(session) = session {
        body["session"] = json!(session);
    }
    let answer = Client::new(config, args)?.post("/v1/events", body).await?;
    println!("queued event {}", text(&answer["event_id"]));
    Ok(())
}

/// An interactive conversation: lines typed go to the relay as the local user; the bot's
/// messages print as they arrive.
pub async fn chat(config: &Config, args: &ClientArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncBufReadExt;

    let client = Client::new(config, args)?;
    let stream = client
        .request(reqwest::Method::GET, "/v1/chat/stream")
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {} (is it running?)", client.base))?;
    if !stream.status().is_success() {
        bail!("the relay refused the chat stream: {}", stream.status());
    }
    println!(
        "connected to {}; type /help, /exec <command>; Ctrl-D quits",
        client.base
    );
    let printer = tokio::spawn(async move {
        let mut bytes = stream.bytes_stream();
        let mut pending = Vec::new();
        while let Some(Ok(chunk)) = bytes.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Ok(value) = serde_json::from_slice::<Value>(&line)
                    && let Some(message) = value["text"].as_str()
                {
                    println!("\nbot> {}", message.replace('\n', "\n     "));
                    let _ = std::io::stdout().flush();
                }
            }
        }
        eprintln!("\nthe relay closed the chat stream");
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(error) = client.post("/v1/chat", json!({"text": line})).await {
            eprintln!("not sent: {error:#}");
        }
    }
    // Give the last answers a moment to print before leaving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    printer.abort();
    Ok(())
}
