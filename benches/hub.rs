//! Hub benchmark: a full fan-out of 1,000 and 10,000 spokes at zero API latency.
//!
//! The emulator runs in this process; the hub runs as the real `spokehub serve` binary in its
//! own process, so its CPU time and peak memory are its own (read from /proc). Reports wall
//! time to all dispatched and to completion, hub CPU time, GitHub API requests per spoke and
//! the hub's peak resident memory.
//!
//! Each size runs with the ledger on SQLite, then on PostgreSQL with one replica, then with
//! three replicas behind the emulator's load balancer (a throwaway cluster on this machine
//! with fsync on, see tests/common/postgres.rs; its server's CPU is not in "hub CPU"). With
//! several replicas, hub CPU is their sum and peak RSS the largest of them.
//!
//! `cargo bench --bench hub` (add `-- 1000` to run one size, `-- sqlite` or `-- postgres` to run
//! one database).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};

#[path = "../tests/common/hub_process.rs"]
mod hub_process;
#[path = "../tests/common/postgres.rs"]
mod postgres_harness;
use hub_process::HubProcess;

fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn proc_peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn summary(http: &reqwest::Client, emulator: &EmulatorHandle) -> Value {
    http.get(format!("{}/_emulator/state?summary=1", emulator.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn bench(n: usize, database_url: Option<&str>, replicas: usize) {
    let dir = tempfile::tempdir().unwrap();
    let listens: Vec<String> = (0..replicas)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("127.0.0.1:{port}")
        })
        .collect();
    let scenario = Scenario::from_toml(&format!(
        "[org]\nlogin = \"acme\"\nrepos = {n}\nhub_repo = \"platform-hub\"\n\
         [spoke]\nduration_ms = [200, 2000]\ncallback = \"repository_dispatch\"\n\
         [faults]\nrate_limit_per_hour = 1000000\n"
    ))
    .unwrap();
    let emulator = Emulator::start_balanced(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        listens
            .iter()
            .map(|l| format!("http://{l}/webhook"))
            .collect(),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    std::fs::write(
        dir.path().join("spokehub.toml"),
        "[policy]\napi_concurrency = 32\n[policy.retry]\nlimit = 0\n",
    )
    .unwrap();
    let hubs: Vec<HubProcess> = listens
        .iter()
        .enumerate()
        .map(|(i, listen)| match database_url {
            Some(url) if replicas > 1 => HubProcess::start_replica(
                &emulator,
                dir.path(),
                listen,
                url,
                &format!("replica-{i}"),
            ),
            _ => HubProcess::start_on(&emulator, dir.path(), listen, database_url),
        })
        .collect();
    let pids: Vec<u32> = hubs.iter().map(HubProcess::id).collect();
    let up = Instant::now();
    for listen in &listens {
        while http
            .get(format!("http://{listen}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(up.elapsed() < Duration::from_secs(30), "hub did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu_of = |pids: &[u32]| pids.iter().map(|p| proc_cpu_s(*p)).sum::<f64>();
    let cpu_before = cpu_of(&pids);
    let requests_before = summary(&http, &emulator).await["requests_total"]
        .as_u64()
        .unwrap_or(0);
    let started = Instant::now();
    http.post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "bench"}, "sender": "bench"}))
        .send()
        .await
        .unwrap();
    let mut dispatched_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = summary(&http, &emulator).await;
        // The hub workflow's own run counts too.
        let created = s["workflow_runs_created"].as_u64().unwrap_or(0) as usize;
        if dispatched_at.is_none() && created > n {
            dispatched_at = Some(started.elapsed());
        }
        let completed = s["check_runs_by_status"]["completed"].as_u64().unwrap_or(0);
        if dispatched_at.is_some() && completed >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "run did not complete");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let wall = started.elapsed();
    let cpu = cpu_of(&pids) - cpu_before;
    let rss = pids
        .iter()
        .map(|p| proc_peak_rss_mb(*p))
        .fold(0.0, f64::max);
    let s = summary(&http, &emulator).await;
    let requests = s["requests_total"].as_u64().unwrap_or(0) - requests_before;
    for hub in hubs {
        hub.kill();
    }
    println!(
        "hub bench: {:<13} | {n:>6} spokes | all dispatched in {:>6.2} s | completed in {:>6.2} s | hub CPU {:>6.2} s | {:>5.3} API requests/spoke | peak RSS per replica {:>6.1} MB",
        match (database_url, replicas) {
            (None, _) => "SQLite".to_owned(),
            (Some(_), 1) => "Postgres x1".to_owned(),
            (Some(_), r) => format!("Postgres x{r}"),
        },
        dispatched_at.unwrap().as_secs_f64(),
        wall.as_secs_f64(),
        cpu,
        requests as f64 / n as f64,
        rss
    );
    emulator.shutdown().await;
}

#[tokio::main]
async fn main() {
    if std::env::var_os("SPOKEHUB_LOG").is_none() {
        std::env::set_var("SPOKEHUB_LOG", "error");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `sqlite` or `postgres` picks one database (default: both).
    let sqlite = !args.iter().any(|a| a == "postgres") || args.iter().any(|a| a == "sqlite");
    let postgres = !args.iter().any(|a| a == "sqlite") || args.iter().any(|a| a == "postgres");
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    postgres_harness::durable_cluster();
    for n in sizes {
        if sqlite {
            bench(n, None, 1).await;
        }
        if !postgres {
            continue;
        }
        for replicas in [1, 3] {
            match postgres_harness::fresh_database().await {
                Some(url) => bench(n, Some(&url), replicas).await,
                None => println!(
                    "hub bench: Postgres x{replicas} | {n:>6} spokes | skipped (no PostgreSQL server)"
                ),
            }
        }
    }
}
