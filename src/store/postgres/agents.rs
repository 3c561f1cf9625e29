//! Agents of pulled work and their hashed tokens.

use super::super::model::{AgentRecord, AGENT_COLUMNS};
use super::super::{now_ms, StoreResult};
use super::Db;

impl Db {
    pub async fn add_agent(&self, name: &str, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO agents (name, token_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,
                 created_at = excluded.created_at, revoked_at = NULL, last_seen_at = NULL
             WHERE agents.revoked_at IS NOT NULL",
        )
        .bind(name)
        .bind(token_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn revoke_agent(&self, name: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE agents SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn agents(&self) -> StoreResult<Vec<AgentRecord>> {
        Ok(
            sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn agent_seen(&self, token_hash: &str) -> StoreResult<Option<AgentRecord>> {
        let found: Option<AgentRecord> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(a) = &found {
            sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE name = $2")
                .bind(now_ms())
                .bind(&a.name)
                .execute(&self.pool)
                .await?;
        }
        Ok(found)
    }
}
