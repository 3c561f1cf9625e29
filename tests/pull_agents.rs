//! The pull model with real agents: `spokehub agent add` gives each its token, three
//! `spokehub agent run` processes share a 300-repository run, and one of them is SIGKILLed in
//! the middle of an item and restarted, twice. Every target ends exactly once, no two
//! executions of one target ever overlap (each takes a lock on its target and reports if the
//! lock is held), and the killed items are retried as new attempts.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{scenario, World};
use serde_json::{json, Value};
use spokehub::hub::SpokeStatus;

const AGENT_HUB: &str = r#"
[policy]
unknown_search_delay = "200ms"
[tasks.sweep]
mode = "pull"
[tasks.sweep.policy]
work_lease = "2s"
retry = { limit = 2, backoff = "100ms" }
"#;

/// The task every agent runs: holds a lock on its target while it works (an overlap is
/// written down, never waited out), then logs its end and writes a summary.
const TASK: &str = r#"
set -eu
lock="$LOCKS/$(printf %s "$SPOKEHUB_TARGET" | tr / _)"
exec 9>"$lock"
if ! flock -n 9; then echo "OVERLAP $AGENT $SPOKEHUB_TARGET" >> "$LOG"; exit 1; fi
echo "start $AGENT $SPOKEHUB_TARGET $SPOKEHUB_ATTEMPT" >> "$LOG"
test -n "$SPOKEHUB_TOKEN"
test "$SPOKEHUB_TASK" = sweep
case "$AGENT" in a0) sleep 0.4 ;; *) sleep 0.02 ;; esac
echo "done $AGENT $SPOKEHUB_TARGET $SPOKEHUB_ATTEMPT" >> "$LOG"
echo "swept $SPOKEHUB_TARGET" > "$SPOKEHUB_SUMMARY_FILE"
"#;

fn spokehub(args: &[&str], database_url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spokehub"))
        .args(args)
        .env("SPOKEHUB_DATABASE_URL", database_url)
        .env_remove("SPOKEHUB_CONFIG")
        .output()
        .unwrap()
}

fn start_agent(world: &World, dir: &Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spokehub"))
        .args([
            "agent",
            "run",
            "--hub-url",
            &world.hub_url(),
            "--name",
            name,
        ])
        .arg("--token-file")
        .arg(dir.join(format!("{name}.token")))
        .args(["--", "sh"])
        .arg(dir.join("task.sh"))
        .env("AGENT", name)
        .env("LOG", dir.join("log"))
        .env("LOCKS", dir.join("locks"))
        .env("SPOKEHUB_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until agent a0 has started an item it has not started before; returns its target.
async fn a0_starts_a_new_item(dir: &Path, seen: &[String]) -> String {
    for _ in 0..1_000 {
        for line in log_lines(dir) {
            let f: Vec<&str> = line.split(' ').collect();
            if f[0] == "start" && f[1] == "a0" && !seen.iter().any(|s| s == f[2]) {
                return f[2].to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("agent a0 started no new item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_share_300_targets_and_a_killed_agent_loses_only_its_lease() {
    let world = World::start(&scenario(300, ""), AGENT_HUB).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("locks")).unwrap();
    std::fs::write(dir.path().join("task.sh"), TASK).unwrap();
    for name in ["a0", "a1", "a2"] {
        let out = spokehub(&["agent", "add", name], &world.database_url);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        assert!(
            token.trim().starts_with("spkagent_"),
            "the token is printed: {token}"
        );
        std::fs::write(dir.path().join(format!("{name}.token")), token).unwrap();
    }
    let out = spokehub(&["agent", "add", "a0"], &world.database_url);
    assert!(!out.status.success(), "a name is one agent");

    let mut agents: HashMap<&str, Child> = ["a0", "a1", "a2"]
        .into_iter()
        .map(|n| (n, start_agent(&world, dir.path(), n)))
        .collect();
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "sweep"})).await;

    // Kill a0 in the middle of an item, restart it; twice.
    let mut killed = Vec::new();
    for _ in 0..2 {
        let target = a0_starts_a_new_item(dir.path(), &killed).await;
        let mut a0 = agents.remove("a0").unwrap();
        a0.kill().unwrap();
        a0.wait().unwrap();
        killed.push(target);
        agents.insert("a0", start_agent(&world, dir.path(), "a0"));
    }

    let id = tokio::time::timeout(Duration::from_secs(120), completions.recv())
        .await
        .expect("the run completes")
        .unwrap();
    for (_, mut a) in agents {
        a.kill().unwrap();
        a.wait().unwrap();
    }
    let report = world.report(&id).await;
    assert_eq!(report.spokes.len(), 300);
    assert_eq!(report.totals.succeeded, 300, "{:?}", report.totals);
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));

    let lines = log_lines(dir.path());
    let overlaps: Vec<&String> = lines.iter().filter(|l| l.starts_with("OVERLAP")).collect();
    assert!(
        overlaps.is_empty(),
        "two executions of one target overlapped: {overlaps:?}"
    );
    let mut done: HashMap<String, Vec<u32>> = HashMap::new();
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "done" {
            done.entry(f[2].to_owned())
                .or_default()
                .push(f[3].parse().unwrap());
        }
    }
    assert_eq!(done.len(), 300, "every target was done");
    for (target, attempts) in &done {
        assert_eq!(
            attempts.len(),
            1,
            "{target} was done more than once: {attempts:?}"
        );
    }
    for target in &killed {
        let spoke = report
            .spokes
            .iter()
            .find(|s| s.repo.as_str() == target)
            .unwrap();
        assert_eq!(spoke.status, SpokeStatus::Succeeded);
        assert_eq!(
            spoke.attempt, 2,
            "{target}: the killed item was retried as a new attempt"
        );
        assert_eq!(done[target], vec![2]);
    }
    let summary = report.spokes[0].summary.as_deref().unwrap_or_default();
    assert_eq!(summary.trim(), format!("swept {}", report.spokes[0].repo));

    // The operator sees the agents and when they were last heard from; a revoked one is out.
    let out = spokehub(&["agent", "list", "--json"], &world.database_url);
    assert!(out.status.success());
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .all(|a| a["state"] == "active" && a["last_seen_at"].is_string()));
    let out = spokehub(&["agent", "revoke", "a1"], &world.database_url);
    assert!(out.status.success());
    let mut a1 = start_agent(&world, dir.path(), "a1");
    let status = a1.wait().unwrap();
    assert!(!status.success(), "a revoked agent is refused and stops");
}

