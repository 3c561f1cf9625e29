//! The delivery processor: consumes the persisted intake queue in arrival order and routes each
//! event. Handling is idempotent, so a delivery processed again after a crash changes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use tracing::Instrument as _;

use super::Engine;
use crate::github::{parse_event, WebhookEvent};
use crate::store::StoredDelivery;

/// How long the processor sleeps when idle before looking again (it is normally woken at once).
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Spoke reports handled at once. They may be applied in any order (the state machine is
/// built for that); triggers and button clicks are handled one at a time, in order.
const REPORTS_IN_FLIGHT: usize = 32;

/// Tries of a delivery that fails (GitHub or database trouble) before it is given up.
const MAX_TRIES: u32 = 5;

/// Reports about spokes, which the processor may handle concurrently.
fn is_spoke_report(event: &str) -> bool {
    matches!(event, "workflow_run" | "repository_dispatch")
}

impl Engine {
    pub(super) async fn process_deliveries(&self) {
        // Failed tries per delivery (in memory: a restart gives every delivery a fresh start).
        let mut failures: HashMap<String, u32> = HashMap::new();
        loop {
            let batch = match self.store().pending_deliveries(512).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read pending deliveries");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let _ = tokio::time::timeout(IDLE_POLL, self.inner.new_delivery.notified()).await;
                continue;
            }
            let mut rest = batch.as_slice();
            let mut any_failed = false;
            while !rest.is_empty() {
                let reports = rest
                    .iter()
                    .take_while(|d| is_spoke_report(&d.event))
                    .count();
                let (now, later) = rest.split_at(reports.max(1));
                rest = later;
                let failed: Vec<(String, String)> = futures::stream::iter(now.iter().cloned())
                    .map(|d| {
                        let engine = self.clone();
                        async move {
                            let result = engine.process_one(&d).await;
                            result.err().map(|why| (d.guid, why))
                        }
                    })
                    .buffer_unordered(REPORTS_IN_FLIGHT)
                    .filter_map(std::future::ready)
                    .collect()
                    .await;
                for (guid, why) in failed {
                    any_failed = true;
                    let tries = failures.entry(guid.clone()).or_insert(0);
                    *tries += 1;
                    if *tries >= MAX_TRIES {
                        // A delivery that keeps failing must not hold up the others forever.
                        tracing::error!(guid, tries = *tries, why, "giving up on a delivery");
                        let outcome = format!("failed after {} tries: {why}", *tries);
                        if self.store().finish_delivery(&guid, &outcome).await.is_ok() {
                            failures.remove(&guid);
                        }
                    }
                }
            }
            if any_failed {
                // Transient trouble (database, GitHub): what failed stays queued a while.
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }

    /// Handles and finishes one delivery; `Err` (why) when it must be tried again later.
    async fn process_one(&self, delivery: &StoredDelivery) -> Result<(), String> {
        let span = tracing::info_span!(
            "delivery",
            guid = %delivery.guid,
            event = %delivery.event,
            hub_run_id = tracing::field::Empty,
            repo = tracing::field::Empty,
        );
        let outcome = match self.handle_delivery(delivery).instrument(span).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(guid = %delivery.guid, error = why, "delivery will be retried");
                return Err(why);
            }
        };
        self.inner
            .metrics
            .deliveries_processed
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store().finish_delivery(&delivery.guid, &outcome).await {
            tracing::error!(error = %e, "cannot mark delivery processed");
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Handles one delivery; returns a short outcome for the ledger. An `Err` means "try again".
    async fn handle_delivery(&self, delivery: &StoredDelivery) -> anyhow::Result<String> {
        let event = match parse_event(&delivery.event, &delivery.payload) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok("ignored".into()),
            Err(e) => return Ok(format!("unparseable: {e}")),
        };
        match event {
            WebhookEvent::WorkflowDispatch(e) => self.on_workflow_dispatch(&delivery.guid, e).await,
            WebhookEvent::RepositoryDispatch(e) => self.on_repository_dispatch(e).await,
            WebhookEvent::WorkflowRun(e) => self.on_workflow_run(e).await,
            WebhookEvent::CheckRun(e) => self.on_check_run(e).await,
        }
    }
}
