//! `execrelay chat`: a conversation with the relay as the local user. It acknowledges each
//! chunk it prints (the relay counts a chunk delivered only then, and keeps it pending until a
//! client has it), prints a chunk the relay sends again only once, reconnects when the relay
//! restarts, and once its input ends it waits for what its own messages started, following
//! them by inbox id and message key, never by their text.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::listings::job_outcome;
use super::{ChatArgs, Client, ClientError, out, text};
use crate::config::ClientConfig;
use crate::logging::say;

/// The first pause before reconnecting a chat stream, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often a chat client asks the relay what its messages produced, while it waits.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// How long an acknowledgement may take; the relay waits longer for it (`local::ACK_WAIT`).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

type ChatStream = futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>;

/// A message this chat sent, and what it is still owed: its processing, its last reply and
/// its job's completion, each seen whole on the stream (by message key, not by its text).
struct Followed {
    inbox_id: i64,
    text: String,
    processed: bool,
    reply_key: Option<String>,
    job: Option<String>,
    completion_key: Option<String>,
    /// The job's completion will not reach this chat (another channel, dropped): said once.
    completion_elsewhere: bool,
    /// Where the job's completion stands, for the report when the wait runs out.
    status: String,
}

impl Followed {
    fn job_done(&self, seen: &HashSet<String>) -> bool {
        self.job.is_none()
            || self.completion_elsewhere
            || self
                .completion_key
                .as_ref()
                .is_some_and(|k| seen.contains(k))
    }

    fn done(&self, seen: &HashSet<String>) -> bool {
        self.processed
            && self.reply_key.as_ref().is_none_or(|k| seen.contains(k))
            && self.job_done(seen)
    }

    /// Asks the relay what is still unknown; quiet about a relay that is away (the stream
    /// notices that and reconnects).
    async fn poll(&mut self, client: &Client) -> anyhow::Result<()> {
        if !self.processed {
            let Ok(status) = client.get(&format!("/v1/inbox/{}", self.inbox_id)).await else {
                return Ok(());
            };
            if status["processed"] != json!(true) {
                return Ok(());
            }
            self.processed = true;
            self.reply_key = local_key(&status["last_reply"]);
            self.job = status["job_id"].as_str().map(str::to_string);
            self.status = "running".into();
        }
        let Some(job) = self.job.clone() else {
            return Ok(());
        };
        if self.completion_key.is_some() || self.completion_elsewhere {
            return Ok(());
        }
        let Ok(body) = client.get(&format!("/v1/jobs/{job}")).await else {
            return Ok(());
        };
        let completion = &body["completion"];
        self.status = match (completion["event_state"].as_str(), &completion["delivery"]) {
            (None, _) => text(&body["state"]),
            (Some("dropped"), _) => {
                self.completion_elsewhere = true;
                say(format_args!(
                    "job {job} ended ({}); its completion was dropped",
                    job_outcome(&body)
                ));
                return Ok(());
            }
            (Some(_), Value::Null) => match completion["blocked"].as_str() {
                Some(reason) => format!("finished; its completion waits: {reason}"),
                None => "finished; its completion is queued".into(),
            },
            (Some(_), delivery) => {
                if let Some(key) = local_key(delivery)
                    && delivery["state"] != "dropped"
                {
                    self.completion_key = Some(key);
                } else {
                    self.completion_elsewhere = true;
                    out(format!(
                        "job {job} ended ({}); its completion went to {} ({})",
                        job_outcome(&body),
                        text(&delivery["channel"]),
                        text(&delivery["state"])
                    ))?;
                }
                "finished; its completion is on its way".into()
            }
        };
        Ok(())
    }

    fn describe(&self) -> String {
        match (&self.job, self.processed) {
            (_, false) => format!("`{}`: not processed yet", self.text),
            (Some(job), true) => format!("job {job} ({}): {}", self.text, self.status),
            (None, true) => format!("`{}`: its reply has not arrived", self.text),
        }
    }
}

/// The key of a message bound for this chat (`DeliveryRef` JSON), if it is one.
fn local_key(delivery: &Value) -> Option<String> {
    (delivery["channel"] == crate::ingest::inbound::LOCAL_CHANNEL)
        .then(|| delivery["key"].as_str().map(str::to_string))
        .flatten()
}

