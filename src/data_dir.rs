//! The data directory: private to the relay's user, one relay at a time on it (a lock beside
//! the store), and the webhook secret generated into it when none is configured.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use execrelay_channel::Secret;

use crate::config::Config;

/// The webhook secret: configured, or generated once and kept beside the database. A new one
/// is only made here; [`keep_webhook_secret`] writes it once the relay knows it will start.
pub(crate) fn webhook_secret(config: &Config) -> (Secret, bool) {
    if let Some(secret) = &config.channels.webhook.secret {
        return (secret.clone(), false);
    }
    if let Ok(existing) = std::fs::read_to_string(webhook_secret_path(config)) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return (Secret::new(existing), false);
        }
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    (Secret::new(secret), true)
}

fn webhook_secret_path(config: &Config) -> PathBuf {
    config.store.data_dir().join("webhook.secret")
}

pub(crate) fn keep_webhook_secret(config: &Config, secret: &Secret) -> anyhow::Result<()> {
    let path = webhook_secret_path(config);
    write_private(&path, secret.expose())
        .with_context(|| format!("cannot write the webhook secret to {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a webhook secret (no channels.webhook.secret configured)");
    Ok(())
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// Job output and message texts live in the data directory: keep it to this user.
pub(crate) fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let jobs = dir.join("jobs");
    if !jobs.exists() {
        std::fs::DirBuilder::new().mode(0o700).create(&jobs)?;
    }
    std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o700))
}

/// One relay per store file: a second one would release the first one's delivery leases and
/// resend what it is sending, and start jobs it is starting. So the second one stops here,
/// before it touches anything.
pub(crate) fn lock_store(store: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("{}.lock", store.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; the file is close-on-exec, so no
    // job or supervisor inherits the lock.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another execrelay is already running on {} (it holds {}); stop it first",
                store.display(),
                path.display()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}
