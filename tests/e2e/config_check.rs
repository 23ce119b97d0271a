//! `execrelay config check` is the whole truth: it refuses everything `run` would refuse (and
//! what would start but never work), every problem with its key, its line and a hint, and
//! `run` refuses the same files without creating anything.

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

/// `execrelay --config <dir>/<name> <args...>`, run in `dir`.
fn with_config(
    dir: &std::path::Path,
    name: &str,
    text: &str,
    args: &[&str],
) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let mut all = vec![OsStr::new("--config"), path.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    run_cli(&all, dir)
}

/// Each small file must fail `config check` naming the key, its line and a hint; `run` must
/// refuse it the same way and leave nothing behind.
#[test]
fn config_check_refuses_what_run_refuses_and_what_could_never_work() {
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        // (what, file, key, line, hint)
        (
            "telegram without a token",
            "[channels.telegram]\nenabled = true\n",
            "channels.telegram.enabled",
            2,
            "EXECRELAY_TELEGRAM_TOKEN",
        ),
        (
            "feishu_bot without hook_url",
            "[channels.feishu_bot]\nenabled = true\n",
            "channels.feishu_bot.hook_url",
            1,
            "hook_url_file",
        ),
        (
            "a callback_url that is no URL",
            "[channels.webhook]\ncallback_url = \"not a url\"\n",
            "channels.webhook.callback_url",
            2,
            "https://",
        ),
        (
            "the API on every address without a token",
            "[http]\nlisten = \"0.0.0.0:0\"\n",
            "http.listen",
            2,
            "listen on 127.0.0.1",
        ),
        (
            "a heartbeat target on a disabled channel",
            "[heartbeat]\ntarget = \"telegram:123\"\n",
            "heartbeat.target",
            2,
            "not enabled",
        ),
        (
            "a heartbeat target on no channel at all",
            "[heartbeat]\ntarget = \"slack:ops\"\n",
            "heartbeat.target",
            2,
            "local, webhook, telegram",
        ),
        (
            "an allowed account on a misspelled channel",
            "[access]\nallow = [\"webhook:a\",\n  \"telegrm:111\"]\n",
            "access.allow[1]",
            3,
            "did you mean `telegram`",
        ),
        (
            "an allowed account without a user id",
            "[access]\nallow = [\"webhook:\"]\n",
            "access.allow[0]",
            2,
            "no user id",
        ),
        (
            "an allowed name that is no identity",
            "\n[access]\nallow = [\"bob\"]\n",
            "access.allow[0]",
            3,
            "[identities]",
        ),
        (
            "an identity's account on a misspelled channel",
            "[identities]\nalice = [\"telegrm:111\"]\n",
            "identities.alice[0]",
            2,
            "did you mean `telegram`",
        ),
        (
            "an account in two identities",
            "[identities]\nalice = [\"webhook:a\"]\nbob = [\"webhook:a\"]\n",
            "identities.bob[0]",
            3,
            "also in identities.alice",
        ),
        (
            "a shell that does not exist",
            "[exec]\nshell = \"/bin/nonexistent-shell\"\n",
            "exec.shell",
            2,
            "/bin/sh",
        ),
        (
            "a workdir that does not exist",
            "[exec]\nworkdir = \"/nonexistent/dir\"\n",
            "exec.workdir",
            2,
            "No such file",
        ),
        (
            "a number in quotes",
            "[exec]\nmax_concurrent = \"64\"\n",
            "exec.max_concurrent",
            2,
            "a whole number",
        ),
        (
            "a duration in words",
            "[exec]\ntimeout = \"10 minutes\"\n",
            "exec.timeout",
            2,
            "e.g.",
        ),
        (
            "a misspelled key",
            "[exec]\ntimout = \"5m\"\n",
            "exec.timout",
            2,
            "did you mean `timeout`",
        ),
    ];
    for (what, text, key, line, hint) in cases {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{text}\n[store]\npath = \"data/execrelay.db\"\n");
        for args in [&["config", "check"][..], &["run"][..]] {
            let out = with_config(dir.path(), "bad.toml", &text, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what}: {args:?} must refuse:\n{stderr}"
            );
            let said = stderr
                .lines()
                .find(|l| l.contains(&format!("{key}:")))
                .unwrap_or_else(|| panic!("{what}: {args:?} does not name `{key}`:\n{stderr}"));
            assert!(
                said.contains(&format!("line {line}: ")),
                "{what}: not line {line}: {said}"
            );
            assert!(said.contains(hint), "{what}: no hint `{hint}`: {said}");
        }
        assert!(
            !dir.path().join("data").exists(),
            "{what}: a refused `run` created its data directory"
        );
    }
}

