//! What an `[exec] env` entry may say: `NAME` passes the relay's `NAME` through to jobs,
//! `NAME=value` sets it; never one of the relay's own `EXECRELAY_*` variables. The config
//! checks entries with it; `run::job_env` builds jobs' environments from them.

/// The relay's own settings and secrets: never passed to a job, whatever the config says.
pub const RELAY_PREFIX: &str = "EXECRELAY_";

/// One `[exec] env` entry: `NAME` passes the relay's `NAME` through, `NAME=value` sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEntry<'a> {
    Pass(&'a str),
    Set(&'a str, &'a str),
}

/// Reads an entry; `Err` says what is wrong with it.
pub fn parse_entry(entry: &str) -> Result<EnvEntry<'_>, String> {
    let (name, value) = match entry.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (entry, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{entry}` is not NAME (pass the relay's NAME through) or NAME=value (set it); \
             names are letters, digits and _"
        ));
    }
    if name.starts_with(RELAY_PREFIX) {
        return Err(format!(
            "`{name}`: the relay's own {RELAY_PREFIX}* variables never reach a job"
        ));
    }
    Ok(match value {
        Some(value) => EnvEntry::Set(name, value),
        None => EnvEntry::Pass(name),
    })
}
