//! The GitHub client's request policy, checked against a small scripted HTTP server that
//! records every request: no POST resent on 5xx, GETs retried, the 400 fallback for
//! `return_run_details` remembered, 401 re-mint once, rate-limit pause then resend, and
//! pagination by path.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{json, Value};
use spokehub::github::{
    ApiError, ApiVersion, CheckRunAction, CheckRunOutput, CheckRunRequest, DispatchOutcome,
    GitHubApp, GitHubConfig, GovernorConfig, InstallationClient,
};
use spokehub::hub::{InstallationId, RepoName};

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    auth: Option<String>,
    api_version: Option<String>,
    body: Value,
    at: Instant,
}

/// An answer: status, extra headers, JSON body (or empty), optional delay before answering.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Option<Duration>,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: vec![],
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        delay: None,
    }
}

type Script = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

struct Fake {
    seen: Mutex<Vec<Seen>>,
    mints: Mutex<usize>,
    /// Token mints still to answer with 500 before succeeding.
    failing_mints: Mutex<usize>,
    /// Lifetimes (seconds) of the next minted tokens; 1 hour once empty.
    token_ttls: Mutex<Vec<i64>>,
    script: Box<Script>,
}

/// A started fake: its base URL and what it recorded.
struct Server {
    url: String,
    fake: Arc<Fake>,
}

impl Server {
    /// Requests other than token mints, optionally only those whose path ends with `suffix`.
    fn requests(&self, suffix: &str) -> Vec<Seen> {
        let seen = self.fake.seen.lock().unwrap();
        seen.iter()
            .filter(|s| !s.path.ends_with("/access_tokens") && s.path.ends_with(suffix))
            .cloned()
            .collect()
    }
    fn mints(&self) -> usize {
        *self.fake.mints.lock().unwrap()
    }
}

async fn handle(
    fake: Arc<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        auth: h("authorization"),
        // Every line, so a header sent twice shows.
        api_version: Some(
            headers
                .get_all("x-github-api-version")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
                .join(", "),
        )
        .filter(|v| !v.is_empty()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let fail_mint = seen.path.ends_with("/access_tokens") && {
        let mut f = fake.failing_mints.lock().unwrap();
        let fail = *f > 0;
        *f = f.saturating_sub(1);
        fail
    };
    let ans = if fail_mint {
        answer(500, json!({"message": "mint failed"}))
    } else if seen.path.ends_with("/access_tokens") {
        let n = {
            let mut m = fake.mints.lock().unwrap();
            *m += 1;
            *m
        };
        let ttl = {
            let mut t = fake.token_ttls.lock().unwrap();
            if t.is_empty() {
                3600
            } else {
                t.remove(0)
            }
        };
        let expires = (chrono::Utc::now() + chrono::Duration::seconds(ttl)).to_rfc3339();
        answer(
            201,
            json!({"token": format!("tok-{n}"), "expires_at": expires, "permissions": {"actions": "write"}}),
        )
    } else {
        let nth = {
            let seen_all = fake.seen.lock().unwrap();
            seen_all.iter().filter(|s| s.path == seen.path).count()
        };
        (fake.script)(&seen, nth)
    };
    fake.seen.lock().unwrap().push(seen);
    if let Some(d) = ans.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = (StatusCode::from_u16(ans.status).unwrap(), ans.body).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in ans.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// Start a fake whose non-token answers come from `script(request, nth request to this path)`.
async fn serve(script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Server {
    let fake = Arc::new(Fake {
        seen: Mutex::new(Vec::new()),
        mints: Mutex::new(0),
        failing_mints: Mutex::new(0),
        token_ttls: Mutex::new(Vec::new()),
        script: Box::new(script),
    });
    let f = fake.clone();
    let app = axum::Router::new()
        .fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| handle(f.clone(), m, u, h, b));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        url: format!("http://{addr}"),
        fake,
    }
}

fn test_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    })
}

fn config(url: &str) -> GitHubConfig {
    let mut cfg = GitHubConfig::new(
        42,
        SecretString::from(test_key().to_owned()),
        url.parse().unwrap(),
    );
    cfg.retry_base_delay = Duration::from_millis(1);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.governor = GovernorConfig {
        max_in_flight: 8,
        min_backoff: Duration::from_secs(1),
        max_pause: Duration::from_secs(5),
    };
    cfg
}

