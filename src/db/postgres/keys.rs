//! KeyStore on PostgreSQL.

use super::*;

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, key: &NewKey, event: &NewEvent) -> Result<()> {
        let r = &key.record;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, hash, scope, namespace,
               created_at, bootstrap)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(KeyRecord, [u8; 32])>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| Ok((key_from_row(r)?, hash32(r.try_get("hash")?)?)))
            .transpose()
    }

    async fn list_keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        event: &NewEvent,
    ) -> Result<Option<[u8; 32]>> {
        let mut tx = self.begin().await?;
        let hash: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = warren_now()
             WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING hash",
        )
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(hash) = hash else {
            return Ok(None);
        };
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(Some(hash32(hash)?))
    }

    async fn rotate_key(
        &self,
        ws: &WorkspaceId,
        id: &KeyId,
        new_hash: &[u8; 32],
        new_prefix: &str,
        event: &NewEvent,
    ) -> Result<Option<([u8; 32], KeyRecord)>> {
        let mut tx = self.begin().await?;
        // Locked, so a concurrent rotation or revocation of the same key waits for this one.
        let old: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT hash FROM api_keys WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL
             FOR UPDATE",
        )
        .bind(ws.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(old) = old else {
            return Ok(None);
        };
        let sql = format!(
            "UPDATE api_keys SET hash = $1, prefix = $2, last_used_at = NULL
             WHERE workspace_id = $3 AND id = $4 RETURNING {KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new_hash[..])
            .bind(new_prefix)
            .bind(ws.as_str())
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let record = key_from_row(&row)?;
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(Some((hash32(old)?, record)))
    }

    async fn touch_key(&self, id: &KeyId, at: Micros) -> Result<()> {
        // Nodes touch keys concurrently: the newest use wins whatever order they land in.
        sqlx::query("UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $1) WHERE id = $2")
            .bind(at.0)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
