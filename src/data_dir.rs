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
    match read_kept(&webhook_secret_path(config)) {
        Some(kept) => (kept, false),
        None => (Secret::new(random_hex()), true),
    }
}

/// A secret kept in the data directory by an earlier start, if there is one.
fn read_kept(path: &Path) -> Option<Secret> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| Secret::new(text))
}

/// 32 random bytes, as 64 hex characters.
fn random_hex() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Where the generated API token lives when `http.api_token` is not configured.
pub fn api_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

/// The local API's token: configured, or generated once into the data directory (which only
/// the relay's user can enter), so that the CLI of that user (and root) can read it and no
/// one else can. `Some(path)` when it is the generated one.
pub(crate) fn api_token(config: &Config) -> anyhow::Result<(Secret, Option<PathBuf>)> {
    if let Some(token) = &config.http.api_token {
        return Ok((token.clone(), None));
    }
    let path = api_token_path(&config.store.data_dir());
    if let Some(kept) = read_kept(&path) {
        return Ok((kept, Some(path)));
    }
    let token = random_hex();
    write_private(&path, &token)
        .with_context(|| format!("cannot write the API token to {}", path.display()))?;
    Ok((Secret::new(token), Some(path)))
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

/// The data directory holds job output, message texts and secrets. Whatever existed before (a
/// package's or systemd's 0755 `StateDirectory=`, a database left world-readable), it is made
/// the relay user's alone at every start: its folders 0700, the database's files 0600.
pub(crate) fn make_private(store: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = data_dir_of(store);
    let private = |path: &Path, mode: u32| -> std::io::Result<()> {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let paths = private_paths(store);
    // Made private only if it is ours: another user who planted the folder, a file in it or a
    // symlink there would keep a way in (their own chmod, a token they chose).
    for (path, _) in &paths {
        ours(path)?;
    }
    private(dir, 0o700)?;
    let jobs = dir.join("jobs");
    if !jobs.exists() {
        std::fs::DirBuilder::new().mode(0o700).create(&jobs)?;
    }
    // Made private before SQLite first opens it: its WAL and shared-memory files take the
    // database's mode when SQLite creates them.
    if !store.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(store)?;
    }
    for (path, mode) in &paths {
        private(path, *mode)?;
    }
    Ok(())
}

/// The folder the store lives in.
fn data_dir_of(store: &Path) -> &Path {
    match store.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// What [`make_private`] keeps the relay user's alone, with the mode it gives each: the data
/// directory and its jobs folder 0700, the database's files and the kept secrets 0600.
fn private_paths(store: &Path) -> Vec<(PathBuf, u32)> {
    let dir = data_dir_of(store);
    let mut paths = vec![(dir.to_path_buf(), 0o700), (dir.join("jobs"), 0o700)];
    paths.extend(
        ["", "-wal", "-shm", ".lock"]
            .map(|suffix| (PathBuf::from(format!("{}{suffix}", store.display())), 0o600)),
    );
    paths.push((dir.join("webhook.secret"), 0o600));
    paths.push((api_token_path(dir), 0o600));
    paths
}

/// What [`make_private`] would refuse or change, changing nothing (`execrelay doctor`): for
/// each path of the data directory that is not this user's, is a symlink, or that other users
/// may use, what is wrong and what to do. Empty: all private (or not made yet).
pub fn not_private(store: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    for (path, mode) in private_paths(store) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if let Err(error) = ours(&path) {
            found.push((
                error.to_string(),
                format!(
                    "remove or chown {}, or choose another store.path",
                    path.display()
                ),
            ));
        } else if meta.permissions().mode() & 0o077 != 0 {
            found.push((
                format!(
                    "{} is {:04o}: other users may {} it",
                    path.display(),
                    meta.permissions().mode() & 0o7777,
                    if meta.is_dir() { "enter" } else { "read" }
                ),
                format!(
                    "chmod {mode:o} {} (the relay does it at its next start)",
                    path.display()
                ),
            ));
        }
    }
    found
}

/// `path`, if it exists, is this process's user's own and no symlink.
fn ours(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{} is a symlink; the data directory takes none (remove it)",
            path.display()
        )));
    }
    // SAFETY: geteuid(2) has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{} belongs to uid {}, not to this relay's user (uid {me}): another user could \
             read or replace what is kept there; give it to this user or choose another \
             store.path",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// One relay per store file: a second one would release the first one's delivery leases and
/// resend what it is sending, and start jobs it is starting. So the second one stops here,
/// before it touches anything.
pub(crate) fn lock_store(store: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(store);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
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

fn lock_path(store: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", store.display()))
}

/// Whether a relay runs on `store` now: it holds the lock [`lock_store`] takes. Tested with a
/// shared lock, taken and let go at once (a relay starting in that instant would stop as if
/// another one ran). No lock file: no relay ever started on it.
pub fn relay_running(store: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let file = match std::fs::File::open(lock_path(store)) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    // SAFETY: flock(2) on a descriptor this function owns; closing it lets the lock go.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return Ok(false);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(true);
    }
    Err(error)
}

/// "Is there room for another job?": the data directory's filesystem keeps `min_free` for
/// the store, so that one job's output never brings it to the disk-full wall.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    pub dir: PathBuf,
    pub min_free: u64,
}

impl FreeSpace {
    /// `Some(bytes free)` when that is less than `min_free`; `None` when there is room (or the
    /// filesystem cannot tell).
    pub fn short(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs(2) into a zeroed struct, on a NUL-terminated path.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        let free = (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64);
        (free < self.min_free).then_some(free)
    }
}
