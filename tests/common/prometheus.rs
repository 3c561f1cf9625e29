//! A real Prometheus server for tests (Debian's `prometheus` package): started on a free
//! loopback port with a scrape configuration and rule files of the test's choosing, waited for
//! until ready, and stopped when dropped.
//!
//! Without the binary the test says loudly that it was skipped; with
//! `SPOKEHUB_REQUIRE_PROMETHEUS=1` (CI) it fails instead.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second, with
    /// `rule_files` evaluated every second; `None` (after saying so) without the binary.
    pub async fn start(target: &str, bearer: Option<&str>, rule_files: &[&str]) -> Option<Self> {
        let Some(bin) = binary() else {
            let why = "no `prometheus` binary on PATH";
            if std::env::var("SPOKEHUB_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1") {
                panic!("SPOKEHUB_REQUIRE_PROMETHEUS=1 but {why}");
            }
            eprintln!(
                "\n*** SKIPPED: this Prometheus test did not run: {why}. Install Debian's \
                 `prometheus` package. ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let auth = bearer
            .map(|t| format!("    authorization:\n      credentials: \"{t}\"\n"))
            .unwrap_or_default();
        let rules: String = rule_files
            .iter()
            .map(|f| format!("  - \"{f}\"\n"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules}\
             scrape_configs:\n  - job_name: spokehub\n    scrape_interval: 1s\n{auth}\
             \x20   static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/-/ready", p.url)).send().await {
                if r.status().is_success() {
                    return Some(p);
                }
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The scalar value of an instant query (`None` when the result is empty).
    pub async fn value(&self, query: &str) -> Option<f64> {
        let v = self.query(query).await;
        assert_eq!(v["status"], "success", "{query}: {v}");
        let first = v["data"]["result"].as_array()?.first()?.clone();
        first["value"][1].as_str()?.parse().ok()
    }

    /// Evaluates `query`: Prometheus' answer (`status`, `data` or `error`).
    pub async fn query(&self, query: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (up to `within`) until `query` returns `want` (to 1e-9); the last value seen.
    pub async fn wait_for(&self, query: &str, want: f64, within: Duration) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.value(query).await;
            if got.is_some_and(|g| (g - want).abs() < 1e-9) || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The alerts Prometheus holds now (`/api/v1/alerts`).
    pub async fn alerts(&self) -> Vec<Value> {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}
