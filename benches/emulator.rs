//! Emulator throughput: dispatches and reads over loopback at zero latency, for 1,000 and
//! 10,000 repositories, with webhooks delivered to a local sink. Prints requests per second.
//! Run with `cargo bench --bench emulator`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use spokehub::emulator::{Emulator, Scenario};

const CONCURRENCY: usize = 64;
const READ_SECONDS: u64 = 5;

async fn sink() -> String {
    let app = axum::Router::new().route("/webhook", axum::routing::post(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

async fn bench(repos: usize, webhooks: bool) {
    let mut sc = Scenario::generated(repos);
    sc.app.private_key_file =
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-app-key.pem").to_owned());
    sc.spoke.duration_ms = [20, 200];
    sc.spoke.seed = Some(1);
    // Measure the emulator, not its primary rate limit.
    sc.faults.rate_limit_per_hour = u32::MAX;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = if webhooks {
        sink().await
    } else {
        String::new()
    };
    let emu = Emulator::start(l, sc, url, None).await.unwrap();
    let tag = if webhooks {
        "webhooks to a sink"
    } else {
        "no webhook receiver"
    };
    println!("--- {repos} repositories, {tag}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now - 60, "exp": now + 540, "iss": emu.app_id}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(emu.private_key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let token: Value = http
        .post(format!(
            "{}/app/installations/{}/access_tokens",
            emu.base_url, emu.installation_id
        ))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let base = emu.base_url.clone();
    let org = emu.org.clone();

    // Phase 1: one dispatch per repository, with run details.
    let started = Instant::now();
    let run_ids: Vec<(usize, u64)> = stream::iter(1..=repos)
        .map(|i| {
            let (http, token, base, org) = (http.clone(), token.clone(), base.clone(), org.clone());
            async move {
                let url = format!(
                    "{base}/repos/{org}/svc-{i:04}/actions/workflows/spokehub-spoke.yml/dispatches"
                );
                let body = json!({"ref": "main", "return_run_details": true, "inputs": {
                    "hub_run_id": "bench", "attempt": "1", "task": "bench",
                    "params": "{}", "callback_token": "t"}});
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                (i, v["workflow_run_id"].as_u64().unwrap())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "repos={repos:>6} dispatch: {} requests in {secs:.2} s = {:.0} req/s",
        repos,
        repos as f64 / secs
    );

    // Phase 2: every run completes and every webhook is delivered.
    let started = Instant::now();
    let limit = Instant::now() + Duration::from_secs(120);
    let summary = loop {
        let s: Value = http
            .get(format!("{base}/_emulator/state?summary=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = s["workflow_runs_by_status"]["completed"]
            .as_u64()
            .unwrap_or(0);
        let pending = if webhooks {
            s["webhooks_pending"].as_u64().unwrap_or(0)
        } else {
            0
        };
        if (done as usize == repos && pending == 0) || Instant::now() > limit {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "repos={repos:>6} drain:    completed={} webhooks_sent={} in {:.2} s after the last dispatch; requests_total={}",
        summary["workflow_runs_by_status"]["completed"],
        summary["webhooks_sent"],
        started.elapsed().as_secs_f64(),
        summary["requests_total"]
    );
    // Phase 3: reads for a fixed time once the simulation is idle (runs, repos, listing pages).
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(READ_SECONDS);
    let started = Instant::now();
    let run_ids = Arc::new(run_ids);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (http, token, base, org) = (http.clone(), token.clone(), base.clone(), org.clone());
            let (count, run_ids) = (count.clone(), run_ids.clone());
            tokio::spawn(async move {
                let mut n = w;
                while Instant::now() < deadline {
                    let (i, id) = run_ids[n % run_ids.len()];
                    let url = match n % 4 {
                        0 | 1 => format!("{base}/repos/{org}/svc-{i:04}/actions/runs/{id}"),
                        2 => format!("{base}/repos/{org}/svc-{i:04}"),
                        _ => format!(
                            "{base}/installation/repositories?per_page=100&page={}",
                            n % (repos / 100).max(1) + 1
                        ),
                    };
                    let r = http.get(url).bearer_auth(&token).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    let _ = r.bytes().await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    n += CONCURRENCY;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "repos={repos:>6} reads:    {n} requests in {secs:.2} s = {:.0} req/s (runs 50%, repo 25%, 100-repo pages 25%)",
        n as f64 / secs
    );

    emu.shutdown().await;
}

/// Peak resident memory of this process (emulator + client), from /proc.
fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{} MB", kb / 1024))
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        bench(1_000, false).await;
        bench(1_000, true).await;
        bench(10_000, true).await;
        println!("peak RSS (emulator + client): {}", peak_rss_mb());
    });
}
