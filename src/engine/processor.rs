//! The delivery processor: consumes the persisted intake queue in arrival order and routes each
//! event. Handling is idempotent, so a delivery processed again after a crash changes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument as _;

use super::Engine;
use crate::github::{parse_event, WebhookEvent};
use crate::store::StoredDelivery;

/// How long the processor sleeps when idle before looking again (it is normally woken at once).
const IDLE_POLL: Duration = Duration::from_secs(2);

impl Engine {
    pub(super) async fn process_deliveries(&self) {
        loop {
            let batch = match self.store().pending_deliveries(256).await {
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
            for delivery in batch {
                let span = tracing::info_span!(
                    "delivery",
                    guid = %delivery.guid,
                    event = %delivery.event,
                    hub_run_id = tracing::field::Empty,
                    repo = tracing::field::Empty,
                );
                let outcome = self.handle_delivery(&delivery).instrument(span).await;
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // Transient trouble (database, GitHub): leave it queued and retry later.
                        tracing::warn!(guid = %delivery.guid, error = format!("{e:#}"), "delivery will be retried");
                        tokio::time::sleep(IDLE_POLL).await;
                        break;
                    }
                };
                self.inner
                    .metrics
                    .deliveries_processed
                    .fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.store().finish_delivery(&delivery.guid, &outcome).await {
                    tracing::error!(error = %e, "cannot mark delivery processed");
                }
            }
        }
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
