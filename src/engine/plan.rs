//! Trigger and plan: a `workflow_dispatch` of the hub workflow starts a run; planning resolves
//! the ref, creates the check run, lists the installation's repositories and selects targets.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value};

use super::Engine;
use crate::github::{ApiError, InstallationClient, WorkflowDispatchEvent};
use crate::hub::{escape_cell, HubRunId, RepoName, Selector, Sha, SpokeStatus, Verdict};
use crate::store::{now_ms, NewRun, NewSpoke, RunRecord};

/// The hub workflow's inputs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub task: String,
    pub targets: String,
    /// A JSON object, compact.
    pub params: String,
    pub dry_run: bool,
}

/// Longest `params` accepted: the spoke's inputs must stay under GitHub's 65,535 characters.
const MAX_PARAMS: usize = 60_000;

fn input_str<'a>(inputs: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match inputs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(format!("input `{key}` must be a string, got {other}")),
    }
}

/// The `task` input: 1 to 100 letters, digits, '-', '_' or '.'.
fn parse_trigger_task(task: &str) -> Result<&str, String> {
    let task = task.trim();
    if task.is_empty() {
        return Err("input `task` is required".into());
    }
    if task.len() > 100
        || !task
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "input `task` must be 1 to 100 characters of letters, digits, '-', '_' or '.', got {task:?}"
        ));
    }
    Ok(task)
}

/// Validates the hub workflow's inputs: `task` (required), `targets` (a selector), `params` (a
/// JSON object as a string) and `dry_run` (boolean).
pub fn parse_trigger(inputs: &Map<String, Value>) -> Result<Trigger, String> {
    let task = parse_trigger_task(input_str(inputs, "task")?.unwrap_or(""))?;
    let targets = input_str(inputs, "targets")?.unwrap_or("").trim();
    let selector = Selector::parse(targets).map_err(|e| format!("input `targets`: {e}"))?;
    let params = input_str(inputs, "params")?.unwrap_or("").trim();
    let params = if params.is_empty() {
        "{}".to_owned()
    } else {
        match serde_json::from_str::<Value>(params) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            Ok(_) => return Err("input `params` must be a JSON object".into()),
            Err(e) => return Err(format!("input `params` is not valid JSON: {e}")),
        }
    };
    if params.len() > MAX_PARAMS {
        return Err(format!(
            "input `params` is longer than {MAX_PARAMS} characters"
        ));
    }
    let dry_run = match inputs.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.trim() {
            "" | "false" => false,
            "true" => true,
            other => {
                return Err(format!(
                    "input `dry_run` must be true or false, got {other:?}"
                ))
            }
        },
        Some(other) => {
            return Err(format!(
                "input `dry_run` must be true or false, got {other}"
            ))
        }
    };
    Ok(Trigger {
        task: task.to_owned(),
        targets: selector.to_string(),
        params,
        dry_run,
    })
}

/// The check run's name for a task.
pub use super::checks::{check_run_name, not_started_name};

/// Why planning stopped.
pub enum PlanError {
    /// The run cannot go on (say why on the check run).
    Fatal(String),
    /// Transient trouble: plan again later.
    Retry(anyhow::Error),
}

impl From<ApiError> for PlanError {
    /// GitHub's refusals and answers the hub cannot read (an invalid repository name in the
    /// listing: asking again returns the same) end the run; trouble that passes is retried.
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound { .. }
            | ApiError::Unprocessable { .. }
            | ApiError::Forbidden { .. }
            | ApiError::Decode { .. } => PlanError::Fatal(e.to_string()),
            other => PlanError::Retry(other.into()),
        }
    }
}

impl From<crate::store::StoreError> for PlanError {
    fn from(e: crate::store::StoreError) -> Self {
        PlanError::Retry(e.into())
    }
}