async fn client(server: &Server) -> InstallationClient {
    let app = GitHubApp::new(config(&server.url)).unwrap();
    app.installation(InstallationId(7)).await.unwrap()
}

fn repo() -> RepoName {
    "acme/svc-1".parse().unwrap()
}

fn run_json(id: u64) -> Value {
    json!({
        "id": id, "name": "spoke", "display_title": "spokehub run", "status": "completed",
        "conclusion": "success", "html_url": format!("https://github.test/acme/svc-1/actions/runs/{id}"),
        "run_attempt": 1, "path": ".github/workflows/spoke.yml", "event": "workflow_dispatch",
        "head_sha": "a".repeat(40), "created_at": "2026-11-25T01:00:00Z"
    })
}

#[tokio::test]
async fn dispatch_returns_run_details_and_sends_version_and_token() {
    let server = serve(|_, _| {
        answer(
            200,
            json!({"workflow_run_id": 99, "run_url": "https://api/x", "html_url": "https://github.test/r/99"}),
        )
    })
    .await;
    let c = client(&server).await;
    let mut inputs = serde_json::Map::new();
    inputs.insert("hub_run_id".into(), json!("abc"));
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &inputs)
        .await;
    assert_eq!(
        out,
        DispatchOutcome::Created {
            run_id: Some(99),
            run_url: Some("https://github.test/r/99".into())
        }
    );
    let reqs = server.requests("/dispatches");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.path,
        "/repos/acme/svc-1/actions/workflows/spoke.yml/dispatches"
    );
    assert_eq!(
        r.body,
        json!({"ref": "main", "inputs": {"hub_run_id": "abc"}, "return_run_details": true})
    );
    assert_eq!(r.auth.as_deref(), Some("Bearer tok-1"));
    assert_eq!(r.api_version.as_deref(), Some("2022-11-28"));
}

#[tokio::test]
async fn api_version_2026_03_10_is_sent_everywhere_and_dispatch_omits_the_flag() {
    let server = serve(|_, _| {
        answer(
            200,
            json!({"workflow_run_id": 77, "run_url": "https://api/x", "html_url": "https://github.test/r/77"}),
        )
    })
    .await;
    let mut cfg = config(&server.url);
    cfg.api_version = ApiVersion::V2026_03_10;
    let app = GitHubApp::new(cfg).unwrap();
    let c = app.installation(InstallationId(7)).await.unwrap();
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert_eq!(
        out,
        DispatchOutcome::Created {
            run_id: Some(77),
            run_url: Some("https://github.test/r/77".into())
        }
    );
    let reqs = server.requests("/dispatches");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body, json!({"ref": "main", "inputs": {}}));
    let all = server.fake.seen.lock().unwrap().clone();
    assert!(
        all.iter().any(|r| r.path.ends_with("/access_tokens")),
        "the token mint (JWT) is among them"
    );
    for r in all {
        assert_eq!(r.api_version.as_deref(), Some("2026-03-10"), "{}", r.path);
    }
}

