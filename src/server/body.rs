//! Reading webhook bodies without trusting the client: a declared length over GitHub's 25 MB is
//! refused before a byte is read, the whole body must arrive within a deadline, and the memory
//! held by bodies whose signature is not yet verified is bounded. Small bodies (every ordinary
//! delivery) and large ones draw on separate budgets, so stalled large uploads cannot starve
//! GitHub's everyday deliveries.

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
    /// Reserves room for a body of `declared` bytes (unknown: the largest GitHub sends).
    async fn reserve(&self, declared: Option<usize>) -> Result<OwnedSemaphorePermit, BodyError> {
        let size = declared.unwrap_or(MAX_WEBHOOK_BODY);
        let pool = if size <= SMALL_BODY {
            &self.small
        } else {
            &self.large
        };
        tokio::time::timeout(BUDGET_WAIT, pool.clone().acquire_many_owned(units(size)))
            .await
            .map_err(|_| BodyError::Busy)?
            .map_err(|_| BodyError::Busy)
    }

    /// Reads a body of `declared` bytes (from `Content-Length`), within the budget and the
    /// deadline. The permit is returned with the bytes: room stays reserved until the caller
    /// drops it.
    pub async fn read(
        &self,
        body: Body,
        declared: Option<usize>,
    ) -> Result<(Bytes, OwnedSemaphorePermit), BodyError> {
        if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY) {
            return Err(BodyError::TooLarge);
        }
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        let permit = self.reserve(declared).await?;
        let limit = declared.unwrap_or(MAX_WEBHOOK_BODY);
        let mut buf = Vec::with_capacity(declared.unwrap_or(SMALL_BODY).min(limit));
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
                buf.extend_from_slice(&data);
            }
        }
        Ok((Bytes::from(buf), permit))
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
        let _a = budget.reserve(Some(MAX_WEBHOOK_BODY)).await.unwrap();
        let _b = budget.reserve(Some(MAX_WEBHOOK_BODY)).await.unwrap();
        assert_eq!(
            budget.reserve(Some(MAX_WEBHOOK_BODY)).await.unwrap_err(),
            BodyError::Busy
        );
        let (bytes, _p) = budget.read(Body::from("{}"), Some(2)).await.unwrap();
        assert_eq!(&bytes[..], b"{}");
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
