//! DeviceLogins on PostgreSQL.

use super::*;
use crate::db::rows::{self, DeviceRow};
use crate::db::{DeviceDecision, DeviceLogins, DevicePoll, NewDeviceLogin};

#[async_trait]
impl DeviceLogins for PgStore {
    async fn insert_device_login(&self, login: &NewDeviceLogin) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO device_logins (device_hash, user_hash, state, created_at, expires_at)
             VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&login.device_hash[..])
        .bind(&login.user_hash[..])
        .bind(login.created_at.0)
        .bind(login.expires_at.0)
        .execute(&self.pool)
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
             WHERE user_hash = $1 AND state = 'pending' AND expires_at > $2",
        )
        .bind(&user_hash[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
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
             SET state = $1, workspace_id = $2, namespace = $3, key_name = $4, approved_by = $5
             WHERE user_hash = $6 AND state = 'pending' AND expires_at > $7",
        )
        .bind(state)
        .bind(a.map(|a| a.workspace.as_str()))
        .bind(a.and_then(|a| a.namespace.as_deref()))
        .bind(a.map(|a| a.key_name.as_str()))
        .bind(a.map(|a| a.approved_by.as_str()))
        .bind(&user_hash[..])
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn poll_device_login(&self, device_hash: &[u8; 32], now: Micros) -> Result<DevicePoll> {
        // One statement reads the login and, if approved, spends it; a second poll waits on
        // the row lock and then finds it spent.
        let row: Option<DeviceRow> = sqlx::query_as(
            "WITH found AS (
               SELECT device_hash, state, workspace_id, namespace, key_name, approved_by
               FROM device_logins WHERE device_hash = $1 AND expires_at > $2 FOR UPDATE
             ), spent AS (
               UPDATE device_logins d SET state = 'spent'
               FROM found WHERE d.device_hash = found.device_hash AND found.state = 'approved'
             )
             SELECT state, workspace_id, namespace, key_name, approved_by FROM found",
        )
        .bind(&device_hash[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(rows::device_poll(row))
    }

    async fn count_pending_device_logins(&self, now: Micros) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_logins WHERE state = 'pending' AND expires_at > $1",
        )
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn sweep_device_logins(&self, cutoff: Micros) -> Result<u64> {
        let done = sqlx::query("DELETE FROM device_logins WHERE expires_at < $1")
            .bind(cutoff.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
