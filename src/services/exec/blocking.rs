//! File work that blocks (reading or writing up to a whole 100 MB file), run on tokio's
//! blocking pool so the async workers keep serving every other request.

use std::io::{Read, Write};

use bytes::Bytes;

use super::internal;
use crate::services::Result;

/// Runs `work` on the blocking pool.
pub(super) async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// Chunks read from a file between awaits: how many may wait while the consumer uploads.
const CHUNKS_IN_FLIGHT: usize = 4;
const CHUNK_BYTES: usize = 256 * 1024;

/// Reads `file` on the blocking pool, handing its chunks over as they are read.
pub(super) fn read_chunks(
    mut file: std::fs::File,
) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the reader went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Writes the chunks sent on the returned channel to `file` on the blocking pool; the handle
/// says how that went once the sender is dropped.
pub(super) fn write_chunks(
    mut file: std::fs::File,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let writing = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        Ok(())
    });
    (tx, writing)
}
