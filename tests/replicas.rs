//! Several replicas on one PostgreSQL ledger: real `spokehub serve` processes behind the
//! emulator's load balancer (webhooks are spread round-robin over them), killed, stopped and
//! restarted while a run is going. Nothing may be lost or duplicated, and GitHub's rate limits
//! hold across replicas.

#[path = "common/hub_process.rs"]
mod hub_process;
#[path = "common/postgres.rs"]
mod postgres_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;
use spokehub::hub::SpokeStatus;
use spokehub::report::RunReport;

use hub_process::{spoke_run_count, spoke_runs, Cluster, CLUSTER_API_TOKEN};

/// Each test runs nine processes or more: one test at a time on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HUB: &str = r#"
[hub]
redeliver_every = "2s"
lease_ttl = "3s"
[policy]
api_concurrency = 20
unknown_search_delay = "300ms"
reconcile_after = "3s"
reconcile_rate = 100
[policy.retry]
limit = 0
"#;

fn scenario(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/scenarios")
            .join(name),
    )
    .unwrap()
}

/// Exactly one workflow run per spoke (retries are off), and the hub's record of every spoke
/// agrees with GitHub's; returns the runs per repository.
fn assert_exactly_once(state: &Value, report: &RunReport, spokes: usize) {
    let runs = spoke_runs(state);
    let mut per_repo: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *per_repo.entry(r["repo"].as_str().unwrap()).or_insert(0) += 1;
    }
    let dupes: Vec<_> = per_repo.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "dispatched twice: {dupes:?}");
    assert_eq!(per_repo.len(), spokes, "every spoke dispatched");
    let by_id: BTreeMap<u64, &Value> = runs
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), *r))
        .collect();
    for s in &report.spokes {
        let run = by_id[&s.workflow_run_id.expect("every spoke knows its run")];
        assert_eq!(run["repo"], s.repo.as_str());
        let expected = match run["conclusion"].as_str() {
            Some("success") => SpokeStatus::Succeeded,
            _ => SpokeStatus::Failed,
        };
        assert_eq!(s.status, expected, "{}", s.repo);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_ten_times_under_faults_lose_and_duplicate_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let mut c = Cluster::start(&scenario("replicas/faults.toml"), HUB, &url, 3).await;
    c.trigger("fleet").await;
    let seed: u64 = rand::random();
    eprintln!("replica kill seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The kills start once dispatching has.
    while spoke_run_count(&c.state().await) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kills_during_run = 0;
    for k in 0..12 {
        // A random replica at a random moment: these pauses are part of the plan.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        let i = rng.gen_range(0..3);
        let s = c.state().await;
        if !Cluster::check_runs(&s, "fleet")
            .iter()
            .any(|c| c["status"] == "completed")
        {
            kills_during_run += 1;
        }
        c.kill(i);
        // Half come back under their name (and take their leases back at once), half under a
        // new one (their leases expire and any replica takes the work over).
        let name = if k % 2 == 0 {
            format!("replica-{i}")
        } else {
            format!("replica-{i}-{k}")
        };
        c.restart(i, &name).await;
    }
    assert!(
        kills_during_run >= 10,
        "{kills_during_run} kills landed while the run was going"
    );
    let state = c
        .wait_for_completion("fleet", Duration::from_secs(300))
        .await;
    let checks = Cluster::check_runs(&state, "fleet");
    assert_eq!(checks.len(), 1, "exactly one check run");
    let report = c.report().await;
    assert_exactly_once(&state, &report, 1000);
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (999, 1, 0), "{t:?}");
    assert_eq!(checks[0]["conclusion"], "failure");
    let title = checks[0]["output"]["title"].as_str().unwrap_or_default();
    assert!(title.contains("999 succeeded, 1 failed"), "{title}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sent_sigterm_mid_run_exits_0_within_30_s_and_the_others_finish_the_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let mut c = Cluster::start(&scenario("replicas/steady.toml"), HUB, &url, 3).await;
    c.trigger("steady").await;
    while spoke_run_count(&c.state().await) < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop the replica that drives the run.
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM runs")
        .fetch_one(&db)
        .await
        .unwrap();
    let owner = owner.expect("a replica holds the run");
    let i: usize = owner
        .strip_prefix("replica-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected lease owner {owner}"));
    let (status, took) = c.replicas[i]
        .take()
        .unwrap()
        .terminate(Duration::from_secs(30))
        .await;
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let state = c
        .wait_for_completion("steady", Duration::from_secs(120))
        .await;
    assert_eq!(Cluster::check_runs(&state, "steady").len(), 1);
    let report = c.report().await;
    assert_exactly_once(&state, &report, 300);
    assert_eq!(report.totals.succeeded, 300, "{:?}", report.totals);
    let new_owner: Option<String> = sqlx::query_scalar("SELECT last_error FROM runs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(new_owner, None, "the stop was not a failure");
}

/// `cancel` and the run's API answer the same whichever replica receives them: a cancel sent
/// to a replica that does not drive the run stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_a_replica_that_does_not_drive_the_run_stops_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let c = Cluster::start(&scenario("replicas/steady.toml"), HUB, &url, 3).await;
    c.trigger("steady").await;
    while spoke_run_count(&c.state().await) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let (id, owner): (String, Option<String>) = sqlx::query_as("SELECT id, lease_owner FROM runs")
        .fetch_one(&db)
        .await
        .unwrap();
    let owner = owner.expect("a replica drives the run");
    let i: usize = owner.strip_prefix("replica-").unwrap().parse().unwrap();
    let (other, third) = ((i + 1) % 3, (i + 2) % 3);
    let cancelled = c
        .http
        .post(format!(
            "http://{}/api/v1/runs/{id}/cancel",
            c.listens[other]
        ))
        .bearer_auth(CLUSTER_API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 202);
    let state = c
        .wait_for_completion("steady", Duration::from_secs(60))
        .await;
    let checks = Cluster::check_runs(&state, "steady");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["conclusion"], "cancelled");
    let report: Value = c
        .http
        .get(format!("http://{}/api/v1/runs/{id}", c.listens[third]))
        .bearer_auth(CLUSTER_API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    // Spokes last a second or more: those still going when the cancel came were cancelled.
    assert!(
        report["totals"]["cancelled"].as_u64().unwrap() > 0,
        "spokes were cancelled: {}",
        report["totals"]
    );
    let again = c
        .http
        .post(format!(
            "http://{}/api/v1/runs/{id}/cancel",
            c.listens[third]
        ))
        .bearer_auth(CLUSTER_API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "already completed");
}

