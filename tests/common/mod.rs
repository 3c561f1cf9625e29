//! The test world: the GitHub emulator and a hub, wired together over real HTTP on loopback,
//! with helpers to act as a person and to read what GitHub (the emulator) ends up showing.
#![allow(dead_code)]

pub mod chromium;
pub mod postgres;
pub mod web;

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use spokehub::config::{parse_file_config, Config, ServeArgs};
use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};
use spokehub::hub::HubRunId;
use spokehub::report::{run_report, RunReport};
use spokehub::server::HubHandle;

/// Hub settings that keep tests fast and their results exact: no retries unless a test asks.
pub const FAST_HUB: &str = r#"
[policy]
unknown_search_delay = "200ms"
[policy.retry]
limit = 0
"#;

pub struct World {
    pub emulator: EmulatorHandle,
    pub hub: HubHandle,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The hub's ledger.
    pub database_url: String,
}

impl World {
    /// Starts an emulator playing `scenario` and a hub configured by `hub_toml`.
    pub async fn start(scenario: &str, hub_toml: &str) -> World {
        Self::start_on(None, scenario, hub_toml).await
    }

    /// [`World::start`] with the hub's ledger on a fresh PostgreSQL database; `None` (after
    /// saying so) when the Postgres tests are skipped.
    pub async fn start_postgres(scenario: &str, hub_toml: &str) -> Option<World> {
        let url = postgres::fresh_database().await?;
        Some(Self::start_on(Some(url), scenario, hub_toml).await)
    }

    /// Starts a world whose hub uses `database_url` (default: SQLite in the world's directory).
    pub async fn start_on(database_url: Option<String>, scenario: &str, hub_toml: &str) -> World {
        Self::start_editing(database_url, scenario, hub_toml, |_| {}).await
    }

    /// [`World::start_on`] with `edit` applied to the hub's configuration.
    pub async fn start_editing(
        database_url: Option<String>,
        scenario: &str,
        hub_toml: &str,
        edit: impl FnOnce(&mut spokehub::config::Config),
    ) -> World {
        Self::start_full(database_url, scenario, hub_toml, |c, _, _| edit(c)).await
    }

    /// A world whose hub serves the run page: its public URL is its own address and it signs
    /// people in with the emulator's OAuth client.
    pub async fn start_with_page(scenario: &str, hub_toml: &str) -> World {
        let world = Self::start_full(None, scenario, hub_toml, |c, emulator, addr| {
            c.public_url = Some(format!("http://{addr}/").parse().unwrap());
            c.oauth = Some(spokehub::config::OAuthClient {
                client_id: emulator.oauth_client_id.clone(),
                client_secret: emulator.oauth_client_secret.clone().into(),
            });
        })
        .await;
        world.register_callback().await;
        world
    }

