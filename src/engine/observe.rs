//! Observing spokes: `spoke_complete` callbacks (believed only under the trust rules) and
//! `workflow_run` webhooks (matched by run id or by the hub run id in the run's title), plus the
//! operator's check-run buttons.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::plan::repo_of;
use super::Engine;
use crate::github::{RepositoryDispatchEvent, WorkflowRunEvent};
use crate::hub::{callback_closed, Channel, HubRunId, ReportOutcome, SpokeEvent};

/// The longest spoke summary kept (the check run shows less).
const MAX_SUMMARY_CHARS: usize = 2000;

/// The event type spokes report with.
pub const SPOKE_COMPLETE: &str = "spoke_complete";

/// Reads `[<hub_run_id>#<attempt>]` from a spoke run's title
/// (`spokehub <task> [<hub_run_id>#<attempt>]`).
pub fn parse_run_title(title: &str) -> Option<(HubRunId, u32)> {
    let open = title.rfind('[')?;
    let inner = title[open + 1..].strip_suffix(']')?;
    let (id, attempt) = inner.split_once('#')?;
    Some((id.parse().ok()?, attempt.parse().ok()?))
}

impl Engine {
    /// Rejects a report: logged, counted, recorded; it changes nothing.
    /// `reason` is the metric's label (a fixed word), `why` the detail for the log and ledger.
    async fn reject(
        &self,
        run: Option<&HubRunId>,
        repo: Option<&str>,
        reason: &'static str,
        why: &str,
    ) -> String {
        tracing::warn!(repo, why, "spoke_complete rejected");
        let run = run.map(|r| r.to_string());
        if let Err(e) = self
            .store()
            .log_event(run.as_deref(), repo, "callback_rejected", why)
            .await
        {
            tracing::error!(error = %e, "cannot record rejected callback");
        }
        // Counted once recorded, so whoever reads the counter finds the record.
        self.inner
            .metrics
            .callbacks_rejected
            .fetch_add(1, Ordering::Relaxed);
        self.telemetry().callback_rejected(reason);
        format!("rejected: {why}")
    }

