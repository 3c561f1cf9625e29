//! The hybrid model end to end: the hub queues a run's spokes and dispatches the worker
//! workflow once; the emulator runs its matrix jobs as real processes (the template's own
//! bash/curl/jq step) with their OIDC ID tokens; a share of them is SIGKILLed mid-item; the run
//! ends with the exact summary table, a handful of content-creating requests, and the killed
//! items retried as new attempts. And every forged worker is refused and claims nothing.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::World;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use spokehub::hub::{HubRunId, SpokeStatus};

fn hybrid_scenario(repos: usize, kill_share: f64) -> String {
    format!(
        r#"
[org]
login = "acme"
repos = {repos}
hub_repo = "platform-hub"

[[org.repo]]
name = "zz-broken-one"
conclusion = "failure"
summary = "**cannot bump**: lockfile conflict"
[[org.repo]]
name = "zz-broken-two"
conclusion = "failure"

[spoke]
duration_ms = [40, 90]
seed = 7

[workers]
kill_share = {kill_share}
"#
    )
}

const HYBRID_HUB: &str = r#"
[server]
public_url = "http://127.0.0.1:9"
[policy]
unknown_search_delay = "200ms"
[tasks.bump]
mode = "hybrid"
permissions = { contents = "write" }
[tasks.bump.policy]
workers = 6
work_lease = "2s"
retry = { limit = 1, backoff = "100ms" }
[tasks.other]
mode = "hybrid"
"#;

