//! Installation tokens narrowed to repositories and permissions: outside its repositories a
//! token gets GitHub's 404, beyond its permissions GitHub's 403, and GitHub's 422 for a scope
//! the installation cannot give.

mod emulator_support;

use emulator_support::{scenario, start, Env};
use serde_json::{json, Value};

async fn mint(env: &Env, body: Value) -> (u16, Value) {
    let r = env
        .http
        .post(env.url(&format!(
            "/app/installations/{}/access_tokens",
            env.emu.installation_id
        )))
        .bearer_auth(env.jwt())
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn status(
    env: &Env,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> u16 {
    let mut r = env.http.request(method, env.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_narrowed_token_reaches_only_its_repositories_and_permissions() {
    let env = start(scenario("")).await;
    let (s, t) = mint(
        &env,
        json!({"repositories": ["svc-0001"], "permissions": {"contents": "read", "metadata": "read"}}),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["repository_selection"], "selected");
    assert_eq!(t["repositories"].as_array().unwrap().len(), 1);
    assert_eq!(t["repositories"][0]["full_name"], "acme/svc-0001");
    assert_eq!(
        t["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    let token = t["token"].as_str().unwrap().to_owned();
    use reqwest::Method as M;
    assert_eq!(
        status(&env, M::GET, "/repos/acme/svc-0001", &token, None).await,
        200
    );
    assert_eq!(
        status(
            &env,
            M::GET,
            "/repos/acme/svc-0001/contents/README.md",
            &token,
            None
        )
        .await,
        404,
        "no such file (the token may read contents)"
    );
    // Another repository does not exist for this token.
    assert_eq!(
        status(&env, M::GET, "/repos/acme/svc-0002", &token, None).await,
        404
    );
    assert_eq!(
        status(
            &env,
            M::GET,
            "/repos/acme/platform-hub/actions/runs",
            &token,
            None
        )
        .await,
        404
    );
    // Its own repository, beyond its permissions.
    let dispatch = json!({"event_type": "x", "client_payload": {}});
    assert_eq!(
        status(
            &env,
            M::POST,
            "/repos/acme/svc-0001/dispatches",
            &token,
            Some(dispatch)
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &env,
            M::GET,
            "/repos/acme/svc-0001/actions/runs",
            &token,
            None
        )
        .await,
        403
    );
    let listed: Value = env
        .http
        .get(env.url("/installation/repositories"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total_count"], 1);
    assert_eq!(listed["repositories"][0]["name"], "svc-0001");

    // An unnarrowed token still reaches everything.
    let whole = env.token().await;
    assert_eq!(
        status(&env, M::GET, "/repos/acme/svc-0002", &whole, None).await,
        200
    );
}

#[tokio::test]
async fn a_scope_the_installation_cannot_give_is_refused() {
    let env = start(scenario("")).await;
    let (s, _) = mint(&env, json!({"permissions": {"administration": "write"}})).await;
    assert_eq!(s, 422);
    let (s, _) = mint(&env, json!({"permissions": {"metadata": "write"}})).await;
    assert_eq!(s, 422, "the App has metadata read only");
    let (s, _) = mint(&env, json!({"repositories": ["no-such-repo"]})).await;
    assert_eq!(s, 422);
    let many: Vec<String> = (0..501).map(|i| format!("svc-{i:04}")).collect();
    let (s, _) = mint(&env, json!({"repositories": many})).await;
    assert_eq!(s, 422);
    let (s, t) = mint(&env, json!({"repository_ids": [500_000]})).await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["repositories"].as_array().unwrap().len(), 1);
}
