//! Tests of the config file as a whole: parsing, defaults, every problem reported at once.

use super::*;

#[test]
fn defaults_are_valid() {
    let config = Config::parse("", "test").unwrap();
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(config.heartbeat.every, Duration::from_secs(1800));
    assert_eq!(config.heartbeat.target, TargetPolicy::Last);
    assert_eq!(config.exec.tail_lines, 40);
}

#[test]
fn unknown_key_names_key_and_line() {
    let error = Config::parse("[exec]\ntimout = \"5m\"\n", "cfg.toml").unwrap_err();
    let text = error.to_string();
    assert!(text.contains("timout"), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn bad_duration_names_line() {
    let error = Config::parse("[heartbeat]\n\nevery = \"soon\"\n", "cfg.toml").unwrap_err();
    let text = error.to_string();
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("soon"), "{text}");
}

#[test]
fn wrong_type_is_an_error() {
    let error = Config::parse("[exec]\nmax_concurrent = \"many\"\n", "c").unwrap_err();
    assert!(error.to_string().contains("line 2"), "{error}");
}

#[test]
fn targets_parse() {
    let config = Config::parse("[heartbeat]\ntarget = \"webhook:room-1\"\n", "c").unwrap();
    assert_eq!(
        config.heartbeat.target,
        TargetPolicy::Explicit {
            channel: "webhook".into(),
            chat_id: "room-1".into()
        }
    );
    assert!(Config::parse("[heartbeat]\ntarget = \"nowhere\"\n", "c").is_err());
}

#[test]
fn active_hours_wrap_midnight() {
    let config = Config::parse("[heartbeat]\nactive_hours = \"22:00-06:30\"\n", "c").unwrap();
    let hours = config.heartbeat.active_hours.unwrap();
    assert!(hours.contains(23 * 60));
    assert!(hours.contains(60));
    assert!(!hours.contains(12 * 60));
}

#[test]
fn allow_entries_must_resolve() {
    assert!(Config::parse("[access]\nallow = [\"ghost\"]\n", "c").is_err());
    let ok = "[access]\nallow = [\"alice\"]\n[identities]\nalice = [\"webhook:a\"]\n";
    assert!(Config::parse(ok, "c").is_ok());
}

#[test]
fn the_feishu_path_must_be_plain() {
    let with = |path: &str| Config::parse(&format!("[channels.feishu]\npath = \"{path}\"\n"), "c");
    assert!(with("/feishu/events").is_ok());
    assert!(with("/hooks/lark-v2").is_ok());
    for bad in [
        "feishu",
        "é/x",
        "/:x",
        "/feishu/{id}",
        "/a//b",
        "/x/*rest",
        "/",
        "/v1/feishu",
    ] {
        let error = with(bad).expect_err(bad);
        assert!(
            error.to_string().contains("channels.feishu.path"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_example_file_is_valid_and_complete() {
    let example = include_str!("../../config.example.toml");
    Config::parse(example, "config.example.toml").unwrap();
    // Every commented-out key is also valid when switched on.
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            // run_as needs a relay running as root.
            Some(rest) if rest.starts_with("run_as") && !crate::util::accounts::relay_is_root() => {
                l
            }
            Some(rest) if rest.contains(" = ") && !rest.contains("Also:") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    Config::parse(&uncommented, "uncommented example").unwrap();
}

#[test]
fn feishu_needs_an_encrypt_key_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let path = dir.path().join("c.toml");
        let text = format!(
            "[channels.feishu]\nenabled = true\napp_id = \"cli_a\"\napp_secret = \"s\"\n\
             verification_token = \"v\"\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    };
    let missing = load("").expect_err("no encrypt key");
    assert!(
        missing.to_string().contains("needs an encrypt_key"),
        "{missing}"
    );
    let empty = load("encrypt_key = \"\"\n").expect_err("an empty key is none");
    assert!(
        empty.to_string().contains("needs an encrypt_key"),
        "{empty}"
    );
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "\n").unwrap();
    let blank_file = load(&format!("encrypt_key_file = {:?}\n", key_file)).unwrap_err();
    assert!(blank_file.to_string().contains("is empty"), "{blank_file}");
    assert!(load("encrypt_key = \"k\"\n").is_ok());
    assert!(load("allow_unsigned_events = true\n").is_ok());
}

#[test]
fn a_secret_of_the_wrong_type_is_not_repeated() {
    let error = Config::parse("[http]\napi_token = 12345678\n", "c").unwrap_err();
    let text = error.to_string();
    assert!(text.contains("line 2: http.api_token"), "{text}");
    assert!(!text.contains("12345678"), "{text}");
}

#[test]
fn a_bare_shell_name_is_looked_up_in_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[exec]\nshell = \"sh\"\n").unwrap();
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.exec.shell, PathBuf::from("sh"));
    std::fs::write(&path, "[exec]\nshell = \"no-such-shell-here\"\n").unwrap();
    let error = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(error.contains("exec.shell"), "{error}");
    assert!(error.contains("not found in PATH"), "{error}");
}

#[test]
fn a_store_that_cannot_be_created_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let text = format!("[store]\npath = {:?}\n", file.join("data/execrelay.db"));
    let error = Config::parse(&text, "c").unwrap_err().to_string();
    assert!(
        error.contains("line 2: store.path: cannot create"),
        "{error}"
    );
}

#[test]
fn exec_env_never_hands_jobs_the_relays_settings() {
    let error = Config::parse("[exec]\nenv = [\"EXECRELAY_API_TOKEN\"]\n", "c")
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2: exec.env[0]"), "{error}");
    let text = "[http]\napi_token = \"tok-123456\"\n[exec]\nenv = [\"X=tok-123456\"]\n";
    let error = Config::parse(text, "c").unwrap_err().to_string();
    assert!(error.contains("exec.env[0]"), "{error}");
    assert!(error.contains("secrets"), "{error}");
    assert!(!error.contains("tok-123456"), "{error}");
}

#[test]
fn an_account_in_two_identities_is_an_error() {
    let text = "[identities]\nalice = [\"webhook:a\"]\nbob = [\"webhook:b\", \"webhook:a\"]\n";
    let error = Config::parse(text, "c").unwrap_err().to_string();
    assert!(error.contains("line 3: identities.bob[1]"), "{error}");
    assert!(error.contains("also in identities.alice"), "{error}");
}

#[test]
fn copied_defaults_are_the_adapters() {
    #[cfg(feature = "discord")]
    assert_eq!(
        copied::DISCORD_API_BASE,
        execrelay_discord::DEFAULT_API_BASE
    );
    #[cfg(feature = "telegram")]
    {
        assert_eq!(
            copied::TELEGRAM_API_URL,
            execrelay_telegram::DEFAULT_API_URL
        );
        assert_eq!(
            copied::TELEGRAM_POLL_TIMEOUT,
            execrelay_telegram::DEFAULT_POLL_TIMEOUT
        );
    }
    #[cfg(feature = "feishu")]
    {
        use execrelay_webhook::feishu;
        assert_eq!(copied::FEISHU_BASE_URL, feishu::DEFAULT_BASE_URL);
        assert_eq!(copied::FEISHU_EVENTS_PATH, feishu::DEFAULT_EVENTS_PATH);
    }
}

#[test]
fn secrets_do_not_print() {
    let config = Config::parse("[channels.webhook]\nsecret = \"s3cret-value\"\n", "c").unwrap();
    assert!(!format!("{config:?}").contains("s3cret-value"));
}
