//! Settings do what they say: who may start a run (only the hub repository, from its default
//! branch unless allowed), `concurrency` bounds the spokes in flight, the hub repository is not
//! a target, and an older check run's "Re-run failed" button starts nothing.

mod common;

use std::time::{Duration, Instant};

use common::{scenario, World, FAST_HUB};
use serde_json::{json, Value};

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

async fn counters(world: &World) -> Value {
    world
        .http
        .get(format!(
            "{}/_emulator/state?summary=1",
            world.emulator.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// GitHub's own `workflow_dispatch` example, re-aimed: the hub workflow run in `repo` at
/// `git_ref`, with the repository's default branch `main`.
fn hub_workflow_run(world: &World, repo: &str, git_ref: &str) -> Value {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/webhooks/workflow_dispatch/payload.json");
    let mut p: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let (owner, name) = repo.split_once('/').unwrap();
    p["inputs"] = json!({"task": "everywhere", "params": "{\"evil\": true}"});
    p["workflow"] = json!(".github/workflows/spokehub-hub.yml");
    p["ref"] = json!(git_ref);
    p["installation"] = json!({"id": world.emulator.installation_id, "node_id": "x"});
    p["repository"]["full_name"] = json!(repo);
    p["repository"]["name"] = json!(name);
    p["repository"]["owner"]["login"] = json!(owner);
    p["repository"]["default_branch"] = json!("main");
    p
}

/// Sends a genuine, signed delivery and waits until the hub has processed it.
async fn deliver_and_wait(world: &World, event: &str, guid: &str, body: &Value) {
    let before = world.hub.engine.metrics().snapshot().deliveries_processed;
    let resp = world.send_webhook(event, guid, body).await;
    assert_eq!(resp.status(), 202);
    wait_for("the delivery to be processed", || async {
        world.hub.engine.metrics().snapshot().deliveries_processed > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_hub_repository_on_its_default_branch_starts_runs() {
    let world = World::start(
        &scenario(3, ""),
        &format!("{FAST_HUB}\n[hub]\nallowed_refs = [\"release\"]\n"),
    )
    .await;
    let hub = world.emulator.hub_repo.clone();
    for (guid, repo, git_ref) in [
        ("other-repo", "acme/svc-0001", "refs/heads/main"),
        ("other-branch", hub.as_str(), "refs/heads/feature"),
        ("other-org", "evil/platform-hub", "refs/heads/main"),
    ] {
        let body = hub_workflow_run(&world, repo, git_ref);
        deliver_and_wait(&world, "workflow_dispatch", guid, &body).await;
    }
    let refused = world.hub.engine.metrics().snapshot().triggers_refused;
    assert_eq!(refused, 3);
    assert!(
        world
            .hub
            .engine
            .store()
            .latest_run_id()
            .await
            .unwrap()
            .is_none(),
        "a run was started"
    );
    let state = world.state().await;
    assert_eq!(state["check_runs"].as_array().unwrap().len(), 0);
    assert_eq!(
        world.spoke_runs().await.len(),
        0,
        "something was dispatched"
    );

    // The hub repository from an allowed ref does start a run (the emulator's repository has
    // no such branch, so the run then stops at planning; admission is what counts here).
    let mut completions = world.hub.engine.subscribe_completions();
    let body = hub_workflow_run(&world, &hub, "refs/heads/release");
    deliver_and_wait(&world, "workflow_dispatch", "allowed-ref", &body).await;
    let id = common::next_completion(&mut completions).await;
    assert_eq!(world.report(&id).await.run.git_ref, "refs/heads/release");
    // And from its default branch, a run over every repository but the hub.
    let body = hub_workflow_run(&world, &hub, "refs/heads/main");
    deliver_and_wait(&world, "workflow_dispatch", "default-branch", &body).await;
    let id = common::next_completion(&mut completions).await;
    let report = world.report(&id).await;
    assert_eq!(report.run.git_ref, "refs/heads/main");
    assert_eq!(report.totals.succeeded, 3, "{:?}", report.totals);
    assert_eq!(report.totals.total, 3, "{:?}", report.totals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_spokes_in_flight_and_the_hub_is_no_target() {
    let world = World::start(
        &scenario(22, "").replace("duration_ms = [5, 40]", "duration_ms = [150, 300]"),
        &format!("{FAST_HUB}\n[tasks.rolling.policy]\nconcurrency = 5\n"),
    )
    .await;
    let report = world.run_to_completion(json!({"task": "rolling"})).await;
    assert_eq!(report.totals.total, 22, "{:?}", report.totals);
    assert_eq!(report.totals.succeeded, 22);
    assert!(report
        .spokes
        .iter()
        .all(|s| s.repo.as_str() != world.emulator.hub_repo));
    let c = counters(&world).await;
    assert_eq!(
        c["spoke_runs_peak_active"], 5,
        "at most (and, with 22 spokes, exactly) 5 spoke runs were queued or running at once: {c}"
    );
    // Without the bound, the same run has more in flight.
    let world = World::start(
        &scenario(22, "").replace("duration_ms = [5, 40]", "duration_ms = [150, 300]"),
        FAST_HUB,
    )
    .await;
    world
        .run_to_completion(json!({"task": "all-at-once"}))
        .await;
    let peak = counters(&world).await["spoke_runs_peak_active"]
        .as_u64()
        .unwrap();
    assert!(peak > 5, "{peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_check_runs_rerun_button_starts_nothing_and_says_why() {
    let extra = "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n";
    let world = World::start(&scenario(2, extra), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "t"})).await;
    let first_check = report.run.check_run_id.unwrap();
    let click = |check: u64| {
        let world = &world;
        async move {
            let r = world
                .http
                .post(format!(
                    "{}/_emulator/check-runs/{check}/request-action",
                    world.emulator.base_url
                ))
                .json(&json!({"identifier": "rerun_failed"}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let mut completions = world.hub.engine.subscribe_completions();
    click(first_check).await;
    common::next_completion(&mut completions).await;
    let after = world.report(&report.run.id).await;
    assert_ne!(after.run.check_run_id, Some(first_check), "a new check run");
    let dispatched = world.spoke_runs().await.len();

    // The first check run's button again: nothing is re-run, and a check run says why.
    // Other deliveries (the re-run's late webhooks) may be processed meanwhile: wait for the
    // click's own effect, the check run that says why nothing was re-run.
    click(first_check).await;
    wait_for("the click to be answered", || async {
        world.state().await["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "spokehub: t (not started)")
    })
    .await;
    assert_eq!(world.hub.engine.metrics().snapshot().reruns_refused, 1);
    assert_eq!(
        world.spoke_runs().await.len(),
        dispatched,
        "a spoke was re-run"
    );
    let state = world.state().await;
    let note = state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spokehub: t (not started)")
        .expect("a check run says why the re-run was not started");
    assert_eq!(note["conclusion"], "neutral");
    assert!(note["output"]["title"]
        .as_str()
        .unwrap()
        .contains("a newer check run exists"));
    let again = world.report(&report.run.id).await;
    assert_eq!(again.run.check_run_id, after.run.check_run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_button_pressed_by_someone_not_allowed_to_start_runs_does_nothing() {
    let extra = "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n";
    let hub = format!("{FAST_HUB}\n[hub]\nallowed_senders = [\"octocat\"]\n");
    let world = World::start(&scenario(2, extra), &hub).await;
    let report = world.run_to_completion(json!({"task": "t"})).await;
    assert_eq!(report.totals.failed, 1);
    let check = report.run.check_run_id.unwrap();
    let dispatched = world.spoke_runs().await.len();
    let r = world
        .http
        .post(format!(
            "{}/_emulator/check-runs/{check}/request-action",
            world.emulator.base_url
        ))
        .json(&json!({"identifier": "rerun_failed", "sender": "mona"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_for("the click to be refused", || async {
        world.hub.engine.metrics().snapshot().reruns_refused == 1
    })
    .await;
    assert_eq!(
        world.spoke_runs().await.len(),
        dispatched,
        "nothing was re-run"
    );
    let after = world.report(&report.run.id).await;
    assert_eq!(after.run.check_run_id, Some(check), "no new check run");
    assert_eq!(after.totals.failed, 1);
}
