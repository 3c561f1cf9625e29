//! Check runs, with GitHub's limits (output sizes, annotations, action buttons, conclusions).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::control::check_run_event;
use super::http::{json_page, link_header, ApiError, ApiResult, Body, PageQuery};
use super::json;
use super::routes_app::resolves;
use super::server::Shared;
use super::state::{CheckRun, Output};

type S = State<Arc<Shared>>;

const STATUSES: &[&str] = &[
    "queued",
    "in_progress",
    "completed",
    "waiting",
    "requested",
    "pending",
];
const CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable(format!("Invalid request.\n\n{msg}"))
}

fn opt_str(o: &Map<String, Value>, k: &str) -> ApiResult<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(invalid(format!(
            "For 'properties/{k}', {v} is not a string."
        ))),
    }
}

fn time(o: &Map<String, Value>, k: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match opt_str(o, k)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| invalid(format!("For 'properties/{k}', \"{s}\" is not a date-time."))),
    }
}

fn check_len(what: &str, s: &str, max: usize) -> ApiResult<()> {
    let n = s.chars().count();
    if n > max {
        return Err(invalid(format!(
            "{what}: only {max} characters are allowed; {n} were supplied."
        )));
    }
    Ok(())
}

/// Applies a create/update body to a check run, enforcing GitHub's limits.
fn apply(c: &mut CheckRun, o: &Map<String, Value>, creating: bool) -> ApiResult<()> {
    if let Some(name) = opt_str(o, "name")? {
        if name.is_empty() {
            return Err(invalid("name must not be empty."));
        }
        c.name = name;
    }
    if let Some(u) = opt_str(o, "details_url")? {
        c.details_url = Some(u);
    }
    if let Some(x) = opt_str(o, "external_id")? {
        c.external_id = Some(x);
    }
    let mut status = opt_str(o, "status")?;
    if let Some(s) = &status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(invalid(format!(
                "For 'properties/status', \"{s}\" is not one of {STATUSES:?}."
            )));
        }
    }
    let conclusion = opt_str(o, "conclusion")?;
    if let Some(cn) = &conclusion {
        if !CONCLUSIONS.contains(&cn.as_str()) {
            return Err(invalid(format!(
                "For 'properties/conclusion', \"{cn}\" is not one of {CONCLUSIONS:?}."
            )));
        }
        // Giving a conclusion completes the check run.
        status = Some("completed".into());
    }
    if status.as_deref() == Some("completed") && conclusion.is_none() && c.conclusion.is_none() {
        return Err(invalid(
            "`conclusion` is required when `status` is \"completed\".",
        ));
    }
    if let Some(t) = time(o, "started_at")? {
        c.started_at = Some(t);
    }
    if let Some(out) = o.get("output") {
        let out = out
            .as_object()
            .ok_or_else(|| invalid("For 'properties/output', is not an object."))?;
        let title = opt_str(out, "title")?;
        let summary = opt_str(out, "summary")?;
        if title.is_none() {
            return Err(invalid("\"title\" wasn't supplied."));
        }
        if summary.is_none() {
            return Err(invalid("\"summary\" wasn't supplied."));
        }
        let text = opt_str(out, "text")?;
        for (what, s) in [("summary", &summary), ("text", &text)] {
            if let Some(s) = s {
                check_len(what, s, 65_535)?;
            }
        }
        let annotations = match out.get("annotations") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(a)) => a.len(),
            Some(_) => return Err(invalid("For 'properties/annotations', is not an array.")),
        };
        if annotations > 50 {
            return Err(invalid(format!(
                "annotations: at most 50 are allowed per request; {annotations} were supplied."
            )));
        }
        c.output = Output {
            title,
            summary,
            text: text.or(c.output.text.take()),
        };
        c.annotations_count += annotations as u64;
    } else if creating {
        c.output = Output::default();
    }
    if let Some(a) = o.get("actions") {
        let list = a
            .as_array()
            .ok_or_else(|| invalid("For 'properties/actions', is not an array."))?;
        if list.len() > 3 {
            return Err(invalid(format!(
                "actions: at most 3 are allowed; {} were supplied.",
                list.len()
            )));
        }
        for act in list {
            let ao = act
                .as_object()
                .ok_or_else(|| invalid("For 'items', is not an object."))?;
            for (k, max) in [("label", 20), ("description", 40), ("identifier", 20)] {
                let s =
                    opt_str(ao, k)?.ok_or_else(|| invalid(format!("\"{k}\" wasn't supplied.")))?;
                check_len(&format!("actions.{k}"), &s, max)?;
            }
        }
        c.actions = list.clone();
    }
    if let Some(s) = status {
        if s == "in_progress" && c.started_at.is_none() {
            c.started_at = Some(Utc::now());
        }
        if s == "completed" {
            c.completed_at = Some(time(o, "completed_at")?.unwrap_or_else(Utc::now));
            c.started_at.get_or_insert(c.created_at);
        }
        c.status = match s.as_str() {
            "waiting" | "requested" | "pending" => "queued".into(),
            _ => s,
        };
    }
    if let Some(cn) = conclusion {
        c.conclusion = Some(cn);
    }
    Ok(())
}

