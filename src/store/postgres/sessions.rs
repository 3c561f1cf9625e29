//! Signed-out run-page sessions.

use super::super::{now_ms, StoreResult};
use super::Db;

impl Db {
    pub async fn end_session(&self, id: &str, until: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM ended_sessions WHERE until < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO ended_sessions (id, until) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session_ended(&self, id: &str) -> StoreResult<bool> {
        let found: Option<(i64,)> =
            sqlx::query_as("SELECT until FROM ended_sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    pub async fn record_refresh(&self, refresh_hash: &str, sealed: &str) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM session_refreshes WHERE at < $1")
            .bind(now - 300_000)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO session_refreshes (refresh_hash, sealed, at) VALUES ($1, $2, $3)
             ON CONFLICT (refresh_hash) DO NOTHING",
        )
        .bind(refresh_hash)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn refreshed(&self, refresh_hash: &str, since: i64) -> StoreResult<Option<String>> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT sealed FROM session_refreshes WHERE refresh_hash = $1 AND at >= $2",
        )
        .bind(refresh_hash)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(|(s,)| s))
    }
}
