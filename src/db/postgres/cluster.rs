//! ClusterStore on PostgreSQL: the change events are read by position, which per workspace
//! follows commit order (see `event_heads`), so a poll never skips a change that commits late.

use super::*;
use crate::db::{CLUSTER_CHANGE_TYPES, ClusterStore, PolledChanges};

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

/// The advisory-lock key of a namespace's exec turn: 64 bits of a hash of its names (keys are
/// per database, and this one holds only Warren).
fn exec_lock_key(ws: &WorkspaceId, ns: &Namespace) -> i64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"warren/exec-turn/v1\0");
    h.update(ws.as_str());
    h.update(b"\0");
    h.update(ns.as_str());
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn exec_lock(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let key = exec_lock_key(ws, ns);
        let opts = self.opts.clone();
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
