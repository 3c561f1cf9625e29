//! The hub against the emulator under each REST API version it can be set to
//! (`github.api_version`), and the person's dispatch that waits for the hub's run id.

mod common;

use std::collections::BTreeMap;

use common::{next_completion, scenario, World, FAST_HUB};
use serde_json::{json, Value};
use spokehub::hub::SpokeStatus;

/// One run of 6 spokes (one failing) with the hub asking for `version`; checks the exact
/// outcome, that every request carried the version, and that each spoke was tied to its
/// workflow run by the id the dispatch answered (no run was searched for).
async fn run_under(version: &str) {
    let hub_toml = format!("{FAST_HUB}\n[github]\napi_version = \"{version}\"\n");
    let extra = "[[org.repo]]\nname = \"bad-1\"\nconclusion = \"failure\"\n";
    let world = World::start(&scenario(5, extra), &hub_toml).await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;

    assert_eq!(report.totals.succeeded, 5, "{version}: {:?}", report.totals);
    assert_eq!(report.totals.failed, 1, "{version}: {:?}", report.totals);
    assert_eq!(
        report.run.conclusion.as_deref(),
        Some("failure"),
        "{version}"
    );

    let state = world.state().await;
    let by_version: BTreeMap<String, u64> =
        serde_json::from_value(state["requests_by_api_version"].clone()).unwrap();
    let total = state["requests_total"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(
        by_version,
        BTreeMap::from([(version.to_owned(), total)]),
        "every request the hub sent selected {version}"
    );
    assert!(
        !state["requests_by_route"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("/runs")),
        "{version}: the hub searched for runs: {}",
        state["requests_by_route"]
    );
    // The run id the hub holds for each spoke is the run GitHub created in that repository.
    let runs: BTreeMap<String, u64> = world
        .spoke_runs()
        .await
        .iter()
        .map(|r| {
            (
                r["repo"].as_str().unwrap().to_owned(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 6, "{version}: one workflow run per spoke");
    let held: BTreeMap<String, u64> = report
        .spokes
        .iter()
        .filter(|s| matches!(s.status, SpokeStatus::Succeeded | SpokeStatus::Failed))
        .map(|s| {
            let id = s.workflow_run_id.expect("the spoke has its run id");
            (s.repo.as_str().to_owned(), id)
        })
        .collect();
    assert_eq!(held, runs, "{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_under_api_version_2022_11_28() {
    run_under("2022-11-28").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_under_api_version_2026_03_10() {
    run_under("2026-03-10").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_dispatch_can_wait_for_the_hub_run_id() {
    let world = World::start(&scenario(3, ""), FAST_HUB).await;
    let mut completions = world.hub.engine.subscribe_completions();
    let answer: Value = world
        .http
        .post(format!(
            "{}/_emulator/hub/dispatch",
            world.emulator.base_url
        ))
        .json(&json!({"inputs": {"task": "scan"}, "wait_for_check_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hub_run_id = answer["hub_run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no hub_run_id: {answer}"))
        .to_owned();
    let done = next_completion(&mut completions).await;
    assert_eq!(done.to_string(), hub_run_id);
    let report = world.report(&done).await;
    assert_eq!(answer["check_run_id"].as_u64(), report.run.check_run_id);
    let hub_sha = world.state().await["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["full_name"] == world.emulator.hub_repo)
        .map(|r| r["head_sha"].clone())
        .unwrap();
    assert_eq!(answer["head_sha"], hub_sha);
}
