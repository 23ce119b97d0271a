//! The live-jobs figure (issue 16): progress edits' pacing on a busy relay, and what they cost
//! the completions, measured against the same run with progress off.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use crate::receiver::Receiver;
use crate::relay::{Relay, job_id};
use crate::scenarios::{Figure, completions, exit_to_arrival, figure};
use crate::stats::{cpu_time, ms, summary};

/// The live jobs' command: 40 lines over 20 s, then the time as its last write (as
/// `scenarios::exit_to_message` has it).
const LIVE_JOB: &str = "/exec for i in $(seq 1 40); do echo line $i; sleep 0.5; done; date +%s%N";
const LIVE_JOB_SECS: u64 = 20;
/// The jobs are started over this long, round robin over the chats, so they end as spread.
const LIVE_SPREAD: Duration = Duration::from_secs(5);
/// `[progress]`'s defaults, written out so that the bounds printed are the ones in force.
const PROGRESS_EVERY_SECS: u64 = 5;
const PROGRESS_PER_CHAT_SECS: u64 = 3;
const PROGRESS_AFTER_SECS: u64 = 10;

/// What one run of live jobs left at the receiver.
struct LiveRun {
    /// Exit → completion, one per job.
    samples: Vec<Duration>,
    /// The relay's CPU time when the last completion had arrived.
    cpu: Duration,
    acks: Vec<crate::receiver::Arrival>,
    edits: Vec<crate::receiver::EditArrival>,
}

/// Live jobs in chat (issue 16): `jobs` jobs of 20 s spread over `chats` group conversations,
/// run twice against fresh relays, with `[progress]` off and on (every 5 s, per chat 3 s,
/// after 10 s: the defaults; the webhook's receiver takes edits). Exit → completion is
/// measured as `scenarios::exit_to_message` does; the pacing from the edits' arrival times.
pub async fn progress(bin: &Path, jobs: usize, chats: usize) -> anyhow::Result<Vec<Figure>> {
    let chats = chats.clamp(1, jobs.max(1));
    let mut off = live_jobs(
        bin,
        jobs,
        chats,
        "progress = true\n\n[progress]\nenabled = false\n",
    )
    .await
    .context("progress off")?;
    let on_config = format!(
        "progress = true\n\n[progress]\nenabled = true\nevery = \"{PROGRESS_EVERY_SECS}s\"\n\
         per_chat = \"{PROGRESS_PER_CHAT_SECS}s\"\nafter = \"{PROGRESS_AFTER_SECS}s\"\n"
    );
    let mut on = live_jobs(bin, jobs, chats, &on_config)
        .await
        .context("progress on")?;
    let (off_p50, off_p99, _) = summary(&mut off.samples);
    let (on_p50, on_p99, _) = summary(&mut on.samples);
    let pacing = Pacing::of(&on.acks, &on.edits);
    let shape = format!("{jobs} jobs × {LIVE_JOB_SECS} s, {chats} chats");
    Ok(vec![
        figure(
            &format!("live jobs, progress off: exit→completion p99 ({shape})"),
            ms(off_p99),
            "ms",
            "",
            Some(format!(
                "p50 {:.2} ms; {} edits; relay CPU {:.0} ms to the last completion",
                ms(off_p50),
                off.edits.len(),
                ms(off.cpu)
            )),
        ),
        figure(
            &format!("live jobs, progress on: exit→completion p99 ({shape})"),
            ms(on_p99),
            "ms",
            "",
            Some(format!(
                "p50 {:.2} ms; relay CPU {:.0} ms to the last completion",
                ms(on_p50),
                ms(on.cpu)
            )),
        ),
        figure(
            "live jobs: exit→completion p99, progress on / off",
            on_p99.as_secs_f64() / off_p99.as_secs_f64().max(1e-9),
            "×",
            "≤ 1.10×",
            None,
        ),
        figure(
            &format!("live jobs: edits per chat per minute (most edited of {chats})"),
            pacing.per_chat as f64,
            "/min",
            &format!("≤ {} /min", 60 / PROGRESS_PER_CHAT_SECS),
            Some(format!(
                "per_chat {PROGRESS_PER_CHAT_SECS} s; shortest gap in a chat {:.2} s",
                pacing.chat_gap.as_secs_f64()
            )),
        ),
        figure(
            &format!("live jobs: edits per message per minute (most edited of {jobs})"),
            pacing.per_message as f64,
            "/min",
            &format!("≤ {} /min + its last", 60 / PROGRESS_EVERY_SECS),
            Some(format!(
                "every {PROGRESS_EVERY_SECS} s; shortest gap before a running edit {:.2} s",
                pacing.message_gap.as_secs_f64()
            )),
        ),
        figure(
            "live jobs: messages ended by their last edit",
            pacing.ended as f64,
            "msgs",
            &format!("{jobs}"),
            Some(format!(
                "{} edits: {} running, {} last",
                on.edits.len(),
                on.edits.len() - pacing.last_edits,
                pacing.last_edits
            )),
        ),
        figure(
            "live jobs: edits out of order",
            pacing.out_of_order as f64,
            "edits",
            "0",
            Some("before their message arrived, or after its last edit".into()),
        ),
    ])
}

