//! Scenario `[workers]`: the hub repository's worker workflow (hybrid tasks) runs as GitHub
//! would run it: one job per entry of its `workers` matrix, each a real process running the
//! template's own "Claim and run items" step (bash, curl, jq, as copied from
//! `workflows-templates/workers.yml`) with an ID token from the emulator's OIDC issuer, against
//! the hub. The task it runs for an item (`tasks/<task>/run` of the hub repository) is the
//! emulator's stand-in: it takes the scenario's duration for the item's repository and ends as
//! the scenario says. `kill_share` SIGKILLs that share of the jobs in the middle of their first
//! item (a runner lost mid-task). The run completes when every job has ended.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;

use super::oidc::Job;
use super::server::Shared;
use super::state::World;
use super::workflow::WORKERS_WORKFLOW;

/// The most jobs one worker run starts (GitHub: 256 per matrix).
const MAX_JOBS: usize = 256;

/// The emulator's stand-in for every task.
const TASK: &str = r#"#!/bin/sh
# The emulator's stand-in for a task: ends as the scenario says for the item's repository.
set -eu
set -- $(awk -F '\t' -v t="$SPOKEHUB_TARGET" '$1 == t { printf "%s %.3f\n", $2, $3 / 1000; exit }' "$(dirname "$0")/outcomes.tsv")
[ "$#" = 2 ] || { echo "$SPOKEHUB_TARGET is not in the scenario" >&2; exit 1; }
[ -z "${SPOKEHUB_EMULATOR_MARK:-}" ] || : >"$SPOKEHUB_EMULATOR_MARK"
sleep "$2"
awk -F '\t' -v t="$SPOKEHUB_TARGET" '$1 == t && $4 != "" { print $4 }' "$(dirname "$0")/outcomes.tsv" >"$SPOKEHUB_SUMMARY_FILE"
[ "$1" = success ]
"#;

/// Whether a new run of `workflow_file` in repository `repo` is a worker run.
pub fn is_worker_run(shared: &Shared, w: &World, repo: usize, workflow_file: &str) -> bool {
    repo == w.hub_repo && workflow_file == shared.scenario.workers.workflow
}

