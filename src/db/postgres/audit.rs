//! AuditLog on PostgreSQL.

use super::*;

#[async_trait]
impl AuditLog for PgStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        // One statement per batch (the writer hands over up to a few hundred at a time).
        for chunk in records.chunks(5000) {
            sqlx::query(
                "INSERT INTO audit (workspace_id, key_id, namespace, operation, path, status,
                   created_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::integer[], $7::bigint[])",
            )
            .bind(
                chunk
                    .iter()
                    .map(|r| r.workspace.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.key_id.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.namespace.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|r| r.operation.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.path.as_deref()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| i32::from(r.status))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.created_at.0).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
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
             WHERE workspace_id = $1
               AND ($2::text IS NULL OR key_id = $2)
               AND ($3::text IS NULL OR namespace = $3)
               AND ($4::text IS NULL OR operation = $4)
               AND ($5::bigint IS NULL OR created_at >= $5)
               AND ($6::bigint IS NULL OR created_at < $6)
               AND ($7::bigint IS NULL OR seq {cmp} $7)
             ORDER BY seq {order} LIMIT $8"
        );
        let rows = sqlx::query(&sql)
            .bind(q.workspace.as_str())
            .bind(&q.key_id)
            .bind(&q.namespace)
            .bind(&q.operation)
            .bind(q.from.map(|t| t.0))
            .bind(q.to.map(|t| t.0))
            .bind(q.cursor.map(AuditPos::raw))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    seq: AuditPos::from_raw(row.try_get("seq")?),
                    workspace: WorkspaceId::parse(row.try_get("workspace_id")?)?,
                    key_id: row.try_get("key_id")?,
                    namespace: row.try_get("namespace")?,
                    operation: row.try_get("operation")?,
                    path: row.try_get("path")?,
                    status: row.try_get::<i32, _>("status")? as u16,
                    created_at: Micros(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn sweep_log(&self, cutoff: Micros, batch: u32) -> Result<Swept> {
        let mut tx = self.begin().await?;
        let old_events = "SELECT seq FROM events WHERE created_at < $1 ORDER BY seq LIMIT $2";
        // Deliveries still pending keep their event: they are not done yet.
        let deliveries = sqlx::query(&format!(
            "DELETE FROM deliveries WHERE state <> 'pending' AND event_seq IN ({old_events})"
        ))
        .bind(cutoff.0)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(&format!(
            "DELETE FROM events e WHERE seq IN ({old_events})
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)"
        ))
        .bind(cutoff.0)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let audit = sqlx::query(
            "DELETE FROM audit WHERE seq IN
               (SELECT seq FROM audit WHERE created_at < $1 ORDER BY seq LIMIT $2)",
        )
        .bind(cutoff.0)
        .bind(i64::from(batch))
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
        let count = async |sql: &'static str| {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(cutoff.0)
                .fetch_one(&self.pool)
                .await
        };
        let deliveries = count(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE e.created_at < $1 AND d.state <> 'pending'",
        )
        .await?;
        let events = count(
            "SELECT COUNT(*) FROM events e WHERE e.created_at < $1 AND NOT EXISTS
               (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending')",
        )
        .await?;
        let audit = count("SELECT COUNT(*) FROM audit WHERE created_at < $1").await?;
        Ok(Swept {
            events: events as u64,
            deliveries: deliveries as u64,
            audit: audit as u64,
        })
    }
}
