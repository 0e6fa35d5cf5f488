//! SnapshotCatalog on PostgreSQL.

use super::*;

const SNAPSHOT_COLUMNS: &str =
    "id, workspace_id, namespace, label, size_bytes, file_count, key_id, created_at, expires_at";

#[async_trait]
impl SnapshotCatalog for PgStore {
    async fn insert_snapshot(&self, snap: &SnapshotRecord, event: &NewEvent) -> Result<()> {
        let mut tx = self.begin().await?;
        // The namespace exists from its first snapshot on (it may hold no file yet); a deleted
        // one takes no snapshot. The row stays locked, so a deletion waits for this commit.
        sqlx::query(
            "INSERT INTO namespaces AS n (workspace_id, name, generation, created_at)
             VALUES ($1, $2, 0, $3)
             ON CONFLICT (workspace_id, name) DO UPDATE SET
               state = 'active', deleted_at = NULL, purged_at = NULL
             WHERE n.state = 'purged'",
        )
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .bind(snap.created_at.0)
        .execute(&mut *tx)
        .await?;
        let state: String = sqlx::query_scalar(
            "SELECT state FROM namespaces WHERE workspace_id = $1 AND name = $2 FOR SHARE",
        )
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if state != "active" {
            return Err(Error::NamespaceDeleted(snap.namespace.to_string()));
        }
        sqlx::query(
            "INSERT INTO snapshots (id, workspace_id, namespace, label, size_bytes, file_count,
               key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(snap.id.as_str())
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .bind(&snap.label)
        .bind(snap.size_bytes as i64)
        .bind(snap.file_count as i64)
        .bind(&snap.key_id)
        .bind(snap.created_at.0)
        .bind(snap.expires_at.0)
        .execute(&mut *tx)
        .await?;
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await
    }

    async fn list_snapshots(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE workspace_id = $1 AND namespace = $2
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn get_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots
             WHERE id = $1 AND workspace_id = $2 AND namespace = $3"
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .bind(ws.as_str())
            .bind(ns.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn delete_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "DELETE FROM snapshots WHERE id = $1 AND workspace_id = $2 AND namespace = $3",
        )
        .bind(id.as_str())
        .bind(ws.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(true)
    }

    async fn expired_snapshots(&self, now: Micros, limit: u32) -> Result<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE expires_at <= $1
             ORDER BY expires_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_from_row).collect()
    }
}
