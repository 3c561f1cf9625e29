//! The leased work ledger: work that must happen later is a row with a due time, a lease
//! (owner, expiry) and a try count with its last error. Two kinds of rows carry it:
//!
//! - **deliveries** to process: claimed in small batches, renewed while they are handled,
//!   retried with back-off ([`WORK_RETRY`]) and given up after [`WorkRetry::max_tries`];
//! - **runs** to plan and drive: the replica holding a run's lease drives it, which covers the
//!   run's spoke work (each spoke row holds its own due time: dispatch, the search for a lost
//!   dispatch, read-back, retry after back-off, timeout) and its check-run updates. One claim
//!   per run keeps a 10,000-spoke run to one lease renewal every few seconds, and a spoke's
//!   transitions stay atomic in the database whichever replica reports them.
//!
//! A replica claims due rows whose lease is free or expired (`FOR UPDATE SKIP LOCKED` on
//! Postgres), renews its leases while it works, and releases them when it is done or stops.
//! A lease that expires because its replica died is claimed by another replica. Replicas hear of
//! new work at once ([`Notices`]: Postgres `LISTEN/NOTIFY`, in-process on SQLite) and look
//! again on a slow poll, so a lost notification only delays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Store, StoreResult};
use crate::hub::HubRunId;

/// Who holds a lease: one replica (`hub.replica_id`; by default host name and port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId(String);

