//! SIGTERM mid-run: the real `spokehub serve` stops taking work, finishes the GitHub requests in
//! hand, and exits 0 within 30 s; started again on the same database, the run completes with
//! exactly one workflow run per spoke and an exact summary.

#[path = "common/hub_process.rs"]
mod hub_process;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use hub_process::{spoke_runs, state, wait_until_listening, HubProcess};
use spokehub::emulator::{Emulator, Scenario};

const SPOKES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_zero_promptly_and_the_run_completes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Spokes last 1-3 s and at most 20 are in flight: SIGTERM lands with spokes dispatching,
    // running and still planned.
    std::fs::write(
        dir.path().join("spokehub.toml"),
        "[policy]\nconcurrency = 20\nunknown_search_delay = \"300ms\"\nreconcile_after = \"2s\"\n[policy.retry]\nlimit = 0\n",
    )
    .unwrap();
    let listen = hub_process::free_listen();
    let scenario = Scenario::from_toml(&format!(
        "[org]\nlogin = \"acme\"\nrepos = {SPOKES}\nhub_repo = \"platform-hub\"\n\
         [spoke]\nduration_ms = [1000, 3000]\ncallback = \"repository_dispatch\"\n"
    ))
    .unwrap();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        scenario,
        format!("http://{listen}/webhook"),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let hub = HubProcess::start(&emulator, dir.path(), &listen);
    wait_until_listening(&http, &listen).await;
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "rolling"}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    assert!(pressed.status().is_success());
    let check_done = |s: &Value| {
        s["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "spokehub: rolling" && c["status"] == "completed")
    };
    // Mid-run: some spokes dispatched, most not.
    let deadline = Instant::now() + Duration::from_secs(60);
    while spoke_runs(&state(&http, &emulator).await).len() < 10 {
        assert!(Instant::now() < deadline, "no spokes dispatched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, took) = hub.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    let s = state(&http, &emulator).await;
    assert!(!check_done(&s), "the run was over before SIGTERM");
    eprintln!(
        "SIGTERM: exited 0 in {took:?} with {} of {SPOKES} spokes dispatched",
        spoke_runs(&s).len()
    );

    // Started again on the same database: the run resumes and completes exactly.
    let hub = HubProcess::start(&emulator, dir.path(), &listen);
    wait_until_listening(&http, &listen).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let final_state = loop {
        let s = state(&http, &emulator).await;
        if check_done(&s) {
            break s;
        }
        assert!(Instant::now() < deadline, "the run never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    hub.kill();
    let mut per_repo: BTreeMap<&str, usize> = BTreeMap::new();
    for r in spoke_runs(&final_state) {
        *per_repo.entry(r["repo"].as_str().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_repo.len(), SPOKES, "a spoke was lost");
    assert!(
        per_repo.values().all(|n| *n == 1),
        "a spoke was dispatched twice: {per_repo:?}"
    );
    let check = final_state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "spokehub: rolling")
        .collect::<Vec<_>>();
    assert_eq!(check.len(), 1, "one check run");
    assert_eq!(check[0]["conclusion"], "success");
    assert!(
        check[0]["output"]["title"]
            .as_str()
            .unwrap()
            .contains(&format!("{SPOKES} succeeded")),
        "{}",
        check[0]["output"]["title"]
    );
    emulator.shutdown().await;
}
