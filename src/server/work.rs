//! The work API of pulled work (pull and hybrid tasks). A worker claims queued spoke attempts,
//! each under a lease of its own, heartbeats the lease while it works and completes it once:
//!
//! - `POST /api/v1/work/claim` `{"worker", "max", "wait_s"}`: 200 with items, or 204 when
//!   nothing was queued within `wait_s` (a long poll of at most 60 s that returns as soon as
//!   work is queued on any replica);
//! - `POST /api/v1/work/{lease_id}/heartbeat`: 200 with the new expiry; 409 once the lease is
//!   no longer held (its item was cancelled, timed out, or given to another worker);
//! - `POST /api/v1/work/{lease_id}/complete` `{"status": "success" | "failure", "summary"}`:
//!   200; 409 when the lease was lost, and the late result is recorded as stale.
//!
//! Who may ask is [`crate::work::worker`]'s question; every refusal is counted and logged
//! without the token.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::hub::{ReportOutcome, SpokeEvent, Transition};
use crate::store::{now_ms, StoreError};
use crate::work::claim::{claim as claim_work, lease_ms, run_of_lease, Claimed};
use crate::work::worker::{identify, Refused, Worker};

/// The longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most items one claim takes.
const MAX_ITEMS: usize = 100;
/// A waiting claim looks again this often even when no announcement arrives (one may be lost).
const SLOW_POLL: Duration = Duration::from_secs(5);
/// The longest summary kept from a completion (the check run's table shows less).
const MAX_SUMMARY: usize = 64 * 1024;

/// Why a work-API request was not done; renders itself as a status and a JSON message.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the lease is no longer held: its item was completed, cancelled, timed out or given to another worker")]
    LeaseLost,
    #[error("the hub cannot do this now; try again")]
    Unavailable,
    #[error("the run is over: there is no more work for its workers")]
    RunOver,
}

impl IntoResponse for WorkError {
    fn into_response(self) -> Response {
        let status = match self {
            WorkError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WorkError::Forbidden(_) => StatusCode::FORBIDDEN,
            WorkError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WorkError::LeaseLost => StatusCode::CONFLICT,
            WorkError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            WorkError::RunOver => StatusCode::GONE,
        };
        (status, Json(json!({ "message": self.to_string() }))).into_response()
    }
}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "the work API cannot reach the ledger");
        WorkError::Unavailable
    }
}

