//! Actions routes: workflow dispatch with GitHub's validation, listing/reading/cancelling runs,
//! and repository dispatches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::http::{link_header, raw_json, ApiError, ApiResult, Body, PageQuery};
use super::json;
use super::server::Shared;
use super::sim::{complete_run, create_run, repository_dispatch, NewRun};
use super::state::World;
use super::version::ApiVersion;

type S = State<Arc<Shared>>;

/// Most inputs a dispatch may carry.
const MAX_INPUTS: usize = 25;

/// Turns dispatch inputs into strings, as GitHub does with scalars.
fn input_strings(v: Option<&Value>) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else {
        return Ok(out);
    };
    let Some(obj) = v.as_object() else {
        if v.is_null() {
            return Ok(out);
        }
        return Err(ApiError::unprocessable(
            "Invalid request.\n\nFor 'properties/inputs', is not an object.",
        ));
    };
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::unprocessable(format!(
                    "Invalid request.\n\nFor 'properties/{k}', {v} is not a string."
                )))
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// Validates a dispatch against the workflow and creates its run. Used by the API route.
/// World locked.
pub fn dispatch(
    sh: &Arc<Shared>,
    w: &mut World,
    repo: usize,
    workflow: &str,
    body: &Map<String, Value>,
    actor: &str,
) -> ApiResult<u64> {
    let new = validate_dispatch(w, repo, workflow, body, actor)?;
    create_run(sh, w, new).ok_or_else(ApiError::not_found)
}

/// Checks a dispatch as GitHub does (workflow, trigger, ref, inputs) and prepares its run, with
/// declared defaults filled in.
pub fn validate_dispatch(
    w: &World,
    repo: usize,
    workflow: &str,
    body: &Map<String, Value>,
    actor: &str,
) -> ApiResult<NewRun> {
    let wf = w.repos[repo]
        .workflow(workflow)
        .ok_or_else(ApiError::not_found)?
        .clone();
    let reference = match body.get("ref") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "Invalid request.\n\n\"ref\" wasn't supplied.",
            ))
        }
    };
    let inputs = input_strings(body.get("inputs"))?;
    let Some(declared) = &wf.info.dispatch_inputs else {
        return Err(ApiError::unprocessable(
            "Workflow does not have 'workflow_dispatch' trigger",
        ));
    };
    // A dispatch takes a branch or tag name, not a commit sha.
    let branch = &w.repos[repo].default_branch;
    if reference.strip_prefix("refs/heads/").unwrap_or(&reference) != branch.as_str() {
        return Err(ApiError::unprocessable(format!(
            "No ref found for: {reference}"
        )));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::unprocessable(format!(
            "you may only define up to {MAX_INPUTS} `inputs` for a `workflow_dispatch` event"
        )));
    }
    let total: usize = inputs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 65_535 {
        return Err(ApiError::unprocessable(
            "inputs are too large: at most 65,535 characters in total",
        ));
    }
    let unexpected: Vec<&String> = inputs
        .keys()
        .filter(|k| !declared.contains_key(*k))
        .collect();
    if !unexpected.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "Unexpected inputs provided: {}",
            serde_json::to_string(&unexpected).unwrap_or_default()
        )));
    }
    if let Some((name, _)) = declared
        .iter()
        .find(|(k, spec)| spec.required && spec.default.is_none() && !inputs.contains_key(*k))
    {
        return Err(ApiError::unprocessable(format!(
            "Required input '{name}' not provided"
        )));
    }
    let head_branch = reference
        .strip_prefix("refs/heads/")
        .unwrap_or(&reference)
        .to_owned();
    let mut inputs = inputs;
    for (k, spec) in declared {
        if let (false, Some(d)) = (inputs.contains_key(k), &spec.default) {
            inputs.insert(k.clone(), d.clone());
        }
    }
    Ok(NewRun {
        repo,
        workflow_file: wf.file.clone(),
        head_branch,
        inputs,
        actor: actor.to_owned(),
        event: "workflow_dispatch",
    })
}

