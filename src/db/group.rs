//! Group commit for file writes, shared by both backends: concurrent writes queue up, and
//! whoever gets the backend's commit turn next commits every write queued by then in one
//! transaction, so writers share one commit (one fsync, one turn at the locks) instead of each
//! waiting in line for its own.

use tokio::sync::oneshot;
use warren_storage::{Namespace, WorkspaceId};

use super::{Error, Fence, FileWrite, NewEvent, Result};

/// A file write waiting for a group commit.
pub(super) struct QueuedWrite {
    pub ws: WorkspaceId,
    pub ns: Namespace,
    pub file: FileWrite,
    pub event: NewEvent,
    /// The write's cluster locks, which its commit must show (see [`Fence`]).
    pub fence: Option<Fence>,
    pub done: oneshot::Sender<Result<()>>,
}

impl QueuedWrite {
    /// Tells the writer how its write went (a writer that gave up no longer listens).
    pub fn finish(self, r: Result<()>) {
        let _ = self.done.send(r);
    }
}

/// The writes waiting for a commit turn, in arrival order.
#[derive(Default)]
pub(super) struct WriteQueue {
    writes: std::sync::Mutex<Vec<(u64, QueuedWrite)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A write's place in the queue; leaving it (a cancelled caller) withdraws the write unless a
/// commit has already taken it.
pub(super) struct Queued<'a> {
    queue: &'a WriteQueue,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut writes = self.queue.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.retain(|(id, _)| *id != self.id);
    }
}

/// How a queued write went, once the commit that took it tells.
pub(super) type Outcome = oneshot::Receiver<Result<()>>;

/// Waits for the commit that took a write.
pub(super) async fn outcome(rx: Outcome) -> Result<()> {
    rx.await
        .unwrap_or(Err(Error::Backend(sqlx::Error::WorkerCrashed)))
}

impl WriteQueue {
    pub fn push(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        file: &FileWrite,
        event: &NewEvent,
        fence: Option<Fence>,
    ) -> (Queued<'_>, Outcome) {
        let (done, result) = oneshot::channel();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.push((
            id,
            QueuedWrite {
                ws: ws.clone(),
                ns: ns.clone(),
                file: file.clone(),
                event: event.clone(),
                fence,
                done,
            },
        ));
        (Queued { queue: self, id }, result)
    }

    /// Takes every queued write, in arrival order.
    pub fn take(&self) -> Vec<QueuedWrite> {
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.drain(..).map(|(_, w)| w).collect()
    }
}
