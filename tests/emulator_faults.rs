//! Every `[faults]` knob, and the failed-delivery paths, shown by its effect.

mod emulator_support;

use std::time::{Duration, Instant};

use emulator_support::{scenario, start, start_with_status, Env};
use serde_json::{json, Value};

async fn dispatch(env: &Env, token: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url("/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml/dispatches"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn spoke(details: bool) -> Value {
    json!({"ref": "main", "inputs": Env::spoke_inputs("f", 1), "return_run_details": details})
}

#[tokio::test]
async fn api_error_rate_fails_before_the_request_takes_effect() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[faults]\napi_error_rate = 1.0\n",
    ))
    .await;
    // Token minting is an API route too: mint it before... it fails as well.
    let r = env
        .http
        .post(env.url(&format!(
            "/app/installations/{}/access_tokens",
            env.emu.installation_id
        )))
        .bearer_auth(env.jwt())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error());
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].is_string() && v["documentation_url"].is_string());
    // /_emulator is never faulted; the hub dispatch console still works.
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(&json!({"inputs": {"task": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = env.summary().await;
    assert_eq!(s["tokens_minted"], 0);
    assert_eq!(s["api_errors_injected"], 1);
    env.emu.shutdown().await;
}

/// Mints a token on an emulator whose answers may fail: retries until one answer arrives.
async fn token_despite_faults(env: &Env) -> String {
    for _ in 0..60 {
        let r = env
            .http
            .post(env.url(&format!(
                "/app/installations/{}/access_tokens",
                env.emu.installation_id
            )))
            .bearer_auth(env.jwt())
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            return r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(r.status().is_server_error());
    }
    panic!("no token after 60 attempts at a 50% fault rate");
}

/// Dispatches until one answer is a 5xx; returns (dispatches sent, 204s received).
async fn dispatch_until_5xx(env: &Env, token: &str) -> (u64, u64) {
    let (mut sent, mut ok) = (0, 0);
    for _ in 0..60 {
        sent += 1;
        let r = dispatch(env, token, spoke(false)).await;
        if r.status().is_server_error() {
            let v: Value = r.json().await.unwrap();
            assert!(v["message"].is_string() && v["documentation_url"].is_string());
            return (sent, ok);
        }
        assert_eq!(r.status(), 204);
        ok += 1;
    }
    panic!("no 5xx after 60 attempts at a 50% fault rate");
}

#[tokio::test]
async fn api_errors_do_not_take_effect() {
    let env = start(scenario("[org]\nrepos = 1\n[spoke]\nseed = 3\nduration_ms = [60000, 60000]\n[faults]\napi_error_rate = 0.5\n")).await;
    let t = token_despite_faults(&env).await;
    let (_, ok) = dispatch_until_5xx(&env, &t).await;
    assert_eq!(env.summary().await["workflow_runs_created"], ok);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn lost_responses_take_effect_but_answer_502() {
    let env = start(scenario("[org]\nrepos = 1\n[spoke]\nseed = 3\nduration_ms = [60000, 60000]\n[faults]\nlost_response_rate = 0.5\n")).await;
    let t = token_despite_faults(&env).await;
    let (sent, ok) = dispatch_until_5xx(&env, &t).await;
    let s = env.summary().await;
    assert_eq!(
        s["workflow_runs_created"], sent,
        "the lost dispatch created its run too"
    );
    assert_eq!(sent, ok + 1);
    assert!(s["lost_responses"].as_u64().unwrap() >= 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn secondary_limit_blocks_content_creation_and_counts_violations() {
    let env = start(scenario("[org]\nrepos = 1\n[spoke]\nduration_ms = [60000, 60000]\n[faults]\nsecondary_limit_per_minute = 3\n")).await;
    let t = env.token().await;
    for _ in 0..3 {
        assert_eq!(dispatch(&env, &t, spoke(false)).await.status(), 204);
    }
    let r = dispatch(&env, &t, spoke(false)).await;
    assert_eq!(r.status(), 403);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let v: Value = r.json().await.unwrap();
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("You have exceeded a secondary rate limit"));
    // Coming back while told to wait is recorded, whatever the request.
    assert_eq!(dispatch(&env, &t, spoke(false)).await.status(), 403);
    let r = env
        .http
        .get(env.url("/repos/acme/svc-0001"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "reads are not content-creating");
    let s = env.summary().await;
    assert_eq!(s["workflow_runs_created"], 3);
    assert_eq!(s["rate_limit_violations"], 2);
    assert_eq!(s["secondary_limit_hits"], 2);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn primary_limit_answers_403_with_remaining_zero() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[faults]\nrate_limit_per_hour = 3\n",
    ))
    .await;
    let t = env.token().await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = env
            .http
            .get(env.url("/repos/acme/svc-0001"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        remaining.push(
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = env
        .http
        .get(env.url("/repos/acme/svc-0001"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    let reset: i64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > chrono::Utc::now().timestamp());
    let v: Value = r.json().await.unwrap();
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("API rate limit exceeded"));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn api_latency_delays_answers() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[faults]\napi_latency_ms = 150\n",
    ))
    .await;
    let started = Instant::now();
    let r = env
        .http
        .get(env.url("/app"))
        .bearer_auth(env.jwt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // The console is not delayed (no lower bound to show; it just answers).
    assert_eq!(
        env.http
            .get(env.url("/_emulator/state?summary=1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn ghes_3_20_refuses_return_run_details() {
    let env = start(scenario("[org]\nrepos = 1\n[faults]\nghes_3_20 = true\n")).await;
    let t = env.token().await;
    let r = dispatch(&env, &t, spoke(true)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("return_run_details"));
    let body = json!({"ref": "main", "inputs": Env::spoke_inputs("f", 1)});
    assert_eq!(dispatch(&env, &t, body).await.status(), 204);
    assert_eq!(env.summary().await["workflow_runs_created"], 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn dropped_webhooks_are_recorded_and_redeliverable_with_the_same_guid() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[faults]\nwebhook_drop_rate = 1.0\n",
    ))
    .await;
    let t = env.token().await;
    let r = env
        .http
        .post(env.url("/repos/acme/platform-hub/dispatches"))
        .bearer_auth(&t)
        .json(&json!({"event_type": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let st = env
        .wait_state("dropped", |s| s["webhooks_dropped"] == 1)
        .await;
    let d = &st["webhook_deliveries"][0];
    assert_eq!(d["status"], "dropped");
    assert!(env.hooks.all().is_empty());
    let id = d["id"].as_u64().unwrap();
    let r = env
        .http
        .post(env.url(&format!("/app/hook/deliveries/{id}/attempts")))
        .bearer_auth(env.jwt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hooks = env.hooks.wait_for("redelivery", |l| !l.is_empty()).await;
    assert_eq!(hooks[0].delivery, d["guid"].as_str().unwrap());
    assert_eq!(hooks[0].json["action"], "hello");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn duplicated_webhooks_arrive_twice_with_one_guid() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[faults]\nwebhook_duplicate_rate = 1.0\n",
    ))
    .await;
    let t = env.token().await;
    let r = env
        .http
        .post(env.url("/repos/acme/platform-hub/dispatches"))
        .bearer_auth(&t)
        .json(&json!({"event_type": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let hooks = env.hooks.wait_for("two copies", |l| l.len() == 2).await;
    assert_eq!(hooks[0].delivery, hooks[1].delivery);
    assert_eq!(hooks[0].body, hooks[1].body);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn webhook_delay_reorders_deliveries() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\nseed = 1\n[faults]\nwebhook_delay_ms = 300\n",
    ))
    .await;
    let t = env.token().await;
    for n in 0..20 {
        let r = env
            .http
            .post(env.url("/repos/acme/platform-hub/dispatches"))
            .bearer_auth(&t)
            .json(&json!({"event_type": "n", "client_payload": {"n": n}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let hooks = env.hooks.wait_for("20 hooks", |l| l.len() == 20).await;
    let order: Vec<i64> = hooks
        .iter()
        .map(|h| h.json["client_payload"]["n"].as_i64().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert_ne!(
        order, sorted,
        "20 deliveries with random delays arrived in order"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_recorded_not_retried() {
    let env = start_with_status(scenario("[org]\nrepos = 1\n"), 500).await;
    let t = env.token().await;
    let r = env
        .http
        .post(env.url("/repos/acme/platform-hub/dispatches"))
        .bearer_auth(&t)
        .json(&json!({"event_type": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let st = env
        .wait_state("delivered", |s| s["webhooks_sent"] == 1)
        .await;
    assert_eq!(st["webhook_deliveries"][0]["status_code"], 500);
    let r = env
        .http
        .get(env.url("/app/hook/deliveries?status=failure"))
        .bearer_auth(env.jwt())
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status_code"], 500);
    assert_eq!(env.hooks.all().len(), 1, "no automatic retry");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_shorter_secondary_window_frees_writes_once_it_has_passed() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\nduration_ms = [60000, 60000]\n[faults]\nsecondary_limit_per_minute = 2\nsecondary_window_ms = 300\n",
    ))
    .await;
    let t = env.token().await;
    for _ in 0..2 {
        assert_eq!(dispatch(&env, &t, spoke(false)).await.status(), 204);
    }
    let r = dispatch(&env, &t, spoke(false)).await;
    assert_eq!(r.status(), 403);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1, "a 300 ms window asks for the minimum wait");
    // Do as told: wait `retry-after`, then write again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(dispatch(&env, &t, spoke(false)).await.status(), 204);
    let s = env.summary().await;
    assert_eq!(s["workflow_runs_created"], 3);
    assert_eq!(s["rate_limit_violations"], 0);
    assert_eq!(s["secondary_limit_hits"], 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn stuck_runs_start_and_hang_until_cancelled() {
    let env = start(scenario(
        "[org]\nrepos = 2\n[spoke]\nduration_ms = [5, 5]\n[[org.repo]]\nname = \"svc-0001\"\nstuck = true\n",
    ))
    .await;
    let t = env.token().await;
    let r = dispatch(&env, &t, spoke(true)).await;
    let stuck_id = r.json::<Value>().await.unwrap()["workflow_run_id"]
        .as_u64()
        .unwrap();
    let run_status = |s: &Value, id: u64| {
        s["workflow_runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"].as_u64() == Some(id))
            .map(|r| r["status"].as_str().unwrap().to_owned())
    };
    env.wait_state("the stuck run to start", |s| {
        run_status(s, stuck_id).as_deref() == Some("in_progress")
    })
    .await;
    // A healthy run of the same length, started after it, completes; the stuck one does not.
    let r = env
        .http
        .post(env.url("/repos/acme/svc-0002/actions/workflows/spokehub-spoke.yml/dispatches"))
        .bearer_auth(&t)
        .json(&spoke(true))
        .send()
        .await
        .unwrap();
    let healthy_id = r.json::<Value>().await.unwrap()["workflow_run_id"]
        .as_u64()
        .unwrap();
    let s = env
        .wait_state("the healthy run to complete", |s| {
            run_status(s, healthy_id).as_deref() == Some("completed")
        })
        .await;
    assert_eq!(run_status(&s, stuck_id).as_deref(), Some("in_progress"));
    // Only a cancel ends it.
    let r = env
        .http
        .post(env.url(&format!(
            "/repos/acme/svc-0001/actions/runs/{stuck_id}/cancel"
        )))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = env.state().await;
    let run = s["workflow_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_u64() == Some(stuck_id))
        .unwrap();
    assert_eq!(run["conclusion"], "cancelled");
    env.emu.shutdown().await;
}

/// A receiver that counts deliveries and answers 200.
async fn counting_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, count)
}

#[tokio::test]
async fn several_webhook_urls_share_deliveries_round_robin_and_a_dead_one_fails_its_own() {
    let (a, a_count) = counting_receiver().await;
    let (b, b_count) = counting_receiver().await;
    // A replica that is down: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/webhook", l.local_addr().unwrap())
    };
    let emu = spokehub::emulator::Emulator::start_balanced(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario("[org]\nrepos = 1\n"),
        vec![a.clone(), b.clone(), dead.clone()],
        None,
    )
    .await
    .unwrap();
    let env = Env {
        emu,
        hooks: Default::default(),
        http: reqwest::Client::new(),
    };
    let t = env.token().await;
    for i in 0..6 {
        let r = env
            .http
            .post(env.url("/repos/acme/platform-hub/dispatches"))
            .bearer_auth(&t)
            .json(&json!({"event_type": format!("hello-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let st = env
        .wait_state("six deliveries", |s| s["webhooks_sent"] == 6)
        .await;
    let deliveries = st["webhook_deliveries"].as_array().unwrap();
    let to = |url: &str| {
        deliveries
            .iter()
            .filter(|d| d["url"] == url)
            .collect::<Vec<_>>()
    };
    assert_eq!((to(&a).len(), to(&b).len(), to(&dead).len()), (2, 2, 2));
    for d in to(&dead) {
        assert_eq!(d["status_code"], 0);
        assert_eq!(d["status"], "failed to connect");
    }
    // Nothing was retried on another URL.
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!((a_count.load(SeqCst), b_count.load(SeqCst)), (2, 2));
    env.emu.shutdown().await;
}
