//! The local chat counts a message delivered only when a connected client has it (issue 14,
//! "nothing waits in silence"): a chunk handed to a stream that nobody reads (a client that
//! is stopped, or gone before reading) stays pending, visible in `execrelay outbox`, and the
//! client that does read it prints it, once.

use std::io::{Read, Write};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// Long enough for the relay to give up waiting for an acknowledgement (10 s) and record it.
const PAST_THE_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(40);

fn bot_lines(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter_map(|l| l.strip_prefix("bot> "))
        .collect()
}

fn completions_printed(printed: &str, job: &str) -> usize {
    bot_lines(printed)
        .into_iter()
        .filter(|l| is_completion_of(l, job))
        .count()
}

/// The outbox row (`GET /v1/outbox`) with this key, while it is pending or dead.
fn outbox_row(relay: &Relay, key: &str) -> Option<Value> {
    relay.deliveries().into_iter().find(|d| d["key"] == key)
}

/// A try that did not count: a local row whose last error says no client acknowledged it.
fn unacknowledged_try(relay: &Relay) -> bool {
    relay.deliveries().iter().any(|d| {
        d["channel"] == "local"
            && d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("acknowledged"))
    })
}

/// `execrelay outbox`'s line for the message `key`, which must say it is pending.
#[track_caller]
fn assert_listed_pending(relay: &Relay, key: &str) {
    let out = relay.cli(&["outbox"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.contains(key) && l.contains("pending") && l.contains("exec finished")),
        "`execrelay outbox` does not show {key} pending:\n{listed}"
    );
}

/// `GET /v1/chat/stream` on a connection that then reads nothing more: a client that hung or
/// died before reading what it was sent.
fn open_unread_stream(relay: &Relay) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(relay.addr).expect("connect to the relay");
    stream.set_read_timeout(Some(SOON)).expect("read timeout");
    write!(
        stream,
        "GET /v1/chat/stream HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        relay.addr,
        relay.api_token()
    )
    .expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    // Bounded: each read within SOON, and the answer's head and first line are short.
    while !String::from_utf8_lossy(&got).contains("\"connected\":true") {
        assert!(
            got.len() < 64 * 1024,
            "no hello line in {} bytes",
            got.len()
        );
        let n = stream.read(&mut buf).expect("read the stream's first line");
        assert!(
            n > 0,
            "the relay closed the stream: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    stream
}

/// (a) The client is stopped (SIGSTOP) when the completion of its job comes due: the relay
/// keeps it pending (shown by `execrelay outbox`) instead of counting it delivered into a
/// socket, and the client prints it, once, after SIGCONT.
#[test]
fn a_stopped_chat_client_prints_the_completion_after_it_continues() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    let mut chat = relay.cli_process(&["chat"], Stdio::piped(), Stdio::piped());
    chat.write_line(&gated_exec("go", "kept-while-stopped"));
    let job = wait_for("the chat to print the acknowledgement", SOON, || {
        bot_lines(&chat.stdout()).into_iter().find_map(ack_job_id)
    });
    // The acknowledgement is settled before the client stops.
    relay.wait_outbox_drained();
    chat.signal(libc::SIGSTOP);
    relay.open_gate("go");

    let key = wait_for("the completion's message", SOON, || {
        let completion = &relay.api_get(&format!("/v1/jobs/{job}"))["completion"];
        completion["delivery"]["key"].as_str().map(str::to_string)
    });
    wait_for(
        "the relay to settle a try of the completion while its client is stopped",
        PAST_THE_ACK_WAIT,
        || (outbox_row(&relay, &key).is_none() || unacknowledged_try(&relay)).then_some(()),
    );
    assert!(
        outbox_row(&relay, &key).is_some_and(|d| d["state"] == "pending"),
        "the completion counted as delivered while its only client was stopped: {:?}",
        relay.api_get(&format!("/v1/jobs/{job}"))["completion"]
    );
    assert_listed_pending(&relay, &key);

    chat.signal(libc::SIGCONT);
    wait_for("the continued client to print the completion", SOON, || {
        (completions_printed(&chat.stdout(), &job) > 0).then_some(())
    });
    // Its acknowledgement settles the message, late as it is.
    relay.wait_outbox_drained();
    chat.close_stdin();
    let out = chat.wait(SOON);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chat: {:?}\n{printed}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(completions_printed(&printed, &job), 1, "{printed}");
    assert!(printed.contains("kept-while-stopped"), "{printed}");
}

