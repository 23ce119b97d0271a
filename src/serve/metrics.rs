//! `GET /metrics`: the Prometheus text format, behind the API's token like `/v1/*`.
//!
//! [`install`] sets the process's recorder (`metrics-exporter-prometheus`, default features
//! off: it renders text and nothing else; this route serves it). What the stages count
//! (`crate::metrics`) accumulates there; what the store holds (queued events, pending and dead
//! messages, each channel's oldest pending message) is read when scraped, so it is as true
//! as the tables, also after a restart.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use ::metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metrics as m;
use crate::store::{Store, StoreError, now_ms};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Channels whose oldest pending age was shown: shown as 0 once nothing of theirs is pending,
/// not left at their last age.
static CHANNELS_SHOWN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Sets the Prometheus recorder, once per process; later calls return the same handle.
/// `None` if another recorder was set first (nothing is then shown).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, bounds) in m::BUCKETS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_string()), bounds)
                    .ok()?;
            }
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(error = %error, "metrics: cannot set the recorder");
                    return None;
                }
            };
            m::describe();
            gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// Everything, in the text format: the store's gauges read now, then the rest.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let counts = store.counts().await?;
    let oldest = store.oldest_pending().await?;
    gauge!(m::JOBS_RUNNING).set(counts.running_jobs as f64);
    gauge!(m::EVENTS_QUEUED).set(counts.queued_events as f64);
    gauge!(m::OUTBOX_PENDING).set(counts.pending_deliveries as f64);
    gauge!(m::OUTBOX_DEAD).set(counts.dead_deliveries as f64);
    let now = now_ms();
    {
        let mut shown = CHANNELS_SHOWN.lock().unwrap_or_else(|e| e.into_inner());
        for channel in shown.iter() {
            if !oldest.iter().any(|(c, _)| c == channel) {
                gauge!(m::OUTBOX_OLDEST_AGE, "channel" => channel.clone()).set(0.0);
            }
        }
        for (channel, created_at) in oldest {
            let age = (now - created_at).max(0) as f64 / 1000.0;
            gauge!(m::OUTBOX_OLDEST_AGE, "channel" => channel.clone()).set(age);
            shown.insert(channel);
        }
    }
    Ok(install().map(|handle| handle.render()).unwrap_or_default())
}
