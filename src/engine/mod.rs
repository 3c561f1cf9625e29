//! The workers: the delivery processor (consumes the persisted intake queue), one driver per
//! active hub run (plans, dispatches, times out, summarizes), and the observer logic that turns
//! reports into spoke transitions. Every spoke transition goes through [`Engine::transition`]:
//! decided by the pure domain, persisted, then handed to the run's driver.

pub mod callback_token;
mod checks;
mod dispatch;
mod driver;
mod leases;
mod observe;
mod operator;
mod pacer;
mod plan;
mod processor;
mod pulled;
mod redeliver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::config::Config;
use crate::github::GitHubApp;
use crate::hub::{HubRunId, RepoName, Spoke, SpokeEvent, Transition, TransitionContext};
use crate::store::{now_ms, ReplicaId, RunRecord, Store, StoreResult, TransitionRecord};
pub use callback_token::{CallbackSigner, TokenError};
pub use operator::{CancelOutcome, RERUN_FAILED};

/// How long processed deliveries are kept.
const DELIVERY_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Counters for operators (and tests): what was rejected and why.
#[derive(Debug, Default)]
pub struct Metrics {
    pub deliveries_processed: AtomicU64,
    pub callbacks_accepted: AtomicU64,
    pub callbacks_rejected: AtomicU64,
    pub reports_unmatched: AtomicU64,
    pub conflicts: AtomicU64,
    /// Hub workflow runs not admitted (another repository, ref or sender).
    pub triggers_refused: AtomicU64,
    /// Check-run buttons and re-requests not acted on (not the run's current check run).
    pub reruns_refused: AtomicU64,
    /// Requests of the work API refused for who sent them (no, a bad or a revoked token).
    pub work_refused: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricsSnapshot {
    pub deliveries_processed: u64,
    pub callbacks_accepted: u64,
    pub callbacks_rejected: u64,
    pub reports_unmatched: u64,
    pub conflicts: u64,
    pub triggers_refused: u64,
    pub reruns_refused: u64,
    pub work_refused: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            deliveries_processed: g(&self.deliveries_processed),
            callbacks_accepted: g(&self.callbacks_accepted),
            callbacks_rejected: g(&self.callbacks_rejected),
            reports_unmatched: g(&self.reports_unmatched),
            conflicts: g(&self.conflicts),
            triggers_refused: g(&self.triggers_refused),
            reruns_refused: g(&self.reruns_refused),
            work_refused: g(&self.work_refused),
        }
    }
}

/// The hub's engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    github: GitHubApp,
    config: Config,
    /// This replica's name in the ledger's leases.
    replica: ReplicaId,
    telemetry: Arc<crate::telemetry::Telemetry>,
    signer: CallbackSigner,
    /// The runs this replica drives (it holds their leases).
    drivers: Mutex<HashMap<HubRunId, DriverHandle>>,
    metrics: Metrics,
    completed: broadcast::Sender<HubRunId>,
    /// Runs as first read, for the fields that never change (installation, hub repository,
    /// task): every report is checked against them, thousands per run.
    known_runs: Mutex<HashMap<HubRunId, Arc<RunRecord>>>,
    /// Bounds reconciliation read-backs per installation.
    pacer: pacer::Pacer,
    /// Cancelled when the hub is told to stop (SIGTERM): nothing new is started.
    stopping: tokio_util::sync::CancellationToken,
    /// Every background task, so that a stop can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Verifies worker jobs' ID tokens (with a public URL, their audience).
    oidc: Option<crate::work::oidc::OidcVerifier>,
}

/// A running driver: where its spoke changes go, and the token cancelled when its lease is
/// lost.
struct DriverHandle {
    tx: mpsc::UnboundedSender<Spoke>,
    lease: tokio_util::sync::CancellationToken,
}

/// A task that ends with the scope that spawned it (a future dropped mid-way included).
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a run's driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DriveEnd {
    /// The run completed.
    Completed,
    /// The hub is stopping: the work in hand was finished, the rest stays in the ledger for
    /// the next start.
    Stopped,
}

