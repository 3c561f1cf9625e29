//! `spokehub agent run`: a self-hosted agent of pulled work. It long-polls the hub's work API,
//! runs COMMAND once per item with the `SPOKEHUB_*` environment a spoke workflow gets (plus
//! `SPOKEHUB_TARGET` and, for a repository, `SPOKEHUB_TOKEN`), heartbeats the item's lease
//! while COMMAND runs, and reports its exit status and summary. The hub being away (a restart,
//! a deploy) only makes it wait and try again; a lost lease stops COMMAND at once, so two
//! executions of one item never overlap.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::json;
use tokio::process::Command;

/// How long one claim waits for work on the hub.
const WAIT_S: u64 = 30;
/// Waits between tries while the hub cannot be reached.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest summary sent (the hub keeps 64 KiB).
const MAX_SUMMARY: u64 = 64 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct AgentRunArgs {
    /// The hub's address (as agents reach it).
    #[arg(long, env = "SPOKEHUB_HUB_URL")]
    pub hub_url: String,
    /// The file holding this agent's token (`spokehub agent add` printed it).
    #[arg(long, env = "SPOKEHUB_AGENT_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// This agent's name, as added (shown in leases and logs).
    #[arg(long, env = "SPOKEHUB_AGENT_NAME")]
    pub name: String,
    /// The command run once per item, and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// One item of work, as the hub hands it out.
#[derive(Debug, Clone, Deserialize)]
struct Item {
    lease_id: String,
    hub_run_id: String,
    target: String,
    attempt: u32,
    task: String,
    params: String,
    lease_s: u64,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claimed {
    items: Vec<Item>,
}

struct Agent {
    http: reqwest::Client,
    hub: String,
    token: String,
    name: String,
    /// This process among the agents sharing the name (a pool): `HOST:PID`, shown in leases.
    worker: String,
    command: Vec<String>,
}

/// What a request to the hub came to.
enum Answer<T> {
    Ok(T),
    /// The hub answered and will not change its mind (401, 403, 409, 400).
    Refused(u16, String),
    /// No answer, or one worth trying again (5xx, 429).
    Unavailable(String),
}

pub async fn run(args: AgentRunArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| {
            format!(
                "cannot read the agent token file {}",
                args.token_file.display()
            )
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!(
            "the agent token file {} is empty",
            args.token_file.display()
        );
    }
    let agent = Agent {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
        hub: args.hub_url.trim_end_matches('/').to_owned(),
        token,
        name: args.name,
        worker: format!("{}:{}", crate::config::host_name(), std::process::id()),
        command: args.command,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tracing::info!(hub = agent.hub, name = agent.name, "agent waiting for work");
    let mut backoff = FIRST_BACKOFF;
    loop {
        let answer = tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ok(());
            }
            a = agent.claim() => a,
        };
        match answer {
            Answer::Ok(items) => {
                backoff = FIRST_BACKOFF;
                // An item in hand is finished before a SIGTERM is heard.
                for item in items {
                    agent.work_on(item).await;
                }
            }
            Answer::Refused(status, message) => {
                bail!("the hub refused this agent ({status}): {message}")
            }
            Answer::Unavailable(why) => {
                tracing::warn!(
                    why,
                    wait_ms = backoff.as_millis() as u64,
                    "the hub is unavailable; trying again"
                );
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Agent {
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Answer<(u16, String)> {
        let sent = self
            .http
            .post(format!("{}{path}", self.hub))
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Unavailable(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => Answer::Ok((status, text)),
            429 | 500..=599 => Answer::Unavailable(format!("{status}")),
            _ => {
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                Answer::Refused(status, message)
            }
        }
    }

    /// One long poll: the items claimed, none when nothing came within the wait.
    async fn claim(&self) -> Answer<Vec<Item>> {
        let body = json!({ "worker": self.worker, "max": 1, "wait_s": WAIT_S });
        match self
            .post("/api/v1/work/claim", body, Duration::from_secs(WAIT_S + 15))
            .await
        {
            Answer::Ok((204, _)) => Answer::Ok(Vec::new()),
            Answer::Ok((_, text)) => match serde_json::from_str::<Claimed>(&text) {
                Ok(c) => Answer::Ok(c.items),
                Err(e) => Answer::Unavailable(format!("an answer that is not work: {e}")),
            },
            Answer::Refused(s, m) => Answer::Refused(s, m),
            Answer::Unavailable(w) => Answer::Unavailable(w),
        }
    }

    /// Runs COMMAND for one item while heartbeating its lease, then reports how it ended.
    async fn work_on(&self, item: Item) {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "item",
            hub_run_id = item.hub_run_id,
            repo = item.target,
            attempt = item.attempt
        );
        self.run_item(item).instrument(span).await
    }

    async fn run_item(&self, item: Item) {
        // The task writes its summary here; it is read and removed when the task ends.
        let summary_file =
            std::env::temp_dir().join(format!("spokehub-summary-{}.md", uuid::Uuid::new_v4()));
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env("SPOKEHUB_TASK", &item.task)
            .env("SPOKEHUB_PARAMS", &item.params)
            .env("SPOKEHUB_HUB_RUN_ID", &item.hub_run_id)
            .env("SPOKEHUB_ATTEMPT", item.attempt.to_string())
            .env("SPOKEHUB_SUMMARY_FILE", &summary_file)
            .env("SPOKEHUB_TARGET", &item.target)
            .env_remove("SPOKEHUB_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = &item.token {
            command.env("SPOKEHUB_TOKEN", token);
        }
        // The command dies with the agent: an agent killed mid-item must not leave it running
        // while the hub gives the item to another agent.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, command = self.command[0], "cannot start the command");
                self.complete(
                    &item,
                    "failure",
                    Some(format!("the agent cannot start its command: {e}")),
                )
                .await;
                return;
            }
        };
        tracing::info!("item started");
        let every = Duration::from_millis((item.lease_s * 1000 / 3).max(200));
        let mut lease_until = tokio::time::Instant::now() + Duration::from_secs(item.lease_s);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = tokio::time::sleep(every) => {
                    match self.heartbeat(&item).await {
                        Answer::Ok(()) => lease_until = tokio::time::Instant::now() + Duration::from_secs(item.lease_s),
                        Answer::Refused(status, message) => {
                            tracing::warn!(status, message, "the lease is lost: stopping the command");
                            let _ = child.kill().await;
                            return;
                        }
                        Answer::Unavailable(why) if tokio::time::Instant::now() >= lease_until => {
                            tracing::warn!(why, "no heartbeat within the lease: stopping the command");
                            let _ = child.kill().await;
                            return;
                        }
                        Answer::Unavailable(why) => tracing::warn!(why, "heartbeat not delivered; trying again"),
                    }
                }
            }
        };
        let outcome = match &status {
            Ok(s) if s.success() => "success",
            _ => "failure",
        };
        let summary = read_summary(&summary_file);
        let _ = std::fs::remove_file(&summary_file);
        tracing::info!(outcome, "item finished");
        self.complete(&item, outcome, summary).await;
    }

    async fn heartbeat(&self, item: &Item) -> Answer<()> {
        let path = format!("/api/v1/work/{}/heartbeat", item.lease_id);
        match self.post(&path, json!({}), Duration::from_secs(10)).await {
            Answer::Ok(_) => Answer::Ok(()),
            Answer::Refused(s, m) => Answer::Refused(s, m),
            Answer::Unavailable(w) => Answer::Unavailable(w),
        }
    }

    /// Reports the item's end, trying again while the hub is away (until the lease would have
    /// run out: after that the hub has given the item to someone else).
    async fn complete(&self, item: &Item, status: &str, summary: Option<String>) {
        let path = format!("/api/v1/work/{}/complete", item.lease_id);
        let body = json!({ "status": status, "summary": summary });
        let give_up = tokio::time::Instant::now() + Duration::from_secs(item.lease_s.max(1));
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self
                .post(&path, body.clone(), Duration::from_secs(10))
                .await
            {
                Answer::Ok(_) => return,
                Answer::Refused(status, message) => {
                    tracing::warn!(status, message, "the result was not accepted");
                    return;
                }
                Answer::Unavailable(why) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(why, "the result could not be delivered within the lease");
                    return;
                }
                Answer::Unavailable(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn read_summary(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_SUMMARY).read_to_string(&mut text).ok()?;
    (!text.trim().is_empty()).then_some(text)
}

/// A transport error with its causes.
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}
