//! execrelay: run long shell commands from chat; every completion reaches the right chat, once.
//!
//! Data flows one way: inbound message → route recorded → command → job → exit → system event
//! → wake(`exec-event`) → heartbeat → target → outbox → adapter. Each stage is one module; see
//! ARCHITECTURE.md for the map and the invariants.

pub mod api;
pub mod channel_health;
pub mod channels;
pub mod chunk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod data_dir;
pub mod delivery;
pub mod duration;
pub mod exec;
pub mod failpoint;
pub mod heartbeat;
pub mod inbound;
pub mod job_env;
pub mod job_user;
pub mod jobs;
pub mod local;
pub mod log_throttle;
pub mod logging;
pub mod once_per_key;
pub mod outbox;
pub mod relay;
pub mod retention;
pub mod serve;
pub mod size;
pub mod store;
pub mod supervisor;
pub mod target;
pub mod tarpit;
#[cfg(test)]
mod test_rng;

#[cfg(test)]
mod source_docs {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// Every source file of the workspace opens with `//!`: what it owns, for whoever opens it.
    #[test]
    fn every_source_file_says_what_it_owns() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "adapters", "tests", "benches"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 50, "found only {} files", files.len());
        let silent: Vec<_> = files
            .iter()
            .filter(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .collect();
        assert!(silent.is_empty(), "files without a `//!` line: {silent:?}");
    }
}
