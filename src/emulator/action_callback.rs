//! Scenario option `callback = "action"`: when a spoke run completes, the emulator runs the real
//! report action script (`action/report.sh`) as a runner would, with `GITHUB_*` and `INPUT_*`
//! set and an installation token the emulator minted. The script sends
//! `POST /repos/{org}/{hub}/dispatches` over HTTP to the emulator, which turns it into the
//! `repository_dispatch` webhook the hub receives: the callback takes the real path.
//!
//! At most `spoke.action_concurrency` scripts run at once; the rest wait for a permit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use chrono::Utc;
use tokio::sync::Semaphore;

use super::scenario::{Callback, Scenario};
use super::server::Shared;
use super::state::{Token, World};

/// The script, relative to the crate root or to a directory holding the binary.
const SCRIPT: &str = "action/report.sh";
/// A script that has not finished after this long is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs report scripts with bounded concurrency.
pub struct ActionRunner {
    script: Option<PathBuf>,
    permits: Arc<Semaphore>,
}

impl ActionRunner {
    /// The runner of a scenario: finds the script when `callback = "action"` (an error when it
    /// cannot be found), nothing to find otherwise.
    pub fn new(sc: &Scenario) -> anyhow::Result<ActionRunner> {
        let script = match sc.spoke.callback {
            Callback::Action => Some(find_script(sc.spoke.action_script.as_deref())?),
            _ => None,
        };
        Ok(ActionRunner {
            script,
            permits: Arc::new(Semaphore::new(sc.spoke.action_concurrency)),
        })
    }
}

/// The script: the scenario's `spoke.action_script`, else `action/report.sh` of this crate's
/// source tree, else `action/report.sh` next to the binary or in one of its parent directories.
pub fn find_script(configured: Option<&str>) -> anyhow::Result<PathBuf> {
    if let Some(p) = configured {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("spoke.action_script: {} is not a file", p.display());
        }
        return Ok(p);
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    if source.is_file() {
        return Ok(source);
    }
    let exe = std::env::current_exe().context("cannot locate the running binary")?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(SCRIPT))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("callback = \"action\": cannot find {SCRIPT}; set spoke.action_script")
        })
}

/// Maps a run's conclusion to the `status` input a spoke passes (`job.status`).
fn job_status(conclusion: Option<&str>) -> &'static str {
    match conclusion {
        Some("success") => "success",
        Some("cancelled") => "cancelled",
        _ => "failure",
    }
}

/// Mints an installation token the emulator accepts, as `actions/create-github-app-token` would.
fn mint_token(shared: &Shared, w: &mut World) -> String {
    let raw: [u8; 27] = rand::random();
    let token = format!(
        "ghs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let expires_at =
        Utc::now() + chrono::Duration::seconds(shared.scenario.spoke.token_lifetime_s as i64);
    w.tokens.insert(
        token.clone(),
        Token {
            expires_at,
            scope: Default::default(),
        },
    );
    w.counters.tokens_minted += 1;
    token
}

/// Starts the report step of spoke run `id` (already completed). World locked.
pub fn spawn(shared: &Arc<Shared>, w: &mut World, id: u64) {
    let Some(script) = shared.actions.script.clone() else {
        return;
    };
    let Some(run) = w.runs.get(&id) else {
        return;
    };
    let input = |k: &str| run.inputs.get(k).cloned().unwrap_or_default();
    let base = shared.ctx.base.clone();
    let env: Vec<(&'static str, String)> = vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("CI", "true".into()),
        ("GITHUB_REPOSITORY", w.repos[run.repo].full_name.clone()),
        ("GITHUB_RUN_ID", run.id.to_string()),
        ("GITHUB_RUN_ATTEMPT", run.run_attempt.to_string()),
        ("GITHUB_SERVER_URL", base.clone()),
        ("GITHUB_API_URL", base.clone()),
        ("GITHUB_WORKFLOW", run.workflow_name.clone()),
        ("GITHUB_EVENT_NAME", run.event.clone()),
        ("INPUT_HUB_REPO", w.repos[w.hub_repo].full_name.clone()),
        ("INPUT_HUB_RUN_ID", input("hub_run_id")),
        ("INPUT_STATUS", job_status(run.conclusion.as_deref()).into()),
        ("INPUT_CALLBACK_TOKEN", input("callback_token")),
        ("INPUT_SUMMARY", String::new()),
        ("INPUT_SUMMARY_FILE", String::new()),
        ("INPUT_API_URL", base),
        ("SPOKEHUB_REPORT_RETRY_DELAY_S", "1".into()),
        ("SPOKEHUB_REPORT_RETRY_MAX_DELAY_S", "5".into()),
    ];
    let token = mint_token(shared, w);
    let permits = shared.actions.permits.clone();
    tokio::spawn(async move {
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .env("INPUT_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = script.parent() {
            cmd.env("ACTION_PATH", dir);
        }
        match tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output()).await {
            // The script never prints tokens, so its output may be logged.
            Ok(Ok(out)) if out.status.success() => {
                tracing::debug!(run = id, "report action delivered");
            }
            Ok(Ok(out)) => tracing::warn!(
                run = id,
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr),
                "report action failed"
            ),
            Ok(Err(e)) => tracing::warn!(run = id, error = %e, "cannot run the report action"),
            Err(_) => tracing::warn!(run = id, "report action timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_crate_script_and_checks_a_configured_one() {
        assert!(find_script(None).unwrap().ends_with(SCRIPT));
        let e = find_script(Some("/nonexistent/report.sh")).unwrap_err();
        assert!(e.to_string().contains("spoke.action_script"), "{e}");
    }

    #[test]
    fn job_status_follows_the_conclusion() {
        assert_eq!(job_status(Some("success")), "success");
        assert_eq!(job_status(Some("cancelled")), "cancelled");
        assert_eq!(job_status(Some("timed_out")), "failure");
        assert_eq!(job_status(None), "failure");
    }
}
