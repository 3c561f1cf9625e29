//! The shared rate ledger on Postgres ([`crate::github::RateLedger`]): an installation's write
//! turn is a session advisory lock, and GitHub's waits are rows of `rate_pauses`.

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::github::{RateLedger, WriteTurn};

/// The first key of write-turn advisory locks ("spkh"); the second is the installation.
const TURN_CLASS: i32 = 0x7370_6b68;
/// The advisory lock held while a trigger or a button is handled ("spkt", 0).
const TRIGGER_CLASS: i32 = 0x7370_6b74;

pub(in crate::store) struct PgRateLedger {
    pub pool: PgPool,
}

fn turn_key(installation: u64) -> i32 {
    (installation & 0x7fff_ffff) as i32
}

/// A held session advisory lock (`class`, `key`): unlocked on drop (and its connection closed
/// if that fails, which ends the session and so the lock).
pub(in crate::store) struct HeldLock {
    conn: Option<PoolConnection<Postgres>>,
    class: i32,
    key: i32,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let (class, key) = (self.class, self.key);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(unlock(conn, class, key));
                }
                Err(_) => drop(conn.detach()),
            }
        }
    }
}

async fn unlock(mut conn: PoolConnection<Postgres>, class: i32, key: i32) {
    let done = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(class)
        .bind(key)
        .execute(&mut *conn)
        .await;
    if done.is_err() {
        conn.close_on_drop();
    }
}

/// Waits for the advisory lock (`class`, `key`) on a pooled connection. Taken in a task of its
/// own: if the caller gives up while Postgres grants the lock, the task's answer is dropped and
/// the lock given back, instead of staying held on a pooled connection.
pub(in crate::store) async fn hold(pool: &PgPool, class: i32, key: i32) -> sqlx::Result<HeldLock> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pool = pool.clone();
    tokio::spawn(async move {
        let taken = async {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(class)
                .bind(key)
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(HeldLock {
                conn: Some(conn),
                class,
                key,
            })
        }
        .await;
        // A caller that went away drops what it was sent: the lock unlocks itself.
        let _ = tx.send(taken);
    });
    rx.await
        .map_err(|_| sqlx::Error::Protocol("the advisory lock task ended".into()))?
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
        Box::pin(async move {
            let mut turn = hold(&self.pool, TURN_CLASS, turn_key(installation)).await?;
            let conn = turn.conn.as_mut().expect("held");
            let until = paused_until(conn, installation).await?;
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
    pub(in crate::store) async fn trigger_turn(&self) -> sqlx::Result<HeldLock> {
        hold(&self.pool, TRIGGER_CLASS, 0).await
    }

    pub(in crate::store) fn shared_rate(&self) -> crate::github::SharedRate {
        crate::github::SharedRate(std::sync::Arc::new(PgRateLedger {
            pool: self.pool.clone(),
        }))
    }
}
