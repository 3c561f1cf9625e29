//! Crash safety: the real `spokehub serve` process is killed (SIGKILL) mid-run and started
//! again on the same database; the run finishes with the exact result and no spoke is
//! dispatched twice.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};

struct HubProcess {
    child: Child,
}

impl HubProcess {
    fn start(emulator: &EmulatorHandle, dir: &std::path::Path, listen: &str) -> HubProcess {
        let key = dir.join("app.pem");
        std::fs::write(&key, &emulator.private_key_pem).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spokehub"))
            .arg("serve")
            .env_clear()
            .env("SPOKEHUB_APP_ID", emulator.app_id.to_string())
            .env("SPOKEHUB_PRIVATE_KEY_FILE", &key)
            .env("SPOKEHUB_WEBHOOK_SECRET", &emulator.webhook_secret)
            .env("SPOKEHUB_GITHUB_API_URL", &emulator.base_url)
            .env(
                "SPOKEHUB_DATABASE_URL",
                format!("sqlite://{}", dir.join("hub.db").display()),
            )
            .env("SPOKEHUB_LISTEN", listen)
            .env("SPOKEHUB_CONFIG", dir.join("spokehub.toml"))
            .env("SPOKEHUB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spokehub starts");
        HubProcess { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn state(http: &reqwest::Client, emulator: &EmulatorHandle) -> Value {
    http.get(format!("{}/_emulator/state", emulator.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_until_listening(http: &reqwest::Client, listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("http://{listen}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "hub did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spoke_runs(state: &Value) -> Vec<&Value> {
    state["workflow_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["workflow"]
                .as_str()
                .is_some_and(|w| w.ends_with("spokehub-spoke.yml"))
        })
        .collect()
}

/// Runs a 150-spoke fan-out, killing the hub `kills` times at spread-out moments.
pub async fn kill_and_restart(kills: usize, repos: usize) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spokehub.toml"),
        "[policy]\nconcurrency = 8\nunknown_search_delay = \"300ms\"\n[policy.retry]\nlimit = 0\n",
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let scenario = Scenario::from_toml(&format!(
        "[org]\nlogin = \"acme\"\nrepos = {repos}\nhub_repo = \"platform-hub\"\n\
         [spoke]\nduration_ms = [50, 400]\ncallback = \"repository_dispatch\"\n\
         [[org.repo]]\nname = \"always-fails\"\nconclusion = \"failure\"\n"
    ))
    .unwrap();
    let emu_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::start(
        emu_listener,
        scenario,
        format!("http://{listen}/webhook"),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();

    let mut hub = HubProcess::start(&emulator, dir.path(), &listen);
    wait_until_listening(&http, &listen).await;
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emulator.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "crash-test"}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    assert!(pressed.status().is_success());

    for k in 0..kills {
        // Kill once this share of the spokes has been dispatched.
        let threshold = (k + 1) * repos / (kills + 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = state(&http, &emulator).await;
            if spoke_runs(&s).len() >= threshold {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dispatch stalled before kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.kill();
        hub = HubProcess::start(&emulator, dir.path(), &listen);
        wait_until_listening(&http, &listen).await;
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    let final_state = loop {
        let s = state(&http, &emulator).await;
        let done = s["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "spokehub: crash-test" && c["status"] == "completed");
        if done {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the run never completed after restarts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(hub);

    let check = final_state["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spokehub: crash-test")
        .unwrap();
    assert_eq!(check["conclusion"], "failure", "one spoke always fails");
    let runs = spoke_runs(&final_state);
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
    let title = check["output"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let summary = check["output"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        title.contains(&repos.to_string()) || summary.contains(&repos.to_string()),
        "the summary counts {repos} successes: {title}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_and_restarted_mid_run_finishes_with_the_right_result() {
    kill_and_restart(2, 150).await;
}
