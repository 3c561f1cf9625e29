//! A spoke (one target repository of a hub run) and its state machine: [`apply`] is a pure
//! function of (spoke, event, time, policy) returning what to persist.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::policy::Policy;
use super::RepoName;

/// Where a spoke is in its life. See `design.md` ("Spoke state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpokeStatus {
    Planned,
    Skipped,
    Dispatching,
    Unknown,
    Dispatched,
    Running,
    RetryWait,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    DispatchFailed,
}

impl SpokeStatus {
    pub const ALL: [SpokeStatus; 12] = [
        SpokeStatus::Planned,
        SpokeStatus::Skipped,
        SpokeStatus::Dispatching,
        SpokeStatus::Unknown,
        SpokeStatus::Dispatched,
        SpokeStatus::Running,
        SpokeStatus::RetryWait,
        SpokeStatus::Succeeded,
        SpokeStatus::Failed,
        SpokeStatus::Cancelled,
        SpokeStatus::TimedOut,
        SpokeStatus::DispatchFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpokeStatus::Planned => "planned",
            SpokeStatus::Skipped => "skipped",
            SpokeStatus::Dispatching => "dispatching",
            SpokeStatus::Unknown => "unknown",
            SpokeStatus::Dispatched => "dispatched",
            SpokeStatus::Running => "running",
            SpokeStatus::RetryWait => "retry_wait",
            SpokeStatus::Succeeded => "succeeded",
            SpokeStatus::Failed => "failed",
            SpokeStatus::Cancelled => "cancelled",
            SpokeStatus::TimedOut => "timed_out",
            SpokeStatus::DispatchFailed => "dispatch_failed",
        }
    }

    /// No event but [`SpokeEvent::Rerun`] (for failed / timed_out) moves it any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SpokeStatus::Skipped
                | SpokeStatus::Succeeded
                | SpokeStatus::Failed
                | SpokeStatus::Cancelled
                | SpokeStatus::TimedOut
                | SpokeStatus::DispatchFailed
        )
    }

    /// A dispatch is (maybe) out and its run has not ended: dispatching, unknown, dispatched, running.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            SpokeStatus::Dispatching
                | SpokeStatus::Unknown
                | SpokeStatus::Dispatched
                | SpokeStatus::Running
        )
    }
}

impl fmt::Display for SpokeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown spoke status (or channel) string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown spoke status or channel {0:?}")]
pub struct ParseStatusError(pub String);

impl FromStr for SpokeStatus {
    type Err = ParseStatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpokeStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.chars().take(40).collect()))
    }
}

/// One target repository within a hub run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spoke {
    pub repo: RepoName,
    pub status: SpokeStatus,
    /// Skipped / dispatch_failed reason, failure detail, why it waits for a retry.
    pub reason: Option<String>,
    /// 0 before the first dispatch, then the current attempt (1, 2, ...).
    pub attempt: u32,
    /// The GitHub workflow run of the current attempt, once known.
    pub workflow_run_id: Option<u64>,
    /// Its `html_url`.
    pub run_url: Option<String>,
    /// When the current attempt was dispatched (unix ms).
    pub dispatched_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When the engine must look at this spoke next; `None` when nothing is scheduled.
    pub due_at: Option<i64>,
    /// Disagreeing reports recorded.
    pub conflicts: u32,
    /// The spoke's own summary of its current attempt (from its callback), as it sent it.
    pub summary: Option<String>,
    /// While it waits for a retry: how the attempt before ended (`failed` or `timed_out`);
    /// `None` for a re-run an operator asked for.
    #[serde(default)]
    pub retry_after: Option<SpokeStatus>,
    /// Pulled work: the worker's lease on the current attempt while it runs it.
    #[serde(default)]
    pub lease: Option<Lease>,
}

/// A worker's hold on a pulled spoke's attempt (pull and hybrid models): one at a time, until
/// `until` unless heartbeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Names the lease in the work API (`/api/v1/work/{id}/...`).
    pub id: String,
    /// Who holds it (an agent's name, or a worker job).
    pub worker: String,
    /// Unix ms.
    pub until: i64,
}

