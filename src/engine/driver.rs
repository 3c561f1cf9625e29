//! One driver per active hub run: plans it, keeps `concurrency` spoke tasks in flight, wakes
//! spokes at their `due_at` (retries, searches, deadlines), keeps the check run current (only
//! when something changed, at most every 2 seconds) and completes the run when every spoke is
//! terminal. Its view of the spokes is loaded once and then kept current by the transitions the
//! engine hands it, so a 10,000-spoke run costs no re-reads.
//!
//! Reconciliation: a dispatched or running spoke with no news for `reconcile_after` is read
//! back from GitHub (webhooks get lost), at most `reconcile_rate` read-backs per second per
//! installation. These checks live only in memory: after a restart every waiting spoke is
//! read back anyway.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::checks;
use super::plan::PlanError;
use super::{AbortOnDrop, DriveEnd, Engine};
use crate::github::{CheckRunOutput, CheckRunRequest, InstallationClient};
use crate::hub::{
    conclude, render, Conclusion, HubRunId, RepoName, RunMode, RunStatus, Spoke, SpokeEvent,
    SpokeStatus, SummaryContext, Totals,
};
use crate::store::{now_ms, RunRecord, SpokeRecord};

/// The check run is updated at most this often per run.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(2);
/// A hybrid run looks at most this often whether its items need another worker run.
const WORKERS_CHECK: Duration = Duration::from_secs(1);
/// Back-off of spoke work that failed transiently (the spoke's row keeps the work itself: a
/// driver that takes the run over finds it due).
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// What a spoke task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Dispatch,
    Search,
    Reconcile,
    /// A pulled spoke's time has come: its queued or running timeout, or its lease ran out.
    Expire,
}

/// What a finished piece of spoke work did to the spoke's flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// A dispatch moved the spoke into flight (its update is on the way).
    Started,
    /// A dispatch found nothing to do.
    NotStarted,
    /// A search or a read-back, or work that failed and was put back.
    NotADispatch,
}

impl From<bool> for Launch {
    fn from(started: bool) -> Self {
        if started {
            Launch::Started
        } else {
            Launch::NotStarted
        }
    }
}

/// The driver's in-memory view of a run's spokes.
struct RunView {
    spokes: HashMap<RepoName, Spoke>,
    branches: HashMap<RepoName, String>,
    /// (due_at, repo); stale entries are skipped when popped.
    due: BinaryHeap<Reverse<(i64, RepoName)>>,
    /// Searches and read-backs of spokes already in flight.
    queue: VecDeque<(RepoName, Work)>,
    /// Spokes waiting to be dispatched (a first attempt, or a retry whose time has come).
    dispatches: VecDeque<RepoName>,
    busy: HashSet<RepoName>,
    /// Spokes not yet terminal, kept current on every update (the run ends at zero).
    open: usize,
    /// Spokes in flight (dispatching, unknown, dispatched, running), kept current.
    in_flight: usize,
    /// Spokes whose dispatch task started but whose new state the view has not seen yet:
    /// counted as in flight, so `concurrency` holds while answers travel.
    launching: HashSet<RepoName>,
    /// Overdue checks of waiting spokes: (check_at, repo); stale entries are skipped.
    checks: BinaryHeap<Reverse<(i64, RepoName)>>,
    check_at: HashMap<RepoName, i64>,
    /// The current gap between read-backs of a spoke with no news (it doubles each time).
    check_gap: HashMap<RepoName, i64>,
    reconcile_after_ms: i64,
    /// The run's spokes are pulled by workers: nothing is read back from GitHub.
    pulled: bool,
}

/// A spoke that waits for news from GitHub (a webhook or a callback).
fn awaits_report(status: SpokeStatus) -> bool {
    matches!(status, SpokeStatus::Dispatched | SpokeStatus::Running)
}

