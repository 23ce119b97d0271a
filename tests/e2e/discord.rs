//! The Discord channel end to end: the real binary, serenity inside it, and the fake REST API
//! and gateway in `tests/fakes/src/discord.rs`. What every platform does alike is in
//! `conformance.rs`; here, what only Discord does (mentions, threads, the gateway's resumes and
//! READY, nonces, backfill).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::fakes::discord::{BOT_ID, DM, FakeDiscord, GUILD_CHANNEL, Posted, TOKEN};
use crate::fakes::receiver::Receiver;
use crate::harness::*;

const ALICE: u64 = 400;

fn start(dc: &FakeDiscord, rx: &Receiver, allow: &[&str]) -> Relay {
    let relay = dc.configure(Relay::builder(rx).allow(allow)).start();
    wait_ready(dc);
    relay
}

/// Waits until the relay's gateway client has identified and is connected.
#[track_caller]
fn wait_ready(dc: &FakeDiscord) {
    wait_for("the relay to connect to the fake gateway", SOON, || {
        (dc.identifies() >= 1 && dc.connected()).then_some(())
    });
}

#[track_caller]
fn wait_posted(
    dc: &FakeDiscord,
    channel: u64,
    what: &str,
    pred: impl Fn(&Posted) -> bool,
) -> Posted {
    wait_for(
        &format!("{what} in discord channel {channel}"),
        SOON,
        || dc.posted_to(channel).into_iter().find(|p| pred(p)),
    )
}

fn is_ack_post(p: &Posted) -> bool {
    p.content.starts_with("started job ")
}

/// A proxy that nothing should use: counts every connection made to it.
struct ProxyTrap {
    url: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ProxyTrap {
    fn start() -> ProxyTrap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy trap");
        listener.set_nonblocking(true).expect("nonblocking trap");
        let url = format!("http://{}", listener.local_addr().expect("trap address"));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ProxyTrap {
            url,
            connections,
            stop,
        }
    }
}

impl Drop for ProxyTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn dm_exec_is_acknowledged_then_completed_and_no_request_escapes_the_fake() {
    let (dc, rx, trap) = (FakeDiscord::start(), Receiver::start(), ProxyTrap::start());
    // An ambient proxy would see any request not bound for the fake (the real discord.com
    // included): none may reach it.
    let mut builder = dc.configure(Relay::builder(&rx).allow(&["discord:400"]));
    for variable in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        builder = builder.env(variable, &trap.url);
    }
    let relay = builder.start();
    wait_ready(&dc);

    let asked = dc.push_message(DM, ALICE, "/exec sh -c 'sleep 0.2; echo dc-ok'", false);
    let ack = wait_posted(&dc, DM, "the acknowledgement", is_ack_post);
    let id = ack_job_id(&ack.content).expect("a job id");
    let done = wait_posted(&dc, DM, "the completion", |p| {
        is_completion_of(&p.content, &id)
    });
    assert!(done.content.contains("exit 0"), "{:?}", done.content);
    assert!(
        output_lines(&done.content).contains(&"dc-ok"),
        "{:?}",
        done.content
    );
    assert_eq!(
        ack.reference,
        Some(asked.to_string()),
        "the ack replies to the request"
    );
    for post in dc.posted() {
        let nonce = post.nonce.as_deref().expect("every post carries a nonce");
        assert!(post.enforce_nonce && nonce.len() <= 25, "{post:?}");
    }

    assert_eq!(
        trap.connections.load(Ordering::Relaxed),
        0,
        "a request went to the proxy"
    );
    let requests = dc.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v10/gateway"),
        "gateway discovery reached the fake: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/api/v10/gateway" && r.user_agent.contains("serenity")),
        "serenity's own gateway discovery reached the fake: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.status != 401),
        "every request had the token"
    );
    let secret = TOKEN.rsplit('.').next().unwrap_or(TOKEN);
    assert!(
        !relay.log().contains(secret),
        "the token appears in the relay's log"
    );
}

