//! `spokehub demo`: the GitHub emulator and the hub in one process, on a simulated
//! organization. It presses "Run workflow" the way a person would (through the emulator), shows
//! progress, and prints the summary. Exit 0 when the run completed, whatever its conclusion.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::{Config, FileConfig, ServeArgs};
use crate::emulator::{Emulator, Scenario};
use crate::hub::{RunStatus, Totals};
use crate::report::{run_report, RunReport};

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
    /// Rows of the spoke table printed at the end, problems first (0: every spoke).
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
    /// After the run, keep the hub and the emulator serving so the run page can be opened in
    /// a browser (sign in as `octocat` on the emulator's page); Ctrl-C ends.
    #[arg(long)]
    pub stay: bool,
    /// How the task reaches its repositories: `push` (a spoke-workflow dispatch each) or
    /// `hybrid` (the hub repository's worker workflow, dispatched once; its jobs run here as
    /// real processes and need bash, curl and jq).
    #[arg(long, default_value = "push", value_parser = ["push", "hybrid"])]
    pub mode: String,
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
    let hub_addr = hub_listener.local_addr()?;
    let mut config = Config::from_parts(
        &ServeArgs {
            public_url: Some(format!("http://{hub_addr}/")),
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
    if args.mode == "hybrid" {
        for tool in ["bash", "curl", "jq"] {
            if !on_path(tool) {
                bail!("--mode hybrid runs the worker jobs here, which need {tool}: install it (e.g. apt-get install {tool})");
            }
        }
        let work = crate::config::TaskWork {
            mode: crate::hub::RunMode::Hybrid,
            ..config.work_for(&args.task)
        };
        config.task_work.insert(args.task.clone(), work);
    }
    // The run page signs people in with the emulator's OAuth client.
    config.oauth = Some(crate::config::OAuthClient {
        client_id: emulator.oauth_client_id.clone(),
        client_secret: emulator.oauth_client_secret.clone().into(),
    });
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
    let mut progress = Progress::new(!args.json && std::io::stderr().is_terminal());
    // Reading every spoke is cheap for small runs; a large one is looked at once a second.
    let mut poll = Duration::from_millis(200);
    let report: RunReport = loop {
        if Instant::now() > deadline {
            bail!("the run did not complete within {} s", args.timeout_s);
        }
        tokio::time::sleep(poll).await;
        let Some(id) = store.latest_run_id().await? else {
            // No run yet: the hub may have refused to start one (it says so on a check run).
            if let Some(refusal) = refusal(&http, &emulator.base_url).await? {
                progress.finish();
                bail!("the hub did not start the run: {refusal}");
            }
            continue;
        };
        let Some(report) = run_report(&store, &id).await? else {
            continue;
        };
        progress.show(&report.totals);
        if report.spokes.len() > 1_000 {
            poll = Duration::from_secs(1);
        }
        if report.run.status == RunStatus::Completed {
            break report;
        }
    };
    progress.finish();
    let state: Value = http
        .get(format!("{}/_emulator/state?summary=1", emulator.base_url))
        .send()
        .await?
        .json()
        .await?;
    let wall_ms = started.elapsed().as_millis() as u64;
    print!("{}", report.to_table(args.rows));
    if let Some(n) = state
        .get("content_creating_requests")
        .and_then(Value::as_u64)
    {
        eprintln!(
            "{} mode: {n} content-creating requests to GitHub for {} spokes (GitHub allows about 500 an hour)",
            args.mode, report.totals.total
        );
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
            "content_creating_requests": state.get("content_creating_requests"),
            "wall_ms": wall_ms,
        });
        println!("{line}");
    }
    if args.stay {
        eprintln!(
            "\nThe run page: http://{hub_addr}/runs/{} (sign in as octocat, who may re-run; mona \
             may only read; outsider sees nothing). Ctrl-C ends the demo.",
            report.run.id
        );
        tokio::signal::ctrl_c().await?;
    }
    hub.abort();
    emulator.shutdown().await;
    Ok(())
}

/// Whether an executable named `tool` is on `PATH`.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Whether a check run is the hub's "not started" answer to a trigger: `spokehub: TASK (not
/// started)`, or `spokehub (not started)` when even the task was unusable.
fn is_not_started(name: &str) -> bool {
    name.starts_with("spokehub") && name.ends_with("(not started)")
}

