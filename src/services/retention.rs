//! The retention sweep for the event log and the audit trail: a plain function over the
//! metadata store, driven by a thin loop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{self, MetaStore, Swept};
use crate::ids::Micros;

/// How long records are kept, and how often the sweep runs.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub events: Duration,
    pub sweep_interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: Duration::from_secs(90 * 86_400),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

const SWEEP_BATCH: u32 = 1000;

/// Removes everything older than `retention` before `now`, in bounded batches.
pub async fn sweep(meta: &dyn MetaStore, retention: Duration, now: Micros) -> db::Result<Swept> {
    let cutoff = Micros(now.0 - retention.as_micros() as i64);
    let mut total = Swept::default();
    loop {
        let s = meta.sweep_log(cutoff, SWEEP_BATCH).await?;
        total.events += s.events;
        total.deliveries += s.deliveries;
        total.audit += s.audit;
        if s.events < SWEEP_BATCH as u64
            && s.audit < SWEEP_BATCH as u64
            && s.deliveries < SWEEP_BATCH as u64
        {
            return Ok(total);
        }
    }
}

pub async fn run(
    meta: Arc<dyn MetaStore>,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) {
    loop {
        match sweep(&*meta, settings.events, Micros::now()).await {
            Ok(s) if s != Swept::default() => tracing::info!(
                events = s.events,
                deliveries = s.deliveries,
                audit = s.audit,
                "retention sweep removed expired records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.sweep_interval) => {}
        }
    }
}