#[test]
fn guild_chatter_without_a_mention_is_ignored_and_a_mention_runs() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let relay = start(&dc, &rx, &["discord:400"]);

    let chatter = dc.push_message(GUILD_CHANNEL + 1, ALICE, "echo nothing to see", true);
    wait_for("the chatter to be passed over", SOON, || {
        relay
            .log()
            .lines()
            .any(|l| l.contains("not for the relay") && l.contains(&chatter.to_string()))
            .then_some(())
    });
    let text = format!("<@{BOT_ID}> /exec sh -c 'echo guild-ok'");
    dc.push_message(GUILD_CHANNEL, ALICE, &text, true);
    let ack = wait_posted(&dc, GUILD_CHANNEL, "the acknowledgement", is_ack_post);
    let id = ack_job_id(&ack.content).expect("a job id");
    let done = wait_posted(&dc, GUILD_CHANNEL, "the completion", |p| {
        is_completion_of(&p.content, &id)
    });
    assert!(output_lines(&done.content).contains(&"guild-ok"));
    assert_eq!(relay.jobs().len(), 1);
    let routes = relay.routes();
    assert!(
        routes
            .iter()
            .all(|r| r["chat_id"] != (GUILD_CHANNEL + 1).to_string().as_str()),
        "the ignored line recorded no route: {routes:?}"
    );
    assert!(dc.posted_to(GUILD_CHANNEL + 1).is_empty());
}

#[test]
fn a_job_started_in_a_thread_completes_in_the_thread() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let relay = start(&dc, &rx, &["discord:400"]);
    let thread = 220;
    dc.add_thread(thread, GUILD_CHANNEL);

    dc.push_message(thread, ALICE, "/exec sh -c 'echo thread-ok'", true);
    let ack = wait_posted(&dc, thread, "the acknowledgement", is_ack_post);
    let id = ack_job_id(&ack.content).expect("a job id");
    let done = wait_posted(&dc, thread, "the completion", |p| {
        is_completion_of(&p.content, &id)
    });
    assert!(output_lines(&done.content).contains(&"thread-ok"));
    assert!(
        dc.posted_to(GUILD_CHANNEL).is_empty(),
        "nothing in the parent channel"
    );
    let session = format!("chat:discord:{GUILD_CHANNEL}");
    let route = relay
        .routes()
        .into_iter()
        .find(|r| r["session"] == session.as_str())
        .expect("the thread's messages belong to the parent channel's session");
    assert_eq!(
        route["chat_id"],
        GUILD_CHANNEL.to_string().as_str(),
        "{route}"
    );
}

/// serenity handles each dispatch on its own task, so a message can reach the relay after one
/// sent later. The session's route must follow when they were sent, not when they arrived.
#[test]
fn a_message_handled_late_does_not_move_the_route_back() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let relay = start(&dc, &rx, &["discord:400"]);
    let thread = 220;
    dc.add_thread(thread, GUILD_CHANNEL);
    let session = format!("chat:discord:{GUILD_CHANNEL}");
    let route = || {
        relay
            .routes()
            .into_iter()
            .find(|r| r["session"] == session.as_str())
    };

    let exec = dc.push_message(thread, ALICE, &gated_exec("go", "in-thread"), true);
    let ack = wait_posted(&dc, thread, "the acknowledgement", is_ack_post);
    let id = ack_job_id(&ack.content).expect("a job id");
    // Sent a second before the /exec in the thread, handled after it.
    dc.push_message_sent_before(exec, 1000, (GUILD_CHANNEL, ALICE, "/status", true));
    wait_posted(&dc, GUILD_CHANNEL, "the late /status answered", |_| true);
    let last = route().expect("the channel's route");
    assert_eq!(
        last["thread_id"],
        thread.to_string().as_str(),
        "the late message moved the route back to the channel: {last}"
    );

    relay.open_gate("go");
    let done = wait_posted(&dc, thread, "the completion", |p| {
        is_completion_of(&p.content, &id)
    });
    assert!(output_lines(&done.content).contains(&"in-thread"));
    assert!(
        !dc.posted_to(GUILD_CHANNEL)
            .iter()
            .any(|p| is_completion_of(&p.content, &id)),
        "the completion went to the channel the late message came from"
    );

    // A message sent now does move it.
    dc.push_message(GUILD_CHANNEL, ALICE, "/status", true);
    wait_for("the route to follow a newer message", SOON, || {
        route().filter(|r| r["thread_id"].is_null())
    });
}

#[test]
fn a_dropped_gateway_connection_resumes_without_losing_or_repeating_a_message() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let relay = start(&dc, &rx, &["discord:400"]);

    dc.push_message(DM, ALICE, "/exec echo before-drop", false);
    wait_posted(&dc, DM, "the first acknowledgement", is_ack_post);
    // The resume replays that message as well: it must not run again.
    dc.replay_last_on_resume();
    dc.drop_connection();
    wait_for("the relay to resume its gateway session", SOON, || {
        (dc.resumes() >= 1 && dc.connected()).then_some(())
    });
    dc.push_message(DM, ALICE, "/exec echo after-drop", false);
    wait_posted(&dc, DM, "the second job's completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("after-drop")
    });
    wait_posted(&dc, DM, "the first job's completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("before-drop")
    });
    relay.wait_outbox_drained();
    assert_eq!(relay.jobs().len(), 2, "each message ran once");
    assert_eq!(
        dc.posted_to(DM).iter().filter(|p| is_ack_post(p)).count(),
        2
    );
    assert_eq!(
        dc.identifies(),
        1,
        "the session was resumed, not re-identified"
    );
    let log = relay.log();
    assert!(log.contains("discord gateway session resumed"));
    assert!(
        log.contains("accepted=Duplicate"),
        "the replayed message reached the relay and was recognised"
    );
}

