//! What a command that needs one part of the config reads: a client of a running relay
//! (`chat`, `jobs`, `outbox`, `events`, `notify`) the address and the API token, `backup` the
//! store's path. A mistake elsewhere in the file, or a channel's unreadable token file, is the
//! relay's business, not theirs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use execrelay_channel::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::keys::KeyIndex;
use super::problems::{Findings, Problem, plain};
use super::secrets::{API_TOKEN, resolve_secret};
use super::{ConfigError, HttpConfig, StoreConfig};

/// Where the relay listens and how to prove we may talk to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub listen: SocketAddr,
    pub api_token: Option<Secret>,
    /// The uid that owns the generated token file the token came from: only a listener of
    /// that user is sent it (another local user may squat the port while the relay is down).
    pub token_owner: Option<u32>,
}

/// `[http]`, and `[store]` for where a generated API token is; every other table and key is
/// let through unread.
#[derive(Deserialize, Default)]
struct HttpOnly {
    #[serde(default)]
    http: HttpKeys,
    #[serde(default)]
    store: StoreConfig,
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
        HttpKeys {
            listen: HttpConfig::default().listen,
            api_token: None,
            api_token_file: None,
        }
    }
}

/// `[store]` only.
#[derive(Deserialize, Default)]
struct StoreOnly {
    #[serde(default)]
    store: StoreConfig,
}

/// One part of the file [`super::Config::load`] would read.
struct Part<T> {
    value: T,
    origin: String,
    /// The file's folder, against which relative paths written in it resolve.
    folder: Option<PathBuf>,
    index: KeyIndex,
}

fn load_part<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<Part<T>, ConfigError> {
    let Some((path, text)) = super::read_config_file(path)? else {
        return Ok(Part {
            value: T::default(),
            origin: "built-in defaults".into(),
            folder: None,
            index: KeyIndex::default(),
        });
    };
    let origin = path.display().to_string();
    let invalid = |problem: Problem| ConfigError::Invalid {
        origin: origin.clone(),
        problems: vec![problem],
    };
    let index = KeyIndex::parse(&text).map_err(invalid)?;
    let value = toml::from_str::<T>(&text).map_err(|error| {
        let offset = error.span().map(|span| span.start);
        invalid(Problem {
            key: offset
                .and_then(|offset| index.key_at(offset))
                .map(|(key, _)| key.to_string())
                .unwrap_or_default(),
            line: offset.map(|offset| index.line_at(offset)),
            message: plain(error.message()),
        })
    })?;
    let folder = std::path::absolute(&path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    Ok(Part {
        value,
        origin,
        folder,
        index,
    })
}

impl ClientConfig {
    /// The `[http]` keys of the config file.
    pub fn load(path: Option<&Path>) -> Result<ClientConfig, ConfigError> {
        let Part {
            value:
                HttpOnly {
                    http: mut keys,
                    mut store,
                },
            origin,
            folder,
            index,
        } = load_part::<HttpOnly>(path)?;
        if let Some(folder) = &folder {
            if let Some(file) = keys.api_token_file.as_mut()
                && file.is_relative()
            {
                *file = folder.join(&*file);
            }
            if index.is_written("store.path") && store.path.is_relative() {
                store.path = folder.join(&store.path);
            }
        }
        let mut found = Findings::new(&index);
        resolve_secret(
            &mut keys.api_token,
            &keys.api_token_file,
            &API_TOKEN,
            &mut found,
        );
        let mut token_owner = None;
        if keys.api_token.is_none()
            && let Some((token, owner)) = generated_token(&store, &mut found)
        {
            keys.api_token = Some(token);
            token_owner = Some(owner);
        }
        if !found.errors.is_empty() {
            return Err(ConfigError::Invalid {
                origin,
                problems: found.errors,
            });
        }
        Ok(ClientConfig {
            listen: keys.listen,
            api_token: keys.api_token,
            token_owner,
        })
    }
}

/// The token a relay without `http.api_token` generated into its data directory. Not there
/// yet: none (the relay has not started). Not readable: this is another user's relay.
fn generated_token(store: &StoreConfig, found: &mut Findings<'_>) -> Option<(Secret, u32)> {
    use std::os::unix::fs::MetadataExt;
    let path = crate::data_dir::api_token_path(&store.data_dir());
    let owner = std::fs::metadata(&path).map(|meta| meta.uid());
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Some((Secret::new(token.trim()), owner.ok()?)),
        Ok(_) => None,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            found.error(
                "http.api_token",
                format!(
                    "cannot read the relay's API token at {}: {error}; the API is the relay \
                     user's alone (run this as that user, or root)",
                    path.display()
                ),
            );
            None
        }
    }
}

impl StoreConfig {
    /// The `[store]` keys of the config file, its path resolved as the relay resolves it.
    pub fn load_alone(path: Option<&Path>) -> Result<StoreConfig, ConfigError> {
        let Part {
            value: StoreOnly { mut store },
            folder,
            index,
            ..
        } = load_part::<StoreOnly>(path)?;
        if let Some(folder) = folder
            && index.is_written("store.path")
            && store.path.is_relative()
        {
            store.path = folder.join(&store.path);
        }
        Ok(store)
    }
}
