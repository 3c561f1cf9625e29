//! The hub's metrics as Prometheus sees them: a real Prometheus server scrapes a running hub
//! (with the metrics token) while a run with failing and stuck spokes goes through the
//! emulator, evaluates `deploy/prometheus/alerts.yml`, and answers the three questions of the
//! operations guide: how long hub runs take, what share of spokes succeed, how many are active.

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::time::Duration;

use serde_json::json;

use common::World;
use prometheus::Prometheus;

const SCENARIO: &str = r#"
[app]
private_key_file = "tests/data/test-app-key.pem"

[org]
login = "acme"
repos = 7
hub_repo = "platform-hub"

[[org.repo]]
name = "broken-one"
conclusion = "failure"
[[org.repo]]
name = "broken-two"
conclusion = "failure"
[[org.repo]]
name = "stuck-runner"
stuck = true

[spoke]
duration_ms = [1500, 2500]
callback = "repository_dispatch"
seed = 12
"#;

const HUB: &str = r#"
[policy]
unknown_search_delay = "300ms"
reconcile_after = "1s"
queued_timeout = "30s"
running_timeout = "9s"
cancel_on_timeout = true
[policy.retry]
limit = 0
"#;

const TOKEN: &str = "metrics-test-token";

/// The operations guide's three questions, as queries.
const HUB_DURATION: &str =
    "sum(spokehub_hub_run_duration_seconds_sum) / sum(spokehub_hub_run_duration_seconds_count)";
const SPOKE_SUCCESS_RATE: &str = "sum(spokehub_spokes_total{outcome=\"succeeded\"}) \
     / sum(spokehub_spokes_total{outcome!=\"skipped\"})";
const ACTIVE_SPOKES: &str = "sum(spokehub_spokes_active)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_run_as_it_went_and_the_failure_rate_alert_goes_off() {
    let world = World::start_editing(None, SCENARIO, HUB, |c| {
        c.metrics_token = Some(TOKEN.to_owned().into());
    })
    .await;
    let metrics = format!("{}/metrics", world.hub_url());
    // The token is required.
    let refused = world.http.get(&metrics).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = world
        .http
        .get(&metrics)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let alerts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let Some(prom) = Prometheus::start(
        &world.hub.addr.to_string(),
        Some(TOKEN),
        &[alerts.to_str().unwrap()],
    )
    .await
    else {
        return;
    };
    // Scraped before anything happened.
    assert_eq!(
        prom.wait_for("up{job=\"spokehub\"}", 1.0, Duration::from_secs(20))
            .await,
        Some(1.0),
        "Prometheus scrapes the hub with the token"
    );

    let mut completions = world.hub.engine.subscribe_completions();
    world
        .press_run_workflow(json!({"task": "observe", "targets": ""}))
        .await;
    // Nine spokes end within seconds; the stuck one runs until its 9 s timeout: one active
    // spoke, running.
    assert_eq!(
        prom.wait_for(ACTIVE_SPOKES, 1.0, Duration::from_secs(30))
            .await,
        Some(1.0),
        "one spoke (the stuck one) in flight"
    );
    assert_eq!(
        prom.value("spokehub_spokes_active{state=\"running\"}")
            .await,
        Some(1.0)
    );
    let id = tokio::time::timeout(Duration::from_secs(60), completions.recv())
        .await
        .expect("the run completes")
        .unwrap();
    let report = world.report(&id).await;
    let t = report.totals;
    assert_eq!((t.succeeded, t.failed, t.timed_out), (7, 2, 1), "{t:?}");

    // What the run implies: 7 of 10 spokes succeeded, none active, one run that took as long
    // as the ledger says.
    assert_eq!(
        prom.wait_for(SPOKE_SUCCESS_RATE, 0.7, Duration::from_secs(20))
            .await,
        Some(0.7)
    );
    assert_eq!(
        prom.wait_for(ACTIVE_SPOKES, 0.0, Duration::from_secs(20))
            .await,
        Some(0.0)
    );
    assert_eq!(
        prom.wait_for(
            "sum(spokehub_hub_runs_total{task=\"observe\",conclusion=\"failure\"})",
            1.0,
            Duration::from_secs(20)
        )
        .await,
        Some(1.0)
    );
    let took = (report.run.completed_at.unwrap() - report.run.created_at) as f64 / 1000.0;
    let seen = prom.value(HUB_DURATION).await.expect("a run duration");
    assert!(
        (seen - took).abs() < 1.0,
        "hub run duration {seen} s, the ledger says {took} s"
    );
    assert_eq!(
        prom.value("sum(spokehub_spokes_total{outcome=\"timed_out\"})")
            .await,
        Some(1.0)
    );

    // The alert rules see it: 30% of the spokes failed or timed out.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prom.alerts().await;
        let state = |name: &str| {
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == name)
                .and_then(|a| a["state"].as_str().map(str::to_owned))
        };
        let rate = state("SpokehubSpokeFailureRateHigh");
        let failed = state("SpokehubHubRunFailed");
        let stuck = state("SpokehubSpokesStuck");
        if matches!(rate.as_deref(), Some("pending" | "firing"))
            && failed.as_deref() == Some("firing")
            && stuck.as_deref() == Some("firing")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alerts: failure rate {rate:?}, run failed {failed:?}, stuck {stuck:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every query of the dashboard is valid and, for a hub that ran, answers.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/spokehub.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$task", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            let answer = prom.query(&expr).await;
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} dashboard queries");

    // No label names a repository.
    let text = world
        .http
        .get(&metrics)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["broken-one", "stuck-runner", "svc-", "acme/"] {
        assert!(!text.contains(name), "{name} in the metrics");
    }
    assert!(
        text.contains("spokehub_dispatch_duration_seconds_count 10"),
        "{text}"
    );
}
