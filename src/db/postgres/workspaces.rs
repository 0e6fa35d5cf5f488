//! Workspaces on PostgreSQL.

use super::*;

/// The advisory lock that serializes bootstrap across servers starting at once.
const BOOTSTRAP_LOCK: i64 = 0x5741_5252_454e_0001;

#[async_trait]
impl Workspaces for PgStore {
    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn ensure_default_workspace(
        &self,
        candidate: &WorkspaceId,
        name: &str,
        now: Micros,
    ) -> Result<(WorkspaceId, bool)> {
        let mut tx = self.begin().await?;
        // Held to the end of the transaction: a second server starting at the same moment
        // waits here, then finds this one's default.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK)
            .execute(&mut *tx)
            .await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'default_workspace'")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(ws) = existing {
            return Ok((WorkspaceId::parse(&ws)?, false));
        }
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(candidate.as_str())
            .bind(name)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO settings (name, value) VALUES ('default_workspace', $1)")
            .bind(candidate.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((candidate.clone(), true))
    }
}