#[test]
fn a_lost_response_is_retried_with_the_same_nonce_and_posted_once() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let relay = dc
        .configure(Relay::builder(&rx).allow(&["discord:400"]).set(
            "outbox",
            "backoff_base",
            &toml_str("100ms"),
        ))
        .start();
    wait_ready(&dc);

    dc.lose_next_response();
    dc.push_message(DM, ALICE, "/status", false);
    wait_for("the retried post", SOON, || {
        (dc.requests().iter().filter(|r| r.method == "POST").count() >= 2).then_some(())
    });
    relay.wait_outbox_drained();
    let posts: Vec<_> = dc
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts[0].status, 500, "the first answer was lost");
    assert_eq!(
        posts[0].nonce, posts[1].nonce,
        "the retry carried the same nonce"
    );
    assert_eq!(
        dc.posted_to(DM).len(),
        1,
        "Discord kept one message: {:?}",
        dc.posted()
    );
}

/// Waits until the relay's gateway client has identified and waits for its held READY.
#[track_caller]
fn wait_identified_held(dc: &FakeDiscord, identifies: usize) {
    wait_for("the relay to identify (READY held)", SOON, || {
        (dc.identifies() >= identifies && dc.ready_held() && dc.connected()).then_some(())
    });
}

/// The relay's log line about message `id` waiting for, or dropped before, READY.
fn before_ready_line(relay: &Relay, id: u64) -> Option<String> {
    relay
        .log()
        .lines()
        .find(|l| l.contains("before READY") && l.contains(&format!("message_id={id}")))
        .map(str::to_string)
}

/// `GET path` on the fake's REST API with the bot token: status and JSON body.
fn fake_get(dc: &FakeDiscord, path: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v10{path}", dc.api_base()))
            .header("Authorization", format!("Bot {TOKEN}"))
            .send()
            .await
            .expect("GET the fake");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    })
}

#[test]
fn fake_history_answers_after_and_limit_as_discord_does() {
    let dc = FakeDiscord::start();
    let ids: Vec<u64> = (0..5)
        .map(|i| dc.push_message(GUILD_CHANNEL, ALICE, &format!("m{i}"), true))
        .collect();
    let ids_of = |page: &serde_json::Value| -> Vec<u64> {
        page.as_array()
            .expect("an array")
            .iter()
            .map(|m| {
                m["id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .expect("an id")
            })
            .collect()
    };
    let path = format!("/channels/{GUILD_CHANNEL}/messages");
    let (status, page) = fake_get(&dc, &format!("{path}?after={}&limit=2", ids[0]));
    assert_eq!(status, 200);
    assert_eq!(
        ids_of(&page),
        vec![ids[2], ids[1]],
        "the two right after, newest first"
    );
    assert!(
        page[0]["guild_id"].is_null(),
        "REST messages do not name the guild"
    );
    assert_eq!(page[0]["content"], "m2");
    let (_, page) = fake_get(&dc, &format!("{path}?after={}&limit=100", ids[4]));
    assert!(ids_of(&page).is_empty());
    let (_, page) = fake_get(&dc, &format!("{path}?limit=3"));
    assert_eq!(
        ids_of(&page),
        vec![ids[4], ids[3], ids[2]],
        "the latest, newest first"
    );
    assert_eq!(fake_get(&dc, &format!("{path}?limit=101")).0, 400);
    dc.rate_limit_history_next(1);
    assert_eq!(fake_get(&dc, &path).0, 429);
    assert_eq!(ids_of(&fake_get(&dc, &path).1).len(), 5);
}

/// The gateway does not replay to a new session what was sent while the relay was down: the
/// relay fetches it at READY. A message seen both live and by that fetch runs once.
#[test]
fn an_exec_sent_while_the_relay_was_stopped_runs_once_when_it_is_back() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let mut relay = start(&dc, &rx, &["discord:400"]);
    dc.push_message(DM, ALICE, "/exec echo first", false);
    wait_posted(&dc, DM, "the first completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("first")
    });
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });

    // Nobody connected: it only lands in the channel's history.
    dc.push_message(DM, ALICE, "/exec echo while-down", false);
    dc.hold_ready();
    dc.rate_limit_history_next(1);
    relay.restart();
    wait_identified_held(&dc, 2);
    // Dispatched to the new session before READY, and in the history READY's fetch reads.
    let both = dc.push_message(DM, ALICE, "/exec echo both-ways", false);
    wait_for("the relay to hold the message for READY", SOON, || {
        before_ready_line(&relay, both)
    });
    dc.release_ready();

    for out in ["while-down", "both-ways"] {
        wait_posted(&dc, DM, &format!("the completion of {out}"), |p| {
            p.content.starts_with("exec finished: ") && output_lines(&p.content).contains(&out)
        });
    }
    relay.wait_outbox_drained();
    assert_eq!(
        relay.jobs().len(),
        3,
        "each message ran once: {:?}",
        relay.jobs()
    );
    assert_eq!(
        dc.posted_to(DM).iter().filter(|p| is_ack_post(p)).count(),
        3
    );
    assert!(
        relay.log().contains("accepted=Duplicate"),
        "the message seen live and fetched reached the relay twice and ran once"
    );
    let history: Vec<_> = dc
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v10/channels/{DM}/messages"))
        .collect();
    assert_eq!(history[0].status, 429, "{history:?}");
    assert!(
        history
            .iter()
            .any(|r| r.status == 200 && r.query.contains("after=")),
        "the fetch was retried after the 429: {history:?}"
    );
}

