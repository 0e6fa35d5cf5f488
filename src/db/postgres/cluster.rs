//! ClusterFeed on PostgreSQL: the change events are read by position, which per workspace
//! follows commit order (see `event_heads`), so a poll never skips a change that commits late.

use super::*;
use crate::db::{CLUSTER_CHANGE_TYPES, ClusterFeed, PolledChanges};

#[async_trait]
impl ClusterFeed for PgStore {
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
