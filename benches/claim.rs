//! Claim latency of pulled work: an agent long-polls the work API; a run of a pull task is
//! triggered; the time from the moment its item is queued (the spoke's `dispatched_at` in the
//! ledger) to the moment the agent's waiting claim answers with it. On SQLite (one hub) and on
//! Postgres with three replicas, where the agent waits on the third replica while the
//! deliveries go round-robin (so the run is mostly driven, and its item queued, by another
//! replica, and the claim wakes on the ledger's `NOTIFY`). Target: under 100 ms.
//!
//! `cargo bench --bench claim` (add `sqlite` or `postgres` for one of them, and a number of
//! samples, default 30).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use spokehub::config::{parse_file_config, Config, ServeArgs};
use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};
use spokehub::hub::HubRunId;
use spokehub::server::HubHandle;
use spokehub::store::now_ms;

#[path = "../tests/common/postgres.rs"]
mod postgres_harness;

const HUB_TOML: &str = r#"
[tasks.probe]
mode = "pull"
[tasks.probe.policy]
allow_parallel = true
"#;

async fn start(replicas: usize, database_url: &str) -> (EmulatorHandle, Vec<HubHandle>) {
    let mut listeners = Vec::new();
    for _ in 0..replicas {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls = listeners
        .iter()
        .map(|l| format!("http://{}/webhook", l.local_addr().unwrap()))
        .collect();
    let scenario = Scenario::from_toml(
        "[org]\nlogin = \"acme\"\nrepos = 1\nhub_repo = \"platform-hub\"\n\
         [faults]\nrate_limit_per_hour = 1000000\n",
    )
    .unwrap();
    let emulator = Emulator::start_balanced(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        urls,
        None,
    )
    .await
    .unwrap();
    let mut hubs = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = Config::from_parts(
            &ServeArgs {
                app_id: Some(emulator.app_id),
                private_key: Some(emulator.private_key_pem.clone()),
                webhook_secret: Some(emulator.webhook_secret.clone()),
                github_api_url: Some(emulator.base_url.clone()),
                database_url: Some(database_url.to_owned()),
                hub_repository: Some(emulator.hub_repo.clone()),
                replica_id: Some(format!("replica-{i}")),
                ..ServeArgs::default()
            },
            parse_file_config(HUB_TOML).unwrap(),
        )
        .unwrap();
        hubs.push(spokehub::server::start(config, listener).await.unwrap());
    }
    (emulator, hubs)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench(label: &str, replicas: usize, database_url: &str, samples: usize) {
    let (emulator, hubs) = start(replicas, database_url).await;
    let (token, hash) = spokehub::work::agents::new_token();
    let store = hubs[0].engine.store().clone();
    store.add_agent("bench", &hash).await.unwrap();
    let polled = hubs.last().unwrap();
    let claim_url = format!("http://{}/api/v1/work/claim", polled.addr);
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(samples);
    let started = Instant::now();
    for _ in 0..samples {
        let waiting = {
            let (http, url, token) = (http.clone(), claim_url.clone(), token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"max": 1, "wait_s": 30}))
                    .send()
                    .await
                    .unwrap();
                let at = now_ms();
                assert_eq!(resp.status(), 200, "the waiting claim got the item");
                (at, resp.json::<Value>().await.unwrap())
            })
        };
        // The claim is waiting (it has found nothing) before the run starts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pressed = http
            .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
            .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                          "inputs": {"task": "probe"}, "sender": "octocat"}))
            .send()
            .await
            .unwrap();
        assert!(pressed.status().is_success());
        let (at, body) = waiting.await.unwrap();
        let item = &body["items"][0];
        let run: HubRunId = item["hub_run_id"].as_str().unwrap().parse().unwrap();
        let repo = item["target"].as_str().unwrap().parse().unwrap();
        let queued_at = store
            .spoke(&run, &repo)
            .await
            .unwrap()
            .unwrap()
            .spoke
            .dispatched_at
            .unwrap();
        latencies.push(at - queued_at);
        let lease = item["lease_id"].as_str().unwrap();
        let done = http
            .post(format!(
                "http://{}/api/v1/work/{lease}/complete",
                polled.addr
            ))
            .bearer_auth(&token)
            .json(&json!({"status": "success"}))
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 200);
    }
    latencies.sort();
    println!(
        "claim latency, {label:<22} {samples} items: median {:>4} ms   p95 {:>4} ms   max {:>4} ms   ({:.1} s)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1],
        started.elapsed().as_secs_f64()
    );
    for hub in hubs {
        hub.abort();
    }
    emulator.shutdown().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples = args.iter().find_map(|a| a.parse().ok()).unwrap_or(30usize);
    let sqlite = !args.iter().any(|a| a == "postgres") || args.iter().any(|a| a == "sqlite");
    let postgres = !args.iter().any(|a| a == "sqlite") || args.iter().any(|a| a == "postgres");
    if sqlite {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        bench("SQLite, one hub", 1, &url, samples).await;
    }
    if postgres {
        postgres_harness::durable_cluster();
        match postgres_harness::fresh_database().await {
            Some(url) => bench("Postgres, 3 replicas", 3, &url, samples).await,
            None => println!("claim latency, Postgres: skipped (no PostgreSQL server)"),
        }
    }
}