impl RunView {
    fn new(records: Vec<SpokeRecord>, reconcile_after: Duration, pulled: bool) -> Self {
        let mut view = RunView {
            spokes: HashMap::with_capacity(records.len()),
            branches: HashMap::with_capacity(records.len()),
            due: BinaryHeap::new(),
            queue: VecDeque::new(),
            dispatches: VecDeque::new(),
            busy: HashSet::new(),
            open: 0,
            in_flight: 0,
            launching: HashSet::new(),
            checks: BinaryHeap::new(),
            check_at: HashMap::new(),
            check_gap: HashMap::new(),
            reconcile_after_ms: reconcile_after.as_millis().min(i64::MAX as u128) as i64,
            pulled,
        };
        let mut names: Vec<_> = records.iter().map(|r| r.spoke.repo.clone()).collect();
        names.sort();
        for r in records {
            view.branches
                .insert(r.spoke.repo.clone(), r.default_branch.clone());
            view.update(r.spoke);
        }
        // Planned spokes dispatch in name order.
        for name in names {
            if view.spokes[&name].status == SpokeStatus::Planned {
                view.dispatches.push_back(name);
            }
        }
        view
    }

    /// A change heard from the ledger; one the view holds already is no news (with a shared
    /// ledger a change may be read more than once). Returns whether it is news for the check
    /// run (a lease's renewal is not).
    fn hear(&mut self, spoke: Spoke) -> bool {
        let news = match self.spokes.get(&spoke.repo) {
            Some(old) if *old == spoke => return false,
            Some(old) => !crate::hub::is_renewal(old, &spoke),
            None => true,
        };
        self.update(spoke);
        news
    }

    fn update(&mut self, spoke: Spoke) {
        if let Some(due) = spoke.due_at {
            self.due.push(Reverse((due, spoke.repo.clone())));
        }
        if awaits_report(spoke.status) && !self.pulled {
            // News: the next read-back is due `reconcile_after` from now.
            self.check_gap.remove(&spoke.repo);
            self.schedule_check(spoke.repo.clone(), now_ms());
        } else {
            self.check_at.remove(&spoke.repo);
            self.check_gap.remove(&spoke.repo);
        }
        let now_open = !spoke.status.is_terminal();
        let now_in_flight = spoke.status.is_in_flight();
        if !matches!(spoke.status, SpokeStatus::Planned | SpokeStatus::RetryWait) {
            self.launching.remove(&spoke.repo);
        }
        if let Some(old) = self.spokes.insert(spoke.repo.clone(), spoke) {
            if !old.status.is_terminal() {
                self.open -= 1;
            }
            if old.status.is_in_flight() {
                self.in_flight -= 1;
            }
        }
        if now_open {
            self.open += 1;
        }
        if now_in_flight {
            self.in_flight += 1;
        }
    }

    /// Whether one more spoke may be dispatched under `concurrency`.
    fn has_room(&self, concurrency: usize) -> bool {
        self.in_flight + self.launching.len() < concurrency.max(1)
    }

    fn schedule_check(&mut self, repo: RepoName, now: i64) {
        let gap = *self
            .check_gap
            .get(&repo)
            .unwrap_or(&self.reconcile_after_ms);
        let at = now.saturating_add(gap);
        self.check_at.insert(repo.clone(), at);
        self.checks.push(Reverse((at, repo)));
    }

    /// The first spoke whose read-back is due at `now` (stale entries are dropped).
    fn peek_check(&mut self, now: i64) -> Option<RepoName> {
        while let Some(Reverse((at, repo))) = self.checks.peek() {
            if *at > now {
                return None;
            }
            let valid = self.check_at.get(repo) == Some(at)
                && self
                    .spokes
                    .get(repo)
                    .is_some_and(|s| awaits_report(s.status));
            if valid {
                return Some(repo.clone());
            }
            self.checks.pop();
        }
        None
    }

    /// Queues the read-back of `repo` (the result of [`Self::peek_check`]) and schedules the
    /// next one, in case this one finds the run still going.
    fn start_check(&mut self, repo: RepoName, now: i64) {
        self.checks.pop();
        // No news since the last look: look again later and later (a long spoke must not
        // cost a request every `reconcile_after`), up to 32 times the first gap.
        let first = self.reconcile_after_ms;
        let gap = self.check_gap.entry(repo.clone()).or_insert(first);
        *gap = gap.saturating_mul(2).min(first.saturating_mul(32));
        self.schedule_check(repo.clone(), now);
        if !self.queue.iter().any(|(r, _)| *r == repo) {
            self.queue.push_back((repo, Work::Reconcile));
        }
    }

