//! Reading webhook bodies without trusting the client: a declared length over GitHub's 25 MB is
//! refused before a byte is read, the whole body must arrive within a deadline, and the memory
//! held by bodies whose signature is not yet verified is bounded. Small bodies (every ordinary
//! delivery) and large ones draw on separate budgets, so stalled large uploads cannot starve
//! GitHub's everyday deliveries; small bodies take room as their bytes arrive, large ones all
//! at once (so that several large ones cannot wait on each other).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// GitHub caps webhook payloads at 25 MB.
pub const MAX_WEBHOOK_BODY: usize = 25 * 1024 * 1024;
/// Bodies up to this size draw on the small budget.
pub const SMALL_BODY: usize = 1024 * 1024;
/// Memory for small bodies being read at once.
const SMALL_BUDGET: usize = 48 * 1024 * 1024;
/// Memory for large bodies being read at once (two of GitHub's largest payloads).
const LARGE_BUDGET: usize = 2 * MAX_WEBHOOK_BODY + 2 * SMALL_BODY;
/// The whole body must have arrived this long after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a body may wait for room in its budget before the delivery is refused with 503
/// (GitHub then records it as failed, and the redelivery sweep asks for it again).
const BUDGET_WAIT: Duration = Duration::from_secs(4);

/// Permits count KiB.
const UNIT: usize = 1024;

/// Why a body was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body is larger than GitHub's 25 MB")]
    TooLarge,
    #[error("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    TooSlow,
    #[error("too many large deliveries are being read; try again")]
    Busy,
    #[error("the body could not be read: {0}")]
    Broken(String),
}

/// The memory budgets for bodies in flight. Cheap to clone.
#[derive(Clone)]
pub struct BodyBudget {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget {
            small: Arc::new(Semaphore::new(SMALL_BUDGET / UNIT)),
            large: Arc::new(Semaphore::new(LARGE_BUDGET / UNIT)),
        }
    }
}

fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT).max(1) as u32
}

impl BodyBudget {
    /// The budget a body of `declared` bytes draws on (unknown: the largest GitHub sends).
    fn pool(&self, declared: Option<usize>) -> &Arc<Semaphore> {
        if declared.unwrap_or(MAX_WEBHOOK_BODY) <= SMALL_BODY {
            &self.small
        } else {
            &self.large
        }
    }

    /// Reads a body of `declared` bytes (from `Content-Length`) within the deadline, taking
    /// room in its budget (see the module). The permit is returned with the bytes: the room
    /// stays taken until the caller drops it.
    pub async fn read(
        &self,
        body: Body,
        declared: Option<usize>,
    ) -> Result<(Bytes, OwnedSemaphorePermit), BodyError> {
        if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY) {
            return Err(BodyError::TooLarge);
        }
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        let pool = self.pool(declared).clone();
        let limit = declared.unwrap_or(MAX_WEBHOOK_BODY);
        // A large body takes all its room at once: taking it bit by bit, a few large bodies
        // arriving together would each hold part of the budget and wait for one another. A
        // small one takes room as its bytes arrive, so declaring a length holds nothing.
        let first = if Arc::ptr_eq(&pool, &self.large) {
            units(limit)
        } else {
            1
        };
        let mut room = self.take(&pool, first, deadline).await?;
        let mut held = first;
        let mut buf = Vec::new();
        let mut body = body;
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| BodyError::TooSlow)?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                let need = units(buf.len() + data.len());
                if need > held {
                    room.merge(self.take(&pool, need - held, deadline).await?);
                    held = need;
                }
                if buf.is_empty() {
                    // Grown as bytes arrive beyond the first mebibyte: a declared length
                    // reserves no more than that.
                    buf.reserve_exact(declared.unwrap_or(data.len()).min(limit).min(SMALL_BODY));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok((Bytes::from(buf), room))
    }

    /// `n` units of room, waiting at most [`BUDGET_WAIT`] (and not past `deadline`).
    async fn take(
        &self,
        pool: &Arc<Semaphore>,
        n: u32,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, BodyError> {
        let until = deadline.min(tokio::time::Instant::now() + BUDGET_WAIT);
        tokio::time::timeout_at(until, pool.clone().acquire_many_owned(n))
            .await
            .map_err(|_| BodyError::Busy)?
            .map_err(|_| BodyError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn declared_oversize_is_refused_before_reading() {
        let budget = BodyBudget::default();
        let e = budget
            .read(Body::from("x"), Some(MAX_WEBHOOK_BODY + 1))
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::TooLarge);
    }

    #[tokio::test]
    async fn more_than_declared_is_refused() {
        let budget = BodyBudget::default();
        let e = budget
            .read(Body::from(vec![b'x'; 3000]), Some(100))
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::TooLarge);
        let (bytes, _permit) = budget.read(Body::from("hello"), Some(5)).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_large_budget_refuses_with_busy_but_small_bodies_pass() {
        let budget = BodyBudget::default();
        let all = budget.large.available_permits() as u32;
        let _taken = budget.large.clone().acquire_many_owned(all).await.unwrap();
        let e = budget
            .read(Body::from(vec![b' '; 2 * SMALL_BODY]), Some(2 * SMALL_BODY))
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::Busy);
        let (bytes, _p) = budget.read(Body::from("{}"), Some(2)).await.unwrap();
        assert_eq!(&bytes[..], b"{}");
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_taken_as_bytes_arrive_not_as_declared() {
        let budget = BodyBudget::default();
        let before = budget.small.available_permits();
        let (mut tx, body) = {
            let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            (tx, Body::from_stream(rx))
        };
        tx.try_send(Ok(Bytes::from_static(b"{"))).unwrap();
        let reading = tokio::spawn({
            let budget = budget.clone();
            async move { budget.read(body, Some(SMALL_BODY)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // One byte arrived of a declared mebibyte: one unit is held.
        assert_eq!(budget.small.available_permits(), before - 1);
        drop(tx);
        let _ = reading.await.unwrap();
        assert_eq!(budget.small.available_permits(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn large_bodies_arriving_together_never_wait_on_each_other() {
        // Four 20 MB bodies arrive side by side, a mebibyte at a time each; taking room bit by
        // bit, they would each hold part of the 52 MB and wait for one another until refused.
        const SIZE: usize = 20 * 1024 * 1024;
        let budget = BodyBudget::default();
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                use futures::SinkExt as _;
                let chunk = Bytes::from(vec![b' '; 1024 * 1024]);
                for _ in 0..SIZE / chunk.len() {
                    if tx.send(Ok(chunk.clone())).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            });
            let budget = budget.clone();
            readers.push(tokio::spawn(async move {
                // Done with the body at once: its room is free again.
                budget
                    .read(Body::from_stream(rx), Some(SIZE))
                    .await
                    .map(|(b, _)| b.len())
            }));
        }
        for r in readers {
            assert_eq!(r.await.unwrap(), Ok(SIZE));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_deadline() {
        let (mut tx, body) = {
            let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            (tx, Body::from_stream(rx))
        };
        tx.try_send(Ok(Bytes::from_static(b"{\"partial\":")))
            .unwrap();
        let budget = BodyBudget::default();
        let e = budget.read(body, Some(1000)).await.unwrap_err();
        assert_eq!(e, BodyError::TooSlow);
        drop(tx);
    }
}
