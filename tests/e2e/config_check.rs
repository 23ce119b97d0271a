//! Acceptance 8: `execrelay config check` rejects unknown keys, naming the key and its line.

use std::ffi::OsStr;

use crate::harness::*;

#[test]
fn config_check_names_a_mistyped_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[exec]\ntimout = \"5m\"\n").unwrap();

    let out = run_cli(
        &[
            OsStr::new("--config"),
            bad.as_os_str(),
            OsStr::new("config"),
            OsStr::new("check"),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a typo'd key must fail the check: {out:?}"
    );
    assert!(
        stderr.contains("timout"),
        "stderr should name `timout`:\n{stderr}"
    );
    assert!(
        stderr.contains("line 2"),
        "stderr should name `line 2`:\n{stderr}"
    );
}

#[test]
fn config_check_accepts_a_valid_file() {
    let b = Relay::builder_with_callback("http://127.0.0.1:9/callback")
        .allow(&["webhook:alice", "bob"])
        .set(
            "identities",
            "bob",
            r#"["webhook:bob", "webhook:bob-laptop"]"#,
        );
    let cfg = b.dir().join("good.toml");
    std::fs::write(&cfg, b.render()).unwrap();

    let out = run_cli(
        &[
            OsStr::new("--config"),
            cfg.as_os_str(),
            OsStr::new("config"),
            OsStr::new("check"),
        ],
        b.dir(),
    );
    assert!(
        out.status.success(),
        "a valid config (an identity name in [access] allow) must pass:\n{}\n{out:?}",
        b.render()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{out:?}"
    );
}

#[test]
fn config_check_rejects_an_allow_entry_that_names_nobody() {
    let b = Relay::builder_with_callback("http://127.0.0.1:9/callback").allow(&["bob"]);
    let cfg = b.dir().join("ghost.toml");
    std::fs::write(&cfg, b.render()).unwrap();
    let out = run_cli(
        &[
            OsStr::new("--config"),
            cfg.as_os_str(),
            OsStr::new("config"),
            OsStr::new("check"),
        ],
        b.dir(),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`bob`"),
        "{out:?}"
    );
}