    /// Registers the hub's sign-in callback with the emulator's App, as the manifest does.
    pub async fn register_callback(&self) {
        let r = self
            .http
            .post(format!(
                "{}/_emulator/oauth/callbacks",
                self.emulator.base_url
            ))
            .json(&json!({"urls": [format!("{}/auth/callback", self.hub_url())]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    /// [`World::start_editing`] with the emulator and the hub's address at hand.
    pub async fn start_full(
        database_url: Option<String>,
        scenario: &str,
        hub_toml: &str,
        edit: impl FnOnce(&mut spokehub::config::Config, &EmulatorHandle, std::net::SocketAddr),
    ) -> World {
        let scenario = Scenario::from_toml(scenario).expect("valid scenario");
        let dir = tempfile::tempdir().unwrap();
        let hub_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emu_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let webhook_url = format!("http://{}/webhook", hub_listener.local_addr().unwrap());
        let emulator = Emulator::start(emu_listener, scenario, webhook_url, None)
            .await
            .expect("emulator starts");
        let database_url = database_url.unwrap_or_else(|| sqlite_url(&dir));
        let mut config = hub_config_on(&emulator, &database_url, hub_toml, Some("test-api-token"));
        edit(&mut config, &emulator, hub_listener.local_addr().unwrap());
        let hub = spokehub::server::start(config, hub_listener)
            .await
            .expect("hub starts");
        World {
            emulator,
            hub,
            http: reqwest::Client::new(),
            dir,
            database_url,
        }
    }

    pub fn hub_url(&self) -> String {
        format!("http://{}", self.hub.addr)
    }

    /// The status `/healthz` answers.
    pub async fn health(&self) -> reqwest::StatusCode {
        self.http
            .get(format!("{}/healthz", self.hub_url()))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Presses "Run workflow" on the hub workflow, as a person would.
    pub async fn press_run_workflow(&self, inputs: Value) {
        let resp = self
            .http
            .post(format!("{}/_emulator/hub/dispatch", self.emulator.base_url))
            .json(&json!({
                "workflow": "spokehub-hub.yml",
                "ref": "main",
                "inputs": inputs,
                "sender": "octocat",
            }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "hub dispatch: {}",
            resp.status()
        );
    }

    /// Starts a run and waits for it to complete; returns the hub's report.
    pub async fn run_to_completion(&self, inputs: Value) -> RunReport {
        let mut completions = self.hub.engine.subscribe_completions();
        self.press_run_workflow(inputs).await;
        let id = tokio::time::timeout(Duration::from_secs(120), completions.recv())
            .await
            .expect("the run completes within 120 s")
            .expect("completion channel open");
        self.report(&id).await
    }

    /// The most recently started run; panics when there is none.
    pub async fn latest_run(&self) -> HubRunId {
        self.hub
            .engine
            .store()
            .latest_run_id()
            .await
            .unwrap()
            .expect("a run was started")
    }

    /// The most recently started run, once there is one (up to 60 s).
    pub async fn latest_run_wait(&self) -> HubRunId {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(id)) = self.hub.engine.store().latest_run_id().await {
                return id;
            }
            assert!(std::time::Instant::now() < deadline, "no run started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The report of run `id` once it has completed; panics after `within`.
    pub async fn wait_completed(&self, id: &HubRunId, within: Duration) -> RunReport {
        let deadline = std::time::Instant::now() + within;
        loop {
            let report = self.report(id).await;
            if report.run.status == spokehub::hub::RunStatus::Completed {
                return report;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {id} did not complete"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn report(&self, id: &HubRunId) -> RunReport {
        run_report(self.hub.engine.store(), id)
            .await
            .unwrap()
            .expect("run exists")
    }

    /// The emulator's full state (what GitHub holds).
    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_emulator/state", self.emulator.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The check run of a run, as GitHub shows it.
    pub async fn check_run(&self, report: &RunReport) -> Value {
        let id = report.run.check_run_id.expect("run has a check run");
        let state = self.state().await;
        state["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"].as_u64() == Some(id))
            .cloned()
            .expect("check run exists in the emulator")
    }

    /// Workflow runs the emulator created for the spoke workflow.
    pub async fn spoke_runs(&self) -> Vec<Value> {
        let state = self.state().await;
        state["workflow_runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["workflow"]
                    .as_str()
                    .is_some_and(|w| w.ends_with("spokehub-spoke.yml"))
            })
            .cloned()
            .collect()
    }

    /// Sends a webhook to the hub signed with the App's secret, as GitHub would.
    pub async fn send_webhook(&self, event: &str, guid: &str, body: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(body).unwrap();
        let signature = sign(&self.emulator.webhook_secret, &body);
        self.http
            .post(format!("{}/webhook", self.hub_url()))
            .header("x-github-event", event)
            .header("x-github-delivery", guid)
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Waits (up to 60 s) for the next run to complete; returns its id.
pub async fn next_completion(
    completions: &mut tokio::sync::broadcast::Receiver<HubRunId>,
) -> HubRunId {
    tokio::time::timeout(Duration::from_secs(60), completions.recv())
        .await
        .expect("a run completes within 60 s")
        .expect("completion channel open")
}

/// `sha256=` + hex HMAC-SHA256, as in `X-Hub-Signature-256`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The SQLite database a hub keeps in `dir`.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("hub.db").display())
}

/// The hub's configuration for an emulator, with a database in `dir`.
pub fn hub_config(
    emulator: &EmulatorHandle,
    dir: &tempfile::TempDir,
    hub_toml: &str,
    api_token: Option<&str>,
) -> Config {
    hub_config_on(emulator, &sqlite_url(dir), hub_toml, api_token)
}

/// The hub's configuration for an emulator, with the database at `database_url`.
pub fn hub_config_on(
    emulator: &EmulatorHandle,
    database_url: &str,
    hub_toml: &str,
    api_token: Option<&str>,
) -> Config {
    Config::from_parts(
        &ServeArgs {
            app_id: Some(emulator.app_id),
            private_key: Some(emulator.private_key_pem.clone()),
            webhook_secret: Some(emulator.webhook_secret.clone()),
            github_api_url: Some(emulator.base_url.clone()),
            database_url: Some(database_url.to_owned()),
            api_token: api_token.map(str::to_owned),
            hub_repository: Some(emulator.hub_repo.clone()),
            ..ServeArgs::default()
        },
        parse_file_config(hub_toml).expect("valid hub config"),
    )
    .expect("valid hub configuration")
}

/// A scenario of `n` generated repositories plus extra TOML.
pub fn scenario(n: usize, extra: &str) -> String {
    format!(
        r#"
[org]
login = "acme"
repos = {n}
hub_repo = "platform-hub"

[spoke]
duration_ms = [5, 40]
callback = "repository_dispatch"

{extra}
"#
    )
}

/// Sends raw bytes (a request head, perhaps a partial body) on a new connection and returns
/// the status code of the answer; 0 when the connection closed without one.
pub async fn raw_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
