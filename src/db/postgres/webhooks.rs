//! WebhookOutbox on PostgreSQL. Claims lock the subscriptions they take from with `SKIP
//! LOCKED`, so workers on several nodes divide the outbox between them, and mark them busy
//! until the lease ends, so a claimer that waited for a subscription re-reads the mark and
//! leaves it alone.

use super::*;

#[async_trait]
impl WebhookOutbox for PgStore {
    async fn insert_webhook(&self, hook: &Webhook, event: &NewEvent) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, workspace_id, url, events, namespace, description, secret,
               enabled, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&hook.id)
        .bind(hook.workspace.as_str())
        .bind(&hook.url)
        .bind(&hook.events)
        .bind(hook.namespace.as_ref().map(|n| n.as_str()))
        .bind(&hook.description)
        .bind(&hook.secret)
        .bind(hook.enabled)
        .bind(hook.created_at.0)
        .execute(&mut *tx)
        .await?;
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await
    }

    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Option<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn delete_webhook(&self, ws: &WorkspaceId, id: &str, event: &NewEvent) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = warren_now()
             WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
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
            "UPDATE deliveries SET state = 'failed', last_error = 'subscription deleted',
               lease_token = NULL, updated_at = warren_now()
             WHERE webhook_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        lease: std::time::Duration,
        limit: u32,
        per_webhook: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let token = LeaseToken::random();
        let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        let now = db_now(&mut tx).await?;
        let until = now.0.saturating_add(lease_micros);
        // Subscriptions with due deliveries and nothing in flight, locked (skipping those
        // another claimer holds); from each, up to `per_webhook` due deliveries, oldest first.
        let claimed: Vec<(i64, String, i64, i32)> = sqlx::query_as(
            "WITH hooks AS (
               SELECT w.id FROM webhooks w
               WHERE (w.busy_until IS NULL OR w.busy_until < $1)
                 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id
                               AND d.state = 'pending' AND d.next_attempt_at <= $1)
               ORDER BY w.id
               FOR UPDATE SKIP LOCKED
             ), due AS (
               SELECT d.id FROM hooks CROSS JOIN LATERAL (
                 SELECT id FROM deliveries d
                 WHERE d.webhook_id = hooks.id AND d.state = 'pending'
                   AND d.next_attempt_at <= $1
                   AND (d.locked_until IS NULL OR d.locked_until < $1)
                 ORDER BY id LIMIT $4
                 FOR UPDATE SKIP LOCKED) d
               ORDER BY d.id LIMIT $3
             )
             UPDATE deliveries SET locked_until = $2, lease_token = $5
             WHERE id IN (SELECT id FROM due)
             RETURNING id, webhook_id, event_seq, attempts",
        )
        .bind(now.0)
        .bind(until)
        .bind(i64::from(limit))
        .bind(i64::from(per_webhook))
        .bind(token.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut hooks: Vec<&str> = claimed.iter().map(|(_, w, _, _)| w.as_str()).collect();
        hooks.sort_unstable();
        hooks.dedup();
        sqlx::query("UPDATE webhooks SET busy_until = $1 WHERE id = ANY ($2::text[])")
            .bind(until)
            .bind(&hooks)
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ANY ($1::text[])");
        let rows = sqlx::query(&sql).bind(&hooks).fetch_all(&mut *tx).await?;
        let mut webhooks = std::collections::HashMap::new();
        for row in &rows {
            let hook = webhook_from_row(row)?;
            webhooks.insert(hook.id.clone(), hook);
        }
        let seqs: Vec<i64> = claimed.iter().map(|(_, _, s, _)| *s).collect();
        let sql = format!("SELECT seq, {EVENT_COLUMNS} FROM events WHERE seq = ANY ($1::bigint[])");
        let rows = sqlx::query(&sql).bind(&seqs).fetch_all(&mut *tx).await?;
        let mut events = std::collections::HashMap::new();
        for row in &rows {
            events.insert(row.try_get::<i64, _>("seq")?, event_from_row(row)?);
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, webhook_id, seq, attempts) in claimed {
            let (Some(webhook), Some(event)) = (webhooks.get(&webhook_id), events.get(&seq)) else {
                return Err(Error::Corrupt(format!(
                    "delivery {id} lost its subscription or event"
                )));
            };
            out.push(ClaimedDelivery {
                id,
                lease: token.clone(),
                webhook: webhook.clone(),
                event: event.clone(),
                attempts: attempts as u32,
            });
        }
        out.sort_by_key(|d| d.id);
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
        let retry_after = r
            .retry_after
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut tx = self.begin().await?;
        let webhook_id: Option<String> = sqlx::query_scalar(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, locked_until = NULL,
               lease_token = NULL,
               next_attempt_at = COALESCE(warren_now() + $2, next_attempt_at),
               last_status = $3, last_error = $4, updated_at = warren_now()
             WHERE id = $5 AND lease_token = $6 AND state = 'pending' RETURNING webhook_id",
        )
        .bind(state)
        .bind(retry_after)
        .bind(r.status.map(i32::from))
        .bind(&r.error)
        .bind(delivery_id)
        .bind(lease.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(webhook_id) = webhook_id else {
            return Ok(false);
        };
        record_result(&mut tx, &webhook_id, r).await?;
        // The subscription is free once none of its deliveries is leased any more.
        sqlx::query(
            "UPDATE webhooks SET busy_until = NULL
             WHERE id = $1 AND NOT EXISTS (
               SELECT 1 FROM deliveries d WHERE d.webhook_id = $1 AND d.state = 'pending'
                 AND d.lease_token IS NOT NULL AND d.locked_until >= warren_now())",
        )
        .bind(&webhook_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_webhook_result(&self, webhook_id: &str, r: &AttemptResult) -> Result<()> {
        let mut tx = self.begin().await?;
        record_result(&mut tx, webhook_id, r).await?;
        tx.commit().await?;
        Ok(())
    }
}
