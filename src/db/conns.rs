//! A fixed set of SQLite connections, each behind its own lock: what [`super::sqlite`] uses
//! instead of `sqlx::Pool`.
//!
//! Every SQLite statement is a round trip to the connection's worker thread, and on a small,
//! busy host waking a parked thread costs 50–100 µs. `sqlx::Pool` adds two more round trips to
//! every checkout (a ping on acquire, another on release, the latter in a spawned task that
//! the next writer waits for), which made a file write spend most of its time in the pool
//! rather than in SQLite (measured in `benches/files.rs`). Local connections do not go stale
//! and are never remote, so none of that is needed: a checkout here is an uncontended lock.
//!
//! A checkout dropped in the middle of a transaction (a cancelled request) is safe: sqlx's
//! `Transaction` queues the rollback on the connection when dropped, before the next use.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard};

use super::{Error, Result};

pub(super) struct Conns {
    conns: Vec<Mutex<Option<SqliteConnection>>>,
    /// Where the next checkout starts looking, so load spreads over the connections.
    next: AtomicUsize,
}

/// A checked-out connection; derefs to it.
pub(super) struct Conn<'a>(MutexGuard<'a, Option<SqliteConnection>>);

impl std::ops::Deref for Conn<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.0.as_ref().expect("checked out connections are open")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0.as_mut().expect("checked out connections are open")
    }
}

impl Conns {
    pub async fn open(opts: &SqliteConnectOptions, count: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            conns.push(Mutex::new(Some(opts.connect().await?)));
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else the first to come free in turn.
    pub async fn get(&self) -> Result<Conn<'_>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let guard = match (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok()) {
            Some(guard) => guard,
            None => self.conns[start % n].lock().await,
        };
        if guard.is_none() {
            return Err(Error::Backend(sqlx::Error::PoolClosed));
        }
        Ok(Conn(guard))
    }

    /// Closes every connection once its current user is done; later checkouts fail.
    pub async fn close(&self) {
        for conn in &self.conns {
            if let Some(conn) = conn.lock().await.take()
                && let Err(e) = conn.close().await
            {
                tracing::warn!(error = %e, "could not close a database connection");
            }
        }
    }
}
