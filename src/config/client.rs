//! What a client of a running relay (`chat`, `jobs`, `outbox`, `notify`) needs from the config:
//! the address and the API token, nothing else. A mistake elsewhere in the file, or a channel's
//! unreadable token file, is the relay's business, not the client's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use execrelay_channel::Secret;
use serde::Deserialize;

use super::keys::KeyIndex;
use super::problems::{Findings, Problem, plain};
use super::{ConfigError, HttpConfig, resolve_secret};

/// Where the relay listens and how to prove we may talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub listen: SocketAddr,
    pub api_token: Option<Secret>,
}

/// `[http]` only; every other table and key is let through unread.
#[derive(Deserialize, Default)]
struct HttpOnly {
    #[serde(default)]
    http: HttpKeys,
}

#[derive(Deserialize)]
#[serde(default)]
struct HttpKeys {
    listen: SocketAddr,
    api_token: Option<Secret>,
    api_token_file: Option<PathBuf>,
}

impl Default for HttpKeys {
    fn default() -> Self {
        let defaults = HttpConfig::default();
        HttpKeys {
            listen: defaults.listen,
            api_token: None,
            api_token_file: None,
        }
    }
}

impl ClientConfig {
    /// The `[http]` keys of the file [`super::Config::load`] would read.
    pub fn load(path: Option<&Path>) -> Result<ClientConfig, ConfigError> {
        let Some((path, text)) = super::read_config_file(path)? else {
            let mut keys = HttpKeys::default();
            let index = KeyIndex::default();
            return finish(&mut keys, "built-in defaults", None, &index);
        };
        let origin = path.display().to_string();
        let invalid = |problem: Problem| ConfigError::Invalid {
            origin: origin.clone(),
            problems: vec![problem],
        };
        let index = KeyIndex::parse(&text).map_err(invalid)?;
        let mut keys = match toml::from_str::<HttpOnly>(&text) {
            Ok(file) => file.http,
            Err(error) => {
                let offset = error.span().map(|span| span.start);
                return Err(invalid(Problem {
                    key: offset
                        .and_then(|offset| index.key_at(offset))
                        .map(|(key, _)| key.to_string())
                        .unwrap_or_default(),
                    line: offset.map(|offset| index.line_at(offset)),
                    message: plain(error.message()),
                }));
            }
        };
        let folder = std::path::absolute(&path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        finish(&mut keys, &origin, folder.as_deref(), &index)
    }
}

fn finish(
    keys: &mut HttpKeys,
    origin: &str,
    folder: Option<&Path>,
    index: &KeyIndex,
) -> Result<ClientConfig, ConfigError> {
    if let (Some(folder), Some(file)) = (folder, keys.api_token_file.as_mut())
        && file.is_relative()
    {
        *file = folder.join(&*file);
    }
    let mut found = Findings::new(index);
    resolve_secret(
        &mut keys.api_token,
        &keys.api_token_file,
        "http.api_token_file",
        "EXECRELAY_API_TOKEN",
        &mut found,
    );
    if !found.errors.is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems: found.errors,
        });
    }
    Ok(ClientConfig {
        listen: keys.listen,
        api_token: keys.api_token.take(),
    })
}
