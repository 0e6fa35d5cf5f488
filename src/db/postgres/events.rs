//! EventLog on PostgreSQL: positions are per-workspace `pos`, dense and in commit order (see
//! `event_heads`), so paging and polling by position or time need nothing more.

use super::*;

#[async_trait]
impl EventLog for PgStore {
    async fn query_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE workspace_id = $1
               AND ($2::text IS NULL OR namespace = $2)
               AND (cardinality($3::text[]) = 0 OR type = ANY ($3))
               AND NOT (type = ANY ($4::text[]))
               AND ($5::bigint IS NULL OR created_at > $5)
               AND ($6::bigint IS NULL OR pos < $6)
             ORDER BY pos DESC LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(q.workspace.as_str())
            .bind(q.namespace.as_ref().map(|n| n.as_str()))
            .bind(&q.types)
            .bind(q.hidden_types)
            .bind(q.since.map(|t| t.0))
            .bind(q.before_seq.map(LogPos::raw))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        ws: &WorkspaceId,
        namespace: Option<&Namespace>,
        after: LogPos,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE workspace_id = $1 AND pos > $2 AND ($3::text IS NULL OR namespace = $3)
             ORDER BY pos LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(after.raw())
            .bind(namespace.map(|n| n.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_seq(&self, ws: &WorkspaceId) -> Result<LogPos> {
        // The committed head, not MAX(pos): swept events leave the head where it was.
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT pos FROM event_heads WHERE workspace_id = $1")
                .bind(ws.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(pos.map_or(LogPos::START, LogPos::from_raw))
    }

    fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }
}