impl ReplicaId {
    pub fn new(id: impl Into<String>) -> Self {
        ReplicaId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one retry policy of work items (deliveries and runs): exponential back-off from
/// `first_delay`, at most `max_delay`; deliveries are given up after `max_tries`.
#[derive(Debug, Clone, Copy)]
pub struct WorkRetry {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub max_tries: u32,
}

/// The retry policy of work items.
pub const WORK_RETRY: WorkRetry = WorkRetry {
    first_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(60),
    max_tries: 5,
};

impl WorkRetry {
    /// The wait before try `tries + 1`, after `tries` failed ones.
    pub fn delay(&self, tries: u32) -> Duration {
        let factor = 2u32.saturating_pow(tries.saturating_sub(1).min(16));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Whether a delivery that failed `tries` times is given up.
    pub fn gives_up(&self, tries: u32) -> bool {
        tries >= self.max_tries
    }
}

/// A claimed delivery (its payload is read separately, a few megabytes at a time).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub guid: String,
    pub event: String,
    pub size: i64,
    pub received_at: i64,
    /// Receipt order within a millisecond.
    pub seq: i64,
    /// Tries so far, this one included.
    pub tries: i64,
    /// The lease was another replica's and had expired (it died or stalled).
    pub taken_over: bool,
}

/// The turn to handle a trigger (see [`Store::trigger_turn`]); given back when dropped.
pub struct TriggerTurn(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

/// Where a driver's reading of spoke changes stands: every change not visible then has a
/// transaction id at least this (Postgres' `pg_snapshot_xmin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangeMark(pub(super) i64);

/// Wake-ups for work: new deliveries, runs to claim, and spoke changes per run.
#[derive(Default)]
pub struct Notices {
    pub deliveries: Notify,
    pub runs: Notify,
    /// Pulled work was queued (every waiting claim looks: `notify_waiters`).
    pub work: Notify,
    spokes: Mutex<HashMap<HubRunId, Arc<Notify>>>,
}

impl Notices {
    /// The wake-up of one run's spoke changes (until [`Notices::forget`]).
    pub fn spokes_of(&self, run: HubRunId) -> Arc<Notify> {
        self.spokes
            .lock()
            .expect("notices lock")
            .entry(run)
            .or_default()
            .clone()
    }

    pub fn forget(&self, run: &HubRunId) {
        self.spokes.lock().expect("notices lock").remove(run);
    }

    /// Wakes everything: announcements may have been lost.
    pub(super) fn wake_all(&self) {
        self.deliveries.notify_one();
        self.runs.notify_one();
        self.work.notify_waiters();
        for n in self.spokes.lock().expect("notices lock").values() {
            n.notify_one();
        }
    }

    pub(super) fn spokes_changed(&self, run: &HubRunId) {
        if let Some(n) = self.spokes.lock().expect("notices lock").get(run) {
            n.notify_one();
        }
    }
}

impl Store {
    /// Whether other processes may share this ledger (Postgres): drivers then read spoke
    /// changes from the database instead of from this process's writer.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, super::Backend::Postgres(_))
    }

    /// Rate-limit state shared with the other replicas (Postgres); none on SQLite.
    pub fn shared_rate(&self) -> Option<crate::github::SharedRate> {
        match &self.backend {
            super::Backend::Postgres(db) => Some(db.shared_rate()),
            super::Backend::Sqlite(_) => None,
        }
    }

    /// Held while a trigger or an operator's button is handled: with a shared ledger one at a
    /// time across replicas, since the one-active-run rule reads before it writes. (One process
    /// handles them one at a time anyway.)
    pub async fn trigger_turn(&self) -> StoreResult<TriggerTurn> {
        match &self.backend {
            super::Backend::Postgres(db) => {
                let held = db.trigger_turn().await?;
                Ok(TriggerTurn(Some(Box::new(held))))
            }
            super::Backend::Sqlite(_) => Ok(TriggerTurn(None)),
        }
    }

    /// Wake-ups for new work.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// At start: frees the leases this replica held before it restarted (on SQLite, where one
    /// process owns the ledger, every lease), so its work is claimed again at once.
    pub async fn release_leases_of(&self, owner: &ReplicaId) -> StoreResult<()> {
        on_db!(self, db => db.release_leases_of(owner).await)
    }

    /// Claims up to `max` runs that are not completed, due, and free (or whose lease expired):
    /// each with whether it was taken over from another replica's expired lease.
    pub async fn claim_runs(
        &self,
        owner: &ReplicaId,
        ttl: Duration,
        max: i64,
    ) -> StoreResult<Vec<(HubRunId, bool)>> {
        on_db!(self, db => db.claim_runs(owner, ttl_ms(ttl), max).await)
    }

    /// Renews every run lease `owner` holds; returns the runs it still holds.
    pub async fn renew_runs(&self, owner: &ReplicaId, ttl: Duration) -> StoreResult<Vec<HubRunId>> {
        on_db!(self, db => db.renew_runs(owner, ttl_ms(ttl)).await)
    }

    /// Gives a run's lease back: `Ok` when its driver ended normally; `Err(why)` when it
    /// failed, so the run waits out [`WORK_RETRY`]'s back-off before it is claimed again.
    pub async fn release_run(
        &self,
        id: &HubRunId,
        owner: &ReplicaId,
        failure: Option<&str>,
    ) -> StoreResult<()> {
        let result = on_db!(self, db => db.release_run(id, owner, failure, &WORK_RETRY).await);
        self.notices.runs.notify_one();
        result
    }

    /// Tells every replica (and this one) that a run may be claimed: new, reopened, released.
    pub async fn announce_runs(&self) -> StoreResult<()> {
        self.notices.runs.notify_one();
        on_db!(self, db => db.announce("runs").await)
    }

    /// Tells every replica (and this one) that pulled work was queued: waiting claims look.
    pub async fn announce_work(&self) -> StoreResult<()> {
        self.notices.work.notify_waiters();
        on_db!(self, db => db.announce("work").await)
    }

    /// Tells every replica (and this one) that deliveries may be claimed.
    pub async fn announce_deliveries(&self) -> StoreResult<()> {
        self.notices.deliveries.notify_one();
        on_db!(self, db => db.announce("deliveries").await)
    }

    /// Claims up to `max` due deliveries (oldest first) whose lease is free or expired, and
    /// counts the try.
    pub async fn claim_deliveries(
        &self,
        owner: &ReplicaId,
        ttl: Duration,
        max: i64,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut claimed = on_db!(self, db => db.claim_deliveries(owner, ttl_ms(ttl), max).await)?;
        claimed.sort_by_key(|d| (d.received_at, d.seq));
        Ok(claimed)
    }

    /// The payloads of claimed deliveries, in the order given.
    pub async fn delivery_payloads(
        &self,
        claimed: &[ClaimedDelivery],
    ) -> StoreResult<Vec<super::StoredDelivery>> {
        let guids: Vec<String> = claimed.iter().map(|d| d.guid.clone()).collect();
        let mut rows = on_db!(self, db => db.delivery_payloads(&guids).await)?;
        let order: HashMap<&str, usize> = guids
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i))
            .collect();
        rows.sort_by_key(|d| order.get(d.guid.as_str()).copied().unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// Extends the leases of deliveries `owner` is handling.
    pub async fn renew_deliveries(
        &self,
        owner: &ReplicaId,
        guids: &[String],
        ttl: Duration,
    ) -> StoreResult<()> {
        on_db!(self, db => db.renew_deliveries(owner, guids, ttl_ms(ttl)).await)
    }

    /// A delivery whose handling failed: its lease is released and it is due again after the
    /// back-off for its tries, with the error kept.
    pub async fn retry_delivery(
        &self,
        guid: &str,
        owner: &ReplicaId,
        tries: u32,
        error: &str,
    ) -> StoreResult<()> {
        let delay = ttl_ms(WORK_RETRY.delay(tries));
        on_db!(self, db => db.retry_delivery(guid, owner, i64::from(tries), delay, error).await)
    }

    /// Spokes not yet ended of the runs `owner` drives, by state (for metrics: summed over
    /// replicas, every spoke counts once).
    pub async fn active_spokes_of(&self, owner: &ReplicaId) -> StoreResult<Vec<(String, i64)>> {
        on_db!(self, db => db.active_spokes_of(owner).await)
    }

    /// Deliveries waiting to be processed.
    pub async fn queued_deliveries(&self) -> StoreResult<i64> {
        on_db!(self, db => db.queued_deliveries().await)
    }

    /// Where reading spoke changes starts (take it before reading the spokes themselves).
    pub async fn change_mark(&self) -> StoreResult<ChangeMark> {
        on_db!(self, db => db.change_mark().await)
    }

    /// The spokes of `run` changed since `since` (and possibly some seen already), and the
    /// mark to read from next time. Each row is as it stands now.
    pub async fn spoke_changes(
        &self,
        run: &HubRunId,
        since: ChangeMark,
    ) -> StoreResult<(Vec<super::SpokeRecord>, ChangeMark)> {
        on_db!(self, db => db.spoke_changes(run, since).await)
    }
}

fn ttl_ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_retry_backs_off_exponentially_up_to_its_bound_and_gives_up() {
        let r = WORK_RETRY;
        assert_eq!(r.delay(1), Duration::from_secs(2));
        assert_eq!(r.delay(2), Duration::from_secs(4));
        assert_eq!(r.delay(3), Duration::from_secs(8));
        assert_eq!(r.delay(10), Duration::from_secs(60));
        assert!(!r.gives_up(4));
        assert!(r.gives_up(5));
    }
}