impl Spoke {
    /// A selected target waiting for its first dispatch.
    pub fn planned(repo: RepoName) -> Self {
        Self {
            repo,
            status: SpokeStatus::Planned,
            reason: None,
            attempt: 0,
            workflow_run_id: None,
            run_url: None,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            due_at: None,
            conflicts: 0,
            summary: None,
            retry_after: None,
            lease: None,
        }
    }

    /// A repository that matched but will not run (archived, fork, no spoke workflow, ...).
    pub fn skipped(repo: RepoName, reason: impl Into<String>) -> Self {
        Self {
            status: SpokeStatus::Skipped,
            reason: Some(reason.into()),
            ..Self::planned(repo)
        }
    }

    /// Whether the engine should look at this spoke at `now` (its `due_at` has passed).
    pub fn is_due(&self, now: i64) -> bool {
        self.due_at.is_some_and(|d| d <= now)
    }

    /// Wall time of the current attempt, dispatch to finish, in ms.
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at?
            .checked_sub(self.dispatched_at?)
            .filter(|d| *d >= 0)
    }
}

/// How a report says a spoke's run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ReportOutcome {
    Running,
    Succeeded,
    Failed { detail: Option<String> },
    Cancelled,
}

impl ReportOutcome {
    /// From a workflow run conclusion (success, failure, neutral, cancelled, skipped, stale,
    /// timed_out, action_required, startup_failure) or a spoke callback status
    /// (success|failure|cancelled|...): success/neutral/skipped -> Succeeded, cancelled ->
    /// Cancelled, everything else -> Failed (with the conclusion as detail unless it is "failure").
    pub fn from_conclusion(s: &str) -> ReportOutcome {
        let c = s.trim().to_ascii_lowercase();
        match c.as_str() {
            "success" | "neutral" | "skipped" => ReportOutcome::Succeeded,
            "cancelled" => ReportOutcome::Cancelled,
            "failure" => ReportOutcome::Failed { detail: None },
            _ => ReportOutcome::Failed {
                detail: Some(c.chars().take(100).collect()),
            },
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, ReportOutcome::Running)
    }

    fn name(&self) -> &'static str {
        match self {
            ReportOutcome::Running => "running",
            ReportOutcome::Succeeded => "succeeded",
            ReportOutcome::Failed { .. } => "failed",
            ReportOutcome::Cancelled => "cancelled",
        }
    }
}

/// How a report reached the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The spoke's `repository_dispatch` callback.
    Callback,
    /// A `workflow_run` webhook.
    WorkflowRun,
    /// The reconciler's polling.
    Reconcile,
}

impl FromStr for Channel {
    type Err = ParseStatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Channel::Callback, Channel::WorkflowRun, Channel::Reconcile]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.chars().take(40).collect()))
    }
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Callback => "callback",
            Channel::WorkflowRun => "workflow_run",
            Channel::Reconcile => "reconcile",
        }
    }
}

/// Something that happened to a spoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpokeEvent {
    /// planned | retry_wait -> dispatching with attempt + 1; unknown (run not found) ->
    /// dispatching with the SAME attempt.
    DispatchStarted,
    /// dispatching | unknown -> dispatched; later (running, decided) it only fills a missing run id/url.
    DispatchAccepted {
        run_id: Option<u64>,
        run_url: Option<String>,
    },
    /// dispatching -> skipped("no spoke workflow").
    WorkflowMissing,
    /// dispatching -> dispatch_failed(message): a permanent rejection (404/422).
    DispatchRejected { message: String },
    /// dispatching -> unknown: the answer was lost; search for the run before re-dispatching.
    DispatchLost,
    /// A run reported on attempt `attempt`.
    Report {
        attempt: u32,
        run_id: Option<u64>,
        run_url: Option<String>,
        outcome: ReportOutcome,
        channel: Channel,
        /// The spoke's own summary (callbacks only).
        summary: Option<String>,
    },
    /// The spoke's due time passed: dispatching | unknown | dispatched | running -> retry_wait
    /// (retries left) or timed_out. `apply` does not compare `now` with `due_at`: the engine
    /// sends this only for spokes that are [`Spoke::is_due`].
    TimedOut,
    /// The hub run's overall timeout passed: any non-terminal -> timed_out, never retried.
    RunTimedOut,
    /// Any non-terminal -> cancelled.
    Cancel,
    /// Operator "re-run failed": failed | timed_out -> retry_wait due now (not limited by retry.limit).
    Rerun,
    /// Pulled work: planned | retry_wait -> dispatched (queued for a worker) with attempt + 1.
    Enqueue,
    /// Pulled work: a worker claims a queued attempt: dispatched -> running under `lease`.
    Claim { lease: Lease },
    /// The lease's worker is alive: its lease runs until `until` (never shortened).
    Heartbeat { lease_id: String, until: i64 },
    /// The lease's worker reports the attempt's end; refused as stale once the lease is lost.
    Complete {
        lease_id: String,
        outcome: ReportOutcome,
        summary: Option<String>,
    },
    /// The lease ran out (the worker died): the attempt ends as failed, retried by policy.
    LeaseExpired { lease_id: String },
}

