//! `/_emulator/*`: acting as a person (hub "Run workflow", check-run buttons) and inspection.
//! No auth, never faulted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use super::http::{ApiError, ApiResult, Body};
use super::json;
use super::routes_actions::validate_dispatch;
use super::server::Shared;
use super::sim::create_run;
use super::state::World;
use super::webhooks::emit;

type S = State<Arc<Shared>>;

fn object(body: Result<Json<Value>, ()>) -> ApiResult<Map<String, Value>> {
    match body {
        Ok(Json(Value::Object(m))) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("Body must be a JSON object")),
        Err(_) => Err(ApiError::bad_request("Problems parsing JSON")),
    }
}

fn str_field(m: &Map<String, Value>, k: &str, default: &str) -> ApiResult<String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::unprocessable(format!("{k} must be a string"))),
    }
}

/// The longest a hub dispatch waits for the hub's check run.
const MAX_WAIT_MS: u64 = 10_000;

/// `POST /_emulator/hub/dispatch` `{workflow, ref, inputs, sender, wait_for_check_run,
/// wait_timeout_ms}`: "Run workflow" in the hub repository. Answers `{workflow_run_id, run_url,
/// html_url, head_sha, delivery_id}`. The hub names its run only in the check run it creates on
/// `head_sha` (`external_id`); with `wait_for_check_run: true` the answer waits (at most
/// `wait_timeout_ms`, default and cap 10 s) for the first check run created on that commit
/// after this dispatch that carries an `external_id`, and adds `hub_run_id` and `check_run_id`
/// (both `null` when none appeared in time).
pub async fn hub_dispatch(State(sh): S, Body(body): Body) -> ApiResult {
    let m = object(body)?;
    let wait = match m.get("wait_for_check_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::unprocessable(
                "wait_for_check_run must be a boolean",
            ))
        }
    };
    let wait_ms = match m.get("wait_timeout_ms") {
        None | Some(Value::Null) => MAX_WAIT_MS,
        Some(v) => v.as_u64().map(|n| n.min(MAX_WAIT_MS)).ok_or_else(|| {
            ApiError::unprocessable("wait_timeout_ms must be a non-negative integer")
        })?,
    };
    let (mut answer, since) = start_hub_run(&sh, &m)?;
    if wait {
        let head_sha = answer["head_sha"].as_str().unwrap_or_default().to_owned();
        let found = wait_for_check_run(&sh, &head_sha, since, Duration::from_millis(wait_ms)).await;
        answer["hub_run_id"] = json!(found.as_ref().map(|(_, ext)| ext));
        answer["check_run_id"] = json!(found.map(|(id, _)| id));
    }
    Ok(Json(answer).into_response())
}

/// Sends `workflow_dispatch` and creates the hub's workflow run. Returns the answer and the
/// number of check runs the hub repository had before (those are not the new run's).
fn start_hub_run(sh: &Arc<Shared>, m: &Map<String, Value>) -> ApiResult<(Value, usize)> {
    let mut w = sh.world();
    let hub = w.hub_repo;
    let since = w.repos[hub].check_runs.len();
    let workflow = str_field(m, "workflow", "spokehub-hub.yml")?;
    let default_branch = w.repos[hub].default_branch.clone();
    let reference = str_field(m, "ref", &default_branch)?;
    let sender = str_field(m, "sender", "octocat")?;
    let mut body = Map::new();
    body.insert("ref".into(), json!(reference));
    body.insert(
        "inputs".into(),
        m.get("inputs").cloned().unwrap_or(json!({})),
    );
    // GitHub sends `workflow_dispatch` before the run's `workflow_run.requested`.
    let new = validate_dispatch(&w, hub, &workflow, &body, &sender)?;
    let path = w.repos[hub]
        .workflow(&new.workflow_file)
        .map(|wf| wf.path.clone())
        .unwrap_or_default();
    let full_ref = if reference.starts_with("refs/") || reference == w.repos[hub].head_sha {
        reference.clone()
    } else {
        format!("refs/heads/{reference}")
    };
    let repo = &w.repos[hub];
    let payload = json!({
        "inputs": new.inputs, "ref": full_ref, "workflow": path,
        "repository": json::repo_hook(&sh.ctx, repo), "sender": json::person(&sh.ctx, &sender),
        "organization": json::organization(&sh.ctx), "installation": json::installation_lite(&sh.ctx),
    });
    let (repo_id, full, head_sha) = (repo.id, repo.full_name.clone(), repo.head_sha.clone());
    let delivery = emit(
        sh,
        &mut w,
        "workflow_dispatch",
        None,
        Some(repo_id),
        json::one(payload.to_string()),
    );
    let id = create_run(sh, &mut w, new).ok_or_else(ApiError::not_found)?;
    let answer = json!({
        "workflow_run_id": id,
        "run_url": format!("{}/repos/{full}/actions/runs/{id}", sh.ctx.base),
        "html_url": format!("{}/{full}/actions/runs/{id}", sh.ctx.base),
        "head_sha": head_sha,
        "delivery_id": delivery,
    });
    Ok((answer, since))
}

