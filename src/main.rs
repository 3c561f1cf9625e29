//! The `spokehub` command line: parse, wire, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spokehub::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "spokehub",
    version,
    about = "Run one operation across many repositories and report one result"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub: receive GitHub's webhooks, dispatch spokes, report check runs.
    Serve(ServeArgs),
    /// Run the GitHub emulator as a server.
    Emulate {
        /// Address the emulator listens on (IP:PORT or HOST:PORT).
        #[arg(long, default_value = "127.0.0.1:3001", value_parser = listen_arg)]
        listen: SocketAddr,
        /// Scenario file (TOML); defaults to a small generated organization.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Where app.pem and app.env are written.
        #[arg(long, default_value = ".emulator")]
        out: PathBuf,
        /// Where webhooks are delivered; repeat it for several hub replicas (each delivery
        /// goes to one, round-robin, as a load balancer would send it).
        #[arg(long = "webhook-url", default_value = "http://127.0.0.1:3000/webhook")]
        webhook_urls: Vec<String>,
    },
    /// Emulator and hub in one process: run a task over a simulated organization.
    Demo(spokehub::demo::DemoArgs),
    /// Cancel a run through a running hub's API, any replica (needs SPOKEHUB_API_TOKEN).
    Cancel {
        /// The hub run's id (a UUID, as in the check run and the API).
        run_id: String,
        /// The hub's address (default: the public URL `serve` is configured with,
        /// SPOKEHUB_PUBLIC_URL or `server.public_url`, else its listen address).
        #[arg(long, env = "SPOKEHUB_HUB_URL")]
        hub_url: Option<String>,
        /// The configuration file `serve` reads (default: `spokehub.toml` when present).
        #[arg(long, env = "SPOKEHUB_CONFIG")]
        config: Option<PathBuf>,
        /// The hub's API token (the one `spokehub serve` was given).
        #[arg(long, env = "SPOKEHUB_API_TOKEN", hide_env_values = true)]
        api_token: String,
    },
    /// Agents of pulled work: add, revoke and list them (on the hub's database), or run one.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Set up the GitHub App (`app create`).
    #[command(subcommand)]
    App(spokehub::setup::AppCommand),
    /// Show a run's state, read from the hub's database (never creates one).
    Status {
        /// The hub run's id (a UUID, as in the check run and the API).
        run_id: String,
        /// Print the run with every spoke as one JSON object.
        #[arg(long)]
        json: bool,
        /// Follow the run until it completes, printing it again whenever it changes.
        #[arg(long)]
        watch: bool,
        /// Exit 1 unless the run concluded success (2 while it has not completed, without
        /// `--watch`).
        #[arg(long)]
        exit_status: bool,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// List recent runs, newest first, read from the hub's database (never creates one).
    Runs {
        /// Only runs that have not completed.
        #[arg(long)]
        active: bool,
        /// Only runs of this task.
        #[arg(long)]
        task: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per run, one per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// Print a run's event log (transitions, conflicts, stale and rejected reports).
    Events {
        /// The hub run's id.
        run_id: String,
        /// One JSON object per event, one per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Add an agent; its token is printed once (the hub keeps only a hash of it).
    Add {
        /// The agent's name (letters, digits, `-`, `_`, `.`; a host or cluster name).
        name: String,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// Revoke an agent: its token opens nothing any more.
    Revoke {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// List agents with their last contact.
    List {
        /// One JSON object per agent, one per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// Run an agent: claim items from the hub and run COMMAND once per item.
    Run(spokehub::agent::AgentRunArgs),
}

/// Where the read-only commands find the hub's database, as `serve` does.
#[derive(clap::Args)]
struct LedgerArgs {
    /// The configuration file whose `database.url` is read (default: `spokehub.toml` in the
    /// working directory when present).
    #[arg(long, env = "SPOKEHUB_CONFIG")]
    config: Option<PathBuf>,
    /// The hub's database (default: `database.url` in the configuration file, else
    /// sqlite://spokehub.db).
    #[arg(long, env = "SPOKEHUB_DATABASE_URL")]
    database_url: Option<String>,
}

/// `--listen` of `emulate`, in the forms `SPOKEHUB_LISTEN` takes.
fn listen_arg(s: &str) -> Result<SocketAddr, String> {
    spokehub::config::parse_listen(s).map_err(|e| e.to_string())
}

/// octocrab logs every 5xx and transport failure at ERROR before the hub's own retry policy has
/// had its say; the hub reports what stays failed itself, so octocrab is quiet by default.
const QUIET_OCTOCRAB: &str = "octocrab=off";

/// Logs go to stderr, filtered by `SPOKEHUB_LOG`, else `RUST_LOG`, else `default`; coloured
/// only on a terminal (and never with `NO_COLOR` set); one JSON object a line with
/// `SPOKEHUB_LOG_FORMAT=json`.
fn init_tracing(default: &str) -> anyhow::Result<()> {
    let chosen = ["SPOKEHUB_LOG", "RUST_LOG"].into_iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    });
    let filter = match chosen {
        Some((var, value)) => EnvFilter::try_new(&value).map_err(|e| {
            anyhow::anyhow!("setting {var}: {value:?} is not a log filter ({e}); e.g. info, warn,spokehub=debug")
        })?,
        None => EnvFilter::new(format!("{default},{QUIET_OCTOCRAB}")),
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let json = match std::env::var("SPOKEHUB_LOG_FORMAT").as_deref() {
        Err(_) | Ok("") | Ok("text") => false,
        Ok("json") => true,
        Ok(other) => anyhow::bail!("setting SPOKEHUB_LOG_FORMAT: {other:?} is not text or json"),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One JSON object a line, with the current span's fields (hub_run_id, repo) and the
        // spans it is in, for log shippers.
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        logs.with_ansi(colour).init();
    }
    Ok(())
}

/// Ordinary errors are printed as one line of causes, without a backtrace (even with
/// `RUST_BACKTRACE` set: that is for panics); the exit status is 1.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing("info")?;
            let config = Config::resolve(&args)?;
            spokehub::server::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulate {
            listen,
            scenario,
            out,
            webhook_urls,
        } => {
            init_tracing("info")?;
            spokehub::emulator::run(spokehub::emulator::EmulateArgs {
                listen,
                scenario,
                out,
                webhook_urls,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            init_tracing("warn")?;
            spokehub::demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel {
            run_id,
            hub_url,
            config,
            api_token,
        } => {
            let hub_url = cancel_target(hub_url, config.as_deref())?;
            let url = format!(
                "{}/api/v1/runs/{run_id}/cancel",
                hub_url.trim_end_matches('/')
            );
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(api_token)
                .send()
                .await
                .with_context(|| format!("cannot reach the hub at {hub_url}"))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let message = body["message"].as_str().unwrap_or("no answer");
            if !status.is_success() {
                anyhow::bail!("cancel refused ({status}): {message}");
            }
            println!(
                "run {run_id}: {message} ({} spokes cancelled)",
                body["spokes_cancelled"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(cmd) => agent(cmd).await,
        Command::App(cmd) => {
            init_tracing("warn")?;
            spokehub::setup::run(cmd).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            run_id,
            json,
            watch,
            exit_status,
            ledger,
        } => {
            let conclusion = status(&run_id, json, watch, &ledger).await?;
            if exit_status {
                return Ok(match conclusion.as_deref() {
                    Some("success") => ExitCode::SUCCESS,
                    Some(_) => ExitCode::from(1),
                    None => ExitCode::from(2),
                });
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            active,
            task,
            limit,
            json,
            ledger,
        } => runs(active, task.as_deref(), limit, json, &ledger).await,
        Command::Events {
            run_id,
            json,
            ledger,
        } => events(&run_id, json, &ledger).await,
    }
}

/// `spokehub agent ...`.
async fn agent(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    use spokehub::work::agents;
    match cmd {
        AgentCommand::Add { name, ledger } => {
            if !agents::valid_name(&name) {
                anyhow::bail!(
                    "{name:?} is not an agent name: 1 to 64 letters, digits, '-', '_' or '.'"
                );
            }
            let store = open_ledger_for_writing(&ledger).await?;
            let (token, hash) = agents::new_token();
            if !store.add_agent(&name, &hash).await? {
                anyhow::bail!(
                    "an agent named {name:?} exists; revoke it first (spokehub agent revoke {name})"
                );
            }
            eprintln!(
                "agent {name} added; its token (shown once, keep it in a file the agent reads):"
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Revoke { name, ledger } => {
            let store = open_ledger_for_writing(&ledger).await?;
            if !store.revoke_agent(&name).await? {
                anyhow::bail!("no active agent named {name:?}");
            }
            println!("agent {name} revoked");
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::List { json, ledger } => {
            let (store, _) = open_ledger(&ledger).await?;
            let ms = |t: Option<i64>| {
                t.and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            };
            for a in store.agents().await? {
                let state = if a.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": a.name,
                            "state": state,
                            "added_at": ms(Some(a.created_at)),
                            "last_seen_at": ms(a.last_seen_at),
                        })
                    );
                } else {
                    let seen = ms(a.last_seen_at).unwrap_or_else(|| "never".into());
                    println!("{:<32} {state:<8} last contact {seen}", a.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Run(args) => {
            init_tracing("info")?;
            spokehub::agent::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens the database `serve` uses, to change it (agents); creates nothing but its tables.
async fn open_ledger_for_writing(ledger: &LedgerArgs) -> anyhow::Result<spokehub::store::Store> {
    let file = spokehub::config::load_file_config(ledger.config.as_deref())?;
    let (url, _) = spokehub::config::database_url(&ledger.database_url, &file)?;
    spokehub::store::Store::open(&url).await
}

/// Opens the database `serve` would use, read-only: never creates or changes it.
/// Where `cancel` finds the hub: `--hub-url`, else where `serve` says people reach it.
fn cancel_target(
    hub_url: Option<String>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    if let Some(u) = hub_url {
        return Ok(u);
    }
    let file = spokehub::config::load_file_config(config)?;
    if let Some(u) = std::env::var("SPOKEHUB_PUBLIC_URL")
        .ok()
        .or(file.server.public_url.clone())
    {
        return Ok(u);
    }
    let listen = std::env::var("SPOKEHUB_LISTEN")
        .ok()
        .or(file.server.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    Ok(format!("http://{listen}"))
}

async fn open_ledger(ledger: &LedgerArgs) -> anyhow::Result<(spokehub::store::Store, String)> {
    let file = spokehub::config::load_file_config(ledger.config.as_deref())?;
    let (url, setting) = spokehub::config::database_url(&ledger.database_url, &file)?;
    let store = spokehub::store::Store::open_read_only(&url)
        .await
        .map_err(|e| match setting {
            Some(setting) => anyhow::anyhow!("{e} (from {setting})"),
            None => anyhow::anyhow!(
                "{e} (the default; set SPOKEHUB_DATABASE_URL, --database-url or database.url in the configuration file to the database `spokehub serve` uses)"
            ),
        })?;
    Ok((store, url))
}

fn parse_run_id(run_id: &str) -> anyhow::Result<spokehub::hub::HubRunId> {
    run_id
        .parse()
        .map_err(|_| anyhow::anyhow!("{run_id:?} is not a hub run id (a UUID)"))
}

/// How often `status --watch` looks again.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `spokehub status`: reads the database `serve` would use, without creating or changing it;
/// with `watch`, prints the run again whenever it changes until it completes. Returns the
/// run's conclusion once it has one.
async fn status(
    run_id: &str,
    json: bool,
    watch: bool,
    ledger: &LedgerArgs,
) -> anyhow::Result<Option<String>> {
    let id = parse_run_id(run_id)?;
    let (store, url) = open_ledger(ledger).await?;
    let mut last = String::new();
    loop {
        let report = spokehub::report::run_report(&store, &id)
            .await?
            .with_context(|| format!("no run {run_id} in {url}"))?;
        let shown = if json {
            format!("{}\n", serde_json::to_string(&report)?)
        } else {
            report.to_text()
        };
        if shown != last {
            if watch && !last.is_empty() && !json {
                println!("---");
            }
            print!("{shown}");
            use std::io::Write as _;
            std::io::stdout().flush()?;
            last = shown;
        }
        let done = report.run.status == spokehub::hub::RunStatus::Completed;
        if done || !watch {
            return Ok(done.then(|| report.run.conclusion.unwrap_or_default()));
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// `spokehub runs`: recent runs, newest first.
async fn runs(
    active: bool,
    task: Option<&str>,
    limit: i64,
    json: bool,
    ledger: &LedgerArgs,
) -> anyhow::Result<ExitCode> {
    let (store, _) = open_ledger(ledger).await?;
    let runs = store.recent_runs(active, task, limit.max(1)).await?;
    if json {
        for run in &runs {
            println!("{}", serde_json::to_string(run)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<24}  {:<10}  {:<10}  started (UTC)",
        "run", "task", "status", "conclusion"
    );
    for run in &runs {
        let started = chrono::DateTime::from_timestamp_millis(run.created_at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:<36}  {:<24}  {:<10}  {:<10}  {started}",
            run.id.to_string(),
            run.task.chars().take(24).collect::<String>(),
            run.status.as_str(),
            run.conclusion.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `spokehub events`: a run's event log, oldest first.
async fn events(run_id: &str, json: bool, ledger: &LedgerArgs) -> anyhow::Result<ExitCode> {
    let id = parse_run_id(run_id)?;
    let (store, url) = open_ledger(ledger).await?;
    if store.run(&id).await?.is_none() {
        anyhow::bail!("no run {run_id} in {url}");
    }
    for (at, repo, kind, detail) in store.run_events(&id).await? {
        let when = chrono::DateTime::from_timestamp_millis(at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        if json {
            println!(
                "{}",
                serde_json::json!({"at": when, "repo": repo, "kind": kind, "detail": detail})
            );
        } else {
            println!(
                "{when}  {:<12} {:<32} {detail}",
                kind,
                repo.unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every argument and subcommand of `cmd` (and below) without a help line.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_name() == "help" {
                continue;
            }
            if sub.get_about().is_none() {
                out.push(format!("{name} (the command itself)"));
            }
            undocumented(sub, &name, out);
        }
    }

    #[test]
    fn every_argument_and_command_has_a_help_line() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        undocumented(&cmd, "spokehub", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
        // The walk finds what lacks help, however deep.
        let bare = clap::Command::new("x").subcommand(
            clap::Command::new("y")
                .about("documented")
                .arg(clap::Arg::new("quiet").long("quiet")),
        );
        let mut found = Vec::new();
        undocumented(&bare, "x", &mut found);
        assert_eq!(found, ["x y quiet"]);
        // And it sees a known argument deep down.
        let app = cmd.find_subcommand("app").unwrap();
        let create = app.find_subcommand("create").unwrap();
        assert!(create.get_arguments().any(|a| a.get_id() == "name"));
    }

    #[test]
    fn emulate_listens_on_a_host_name() {
        let cli =
            Cli::try_parse_from(["spokehub", "emulate", "--listen", "localhost:3101"]).unwrap();
        match cli.command {
            Command::Emulate { listen, .. } => {
                assert!(listen.ip().is_loopback() && listen.port() == 3101)
            }
            _ => panic!("not emulate"),
        }
        let e = Cli::try_parse_from(["spokehub", "emulate", "--listen", "nowhere"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
