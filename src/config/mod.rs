//! Configuration: one TOML file, or built-in defaults.
//!
//! Owns parsing, validation and secret loading (`*_file` keys and environment variables). Every
//! error names the key and, where the file has it, the line. It does not decide what the values
//! mean at run time; each stage reads its own section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use execrelay_channel::Secret;
use serde::{Deserialize, Deserializer};

use crate::util::duration::parse_duration;

mod check;
pub mod exec_env;
mod keys;
mod partial;
mod problems;
mod secrets;

use keys::KeyIndex;
pub use partial::ClientConfig;
use problems::Findings;
pub use problems::Problem;
use secrets::is_secret_key;

/// Why a config cannot be used: it cannot be read, or it has these problems (every one found,
/// not just the first).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", describe(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn describe(origin: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{origin}: {one}"),
        many => {
            let mut text = format!("{origin}: {} problems", many.len());
            for problem in many {
                text.push_str(&format!("\n  {problem}"));
            }
            text
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub access: AccessConfig,
    pub identities: BTreeMap<String, Vec<String>>,
    pub exec: ExecConfig,
    pub heartbeat: HeartbeatConfig,
    pub events: EventsConfig,
    pub outbox: OutboxConfig,
    pub progress: ProgressConfig,
    pub log: LogConfig,
    pub channels: ChannelsConfig,
    /// The file this was read from; `None`: the built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Doubtful settings that do not stop the relay (`config check` and the start-up log show
    /// them).
    #[serde(skip)]
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Names this relay in delivery leases; relays sharing one database need distinct names.
    pub node: String,
    /// New jobs are refused while the data directory's filesystem has less free than this.
    #[serde(deserialize_with = "de_size")]
    pub min_free: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./data/execrelay.db"),
            node: "local".into(),
            min_free: 256 << 20,
        }
    }
}

impl StoreConfig {
    /// Jobs' logs and exit statuses live beside the database.
    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir().join("jobs")
    }

    pub fn data_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub api_token: Option<Secret>,
    pub api_token_file: Option<PathBuf>,
}

impl HttpConfig {
    /// The API would be reachable from other machines with no token of the operator's
    /// choosing: the relay refuses to start so (`config check`), and `doctor` says it.
    pub fn exposed_without_token(&self) -> bool {
        self.api_token.is_none() && !self.listen.ip().is_loopback()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            api_token: None,
            api_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// `"<channel>:<user_id>"` or an identity name. Empty: nobody (but the local user).
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    pub shell: PathBuf,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    pub max_concurrent: usize,
    /// Jobs one person (session) may run at once; default half of `max_concurrent`.
    pub max_per_session: Option<usize>,
    pub workdir: PathBuf,
    pub tail_lines: usize,
    pub tail_chars: usize,
    pub notify_success: bool,
    /// Hide the command line in completion messages (it may carry arguments users want private).
    pub hide_command: bool,
    #[serde(deserialize_with = "de_duration")]
    pub kill_grace: Duration,
    /// How long a finished job (its output, its ledger row, its delivered messages) is kept
    /// once nothing of it is owed; zero keeps everything.
    #[serde(deserialize_with = "de_duration")]
    pub keep_jobs: Duration,
    /// Leave what a job starts in the background running when it ends (daemons on purpose).
    pub keep_background: bool,
    /// The account jobs run as (a relay running as root only); `None`: the relay's own.
    pub run_as: Option<String>,
    /// The group jobs run with; default: `run_as`'s own.
    pub run_as_group: Option<String>,
    /// Output one job may keep on disk; past it, its log keeps the most recent output.
    #[serde(deserialize_with = "de_size")]
    pub max_output: u64,
    /// What jobs get beyond the base environment (`job_env::BASE`): `NAME` passes the relay's
    /// `NAME` through, `NAME=value` sets it.
    pub env: Vec<String>,
}

impl ExecConfig {
    /// `max_per_session`, or half of `max_concurrent` (at least 1): no one person takes
    /// every slot.
    pub fn per_session_limit(&self) -> usize {
        self.max_per_session
            .unwrap_or((self.max_concurrent / 2).max(1))
    }
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            shell: PathBuf::from("/bin/sh"),
            timeout: Duration::from_secs(30 * 60),
            max_concurrent: 64,
            max_per_session: None,
            workdir: PathBuf::from("."),
            tail_lines: 40,
            tail_chars: 3500,
            notify_success: true,
            hide_command: false,
            kill_grace: Duration::from_secs(5),
            keep_jobs: Duration::from_secs(30 * 24 * 3600),
            env: Vec::new(),
            keep_background: false,
            max_output: 1 << 30,
            run_as: None,
            run_as_group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    Last,
    Origin,
    None,
    Explicit { channel: String, chat_id: String },
}

impl<'de> Deserialize<'de> for TargetPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        match raw.as_str() {
            "last" => Ok(TargetPolicy::Last),
            "origin" => Ok(TargetPolicy::Origin),
            "none" => Ok(TargetPolicy::None),
            other => match other.split_once(':') {
                Some((channel, chat_id)) if !channel.is_empty() && !chat_id.is_empty() => {
                    Ok(TargetPolicy::Explicit {
                        channel: channel.into(),
                        chat_id: chat_id.into(),
                    })
                }
                _ => Err(serde::de::Error::custom(format!(
                    "invalid target `{other}`: expected last, origin, none or <channel>:<chat_id>"
                ))),
            },
        }
    }
}

