//! execrelay: run long shell commands from chat; every completion reaches the right chat, once.
//!
//! Data flows one way: inbound message → route recorded → command → job → exit → system event
//! → wake(`exec-event`) → heartbeat → target → outbox → adapter. The tree shows the stages: `serve/` →
//! `ingest/` → `run/` → `deliver/` → `store/` and `config/` (each imports only what is
//! below it), with `util/` shared; `relay` wires them. See ARCHITECTURE.md for the map and
//! the invariants.

pub mod channels;
pub mod config;
pub mod data_dir;
pub mod deliver;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod relay;
pub mod run;
pub mod serve;
pub mod store;
pub mod util;

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

    /// Every Rust source file of the workspace.
    fn workspace_sources() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "adapters", "tests", "benches"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 50, "found only {} files", files.len());
        files
    }

    /// Every source file of the workspace opens with `//!`: what it owns, for whoever opens it.
    #[test]
    fn every_source_file_says_what_it_owns() {
        let files = workspace_sources();
        let silent: Vec<_> = files
            .iter()
            .filter(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .collect();
        assert!(silent.is_empty(), "files without a `//!` line: {silent:?}");
    }

    /// No source file grows past 900 lines: past that, it holds more than one job.
    #[test]
    fn no_source_file_is_over_900_lines() {
        let long: Vec<_> = workspace_sources()
            .iter()
            .filter_map(|path| {
                let lines = std::fs::read_to_string(path).ok()?.lines().count();
                (lines > 900).then(|| format!("{} ({lines} lines)", path.display()))
            })
            .collect();
        assert!(long.is_empty(), "split these: {long:?}");
    }
}
