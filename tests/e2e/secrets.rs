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

    let job = relay.start_job(&rx, &dm("dm-a", "alice", "/exec cat leaky.txt"));
    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
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
    let job = relay.start_job(
        &rx,
        &dm(
            "dm-a",
            "alice",
            "/exec printenv EXECRELAY_TELEGRAM_TOKEN EXECRELAY_DISCORD_TOKEN RELAY_PRIVATE | base64; env | cut -d= -f1 | sort | tr '\\n' ' '",
        ),
    );
    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
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
