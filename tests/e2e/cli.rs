//! The clients of a running relay (issue 12): quiet on a closed pipe, a chat that reconnects
//! and waits for what it started, dead letters and blocked events an operator can retry or
//! drop, and listings as JSON.

use std::process::Stdio;

use serde_json::Value;

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// Stdout as a pipe whose reader is already gone: the first write meets EPIPE.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer.into()
}

#[track_caller]
fn assert_ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_client_exits_quietly_when_its_reader_has_gone() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    for args in [
        &["jobs"][..],
        &["jobs", "--json"],
        &["outbox"],
        &["events"],
        &["notify", "hello"],
    ] {
        let out = relay
            .cli_process(args, Stdio::null(), closed_stdout())
            .wait(SOON);
        assert_quiet(&format!("{args:?}"), &out);
    }
    let check: [&std::ffi::OsStr; 4] = [
        "--config".as_ref(),
        relay.config_path().as_os_str(),
        "config".as_ref(),
        "check".as_ref(),
    ];
    let out = CliProcess::spawn(&check, relay.dir(), Stdio::null(), closed_stdout()).wait(SOON);
    // Its warnings (jobs run as root, here) go to stderr as usual; nothing about the pipe.
    let said = stderr(&out);
    assert!(
        out.status.success() && !said.contains("panicked") && !said.contains("pipe"),
        "`execrelay config check | true`: {:?}\n{said}",
        out.status
    );
}

#[track_caller]
fn assert_quiet(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "`execrelay {what} | true` must exit 0 quietly: {:?}, stderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// `printf '<line>\n' | execrelay chat <extra>`, input ending once the job is acknowledged,
/// and the job's gate opened then (so the client has reached its wait when the job ends).
fn chat_piped(
    relay: &Relay,
    line: &str,
    extra: &[&str],
    gate: Option<&str>,
) -> std::process::Output {
    let mut args = vec!["chat"];
    args.extend_from_slice(extra);
    let mut chat = relay.cli_process(&args, Stdio::piped(), Stdio::piped());
    chat.write_line(line);
    // Input ends once the job is acknowledged: `--wait` then times the job, not the machine.
    wait_for("the chat to print the acknowledgement", SOON, || {
        chat.stdout().contains("started job ").then_some(())
    });
    chat.close_stdin();
    if let Some(gate) = gate {
        relay.open_gate(gate);
    }
    chat.wait(SOON * 2)
}

#[test]
fn chat_with_piped_input_waits_for_the_completion_of_its_job() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let out = chat_piped(
        &relay,
        &gated_exec("go", "hi-from-the-job"),
        &[],
        Some("go"),
    );
    assert_ok("`printf '/exec ...' | execrelay chat`", &out);
    let printed = stdout(&out);
    let ack = printed
        .lines()
        .find_map(|l| ack_job_id(l.trim_start_matches("bot> ")))
        .unwrap_or_else(|| panic!("no acknowledgement printed:\n{printed}"));
    assert!(
        printed
            .lines()
            .any(|l| is_completion_of(l.trim_start_matches("bot> "), &ack)),
        "the completion of job {ack} was not printed:\n{printed}"
    );
    assert!(printed.contains("hi-from-the-job"), "{printed}");
}

#[test]
fn chat_gives_up_after_its_wait_naming_the_job_still_running() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    // The gate never opens: the job outlives the wait.
    let out = chat_piped(&relay, &gated_exec("never", "x"), &["--wait", "1s"], None);
    assert!(!out.status.success(), "exited 0 with its job unfinished");
    let job = relay.jobs()[0]["id"].as_str().unwrap().to_string();
    assert!(
        stderr(&out).contains(&format!("job {job}")),
        "the error should name job {job}:\n{}",
        stderr(&out)
    );
}

#[test]
fn a_chat_client_sees_a_completion_produced_while_the_relay_restarted() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx).fixed_port().start();
    let mut chat = relay.cli_process(&["chat"], Stdio::piped(), Stdio::piped());
    chat.write_line(&gated_exec("go", "after-the-restart"));
    let job = wait_for("the chat to print the acknowledgement", SOON, || {
        chat.stdout()
            .lines()
            .find_map(|l| ack_job_id(l.trim_start_matches("bot> ")))
    });
    relay.kill9();
    // The job ends while no relay runs; the restarted one reports it.
    relay.open_gate("go");
    relay.restart();
    wait_for("the chat to print the completion", SOON * 2, || {
        chat.stdout()
            .lines()
            .any(|l| is_completion_of(l.trim_start_matches("bot> "), &job))
            .then_some(())
    });
    assert!(chat.stderr().contains("reconnect"), "{}", chat.stderr());
    // Input goes on working after the reconnect.
    chat.write_line("/help");
    chat.close_stdin();
    let out = chat.wait(SOON);
    assert_ok("chat after a restart", &out);
}

