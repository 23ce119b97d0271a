//! A job's life beyond the happy path: timeout, /kill, the concurrency limit, events waiting
//! for a route, and a graceful shutdown that leaves jobs running.

use crate::fakes::receiver::Receiver;
use crate::harness::*;
use serde_json::json;

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_reported() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "timeout", &toml_str("1s"))
        .set("exec", "kill_grace", &toml_str("200ms"))
        .start();
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec echo before; sleep 30"));
    let done = rx.wait_for_message("the timed-out completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(
        first_line(&done.text).contains("timed out after 1.0s"),
        "{:?}",
        done.text
    );
    assert!(
        output_lines(&done.text).contains(&"before"),
        "{:?}",
        done.text
    );
    assert_eq!(relay.job(&job.id).unwrap()["state"], "timed_out");
}

/// `/kill <id prefix>` right after the acknowledgement, when the supervisor may not have
/// written its pid file (or installed its handler) yet: the relay waits for it rather than
/// answer "not running", and the job ends killed.
fn kill_right_after_the_ack(relay: &Relay, rx: &Receiver) {
    let job = relay.start_job(rx, &dm("dm-a", "alice", "/exec sleep 30"));
    relay.say(&dm("dm-a", "alice", &format!("/kill {}", &job.id[..4])));
    let reply = rx.wait_for_message("the /kill reply", SOON, |d| {
        d.text.contains(&job.id) && !is_ack(d) && !is_completion(d)
    });
    assert_eq!(reply.text, format!("stopping job {}", job.id));
    let done = rx.wait_for_message("the killed completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(
        first_line(&done.text).contains("(killed after"),
        "{:?}",
        done.text
    );
    assert_eq!(relay.job(&job.id).unwrap()["state"], "killed");
}

#[test]
fn kill_stops_a_running_job_by_id_prefix() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "kill_grace", &toml_str("200ms"))
        .start();
    kill_right_after_the_ack(&relay, &rx);
}

#[test]
fn kill_waits_for_a_supervisor_still_starting_and_stops_its_job() {
    let rx = Receiver::start();
    // Every supervisor pauses half a second before it can handle SIGTERM.
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "kill_grace", &toml_str("200ms"))
        .env("EXECRELAY_FAILPOINT", "supervisor-slow-start")
        .start();
    kill_right_after_the_ack(&relay, &rx);
}

#[test]
fn a_second_relay_on_the_same_store_refuses_to_start_and_the_first_carries_on() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "first-only")));

    let second = relay.run_second_instance();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second relay ran: {stderr}");
    assert!(
        stderr.contains("another execrelay is already running"),
        "{stderr}"
    );

    relay.open_gate("go");
    rx.wait_for_message("the first relay's completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    relay.wait_outbox_drained();
    assert_eq!(rx.count(|d| is_completion_of(&d.text, &job.id)), 1);
    assert_eq!(rx.count(is_ack), 1, "the second relay sent nothing again");
}

#[test]
fn past_max_concurrent_exec_is_refused_clearly() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "max_concurrent", "1")
        .start();
    let first = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "first")));
    relay.say(&dm("dm-a", "alice", "/exec touch refused-marker"));
    let refusal = rx.wait_for_message("the refusal", SOON, |d| d.text.starts_with("not started"));
    assert!(refusal.text.contains("limit is 1"), "{:?}", refusal.text);
    relay.open_gate("go");
    rx.wait_for_message("the first job's completion", SOON, |d| {
        is_completion_of(&d.text, &first.id)
    });
    assert!(
        !relay.path("refused-marker").exists(),
        "a refused command ran"
    );
    assert_eq!(relay.jobs().len(), 1);
}