/// What [`apply`] needs besides the spoke and the event.
#[derive(Debug, Clone, Copy)]
pub struct TransitionContext<'a> {
    pub now: i64,
    pub policy: &'a Policy,
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Persist this new spoke.
    Changed(Spoke),
    /// Duplicate or agreeing event: idempotent no-op.
    Unchanged,
    /// A disagreeing report for a decided attempt (or from a second run): `spoke` has
    /// conflicts + 1 and the same status; persist it and record the detail.
    Conflict { spoke: Spoke, detail: String },
    /// A report for an older (or already decided) attempt: record it, never change the spoke.
    Stale { detail: String },
    /// The event is not allowed in this state.
    Invalid { detail: String },
}

impl Transition {
    /// The spoke to persist, if any.
    pub fn spoke(&self) -> Option<&Spoke> {
        match self {
            Transition::Changed(s) | Transition::Conflict { spoke: s, .. } => Some(s),
            _ => None,
        }
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When the engine must look at a spoke in its current state next (see the task rules):
/// dispatching/dispatched -> dispatched_at + queued timeout, running -> started_at + running
/// timeout; unknown and retry_wait keep the time set by their transition; others -> None.
pub fn scheduled_due(spoke: &Spoke, policy: &Policy) -> Option<i64> {
    match spoke.status {
        SpokeStatus::Dispatching | SpokeStatus::Dispatched => spoke
            .dispatched_at
            .map(|t| t.saturating_add(ms(policy.timeouts.queued))),
        SpokeStatus::Running => {
            let timeout = spoke
                .started_at
                .map(|t| t.saturating_add(ms(policy.timeouts.running)));
            match (&spoke.lease, timeout) {
                (Some(l), Some(t)) => Some(t.min(l.until)),
                (Some(l), None) => Some(l.until),
                (None, t) => t,
            }
        }
        SpokeStatus::Unknown | SpokeStatus::RetryWait => spoke.due_at,
        _ => None,
    }
}

fn invalid(spoke: &Spoke, what: &str) -> Transition {
    Transition::Invalid {
        detail: format!("{what} not allowed for {} in {}", spoke.repo, spoke.status),
    }
}

/// Fills a missing run id/url; `Err` when a different run id is already known.
fn fill_run(s: &mut Spoke, run_id: Option<u64>, run_url: Option<String>) -> Result<(), String> {
    if let (Some(known), Some(new)) = (s.workflow_run_id, run_id) {
        if known != new {
            return Err(format!(
                "run {new} reported for attempt {} of {}, which run {known} owns \
                 (exactly one run owns a spoke attempt)",
                s.attempt, s.repo
            ));
        }
    }
    if s.workflow_run_id.is_none() {
        s.workflow_run_id = run_id;
    }
    if s.run_url.is_none() {
        s.run_url = run_url;
    }
    Ok(())
}

fn conflict(spoke: &Spoke, detail: String) -> Transition {
    let mut s = spoke.clone();
    s.conflicts = s.conflicts.saturating_add(1);
    Transition::Conflict { spoke: s, detail }
}

fn changed_or_unchanged(old: &Spoke, new: Spoke) -> Transition {
    if *old == new {
        Transition::Unchanged
    } else {
        Transition::Changed(new)
    }
}

/// Ends the current attempt as failed or timed out: retry_wait when retries are left, else `end`.
fn consume_attempt(
    mut s: Spoke,
    end: SpokeStatus,
    reason: String,
    ctx: &TransitionContext,
) -> Spoke {
    s.finished_at = Some(ctx.now);
    if ctx.policy.retry.allows_retry_after(s.attempt) {
        s.status = SpokeStatus::RetryWait;
        s.retry_after = Some(end);
        s.due_at = Some(
            ctx.now
                .saturating_add(ms(ctx.policy.retry.backoff(s.attempt))),
        );
    } else {
        s.status = end;
        s.due_at = None;
    }
    s.reason = Some(reason);
    s.lease = None;
    s
}

/// A new attempt: the previous one's run, summary and lease are forgotten.
fn begin_attempt(s: &mut Spoke) {
    s.attempt = s.attempt.saturating_add(1);
    s.workflow_run_id = None;
    s.run_url = None;
    s.summary = None;
    s.lease = None;
}

/// The attempt leaves now: dispatched to GitHub (`dispatching`) or queued for a worker
/// (`dispatched`), due when it has waited too long.
fn sent_off(mut s: Spoke, status: SpokeStatus, ctx: &TransitionContext) -> Spoke {
    s.status = status;
    s.reason = None;
    s.dispatched_at = Some(ctx.now);
    s.started_at = None;
    s.finished_at = None;
    s.due_at = scheduled_due(&s, ctx.policy);
    s
}

fn finish(mut s: Spoke, status: SpokeStatus, reason: Option<String>, now: i64) -> Spoke {
    s.lease = None;
    s.status = status;
    s.reason = reason;
    s.finished_at = Some(now);
    s.due_at = None;
    s
}

const FAILED: &str = "failed";
const TIMED_OUT: &str = "timed out";

fn failure_reason(detail: &Option<String>) -> String {
    match detail {
        Some(d) if !d.trim().is_empty() => format!("{FAILED}: {d}"),
        _ => FAILED.to_owned(),
    }
}

/// Applies `event` to `spoke`. Never panics; events that make no sense give `Invalid`.
pub fn apply(spoke: &Spoke, event: SpokeEvent, ctx: &TransitionContext) -> Transition {
    use SpokeStatus as S;
    let now = ctx.now;
    let mut s = spoke.clone();
    match event {
        SpokeEvent::DispatchStarted => match spoke.status {
            S::Planned | S::RetryWait | S::Unknown => {
                if spoke.status != S::Unknown {
                    begin_attempt(&mut s);
                }
                Transition::Changed(sent_off(s, S::Dispatching, ctx))
            }
            _ => invalid(spoke, "dispatch"),
        },
        SpokeEvent::DispatchAccepted { run_id, run_url } => match spoke.status {
            S::Dispatching | S::Unknown => {
                if let Err(d) = fill_run(&mut s, run_id, run_url) {
                    return conflict(spoke, d);
                }
                s.status = S::Dispatched;
                s.dispatched_at.get_or_insert(now);
                s.due_at = scheduled_due(&s, ctx.policy);
                Transition::Changed(s)
            }
            S::Dispatched
            | S::Running
            | S::RetryWait
            | S::Succeeded
            | S::Failed
            | S::TimedOut
            | S::Cancelled
                if spoke.attempt > 0 =>
            {
                match fill_run(&mut s, run_id, run_url) {
                    Ok(()) => changed_or_unchanged(spoke, s),
                    Err(d) => conflict(spoke, d),
                }
            }
            _ => invalid(spoke, "dispatch acceptance"),
        },
        SpokeEvent::WorkflowMissing => match spoke.status {
            S::Dispatching => {
                Transition::Changed(finish(s, S::Skipped, Some("no spoke workflow".into()), now))
            }
            _ => invalid(spoke, "workflow missing"),
        },
        SpokeEvent::DispatchRejected { message } => match spoke.status {
            S::Dispatching => Transition::Changed(finish(s, S::DispatchFailed, Some(message), now)),
            _ => invalid(spoke, "dispatch rejection"),
        },
        SpokeEvent::DispatchLost => match spoke.status {
            S::Dispatching => {
                s.status = S::Unknown;
                s.due_at = Some(now.saturating_add(ms(ctx.policy.unknown_search_delay)));
                Transition::Changed(s)
            }
            _ => invalid(spoke, "lost dispatch"),
        },
        SpokeEvent::Report {
            attempt,
            run_id,
            run_url,
            outcome,
            channel,
            summary,
        } => {
            let reported = Reported {
                attempt,
                run_id,
                run_url,
                outcome,
                channel,
                summary,
            };
            report(spoke, reported, ctx)
        }
        SpokeEvent::TimedOut => match spoke.status {
            S::Dispatching | S::Unknown | S::Dispatched | S::Running => {
                let phase = if spoke.status == S::Running {
                    "running"
                } else {
                    "queued"
                };
                let reason = format!("{TIMED_OUT} ({phase})");
                Transition::Changed(consume_attempt(s, S::TimedOut, reason, ctx))
            }
            _ => invalid(spoke, "timeout"),
        },
        SpokeEvent::RunTimedOut => {
            if spoke.status.is_terminal() {
                invalid(spoke, "run timeout")
            } else {
                let reason = Some(format!("{TIMED_OUT} (hub run overall timeout)"));
                Transition::Changed(finish(s, S::TimedOut, reason, now))
            }
        }
        SpokeEvent::Cancel => match spoke.status {
            S::Cancelled => Transition::Unchanged,
            st if st.is_terminal() => invalid(spoke, "cancel"),
            _ => Transition::Changed(finish(s, S::Cancelled, Some("cancelled".into()), now)),
        },
        SpokeEvent::Rerun => match spoke.status {
            S::Failed | S::TimedOut => {
                s.status = S::RetryWait;
                s.retry_after = None;
                s.reason = Some("re-run requested".into());
                s.due_at = Some(now);
                Transition::Changed(s)
            }
            _ => invalid(spoke, "re-run"),
        },
        SpokeEvent::Enqueue => match spoke.status {
            S::Planned | S::RetryWait => {
                begin_attempt(&mut s);
                Transition::Changed(sent_off(s, S::Dispatched, ctx))
            }
            _ => invalid(spoke, "enqueue"),
        },
        SpokeEvent::Claim { lease } => pulled::claim(spoke, lease, ctx),
        SpokeEvent::Heartbeat { lease_id, until } => {
            pulled::heartbeat(spoke, &lease_id, until, ctx)
        }
        SpokeEvent::Complete {
            lease_id,
            outcome,
            summary,
        } => pulled::complete(spoke, &lease_id, outcome, summary, ctx),
        SpokeEvent::LeaseExpired { lease_id } => pulled::expired(spoke, &lease_id, ctx),
    }
}

/// The transitions of pulled work: a queued attempt is claimed under a lease, heartbeated,
/// completed by the lease's holder while the lease lasts, or ended when the lease runs out.
mod pulled {
    use super::*;

    /// The spoke's live lease named `lease_id` (`None`: another, none, or run out at `now`).
    fn live<'s>(spoke: &'s Spoke, lease_id: &str, now: i64) -> Option<&'s Lease> {
        spoke
            .lease
            .as_ref()
            .filter(|l| l.id == lease_id && l.until > now && spoke.status == SpokeStatus::Running)
    }