/// A world whose hub's public URL is its real address (the workers' audience).
async fn start(scenario: &str, hub_toml: &str) -> World {
    World::start_full(None, scenario, hub_toml, |c, _, addr| {
        c.public_url = Some(format!("http://{addr}").parse().unwrap());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_run_is_one_dispatch_and_its_workers_survive_losing_some_jobs() {
    // 58 generated repositories and the two broken ones.
    let world = start(&hybrid_scenario(58, 0.33), HYBRID_HUB).await;
    world.press_run_workflow(json!({"task": "bump"})).await;
    let id = world.latest_run_wait().await;
    let report = world.wait_completed(&id, Duration::from_secs(90)).await;
    assert_eq!(report.spokes.len(), 60);
    assert_eq!(
        (report.totals.succeeded, report.totals.failed),
        (58, 2),
        "{:?}",
        report.totals
    );
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    let broken = report
        .spokes
        .iter()
        .find(|s| s.repo.name() == "zz-broken-one")
        .unwrap();
    assert_eq!(broken.status, SpokeStatus::Failed);
    assert_eq!(broken.attempt, 2, "a failed item is retried by policy");
    assert_eq!(
        broken.summary.as_deref().map(str::trim),
        Some("**cannot bump**: lockfile conflict")
    );
    // Two of six jobs were killed in the middle of their first item: those items came back
    // as new attempts when their leases ran out, and other jobs finished them.
    let retried: Vec<_> = report
        .spokes
        .iter()
        .filter(|s| s.status == SpokeStatus::Succeeded && s.attempt == 2)
        .map(|s| s.repo.to_string())
        .collect();
    assert_eq!(retried.len(), 2, "the killed jobs' items: {retried:?}");
    let expired = world.hub.engine.store().events("transition").await.unwrap();
    assert!(
        expired.iter().any(|(_, d)| d.contains("lease ran out")),
        "the killed items ended by their leases"
    );
    // GitHub saw one dispatch (the worker workflow) and one check run, not sixty dispatches.
    let state = world.state().await;
    let created = state["content_creating_requests"].as_u64().unwrap();
    assert!(created <= 3, "{created} content-creating requests");
    let (dispatches, _) = world
        .hub
        .engine
        .store()
        .worker_dispatches(&id)
        .await
        .unwrap();
    assert_eq!(dispatches, 1);
    // The check run's table is the one a push run shows.
    let check = world.check_run(&report).await;
    let text = format!("{}{}", check["output"]["summary"], check["output"]["text"]);
    assert!(
        text.contains("zz-broken-one") && text.contains("zz-broken-two"),
        "{text}"
    );
}

/// A job's ID token from the emulator's issuer.
async fn id_token(world: &World, job: Value, aud: &str) -> String {
    let base = &world.emulator.base_url;
    let grant: Value = world
        .http
        .post(format!("{base}/_emulator/oidc/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = grant["ACTIONS_ID_TOKEN_REQUEST_URL"].as_str().unwrap();
    let bearer = grant["ACTIONS_ID_TOKEN_REQUEST_TOKEN"].as_str().unwrap();
    let v: Value = world
        .http
        .get(format!("{url}&audience={aud}"))
        .header("authorization", format!("bearer {bearer}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["value"].as_str().unwrap().to_owned()
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

async fn claim(world: &World, token: &str) -> (StatusCode, Value) {
    let resp = world
        .http
        .post(format!("{}/api/v1/work/claim", world.hub_url()))
        .bearer_auth(token)
        .json(&json!({"max": 50}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn queued_run(world: &World, task: &str) -> HubRunId {
    let before = world.hub.engine.store().latest_run_id().await.unwrap();
    world.press_run_workflow(json!({"task": task})).await;
    for _ in 0..400 {
        if let Some(id) = world.hub.engine.store().latest_run_id().await.unwrap() {
            if Some(id) != before {
                let r = world.report(&id).await;
                if !r.spokes.is_empty()
                    && r.spokes.iter().all(|s| s.status == SpokeStatus::Dispatched)
                {
                    return id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the {task} run's items were not queued");
}

#[tokio::test]
async fn forged_workers_are_refused_and_claim_nothing() {
    // The hub dispatches a worker workflow the hub repository does not have: no job claims
    // anything but the tokens below.
    let hub_toml = format!("{HYBRID_HUB}\n[hub]\nworker_workflow = \"absent-workers.yml\"\n");
    let world = start(&hybrid_scenario(3, 0.0), &hub_toml).await;
    let aud = world.hub_url();
    let a = queued_run(&world, "bump").await;
    let b = queued_run(&world, "other").await;
    let store = world.hub.engine.store();
    store.add_worker_run(&a, 4242).await.unwrap();
    store.add_worker_run(&b, 4343).await.unwrap();
    let workflow = ".github/workflows/absent-workers.yml";
    let job = |repo: &str, path: &str, run: u64| json!({"repository": repo, "workflow_path": path, "run_id": run});
    let genuine = id_token(&world, job("acme/platform-hub", workflow, 4242), &aud).await;

    // Signed by another key, with the issuer's kid and the genuine claims.
    let other_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = other_key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = part(&genuine, 0)["kid"].as_str().map(str::to_owned);
    let other_signed = jsonwebtoken::encode(
        &header,
        &part(&genuine, 1),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        genuine.split('.').nth(1).unwrap()
    );
    let mut expired_job = job("acme/platform-hub", workflow, 4242);
    expired_job["token_ttl_s"] = json!(-600);
    let forged: Vec<(&str, Option<String>, StatusCode)> = vec![
        ("no token", None, StatusCode::UNAUTHORIZED),
        ("another key", Some(other_signed), StatusCode::UNAUTHORIZED),
        ("alg none", Some(unsigned), StatusCode::UNAUTHORIZED),
        (
            "wrong audience",
            Some(
                id_token(
                    &world,
                    job("acme/platform-hub", workflow, 4242),
                    "https://evil.example",
                )
                .await,
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            Some(id_token(&world, expired_job, &aud).await),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another repository",
            Some(id_token(&world, job("acme/svc-0001", workflow, 4242), &aud).await),
            StatusCode::FORBIDDEN,
        ),
        (
            "another workflow",
            Some(
                id_token(
                    &world,
                    job("acme/platform-hub", ".github/workflows/other.yml", 4242),
                    &aud,
                )
                .await,
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "a run the hub did not start",
            Some(id_token(&world, job("acme/platform-hub", workflow, 9999), &aud).await),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, token, expected) in &forged {
        let req = world
            .http
            .post(format!("{}/api/v1/work/claim", world.hub_url()))
            .json(&json!({"max": 50}));
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, *expected, "{what}: {body}");
    }
    for run in [&a, &b] {
        let r = world.report(run).await;
        assert!(
            r.spokes
                .iter()
                .all(|s| s.status == SpokeStatus::Dispatched && s.lease.is_none()),
            "a forged worker claimed something of {run}"
        );
    }
    // A genuine token of another hub run's worker gets that run's items only.
    let of_b = id_token(&world, job("acme/platform-hub", workflow, 4343), &aud).await;
    let (status, body) = claim(&world, &of_b).await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["hub_run_id"] == b.to_string()));
    let r = world.report(&a).await;
    assert!(
        r.spokes.iter().all(|s| s.lease.is_none()),
        "nothing of run {a} was claimed"
    );
    // And the genuine worker of run A gets A's, each with a token for its repository only.
    let (status, body) = claim(&world, &genuine).await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items
        .iter()
        .all(|i| i["hub_run_id"] == a.to_string() && i["token"].is_string()));
    // Once its run is over, a worker is told to stop.
    world
        .http
        .post(format!("{}/api/v1/runs/{a}/cancel", world.hub_url()))
        .bearer_auth("test-api-token")
        .send()
        .await
        .unwrap();
    world.wait_completed(&a, Duration::from_secs(30)).await;
    let (status, _) = claim(&world, &genuine).await;
    assert_eq!(status, StatusCode::GONE);
}
