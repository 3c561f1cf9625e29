//! The work API of pulled work, over HTTP against a real hub and the emulator: agents claim
//! queued spokes under leases, heartbeat and complete them; forged claims claim nothing; a
//! lease that runs out returns its spoke as a new attempt and a late result changes nothing;
//! the token handed out with an item reaches that repository only.

mod common;

use std::time::Duration;

use common::{scenario, World};
use reqwest::StatusCode;
use serde_json::{json, Value};
use spokehub::hub::{HubRunId, SpokeStatus};
use spokehub::work::agents;

const PULL_HUB: &str = r#"
[policy]
unknown_search_delay = "200ms"
[policy.retry]
limit = 0
[tasks.scan]
mode = "pull"
permissions = { contents = "read" }
[tasks.flaky]
mode = "pull"
[tasks.flaky.policy]
work_lease = "1s"
retry = { limit = 1, backoff = "100ms" }
"#;

async fn add_agent(world: &World, name: &str) -> String {
    let (token, hash) = agents::new_token();
    assert!(world
        .hub
        .engine
        .store()
        .add_agent(name, &hash)
        .await
        .unwrap());
    token
}

async fn post(world: &World, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = world
        .http
        .post(format!("{}{path}", world.hub_url()))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn claim(world: &World, token: &str, max: usize, wait_s: u64) -> Vec<Value> {
    let resp = post(
        world,
        "/api/v1/work/claim",
        Some(token),
        json!({"worker": "w1", "max": max, "wait_s": wait_s}),
    )
    .await;
    match resp.status() {
        StatusCode::NO_CONTENT => Vec::new(),
        StatusCode::OK => resp.json::<Value>().await.unwrap()["items"]
            .as_array()
            .unwrap()
            .clone(),
        s => panic!("claim answered {s}: {}", resp.text().await.unwrap()),
    }
}

/// Claims until `n` items are in hand (each claim waits for work to be queued).
async fn claim_n(world: &World, token: &str, n: usize) -> Vec<Value> {
    let mut items = Vec::new();
    while items.len() < n {
        let got = claim(world, token, n - items.len(), 10).await;
        assert!(!got.is_empty(), "work was queued within 10 s");
        items.extend(got);
    }
    items
}

async fn complete(world: &World, token: &str, item: &Value, status: &str) -> StatusCode {
    let path = format!(
        "/api/v1/work/{}/complete",
        item["lease_id"].as_str().unwrap()
    );
    post(world, &path, Some(token), json!({"status": status, "summary": format!("**{status}** on {}", item["target"].as_str().unwrap())}))
        .await
        .status()
}

#[tokio::test]
async fn agents_claim_heartbeat_and_complete_a_pull_run() {
    let world = World::start(&scenario(4, ""), PULL_HUB).await;
    let token = add_agent(&world, "pool-1").await;
    // A long poll that starts before there is any work returns when the run queues some.
    let early = {
        let (http, url, token) = (world.http.clone(), world.hub_url(), token.clone());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/api/v1/work/claim"))
                .bearer_auth(token)
                .json(&json!({"max": 1, "wait_s": 30}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.ok())
        })
    };
    world.press_run_workflow(json!({"task": "scan"})).await;
    let (status, body) = early.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the waiting claim got work");
    let first = body.unwrap()["items"][0].clone();
    let id: HubRunId = first["hub_run_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(first["task"], "scan");
    assert_eq!(first["attempt"], 1);
    let mut items = vec![first];
    items.extend(claim_n(&world, &token, 3).await);
    let mut targets: Vec<&str> = items
        .iter()
        .map(|i| i["target"].as_str().unwrap())
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 4, "four different spokes: {targets:?}");
    assert!(
        claim(&world, &token, 5, 0).await.is_empty(),
        "nothing else is queued"
    );
    // While held, every spoke is running under its lease.
    let report = world.report(&id).await;
    assert!(report
        .spokes
        .iter()
        .all(|s| s.status == SpokeStatus::Running));

    // The token of an item reaches its repository, not another one.
    let item_token = items[0]["token"]
        .as_str()
        .expect("a repository item has a token");
    let own = items[0]["target"].as_str().unwrap();
    let other = items[1]["target"].as_str().unwrap();
    let get = |repo: String| {
        world
            .http
            .get(format!("{}/repos/{repo}", world.emulator.base_url))
            .bearer_auth(item_token)
            .send()
    };
    assert_eq!(get(own.to_owned()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(other.to_owned()).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // A heartbeat extends the lease; one of a lease that is not held is a conflict.
    let hb = |lease: &str| format!("/api/v1/work/{lease}/heartbeat");
    let lease0 = items[0]["lease_id"].as_str().unwrap();
    let resp = post(&world, &hb(lease0), Some(&token), json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.json::<Value>().await.unwrap()["lease_expires_at"].is_string());
    let made_up = format!("{id}.{}", "0".repeat(32));
    assert_eq!(
        post(&world, &hb(&made_up), Some(&token), json!({}))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    // Another agent cannot act on this agent's lease.
    let other_agent = add_agent(&world, "pool-2").await;
    assert_eq!(
        post(&world, &hb(lease0), Some(&other_agent), json!({}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Bad results are refused and change nothing.
    let path = format!("/api/v1/work/{lease0}/complete");
    for bad in [
        json!({"status": "great"}),
        json!({"summary": "x"}),
        json!([1]),
    ] {
        assert_eq!(
            post(&world, &path, Some(&token), bad).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        complete(&world, &token, &items[0], "success").await,
        StatusCode::OK
    );
    assert_eq!(
        complete(&world, &token, &items[0], "failure").await,
        StatusCode::CONFLICT,
        "a lease completes once"
    );
    for item in &items[1..3] {
        assert_eq!(
            complete(&world, &token, item, "success").await,
            StatusCode::OK
        );
    }
    assert_eq!(
        complete(&world, &token, &items[3], "failure").await,
        StatusCode::OK
    );
    let report = world.wait_completed(&id, Duration::from_secs(30)).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    assert_eq!((report.totals.succeeded, report.totals.failed), (3, 1));
    let failed = report
        .spokes
        .iter()
        .find(|s| s.status == SpokeStatus::Failed)
        .unwrap();
    assert_eq!(failed.repo.as_str(), items[3]["target"].as_str().unwrap());
    assert_eq!(
        failed.summary.as_deref(),
        Some(&*format!("**failure** on {}", failed.repo))
    );
    // The check run shows the table, as for pushed spokes.
    let check = world.check_run(&report).await;
    let text = check["output"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
        + check["output"]["summary"].as_str().unwrap_or_default();
    assert!(text.contains(failed.repo.as_str()), "{text}");
}

#[tokio::test]
async fn forged_claims_are_refused_and_claim_nothing() {
    let world = World::start(&scenario(2, ""), PULL_HUB).await;
    let token = add_agent(&world, "pool-1").await;
    let revoked = add_agent(&world, "gone").await;
    assert!(world.hub.engine.store().revoke_agent("gone").await.unwrap());
    world.press_run_workflow(json!({"task": "scan"})).await;
    let id = world.latest_run_wait().await;
    // Wait until the spokes are queued.
    for _ in 0..200 {
        let r = world.report(&id).await;
        if r.spokes.len() == 2 && r.spokes.iter().all(|s| s.status == SpokeStatus::Dispatched) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before = world.hub.engine.metrics().snapshot().work_refused;
    let forged = [
        None,
        Some(revoked.as_str()),
        Some("spkagent_not-a-real-token"),
        Some("ghs_an-installation-token"),
        Some(""),
    ];
    for t in forged {
        let resp = post(&world, "/api/v1/work/claim", t, json!({"max": 5})).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{t:?}");
        let text = resp.text().await.unwrap();
        if let Some(t) = t.filter(|t| !t.is_empty()) {
            assert!(!text.contains(t), "the refusal repeats the token");
        }
    }
    assert_eq!(
        world.hub.engine.metrics().snapshot().work_refused - before,
        forged.len() as u64,
        "every refusal is counted"
    );
    let r = world.report(&id).await;
    assert!(
        r.spokes
            .iter()
            .all(|s| s.status == SpokeStatus::Dispatched && s.lease.is_none()),
        "nothing was claimed"
    );
    assert_eq!(
        claim(&world, &token, 5, 0).await.len(),
        2,
        "the real agent gets both"
    );
    // An absurd claim is a bad request, not a claim of everything.
    let resp = post(
        &world,
        "/api/v1/work/claim",
        Some(&token),
        json!({"max": 100000}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_lease_that_runs_out_returns_the_spoke_as_a_new_attempt_and_a_late_result_is_stale() {
    let world = World::start(&scenario(1, ""), PULL_HUB).await;
    let token = add_agent(&world, "pool-1").await;
    world.press_run_workflow(json!({"task": "flaky"})).await;
    let first = claim_n(&world, &token, 1).await.remove(0);
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["lease_s"], 1);
    // No heartbeat: the lease runs out, the attempt fails, and the retry is queued.
    let second = claim_n(&world, &token, 1).await.remove(0);
    assert_eq!(second["target"], first["target"]);
    assert_eq!(second["attempt"], 2, "a new attempt");
    assert_ne!(second["lease_id"], first["lease_id"]);
    let id: HubRunId = first["hub_run_id"].as_str().unwrap().parse().unwrap();
    let stale_before = world
        .hub
        .engine
        .store()
        .count_events("stale")
        .await
        .unwrap();
    // The first worker's late result changes nothing and is recorded.
    assert_eq!(
        complete(&world, &token, &first, "success").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        world
            .hub
            .engine
            .store()
            .count_events("stale")
            .await
            .unwrap(),
        stale_before + 1
    );
    let spoke = world.report(&id).await.spokes.remove(0);
    assert_eq!((spoke.status, spoke.attempt), (SpokeStatus::Running, 2));
    // The live lease holder completes it.
    assert_eq!(
        complete(&world, &token, &second, "success").await,
        StatusCode::OK
    );
    let report = world.wait_completed(&id, Duration::from_secs(30)).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("success"));
    assert_eq!(report.spokes[0].attempt, 2);
}

#[tokio::test]
async fn a_cancelled_run_takes_its_leases_back() {
    let world = World::start(&scenario(2, ""), PULL_HUB).await;
    let token = add_agent(&world, "pool-1").await;
    world.press_run_workflow(json!({"task": "scan"})).await;
    let items = claim_n(&world, &token, 2).await;
    let id: HubRunId = items[0]["hub_run_id"].as_str().unwrap().parse().unwrap();
    let resp = world
        .http
        .post(format!("{}/api/v1/runs/{id}/cancel", world.hub_url()))
        .bearer_auth("test-api-token")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let report = world.wait_completed(&id, Duration::from_secs(30)).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("cancelled"));
    let lease = items[0]["lease_id"].as_str().unwrap();
    let resp = post(
        &world,
        &format!("/api/v1/work/{lease}/heartbeat"),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "the worker learns to stop"
    );
    assert_eq!(
        complete(&world, &token, &items[1], "success").await,
        StatusCode::CONFLICT
    );
    let report = world.report(&id).await;
    assert!(report
        .spokes
        .iter()
        .all(|s| s.status == SpokeStatus::Cancelled));
}
