//! KeyStore on SQLite.

use super::*;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &NewKey, event: &NewEvent) -> Result<()> {
        let r = &key.record;
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, hash, scope, namespace, created_at,
               bootstrap)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.as_str())
        .bind(r.workspace.as_str())
        .bind(&r.name)
        .bind(&r.prefix)
        .bind(&key.hash[..])
        .bind(r.scope.as_str())
        .bind(r.namespace.as_ref().map(|n| n.as_str()))
        .bind(r.created_at.0)
        .bind(r.bootstrap)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(KeyRecord, [u8; 32])>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE hash = ? AND revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(&hash[..])
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref()
            .map(|r| Ok((key_from_row(r)?, hash_from_row(r)?)))
            .transpose()
    }

    async fn list_keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ? AND revoked_at IS NULL
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        event: &NewEvent,
    ) -> Result<Option<[u8; 32]>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?
             WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL RETURNING hash",
        )
        .bind(now().0)
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash = hash_from_row(&row)?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(Some(hash))
    }

    async fn rotate_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        new_hash: &[u8; 32],
        new_prefix: &str,
        event: &NewEvent,
    ) -> Result<Option<([u8; 32], KeyRecord)>> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let old = sqlx::query(
            "SELECT hash FROM api_keys WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(old) = old else {
            return Ok(None);
        };
        let old_hash = hash_from_row(&old)?;
        let sql = format!(
            "UPDATE api_keys SET hash = ?, prefix = ?, last_used_at = NULL
             WHERE workspace_id = ? AND id = ? RETURNING {KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new_hash[..])
            .bind(new_prefix)
            .bind(ws.as_str())
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let record = key_from_row(&row)?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(Some((old_hash, record)))
    }

    async fn touch_key(&self, id: &KeyId, at: Micros) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(at.0)
            .bind(id.as_str())
            .execute(&mut *self.writer.get().await?)
            .await?;
        Ok(())
    }
}
