//! A real headless Chromium for the run page's tests (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver with fantoccini: ChromeDriver is started on a
//! free loopback port, waited for until ready, and stopped when dropped.
//!
//! Without the binaries the test says loudly that it was skipped; with
//! `SPOKEHUB_REQUIRE_CHROMIUM=1` (CI) it fails instead.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub struct Browser {
    pub client: Client,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

/// ChromeDriver, stopped however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the tests' screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; `None` (after saying so) when
    /// either is missing.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (
            on_path("chromium").or_else(|| on_path("chromium-browser")),
            on_path("chromedriver"),
        ) else {
            let why = "no `chromium` and `chromedriver` on PATH";
            if std::env::var("SPOKEHUB_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
                panic!("SPOKEHUB_REQUIRE_CHROMIUM=1 but {why}");
            }
            eprintln!(
                "\n*** SKIPPED: this browser test did not run: {why}. Install Debian's \
                 `chromium` and `chromium-driver` packages. ***\n"
            );
            return None;
        };
        let port = free_port();
        let driver = KillOnDrop(
            Command::new(&driver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let profile = tempfile::tempdir().unwrap();
        let browser = Browser {
            client: connect_when_ready(port, &chromium, &profile).await,
            _driver: driver,
            _profile: profile,
        };
        browser
            .client
            .set_window_size(1400, 1000)
            .await
            .expect("window size");
        Some(browser)
    }

    /// Waits (up to `within`) until `script` (a JavaScript expression) is true on the page.
    pub async fn wait_for(&self, what: &str, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self
                .client
                .execute(&format!("return !!({script});"), vec![])
                .await
                .unwrap_or(Value::Bool(false));
            if v == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let _ = self
                    .screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!("waited {within:?} for {what} ({script})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of a JavaScript expression.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(&format!("return ({script});"), vec![])
            .await
            .expect("script runs")
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Saves a PNG of the page as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

async fn connect_when_ready(
    port: u16,
    chromium: &std::path::Path,
    profile: &tempfile::TempDir,
) -> Client {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    loop {
        let ready = http
            .get(format!("{url}/status"))
            .send()
            .await
            .ok()
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut args = vec![
        "--headless=new".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--window-size=1400,1000".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    // Chromium refuses to run as root with its sandbox.
    if unsafe { libc::geteuid() } == 0 {
        args.push("--no-sandbox".to_owned());
    }
    let caps = json!({
        "goog:chromeOptions": { "binary": chromium, "args": args },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a Chromium session")
}