#[tokio::test]
async fn dispatch_is_never_resent_after_a_server_error() {
    let server = serve(|_, _| answer(502, json!({"message": "Bad gateway"}))).await;
    let c = client(&server).await;
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert!(matches!(out, DispatchOutcome::Unknown { .. }), "{out:?}");
    assert_eq!(server.requests("/dispatches").len(), 1);
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn dispatch_timeout_is_unknown_and_not_resent() {
    let server = serve(|_, _| Answer {
        delay: Some(Duration::from_secs(30)),
        ..answer(204, Value::Null)
    })
    .await;
    let mut cfg = config(&server.url);
    cfg.request_timeout = Duration::from_millis(300);
    let app = GitHubApp::new(cfg).unwrap();
    let c = app.installation(InstallationId(7)).await.unwrap();
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert!(matches!(out, DispatchOutcome::Unknown { .. }), "{out:?}");
    assert_eq!(server.requests("/dispatches").len(), 1);
}

#[tokio::test]
async fn dispatch_permanent_errors_are_classified() {
    let server = serve(|s, _| {
        if s.path.contains("missing.yml") {
            answer(404, json!({"message": "Not Found"}))
        } else {
            answer(
                422,
                json!({"message": "Unexpected inputs provided: [\"x\"]"}),
            )
        }
    })
    .await;
    let c = client(&server).await;
    let none = serde_json::Map::new();
    assert_eq!(
        c.dispatch_workflow(&repo(), "missing.yml", "main", &none)
            .await,
        DispatchOutcome::WorkflowNotFound
    );
    assert_eq!(
        c.dispatch_workflow(&repo(), ".github/workflows/spoke.yml", "main", &none)
            .await,
        DispatchOutcome::Rejected {
            message: "Unexpected inputs provided: [\"x\"]".into()
        }
    );
    assert_eq!(server.requests("/dispatches").len(), 2);
}

#[tokio::test]
async fn dispatch_falls_back_without_run_details_and_remembers() {
    let server = serve(|s, _| {
        if s.body.get("return_run_details").is_some() {
            answer(
                400,
                json!({"message": "Invalid request: return_run_details is not permitted"}),
            )
        } else {
            answer(204, Value::Null)
        }
    })
    .await;
    let app = GitHubApp::new(config(&server.url)).unwrap();
    let none = serde_json::Map::new();
    let created = DispatchOutcome::Created {
        run_id: None,
        run_url: None,
    };
    let c = app.installation(InstallationId(7)).await.unwrap();
    assert_eq!(
        c.dispatch_workflow(&repo(), "spoke.yml", "main", &none)
            .await,
        created
    );
    // Remembered for the host: another installation of the same App skips the field.
    let c2 = app.installation(InstallationId(8)).await.unwrap();
    assert_eq!(
        c2.dispatch_workflow(&repo(), "spoke.yml", "main", &none)
            .await,
        created
    );
    let with: Vec<bool> = server
        .requests("/dispatches")
        .iter()
        .map(|r| r.body.get("return_run_details").is_some())
        .collect();
    assert_eq!(with, [true, false, false]);
}

#[tokio::test]
async fn get_is_retried_after_server_errors() {
    let server = serve(|_, nth| {
        if nth < 2 {
            answer(500, json!({"message": "oops"}))
        } else {
            answer(200, run_json(5))
        }
    })
    .await;
    let c = client(&server).await;
    let run = c.get_run(&repo(), 5).await.unwrap();
    assert_eq!(run.id, 5);
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert_eq!(server.requests("/actions/runs/5").len(), 3);
    assert_eq!(c.stats().retries, 2);
}

#[tokio::test]
async fn get_gives_up_after_max_attempts() {
    let server = serve(|_, _| answer(503, Value::Null)).await;
    let c = client(&server).await;
    assert_eq!(
        c.get_run(&repo(), 5).await.unwrap_err(),
        ApiError::Server { status: 503 }
    );
    assert_eq!(server.requests("/actions/runs/5").len(), 4);
}

#[tokio::test]
async fn create_check_run_is_not_resent_and_sends_actions() {
    let server = serve(|_, _| answer(500, Value::Null)).await;
    let c = client(&server).await;
    let req = CheckRunRequest {
        name: Some("spokehub".into()),
        head_sha: Some("b".repeat(40)),
        status: Some("in_progress".into()),
        external_id: Some("run-1".into()),
        output: Some(CheckRunOutput {
            title: "t".into(),
            summary: "s".into(),
            text: None,
        }),
        actions: Some(vec![CheckRunAction {
            label: "Cancel".into(),
            description: "Cancel the run".into(),
            identifier: "cancel".into(),
        }]),
        ..CheckRunRequest::default()
    };
    let err = c.create_check_run(&repo(), &req).await.unwrap_err();
    assert_eq!(err, ApiError::Server { status: 500 });
    let reqs = server.requests("/check-runs");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body["actions"][0]["identifier"], "cancel");
    assert_eq!(
        reqs[0].body["output"],
        json!({"title": "t", "summary": "s"})
    );
    assert!(reqs[0].body.get("conclusion").is_none());
}

#[tokio::test]
async fn check_run_patch_is_retried_and_create_returns_id() {
    let server = serve(|s, nth| match s.method {
        Method::POST => answer(201, json!({"id": 77})),
        _ if nth == 0 => answer(502, Value::Null),
        _ => answer(200, json!({"id": 77})),
    })
    .await;
    let c = client(&server).await;
    let req = CheckRunRequest {
        status: Some("completed".into()),
        conclusion: Some("success".into()),
        ..CheckRunRequest::default()
    };
    assert_eq!(c.create_check_run(&repo(), &req).await.unwrap(), 77);
    c.update_check_run(&repo(), 77, &req).await.unwrap();
    let patches = server.requests("/check-runs/77");
    assert_eq!(patches.len(), 2);
    assert!(patches.iter().all(|p| p.method == Method::PATCH));
}