#[test]
fn an_event_without_a_route_waits_visibly_then_goes_where_the_user_speaks() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:carol"]);
    relay.api_post(
        "/v1/events",
        &json!({"session": "user:webhook:carol", "text": "note-for-carol", "mode": "now"}),
    );
    wait_for("the event to show as blocked: no-route", SOON, || {
        relay
            .events()
            .into_iter()
            .find(|e| e["text"] == "note-for-carol" && e["blocked"] == "no-route")
    });
    relay.say(&dm("dm-carol", "carol", "hello"));
    let note = rx.wait_for_message("the note after carol spoke", SOON, |d| {
        d.text == "note-for-carol"
    });
    assert_eq!(note.conversation_id, "dm-carol");
    assert!(relay.events().is_empty(), "{:?}", relay.events());
}

#[test]
fn sigterm_leaves_jobs_running_and_the_next_start_reports_them() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec sleep 1.5; echo graceful"));
    wait_for("the job to be running", SOON, || {
        (relay.job(&job.id)?["state"] == "running").then_some(())
    });
    let status = relay.terminate(SOON);
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    relay.restart();
    let done = rx.wait_for_message("the completion after a graceful restart", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(first_line(&done.text).contains("exit 0"), "{:?}", done.text);
    assert!(
        output_lines(&done.text).contains(&"graceful"),
        "{:?}",
        done.text
    );
    relay.wait_outbox_drained();
    assert_eq!(rx.count(|d| is_completion_of(&d.text, &job.id)), 1);
}

#[test]
fn sigterm_under_load_finishes_sends_in_flight_and_the_next_start_picks_up_the_rest() {
    const USERS: usize = 6;
    let rx = Receiver::start();
    let users: Vec<String> = (0..USERS).map(|i| format!("webhook:u{i}")).collect();
    let allow: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut relay = Relay::start(&rx, &allow);

    // Each user (a session of its own, so completions are separate sends) starts a job that
    // ends when the test says `go`, and one that ends on `finish`, after the shutdown. Both
    // wait at most 20 s.
    let mut short = Vec::new();
    let mut long = Vec::new();
    for i in 0..USERS {
        let (user, chat) = (format!("u{i}"), format!("dm-u{i}"));
        let text = gated_exec("go", &format!("short-{i}"));
        short.push(relay.start_job(&rx, &dm(&chat, &user, &text)).id);
        let text = gated_exec("finish", &format!("long-{i}"));
        long.push(relay.start_job(&rx, &dm(&chat, &user, &text)).id);
    }
    // A slow platform: the short jobs' completions are caught in flight. The delay is long
    // enough that all six overlap even when a loaded machine spreads their sends out.
    rx.set_answer_delay(secs(4.0));
    relay.open_gate("go");
    wait_for("every short job's completion in flight", SOON, || {
        (rx.in_flight() >= USERS).then_some(())
    });

    let asked = std::time::Instant::now();
    let status = relay.terminate(SOON);
    eprintln!(
        "sigterm: exited {:?} after SIGTERM with {USERS} sends in flight",
        asked.elapsed()
    );
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert_eq!(
        rx.in_flight(),
        0,
        "the relay waited for its sends in flight"
    );
    for id in &short {
        assert_eq!(
            rx.count(|d| carries_completion_of(&d.text, id)),
            1,
            "job {id}: the completion in flight at SIGTERM was delivered before the exit"
        );
    }

    // The jobs ran on without the relay: they end now, and the next start reports them.
    std::fs::write(relay.path("finish"), "").expect("write finish");
    rx.set_answer_delay(std::time::Duration::ZERO);
    relay.restart();
    for (i, id) in long.iter().enumerate() {
        let done =
            rx.wait_for_message("a completion of a job that outlived the relay", SOON, |d| {
                carries_completion_of(&d.text, id)
            });
        assert!(
            first_line(&done.text).contains("(exit 0 after"),
            "SIGTERM must leave jobs running: {:?}",
            done.text
        );
        assert!(done.text.contains(&format!("long-{i}")), "{:?}", done.text);
    }
    relay.wait_outbox_drained();
    for id in short.iter().chain(&long) {
        let sends = rx
            .attempts()
            .iter()
            .filter(|d| carries_completion_of(&d.text, id))
            .count();
        assert_eq!(sends, 1, "job {id}: sent once, across the shutdown");
    }
}

