//! Which replica drives which run: runs are claimed from the ledger with a lease, renewed every
//! third of `hub.lease_ttl`, and released when their driver ends (with the error and a back-off
//! when it failed). A run whose replica died is claimed by another replica once the lease
//! expires; a driver whose lease was lost (taken over after a stall) stops at once.
//!
//! On Postgres, other replicas change the spokes too (callbacks and webhooks are spread over
//! the replicas): a driver follows its run's changes in the database, woken by `NOTIFY`.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{DriveEnd, DriverHandle, Engine};
use crate::hub::{HubRunId, Spoke};
use crate::store::ChangeMark;

/// A replica that drives `k` runs waits `k` times this before claiming more, so replicas with
/// fewer runs claim first and runs spread over the replicas.
const CLAIM_STAGGER: Duration = Duration::from_millis(250);
/// The slowest a replica looks for runs to claim when it hears of none.
const CLAIM_POLL: Duration = Duration::from_secs(5);
/// How often a stopping replica looks whether its drivers are done.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// The slowest a driver looks for spoke changes when it hears of none (Postgres).
const CHANGES_POLL: Duration = Duration::from_secs(1);
/// The least time between two reads of a run's changes (they are batched meanwhile).
const CHANGES_GAP: Duration = Duration::from_millis(20);

impl Engine {
    /// Tells every replica that a run may be claimed (new, re-run, cancelled).
    pub(crate) async fn announce_runs(&self) {
        if let Err(e) = self.store().announce_runs().await {
            tracing::warn!(error = %e, "cannot announce a run; replicas find it on their next poll");
        }
    }

    /// Claims runs and keeps their leases until the hub stops. Runs are claimed one at a time;
    /// a replica that drives `k` runs claims the next `k` x [`CLAIM_STAGGER`] after it heard of
    /// it, so idle replicas claim first.
    pub(super) async fn hold_runs(&self) {
        let ttl = self.config().lease_ttl;
        let renew_every = ttl / 3;
        let replica = self.replica().clone();
        let mut next_renewal = Instant::now() + renew_every;
        let mut claim_at = Instant::now();
        let mut renewed_at = Instant::now();
        loop {
            if Instant::now() >= next_renewal {
                next_renewal = Instant::now() + renew_every;
                let attempt = Instant::now();
                if self.renew_leases().await {
                    renewed_at = attempt;
                } else if renewed_at.elapsed() >= ttl - renew_every {
                    // The leases may expire before a renewal gets through: stop driving
                    // before another replica can take the runs over.
                    self.stop_all_drivers("the run leases could not be renewed in time");
                }
            }
            // Stopping: nothing new is claimed, but the leases of the runs still finishing
            // their requests are kept until their drivers have released them.
            if self.is_stopping() {
                if self.inner.drivers.lock().expect("drivers lock").is_empty() {
                    return;
                }
                tokio::time::sleep_until(next_renewal.min(Instant::now() + STOP_CHECK)).await;
                continue;
            }
            if Instant::now() >= claim_at {
                match self.store().claim_runs(&replica, ttl, 1).await {
                    Ok(ids) if !ids.is_empty() => {
                        for (id, taken_over) in ids {
                            if taken_over {
                                tracing::warn!(hub_run_id = %id, "took over a run whose replica's lease expired");
                                self.telemetry().lease_expirations.inc();
                            }
                            self.spawn_driver(id);
                        }
                        claim_at = Instant::now() + self.claim_stagger();
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot claim runs"),
                }
                // Nothing to claim: look again on the slow poll, or when told.
                claim_at = Instant::now() + CLAIM_POLL;
            }
            tokio::select! {
                _ = self.store().notices().runs.notified() => {
                    claim_at = claim_at.min(Instant::now() + self.claim_stagger());
                }
                _ = tokio::time::sleep_until(next_renewal.min(claim_at)) => {}
                _ = self.stopped() => {}
            }
        }
    }

    /// How long this replica waits before claiming another run: longer the more it drives.
    fn claim_stagger(&self) -> Duration {
        let driving = self.inner.drivers.lock().expect("drivers lock").len();
        CLAIM_STAGGER * driving.min(8) as u32
    }

    /// Stops every driver of this replica (their leases are, or are about to be, lost).
    fn stop_all_drivers(&self, why: &str) {
        let drivers = self.inner.drivers.lock().expect("drivers lock");
        for (id, driver) in drivers.iter() {
            if !driver.lease.is_cancelled() {
                tracing::warn!(hub_run_id = %id, why, "stopping the run's driver");
                driver.lease.cancel();
            }
        }
    }

    /// Renews every run lease this replica holds; a driver whose lease is gone stops. False
    /// when the renewal did not get through (nothing is known then).
    async fn renew_leases(&self) -> bool {
        let replica = self.replica();
        let held: HashSet<HubRunId> = match self
            .store()
            .renew_runs(replica, self.config().lease_ttl)
            .await
        {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                // Not proof of a loss: the next renewal tries again, before expiry.
                tracing::warn!(error = %e, "cannot renew run leases");
                return false;
            }
        };
        let drivers = self.inner.drivers.lock().expect("drivers lock");
        for (id, driver) in drivers.iter() {
            if !held.contains(id) && !driver.lease.is_cancelled() {
                tracing::warn!(hub_run_id = %id, "lease lost: another replica drives this run now");
                driver.lease.cancel();
            }
        }
        true
    }

