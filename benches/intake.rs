//! Intake benchmark: what "acknowledged means on disk" costs, and the memory of large bodies.
//!
//! 1. The ledger's ingest rate (deliveries recorded per second by 64 concurrent writers, 4 KB
//!    payloads, group commit): SQLite with `synchronous = FULL` (what the hub runs) and
//!    `NORMAL` (survives a process crash only), on a file in the target directory; and
//!    PostgreSQL with `synchronous_commit = on` (what the hub runs) and `off`, on a throwaway
//!    cluster on this machine (fsync on; see tests/common/postgres.rs).
//! 2. The real `spokehub serve` process taking 16 concurrent signed 20 MB deliveries: how many
//!    got 202 (the others 503, for GitHub to record as failed and the redelivery sweep to ask
//!    for again), and the hub's peak resident memory.
//!
//! `cargo bench --bench intake`

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpListener;

use spokehub::emulator::{Emulator, Scenario};
use spokehub::store::{Durability, NewDelivery, Store};

#[path = "../tests/common/hub_process.rs"]
mod hub_process;
#[path = "../tests/common/postgres.rs"]
mod postgres_harness;
use hub_process::{wait_until_listening, HubProcess};

async fn ingest(url: &str, durability: Durability, n: usize) -> f64 {
    let store = Store::open_with(url, durability).await.unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; 4096]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (store, payload) = (store.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(64) {
                let guid = format!("bench-{i}");
                store
                    .record_delivery(&NewDelivery {
                        guid: &guid,
                        event: "workflow_run",
                        action: Some("completed"),
                        installation_id: Some(1),
                        payload: payload.clone(),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn large_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let scenario = Scenario::from_toml(
        "[org]\nlogin = \"acme\"\nrepos = 1\nhub_repo = \"platform-hub\"\n[spoke]\ncallback = \"none\"\n",
    )
    .unwrap();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        format!("http://{addr}/webhook"),
        None,
    )
    .await
    .unwrap();
    std::fs::write(dir.path().join("spokehub.toml"), "").unwrap();
    let hub = HubProcess::start(&emulator, dir.path(), &addr.to_string());
    wait_until_listening(&reqwest::Client::new(), &addr.to_string()).await;
    let base_rss = peak_rss_mb(hub.id());
    let padding = "x".repeat(20 * 1024 * 1024);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let body = serde_json::to_vec(&json!({
            "action": "not_for_spokehub", "branch": "main",
            "client_payload": {"padding": padding, "n": i},
            "installation": {"id": emulator.installation_id},
            "repository": {"full_name": emulator.hub_repo},
            "sender": {"login": "octocat"},
        }))
        .unwrap();
        let signature = sign(&emulator.webhook_secret, &body);
        let url = format!("http://{addr}/webhook");
        tasks.push(tokio::spawn(async move {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
                .post(url)
                .header("x-github-event", "repository_dispatch")
                .header("x-github-delivery", format!("large-{i}"))
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    println!(
        "intake bench: 16 concurrent signed 20 MB deliveries in {:.2} s: answers {statuses:?}; \
         hub peak RSS {:.0} MB (idle {:.0} MB)",
        started.elapsed().as_secs_f64(),
        peak_rss_mb(hub.id()),
        base_rss
    );
    hub.kill();
    emulator.shutdown().await;
}

#[tokio::main]
async fn main() {
    if std::env::var_os("SPOKEHUB_LOG").is_none() {
        std::env::set_var("SPOKEHUB_LOG", "error");
    }
    let n = 20_000;
    for (name, durability) in [
        ("SQLite synchronous = FULL        ", Durability::Full),
        (
            "SQLite synchronous = NORMAL      ",
            Durability::ProcessCrash,
        ),
    ] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let rate = ingest(&url, durability, n).await;
        println!("intake bench: {name}: {n} deliveries recorded at {rate:>7.0}/s");
    }
    // Postgres: a throwaway cluster on this machine (loopback, fsync on), one database per
    // measurement.
    postgres_harness::durable_cluster();
    for (name, durability) in [
        ("Postgres synchronous_commit = on ", Durability::Full),
        (
            "Postgres synchronous_commit = off",
            Durability::ProcessCrash,
        ),
    ] {
        match postgres_harness::fresh_database().await {
            Some(url) => {
                let rate = ingest(&url, durability, n).await;
                println!("intake bench: {name}: {n} deliveries recorded at {rate:>7.0}/s");
            }
            None => println!("intake bench: {name}: skipped (no PostgreSQL server)"),
        }
    }
    large_deliveries().await;
}