#[tokio::test]
async fn unauthorized_re_mints_the_token_once() {
    let server = serve(|s, _| match s.auth.as_deref() {
        Some("Bearer tok-1") => answer(401, json!({"message": "Bad credentials"})),
        _ => answer(200, run_json(1)),
    })
    .await;
    let c = client(&server).await;
    assert_eq!(server.mints(), 1, "token not warmed");
    assert_eq!(c.get_run(&repo(), 1).await.unwrap().id, 1);
    assert_eq!(server.mints(), 2);
    let auths: Vec<_> = server
        .requests("/actions/runs/1")
        .into_iter()
        .map(|r| r.auth.unwrap())
        .collect();
    assert_eq!(auths, ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn persistent_unauthorized_is_an_error_after_one_re_mint() {
    let server = serve(|_, _| answer(401, json!({"message": "Bad credentials"}))).await;
    let c = client(&server).await;
    assert_eq!(
        c.get_run(&repo(), 1).await.unwrap_err(),
        ApiError::Unauthorized
    );
    assert_eq!(server.requests("/actions/runs/1").len(), 2);
    assert_eq!(server.mints(), 2);
}

#[tokio::test]
async fn rate_limited_request_is_resent_after_the_pause() {
    let server = serve(|_, nth| {
        if nth == 0 {
            Answer {
                headers: vec![
                    ("retry-after", "1".into()),
                    ("x-ratelimit-remaining", "4000".into()),
                ],
                ..answer(
                    403,
                    json!({"message": "You have exceeded a secondary rate limit."}),
                )
            }
        } else {
            answer(204, Value::Null)
        }
    })
    .await;
    let c = client(&server).await;
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert_eq!(
        out,
        DispatchOutcome::Created {
            run_id: None,
            run_url: None
        }
    );
    let reqs = server.requests("/dispatches");
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(950));
    assert_eq!(c.stats().rate_limit_waits, 1);
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn plain_forbidden_fails_without_resend() {
    let server = serve(|_, _| {
        answer(
            403,
            json!({"message": "Resource not accessible by integration"}),
        )
    })
    .await;
    let c = client(&server).await;
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert_eq!(
        out,
        DispatchOutcome::Failed {
            error: ApiError::Forbidden {
                message: "Resource not accessible by integration".into()
            }
        }
    );
    assert_eq!(server.requests("/dispatches").len(), 1);
}

#[tokio::test]
async fn pagination_follows_next_by_path_on_the_configured_host() {
    let server = serve(|s, _| {
        let repo_json = |name: &str| {
            json!({"full_name": name, "default_branch": "main", "archived": false, "fork": false,
                   "visibility": "internal", "topics": ["svc"]})
        };
        if s.query.contains("page=2") {
            answer(200, json!({"total_count": 2, "repositories": [repo_json("acme/two")]}))
        } else {
            Answer {
                headers: vec![(
                    "link",
                    "<http://elsewhere.invalid:1/installation/repositories?per_page=100&page=2>; rel=\"next\", \
                     <http://elsewhere.invalid:1/installation/repositories?per_page=100&page=2>; rel=\"last\""
                        .into(),
                )],
                ..answer(200, json!({"total_count": 2, "repositories": [repo_json("acme/one")]}))
            }
        }
    })
    .await;
    let c = client(&server).await;
    let repos = c.list_repositories().await.unwrap();
    let names: Vec<_> = repos.iter().map(|r| r.name.as_str().to_owned()).collect();
    assert_eq!(names, ["acme/one", "acme/two"]);
    assert_eq!(repos[0].topics, ["svc"]);
    let reqs = server.requests("/installation/repositories");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].query, "per_page=100");
    assert_eq!(reqs[1].query, "per_page=100&page=2");
    assert!(reqs
        .iter()
        .all(|r| r.auth.as_deref() == Some("Bearer tok-1")));
}

