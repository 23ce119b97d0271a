//! `execrelay-bench forge-client <url> <connections>`: a flooding client in a process of its
//! own (so the bench's receiver, which times arrivals, does not share its runtime). It posts
//! badly signed webhook requests until its standard input ends, then prints
//! `<sent> <refused with 401>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

pub async fn run(url: String, connections: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = serde_json::json!({"conversation_id": "x", "user_id": crate::relay::USER,
                                  "text": "/exec touch pwned"})
    .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let (stop, sent, refused) = (stop.clone(), sent.clone(), refused.clone());
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                let timestamp = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .to_string();
                let response = client
                    .post(&url)
                    .header("X-Execrelay-Timestamp", timestamp)
                    .header("X-Execrelay-Signature", format!("sha256={i:064x}"))
                    .body(body.clone())
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().as_u16() == 401) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Standard input ends when the bench is done measuring.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    println!(
        "{} {}",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    Ok(())
}
