//! `execrelay doctor` against the fakes: with every channel enabled and a relay running, no
//! check fails and it exits 0; then each fault the issue names (a wrong Telegram token, a
//! webhook set on the Telegram token, a 0755 data directory, an unreachable callback URL) is
//! the named check's failure, with what to do, and exit code 1. No output shows a secret.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use crate::fakes::discord::{self, FakeDiscord};
use crate::fakes::feishu::{self, FakeFeishu};
use crate::fakes::receiver::Receiver;
use crate::fakes::telegram::{self, FakeTelegram};
use crate::harness::*;

/// `execrelay --config <config> doctor --json`, run in `dir`: its exit code and document.
fn doctor(config: &Path, dir: &Path) -> (i32, Value, String) {
    let out = run_cli(
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("doctor"),
            OsStr::new("--json"),
        ],
        dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let document: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("doctor --json printed no JSON ({error}): {out:?}"));
    (out.status.code().expect("an exit code"), document, stdout)
}

/// Writes the builder's config and runs doctor on it, with no relay started and the data
/// directory (the builder's temp dir) at `mode`: a relay makes it 0700 when it starts.
fn doctor_on(builder: &RelayBuilder, mode: u32) -> (i32, Value, String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(builder.dir(), std::fs::Permissions::from_mode(mode)).unwrap();
    let config = builder.dir().join("execrelay.toml");
    std::fs::write(&config, builder.render()).unwrap();
    doctor(&config, builder.dir())
}

/// The check named `name`.
#[track_caller]
fn check<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {document:#}"))
}

/// `name` failed, saying `words` and what to do; it is the only failure; exit code 1.
#[track_caller]
fn assert_only_failure(code: i32, document: &Value, name: &str, words: &str) {
    let failed = check(document, name);
    assert_eq!(failed["status"], "fail", "{document:#}");
    let detail = failed["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(words),
        "`{name}` should say {words:?}: {detail}"
    );
    assert!(
        failed["fix"].as_str().is_some_and(|fix| !fix.is_empty()),
        "a failure says what to do: {failed:#}"
    );
    let others: Vec<&Value> = document["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail" && c["name"] != name)
        .collect();
    assert!(others.is_empty(), "only `{name}` fails: {others:#?}");
    assert_eq!(document["ok"], false, "{document:#}");
    assert_eq!(code, 1, "a failed check exits 1: {document:#}");
}

#[track_caller]
fn assert_no_secret(output: &str) {
    let telegram_secret = telegram::TOKEN.split_once(':').unwrap().1;
    for secret in [
        telegram_secret,
        discord::TOKEN,
        feishu::APP_SECRET,
        feishu::ENCRYPT_KEY,
        SECRET,
    ] {
        assert!(!output.contains(secret), "doctor showed a secret: {output}");
    }
}

