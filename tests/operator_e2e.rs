//! Operator actions end to end through the emulator's "person" endpoints: re-run failed,
//! cancel, and the one-active-run-per-task rule.

mod common;

use std::time::{Duration, Instant};

use common::{scenario, World, FAST_HUB};
use serde_json::{json, Value};
use spokehub::hub::{HubRunId, SpokeStatus};

async fn wait_for<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempts_of(runs: &[Value], repo: &str) -> Vec<String> {
    let mut a: Vec<String> = runs
        .iter()
        .filter(|r| r["repo"] == repo)
        .map(|r| r["inputs"]["attempt"].as_str().unwrap_or("?").to_owned())
        .collect();
    a.sort();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_run_failed_dispatches_exactly_the_failed_spokes_as_new_attempts() {
    let extra = "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n";
    let world = World::start(&scenario(3, extra), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "fix"})).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    let first_check = report.run.check_run_id.unwrap();

    let mut completions = world.hub.engine.subscribe_completions();
    let clicked = world
        .http
        .post(format!(
            "{}/_emulator/check-runs/{first_check}/request-action",
            world.emulator.base_url
        ))
        .json(&json!({"identifier": "rerun_failed"}))
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());
    let id = common::next_completion(&mut completions).await;
    assert_eq!(id, report.run.id, "the re-run belongs to the same hub run");
    let after = world.report(&id).await;
    let broken = after
        .spokes
        .iter()
        .find(|s| s.repo.name() == "broken")
        .unwrap();
    assert_eq!(broken.attempt, 2);
    assert_eq!(broken.status, SpokeStatus::Failed);
    for s in after.spokes.iter().filter(|s| s.repo.name() != "broken") {
        assert_eq!(
            s.attempt,
            report
                .spokes
                .iter()
                .find(|b| b.repo == s.repo)
                .unwrap()
                .attempt
        );
    }
    let runs = world.spoke_runs().await;
    assert_eq!(attempts_of(&runs, "acme/broken"), ["1", "2"]);
    assert_eq!(
        attempts_of(&runs, "acme/svc-0001"),
        ["1"],
        "a succeeded spoke was re-run"
    );
    // The run's current check run shows the new outcome: attempt 2, still failing.
    assert_ne!(after.run.check_run_id, Some(first_check));
    let check = world.check_run(&after).await;
    assert_eq!(check["status"], "completed");
    assert_eq!(check["conclusion"], "failure");
    let summary = check["output"]["summary"].as_str().unwrap();
    let row = summary
        .lines()
        .find(|l| l.starts_with("| acme/broken |"))
        .expect("a row for the re-run spoke");
    assert!(row.contains("| 2 |"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_dispatching_cancels_running_spokes_and_says_cancelled() {
    let world = World::start(
        &scenario(6, "").replace("duration_ms = [5, 40]", "duration_ms = [60000, 60000]"),
        FAST_HUB,
    )
    .await;
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "slow"})).await;
    wait_for("every spoke running", || async {
        let runs = world.spoke_runs().await;
        runs.len() == 6 && runs.iter().all(|r| r["status"] == "in_progress")
    })
    .await;
    let id: HubRunId = world.latest_run().await;
    let url = format!("{}/api/v1/runs/{id}/cancel", world.hub_url());
    let refused = world.http.post(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401, "cancel needs the API token");
    let resp = world
        .http
        .post(&url)
        .bearer_auth("test-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let done = common::next_completion(&mut completions).await;
    assert_eq!(done, id);
    let report = world.report(&id).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("cancelled"));
    assert_eq!(
        report.totals.cancelled + report.totals.skipped,
        report.totals.total
    );
    let dispatched = world.spoke_runs().await;
    wait_for("spoke runs cancelled on GitHub", || async {
        world
            .spoke_runs()
            .await
            .iter()
            .all(|r| r["status"] == "completed" && r["conclusion"] == "cancelled")
    })
    .await;
    let check = world.check_run(&report).await;
    assert_eq!(check["conclusion"], "cancelled");
    // Nothing more is dispatched afterwards.
    assert_eq!(world.spoke_runs().await.len(), dispatched.len());
    let again = world
        .http
        .post(&url)
        .bearer_auth("test-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_trigger_of_an_active_run_is_not_started_unless_the_task_allows_it() {
    let hub = format!("{FAST_HUB}\n[tasks.parallel.policy]\nallow_parallel = true\n");
    let world = World::start(
        &scenario(2, "").replace("duration_ms = [5, 40]", "duration_ms = [60000, 60000]"),
        &hub,
    )
    .await;
    let store = world.hub.engine.store().clone();
    world
        .press_run_workflow(json!({"task": "once", "targets": "name:svc-*"}))
        .await;
    wait_for("the first run", || async {
        store.latest_run_id().await.unwrap().is_some()
    })
    .await;
    let first = store.latest_run_id().await.unwrap().unwrap();
    world
        .press_run_workflow(json!({"task": "once", "targets": "name:svc-*"}))
        .await;
    wait_for("the refusal's check run", || async {
        world.state().await["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["conclusion"] == "neutral")
    })
    .await;
    assert_eq!(
        store.latest_run_id().await.unwrap(),
        Some(first),
        "a second run started"
    );
    let state = world.state().await;
    let refusal = state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conclusion"] == "neutral")
        .unwrap();
    // Its own name: it never hides the live run's check run on the same commit.
    assert_eq!(refusal["name"], "spokehub: once (not started)");
    assert!(refusal["output"]["summary"]
        .as_str()
        .unwrap()
        .contains(&first.to_string()));

    // A task that allows parallel runs starts twice.
    world.press_run_workflow(json!({"task": "parallel"})).await;
    wait_for("the first parallel run", || async {
        store.latest_run_id().await.unwrap() != Some(first)
    })
    .await;
    let p1 = store.latest_run_id().await.unwrap().unwrap();
    world.press_run_workflow(json!({"task": "parallel"})).await;
    wait_for("the second parallel run", || async {
        store.latest_run_id().await.unwrap() != Some(p1)
    })
    .await;
    for id in [first, p1, store.latest_run_id().await.unwrap().unwrap()] {
        world.hub.engine.cancel_run(&id, "the test").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_requesting_the_check_run_re_runs_the_failed_spokes() {
    let extra = "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n";
    let world = World::start(&scenario(2, extra), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "again"})).await;
    let first_check = report.run.check_run_id.unwrap();
    let mut completions = world.hub.engine.subscribe_completions();
    let clicked = world
        .http
        .post(format!(
            "{}/_emulator/check-runs/{first_check}/rerequest",
            world.emulator.base_url
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());
    common::next_completion(&mut completions).await;
    let runs = world.spoke_runs().await;
    assert_eq!(attempts_of(&runs, "acme/broken"), ["1", "2"]);
    assert_eq!(attempts_of(&runs, "acme/svc-0001"), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_every_spoke_is_dispatched_dispatches_no_more() {
    // Slow API answers and one dispatch at a time: most spokes are still planned when the
    // run is cancelled.
    let hub = format!("{FAST_HUB}\n[tasks.slow.policy]\nconcurrency = 1\n");
    let world = World::start(
        &scenario(12, "[faults]\napi_latency_ms = 150\n")
            .replace("duration_ms = [5, 40]", "duration_ms = [60000, 60000]"),
        &hub,
    )
    .await;
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "slow"})).await;
    wait_for("a first spoke run", || async {
        !world.spoke_runs().await.is_empty()
    })
    .await;
    let id: HubRunId = world.latest_run().await;
    world.hub.engine.cancel_run(&id, "the test").await.unwrap();
    common::next_completion(&mut completions).await;
    let report = world.report(&id).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("cancelled"));
    let dispatched = world.spoke_runs().await.len();
    assert!(
        dispatched < 12,
        "every spoke was dispatched despite the cancel: {:?}",
        report
            .spokes
            .iter()
            .map(|s| (s.repo.name().to_owned(), s.status, s.attempt))
            .collect::<Vec<_>>()
    );
    let never_dispatched = report
        .spokes
        .iter()
        .filter(|s| s.status == SpokeStatus::Cancelled && s.attempt == 0)
        .count();
    assert!(never_dispatched > 0, "{:?}", report.totals);
    assert_eq!(dispatched + never_dispatched + report.totals.skipped, 12);
}