/// serenity may hand a message over before READY (here: READY comes late). It waits for it,
/// however long, rather than being dropped after a while.
#[test]
fn a_message_that_arrives_before_ready_is_not_lost() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    dc.hold_ready();
    let relay = dc
        .configure(Relay::builder(&rx).allow(&["discord:400"]))
        .start();
    wait_identified_held(&dc, 1);
    let early = dc.push_message(DM, ALICE, "/exec echo before-ready", false);
    // The old relay dropped such a message after 10 s: give it the time to say so.
    let line = wait_for(
        "the relay to say what it does with a message before READY",
        Duration::from_secs(30),
        || before_ready_line(&relay, early),
    );
    assert!(line.contains("waits for READY"), "{line}");
    dc.release_ready();
    let ack = wait_posted(&dc, DM, "the acknowledgement", is_ack_post);
    let id = ack_job_id(&ack.content).expect("a job id");
    let done = wait_posted(&dc, DM, "the completion", |p| {
        is_completion_of(&p.content, &id)
    });
    assert!(output_lines(&done.content).contains(&"before-ready"));
    assert_eq!(ack.reference, Some(early.to_string()));
}

/// A command that comes back from a long downtime is answered, not run.
#[test]
fn an_exec_older_than_the_window_is_answered_too_old_and_not_run() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let mut relay = start(&dc, &rx, &["discord:400"]);
    let hour: u64 = 3600 * 1000;
    let now = unix_now_ms() as u64;
    // The last thing the relay stored, 26 hours ago (its snowflake says so).
    dc.push_message_at(now - 26 * hour, (DM, ALICE, "/status", false));
    wait_posted(&dc, DM, "the /status answer", |p| {
        p.content.starts_with("execrelay ")
    });
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });

    // Sent 25 hours ago, while the relay was down.
    dc.push_message_at(
        now - 25 * hour,
        (DM, ALICE, "/exec touch ran-too-old", false),
    );
    relay.restart();
    let answer = wait_posted(&dc, DM, "the too-old answer", |p| {
        p.content.contains("too old")
    });
    assert!(answer.content.contains("not run"), "{:?}", answer.content);
    assert!(
        answer.content.contains("25h"),
        "says how old: {:?}",
        answer.content
    );
    assert!(
        answer.content.contains("24h"),
        "says the window: {:?}",
        answer.content
    );
    relay.wait_outbox_drained();
    assert!(relay.jobs().is_empty(), "{:?}", relay.jobs());
    assert!(!relay.path("ran-too-old").exists());
}

