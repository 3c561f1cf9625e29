//! Failure isolation proven by fault injection, end to end through the emulator over real
//! HTTP: lost answers and 502s (exactly-once dispatch), lost / duplicated / late webhooks
//! (reconciliation), secondary rate limits, stuck runners (timeouts and cancel), flaky spokes
//! (retries) and GitHub Enterprise Server 3.20 (run-name correlation). Every scenario is a file
//! in `tests/scenarios/faults/`, also runnable with `spokehub demo --scenario FILE`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::World;
use serde_json::{json, Value};
use spokehub::hub::{HubRunId, SpokeStatus};
use spokehub::report::RunReport;

/// A scenario of the fault library.
fn scenario(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios/faults")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Presses "Run workflow" and waits (on the hub's completion events) for the run to end.
async fn run(world: &World, task: &str, within: Duration) -> RunReport {
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({ "task": task })).await;
    let Ok(id) = tokio::time::timeout(within, completions.recv()).await else {
        // Say where it stands before failing.
        let store = world.hub.engine.store();
        let open = match store.latest_run_id().await.unwrap() {
            Some(id) => {
                let r = world.report(&id).await;
                let open: Vec<String> = r
                    .spokes
                    .iter()
                    .filter(|s| !s.status.is_terminal())
                    .take(10)
                    .map(|s| format!("{s:?}"))
                    .collect();
                format!("{:?} {:?}: {}", r.run.status, r.totals, open.join("\n"))
            }
            None => "no run was started".into(),
        };
        panic!("the run did not complete within {within:?}: {open}");
    };
    world.report(&id.expect("completion channel open")).await
}

/// The emulator's spoke workflow runs per (repository, attempt input).
fn runs_by_attempt(runs: &[Value]) -> BTreeMap<(String, u32), Vec<&Value>> {
    let mut out: BTreeMap<(String, u32), Vec<&Value>> = BTreeMap::new();
    for r in runs {
        let repo = r["repo"].as_str().unwrap().to_owned();
        let attempt: u32 = r["inputs"]["attempt"].as_str().unwrap().parse().unwrap();
        out.entry((repo, attempt)).or_default().push(r);
    }
    out
}

/// Exactly one workflow run per spoke attempt, and the hub's view of every spoke matches the
/// run GitHub holds for its last attempt.
fn assert_exactly_once_and_exact(report: &RunReport, runs: &[Value]) {
    let by_attempt = runs_by_attempt(runs);
    for ((repo, attempt), rs) in &by_attempt {
        assert_eq!(
            rs.len(),
            1,
            "{repo} attempt {attempt} has {} runs",
            rs.len()
        );
    }
    for s in report
        .spokes
        .iter()
        .filter(|s| s.status != SpokeStatus::Skipped)
    {
        let key = (s.repo.to_string(), s.attempt);
        let run = by_attempt
            .get(&key)
            .unwrap_or_else(|| panic!("no workflow run for {} attempt {}", s.repo, s.attempt))[0];
        // Every earlier attempt has its run too, and no later one exists.
        for a in 1..s.attempt {
            assert!(by_attempt.contains_key(&(s.repo.to_string(), a)));
        }
        assert!(!by_attempt.contains_key(&(s.repo.to_string(), s.attempt + 1)));
        assert_eq!(s.workflow_run_id, run["id"].as_u64(), "{}", s.repo);
        let expected = match run["conclusion"].as_str() {
            Some("success") => SpokeStatus::Succeeded,
            Some("failure") => SpokeStatus::Failed,
            other => panic!("{}: unexpected run conclusion {other:?}", s.repo),
        };
        assert_eq!(s.status, expected, "{}", s.repo);
    }
}