#[test]
fn a_chat_client_whose_relay_does_not_come_back_exits_non_zero() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &[]);
    let chat = relay.cli_process(
        &["chat", "--reconnect-for", "1s"],
        Stdio::piped(),
        Stdio::piped(),
    );
    wait_for("the chat to connect", SOON, || {
        chat.stderr().contains("connected").then_some(())
    });
    relay.kill9();
    // Its input stays open while it reconnects: only the bound ends it.
    wait_for("the chat to notice", SOON, || {
        chat.stderr().contains("reconnecting").then_some(())
    });
    let out = chat.wait(SOON);
    assert!(!out.status.success(), "exited 0 without a relay");
    assert!(
        stderr(&out).contains("could not reconnect"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn outbox_retry_sends_a_dead_letter_again_and_unknown_ids_are_named() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "revived")));
    let id = job.id.clone();
    rx.respond_next_where(1, 410, &[], move |d| is_completion_of(&d.text, &id));
    relay.open_gate("go");
    let dead = wait_for("the completion to be dead-lettered", SOON, || {
        relay
            .deliveries()
            .into_iter()
            .find(|d| d["state"] == "dead")
    });

    let out = relay.cli(&["outbox", "retry", &json_id(&dead["id"])]);
    assert_ok("outbox retry", &out);
    rx.wait_for_message("the retried completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    relay.wait_outbox_drained();

    for args in [
        &["outbox", "retry", "4242"][..],
        &["outbox", "drop", "4242"],
    ] {
        let out = relay.cli(args);
        assert!(!out.status.success(), "`{args:?}` succeeded");
        assert!(
            stderr(&out).contains("4242"),
            "`{args:?}`: {}",
            stderr(&out)
        );
    }
    let out = relay.cli(&["outbox", "retry", "--all"]);
    assert_ok("outbox retry --all", &out);
    assert!(stdout(&out).contains("no dead letters"), "{}", stdout(&out));
}

#[test]
fn a_dropped_delivery_is_never_sent() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    rx.set_unavailable(true);
    relay.say(&dm("dm-a", "alice", "/help"));
    let pending = wait_for("the reply to wait in the outbox", SOON, || {
        relay
            .deliveries()
            .into_iter()
            .find(|d| d["state"] == "pending")
    });
    let id = json_id(&pending["id"]);
    // A send may be in flight at that moment; the drop says so, and a retry gets through.
    wait_for("the drop to be taken", SOON, || {
        relay
            .cli(&["outbox", "drop", &id])
            .status
            .success()
            .then_some(())
    });
    assert!(relay.deliveries().is_empty(), "{:?}", relay.deliveries());
    rx.set_unavailable(false);
    // The chat's next message arrives; the dropped one, which was ahead of it, never does.
    let after = relay.start_job(&rx, &dm("dm-a", "alice", "/exec true"));
    assert_eq!(rx.messages()[0].idempotency_key, after.ack.idempotency_key);
}

#[test]
fn blocked_events_are_listed_with_their_reason_and_can_be_dropped() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    // A session that never spoke has no route: its event stays queued, blocked.
    let out = relay.cli(&[
        "notify",
        "nobody hears this",
        "--session",
        "user:webhook:nobody",
    ]);
    assert_ok("notify", &out);
    let event = wait_for("the event to be blocked", SOON, || {
        relay.events().into_iter().find(|e| !e["blocked"].is_null())
    });
    let id = json_id(&event["id"]);
    let listed = relay.cli(&["events"]);
    assert_ok("events", &listed);
    let line = stdout(&listed)
        .lines()
        .find(|l| l.contains("nobody hears this"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("not listed:\n{}", stdout(&listed)));
    assert!(
        line.contains(&format!("blocked: {}", event["blocked"].as_str().unwrap())),
        "{line}"
    );

    assert_ok("events drop", &relay.cli(&["events", "drop", &id]));
    assert!(relay.events().is_empty(), "{:?}", relay.events());
    let again = relay.cli(&["events", "drop", &id]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains(&id), "{}", stderr(&again));
}