/// `execrelay run 2>&1 | head -3`, once `head` has exited: every log write fails with EPIPE.
/// Logging must never stop work: the relay still delivers every completion, and still stops
/// on SIGTERM.
#[test]
fn a_relay_that_cannot_log_still_delivers_and_stops() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .stderr_closed()
        .start();
    for n in 0..3 {
        let job = relay.start_job(&rx, &dm("dm-a", "alice", &format!("/exec echo n{n}")));
        let done = rx.wait_for_message("the completion", SOON, |d| {
            is_completion_of(&d.text, &job.id)
        });
        assert!(
            output_lines(&done.text).contains(&format!("n{n}").as_str()),
            "{:?}",
            done.text
        );
    }
    let status = relay.terminate(SOON);
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// `execrelay run | less`, paused: nobody reads the relay's stderr, and once the pipe is full
/// a log write would wait for ever. Logging must never stop work: lines are dropped instead,
/// and the relay still delivers and still stops on SIGTERM.
#[test]
fn a_relay_whose_log_reader_stalls_still_delivers_and_stops() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        // Every crate's every line: the pipe's 64 KiB fill within the first job.
        .env("RUST_LOG", "trace")
        .stderr_stalled()
        .start();
    for n in 0..5 {
        let job = relay.start_job(&rx, &dm("dm-a", "alice", &format!("/exec echo s{n}")));
        rx.wait_for_message("the completion", SOON, |d| {
            is_completion_of(&d.text, &job.id)
        });
    }
    let status = relay.terminate(SOON);
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// One start-up line says what runs: the config file, the store, the API and each channel
/// with where it listens or whom it calls (a URL as scheme and host only); a webhook without
/// a callback_url is warned about.
#[test]
fn the_start_up_line_says_what_runs() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    // Logs reach stderr through a writer thread: the line may follow the ready file.
    let line = wait_for("the start-up line", SOON, || {
        relay
            .log()
            .lines()
            .find(|l| l.contains("execrelay is running: "))
            .map(str::to_string)
    });
    let expected = [
        format!("config {}", relay.config_path().display()),
        format!("store {}", relay.path("execrelay.db").display()),
        format!("API http://{}", relay.addr),
        "local (execrelay chat)".to_string(),
        format!(
            "webhook (POST http://{}/webhook; replies to {})",
            relay.addr,
            rx.callback_url().trim_end_matches("/callback")
        ),
    ];
    for part in expected {
        assert!(line.contains(&part), "`{part}` missing from: {line}");
    }
    assert!(!line.contains("/callback"), "a URL's path is shown: {line}");
    let log = relay.log();
    assert!(!log.contains("without a callback_url"), "{log}");

    let bare = Relay::builder(&rx)
        .unset("channels.webhook", "callback_url")
        .start();
    wait_for("the warning about the missing callback_url", SOON, || {
        bare.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("without a callback_url"))
            .then_some(())
    });
}

/// One person cannot take every slot: past `[exec] max_per_session` their `/exec` is refused
/// saying so, while someone else still gets a job started.
#[test]
fn one_person_cannot_take_every_slot() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice", "webhook:bob"])
        .set("exec", "max_concurrent", "4")
        .set("exec", "max_per_session", "1")
        .start();
    let first = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "first")));
    relay.say(&dm("dm-a", "alice", "/exec touch refused-marker"));
    let refusal = rx.wait_for_message("alice's refusal", SOON, |d| {
        d.text.starts_with("not started")
    });
    assert!(
        refusal.text.contains("the limit per person is 1"),
        "{:?}",
        refusal.text
    );
    let other = relay.start_job(&rx, &dm("dm-b", "bob", &gated_exec("go", "bob's")));
    relay.open_gate("go");
    for job in [&first.id, &other.id] {
        rx.wait_for_message("a completion", SOON, |d| is_completion_of(&d.text, job));
    }
    assert!(!relay.path("refused-marker").exists());
}