/// The check run's "Re-run failed" works whichever replica its webhook reaches: the completed
/// run is reopened there and driven by whichever replica claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_run_failed_works_whichever_replica_the_click_reaches() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let c = Cluster::start(&scenario("replicas/rerun.toml"), HUB, &url, 3).await;
    c.trigger("fix").await;
    let state = c.wait_for_completion("fix", Duration::from_secs(60)).await;
    let first = Cluster::check_runs(&state, "fix")[0].clone();
    assert_eq!(first["conclusion"], "failure");
    let clicked = c
        .http
        .post(format!(
            "{}/_emulator/check-runs/{}/request-action",
            c.emulator.base_url, first["id"]
        ))
        .json(&serde_json::json!({"identifier": "rerun_failed"}))
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());
    // A second check run of the same name, completed after the re-run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let state = loop {
        let s = c.state().await;
        let checks = Cluster::check_runs(&s, "fix");
        if checks.len() == 2 && checks.iter().all(|c| c["status"] == "completed") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the re-run did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let broken: Vec<&Value> = spoke_runs(&state)
        .into_iter()
        .filter(|r| r["repo"] == "acme/broken")
        .collect();
    assert_eq!(
        broken.len(),
        2,
        "the failed spoke was dispatched again, once"
    );
    assert_eq!(spoke_runs(&state).len(), 11, "nothing else was");
    let report = c.report().await;
    let spoke = report
        .spokes
        .iter()
        .find(|s| s.repo.name() == "broken")
        .unwrap();
    assert_eq!((spoke.attempt, spoke.status), (2, SpokeStatus::Failed));
}

/// Every replica exports the spokes in flight of the runs it drives: summed over the replicas,
/// each spoke counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summed_over_replicas_the_active_spokes_gauge_counts_each_spoke_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let c = Cluster::start(&scenario("replicas/stuck.toml"), HUB, &url, 3).await;
    c.trigger("hold").await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    // All 30 running (their runs never end on their own).
    loop {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM spokes WHERE status = 'running'")
                .fetch_one(&db)
                .await
                .unwrap();
        if running == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per_replica = Vec::new();
    for listen in &c.listens {
        let text = c
            .http
            .get(format!("http://{listen}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let active: f64 = text
            .lines()
            .filter(|l| l.starts_with("spokehub_spokes_active{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        per_replica.push(active);
    }
    let total: f64 = per_replica.iter().sum();
    assert_eq!(total, 30.0, "per replica: {per_replica:?}");
    assert_eq!(
        per_replica.iter().filter(|n| **n > 0.0).count(),
        1,
        "only the replica driving the run counts its spokes: {per_replica:?}"
    );
}

/// Three runs at once (different tasks over the same 100 repositories), spread over the three
/// replicas, all writing to one installation under a secondary rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_send_while_github_said_wait_and_no_spoke_fails_from_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_harness::fresh_database().await else {
        return;
    };
    let c = Cluster::start(&scenario("faults/rate_limits.toml"), HUB, &url, 3).await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let tasks = ["limited-a", "limited-b", "limited-c"];
    // All three at once, so that their planning (the only reads) is done before the limit is
    // reached: a read already on its way when another replica's write is told to wait would
    // arrive during the wait, whatever the hub does.
    for task in tasks {
        c.trigger(task).await;
    }
    loop {
        let driven: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE lease_owner IS NOT NULL OR status = 'completed'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if driven == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owners: Vec<Option<String>> = sqlx::query_scalar("SELECT lease_owner FROM runs")
        .fetch_all(&db)
        .await
        .unwrap();
    let mut owners: Vec<String> = owners.into_iter().flatten().collect();
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), 3, "each replica drives one run: {owners:?}");
    let mut state = Value::Null;
    for task in tasks {
        state = c.wait_for_completion(task, Duration::from_secs(240)).await;
        assert_eq!(
            Cluster::check_runs(&state, task)[0]["conclusion"],
            "success"
        );
    }
    let runs = spoke_runs(&state);
    assert_eq!(runs.len(), 300, "one workflow run per spoke of each run");
    assert!(
        state["secondary_limit_hits"].as_u64().unwrap() > 0,
        "the limit was reached"
    );
    assert_eq!(
        state["rate_limit_violations"], 0,
        "sent while told to wait: {} {}",
        state["rate_limit_violations_by_route"], state["first_rate_limit_violation"]
    );
}
