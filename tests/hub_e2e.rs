//! The hub's main job end to end, through real HTTP against the GitHub emulator: the button,
//! the fan-out, the reports, the summary check run.

mod common;

use std::collections::BTreeSet;

use common::{scenario, World, FAST_HUB};
use serde_json::{json, Value};
use spokehub::hub::SpokeStatus;

fn failing_repos(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[org.repo]]\nname = \"bad-{i:03}\"\nconclusion = \"failure\"\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_repositories_with_ten_percent_failing_give_an_exact_failure_summary() {
    let world = World::start(&scenario(180, &failing_repos(20)), FAST_HUB).await;
    two_hundred_repositories(world).await;
}

/// The same run with the hub's ledger on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_repositories_on_postgres_give_the_same_exact_summary() {
    if let Some(world) = World::start_postgres(&scenario(180, &failing_repos(20)), FAST_HUB).await {
        two_hundred_repositories(world).await;
    }
}

async fn two_hundred_repositories(world: World) {
    let report = world
        .run_to_completion(
            json!({"task": "bump-deps", "targets": "", "params": "{\"to\":\"1.2\"}"}),
        )
        .await;
    let t = report.totals;
    // 200 spokes; the hub repository itself is not a target.
    assert_eq!(t.succeeded, 180, "{t:?}");
    assert_eq!(t.failed, 20, "{t:?}");
    assert_eq!((t.skipped, t.total), (0, 200), "{t:?}");
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    assert!(report
        .spokes
        .iter()
        .all(|s| s.repo.as_str() != "acme/platform-hub"));
    for s in report
        .spokes
        .iter()
        .filter(|s| s.repo.name().starts_with("bad-"))
    {
        assert_eq!(s.status, SpokeStatus::Failed, "{}", s.repo);
    }

    let check = world.check_run(&report).await;
    assert_eq!(check["name"], "spokehub: bump-deps");
    assert_eq!(check["status"], "completed");
    assert_eq!(check["conclusion"], "failure");
    assert_eq!(check["external_id"], report.run.id.to_string());
    let summary = check["output"]["summary"].as_str().unwrap();
    let text = check["output"]["text"].as_str().unwrap_or("");
    let all = format!("{summary}\n{text}");
    // Every spoke has exactly one row in the table.
    for s in &report.spokes {
        let cell = format!("| {} |", s.repo.as_str());
        let rows = all.lines().filter(|l| l.starts_with(&cell)).count();
        assert_eq!(rows, 1, "rows for {}", s.repo);
    }
    for bad in report
        .spokes
        .iter()
        .filter(|s| s.status == SpokeStatus::Failed)
    {
        let url = bad.run_url.as_deref().expect("failed spoke has a run link");
        assert!(all.contains(url), "no link to {url}");
    }
    // The totals table: total, succeeded, failed, timed out, dispatch failed, cancelled,
    // skipped, in progress.
    assert!(
        summary.contains("| 200 | 180 | 20 | 0 | 0 | 0 | 0 | 0 |"),
        "totals: {summary}"
    );
    // The re-run button is offered because spokes failed.
    assert!(check["actions"].to_string().contains("rerun_failed"));
    // Exactly one workflow run per spoke.
    assert_eq!(world.spoke_runs().await.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_spokes_succeeding_concludes_success() {
    let world = World::start(&scenario(25, ""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    assert_eq!(report.totals.succeeded, 25);
    assert_eq!(report.totals.failed, 0);
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));
    let check = world.check_run(&report).await;
    assert_eq!(check["conclusion"], "success");
    assert!(check["actions"].as_array().is_none_or(|a| a.is_empty()));
    // Every dispatched spoke carried the hub run id and its attempt in the run's title.
    for run in world.spoke_runs().await {
        let title = run["display_title"].as_str().unwrap();
        assert!(
            title.ends_with(&format!("[{}#1]", report.run.id)),
            "{title}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_targets_and_dispatches_nothing() {
    let world = World::start(&scenario(12, ""), FAST_HUB).await;
    let report = world
        .run_to_completion(json!({"task": "scan", "targets": "name:svc-000*", "dry_run": "true"}))
        .await;
    assert_eq!(report.run.conclusion.as_deref(), Some("neutral"));
    assert!(world.spoke_runs().await.is_empty(), "a dry run dispatched");
    let check = world.check_run(&report).await;
    assert_eq!(check["conclusion"], "neutral");
    let out = check["output"].to_string();
    for i in 1..=9 {
        assert!(
            out.contains(&format!("svc-000{i}")),
            "target svc-000{i} not listed"
        );
    }
    assert!(!out.contains("svc-0010"), "a non-target is listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_pick_exactly_the_right_repositories_and_skips_say_why() {
    let extra = r#"
[[org.repo]]
name = "api"
topics = ["rust", "team-a"]
visibility = "private"
properties = { tier = "gold" }

[[org.repo]]
name = "web"
topics = ["js", "team-a"]
visibility = "public"
properties = { tier = "silver" }

[[org.repo]]
name = "old-api"
topics = ["rust"]
archived = true

[[org.repo]]
name = "forked-lib"
topics = ["rust"]
fork = true

[[org.repo]]
name = "docs"
topics = ["rust"]
spoke_workflow = false

[[org.repo]]
name = "worker"
topics = ["rust"]
visibility = "public"
properties = { tier = "gold" }
"#;
    let world = World::start(&scenario(3, extra), FAST_HUB).await;

    let report = world
        .run_to_completion(json!({"task": "t1", "targets": "topic:rust -repo:worker"}))
        .await;
    let by_status = |status: SpokeStatus| -> BTreeSet<String> {
        report
            .spokes
            .iter()
            .filter(|s| s.status == status)
            .map(|s| s.repo.name().to_owned())
            .collect()
    };
    assert_eq!(
        by_status(SpokeStatus::Succeeded),
        BTreeSet::from(["api".to_owned()])
    );
    let skipped: Vec<(String, Option<String>)> = report
        .spokes
        .iter()
        .filter(|s| s.status == SpokeStatus::Skipped)
        .map(|s| (s.repo.name().to_owned(), s.reason.clone()))
        .collect();
    assert_eq!(
        skipped,
        vec![
            ("docs".to_owned(), Some("no spoke workflow".to_owned())),
            ("forked-lib".to_owned(), Some("fork".to_owned())),
            ("old-api".to_owned(), Some("archived".to_owned())),
        ]
    );
    assert_eq!(
        report.totals.total, 4,
        "non-selected repositories are not part of the run"
    );
    // The listing ruled out archived and forked repositories: no request was spent on them.
    let dispatched: BTreeSet<String> = world
        .spoke_runs()
        .await
        .iter()
        .map(|r| r["repo"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dispatched, BTreeSet::from(["acme/api".to_owned()]));

    let report = world
        .run_to_completion(json!({"task": "t2", "targets": "prop:tier=gold visibility:private"}))
        .await;
    let names: BTreeSet<&str> = report.spokes.iter().map(|s| s.repo.name()).collect();
    assert_eq!(names, BTreeSet::from(["api"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_without_dispatch_trigger_is_dispatch_failed_with_githubs_message() {
    let extra = r#"
[[org.repo]]
name = "no-trigger"
spoke_workflow = "no_dispatch"
"#;
    let world = World::start(&scenario(2, extra), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "t"})).await;
    let spoke = report
        .spokes
        .iter()
        .find(|s| s.repo.name() == "no-trigger")
        .unwrap();
    assert_eq!(spoke.status, SpokeStatus::DispatchFailed);
    assert_eq!(
        spoke.reason.as_deref(),
        Some("Workflow does not have 'workflow_dispatch' trigger")
    );
    assert_eq!(report.totals.succeeded, 2);
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_callbacks_the_run_completes_from_workflow_run_events_alone() {
    let world = World::start(
        &scenario(20, "").replace("callback = \"repository_dispatch\"", "callback = \"none\""),
        FAST_HUB,
    )
    .await;
    let report = world.run_to_completion(json!({"task": "t"})).await;
    assert_eq!(report.totals.succeeded, 20);
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));
    assert_eq!(
        world.hub.engine.metrics().snapshot().callbacks_accepted,
        0,
        "no callback was sent, so none can have been used"
    );
    for s in &report.spokes {
        if s.status == SpokeStatus::Succeeded {
            assert!(s.workflow_run_id.is_some(), "{} has no run id", s.repo);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_start_no_run_and_the_check_run_says_why() {
    let world = World::start(&scenario(3, ""), FAST_HUB).await;
    world
        .press_run_workflow(json!({"task": "scan", "params": "not json"}))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let check = loop {
        let state = world.state().await;
        if let Some(c) = state["check_runs"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["conclusion"] == "action_required"))
        {
            break c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no action_required check run"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(check["output"]["summary"]
        .as_str()
        .unwrap()
        .contains("\\`params\\` is not valid JSON"));
    assert!(world.spoke_runs().await.is_empty());
    assert!(world
        .hub
        .engine
        .store()
        .latest_run_id()
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_api_needs_the_bearer_token() {
    let world = World::start(&scenario(2, ""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "t"})).await;
    let url = format!("{}/api/v1/runs/{}", world.hub_url(), report.run.id);
    let anonymous = world.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = world
        .http
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // The scheme is case-insensitive (RFC 9110).
    let lower = world
        .http
        .get(&url)
        .header("authorization", "bearer test-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let ok: Value = world
        .http
        .get(&url)
        .bearer_auth("test-api-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["id"], report.run.id.to_string());
    assert_eq!(ok["totals"]["succeeded"], 2);
    assert_eq!(ok["spokes"].as_array().unwrap().len(), 2);
    // Without sign-in configured, the details link names nothing (the page is in run_page.rs).
    let page = world
        .http
        .get(format!("{}/runs/{}", world.hub_url(), report.run.id))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let text = page.text().await.unwrap();
    assert!(!text.contains(&report.run.id.to_string()));
    assert!(!text.contains("svc-"), "{text}");
    assert_eq!(world.health().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_run_shows_progress_at_most_every_two_seconds() {
    let world = World::start(
        &scenario(20, "").replace("duration_ms = [5, 40]", "duration_ms = [500, 4500]"),
        FAST_HUB,
    )
    .await;
    let started = std::time::Instant::now();
    let report = world.run_to_completion(json!({"task": "slow"})).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.totals.succeeded, 20);
    let check = world.check_run(&report).await;
    let updates = check["updates"].as_u64().unwrap() as f64;
    // Progress was shown while spokes ran (more than the final update) ...
    assert!(updates >= 2.0, "no progress update: {check}");
    // ... and never more often than every 2 s, plus the final update.
    assert!(
        updates <= (elapsed / 2.0).floor() + 2.0,
        "{updates} updates in {elapsed:.1} s"
    );
}
