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
//! The hottest writes (a file write or delete, an exec's sync-back) go further with a
//! [`Batch`]: the transaction's opening and all its statements travel in one round trip, the
//! caller checks the rows they return and commits or rolls back in a second one, where sqlx's
//! `Transaction` takes a round trip per statement plus two.
//!
//! A checkout dropped in the middle of a transaction (a cancelled request) is safe: sqlx's
//! `Transaction` queues the rollback on the connection when dropped, and a batch left open is
//! rolled back by the next checkout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Arguments, ConnectOptions, Connection, Encode, Executor, Type};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Error, Result};

pub(super) struct Conns {
    conns: Vec<Arc<Mutex<Option<Slot>>>>,
    /// Where the next checkout starts looking, so load spreads over the connections.
    next: AtomicUsize,
}

struct Slot {
    conn: SqliteConnection,
    /// A batch's transaction is open: set before it starts, cleared by commit or rollback.
    in_batch: bool,
}

/// A checked-out connection; derefs to it. It owns its checkout, so work that must not be
/// abandoned halfway can take it onto a task of its own.
pub(super) struct Conn(OwnedMutexGuard<Option<Slot>>);

impl std::ops::Deref for Conn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self
            .0
            .as_ref()
            .expect("checked out connections are open")
            .conn
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.slot().conn
    }
}

impl Conn {
    fn slot(&mut self) -> &mut Slot {
        self.0.as_mut().expect("checked out connections are open")
    }

    /// Runs `batch` in this connection's write transaction, opening one (in the same round
    /// trip) if none is open; returns every row its statements produced, in statement order.
    /// The transaction stays open for more batches: inspect the rows, then
    /// [`commit`](Self::commit) or [`rollback`](Self::rollback). On error it has already been
    /// rolled back.
    pub async fn batch(&mut self, batch: Batch<'_>) -> Result<Vec<SqliteRow>> {
        if let Some(e) = batch.error {
            self.rollback().await;
            return Err(Error::Backend(sqlx::Error::Encode(e)));
        }
        let slot = self.slot();
        let sql = if slot.in_batch {
            if batch.sql.is_empty() {
                return Ok(Vec::new());
            }
            batch.sql
        } else {
            slot.in_batch = true;
            format!("BEGIN IMMEDIATE;{}", batch.sql)
        };
        let query = sqlx::query_with(&sql, batch.args).persistent(batch.persistent);
        let result = slot.conn.fetch_all(query).await;
        match result {
            Ok(rows) => Ok(rows),
            Err(e) => {
                self.rollback().await;
                Err(e.into())
            }
        }
    }

    pub async fn commit(&mut self) -> Result<()> {
        if let Err(e) = self.slot().conn.execute("COMMIT").await {
            // A failed COMMIT can leave the transaction open.
            self.rollback().await;
            return Err(e.into());
        }
        self.slot().in_batch = false;
        Ok(())
    }

    pub async fn rollback(&mut self) {
        let slot = self.slot();
        // Fails only when there is nothing to roll back (the batch failed before BEGIN ran).
        let _ = slot.conn.execute("ROLLBACK").await;
        slot.in_batch = false;
    }
}

/// Statements sent to SQLite in one round trip. Values bind to plain `?` placeholders left to
/// right across all the statements; numbered ones (`?1`) would index the whole batch's values,
/// so they have no place here.
pub(super) struct Batch<'q> {
    sql: String,
    args: SqliteArguments<'q>,
    error: Option<sqlx::error::BoxDynError>,
    persistent: bool,
}

impl<'q> Batch<'q> {
    pub fn new() -> Self {
        Self {
            sql: String::new(),
            args: SqliteArguments::default(),
            error: None,
            persistent: true,
        }
    }

    /// Keeps the statements out of the prepared-statement cache: for batches whose text
    /// depends on their input, which would only churn it.
    pub fn one_off(mut self) -> Self {
        self.persistent = false;
        self
    }

    pub fn push(&mut self, statement: &str) -> &mut Self {
        self.sql.push('\n');
        self.sql.push_str(statement);
        self.sql.push(';');
        self
    }

    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, sqlx::Sqlite> + Type<sqlx::Sqlite>,
    {
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self
    }

    /// The length of its SQL text, which SQLite caps (1,000,000 bytes by default).
    pub fn len(&self) -> usize {
        self.sql.len()
    }

    /// Runs the statements on `conn` as they are (inside its open transaction, if any), in
    /// one round trip; returns every row they produced, in statement order.
    pub async fn run_on(self, conn: &mut SqliteConnection) -> Result<Vec<SqliteRow>> {
        if let Some(e) = self.error {
            return Err(Error::Backend(sqlx::Error::Encode(e)));
        }
        let query = sqlx::query_with(&self.sql, self.args).persistent(self.persistent);
        Ok(conn.fetch_all(query).await?)
    }
}

impl Conns {
    pub async fn open(opts: &SqliteConnectOptions, count: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            conns.push(Arc::new(Mutex::new(Some(Slot {
                conn: opts.connect().await?,
                in_batch: false,
            }))));
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else the first to come free in turn.
    pub async fn get(&self) -> Result<Conn> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|i| {
            Arc::clone(&self.conns[(start + i) % n])
                .try_lock_owned()
                .ok()
        });
        let mut guard = match free {
            Some(guard) => guard,
            None => Arc::clone(&self.conns[start % n]).lock_owned().await,
        };
        let Some(slot) = guard.as_mut() else {
            return Err(Error::Backend(sqlx::Error::PoolClosed));
        };
        if slot.in_batch {
            // The last user was cancelled between its batch and its commit.
            let _ = slot.conn.execute("ROLLBACK").await;
            slot.in_batch = false;
        }
        Ok(Conn(guard))
    }

    /// Closes every connection once its current user is done; later checkouts fail.
    pub async fn close(&self) {
        for conn in &self.conns {
            if let Some(slot) = conn.lock().await.take()
                && let Err(e) = slot.conn.close().await
            {
                tracing::warn!(error = %e, "could not close a database connection");
            }
        }
    }
}