    /// `repository_dispatch` `spoke_complete` on a hub repository.
    pub(super) async fn on_repository_dispatch(
        &self,
        e: RepositoryDispatchEvent,
    ) -> anyhow::Result<String> {
        if e.action != SPOKE_COMPLETE {
            return Ok(format!("ignored: event type {:?}", e.action));
        }
        let p = &e.client_payload;
        let field = |k: &str| p.get(k).and_then(Value::as_str);
        let Some(run_id) = field("hub_run_id").and_then(|s| s.parse::<HubRunId>().ok()) else {
            return Ok(self
                .reject(None, None, "malformed", "no valid hub_run_id")
                .await);
        };
        let span = tracing::Span::current();
        span.record("hub_run_id", tracing::field::display(&run_id));
        let Some(run) = self.run_identity(&run_id).await? else {
            return Ok(self
                .reject(None, None, "unknown_run", "unknown hub run")
                .await);
        };
        if e.installation_id != Some(run.installation_id) {
            return Ok(self
                .reject(
                    Some(&run_id),
                    None,
                    "wrong_origin",
                    "callback from another installation",
                )
                .await);
        }
        if e.repository != run.hub_repo {
            return Ok(self
                .reject(
                    Some(&run_id),
                    None,
                    "wrong_origin",
                    "callback sent to another repository than the run's hub",
                )
                .await);
        }
        let Some(repo) = repo_of(p.get("repo")) else {
            return Ok(self
                .reject(Some(&run_id), None, "malformed", "no valid repo")
                .await);
        };
        span.record("repo", tracing::field::display(&repo));
        let Some(spoke) = self.store().spoke(&run_id, &repo).await? else {
            return Ok(self
                .reject(
                    Some(&run_id),
                    Some(repo.as_str()),
                    "not_a_spoke",
                    "repository is not a spoke of this run",
                )
                .await);
        };
        let attempt = match self
            .inner
            .signer
            .verify(field("callback_token"), &run_id, &repo)
        {
            Ok(attempt) => attempt,
            Err(why) => {
                return Ok(self
                    .reject(
                        Some(&run_id),
                        Some(repo.as_str()),
                        "bad_token",
                        &why.to_string(),
                    )
                    .await)
            }
        };
        let Some(status) = field("status") else {
            return Ok(self
                .reject(Some(&run_id), Some(repo.as_str()), "malformed", "no status")
                .await);
        };
        let outcome = ReportOutcome::from_conclusion(status);
        if let Some(why) = callback_closed(&spoke.spoke, attempt, &outcome) {
            return Ok(self
                .reject(Some(&run_id), Some(repo.as_str()), "attempt_closed", &why)
                .await);
        }
        self.inner
            .metrics
            .callbacks_accepted
            .fetch_add(1, Ordering::Relaxed);
        let run_id_field = p.get("run_id").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        let summary = field("summary")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(MAX_SUMMARY_CHARS).collect::<String>());
        // The run's address comes from GitHub (the dispatch's answer, workflow_run, a
        // read-back), never from the spoke: a callback could point it anywhere.
        let event = SpokeEvent::Report {
            attempt,
            run_id: run_id_field,
            run_url: None,
            outcome,
            channel: Channel::Callback,
            summary,
        };
        let record = self.transition(&run, &repo, event).await?;
        Ok(format!("callback: {:?}", record.current().status))
    }

    /// `workflow_run` from a spoke repository.
    pub(super) async fn on_workflow_run(&self, e: WorkflowRunEvent) -> anyhow::Result<String> {
        let span = tracing::Span::current();
        span.record("repo", tracing::field::display(&e.repository));
        // Only runs of the spoke workflow started by a dispatch can be spokes: anyone who can
        // push to a spoke repository controls the titles of its other runs.
        let spoke_workflow = &self.config().spoke_workflow;
        if e.run.event != "workflow_dispatch" || !is_spoke_workflow(&e.run.path, spoke_workflow) {
            return Ok("ignored: not a dispatched run of the spoke workflow".into());
        }
        // The title names the hub run and attempt; the run id is the fallback key.
        let (run_id, attempt) = match parse_run_title(&e.run.display_title) {
            Some((run_id, attempt)) => (run_id, Some(attempt)),
            None => match self.store().spoke_by_workflow_run(e.run.id).await? {
                Some((run_id, _)) => (run_id, None),
                None => return Ok("ignored: not a spoke run".into()),
            },
        };
        span.record("hub_run_id", tracing::field::display(&run_id));
        let Some(run) = self.run_identity(&run_id).await? else {
            self.inner
                .metrics
                .reports_unmatched
                .fetch_add(1, Ordering::Relaxed);
            return Ok("ignored: unknown hub run".into());
        };
        if e.installation_id != Some(run.installation_id) {
            self.inner
                .metrics
                .reports_unmatched
                .fetch_add(1, Ordering::Relaxed);
            return Ok("ignored: another installation".into());
        }
        let Some(spoke) = self.store().spoke(&run_id, &e.repository).await? else {
            self.inner
                .metrics
                .reports_unmatched
                .fetch_add(1, Ordering::Relaxed);
            return Ok("ignored: not a spoke of the run".into());
        };
        // The current attempt's run is known: no other run speaks for it.
        let current = spoke.spoke.attempt;
        if let (Some(known), Some(a)) = (spoke.spoke.workflow_run_id, attempt) {
            if a == current && known != e.run.id {
                self.inner
                    .metrics
                    .reports_unmatched
                    .fetch_add(1, Ordering::Relaxed);
                return Ok("ignored: another run claims this attempt".into());
            }
        }
        // Matched by run id only: it is the current attempt's run.
        let attempt = match attempt {
            Some(a) => a,
            None if spoke.spoke.workflow_run_id == Some(e.run.id) => spoke.spoke.attempt,
            None => return Ok("ignored: run of an unknown attempt".into()),
        };
        let outcome = match (e.action.as_str(), e.run.conclusion.as_deref()) {
            ("completed", Some(conclusion)) => ReportOutcome::from_conclusion(conclusion),
            ("completed", None) => ReportOutcome::Failed {
                detail: Some("completed without a conclusion".into()),
            },
            ("requested" | "in_progress", _) if e.run.status != "completed" => {
                ReportOutcome::Running
            }
            _ => return Ok(format!("ignored: action {}", e.action)),
        };
        let event = SpokeEvent::Report {
            attempt,
            run_id: Some(e.run.id),
            run_url: Some(e.run.html_url.clone()),
            outcome,
            channel: Channel::WorkflowRun,
            summary: None,
        };
        let record = self.transition(&run, &e.repository, event).await?;
        Ok(format!("workflow_run: {:?}", record.current().status))
    }
}

/// Whether a run's `path` (`.github/workflows/x.yml`, possibly with `@ref`) is the spoke
/// workflow file.
fn is_spoke_workflow(path: &str, spoke_workflow: &str) -> bool {
    let path = path.split('@').next().unwrap_or(path);
    path.rsplit('/').next() == Some(spoke_workflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_titles_carry_the_hub_run_and_attempt() {
        let id = HubRunId::new_random();
        assert_eq!(
            parse_run_title(&format!("spokehub bump [{id}#3]")),
            Some((id, 3))
        );
        assert_eq!(parse_run_title("spokehub bump"), None);
        assert_eq!(parse_run_title(&format!("x [{id}#]")), None);
        assert_eq!(parse_run_title("x [not-an-id#1]"), None);
        assert_eq!(parse_run_title(&format!("x [{id}#1] trailing")), None);
    }

    #[test]
    fn only_the_spoke_workflow_file_counts() {
        let w = "spokehub-spoke.yml";
        assert!(is_spoke_workflow(".github/workflows/spokehub-spoke.yml", w));
        assert!(is_spoke_workflow(
            ".github/workflows/spokehub-spoke.yml@refs/heads/main",
            w
        ));
        assert!(!is_spoke_workflow(".github/workflows/ci.yml", w));
        assert!(!is_spoke_workflow(
            ".github/workflows/not-spokehub-spoke.yml",
            w
        ));
    }
}
