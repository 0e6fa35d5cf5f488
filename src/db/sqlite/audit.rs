//! AuditLog on SQLite.

use super::*;

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        let mut conn = self.writer.get().await?;
        let mut b = Batch::new().one_off();
        for r in records {
            b.push(
                "INSERT INTO audit (workspace_id, key_id, namespace, operation, path, status, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.workspace.as_str())
            .bind(r.key_id.as_str())
            .bind(r.namespace.as_deref())
            .bind(r.operation.as_str())
            .bind(r.path.as_deref())
            .bind(i64::from(r.status))
            .bind(r.created_at.0);
            b = flush_if_full(&mut conn, b).await?;
        }
        conn.batch(b).await?;
        conn.commit().await
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let (cmp, order) = if q.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let sql = format!(
            "SELECT seq, workspace_id, key_id, namespace, operation, path, status, created_at
             FROM audit
             WHERE workspace_id = ?1
               AND (?2 IS NULL OR key_id = ?2)
               AND (?3 IS NULL OR namespace = ?3)
               AND (?4 IS NULL OR operation = ?4)
               AND (?5 IS NULL OR created_at >= ?5)
               AND (?6 IS NULL OR created_at < ?6)
               AND (?7 IS NULL OR seq {cmp} ?7)
             ORDER BY seq {order} LIMIT ?8"
        );
        let rows = sqlx::query(&sql)
            .bind(q.workspace.as_str())
            .bind(&q.key_id)
            .bind(&q.namespace)
            .bind(&q.operation)
            .bind(q.from.map(|t| t.0))
            .bind(q.to.map(|t| t.0))
            .bind(q.cursor.map(AuditPos::raw))
            .bind(q.limit as i64)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let ws: String = row.try_get("workspace_id")?;
                Ok(AuditRecord {
                    seq: AuditPos::from_raw(row.try_get("seq")?),
                    workspace: WorkspaceId::parse(&ws)?,
                    key_id: row.try_get("key_id")?,
                    namespace: row.try_get("namespace")?,
                    operation: row.try_get("operation")?,
                    path: row.try_get("path")?,
                    status: row.try_get::<i64, _>("status")? as u16,
                    created_at: Micros(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn sweep_log(&self, cutoff: Micros, batch: u32) -> Result<Swept> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let old_events = "SELECT seq FROM events WHERE created_at < ?1 ORDER BY seq LIMIT ?2";
        // Deliveries still pending keep their event: they are not done yet.
        let deliveries = sqlx::query(&format!(
            "DELETE FROM deliveries WHERE state <> 'pending' AND event_seq IN ({old_events})"
        ))
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(&format!(
            "DELETE FROM events WHERE seq IN ({old_events})
               AND seq NOT IN (SELECT event_seq FROM deliveries)"
        ))
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let audit = sqlx::query(
            "DELETE FROM audit WHERE seq IN
               (SELECT seq FROM audit WHERE created_at < ?1 ORDER BY seq LIMIT ?2)",
        )
        .bind(cutoff.0)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Swept {
            events,
            deliveries,
            audit,
        })
    }

    async fn count_log(&self, cutoff: Micros) -> Result<Swept> {
        let mut conn = self.reader.get().await?;
        let mut count = async |sql: &'static str| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(cutoff.0)
                .fetch_one(&mut *conn)
                .await
        };
        let deliveries = count(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE e.created_at < ?1 AND d.state <> 'pending'",
        )
        .await?;
        let events = count(
            "SELECT COUNT(*) FROM events e WHERE e.created_at < ?1 AND NOT EXISTS
               (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending')",
        )
        .await?;
        let audit = count("SELECT COUNT(*) FROM audit WHERE created_at < ?1").await?;
        Ok(Swept {
            events: events as u64,
            deliveries: deliveries as u64,
            audit: audit as u64,
        })
    }
}
