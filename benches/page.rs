//! The run page of a 10,000-spoke run: how long the hub takes to answer a signed-in person's
//! `GET /runs/{id}` (the whole page: run facts, totals, the first 100 spokes problems first,
//! the event log), a filter to failures, a later page, the live part the page's script
//! fetches, and one look of the live stream (the run and one aggregate over its spokes). The emulator and the hub
//! run in this process on SQLite; the run is a real one, driven to completion first.
//!
//! `cargo bench --bench page` (add `-- N` for another number of spokes).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;

use spokehub::config::{parse_file_config, Config, OAuthClient, ServeArgs};
use spokehub::emulator::{Emulator, Scenario};

#[path = "../tests/common/web.rs"]
mod web;

const SAMPLES: usize = 30;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn measure(label: &str, url: &str, cookie: &str) -> Duration {
    let mut times = Vec::with_capacity(SAMPLES);
    let mut bytes = 0;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let resp = web::get(url, cookie).await;
        assert!(resp.status().is_success(), "{label}: {}", resp.status());
        bytes = resp.bytes().await.unwrap().len();
        times.push(started.elapsed());
    }
    times.sort();
    let median = percentile(&times, 0.5);
    println!(
        "{label:<34} median {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms   {:>6} KB",
        median.as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        bytes / 1024
    );
    percentile(&times, 0.95)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut failing = String::new();
    for i in (7..=n).step_by(50) {
        failing.push_str(&format!(
            "[[org.repo]]\nname = \"svc-{i:04}\"\nconclusion = \"failure\"\nsummary = \"**lint failed**: {i} errors in `src/main.rs`\"\n"
        ));
    }
    let scenario = Scenario::from_toml(&format!(
        "[org]\nrepos = {n}\n[spoke]\nduration_ms = [5, 40]\ncallback = \"repository_dispatch\"\n{failing}"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_addr = hub_listener.local_addr().unwrap();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        format!("http://{hub_addr}/webhook"),
        None,
    )
    .await
    .unwrap();
    let mut config = Config::from_parts(
        &ServeArgs {
            app_id: Some(emulator.app_id),
            private_key: Some(emulator.private_key_pem.clone()),
            webhook_secret: Some(emulator.webhook_secret.clone()),
            github_api_url: Some(emulator.base_url.clone()),
            database_url: Some(format!("sqlite://{}", dir.path().join("hub.db").display())),
            hub_repository: Some(emulator.hub_repo.clone()),
            public_url: Some(format!("http://{hub_addr}/")),
            ..ServeArgs::default()
        },
        parse_file_config("[policy.retry]\nlimit = 0\n[policy]\nconcurrency = 10000\n").unwrap(),
    )
    .unwrap();
    config.oauth = Some(OAuthClient {
        client_id: emulator.oauth_client_id.clone(),
        client_secret: emulator.oauth_client_secret.clone().into(),
    });
    let hub = spokehub::server::start(config, hub_listener).await.unwrap();
    let mut completions = hub.engine.subscribe_completions();
    let started = Instant::now();
    reqwest::Client::new()
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "lint"}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    let id = tokio::time::timeout(Duration::from_secs(600), completions.recv())
        .await
        .expect("the run completes")
        .unwrap();
    println!(
        "a {n}-spoke run completed in {:.1} s; measuring its page ({SAMPLES} requests each)\n",
        started.elapsed().as_secs_f64()
    );
    let base = format!("http://{hub_addr}");
    let (cookie, _) = web::sign_in(&base, "octocat", "/runs").await;
    let run = format!("{base}/runs/{id}");
    let mut worst = Duration::ZERO;
    for (label, url) in [
        ("GET /runs/{id} (the whole page)", run.clone()),
        ("  ?problems=1", format!("{run}?problems=1")),
        ("  ?q=svc-09 (search)", format!("{run}?q=svc-09")),
        ("  ?page=50", format!("{run}?page=50")),
        (
            "GET /runs/{id}/fragment (live part)",
            format!("{run}/fragment"),
        ),
        ("GET /runs (the list)", format!("{base}/runs")),
    ] {
        worst = worst.max(measure(label, &url, &cookie).await);
    }
    let mut live = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let _run = hub.engine.store().run(&id).await.unwrap().unwrap();
        let fp = hub.engine.store().spokes_fingerprint(&id).await.unwrap();
        assert!(!fp.is_empty());
        live.push(t.elapsed());
    }
    live.sort();
    println!(
        "{:<34} median {:>7.1} ms (every {} ms per open live page)",
        "one look of the live stream",
        percentile(&live, 0.5).as_secs_f64() * 1e3,
        500
    );
    println!(
        "\nworst p95 of a page load: {:.1} ms (target: under 1000 ms)",
        worst.as_secs_f64() * 1e3
    );
    hub.stop().await;
}