    pub(super) fn claim(spoke: &Spoke, lease: Lease, ctx: &TransitionContext) -> Transition {
        match spoke.status {
            SpokeStatus::Dispatched if spoke.lease.is_none() => {
                let mut s = spoke.clone();
                s.status = SpokeStatus::Running;
                s.started_at = Some(ctx.now);
                s.reason = None;
                s.lease = Some(lease);
                s.due_at = scheduled_due(&s, ctx.policy);
                Transition::Changed(s)
            }
            SpokeStatus::Running if spoke.lease.as_ref().is_some_and(|l| l.id == lease.id) => {
                Transition::Unchanged
            }
            _ => invalid(spoke, "claim"),
        }
    }

    pub(super) fn heartbeat(
        spoke: &Spoke,
        lease_id: &str,
        until: i64,
        ctx: &TransitionContext,
    ) -> Transition {
        let Some(lease) = live(spoke, lease_id, ctx.now) else {
            return invalid(spoke, "heartbeat of a lost lease");
        };
        if until <= lease.until {
            return Transition::Unchanged;
        }
        let mut s = spoke.clone();
        if let Some(l) = s.lease.as_mut() {
            l.until = until;
        }
        s.due_at = scheduled_due(&s, ctx.policy);
        Transition::Changed(s)
    }

