//! Conformance: every route's responses validate against the OpenAPI subset, and every webhook
//! the emulator emits validates against the webhook schemas.

mod emulator_support;

use emulator_support::{check_hook, check_webhook, scenario, start, Env, OpenApi};
use reqwest::Method;
use serde_json::{json, Value};

async fn call(
    env: &Env,
    api: &OpenApi,
    method: Method,
    template: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut rb = env.http.request(method.clone(), env.url(path));
    if let Some(a) = auth {
        rb = rb.bearer_auth(a);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "x-ratelimit-resource",
        "x-github-request-id",
    ] {
        assert!(headers.contains_key(h), "{method} {path}: missing {h}");
    }
    let text = r.text().await.unwrap();
    let v: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    api.check(method.as_str(), template, status, &v);
    (status, v, headers)
}

#[tokio::test]
async fn every_route_matches_the_openapi_subset_and_webhooks_their_schemas() {
    let env = start(scenario(
        "[org]\nrepos = 3\n[[org.repo]]\nname = \"svc-0002\"\nproperties = { team = \"core\" }\ntopics = [\"rust\"]\n[spoke]\nduration_ms = [5, 10]\nseed = 7\n",
    ))
    .await;
    let api = OpenApi::load();
    let jwt = env.jwt();
    let org = env.emu.org.clone();
    use Method as M;

    call(&env, &api, M::GET, "/app", "/app", Some(&jwt), None).await;
    let (_, inst, _) = call(
        &env,
        &api,
        M::GET,
        "/app/installations",
        "/app/installations",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(inst[0]["id"], env.emu.installation_id);
    let iid = env.emu.installation_id;
    let (s, tok, _) = call(
        &env,
        &api,
        M::POST,
        "/app/installations/{installation_id}/access_tokens",
        &format!("/app/installations/{iid}/access_tokens"),
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let token = tok["token"].as_str().unwrap().to_owned();
    let t = Some(token.as_str());
    call(
        &env,
        &api,
        M::GET,
        "/orgs/{org}/installation",
        &format!("/orgs/{org}/installation"),
        Some(&jwt),
        None,
    )
    .await;
    call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/installation",
        &format!("/repos/{org}/svc-0001/installation"),
        Some(&jwt),
        None,
    )
    .await;
    let (_, repos, headers) = call(
        &env,
        &api,
        M::GET,
        "/installation/repositories",
        "/installation/repositories?per_page=2",
        t,
        None,
    )
    .await;
    assert_eq!(repos["total_count"], 4, "3 generated + the hub repo");
    assert!(headers["link"].to_str().unwrap().contains("rel=\"next\""));
    call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}",
        &format!("/repos/{org}/svc-0001"),
        t,
        None,
    )
    .await;
    let (s, _, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}",
        &format!("/repos/{org}/nope"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (_, file, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/contents/{path}",
        &format!("/repos/{org}/svc-0001/contents/.github/workflows/spokehub-spoke.yml"),
        t,
        None,
    )
    .await;
    assert_eq!(file["type"], "file");
    call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/contents/{path}",
        &format!("/repos/{org}/svc-0001/contents/.github/workflows"),
        t,
        None,
    )
    .await;
    let (s, _, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/contents/{path}",
        &format!("/repos/{org}/platform-hub/contents/.github/workflows/spokehub-spoke.yml"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 404, "the hub repository has no spoke workflow");
    let (s, commit, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/commits/{ref}",
        &format!("/repos/{org}/platform-hub/commits/main"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{commit}");
    let sha = commit["sha"].as_str().unwrap().to_owned();
    let (_, props, _) = call(
        &env,
        &api,
        M::GET,
        "/orgs/{org}/properties/values",
        &format!("/orgs/{org}/properties/values"),
        t,
        None,
    )
    .await;
    assert!(props
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["properties"][0]["value"] == "core"));
    call(&env, &api, M::GET, "/rate_limit", "/rate_limit", t, None).await;

    // Dispatch with and without run details, the run, the lists, cancel.
    let path = format!("/repos/{org}/svc-0001/actions/workflows/spokehub-spoke.yml/dispatches");
    let tpl = "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches";
    let (s, details, _) = call(&env, &api, M::POST, tpl, &path, t,
        Some(json!({"ref": "main", "inputs": Env::spoke_inputs("h1", 1), "return_run_details": true}))).await;
    assert_eq!(s, 200);
    let run_id = details["workflow_run_id"].as_u64().unwrap();
    let (s, _, _) = call(
        &env,
        &api,
        M::POST,
        tpl,
        &path,
        t,
        Some(json!({"ref": "main", "inputs": Env::spoke_inputs("h1", 2)})),
    )
    .await;
    assert_eq!(s, 204);
    let (_, run, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/actions/runs/{run_id}",
        &format!("/repos/{org}/svc-0001/actions/runs/{run_id}"),
        t,
        None,
    )
    .await;
    assert_eq!(run["display_title"], "spokehub bump [h1#1]");
    let (_, list, _) = call(&env, &api, M::GET, "/repos/{owner}/{repo}/actions/runs", &format!("/repos/{org}/svc-0001/actions/runs?event=workflow_dispatch&created=%3E%3D2020-01-01T00:00:00Z"), t, None).await;
    assert_eq!(list["total_count"], 2);
    let (_, list, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs",
        &format!("/repos/{org}/svc-0001/actions/workflows/spokehub-spoke.yml/runs?per_page=1"),
        t,
        None,
    )
    .await;
    assert_eq!(list["workflow_runs"].as_array().unwrap().len(), 1);
    let (s, _, _) = call(
        &env,
        &api,
        M::POST,
        tpl,
        &format!("/repos/{org}/svc-0003/actions/workflows/spokehub-spoke.yml/dispatches"),
        t,
        Some(json!({"ref": "main", "inputs": Env::spoke_inputs("h1", 1)})),
    )
    .await;
    assert_eq!(s, 204);
    let third = env
        .wait_state("third run", |s| {
            s["workflow_runs"].as_array().unwrap().len() == 3
        })
        .await;
    let third_id = third["workflow_runs"][2]["id"].as_u64().unwrap();
    let cancel_tpl = "/repos/{owner}/{repo}/actions/runs/{run_id}/cancel";
    let cancel_path = format!("/repos/{org}/svc-0003/actions/runs/{third_id}/cancel");
    let (s, _, _) = call(&env, &api, M::POST, cancel_tpl, &cancel_path, t, None).await;
    assert_eq!(s, 202);
    let (s, _, _) = call(&env, &api, M::POST, cancel_tpl, &cancel_path, t, None).await;
    assert_eq!(s, 409);

    // Repository dispatch, check runs.
    let (s, _, _) = call(
        &env,
        &api,
        M::POST,
        "/repos/{owner}/{repo}/dispatches",
        &format!("/repos/{org}/platform-hub/dispatches"),
        t,
        Some(json!({"event_type": "ping", "client_payload": {"a": 1}})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _, _) = call(
        &env,
        &api,
        M::POST,
        "/repos/{owner}/{repo}/dispatches",
        &format!("/repos/{org}/platform-hub/dispatches"),
        t,
        Some(json!({"event_type": ""})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, cr, _) = call(&env, &api, M::POST, "/repos/{owner}/{repo}/check-runs", &format!("/repos/{org}/platform-hub/check-runs"), t,
        Some(json!({"name": "spokehub", "head_sha": sha, "status": "in_progress", "external_id": "run-1",
                    "details_url": "https://hub.example/runs/1",
                    "output": {"title": "Running", "summary": "0/3"},
                    "actions": [{"label": "Re-run failed", "description": "Re-run failed spokes", "identifier": "rerun_failed"}]}))).await;
    assert_eq!(s, 201);
    let cid = cr["id"].as_u64().unwrap();
    let (s, done, _) = call(&env, &api, M::PATCH, "/repos/{owner}/{repo}/check-runs/{check_run_id}", &format!("/repos/{org}/platform-hub/check-runs/{cid}"), t,
        Some(json!({"conclusion": "failure", "output": {"title": "Done", "summary": "1 failed", "text": "| repo |"}}))).await;
    assert_eq!((s, done["status"].as_str()), (200, Some("completed")));
    let (_, list, _) = call(
        &env,
        &api,
        M::GET,
        "/repos/{owner}/{repo}/commits/{ref}/check-runs",
        &format!("/repos/{org}/platform-hub/commits/{sha}/check-runs"),
        t,
        None,
    )
    .await;
    assert_eq!(list["total_count"], 1);
    let r = env
        .http
        .get(env.url(&format!("/repos/{org}/platform-hub/check-runs/{cid}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The person clicks: hub run, a check-run button, re-run.
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(&json!({"inputs": {"task": "bump", "targets": "svc-*"}, "sender": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url(&format!("/_emulator/check-runs/{cid}/request-action")))
        .json(&json!({"identifier": "rerun_failed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url(&format!("/_emulator/check-runs/{cid}/rerequest")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Webhooks: every kind arrives and validates.
    let hooks = env
        .hooks
        .wait_for("all events", |l| {
            let has = |e: &str, a: &str| {
                l.iter()
                    .any(|h| h.event == e && (a.is_empty() || h.json["action"] == a))
            };
            has("workflow_run", "requested")
                && has("workflow_run", "in_progress")
                && has("workflow_run", "completed")
                && has("repository_dispatch", "spoke_complete")
                && has("repository_dispatch", "ping")
                && has("workflow_dispatch", "")
                && has("check_run", "requested_action")
                && has("check_run", "rerequested")
                && l.iter()
                    .filter(|h| h.event == "workflow_run" && h.json["action"] == "completed")
                    .count()
                    >= 4
        })
        .await;
    for h in &hooks {
        check_hook(h);
    }

    // Deliveries: list, one, redeliver.
    let (_, deliveries, _) = call(
        &env,
        &api,
        M::GET,
        "/app/hook/deliveries",
        "/app/hook/deliveries?per_page=5",
        Some(&jwt),
        None,
    )
    .await;
    let first = deliveries[0]["id"].as_u64().unwrap();
    call(
        &env,
        &api,
        M::GET,
        "/app/hook/deliveries/{delivery_id}",
        &format!("/app/hook/deliveries/{first}"),
        Some(&jwt),
        None,
    )
    .await;
    let (s, _, _) = call(
        &env,
        &api,
        M::POST,
        "/app/hook/deliveries/{delivery_id}/attempts",
        &format!("/app/hook/deliveries/{first}/attempts"),
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(s, 202);
    // The conversion takes a code from the new-App page (single use).
    let manifest = json!({"name": "x", "url": "https://h.example",
        "hook_attributes": {"url": "https://h.example/webhook"},
        "redirect_url": "http://127.0.0.1:9/callback"});
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(env.url("/organizations/acme/settings/apps/new"))
        .form(&[("manifest", manifest.to_string()), ("state", "s1".into())])
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let (s, conv, _) = call(
        &env,
        &api,
        M::POST,
        "/app-manifests/{code}/conversions",
        &format!("/app-manifests/{code}/conversions"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(conv["id"], env.emu.app_id);
    env.emu.shutdown().await;
}

/// A request with an optional `X-GitHub-Api-Version`; (status, body, headers).
async fn send_versioned(
    env: &Env,
    method: Method,
    path: &str,
    auth: &str,
    version: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut rb = env.http.request(method, env.url(path)).bearer_auth(auth);
    if let Some(v) = version {
        rb = rb.header("X-GitHub-Api-Version", v);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, v, headers)
}

fn selected(h: &reqwest::header::HeaderMap) -> Option<&str> {
    h.get("x-github-api-version-selected")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn api_versions_are_selected_echoed_and_refused_like_github() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\nduration_ms = [5, 10]\n",
    ))
    .await;
    let api = OpenApi::load();
    let jwt = env.jwt();
    let token = env.token().await;
    use Method as M;

    // Absent: 2022-11-28. Either known version is echoed, on successes and on errors.
    for (asked, echoed) in [
        (None, "2022-11-28"),
        (Some("2022-11-28"), "2022-11-28"),
        (Some("2026-03-10"), "2026-03-10"),
    ] {
        let (s, app, h) = send_versioned(&env, M::GET, "/app", &jwt, asked, None).await;
        assert_eq!(s, 200, "{asked:?}");
        api.check("GET", "/app", 200, &app);
        assert_eq!(selected(&h), Some(echoed), "{asked:?}");
        let (s, _, h) = send_versioned(&env, M::GET, "/repos/acme/nope", &token, asked, None).await;
        assert_eq!((s, selected(&h)), (404, Some(echoed)), "{asked:?}");
    }

    // Any other version: GitHub's 400, with no version selected.
    let (s, e, h) = send_versioned(&env, M::GET, "/app", &jwt, Some("v3"), None).await;
    assert_eq!(s, 400);
    api.check_schema("basic-error", &e);
    assert_eq!(
        e,
        json!({
            "message": "Bad Request",
            "errors": "The version you specified in the \"X-GitHub-API-Version\" request header, \"v3\", is not a supported version. The following versions are currently supported: \"2026-03-10\" (most recent) and \"2022-11-28\".",
            "documentation_url": "https://docs.github.com/rest",
            "status": "400",
        })
    );
    assert_eq!(selected(&h), None);
    assert!(h.contains_key("x-github-request-id"));

    // Dispatch: 2022-11-28 answers 204 without `return_run_details`; 2026-03-10 always answers
    // 200 with the run details and ignores the field whatever its value.
    let path = "/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml/dispatches";
    let tpl = "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches";
    let body = |n: u32, extra: Option<bool>| {
        let mut b = json!({"ref": "main", "inputs": Env::spoke_inputs("v", n)});
        if let Some(x) = extra {
            b["return_run_details"] = json!(x);
        }
        b
    };
    let (s, v, h) = send_versioned(&env, M::POST, path, &token, None, Some(body(1, None))).await;
    assert_eq!(
        (s, &v, selected(&h)),
        (204, &Value::Null, Some("2022-11-28"))
    );
    api.check_version("2022-11-28", "POST", tpl, s, &v);
    let mut run_ids = Vec::new();
    for (n, flag) in [(2, None), (3, Some(false)), (4, Some(true))] {
        let (s, v, h) = send_versioned(
            &env,
            M::POST,
            path,
            &token,
            Some("2026-03-10"),
            Some(body(n, flag)),
        )
        .await;
        assert_eq!(
            (s, selected(&h)),
            (200, Some("2026-03-10")),
            "{flag:?}: {v}"
        );
        api.check_version("2026-03-10", "POST", tpl, s, &v);
        let id = v["workflow_run_id"].as_u64().unwrap();
        assert_eq!(
            v["run_url"],
            env.url(&format!("/repos/acme/svc-0001/actions/runs/{id}"))
        );
        run_ids.push(id);
    }
    let state = env.state().await;
    let titles: Vec<String> = run_ids
        .iter()
        .map(|id| {
            state["workflow_runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"].as_u64() == Some(*id))
                .map(|r| r["display_title"].as_str().unwrap().to_owned())
                .unwrap()
        })
        .collect();
    assert_eq!(
        titles,
        [
            "spokehub bump [v#2]",
            "spokehub bump [v#3]",
            "spokehub bump [v#4]"
        ],
        "each answer names the run its own dispatch created"
    );
    // The emulator records which version each request selected (the refused one selected none).
    let summary = env.summary().await;
    let by_version = &summary["requests_by_api_version"];
    assert_eq!(by_version["2026-03-10"], 5, "{by_version}");
    assert!(by_version.as_object().unwrap().len() == 2, "{by_version}");

    // GitHub Enterprise Server 3.20 predates 2026-03-10.
    let ghes = start(scenario("[org]\nrepos = 1\n[faults]\nghes_3_20 = true\n")).await;
    let (s, e, _) =
        send_versioned(&ghes, M::GET, "/app", &ghes.jwt(), Some("2026-03-10"), None).await;
    assert_eq!(s, 400);
    assert!(
        e["errors"]
            .as_str()
            .unwrap()
            .ends_with("currently supported: \"2022-11-28\" (most recent)."),
        "{e}"
    );
    ghes.emu.shutdown().await;
    env.emu.shutdown().await;
}

#[tokio::test]
async fn check_run_webhooks_always_carry_a_details_url() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let api = OpenApi::load();
    let t = env.token().await;
    let sha = env.state().await["repos"][0]["head_sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let homepage = env.url("/apps/spokehub");
    let create = |details: Option<&str>| {
        let mut b = json!({"name": "n", "head_sha": sha, "status": "completed",
            "conclusion": "failure", "output": {"title": "t", "summary": "s"},
            "actions": [{"label": "Re-run", "description": "d", "identifier": "rerun"}]});
        if let Some(d) = details {
            b["details_url"] = json!(d);
        }
        b
    };
    let mut ids = Vec::new();
    for details in [None, Some("https://hub.example/runs/7")] {
        let (s, cr, _) = call(
            &env,
            &api,
            Method::POST,
            "/repos/{owner}/{repo}/check-runs",
            "/repos/acme/svc-0001/check-runs",
            Some(&t),
            Some(create(details)),
        )
        .await;
        assert_eq!(s, 201);
        let id = cr["id"].as_u64().unwrap();
        assert_eq!(cr["app"]["external_url"], homepage);
        let want = details.map(str::to_owned).unwrap_or(homepage.clone());
        assert_eq!(cr["details_url"], want, "REST");
        let (s, got, _) = send_versioned(
            &env,
            Method::GET,
            &format!("/repos/acme/svc-0001/check-runs/{id}"),
            &t,
            None,
            None,
        )
        .await;
        assert_eq!(s, 200);
        api.check_schema("check-run", &got);
        assert_eq!(got["details_url"], want, "REST read");
        for what in ["rerequest", "request-action"] {
            let r = env
                .http
                .post(env.url(&format!("/_emulator/check-runs/{id}/{what}")))
                .json(&json!({"identifier": "rerun"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{what}");
        }
        ids.push((id, want));
    }
    let hooks = env
        .hooks
        .wait_for("8 check_run webhooks", |l| {
            l.iter().filter(|h| h.event == "check_run").count() == 8
        })
        .await;
    for h in hooks.iter().filter(|h| h.event == "check_run") {
        check_hook(h);
        let id = h.json["check_run"]["id"].as_u64().unwrap();
        let want = &ids.iter().find(|(i, _)| *i == id).unwrap().1;
        assert_eq!(
            h.json["check_run"]["details_url"], *want,
            "{} {}",
            h.event, h.json["action"]
        );
    }
    let mut actions: Vec<&str> = hooks
        .iter()
        .filter(|h| h.json["check_run"]["id"].as_u64() == Some(ids[0].0))
        .map(|h| h.json["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        ["completed", "created", "requested_action", "rerequested"]
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_workflow_is_read_by_file_name_or_id() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let t = env.token().await;
    let (s, by_name, h) = send_versioned(
        &env,
        Method::GET,
        "/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml",
        &t,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{by_name}");
    assert!(h.contains_key("x-ratelimit-remaining"));
    // GitHub's "Get a workflow" shape is the webhook `workflow` object.
    check_webhook("common", "workflow.schema.json", &by_name);
    assert_eq!(by_name["path"], ".github/workflows/spokehub-spoke.yml");
    assert_eq!(by_name["state"], "active");
    let id = by_name["id"].as_u64().unwrap();
    assert_eq!(
        by_name["url"],
        env.url(&format!("/repos/acme/svc-0001/actions/workflows/{id}"))
    );
    let (s, by_id, _) = send_versioned(
        &env,
        Method::GET,
        &format!("/repos/acme/svc-0001/actions/workflows/{id}"),
        &t,
        None,
        None,
    )
    .await;
    assert_eq!((s, &by_id), (200, &by_name));
    for path in [
        "/repos/acme/svc-0001/actions/workflows/nope.yml",
        "/repos/acme/svc-0001/actions/workflows/1",
        "/repos/acme/platform-hub/actions/workflows/spokehub-spoke.yml",
        "/repos/acme/nope/actions/workflows/spokehub-spoke.yml",
    ] {
        let (s, e, _) = send_versioned(&env, Method::GET, path, &t, None, None).await;
        assert_eq!((s, &e["message"]), (404, &json!("Not Found")), "{path}");
    }
    env.emu.shutdown().await;
}
