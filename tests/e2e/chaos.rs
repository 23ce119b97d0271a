//! The kill loop: jobs of random length, the relay SIGKILLed at random moments (between
//! request and spawn, while jobs run, between exit and event, between outbox and delivery),
//! restarted each time. Afterwards every job has its completion delivered, no completion was
//! queued twice, and duplicates on the wire are at most one per kill.
//!
//! CI runs 10 rounds; `EXECRELAY_CHAOS_ROUNDS=100` runs the big one (at most 200 jobs: what
//! `GET /v1/jobs` lists). The seed is printed, and
//! `EXECRELAY_CHAOS_SEED` replays a run.

use std::collections::HashSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fakes::receiver::Receiver;
use crate::harness::*;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn sigkill_at_random_moments_loses_no_completion() {
    let rounds = env_number("EXECRELAY_CHAOS_ROUNDS", 10);
    let seed = env_number("EXECRELAY_CHAOS_SEED", rand::random());
    eprintln!("chaos: {rounds} rounds, EXECRELAY_CHAOS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("outbox", "backoff_base", &toml_str("100ms"))
        .set("outbox", "backoff_cap", &toml_str("1s"))
        .start();

    let mut sent = 0usize;
    for round in 0..rounds {
        for job in 0..rng.random_range(1..=2) {
            let millis = rng.random_range(0..2000);
            let text = format!(
                "/exec sh -c 'sleep {}.{:03}; echo chaos-{round}-{job}'",
                millis / 1000,
                millis % 1000
            );
            relay.say(&dm(&format!("conv-{round}"), "alice", &text));
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        relay.restart();
    }

    // Quiet now: everything must settle.
    // Messages stored before the last kill are processed after the restart: wait for them.
    let jobs = wait_for(
        "every accepted /exec to be a job in a final state",
        secs(60.0),
        || {
            let jobs = relay.jobs();
            let settled = jobs
                .iter()
                .all(|j| !matches!(j["state"].as_str(), Some("starting" | "running")));
            (settled && jobs.len() >= sent).then_some(jobs)
        },
    );
    assert_eq!(jobs.len(), sent, "every accepted /exec ran exactly once");
    let ids: Vec<String> = jobs.iter().map(|j| json_id(&j["id"])).collect();
    wait_for("a completion of every job", secs(60.0), || {
        let delivered = rx.messages();
        ids.iter()
            .all(|id| delivered.iter().any(|d| carries_completion_of(&d.text, id)))
            .then_some(())
    });
    relay.wait_outbox_drained();

    let delivered = rx.messages();
    let mut extra_sends = 0;
    let mut lost = 0;
    for id in &ids {
        let carrying: Vec<_> = delivered
            .iter()
            .filter(|d| carries_completion_of(&d.text, id))
            .collect();
        let keys: HashSet<&str> = carrying
            .iter()
            .map(|d| d.idempotency_key.as_str())
            .collect();
        assert_eq!(
            keys.len(),
            1,
            "job {id}'s completion was queued more than once"
        );
        extra_sends += carrying.len() - 1;
        lost += usize::from(carrying.iter().any(|d| d.text.contains("outcome unknown")));
    }
    let kills = rounds as usize;
    eprintln!(
        "chaos: {} jobs, {kills} kills, {lost} lost, {extra_sends} duplicate sends (seed {seed})",
        ids.len()
    );
    // A job is reported lost only if a kill landed between its spawn and its first record.
    assert!(lost <= kills, "{lost} jobs lost after {kills} kills");
    assert!(
        extra_sends <= kills,
        "{extra_sends} duplicates after {kills} kills"
    );
}
