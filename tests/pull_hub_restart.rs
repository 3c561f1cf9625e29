//! Agents ride out hub restarts: two `spokehub agent run` processes work through a pull run
//! while the hub (a process too) is SIGKILLed and started again on the same address, twice.
//! They wait while it is away, their heartbeats and results reach it when it is back, and the
//! run completes with every target succeeded and done exactly once.

#[path = "common/hub_process.rs"]
mod hub_process;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hub_process::{free_listen, wait_until_listening, HubProcess};
use serde_json::json;
use spokehub::emulator::{Emulator, Scenario};
use spokehub::hub::SpokeStatus;
use tokio::net::TcpListener;

const HUB_TOML: &str = r#"
[tasks.sweep]
mode = "pull"
[tasks.sweep.policy]
work_lease = "10s"
# A claim whose answer dies with the hub leaves its item leased to no one until the lease runs
# out: that costs the item an attempt (it never ran), so one retry is allowed.
retry = { limit = 1, backoff = "100ms" }
"#;

const TASK: &str = r#"
set -eu
sleep 0.1
echo "done $SPOKEHUB_TARGET $SPOKEHUB_ATTEMPT" >> "$LOG"
"#;

fn agent(hub: &str, dir: &std::path::Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spokehub"))
        .args([
            "agent",
            "run",
            "--hub-url",
            &format!("http://{hub}"),
            "--name",
            name,
        ])
        .arg("--token-file")
        .arg(dir.join(format!("{name}.token")))
        .args(["--", "sh"])
        .arg(dir.join("task.sh"))
        .env("LOG", dir.join("log"))
        .env("SPOKEHUB_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn done_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_wait_out_a_hub_restart_and_finish_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spokehub.toml"), HUB_TOML).unwrap();
    std::fs::write(dir.path().join("task.sh"), TASK).unwrap();
    let listen = free_listen();
    let scenario =
        Scenario::from_toml("[org]\nlogin = \"acme\"\nrepos = 40\nhub_repo = \"platform-hub\"\n")
            .unwrap();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        format!("http://{listen}/webhook"),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let database_url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let mut hub = HubProcess::start(&emulator, dir.path(), &listen);
    wait_until_listening(&http, &listen).await;
    for name in ["p1", "p2"] {
        let out = Command::new(env!("CARGO_BIN_EXE_spokehub"))
            .args(["agent", "add", name])
            .env("SPOKEHUB_DATABASE_URL", &database_url)
            .env_remove("SPOKEHUB_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.path().join(format!("{name}.token")), out.stdout).unwrap();
    }
    let mut agents = vec![
        agent(&listen, dir.path(), "p1"),
        agent(&listen, dir.path(), "p2"),
    ];
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "sweep"}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    assert!(pressed.status().is_success());
    for round in 1..=2 {
        // Some work is done, then the hub dies and comes back on the same address.
        while done_lines(dir.path()).len() < round * 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        hub = HubProcess::start(&emulator, dir.path(), &listen);
        wait_until_listening(&http, &listen).await;
    }
    // The run completes: read it from the ledger the hub keeps.
    let store = spokehub::store::Store::open_read_only(&database_url)
        .await
        .unwrap();
    let id = store.latest_run_id().await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let report = loop {
        let report = spokehub::report::run_report(&store, &id)
            .await
            .unwrap()
            .unwrap();
        if report.run.status == spokehub::hub::RunStatus::Completed {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for a in &mut agents {
        assert!(
            a.try_wait().unwrap().is_none(),
            "an agent gave up while the hub was away"
        );
        a.kill().unwrap();
        a.wait().unwrap();
    }
    hub.kill();
    assert_eq!(report.spokes.len(), 40);
    assert!(
        report
            .spokes
            .iter()
            .all(|s| s.status == SpokeStatus::Succeeded),
        "every target succeeded: {:?}",
        report.totals
    );
    let done = done_lines(dir.path());
    let mut targets: Vec<&str> = done.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 40, "every target was done");
    assert_eq!(done.len(), 40, "and exactly once: {done:?}");
}
