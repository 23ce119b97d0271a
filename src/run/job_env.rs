//! The environment a job runs with: a small base taken from the relay's own environment, what
//! `[exec] env` passes through or sets, and `EXECRELAY_JOB_ID`. Nothing else: not a token the
//! relay was given (`EXECRELAY_*`), not any other variable of its own, so every build script
//! and package hook a user runs sees none of the relay's secrets.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use crate::config::exec_env::{EnvEntry, RELAY_PREFIX, parse_entry};

/// Taken from the relay's environment when it has them (and every `LC_*`).
pub const BASE: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
];

/// When the relay itself runs without a PATH.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The job environment from `relay` (the relay's own environment) and the config's entries
/// (checked already; a bad one is skipped).
pub fn job_environment(
    entries: &[String],
    relay: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let relay: BTreeMap<OsString, OsString> = relay.into_iter().collect();
    let mut env: BTreeMap<OsString, OsString> = relay
        .iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            BASE.contains(&name.as_ref()) || name.starts_with("LC_")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for entry in entries.iter().filter_map(|e| parse_entry(e).ok()) {
        match entry {
            EnvEntry::Pass(name) => {
                if let Some(value) = relay.get(OsStr::new(name)) {
                    env.insert(name.into(), value.clone());
                }
            }
            EnvEntry::Set(name, value) => {
                env.insert(name.into(), value.into());
            }
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.retain(|name, _| !name.to_string_lossy().starts_with(RELAY_PREFIX));
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/bin"),
            ("HOME", "/home/r"),
            ("LC_ALL", "C.UTF-8"),
            ("EXECRELAY_TELEGRAM_TOKEN", "123:abc"),
            ("AWS_SECRET_ACCESS_KEY", "s3"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_job_gets_the_base_and_nothing_of_the_relays_own() {
        let env = job_environment(&[], relay());
        assert_eq!(names(&env), ["HOME", "LC_ALL", "PATH"]);
    }

    #[test]
    fn the_config_passes_through_and_sets() {
        let entries = ["SSH_AUTH_SOCK".to_string(), "CI=1".into(), "MISSING".into()];
        let env = job_environment(&entries, relay());
        assert_eq!(
            names(&env),
            ["CI", "HOME", "LC_ALL", "PATH", "SSH_AUTH_SOCK"]
        );
    }

    #[test]
    fn the_relays_settings_cannot_be_passed_and_names_are_checked() {
        assert!(parse_entry("EXECRELAY_TELEGRAM_TOKEN").is_err());
        assert!(parse_entry("EXECRELAY_X=1").is_err());
        assert!(parse_entry("1ABC").is_err());
        assert!(parse_entry("A-B").is_err());
        assert!(parse_entry("").is_err());
        assert_eq!(parse_entry("A_1=x=y"), Ok(EnvEntry::Set("A_1", "x=y")));
        let env = job_environment(&["EXECRELAY_TELEGRAM_TOKEN".into()], relay());
        assert!(!names(&env).iter().any(|n| n.starts_with("EXECRELAY_")));
    }

    #[test]
    fn a_relay_without_path_gives_its_jobs_a_plain_one() {
        let env = job_environment(&[], Vec::new());
        assert_eq!(env, [("PATH".into(), DEFAULT_PATH.into())]);
    }
}