/// The sender of a request, or its refusal (counted and logged, never with the token).
async fn sender(engine: &Engine, headers: &HeaderMap, route: &str) -> Result<Worker, WorkError> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::api::bearer_token);
    match identify(engine, bearer).await {
        Ok(worker) => Ok(worker),
        Err(Refused::Store(e)) => Err(e.into()),
        Err(refused) => {
            engine
                .metrics()
                .work_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            engine.telemetry().work_refused(refused.reason());
            tracing::warn!(
                route,
                reason = refused.reason(),
                "work API request refused: {refused}"
            );
            if refused.is_forbidden() {
                Err(WorkError::Forbidden(refused.to_string()))
            } else {
                Err(WorkError::Unauthorized(refused.to_string()))
            }
        }
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, WorkError> {
    body.map(|Json(b)| b)
        .map_err(|e| WorkError::BadRequest(format!("malformed request body: {}", e.body_text())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's own id (shown in leases after the agent's name).
    worker: Option<String>,
    /// At most this many items (1 to 100; default 1).
    max: Option<usize>,
    /// Wait up to this many seconds for work (at most 60; default 0).
    wait_s: Option<u64>,
}

/// `POST /api/v1/work/claim`.
pub async fn claim(
    State(engine): State<Engine>,
    headers: HeaderMap,
    request: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<Response, WorkError> {
    let worker = sender(&engine, &headers, "claim").await?;
    let request = body(request)?;
    let max = request.max.unwrap_or(1);
    if !(1..=MAX_ITEMS).contains(&max) {
        return Err(WorkError::BadRequest(format!(
            "max: {max} is not between 1 and {MAX_ITEMS}"
        )));
    }
    let wait = Duration::from_secs(request.wait_s.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let holder = worker.holder(request.worker.as_deref());
    let scope = worker.scope();
    let notices = engine.store().notices();
    loop {
        // Listening before looking: work queued between the look and the wait is not missed.
        let queued = notices.work.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let claimed = claim_work(engine.store(), &scope, &holder, max, |run| {
            engine.config().policy_for(&run.task).clone()
        })
        .await?;
        if !claimed.is_empty() {
            let mut items = Vec::with_capacity(claimed.len());
            for c in claimed {
                items.push(item(&engine, c).await?);
            }
            return Ok(Json(json!({ "items": items })).into_response());
        }
        // A worker run's jobs stop once their run is over.
        if let crate::store::WorkScope::RunWorkers(id) = &scope {
            let over = engine
                .store()
                .run(id)
                .await?
                .is_none_or(|r| r.status == crate::hub::RunStatus::Completed);
            if over {
                return Err(WorkError::RunOver);
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || engine.is_stopping() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = &mut queued => {}
            _ = tokio::time::sleep_until(deadline.min(now + SLOW_POLL)) => {}
            _ = engine.stopped() => {}
        }
    }
}

/// One claimed item as the worker gets it, with a token narrowed to its repository.
async fn item(engine: &Engine, c: Claimed) -> Result<Value, WorkError> {
    let run = engine
        .run_identity(&c.run)
        .await?
        .ok_or(WorkError::Unavailable)?;
    // A repository's item carries a token for that repository; an agent's item none.
    let (target, kind, token) = match c.repo.agent_name() {
        Some(agent) => (agent.to_owned(), "agent", None),
        None => {
            let permissions = engine.config().work_for(&run.task).permissions;
            let token = match engine
                .github()
                .narrowed_token(run.installation_id, &[c.repo.name()], &permissions)
                .await
            {
                Ok(t) => Some(secrecy::ExposeSecret::expose_secret(&t.token).to_owned()),
                Err(e) => {
                    // The item is the worker's either way; its task runs without a token.
                    tracing::warn!(hub_run_id = %c.run, repo = %c.repo, error = %e, "cannot mint the item's token");
                    None
                }
            };
            (c.repo.to_string(), "repository", token)
        }
    };
    tracing::info!(hub_run_id = %c.run, repo = %c.repo, attempt = c.attempt, worker = c.lease.worker, "item claimed");
    Ok(json!({
        "lease_id": c.lease.id,
        "hub_run_id": c.run.to_string(),
        "target": target,
        "target_kind": kind,
        "attempt": c.attempt,
        "task": run.task,
        "params": run.params,
        "lease_expires_at": rfc3339(c.lease.until),
        "lease_s": lease_ms(engine.config().policy_for(&run.task).work_lease) / 1000,
        "token": token,
    }))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The run and repository a lease is held on, when it is held by `worker`.
async fn held(
    engine: &Engine,
    worker: &Worker,
    lease_id: &str,
) -> Result<
    Option<(
        std::sync::Arc<crate::store::RunRecord>,
        crate::hub::RepoName,
    )>,
    WorkError,
> {
    let Some((run_id, repo)) = engine.store().spoke_by_lease(lease_id).await? else {
        return Ok(None);
    };
    let Some(run) = engine.run_identity(&run_id).await? else {
        return Ok(None);
    };
    let holder = engine
        .store()
        .spoke(&run_id, &repo)
        .await?
        .and_then(|r| r.spoke.lease)
        .filter(|l| l.id == lease_id)
        .map(|l| l.worker);
    match holder {
        Some(h) if worker.holds(&h) => Ok(Some((run, repo))),
        Some(_) => Err(WorkError::Forbidden("the lease is another worker's".into())),
        None => Ok(None),
    }
}

/// `POST /api/v1/work/{lease_id}/heartbeat`.
pub async fn heartbeat(
    State(engine): State<Engine>,
    Path(lease_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WorkError> {
    let worker = sender(&engine, &headers, "heartbeat").await?;
    let Some((run, repo)) = held(&engine, &worker, &lease_id).await? else {
        return Err(WorkError::LeaseLost);
    };
    let ttl = lease_ms(engine.config().policy_for(&run.task).work_lease);
    let until = now_ms().saturating_add(ttl);
    let event = SpokeEvent::Heartbeat {
        lease_id: lease_id.clone(),
        until,
    };
    let record = engine.transition(&run, &repo, event).await?;
    let lease = match &record.transition {
        Transition::Changed(s) => s.lease.clone(),
        Transition::Unchanged => record.before.lease.clone(),
        _ => None,
    };
    match lease.filter(|l| l.id == lease_id) {
        Some(l) => Ok(Json(json!({ "lease_expires_at": rfc3339(l.until) })).into_response()),
        None => Err(WorkError::LeaseLost),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// `success` or `failure` (`cancelled` too, for a task stopped on purpose).
    status: String,
    summary: Option<String>,
}

/// `POST /api/v1/work/{lease_id}/complete`.
pub async fn complete(
    State(engine): State<Engine>,
    Path(lease_id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Response, WorkError> {
    let worker = sender(&engine, &headers, "complete").await?;
    let request = body(request)?;
    let outcome = match request.status.as_str() {
        "success" => ReportOutcome::Succeeded,
        "failure" => ReportOutcome::Failed { detail: None },
        "cancelled" => ReportOutcome::Cancelled,
        other => {
            return Err(WorkError::BadRequest(format!(
                "status: {:?} is not \"success\" or \"failure\"",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let summary = request
        .summary
        .filter(|s| !s.trim().is_empty())
        .map(|s| truncate(s, MAX_SUMMARY));
    let Some((run, repo)) = held(&engine, &worker, &lease_id).await? else {
        // Gone already: recorded against its run (the lease id names it), changing nothing.
        if let Some(run) = run_of_lease(&lease_id) {
            let detail = format!(
                "{} result of lease {lease_id}: the lease is no longer held",
                request.status
            );
            engine
                .store()
                .log_event(Some(&run.to_string()), None, "stale", &detail)
                .await?;
            tracing::info!(hub_run_id = %run, lease_id, "late result of a lost lease recorded as stale");
        }
        return Err(WorkError::LeaseLost);
    };
    let event = SpokeEvent::Complete {
        lease_id,
        outcome,
        summary,
    };
    let record = engine.transition(&run, &repo, event).await?;
    match record.transition {
        Transition::Changed(s) => Ok(Json(json!({ "status": s.status.as_str() })).into_response()),
        _ => Err(WorkError::LeaseLost),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