#[test]
fn config_check_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[exec]\nmax_concurrent = \"64\"\ntimeout = \"soon\"\n\n[heartbeat]\ntarget = \"slack:ops\"\n";
    let out = with_config(dir.path(), "bad.toml", text, &["config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 problems"), "{stderr}");
    for expected in [
        "line 2: exec.max_concurrent",
        "line 3: exec.timeout",
        "line 6: heartbeat.target",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}`:\n{stderr}");
    }
}

/// Relative paths in a config file are the file's, wherever the relay is started from.
#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let etc = home.path().join("etc");
    std::fs::create_dir_all(etc.join("work")).unwrap();
    std::fs::write(etc.join("token"), "a-local-api-token\n").unwrap();
    let text = "[store]\npath = \"state/relay.db\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = \"token\"\n[exec]\nworkdir = \"work\"\n";
    std::fs::write(etc.join("execrelay.toml"), text).unwrap();
    let cfg = etc.join("execrelay.toml");
    let out = run_cli(
        &[
            OsStr::new("--config"),
            cfg.as_os_str(),
            OsStr::new("config"),
            OsStr::new("check"),
        ],
        elsewhere.path(),
    );
    assert!(out.status.success(), "{out:?}");
    // `run` puts its store beside the file, not in the directory it was started from.
    let ready = home.path().join("ready");
    let mut relay = without_relay_settings(std::process::Command::new(bin()))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .arg("--ready-file")
        .arg(&ready)
        .current_dir(elsewhere.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the relay to be ready", SOON, || {
        ready.exists().then_some(())
    });
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(
        etc.join("state/relay.db").exists(),
        "no store beside the config file"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "the relay wrote into the directory it was started from"
    );
}

/// Clients need the address and the token only (the generated one they find beside the
/// store): a config whose other parts are broken (an unreadable Telegram token file, a wrong
/// type) still lets `execrelay jobs` talk to the relay.
#[test]
fn clients_read_only_the_address_and_the_token() {
    let rx = crate::fakes::receiver::Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let client_cfg = format!(
        "[store]\npath = \"execrelay.db\"\n[http]\nlisten = \"{}\"\n[exec]\nmax_concurrent = \"many\"\n[channels.telegram]\nenabled = true\ntoken_file = \"/nonexistent/telegram-token\"\n",
        relay.addr
    );
    let out = with_config(relay.dir(), "client.toml", &client_cfg, &["jobs"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no jobs"),
        "{out:?}"
    );
    // A broken [http] is still the client's business, and says where.
    let out = with_config(
        relay.dir(),
        "client2.toml",
        "[http]\nlisten = 8787\n",
        &["jobs"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("line 2: http.listen"), "{stderr}");
}

/// The address is taken: `run` refuses before it creates anything (no data directory, no
/// database, no generated webhook secret).
#[test]
fn a_run_that_cannot_listen_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[http]\nlisten = \"{}\"\n[store]\npath = \"data/execrelay.db\"\n",
        taken.local_addr().unwrap()
    );
    let out = with_config(dir.path(), "c.toml", &text, &["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused run created its data directory"
    );
}