/// `POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches`
///
/// `2022-11-28`: 200 with `{workflow_run_id, run_url, html_url}` when `return_run_details` is
/// true, else 204 (GHES 3.20 answers 400 to the field). `2026-03-10`: always 200 with the
/// details; the version's description drops `return_run_details` from the body, and whether
/// GitHub then rejects or ignores it is not documented, so it is ignored here.
pub async fn dispatch_route(
    State(sh): S,
    Extension(version): Extension<ApiVersion>,
    Path((o, r, workflow)): Path<(String, String, String)>,
    Body(body): Body,
) -> ApiResult {
    let Json(v) = body.map_err(|_| ApiError::bad_request("Problems parsing JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Problems parsing JSON"))?;
    let details = match version {
        ApiVersion::V2026_03_10 => true,
        ApiVersion::V2022_11_28 => {
            if sh.scenario.faults.ghes_3_20 && obj.contains_key("return_run_details") {
                return Err(ApiError::bad_request(
                    "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
                ));
            }
            obj.get("return_run_details") == Some(&Value::Bool(true))
        }
    };
    let mut w = sh.world();
    let repo = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    let actor = format!("{}[bot]", sh.ctx.app_slug);
    let id = dispatch(&sh, &mut w, repo, &workflow, obj, &actor)?;
    if !details {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let full = &w.repos[repo].full_name;
    Ok(Json(json!({
        "workflow_run_id": id,
        "run_url": format!("{}/repos/{full}/actions/runs/{id}", sh.ctx.base),
        "html_url": format!("{}/{full}/actions/runs/{id}", sh.ctx.base),
    }))
    .into_response())
}

/// `GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}`: by file name or numeric id
/// ("Get a workflow"); 404 `Not Found` for an unknown repository or workflow.
pub async fn get_workflow(
    State(sh): S,
    Path((o, r, workflow)): Path<(String, String, String)>,
) -> ApiResult {
    let w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    let repo = &w.repos[i];
    let wf = repo.workflow(&workflow).ok_or_else(ApiError::not_found)?;
    Ok(Json(json::workflow(&sh.ctx, repo, wf)).into_response())
}

/// Inclusive lower and upper bounds of a `created` filter.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Parses GitHub's date filter syntax: `>=D`, `<=D`, `>D`, `<D`, `A..B` (`*` open), `D`.
fn created_filter(s: &str) -> ApiResult<Bounds> {
    let bad = || ApiError::unprocessable(format!("Invalid created filter: {s}"));
    let parse = |t: &str, end: bool| -> Option<DateTime<Utc>> {
        let t = t.trim();
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Some(d.with_timezone(&Utc));
        }
        let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
        let dt = if end {
            d.and_hms_opt(23, 59, 59)?
        } else {
            d.and_hms_opt(0, 0, 0)?
        };
        Some(dt.and_utc())
    };
    let sec = chrono::Duration::seconds(1);
    if let Some(t) = s.strip_prefix(">=") {
        return Ok((Some(parse(t, false).ok_or_else(bad)?), None));
    }
    if let Some(t) = s.strip_prefix("<=") {
        return Ok((None, Some(parse(t, true).ok_or_else(bad)?)));
    }
    if let Some(t) = s.strip_prefix('>') {
        return Ok((Some(parse(t, true).ok_or_else(bad)? + sec), None));
    }
    if let Some(t) = s.strip_prefix('<') {
        return Ok((None, Some(parse(t, false).ok_or_else(bad)? - sec)));
    }
    if let Some((a, b)) = s.split_once("..") {
        let lo = if a == "*" {
            None
        } else {
            Some(parse(a, false).ok_or_else(bad)?)
        };
        let hi = if b == "*" {
            None
        } else {
            Some(parse(b, true).ok_or_else(bad)?)
        };
        return Ok((lo, hi));
    }
    Ok((
        Some(parse(s, false).ok_or_else(bad)?),
        Some(parse(s, true).ok_or_else(bad)?),
    ))
}

