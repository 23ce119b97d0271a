//! `execrelay-bench`: measures execrelay's promise on this machine and prints each figure next
//! to the machine's own limit from the same run. It starts the real release binary
//! (`target/release/execrelay`, or `--bin`) on loopback against an in-process webhook receiver
//! (and, for `idle-all`, the fake Telegram, Discord and Feishu of the e2e tests).
//!
//!     cargo build --release && cargo run --release -p execrelay-bench -- all --json bench.json

mod forger;
mod progress;
mod receiver;
mod relay;
mod scenarios;
mod stats;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde_json::json;

use scenarios::Figure;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Latency,
    ColdStart,
    Idle,
    IdleAll,
    Concurrent,
    Throughput,
    Events,
    Flood,
    Forged,
    Outage,
    Progress,
}

#[derive(Parser)]
#[command(about = "Figures for execrelay, each next to this machine's own limits")]
struct Args {
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// The execrelay binary (default: `execrelay` beside this one, i.e. target/release).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Jobs for the latency figure.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Concurrent jobs, and how long each sleeps.
    #[arg(long, default_value_t = 1000)]
    concurrent: usize,
    #[arg(long, default_value_t = 30)]
    sleep: u64,
    /// MiB of output for the flood figure.
    #[arg(long, default_value_t = 1024)]
    flood_mib: u64,
    /// Seconds the platform is down for the outage figure.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Jobs of 20 s for the progress figure, and the group chats they are spread over.
    #[arg(long, default_value_t = 200)]
    progress_jobs: usize,
    #[arg(long, default_value_t = 20)]
    progress_chats: usize,
}

fn default_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("execrelay");
    if !bin.exists() {
        anyhow::bail!(
            "{} not found: build it first with `cargo build --release`, or pass --bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn print(figures: &[Figure]) {
    println!(
        "{:<62} {:>12}  {:<6} {:<30} machine limit",
        "figure", "value", "unit", "target"
    );
    for f in figures {
        println!(
            "{:<62} {:>12.2}  {:<6} {:<30} {}",
            f.name,
            f.value,
            f.unit,
            f.target,
            f.limit.as_deref().unwrap_or("")
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("forge-client") {
        let (Some(url), Some(connections)) = (argv.get(2), argv.get(3)) else {
            anyhow::bail!("usage: execrelay-bench forge-client <url> <connections>");
        };
        return forger::run(url.clone(), connections.parse()?).await;
    }
    let args = Args::parse();
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => default_bin()?,
    };
    let run = |which: Which| args.which == Which::All || args.which == which;
    let mut figures = Vec::new();
    if run(Which::ColdStart) {
        figures.extend(
            scenarios::cold_start(&bin, 10)
                .await
                .context("cold start")?,
        );
    }
    if run(Which::Idle) {
        figures.extend(scenarios::idle(&bin).await.context("idle")?);
    }
    if run(Which::IdleAll) {
        figures.extend(
            scenarios::idle_all(&bin)
                .await
                .context("idle, every channel")?,
        );
    }
    if run(Which::Latency) {
        figures.extend(
            scenarios::latency(&bin, args.jobs)
                .await
                .context("latency")?,
        );
    }
    if run(Which::Throughput) {
        figures.extend(
            scenarios::throughput(&bin, 300)
                .await
                .context("throughput")?,
        );
    }
    if run(Which::Events) {
        figures.extend(scenarios::events(&bin, 5000).await.context("events")?);
    }
    if run(Which::Concurrent) {
        figures.extend(
            scenarios::concurrent(&bin, args.concurrent, args.sleep)
                .await
                .context("concurrent jobs")?,
        );
    }
    if run(Which::Flood) {
        figures.extend(
            scenarios::flood(&bin, args.flood_mib)
                .await
                .context("flood")?,
        );
    }
    if run(Which::Forged) {
        figures.extend(scenarios::forged(&bin, 100).await.context("forged flood")?);
    }
    if run(Which::Outage) {
        let outage = std::time::Duration::from_secs(args.outage_secs);
        figures.extend(scenarios::outage(&bin, outage).await.context("outage")?);
    }
    if run(Which::Progress) {
        figures.extend(
            progress::progress(&bin, args.progress_jobs, args.progress_chats)
                .await
                .context("progress")?,
        );
    }
    print(&figures);
    if let Some(path) = &args.json {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({"name": f.name, "value": f.value, "unit": f.unit,
                            "target": f.target, "limit": f.limit})
            })
            .collect();
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"figures": rows}))?,
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
