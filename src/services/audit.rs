//! The audit trail: who did what to which file, and how it ended.
//!
//! Recording must not slow the operation it records, so records go through a bounded channel
//! to one writer task that stores them in batches. A query first sends a flush barrier down the
//! same channel, so it sees every operation that finished before it was asked.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Caller, Error, Result};
use crate::db::MetaStore;
pub use crate::db::{AuditPos, AuditQuery, AuditRecord};

const CHANNEL: usize = 16_384;
const BATCH: usize = 512;
pub const MAX_PAGE: u32 = 1000;

enum Msg {
    Record(AuditRecord),
    Flush(oneshot::Sender<()>),
}

pub struct Audit {
    meta: Arc<dyn MetaStore>,
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
}

impl Audit {
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        Self {
            meta,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Queues a record. Waits only if the writer is far behind (backpressure, never loss).
    pub async fn record(&self, rec: AuditRecord) {
        if let Err(mpsc::error::SendError(Msg::Record(rec))) = self.tx.send(Msg::Record(rec)).await
        {
            // The writer has stopped (shutdown): store this one directly.
            if let Err(e) = self.meta.append_audit(&[rec]).await {
                tracing::error!(error = %e, "audit record lost");
            }
        }
    }

    /// Waits until everything queued so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stores queued records until `done`, then drains what is left.
    pub async fn run(self: Arc<Self>, done: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap().take() else {
            return;
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut waiters = Vec::new();
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = done.cancelled() => { rx.close(); rx.recv().await }
            };
            let Some(first) = first else { break };
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Record(r) => batch.push(r),
                    Msg::Flush(w) => waiters.push(w),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                if let Err(e) = self.meta.append_audit(&batch).await {
                    tracing::error!(error = %e, records = batch.len(), "could not store audit records");
                }
                batch.clear();
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Checks scope and limit, and waits until every earlier operation is stored.
    async fn prepare(&self, caller: &Caller, ws: &str, q: &mut AuditQuery) -> Result<()> {
        q.workspace = caller.require_admin(ws, "the audit trail")?;
        if !(1..=MAX_PAGE).contains(&q.limit) {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        self.flush().await;
        Ok(())
    }

    /// Up to `q.limit` records; admins only.
    pub async fn query(
        &self,
        caller: &Caller,
        ws: &str,
        mut q: AuditQuery,
    ) -> Result<Vec<AuditRecord>> {
        self.prepare(caller, ws, &mut q).await?;
        Ok(self.meta.query_audit(&q).await?)
    }

    /// A page of records, and the position to continue from when there is more.
    pub async fn page(
        &self,
        caller: &Caller,
        ws: &str,
        mut q: AuditQuery,
    ) -> Result<(Vec<AuditRecord>, Option<AuditPos>)> {
        self.prepare(caller, ws, &mut q).await?;
        let limit = q.limit as usize;
        // One more than asked, to know whether another page exists.
        q.limit += 1;
        let mut records = self.meta.query_audit(&q).await?;
        if records.len() <= limit {
            return Ok((records, None));
        }
        records.truncate(limit);
        let next = records.last().map(|r| r.seq);
        Ok((records, next))
    }
}
