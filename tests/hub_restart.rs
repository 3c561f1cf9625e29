//! Crash safety: the real `spokehub serve` process is killed (SIGKILL) mid-run and started
//! again on the same database; the run finishes with the exact result and no spoke is
//! dispatched twice. (The 1,000-spoke, 10-kill version is in `faults_crash.rs`.)

#[path = "common/hub_process.rs"]
mod hub_process;

use std::time::Duration;

use hub_process::{kill_and_restart, spoke_runs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_and_restarted_mid_run_finishes_with_the_right_result() {
    let repos = 150;
    let scenario = format!(
        "[org]\nlogin = \"acme\"\nrepos = {repos}\nhub_repo = \"platform-hub\"\n\
         [spoke]\nduration_ms = [50, 400]\ncallback = \"repository_dispatch\"\n\
         [[org.repo]]\nname = \"always-fails\"\nconclusion = \"failure\"\n"
    );
    let hub =
        "[policy]\napi_concurrency = 8\nunknown_search_delay = \"300ms\"\n[policy.retry]\nlimit = 0\n";
    let kills = [(repos / 3, 0), (2 * repos / 3, 0)];
    let out = kill_and_restart(
        &scenario,
        hub,
        "crash-test",
        &kills,
        Duration::from_secs(180),
    )
    .await;

    let check = out.state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spokehub: crash-test")
        .unwrap();
    assert_eq!(check["conclusion"], "failure", "one spoke always fails");
    let runs = spoke_runs(&out.state);
    let mut repos_dispatched: Vec<&str> =
        runs.iter().map(|r| r["repo"].as_str().unwrap()).collect();
    repos_dispatched.sort();
    let total = repos_dispatched.len();
    repos_dispatched.dedup();
    assert_eq!(
        total,
        repos_dispatched.len(),
        "a spoke was dispatched twice"
    );
    assert_eq!(total, repos + 1, "every spoke dispatched exactly once");
    let title = check["output"]["title"].as_str().unwrap_or_default();
    assert!(
        title.contains(&format!("{repos} succeeded, 1 failed")),
        "the summary counts {repos} successes: {title}"
    );
}
