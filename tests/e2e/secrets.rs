//! Credentials in command output or command lines never reach a chat or the log.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

const SHAPES: &[&str] = &[
    "ghp_e2eAbcdefghijklmnopqrstuvwxyz012345",
    "AKIAE2EFAKEKEY123456",
    "xoxb-12345678901-e2eslacktoken",
    "eyJhbGciOiJIUzI1NiJ9.e2e-bearer-payload.signature",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCe2eJsonKey",
];

#[test]
fn credential_shapes_and_configured_secrets_are_redacted_everywhere() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let output = format!(
        "token {}\naws {}\nslack {}\ncurl -H 'Authorization: Bearer {}'\n\
         -----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n\
         {{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{}\\n-----END PRIVATE KEY-----\\n\"}}\n\
         webhook secret {SECRET}\nstill here\n",
        SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[3], SHAPES[4], SHAPES[5]
    );
    std::fs::write(relay.path("leaky.txt"), output).unwrap();

    let (_, done) = relay.run_job(&rx, &dm("dm-a", "alice", "/exec cat leaky.txt"));
    assert!(done.text.contains("still here"), "{:?}", done.text);
    // A command line that carries a credential is redacted in the acknowledgement too.
    let echoed = relay.start_job(
        &rx,
        &dm("dm-a", "alice", &format!("/exec echo {}", SHAPES[0])),
    );
    rx.wait_for_message("the second completion", SOON, |d| {
        is_completion_of(&d.text, &echoed.id)
    });
    // And in the job list.
    relay.say(&dm("dm-a", "alice", "/jobs"));
    rx.wait_for_message("the job list", SOON, |d| {
        d.text.contains(&echoed.id) && !is_ack(d) && !is_completion(d)
    });
    relay.wait_outbox_drained();

    let log = relay.log();
    for delivery in rx.messages() {
        for shape in SHAPES.iter().chain([&SECRET]) {
            assert!(
                !delivery.text.contains(shape),
                "{shape} reached the chat: {:?}",
                delivery.text
            );
        }
    }
    for shape in SHAPES {
        assert!(!log.contains(shape), "{shape} reached the log");
    }
    assert!(done.text.contains("[redacted]"), "{:?}", done.text);
}

