//! NamespaceLifecycle on PostgreSQL.

use super::*;
use crate::db::PurgeInventory;

#[async_trait]
impl NamespaceLifecycle for PgStore {
    async fn list_namespaces(&self, ws: &WorkspaceId) -> Result<Vec<NamespaceUsage>> {
        let rows = sqlx::query(
            "SELECT n.name, n.state, n.created_at, n.deleted_at,
               (SELECT COUNT(*) FROM files f WHERE f.workspace_id = n.workspace_id
                  AND f.namespace = n.name AND f.kind = 'file') AS files,
               (SELECT COALESCE(SUM(size), 0)::bigint FROM files f
                  WHERE f.workspace_id = n.workspace_id AND f.namespace = n.name
                    AND f.kind = 'file') AS bytes,
               (SELECT MAX(created_at) FROM events e WHERE e.workspace_id = n.workspace_id
                  AND e.namespace = n.name) AS last_activity,
               (SELECT COUNT(*) FROM snapshots s WHERE s.workspace_id = n.workspace_id
                  AND s.namespace = n.name) AS snapshots,
               (SELECT COALESCE(SUM(size_bytes), 0)::bigint FROM snapshots s
                  WHERE s.workspace_id = n.workspace_id AND s.namespace = n.name)
                 AS snapshot_bytes
             FROM namespaces n WHERE n.workspace_id = $1 AND n.state <> 'purged'
             ORDER BY n.name",
        )
        .bind(ws.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_from_row).collect()
    }

    async fn delete_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
        key_event: &(dyn for<'k> Fn(&'k KeyId) -> NewEvent + Send + Sync),
    ) -> Result<Option<Vec<(KeyId, [u8; 32])>>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces SET state = 'deleted', deleted_at = warren_now()
             WHERE workspace_id = $1 AND name = $2 AND state = 'active'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(None);
        }
        let revoked: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = warren_now()
             WHERE workspace_id = $1 AND namespace = $2 AND revoked_at IS NULL
             RETURNING id, hash",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut events = vec![event.clone()];
        let mut hashes = Vec::with_capacity(revoked.len());
        for (id, hash) in revoked {
            let key_id = KeyId::from_string(id);
            events.push(key_event(&key_id));
            hashes.push((key_id, hash32(hash)?));
        }
        append_events(&mut tx, &events).await?;
        self.commit_events(tx).await?;
        Ok(Some(hashes))
    }

    async fn restore_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces SET state = 'active', deleted_at = NULL
             WHERE workspace_id = $1 AND name = $2 AND state = 'deleted'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(true)
    }

    async fn begin_purge(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        counted: PurgeInventory,
    ) -> Result<Option<PurgeInventory>> {
        // The first begin's count stands: a purge begun before the inventory existed counts
        // what it finds now.
        let row = sqlx::query_as(
            "UPDATE namespaces SET state = 'purging',
               purge_objects = CASE WHEN state = 'deleted' THEN $3 ELSE purge_objects END,
               purge_bytes = CASE WHEN state = 'deleted' THEN $4 ELSE purge_bytes END,
               purge_snapshots = CASE WHEN state = 'deleted' THEN $5 ELSE purge_snapshots END
             WHERE workspace_id = $1 AND name = $2 AND state IN ('deleted', 'purging')
             RETURNING purge_objects, purge_bytes, purge_snapshots",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(counted.objects as i64)
        .bind(counted.bytes as i64)
        .bind(counted.snapshot_objects as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(PurgeInventory::recorded(row, counted))
    }

    async fn deleted_namespaces(&self) -> Result<Vec<(WorkspaceId, Namespace, Micros)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT workspace_id, name, deleted_at FROM namespaces
             WHERE state IN ('deleted', 'purging')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(ws, ns, at)| Ok((WorkspaceId::parse(&ws)?, Namespace::parse(&ns)?, Micros(at))))
            .collect()
    }

    async fn purge_namespace(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE namespaces
             SET state = 'purged', purged_at = warren_now(), generation = generation + 1,
               journal_floor = generation + 1
             WHERE workspace_id = $1 AND name = $2 AND state = 'purging'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        // Nothing of the old tenant may reach a new one of the same name: its history goes
        // with its files, and subscriptions bound to the name end. Only the proof remains.
        for sql in [
            "DELETE FROM files WHERE workspace_id = $1 AND namespace = $2",
            "DELETE FROM tree_tombstones WHERE workspace_id = $1 AND namespace = $2",
            "DELETE FROM snapshots WHERE workspace_id = $1 AND namespace = $2",
            "DELETE FROM deliveries WHERE event_seq IN
               (SELECT seq FROM events WHERE workspace_id = $1 AND namespace = $2)",
            "DELETE FROM deliveries WHERE webhook_id IN
               (SELECT id FROM webhooks WHERE workspace_id = $1 AND namespace = $2)",
            "DELETE FROM events WHERE workspace_id = $1 AND namespace = $2",
            "DELETE FROM audit WHERE workspace_id = $1 AND namespace = $2",
            "DELETE FROM webhooks WHERE workspace_id = $1 AND namespace = $2",
        ] {
            sqlx::query(sql)
                .bind(ws.as_str())
                .bind(ns.as_str())
                .execute(&mut *tx)
                .await?;
        }
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(true)
    }
}