    pub(super) fn complete(
        spoke: &Spoke,
        lease_id: &str,
        outcome: ReportOutcome,
        summary: Option<String>,
        ctx: &TransitionContext,
    ) -> Transition {
        let what = format!(
            "{} result of lease {lease_id} for {}",
            outcome.name(),
            spoke.repo
        );
        if live(spoke, lease_id, ctx.now).is_none() {
            return Transition::Stale {
                detail: format!("{what}: the lease is no longer held"),
            };
        }
        if !outcome.is_final() {
            return invalid(spoke, "a result that is not final");
        }
        let mut s = spoke.clone();
        s.summary = summary;
        let next = match outcome {
            ReportOutcome::Succeeded => finish(s, SpokeStatus::Succeeded, None, ctx.now),
            ReportOutcome::Cancelled => {
                finish(s, SpokeStatus::Cancelled, Some("cancelled".into()), ctx.now)
            }
            ReportOutcome::Failed { detail } => {
                consume_attempt(s, SpokeStatus::Failed, failure_reason(&detail), ctx)
            }
            ReportOutcome::Running => return invalid(spoke, "a result that is not final"),
        };
        Transition::Changed(next)
    }

    pub(super) fn expired(spoke: &Spoke, lease_id: &str, ctx: &TransitionContext) -> Transition {
        match &spoke.lease {
            Some(l) if l.id == lease_id && spoke.status == SpokeStatus::Running => {
                if l.until > ctx.now {
                    return invalid(spoke, "expiry of a lease that still runs");
                }
                let reason = format!("{FAILED}: the worker's lease ran out ({})", l.worker);
                Transition::Changed(consume_attempt(
                    spoke.clone(),
                    SpokeStatus::Failed,
                    reason,
                    ctx,
                ))
            }
            // Already ended another way (completed, cancelled, timed out): nothing to do.
            _ => Transition::Unchanged,
        }
    }
}

