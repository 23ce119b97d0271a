//! Every check a config must pass before the relay serves: `config check` and `run` both go
//! through here, so a file that passes the check starts, and one that starts passed it.
//!
//! Three kinds: values (ranges, names that must resolve, URLs), secrets (only once read from
//! their files and the environment), and the machine (the shell and the workdir exist). Each
//! finding names its key; none stops the others from being found.

use std::path::Path;
use std::time::Duration;

use super::problems::{Findings, closest};
use super::{Config, TargetPolicy};

/// Channels a person can write from: `[access] allow` and `[identities]` name these.
const INBOUND_CHANNELS: [&str; 5] = ["local", "webhook", "telegram", "discord", "feishu"];

impl Config {
    /// Which channels are switched on, by name (`feishu_bot` sends only).
    pub fn enabled_channels(&self) -> Vec<&'static str> {
        let c = &self.channels;
        [
            ("local", c.local.enabled),
            ("webhook", c.webhook.enabled),
            ("telegram", c.telegram.enabled),
            ("discord", c.discord.enabled),
            ("feishu", c.feishu.enabled),
            ("feishu_bot", c.feishu_bot.enabled),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

pub(crate) fn check_values(config: &Config, found: &mut Findings<'_>) {
    if config.exec.max_concurrent == 0 {
        found.error("exec.max_concurrent", "must be at least 1");
    }
    match config.exec.max_per_session {
        Some(0) => found.error("exec.max_per_session", "must be at least 1"),
        Some(n) if n > config.exec.max_concurrent => found.warn(
            "exec.max_per_session",
            format!(
                "{n} is more than exec.max_concurrent ({}): one person may take every slot",
                config.exec.max_concurrent
            ),
        ),
        _ => {}
    }
    if config.exec.max_output < 1 << 20 {
        found.error(
            "exec.max_output",
            "must be at least 1MiB (a completion's tail comes from its end)",
        );
    }
    if config.exec.timeout.is_zero() {
        found.error("exec.timeout", "must be longer than 0 (e.g. \"30m\")");
    }
    if config.channels.webhook.max_chars < 16 {
        found.error("channels.webhook.max_chars", "must be at least 16");
    }
    if config.outbox.concurrency == 0 {
        found.error("outbox.concurrency", "must be at least 1");
    }
    if config.events.max_queued == 0 {
        found.error("events.max_queued", "must be at least 1");
    }
    let progress = &config.progress;
    if progress.every < super::MIN_PROGRESS_EVERY {
        found.error(
            "progress.every",
            format!(
                "must be at least {}s: edits more often spend the chat's rate limit",
                super::MIN_PROGRESS_EVERY.as_secs()
            ),
        );
    }
    if progress.per_chat < Duration::from_secs(1) {
        found.error("progress.per_chat", "must be at least 1s");
    }
    if progress.lines == 0 || progress.max_chars < 40 {
        found.error(
            "progress.lines",
            "progress.lines must be at least 1 and progress.max_chars at least 40",
        );
    }
    for (i, entry) in config.exec.env.iter().enumerate() {
        if let Err(why) = crate::config::exec_env::parse_entry(entry) {
            found.error(&format!("exec.env[{i}]"), why);
        }
    }
    check_accounts(config, found);
    check_target(config, found);
    super::secrets::check_both_value_and_file(config, found);
    check_urls(config, found);
    check_features(config, found);
    let path = &config.channels.feishu.path;
    // Plain path segments only: the router reads `:x`, `*x` and `{x}` as captures (and
    // refuses some of them at start-up with a panic rather than an error).
    let plain = path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        })
    });
    if !plain || path == "/webhook" || path == "/healthz" || path.starts_with("/v1/") {
        found.error(
            "channels.feishu.path",
            format!(
                "`{path}` must be a plain path (letters, digits, - _ . ~ between slashes), and \
                 not /webhook, /healthz or under /v1/ (e.g. \"/feishu/events\")"
            ),
        );
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(50))
        .contains(&config.channels.telegram.poll_timeout)
    {
        found.error(
            "channels.telegram.poll_timeout",
            "must be between 1s and 50s (Telegram's limit)",
        );
    }
}

