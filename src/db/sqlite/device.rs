//! DeviceLogins on SQLite.

use super::*;
use crate::db::rows::{self, DEVICE_COLUMNS, DeviceRow};
use crate::db::{DeviceDecision, DeviceLogins, DevicePoll, NewDeviceLogin};

#[async_trait]
impl DeviceLogins for SqliteStore {
    async fn insert_device_login(&self, login: &NewDeviceLogin) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO device_logins (device_hash, user_hash, state, created_at, expires_at)
             VALUES (?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&login.device_hash[..])
        .bind(&login.user_hash[..])
        .bind(login.created_at.0)
        .bind(login.expires_at.0)
        .execute(&mut *self.writer.get().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_device_login(
        &self,
        user_hash: &[u8; 32],
        now: Micros,
    ) -> Result<Option<Micros>> {
        let expires: Option<i64> = sqlx::query_scalar(
            "SELECT expires_at FROM device_logins
             WHERE user_hash = ? AND state = 'pending' AND expires_at > ?",
        )
        .bind(&user_hash[..])
        .bind(now.0)
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        Ok(expires.map(Micros))
    }

    async fn decide_device_login(
        &self,
        user_hash: &[u8; 32],
        decision: &DeviceDecision,
        now: Micros,
    ) -> Result<bool> {
        let (state, a) = match decision {
            DeviceDecision::Approve(a) => ("approved", Some(a)),
            DeviceDecision::Deny => ("denied", None),
        };
        let done = sqlx::query(
            "UPDATE device_logins
             SET state = ?, workspace_id = ?, namespace = ?, key_name = ?, approved_by = ?
             WHERE user_hash = ? AND state = 'pending' AND expires_at > ?",
        )
        .bind(state)
        .bind(a.map(|a| a.workspace.as_str()))
        .bind(a.and_then(|a| a.namespace.as_deref()))
        .bind(a.map(|a| a.key_name.as_str()))
        .bind(a.map(|a| a.approved_by.as_str()))
        .bind(&user_hash[..])
        .bind(now.0)
        .execute(&mut *self.writer.get().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn poll_device_login(&self, device_hash: &[u8; 32], now: Micros) -> Result<DevicePoll> {
        let mut conn = self.writer.get().await?;
        // Read and spent in one write transaction: two polls cannot both take the approval.
        let mut tx = conn.begin_with(WRITE_TX).await?;
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM device_logins WHERE device_hash = ? AND expires_at > ?"
        ))
        .bind(&device_hash[..])
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let poll = rows::device_poll(row);
        if matches!(poll, DevicePoll::Approved { .. }) {
            sqlx::query("UPDATE device_logins SET state = 'spent' WHERE device_hash = ?")
                .bind(&device_hash[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(poll)
    }

    async fn count_pending_device_logins(&self, now: Micros) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_logins WHERE state = 'pending' AND expires_at > ?",
        )
        .bind(now.0)
        .fetch_one(&mut *self.reader.get().await?)
        .await?;
        Ok(n as u64)
    }

    async fn sweep_device_logins(&self, cutoff: Micros) -> Result<u64> {
        let done = sqlx::query("DELETE FROM device_logins WHERE expires_at < ?")
            .bind(cutoff.0)
            .execute(&mut *self.writer.get().await?)
            .await?;
        Ok(done.rows_affected())
    }
}