/// Waits (woken by check-run changes, never polling) for the first check run of the hub
/// repository after index `since`, on `head_sha`, with an `external_id`: `(id, external_id)`.
async fn wait_for_check_run(
    sh: &Shared,
    head_sha: &str,
    since: usize,
    timeout: Duration,
) -> Option<(u64, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let changed = sh.check_runs_changed.notified();
        tokio::pin!(changed);
        // Registered before looking, so a change between the look and the wait is not missed.
        changed.as_mut().enable();
        if let Some(found) = hub_check_run(&sh.world(), head_sha, since) {
            return Some(found);
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return None;
        }
    }
}

fn hub_check_run(w: &World, head_sha: &str, since: usize) -> Option<(u64, String)> {
    let ids = &w.repos[w.hub_repo].check_runs;
    ids.get(since..)?
        .iter()
        .filter_map(|id| w.check_runs.get(id))
        .filter(|c| c.head_sha == head_sha)
        .find_map(|c| match &c.external_id {
            Some(ext) if !ext.is_empty() => Some((c.id, ext.clone())),
            _ => None,
        })
}

/// Emits a `check_run` webhook for check run `id`. World locked.
pub(super) fn check_run_event(
    sh: &Shared,
    w: &mut World,
    id: u64,
    action: &str,
    identifier: Option<String>,
    sender: &str,
) -> ApiResult<u64> {
    let c = w.check_runs.get(&id).ok_or_else(ApiError::not_found)?;
    let repo = &w.repos[c.repo];
    let mut payload = json!({
        "action": action,
        "check_run": json::check_run_hook(&sh.ctx, repo, c),
        "repository": json::repo_hook(&sh.ctx, repo),
        "sender": json::person(&sh.ctx, sender),
        "organization": json::organization(&sh.ctx),
        "installation": json::installation_lite(&sh.ctx),
    });
    if let Some(i) = identifier {
        payload["requested_action"] = json!({"identifier": i});
    }
    let repo_id = repo.id;
    Ok(emit(
        sh,
        w,
        "check_run",
        Some(action),
        Some(repo_id),
        json::one(payload.to_string()),
    ))
}

/// `POST /_emulator/check-runs/{id}/request-action` `{identifier, sender}`: a button click.
pub async fn request_action(State(sh): S, Path(id): Path<String>, Body(body): Body) -> ApiResult {
    let m = object(body)?;
    let identifier = str_field(&m, "identifier", "")?;
    let sender = str_field(&m, "sender", "octocat")?;
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let mut w = sh.world();
    let c = w.check_runs.get(&id).ok_or_else(ApiError::not_found)?;
    if !c
        .actions
        .iter()
        .any(|a| a["identifier"].as_str() == Some(identifier.as_str()))
    {
        return Err(ApiError::unprocessable(format!(
            "The check run has no action with identifier {identifier:?}"
        )));
    }
    let d = check_run_event(
        &sh,
        &mut w,
        id,
        "requested_action",
        Some(identifier),
        &sender,
    )?;
    Ok(Json(json!({"delivery_id": d})).into_response())
}

/// `POST /_emulator/check-runs/{id}/rerequest` `{sender}`: "Re-run" on a completed check run.
pub async fn rerequest(State(sh): S, Path(id): Path<String>, Body(body): Body) -> ApiResult {
    let sender = body
        .as_ref()
        .ok()
        .and_then(|Json(v)| v.get("sender"))
        .and_then(Value::as_str)
        .unwrap_or("octocat")
        .to_owned();
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let mut w = sh.world();
    let c = w.check_runs.get(&id).ok_or_else(ApiError::not_found)?;
    if c.status != "completed" {
        return Err(ApiError::unprocessable(
            "Only completed check runs can be re-requested",
        ));
    }
    let d = check_run_event(&sh, &mut w, id, "rerequested", None, &sender)?;
    Ok(Json(json!({"delivery_id": d})).into_response())
}

