//! Check runs: GitHub's limits, updates and annotations.

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