/// The check run's table rows, by repository: (result cell, attempt cell).
fn table_rows(check: &Value) -> BTreeMap<String, (String, String)> {
    let all = format!(
        "{}\n{}",
        check["output"]["summary"].as_str().unwrap_or(""),
        check["output"]["text"].as_str().unwrap_or("")
    );
    all.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // "| repo | result | attempt | duration | run |"
            (cells.len() == 7 && cells[1].contains('/')).then(|| {
                (
                    cells[1].to_owned(),
                    (cells[2].to_owned(), cells[3].to_owned()),
                )
            })
        })
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_and_502s_give_exactly_one_workflow_run_per_spoke_attempt() {
    let hub = r#"
[policy]
api_concurrency = 20
unknown_search_delay = "300ms"
reconcile_after = "2s"
reconcile_rate = 50
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("exactly_once.toml"), hub).await;
    let report = run(&world, "exactly-once", Duration::from_secs(300)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (480, 20, 0), "{t:?}");
    assert_eq!(t.dispatch_failed + t.timed_out + t.cancelled, 0, "{t:?}");
    let runs = world.spoke_runs().await;
    assert_eq!(runs.len(), 500, "one workflow run per spoke");
    assert_exactly_once_and_exact(&report, &runs);
    let c = counters(&world).await;
    assert!(
        c["lost_responses"].as_u64().unwrap() > 50,
        "the faults were exercised: {c}"
    );
    assert!(c["api_errors_injected"].as_u64().unwrap() > 25, "{c}");
    let check = world.check_run(&report).await;
    assert_eq!(check["status"], "completed");
    assert_eq!(check["conclusion"], "failure");
    let rows = table_rows(&check);
    for s in report
        .spokes
        .iter()
        .filter(|s| s.status == SpokeStatus::Failed)
    {
        let (result, attempt) = rows.get(s.repo.as_str()).expect("a failed spoke has a row");
        assert!(result.to_lowercase().contains("fail"), "{result}");
        assert_eq!(attempt, "1");
    }
    // Exactly one check run: a lost answer to its creation did not make a second one.
    let checks = world.state().await["check_runs"].as_array().unwrap().len();
    assert_eq!(checks, 1);
}