fn counts(w: &World) -> Map<String, Value> {
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_conclusion: BTreeMap<String, u64> = BTreeMap::new();
    for r in w.runs.values() {
        *by_status.entry(r.status).or_insert(0) += 1;
        if let Some(c) = &r.conclusion {
            *by_conclusion.entry(c.clone()).or_insert(0) += 1;
        }
    }
    let mut checks_by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for check in w.check_runs.values() {
        *checks_by_status.entry(check.status.as_str()).or_insert(0) += 1;
    }
    let c = &w.counters;
    let by_route: BTreeMap<&String, &u64> = c.requests_by_route.iter().collect();
    let by_version: BTreeMap<&&str, &u64> = c.requests_by_api_version.iter().collect();
    let v = json!({
        "workflow_runs_created": c.workflow_runs_created,
        "spoke_runs_active": c.spoke_runs_active,
        "spoke_runs_peak_active": c.spoke_runs_peak_active,
        "workflow_runs_by_status": by_status,
        "workflow_runs_by_conclusion": by_conclusion,
        "check_runs_total": w.check_runs.len(),
        "check_runs_by_status": checks_by_status,
        "repository_dispatches_total": w.dispatches.len(),
        "requests_total": c.requests_total,
        "requests_by_route": by_route,
        "requests_by_api_version": by_version,
        "webhook_deliveries_total": w.deliveries.len(),
        "webhooks_sent": c.webhooks_sent,
        "webhooks_dropped": c.webhooks_dropped,
        "webhooks_duplicated": c.webhooks_duplicated,
        "webhooks_pending": w.deliveries.iter().filter(|d| d.status == "pending").count(),
        "rate_limit_violations": c.rate_limit_violations,
        "first_rate_limit_violation": c.first_rate_limit_violation,
        "rate_limit_violations_by_route": c
            .rate_limit_violations_by_route
            .iter()
            .collect::<BTreeMap<_, _>>(),
        "secondary_limit_hits": c.secondary_limit_hits,
        "primary_limit_hits": c.primary_limit_hits,
        "api_errors_injected": c.api_errors_injected,
        "lost_responses": c.lost_responses,
        "tokens_minted": c.tokens_minted,
        "content_creating_requests": c.content_creating_requests,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `GET /_emulator/state[?summary=1]`
pub async fn state(State(sh): S, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let w = sh.world();
    let mut m = counts(&w);
    if q.get("summary").is_some_and(|v| v == "1" || v == "true") {
        return (StatusCode::OK, Json(Value::Object(m)));
    }
    let repos: Vec<Value> = w
        .repos
        .iter()
        .map(|r| {
            json!({"id": r.id, "name": r.name, "full_name": r.full_name,
                   "default_branch": r.default_branch, "head_sha": r.head_sha,
                   "archived": r.archived, "fork": r.fork, "visibility": r.visibility,
                   "topics": r.topics, "properties": r.properties,
                   "workflows": r.workflows.iter().map(|w| w.file.clone()).collect::<Vec<_>>(),
                   "conclusion": r.conclusion})
        })
        .collect();
    let mut runs: Vec<_> = w.runs.values().collect();
    runs.sort_by_key(|r| r.id);
    let runs: Vec<Value> = runs
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "repo": w.repos[r.repo].full_name, "workflow": r.workflow_file,
                   "event": r.event, "inputs": r.inputs, "status": r.status,
                   "conclusion": r.conclusion, "display_title": r.display_title,
                   "run_attempt": r.run_attempt, "run_number": r.run_number,
                   "head_sha": r.head_sha, "actor": r.actor, "html_url": r.html_url,
                   "created_at": json::ts(r.created_at)})
        })
        .collect();
    let mut checks: Vec<_> = w.check_runs.values().collect();
    checks.sort_by_key(|c| c.id);
    let checks: Vec<Value> = checks
        .into_iter()
        .map(|c| {
            json!({"id": c.id, "repo": w.repos[c.repo].full_name, "head_sha": c.head_sha,
                   "name": c.name, "status": c.status, "conclusion": c.conclusion,
                   "output": {"title": c.output.title, "summary": c.output.summary, "text": c.output.text},
                   "annotations_count": c.annotations_count, "actions": c.actions,
                   "external_id": c.external_id, "details_url": c.details_url,
                   "updates": c.updates})
        })
        .collect();
    let deliveries: Vec<Value> = w
        .deliveries
        .iter()
        .map(|d| {
            json!({"id": d.id, "guid": d.guid, "event": d.event, "action": d.action,
                   "status_code": d.status_code, "status": d.status,
                   "duration_ms": d.duration_ms, "redelivery": d.redelivery, "url": d.url})
        })
        .collect();
    m.insert("org".into(), json!(sh.ctx.org));
    m.insert("hub_repo".into(), json!(w.repos[w.hub_repo].full_name));
    m.insert("repos".into(), Value::Array(repos));
    m.insert("workflow_runs".into(), Value::Array(runs));
    m.insert("check_runs".into(), Value::Array(checks));
    m.insert("webhook_deliveries".into(), Value::Array(deliveries));
    m.insert("repository_dispatches".into(), json!(w.dispatches));
    (StatusCode::OK, Json(Value::Object(m)))
}
