//! The real `execrelay` binary under measurement: its own temp dir, loopback only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub const SECRET: &str = "bench-webhook-secret";
pub const USER: &str = "bench";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Relay {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub base: String,
    pub started: Instant,
    pub ready_after: Duration,
    client: reqwest::Client,
}

/// The bench's API token: the API asks every `/v1` request for one.
const API_TOKEN: &str = "bench-api-token";

/// Options beyond the common config (raw TOML appended to it).
pub fn config(dir: &Path, callback: &str, extra: &str) -> String {
    let db = dir.join("execrelay.db");
    let heartbeat = dir.join("HEARTBEAT.md");
    format!(
        r#"[store]
path = {db:?}

[http]
listen = "127.0.0.1:0"
api_token = "{API_TOKEN}"

[access]
allow = ["webhook:{USER}"]

[exec]
workdir = {dir:?}
max_concurrent = 4000
tail_lines = 5

[heartbeat]
every = "30m"
file = {heartbeat:?}

[channels.webhook]
enabled = true
secret = "{SECRET}"
callback_url = "{callback}"
{extra}
"#
    )
}

impl Relay {
    /// Starts the binary at `bin` and waits for its ready file (bounded).
    pub fn start(bin: &Path, callback: &str, extra: &str) -> anyhow::Result<Relay> {
        let dir = tempfile::Builder::new()
            .prefix("execrelay-bench-")
            .tempdir()?;
        // Effectively empty: the guard that once swallowed completions is in force.
        std::fs::write(dir.path().join("HEARTBEAT.md"), "# Heartbeat\n\n")?;
        let cfg = dir.path().join("execrelay.toml");
        std::fs::write(&cfg, config(dir.path(), callback, extra))?;
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("relay.log"))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .arg("--ready-file")
            .arg(&ready)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut relay = Relay {
            dir,
            child,
            base: String::new(),
            started,
            ready_after: Duration::ZERO,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        loop {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                relay.base = format!("http://{}", addr.trim());
                relay.ready_after = started.elapsed();
                return Ok(relay);
            }
            if let Some(status) = relay.child.try_wait()? {
                bail!("the relay exited at start ({status}); see its log");
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("the relay did not become ready within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts a signed webhook message from the bench user in the direct conversation
    /// `conversation`.
    pub async fn say(
        &self,
        conversation: &str,
        text: &str,
        message_id: &str,
    ) -> anyhow::Result<()> {
        self.say_in(conversation, "direct", text, message_id).await
    }

    /// The same in a group: each group is a session of its own (its own event queue).
    pub async fn say_in_group(
        &self,
        group: &str,
        text: &str,
        message_id: &str,
    ) -> anyhow::Result<()> {
        self.say_in(group, "group", text, message_id).await
    }

    async fn say_in(
        &self,
        conversation: &str,
        chat_type: &str,
        text: &str,
        message_id: &str,
    ) -> anyhow::Result<()> {
        let body = json!({"conversation_id": conversation, "user_id": USER, "text": text,
                          "message_id": message_id, "chat_type": chat_type})
        .to_string();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .to_string();
        let status = self
            .client
            .post(format!("{}/webhook", self.base))
            .header("Content-Type", "application/json")
            .header("X-Execrelay-Timestamp", &timestamp)
            .header("X-Execrelay-Signature", sign(&timestamp, body.as_bytes()))
            .body(body)
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("the relay answered {status} to a webhook message");
        }
        Ok(())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<u16> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_TOKEN)
            .json(body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The job id in `started job <id>: ...` or `exec finished: ... job <id>)`.
pub fn job_id(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("started job ") {
        return rest.split(':').next();
    }
    let first = text.lines().next()?;
    let at = first.rfind("job ")?;
    Some(first[at + 4..].trim_end_matches(')'))
}