impl Engine {
    pub async fn new(
        store: Store,
        github: GitHubApp,
        config: Config,
        replica: ReplicaId,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> anyhow::Result<Engine> {
        let signer = CallbackSigner::new(&store.signing_key().await?);
        let oidc = config.public_url.as_ref().map(|u| {
            crate::work::oidc::OidcVerifier::new(
                crate::work::oidc::issuer_for(&config.api_url),
                u.as_str().trim_end_matches('/'),
            )
        });
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                github,
                config,
                replica,
                telemetry,
                signer,
                drivers: Mutex::new(HashMap::new()),
                metrics: Metrics::default(),
                completed: broadcast::channel(64).0,
                known_runs: Mutex::new(HashMap::new()),
                pacer: pacer::Pacer::default(),
                stopping: tokio_util::sync::CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
                oidc,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The verifier of worker jobs' ID tokens; none without a public URL.
    pub fn oidc(&self) -> Option<&crate::work::oidc::OidcVerifier> {
        self.inner.oidc.as_ref()
    }

    /// The GitHub App's client.
    pub fn github(&self) -> &GitHubApp {
        &self.inner.github
    }

    /// The Prometheus metrics.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.inner.telemetry
    }

    /// This replica's name in the ledger's leases.
    pub fn replica(&self) -> &ReplicaId {
        &self.inner.replica
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Hears the id of every run as it completes (the demo waits on this).
    pub fn subscribe_completions(&self) -> broadcast::Receiver<HubRunId> {
        self.inner.completed.subscribe()
    }

    /// Wakes the delivery processor (called by intake after recording a delivery).
    pub fn delivery_recorded(&self) {
        self.inner.store.notices().deliveries.notify_one();
    }

    /// Starts the workers: takes back this replica's leases from before a restart, claims runs
    /// (resuming every unfinished one no other replica holds), processes deliveries, and sweeps
    /// failed webhook deliveries for redelivery.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.inner
            .store
            .release_leases_of(&self.inner.replica)
            .await?;
        if let Some(mut changes) = self.inner.store.take_changes() {
            let engine = self.clone();
            // Runs until the last driver is gone (drivers finish their work on a stop).
            tokio::spawn(async move {
                while let Some((run, spoke)) = changes.recv().await {
                    engine.tell_driver(&run, spoke);
                }
            });
        }
        tracing::info!(replica = %self.inner.replica, "claiming work");
        // Tracked, not cut short by a stop: it keeps the leases of the runs still finishing.
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.hold_runs().await });
        // Loops whose work is all in the ledger: on a stop they simply end (a delivery being
        // processed stays pending and is processed at the next start).
        let engine = self.clone();
        self.spawn_until_stopped(async move { engine.process_deliveries().await });
        let engine = self.clone();
        self.spawn_until_stopped(async move { engine.prune_old_deliveries().await });
        if let Some(every) = self.inner.config.redeliver_every {
            let engine = self.clone();
            self.spawn_until_stopped(async move { engine.redeliver_failed(every).await });
        }
        Ok(())
    }

    /// Runs `work` as a background task that ends when the hub stops.
    fn spawn_until_stopped(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let stopping = self.inner.stopping.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = stopping.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Whether the hub is stopping.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Resolves when the hub is told to stop.
    pub(crate) async fn stopped(&self) {
        self.inner.stopping.cancelled().await
    }

    /// A handle that is cancelled when the hub is told to stop (for the accept loop).
    pub(crate) fn stop_signal(&self) -> tokio_util::sync::CancellationToken {
        self.inner.stopping.clone()
    }

    /// Stops the engine: nothing new starts, run drivers finish the GitHub requests in hand,
    /// and every background task ends. Returns false when `grace` passed first (what was left
    /// is in the ledger and resumes at the next start).
    pub async fn stop(&self, grace: std::time::Duration) -> bool {
        self.inner.stopping.cancel();
        self.inner.tasks.close();
        let done = tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok();
        if done {
            // Whatever is still leased to this replica (deliveries claimed by a batch the
            // stop cut short) is given back, so other replicas take it now rather than when
            // the leases expire.
            match self
                .inner
                .store
                .release_leases_of(&self.inner.replica)
                .await
            {
                Ok(()) => {
                    let _ = self.inner.store.announce_runs().await;
                    let _ = self.inner.store.announce_deliveries().await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot give back leases; they expire"),
            }
        }
        done
    }

    /// Forgets processed deliveries after `DELIVERY_RETENTION` (checked hourly): GitHub keeps
    /// its own log of deliveries for 30 days, and payloads hold callback tokens.
    async fn prune_old_deliveries(&self) {
        loop {
            let before = now_ms() - DELIVERY_RETENTION.as_millis() as i64;
            match self.inner.store.prune_deliveries(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "forgot old processed deliveries"),
                Err(e) => tracing::warn!(error = %e, "cannot prune old deliveries"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }

    /// Applies one event to one spoke: the domain decides, the store persists, the run's driver
    /// hears about any change. The single path by which a spoke ever changes.
    pub(crate) async fn transition(
        &self,
        run: &RunRecord,
        repo: &RepoName,
        event: SpokeEvent,
    ) -> StoreResult<TransitionRecord> {
        self.transition_by(run, repo, move |_| Some(event.clone()))
            .await
    }

    /// [`Self::transition`] with the event chosen from the spoke as it is under its row lock
    /// (`None`: nothing to do).
    pub(crate) async fn transition_by(
        &self,
        run: &RunRecord,
        repo: &RepoName,
        event_of: impl Fn(&Spoke) -> Option<SpokeEvent> + Send + Sync + 'static,
    ) -> StoreResult<TransitionRecord> {
        let policy = self.inner.config.policy_for(&run.task).clone();
        let now = now_ms();
        let record = self
            .inner
            .store
            .transition(&run.id, repo, move |spoke| {
                let ctx = TransitionContext {
                    now,
                    policy: &policy,
                };
                match event_of(spoke) {
                    Some(event) => crate::hub::apply(spoke, event, &ctx),
                    None => Transition::Unchanged,
                }
            })
            .await?;
        // Drivers hear of changes from the store, in commit order (see `start`).
        if let Transition::Changed(s) | Transition::Conflict { spoke: s, .. } = &record.transition {
            if s.status.is_terminal() && !record.before.status.is_terminal() {
                let seconds = match (s.dispatched_at, s.finished_at) {
                    (Some(a), Some(b)) => Some((b - a) as f64 / 1000.0),
                    _ => None,
                };
                self.telemetry()
                    .spoke_ended(&run.task, s.status.as_str(), seconds);
            }
        }
        match &record.transition {
            Transition::Changed(_) => {}
            Transition::Conflict { detail, .. } => {
                self.inner.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%repo, detail, "conflicting report recorded");
            }
            Transition::Stale { detail } => tracing::info!(%repo, detail, "stale report recorded"),
            Transition::Invalid { detail } => tracing::debug!(%repo, detail, "event ignored"),
            Transition::Unchanged => {}
        }
        Ok(record)
    }

    /// A run's immutable identity (id, installation, hub repository, task, params), from
    /// memory after the first read. Not for its status, which changes.
    pub(crate) async fn run_identity(&self, id: &HubRunId) -> StoreResult<Option<Arc<RunRecord>>> {
        if let Some(run) = self.inner.known_runs.lock().expect("runs lock").get(id) {
            return Ok(Some(run.clone()));
        }
        let Some(run) = self.inner.store.run(id).await? else {
            return Ok(None);
        };
        self.telemetry().task_seen(&run.task);
        let run = Arc::new(run);
        self.inner
            .known_runs
            .lock()
            .expect("runs lock")
            .insert(*id, run.clone());
        Ok(Some(run))
    }

    fn tell_driver(&self, run: &HubRunId, spoke: Spoke) {
        if let Some(driver) = self.inner.drivers.lock().expect("drivers lock").get(run) {
            let _ = driver.tx.send(spoke);
        }
    }
}