async fn open_stream(client: &Client) -> anyhow::Result<ChatStream> {
    use futures_util::StreamExt;
    let stream = client
        .request(reqwest::Method::GET, "/v1/chat/stream")
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {} (is it running?)", client.base))?;
    if !stream.status().is_success() {
        bail!("the relay refused the chat stream: {}", stream.status());
    }
    Ok(stream.bytes_stream().boxed())
}

/// Opens the stream again, backing off, for at most `bound`. The relay keeps what it could
/// not send meanwhile and sends it to the new stream at once.
async fn reconnect(client: &Client, bound: Duration) -> anyhow::Result<ChatStream> {
    say(format_args!(
        "the relay closed the chat stream; reconnecting (for up to {})",
        crate::util::duration::format_duration(bound)
    ));
    let start = Instant::now();
    let mut pause = RECONNECT_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        match open_stream(client).await {
            Ok(stream) => {
                say(format_args!(
                    "reconnected to {}; what waited for this chat follows",
                    client.base
                ));
                return Ok(stream);
            }
            Err(error) if start.elapsed() >= bound => {
                bail!(
                    "could not reconnect within {}: {error:#}",
                    crate::util::duration::format_duration(bound)
                )
            }
            Err(_) => pause = (pause * 2).min(RECONNECT_MAX),
        }
    }
}

