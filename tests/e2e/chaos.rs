//! The kill loop: jobs of random length, the relay SIGKILLed every round, then restarted. A
//! round's kill lands either at a random moment (jobs running, or anything in between) or at a
//! named crash point (`EXECRELAY_FAILPOINT`): between request and spawn (`inbound-stored`,
//! `job-recorded`), between exit and event (`job-exited`), between event and outbox
//! (`event-queued`), between outbox and delivery (`outbox-written`), after a chunk was
//! accepted but before that was recorded (`chunk-sent`), and in the middle of a message
//! (`mid-message`; completions here span two chunks or more). Afterwards every accepted
//! message ran exactly once, every job has exactly one completion queued and delivered (or a
//! `lost` one where its outcome truly could not be learned), and repeated sends on the wire
//! are at most one per kill.
//!
//! CI runs 10 rounds; `EXECRELAY_CHAOS_ROUNDS=100` runs the big one (at most 200 jobs: what
//! `GET /v1/jobs` lists). The seed is printed, and `EXECRELAY_CHAOS_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::fakes::receiver::{Delivery, Receiver};
use crate::harness::*;

/// Where a round's kill lands: `None` is a random moment.
const MOMENTS: &[Option<&str>] = &[
    None,
    Some("inbound-stored"),
    Some("job-recorded"),
    Some("job-exited"),
    Some("event-queued"),
    Some("outbox-written"),
    Some("chunk-sent"),
    Some("mid-message"),
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arm(relay: &mut Relay, moment: Option<&str>) {
    match moment {
        Some(point) => relay.set_env(&[("EXECRELAY_FAILPOINT", point)]),
        None => relay.set_env(&[]),
    }
}

/// The messages as the chat shows them (chunks joined by outbox row, each chunk once), and how
/// many chunk sends repeated one already accepted. Keys are `<row>.<chunk index>`.
fn reassemble(delivered: &[Delivery]) -> (Vec<(String, String)>, usize) {
    let mut rows: BTreeMap<&str, BTreeMap<u32, &str>> = BTreeMap::new();
    let mut repeats = 0;
    for d in delivered {
        let (row, index) = d
            .idempotency_key
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("unexpected idempotency key {}", d.idempotency_key));
        let index: u32 = index.parse().expect("a chunk index");
        if rows
            .entry(row)
            .or_default()
            .insert(index, &d.text)
            .is_some()
        {
            repeats += 1;
        }
    }
    let messages = rows
        .into_iter()
        .map(|(row, chunks)| (row.to_string(), chunks.into_values().collect::<String>()))
        .collect();
    (messages, repeats)
}