impl Engine {
    /// A `workflow_dispatch` webhook: starts a hub run when it is the hub workflow.
    pub(super) async fn on_workflow_dispatch(
        &self,
        guid: &str,
        e: WorkflowDispatchEvent,
    ) -> anyhow::Result<String> {
        let file = Path::new(&e.workflow).file_name().and_then(|f| f.to_str());
        if file != Some(self.config().hub_workflow.as_str()) {
            return Ok(format!("ignored: {} is not the hub workflow", e.workflow));
        }
        let Some(installation_id) = e.installation_id else {
            return Ok("ignored: no installation".into());
        };
        if let Err(refusal) = self.config().access.admit(
            &e.repository,
            &e.git_ref,
            e.default_branch.as_deref(),
            &e.sender,
        ) {
            self.inner
                .metrics
                .triggers_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                repo = %e.repository,
                git_ref = e.git_ref,
                sender = e.sender,
                reason = refusal.kind(),
                "hub workflow run ignored: {refusal}"
            );
            return Ok(format!("ignored: {refusal}"));
        }
        let trigger = match parse_trigger(&e.inputs) {
            Ok(t) => t,
            Err(reason) => {
                tracing::warn!(repo = %e.repository, reason, "run not started: invalid inputs");
                self.report_invalid_trigger(installation_id, &e, &reason)
                    .await?;
                return Ok(format!("invalid inputs: {reason}"));
            }
        };
        let policy = self.config().policy_for(&trigger.task);
        if !trigger.dry_run && !policy.allow_parallel {
            let active = self
                .store()
                .active_run_for(
                    installation_id,
                    &e.repository,
                    &trigger.task,
                    &trigger.targets,
                )
                .await?;
            if let Some(active) = active {
                tracing::info!(%active, task = trigger.task, "not started: the same run is active");
                self.refuse_parallel_run(&e, installation_id, &trigger.task, &active)
                    .await?;
                return Ok(format!("not started: run {active} is active"));
            }
        }
        let id = HubRunId::new_random();
        let inserted = self
            .store()
            .insert_run(&NewRun {
                id,
                installation_id,
                hub_repo: &e.repository,
                task: &trigger.task,
                targets: &trigger.targets,
                params: &trigger.params,
                dry_run: trigger.dry_run,
                git_ref: &e.git_ref,
                sender: &e.sender,
                trigger_delivery: Some(guid),
                deadline_at: now_ms() + policy.timeouts.overall.as_millis() as i64,
                mode: self.config().work_for(&trigger.task).mode,
            })
            .await?;
        if !inserted {
            return Ok("duplicate trigger".into());
        }
        tracing::Span::current().record("hub_run_id", tracing::field::display(&id));
        tracing::info!(hub_run_id = %id, task = trigger.task, targets = trigger.targets, "run started");
        self.announce_runs().await;
        Ok(format!("started run {id}"))
    }

    /// The commit a trigger ran on, to hang a check run on it without starting a run; None
    /// when the ref no longer resolves (nothing to show the check run on).
    pub(super) async fn trigger_commit(
        &self,
        installation_id: crate::hub::InstallationId,
        e: &WorkflowDispatchEvent,
    ) -> anyhow::Result<Option<(InstallationClient, Sha)>> {
        let client = self.inner.github.installation(installation_id).await?;
        match client.resolve_ref(&e.repository, &e.git_ref).await {
            Ok(sha) => Ok(Some((client, sha))),
            Err(ApiError::NotFound { .. }) | Err(ApiError::Unprocessable { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Inputs were invalid: no run; a check run with conclusion `action_required` says why.
    async fn report_invalid_trigger(
        &self,
        installation_id: crate::hub::InstallationId,
        e: &WorkflowDispatchEvent,
        reason: &str,
    ) -> anyhow::Result<()> {
        let Some((client, sha)) = self.trigger_commit(installation_id, e).await? else {
            return Ok(());
        };
        let task = input_str(&e.inputs, "task")
            .ok()
            .flatten()
            .unwrap_or("")
            .trim();
        let name = if parse_trigger_task(task).is_err() {
            "spokehub (not started)".to_owned()
        } else {
            not_started_name(task)
        };
        let req = super::checks::not_started(
            name,
            sha.as_str(),
            "action_required",
            None,
            "Run not started: invalid inputs",
            format!(
                "The hub workflow was run by {} with inputs spokehub cannot use:\n\n> {}\n\nFix the inputs and run the workflow again.",
                escape_cell(&e.sender, 100),
                escape_cell(reason, 1000)
            ),
        );
        client
            .create_check_run(&e.repository, &req)
            .await
            .context("cannot create the invalid-inputs check run")?;
        Ok(())
    }

    /// Plans a run: head sha, check run, targets. Ends with the run active (or completed for a
    /// dry run). Safe to repeat after a crash.
    pub(super) async fn plan(&self, run: &RunRecord) -> Result<(), PlanError> {
        self.telemetry().task_seen(&run.task);
        let client = self
            .inner
            .github
            .installation(run.installation_id)
            .await
            .map_err(PlanError::from)?;
        let sha = match &run.head_sha {
            Some(sha) => sha.clone(),
            None => {
                let sha = client.resolve_ref(&run.hub_repo, &run.git_ref).await?;
                self.store().set_head_sha(&run.id, &sha).await?;
                sha
            }
        };
        if run.check_run_id.is_none() {
            let id = self.ensure_check_run(&client, run, &sha).await?;
            self.store().set_check_run(&run.id, id).await?;
        }
        let selector = Selector::parse(&run.targets)
            .map_err(|e| PlanError::Fatal(format!("input `targets`: {e}")))?;
        let mut spokes = if selector.targets_agents() {
            self.plan_agents(run, &selector).await?
        } else {
            self.plan_repositories(run, &client, &selector).await?
        };
        tracing::info!(
            targets = spokes
                .iter()
                .filter(|s| s.status == SpokeStatus::Planned)
                .count(),
            skipped = spokes
                .iter()
                .filter(|s| s.status == SpokeStatus::Skipped)
                .count(),
            "planned"
        );
        // Cancelled while planning: nothing is dispatched.
        let cancelled = self
            .store()
            .run(&run.id)
            .await?
            .filter(|r| r.cancel_requested)
            .map(|r| r.reason.unwrap_or_else(|| "cancelled".into()));
        if let Some(reason) = cancelled {
            for spoke in spokes
                .iter_mut()
                .filter(|s| s.status == SpokeStatus::Planned)
            {
                spoke.status = SpokeStatus::Cancelled;
                spoke.reason = Some(reason.clone());
            }
        }
        self.store().activate_run(&run.id, &sha, &spokes).await?;
        // Spokes that end at planning (skipped; cancelled while planning).
        for spoke in spokes.iter().filter(|s| s.status.is_terminal()) {
            self.telemetry()
                .spoke_ended(&run.task, spoke.status.as_str(), None);
        }
        Ok(())
    }

    /// The spokes of a run over repositories: the installation's, as the selector says.
    async fn plan_repositories(
        &self,
        run: &RunRecord,
        client: &crate::github::InstallationClient,
        selector: &Selector,
    ) -> Result<Vec<NewSpoke>, PlanError> {
        let mut repos = client.list_repositories().await?;
        if selector.needs_properties() {
            let mut props = client.custom_properties(run.hub_repo.owner()).await?;
            for repo in &mut repos {
                if let Some(p) = props.remove(&repo.name) {
                    repo.properties = p;
                }
            }
        }
        // The hub repositories run the hub workflow; they are never spokes.
        let access = &self.config().access;
        Ok(repos
            .into_iter()
            .filter(|repo| !access.is_hub(&repo.name))
            .filter_map(|repo| {
                let (status, reason) = match selector.evaluate(&repo) {
                    Verdict::Target => (SpokeStatus::Planned, None),
                    Verdict::Skip(reason) => (SpokeStatus::Skipped, Some(reason)),
                    Verdict::NotSelected => return None,
                };
                Some(NewSpoke {
                    repo: repo.name,
                    default_branch: repo.default_branch,
                    status,
                    reason,
                })
            })
            .collect())
    }

    /// The spokes of a run over agents (`agent:NAME`, `agent:*`): one per selected active
    /// agent, claimable by that agent only; a named agent that is not active is skipped.
    async fn plan_agents(
        &self,
        run: &RunRecord,
        selector: &Selector,
    ) -> Result<Vec<NewSpoke>, PlanError> {
        if run.mode != crate::hub::RunMode::Pull {
            return Err(PlanError::Fatal(format!(
                "input `targets`: agent: terms select agents, which only a pull task reaches \
                 (set [tasks.{}] mode = \"pull\")",
                run.task
            )));
        }
        let active: Vec<String> = self
            .store()
            .agents()
            .await?
            .into_iter()
            .filter(|a| a.revoked_at.is_none())
            .map(|a| a.name)
            .collect();
        let (chosen, missing) = selector.select_agents(&active);
        let target = |name: &str| {
            RepoName::agent(name).map_err(|e| PlanError::Fatal(format!("input `targets`: {e}")))
        };
        let mut spokes = Vec::with_capacity(chosen.len() + missing.len());
        for name in &chosen {
            spokes.push(NewSpoke {
                repo: target(name)?,
                default_branch: String::new(),
                status: SpokeStatus::Planned,
                reason: None,
            });
        }
        for (name, why) in missing {
            spokes.push(NewSpoke {
                repo: target(&name)?,
                default_branch: String::new(),
                status: SpokeStatus::Skipped,
                reason: Some(why),
            });
        }
        Ok(spokes)
    }

    /// The run's check run: found by `external_id` if an earlier attempt created it (a crash
    /// between creating and recording it), else created in progress.
    async fn ensure_check_run(
        &self,
        client: &InstallationClient,
        run: &RunRecord,
        sha: &Sha,
    ) -> Result<u64, PlanError> {
        let name = check_run_name(&run.task);
        let external_id = run.id.to_string();
        let existing = client.check_runs_for_ref(&run.hub_repo, sha, &name).await?;
        if let Some(found) = existing
            .iter()
            .find(|c| c.external_id.as_deref() == Some(external_id.as_str()))
        {
            return Ok(found.id);
        }
        let req = super::checks::started(
            name,
            sha.as_str(),
            &run.id,
            self.details_url(&run.id),
            "Planning",
            format!(
                "Selecting targets for task {} (targets: {}).",
                escape_cell(&run.task, 200),
                if run.targets.is_empty() {
                    "all".to_owned()
                } else {
                    escape_cell(&run.targets, 500)
                }
            ),
        );
        Ok(client.create_check_run(&run.hub_repo, &req).await?)
    }

    /// Where the check run links to: the hub's page for the run, when the hub has a public URL.
    pub(super) fn details_url(&self, id: &HubRunId) -> Option<String> {
        self.config()
            .public_url
            .as_ref()
            .and_then(|u| u.join(&format!("runs/{id}")).ok())
            .map(String::from)
    }
}

/// The repository a spoke report names, when it is one.
pub(super) fn repo_of(value: Option<&Value>) -> Option<RepoName> {
    value?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn valid_inputs_are_normalized() {
        let t = parse_trigger(&inputs(json!({
            "task": "bump-deps", "targets": " topic:rust  -repo:legacy ", "params": "{ \"v\": 2 }", "dry_run": "true"
        })))
        .unwrap();
        assert_eq!(t.task, "bump-deps");
        assert_eq!(t.params, "{\"v\":2}");
        assert!(t.dry_run);
        let t = parse_trigger(&inputs(json!({"task": "scan"}))).unwrap();
        assert_eq!(
            (t.params.as_str(), t.dry_run, t.targets.as_str()),
            ("{}", false, "")
        );
    }

    #[test]
    fn invalid_inputs_say_which_input() {
        for (v, needle) in [
            (json!({}), "`task` is required"),
            (json!({"task": "a b"}), "`task` must be"),
            (
                json!({"task": "x", "params": "[1]"}),
                "`params` must be a JSON object",
            ),
            (
                json!({"task": "x", "params": "{"}),
                "`params` is not valid JSON",
            ),
            (json!({"task": "x", "dry_run": "maybe"}), "`dry_run`"),
            (json!({"task": "x", "targets": "colour:blue"}), "`targets`"),
        ] {
            let e = parse_trigger(&inputs(v.clone())).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
