//! Every secret the config holds, declared once in [`SECRETS`]: its key, its `*_file` key,
//! its environment variable and the two fields that hold them. Everything done to secrets
//! goes through the table: the check that a value and its file are not both given, the
//! relative `*_file` paths, reading the files and then the environment, redaction
//! ([`Config::secrets`]), and which keys an error must not echo. A `Secret` field left out of
//! the table would be none of these; `tests::every_hidden_field_is_in_the_table` fails then.

use std::path::PathBuf;

use execrelay_channel::Secret;

use super::Config;
use super::problems::Findings;

/// One secret: where it is written and read from, and where a [`Config`] keeps it.
pub(crate) struct SecretKey {
    /// The dotted key of the value (`channels.telegram.token`).
    pub(crate) key: &'static str,
    /// The dotted key of the file that holds it: the key and `_file`.
    pub(crate) file_key: &'static str,
    /// Read when neither the value nor the file gives one.
    pub(crate) env: &'static str,
    /// The value and the file's path.
    get: fn(&Config) -> (&Option<Secret>, &Option<PathBuf>),
    get_mut: fn(&mut Config) -> (&mut Option<Secret>, &mut Option<PathBuf>),
}

impl SecretKey {
    pub(crate) fn value<'c>(&self, config: &'c Config) -> Option<&'c Secret> {
        (self.get)(config).0.as_ref()
    }

    pub(crate) fn file<'c>(&self, config: &'c Config) -> Option<&'c PathBuf> {
        (self.get)(config).1.as_ref()
    }

    pub(crate) fn fields<'c>(
        &self,
        config: &'c mut Config,
    ) -> (&'c mut Option<Secret>, &'c mut Option<PathBuf>) {
        (self.get_mut)(config)
    }

    /// The last part of the key (`token`).
    fn name(&self) -> &'static str {
        self.key.rsplit('.').next().unwrap_or(self.key)
    }
}

/// `secret!("a.b.name", "ENV", a.b { name, name_file })`: the key is written out (it is what
/// users read); `tests::each_key_names_its_fields` checks it against the fields.
macro_rules! secret {
    ($key:literal, $env:literal, $($table:ident).+ { $value:ident, $file:ident }) => {
        SecretKey {
            key: $key,
            file_key: concat!($key, "_file"),
            env: $env,
            get: |c| (&c.$($table).+.$value, &c.$($table).+.$file),
            get_mut: |c| (&mut c.$($table).+.$value, &mut c.$($table).+.$file),
        }
    };
}

/// The API token, which clients read too ([`super::ClientConfig`]).
pub(crate) const API_TOKEN: SecretKey = secret!(
    "http.api_token",
    "EXECRELAY_API_TOKEN",
    http {
        api_token,
        api_token_file
    }
);

/// Every secret, in the order their problems are reported.
pub(crate) const SECRETS: &[SecretKey] = &[
    API_TOKEN,
    secret!(
        "channels.webhook.secret",
        "EXECRELAY_WEBHOOK_SECRET",
        channels.webhook { secret, secret_file }
    ),
    secret!(
        "channels.telegram.token",
        "EXECRELAY_TELEGRAM_TOKEN",
        channels.telegram { token, token_file }
    ),
    secret!(
        "channels.discord.token",
        "EXECRELAY_DISCORD_TOKEN",
        channels.discord { token, token_file }
    ),
    secret!(
        "channels.feishu.app_secret",
        "EXECRELAY_FEISHU_APP_SECRET",
        channels.feishu { app_secret, app_secret_file }
    ),
    secret!(
        "channels.feishu.verification_token",
        "EXECRELAY_FEISHU_VERIFICATION_TOKEN",
        channels.feishu { verification_token, verification_token_file }
    ),
    secret!(
        "channels.feishu.encrypt_key",
        "EXECRELAY_FEISHU_ENCRYPT_KEY",
        channels.feishu { encrypt_key, encrypt_key_file }
    ),
    secret!(
        "channels.feishu_bot.hook_url",
        "EXECRELAY_FEISHU_BOT_HOOK_URL",
        channels.feishu_bot { hook_url, hook_url_file }
    ),
    secret!(
        "channels.feishu_bot.secret",
        "EXECRELAY_FEISHU_BOT_SECRET",
        channels.feishu_bot { secret, secret_file }
    ),
];

