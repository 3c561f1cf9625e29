//! Check runs: GitHub's limits, updates and annotations; the person's dispatch that waits for one.

mod emulator_support;

use emulator_support::{scenario, start};
use serde_json::{json, Value};

#[tokio::test]
async fn check_run_limits_are_enforced() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let t = env.token().await;
    let sha = env.state().await["repos"][0]["head_sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = env.url("/repos/acme/svc-0001/check-runs");
    let base = json!({"name": "n", "head_sha": sha});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let long = "x".repeat(65_536);
    let act = |l: &str, d: &str, i: &str| json!({"label": l, "description": d, "identifier": i});
    let bad = [
        with("output", json!({"title": "t", "summary": long})),
        with(
            "output",
            json!({"title": "t", "summary": "s", "text": long}),
        ),
        with(
            "output",
            json!({"title": "t", "summary": "s", "annotations": vec![json!({}); 51]}),
        ),
        with(
            "actions",
            json!([
                act("a", "b", "c"),
                act("a", "b", "d"),
                act("a", "b", "e"),
                act("a", "b", "f")
            ]),
        ),
        with("actions", json!([act(&"l".repeat(21), "b", "c")])),
        with("actions", json!([act("a", &"d".repeat(41), "c")])),
        with("actions", json!([act("a", "b", &"i".repeat(21))])),
        with("status", json!("completed")),
        with(
            "head_sha",
            json!("0000000000000000000000000000000000000000"),
        ),
        json!({"head_sha": sha}),
    ];
    for b in bad {
        let r = env
            .http
            .post(&url)
            .bearer_auth(&t)
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            422,
            "{}",
            serde_json::to_string(&b)
                .unwrap()
                .chars()
                .take(200)
                .collect::<String>()
        );
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].is_string() && v["documentation_url"].is_string());
    }
    let ok = with(
        "output",
        json!({"title": "t", "summary": "s".repeat(65_535)}),
    );
    let r = env
        .http
        .post(&url)
        .bearer_auth(&t)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    for _ in 0..2 {
        let r = env.http.patch(env.url(&format!("/repos/acme/svc-0001/check-runs/{id}"))).bearer_auth(&t)
            .json(&json!({"output": {"title": "t", "summary": "s", "annotations": vec![json!({}); 50]}})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let st = env.state().await;
    assert_eq!(st["check_runs"][0]["updates"], 2);
    assert_eq!(
        st["check_runs"][0]["annotations_count"], 100,
        "annotations append across updates"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn the_person_dispatch_waits_for_the_check_run_naming_the_hub_run() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let t = env.token().await;
    let hub = env.state().await["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "platform-hub")
        .cloned()
        .unwrap();
    let sha = hub["head_sha"].as_str().unwrap().to_owned();
    let create = |external_id: Option<&str>| {
        let mut b = json!({"name": "spokehub: scan", "head_sha": sha, "status": "in_progress"});
        if let Some(x) = external_id {
            b["external_id"] = json!(x);
        }
        let (http, url, t) = (
            env.http.clone(),
            env.url("/repos/acme/platform-hub/check-runs"),
            t.clone(),
        );
        async move {
            let r = http.post(url).bearer_auth(t).json(&b).send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
        }
    };
    // A check run from before the dispatch is not the new run's.
    create(Some("old-run")).await;
    let dispatch = {
        let (http, url) = (env.http.clone(), env.url("/_emulator/hub/dispatch"));
        tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"inputs": {"task": "scan"}, "wait_for_check_run": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        })
    };
    // The hub (played by this test) hears of the dispatch, then creates its check runs.
    env.hooks
        .wait_for("the workflow_dispatch webhook", |l| {
            l.iter().any(|h| h.event == "workflow_dispatch")
        })
        .await;
    create(None).await;
    let id = create(Some("run-42")).await;
    let answer = dispatch.await.unwrap();
    assert_eq!(answer["hub_run_id"], "run-42", "{answer}");
    assert_eq!(answer["check_run_id"], id);
    assert_eq!(answer["head_sha"], sha.as_str());
    assert!(answer["delivery_id"].is_u64(), "{answer}");

    // Nothing appears: the wait ends at its bound with nulls.
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(
            &json!({"inputs": {"task": "scan"}, "wait_for_check_run": true, "wait_timeout_ms": 50}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        (&answer["hub_run_id"], &answer["check_run_id"]),
        (&Value::Null, &Value::Null),
        "{answer}"
    );
    assert!(answer["workflow_run_id"].is_u64(), "{answer}");
    // Without the flag there is no wait and no such fields.
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(&json!({"inputs": {"task": "scan"}}))
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert!(answer.get("hub_run_id").is_none(), "{answer}");
    for bad in [
        json!({"inputs": {"task": "scan"}, "wait_for_check_run": "yes"}),
        json!({"inputs": {"task": "scan"}, "wait_for_check_run": true, "wait_timeout_ms": -1}),
    ] {
        let r = env
            .http
            .post(env.url("/_emulator/hub/dispatch"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{bad}");
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn the_emulate_banner_names_the_person_endpoints() {
    let env = start(scenario("[org]\nrepos = 1\n")).await;
    let text = spokehub::emulator::banner(
        &env.emu,
        &["http://127.0.0.1:3000/webhook".to_owned()],
        std::path::Path::new(".emulator/app.env"),
    );
    let b = &env.emu.base_url;
    for line in [
        format!("POST {b}/_emulator/hub/dispatch"),
        format!("POST {b}/_emulator/check-runs/{{id}}/request-action"),
        format!("POST {b}/_emulator/check-runs/{{id}}/rerequest"),
        format!("GET  {b}/_emulator/state"),
        "\"wait_for_check_run\": true".to_owned(),
        "hub_run_id".to_owned(),
        "external_id".to_owned(),
        ".emulator/app.env".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    // The banner's dispatch example works as printed.
    let example = text
        .lines()
        .find(|l| l.contains("/_emulator/hub/dispatch"))
        .and_then(|l| l.split_once(" {"))
        .map(|(_, body)| format!("{{{body}"))
        .unwrap();
    let mut body: Value = serde_json::from_str(&example).expect("the example body is JSON");
    body["wait_timeout_ms"] = json!(0);
    let r = env
        .http
        .post(env.url("/_emulator/hub/dispatch"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.emu.shutdown().await;
}
