//! Signed-out run-page sessions.

use super::super::{now_ms, StoreResult};
use super::Db;

impl Db {
    pub async fn end_session(&self, id: &str, until: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM ended_sessions WHERE until < ?")
            .bind(now_ms())
            .execute(&self.write)
            .await?;
        sqlx::query(
            "INSERT INTO ended_sessions (id, until) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(until)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn session_ended(&self, id: &str) -> StoreResult<bool> {
        let found: Option<(i64,)> = sqlx::query_as("SELECT until FROM ended_sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(found.is_some())
    }
}