/// The `run:` script of the template's step `id: work`, dedented.
pub fn worker_step_script() -> Option<String> {
    let lines: Vec<&str> = WORKERS_WORKFLOW.lines().collect();
    let id = lines.iter().position(|l| l.trim() == "id: work")?;
    let run = id + lines[id..].iter().position(|l| l.trim() == "run: |")?;
    let key_indent = indent(lines[run]);
    let body: Vec<&str> = lines[run + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
        .copied()
        .collect();
    let strip = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(strip..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// One job to start.
struct JobSpec {
    env: Vec<(String, String)>,
    /// Killed once its first item has started.
    doomed: Option<PathBuf>,
}

/// Starts the jobs of worker run `id` (created and queued). World locked.
pub fn start(shared: &Arc<Shared>, w: &mut World, id: u64) {
    let Some(run) = w.runs.get(&id).cloned() else {
        return;
    };
    let input = |k: &str| run.inputs.get(k).cloned().unwrap_or_default();
    let workers: Vec<serde_json::Value> =
        serde_json::from_str(&input("workers")).unwrap_or_default();
    let n = workers.len().min(MAX_JOBS);
    let spoke = &shared.scenario.spoke;
    // What each repository's task does in this run.
    let mut outcomes = String::new();
    for (i, repo) in w.repos.iter().enumerate() {
        if i == w.hub_repo {
            continue;
        }
        let [lo, hi] = repo.duration_ms.unwrap_or(spoke.duration_ms);
        let ms = if hi > lo {
            w.rng.gen_range(lo..=hi)
        } else {
            lo
        };
        let failed = spoke.failure_rate > 0.0 && w.rng.gen_bool(spoke.failure_rate);
        let conclusion = repo
            .conclusion
            .clone()
            .unwrap_or_else(|| if failed { "failure" } else { "success" }.into());
        let summary = repo
            .summary
            .as_deref()
            .unwrap_or("")
            .replace(['\t', '\n', '\r'], " ");
        outcomes.push_str(&format!(
            "{}\t{conclusion}\t{ms}\t{summary}\n",
            repo.full_name
        ));
    }
    let hub = &w.repos[w.hub_repo];
    let workflow_path = format!(".github/workflows/{}", run.workflow_file);
    let workspace = std::env::temp_dir().join(format!(
        "spokehub-emulator-workers-{id}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let kill = (n as f64 * shared.scenario.workers.kill_share).ceil() as usize;
    let request_url = format!(
        "{}/id-token?api-version=2.0",
        super::oidc::Issuer::url(&shared.ctx.base)
    );
    let mut jobs = Vec::with_capacity(n);
    for (k, worker) in workers.iter().take(n).enumerate() {
        let token = shared.oidc().add_job(Job {
            repository: hub.full_name.clone(),
            workflow_path: workflow_path.clone(),
            git_ref: format!("refs/heads/{}", run.head_branch),
            sha: run.head_sha.clone(),
            run_id: id,
            run_attempt: 1,
            actor: run.actor.clone(),
            event_name: "workflow_dispatch".into(),
            token_ttl_s: None,
        });
        let worker = match worker {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let doomed = (k < kill).then(|| workspace.join(format!("started-{k}")));
        let mut env = vec![
            ("GITHUB_WORKSPACE".into(), workspace.display().to_string()),
            ("RUNNER_TEMP".into(), workspace.display().to_string()),
            ("GITHUB_SERVER_URL".into(), shared.ctx.base.clone()),
            ("GITHUB_API_URL".into(), shared.ctx.base.clone()),
            ("GITHUB_REPOSITORY".into(), hub.full_name.clone()),
            ("GITHUB_RUN_ID".into(), id.to_string()),
            ("ACTIONS_ID_TOKEN_REQUEST_URL".into(), request_url.clone()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), token),
            ("SPOKEHUB_HUB_URL".into(), input("hub_url")),
            ("SPOKEHUB_HUB_RUN_ID".into(), input("hub_run_id")),
            ("SPOKEHUB_WORKER".into(), worker),
            // No git server here: the item's repository is not cloned.
            ("SPOKEHUB_CHECKOUT".into(), "false".into()),
        ];
        if let Some(mark) = &doomed {
            env.push(("SPOKEHUB_EMULATOR_MARK".into(), mark.display().to_string()));
        }
        jobs.push(JobSpec { env, doomed });
    }
    if let Some(r) = w.runs.get_mut(&id) {
        r.status = "in_progress";
        r.updated_at = chrono::Utc::now();
    }
    super::sim::emit_in_progress(shared, w, id);
    let task = input("task");
    let shared = shared.clone();
    tokio::spawn(async move {
        let conclusion = match run_jobs(&workspace, &task, &outcomes, jobs).await {
            Ok(true) => "success",
            Ok(false) => "failure",
            Err(e) => {
                tracing::warn!(
                    run = id,
                    error = format!("{e:#}"),
                    "worker jobs could not run"
                );
                "failure"
            }
        };
        let _ = std::fs::remove_dir_all(&workspace);
        let mut w = shared.world();
        super::sim::complete_run(&shared, &mut w, id, conclusion);
    });
}

/// Runs the jobs to their end; whether every one succeeded.
async fn run_jobs(
    workspace: &Path,
    task: &str,
    outcomes: &str,
    jobs: Vec<JobSpec>,
) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let script = worker_step_script().context("the worker template has no step `id: work`")?;
    let task_dir = workspace.join("tasks").join(task);
    std::fs::create_dir_all(&task_dir).context("cannot make the worker workspace")?;
    let run = task_dir.join("run");
    std::fs::write(&run, TASK)?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(task_dir.join("outcomes.tsv"), outcomes)?;
    let step = workspace.join("work.sh");
    std::fs::write(&step, script)?;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut handles = Vec::new();
    for (k, job) in jobs.into_iter().enumerate() {
        let log = std::fs::File::create(workspace.join(format!("job-{k}.log")))?;
        let mut cmd = tokio::process::Command::new("bash");
        // As a runner runs a `shell: bash` step.
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&step)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", workspace)
            .envs(job.env)
            .current_dir(workspace)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start a worker job (bash)")?;
        let doomed = job.doomed;
        handles.push(tokio::spawn(async move {
            let Some(mark) = doomed else {
                return child.wait().await.map(|s| s.success()).unwrap_or(false);
            };
            loop {
                tokio::select! {
                    status = child.wait() => return status.map(|s| s.success()).unwrap_or(false),
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {
                        if mark.exists() {
                            if let Some(pid) = child.id() {
                                // The whole job: its shell and the task it runs.
                                // SAFETY: killpg has no memory-safety preconditions.
                                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                            }
                            let _ = child.wait().await;
                            return false;
                        }
                    }
                }
            }
        }));
    }
    let mut all = true;
    for h in handles {
        all &= h.await.unwrap_or(false);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_worker_step_is_found_in_the_template() {
        let script = super::worker_step_script().unwrap();
        assert!(script.starts_with("# Needs only bash"), "{script}");
        assert!(script.contains("/api/v1/work/claim"));
        assert!(script.trim_end().ends_with("done"));
    }
}
