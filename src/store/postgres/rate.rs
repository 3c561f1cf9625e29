//! The shared rate ledger on Postgres ([`crate::github::RateLedger`]): an installation's write
//! turn is a session advisory lock, and GitHub's waits are rows of `rate_pauses`.

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::github::{RateLedger, WriteTurn};

/// The first key of write-turn advisory locks ("spkh"); the second is the installation.
const TURN_CLASS: i32 = 0x7370_6b68;

pub(in crate::store) struct PgRateLedger {
    pub pool: PgPool,
}

fn turn_key(installation: u64) -> i32 {
    (installation & 0x7fff_ffff) as i32
}

/// A held advisory lock: unlocked on drop (and its connection closed if that fails, which
/// ends the session and so the lock).
struct HeldTurn {
    conn: Option<PoolConnection<Postgres>>,
    key: i32,
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let key = self.key;
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(unlock(conn, key));
                }
                Err(_) => drop(conn.detach()),
            }
        }
    }
}

async fn unlock(mut conn: PoolConnection<Postgres>, key: i32) {
    let done = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(TURN_CLASS)
        .bind(key)
        .execute(&mut *conn)
        .await;
    if done.is_err() {
        conn.close_on_drop();
    }
}

async fn paused_until(
    conn: &mut sqlx::PgConnection,
    installation: u64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT until_ms FROM rate_pauses WHERE installation_id = $1")
        .bind(installation as i64)
        .fetch_optional(conn)
        .await
}

impl RateLedger for PgRateLedger {
    fn write_turn(&self, installation: u64) -> BoxFuture<'_, anyhow::Result<WriteTurn>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            // Taken in a task of its own: if the caller gives up while Postgres grants the lock,
            // the task gives the lock back instead of leaving it held on a pooled connection.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let key = turn_key(installation);
            tokio::spawn(async move {
                let taken = async {
                    let mut conn = pool.acquire().await?;
                    sqlx::query("SELECT pg_advisory_lock($1, $2)")
                        .bind(TURN_CLASS)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    let turn = HeldTurn {
                        conn: Some(conn),
                        key,
                    };
                    Ok::<_, sqlx::Error>(turn)
                }
                .await;
                let taken = match taken {
                    Ok(mut turn) => {
                        let conn = turn.conn.as_mut().expect("held");
                        match paused_until(conn, installation).await {
                            Ok(until) => Ok((turn, until)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                // A caller that went away drops what it was sent: the turn unlocks itself.
                let _ = tx.send(taken);
            });
            let (turn, until) = rx
                .await
                .map_err(|_| anyhow::anyhow!("the write-turn task ended"))??;
            Ok(WriteTurn::new(until, turn))
        })
    }

    fn paused_until(&self, installation: u64) -> BoxFuture<'_, anyhow::Result<Option<i64>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(paused_until(&mut conn, installation).await?)
        })
    }

    fn pause(&self, installation: u64, until_ms: i64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO rate_pauses (installation_id, until_ms) VALUES ($1, $2)
                 ON CONFLICT (installation_id)
                 DO UPDATE SET until_ms = GREATEST(rate_pauses.until_ms, excluded.until_ms)",
            )
            .bind(installation as i64)
            .bind(until_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }
}

impl super::Db {
    pub(in crate::store) fn shared_rate(&self) -> crate::github::SharedRate {
        crate::github::SharedRate(std::sync::Arc::new(PgRateLedger {
            pool: self.pool.clone(),
        }))
    }
}
