//! What `spokehub serve` logs when a delivery's signature is refused: the event and the
//! delivery GUID, and a hint at the setting to check, never the secret.

mod common;
#[path = "common/hub_process.rs"]
mod hub_process;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spokehub::emulator::{Emulator, Scenario};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_signature_names_the_delivery_and_the_setting_to_check() {
    refusal_logged("text").await;
}

/// The same with `SPOKEHUB_LOG_FORMAT=json`: every line is one JSON object, for log shippers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_same_fields() {
    let log = refusal_logged("json").await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    let refusal: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("webhook refused"))
        })
        .expect("the refusal is logged");
    assert_eq!(refusal["fields"]["guid"], "5f2c3a10-guid-of-this-delivery");
    assert_eq!(refusal["fields"]["event"], "workflow_run");
}

/// Starts `spokehub serve` with the log format `format`, sends it a delivery signed with
/// another secret, and returns what it logged.
async fn refusal_logged(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let listen = hub_process::free_listen();
    let emulator = Emulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Scenario::from_toml(&common::scenario(1, "")).unwrap(),
        format!("http://{listen}/webhook"),
        None,
    )
    .await
    .unwrap();
    let key = dir.path().join("app.pem");
    std::fs::write(&key, &emulator.private_key_pem).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spokehub"))
        .arg("serve")
        .env_clear()
        .env("SPOKEHUB_APP_ID", emulator.app_id.to_string())
        .env("SPOKEHUB_PRIVATE_KEY_FILE", &key)
        .env("SPOKEHUB_WEBHOOK_SECRET", &emulator.webhook_secret)
        .env("SPOKEHUB_GITHUB_API_URL", &emulator.base_url)
        .env("SPOKEHUB_HUB_REPOSITORY", &emulator.hub_repo)
        .env(
            "SPOKEHUB_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("hub.db").display()),
        )
        .env("SPOKEHUB_LISTEN", &listen)
        .env("SPOKEHUB_LOG_FORMAT", format)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hub did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = br#"{"action":"completed"}"#.to_vec();
    let resp = http
        .post(format!("http://{listen}/webhook"))
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", "5f2c3a10-guid-of-this-delivery")
        .header(
            "x-hub-signature-256",
            common::sign("a secret from another App", &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("webhook refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    for needle in [
        "workflow_run",
        "5f2c3a10-guid-of-this-delivery",
        "SPOKEHUB_WEBHOOK_SECRET",
    ] {
        assert!(line.contains(needle), "{needle} missing from {line}");
    }
    assert!(
        !log.contains(&emulator.webhook_secret),
        "the secret was logged"
    );
    log
}