/// `[access] allow` entries and `[identities]` accounts name a real channel and a user id.
fn check_accounts(config: &Config, found: &mut Findings<'_>) {
    let enabled = config.enabled_channels();
    let account = |key: String, entry: &str, found: &mut Findings<'_>| {
        let Some((channel, user)) = entry.split_once(':') else {
            return false;
        };
        if !INBOUND_CHANNELS.contains(&channel) {
            let hint = closest(channel, &INBOUND_CHANNELS)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            found.error(
                &key,
                format!(
                    "`{entry}` names no channel `{channel}`{hint} (channels: {})",
                    INBOUND_CHANNELS.join(", ")
                ),
            );
        } else if user.trim().is_empty() {
            found.error(
                &key,
                format!("`{entry}` has no user id after the colon (e.g. \"{channel}:123456\")"),
            );
        } else if !enabled.contains(&channel) {
            found.warn(
                &key,
                format!(
                    "`{entry}`: channels.{channel} is not enabled, so this account cannot write yet"
                ),
            );
        }
        true
    };
    for (i, entry) in config.access.allow.iter().enumerate() {
        let key = format!("access.allow[{i}]");
        if !account(key.clone(), entry, found) && !config.identities.contains_key(entry) {
            found.error(
                &key,
                format!(
                    "`{entry}` is neither <channel>:<user_id> (e.g. \"telegram:123456\") nor a \
                     name in [identities]"
                ),
            );
        }
    }
    // An account is one person: in two identities, whose completions would it follow?
    let mut owner: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (name, accounts) in &config.identities {
        for (i, entry) in accounts.iter().enumerate() {
            let key = format!("identities.{name}[{i}]");
            if !account(key.clone(), entry, found) {
                found.error(
                    &key,
                    format!("`{entry}` should be <channel>:<user_id> (e.g. \"telegram:123456\")"),
                );
            }
            match owner.insert(entry.as_str(), name.as_str()) {
                Some(first) if first != name => found.error(
                    &key,
                    format!("`{entry}` is also in identities.{first}: an account is one person's"),
                ),
                _ => {}
            }
        }
    }
}

fn check_target(config: &Config, found: &mut Findings<'_>) {
    let TargetPolicy::Explicit { channel, .. } = &config.heartbeat.target else {
        return;
    };
    let sending = [
        "local",
        "webhook",
        "telegram",
        "discord",
        "feishu",
        "feishu_bot",
    ];
    if !sending.contains(&channel.as_str()) {
        let hint = closest(channel, &sending)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        found.error(
            "heartbeat.target",
            format!(
                "there is no channel `{channel}`{hint} (expected last, origin, none, or \
                 <channel>:<chat_id> with one of {})",
                sending.join(", ")
            ),
        );
    } else if !config.enabled_channels().contains(&channel.as_str()) {
        found.error(
            "heartbeat.target",
            format!(
                "sends to `{channel}`, but channels.{channel} is not enabled: enable it or \
                 choose another target"
            ),
        );
    }
}

/// Whether `url` is an absolute `http://` or `https://` URL (the adapters refuse anything else).
fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
}

fn check_urls(config: &Config, found: &mut Findings<'_>) {
    let c = &config.channels;
    let urls = [
        (
            "channels.webhook.callback_url",
            c.webhook.callback_url.as_deref(),
            "https://example.com/execrelay",
        ),
        (
            "channels.telegram.api_url",
            Some(c.telegram.api_url.as_str()),
            super::TELEGRAM_API_URL,
        ),
        (
            "channels.discord.api_base",
            Some(c.discord.api_base.as_str()),
            super::DISCORD_API_BASE,
        ),
        (
            "channels.feishu.base_url",
            Some(c.feishu.base_url.as_str()),
            super::FEISHU_BASE_URL,
        ),
    ];
    for (key, url, example) in urls {
        // The URL itself is not echoed: callback URLs often carry a token.
        if let Some(url) = url
            && !is_http_url(url)
        {
            found.error(
                key,
                format!("must be an absolute http:// or https:// URL (e.g. \"{example}\")"),
            );
        }
    }
}

fn check_features(config: &Config, found: &mut Findings<'_>) {
    let c = &config.channels;
    for (name, enabled, built) in [
        ("telegram", c.telegram.enabled, cfg!(feature = "telegram")),
        ("discord", c.discord.enabled, cfg!(feature = "discord")),
        ("feishu", c.feishu.enabled, cfg!(feature = "feishu")),
        ("feishu_bot", c.feishu_bot.enabled, cfg!(feature = "feishu")),
    ] {
        if enabled && !built {
            let feature = if name == "feishu_bot" { "feishu" } else { name };
            found.error(
                &format!("channels.{name}.enabled"),
                format!("this execrelay was built without the `{feature}` feature"),
            );
        }
    }
}

