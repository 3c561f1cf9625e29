//! `spokehub demo`: the GitHub emulator and the hub in one process, on a simulated
//! organization. It presses "Run workflow" the way a person would (through the emulator), shows
//! progress, and prints the summary. Exit 0 when the run completed, whatever its conclusion.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::{Config, FileConfig, ServeArgs};
use crate::emulator::{Emulator, Scenario};
use crate::hub::RunStatus;
use crate::report::{run_report, RunReport};

/// Runs up to this size get the check run's table printed.
const SHOW_SUMMARY_UP_TO: usize = 30;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of generated repositories in the simulated organization.
    #[arg(long, default_value_t = 50)]
    pub repos: usize,
    /// A scenario file instead of a generated organization.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// A hub configuration file (`spokehub.toml` form) for the demo's hub.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The task to run.
    #[arg(long, default_value = "demo")]
    pub task: String,
    /// The target selector.
    #[arg(long, default_value = "")]
    pub targets: String,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::generated(args.repos),
    };
    let dir = std::env::temp_dir().join(format!("spokehub-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&args, scenario, &dir, started).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    args: &DemoArgs,
    scenario: Scenario,
    dir: &std::path::Path,
    started: Instant,
) -> anyhow::Result<()> {
    let hub_listener = TcpListener::bind("127.0.0.1:0").await?;
    let emu_listener = TcpListener::bind("127.0.0.1:0").await?;
    let webhook_url = format!("http://{}/webhook", hub_listener.local_addr()?);
    let emulator = Emulator::start(emu_listener, scenario, webhook_url, None).await?;
    let config = Config::from_parts(
        &ServeArgs {
            app_id: Some(emulator.app_id),
            private_key: Some(emulator.private_key_pem.clone()),
            webhook_secret: Some(emulator.webhook_secret.clone()),
            github_api_url: Some(emulator.base_url.clone()),
            database_url: Some(format!("sqlite://{}", dir.join("hub.db").display())),
            hub_repository: Some(emulator.hub_repo.clone()),
            ..ServeArgs::default()
        },
        match &args.config {
            Some(path) => crate::config::read_file_config(path)?,
            None => FileConfig::default(),
        },
    )?;
    let hub = crate::server::start(config, hub_listener).await?;
    let http = reqwest::Client::new();
    let inputs = json!({
        "task": args.task, "targets": args.targets, "params": "{}", "dry_run": "false"
    });
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({
            "workflow": hub.engine.config().hub_workflow,
            "ref": "main",
            "inputs": inputs,
            "sender": "demo-user",
        }))
        .send()
        .await
        .context("cannot press \"Run workflow\" in the emulator")?;
    if !pressed.status().is_success() {
        bail!(
            "the emulator refused the hub workflow dispatch: {} {}",
            pressed.status(),
            pressed.text().await.unwrap_or_default()
        );
    }
    let store = hub.engine.store().clone();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut progress = Progress::new(!args.json);
    let report: RunReport = loop {
        if Instant::now() > deadline {
            bail!("the run did not complete within {} s", args.timeout_s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(id) = store.latest_run_id().await? else {
            continue;
        };
        let Some(report) = run_report(&store, &id).await? else {
            continue;
        };
        progress.show(&report);
        if report.run.status == RunStatus::Completed {
            break report;
        }
    };
    progress.finish();
    // The full state holds every check run's text; a summary is enough for a large run.
    let query = if report.totals.total > SHOW_SUMMARY_UP_TO {
        "?summary=1"
    } else {
        ""
    };
    let state: Value = http
        .get(format!("{}/_emulator/state{query}", emulator.base_url))
        .send()
        .await?
        .json()
        .await?;
    let wall_ms = started.elapsed().as_millis() as u64;
    print!("{}", report.to_text());
    if let Some(summary) = final_summary(&state, &report) {
        println!("\nThe check run on {}:\n\n{summary}", report.run.hub_repo);
    }
    if args.json {
        let t = &report.totals;
        let line = json!({
            "hub_run_id": report.run.id,
            "conclusion": report.run.conclusion,
            "total": t.total,
            "succeeded": t.succeeded,
            "failed": t.failed,
            "timed_out": t.timed_out,
            "skipped": t.skipped,
            "dispatch_failed": t.dispatch_failed,
            "cancelled": t.cancelled,
            "workflow_runs_created": state.get("workflow_runs_created"),
            "api_requests": state.get("requests_total"),
            "wall_ms": wall_ms,
        });
        println!("{line}");
    }
    hub.abort();
    emulator.shutdown().await;
    Ok(())
}

/// The check run's summary as the emulator holds it, for small runs (a large one is a long table).
fn final_summary(state: &Value, report: &RunReport) -> Option<String> {
    if report.totals.total > SHOW_SUMMARY_UP_TO {
        return None;
    }
    let id = report.run.check_run_id?;
    state
        .get("check_runs")?
        .as_array()?
        .iter()
        .find(|c| c.get("id").and_then(Value::as_u64) == Some(id))?
        .pointer("/output/summary")?
        .as_str()
        .map(str::to_owned)
}

/// A one-line progress bar on stderr.
struct Progress {
    enabled: bool,
    last: String,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: String::new(),
        }
    }

    fn show(&mut self, report: &RunReport) {
        if !self.enabled {
            return;
        }
        let t = &report.totals;
        let done = t.finished();
        let width = 30;
        let filled = (done * width).checked_div(t.total).unwrap_or(0);
        let line = format!(
            "\r[{}{}] {done}/{} done, {} running, {} failed",
            "#".repeat(filled),
            "-".repeat(width - filled),
            t.total,
            t.running + t.dispatched + t.dispatching,
            t.failed + t.timed_out + t.dispatch_failed,
        );
        if line != self.last {
            eprint!("{line}");
            let _ = std::io::stderr().flush();
            self.last = line;
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