    /// Moves spokes whose time has come into the work queue.
    fn wake_due(&mut self, now: i64) {
        while let Some(Reverse((due, _))) = self.due.peek() {
            if *due > now {
                break;
            }
            let Reverse((due, repo)) = self.due.pop().expect("peeked");
            let Some(spoke) = self.spokes.get(&repo) else {
                continue;
            };
            if spoke.due_at != Some(due) {
                continue; // superseded by a later transition
            }
            let work = match spoke.status {
                // A retry whose time has come, or a first dispatch that was put back after
                // trouble.
                SpokeStatus::RetryWait | SpokeStatus::Planned => {
                    self.dispatches.push_back(repo);
                    continue;
                }
                SpokeStatus::Unknown => Work::Search,
                SpokeStatus::Dispatched | SpokeStatus::Running if self.pulled => Work::Expire,
                SpokeStatus::Dispatched | SpokeStatus::Running => Work::Reconcile,
                _ => continue,
            };
            self.queue.push_back((repo, work));
        }
    }

    /// When the driver must look again: the next due time or read-back, or when the pacer
    /// frees a slot (`paced_until`) if read-backs are waiting for one.
    fn next_due(&self, paced_until: Option<i64>) -> Option<i64> {
        let due = self.due.peek().map(|Reverse((due, _))| *due);
        let check = paced_until.or(self.checks.peek().map(|Reverse((at, _))| *at));
        match (due, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether items wait for a worker, and when one was last claimed.
    fn queued_work(&self) -> super::pulled::QueuedWork {
        let mut work = super::pulled::QueuedWork {
            queued: false,
            last_claim_at: None,
        };
        for s in self.spokes.values() {
            work.queued |= s.status == SpokeStatus::Dispatched && s.lease.is_none();
            if s.lease.is_some() || s.finished_at.is_some() {
                work.last_claim_at = work.last_claim_at.max(s.started_at);
            }
        }
        work
    }

    fn totals(&self) -> Totals {
        Totals::of(self.spokes.values())
    }

    fn sorted(&self) -> Vec<Spoke> {
        let mut v: Vec<Spoke> = self.spokes.values().cloned().collect();
        v.sort_by(|a, b| a.repo.cmp(&b.repo));
        v
    }
}

impl Engine {
    pub(super) async fn drive(
        &self,
        id: HubRunId,
        tx: UnboundedSender<Spoke>,
        mut updates: UnboundedReceiver<Spoke>,
    ) -> anyhow::Result<DriveEnd> {
        let mut run = self.load_run(&id).await?;
        self.telemetry().task_seen(&run.task);
        let resumed = run.status == RunStatus::Active;
        // Trouble that may pass (GitHub or the database) ends the driver with an error: the run's
        // lease is released with the error and a back-off, and it is claimed again (here or on
        // another replica) under the ledger's one retry policy.
        if run.status == RunStatus::Planning {
            match self.plan(&run).await {
                Ok(()) => {}
                Err(PlanError::Fatal(reason)) => {
                    tracing::warn!(reason, "run cannot be planned");
                    self.fail_run(&run, &reason).await?;
                    return Ok(DriveEnd::Completed);
                }
                Err(PlanError::Retry(e)) => return Err(e.context("planning failed")),
            }
            run = self.load_run(&id).await?;
        }
        if run.status == RunStatus::Completed {
            return Ok(DriveEnd::Completed);
        }
        let client = self
            .inner
            .github
            .installation(run.installation_id)
            .await
            .context("cannot reach the installation")?;
        let reconcile_after = self.config().policy_for(&run.task).reconcile_after;
        // With a shared ledger, changes are read from it, from a mark taken before the spokes.
        let mark = self.store().change_mark().await?;
        let pulled = run.mode.is_pulled();
        let mut view = RunView::new(self.store().spokes(&id).await?, reconcile_after, pulled);
        let _follower = self.store().is_shared().then(|| {
            let engine = self.clone();
            AbortOnDrop(tokio::spawn(async move {
                engine.follow_changes(id, mark, tx).await
            }))
        });
        if run.dry_run {
            self.complete_dry_run(&run, &client, &view).await?;
            return Ok(DriveEnd::Completed);
        }
        if resumed && !pulled {
            self.recover(&run, &mut view).await?;
        }
        self.run_loop(&run, &client, &mut view, &mut updates).await
    }

    async fn load_run(&self, id: &HubRunId) -> anyhow::Result<RunRecord> {
        self.store()
            .run(id)
            .await?
            .with_context(|| format!("run {id} vanished"))
    }

    /// After a restart: a spoke left `dispatching` may or may not have been dispatched, so it is
    /// searched for before anything is sent again; spokes that were waiting may have finished
    /// while the hub was down (webhooks to it failed), so they are read back, paced like any
    /// other read-back.
    async fn recover(&self, run: &RunRecord, view: &mut RunView) -> anyhow::Result<()> {
        let mut names: Vec<RepoName> = view.spokes.keys().cloned().collect();
        names.sort();
        for repo in names {
            match view.spokes[&repo].status {
                SpokeStatus::Dispatching => {
                    let rec = self
                        .transition(run, &repo, SpokeEvent::DispatchLost)
                        .await?;
                    view.update(rec.current().clone());
                }
                SpokeStatus::Dispatched | SpokeStatus::Running => {
                    // Read back now, within the read-back budget.
                    let now = now_ms();
                    view.check_at.insert(repo.clone(), now);
                    view.checks.push(Reverse((now, repo)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn run_loop(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        view: &mut RunView,
        updates: &mut UnboundedReceiver<Spoke>,
    ) -> anyhow::Result<DriveEnd> {
        let policy = self.config().policy_for(&run.task).clone();
        let mut tasks: JoinSet<(RepoName, Launch)> = JoinSet::new();
        let mut task_repos: HashMap<tokio::task::Id, RepoName> = HashMap::new();
        let mut dirty = true;
        let mut last_summary: Option<Instant> = None;
        // Pulled work was queued since the last look: waiting workers are told.
        let mut queued = false;
        // Hybrid: when the run's worker runs were last looked at.
        let mut workers_checked: Option<Instant> = None;
        loop {
            while let Ok(spoke) = updates.try_recv() {
                dirty |= view.hear(spoke);
            }
            if std::mem::take(&mut queued) {
                self.work_queued(run).await;
            }
            if run.mode == RunMode::Hybrid
                && workers_checked.is_none_or(|t: Instant| t.elapsed() >= WORKERS_CHECK)
            {
                workers_checked = Some(Instant::now());
                if let Err(e) = self.ensure_workers(run, client, view.queued_work()).await {
                    tracing::warn!(error = format!("{e:#}"), "cannot check the run's workers");
                }
            }
            let now = now_ms();
            if now >= run.deadline_at {
                self.time_out_everything(run, client, view).await?;
                dirty = true;
            }
            view.wake_due(now);
            let mut paced_until = None;
            while let Some(repo) = view.peek_check(now) {
                match self
                    .inner
                    .pacer
                    .take(run.installation_id, policy.reconcile_rate, now)
                {
                    Ok(()) => view.start_check(repo, now),
                    Err(free_at) => {
                        paced_until = Some(free_at);
                        break;
                    }
                }
            }
            // Stopping: no new work; the requests in hand finish and are recorded.
            if self.is_stopping() {
                while tasks.join_next().await.is_some() {}
                return Ok(DriveEnd::Stopped);
            }
            // Work on a spoke that is already being worked on waits for that to finish.
            // Searches and read-backs first (their spokes are in flight already), then new
            // dispatches while fewer than `concurrency` spokes are in flight.
            let mut deferred = Vec::new();
            let mut deferred_dispatches = Vec::new();
            while tasks.len() < policy.api_concurrency.max(1) {
                let (repo, work) = if let Some(item) = view.queue.pop_front() {
                    item
                } else if view.has_room(policy.concurrency) {
                    match view.dispatches.pop_front() {
                        // Only a spoke still waiting for its dispatch (an entry may be stale:
                        // the spoke moved on since it was queued).
                        Some(repo)
                            if matches!(
                                view.spokes.get(&repo).map(|s| s.status),
                                Some(SpokeStatus::Planned | SpokeStatus::RetryWait)
                            ) =>
                        {
                            (repo, Work::Dispatch)
                        }
                        Some(_) => continue,
                        None => break,
                    }
                } else {
                    break;
                };
                if !view.busy.insert(repo.clone()) {
                    match work {
                        Work::Dispatch => deferred_dispatches.push(repo),
                        _ => deferred.push((repo, work)),
                    }
                    continue;
                }
                if work == Work::Dispatch {
                    view.launching.insert(repo.clone());
                }
                let engine = self.clone();
                let (run, client) = (run.clone(), client.clone());
                let branch = view.branches.get(&repo).cloned().unwrap_or_default();
                let task_repo = repo.clone();
                let handle = tasks.spawn(async move {
                    let result = match work {
                        Work::Dispatch if run.mode.is_pulled() => engine
                            .enqueue_spoke(&run, &repo)
                            .await
                            .map(Launch::from)
                            .map_err(anyhow::Error::from),
                        Work::Expire => engine
                            .expire_pulled(&run, &repo)
                            .await
                            .map(|()| Launch::NotADispatch)
                            .map_err(anyhow::Error::from),
                        Work::Dispatch => engine
                            .dispatch_spoke(&run, &client, &repo, &branch)
                            .await
                            .map(Launch::from),
                        Work::Search => engine
                            .search_lost_dispatch(&run, &client, &repo, &branch)
                            .await
                            .map(|()| Launch::NotADispatch),
                        Work::Reconcile => engine
                            .reconcile_spoke(&run, &client, &repo)
                            .await
                            .map(|()| Launch::NotADispatch),
                    };
                    match result {
                        Ok(launch) => (repo, launch),
                        Err(e) => {
                            tracing::warn!(%repo, ?work, error = format!("{e:#}"), "spoke work failed; will retry");
                            engine.requeue_later(&run, &repo, work).await;
                            (repo, Launch::NotADispatch)
                        }
                    }
                });
                task_repos.insert(handle.id(), task_repo);
            }
            for item in deferred.into_iter().rev() {
                view.queue.push_front(item);
            }
            for repo in deferred_dispatches.into_iter().rev() {
                view.dispatches.push_front(repo);
            }
            let finished = view.open == 0
                && tasks.is_empty()
                && view.queue.is_empty()
                && view.dispatches.is_empty();
            let summary_due = last_summary.is_none_or(|t| t.elapsed() >= SUMMARY_INTERVAL);
            if finished && self.complete_run(run, client, view).await? {
                return Ok(DriveEnd::Completed);
            }
            if dirty && summary_due {
                self.post_progress(run, client, view).await;
                dirty = false;
                last_summary = Some(Instant::now());
            }
            // Past the deadline everything has been timed out: no need to wake for it again.
            let deadline = if now < run.deadline_at {
                run.deadline_at
            } else {
                i64::MAX
            };
            let mut wake = view.next_due(paced_until).unwrap_or(i64::MAX).min(deadline);
            if dirty {
                let at = last_summary.map_or(Instant::now(), |t| t + SUMMARY_INTERVAL);
                let in_ms = at.saturating_duration_since(Instant::now()).as_millis() as i64;
                wake = wake.min(now + in_ms);
            }
            let mut sleep_ms = (wake - now).clamp(0, 60_000) as u64;
            if run.mode == RunMode::Hybrid {
                // Its workers are looked at every WORKERS_CHECK.
                sleep_ms = sleep_ms.min(WORKERS_CHECK.as_millis() as u64);
            }
            tokio::select! {
                Some(spoke) = updates.recv() => {
                    dirty |= view.hear(spoke);
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    match done {
                        Ok((id, (repo, launch))) => {
                            task_repos.remove(&id);
                            view.busy.remove(&repo);
                            queued |= launch == Launch::Started && view.pulled;
                            // A dispatch that changed nothing (the spoke moved on meanwhile)
                            // sends no update: it no longer counts as in flight.
                            if launch != Launch::Started {
                                view.launching.remove(&repo);
                            }
                        }
                        Err(e) => {
                            // A task that panicked: its spoke is free again; what it committed
                            // reached the view as updates.
                            if let Some(repo) = task_repos.remove(&e.id()) {
                                tracing::error!(%repo, error = %e, "spoke work panicked");
                                view.busy.remove(&repo);
                                view.launching.remove(&repo);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = self.stopped() => {}
            }
        }
    }

    /// Spoke work that failed transiently (GitHub or database trouble) is tried again later by
    /// pushing its due time forward.
    async fn requeue_later(&self, run: &RunRecord, repo: &RepoName, work: Work) {
        tokio::time::sleep(RETRY_DELAY).await;
        if let Ok(Some(rec)) = self.store().spoke(&run.id, repo).await {
            let mut spoke = rec.spoke;
            if spoke.status == SpokeStatus::Dispatching {
                // The dispatch may or may not have gone out: search before sending again.
                if let Err(e) = self.transition(run, repo, SpokeEvent::DispatchLost).await {
                    tracing::warn!(%repo, error = %e, "cannot mark an interrupted dispatch");
                }
                return;
            }
            let again = match work {
                Work::Dispatch => {
                    matches!(spoke.status, SpokeStatus::Planned | SpokeStatus::RetryWait)
                }
                Work::Search => spoke.status == SpokeStatus::Unknown,
                Work::Reconcile => false,
                Work::Expire => {
                    matches!(spoke.status, SpokeStatus::Dispatched | SpokeStatus::Running)
                }
            };
            if again {
                spoke.due_at = Some(now_ms());
                self.tell_driver(&run.id, spoke);
            }
        }
    }

    /// The overall deadline passed: every spoke still open times out (its remote run is
    /// cancelled when the policy says so).
    async fn time_out_everything(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        view: &mut RunView,
    ) -> anyhow::Result<()> {
        let open: Vec<RepoName> = view
            .spokes
            .values()
            .filter(|s| !s.status.is_terminal())
            .map(|s| s.repo.clone())
            .collect();
        let cancel = self.config().policy_for(&run.task).cancel_on_timeout;
        for repo in open {
            let run_id = view
                .spokes
                .get(&repo)
                .filter(|s| s.status.is_in_flight())
                .and_then(|s| s.workflow_run_id);
            // Past the run's deadline nothing is retried: every open spoke times out.
            let rec = self.transition(run, &repo, SpokeEvent::RunTimedOut).await?;
            view.update(rec.current().clone());
            if let (true, Some(id)) = (cancel, run_id) {
                if let Err(e) = client.cancel_run(&repo, id).await {
                    tracing::warn!(%repo, error = %e, "cannot cancel a spoke run past the run deadline");
                }
            }
        }
        view.queue.clear();
        Ok(())
    }

    /// The check run's title, summary and table for the run as the view sees it.
    fn summary_output(
        &self,
        run: &RunRecord,
        view: &RunView,
        status: RunStatus,
        conclusion: Option<Conclusion>,
    ) -> CheckRunOutput {
        let spokes = view.sorted();
        let details = self.details_url(&run.id);
        let output = render(
            &SummaryContext {
                hub_run_id: &run.id,
                task: &run.task,
                targets: &run.targets,
                status,
                conclusion,
                dry_run: run.dry_run,
                now: now_ms(),
                run_url: details.as_deref(),
            },
            &spokes,
        );
        CheckRunOutput {
            title: output.title,
            summary: output.summary,
            text: output.text,
        }
    }

    async fn post_progress(&self, run: &RunRecord, client: &InstallationClient, view: &RunView) {
        let Some(check_run_id) = self.check_run_of(&run.id).await else {
            return;
        };
        let req = checks::progress(self.summary_output(run, view, RunStatus::Active, None));
        if let Err(e) = client
            .update_check_run(&run.hub_repo, check_run_id, &req)
            .await
        {
            tracing::warn!(error = %e, "cannot update the check run");
        }
    }

    async fn check_run_of(&self, id: &HubRunId) -> Option<u64> {
        self.store().run(id).await.ok().flatten()?.check_run_id
    }

    /// Every spoke is terminal: the check run gets its conclusion and the run completes.
    async fn complete_run(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        view: &RunView,
    ) -> anyhow::Result<bool> {
        let totals = view.totals();
        let policy = self.config().policy_for(&run.task);
        let cancelled = self.load_run(&run.id).await?.cancel_requested;
        let conclusion = if cancelled {
            Conclusion::Cancelled
        } else {
            conclude(&totals, &policy.success_threshold)
        };
        let summary = self.summary_output(run, view, RunStatus::Completed, Some(conclusion));
        let rerun_button = !cancelled && totals.failed + totals.timed_out > 0;
        let req = checks::concluded(conclusion, summary, rerun_button);
        self.finish_check_run(run, client, &req).await?;
        if !self
            .store()
            .complete_settled_run(&run.id, conclusion.as_str())
            .await?
        {
            tracing::info!("spokes were reopened while completing; the run goes on");
            return Ok(false);
        }
        tracing::info!(
            conclusion = conclusion.as_str(),
            succeeded = totals.succeeded,
            failed = totals.failed,
            "run completed"
        );
        self.run_concluded(run, conclusion.as_str());
        Ok(true)
    }

    /// The final check-run update must land before the run completes: trouble that may pass
    /// ends the driver with an error, and the run is claimed again after the ledger's back-off
    /// (so it completes later, from whichever replica). A request GitHub refuses for good is
    /// logged, and the run completes anyway.
    async fn finish_check_run(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        req: &CheckRunRequest,
    ) -> anyhow::Result<()> {
        let Some(check_run_id) = self.check_run_of(&run.id).await else {
            return Ok(());
        };
        match client
            .update_check_run(&run.hub_repo, check_run_id, req)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => Err(e).context("cannot complete the check run"),
            Err(e) => {
                // The run's result stands in the hub; the check run stays as last posted.
                tracing::error!(error = %e, "GitHub refused the check run's final update");
                Ok(())
            }
        }
    }

    /// A dry run: the check run lists the targets, conclusion neutral; nothing is dispatched.
    async fn complete_dry_run(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        view: &RunView,
    ) -> anyhow::Result<()> {
        let summary =
            self.summary_output(run, view, RunStatus::Completed, Some(Conclusion::Neutral));
        let req = checks::concluded(Conclusion::Neutral, summary, false);
        self.finish_check_run(run, client, &req).await?;
        self.store()
            .complete_run(&run.id, Conclusion::Neutral.as_str(), Some("dry run"))
            .await?;
        tracing::info!("dry run completed");
        self.run_concluded(run, Conclusion::Neutral.as_str());
        Ok(())
    }

    /// A run that cannot go on: the check run (when there is one) says why.
    async fn fail_run(&self, run: &RunRecord, reason: &str) -> anyhow::Result<()> {
        let run = self.load_run(&run.id).await?;
        if let (Some(check_run_id), Ok(client)) = (
            run.check_run_id,
            self.inner.github.installation(run.installation_id).await,
        ) {
            let req = checks::failed(&run.task, &run.id, reason);
            if let Err(e) = client
                .update_check_run(&run.hub_repo, check_run_id, &req)
                .await
            {
                tracing::warn!(error = %e, "cannot report the failure on the check run");
            }
        }
        self.store()
            .complete_run(&run.id, Conclusion::Failure.as_str(), Some(reason))
            .await?;
        self.run_concluded(&run, Conclusion::Failure.as_str());
        Ok(())
    }

    /// Counts a concluded run and its duration (from its trigger).
    fn run_concluded(&self, run: &RunRecord, conclusion: &str) {
        let seconds = (now_ms() - run.created_at) as f64 / 1000.0;
        self.telemetry()
            .run_concluded(&run.task, conclusion, seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn read_backs_of_a_spoke_without_news_back_off() {
        let repo: RepoName = "acme/svc".parse().unwrap();
        let mut view = RunView::new(Vec::new(), Duration::from_millis(HOUR as u64), false);
        let mut spoke = Spoke::planned(repo.clone());
        spoke.status = SpokeStatus::Running;
        let now = now_ms();
        view.update(spoke.clone());
        assert_eq!(view.peek_check(now + HOUR - 1_000), None);
        assert_eq!(view.peek_check(now + HOUR + 1_000), Some(repo.clone()));
        // Nothing new after the first look: the next one waits twice as long, then four times.
        let t1 = now + HOUR + 1_000;
        view.start_check(repo.clone(), t1);
        assert_eq!(view.peek_check(t1 + 2 * HOUR - 1_000), None);
        assert_eq!(view.peek_check(t1 + 2 * HOUR), Some(repo.clone()));
        let t2 = t1 + 2 * HOUR;
        view.start_check(repo.clone(), t2);
        assert_eq!(view.peek_check(t2 + 4 * HOUR - 1_000), None);
        assert_eq!(view.peek_check(t2 + 4 * HOUR), Some(repo.clone()));
        // News resets the gap; a terminal spoke is not looked at any more.
        view.update(spoke.clone());
        let t3 = now_ms();
        assert_eq!(view.peek_check(t3 + HOUR - 1_000), None);
        assert_eq!(view.peek_check(t3 + HOUR + 1_000), Some(repo.clone()));
        spoke.status = SpokeStatus::Succeeded;
        view.update(spoke);
        assert_eq!(view.peek_check(t3 + 100 * HOUR), None);
    }
}
