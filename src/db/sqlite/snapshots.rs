//! SnapshotCatalog on SQLite.

use super::*;

#[async_trait]
impl SnapshotCatalog for SqliteStore {
    async fn insert_snapshot(&self, snap: &SnapshotRecord, event: &NewEvent) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        // The namespace exists from its first snapshot on (it may hold no file yet); a deleted
        // one takes no snapshot.
        sqlx::query(
            "INSERT INTO namespaces (workspace_id, name, generation, created_at) VALUES (?, ?, 0, ?)
             ON CONFLICT (workspace_id, name) DO UPDATE SET
               state = 'active', deleted_at = NULL, purged_at = NULL
             WHERE state = 'purged'",
        )
        .bind(snap.workspace.as_str())
        .bind(snap.namespace.as_str())
        .bind(snap.created_at.0)
        .execute(&mut *tx)
        .await?;
        let state: String =
            sqlx::query_scalar("SELECT state FROM namespaces WHERE workspace_id = ? AND name = ?")
                .bind(snap.workspace.as_str())
                .bind(snap.namespace.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if state != "active" {
            return Err(Error::NamespaceDeleted(snap.namespace.to_string()));
        }
        sqlx::query(
            "INSERT INTO snapshots (id, workspace_id, namespace, label, size_bytes, file_count,
               key_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    async fn list_snapshots(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE workspace_id = ? AND namespace = ?
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn get_snapshot(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let row = sqlx::query(
            "SELECT * FROM snapshots WHERE id = ? AND workspace_id = ? AND namespace = ?",
        )
        .bind(id.as_str())
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *self.reader.get().await?)
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
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let n = sqlx::query(
            "DELETE FROM snapshots WHERE id = ? AND workspace_id = ? AND namespace = ?",
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
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(true)
    }

    async fn expired_snapshots(&self, now: Micros, limit: u32) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now.0)
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }
}
