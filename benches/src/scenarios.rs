//! One function per figure. Each returns rows of (name, value, unit, target, limit) so the
//! table and the JSON say the same thing.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use execrelay_fakes::discord::FakeDiscord;
use execrelay_fakes::feishu::FakeFeishu;
use execrelay_fakes::telegram::FakeTelegram;
use execrelay_fakes::{Platform, to_toml};
use serde_json::json;

use crate::receiver::Receiver;
use crate::relay::{Relay, job_id};
use crate::stats::{cpu_time, median, ms, rss_kib, summary};

/// One figure, with what it is measured against.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: String,
    /// The machine's own limit measured in the same run, if this figure has one.
    pub limit: Option<String>,
}

pub(crate) fn figure(
    name: &str,
    value: f64,
    unit: &'static str,
    target: &str,
    limit: Option<String>,
) -> Figure {
    Figure {
        name: name.to_string(),
        value,
        unit,
        target: target.to_string(),
        limit,
    }
}

/// Conversations the load is spread over: each group is a session with its own queue, as
/// when many people use one relay.
const GROUPS: usize = 50;

/// Completions in `arrivals`: several that finish together share one message.
pub(crate) fn completions(arrivals: &[crate::receiver::Arrival]) -> usize {
    arrivals
        .iter()
        .map(|a| a.text.matches("exec finished: ").count())
        .sum()
}

fn unix_nanos(at: SystemTime) -> i128 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// fsync p50 of a 4 KiB write in `dir` (the store's own directory).
fn fsync_p50(dir: &Path) -> anyhow::Result<Duration> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        samples.push(start.elapsed());
    }
    std::fs::remove_file(path)?;
    Ok(median(&mut samples))
}

/// Loopback HTTP POST p50 to the receiver, with the same client library the relay uses.
async fn post_p50(receiver: &Receiver) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut samples = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        client
            .post(receiver.url())
            .json(&json!({"text": format!("probe {i}")}))
            .send()
            .await?;
        samples.push(start.elapsed());
    }
    Ok(median(&mut samples))
}

/// Runs `jobs` jobs one after another; each prints the time as its last write, and the
/// receiver notes when its completion arrives.
async fn exit_to_message(
    relay: &Relay,
    receiver: &Receiver,
    jobs: usize,
    tag: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let before = receiver.count(|_| true);
        relay
            .say(tag, "/exec date +%s%N", &format!("{tag}-{i}"))
            .await?;
        let completed = |a: &crate::receiver::Arrival| a.text.starts_with("exec finished: ");
        let arrived = receiver
            .wait(Duration::from_secs(10), |all| {
                all[before.min(all.len())..].iter().any(completed)
            })
            .await;
        if !arrived {
            bail!("job {i}: no completion within 10 s");
        }
        let arrival = receiver
            .arrivals()
            .into_iter()
            .skip(before)
            .find(completed)
            .context("completion vanished")?;
        let sample =
            exit_to_arrival(&arrival.text, arrival.at).context("no timestamp in the completion")?;
        samples.push(sample);
    }
    Ok(samples)
}

/// From a job's exit to `at`, the arrival of `completion` (one job's part of a message): the
/// job printed the time (`date +%s%N`) as its last write, the last number in its tail.
pub(crate) fn exit_to_arrival(completion: &str, at: SystemTime) -> Option<Duration> {
    let printed: i128 = completion
        .lines()
        .filter_map(|l| l.trim().parse::<i128>().ok())
        .next_back()?;
    let nanos = (unix_nanos(at) - printed).max(0);
    Some(Duration::from_nanos(nanos as u64))
}

/// Exit → message: each job prints the time as its last write; the receiver notes when the
/// completion arrives.
pub async fn latency(bin: &Path, jobs: usize) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    let fsync = fsync_p50(relay.dir.path())?;
    let post = post_p50(&receiver).await?;
    let mut samples = exit_to_message(&relay, &receiver, jobs, "lat").await?;
    let (p50, p99, max) = summary(&mut samples);
    let limit = Some(format!(
        "fsync p50 {:.2} ms, loopback POST p50 {:.2} ms",
        ms(fsync),
        ms(post)
    ));
    Ok(vec![
        figure(
            &format!("exit→message p50 ({jobs} jobs)"),
            ms(p50),
            "ms",
            "",
            limit.clone(),
        ),
        figure(
            &format!("exit→message p99 ({jobs} jobs)"),
            ms(p99),
            "ms",
            "≤ 25 ms",
            limit.clone(),
        ),
        figure(
            &format!("exit→message max ({jobs} jobs)"),
            ms(max),
            "ms",
            "",
            limit,
        ),
    ])
}

