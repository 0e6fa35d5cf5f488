//! The sweeps: expired events and audit records, and orphan objects (bytes no index row points
//! to, left by a crash between storing a file and committing its row, or between committing a
//! delete and removing the bytes). Plain functions over the stores, driven by a thin loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use warren_storage::{BlobStore, Namespace, NsPath, WorkspaceId};

use crate::coord::{Coordinator, Duty, Leadership};
use crate::db::{self, MetaStore, Swept};
use crate::ids::Micros;

/// How long records are kept, and how often the sweeps run.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub events: Duration,
    pub sweep_interval: Duration,
    /// An object with no index row is deleted only once it is older than this. Writes store
    /// bytes before committing the row, so a younger one may be a write still in flight.
    pub orphan_grace: Duration,
    /// A deleted namespace is purged this long after its deletion.
    pub purge_after: Duration,
    /// How long a snapshot is kept.
    pub snapshots: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: Duration::from_secs(90 * 86_400),
            sweep_interval: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
            purge_after: Duration::from_secs(30 * 86_400),
            snapshots: Duration::from_secs(90 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    pub scanned: u64,
    pub orphans: u64,
    pub bytes: u64,
    /// Whether the orphans were deleted (false in a dry run).
    pub deleted: bool,
}

/// Finds file objects that no index row points to and that are older than `grace` at `now`, and
/// deletes them unless `dry_run`.
pub async fn sweep_orphans(
    meta: &dyn MetaStore,
    blobs: &BlobStore,
    grace: Duration,
    now: Micros,
    dry_run: bool,
) -> Result<OrphanReport, crate::services::Error> {
    let cutoff = now.0 - grace.as_micros() as i64;
    let mut indexed: HashMap<(WorkspaceId, Namespace), HashSet<NsPath>> = HashMap::new();
    let mut report = OrphanReport {
        deleted: !dry_run,
        ..OrphanReport::default()
    };
    let mut objects = blobs.list_all_files();
    while let Some(obj) = objects.next().await {
        let obj = obj?;
        report.scanned += 1;
        if obj.modified_micros >= cutoff {
            continue;
        }
        let key = (obj.workspace.clone(), obj.namespace.clone());
        if !indexed.contains_key(&key) {
            let paths = meta.file_paths(&key.0, &key.1).await?;
            indexed.insert(key.clone(), paths.into_iter().collect());
        }
        if indexed[&key].contains(&obj.path) {
            continue;
        }
        report.orphans += 1;
        report.bytes += obj.size;
        if !dry_run {
            blobs
                .delete(&obj.workspace, &obj.namespace, &obj.path)
                .await?;
        }
    }
    Ok(report)
}

const SWEEP_BATCH: u32 = 1000;

/// How long the tree's journal remembers a removal; a working copy left idle longer is
/// refreshed from the whole tree.
const JOURNAL_KEPT: Duration = Duration::from_secs(86_400);

/// Removes everything older than `retention` before `now`, in bounded batches; with
/// `dry_run`, only counts what it would remove.
pub async fn sweep(
    meta: &dyn MetaStore,
    retention: Duration,
    now: Micros,
    dry_run: bool,
) -> db::Result<Swept> {
    let cutoff = Micros(now.0 - retention.as_micros() as i64);
    if dry_run {
        return meta.count_log(cutoff).await;
    }
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
    blobs: BlobStore,
    namespaces: Arc<crate::services::Namespaces>,
    snapshots: Arc<crate::services::Snapshots>,
    coord: Arc<dyn Coordinator>,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) {
    // Leadership can be lost (another node's lease took over): then wait to lead again.
    loop {
        let leading = tokio::select! {
            l = coord.lead(Duty::Retention) => l,
            _ = shutdown.cancelled() => return,
        };
        if !sweep_while_leading(
            &*meta,
            &blobs,
            &namespaces,
            &snapshots,
            &settings,
            &shutdown,
            &leading,
        )
        .await
        {
            return;
        }
    }
}

/// Runs the sweeps every `sweep_interval` until shutdown (`false`) or lost leadership (`true`).
async fn sweep_while_leading(
    meta: &dyn MetaStore,
    blobs: &BlobStore,
    namespaces: &crate::services::Namespaces,
    snapshots: &crate::services::Snapshots,
    settings: &RetentionSettings,
    shutdown: &CancellationToken,
    leading: &Leadership,
) -> bool {
    loop {
        use crate::metrics::sweeper_run;
        let purged = namespaces
            .purge_expired(blobs, settings.purge_after, Micros::now(), false)
            .await;
        sweeper_run("purge", purged.is_ok());
        match purged {
            Ok(done) => {
                for p in done {
                    crate::metrics::purged(p.bytes);
                    tracing::info!(
                        workspace = ?p.workspace, namespace = ?p.namespace,
                        objects = p.objects, bytes = p.bytes, "purged a deleted namespace"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "namespace purge failed"),
        }
        let expired = snapshots.sweep_expired(Micros::now(), false).await;
        sweeper_run("snapshots", expired.is_ok());
        match expired {
            Ok(n) if n > 0 => tracing::info!(snapshots = n, "removed expired snapshots"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "snapshot expiry sweep failed"),
        }
        let orphans = sweep_orphans(meta, blobs, settings.orphan_grace, Micros::now(), false).await;
        sweeper_run("orphans", orphans.is_ok());
        match orphans {
            Ok(r) if r.orphans > 0 => tracing::info!(
                orphans = r.orphans,
                bytes = r.bytes,
                scanned = r.scanned,
                "orphan sweep removed objects no index row points to"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
        }
        let journal_cutoff = Micros(Micros::now().0 - JOURNAL_KEPT.as_micros() as i64);
        let pruned = meta.prune_journal(journal_cutoff).await;
        sweeper_run("journal", pruned.is_ok());
        match pruned {
            Ok(n) if n > 0 => tracing::debug!(removals = n, "pruned the tree journal"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "tree journal prune failed"),
        }
        let logins = meta.sweep_device_logins(Micros::now()).await;
        sweeper_run("device_logins", logins.is_ok());
        if let Err(e) = logins {
            tracing::warn!(error = %e, "expired browser logins sweep failed");
        }
        let logs = sweep(meta, settings.events, Micros::now(), false).await;
        sweeper_run("logs", logs.is_ok());
        match logs {
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
            _ = shutdown.cancelled() => return false,
            _ = leading.lost() => return true,
            _ = tokio::time::sleep(settings.sweep_interval) => {}
        }
    }
}
