//! `spokehub app create` end to end against the emulator, with the real binary: the form, the
//! redirect, a wrong `state` refused, the conversion, the files and their modes, and a
//! `spokehub serve` started from those files that accepts the emulator's webhooks and completes
//! a run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use url::Url;

use spokehub::emulator::{Emulator, EmulatorHandle, Scenario};

#[path = "common/web.rs"]
mod web;

const BIN: &str = env!("CARGO_BIN_EXE_spokehub");

/// A loopback port nobody listens on right now (for the hub, whose URL the emulator needs first).
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn emulator(hub_port: u16) -> EmulatorHandle {
    let sc =
        Scenario::from_toml("[org]\nlogin = \"acme\"\nrepos = 3\n[spoke]\nduration_ms = [5, 40]\n")
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(
        listener,
        sc,
        format!("http://127.0.0.1:{hub_port}/webhook"),
        None,
    )
    .await
    .unwrap()
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of `attr="..."` after `marker` in `page`.
fn attr(page: &str, marker: &str, attr: &str) -> String {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {page}"));
    let rest = &page[at..];
    let start = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    let end = start + rest[start..].find('"').unwrap();
    html_unescape(&rest[start..end])
}

fn query(u: &Url, key: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Polls `f` until it returns Some, or fails after `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serve(dir: &Path, port: u16) -> Child {
    Command::new(BIN)
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SPOKEHUB_CONFIG", dir.join("spokehub.toml"))
        .env("SPOKEHUB_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SPOKEHUB_DATABASE_URL",
            format!("sqlite://{}", dir.join("hub.db").display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_create_against_the_emulator_then_serve_from_the_written_files() {
    let hub_port = free_port().await;
    let emu = emulator(hub_port).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hub");
    let public_url = format!("http://127.0.0.1:{hub_port}");
    let mut create = Command::new(BIN)
        .args([
            "app",
            "create",
            "--org",
            "acme",
            "--public-url",
            &public_url,
        ])
        .args(["--github-url", &emu.base_url, "--api-url", &emu.base_url])
        .args(["--hub-repo", emu.hub_repo.split_once('/').unwrap().1])
        .args(["--name", "acme fan-out"])
        .args(["--listen", "127.0.0.1:0", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(create.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first))
        .await
        .expect("app create prints where its page is")
        .unwrap();
    let local = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no local URL in {first:?}"))
        .to_owned();

    // The form: it posts the manifest to the organization's new-App page with a state.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(&local).send().await.unwrap().text().await.unwrap();
    let action = Url::parse(&attr(&page, "<form", "action")).unwrap();
    assert_eq!(
        action.as_str().split('?').next().unwrap(),
        format!("{}/organizations/acme/settings/apps/new", emu.base_url)
    );
    let state = query(&action, "state").expect("the form sends a state");
    assert!(state.len() >= 32, "state too guessable: {state}");
    let manifest: Value = serde_json::from_str(&attr(&page, "name=\"manifest\"", "value")).unwrap();
    assert_eq!(
        manifest["hook_attributes"]["url"],
        format!("{public_url}/webhook")
    );
    assert_eq!(manifest["redirect_url"], format!("{local}callback"));
    assert_eq!(manifest["public"], false);
    assert_eq!(
        manifest["name"], "acme fan-out",
        "--name reaches the manifest"
    );

    // GitHub (the emulator) redirects back with a code and the state.
    let resp = http
        .post(action.clone())
        .form(&[("manifest", manifest.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let back = Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        back.as_str().starts_with(&format!("{local}callback?")),
        "{back}"
    );
    assert_eq!(query(&back, "state").as_deref(), Some(state.as_str()));
    let code = query(&back, "code").expect("a code");

    // A wrong or missing state is refused and nothing is written.
    let mut forged = back.clone();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", "forged");
    assert_eq!(http.get(forged).send().await.unwrap().status(), 400);
    let mut stateless = back.clone();
    stateless
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code);
    assert_eq!(http.get(stateless).send().await.unwrap().status(), 400);
    assert!(!out.join("spokehub.toml").exists());

    // The real redirect: the code is exchanged, files are written, the command ends.
    let done = http.get(back.clone()).send().await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), create.wait())
        .await
        .expect("app create exits after the App is created")
        .unwrap();
    let mut printed = first.clone();
    stdout.read_to_string(&mut printed).await.unwrap();
    let mut err = String::new();
    create
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(status.success(), "app create failed: {printed}{err}");
    let all = format!("{printed}{err}");
    assert!(
        all.contains(&format!("{}/apps/spokehub/installations/new", emu.base_url)),
        "no install link: {all}"
    );
    assert!(
        printed.contains("README.md, \"Set up on GitHub\"") && !all.contains("README-install"),
        "next steps point at the README: {printed}"
    );
    assert!(!all.contains(&emu.webhook_secret), "webhook secret printed");
    assert!(
        !all.contains(&emu.oauth_client_secret),
        "OAuth client secret printed"
    );
    assert!(!all.contains("PRIVATE KEY"), "key printed");

    // The code was single-use.
    let again = http
        .post(format!("{}/app-manifests/{code}/conversions", emu.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    let config_path = out.join("spokehub.toml");
    let file = spokehub::config::read_file_config(&config_path).unwrap();
    assert_eq!(file.github.app_id, Some(emu.app_id));
    assert_eq!(file.github.api_url.as_deref(), Some(emu.base_url.as_str()));
    assert_eq!(file.server.public_url.as_deref(), Some(public_url.as_str()));
    // The run page's sign-in: the App's OAuth client, as the conversion returned it.
    assert_eq!(
        file.github.oauth_client_id.as_deref(),
        Some(emu.oauth_client_id.as_str())
    );
    assert_eq!(
        file.github
            .oauth_client_secret
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret),
        Some(emu.oauth_client_secret.as_str())
    );
    assert!(
        matches!(&file.hub.repository, Some(spokehub::config::OneOrMany::One(r)) if *r == emu.hub_repo),
        "hub.repository is the org's hub repository"
    );
    let key = file.github.private_key_file.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), emu.private_key_pem);
    #[cfg(unix)]
    {
        assert_eq!(mode(&config_path), 0o600);
        assert_eq!(mode(&key), 0o600);
    }

    // `spokehub serve` from those files accepts the emulator's webhooks and completes a run.
    let mut hub = serve(&out, hub_port);
    let health = format!("{public_url}/healthz");
    poll(Duration::from_secs(60), "the hub to listen", || {
        let (http, health) = (&http, &health);
        async move {
            let ok = http
                .get(health)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ok.then_some(())
        }
    })
    .await;
    // The App the manifest made signs people in to the run page: its callback URL was
    // registered, the written OAuth client is the App's.
    let (session, landed) = web::sign_in(
        public_url.as_str().trim_end_matches('/'),
        "octocat",
        "/runs",
    )
    .await;
    assert_eq!(landed, "/runs");
    assert_eq!(
        web::get(&format!("{public_url}/runs"), &session)
            .await
            .status(),
        200
    );
    let pressed = http
        .post(format!("{}/_emulator/hub/dispatch", emu.base_url))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main",
                      "inputs": {"task": "scan"}, "sender": "octocat"}))
        .send()
        .await
        .unwrap();
    assert!(pressed.status().is_success());
    let state_url = format!("{}/_emulator/state", emu.base_url);
    let check = poll(
        Duration::from_secs(60),
        "the summary check run to complete",
        || {
            let (http, state_url) = (&http, &state_url);
            async move {
                let s: Value = http.get(state_url).send().await.ok()?.json().await.ok()?;
                s["check_runs"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"] == "spokehub: scan" && c["status"] == "completed")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(check["conclusion"], "success", "{check}");
    hub.kill().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_app_page_refuses_a_bad_manifest_and_an_unknown_org() {
    let emu = emulator(9).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |org: &str, manifest: &str| {
        http.post(format!(
            "{}/organizations/{org}/settings/apps/new",
            emu.base_url
        ))
        .form(&[("manifest", manifest), ("state", "s")])
        .send()
    };
    let r = post("acme", "{not json").await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("not JSON"));
    let r = post("acme", r#"{"name":"x","url":"https://x.example"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("hook_attributes"));
    let good = r#"{"url":"https://x.example","hook_attributes":{"url":"https://x.example/webhook"},"redirect_url":"http://127.0.0.1:9/cb"}"#;
    assert_eq!(post("other-org", good).await.unwrap().status(), 404);
    let r = post("acme", good).await.unwrap();
    assert_eq!(r.status(), 302);
    // An unknown code is not exchanged.
    let r = http
        .post(format!("{}/app-manifests/nope/conversions", emu.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    emu.shutdown().await;
}