/// `POST /repos/{owner}/{repo}/check-runs`
pub async fn create(
    State(sh): S,
    Path((o, r)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult {
    let Json(v) = body.map_err(|_| ApiError::bad_request("Problems parsing JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Problems parsing JSON"))?;
    let name = opt_str(obj, "name")?.ok_or_else(|| invalid("\"name\" wasn't supplied."))?;
    let head_sha =
        opt_str(obj, "head_sha")?.ok_or_else(|| invalid("\"head_sha\" wasn't supplied."))?;
    let mut w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    if !resolves(&w, i, &head_sha) {
        return Err(ApiError::unprocessable(format!(
            "No commit found for SHA: {head_sha}"
        )));
    }
    let now = Utc::now();
    let mut c = CheckRun {
        id: 0,
        repo: i,
        head_sha: w.repos[i].head_sha.clone(),
        name,
        status: "queued".into(),
        conclusion: None,
        output: Output::default(),
        annotations_count: 0,
        actions: Vec::new(),
        external_id: None,
        details_url: None,
        created_at: now,
        started_at: None,
        completed_at: None,
        check_suite_id: w.repos[i].id * 10,
        updates: 0,
    };
    apply(&mut c, obj, true)?;
    if c.started_at.is_none() {
        c.started_at = Some(now);
    }
    c.id = w.next_id();
    let id = c.id;
    let body = json::check_run_rest(&sh.ctx, &w.repos[i], &c);
    let completed = c.status == "completed";
    w.repos[i].check_runs.push(id);
    w.check_runs.insert(id, c);
    let bot = format!("{}[bot]", sh.ctx.app_slug);
    check_run_event(&sh, &mut w, id, "created", None, &bot)?;
    if completed {
        check_run_event(&sh, &mut w, id, "completed", None, &bot)?;
    }
    drop(w);
    sh.check_runs_changed.notify_waiters();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn find(sh: &Shared, w: &super::state::World, o: &str, r: &str, id: &str) -> ApiResult<u64> {
    let i = w.repo(&sh.ctx, o, r).ok_or_else(ApiError::not_found)?;
    let id = id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    match w.check_runs.get(&id) {
        Some(c) if c.repo == i => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

/// `PATCH /repos/{owner}/{repo}/check-runs/{id}`
pub async fn update(
    State(sh): S,
    Path((o, r, id)): Path<(String, String, String)>,
    Body(body): Body,
) -> ApiResult {
    let Json(v) = body.map_err(|_| ApiError::bad_request("Problems parsing JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Problems parsing JSON"))?;
    let mut w = sh.world();
    let id = find(&sh, &w, &o, &r, &id)?;
    let mut c = w.check_runs[&id].clone();
    let was_completed = c.status == "completed";
    apply(&mut c, obj, false)?;
    c.updates += 1;
    let body = json::check_run_rest(&sh.ctx, &w.repos[c.repo], &c);
    let completed = c.status == "completed";
    w.check_runs.insert(id, c);
    if completed && !was_completed {
        let bot = format!("{}[bot]", sh.ctx.app_slug);
        check_run_event(&sh, &mut w, id, "completed", None, &bot)?;
    }
    drop(w);
    sh.check_runs_changed.notify_waiters();
    Ok(Json(body).into_response())
}

/// `GET /repos/{owner}/{repo}/check-runs/{id}`
pub async fn get(State(sh): S, Path((o, r, id)): Path<(String, String, String)>) -> ApiResult {
    let w = sh.world();
    let id = find(&sh, &w, &o, &r, &id)?;
    let c = &w.check_runs[&id];
    Ok(Json(json::check_run_rest(&sh.ctx, &w.repos[c.repo], c)).into_response())
}

/// `GET /repos/{owner}/{repo}/commits/{ref}/check-runs`
pub async fn for_ref(
    State(sh): S,
    Path((o, r, reference)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (per, page) = PageQuery {
        per_page: q.get("per_page").cloned(),
        page: q.get("page").cloned(),
    }
    .resolve()?;
    let w = sh.world();
    let i = w.repo(&sh.ctx, &o, &r).ok_or_else(ApiError::not_found)?;
    if !resolves(&w, i, &reference) {
        return Err(ApiError::unprocessable(format!(
            "No commit found for SHA: {reference}"
        )));
    }
    let repo = &w.repos[i];
    let matching: Vec<&CheckRun> = repo
        .check_runs
        .iter()
        .rev()
        .filter_map(|id| w.check_runs.get(id))
        .filter(|c| q.get("check_name").is_none_or(|n| &c.name == n))
        .filter(|c| q.get("status").is_none_or(|s| &c.status == s))
        .collect();
    let total = matching.len();
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|c| json::check_run_rest(&sh.ctx, repo, c))
        .collect();
    let path = format!(
        "{}/repos/{}/commits/{reference}/check-runs",
        sh.ctx.base, repo.full_name
    );
    drop(w);
    let link = link_header(&path, "", per, page, total);
    Ok(json_page(
        StatusCode::OK,
        json!({"total_count": total, "check_runs": items}),
        link,
    ))
}