/// Start to `/healthz` answering, median of `runs` fresh starts.
pub async fn cold_start(bin: &Path, runs: usize) -> anyhow::Result<Vec<Figure>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let receiver = Receiver::start().await?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let relay = Relay::start(bin, &receiver.url(), "")?;
        let deadline = relay.started + Duration::from_secs(10);
        loop {
            let answered = client
                .get(format!("{}/healthz", relay.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                samples.push(relay.started.elapsed());
                break;
            }
            if Instant::now() > deadline {
                bail!("/healthz did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(vec![figure(
        &format!("cold start to /healthz (median of {runs})"),
        ms(median(&mut samples)),
        "ms",
        "≤ 50 ms",
        None,
    )])
}

/// Resident memory after 5 s idle, local and webhook channels.
pub async fn idle(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_kib(relay.pid()).context("cannot read the relay's RSS")?;
    Ok(vec![figure(
        "idle RSS after 5 s (local + webhook)",
        rss as f64 / 1024.0,
        "MiB",
        "≤ 15 MiB",
        None,
    )])
}

/// Resident memory after 5 s idle with every compiled-in channel enabled: the webhook against
/// the receiver; Telegram, Discord, Feishu and Feishu's custom bot against the fakes of the e2e
/// tests (127.0.0.1, configured as the e2e tests configure them), each seen connected first.
pub async fn idle_all(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    // The fakes run on runtimes of their own, started and dropped without blocking this one.
    let (telegram, discord, feishu) = (
        FakeTelegram::start(),
        FakeDiscord::start(),
        FakeFeishu::start(),
    );
    let mut settings = telegram.settings();
    settings.extend(discord.settings());
    settings.extend(feishu.settings());
    settings.extend(feishu.bot_settings());
    let mut relay = Relay::start(bin, &receiver.url(), &to_toml(&settings))?;
    // Connected, with the token each fake accepts: a getUpdates long poll answered, READY sent
    // on the gateway. Feishu (event callbacks in, messages out) and its bot (out only) have
    // nothing to hold open.
    let polled = || {
        telegram
            .calls("getUpdates")
            .iter()
            .any(|call| call.status == 200)
    };
    let identified = || discord.identifies() >= 1 && discord.connected();
    let connected = until(Duration::from_secs(20), || polled() && identified()).await;
    if !connected {
        let log = std::fs::read_to_string(relay.dir.path().join("relay.log")).unwrap_or_default();
        bail!(
            "not connected within 20 s (telegram polled: {}, discord identified: {}); the relay logged:\n{log}",
            polled(),
            identified(),
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_kib(relay.pid()).context("cannot read the relay's RSS")?;
    if let Some(status) = relay.child.try_wait()? {
        bail!("the relay exited while idle ({status})");
    }
    if !discord.connected() {
        bail!("the relay's gateway connection dropped while idle");
    }
    Ok(vec![figure(
        "idle RSS after 5 s (every channel, against the fakes)",
        rss as f64 / 1024.0,
        "MiB",
        "≤ 25 MiB",
        None,
    )])
}

/// Polls `ready` every 10 ms until it holds, at most `timeout`; whether it did.
async fn until(timeout: Duration, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// `jobs` concurrent `sleep` jobs: every start acknowledged, every completion delivered,
/// the relay's peak RSS meanwhile.
pub async fn concurrent(bin: &Path, jobs: usize, sleep_secs: u64) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    let start = Instant::now();
    for i in 0..jobs {
        relay
            .say_in_group(
                &format!("c{}", i % GROUPS),
                &format!("/exec sleep {sleep_secs}"),
                &format!("cc-{i}"),
            )
            .await?;
    }
    let mut peak = 0u64;
    let deadline = Duration::from_secs(sleep_secs + 120);
    let acked = |r: &Receiver| r.count(|a| a.text.starts_with("started job "));
    let done = |r: &Receiver| completions(&r.arrivals());
    while done(&receiver) < jobs {
        peak = peak.max(rss_kib(relay.pid()).unwrap_or(0));
        if start.elapsed() > deadline {
            bail!(
                "{} of {jobs} completions after {:?}",
                done(&receiver),
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(vec![
        figure(
            &format!("{jobs} concurrent jobs: acknowledged"),
            acked(&receiver) as f64,
            "jobs",
            &format!("{jobs}"),
            None,
        ),
        figure(
            &format!("{jobs} concurrent jobs: completions delivered"),
            done(&receiver) as f64,
            "jobs",
            &format!("{jobs}"),
            None,
        ),
        figure(
            &format!("{jobs} concurrent jobs: relay peak RSS"),
            peak as f64 / 1024.0,
            "MiB",
            "≤ 100 MiB",
            None,
        ),
    ])
}

/// Completions per second from jobs started as fast as the relay accepts them, next to a plain
/// loop spawning and waiting for the same command.
pub async fn throughput(bin: &Path, jobs: usize) -> anyhow::Result<Vec<Figure>> {
    let raw_start = Instant::now();
    for _ in 0..jobs {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("true")
            .status()?;
    }
    let raw_rate = jobs as f64 / raw_start.elapsed().as_secs_f64();
    // The same command under the supervisor every job runs in (the floor of a job's cost).
    let scratch = tempfile::tempdir()?;
    let supervised_start = Instant::now();
    for i in 0..jobs {
        let dir = scratch.path().join(format!("j{i}"));
        std::fs::create_dir(&dir)?;
        std::process::Command::new(bin)
            .arg("supervise")
            .arg("--job-dir")
            .arg(&dir)
            .args(["--job-id", "bench", "--shell", "/bin/sh", "--workdir", "/"])
            .args(["--timeout-ms", "60000", "--grace-ms", "1000", "--", "true"])
            .status()?;
    }
    let supervised_rate = jobs as f64 / supervised_start.elapsed().as_secs_f64();

    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    let start = Instant::now();
    let mut sends = Vec::new();
    for i in 0..jobs {
        let relay = &relay;
        sends.push(async move {
            relay
                .say_in_group(
                    &format!("t{}", i % GROUPS),
                    "/exec true",
                    &format!("tp-{i}"),
                )
                .await
        });
    }
    for result in futures_join(sends).await {
        result?;
    }
    let all = receiver
        .wait(Duration::from_secs(120), |all| completions(all) >= jobs)
        .await;
    if !all {
        bail!("not every completion arrived within 120 s");
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    Ok(vec![figure(
        &format!("throughput: completions delivered ({jobs} jobs)"),
        rate,
        "/s",
        "≥ 50 % of the raw spawn rate",
        Some(format!(
            "raw spawn-and-wait {raw_rate:.0}/s ({:.0} %); under the supervisor {supervised_rate:.0}/s ({:.0} %)",
            100.0 * rate / raw_rate,
            100.0 * rate / supervised_rate
        )),
    )])
}

/// Runs the futures concurrently on this task, 32 at a time.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs = Vec::with_capacity(futures.len());
    // A few at a time: the relay is the bottleneck we measure, not the client.
    let mut pending = futures.into_iter();
    let mut running = Vec::new();
    loop {
        while running.len() < 32 {
            match pending.next() {
                Some(future) => running.push(Box::pin(future)),
                None => break,
            }
        }
        if running.is_empty() {
            return outputs;
        }
        let (output, _, rest) = select_all(running).await;
        outputs.push(output);
        running = rest;
    }
}

/// Waits for the first of `futures` to finish.
async fn select_all<F: std::future::Future + Unpin>(
    mut futures: Vec<F>,
) -> (F::Output, usize, Vec<F>) {
    std::future::poll_fn(move |cx| {
        for (index, future) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                let mut rest = std::mem::take(&mut futures);
                rest.remove(index);
                return std::task::Poll::Ready((output, index, rest));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Events through `POST /v1/events` (mode now) to delivered, per second.
pub async fn events(bin: &Path, count: usize) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    // Each group is a session with a route: the bench user speaks once in each.
    for group in 0..GROUPS {
        relay
            .say_in_group(&format!("e{group}"), "hello", &format!("ev-hello-{group}"))
            .await?;
    }
    let start = Instant::now();
    let mut posts = Vec::new();
    for i in 0..count {
        let relay = &relay;
        let session = format!("chat:webhook:e{}", i % GROUPS);
        posts.push(async move {
            let event =
                json!({"session": session, "text": format!("bench-event-{i};"), "mode": "now"});
            relay.post_json("/v1/events", &event).await
        });
    }
    for status in futures_join(posts).await {
        let status = status?;
        if !(200..300).contains(&status) {
            bail!("POST /v1/events answered {status}");
        }
    }
    let delivered = |all: &[crate::receiver::Arrival]| {
        all.iter()
            .map(|a| a.text.matches("bench-event-").count())
            .sum::<usize>()
    };
    if !receiver
        .wait(Duration::from_secs(120), |all| delivered(all) >= count)
        .await
    {
        bail!(
            "{} of {count} events delivered",
            delivered(&receiver.arrivals())
        );
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let messages = receiver.count(|a| a.text.contains("bench-event-"));
    Ok(vec![figure(
        &format!("events: POST /v1/events → delivered ({count} events in {messages} messages)"),
        rate,
        "/s",
        "≥ 5000 /s",
        None,
    )])
}

/// A job printing `mib` MiB of base64: the relay's CPU and RSS growth, and the tail.
pub async fn flood(bin: &Path, mib: u64) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, rss_before) = (
        cpu_time(relay.pid()).context("cpu")?,
        rss_kib(relay.pid()).context("rss")?,
    );
    let mut peak = rss_before;
    relay
        .say(
            "flood",
            &format!("/exec head -c {mib}M /dev/zero | base64"),
            "flood-1",
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.count(|a| a.text.starts_with("exec finished: ")) == 0 {
        peak = peak.max(rss_kib(relay.pid()).unwrap_or(0));
        if Instant::now() > deadline {
            bail!("the flood job did not complete within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_time(relay.pid())
        .context("cpu")?
        .saturating_sub(cpu_before);
    let completion = receiver
        .arrivals()
        .into_iter()
        .find(|a| a.text.starts_with("exec finished: "))
        .context("completion")?;
    let tail_ok = completion
        .text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('['))
        .all(|l| l.trim().chars().all(|c| c == 'A' || c == '='));
    let id = job_id(&completion.text).unwrap_or("?").to_string();
    Ok(vec![
        figure(
            &format!("output flood {mib} MiB: relay CPU"),
            ms(cpu),
            "ms",
            "< 1000 ms",
            None,
        ),
        figure(
            &format!("output flood {mib} MiB: relay RSS growth"),
            peak.saturating_sub(rss_before) as f64 / 1024.0,
            "MiB",
            "< 10 MiB",
            None,
        ),
        figure(
            &format!("output flood {mib} MiB: tail correct (job {id})"),
            f64::from(u8::from(tail_ok)),
            "bool",
            "1",
            None,
        ),
    ])
}

/// Flooding clients, each a process of its own running `execrelay-bench forge-client`.
struct Flood {
    clients: Vec<std::process::Child>,
    started: Instant,
}

impl Flood {
    fn start(url: &str, processes: usize, connections: usize) -> anyhow::Result<Flood> {
        let me = std::env::current_exe()?;
        let clients = (0..processes)
            .map(|_| {
                std::process::Command::new(&me)
                    .args(["forge-client", url, &connections.to_string()])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .context("cannot start a flooding client")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Flood {
            clients,
            started: Instant::now(),
        })
    }

    /// Ends the flood: (requests sent, refused with 401, requests per second).
    fn stop(self) -> anyhow::Result<(usize, usize, f64)> {
        let seconds = self.started.elapsed().as_secs_f64();
        let (mut sent, mut refused) = (0, 0);
        for mut client in self.clients {
            drop(client.stdin.take());
            let output = client.wait_with_output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            let mut counts = text.split_whitespace().map(str::parse::<usize>);
            sent += counts.next().context("no count from a client")??;
            refused += counts.next().context("no count from a client")??;
        }
        Ok((sent, refused, sent as f64 / seconds))
    }
}

/// Exit → message while badly signed webhook requests flood the relay, next to the quiet
/// figure from the same relay: the bench's flood (one client, 8 connections) and 3 clients
/// of 2 connections each, every client a process of its own.
pub async fn forged(bin: &Path, jobs: usize) -> anyhow::Result<Vec<Figure>> {
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    let mut quiet = exit_to_message(&relay, &receiver, jobs, "quiet").await?;
    let (_, quiet_p99, _) = summary(&mut quiet);
    let url = format!("{}/webhook", relay.base);
    let mut figures = Vec::new();
    let mut forged_total = 0;
    let mut refused_total = 0;
    for (label, processes, connections) in [
        ("1 client × 8 connections", 1, 8),
        ("3 clients × 2 connections", 3, 2),
    ] {
        let flood = Flood::start(&url, processes, connections)?;
        // Let the flood reach its pace before measuring under it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut loud = exit_to_message(&relay, &receiver, jobs, label).await?;
        let (sent, refused, rate) = flood.stop()?;
        let (_, loud_p99, _) = summary(&mut loud);
        forged_total += sent;
        refused_total += refused;
        figures.push(figure(
            &format!("forged flood, {label}: p99 exit→message"),
            ms(loud_p99),
            "ms",
            "≤ 2× quiet p99",
            Some(format!(
                "{:.2}× quiet p99 {:.2} ms; flood {rate:.0} req/s",
                loud_p99.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-9),
                ms(quiet_p99)
            )),
        ));
    }
    let delivered = completions(&receiver.arrivals());
    let pwned = relay.dir.path().join("pwned");
    figures.push(figure(
        "forged flood: requests refused with 401",
        refused_total as f64,
        "req",
        &format!("{forged_total}"),
        None,
    ));
    figures.push(figure(
        "forged flood: completions delivered / commands run by forgeries",
        delivered as f64,
        "jobs",
        &format!("{} / 0 (pwned file: {})", 3 * jobs, pwned.exists()),
        None,
    ));
    Ok(figures)
}

/// A platform outage with the default backoff: the receiver answers 503 for 90 % of `outage`
/// and `429 Retry-After: 2` for the rest, while 20 jobs in 4 conversations finish; then it
/// recovers. The figure is how long after recovery the last owed message arrived (the target
/// is 2 s plus the last Retry-After), with none twice and each conversation in order.
pub async fn outage(bin: &Path, outage: Duration) -> anyhow::Result<Vec<Figure>> {
    const ROOMS: usize = 4;
    const ROUNDS: usize = 5;
    let retry_after = 2;
    let receiver = Receiver::start().await?;
    let relay = Relay::start(bin, &receiver.url(), "")?;
    let mut quiet = exit_to_message(&relay, &receiver, 50, "quiet").await?;
    let (_, quiet_p99, _) = summary(&mut quiet);
    let before = receiver.arrivals().len();

    receiver.set_down(Some(crate::receiver::Down {
        status: 503,
        retry_after: None,
    }));
    for round in 0..ROUNDS {
        for room in 0..ROOMS {
            relay
                .say_in_group(
                    &format!("outage-{room}"),
                    &format!("/exec echo outage-{room}-{round}"),
                    &format!("outage-{room}-{round}"),
                )
                .await?;
        }
    }
    tokio::time::sleep(outage.mul_f64(0.9)).await;
    receiver.set_down(Some(crate::receiver::Down {
        status: 429,
        retry_after: Some(retry_after),
    }));
    tokio::time::sleep(outage.mul_f64(0.1)).await;
    let refused = receiver.refused();
    receiver.set_down(None);
    let recovered = SystemTime::now();

    let jobs = ROOMS * ROUNDS;
    let owed = |all: &[crate::receiver::Arrival]| {
        let after = &all[before.min(all.len())..];
        after
            .iter()
            .filter(|a| a.text.starts_with("started job "))
            .count()
            == jobs
            && completions(after) == jobs
    };
    if !receiver.wait(Duration::from_secs(600), owed).await {
        bail!("not every owed message arrived within 10 minutes of recovery");
    }
    let arrivals: Vec<_> = receiver.arrivals().into_iter().skip(before).collect();
    let last = arrivals
        .iter()
        .filter_map(|a| a.at.duration_since(recovered).ok())
        .max()
        .unwrap_or_default();
    let keys: std::collections::HashSet<&str> = arrivals.iter().map(|a| a.key.as_str()).collect();
    let twice = arrivals.len() - keys.len();
    let in_order = (0..ROOMS).all(|room| {
        let rows: Vec<Option<u64>> = arrivals
            .iter()
            .filter(|a| a.conversation == format!("outage-{room}"))
            .map(|a| execrelay_fakes::outbox_row_of(&a.key))
            .collect();
        rows.windows(2).all(|w| w[0] < w[1])
    });
    Ok(vec![figure(
        &format!(
            "outage {} s (defaults): last owed message after recovery",
            outage.as_secs()
        ),
        ms(last),
        "ms",
        &format!("≤ 2 s + Retry-After {retry_after} s"),
        Some(format!(
            "{} messages, {refused} attempts refused while down, {twice} twice, in order: {in_order}; quiet p99 {:.2} ms",
            arrivals.len(),
            ms(quiet_p99)
        )),
    )])
}