/// Starts `jobs` live jobs on a fresh relay configured with `extra`, waits for every
/// completion and, if the relay edits, for every acknowledgement's last edit (bounded).
async fn live_jobs(bin: &Path, jobs: usize, chats: usize, extra: &str) -> anyhow::Result<LiveRun> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), extra)?;
    let mut pace = tokio::time::interval(LIVE_SPREAD / jobs.max(1) as u32);
    for i in 0..jobs {
        pace.tick().await;
        relay
            .say_in_group(
                &format!("live-{}", i % chats),
                LIVE_JOB,
                &format!("live-{i}"),
            )
            .await?;
    }
    let wait = Duration::from_secs(LIVE_JOB_SECS + 60);
    if !receiver.wait(wait, |all| completions(all) >= jobs).await {
        bail!(
            "{} of {jobs} completions within {wait:?} of the last start",
            completions(&receiver.arrivals())
        );
    }
    let cpu = cpu_time(relay.pid()).context("cannot read the relay's CPU time")?;
    let mut samples = std::collections::HashMap::new();
    for arrival in receiver.arrivals() {
        for part in arrival.text.split("exec finished: ").skip(1) {
            if let (Some(id), Some(sample)) = (job_id(part), exit_to_arrival(part, arrival.at)) {
                samples.entry(id.to_string()).or_insert(sample);
            }
        }
    }
    if samples.len() < jobs {
        bail!(
            "{} of {jobs} completions carry their exit time",
            samples.len()
        );
    }
    // Once ended, each edited message gets its last edit, paced like the rest.
    if !receiver.edits().is_empty() {
        let ended = |edits: &[crate::receiver::EditArrival]| {
            let keys: std::collections::HashSet<&str> = edits
                .iter()
                .filter(|e| is_last_edit(e))
                .map(|e| e.edit_of.as_str())
                .collect();
            keys.len() >= jobs
        };
        receiver.wait_edits(Duration::from_secs(90), ended).await;
    }
    let acks = receiver
        .arrivals()
        .into_iter()
        .filter(|a| a.text.starts_with("started job "))
        .collect();
    Ok(LiveRun {
        samples: samples.into_values().collect(),
        cpu,
        acks,
        edits: receiver.edits(),
    })
}

/// An ended job's edit (`exit 0 after 20s · job …`), as opposed to `running 13s · job …`.
fn is_last_edit(edit: &crate::receiver::EditArrival) -> bool {
    !edit.text.starts_with("running ")
}

/// The edits' pacing as the receiver saw it.
struct Pacing {
    /// Most edits in one chat within any 60 s.
    per_chat: usize,
    /// Most edits of one message within any 60 s.
    per_message: usize,
    /// Shortest time between two edits in one chat.
    chat_gap: Duration,
    /// Shortest time between an edit of a message and its next running edit.
    message_gap: Duration,
    /// Messages that got their last edit, and how many last edits there were.
    ended: usize,
    last_edits: usize,
    /// Edits before their message arrived, or running edits after its last edit.
    out_of_order: usize,
}

impl Pacing {
    fn of(acks: &[crate::receiver::Arrival], edits: &[crate::receiver::EditArrival]) -> Pacing {
        use std::collections::HashMap;
        let mut by_chat: HashMap<&str, Vec<SystemTime>> = HashMap::new();
        let mut by_message: HashMap<&str, Vec<&crate::receiver::EditArrival>> = HashMap::new();
        for edit in edits {
            by_chat.entry(&edit.conversation).or_default().push(edit.at);
            by_message.entry(&edit.edit_of).or_default().push(edit);
        }
        let acked: HashMap<&str, SystemTime> =
            acks.iter().map(|a| (a.key.as_str(), a.at)).collect();
        let mut pacing = Pacing {
            per_chat: 0,
            per_message: 0,
            chat_gap: Duration::MAX,
            message_gap: Duration::MAX,
            ended: 0,
            last_edits: edits.iter().filter(|e| is_last_edit(e)).count(),
            out_of_order: 0,
        };
        for times in by_chat.values_mut() {
            times.sort();
            pacing.per_chat = pacing.per_chat.max(most_within_a_minute(times));
            for pair in times.windows(2) {
                let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
                pacing.chat_gap = pacing.chat_gap.min(gap);
            }
        }
        for (key, message) in &mut by_message {
            message.sort_by_key(|e| e.at);
            let times: Vec<SystemTime> = message.iter().map(|e| e.at).collect();
            pacing.per_message = pacing.per_message.max(most_within_a_minute(&times));
            for pair in message.windows(2) {
                if !is_last_edit(pair[1]) {
                    let gap = pair[1].at.duration_since(pair[0].at).unwrap_or_default();
                    pacing.message_gap = pacing.message_gap.min(gap);
                }
            }
            let before_ack = message
                .iter()
                .filter(|e| acked.get(key).is_none_or(|at| e.at < *at))
                .count();
            let after_last = match message.iter().position(|e| is_last_edit(e)) {
                Some(last) => message[last..].iter().filter(|e| !is_last_edit(e)).count(),
                None => 0,
            };
            pacing.out_of_order += before_ack + after_last;
            if message.iter().any(|e| is_last_edit(e)) {
                pacing.ended += 1;
            }
        }
        if pacing.chat_gap == Duration::MAX {
            pacing.chat_gap = Duration::ZERO;
        }
        if pacing.message_gap == Duration::MAX {
            pacing.message_gap = Duration::ZERO;
        }
        pacing
    }
}

/// The most of the sorted `times` within any 60 s (from one of them).
fn most_within_a_minute(times: &[SystemTime]) -> usize {
    let minute = Duration::from_secs(60);
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]).unwrap_or_default() < minute)
                .count()
        })
        .max()
        .unwrap_or(0)
}