/// The hub's refusal to start the run, when it refused: the title and text of its "not
/// started" check run, as the emulator (GitHub) holds it.
async fn refusal(http: &reqwest::Client, emulator: &str) -> anyhow::Result<Option<String>> {
    let get = |query: &'static str| {
        let url = format!("{emulator}/_emulator/state{query}");
        async move {
            http.get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
    };
    // The counts first: the full state is large, and no check run at all is the usual answer.
    let counts = get("?summary=1").await?;
    if counts["check_runs_total"].as_u64().unwrap_or(0) == 0 {
        return Ok(None);
    }
    let state = get("").await?;
    let found = state["check_runs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str().is_some_and(is_not_started));
    Ok(found.map(|c| {
        let title = c["output"]["title"].as_str().unwrap_or("not started");
        let text: Vec<&str> = c["output"]["summary"]
            .as_str()
            .unwrap_or("")
            .lines()
            .map(|l| l.trim().trim_start_matches('>').trim())
            .filter(|l| !l.is_empty())
            .collect();
        format!("{}: {}", rendered(title), rendered(&text.join(" ")))
    }))
}

/// Markdown text as it reads once rendered: the hub escapes what users typed (a backslash
/// before punctuation, entities for `<`, `>`, `&`); a terminal shows the characters.
fn rendered(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut chars = markdown.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(next)) if next.is_ascii_punctuation() => {
                out.push(*next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// One line of progress: a bar of finished spokes, then what the others are doing.
fn progress_line(t: &Totals) -> String {
    const WIDTH: usize = 30;
    let done = t.finished();
    let filled = (done * WIDTH).checked_div(t.total).unwrap_or(0);
    let mut line = format!(
        "[{}{}] {done}/{} done, {} running",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        t.total,
        t.dispatching + t.unknown + t.dispatched + t.running,
    );
    for (n, what) in [
        (t.retry_wait, "waiting to retry"),
        (t.failed + t.dispatch_failed, "failed"),
        (t.timed_out, "timed out"),
        (t.cancelled, "cancelled"),
    ] {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    line
}

/// A one-line progress bar on stderr, redrawn in place (only on a terminal).
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

    fn show(&mut self, totals: &Totals) {
        if !self.enabled {
            return;
        }
        let line = progress_line(totals);
        if line != self.last {
            // Spaces cover what a longer previous line left behind.
            let pad = self
                .last
                .chars()
                .count()
                .saturating_sub(line.chars().count());
            eprint!("\r{line}{}", " ".repeat(pad));
            let _ = std::io::stderr().flush();
            self.last = line;
        }
    }

    fn finish(&mut self) {
        if self.enabled && !self.last.is_empty() {
            eprintln!();
            self.last.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SpokeStatus;

    fn totals(statuses: &[(SpokeStatus, usize)]) -> Totals {
        let mut t = Totals::default();
        for (s, n) in statuses {
            for _ in 0..*n {
                t.add(*s);
            }
        }
        t
    }

    #[test]
    fn the_bar_counts_timed_out_spokes_as_timed_out_and_shows_back_off_waits() {
        use SpokeStatus as S;
        let t = totals(&[
            (S::Succeeded, 4),
            (S::Failed, 1),
            (S::DispatchFailed, 1),
            (S::TimedOut, 2),
            (S::RetryWait, 3),
            (S::Running, 2),
            (S::Dispatched, 1),
            (S::Skipped, 6),
        ]);
        let line = progress_line(&t);
        assert!(
            line.starts_with(&format!("[{}{}] 14/20 done", "#".repeat(21), "-".repeat(9))),
            "{line}"
        );
        assert!(
            line.ends_with("14/20 done, 3 running, 3 waiting to retry, 2 failed, 2 timed out"),
            "{line}"
        );
        let line = progress_line(&totals(&[(S::Planned, 2)]));
        assert!(line.ends_with("0/2 done, 0 running"), "{line}");
        assert_eq!(progress_line(&Totals::default()).matches('-').count(), 30);
    }

    #[test]
    fn escaped_markdown_reads_as_typed() {
        let typed = r#"input `targets`: "colour:blue" <b> & \ [x](y)"#;
        assert_eq!(rendered(&crate::hub::escape_cell(typed, 1000)), typed);
    }

    #[test]
    fn refusal_check_runs_are_recognised_by_name() {
        assert!(is_not_started("spokehub: scan (not started)"));
        assert!(is_not_started("spokehub (not started)"));
        assert!(!is_not_started("spokehub: scan"));
        assert!(!is_not_started("other (not started)"));
    }
}
