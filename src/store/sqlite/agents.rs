//! Agents of pulled work and their hashed tokens.

use super::super::model::{AgentRecord, AGENT_COLUMNS};
use super::super::{now_ms, StoreResult};
use super::Db;

impl Db {
    pub async fn add_agent(&self, name: &str, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO agents (name, token_hash, created_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,
                 created_at = excluded.created_at, revoked_at = NULL, last_seen_at = NULL
             WHERE agents.revoked_at IS NOT NULL",
        )
        .bind(name)
        .bind(token_hash)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn revoke_agent(&self, name: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE agents SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(name)
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn agents(&self) -> StoreResult<Vec<AgentRecord>> {
        Ok(
            sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn agent_seen(&self, token_hash: &str) -> StoreResult<Option<AgentRecord>> {
        let found: Option<AgentRecord> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = ? AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        if let Some(a) = &found {
            sqlx::query("UPDATE agents SET last_seen_at = ? WHERE name = ?")
                .bind(now_ms())
                .bind(&a.name)
                .execute(&self.write)
                .await?;
        }
        Ok(found)
    }
}
