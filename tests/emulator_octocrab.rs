//! octocrab, the real client, against the emulator: App JWT, token minting and refresh,
//! pagination, dispatch, check runs; plus the 401 paths of both auth kinds.

mod emulator_support;

use std::time::Duration;

use emulator_support::{scenario, start, Env};
use octocrab::models::{AppId, InstallationId, InstallationRepositories};
use octocrab::params::checks::{CheckRunConclusion, CheckRunOutput, CheckRunStatus};
use octocrab::Octocrab;
use serde_json::{json, Value};

fn app_client(env: &Env) -> Octocrab {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(env.emu.private_key_pem.as_bytes()).unwrap();
    Octocrab::builder()
        .base_uri(env.emu.base_url.as_str())
        .unwrap()
        .app(AppId(env.emu.app_id), key)
        .build()
        .unwrap()
}

#[tokio::test]
async fn octocrab_app_auth_pagination_dispatch_and_check_runs() {
    let env = start(scenario(
        "[org]\nrepos = 7\n[spoke]\nduration_ms = [5, 10]\n",
    ))
    .await;
    let app = app_client(&env);
    let installs = app.apps().installations().send().await.unwrap();
    assert_eq!(installs.items.len(), 1);
    assert_eq!(installs.items[0].id.0, env.emu.installation_id);
    let inst = app
        .installation(InstallationId(env.emu.installation_id))
        .unwrap();

    // Pagination: follow Link by path (absolute URLs lose auth off api.github.com).
    let mut next = Some("/installation/repositories?per_page=3".to_owned());
    let mut names = Vec::new();
    while let Some(path) = next.take() {
        let resp = inst._get(path.as_str()).await.unwrap();
        assert_eq!(resp.status(), 200);
        next = resp
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| {
                l.split(", ")
                    .find(|p| p.ends_with("rel=\"next\""))
                    .map(str::to_owned)
            })
            .map(|p| {
                let url = p
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned();
                url.trim_start_matches(&env.emu.base_url).to_owned()
            });
        let body = inst.body_to_string(resp).await.unwrap();
        let page: InstallationRepositories = serde_json::from_str(&body).unwrap();
        assert_eq!(page.total_count, 8);
        names.extend(page.repositories.into_iter().map(|r| r.name));
    }
    assert_eq!(names.len(), 8);
    assert!(names.contains(&"svc-0007".to_owned()) && names.contains(&"platform-hub".to_owned()));

    // Dispatch with the typed builder (204), then with run details through the raw call.
    inst.actions()
        .create_workflow_dispatch("acme", "svc-0001", "spokehub-spoke.yml", "main")
        .inputs(Env::spoke_inputs("oc", 1))
        .send()
        .await
        .unwrap();
    let details: Value = inst
        .post(
            "/repos/acme/svc-0002/actions/workflows/spokehub-spoke.yml/dispatches",
            Some(&json!({"ref": "main", "inputs": Env::spoke_inputs("oc", 1), "return_run_details": true})),
        )
        .await
        .unwrap();
    let run_id = details["workflow_run_id"].as_u64().unwrap();
    let run = inst
        .workflows("acme", "svc-0002")
        .get(run_id.into())
        .await
        .unwrap();
    assert_eq!(run.id.0, run_id);
    let runs = inst
        .workflows("acme", "svc-0001")
        .list_all_runs()
        .send()
        .await
        .unwrap();
    assert_eq!(runs.items.len(), 1);
    assert_eq!(runs.items[0].head_branch, "main");
    assert_eq!(runs.items[0].event, "workflow_dispatch");

    // Check runs through the typed builders.
    let sha = env.state().await["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "platform-hub")
        .unwrap()["head_sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let checks = inst.checks("acme", "platform-hub");
    let cr = checks
        .create_check_run("spokehub", &sha)
        .status(CheckRunStatus::InProgress)
        .external_id("hub-run-1")
        .output(CheckRunOutput {
            title: "Running".into(),
            summary: "0 of 7".into(),
            text: None,
            annotations: vec![],
            images: vec![],
        })
        .send()
        .await
        .unwrap();
    let done = checks
        .update_check_run(cr.id)
        .conclusion(CheckRunConclusion::Success)
        .output(CheckRunOutput {
            title: "Done".into(),
            summary: "7 of 7".into(),
            text: Some("| repo | result |".into()),
            annotations: vec![],
            images: vec![],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    let listed = checks
        .list_check_runs_for_git_ref(octocrab::params::repos::Commitish(sha.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.total_count, 1);
    let st = env.state().await;
    assert_eq!(st["check_runs"][0]["external_id"], "hub-run-1");
    assert_eq!(st["check_runs"][0]["output"]["summary"], "7 of 7");
    assert_eq!(
        st["tokens_minted"], 1,
        "one cached token for the installation client"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn octocrab_refreshes_an_expiring_token() {
    // octocrab refreshes tokens 30 s before expiry: a 31 s token is stale after about 1 s.
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\ntoken_lifetime_s = 31\n",
    ))
    .await;
    let app = app_client(&env);
    let inst = app
        .installation(InstallationId(env.emu.installation_id))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r: Value = inst.get("/repos/acme/svc-0001", None::<&()>).await.unwrap();
        assert_eq!(r["name"], "svc-0001");
        if env.summary().await["tokens_minted"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_get_401_and_foreign_repos_404() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\ntoken_lifetime_s = 1\n",
    ))
    .await;
    let get = |path: &str, auth: Option<String>| {
        let mut rb = env.http.get(env.url(path));
        if let Some(a) = auth {
            rb = rb.bearer_auth(a);
        }
        async move {
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = get("/installation/repositories", Some("ghs_unknown".into())).await;
    assert_eq!((s, v["message"].as_str()), (401, Some("Bad credentials")));
    assert!(v["documentation_url"].is_string());
    let (s, _) = get("/installation/repositories", None).await;
    assert_eq!(s, 401);
    let (s, v) = get("/app", Some("not-a-jwt".into())).await;
    assert_eq!(s, 401, "{v}");
    // A JWT signed by another key.
    let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    use rsa::pkcs8::EncodePrivateKey;
    let pem = other.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let now = chrono::Utc::now().timestamp();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now - 60, "exp": now + 540, "iss": env.emu.app_id}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(get("/app", Some(forged)).await.0, 401);
    // A JWT living longer than 10 minutes.
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(env.emu.private_key_pem.as_bytes()).unwrap();
    let long = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now, "exp": now + 3600, "iss": env.emu.app_id}),
        &key,
    )
    .unwrap();
    assert_eq!(get("/app", Some(long)).await.0, 401);
    assert_eq!(get("/app", Some(env.jwt())).await.0, 200);
    let counted = env.summary().await["requests_by_route"]["GET /app"].clone();
    assert_eq!(counted, 4, "refused requests are counted too");
    // Installation tokens cannot call /app, JWTs cannot call installation routes.
    let token = env.token().await;
    assert_eq!(get("/app", Some(token.clone())).await.0, 401);
    assert_eq!(
        get("/installation/repositories", Some(env.jwt())).await.0,
        401
    );
    // Repositories outside the installation are 404.
    assert_eq!(
        get("/repos/other-org/svc-0001", Some(token.clone()))
            .await
            .0,
        404
    );
    // The 1 s token expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (s, _) = get("/repos/acme/svc-0001", Some(token.clone())).await;
        if s == 401 {
            break;
        }
        assert_eq!(s, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.emu.shutdown().await;
}