/// Whether `after` only renews `before`'s lease (a heartbeat): news for no one but the
/// spoke's own timers (not logged, not a reason to update the check run).
pub fn is_renewal(before: &Spoke, after: &Spoke) -> bool {
    let (Some(old), Some(new)) = (&before.lease, &after.lease) else {
        return false;
    };
    let mut renewed = after.clone();
    renewed.lease = Some(Lease {
        until: old.until,
        ..new.clone()
    });
    renewed.due_at = before.due_at;
    old.id == new.id && renewed == *before
}

/// What ends a pulled spoke whose due time has passed at `now`: its worker's lease ran out
/// ([`SpokeEvent::LeaseExpired`]), or it waited in the queue or ran too long
/// ([`SpokeEvent::TimedOut`]). `None` when it is not due (a heartbeat moved it on).
pub fn pulled_due_event(spoke: &Spoke, now: i64) -> Option<SpokeEvent> {
    if !spoke.is_due(now) {
        return None;
    }
    match (spoke.status, &spoke.lease) {
        (SpokeStatus::Running, Some(l)) if l.until <= now => Some(SpokeEvent::LeaseExpired {
            lease_id: l.id.clone(),
        }),
        (SpokeStatus::Dispatched | SpokeStatus::Running, _) => Some(SpokeEvent::TimedOut),
        _ => None,
    }
}

/// The outcome a decided spoke's current attempt ended with, if it is known from its state.
fn decided_outcome(spoke: &Spoke) -> Option<&'static str> {
    match spoke.status {
        SpokeStatus::Succeeded => Some("succeeded"),
        SpokeStatus::Failed => Some("failed"),
        SpokeStatus::Cancelled => Some("cancelled"),
        _ => None,
    }
}

/// The fields of a [`SpokeEvent::Report`].
struct Reported {
    attempt: u32,
    run_id: Option<u64>,
    run_url: Option<String>,
    outcome: ReportOutcome,
    channel: Channel,
    summary: Option<String>,
}