/// Hub settings where only recovery can finish a run: timeouts far beyond the tests' patience,
/// quick read-backs and a redelivery sweep every `redeliver_every`.
fn recovering_hub(redeliver_every: &str) -> String {
    format!(
        r#"
[hub]
redeliver_every = "{redeliver_every}"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "1s"
reconcile_rate = 50
queued_timeout = "1h"
running_timeout = "1h"
[policy.retry]
limit = 0
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_late_webhooks_still_give_the_exact_result_before_any_timeout() {
    // Timeouts far beyond the test's patience: only reconciliation can finish the run.
    let hub = &recovering_hub("1s");
    lost_duplicated_and_late_webhooks(World::start(&scenario("webhooks.toml"), hub).await).await;
}

/// The same with the hub's ledger on PostgreSQL (duplicates deduplicated by its unique key,
/// late reports judged against rows read `FOR UPDATE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_late_webhooks_on_postgres_still_give_the_exact_result() {
    let hub = &recovering_hub("1s");
    if let Some(world) = World::start_postgres(&scenario("webhooks.toml"), hub).await {
        lost_duplicated_and_late_webhooks(world).await;
    }
}

async fn lost_duplicated_and_late_webhooks(world: World) {
    let report = run(&world, "webhook-faults", Duration::from_secs(120)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (190, 10, 0), "{t:?}");
    assert_eq!(t.timed_out + t.dispatch_failed + t.cancelled, 0, "{t:?}");
    let runs = world.spoke_runs().await;
    assert_eq!(runs.len(), 200);
    assert_exactly_once_and_exact(&report, &runs);
    let c = counters(&world).await;
    assert!(c["webhooks_dropped"].as_u64().unwrap() > 50, "{c}");
    assert!(c["webhooks_duplicated"].as_u64().unwrap() > 30, "{c}");
    // What was lost was recovered by asking: overdue spokes read back
    // (GET .../actions/runs/{id}) and failed deliveries redelivered, whichever came first.
    let route = |r: &str| c["requests_by_route"][r].as_u64().unwrap_or(0);
    let reads = route("GET /repos/{o}/{r}/actions/runs/{id}");
    let redeliveries = route("POST /app/hook/deliveries/{id}/attempts");
    assert!(reads + redeliveries > 0, "nothing was recovered: {c}");
    let check = world.check_run(&report).await;
    assert_eq!(check["conclusion"], "failure");
    let conflicts = world.hub.engine.store().events("conflict").await.unwrap();
    assert!(conflicts.is_empty(), "conflicting reports: {conflicts:?}");
    assert_eq!(world.hub.engine.metrics().snapshot().conflicts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_first_delivery_lost_the_hub_starts_from_a_redelivery_and_ends_exact() {
    let hub = &recovering_hub("500ms");
    let world = World::start(&scenario("webhooks_all_lost.toml"), hub).await;
    let report = run(&world, "all-lost", Duration::from_secs(60)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (28, 2, 0), "{t:?}");
    let runs = world.spoke_runs().await;
    assert_eq!(runs.len(), 30);
    assert_exactly_once_and_exact(&report, &runs);
    let s = world.state().await;
    let redelivered = s["webhook_deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["redelivery"] == true)
        .count();
    assert!(redelivered > 0, "the hub asked for redeliveries");
    assert_eq!(world.check_run(&report).await["conclusion"], "failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_rate_limits_fail_no_spoke_and_the_hub_never_sends_while_told_to_wait() {
    let hub = r#"
[policy]
api_concurrency = 20
unknown_search_delay = "300ms"
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("rate_limits.toml"), hub).await;
    let report = run(&world, "rate-limited", Duration::from_secs(180)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.skipped, t.total), (100, 0, 100), "{t:?}");
    let runs = world.spoke_runs().await;
    assert_exactly_once_and_exact(&report, &runs);
    let c = counters(&world).await;
    assert!(
        c["secondary_limit_hits"].as_u64().unwrap() > 0,
        "the limit was reached: {c}"
    );
    assert_eq!(c["rate_limit_violations"], 0, "{c}");
    assert_eq!(world.check_run(&report).await["conclusion"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_runs_time_out_are_cancelled_on_github_and_the_run_ends() {
    let hub = r#"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "500ms"
queued_timeout = "3s"
running_timeout = "2s"
cancel_on_timeout = true
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("stuck.toml"), hub).await;
    let report = run(&world, "stuck", Duration::from_secs(60)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.timed_out, t.skipped), (27, 3, 0), "{t:?}");
    for s in report
        .spokes
        .iter()
        .filter(|s| s.repo.name().starts_with("stuck-"))
    {
        assert_eq!(s.status, SpokeStatus::TimedOut, "{}", s.repo);
        assert!(
            s.reason.as_deref().unwrap_or("").contains("running"),
            "{s:?}"
        );
    }
    assert_eq!(report.run.conclusion.as_deref(), Some("timed_out"));
    // GitHub shows the stuck runs cancelled (the hub asked), and every other run finished.
    let runs = world.spoke_runs().await;
    for r in &runs {
        let repo = r["repo"].as_str().unwrap();
        assert_eq!(r["status"], "completed", "{repo}");
        let expected = if repo.starts_with("acme/stuck-") {
            "cancelled"
        } else {
            "success"
        };
        assert_eq!(r["conclusion"], expected, "{repo}");
    }
    // The cancellation's late "cancelled" report did not change the decided timeout.
    let after = world.report(&report.run.id).await;
    assert_eq!(after.totals.timed_out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_runs_time_out_and_are_left_alone_unless_cancelling_is_asked_for() {
    let hub = r#"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "500ms"
queued_timeout = "3s"
running_timeout = "1s"
cancel_on_timeout = false
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("stuck.toml"), hub).await;
    let report = run(&world, "stuck-kept", Duration::from_secs(60)).await;
    assert_eq!(report.totals.timed_out, 3, "{:?}", report.totals);
    let runs = world.spoke_runs().await;
    for r in runs
        .iter()
        .filter(|r| r["repo"].as_str().unwrap().starts_with("acme/stuck-"))
    {
        assert_eq!(r["status"], "in_progress", "{}", r["repo"]);
    }
    let c = counters(&world).await;
    assert!(
        c["requests_by_route"]["POST /repos/{o}/{r}/actions/runs/{id}/cancel"].is_null(),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_deadline_ends_a_run_with_stuck_spokes_and_cancels_their_runs() {
    // Spoke timeouts far away: only the overall deadline can end this run.
    let hub = r#"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "500ms"
queued_timeout = "1h"
running_timeout = "1h"
overall_timeout = "3s"
cancel_on_timeout = true
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("stuck.toml"), hub).await;
    let report = run(&world, "deadline", Duration::from_secs(60)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.timed_out, t.skipped), (27, 3, 0), "{t:?}");
    let runs = world.spoke_runs().await;
    let stuck: Vec<&Value> = runs
        .iter()
        .filter(|r| r["repo"].as_str().unwrap().starts_with("acme/stuck-"))
        .collect();
    assert_eq!(stuck.len(), 3);
    for r in stuck {
        assert_eq!(r["conclusion"], "cancelled", "{}", r["repo"]);
    }
}

/// A `spoke_complete` callback as the spoke's report step sends it (a `repository_dispatch` on
/// the hub repository), for the run `old` of an earlier attempt, with that attempt's token.
fn late_callback(world: &World, run: &HubRunId, old: &Value, status: &str) -> Value {
    json!({
        "action": "spoke_complete",
        "branch": "main",
        "client_payload": {
            "hub_run_id": run.to_string(), "repo": old["repo"], "status": status,
            "run_id": old["id"], "run_attempt": 1, "run_url": old["html_url"],
            "callback_token": old["inputs"]["callback_token"],
        },
        "repository": {"full_name": world.emulator.hub_repo},
        "sender": {"login": "spokehub-spoke[bot]"},
        "installation": {"id": world.emulator.installation_id},
    })
}

const FLAKY_HUB: &str = r#"
[policy]
unknown_search_delay = "300ms"
[policy.retry]
limit = 2
backoff = "100ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_spokes_are_retried_as_new_attempts_and_late_reports_never_change_the_newer() {
    flaky_spokes(World::start(&scenario("flaky.toml"), FLAKY_HUB).await).await;
}

/// The same with the hub's ledger on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_spokes_on_postgres_are_retried_and_late_reports_never_change_the_newer() {
    if let Some(world) = World::start_postgres(&scenario("flaky.toml"), FLAKY_HUB).await {
        flaky_spokes(world).await;
    }
}

async fn flaky_spokes(world: World) {
    let report = run(&world, "flaky", Duration::from_secs(120)).await;
    let runs = world.spoke_runs().await;
    assert_exactly_once_and_exact(&report, &runs);
    let by_attempt = runs_by_attempt(&runs);
    let retried: Vec<_> = report.spokes.iter().filter(|s| s.attempt > 1).collect();
    assert!(retried.len() > 20, "40 % failing runs cause retries");
    for s in &report.spokes {
        match s.status {
            // Failed only when every allowed attempt (1 + 2 retries) failed.
            SpokeStatus::Failed => assert_eq!(s.attempt, 3, "{}", s.repo),
            SpokeStatus::Succeeded => {}
            SpokeStatus::Skipped => continue,
            other => panic!("{}: {other}", s.repo),
        }
        // Each attempt got its own callback token.
        let tokens: std::collections::BTreeSet<&str> = (1..=s.attempt)
            .map(|a| {
                by_attempt
                    .get(&(s.repo.to_string(), a))
                    .unwrap_or_else(|| panic!("{} attempt {a}: no run", s.repo))[0]["inputs"]
                    ["callback_token"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(tokens.len(), s.attempt as usize, "{}", s.repo);
    }
    assert_eq!(
        report.totals.succeeded + report.totals.failed + report.totals.skipped,
        report.totals.total
    );
    // The summary shows each spoke's attempt.
    let check = world.check_run(&report).await;
    let rows = table_rows(&check);
    for s in &retried {
        if let Some((_, attempt)) = rows.get(s.repo.as_str()) {
            assert_eq!(attempt, &s.attempt.to_string(), "{}", s.repo);
        }
    }
    assert!(
        retried.iter().any(|s| rows.contains_key(s.repo.as_str())),
        "retried spokes appear in the summary"
    );
    // A late report from attempt 1 (genuine token) saying the opposite changes nothing.
    let target = retried[0];
    let old = by_attempt[&(target.repo.to_string(), 1)][0];
    let flipped = if target.status == SpokeStatus::Succeeded {
        "failure"
    } else {
        "success"
    };
    let body = late_callback(&world, &report.run.id, old, flipped);
    // Counters read before sending, so a delivery processed at once is not missed.
    let before = world.hub.engine.metrics().snapshot().deliveries_processed;
    let rejected = world.hub.engine.metrics().snapshot().callbacks_rejected;
    let resp = world
        .send_webhook("repository_dispatch", "late-attempt-1", &body)
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    // The delivery is processed once its GUID is recorded as processed; wait on that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while world.hub.engine.metrics().snapshot().deliveries_processed == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "late callback never processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its token is genuine but good only while attempt 1 was open: rejected, not a conflict.
    assert_eq!(
        world.hub.engine.metrics().snapshot().callbacks_rejected,
        rejected + 1
    );
    let after = world.report(&report.run.id).await;
    let now = after.spokes.iter().find(|s| s.repo == target.repo).unwrap();
    assert_eq!(
        now, target,
        "a late report of attempt 1 changed attempt {}",
        target.attempt
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghes_3_20_runs_end_to_end_matching_runs_by_run_name() {
    let hub = r#"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "2s"
[policy.retry]
limit = 0
"#;
    let world = World::start(&scenario("ghes_3_20.toml"), hub).await;
    let report = run(&world, "ghes", Duration::from_secs(120)).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.skipped), (95, 5, 0), "{t:?}");
    let runs = world.spoke_runs().await;
    assert_eq!(runs.len(), 100);
    // No run id came from the dispatch: every spoke learnt it from a run-name match.
    assert_exactly_once_and_exact(&report, &runs);
    let c = counters(&world).await;
    let dispatches = c["requests_by_route"]
        ["POST /repos/{o}/{r}/actions/workflows/{wf}/dispatches"]
        .as_u64()
        .unwrap();
    // A 400 for `return_run_details` per dispatch already prepared when the first 400 came
    // back (at most the API concurrency, 20), then one dispatch per spoke.
    assert!((101..=121).contains(&dispatches), "{c}");
    assert_eq!(world.check_run(&report).await["conclusion"], "failure");
}
