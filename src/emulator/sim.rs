//! Simulated workflow runs: created by a dispatch, queued -> in_progress -> completed on tokio
//! timers, emitting `workflow_run` webhooks and, for spokes, the `spoke_complete` callback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use serde_json::{json, Value};

use super::json;
use super::scenario::Callback;
use super::server::Shared;
use super::state::{RepoDispatch, WorkflowRun, World};
use super::webhooks::emit;
use super::workflow::render_run_name;

/// What a new run needs to know.
pub struct NewRun {
    pub repo: usize,
    pub workflow_file: String,
    pub head_branch: String,
    pub inputs: BTreeMap<String, String>,
    pub actor: String,
    pub event: &'static str,
}

/// Creates a run (queued), emits `workflow_run.requested` and starts its timers. World locked.
pub fn create_run(shared: &Arc<Shared>, w: &mut World, new: NewRun) -> Option<u64> {
    let ctx = &shared.ctx;
    let id = w.next_id();
    let now = Utc::now();
    let spoke = &shared.scenario.spoke;
    let [lo, hi] = w.repos[new.repo].duration_ms.unwrap_or(spoke.duration_ms);
    let duration = if hi > lo {
        w.rng.gen_range(lo..=hi)
    } else {
        lo
    };
    // The hub's own workflow does nothing: it neither fails nor hangs at random.
    let hub_repo = w.hub_repo;
    let is_hub = new.repo == hub_repo;
    let failed = !is_hub && spoke.failure_rate > 0.0 && w.rng.gen_bool(spoke.failure_rate);
    let stuck_by_chance = !is_hub && spoke.stuck_rate > 0.0 && w.rng.gen_bool(spoke.stuck_rate);
    let repo = &mut w.repos[new.repo];
    // A stuck runner: the run starts and then hangs until it is cancelled.
    let stuck = new.repo != hub_repo && (repo.stuck || stuck_by_chance);
    let wf = repo.workflow(&new.workflow_file)?.clone();
    let conclusion = repo
        .conclusion
        .clone()
        .unwrap_or_else(|| if failed { "failure" } else { "success" }.to_owned());
    let inputs = new.inputs;
    let display_title = match &wf.info.run_name {
        Some(t) => render_run_name(t, &inputs, &[("ref", &new.head_branch)]),
        None => wf.info.name.clone(),
    };
    let run_number = repo.next_run_number;
    repo.next_run_number += 1;
    repo.runs.push(id);
    let head_sha = repo.head_sha.clone();
    let html_url = format!("{}/{}/actions/runs/{id}", ctx.base, repo.full_name);
    let run = WorkflowRun {
        id,
        repo: new.repo,
        workflow_id: wf.id,
        workflow_file: wf.file.clone(),
        workflow_name: wf.info.name.clone(),
        path: wf.path.clone(),
        head_branch: new.head_branch,
        head_sha,
        display_title,
        run_number,
        run_attempt: 1,
        event: new.event.to_owned(),
        status: "queued",
        conclusion: None,
        inputs,
        actor: new.actor,
        html_url,
        created_at: now,
        updated_at: now,
    };
    let is_spoke = new.repo != hub_repo && new.event == "workflow_dispatch";
    let is_worker_run = super::workers::is_worker_run(shared, w, new.repo, &run.workflow_file);
    w.runs.insert(id, run);
    w.counters.workflow_runs_created += 1;
    if is_spoke {
        let c = &mut w.counters;
        c.spoke_runs_active += 1;
        c.spoke_runs_peak_active = c.spoke_runs_peak_active.max(c.spoke_runs_active);
    }
    emit_run_event(shared, w, id, "requested");
    if is_worker_run {
        super::workers::start(shared, w, id);
        return Some(id);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let queued = duration / 4;
        tokio::time::sleep(Duration::from_millis(queued)).await;
        {
            let mut w = shared.world();
            match w.runs.get_mut(&id) {
                Some(r) if r.status == "queued" => {
                    r.status = "in_progress";
                    r.updated_at = Utc::now();
                }
                _ => return,
            }
            emit_run_event(&shared, &mut w, id, "in_progress");
        }
        if stuck {
            return;
        }
        tokio::time::sleep(Duration::from_millis(duration - queued)).await;
        let mut w = shared.world();
        complete_run(&shared, &mut w, id, &conclusion);
    });
    Some(id)
}