    /// Starts the driver of a claimed run unless one is running here.
    pub(crate) fn spawn_driver(&self, id: HubRunId) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lease = CancellationToken::new();
        {
            let mut drivers = self.inner.drivers.lock().expect("drivers lock");
            if drivers.contains_key(&id) {
                return;
            }
            drivers.insert(
                id,
                DriverHandle {
                    tx: tx.clone(),
                    lease: lease.clone(),
                },
            );
        }
        let engine = self.clone();
        let span = tracing::info_span!("hub_run", hub_run_id = %id);
        self.inner.tasks.spawn(
            async move {
                let ended = tokio::select! {
                    end = engine.drive(id, tx, rx) => Some(end),
                    _ = lease.cancelled() => None,
                };
                let failure = match &ended {
                    Some(Ok(DriveEnd::Completed)) => {
                        engine
                            .inner
                            .known_runs
                            .lock()
                            .expect("runs lock")
                            .remove(&id);
                        let _ = engine.inner.completed.send(id);
                        None
                    }
                    Some(Ok(DriveEnd::Stopped)) => {
                        tracing::info!("run driver stopped with the hub; another replica (or the next start) goes on");
                        None
                    }
                    Some(Err(e)) => {
                        let why = format!("{e:#}");
                        tracing::warn!(error = why, "run driver stopped; the run is claimed again after a back-off");
                        Some(why)
                    }
                    None => None,
                };
                engine
                    .inner
                    .drivers
                    .lock()
                    .expect("drivers lock")
                    .remove(&id);
                engine.store().notices().forget(&id);
                // A lost lease is someone else's now; anything else is given back (a run that
                // was re-opened meanwhile is claimed again at once).
                if ended.is_some() {
                    let replica = engine.replica();
                    if let Err(e) = engine
                        .store()
                        .release_run(&id, replica, failure.as_deref())
                        .await
                    {
                        tracing::warn!(error = %e, "cannot release the run's lease; it expires");
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Follows a run's spoke changes in the shared ledger from `mark` on and hands them to its
    /// driver, until the driver is gone.
    pub(super) async fn follow_changes(
        &self,
        run: HubRunId,
        mut mark: ChangeMark,
        tx: mpsc::UnboundedSender<Spoke>,
    ) {
        let notice = self.store().notices().spokes_of(run);
        loop {
            let _ = tokio::time::timeout(CHANGES_POLL, notice.notified()).await;
            if tx.is_closed() {
                return;
            }
            match self.store().spoke_changes(&run, mark).await {
                Ok((records, next)) => {
                    mark = next;
                    for r in records {
                        if tx.send(r.spoke).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the run's spoke changes; retrying");
                    tokio::time::sleep(CHANGES_POLL).await;
                }
            }
            tokio::time::sleep(CHANGES_GAP).await;
        }
    }
}