/// `HH:MM-HH:MM` in the machine's local time; may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveHours {
    pub start_minute: u32,
    pub end_minute: u32,
}

impl ActiveHours {
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

impl<'de> Deserialize<'de> for ActiveHours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let parse_clock = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        raw.split_once('-')
            .and_then(|(a, b)| Some((parse_clock(a)?, parse_clock(b)?)))
            .map(|(start_minute, end_minute)| ActiveHours {
                start_minute,
                end_minute,
            })
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid active_hours `{raw}`: expected HH:MM-HH:MM"
                ))
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_duration")]
    pub every: Duration,
    pub target: TargetPolicy,
    pub file: Option<PathBuf>,
    #[serde(deserialize_with = "de_duration")]
    pub coalesce: Duration,
    /// Exec completions wait less: a person is usually waiting for them.
    #[serde(deserialize_with = "de_duration")]
    pub exec_coalesce: Duration,
    pub active_hours: Option<ActiveHours>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            enabled: true,
            every: Duration::from_secs(30 * 60),
            target: TargetPolicy::Last,
            file: None,
            coalesce: Duration::from_millis(250),
            exec_coalesce: Duration::from_millis(5),
            active_hours: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Queued events per session before new ones coalesce into the newest.
    pub max_queued: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { max_queued: 200 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    #[serde(deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_cap: Duration,
    /// Sends in flight at once per channel (different chats; one chat is always sequential).
    pub concurrency: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(300),
            concurrency: 32,
        }
    }
}

/// How the relay writes its log (to stderr).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for a person (and journald).
    #[default]
    Text,
    /// One JSON object a line, with the fields of the spans it happened in (`job_id`,
    /// `delivery_id`, `channel`, ...) as keys of its own: for log collectors.
    Json,
}

impl LogFormat {
    /// `EXECRELAY_LOG` (`text` or `json`), which wins over the config file.
    pub const ENV: &'static str = "EXECRELAY_LOG";

    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Live jobs in chat: a running job's acknowledgement is edited with its progress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressConfig {
    pub enabled: bool,
    /// At most one edit of a message this often (at least [`MIN_PROGRESS_EVERY`]).
    #[serde(deserialize_with = "de_duration")]
    pub every: Duration,
    /// At most one edit in a chat this often, across its jobs.
    #[serde(deserialize_with = "de_duration")]
    pub per_chat: Duration,
    /// Jobs that end sooner are never edited: short commands stay quiet.
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
    /// The output shown: its last lines, at most so many characters.
    pub lines: usize,
    pub max_chars: usize,
}

/// Edits more often than this would spend a platform's per-chat budget (Telegram: 20 a minute
/// in a group) on progress.
pub const MIN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            enabled: true,
            every: Duration::from_secs(5),
            per_chat: Duration::from_secs(3),
            after: Duration::from_secs(10),
            lines: 15,
            max_chars: 1500,
        }
    }
}

