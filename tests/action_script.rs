//! Runs the report action's real script, `action/report.sh`, with the environment a GitHub
//! runner sets, against a small receiver that plays GitHub's `POST /repos/{o}/{r}/dispatches`.
//!
//! Checks the exact request (path, headers, payload), the truncation of a long summary, the
//! retry policy (5xx and 429 retried, `retry-after` honoured, other 4xx fatal), input checks,
//! and that no token ever reaches the script's output.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

const TOKEN: &str = "ghs_InstallationTokenSECRET0123456789abcdefXYZ";
const CALLBACK_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJjYWxsYmFjayI6InNlY3JldCJ9.CallbackSECRETsig";
const HUB_RUN_ID: &str = "3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b";
const MARKER: &str = "[summary truncated by spokehub report";

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or_else(|| panic!("request lacks header {name}"))
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A canned answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct Receiver {
    answers: Mutex<VecDeque<Answer>>,
    seen: Mutex<Vec<Seen>>,
}

async fn handle(
    State(rx): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    rx.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let (status, extra, body) =
        rx.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((204, vec![], String::new()));
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// Starts a receiver answering `answers` in order (then 204); returns it and its base URL.
async fn receiver(answers: Vec<Answer>) -> (Arc<Receiver>, String) {
    let rx = Arc::new(Receiver {
        answers: Mutex::new(answers.into()),
        seen: Mutex::default(),
    });
    let app = Router::new().fallback(handle).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rx, format!("http://{addr}/api/v3"))
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    fn assert_no_secret(&self) {
        let out = self.output();
        assert!(!out.contains(TOKEN), "token leaked: {out}");
        assert!(
            !out.contains(CALLBACK_TOKEN),
            "callback token leaked: {out}"
        );
        assert!(!out.contains("SECRET"), "a secret's part leaked: {out}");
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("action/report.sh")
}

/// The environment a runner gives the action step, plus the action's inputs.
fn runner_env(api_url: &str) -> Vec<(String, String)> {
    [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "acme/svc-0042"),
        ("GITHUB_RUN_ID", "987654321"),
        ("GITHUB_RUN_ATTEMPT", "2"),
        ("GITHUB_SERVER_URL", "https://github.example"),
        ("GITHUB_API_URL", "http://127.0.0.1:9/unused"),
        ("INPUT_HUB_REPO", "acme/hub"),
        ("INPUT_HUB_RUN_ID", HUB_RUN_ID),
        ("INPUT_STATUS", "failure"),
        ("INPUT_CALLBACK_TOKEN", CALLBACK_TOKEN),
        ("INPUT_TOKEN", TOKEN),
        ("INPUT_SUMMARY", ""),
        ("INPUT_SUMMARY_FILE", ""),
        ("INPUT_API_URL", api_url),
        ("SPOKEHUB_REPORT_RETRY_DELAY_S", "0"),
        ("SPOKEHUB_REPORT_TIMEOUT_S", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

async fn run(env: &[(String, String)]) -> Outcome {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("report.sh finished within 60 s")
        .expect("bash runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn seen(rx: &Receiver) -> Vec<Seen> {
    rx.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn sends_the_exact_spoke_complete_request() {
    let (rx, api) = receiver(vec![]).await;
    let mut env = runner_env(&api);
    let summary = "3 files changed: \"a\" \\ b\n`$(rm -rf /)` ${{ x }} — ünïcode ✓";
    set(&mut env, "INPUT_SUMMARY", summary);
    let out = run(&env).await;
    assert_eq!(out.code, 0, "{}", out.output());
    out.assert_no_secret();

    let reqs = seen(&rx);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/api/v3/repos/acme/hub/dispatches");
    assert_eq!(r.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(r.header("accept"), "application/vnd.github+json");
    assert_eq!(r.header("x-github-api-version"), "2022-11-28");
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("user-agent").starts_with("spokehub"));
    assert_eq!(
        r.json(),
        json!({
            "event_type": "spoke_complete",
            "client_payload": {
                "hub_run_id": HUB_RUN_ID,
                "repo": "acme/svc-0042",
                "status": "failure",
                "run_id": 987654321u64,
                "run_attempt": 2,
                "run_url": "https://github.example/acme/svc-0042/actions/runs/987654321",
                "callback_token": CALLBACK_TOKEN,
                "summary": summary,
            }
        })
    );
}

#[tokio::test]
async fn api_url_defaults_to_the_runners_github_api_url() {
    let (rx, api) = receiver(vec![]).await;
    let mut env = runner_env("");
    set(&mut env, "GITHUB_API_URL", &api);
    set(&mut env, "INPUT_STATUS", "cancelled");
    let out = run(&env).await;
    assert_eq!(out.code, 0, "{}", out.output());
    let reqs = seen(&rx);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["client_payload"]["status"], "cancelled");
}

#[tokio::test]
async fn long_summary_is_cut_with_a_marker_and_stays_under_64_kb() {
    let (rx, api) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("summary.md");
    // 300 KB of multi-byte characters, quotes and newlines (which grow when JSON-escaped).
    let long: String = "| repo ✓ | \"ok\" |\n".repeat(15_000);
    std::fs::write(&file, &long).unwrap();
    let mut env = runner_env(&api);
    set(&mut env, "INPUT_SUMMARY_FILE", file.to_str().unwrap());
    set(&mut env, "INPUT_SUMMARY", "ignored when a file is given");
    let out = run(&env).await;
    assert_eq!(out.code, 0, "{}", out.output());
    out.assert_no_secret();

    let reqs = seen(&rx);
    assert_eq!(reqs.len(), 1);
    let payload = &reqs[0].json()["client_payload"];
    let as_sent = serde_json::to_string(payload).unwrap();
    assert!(
        as_sent.len() < 64 * 1024,
        "client_payload is {} bytes",
        as_sent.len()
    );
    assert!(as_sent.len() > 50_000, "the summary keeps most of the room");
    assert!(payload.as_object().unwrap().len() <= 10);
    let summary = payload["summary"].as_str().unwrap();
    let at = summary.find(MARKER).expect("truncation marker present");
    let kept = summary[..at].trim_end_matches(['\n', '…', ' ']);
    assert!(
        long.starts_with(kept),
        "the kept part is a prefix of the summary"
    );
    assert!(summary.len() < long.len());
}

#[tokio::test]
async fn short_summary_from_a_file_is_sent_whole() {
    let (rx, api) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("summary.md");
    std::fs::write(&file, "bumped serde to 1.0.210\n").unwrap();
    let mut env = runner_env(&api);
    set(&mut env, "INPUT_SUMMARY_FILE", file.to_str().unwrap());
    let out = run(&env).await;
    assert_eq!(out.code, 0, "{}", out.output());
    let payload = seen(&rx)[0].json()["client_payload"].clone();
    assert_eq!(payload["summary"], "bumped serde to 1.0.210\n");
}

#[tokio::test]
async fn retries_a_502_then_succeeds_with_the_same_body() {
    let (rx, api) = receiver(vec![(502, vec![], r#"{"message":"Server Error"}"#.into())]).await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 0, "{}", out.output());
    out.assert_no_secret();
    let reqs = seen(&rx);
    assert_eq!(reqs.len(), 2, "one retry after the 502");
    assert_eq!(reqs[0].body, reqs[1].body);
    assert!(out.stdout.contains("HTTP 502"), "{}", out.stdout);
}

#[tokio::test]
async fn honours_retry_after_on_429_and_403_rate_limits() {
    let (rx, api) = receiver(vec![
        (
            429,
            vec![("retry-after", "1".into())],
            r#"{"message":"slow down"}"#.into(),
        ),
        (
            403,
            vec![("x-ratelimit-remaining", "0".into())],
            r#"{"message":"API rate limit exceeded"}"#.into(),
        ),
    ])
    .await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 0, "{}", out.output());
    assert_eq!(seen(&rx).len(), 3);
    assert!(out.stdout.contains("retrying in 1s"), "{}", out.stdout);
}

#[tokio::test]
async fn waits_for_the_rate_limit_reset_capped_by_the_maximum_delay() {
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (rx, api) = receiver(vec![(
        403,
        vec![
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", in_an_hour.to_string()),
        ],
        r#"{"message":"API rate limit exceeded for installation"}"#.into(),
    )])
    .await;
    let mut env = runner_env(&api);
    set(&mut env, "SPOKEHUB_REPORT_RETRY_MAX_DELAY_S", "1");
    let out = run(&env).await;
    assert_eq!(out.code, 0, "{}", out.output());
    assert_eq!(seen(&rx).len(), 2);
    assert!(out.stdout.contains("rate limited"), "{}", out.stdout);
    assert!(out.stdout.contains("retrying in 1s"), "{}", out.stdout);
}

#[tokio::test]
async fn tokens_echoed_back_in_an_answer_are_redacted() {
    let echo = format!(r#"{{"message":"bad credentials {TOKEN} for {CALLBACK_TOKEN}"}}"#);
    let (rx, api) = receiver(vec![(503, vec![], echo.clone()), (401, vec![], echo)]).await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 1, "{}", out.output());
    assert_eq!(seen(&rx).len(), 2);
    assert!(
        out.stderr.contains("bad credentials *** for ***"),
        "{}",
        out.stderr
    );
    out.assert_no_secret();
}

#[tokio::test]
async fn huge_error_bodies_are_cut_in_messages() {
    let huge = json!({ "message": "x".repeat(300_000) }).to_string();
    let (rx, api) = receiver(vec![
        (500, vec![], huge.clone()),
        (204, vec![], String::new()),
    ])
    .await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 0, "{}", out.output());
    assert_eq!(seen(&rx).len(), 2);
    assert!(
        out.stdout.len() < 3_000,
        "{} bytes of output",
        out.stdout.len()
    );

    let (rx, api) = receiver(vec![(422, vec![], huge)]).await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 1, "{}", out.output());
    assert_eq!(seen(&rx).len(), 1);
    assert!(out.stderr.contains("HTTP 422"));
    assert!(
        out.stderr.len() < 2_000,
        "{} bytes of output",
        out.stderr.len()
    );
}

#[tokio::test]
async fn fails_clearly_on_422_without_retrying() {
    let (rx, api) = receiver(vec![(
        422,
        vec![],
        r#"{"message":"Invalid request.","errors":[{"message":"client_payload is too large"}]}"#
            .into(),
    )])
    .await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 1, "{}", out.output());
    out.assert_no_secret();
    assert_eq!(seen(&rx).len(), 1, "a 422 is not retried");
    assert!(out.stderr.contains("HTTP 422"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Invalid request.: client_payload is too large"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_403_that_is_not_a_rate_limit_is_fatal() {
    let (rx, api) = receiver(vec![(
        403,
        vec![],
        r#"{"message":"Resource not accessible by integration"}"#.into(),
    )])
    .await;
    let out = run(&runner_env(&api)).await;
    assert_eq!(out.code, 1, "{}", out.output());
    assert_eq!(seen(&rx).len(), 1);
    assert!(out
        .stderr
        .contains("Resource not accessible by integration"));
    assert!(out.stderr.contains("Contents write"));
    out.assert_no_secret();
}

#[tokio::test]
async fn gives_up_after_the_configured_attempts() {
    let (rx, api) = receiver(vec![(500, vec![], "oops".into()); 5]).await;
    let mut env = runner_env(&api);
    set(&mut env, "SPOKEHUB_REPORT_MAX_ATTEMPTS", "3");
    let out = run(&env).await;
    assert_eq!(out.code, 1, "{}", out.output());
    assert_eq!(seen(&rx).len(), 3);
    assert!(
        out.stderr.contains("giving up after 3 attempts"),
        "{}",
        out.stderr
    );
    out.assert_no_secret();
}

#[tokio::test]
async fn retries_when_nothing_answers() {
    // Bind then drop a listener: the port is closed, so every attempt is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env = runner_env(&format!("http://127.0.0.1:{port}"));
    set(&mut env, "SPOKEHUB_REPORT_MAX_ATTEMPTS", "2");
    let out = run(&env).await;
    assert_eq!(out.code, 1, "{}", out.output());
    assert!(out.stdout.contains("no answer"), "{}", out.stdout);
    assert!(
        out.stderr.contains("giving up after 2 attempts"),
        "{}",
        out.stderr
    );
    out.assert_no_secret();
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_request() {
    let (rx, api) = receiver(vec![]).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "INPUT_HUB_RUN_ID",
            "3F2A9C1E-7B4D-4E8A-9F10-2C3D4E5F6A7B",
            "hub-run-id",
        ),
        ("INPUT_HUB_RUN_ID", "not-a-uuid", "hub-run-id"),
        ("INPUT_HUB_REPO", "hub", "hub-repo"),
        ("INPUT_HUB_REPO", "acme/hub/../x y", "hub-repo"),
        ("INPUT_STATUS", "skipped", "status"),
        ("INPUT_TOKEN", "", "token"),
        ("GITHUB_RUN_ID", "12x", "GITHUB_RUN_ID"),
        ("GITHUB_REPOSITORY", "", "GITHUB_REPOSITORY"),
        (
            "INPUT_SUMMARY_FILE",
            "/nonexistent/summary.md",
            "summary-file",
        ),
        (
            "SPOKEHUB_REPORT_MAX_ATTEMPTS",
            "many",
            "SPOKEHUB_REPORT_MAX_ATTEMPTS",
        ),
    ];
    for (key, value, named) in cases {
        let mut env = runner_env(&api);
        set(&mut env, key, value);
        let out = run(&env).await;
        assert_eq!(out.code, 2, "{key}={value}: {}", out.output());
        assert!(out.stderr.contains(named), "{key}={value}: {}", out.stderr);
        out.assert_no_secret();
    }
    assert!(seen(&rx).is_empty(), "no request on bad input");
}

/// `action/action.yml` declares the inputs of issue 4 and hands every one of them, and only
/// them, to `report.sh` as the `INPUT_*` variable the script reads.
#[test]
fn action_yml_passes_every_input_to_the_script() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let action = std::fs::read_to_string(root.join("action/action.yml")).unwrap();
    let script = std::fs::read_to_string(script()).unwrap();
    let inputs = [
        "hub-repo",
        "hub-run-id",
        "status",
        "callback-token",
        "token",
        "summary",
        "summary-file",
        "api-url",
    ];
    assert!(action.contains("\nruns:\n  using: composite\n"));
    assert!(action.contains("    default: ${{ github.api_url }}\n"));
    for input in inputs {
        assert!(
            action.contains(&format!("\n  {input}:\n")),
            "input {input} not declared"
        );
        let var = format!("INPUT_{}", input.to_uppercase().replace('-', "_"));
        assert!(
            action.contains(&format!("{var}: ${{{{ inputs.{input} }}}}\n")),
            "{var} not passed from inputs.{input}"
        );
        assert!(script.contains(&var), "report.sh does not read {var}");
    }
    for required in ["hub-repo", "hub-run-id", "status", "token"] {
        let start = action.find(&format!("\n  {required}:\n")).unwrap();
        let block: String = action[start + 1..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect();
        assert!(block.contains("required: true"), "{required} is required");
    }
    // Every INPUT_ variable the script reads is set by the action.
    for word in script.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("INPUT_") {
            if !name.is_empty() {
                assert!(action.contains(&format!("{word}: ")), "{word} is never set");
            }
        }
    }
}