/// Completes a run (if not already) with `conclusion`, emitting its webhooks. World locked.
/// Returns false when the run was already completed.
pub fn complete_run(shared: &Arc<Shared>, w: &mut World, id: u64, conclusion: &str) -> bool {
    let Some(run) = w.runs.get_mut(&id) else {
        return false;
    };
    if run.status == "completed" {
        return false;
    }
    run.status = "completed";
    run.conclusion = Some(conclusion.to_owned());
    run.updated_at = Utc::now();
    let is_spoke = run.repo != w.hub_repo && run.event == "workflow_dispatch";
    if is_spoke {
        w.counters.spoke_runs_active = w.counters.spoke_runs_active.saturating_sub(1);
    }
    emit_run_event(shared, w, id, "completed");
    if is_spoke {
        match shared.scenario.spoke.callback {
            Callback::RepositoryDispatch => spoke_callback(shared, w, id),
            Callback::Action => super::action_callback::spawn(shared, w, id),
            Callback::None => {}
        }
    }
    true
}

/// Tells the hub that a run has started (`workflow_run` `in_progress`). World locked.
pub fn emit_in_progress(shared: &Shared, w: &mut World, id: u64) {
    emit_run_event(shared, w, id, "in_progress");
}

/// The webhook payload of a `workflow_run` event.
fn emit_run_event(shared: &Shared, w: &mut World, id: u64, action: &str) {
    let ctx = &shared.ctx;
    let Some(run) = w.runs.get(&id) else {
        return;
    };
    let repo = &w.repos[run.repo];
    let Some(wf) = repo.workflow(&run.workflow_file) else {
        return;
    };
    let payload = json::splice(
        &json!({"action": action}),
        vec![
            ("workflow_run", json::workflow_run(ctx, repo, run, true)),
            (
                "workflow",
                json::one(json::workflow(ctx, repo, wf).to_string()),
            ),
            ("repository", json::one(json::repo_hook_cached(ctx, repo))),
            ("sender", json::one(ctx.person_raw(&run.actor))),
            ("organization", json::one(ctx.organization_raw())),
            ("installation", json::one(ctx.installation_raw())),
        ],
    );
    let repo_id = repo.id;
    emit(
        shared,
        w,
        "workflow_run",
        Some(action),
        Some(repo_id),
        payload,
    );
}

/// What the spoke's report step does: `spoke_complete` on the hub repository.
fn spoke_callback(shared: &Shared, w: &mut World, id: u64) {
    let Some(run) = w.runs.get(&id) else {
        return;
    };
    let repo = &w.repos[run.repo];
    let get = |k: &str| run.inputs.get(k).cloned().unwrap_or_default();
    let mut payload = json!({
        "hub_run_id": get("hub_run_id"),
        "repo": repo.full_name,
        "status": run.conclusion,
        "run_id": run.id,
        "run_attempt": run.run_attempt,
        "run_url": run.html_url,
        "callback_token": get("callback_token"),
    });
    if let Some(summary) = &repo.summary {
        payload["summary"] = json!(summary);
    }
    let hub = w.hub_repo;
    repository_dispatch(
        shared,
        w,
        hub,
        "spoke_complete",
        payload,
        "spokehub-spoke[bot]",
    );
}

/// Records a `repository_dispatch` on `repo` and emits its webhook. World locked.
pub fn repository_dispatch(
    shared: &Shared,
    w: &mut World,
    repo: usize,
    event_type: &str,
    client_payload: Value,
    sender: &str,
) {
    let ctx = &shared.ctx;
    let r = &w.repos[repo];
    let payload = json::splice(
        &json!({"action": event_type, "branch": r.default_branch, "client_payload": client_payload}),
        vec![
            ("repository", json::one(json::repo_hook_cached(ctx, r))),
            ("sender", json::one(ctx.person_raw(sender))),
            ("organization", json::one(ctx.organization_raw())),
            ("installation", json::one(ctx.installation_raw())),
        ],
    );
    let repo_id = r.id;
    w.dispatches.push(RepoDispatch {
        repo: r.full_name.clone(),
        event_type: event_type.to_owned(),
        client_payload,
    });
    emit(
        shared,
        w,
        "repository_dispatch",
        Some(event_type),
        Some(repo_id),
        payload,
    );
}