impl Config {
    /// Every configured secret, so that job output quoting one is redacted.
    pub fn secrets(&self) -> Vec<Secret> {
        SECRETS
            .iter()
            .filter_map(|secret| secret.value(self))
            .filter(|s| s.expose().len() >= 4)
            .cloned()
            .collect()
    }

    /// Fills secrets from `*_file` keys, then from the environment where the file left them unset.
    pub(super) fn resolve_secrets(&mut self, found: &mut Findings<'_>) {
        for secret in SECRETS {
            let (value, file) = secret.fields(self);
            resolve_secret(value, file, secret, found);
        }
    }
}

/// A value and its `*_file` key both written: which one is meant?
pub(super) fn check_both_value_and_file(config: &Config, found: &mut Findings<'_>) {
    for secret in SECRETS {
        if secret.value(config).is_some() && secret.file(config).is_some() {
            let key = secret.key;
            found.error(key, format!("{key} and {key}_file are both set; keep one"));
        }
    }
}

/// A secret from its `*_file` key if set, else the value in the file, else its environment
/// variable.
pub(super) fn resolve_secret(
    value: &mut Option<Secret>,
    file: &Option<PathBuf>,
    secret: &SecretKey,
    found: &mut Findings<'_>,
) {
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                found.error(secret.file_key, format!("{} is empty", path.display()));
            }
            Ok(text) => *value = Some(Secret::new(text.trim())),
            Err(error) => {
                found.error(
                    secret.file_key,
                    format!("cannot read {}: {error}", path.display()),
                );
            }
        }
    }
    // An empty value is no secret: it would sign or encrypt with a key everyone knows.
    if value.as_ref().is_some_and(Secret::is_empty) {
        *value = None;
    }
    if value.is_none() {
        *value = secret_from_env(secret.env);
    }
}

fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// Keys whose values are secrets (or, like a callback URL, carry one), by their last part: a
/// secret's name written in the wrong table is not echoed either.
pub(super) fn is_secret_key(path: &str) -> bool {
    let name = path.rsplit('.').next().unwrap_or(path);
    name == "callback_url" || SECRETS.iter().any(|secret| secret.name() == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The TOML that sets each dotted key to its value (TOML text), one header per table.
    fn toml_setting<'a>(settings: impl IntoIterator<Item = (&'a str, String)>) -> String {
        let mut tables: std::collections::BTreeMap<&str, String> = Default::default();
        for (key, value) in settings {
            let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
            let lines = tables.entry(table).or_default();
            lines.push_str(&format!("{name} = {value}\n"));
        }
        tables
            .into_iter()
            .map(|(table, lines)| match table {
                "" => lines,
                table => format!("[{table}]\n{lines}"),
            })
            .collect()
    }

    /// The fields of the table at `path` (dotted; empty: the top), read from serde's answer
    /// to an unknown key; `None`: `path` is not a table.
    fn fields_of(path: &str) -> Option<Vec<String>> {
        let probe = if path.is_empty() {
            "zz_probe = 1\n".to_string()
        } else {
            format!("[{path}]\nzz_probe = 1\n")
        };
        let Err(error) = toml::from_str::<Config>(&probe) else {
            panic!("{path} accepts unknown keys, so this test cannot list its fields");
        };
        let message = error.message().strip_prefix("unknown field ")?;
        Some(
            message
                .split('`')
                .skip(1)
                .step_by(2)
                .skip(1) // the probe itself
                .map(str::to_string)
                .collect(),
        )
    }

    /// Every key that is not a table, dotted.
    fn leaf_keys(path: &str, leaves: &mut Vec<String>) {
        match fields_of(path) {
            None => leaves.push(path.to_string()),
            Some(fields) => {
                for field in fields {
                    let child = if path.is_empty() {
                        field
                    } else {
                        format!("{path}.{field}")
                    };
                    leaf_keys(&child, leaves);
                }
            }
        }
    }

    /// The real test of the table: every key of the config (found through serde, not a list
    /// kept by hand) is set to a text; where the config takes it but `Debug` does not show it,
    /// the field hides its value: a `Secret`. Each must be in `SECRETS`, or it would never be
    /// read from a file or the environment, nor redacted from job output. Add a
    /// `foo: Option<Secret>` anywhere without a table entry and this fails naming it.
    #[test]
    fn every_hidden_field_is_in_the_table() {
        let mut leaves = Vec::new();
        leaf_keys("", &mut leaves);
        assert!(leaves.len() > 50, "found only {leaves:?}");
        let probe = "probe-value-4f1c";
        let hidden: BTreeSet<String> = leaves
            .into_iter()
            .filter(|key| {
                toml::from_str::<Config>(&toml_setting([(key.as_str(), format!("{probe:?}"))]))
                    .is_ok_and(|config| !format!("{config:?}").contains(probe))
            })
            .collect();
        let mut expected: BTreeSet<String> = SECRETS.iter().map(|s| s.key.to_string()).collect();
        // Not a `Secret`: a URL whose `Debug` keeps only its scheme and host (its path or query
        // may carry a token); the receiver's own address, so it is not redacted from output.
        expected.insert("channels.webhook.callback_url".into());
        let missing: Vec<_> = hidden.difference(&expected).collect();
        assert!(missing.is_empty(), "hidden but not in SECRETS: {missing:?}");
        let stale: Vec<_> = expected.difference(&hidden).collect();
        assert!(
            stale.is_empty(),
            "in SECRETS but shown or not a text: {stale:?}"
        );
    }

    /// Each key reaches its own fields, is redacted, and never printed.
    #[test]
    fn each_key_names_its_fields() {
        let value_of = |key: &str| format!("value-of-{key}");
        let text = toml_setting(
            SECRETS
                .iter()
                .map(|s| (s.key, format!("{:?}", value_of(s.key)))),
        );
        let config = Config::parse(&text, "c").unwrap();
        let secrets: Vec<String> = config.secrets().iter().map(|s| s.expose().into()).collect();
        let shown = format!("{config:?}");
        for secret in SECRETS {
            let expected = value_of(secret.key);
            let got = secret.value(&config).map(Secret::expose);
            assert_eq!(got, Some(expected.as_str()), "{}", secret.key);
            assert!(secrets.contains(&expected), "{}", secret.key);
            assert!(!shown.contains(&expected), "{} printed", secret.key);
        }
        assert_eq!(secrets.len(), SECRETS.len());
    }

    /// Each `*_file` key, relative to the config's folder, fills its own secret; and a value
    /// given twice is refused for each.
    #[test]
    fn each_file_key_fills_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..SECRETS.len() {
            std::fs::write(dir.path().join(format!("s{i}")), format!("file-{i}\n")).unwrap();
        }
        let text = toml_setting(
            SECRETS
                .iter()
                .enumerate()
                .map(|(i, s)| (s.file_key, format!("\"s{i}\""))),
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(Some(&path)).unwrap();
        for (i, secret) in SECRETS.iter().enumerate() {
            let got = secret.value(&config).map(Secret::expose);
            assert_eq!(
                got,
                Some(format!("file-{i}").as_str()),
                "{}",
                secret.file_key
            );
            assert_eq!(
                secret.file(&config),
                Some(&dir.path().join(format!("s{i}")))
            );
        }

        let both = toml_setting(SECRETS.iter().flat_map(|s| {
            [
                (s.key, "\"x\"".to_string()),
                (s.file_key, "\"/nonexistent\"".to_string()),
            ]
        }));
        let error = Config::parse(&both, "c").unwrap_err().to_string();
        for secret in SECRETS {
            let key = secret.key;
            let said = format!("{key}: {key} and {key}_file are both set; keep one");
            assert!(error.contains(&said), "{key}: {error}");
        }
    }

    #[test]
    fn secret_names_are_not_echoed_anywhere() {
        for key in [
            "http.api_token",
            "channels.feishu_bot.hook_url",
            "channels.webhook.callback_url",
            "exec.token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "http.api_token_file",
            "exec.timeout",
            "channels.feishu.app_id",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