#[test]
fn doctor_is_all_green_against_the_fakes_with_a_relay_running() {
    let (rx, tg, dc, fs) = (
        Receiver::start(),
        FakeTelegram::start(),
        FakeDiscord::start(),
        FakeFeishu::start(),
    );
    let builder = fs.configure(dc.configure(tg.configure(Relay::builder(&rx))));
    let relay = builder.start();
    let (code, document, stdout) = doctor(relay.config_path(), relay.dir());
    let failed: Vec<Value> = array(&document, "checks")
        .into_iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(failed.is_empty(), "no check fails: {document:#}");
    assert_eq!(
        (code, &document["ok"]),
        (0, &Value::Bool(true)),
        "{document:#}"
    );
    for name in [
        "http listener",
        "data directory",
        "store",
        "supervisor",
        "channel local",
        "channel webhook",
        "channel telegram",
        "channel discord",
        "channel feishu",
    ] {
        assert_eq!(
            check(&document, name)["status"],
            "ok",
            "{name}: {document:#}"
        );
    }
    assert!(
        check(&document, "relay")["detail"]
            .as_str()
            .unwrap()
            .starts_with("a relay is running"),
        "{document:#}"
    );
    assert!(
        check(&document, "store")["detail"]
            .as_str()
            .unwrap()
            .contains("writable"),
        "{document:#}"
    );
    assert!(
        check(&document, "channel telegram")["detail"]
            .as_str()
            .unwrap()
            .contains(telegram::BOT_USERNAME),
        "{document:#}"
    );
    assert!(
        check(&document, "channel discord")["detail"]
            .as_str()
            .unwrap()
            .contains("Message Content intent is on"),
        "{document:#}"
    );
    assert_eq!(rx.probes(), 1, "one signed probe reached the receiver");
    assert_eq!(rx.count(|_| true), 0, "a probe is no message");
    assert_no_secret(&stdout);

    // Without --json: one line per check, and the verdict.
    let out = run_cli(
        &[
            OsStr::new("--config"),
            relay.config_path().as_os_str(),
            OsStr::new("doctor"),
        ],
        relay.dir(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("channel telegram"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn doctor_names_a_wrong_telegram_token() {
    let (rx, tg) = (Receiver::start(), FakeTelegram::start());
    let wrong = "4242:AAF7-WrongTokenSecretPart9876543210";
    let builder =
        tg.configure(Relay::builder(&rx))
            .set("channels.telegram", "token", &toml_str(wrong));
    let (code, document, stdout) = doctor_on(&builder, 0o700);
    assert_only_failure(code, &document, "channel telegram", "refused the bot token");
    assert!(!stdout.contains("WrongTokenSecretPart"), "{stdout}");
}

#[test]
fn doctor_names_a_webhook_set_on_the_polled_telegram_token() {
    let (rx, tg) = (Receiver::start(), FakeTelegram::start());
    tg.set_webhook("https://elsewhere.example/telegram-hook");
    let builder = tg.configure(Relay::builder(&rx));
    let (code, document, stdout) = doctor_on(&builder, 0o700);
    assert_only_failure(code, &document, "channel telegram", "a webhook is set");
    assert!(stdout.contains("elsewhere.example"), "{stdout}");
    assert!(
        !stdout.contains("telegram-hook"),
        "only the host is shown: {stdout}"
    );
    assert_no_secret(&stdout);
}

#[test]
fn doctor_names_a_data_directory_others_may_enter() {
    let rx = Receiver::start();
    let builder = Relay::builder(&rx);
    let (code, document, _) = doctor_on(&builder, 0o755);
    assert_only_failure(code, &document, "data directory", "0755");
    let fix = check(&document, "data directory")["fix"].as_str().unwrap();
    assert!(fix.contains("chmod 700"), "{fix}");
}

#[test]
fn doctor_names_an_unreachable_callback_url() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let builder = Relay::builder_with_callback(&format!("http://127.0.0.1:{port}/callback"));
    let (code, document, _) = doctor_on(&builder, 0o700);
    assert_only_failure(
        code,
        &document,
        "channel webhook",
        "cannot reach the receiver",
    );
}

#[test]
fn doctor_names_a_discord_bot_without_the_message_content_intent() {
    let (rx, dc) = (Receiver::start(), FakeDiscord::start());
    dc.set_application_flags(0);
    let builder = dc.configure(Relay::builder(&rx));
    let (code, document, stdout) = doctor_on(&builder, 0o700);
    assert_only_failure(
        code,
        &document,
        "channel discord",
        "Message Content intent is off",
    );
    assert_no_secret(&stdout);
}

#[test]
fn doctor_names_a_receiver_that_refuses_the_signature() {
    let rx = Receiver::start();
    let builder = Relay::builder(&rx).set(
        "channels.webhook",
        "secret",
        &toml_str("another-secret-than-the-receivers"),
    );
    let (code, document, stdout) = doctor_on(&builder, 0o700);
    assert_only_failure(
        code,
        &document,
        "channel webhook",
        "refused the probe's signature",
    );
    assert!(!stdout.contains("another-secret"), "{stdout}");
    assert_eq!(rx.probes(), 0);
}
