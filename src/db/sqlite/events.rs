//! EventLog on SQLite.

use super::*;

#[async_trait]
impl EventLog for SqliteStore {
    async fn query_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        let mut sql = String::from(
            "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data FROM events
             WHERE workspace_id = ?",
        );
        if q.namespace.is_some() {
            sql.push_str(" AND namespace = ?");
        }
        if !q.types.is_empty() {
            let marks = vec!["?"; q.types.len()].join(", ");
            sql.push_str(&format!(" AND type IN ({marks})"));
        }
        if !q.hidden_types.is_empty() {
            let marks = vec!["?"; q.hidden_types.len()].join(", ");
            sql.push_str(&format!(" AND type NOT IN ({marks})"));
        }
        if q.since.is_some() {
            sql.push_str(" AND created_at > ?");
        }
        if q.before_seq.is_some() {
            sql.push_str(" AND seq < ?");
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        let mut query = sqlx::query(&sql).bind(q.workspace.as_str());
        if let Some(ns) = &q.namespace {
            query = query.bind(ns.as_str());
        }
        for t in &q.types {
            query = query.bind(t.as_str());
        }
        for t in q.hidden_types {
            query = query.bind(*t);
        }
        if let Some(since) = q.since {
            query = query.bind(since.0);
        }
        if let Some(seq) = q.before_seq {
            query = query.bind(seq.raw());
        }
        let rows = query
            .bind(q.limit as i64)
            .fetch_all(&mut *self.reader.get().await?)
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
        let rows = sqlx::query(
            "SELECT seq, id, type, workspace_id, namespace, key_id, created_at, data FROM events
             WHERE workspace_id = ?1 AND seq > ?2 AND (?3 IS NULL OR namespace = ?3)
             ORDER BY seq LIMIT ?4",
        )
        .bind(ws.as_str())
        .bind(after.raw())
        .bind(namespace.map(|n| n.as_str()))
        .bind(limit as i64)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_seq(&self, ws: &WorkspaceId) -> Result<LogPos> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE workspace_id = ?")
                .bind(ws.as_str())
                .fetch_one(&mut *self.reader.get().await?)
                .await?;
        Ok(seq.map_or(LogPos::START, LogPos::from_raw))
    }

    fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }
}