/// What can only be checked once secrets are read from their files and the environment.
pub(crate) fn check_secrets(config: &Config, found: &mut Findings<'_>) {
    let secrets = config.secrets();
    for (i, entry) in config.exec.env.iter().enumerate() {
        if let Ok(crate::config::exec_env::EnvEntry::Set(name, value)) =
            crate::config::exec_env::parse_entry(entry)
            && secrets.iter().any(|s| s.expose() == value)
        {
            found.error(
                &format!("exec.env[{i}]"),
                format!("`{name}` would hand jobs one of the relay's secrets"),
            );
        }
    }
    let c = &config.channels;
    if config.http.exposed_without_token() {
        found.error(
            "http.listen",
            format!(
                "{} is reachable from other machines, but there is no http.api_token: set one \
                 (api_token, api_token_file or EXECRELAY_API_TOKEN) or listen on 127.0.0.1",
                config.http.listen
            ),
        );
    }
    if c.telegram.enabled && c.telegram.token.is_none() {
        found.error(
            "channels.telegram.enabled",
            "Telegram is enabled but has no bot token: set channels.telegram.token, token_file \
             or EXECRELAY_TELEGRAM_TOKEN",
        );
    }
    if c.discord.enabled && c.discord.token.is_none() {
        found.error(
            "channels.discord.enabled",
            "Discord is enabled but has no bot token: set channels.discord.token, token_file \
             or EXECRELAY_DISCORD_TOKEN",
        );
    }
    let feishu = &c.feishu;
    if feishu.enabled {
        if feishu.app_id.trim().is_empty() {
            found.error(
                "channels.feishu.app_id",
                "Feishu is enabled but has no app_id (e.g. \"cli_a1b2c3\")",
            );
        }
        if feishu.app_secret.is_none() {
            found.error(
                "channels.feishu.app_secret",
                "Feishu is enabled but has no app_secret (or app_secret_file, or \
                 EXECRELAY_FEISHU_APP_SECRET)",
            );
        }
        if feishu.verification_token.is_none() {
            found.error(
                "channels.feishu.verification_token",
                "Feishu is enabled but has no verification_token (or verification_token_file, \
                 or EXECRELAY_FEISHU_VERIFICATION_TOKEN)",
            );
        }
        if feishu.encrypt_key.is_none() && !feishu.allow_unsigned_events {
            found.error(
                "channels.feishu.encrypt_key",
                "channels.feishu needs an encrypt_key (or encrypt_key_file, or \
                 EXECRELAY_FEISHU_ENCRYPT_KEY): without one Feishu signs nothing, and anyone \
                 who learns the verification token could run commands; set \
                 allow_unsigned_events = true only if you accept that",
            );
        }
    }
    let bot = &c.feishu_bot;
    if bot.enabled {
        match &bot.hook_url {
            None => found.error(
                "channels.feishu_bot.hook_url",
                "the Feishu group bot is enabled but has no hook_url (or hook_url_file, or \
                 EXECRELAY_FEISHU_BOT_HOOK_URL)",
            ),
            Some(url) if !is_http_url(url.expose()) => found.error(
                "channels.feishu_bot.hook_url",
                "must be an absolute https:// URL (the bot's webhook address)",
            ),
            Some(_) => {}
        }
    }
}

/// The shell and the workdir every job needs, checked on this machine.
pub(crate) fn check_system(config: &Config, found: &mut Findings<'_>) {
    check_job_user(config, found);
    check_shell(&config.exec.shell, found);
    check_store_dir(config, found);
    check_workdir(&config.exec.workdir, found);
}

