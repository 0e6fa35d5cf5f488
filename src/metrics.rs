//! Prometheus metrics: one process-wide recorder (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`), the names Warren records under, and the hooks that feed
//! them from places that know nothing of metrics (sqlx's statement events, the object store).
//!
//! Labels are bounded by construction: route templates (never paths), methods, statuses,
//! outcomes and operation names from fixed sets. No key material, workspace or namespace.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from a cached read (sub-millisecond) to a long exec.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

struct Installed {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the recorder the first time it is called (every server of a process shares it:
/// process metrics are per process anyway). Without it, recording is a no-op.
pub fn install() {
    INSTALLED.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's) keeps its place.
        metrics::set_global_recorder(recorder).ok()?;
        let process = metrics_process::Collector::default();
        process.describe();
        describe();
        Some(Installed { handle, process })
    });
}

/// The exposition text, process figures refreshed now.
pub fn render() -> String {
    match INSTALLED.get() {
        Some(Some(i)) => {
            i.process.collect();
            i.handle.render()
        }
        _ => String::new(),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "warren_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "warren_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by method and route template"
    );
    describe_counter!(
        "warren_exec_runs_total",
        "Commands run, by outcome: exited, timeout, oom, killed (revoked) or error"
    );
    describe_histogram!(
        "warren_exec_duration_seconds",
        metrics::Unit::Seconds,
        "Wall-clock time of a command in its sandbox"
    );
    describe_counter!(
        "warren_exec_sync_files_total",
        "Files written or removed by sync-back after a command"
    );
    describe_counter!(
        "warren_exec_sync_bytes_total",
        metrics::Unit::Bytes,
        "Bytes sync-back stored after a command"
    );
    describe_counter!(
        "warren_webhook_deliveries_total",
        "Webhook delivery attempts, by result: delivered, retrying or failed (given up)"
    );
    describe_gauge!(
        "warren_webhook_queue_depth",
        "Deliveries pending in the outbox (read when scraped)"
    );
    describe_counter!(
        "warren_sweeper_runs_total",
        "Retention sweeps run on this node, by sweep and result (ok or error)"
    );
    describe_counter!(
        "warren_purged_bytes_total",
        metrics::Unit::Bytes,
        "Bytes of deleted namespaces purged by this node"
    );
    describe_counter!(
        "warren_purged_namespaces_total",
        "Deleted namespaces purged by this node"
    );
    describe_histogram!(
        "warren_db_statement_duration_seconds",
        metrics::Unit::Seconds,
        "Time of one database statement, by its verb (select, insert, begin, ...)"
    );
    describe_histogram!(
        "warren_storage_operation_duration_seconds",
        metrics::Unit::Seconds,
        "Time of one object-store call (to its first byte for reads), by operation"
    );
    describe_counter!(
        "warren_storage_errors_total",
        "Object-store calls that failed (not-found lookups excepted), by operation"
    );
    describe_counter!(
        "warren_storage_lists_total",
        "Object-store listings started (streamed, so counted rather than timed)"
    );
    describe_counter!(
        "warren_storage_bulk_deletes_total",
        "Object-store bulk deletions started"
    );
    describe_gauge!("warren_sse_streams_open", "Event streams open now");
}

pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    counter!("warren_http_requests_total", "method" => method.to_owned(), "route" => route.to_owned(), "status" => status).increment(1);
    histogram!("warren_http_request_duration_seconds", "method" => method.to_owned(), "route" => route.to_owned())
        .record(elapsed);
}

/// How a command ended, as the exec metrics count it.
#[derive(Debug, Clone, Copy)]
pub enum ExecOutcome {
    Exited,
    Timeout,
    Oom,
    /// Stopped by a revocation or a namespace deletion.
    Killed,
    Error,
}

impl ExecOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Timeout => "timeout",
            Self::Oom => "oom",
            Self::Killed => "killed",
            Self::Error => "error",
        }
    }
}

pub fn exec_run(outcome: ExecOutcome, elapsed: Duration) {
    counter!("warren_exec_runs_total", "outcome" => outcome.as_str()).increment(1);
    histogram!("warren_exec_duration_seconds").record(elapsed);
}

pub fn exec_synced(files: u64, bytes: u64) {
    counter!("warren_exec_sync_files_total").increment(files);
    counter!("warren_exec_sync_bytes_total").increment(bytes);
}

/// `result` is "delivered", "retrying" or "failed".
pub fn webhook_delivery(result: &'static str) {
    counter!("warren_webhook_deliveries_total", "result" => result).increment(1);
}

pub fn webhook_queue_depth(depth: u64) {
    gauge!("warren_webhook_queue_depth").set(depth as f64);
}

/// `sweep` is one of a fixed set: "purge", "snapshots", "orphans", "journal", "device_logins",
/// "logs".
pub fn sweeper_run(sweep: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!("warren_sweeper_runs_total", "sweep" => sweep, "result" => result).increment(1);
}