/// Why a callback whose token is genuine is not believed: a token is good only for its own
/// attempt, and only until that attempt has ended (a replay cannot change a decided spoke or
/// count as a conflict). An agreeing late callback is admitted (it may carry the summary).
pub fn callback_closed(spoke: &Spoke, attempt: u32, outcome: &ReportOutcome) -> Option<String> {
    use SpokeStatus as S;
    if attempt < spoke.attempt {
        return Some(format!(
            "the callback token is for attempt {attempt}; the current attempt is {}",
            spoke.attempt
        ));
    }
    if attempt != spoke.attempt || !outcome.is_final() {
        return None;
    }
    let agrees = match (spoke.status, outcome) {
        (S::Succeeded, ReportOutcome::Succeeded) | (S::Cancelled, ReportOutcome::Cancelled) => true,
        (S::Failed, ReportOutcome::Failed { .. }) => true,
        (S::RetryWait, ReportOutcome::Failed { .. }) => spoke.retry_after == Some(S::Failed),
        (S::Succeeded | S::Failed | S::Cancelled | S::TimedOut | S::RetryWait, _) => false,
        _ => true,
    };
    (!agrees).then(|| {
        format!(
            "the callback's attempt {attempt} has already ended as {}",
            spoke.status
        )
    })
}

fn report(spoke: &Spoke, r: Reported, ctx: &TransitionContext) -> Transition {
    use SpokeStatus as S;
    let Reported {
        attempt,
        run_id,
        run_url,
        outcome,
        channel,
        summary,
    } = r;
    let now = ctx.now;
    let what = format!(
        "{} report via {} for attempt {attempt} of {}",
        outcome.name(),
        channel.as_str(),
        spoke.repo
    );
    if attempt < spoke.attempt {
        return Transition::Stale {
            detail: format!("{what}: the current attempt is {}", spoke.attempt),
        };
    }
    if attempt > spoke.attempt || attempt == 0 {
        return Transition::Invalid {
            detail: format!("{what}: the current attempt is {}", spoke.attempt),
        };
    }
    let mut s = spoke.clone();
    match spoke.status {
        S::Dispatching | S::Unknown | S::Dispatched | S::Running => {
            if let Err(d) = fill_run(&mut s, run_id, run_url) {
                return conflict(spoke, format!("{what}: {d}"));
            }
            s.dispatched_at.get_or_insert(now);
            if outcome.is_final() && summary.is_some() {
                s.summary = summary;
            }
            let next = match outcome {
                ReportOutcome::Running => {
                    s.status = S::Running;
                    s.started_at.get_or_insert(now);
                    s.due_at = scheduled_due(&s, ctx.policy);
                    s
                }
                ReportOutcome::Succeeded => finish(s, S::Succeeded, None, now),
                ReportOutcome::Cancelled => finish(s, S::Cancelled, Some("cancelled".into()), now),
                ReportOutcome::Failed { detail } => {
                    let reason = failure_reason(&detail);
                    consume_attempt(s, S::Failed, reason, ctx)
                }
            };
            changed_or_unchanged(spoke, next)
        }
        S::Succeeded | S::Failed | S::Cancelled | S::TimedOut | S::RetryWait => {
            if !outcome.is_final() {
                // A late "running" for an attempt that already ended.
                return Transition::Unchanged;
            }
            let decided = decided_outcome(spoke);
            if decided.is_none() {
                // timed_out / retry_wait: the hub already decided this attempt.
                let failed_before =
                    spoke.status == S::RetryWait && spoke.retry_after == Some(S::Failed);
                if failed_before && matches!(outcome, ReportOutcome::Failed { .. }) {
                    return Transition::Unchanged;
                }
                return Transition::Stale {
                    detail: format!("{what}: attempt already decided as {}", spoke.status),
                };
            }
            if let Err(d) = fill_run(&mut s, run_id, run_url) {
                return conflict(spoke, format!("{what}: {d}"));
            }
            if decided == Some(outcome.name()) {
                if s.summary.is_none() {
                    s.summary = summary;
                }
                changed_or_unchanged(spoke, s)
            } else {
                conflict(
                    spoke,
                    format!("{what}: attempt already decided as {}", spoke.status),
                )
            }
        }
        S::Planned | S::Skipped | S::DispatchFailed => invalid(spoke, &what),
    }
}

#[cfg(test)]
#[path = "spoke_tests.rs"]
mod tests;