#[test]
fn a_dead_letter_a_missing_callback_url_caused_is_sent_after_a_restart_that_sets_it() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .unset("channels.webhook", "callback_url")
        .allow(&["webhook:alice"])
        .start();
    relay.say(&dm("dm-a", "alice", "/help"));
    wait_for("the reply to be dead-lettered", SOON, || {
        relay
            .deliveries()
            .into_iter()
            .find(|d| d["state"] == "dead" && d["dead_cause"] == "config")
    });
    let url = rx.callback_url();
    relay.edit_config(|text| {
        text.replace(
            "[channels.webhook]\n",
            &format!("[channels.webhook]\ncallback_url = {}\n", toml_str(&url)),
        )
    });
    relay.restart();
    rx.wait_for_message("the reply dead-lettered before", SOON, |d| {
        d.conversation_id == "dm-a" && d.text.contains("/exec")
    });
    relay.wait_outbox_drained();
}

#[test]
fn jobs_show_start_duration_and_exit_and_every_listing_prints_json() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec sh -c 'exit 3'"));
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });

    let out = relay.cli(&["jobs"]);
    assert_ok("jobs", &out);
    let listing = stdout(&out);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&job.id))
        .unwrap_or_else(|| panic!("job {} not listed:\n{listing}", job.id));
    assert!(line.contains("exited 3"), "exit: {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.iter().any(|w| is_date(w)),
        "start time (YYYY-MM-DD hh:mm:ss): {line}"
    );
    assert!(words.iter().any(|w| is_duration(w)), "duration: {line}");

    for (listing, key) in [
        ("jobs", "jobs"),
        ("outbox", "deliveries"),
        ("events", "events"),
    ] {
        let out = relay.cli(&[listing, "--json"]);
        assert_ok(&format!("{listing} --json"), &out);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{listing} --json is not one JSON document ({e}):\n{}",
                stdout(&out)
            )
        });
        assert!(doc[key].is_array(), "{listing} --json: {doc}");
    }
}

fn is_date(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && word.replace('-', "").parse::<u32>().is_ok()
}

/// `12ms` or `1.5s`, as `format_duration` writes a short run.
fn is_duration(word: &str) -> bool {
    word.strip_suffix("ms")
        .or_else(|| word.strip_suffix('s'))
        .is_some_and(|n| n.parse::<f64>().is_ok())
}