pub fn purged(bytes: u64) {
    counter!("warren_purged_namespaces_total").increment(1);
    counter!("warren_purged_bytes_total").increment(bytes);
}

/// Counts one open event stream for as long as it lives.
pub struct OpenStream(());

impl OpenStream {
    pub fn new() -> Self {
        gauge!("warren_sse_streams_open").increment(1.0);
        Self(())
    }
}

impl Default for OpenStream {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!("warren_sse_streams_open").decrement(1.0);
    }
}

/// A tracing layer that turns sqlx's per-statement events (target `sqlx::query`, which carry
/// `elapsed_secs` and a summary starting with the statement's verb) into the statement
/// histogram: both database backends emit them, so neither needs code of its own.
pub struct StatementTimings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementTimings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        if let Some(secs) = fields.elapsed_secs {
            histogram!("warren_db_statement_duration_seconds", "verb" => fields.verb).record(secs);
        }
    }
}

#[derive(Default)]
struct StatementFields {
    elapsed_secs: Option<f64>,
    verb: &'static str,
}

impl tracing::field::Visit for StatementFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            self.verb = statement_verb(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.verb = statement_verb(&format!("{value:?}"));
        }
    }
}

/// The statement's first word, from a fixed set so the label stays bounded.
fn statement_verb(summary: &str) -> &'static str {
    let word = summary
        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    const VERBS: &[&str] = &[
        "select",
        "insert",
        "update",
        "delete",
        "with",
        "begin",
        "commit",
        "rollback",
        "pragma",
        "create",
        "alter",
        "drop",
        "savepoint",
        "release",
        "set",
        "lock",
        "notify",
        "listen",
    ];
    VERBS
        .iter()
        .find(|v| **v == word)
        .copied()
        .unwrap_or("other")
}

/// An object store that times every call it forwards, by operation.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn object_store::ObjectStore>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn object_store::ObjectStore>) -> Arc<dyn object_store::ObjectStore> {
        Arc::new(Self { inner })
    }
}

impl std::fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

/// Times `f` as storage operation `op`, counting its failure (a missing object is an answer,
/// not a failure).
async fn timed<T>(
    op: &'static str,
    f: impl std::future::Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    let start = Instant::now();
    let r = f.await;
    histogram!("warren_storage_operation_duration_seconds", "op" => op).record(start.elapsed());
    if let Err(e) = &r
        && !matches!(e, object_store::Error::NotFound { .. })
    {
        counter!("warren_storage_errors_total", "op" => op).increment(1);
    }
    r
}

#[async_trait::async_trait]
impl object_store::ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        timed("put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        timed(
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let op = if options.head { "head" } else { "get" };
        timed(op, self.inner.get_opts(location, options)).await
    }

    async fn get_range(
        &self,
        location: &object_store::path::Path,
        range: std::ops::Range<u64>,
    ) -> object_store::Result<bytes::Bytes> {
        timed("get", self.inner.get_range(location, range)).await
    }

    async fn get_ranges(
        &self,
        location: &object_store::path::Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        timed("get", self.inner.get_ranges(location, ranges)).await
    }

    async fn head(
        &self,
        location: &object_store::path::Path,
    ) -> object_store::Result<object_store::ObjectMeta> {
        timed("head", self.inner.head(location)).await
    }

    async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
        timed("delete", self.inner.delete(location)).await
    }

    // Forwarded whole, so a backend's bulk delete stays bulk; counted, not timed.
    fn delete_stream<'a>(
        &'a self,
        locations: futures::stream::BoxStream<'a, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'a, object_store::Result<object_store::path::Path>> {
        counter!("warren_storage_bulk_deletes_total").increment(1);
        self.inner.delete_stream(locations)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&object_store::path::Path>,
        offset: &object_store::path::Path,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        counter!("warren_storage_lists_total").increment(1);
        self.inner.list_with_offset(prefix, offset)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        counter!("warren_storage_lists_total").increment(1);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        timed("list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        timed("copy", self.inner.copy(from, to)).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        timed("copy", self.inner.copy_if_not_exists(from, to)).await
    }

    async fn rename(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        timed("rename", self.inner.rename(from, to)).await
    }

    async fn rename_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        timed("rename", self.inner.rename_if_not_exists(from, to)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_verbs_are_a_bounded_set() {
        assert_eq!(statement_verb("SELECT id FROM files …"), "select");
        assert_eq!(statement_verb("  insert into x"), "insert");
        assert_eq!(statement_verb("BEGIN"), "begin");
        assert_eq!(statement_verb("(SELECT 1)"), "select");
        assert_eq!(statement_verb("vacuum"), "other");
        assert_eq!(statement_verb(""), "other");
    }
}