impl Config {
    /// Whether `channel`'s acknowledgements are edited with progress: `[progress] enabled`, and
    /// the channel's own `progress` (on by default; the generic webhook's receiver opts in).
    pub fn progress_on(&self, channel: &str) -> bool {
        let channels = &self.channels;
        self.progress.enabled
            && match channel {
                "telegram" => channels.telegram.progress,
                "discord" => channels.discord.progress,
                "feishu" => channels.feishu.progress,
                "webhook" => channels.webhook.progress,
                _ => false,
            }
    }
}

// The channels' defaults are their adapters' constants. A build without an adapter's feature
// has no adapter crate to take them from, so it keeps a copy, which
// `tests::copied_defaults_are_the_adapters` holds equal to the constant (in a build with the
// feature: the default one).
#[cfg(not(feature = "discord"))]
use copied::DISCORD_API_BASE;
#[cfg(not(feature = "feishu"))]
use copied::{FEISHU_BASE_URL, FEISHU_EVENTS_PATH};
#[cfg(not(feature = "telegram"))]
use copied::{TELEGRAM_API_URL, TELEGRAM_POLL_TIMEOUT};
#[cfg(feature = "discord")]
use execrelay_discord::DEFAULT_API_BASE as DISCORD_API_BASE;
#[cfg(feature = "telegram")]
use execrelay_telegram::{
    DEFAULT_API_URL as TELEGRAM_API_URL, DEFAULT_POLL_TIMEOUT as TELEGRAM_POLL_TIMEOUT,
};
#[cfg(feature = "feishu")]
use execrelay_webhook::feishu::{
    DEFAULT_BASE_URL as FEISHU_BASE_URL, DEFAULT_EVENTS_PATH as FEISHU_EVENTS_PATH,
};

