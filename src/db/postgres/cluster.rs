//! ClusterStore on PostgreSQL: the change events are read by position, which per workspace
//! follows commit order (see `event_heads`), so a poll never skips a change that commits late;
//! cluster-wide locks are session-level advisory locks; duty leases are rows.

use super::*;
use crate::db::{CLUSTER_CHANGE_TYPES, ClusterStore, Fence, HeldLocks, PolledChanges};

/// A session holding advisory locks; closing it releases them.
struct SessionLock(Option<sqlx::PgConnection>);

impl Drop for SessionLock {
    fn drop(&mut self) {
        let Some(conn) = self.0.take() else { return };
        // A graceful close where a runtime is at hand; otherwise the socket just closes, and
        // the server ends the session (and its locks) when it notices.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = sqlx::Connection::close(conn).await;
            });
        }
    }
}

/// Pooled sessions holding advisory locks, unlocked (or, failing that, closed) when dropped.
struct PooledLocks(Option<sqlx::pool::PoolConnection<Postgres>>);

impl Drop for PooledLocks {
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock_all()")
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        // Never back to the pool still locked: closing ends the session.
                        drop(conn.detach());
                    }
                });
            }
            Err(_) => drop(conn.detach()),
        }
    }
}

/// The advisory-lock key for a lock name: 64 bits of its hash (keys are per database, and
/// this one holds only Warren).
fn lock_key(name: &str) -> i64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("warren/lock/v1\0{name}"));
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The advisory-lock key of a namespace's exec turn.
fn exec_lock_key(ws: &WorkspaceId, ns: &Namespace) -> i64 {
    lock_key(&format!("exec/{ws}/{ns}"))
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn hold_locks(&self, locks: &[(String, bool)]) -> Result<HeldLocks> {
        let keys: Vec<i64> = locks.iter().map(|(name, _)| lock_key(name)).collect();
        let fence_lock = *keys.first().expect("a caller names at least one lock");
        let exclusive: Vec<bool> = locks.iter().map(|(_, x)| *x).collect();
        let sessions = self.lock_sessions.clone();
        // On a task of its own, as for the exec turn: locks granted to a caller that went
        // away are let go, not kept by a pooled session.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let locked = async {
                let mut conn = sessions.acquire().await?;
                // In the order given (every caller names them outermost first, so no two
                // sessions wait on each other).
                // Aggregated so every lock call is evaluated; the pid is the fence's session.
                let taken: std::result::Result<(i32, i64), _> = sqlx::query_as(
                    "SELECT pg_backend_pid(), count(t.taken) FROM (
                         SELECT CASE WHEN l.x THEN pg_advisory_lock(l.k)
                                     ELSE pg_advisory_lock_shared(l.k) END::text AS taken
                         FROM unnest($1::bigint[], $2::boolean[]) WITH ORDINALITY AS l (k, x, i)
                         ORDER BY l.i) AS t",
                )
                .bind(&keys)
                .bind(&exclusive)
                .fetch_one(&mut *conn)
                .await;
                match taken {
                    Ok((session, _)) => Ok((session, PooledLocks(Some(conn)))),
                    Err(e) => {
                        // Some may be held: the session goes, not back to the pool.
                        drop(conn.detach());
                        Err(e)
                    }
                }
            };
            let _ = tx.send(locked.await);
        });
        let (session, guard) = rx
            .await
            .map_err(|_| Error::Unavailable("the lock task ended".into()))??;
        Ok(HeldLocks {
            guard: Box::new(guard),
            fence: Fence {
                session,
                lock: fence_lock,
            },
        })
    }

    async fn exec_lock(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let key = exec_lock_key(ws, ns);
        let opts = self.lock_opts.clone();
        // On a task of its own: if the caller goes away while waiting, the lock granted later
        // is released at once rather than left on a session nobody closes.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let locked = async {
                let mut conn =
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts).await?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(key)
                    .execute(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(SessionLock(Some(conn)))
            };
            let _ = tx.send(locked.await);
        });
        let lock = rx
            .await
            .map_err(|_| Error::Unavailable("the lock task ended".into()))??;
        Ok(Box::new(lock))
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO leases AS l (name, holder, token, expires_at)
             VALUES ($1, $2, 1, warren_now() + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
               expires_at = excluded.expires_at,
               token = CASE WHEN l.holder = excluded.holder THEN l.token ELSE l.token + 1 END
             WHERE l.holder = excluded.holder OR l.expires_at < warren_now()
             RETURNING token",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_micros() as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn join(&self, node: &str) -> Result<Vec<(WorkspaceId, LogPos)>> {
        // Rows of nodes gone for a day (crashed, never to leave) are only clutter.
        sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < warren_now() - 86400000000")
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO cluster_nodes (id, started_at, heartbeat_at, applied_through)
             VALUES ($1, warren_now(), warren_now(), warren_now())
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = warren_now()",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        let heads: Vec<(String, i64)> = sqlx::query_as("SELECT workspace_id, pos FROM event_heads")
            .fetch_all(&self.pool)
            .await?;
        heads
            .into_iter()
            .map(|(ws, pos)| Ok((WorkspaceId::parse(&ws)?, LogPos::from_raw(pos))))
            .collect()
    }

    async fn leave(&self, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM cluster_nodes WHERE id = $1")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn poll_changes(
        &self,
        after: &[(WorkspaceId, LogPos)],
        limit: u32,
    ) -> Result<PolledChanges> {
        // One statement, so its snapshot is taken after `now()` (its transaction's start):
        // every change committed before that time is visible to it. The outer join gives the
        // time even when there is no change.
        let sql = format!(
            "SELECT (extract(epoch FROM now()) * 1000000)::bigint AS seen_through, e.*
             FROM (SELECT 1) AS one LEFT JOIN LATERAL (
                 SELECT {EVENT_COLUMNS} FROM events
                 LEFT JOIN unnest($1::text[], $2::bigint[]) AS c (ws, after)
                   ON c.ws = events.workspace_id
                 WHERE events.type = ANY ($3::text[]) AND events.pos > COALESCE(c.after, 0)
                 ORDER BY events.workspace_id, events.pos LIMIT $4
             ) AS e ON true"
        );
        let rows = sqlx::query(&sql)
            .bind(after.iter().map(|(ws, _)| ws.as_str()).collect::<Vec<_>>())
            .bind(after.iter().map(|(_, p)| p.raw()).collect::<Vec<_>>())
            .bind(CLUSTER_CHANGE_TYPES)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let seen_through = Micros(rows[0].try_get("seen_through")?);
        let mut changes = Vec::new();
        for row in &rows {
            if row.try_get::<Option<String>, _>("id")?.is_some() {
                changes.push(event_from_row(row)?);
            }
        }
        Ok(PolledChanges {
            seen_through,
            changes,
        })
    }

    async fn applied(&self, node: &str, through: Micros) -> Result<()> {
        // Re-registers a node whose row was removed (a leave racing a restart).
        sqlx::query(
            "INSERT INTO cluster_nodes (id, started_at, heartbeat_at, applied_through)
             VALUES ($1, warren_now(), warren_now(), $2)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = warren_now(),
               applied_through = GREATEST(cluster_nodes.applied_through, excluded.applied_through)",
        )
        .bind(node)
        .bind(through.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn now(&self) -> Result<Micros> {
        Ok(Micros(
            sqlx::query_scalar("SELECT warren_now()")
                .fetch_one(&self.pool)
                .await?,
        ))
    }

    async fn behind(&self, me: &str, t: Micros, alive: Duration) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM cluster_nodes
             WHERE id <> $1 AND applied_through < $2 AND heartbeat_at > warren_now() - $3",
        )
        .bind(me)
        .bind(t.0)
        .bind(alive.as_micros() as i64)
        .fetch_all(&self.pool)
        .await?)
    }
}
