//! Crash safety under fire: a 1,000-spoke run while the real hub process is killed (SIGKILL)
//! ten times at random moments and restarted each time on the same database. The run must
//! complete with zero duplicate workflow runs, zero lost spokes and an exact check run.

#[path = "common/hub_process.rs"]
mod hub_process;
#[path = "common/postgres.rs"]
mod postgres_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use spokehub::hub::SpokeStatus;

use hub_process::{kill_and_restart_on, spoke_runs};

const HUB: &str = r#"
[hub]
redeliver_every = "2s"
[policy]
api_concurrency = 20
unknown_search_delay = "300ms"
reconcile_after = "3s"
reconcile_rate = 100
[policy.retry]
limit = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_or_more_sigkills_at_random_moments_during_a_thousand_spoke_run_lose_and_duplicate_nothing(
) {
    ten_sigkills(None).await;
}

/// The same, with the hub's ledger on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkills_during_a_thousand_spoke_run_on_postgres_lose_and_duplicate_nothing() {
    if let Some(url) = postgres_harness::fresh_database().await {
        ten_sigkills(Some(&url)).await;
    }
}

async fn ten_sigkills(database_url: Option<&str>) {
    let scenario = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/faults/crash.toml"),
    )
    .unwrap();
    let spokes = 1000;
    // Random moments: after a random number of dispatches, plus a random pause; the seed is
    // printed so a failure can be replayed.
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Kill points leave the last tenth of the dispatches, so every kill lands mid-run.
    let mut points: Vec<usize> = (0..10)
        .map(|_| rng.gen_range(1..=spokes * 9 / 10))
        .collect();
    points.sort();
    let kills: Vec<(usize, u64)> = points
        .into_iter()
        .map(|p| (p, rng.gen_range(0..100)))
        .collect();
    let out = kill_and_restart_on(
        database_url,
        &scenario,
        HUB,
        "crash",
        &kills,
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        out.kills_during_run, 10,
        "every kill landed while the run was going"
    );

    // Zero duplicates, zero lost: exactly one workflow run per spoke.
    let runs = spoke_runs(&out.state);
    let mut per_repo: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *per_repo.entry(r["repo"].as_str().unwrap()).or_insert(0) += 1;
    }
    let dupes: Vec<_> = per_repo.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "dispatched twice: {dupes:?}");
    assert_eq!(per_repo.len(), spokes, "every spoke dispatched");

    // The hub's record agrees with GitHub for every spoke.
    let by_id: BTreeMap<u64, &serde_json::Value> = runs
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), *r))
        .collect();
    for s in &out.report.spokes {
        if s.status == SpokeStatus::Skipped {
            continue;
        }
        let run = by_id[&s.workflow_run_id.expect("every spoke knows its run")];
        assert_eq!(run["repo"], s.repo.as_str());
        let expected = if s.repo.name() == "always-fails" {
            SpokeStatus::Failed
        } else {
            SpokeStatus::Succeeded
        };
        assert_eq!(s.status, expected, "{}", s.repo);
    }
    let t = out.report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (999, 1, 0), "{t:?}");

    // The check run is exact.
    let check = out.state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spokehub: crash")
        .unwrap();
    assert_eq!(check["status"], "completed");
    assert_eq!(check["conclusion"], "failure");
    let title = check["output"]["title"].as_str().unwrap_or_default();
    assert!(
        title.contains("999 succeeded, 1 failed") && !title.contains("skipped"),
        "{title}"
    );
}