#[test]
fn sigkill_at_random_moments_and_every_named_point_loses_no_completion() {
    let rounds = env_number("EXECRELAY_CHAOS_ROUNDS", 10) as usize;
    let seed = env_number("EXECRELAY_CHAOS_SEED", rand::random());
    eprintln!("chaos: {rounds} rounds, EXECRELAY_CHAOS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // Every named point once before any repeats, then at random.
    let mut plan: Vec<Option<&str>> = MOMENTS.to_vec();
    while plan.len() < rounds {
        plan.push(*MOMENTS.choose(&mut rng).expect("moments"));
    }
    plan.truncate(rounds);

    let rx = Receiver::start();
    let mut builder = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("outbox", "backoff_base", &toml_str("100ms"))
        .set("outbox", "backoff_cap", &toml_str("1s"))
        // Completions of two chunks, so that `chunk-sent` can cut one in the middle.
        .set("channels.webhook", "max_chars", "200");
    if let Some(point) = plan.first().copied().flatten() {
        builder = builder.env("EXECRELAY_FAILPOINT", point);
    }
    let mut relay = builder.start();
    // The crash point the running relay is armed with (`None`: it is killed at random).
    let mut armed = plan.first().copied().flatten();

    // Each /exec carries a tag (`chaos-<round>-<job>`) to match it with its job.
    let mut accepted: Vec<String> = Vec::new();
    // Posts that got no answer: the relay died at once, maybe after storing the message.
    let mut unanswered: Vec<String> = Vec::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..rounds {
        for job in 0..rng.random_range(1..=2) {
            let millis = rng.random_range(0..2000);
            let tag = format!("chaos-{round}-{job}");
            let text = format!(
                "/exec sh -c 'sleep {}.{:03}; echo {tag}; seq 1000 1030'",
                millis / 1000,
                millis % 1000
            );
            match relay.try_post_webhook(&dm(&format!("conv-{round}"), "alice", &text)) {
                Some((200, body)) if body["duplicate"] == false => accepted.push(tag),
                Some((status, body)) => panic!("the relay answered {status} {body}"),
                None => unanswered.push(tag),
            }
        }
        match armed {
            None => std::thread::sleep(Duration::from_millis(rng.random_range(0..1500))),
            Some(_) => {
                relay.wait_exited(secs(20.0));
            }
        }
        *kills.entry(armed.unwrap_or("random moment")).or_default() += 1;
        armed = plan.get(round + 1).copied().flatten();
        arm(&mut relay, armed);
        if relay.try_restart().is_err() {
            // Recovery itself reached the armed point (e.g. resending what was queued): that
            // is a kill too; start once more without it, and kill at random this round.
            *kills.entry(armed.unwrap_or("random moment")).or_default() += 1;
            armed = None;
            arm(&mut relay, None);
            relay.restart();
        }
    }
    // The last round restarted the relay unarmed: it runs on, and no kill goes uncounted.

    let tag_of = |job: &serde_json::Value| {
        let command = job["command"].as_str().unwrap_or("");
        command
            .split_whitespace()
            .find(|word| word.starts_with("chaos-"))
            .map(|word| word.trim_end_matches(';').to_string())
    };
    // Quiet now: everything must settle. Messages stored before a kill are processed after
    // the restart: wait until each accepted one is a job, and every job has ended.
    let jobs = wait_for(
        "every accepted /exec to be a job in a final state",
        secs(60.0),
        || {
            let jobs = relay.jobs();
            let settled = jobs
                .iter()
                .all(|j| !matches!(j["state"].as_str(), Some("starting" | "running")));
            let tags: BTreeSet<String> = jobs.iter().filter_map(tag_of).collect();
            (settled && accepted.iter().all(|tag| tags.contains(tag))).then_some(jobs)
        },
    );
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        let tag = tag_of(job).unwrap_or_else(|| panic!("a job that no post asked for: {job}"));
        *runs.entry(tag).or_default() += 1;
    }
    for tag in &accepted {
        let n = runs.get(tag).copied().unwrap_or(0);
        assert_eq!(n, 1, "the accepted /exec {tag} ran {n} times");
    }
    for (tag, n) in &runs {
        assert!(
            accepted.contains(tag) || unanswered.contains(tag),
            "job {tag} was never asked for"
        );
        assert_eq!(*n, 1, "the /exec {tag} ran {n} times");
    }
    let ids: Vec<String> = jobs.iter().map(|j| json_id(&j["id"])).collect();
    wait_for("a completion of every job", secs(60.0), || {
        let (messages, _) = reassemble(&rx.messages());
        ids.iter()
            .all(|id| messages.iter().any(|(_, m)| carries_completion_of(m, id)))
            .then_some(())
    });
    relay.wait_outbox_drained();

    let (messages, repeats) = reassemble(&rx.messages());
    let mut lost = 0;
    for id in &ids {
        let carrying: Vec<&String> = messages
            .iter()
            .filter(|(_, m)| carries_completion_of(m, id))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            carrying.len(),
            1,
            "job {id}'s completion was queued more than once: {carrying:?}"
        );
        let own_section = carrying[0]
            .split("exec finished: ")
            .find(|section| first_line_has_token(section, id))
            .unwrap_or("");
        lost += usize::from(own_section.contains("outcome unknown"));
    }
    let total_kills: usize = kills.values().sum();
    eprintln!(
        "chaos: {} jobs, {total_kills} kills ({kills:?}), {lost} lost, {repeats} repeated sends (seed {seed})",
        ids.len()
    );
    // A job is reported lost only if a kill landed between its spawn and its first record.
    assert!(
        lost <= total_kills,
        "{lost} jobs lost after {total_kills} kills"
    );
    assert!(
        repeats <= total_kills,
        "{repeats} repeated sends after {total_kills} kills"
    );
}
