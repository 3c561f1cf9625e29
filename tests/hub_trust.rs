//! Trust and intake: forged callbacks change nothing, duplicates are processed once, bad input
//! gets a clear error and records nothing.

mod common;

use common::{scenario, sign, World, FAST_HUB};
use serde_json::{json, Value};
use spokehub::engine::CallbackSigner;
use spokehub::hub::{HubRunId, SpokeStatus};
use spokehub::report::RunReport;

/// GitHub's own `repository_dispatch` example, re-aimed at this world's hub repository.
fn dispatch_payload(installation: u64, hub_repo: &str, client_payload: Value) -> Value {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/webhooks/repository_dispatch/payload.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let (owner, name) = hub_repo.split_once('/').unwrap();
    body["action"] = json!("spoke_complete");
    body["installation"]["id"] = json!(installation);
    body["repository"]["full_name"] = json!(hub_repo);
    body["repository"]["name"] = json!(name);
    body["repository"]["owner"]["login"] = json!(owner);
    body["client_payload"] = client_payload;
    body
}

fn callback(run: &HubRunId, repo: &str, status: &str, token: &str) -> Value {
    json!({
        "hub_run_id": run.to_string(), "repo": repo, "status": status,
        "run_id": 999_999, "run_attempt": 1, "run_url": "https://example.invalid/run",
        "callback_token": token,
    })
}

