//! Spoke runs, dispatch validation, callbacks, the person's console and the scenario file.

mod emulator_support;

use emulator_support::{manifest_dir, scenario, start, Env};
use serde_json::{json, Value};
use spokehub::emulator::Scenario;

async fn dispatch(env: &Env, token: &str, repo: &str, body: Value) -> (u16, Value) {
    let r = env
        .http
        .post(env.url(&format!(
            "/repos/{}/{repo}/actions/workflows/spokehub-spoke.yml/dispatches",
            env.emu.org
        )))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

#[tokio::test]
async fn example_scenario_loads_and_bad_scenarios_name_the_key() {
    let path = manifest_dir().join("tests/scenarios/example.toml");
    let sc = Scenario::load(&path).unwrap();
    assert_eq!(sc.org.repo.len(), 3);
    assert_eq!(sc.spoke.seed, Some(42));
    let err = Scenario::from_toml("[faults]\nwebhook_drop = 0.5\n").unwrap_err();
    assert!(err.to_string().contains("webhook_drop"), "{err}");
    let err = Scenario::from_toml("[org]\nrepos = \"many\"\n").unwrap_err();
    assert!(err.to_string().contains("repos"), "{err}");
    assert_eq!(Scenario::generated(1000).org.repos, 1000);

    // It runs: explicit repositories and an explicit workflow file behave as described.
    let env = emulator_support::start(sc).await;
    let t = env.token().await;
    let st = env.state().await;
    let repo = |n: &str| {
        st["repos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(repo("payments")["visibility"], "internal");
    assert_eq!(repo("payments")["properties"]["team"], "payments");
    assert_eq!(repo("legacy")["archived"], true);
    assert_eq!(st["repos"].as_array().unwrap().len(), 5 + 3 + 1);
    let (s, v) = dispatch(
        &env,
        &t,
        "custom",
        json!({"ref": "main", "inputs": {"task": "x"}}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = dispatch(
        &env,
        &t,
        "custom",
        json!({"ref": "main", "inputs": Env::spoke_inputs("h", 1)}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = dispatch(
        &env,
        &t,
        "legacy",
        json!({"ref": "main", "inputs": Env::spoke_inputs("h", 1)}),
    )
    .await;
    assert_eq!(
        (s, v["message"].as_str()),
        (
            422,
            Some("Workflow does not have 'workflow_dispatch' trigger")
        )
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn dispatch_errors_are_githubs() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[[org.repo]]\nname = \"nodisp\"\nspoke_workflow = \"no_dispatch\"\n\
         [[org.repo]]\nname = \"other\"\nspoke_workflow = \"other_inputs\"\n\
         [[org.repo]]\nname = \"bare\"\nspoke_workflow = false\n",
    ))
    .await;
    let t = env.token().await;
    let ok = Env::spoke_inputs("h", 1);
    let cases = [
        (
            "svc-0001",
            json!({"ref": "nope", "inputs": ok}),
            422,
            "No ref found for: nope",
        ),
        (
            "svc-0001",
            json!({"ref": "main", "inputs": {"task": "x", "hub_run_id": "h", "x": "1"}}),
            422,
            "Unexpected inputs provided: [\"x\"]",
        ),
        (
            "svc-0001",
            json!({"ref": "main", "inputs": {"hub_run_id": "h"}}),
            422,
            "Required input 'task' not provided",
        ),
        (
            "nodisp",
            json!({"ref": "main", "inputs": ok}),
            422,
            "Workflow does not have 'workflow_dispatch' trigger",
        ),
        (
            "other",
            json!({"ref": "main", "inputs": ok}),
            422,
            "Unexpected inputs provided",
        ),
        (
            "bare",
            json!({"ref": "main", "inputs": ok}),
            404,
            "Not Found",
        ),
        (
            "missing",
            json!({"ref": "main", "inputs": ok}),
            404,
            "Not Found",
        ),
    ];
    for (repo, body, status, msg) in cases {
        let (s, v) = dispatch(&env, &t, repo, body).await;
        assert_eq!(s, status, "{repo}: {v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{repo}: {v}");
        assert!(v["documentation_url"].is_string());
    }
    let sha = env.state().await["repos"][0]["head_sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = dispatch(&env, &t, "svc-0001", json!({"ref": sha, "inputs": ok})).await;
    assert_eq!(s, 422, "a sha is not a ref: {v}");
    let (s, _) = dispatch(
        &env,
        &t,
        "svc-0001",
        json!({"ref": "refs/heads/main", "inputs": ok}),
    )
    .await;
    assert_eq!(s, 204);
    let many: serde_json::Map<String, Value> =
        (0..26).map(|i| (format!("i{i}"), json!("v"))).collect();
    let (s, v) = dispatch(&env, &t, "svc-0001", json!({"ref": "main", "inputs": many})).await;
    assert_eq!(s, 422, "{v}");
    // Bad JSON is a 400 with GitHub's shape, not a panic.
    let r = env
        .http
        .post(env.url("/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml/dispatches"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Problems parsing JSON");
    assert_eq!(
        env.summary().await["workflow_runs_created"],
        1,
        "only the valid dispatch ran"
    );
    // Like GitHub, a JSON body without a content type is still read.
    let body = json!({"ref": "main", "inputs": Env::spoke_inputs("h", 1)}).to_string();
    let r = env
        .http
        .post(env.url("/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml/dispatches"))
        .bearer_auth(&t)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_spoke_run_completes_and_calls_back_with_its_inputs() {
    let env = start(scenario(
        "[org]\nrepos = 2\n[[org.repo]]\nname = \"svc-0002\"\nconclusion = \"failure\"\n[spoke]\nduration_ms = [5, 20]\n",
    ))
    .await;
    let t = env.token().await;
    let (s, d) = dispatch(
        &env,
        &t,
        "svc-0001",
        json!({"ref": "main", "inputs": Env::spoke_inputs("run-a", 3), "return_run_details": true}),
    )
    .await;
    assert_eq!(s, 200);
    let id = d["workflow_run_id"].as_u64().unwrap();
    assert!(d["html_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/acme/svc-0001/actions/runs/{id}")));
    let (s, _) = dispatch(
        &env,
        &t,
        "svc-0002",
        json!({"ref": "main", "inputs": Env::spoke_inputs("run-a", 1)}),
    )
    .await;
    assert_eq!(s, 204);
    let hooks = env
        .hooks
        .wait_for("two spoke_complete callbacks", |l| {
            l.iter()
                .filter(|h| h.json["action"] == "spoke_complete")
                .count()
                == 2
        })
        .await;
    let cb: Vec<&Value> = hooks
        .iter()
        .filter(|h| h.json["action"] == "spoke_complete")
        .map(|h| &h.json["client_payload"])
        .collect();
    let a = cb.iter().find(|p| p["repo"] == "acme/svc-0001").unwrap();
    assert_eq!(a["hub_run_id"], "run-a");
    assert_eq!(a["status"], "success");
    assert_eq!(a["run_id"], id);
    assert_eq!(a["run_attempt"], 1);
    assert_eq!(a["callback_token"], "cb-run-a-3");
    let b = cb.iter().find(|p| p["repo"] == "acme/svc-0002").unwrap();
    assert_eq!(b["status"], "failure", "forced conclusion");
    // The run went requested -> in_progress -> completed, in that order, per run.
    let actions: Vec<&str> = hooks
        .iter()
        .filter(|h| h.event == "workflow_run" && h.json["workflow_run"]["id"] == id)
        .map(|h| h.json["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["requested", "in_progress", "completed"]);
    let st = env.state().await;
    let run = st["workflow_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap();
    assert_eq!(run["display_title"], "spokehub bump [run-a#3]");
    assert_eq!(run["inputs"]["task"], "bump");
    assert_eq!(run["conclusion"], "success");
    assert_eq!(st["repository_dispatches"].as_array().unwrap().len(), 2);
    // Every hook was signed with the secret.
    for h in &hooks {
        assert_eq!(
            h.signature,
            spokehub::emulator::webhooks::signature(b"test-secret", &h.body)
        );
        assert_eq!(
            h.headers["x-github-hook-installation-target-type"],
            "integration"
        );
        assert!(h.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("GitHub-Hookshot/"));
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn callback_none_sends_only_workflow_run_and_cancel_completes_as_cancelled() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\ncallback = \"none\"\nduration_ms = [60000, 60000]\n",
    ))
    .await;
    let t = env.token().await;
    let (_, d) = dispatch(
        &env,
        &t,
        "svc-0001",
        json!({"ref": "main", "inputs": Env::spoke_inputs("h", 1), "return_run_details": true}),
    )
    .await;
    let id = d["workflow_run_id"].as_u64().unwrap();
    let r = env
        .http
        .post(env.url(&format!("/repos/acme/svc-0001/actions/runs/{id}/cancel")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hooks = env
        .hooks
        .wait_for("completed", |l| {
            l.iter().any(|h| h.json["action"] == "completed")
        })
        .await;
    let done = hooks
        .iter()
        .find(|h| h.json["action"] == "completed")
        .unwrap();
    assert_eq!(done.json["workflow_run"]["conclusion"], "cancelled");
    let st = env.state().await;
    assert_eq!(st["repository_dispatches"].as_array().unwrap().len(), 0);
    assert!(hooks.iter().all(|h| h.event == "workflow_run"));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn runs_filter_by_created_status_event_and_paginate() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\nduration_ms = [60000, 60000]\n",
    ))
    .await;
    let t = env.token().await;
    for i in 0..5 {
        let (s, _) = dispatch(
            &env,
            &t,
            "svc-0001",
            json!({"ref": "main", "inputs": Env::spoke_inputs("h", i)}),
        )
        .await;
        assert_eq!(s, 204);
    }
    let get = |q: &str| {
        let url = env.url(&format!(
            "/repos/acme/svc-0001/actions/workflows/spokehub-spoke.yml/runs?{q}"
        ));
        let http = env.http.clone();
        let t = t.clone();
        async move {
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            (r.json::<Value>().await.unwrap(), link)
        }
    };
    let (v, link) = get("per_page=2&page=1&created=%3E%3D2020-01-01T00:00:00Z").await;
    assert_eq!(v["total_count"], 5);
    assert_eq!(v["workflow_runs"].as_array().unwrap().len(), 2);
    let link = link.unwrap();
    assert!(
        link.contains("page=2>; rel=\"next\"") && link.contains("page=3>; rel=\"last\""),
        "{link}"
    );
    assert!(link.contains("created=%3E%3D2020"), "{link}");
    let (v, _) = get("created=%3E%3D2999-01-01T00:00:00Z").await;
    assert_eq!(v["total_count"], 0);
    let (v, _) = get("created=2000-01-01..2999-01-01").await;
    assert_eq!(v["total_count"], 5);
    let (v, _) = get("status=completed").await;
    assert_eq!(v["total_count"], 0);
    let (v, _) = get("status=queued&event=workflow_dispatch").await;
    assert_eq!(v["total_count"], 5);
    let (v, _) = get("event=push").await;
    assert_eq!(v["total_count"], 0);
    let r = env
        .http
        .get(env.url("/repos/acme/svc-0001/actions/runs?created=yesterday"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn the_person_runs_the_hub_workflow_and_clicks_buttons() {
    let env = start(scenario(
        "[org]\nrepos = 1\n[spoke]\nduration_ms = [5, 10]\n",
    ))
    .await;
    let r = env.http.post(env.url("/_emulator/hub/dispatch"))
        .json(&json!({"workflow": "spokehub-hub.yml", "ref": "main", "inputs": {"task": "bump", "dry_run": true}, "sender": "alice"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["workflow_run_id"].is_u64());
    let hooks = env
        .hooks
        .wait_for("workflow_dispatch", |l| {
            l.iter().any(|h| h.event == "workflow_dispatch")
        })
        .await;
    let wd = &hooks
        .iter()
        .find(|h| h.event == "workflow_dispatch")
        .unwrap()
        .json;
    assert_eq!(wd["inputs"]["task"], "bump");
    assert_eq!(wd["inputs"]["dry_run"], "true");
    assert_eq!(wd["ref"], "refs/heads/main");
    assert_eq!(wd["workflow"], ".github/workflows/spokehub-hub.yml");
    assert_eq!(wd["sender"]["login"], "alice");
    assert_eq!(wd["repository"]["full_name"], env.emu.hub_repo);
    assert_eq!(wd["installation"]["id"], env.emu.installation_id);
    let first = &env.state().await["webhook_deliveries"][0];
    assert_eq!(
        first["event"], "workflow_dispatch",
        "sent before workflow_run.requested"
    );
    // Unknown inputs are refused like GitHub's form would.
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(&json!({"inputs": {"task": "x", "bogus": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // A check run with a button; clicking it and re-running it.
    let t = env.token().await;
    let sha = env.state().await["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["full_name"] == env.emu.hub_repo)
        .unwrap()["head_sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env.http.post(env.url(&format!("/repos/{}/check-runs", env.emu.hub_repo))).bearer_auth(&t)
        .json(&json!({"name": "spokehub", "head_sha": sha, "actions": [{"label": "Re-run failed", "description": "d", "identifier": "rerun"}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let cid = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let r = env
        .http
        .post(env.url(&format!("/_emulator/check-runs/{cid}/request-action")))
        .json(&json!({"identifier": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = env
        .http
        .post(env.url(&format!("/_emulator/check-runs/{cid}/rerequest")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "not completed yet");
    let r = env
        .http
        .post(env.url(&format!("/_emulator/check-runs/{cid}/request-action")))
        .json(&json!({"identifier": "rerun", "sender": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hooks = env
        .hooks
        .wait_for("requested_action", |l| {
            l.iter().any(|h| h.json["action"] == "requested_action")
        })
        .await;
    let ra = &hooks
        .iter()
        .find(|h| h.json["action"] == "requested_action")
        .unwrap()
        .json;
    assert_eq!(ra["requested_action"]["identifier"], "rerun");
    assert_eq!(ra["check_run"]["id"], cid);
    assert_eq!(ra["sender"]["login"], "bob");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn out_dir_gets_app_pem_and_env_and_a_generated_key_works() {
    let dir = tempfile::tempdir().unwrap();
    // No key in the scenario: the emulator generates one.
    let sc = Scenario::from_toml("[org]\nrepos = 1\n").unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emu =
        spokehub::emulator::Emulator::start(l, sc, String::new(), Some(dir.path().to_owned()))
            .await
            .unwrap();
    let env_text = std::fs::read_to_string(dir.path().join("app.env")).unwrap();
    let get = |k: &str| {
        env_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing from app.env"))
            .to_owned()
    };
    assert_eq!(get("SPOKEHUB_APP_ID"), emu.app_id.to_string());
    assert_eq!(get("SPOKEHUB_HUB_REPOSITORY"), emu.hub_repo);
    assert_eq!(get("SPOKEHUB_GITHUB_API_URL"), emu.base_url);
    assert_eq!(get("SPOKEHUB_WEBHOOK_SECRET"), emu.webhook_secret);
    let pem = std::fs::read_to_string(get("SPOKEHUB_PRIVATE_KEY_FILE")).unwrap();
    assert_eq!(pem, emu.private_key_pem);
    assert!(
        !format!("{emu:?}").contains(&emu.webhook_secret),
        "secrets stay out of Debug"
    );
    // A JWT signed with the written key is accepted.
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now - 60, "exp": now + 540, "iss": emu.app_id}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/app", emu.base_url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_seed_makes_outcomes_reproducible() {
    async fn outcomes() -> Vec<String> {
        let env = start(scenario(
            "[org]\nrepos = 1\n[spoke]\nseed = 99\nfailure_rate = 0.5\nduration_ms = [1, 5]\ncallback = \"none\"\n",
        ))
        .await;
        let t = env.token().await;
        for i in 0..12 {
            let (s, _) = dispatch(
                &env,
                &t,
                "svc-0001",
                json!({"ref": "main", "inputs": Env::spoke_inputs("s", i)}),
            )
            .await;
            assert_eq!(s, 204);
        }
        let st = env
            .wait_state("all completed", |s| {
                s["workflow_runs_by_status"]["completed"] == 12
            })
            .await;
        env.emu.shutdown().await;
        st["workflow_runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["conclusion"].as_str().unwrap().to_owned())
            .collect()
    }
    let a = outcomes().await;
    assert_eq!(a, outcomes().await);
    assert!(
        a.iter().any(|c| c == "failure") && a.iter().any(|c| c == "success"),
        "{a:?}"
    );
}

#[tokio::test]
async fn repository_dispatch_limits_are_githubs() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let t = env.token().await;
    let post = |body: Value| {
        let rb = env
            .http
            .post(env.url("/repos/acme/platform-hub/dispatches"))
            .bearer_auth(&t)
            .json(&body);
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    let eleven: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("k{i}"), json!(i))).collect();
    let ten: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_eq!(post(json!({"event_type": "x".repeat(101)})).await, 422);
    assert_eq!(post(json!({"event_type": "x".repeat(100)})).await, 204);
    assert_eq!(
        post(json!({"client_payload": {}})).await,
        422,
        "event_type missing"
    );
    assert_eq!(
        post(json!({"event_type": "e", "client_payload": eleven})).await,
        422
    );
    assert_eq!(
        post(json!({"event_type": "e", "client_payload": ten})).await,
        204
    );
    assert_eq!(
        post(json!({"event_type": "e", "client_payload": {"big": "x".repeat(70_000)}})).await,
        422
    );
    assert_eq!(
        post(json!({"event_type": "e", "client_payload": [1]})).await,
        422
    );
    let st = env.state().await;
    assert_eq!(st["repository_dispatches"].as_array().unwrap().len(), 2);
    assert_eq!(st["repository_dispatches"][1]["client_payload"]["k9"], 9);
    env.emu.shutdown().await;
}