/// Fetched messages do not name their guild: a thread's backfilled `/exec` still belongs to its
/// channel's session and reports in the thread, and chatter there stays ignored.
#[test]
fn a_thread_message_sent_while_the_relay_was_stopped_reports_in_the_thread() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let mut relay = start(&dc, &rx, &["discord:400"]);
    let thread = 220;
    dc.add_thread(thread, GUILD_CHANNEL);
    dc.push_message(thread, ALICE, "/status", true);
    wait_posted(&dc, thread, "the /status answer", |p| {
        p.content.starts_with("execrelay ")
    });
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });

    let chatter = dc.push_message(thread, ALICE, "echo not for the bot", true);
    dc.push_message(thread, ALICE, "/exec echo thread-backfill", true);
    relay.restart();
    let done = wait_posted(&dc, thread, "the completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("thread-backfill")
    });
    assert!(output_lines(&done.content).contains(&"thread-backfill"));
    relay.wait_outbox_drained();
    assert!(
        dc.posted_to(GUILD_CHANNEL).is_empty(),
        "nothing in the parent channel"
    );
    let session = format!("chat:discord:{GUILD_CHANNEL}");
    let jobs = relay.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["session"], session.as_str(), "{jobs:?}");
    assert!(
        relay
            .log()
            .lines()
            .any(|l| l.contains("not for the relay") && l.contains(&chatter.to_string())),
        "the chatter was fetched and passed over"
    );
}

/// A channel whose history could not be fetched at READY waits for the next READY, and live
/// traffic stored there meanwhile does not move its point past what was never fetched.
#[test]
fn a_backfill_that_gave_up_resumes_at_the_next_ready_despite_live_traffic() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let mut relay = start(&dc, &rx, &["discord:400"]);
    dc.push_message(DM, ALICE, "/exec echo first", false);
    wait_posted(&dc, DM, "the first completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("first")
    });
    relay.wait_outbox_drained();
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });
    // Sent while the relay is down; its fetch at the next READY meets five 429s (it gives up).
    dc.push_message(DM, ALICE, "/exec echo missed-while-down", false);
    dc.rate_limit_history_next(5);
    relay.restart();
    wait_for(
        "the backfill to give up on the DM",
        Duration::from_secs(30),
        || relay.log().contains("history unavailable").then_some(()),
    );
    // Live traffic in the same DM.
    dc.push_message(DM, ALICE, "/exec echo live", false);
    wait_posted(&dc, DM, "the live completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("live")
    });
    relay.wait_outbox_drained();
    // The next READY (a restart), history answering again.
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });
    relay.restart();
    wait_posted(
        &dc,
        DM,
        "the completion of the message sent while down",
        |p| p.content.starts_with("exec finished: ") && p.content.contains("missed-while-down"),
    );
    relay.wait_outbox_drained();
    // The live message, fetched again from the floor, is recognised and not run twice.
    let mut commands: Vec<String> = relay
        .jobs()
        .iter()
        .filter_map(|job| job["command"].as_str().map(str::to_string))
        .collect();
    commands.sort();
    assert_eq!(
        commands,
        ["echo first", "echo live", "echo missed-while-down"],
        "each ran once"
    );
}

/// A thread's parent is kept with its channel's point: a thread message fetched again after a
/// restart, while the channel lookup fails, still maps to the parent's chat, so the relay's
/// dedupe (per chat) recognises it and it does not run a second time in another session.
#[test]
fn a_thread_message_fetched_again_while_lookups_fail_does_not_run_twice() {
    let (dc, rx) = (FakeDiscord::start(), Receiver::start());
    let mut relay = start(&dc, &rx, &["discord:400"]);
    let thread = 220;
    dc.add_thread(thread, GUILD_CHANNEL);
    dc.push_message(thread, ALICE, "/status", true);
    wait_posted(&dc, thread, "the /status answer", |p| {
        p.content.starts_with("execrelay ")
    });
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });
    // The next backfill gives up: the thread's point stays where it was, so the message run
    // live now is fetched again at the READY after.
    dc.rate_limit_history_next(5);
    relay.restart();
    wait_for(
        "the backfill to give up on the thread",
        Duration::from_secs(30),
        || relay.log().contains("history unavailable").then_some(()),
    );
    dc.push_message(thread, ALICE, "/exec echo in-thread", true);
    wait_posted(&dc, thread, "the completion", |p| {
        p.content.starts_with("exec finished: ") && p.content.contains("in-thread")
    });
    relay.wait_outbox_drained();
    relay.terminate(SOON);
    wait_for("the gateway connection to close", SOON, || {
        (!dc.connected()).then_some(())
    });

    dc.fail_channel_lookups();
    relay.restart();
    wait_for("the second backfill to finish", SOON, || {
        (relay.log().matches("discord backfill finished").count() >= 2).then_some(())
    });
    relay.wait_outbox_drained();
    let session = format!("chat:discord:{GUILD_CHANNEL}");
    let jobs = relay.jobs();
    assert_eq!(jobs.len(), 1, "ran once: {jobs:?}");
    assert_eq!(jobs[0]["session"], session.as_str(), "{jobs:?}");
    assert_eq!(
        dc.posted_to(thread)
            .iter()
            .filter(|p| p.content.starts_with("exec finished: "))
            .count(),
        1
    );
}