/// A task for agent targets: logs which agent ran which target.
const AGENT_TASK: &str = r#"
set -eu
test -z "${SPOKEHUB_TOKEN:-}"
echo "ran $AGENT $SPOKEHUB_TARGET $SPOKEHUB_ATTEMPT" >> "$LOG"
echo "rolled out on $SPOKEHUB_TARGET" > "$SPOKEHUB_SUMMARY_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_targets_give_each_named_agent_its_own_item() {
    let hub = format!("{AGENT_HUB}\n[tasks.rollout]\nmode = \"pull\"\n");
    let world = World::start(&scenario(3, ""), &hub).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.sh"), AGENT_TASK).unwrap();
    let names = ["c0", "c1", "c2", "c3", "c4"];
    for name in names {
        let out = spokehub(&["agent", "add", name], &world.database_url);
        assert!(out.status.success());
        std::fs::write(dir.path().join(format!("{name}.token")), out.stdout).unwrap();
    }
    let mut agents: Vec<Child> = names
        .iter()
        .map(|n| start_agent(&world, dir.path(), n))
        .collect();
    let mut completions = world.hub.engine.subscribe_completions();
    world
        .press_run_workflow(json!({"task": "rollout", "targets": "agent:* agent:gone"}))
        .await;
    let id = tokio::time::timeout(Duration::from_secs(60), completions.recv())
        .await
        .expect("the run completes")
        .unwrap();
    for a in &mut agents {
        a.kill().unwrap();
        a.wait().unwrap();
    }
    let report = world.report(&id).await;
    let mut targets: Vec<(String, SpokeStatus)> = report
        .spokes
        .iter()
        .map(|s| (s.repo.to_string(), s.status))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        targets,
        vec![
            ("agent:c0".into(), SpokeStatus::Succeeded),
            ("agent:c1".into(), SpokeStatus::Succeeded),
            ("agent:c2".into(), SpokeStatus::Succeeded),
            ("agent:c3".into(), SpokeStatus::Succeeded),
            ("agent:c4".into(), SpokeStatus::Succeeded),
            ("agent:gone".into(), SpokeStatus::Skipped),
        ],
        "one item per selected agent; a named agent that does not exist is skipped"
    );
    let lines = log_lines(dir.path());
    assert_eq!(lines.len(), 5, "one execution per agent: {lines:?}");
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[1], f[2], "an agent's item ran on that agent: {line}");
    }
    let c0 = report
        .spokes
        .iter()
        .find(|s| s.repo.as_str() == "agent:c0")
        .unwrap();
    assert_eq!(
        c0.summary.as_deref().map(str::trim),
        Some("rolled out on c0")
    );
    // A push task cannot reach agents: the run ends with the reason.
    let report = world
        .run_to_completion(json!({"task": "push-task", "targets": "agent:*"}))
        .await;
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    assert!(
        report
            .run
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("pull task"),
        "{:?}",
        report.run.reason
    );
}
