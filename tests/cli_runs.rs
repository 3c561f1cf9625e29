//! The operator's read-only commands on the database `serve` uses: `spokehub runs` lists runs,
//! `spokehub events` prints a run's event log, and `spokehub status --watch` follows a run
//! until it completes (`--exit-status` says how it ended).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{scenario, World, FAST_HUB};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_spokehub");

fn spokehub(world: &World, args: &[&str]) -> Output {
    command(world, args).output().unwrap()
}

fn command(world: &World, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(world.dir.path())
        .env_remove("SPOKEHUB_CONFIG")
        .env("SPOKEHUB_DATABASE_URL", db_url(world.dir.path()));
    c
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("hub.db").display())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_lists_runs_newest_first_and_filters_by_activity_and_task() {
    let world = World::start(&scenario(3, ""), FAST_HUB).await;
    let alpha = world
        .run_to_completion(json!({"task": "alpha", "targets": ""}))
        .await;
    let beta = world
        .run_to_completion(json!({"task": "beta", "targets": ""}))
        .await;
    let o = spokehub(&world, &["runs"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&beta.run.id.to_string()),
        "newest first: {text}"
    );
    assert!(lines[1].starts_with(&alpha.run.id.to_string()), "{text}");
    assert!(
        lines[0].contains("completed") && lines[0].contains("success"),
        "{text}"
    );

    let only_alpha = stdout(&spokehub(&world, &["runs", "--task", "alpha", "--json"]));
    let runs: Vec<Value> = only_alpha
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{only_alpha}");
    assert_eq!(runs[0]["id"], alpha.run.id.to_string());
    assert_eq!(runs[0]["task"], "alpha");

    let active = stdout(&spokehub(&world, &["runs", "--active"]));
    assert_eq!(active.trim(), "no runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_the_run_event_log_and_an_unknown_run_is_an_error() {
    let world = World::start(&scenario(2, ""), FAST_HUB).await;
    let report = world
        .run_to_completion(json!({"task": "log", "targets": ""}))
        .await;
    let id = report.run.id.to_string();
    let o = spokehub(&world, &["events", &id]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    for repo in ["acme/svc-0001", "acme/svc-0002"] {
        assert!(
            text.lines()
                .any(|l| l.contains("transition") && l.contains(repo) && l.contains("succeeded")),
            "{repo} succeeded in\n{text}"
        );
    }
    let json_lines = stdout(&spokehub(&world, &["events", &id, "--json"]));
    let first: Value = serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "transition");

    let unknown = spokehub(&world, &["events", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_a_run_until_it_completes_and_exit_status_says_how_it_ended() {
    let world = World::start(
        &scenario(
            4,
            "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n",
        )
        .replace("duration_ms = [5, 40]", "duration_ms = [1500, 2500]"),
        FAST_HUB,
    )
    .await;
    // A run that succeeds, followed from its start.
    world
        .press_run_workflow(json!({"task": "watch", "targets": "name:svc-0001 name:svc-0002"}))
        .await;
    let id = loop {
        if let Ok(Some(id)) = world.hub.engine.store().latest_run_id().await {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut child = command(&world, &["status", &id, "--watch", "--exit-status"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "status --watch did not end with the run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("---"), "printed again as it changed:\n{text}");
    assert!(
        text.lines().last().is_some() && text.contains("completed"),
        "{text}"
    );

    // A run that fails: exit status 1.
    let failed = world
        .run_to_completion(json!({"task": "watch-fail", "targets": "name:broken"}))
        .await;
    let o = spokehub(
        &world,
        &["status", &failed.run.id.to_string(), "--exit-status"],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = spokehub(&world, &["status", &failed.run.id.to_string()]);
    assert_eq!(o.status.code(), Some(0), "without --exit-status: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_finds_the_hub_through_the_configuration_serve_reads() {
    // World::start gives the hub the API token `test-api-token`.
    let world = World::start(
        &scenario(2, "[[org.repo]]\nname = \"svc-0001\"\nstuck = true\n"),
        FAST_HUB,
    )
    .await;
    world.press_run_workflow(json!({"task": "stuck"})).await;
    let id = world.latest_run_wait().await;
    // The hub's address comes from the configuration file, as `serve` would read it.
    std::fs::write(
        world.dir.path().join("spokehub.toml"),
        format!("[server]\npublic_url = \"{}\"\n", world.hub_url()),
    )
    .unwrap();
    let mut completions = world.hub.engine.subscribe_completions();
    let refused = command(&world, &["cancel", &id.to_string()])
        .env("SPOKEHUB_API_TOKEN", "wrong")
        .env_remove("SPOKEHUB_HUB_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let o = command(&world, &["cancel", &id.to_string()])
        .env("SPOKEHUB_API_TOKEN", "test-api-token")
        .env_remove("SPOKEHUB_HUB_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("cancelled"), "{}", stdout(&o));
    assert_eq!(common::next_completion(&mut completions).await, id);
    let again = command(&world, &["cancel", &id.to_string()])
        .env("SPOKEHUB_API_TOKEN", "test-api-token")
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "a completed run cannot be cancelled"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already completed"));
}