fn list_runs(
    sh: &Shared,
    o: &str,
    r: &str,
    workflow: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult {
    let page_q = PageQuery {
        per_page: q.get("per_page").cloned(),
        page: q.get("page").cloned(),
    };
    let (per, page) = page_q.resolve()?;
    let (lo, hi) = match q.get("created") {
        Some(c) => created_filter(c)?,
        None => (None, None),
    };
    let w = sh.world();
    let i = w.repo(&sh.ctx, o, r).ok_or_else(ApiError::not_found)?;
    let repo = &w.repos[i];
    let wf_id = match workflow {
        Some(f) => Some(repo.workflow(f).ok_or_else(ApiError::not_found)?.id),
        None => None,
    };
    let matching: Vec<u64> = repo
        .runs
        .iter()
        .rev()
        .filter_map(|id| w.runs.get(id))
        .filter(|run| wf_id.is_none_or(|wid| run.workflow_id == wid))
        .filter(|run| q.get("event").is_none_or(|e| &run.event == e))
        .filter(|run| {
            q.get("status").is_none_or(|s| {
                run.status == s.as_str() || run.conclusion.as_deref() == Some(s.as_str())
            })
        })
        .filter(|run| q.get("head_sha").is_none_or(|s| &run.head_sha == s))
        .filter(|run| q.get("actor").is_none_or(|s| &run.actor == s))
        .filter(|run| lo.is_none_or(|lo| run.created_at >= lo))
        .filter(|run| hi.is_none_or(|hi| run.created_at <= hi))
        .map(|run| run.id)
        .collect();
    let total = matching.len();
    let items: Vec<String> = matching
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .filter_map(|id| w.runs.get(id))
        .map(|run| json::concat(&json::workflow_run(&sh.ctx, repo, run, false)))
        .collect();
    let path = match workflow {
        Some(f) => format!(
            "{}/repos/{}/actions/workflows/{f}/runs",
            sh.ctx.base, repo.full_name
        ),
        None => format!("{}/repos/{}/actions/runs", sh.ctx.base, repo.full_name),
    };
    drop(w);
    let extra: Vec<String> = ["event", "status", "created", "head_sha", "actor"]
        .iter()
        .filter_map(|k| q.get(*k).map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    let link = link_header(&path, &extra.join("&"), per, page, total);
    let body = format!(
        "{{\"total_count\":{total},\"workflow_runs\":[{}]}}",
        items.join(",")
    );
    Ok(raw_json(body, link))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /repos/{owner}/{repo}/actions/runs`
pub async fn runs_route(
    State(sh): S,
    Path((o, r)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    list_runs(&sh, &o, &r, None, &q)
}

/// `GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs`
pub async fn workflow_runs_route(
    State(sh): S,
    Path((o, r, wf)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    list_runs(&sh, &o, &r, Some(&wf), &q)
}

fn run_in_repo(sh: &Shared, w: &World, o: &str, r: &str, id: &str) -> ApiResult<(usize, u64)> {
    let i = w.repo(&sh.ctx, o, r).ok_or_else(ApiError::not_found)?;
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    match w.runs.get(&id) {
        Some(run) if run.repo == i => Ok((i, id)),
        _ => Err(ApiError::not_found()),
    }
}

/// `GET /repos/{owner}/{repo}/actions/runs/{run_id}`
pub async fn get_run(State(sh): S, Path((o, r, id)): Path<(String, String, String)>) -> ApiResult {
    let w = sh.world();
    let (i, id) = run_in_repo(&sh, &w, &o, &r, &id)?;
    let body = json::concat(&json::workflow_run(
        &sh.ctx,
        &w.repos[i],
        &w.runs[&id],
        false,
    ));
    drop(w);
    Ok(raw_json(body, None))
}

/// `POST /repos/{owner}/{repo}/actions/runs/{run_id}/cancel`
pub async fn cancel_run(
    State(sh): S,
    Path((o, r, id)): Path<(String, String, String)>,
) -> ApiResult {
    let mut w = sh.world();
    let (_, id) = run_in_repo(&sh, &w, &o, &r, &id)?;
    if !complete_run(&sh, &mut w, id, "cancelled") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

/// `POST /repos/{owner}/{repo}/dispatches`
pub async fn repo_dispatch_route(
    State(sh): S,
    Path((o, r)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Response> {
    let Json(v) = body.map_err(|_| ApiError::bad_request("Problems parsing JSON"))?;
    let event_type = match v.get("event_type") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "Invalid request.\n\n\"event_type\" wasn't supplied.",
            ))
        }
    };
    let n = event_type.chars().count();
    if n == 0 || n > 100 {
        return Err(ApiError::unprocessable(
            "Invalid request.\n\nevent_type must be between 1 and 100 characters.",
        ));
    }
    let payload = v.get("client_payload").cloned().unwrap_or(json!({}));
    let Some(p) = payload.as_object() else {
        return Err(ApiError::unprocessable(
            "Invalid request.\n\nFor 'properties/client_payload', is not an object.",
        ));
    };
    if p.len() > 10 {
        return Err(ApiError::unprocessable(format!(
            "Invalid request.\n\nNo more than 10 properties are allowed; {} were supplied.",
            p.len()
        )));
    }
    if serde_json::to_vec(&payload).map(|b| b.len()).unwrap_or(0) >= 65_536 {
        return Err(ApiError::unprocessable(
            "client_payload must be less than 64KB",
        ));
    }
    let mut w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    let sender = format!("{}[bot]", sh.ctx.app_slug);
    repository_dispatch(&sh, &mut w, i, &event_type, payload, &sender);
    Ok(StatusCode::NO_CONTENT.into_response())
}
