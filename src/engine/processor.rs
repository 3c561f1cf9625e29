//! The delivery processor: consumes the persisted intake queue in arrival order and routes each
//! event. Handling is idempotent, so a delivery processed again after a crash changes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use std::time::Duration;

use futures::StreamExt as _;
use tracing::Instrument as _;

use super::Engine;
use crate::github::{parse_event, WebhookEvent};
use crate::store::{ClaimedDelivery, ReplicaId, StoredDelivery, WORK_RETRY};

/// How long the processor sleeps when idle before looking again (it is normally woken at once;
/// deliveries waiting out a retry back-off are found by this look).
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Spoke reports handled at once. They may be applied in any order (the state machine is
/// built for that); triggers and button clicks are handled one at a time, in order.
const REPORTS_IN_FLIGHT: usize = 32;

/// Deliveries claimed at once (their payloads are read a few megabytes at a time).
const CLAIM_BATCH: i64 = 256;

/// Reports about spokes, which the processor may handle concurrently.
fn is_spoke_report(event: &str) -> bool {
    matches!(event, "workflow_run" | "repository_dispatch")
}

impl Engine {
    /// Claims due deliveries from the ledger and handles them. A delivery that fails is due
    /// again after the work retry back-off, with its try count and error in the ledger, and is
    /// given up after the last try; one whose replica died is claimed again when its lease
    /// expires. Handling is idempotent, so a delivery handled twice changes nothing.
    pub(super) async fn process_deliveries(&self) {
        let replica = self.replica().clone();
        let ttl = self.config().lease_ttl;
        loop {
            let claimed = match self
                .store()
                .claim_deliveries(&replica, ttl, CLAIM_BATCH)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim deliveries");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            let taken_over = claimed.iter().filter(|d| d.taken_over).count();
            if taken_over > 0 {
                tracing::warn!(
                    deliveries = taken_over,
                    "took over deliveries whose replica's lease expired"
                );
                self.telemetry().lease_expirations.inc_by(taken_over as u64);
            }
            if claimed.is_empty() {
                let notified = self.store().notices().deliveries.notified();
                let _ = tokio::time::timeout(IDLE_POLL, notified).await;
                continue;
            }
            // The leases are renewed while the batch is handled.
            let guids: Vec<String> = claimed.iter().map(|d| d.guid.clone()).collect();
            // Ends with this batch, however it ends (a stop drops this loop mid-batch).
            let _renewer = {
                let engine = self.clone();
                let replica = replica.clone();
                super::AbortOnDrop(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(ttl / 3).await;
                        if let Err(e) = engine.store().renew_deliveries(&replica, &guids, ttl).await
                        {
                            tracing::warn!(error = %e, "cannot renew delivery leases");
                        }
                    }
                }))
            };
            let mut rest = claimed.as_slice();
            while !rest.is_empty() {
                let sizes: Vec<i64> = rest.iter().map(|d| d.size).collect();
                let (chunk, later) = rest.split_at(crate::store::within_budget(&sizes));
                rest = later;
                match self.store().delivery_payloads(chunk).await {
                    Ok(deliveries) => self.process_batch(&replica, chunk, &deliveries).await,
                    // Their leases expire and they are claimed again.
                    Err(e) => tracing::error!(error = %e, "cannot read claimed deliveries"),
                }
            }
        }
    }

    /// Handles claimed deliveries: runs of spoke reports concurrently, anything else alone and
    /// in order.
    async fn process_batch(
        &self,
        replica: &ReplicaId,
        claimed: &[ClaimedDelivery],
        deliveries: &[StoredDelivery],
    ) {
        let tries: HashMap<&str, i64> =
            claimed.iter().map(|d| (d.guid.as_str(), d.tries)).collect();
        let mut rest = deliveries;
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
                        // Triggers and buttons: one at a time across replicas too.
                        let _turn = if is_spoke_report(&d.event) {
                            None
                        } else {
                            match engine.store().trigger_turn().await {
                                Ok(turn) => Some(turn),
                                Err(e) => return Some((d.guid, e.to_string())),
                            }
                        };
                        let result = engine.process_one(&d).await;
                        result.err().map(|why| (d.guid, why))
                    }
                })
                .buffer_unordered(REPORTS_IN_FLIGHT)
                .filter_map(std::future::ready)
                .collect()
                .await;
            for (guid, why) in failed {
                let tries = tries.get(guid.as_str()).copied().unwrap_or(1).max(1) as u32;
                let done = if WORK_RETRY.gives_up(tries) {
                    // A delivery that keeps failing must not hold up the others forever.
                    tracing::error!(guid, tries, why, "giving up on a delivery");
                    let outcome = format!("failed after {tries} tries: {why}");
                    self.store().finish_delivery(&guid, &outcome).await
                } else {
                    self.store()
                        .retry_delivery(&guid, replica, tries, &why)
                        .await
                };
                if let Err(e) = done {
                    // Its lease expires and it is claimed again.
                    tracing::error!(guid, error = %e, "cannot record a failed delivery");
                }
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