/// (b) With no chat client connected, the completion waits visibly in `execrelay outbox`; a
/// connection that takes the stream and reads nothing does not take it away; the next
/// `execrelay chat` prints what waited, in order, each once.
#[test]
fn a_completion_nobody_read_waits_in_the_outbox_for_the_next_chat() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &[]);
    relay.api_post(
        "/v1/chat",
        &json!({"text": "/exec echo waited-for-a-reader", "id": "e2e-nobody-read"}),
    );
    let job = wait_for("the job", SOON, || {
        relay.jobs().first().map(|j| json_id(&j["id"]))
    });
    let key = wait_for("the completion to wait in the outbox", SOON, || {
        let completion = &relay.api_get(&format!("/v1/jobs/{job}"))["completion"];
        let key = completion["delivery"]["key"].as_str()?;
        outbox_row(&relay, key)
            .is_some_and(|d| d["state"] == "pending")
            .then(|| key.to_string())
    });
    assert_listed_pending(&relay, &key);

    let unread = open_unread_stream(&relay);
    wait_for(
        "the relay to settle a try on the connection that reads nothing",
        PAST_THE_ACK_WAIT,
        || (outbox_row(&relay, &key).is_none() || unacknowledged_try(&relay)).then_some(()),
    );
    assert!(
        outbox_row(&relay, &key).is_some_and(|d| d["state"] == "pending"),
        "the completion counted as delivered to a connection that never read it"
    );
    assert_listed_pending(&relay, &key);
    drop(unread);

    let chat = relay.cli_process(&["chat"], Stdio::piped(), Stdio::piped());
    wait_for("the new chat to print the completion", SOON * 2, || {
        (completions_printed(&chat.stdout(), &job) > 0).then_some(())
    });
    relay.wait_outbox_drained();
    let out = chat.wait(SOON);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = bot_lines(&printed);
    let acks: Vec<usize> = (0..lines.len())
        .filter(|&i| ack_job_id(lines[i]).as_deref() == Some(job.as_str()))
        .collect();
    let completions: Vec<usize> = (0..lines.len())
        .filter(|&i| is_completion_of(lines[i], &job))
        .collect();
    assert_eq!(acks.len(), 1, "the acknowledgement, once:\n{printed}");
    assert_eq!(completions.len(), 1, "the completion, once:\n{printed}");
    assert!(acks[0] < completions[0], "out of order:\n{printed}");
}

/// A send waiting for a stopped client's acknowledgement holds up no shutdown: SIGTERM ends
/// the chat stream, and with it the wait (the relay records that the client went away, not
/// that the wait ran out), and the message stays pending for the next start.
#[test]
fn shutdown_ends_the_stream_of_a_stopped_client_and_the_wait_for_it() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &[]);
    let mut chat = relay.cli_process(&["chat"], Stdio::piped(), Stdio::piped());
    chat.write_line(&gated_exec("go", "at-shutdown"));
    let job = wait_for("the chat to print the acknowledgement", SOON, || {
        bot_lines(&chat.stdout()).into_iter().find_map(ack_job_id)
    });
    relay.wait_outbox_drained();
    chat.signal(libc::SIGSTOP);
    relay.open_gate("go");
    let key = wait_for("the completion's message", SOON, || {
        let completion = &relay.api_get(&format!("/v1/jobs/{job}"))["completion"];
        completion["delivery"]["key"].as_str().map(str::to_string)
    });
    wait_for(
        "the completion to be handed to the stopped client",
        SOON,
        || {
            relay
                .log()
                .lines()
                .any(|l| l.contains("local chunk handed out") && l.contains(&key))
                .then_some(())
        },
    );
    let status = relay.terminate(SOON * 2);
    assert!(status.success(), "{status}");
    let log = relay.log();
    assert!(
        log.contains("went away first") && !log.contains("acknowledged it in time"),
        "the wait did not end with the stream:\n{}",
        relay.log_tail(4000)
    );
    relay.restart();
    assert!(
        outbox_row(&relay, &key).is_some_and(|d| d["state"] == "pending"),
        "{:?}",
        relay.deliveries()
    );
}
