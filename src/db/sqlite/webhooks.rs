//! WebhookOutbox on SQLite.

use super::*;

#[async_trait]
impl WebhookOutbox for SqliteStore {
    async fn insert_webhook(&self, hook: &Webhook, event: &NewEvent) -> Result<()> {
        let events =
            serde_json::to_string(&hook.events).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        sqlx::query(
            "INSERT INTO webhooks (id, workspace_id, url, events, namespace, description, secret, enabled, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&hook.id)
        .bind(hook.workspace.as_str())
        .bind(&hook.url)
        .bind(events)
        .bind(hook.namespace.as_ref().map(|n| n.as_str()))
        .bind(&hook.description)
        .bind(&hook.secret)
        .bind(hook.enabled as i64)
        .bind(hook.created_at.0)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w
             WHERE w.workspace_id = ? AND w.deleted_at IS NULL ORDER BY w.created_at, w.id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
            .fetch_one(&mut *self.reader.get().await?)
            .await?;
        Ok(n as u64)
    }

    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Option<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w
             WHERE w.workspace_id = ? AND w.id = ? AND w.deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(id)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn delete_webhook(&self, ws: &WorkspaceId, id: &str, event: &NewEvent) -> Result<bool> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = ? WHERE workspace_id = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(now().0)
        .bind(ws.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', last_error = 'subscription deleted', updated_at = ?
             WHERE webhook_id = ? AND state = 'pending'",
        )
        .bind(now().0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event).await?;
        tx.commit().await?;
        self.committed();
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        lease: std::time::Duration,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let now = now();
        let lease_until = Micros(now.0.saturating_add(lease.as_micros() as i64));
        let token = LeaseToken::random();
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let claimed: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "UPDATE deliveries SET locked_until = ?2, lease_token = ?5
             WHERE id IN (
               SELECT id FROM (
                 SELECT d.id, ROW_NUMBER() OVER (PARTITION BY d.webhook_id ORDER BY d.id) AS n
                 FROM deliveries d
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
                   AND (d.locked_until IS NULL OR d.locked_until < ?1)
                   AND NOT EXISTS (
                     SELECT 1 FROM deliveries busy
                     WHERE busy.webhook_id = d.webhook_id AND busy.state = 'pending'
                       AND busy.locked_until >= ?1)
               ) WHERE n <= ?4
               ORDER BY id LIMIT ?3)
             RETURNING id, webhook_id, event_seq, attempts",
        )
        .bind(now.0)
        .bind(lease_until.0)
        .bind(limit as i64)
        .bind(per_webhook as i64)
        .bind(token.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, webhook_id, seq, attempts) in claimed {
            let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = ?");
            let hook = sqlx::query(&sql)
                .bind(&webhook_id)
                .fetch_one(&mut *tx)
                .await?;
            let ev = sqlx::query(
                "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data
                 FROM events WHERE seq = ?",
            )
            .bind(seq)
            .fetch_one(&mut *tx)
            .await?;
            out.push(ClaimedDelivery {
                id,
                lease: token.clone(),
                webhook: webhook_from_row(&hook)?,
                event: event_from_row(&ev)?,
                attempts: attempts as u32,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn finish_delivery(
        &self,
        delivery_id: i64,
        lease: &LeaseToken,
        r: &AttemptResult,
    ) -> Result<bool> {
        let state = match (r.ok, r.retry_after) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        let now = now();
        let retry_at = r
            .retry_after
            .map(|d| now.0.saturating_add(d.as_micros() as i64));
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let webhook_id: Option<String> = sqlx::query_scalar(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, locked_until = NULL,
               lease_token = NULL, next_attempt_at = COALESCE(?, next_attempt_at),
               last_status = ?, last_error = ?, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'pending' RETURNING webhook_id",
        )
        .bind(state)
        .bind(retry_at)
        .bind(r.status.map(i64::from))
        .bind(&r.error)
        .bind(now.0)
        .bind(delivery_id)
        .bind(lease.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(webhook_id) = webhook_id else {
            return Ok(false);
        };
        record_result(&mut tx, &webhook_id, r).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_webhook_result(&self, webhook_id: &str, r: &AttemptResult) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        record_result(&mut tx, webhook_id, r).await?;
        tx.commit().await?;
        Ok(())
    }
}
