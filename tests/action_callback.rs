//! The report action's real script (`action/report.sh`) against the emulator and the hub: the
//! callback travels as `POST /repos/{org}/{hub}/dispatches` -> emulator -> `repository_dispatch`
//! webhook -> hub, which must accept it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{World, FAST_HUB};
use serde_json::{json, Value};
use spokehub::hub::SpokeStatus;

fn scenario(repos: usize, spoke: &str) -> String {
    format!(
        r#"
[org]
login = "acme"
repos = {repos}
hub_repo = "platform-hub"

[spoke]
{spoke}
"#
    )
}

/// Polls `cond` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_spokes_report_through_the_action_completes_and_every_callback_is_accepted() {
    let spokes = 12;
    let world = World::start(
        &scenario(
            spokes,
            "duration_ms = [5, 40]\ncallback = \"action\"\naction_concurrency = 4",
        ),
        FAST_HUB,
    )
    .await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    assert_eq!(report.totals.succeeded, spokes, "{:?}", report.totals);
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));
    // The callbacks come through the script after each run completes: wait for all of them.
    let metrics = world.hub.engine.metrics();
    eventually(Duration::from_secs(60), "every callback", || async {
        metrics.snapshot().callbacks_accepted >= spokes as u64
    })
    .await;
    let m = metrics.snapshot();
    assert_eq!(m.callbacks_accepted, spokes as u64, "{m:?}");
    assert_eq!(m.callbacks_rejected, 0, "{m:?}");
    // They really were API requests from the script: one repository_dispatch per spoke, sent
    // with the App's bot identity to the hub repository.
    let state = world.state().await;
    let dispatches: Vec<&Value> = state["repository_dispatches"]
        .as_array()
        .expect("the emulator lists repository dispatches")
        .iter()
        .filter(|d| d["event_type"] == "spoke_complete")
        .collect();
    assert_eq!(dispatches.len(), spokes);
    for d in dispatches {
        assert_eq!(d["repo"], "acme/platform-hub");
        assert_eq!(d["client_payload"]["status"], "success");
        assert_eq!(d["client_payload"]["hub_run_id"], report.run.id.to_string());
        assert!(d["client_payload"]["run_url"]
            .as_str()
            .unwrap()
            .starts_with(&world.emulator.base_url));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_naming_a_missing_script_is_refused_at_start() {
    let sc = spokehub::emulator::Scenario::from_toml(&scenario(
        1,
        "callback = \"action\"\naction_script = \"/nonexistent/report.sh\"",
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = spokehub::emulator::Emulator::start(listener, sc, "http://127.0.0.1:9/".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spoke.action_script"), "{e}");
}

/// An App JWT signed with the emulator's key.
fn jwt(world: &World) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iat": now - 60, "exp": now + 540, "iss": world.emulator.app_id});
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(world.emulator.private_key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

/// Mints an installation token, as `actions/create-github-app-token` does in a spoke.
async fn installation_token(world: &World) -> String {
    let r = world
        .http
        .post(format!(
            "{}/app/installations/{}/access_tokens",
            world.emulator.base_url, world.emulator.installation_id
        ))
        .bearer_auth(jwt(world))
        .json(&json!({"repositories": ["platform-hub"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_run_by_hand_with_a_runner_environment_completes_spokes() {
    // Spokes that never finish on their own and never call back: only the script can end them.
    let world = World::start(
        &scenario(2, "duration_ms = [3600000, 3600000]\ncallback = \"none\""),
        FAST_HUB,
    )
    .await;
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "scan"})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = world.spoke_runs().await;
        if runs.len() == 2 {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for two spoke runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let token = installation_token(&world).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("action/report.sh");
    for (run, status) in runs.iter().zip(["success", "failure"]) {
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", run["repo"].as_str().unwrap())
            .env("GITHUB_RUN_ID", run["id"].to_string())
            .env("GITHUB_RUN_ATTEMPT", run["run_attempt"].to_string())
            .env("GITHUB_SERVER_URL", &world.emulator.base_url)
            .env("GITHUB_API_URL", &world.emulator.base_url)
            .env("INPUT_HUB_REPO", &world.emulator.hub_repo)
            .env(
                "INPUT_HUB_RUN_ID",
                run["inputs"]["hub_run_id"].as_str().unwrap(),
            )
            .env("INPUT_STATUS", status)
            .env(
                "INPUT_CALLBACK_TOKEN",
                run["inputs"]["callback_token"].as_str().unwrap(),
            )
            .env("INPUT_TOKEN", &token)
            .env("INPUT_SUMMARY", format!("{status} by hand"))
            .output()
            .await
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "report.sh failed: {printed}");
        assert!(!printed.contains(&token), "the token was printed");
    }
    let id = tokio::time::timeout(Duration::from_secs(60), completions.recv())
        .await
        .expect("the run completes once both spokes reported")
        .unwrap();
    let report = world.report(&id).await;
    assert_eq!(world.hub.engine.metrics().snapshot().callbacks_accepted, 2);
    assert_eq!(report.totals.succeeded, 1, "{:?}", report.totals);
    assert_eq!(report.totals.failed, 1, "{:?}", report.totals);
    for s in report
        .spokes
        .iter()
        .filter(|s| s.repo.name() != "platform-hub")
    {
        let run = runs.iter().find(|r| r["repo"] == s.repo.as_str()).unwrap();
        let want = if run["id"] == runs[0]["id"] {
            SpokeStatus::Succeeded
        } else {
            SpokeStatus::Failed
        };
        assert_eq!(s.status, want, "{}", s.repo);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_scripts_run_at_most_action_concurrency_at_once() {
    // A wrapper that counts how many copies run at once, then runs the real script.
    let dir = tempfile::tempdir().unwrap();
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("action/report.sh");
    let wrapper = dir.path().join("report.sh");
    let d = dir.path().display();
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/usr/bin/env bash
set -euo pipefail
exec 9>"{d}/lock"
flock 9; n=$(( $(cat "{d}/running" 2>/dev/null || echo 0) + 1 )); echo "$n" >"{d}/running"; echo "$n" >>"{d}/seen"; flock -u 9
sleep 0.2
flock 9; n=$(( $(cat "{d}/running") - 1 )); echo "$n" >"{d}/running"; flock -u 9
exec 9>&-
exec bash "{real}"
"#,
            real = real.display()
        ),
    )
    .unwrap();
    let spokes = 8;
    let world = World::start(
        &scenario(
            spokes,
            &format!(
                "duration_ms = [5, 10]\ncallback = \"action\"\naction_concurrency = 2\naction_script = {:?}",
                wrapper.display().to_string()
            ),
        ),
        FAST_HUB,
    )
    .await;
    world.run_to_completion(json!({"task": "scan"})).await;
    let metrics = world.hub.engine.metrics();
    eventually(Duration::from_secs(60), "every callback", || async {
        metrics.snapshot().callbacks_accepted >= spokes as u64
    })
    .await;
    let seen: Vec<u32> = std::fs::read_to_string(dir.path().join("seen"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(seen.len(), spokes, "one script per spoke");
    let most = seen.iter().copied().max().unwrap();
    assert!(most <= 2, "{most} scripts ran at once (limit 2)");
}