#[tokio::test]
async fn find_runs_queries_dispatch_runs_since_and_reads_every_page() {
    let server = serve(|s, _| {
        if s.query.contains("page=2") {
            answer(
                200,
                json!({"total_count": 2, "workflow_runs": [run_json(2)]}),
            )
        } else {
            Answer {
                headers: vec![(
                    "link",
                    format!("<{}?{}&page=2>; rel=\"next\"", s.path, s.query),
                )],
                ..answer(
                    200,
                    json!({"total_count": 2, "workflow_runs": [run_json(1)]}),
                )
            }
        }
    })
    .await;
    let c = client(&server).await;
    let since = "2026-11-25T01:00:00Z".parse().unwrap();
    let runs = c.find_runs(&repo(), "spoke.yml", since).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
    let first = &server.requests("/runs")[0];
    assert_eq!(
        first.path,
        "/repos/acme/svc-1/actions/workflows/spoke.yml/runs"
    );
    assert_eq!(
        first.query,
        "event=workflow_dispatch&created=%3E%3D2026-11-25T01%3A00%3A00Z&per_page=100"
    );
}

#[tokio::test]
async fn installation_clients_are_cached_and_warmed_once() {
    let server = serve(|_, _| answer(202, Value::Null)).await;
    let app = GitHubApp::new(config(&server.url)).unwrap();
    let (a, b) = tokio::join!(
        app.installation(InstallationId(7)),
        app.installation(InstallationId(7))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(server.mints(), 1);
    a.cancel_run(&repo(), 3).await.unwrap();
    b.cancel_run(&repo(), 3).await.unwrap();
    assert_eq!(server.mints(), 1);
    assert_eq!(a.stats().requests, 2, "clones share one client");
}

#[tokio::test]
async fn cancel_of_a_completed_run_is_ok() {
    let server = serve(|_, _| {
        answer(
            409,
            json!({"message": "Cannot cancel a workflow run that is completed."}),
        )
    })
    .await;
    let c = client(&server).await;
    c.cancel_run(&repo(), 3).await.unwrap();
}

#[tokio::test]
async fn custom_properties_and_check_runs_for_ref_parse() {
    let server = serve(|s, _| {
        if s.path.starts_with("/orgs/") {
            answer(200, json!([
                {"repository_id": 1, "repository_name": "svc-1", "repository_full_name": "acme/svc-1",
                 "properties": [{"property_name": "team", "value": "core"},
                                {"property_name": "langs", "value": ["rust", "go"]},
                                {"property_name": "unset", "value": null}]}
            ]))
        } else {
            answer(200, json!({"total_count": 1, "check_runs": [
                {"id": 9, "name": "spokehub", "external_id": "run-1", "status": "completed",
                 "conclusion": "success", "head_sha": "c".repeat(40)}]}))
        }
    })
    .await;
    let c = client(&server).await;
    let props = c.custom_properties("acme").await.unwrap();
    let p = &props[&repo()];
    assert_eq!(p.get("team").map(String::as_str), Some("core"));
    assert_eq!(p.get("langs").map(String::as_str), Some("rust,go"));
    assert!(!p.contains_key("unset"));
    let sha = "c".repeat(40).parse().unwrap();
    let runs = c
        .check_runs_for_ref(&repo(), &sha, "spoke hub")
        .await
        .unwrap();
    assert_eq!(runs[0].external_id.as_deref(), Some("run-1"));
    let q = &server.requests("/check-runs")[0];
    assert_eq!(q.query, "check_name=spoke%20hub&per_page=100");
}

#[tokio::test]
async fn bad_pem_is_a_config_error_without_the_key() {
    let pem =
        "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key-SECRETBITS\n-----END RSA PRIVATE KEY-----\n";
    let mut cfg = config("http://127.0.0.1:9");
    cfg.private_key_pem = SecretString::from(pem.to_owned());
    let err = GitHubApp::new(cfg).unwrap_err();
    assert!(matches!(err, ApiError::Config { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("SECRETBITS"));
}

#[tokio::test]
async fn debug_output_hides_key_and_tokens() {
    let server = serve(|_, _| answer(200, run_json(1))).await;
    let cfg = config(&server.url);
    assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));
    let app = GitHubApp::new(cfg).unwrap();
    let c = app.installation(InstallationId(7)).await.unwrap();
    assert_eq!(c.installation_id(), InstallationId(7));
    c.get_run(&repo(), 1).await.unwrap();
    let shown = format!("{app:?} {c:?}");
    assert!(
        !shown.contains("tok-") && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
}

#[tokio::test]
async fn failed_token_mint_is_reported_and_not_cached() {
    let server = serve(|_, _| answer(202, Value::Null)).await;
    *server.fake.failing_mints.lock().unwrap() = 1;
    let app = GitHubApp::new(config(&server.url)).unwrap();
    let err = app.installation(InstallationId(1)).await.unwrap_err();
    assert_eq!(err, ApiError::Server { status: 500 });
    let c = app.installation(InstallationId(1)).await.unwrap();
    c.cancel_run(&repo(), 1).await.unwrap();
    let seen = server.fake.seen.lock().unwrap().len();
    assert_eq!(seen, 3, "two mints and one cancel");
}

#[tokio::test]
async fn unreachable_api_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let app = GitHubApp::new(config(&url)).unwrap();
    let err = app.installation(InstallationId(1)).await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn expiring_token_is_refreshed_once_for_a_burst() {
    let server = serve(|_, _| answer(200, run_json(1))).await;
    *server.fake.token_ttls.lock().unwrap() = vec![10];
    let c = client(&server).await;
    assert_eq!(server.mints(), 1);
    let r = repo();
    let burst = (0..20).map(|_| c.get_run(&r, 1));
    for r in futures::future::join_all(burst).await {
        r.unwrap();
    }
    assert_eq!(server.mints(), 2, "one refresh for the whole burst");
    let reqs = server.requests("/actions/runs/1");
    assert!(reqs
        .iter()
        .all(|r| r.auth.as_deref() == Some("Bearer tok-2")));
}

#[tokio::test]
async fn app_level_calls_use_the_jwt() {
    let server = serve(|s, _| match s.path.as_str() {
        "/app" => answer(200, json!({"id": 42, "slug": "spokehub-test"})),
        "/app/hook/deliveries" if s.query.contains("cursor=") => answer(
            200,
            json!([
                {"id": 3, "guid": "g3", "delivered_at": "2026-11-20T00:00:00Z", "redelivery": false,
                 "status_code": 502, "event": "workflow_run", "action": "completed"},
                {"id": 2, "guid": "g2", "delivered_at": "2026-11-01T00:00:00Z", "redelivery": false,
                 "status_code": 500, "event": "workflow_run", "action": "completed"}
            ]),
        ),
        "/app/hook/deliveries" => Answer {
            headers: vec![(
                "link",
                "<https://api.github.com/app/hook/deliveries?per_page=100&cursor=abc>; rel=\"next\"".into(),
            )],
            ..answer(
                200,
                json!([{"id": 4, "guid": "g4", "delivered_at": "2026-11-24T00:00:00Z", "redelivery": false,
                        "status_code": 202, "event": "check_run", "action": "requested_action",
                        "installation_id": 7}]),
            )
        },
        _ => answer(202, Value::Null),
    })
    .await;
    let app = GitHubApp::new(config(&server.url)).unwrap();
    assert_eq!(app.app_slug().await.unwrap(), "spokehub-test");
    let since = "2026-11-10T00:00:00Z".parse().unwrap();
    let deliveries = app.hook_deliveries(since).await.unwrap();
    let ids: Vec<_> = deliveries.iter().map(|d| (d.id, d.failed())).collect();
    assert_eq!(ids, [(4, false), (3, true)]);
    app.redeliver(3).await.unwrap();
    let reqs = server.requests("");
    assert_eq!(reqs.last().unwrap().path, "/app/hook/deliveries/3/attempts");
    assert_eq!(server.mints(), 0);
    for r in &reqs {
        let jwt = r.auth.as_deref().unwrap().strip_prefix("Bearer ").unwrap();
        assert_eq!(jwt.split('.').count(), 3, "not a JWT");
    }
}

#[tokio::test]
async fn failed_token_refresh_is_retried_before_the_request_goes_out() {
    let server = serve(|_, _| answer(204, Value::Null)).await;
    *server.fake.token_ttls.lock().unwrap() = vec![10];
    let c = client(&server).await;
    *server.fake.failing_mints.lock().unwrap() = 1;
    let out = c
        .dispatch_workflow(&repo(), "spoke.yml", "main", &serde_json::Map::new())
        .await;
    assert!(matches!(out, DispatchOutcome::Created { .. }), "{out:?}");
    assert_eq!(server.mints(), 2, "warm-up and the successful refresh");
    let reqs = server.requests("/dispatches");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].auth.as_deref(), Some("Bearer tok-2"));
}