/// The adapters' defaults, for a build without them.
mod copied {
    #[cfg(any(test, not(feature = "discord")))]
    pub(super) const DISCORD_API_BASE: &str = "https://discord.com";
    #[cfg(any(test, not(feature = "telegram")))]
    pub(super) const TELEGRAM_API_URL: &str = "https://api.telegram.org";
    #[cfg(any(test, not(feature = "telegram")))]
    pub(super) const TELEGRAM_POLL_TIMEOUT: std::time::Duration =
        std::time::Duration::from_secs(30);
    #[cfg(any(test, not(feature = "feishu")))]
    pub(super) const FEISHU_BASE_URL: &str = "https://open.feishu.cn";
    #[cfg(any(test, not(feature = "feishu")))]
    pub(super) const FEISHU_EVENTS_PATH: &str = "/feishu/events";
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    pub local: LocalChannelConfig,
    pub webhook: WebhookChannelConfig,
    pub telegram: TelegramChannelConfig,
    pub discord: DiscordChannelConfig,
    pub feishu: FeishuChannelConfig,
    pub feishu_bot: FeishuBotChannelConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeishuChannelConfig {
    pub enabled: bool,
    pub app_id: String,
    pub app_secret: Option<Secret>,
    pub app_secret_file: Option<PathBuf>,
    pub verification_token: Option<Secret>,
    pub verification_token_file: Option<PathBuf>,
    pub encrypt_key: Option<Secret>,
    pub encrypt_key_file: Option<PathBuf>,
    /// Without an encrypt key Feishu signs nothing: the relay refuses to start unless this
    /// says so on purpose.
    pub allow_unsigned_events: bool,
    /// `https://open.feishu.cn`, or `https://open.larksuite.com` for Lark.
    pub base_url: String,
    /// Where Feishu posts events, on `[http] listen`.
    pub path: String,
    /// Edit acknowledgements with progress (`[progress]`).
    pub progress: bool,
}

impl Default for FeishuChannelConfig {
    fn default() -> Self {
        FeishuChannelConfig {
            enabled: false,
            app_id: String::new(),
            app_secret: None,
            app_secret_file: None,
            verification_token: None,
            verification_token_file: None,
            encrypt_key: None,
            encrypt_key_file: None,
            allow_unsigned_events: false,
            base_url: FEISHU_BASE_URL.into(),
            path: FEISHU_EVENTS_PATH.into(),
            progress: true,
        }
    }
}

/// A Feishu custom group bot, outbound only: a target for `heartbeat.target = "feishu_bot:..."`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeishuBotChannelConfig {
    pub enabled: bool,
    /// The hook URL carries the bot's token: a secret.
    pub hook_url: Option<Secret>,
    pub hook_url_file: Option<PathBuf>,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordChannelConfig {
    pub enabled: bool,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// Base URL of the REST API and of gateway discovery; tests point it at a fake.
    pub api_base: String,
    /// In guild channels, answer only when mentioned or when the message is a command.
    pub require_mention: bool,
    /// Edit acknowledgements with progress (`[progress]`).
    pub progress: bool,
}

impl Default for DiscordChannelConfig {
    fn default() -> Self {
        DiscordChannelConfig {
            enabled: false,
            token: None,
            token_file: None,
            api_base: DISCORD_API_BASE.into(),
            require_mention: true,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramChannelConfig {
    pub enabled: bool,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// The Bot API's base URL; tests point it at a fake.
    pub api_url: String,
    #[serde(deserialize_with = "de_duration")]
    pub poll_timeout: Duration,
    /// Edit acknowledgements with progress (`[progress]`).
    pub progress: bool,
}

impl Default for TelegramChannelConfig {
    fn default() -> Self {
        TelegramChannelConfig {
            enabled: false,
            token: None,
            token_file: None,
            api_url: TELEGRAM_API_URL.into(),
            poll_timeout: TELEGRAM_POLL_TIMEOUT,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalChannelConfig {
    pub enabled: bool,
}

impl Default for LocalChannelConfig {
    fn default() -> Self {
        LocalChannelConfig { enabled: true }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookChannelConfig {
    pub enabled: bool,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub callback_url: Option<String>,
    pub max_chars: usize,
    /// The receiver takes edits (`edit_of`) of acknowledgements with progress: off unless it
    /// says so.
    pub progress: bool,
}

/// By hand: a callback URL may carry a token in its path or query.
impl std::fmt::Debug for WebhookChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannelConfig")
            .field("enabled", &self.enabled)
            .field("secret", &self.secret)
            .field("secret_file", &self.secret_file)
            .field(
                "callback_url",
                &self
                    .callback_url
                    .as_deref()
                    .map(execrelay_webhook::redact_url),
            )
            .field("max_chars", &self.max_chars)
            .field("progress", &self.progress)
            .finish()
    }
}

impl Default for WebhookChannelConfig {
    fn default() -> Self {
        WebhookChannelConfig {
            enabled: true,
            secret: None,
            secret_file: None,
            callback_url: None,
            max_chars: execrelay_webhook::DEFAULT_MAX_CHARS,
            progress: false,
        }
    }
}

fn de_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let raw = String::deserialize(deserializer)?;
    crate::util::size::parse_size(&raw).map_err(serde::de::Error::custom)
}

fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse_duration(&raw).map_err(serde::de::Error::custom)
}

/// More mistakes than this in one file: the rest can wait for the next check.
const MAX_REPORTED: usize = 50;

impl Config {
    /// Reads `path`, or, when `path` is `None`, `./execrelay.toml` if present, else the
    /// built-in defaults. Relative paths written in the file are relative to the file's folder.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some((path, text)) = read_config_file(path)? else {
            return Config::from_toml("", "built-in defaults", None);
        };
        let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        let folder = absolute.parent().map(Path::to_path_buf);
        let mut config = Config::from_toml(&text, &path.display().to_string(), folder.as_deref())?;
        config.source = Some(absolute);
        Ok(config)
    }

    /// Reads TOML text as [`Config::load`] would (relative paths stay relative to the current
    /// directory); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, origin, None)
    }

    /// The one validation path: syntax, every key's type, values, secrets, the machine.
    fn from_toml(text: &str, origin: &str, folder: Option<&Path>) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let index = KeyIndex::parse(text).map_err(|problem| invalid(vec![problem]))?;
        let mut found = Findings::new(&index);
        let mut config = deserialize_every_key(text, &mut found);
        if let Some(folder) = folder {
            config.resolve_relative_paths(folder, &index);
        }
        check::check_values(&config, &mut found);
        config.resolve_secrets(&mut found);
        check::check_secrets(&config, &mut found);
        check::check_system(&config, &mut found);
        check::warnings(&config, &mut found);
        // In the file's order; what no line names (defaults, the environment) last.
        let by_line = |p: &Problem| p.line.unwrap_or(usize::MAX);
        found.errors.sort_by_key(by_line);
        found.warnings.sort_by_key(by_line);
        if !found.errors.is_empty() {
            let mut problems = found.errors;
            problems.truncate(MAX_REPORTED);
            return Err(invalid(problems));
        }
        config.warnings = found.warnings;
        Ok(config)
    }