/// `execrelay backup PATH` while the relay runs: a private copy that a relay starts on, with
/// the jobs it knew; an existing file is never overwritten.
#[test]
fn a_backup_taken_while_the_relay_runs_is_a_store_a_relay_starts_on() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec echo kept"));
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });

    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("execrelay-backup.db");
    let args = |dest: &std::path::Path| {
        run_cli(
            &[
                "--config".as_ref(),
                relay.config_path().as_os_str(),
                "backup".as_ref(),
                dest.as_os_str(),
            ],
            elsewhere.path(),
        )
    };
    let out = args(&copy);
    assert_ok("backup", &out);
    assert!(
        stdout(&out).contains("execrelay-backup.db"),
        "{}",
        stdout(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds message texts: {mode:o}");
    let again = args(&copy);
    assert!(!again.status.success(), "overwrote an existing file");
    assert!(
        stderr(&again).contains("cannot create"),
        "{}",
        stderr(&again)
    );

    let restored = Relay::builder(&rx)
        .set("store", "path", &toml_str(&copy.to_string_lossy()))
        .start();
    let kept = restored.job(&job.id).expect("the job in the copy");
    assert_eq!(kept["state"], "exited", "{kept}");
}

/// `execrelay chat 2>&1 | head -1`, once `head` has gone: what it says on stderr is lost, but
/// it still prints the completion and exits 0 (it used to panic on its first stderr line).
#[test]
fn a_chat_whose_stderr_is_gone_still_reports_its_job() {
    use std::io::{Read, Write};
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let addr = relay.addr.to_string();
    let mut chat = without_relay_settings(std::process::Command::new(bin()))
        .arg("--config")
        .arg(relay.config_path())
        .args(["chat", "--addr", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(closed_stdout())
        .spawn()
        .expect("spawn execrelay chat");
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"/exec echo still-reporting\n").unwrap();
    drop(stdin);
    let mut out = chat.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let status = wait_for("the chat to exit", SOON * 2, || chat.try_wait().unwrap());
    let printed = reader.join().unwrap();
    assert!(status.success(), "{status}: {printed}");
    assert!(printed.contains("still-reporting"), "{printed}");
}

/// The relay dies right after storing a chat line, before it answers: the client sends the
/// line again (same id) to the restarted relay, which runs it once and names the row it
/// stored, and the client follows that to the job's completion.
#[test]
fn a_line_resent_after_a_lost_answer_runs_once_and_is_followed() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .fixed_port()
        .env("EXECRELAY_FAILPOINT", "inbound-stored")
        .start();
    let mut chat = relay.cli_process(&["chat", "--wait", "1m"], Stdio::piped(), Stdio::piped());
    wait_for("the chat to connect", SOON, || {
        chat.stderr().contains("connected").then_some(())
    });
    chat.write_line("/exec echo resent-once");
    chat.close_stdin();
    relay.wait_exited(SOON);
    relay.set_env(&[]);
    relay.restart();
    let out = chat.wait(SOON * 2);
    assert_ok("chat across a lost answer", &out);
    let printed = stdout(&out);
    let job = printed
        .lines()
        .find_map(|l| ack_job_id(l.trim_start_matches("bot> ")))
        .unwrap_or_else(|| panic!("no acknowledgement printed:\n{printed}\n{}", stderr(&out)));
    assert!(
        printed
            .lines()
            .any(|l| is_completion_of(l.trim_start_matches("bot> "), &job)),
        "the completion was not followed:\n{printed}\n{}",
        stderr(&out)
    );
    assert_eq!(relay.jobs().len(), 1, "the resent line ran twice");
}

/// Input has ended and the relay goes away: `--wait` bounds the reconnecting too, so the
/// client gives up when its wait is over (naming the job), not after `--reconnect-for`.
#[test]
fn the_wait_bounds_reconnecting_once_input_has_ended() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &[]);
    let mut chat = relay.cli_process(
        &["chat", "--wait", "2s", "--reconnect-for", "5m"],
        Stdio::piped(),
        Stdio::piped(),
    );
    chat.write_line(&gated_exec("never", "x"));
    let job = wait_for("the chat to print the acknowledgement", SOON, || {
        chat.stdout()
            .lines()
            .find_map(|l| ack_job_id(l.trim_start_matches("bot> ")))
    });
    chat.close_stdin();
    wait_for("the chat to start waiting", SOON, || {
        chat.stderr().contains("input ended").then_some(())
    });
    relay.kill9();
    let out = chat.wait(SOON);
    assert!(!out.status.success(), "exited 0 with its job unfinished");
    assert!(stderr(&out).contains("gave up waiting"), "{}", stderr(&out));
    // What is owed is named: by its job once the client learned it, else by its line.
    assert!(
        stderr(&out).contains(&format!("job {job}")) || stderr(&out).contains("-f never"),
        "{}",
        stderr(&out)
    );
}

/// The attack: job output carrying terminal control sequences (an OSC 52 clipboard write, a
/// window title). A job's output reaches chat without them; `chat` and `outbox` show any other
/// control characters as text; the operator's terminal obeys none.
#[test]
fn job_output_cannot_drive_the_operators_terminal() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let evil = r"/exec printf 'x\033]52;c;ZXZpbA==\007\033]0;pwned\007y\n'";
    let out = chat_piped(&relay, evil, &[], None);
    assert_ok("chat", &out);
    let printed = stdout(&out);
    assert!(
        printed.lines().any(|line| line.trim() == "xy"),
        "the sequences are taken out: {printed}"
    );
    assert!(
        !printed.contains('\u{1b}') && !printed.contains('\u{7}'),
        "{printed:?}"
    );

    // With no chat client, the answers wait in the outbox: its listing (a command line with
    // raw control characters, sent through the API) is safe too.
    relay.api_post(
        "/v1/chat",
        &serde_json::json!({"text": "/exec true \u{1b}]0;pwned\u{7}"}),
    );
    wait_for("the acknowledgement waiting in the outbox", SOON, || {
        relay
            .deliveries()
            .into_iter()
            .find(|d| d["text"].as_str().is_some_and(|t| t.contains("]0;pwned")))
    });
    let listed = stdout(&relay.cli(&["outbox"]));
    assert!(listed.contains("^[]0;pwned^G"), "{listed}");
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
}