fn statuses(report: &RunReport) -> Vec<(String, SpokeStatus, u32)> {
    report
        .spokes
        .iter()
        .map(|s| (s.repo.to_string(), s.status, s.conflicts))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_callbacks_are_rejected_and_change_nothing() {
    forged_callbacks_are_rejected_and_change_nothing_on(
        World::start(&scenario(4, ""), FAST_HUB).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_callbacks_are_rejected_and_change_nothing_on_postgres() {
    if let Some(world) = World::start_postgres(&scenario(4, ""), FAST_HUB).await {
        forged_callbacks_are_rejected_and_change_nothing_on(world).await;
    }
}

async fn forged_callbacks_are_rejected_and_change_nothing_on(world: World) {
    let report = world.run_to_completion(json!({"task": "t"})).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));
    let before = statuses(&report);
    let run = report.run.id;
    let inst = world.emulator.installation_id;
    let hub = world.emulator.hub_repo.clone();
    let target = "acme/svc-0001";
    let now = chrono::Utc::now().timestamp();
    let forged_token = CallbackSigner::new(b"an attacker's key, not the hub's!").issue(
        &run,
        &target.parse().unwrap(),
        1,
        now,
        now + 600,
    );
    let forgeries = [
        (
            "wrong token",
            dispatch_payload(inst, &hub, callback(&run, target, "failure", &forged_token)),
        ),
        (
            "no token",
            dispatch_payload(inst, &hub, callback(&run, target, "failure", "")),
        ),
        (
            "unknown run",
            dispatch_payload(
                inst,
                &hub,
                callback(&HubRunId::new_random(), target, "failure", &forged_token),
            ),
        ),
        (
            "repository not in the run",
            dispatch_payload(
                inst,
                &hub,
                callback(&run, "acme/elsewhere", "failure", &forged_token),
            ),
        ),
        (
            "other installation",
            dispatch_payload(
                inst + 1,
                &hub,
                callback(&run, target, "failure", &forged_token),
            ),
        ),
        (
            "other hub repository",
            dispatch_payload(
                inst,
                "acme/svc-0002",
                callback(&run, target, "failure", &forged_token),
            ),
        ),
    ];
    let rejected_before = world.hub.engine.metrics().snapshot().callbacks_rejected;
    let mut completions = 0;
    for (i, (what, body)) in forgeries.iter().enumerate() {
        let resp = world
            .send_webhook("repository_dispatch", &format!("forged-{i}"), body)
            .await;
        assert_eq!(
            resp.status(),
            202,
            "{what}: intake accepts a well-signed delivery"
        );
        completions += 1;
    }
    // Wait until the processor has handled every forged delivery.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while world.hub.engine.metrics().snapshot().callbacks_rejected < rejected_before + completions {
        assert!(
            std::time::Instant::now() < deadline,
            "forgeries not all rejected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        world
            .hub
            .engine
            .store()
            .count_events("callback_rejected")
            .await
            .unwrap(),
        completions as i64
    );
    let after = world.report(&run).await;
    assert_eq!(
        statuses(&after),
        before,
        "a forged callback changed the run"
    );
    assert_eq!(after.run.conclusion.as_deref(), Some("success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_sent_twice_is_processed_once() {
    a_delivery_sent_twice_is_processed_once_on(World::start(&scenario(1, ""), FAST_HUB).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_sent_twice_is_processed_once_on_postgres() {
    if let Some(world) = World::start_postgres(&scenario(1, ""), FAST_HUB).await {
        a_delivery_sent_twice_is_processed_once_on(world).await;
    }
}

async fn a_delivery_sent_twice_is_processed_once_on(world: World) {
    let inputs = json!({"task": "twice"});
    let mut payload: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/webhooks/workflow_dispatch/payload.json"),
        )
        .unwrap(),
    )
    .unwrap();
    payload["inputs"] = inputs;
    payload["workflow"] = json!(".github/workflows/spokehub-hub.yml");
    payload["ref"] = json!("main");
    payload["installation"] = json!({"id": world.emulator.installation_id, "node_id": "x"});
    payload["repository"]["full_name"] = json!(world.emulator.hub_repo);
    payload["repository"]["name"] = json!("platform-hub");
    payload["repository"]["owner"]["login"] = json!("acme");
    payload["repository"]["default_branch"] = json!("main");
    let mut completions = world.hub.engine.subscribe_completions();
    let first = world
        .send_webhook("workflow_dispatch", "dup-1", &payload)
        .await;
    let second = world
        .send_webhook("workflow_dispatch", "dup-1", &payload)
        .await;
    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 202);
    assert!(second.text().await.unwrap().contains("duplicate"));
    let id = common::next_completion(&mut completions).await;
    let report = world.report(&id).await;
    assert_eq!(report.totals.succeeded, 1);
    assert_eq!(
        world.spoke_runs().await.len(),
        1,
        "the duplicate started a second run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_records_nothing() {
    let world = World::start(&scenario(1, ""), FAST_HUB).await;
    let url = format!("{}/webhook", world.hub_url());
    let body = br#"{"action":"spoke_complete"}"#.to_vec();
    let count = || async { world.hub.engine.store().count_deliveries().await.unwrap() };

    let unsigned = world
        .http
        .post(&url)
        .header("x-github-event", "repository_dispatch")
        .header("x-github-delivery", "a")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let badly_signed = world
        .http
        .post(&url)
        .header("x-github-event", "repository_dispatch")
        .header("x-github-delivery", "b")
        .header("x-hub-signature-256", sign("not the secret", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(badly_signed.status(), 401);

    let malformed = b"{not json".to_vec();
    let resp = world
        .http
        .post(&url)
        .header("x-github-event", "repository_dispatch")
        .header("x-github-delivery", "c")
        .header(
            "x-hub-signature-256",
            sign(&world.emulator.webhook_secret, &malformed),
        )
        .body(malformed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert_eq!(text.matches("malformed").count(), 1, "{text}");

    let unknown = br#"{"anything": true}"#.to_vec();
    let resp = world
        .http
        .post(&url)
        .header("x-github-event", "star")
        .header("x-github-delivery", "d")
        .header(
            "x-hub-signature-256",
            sign(&world.emulator.webhook_secret, &unknown),
        )
        .body(unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // Over GitHub's 25 MB: refused from the declared length, before any of the body is read.
    let status = common::raw_status(
        world.hub.addr,
        &format!(
            "POST /webhook HTTP/1.1\r\nhost: hub\r\nx-github-event: repository_dispatch\r\n\
             x-github-delivery: e\r\nx-hub-signature-256: sha256={}\r\n\
             content-length: {}\r\n\r\n",
            "0".repeat(64),
            25 * 1024 * 1024 + 1
        ),
    )
    .await;
    assert_eq!(status, 413);

    assert_eq!(
        count().await,
        0,
        "a refused or ignored delivery was recorded"
    );
}

fn fixture(path: &str) -> Value {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/webhooks")
        .join(path);
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// GitHub's own `workflow_run` example, re-aimed at a spoke repository.
fn workflow_run_payload(installation: u64, repo: &str, run: Value) -> Value {
    let mut body = fixture("workflow_run/completed.payload.json");
    let (owner, name) = repo.split_once('/').unwrap();
    body["installation"] = json!({"id": installation, "node_id": "x"});
    body["repository"]["full_name"] = json!(repo);
    body["repository"]["name"] = json!(name);
    body["repository"]["owner"]["login"] = json!(owner);
    for (k, v) in run.as_object().unwrap() {
        body["workflow_run"][k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reports_while_spokes_run_change_nothing() {
    let world = World::start(
        &scenario(3, "").replace("duration_ms = [5, 40]", "duration_ms = [1500, 1500]"),
        FAST_HUB,
    )
    .await;
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "t"})).await;
    // Wait until every spoke runs; take a genuine callback token from a dispatch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runs = loop {
        let runs = world.spoke_runs().await;
        if runs.len() == 3 && runs.iter().all(|r| r["status"] == "in_progress") {
            break runs;
        }
        assert!(std::time::Instant::now() < deadline, "spokes never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let run_id: HubRunId = world.latest_run().await;
    let genuine = runs.iter().find(|r| r["repo"] == "acme/svc-0001").unwrap();
    let token = genuine["inputs"]["callback_token"].as_str().unwrap();
    let inst = world.emulator.installation_id;
    let hub = world.emulator.hub_repo.clone();
    let rejected_before = world.hub.engine.metrics().snapshot().callbacks_rejected;
    let forged_callbacks = [
        // A genuine token for one repository, used for another.
        dispatch_payload(
            inst,
            &hub,
            callback(&run_id, "acme/svc-0002", "failure", token),
        ),
        // A genuine token, through another installation or to another repository.
        dispatch_payload(
            inst + 1,
            &hub,
            callback(&run_id, "acme/svc-0001", "failure", token),
        ),
        dispatch_payload(
            inst,
            "acme/svc-0003",
            callback(&run_id, "acme/svc-0001", "failure", token),
        ),
    ];
    for (i, body) in forged_callbacks.iter().enumerate() {
        let resp = world
            .send_webhook("repository_dispatch", &format!("fc-{i}"), body)
            .await;
        assert_eq!(resp.status(), 202);
    }
    let title = format!("spokehub t [{run_id}#1]");
    let forged_runs = [
        // Another workflow of the spoke repository, whose title anyone who can push controls.
        json!({"id": 1, "display_title": title, "event": "push", "path": ".github/workflows/ci.yml",
               "status": "completed", "conclusion": "failure"}),
        // The spoke workflow, but not the run the dispatch created.
        json!({"id": 2, "display_title": title, "event": "workflow_dispatch",
               "path": ".github/workflows/spokehub-spoke.yml", "status": "completed",
               "conclusion": "failure"}),
    ];
    let processed_before = world.hub.engine.metrics().snapshot().deliveries_processed;
    for (i, run) in forged_runs.iter().enumerate() {
        let body = workflow_run_payload(inst, "acme/svc-0001", run.clone());
        let resp = world
            .send_webhook("workflow_run", &format!("fr-{i}"), &body)
            .await;
        assert_eq!(resp.status(), 202);
    }
    let report = world.report(&run_id).await;
    let id = common::next_completion(&mut completions).await;
    assert_eq!(id, run_id);
    let after = world.report(&run_id).await;
    assert!(
        world.hub.engine.metrics().snapshot().callbacks_rejected >= rejected_before + 3,
        "every forged callback was rejected"
    );
    assert!(world.hub.engine.metrics().snapshot().deliveries_processed > processed_before + 1);
    assert_eq!(
        after.totals.succeeded, 3,
        "{:?} then {:?}",
        report.totals, after.totals
    );
    assert_eq!(after.run.conclusion.as_deref(), Some("success"));
    assert!(
        after.spokes.iter().all(|s| s.conflicts == 0),
        "a forged report was believed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_removed_under_the_hub_fails_health_and_intake() {
    let world = World::start(&scenario(1, ""), FAST_HUB).await;
    assert_eq!(world.health().await, 200);
    let body = dispatch_payload(
        world.emulator.installation_id,
        &world.emulator.hub_repo,
        json!({"hub_run_id": "x"}),
    );
    let before = world
        .send_webhook("repository_dispatch", "before", &body)
        .await;
    assert_eq!(before.status(), 202);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(world.dir.path().join(format!("hub.db{suffix}")));
    }
    assert_eq!(world.health().await, 503);
    let after = world
        .send_webhook("repository_dispatch", "after", &body)
        .await;
    assert_eq!(
        after.status(),
        503,
        "a delivery was acknowledged into a removed file"
    );
    // A file put in its place is not the hub's database either.
    std::fs::write(world.dir.path().join("hub.db"), b"").unwrap();
    assert_eq!(world.health().await, 503);
    let again = world
        .send_webhook("repository_dispatch", "again", &body)
        .await;
    assert_eq!(again.status(), 503);
}

/// The Postgres counterpart: a database that stops taking writes (here: made read-only, as a
/// demoted primary would be) fails `/healthz` and intake answers 503, never 202; once it takes
/// writes again both recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_that_refuses_writes_fails_health_and_intake_until_it_recovers() {
    let Some(world) = World::start_postgres(&scenario(1, ""), FAST_HUB).await else {
        return;
    };
    assert_eq!(world.health().await, 200);
    let body = dispatch_payload(
        world.emulator.installation_id,
        &world.emulator.hub_repo,
        json!({"hub_run_id": "x"}),
    );
    let before = world
        .send_webhook("repository_dispatch", "before", &body)
        .await;
    assert_eq!(before.status(), 202);
    let (admin, name) = world.database_url.rsplit_once('/').unwrap();
    let set_read_only = |on: bool| {
        let (admin, name) = (format!("{admin}/postgres"), name.to_owned());
        async move {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            let verb = if on {
                "SET default_transaction_read_only = on"
            } else {
                "RESET default_transaction_read_only"
            };
            sqlx::query(&format!("ALTER DATABASE {name} {verb}"))
                .execute(&mut c)
                .await
                .unwrap();
            // Sessions keep what they started with: end them, so the hub reconnects.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut c)
            .await
            .unwrap();
        }
    };
    // `/healthz` probes with a write at most once a second: wait for the verdict to change.
    let health_becomes = |want: u16| {
        let world = &world;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while world.health().await != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "/healthz never answered {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    set_read_only(true).await;
    // Whether the probe meets a dropped connection or the read-only refusal, it is 503.
    health_becomes(503).await;
    let after = world
        .send_webhook("repository_dispatch", "after", &body)
        .await;
    assert_eq!(
        after.status(),
        503,
        "a delivery was acknowledged into a database that refuses writes"
    );
    set_read_only(false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let again = world
            .send_webhook("repository_dispatch", "after", &body)
            .await;
        if again.status() == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "intake never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    health_becomes(200).await;
    assert_eq!(
        world.hub.engine.store().count_deliveries().await.unwrap(),
        2
    );
}
