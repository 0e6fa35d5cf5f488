//! Workspaces on SQLite.

use super::*;

#[async_trait]
impl Workspaces for SqliteStore {
    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *self.reader.get().await?)
                .await?,
        )
    }

    async fn ensure_default_workspace(
        &self,
        candidate: &WorkspaceId,
        name: &str,
        now: Micros,
    ) -> Result<(WorkspaceId, bool)> {
        let mut conn = self.writer.get().await?;
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'default_workspace'")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(ws) = existing {
            let ws = WorkspaceId::parse(&ws)?;
            return Ok((ws, false));
        }
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)")
            .bind(candidate.as_str())
            .bind(name)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO settings (name, value) VALUES ('default_workspace', ?)")
            .bind(candidate.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((candidate.clone(), true))
    }
}
