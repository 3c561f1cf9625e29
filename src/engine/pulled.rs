//! The driver's side of pulled work (pull and hybrid runs): a spoke's attempt is queued for
//! workers instead of dispatched, and a queued or claimed spoke whose time has come is ended
//! here (it waited or ran too long, or its worker's lease ran out) without asking GitHub.

use crate::hub::{pulled_due_event, RepoName, SpokeEvent, Transition};
use crate::store::{now_ms, RunRecord, StoreResult};

use super::Engine;

impl Engine {
    /// Queues the spoke's next attempt for workers; true when it was queued.
    pub(super) async fn enqueue_spoke(
        &self,
        run: &RunRecord,
        repo: &RepoName,
    ) -> StoreResult<bool> {
        let record = self.transition(run, repo, SpokeEvent::Enqueue).await?;
        Ok(matches!(record.transition, Transition::Changed(_)))
    }

    /// Ends a pulled spoke whose due time passed, as its state under the row lock says: a
    /// heartbeat that came first keeps it going.
    pub(super) async fn expire_pulled(&self, run: &RunRecord, repo: &RepoName) -> StoreResult<()> {
        let record = self
            .transition_by(run, repo, |spoke| pulled_due_event(spoke, now_ms()))
            .await?;
        if let Transition::Changed(s) = &record.transition {
            tracing::info!(%repo, status = %s.status, reason = s.reason.as_deref().unwrap_or(""), "pulled spoke's time ran out");
        }
        Ok(())
    }

    /// Work was queued: waiting claims on every replica look again.
    pub(super) async fn work_queued(&self, run: &RunRecord) {
        if let Err(e) = self.store().announce_work().await {
            // This replica's waiting claims were woken; the others look on their slow poll.
            tracing::warn!(hub_run_id = %run.id, error = %e, "cannot announce queued work");
        }
    }
}