/// Posts one line as the local user; `Some(inbox id)` to follow. A relay that is away (a
/// restart) is tried again for up to `bound` with the same message id, which the relay
/// dedupes, so a line whose answer was lost does not run twice.
async fn post_line(
    client: &Client,
    line: &str,
    id: &str,
    bound: Duration,
) -> anyhow::Result<Option<i64>> {
    let start = Instant::now();
    let mut pause = RECONNECT_FIRST;
    loop {
        match client
            .post("/v1/chat", json!({"text": line, "id": id}))
            .await
        {
            Ok(answer) => {
                let inbox_id = answer["inbox_id"].as_i64();
                // A duplicate is a resend whose first answer was lost: the relay names the
                // first copy's row, which is followed like any other.
                if answer["duplicate"] == json!(true) && inbox_id.is_none() {
                    say(format_args!(
                        "the relay had `{line}` already (its answer was lost); not following it"
                    ));
                }
                return Ok(inbox_id);
            }
            Err(error @ ClientError::Refused { .. }) => {
                say(format_args!("not sent: {error}"));
                return Ok(None);
            }
            Err(error) if start.elapsed() >= bound => return Err(error.into()),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// The chunks this client has printed, by message key and index: a chunk the relay sends
/// again (this client acknowledged it late, or the acknowledgement was lost) is acknowledged
/// again but not printed twice. Bounded: a resend follows its first copy closely.
#[derive(Default)]
struct Printed {
    order: std::collections::VecDeque<(String, u64)>,
    known: HashSet<(String, u64)>,
}

impl Printed {
    const KEPT: usize = 4096;

    /// Whether `(key, chunk)` is new, remembering it.
    fn first_time(&mut self, key: &str, chunk: u64) -> bool {
        let id = (key.to_string(), chunk);
        if !self.known.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.known.remove(&oldest);
        }
        true
    }
}

/// Tells the relay this chat has a chunk (printed it), so that it counts it delivered. Bounded
/// and quiet: without it the relay keeps the chunk and sends it again, which is only late.
async fn acknowledge(client: &Client, key: &str, chunk: u64) {
    let ack = client.post("/v1/chat/ack", json!({"key": key, "chunk": chunk}));
    let _ = tokio::time::timeout(ACK_TIMEOUT, ack).await;
}

/// Prints each whole line of the stream (one JSON object per chunk) once, acknowledges it
/// after printing, and notes the messages seen whole.
async fn print_stream_lines(
    client: &Client,
    pending: &mut Vec<u8>,
    printed: &mut Printed,
    seen: &mut HashSet<String>,
) -> anyhow::Result<()> {
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let Ok(value) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let Some(message) = value["text"].as_str() else {
            continue;
        };
        let place = value["key"].as_str().zip(value["chunk"].as_u64());
        if place.is_none_or(|(key, chunk)| printed.first_time(key, chunk)) {
            out(format!("bot> {}", message.replace('\n', "\n     ")))?;
        }
        let Some((key, chunk)) = place else {
            continue;
        };
        acknowledge(client, key, chunk).await;
        // Chunks of a message arrive in order: the last one completes it.
        if let Some(chunks) = value["chunks"].as_u64()
            && chunk + 1 >= chunks
        {
            seen.insert(key.to_string());
        }
    }
    Ok(())
}

/// Lines of stdin, read on a thread of their own: a blocking read must not hold the runtime
/// open when the client leaves (a relay that never came back) while input is still open.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// An interactive conversation: lines typed go to the relay as the local user; the bot's
/// messages print as they arrive. A relay that goes away is reconnected to (within
/// `--reconnect-for`), and what it could not send meanwhile is shown then. Once input ends,
/// the client waits (within `--wait`) for the replies to its messages and the completions of
/// the jobs they started, then exits: 0 if all came, non-zero naming those that did not.
pub async fn chat(settings: &ClientConfig, args: &ChatArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt;

    let client = Client::new(settings, &args.client)?;
    let mut stream = open_stream(&client).await?;
    say(format_args!(
        "connected to {}; type /help, /exec <command>; Ctrl-D quits",
        client.base
    ));
    let mut lines = stdin_lines();
    let mut input_open = true;
    let mut deadline: Option<Instant> = None;
    let mut followed: Vec<Followed> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut printed = Printed::default();
    let mut pending = Vec::new();
    let mut next_poll = Instant::now();
    // Unique per run, so that the relay's dedupe only ever folds a resend of the same line.
    let run_id = format!("cli-{}-{}", std::process::id(), crate::store::now_ms());
    let mut sent = 0u64;
    loop {
        followed.retain(|f| !f.done(&seen));
        if !input_open {
            if followed.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                let owed: Vec<String> = followed.iter().map(Followed::describe).collect();
                bail!(
                    "gave up waiting after {}; still owed:\n  {}",
                    crate::util::duration::format_duration(args.wait),
                    owed.join("\n  ")
                );
            }
        }
        let wake_at = match (followed.is_empty(), deadline) {
            (false, Some(at)) => next_poll.min(at),
            (false, None) => next_poll,
            (true, Some(at)) => at,
            (true, None) => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                None => {
                    input_open = false;
                    deadline = Some(Instant::now() + args.wait);
                    if !followed.is_empty() {
                        say(format_args!(
                            "input ended; waiting up to {} for what {} message(s) started",
                            crate::util::duration::format_duration(args.wait),
                            followed.len()
                        ));
                    }
                }
                Some(line) => {
                    let line = line.context("cannot read stdin")?;
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    sent += 1;
                    let id = format!("{run_id}-{sent}");
                    if let Some(inbox_id) = post_line(&client, line, &id, args.reconnect_for).await? {
                        followed.push(Followed {
                            inbox_id,
                            text: crate::run::jobs::one_line(line, 60),
                            processed: false,
                            reply_key: None,
                            job: None,
                            completion_key: None,
                            completion_elsewhere: false,
                            status: "sent".into(),
                        });
                    }
                }
            },
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    print_stream_lines(&client, &mut pending, &mut printed, &mut seen).await?;
                }
                Some(Err(_)) | None => {
                    pending.clear();
                    let reconnecting = reconnect(&client, args.reconnect_for);
                    stream = match deadline {
                        // Once input has ended, the wait bounds reconnecting too: past it,
                        // the loop's first check gives up, naming what is owed.
                        Some(at) => match tokio::time::timeout_at(at.into(), reconnecting).await {
                            Ok(stream) => stream?,
                            Err(_) => continue,
                        },
                        None => reconnecting.await?,
                    };
                }
            },
            _ = tokio::time::sleep_until(wake_at.into()) => {
                if Instant::now() >= next_poll {
                    let polling = async {
                        for f in &mut followed {
                            if !f.done(&seen) {
                                f.poll(&client).await?;
                            }
                        }
                        anyhow::Ok(())
                    };
                    match deadline {
                        // A slow relay answers within the wait, or not at all.
                        Some(at) => {
                            if let Ok(polled) = tokio::time::timeout_at(at.into(), polling).await {
                                polled?;
                            }
                        }
                        None => polling.await?,
                    }
                    next_poll = Instant::now() + FOLLOW_POLL;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_sent_again_is_printed_once_and_what_is_kept_is_bounded() {
        let mut printed = Printed::default();
        assert!(printed.first_time("k1", 0));
        assert!(!printed.first_time("k1", 0), "a resend");
        assert!(printed.first_time("k1", 1), "the next chunk");
        assert!(printed.first_time("k2", 0), "another message");
        for i in 0..Printed::KEPT * 2 {
            printed.first_time(&format!("m{i}"), 0);
        }
        assert_eq!(printed.known.len(), Printed::KEPT);
        assert_eq!(printed.order.len(), Printed::KEPT);
    }
}