    /// Paths written in the file are relative to the file's folder, wherever the relay starts.
    fn resolve_relative_paths(&mut self, folder: &Path, index: &KeyIndex) {
        let resolve = |key: &str, path: &mut PathBuf| {
            if index.is_written(key) && path.is_relative() {
                *path = folder.join(&*path);
            }
        };
        resolve("store.path", &mut self.store.path);
        // A bare name (`bash`) is looked up in PATH, as the supervisor runs it.
        if self.exec.shell.components().count() > 1 {
            resolve("exec.shell", &mut self.exec.shell);
        }
        resolve("exec.workdir", &mut self.exec.workdir);
        if let Some(path) = &mut self.heartbeat.file {
            resolve("heartbeat.file", path);
        }
        for secret in secrets::SECRETS {
            if let (_, Some(path)) = secret.fields(self) {
                resolve(secret.file_key, path);
            }
        }
    }
}

/// The text of `path`, or of `./execrelay.toml` if `path` is `None` and that file exists;
/// `None`: no file, the built-in defaults.
fn read_config_file(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("execrelay.toml");
            if !default.exists() {
                return Ok(None);
            }
            trusted_default(&default)?;
            default
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// `./execrelay.toml` is read without being named, so it must be this user's (or root's) and
/// writable by no one else: a file another user planted in a shared folder would otherwise
/// point this user's commands (and their API token) wherever it likes.
fn trusted_default(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner_ok = meta.uid() == me || meta.uid() == 0;
    let others_write = meta.mode() & 0o022 != 0;
    if meta.file_type().is_symlink() || !owner_ok || others_write {
        return Err(ConfigError::Invalid {
            origin: path.display().to_string(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                message: format!(
                    "not read: a config found in the current directory must be yours (it is \
                     uid {}'s) and writable by no one else (mode {:o}), and no symlink; pass \
                     --config to use it on purpose",
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            }],
        });
    }
    Ok(())
}

/// serde stops at the first wrong value; each one found is reported, blanked out, and the
/// file read again, so that every wrong key is reported at once. What is left is the config
/// with defaults where the wrong values were (its other checks still run).
fn deserialize_every_key(text: &str, found: &mut Findings<'_>) -> Config {
    let mut work = text.to_string();
    let mut blanked = Vec::new();
    while found.errors.len() < MAX_REPORTED {
        let error = match toml::from_str::<Config>(&work) {
            Ok(config) => return config,
            Err(error) => error,
        };
        let offset = error.span().map(|span| span.start);
        let key = offset.and_then(|offset| found.index().key_at(offset));
        let path = key
            .as_ref()
            .map(|(path, _)| path.to_string())
            .unwrap_or_default();
        let message = if is_secret_key(&path) {
            // The value may be the secret itself: never repeat it.
            "expected text in quotes (the value is not repeated here: it may be a secret)".into()
        } else {
            problems::plain(error.message())
        };
        found.errors.push(Problem {
            key: path,
            line: offset.map(|offset| found.index().line_at(offset)),
            message,
        });
        let Some((_, removal)) = key else { break };
        if blanked.contains(&removal) {
            break;
        }
        keys::blank(&mut work, removal.clone());
        blanked.push(removal);
        // A key inside a dotted or inline form may not blank cleanly: stop rather than guess.
        if KeyIndex::parse(&work).is_err() {
            break;
        }
    }
    Config::default()
}

#[cfg(test)]
mod tests;