/// Pids of live processes whose command line holds `needle` (a test's unique marker).
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (state != "Z" && cmdline.contains(needle)).then_some(pid)
        })
        .collect()
}

/// The attacks on "a job ends when it ends": a job that leaves a process in the background,
/// one that ignores SIGTERM past its timeout, one that escapes into a session of its own.
/// When the job ends, nothing of it runs on, and the completion says what was stopped.
#[test]
fn a_job_ends_when_it_ends_whatever_it_left_running() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "timeout", &toml_str("2s"))
        .set("exec", "kill_grace", &toml_str("300ms"))
        .start();
    let cases = [
        ("sleep 31.01 & echo started", "sleep 31.01", "exit 0"),
        (
            "(trap '' TERM; exec sleep 33.02)",
            "sleep 33.02",
            "timed out after 2.0s",
        ),
        (
            "setsid -w sleep 32.03",
            "sleep 32.03",
            "timed out after 2.0s",
        ),
        // A chain that forks, leaves its session and exits, over and over, for a second.
        (
            "perl -MPOSIX -e '$t = time; while (time - $t < 1) { exit 0 if fork; setsid() } exec qw(sleep 34.04)'",
            "sleep 34.04",
            "exit 0",
        ),
    ];
    for (command, marker, outcome) in cases {
        let job = relay.start_job(&rx, &dm("dm-a", "alice", &format!("/exec {command}")));
        let done = rx.wait_for_message("the completion", SOON, |d| {
            is_completion_of(&d.text, &job.id)
        });
        let first = done.text.lines().next().unwrap_or_default();
        assert!(first.contains(outcome), "{command}: {first}");
        assert!(first.contains(" it left running"), "{command}: {first}");
        let left = processes_with(marker);
        assert!(left.is_empty(), "{command}: still running as {left:?}");
    }
}

/// `[exec] keep_background = true`: for people who start daemons on purpose, what a job
/// leaves running stays.
#[test]
fn keep_background_leaves_daemons_running() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "keep_background", "true")
        .start();
    let (_, done) = relay.run_job(
        &rx,
        &dm("dm-a", "alice", "/exec sleep 30.04 & echo started"),
    );
    assert!(!done.text.contains("stopped"), "{:?}", done.text);
    let left = processes_with("sleep 30.04");
    assert_eq!(left.len(), 1, "the daemon is gone: {left:?}");
    // SAFETY: kill(2) on the test's own leftover.
    unsafe { libc::kill(left[0] as libc::pid_t, libc::SIGKILL) };
}

/// A step that fails after the workers started (a failpoint's error here) still stops and
/// drains: the send in flight is finished and recorded, so the next start does not repeat it.
#[test]
fn a_start_that_fails_after_the_workers_began_still_records_the_send_in_flight() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &["webhook:alice"]);
    rx.set_unavailable(true);
    relay.say(&dm("dm-a", "alice", "/exec true"));
    wait_for("the acknowledgement refused", SOON, || {
        rx.attempts().iter().any(|d| d.status == 503).then_some(())
    });
    relay.terminate(SOON);
    rx.set_unavailable(false);
    rx.set_answer_delay(secs(1.5));
    relay.set_env(&[("EXECRELAY_FAILPOINT", "fail-after-start")]);
    assert!(relay.try_restart().is_err(), "the start fails");
    assert_eq!(
        rx.messages().iter().filter(|d| is_ack(d)).count(),
        1,
        "the send in flight when the start failed was finished before the relay exited"
    );
    rx.set_answer_delay(std::time::Duration::ZERO);
    relay.set_env(&[]);
    relay.restart();
    rx.wait_for_message("the completion", SOON, is_completion);
    relay.wait_outbox_drained();
    let delivered = rx.messages();
    let keys: std::collections::HashSet<&str> = delivered
        .iter()
        .map(|d| d.idempotency_key.as_str())
        .collect();
    assert_eq!(
        keys.len(),
        delivered.len(),
        "nothing sent twice: {delivered:?}"
    );
    assert!(relay.log().contains("a step after the start failed"));
}