/// The attack: a job reads the environment it was given, encoded so that redaction cannot
/// catch it. The relay's tokens (`EXECRELAY_*`) and its other variables never reach a job;
/// the base (PATH, HOME, ...) and what `[exec] env` passes through or sets do.
#[test]
fn a_job_cannot_read_the_relays_tokens_from_its_environment() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .env("EXECRELAY_TELEGRAM_TOKEN", "123456:tg-token-from-the-env")
        .env("EXECRELAY_DISCORD_TOKEN", "discord-token-from-the-env")
        .env("RELAY_PRIVATE", "not-for-jobs")
        .env("PASSED_ON", "for-jobs")
        .set("exec", "env", r#"["PASSED_ON", "SET_HERE=yes"]"#)
        .start();
    let probe = "/exec printenv EXECRELAY_TELEGRAM_TOKEN EXECRELAY_DISCORD_TOKEN RELAY_PRIVATE | base64; env | cut -d= -f1 | sort | tr '\\n' ' '";
    let (_, done) = relay.run_job(&rx, &dm("dm-a", "alice", probe));
    let names: Vec<&str> = output_lines(&done.text)
        .last()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert!(
        output_lines(&done.text).len() == 1,
        "the job read something of the relay's: {:?}",
        done.text
    );
    for name in ["PATH", "HOME", "PASSED_ON", "SET_HERE", "EXECRELAY_JOB_ID"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    for name in names {
        assert!(
            !name.starts_with("EXECRELAY_") || name == "EXECRELAY_JOB_ID",
            "{name} reached the job"
        );
        assert_ne!(name, "RELAY_PRIVATE");
        assert_ne!(name, "RUST_LOG", "the relay's own variables stay with it");
    }
}

/// The attack: a data directory that already existed open to everyone (a package's or
/// systemd's 0755 `StateDirectory=`, an old world-readable database). At start the relay makes
/// it its user's alone, and another local user cannot read the database.
#[test]
fn the_data_directory_is_made_private_whatever_existed_before() {
    use std::os::unix::fs::PermissionsExt;
    let rx = Receiver::start();
    let builder = Relay::builder(&rx).allow(&["webhook:alice"]);
    // Its parent open to all, as /var/lib is: only the data directory itself may stop a reader.
    std::fs::set_permissions(builder.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = builder.dir().join("data");
    let db = data.join("execrelay.db");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let relay = builder
        .set("store", "path", &toml_str(&db.to_string_lossy()))
        .start();
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec echo private"));
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&data.join("jobs")), 0o700, "the jobs directory");
    for name in [
        "execrelay.db",
        "execrelay.db-wal",
        "execrelay.db-shm",
        "execrelay.db.lock",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    // A job's files too: under run_as, another job could reopen a 0644 log via /proc/<pid>/fd.
    for name in ["output.log", "command", "status.json"] {
        let path = data.join("jobs").join(&job.id).join(name);
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    // Another local user tries to read the database.
    let nobody = as_another_user("cat").arg(&db).output();
    match nobody {
        Ok(out) if running_as_root() => {
            assert!(!out.status.success(), "another user read the database");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "{out:?}"
            );
        }
        _ => eprintln!("skipped the other-user read: needs root and setpriv"),
    }
}

/// `setpriv` as user 65534 (nobody): another local account.
fn as_another_user(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    command
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The attack: another local account posts `/exec` to the local API with no configuration at
/// all (no `api_token`). It is refused, and it cannot read the token the relay generated;
/// the relay's own user runs its clients with no token typed anywhere.
#[test]
fn another_local_user_cannot_run_commands_through_the_local_api() {
    use std::os::unix::fs::PermissionsExt;
    if !running_as_root() {
        eprintln!("skipped: switching to another user needs root");
        return;
    }
    let rx = Receiver::start();
    let builder = Relay::builder(&rx);
    // Open to all before the start, as a shared folder would be: the relay closes it.
    std::fs::set_permissions(builder.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let relay = builder.start();
    let attack = as_another_user("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"text":"/exec touch pwned"}"#])
        .arg(format!("http://{}/v1/chat", relay.addr))
        .output()
        .expect("run curl as another user");
    assert_eq!(
        String::from_utf8_lossy(&attack.stdout),
        "401",
        "another user's request was not refused: {attack:?}"
    );
    let stolen = as_another_user("cat")
        .arg(relay.path("api.token"))
        .output()
        .expect("run cat as another user");
    assert!(!stolen.status.success(), "another user read the API token");

    let own = relay.cli(&["jobs"]);
    assert!(own.status.success(), "the relay's own user: {own:?}");
    assert!(relay.jobs().is_empty(), "{:?}", relay.jobs());
    assert!(!relay.path("pwned").exists());
}

/// The attack: another local user runs `ps` while a job runs. The command line may carry
/// arguments its sender wants private; only the job's own `sh -c` shows it, never the
/// supervisor's argv.
#[test]
fn a_running_jobs_command_line_is_not_in_its_supervisors_argv() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let line = format!("{}; echo argv-private-7f3a", gated_exec("go", "done"));
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &line));
    let supervisor = wait_for("the job's supervisor", SOON, || {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains(" supervise ") && cmdline.contains(&job.id)).then_some(cmdline)
            })
    });
    relay.open_gate("go");
    assert!(
        !supervisor.contains("argv-private-7f3a"),
        "the command line is in the supervisor's argv: {supervisor}"
    );
    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(
        output_lines(&done.text).contains(&"argv-private-7f3a"),
        "{:?}",
        done.text
    );
}

/// The attack, with `[exec] run_as`: job code tries to read the relay's database, config and
/// another job's log. A relay running as root starts its jobs as the named account, which can
/// read none of them; the job still runs, reports and is stopped as usual.
#[test]
fn with_run_as_job_code_cannot_reach_the_relays_data() {
    use std::os::unix::fs::PermissionsExt;
    if !running_as_root() {
        eprintln!("skipped: run_as needs the relay to run as root");
        return;
    }
    let rx = Receiver::start();
    let workdir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(workdir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let builder = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "run_as", &toml_str("nobody"))
        .set(
            "exec",
            "workdir",
            &toml_str(&workdir.path().to_string_lossy()),
        );
    let data = builder.dir().to_path_buf();
    let relay = builder.start();
    let earlier = relay.start_job(&rx, &dm("dm-a", "alice", "/exec echo earlier-job-output"));
    rx.wait_for_message("the first completion", SOON, |d| {
        is_completion_of(&d.text, &earlier.id)
    });
    let probe = format!(
        "/exec id -u; echo HOME=$HOME; cat {db} {cfg} {log} 2>&1 | head -c 300; touch {data}/planted 2>&1; echo probed",
        db = data.join("execrelay.db").display(),
        cfg = data.join("execrelay.toml").display(),
        log = data
            .join(format!("jobs/{}/output.log", earlier.id))
            .display(),
        data = data.display(),
    );
    let (_, done) = relay.run_job(&rx, &dm("dm-a", "alice", &probe));
    let output = output_lines(&done.text);
    assert_eq!(output.first(), Some(&"65534"), "{:?}", done.text);
    assert!(output.contains(&"HOME=/nonexistent"), "{:?}", done.text);
    assert!(output.contains(&"probed"), "{:?}", done.text);
    assert!(done.text.contains("Permission denied"), "{:?}", done.text);
    for leak in ["SQLite format", "[store]", "earlier-job-output", SECRET] {
        assert!(
            !done.text.contains(leak),
            "the job read `{leak}`: {:?}",
            done.text
        );
    }
    assert!(!data.join("planted").exists());
}