/// `run_as` names an account this relay can start jobs as; without it, say what job code can
/// reach.
fn check_job_user(config: &Config, found: &mut Findings<'_>) {
    use crate::util::accounts::{relay_is_root, resolve};
    let exec = &config.exec;
    match (&exec.run_as, &exec.run_as_group) {
        (None, Some(_)) => found.error("exec.run_as_group", "needs exec.run_as"),
        (Some(user), group) => match resolve(user, group.as_deref()) {
            Err(why) => {
                let key = if why.contains("group") {
                    "exec.run_as_group"
                } else {
                    "exec.run_as"
                };
                found.error(key, why);
            }
            Ok(account) if !relay_is_root() => found.error(
                "exec.run_as",
                format!(
                    "starting jobs as `{}` needs the relay to run as root",
                    account.name
                ),
            ),
            Ok(account) if account.uid == 0 => found.warn(
                "exec.run_as",
                "jobs run as root: job code can read the relay's config, database and secrets",
            ),
            Ok(_) => {}
        },
        (None, None) if relay_is_root() => found.warn(
            "exec.run_as",
            "jobs run as root: job code can read the relay's config, database and secrets; \
             set exec.run_as to an unprivileged account",
        ),
        (None, None) if !config.secrets().is_empty() => found.warn(
            "exec.run_as",
            "jobs run as the relay's own user, so job code can read its secrets and data; \
             run the relay as root with exec.run_as, or as a user of its own",
        ),
        (None, None) => {}
    }
}

fn check_shell(shell: &Path, found: &mut Findings<'_>) {
    if shell.components().count() == 1 && !shell.has_root() {
        // A bare name: the supervisor runs it through PATH.
        let in_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                let candidate = dir.join(shell);
                candidate.is_file() && executable(&candidate)
            })
        });
        if !in_path {
            found.error(
                "exec.shell",
                format!(
                    "`{}` is not found in PATH (give a full path, e.g. \"/bin/sh\")",
                    shell.display()
                ),
            );
        }
        return;
    }
    match std::fs::metadata(shell) {
        Err(error) => found.error(
            "exec.shell",
            format!("cannot use {}: {error} (e.g. \"/bin/sh\")", shell.display()),
        ),
        Ok(meta) if !meta.is_file() || !executable(shell) => found.error(
            "exec.shell",
            format!(
                "{} is not an executable file (e.g. \"/bin/sh\")",
                shell.display()
            ),
        ),
        Ok(_) => {}
    }
}

/// The store's folder must be there and writable, or be creatable: its nearest existing
/// ancestor a directory this user may write in.
fn check_store_dir(config: &Config, found: &mut Findings<'_>) {
    let data = config.store.data_dir();
    let data = std::path::absolute(&data).unwrap_or(data);
    let Some(existing) = data.ancestors().find(|dir| dir.exists()) else {
        return;
    };
    if !(existing.is_dir() && access(existing, libc::W_OK | libc::X_OK)) {
        let what = if existing == data {
            format!(
                "{} is not a directory this user can write in",
                data.display()
            )
        } else {
            format!(
                "cannot create {}: {} is not a directory this user can write in",
                data.display(),
                existing.display()
            )
        };
        found.error("store.path", what);
    }
}

fn check_workdir(workdir: &Path, found: &mut Findings<'_>) {
    match std::fs::metadata(workdir) {
        Err(error) => found.error(
            "exec.workdir",
            format!("cannot use {}: {error}", workdir.display()),
        ),
        Ok(meta) if !meta.is_dir() => found.error(
            "exec.workdir",
            format!("{} is not a directory", workdir.display()),
        ),
        Ok(_) if !executable(workdir) => found.error(
            "exec.workdir",
            format!("{} cannot be entered by this user", workdir.display()),
        ),
        Ok(_) => {}
    }
}

pub(crate) fn warnings(config: &Config, found: &mut Findings<'_>) {
    let webhook = &config.channels.webhook;
    if webhook.enabled && webhook.callback_url.is_none() {
        found.warn(
            "channels.webhook.callback_url",
            "the webhook channel is enabled without a callback_url: commands sent to it run, \
             but its replies and completions will be dead-lettered until one is set",
        );
    }
    let feishu = &config.channels.feishu;
    if feishu.enabled && feishu.encrypt_key.is_none() && feishu.allow_unsigned_events {
        found.warn(
            "channels.feishu.allow_unsigned_events",
            "Feishu events are neither encrypted nor signed: only the verification token \
             proves the sender; set an Encrypt Key in the Feishu console",
        );
    }
}

/// access(2) for execute (search, for a directory) by this process's user.
fn executable(path: &Path) -> bool {
    access(path, libc::X_OK)
}

fn access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path that lives across the call.
    unsafe { libc::access(path.as_ptr(), mode) == 0 }
}