/// The attack: another local user plants the data directory (or a token file, or a symlink,
/// in it) before the relay's first start, in a folder open to all. The relay refuses to start
/// there, naming what is not its own, rather than keep its secrets where that user can reach.
#[test]
fn a_data_directory_planted_by_another_user_is_refused() {
    if !running_as_root() {
        eprintln!("skipped: planting files as another user needs root");
        return;
    }
    type Plant = fn(&std::path::Path);
    let cases: [(&str, Plant); 3] = [
        ("the folder is another user's", |data| {
            std::os::unix::fs::chown(data, Some(65534), Some(65534)).unwrap();
        }),
        ("a token file is another user's", |data| {
            let token = data.join("api.token");
            std::fs::write(&token, "attacker-chosen-token").unwrap();
            std::os::unix::fs::chown(&token, Some(65534), Some(65534)).unwrap();
        }),
        ("the database is a symlink", |data| {
            std::os::unix::fs::symlink("/etc/hostname", data.join("execrelay.db")).unwrap();
        }),
    ];
    for (what, plant) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        plant(&data);
        let cfg = dir.path().join("execrelay.toml");
        std::fs::write(
            &cfg,
            "[store]\npath = \"data/execrelay.db\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let out = run_cli(
            &["--config".as_ref(), cfg.as_os_str(), "run".as_ref()],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: the relay started");
        assert!(
            stderr.contains("belongs to uid 65534") || stderr.contains("is a symlink"),
            "{what}: {stderr}"
        );
        assert!(
            !data.join("webhook.secret").exists(),
            "{what}: a secret was written there"
        );
    }
}

/// The attack: while the relay is down (a restart), another local user listens on its port.
/// The relay's user runs `execrelay jobs`: the generated token is not sent to a listener that
/// is not the relay's user's.
#[test]
fn the_api_token_is_not_sent_to_another_users_listener() {
    use std::io::BufRead;
    if !running_as_root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: needs root and /usr/bin/python3");
        return;
    }
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx).fixed_port().start();
    assert!(relay.cli(&["jobs"]).status.success());
    let port = relay.addr.port();
    relay.kill9();
    let squatter = format!(
        "import socket, sys\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(8); print('ready', flush=True)\n\
         s.settimeout(10)\n\
         while True:\n\
         \x20   c, _ = s.accept(); c.settimeout(2)\n\
         \x20   data = c.recv(65536).decode(errors='replace')\n\
         \x20   print('GOT ' + data.replace('\\r\\n', ' | '), flush=True)\n"
    );
    let mut listener = as_another_user("/usr/bin/python3")
        .args(["-c", &squatter])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the squatter");
    let mut lines = std::io::BufReader::new(listener.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let out = relay.cli(&["jobs"]);
    let _ = listener.kill();
    let _ = listener.wait();
    let heard: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        !out.status.success(),
        "the client talked to the squatter: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not sending the relay's API token"),
        "{out:?}"
    );
    assert!(
        !heard
            .iter()
            .any(|l| l.to_ascii_lowercase().contains("authorization")),
        "the squatter got the token: {heard:?}"
    );
}

/// The attack: another user plants `execrelay.toml` in a shared folder, pointing at a port of
/// theirs. The relay's user runs `execrelay jobs` there: a config found in the current
/// directory that is not theirs is not read.
#[test]
fn a_config_planted_in_the_current_directory_is_not_read() {
    if !running_as_root() {
        eprintln!("skipped: planting a file as another user needs root");
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    let planted = shared.path().join("execrelay.toml");
    std::fs::write(&planted, "[http]\nlisten = \"127.0.0.1:9\"\n").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let out = run_cli(&["jobs".as_ref()], shared.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not read"), "{stderr}");
}
