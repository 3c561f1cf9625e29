//! The emulator as GitHub's sign-in: the OAuth web flow's authorize page, code exchange and
//! refresh with GitHub's answers, and what a person's user-to-server token may see.

mod emulator_support;

use emulator_support::{scenario, start, Env, OpenApi};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A code for `login`, through the authorize page's shortcut.
async fn code(env: &Env, login: &str) -> String {
    let r = no_redirects()
        .get(env.url("/login/oauth/authorize"))
        .query(&[
            ("client_id", env.emu.oauth_client_id.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/auth/callback"),
            ("state", "s1"),
            ("login", login),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(to.path(), "/auth/callback");
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "s1");
    q["code"].clone()
}

async fn exchange(env: &Env, form: &[(&str, &str)]) -> Value {
    let mut all = vec![
        ("client_id", env.emu.oauth_client_id.as_str()),
        ("client_secret", env.emu.oauth_client_secret.as_str()),
    ];
    all.extend_from_slice(form);
    let r = env
        .http
        .post(env.url("/login/oauth/access_token"))
        .header("accept", "application/json")
        .form(&all)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GitHub answers token errors with 200 too");
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_authorize_page_offers_the_scenarios_people() {
    let env = start(scenario("")).await;
    let page = env
        .http
        .get(env.url("/login/oauth/authorize"))
        .query(&[
            ("client_id", env.emu.oauth_client_id.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("state", "<x>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for login in ["octocat", "mona", "outsider"] {
        assert!(
            html.contains(&format!("id=\"sign-in-as-{login}\"")),
            "{login}"
        );
    }
    assert!(
        html.contains("&lt;x&gt;") && !html.contains("<x>"),
        "state is escaped"
    );
    let unknown_client = env
        .http
        .get(env.url("/login/oauth/authorize?client_id=Iv1.nope&redirect_uri=http://x/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_client.status(), 404);
}

#[tokio::test]
async fn codes_and_refresh_tokens_work_once_and_need_the_client_secret() {
    let env = start(scenario("")).await;
    let c = code(&env, "octocat").await;
    let wrong_secret = env
        .http
        .post(env.url("/login/oauth/access_token"))
        .header("accept", "application/json")
        .form(&[
            ("client_id", env.emu.oauth_client_id.as_str()),
            ("client_secret", "wrong"),
            ("code", c.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(wrong_secret["error"], "incorrect_client_credentials");
    let tokens = exchange(&env, &[("code", &c)]).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("ghu_"));
    assert!(tokens["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("ghr_"));
    assert_eq!(tokens["expires_in"], 28800);
    assert_eq!(tokens["token_type"], "bearer");
    let again = exchange(&env, &[("code", &c)]).await;
    assert_eq!(again["error"], "bad_verification_code");

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let renewed = exchange(
        &env,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert!(renewed["access_token"]
        .as_str()
        .unwrap()
        .starts_with("ghu_"));
    let reused = exchange(
        &env,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(reused["error"], "bad_refresh_token");

    // Without `Accept: application/json`, the answer is form-encoded, as GitHub's is.
    let c2 = code(&env, "mona").await;
    let form = env
        .http
        .post(env.url("/login/oauth/access_token"))
        .form(&[
            ("client_id", env.emu.oauth_client_id.as_str()),
            ("client_secret", env.emu.oauth_client_secret.as_str()),
            ("code", c2.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.starts_with("access_token=ghu_"), "{form}");

    // Expired tokens are refused; GET /user names the person while the token lives.
    let user = env
        .http
        .get(env.url("/user"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    let user: Value = user.json().await.unwrap();
    assert_eq!(user["login"], "octocat");
    assert_eq!(user["type"], "User");
    env.http
        .post(env.url("/_emulator/oauth/expire"))
        .send()
        .await
        .unwrap();
    let expired = env
        .http
        .get(env.url("/user"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
}

async fn user_token(env: &Env, login: &str) -> String {
    let c = code(env, login).await;
    exchange(env, &[("code", &c)]).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_user_token_sees_only_what_its_person_may_read() {
    let env = start(scenario(
        r#"
[[users]]
login = "dev"
read = ["platform-hub"]
write = ["svc-0001"]

[[users]]
login = "nobody"
"#,
    ))
    .await;
    let api = OpenApi::load();
    let org = env.emu.org.clone();
    let dev = user_token(&env, "dev").await;
    let get = |path: String, token: String| {
        let env = &env;
        async move {
            let r = env
                .http
                .get(env.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, hub) = get(format!("/repos/{org}/platform-hub"), dev.clone()).await;
    assert_eq!(s, 200);
    api.check("GET", "/repos/{owner}/{repo}", s, &hub);
    assert_eq!(
        hub["permissions"],
        json!({"admin": false, "maintain": false, "push": false, "triage": false, "pull": true})
    );
    let (s, own) = get(format!("/repos/{org}/svc-0001"), dev.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(own["permissions"]["push"], true);
    let (s, _) = get(format!("/repos/{org}/svc-0002"), dev.clone()).await;
    assert_eq!(
        s, 404,
        "a repository the person cannot read does not exist for them"
    );
    let nobody = user_token(&env, "nobody").await;
    let (s, _) = get(format!("/repos/{org}/platform-hub"), nobody).await;
    assert_eq!(s, 404);
    // A user token is for signing in: other routes refuse it.
    let (s, _) = get(format!("/repos/{org}/svc-0001/actions/runs"), dev.clone()).await;
    assert_eq!(s, 403);
    // And an installation token cannot ask who "the user" is.
    let installation = env.token().await;
    let (s, body) = get("/user".into(), installation).await;
    assert_eq!(s, 403);
    assert_eq!(body["message"], "Resource not accessible by integration");
}

#[tokio::test]
async fn the_redirect_uri_must_be_a_registered_callback_or_below_it() {
    let env = start(scenario(
        "[oauth]\ncallback_urls = [\"http://127.0.0.1:9/auth/callback\"]\n",
    ))
    .await;
    let authorize = |redirect: &str| {
        let env = &env;
        let redirect = redirect.to_owned();
        async move {
            no_redirects()
                .get(env.url("/login/oauth/authorize"))
                .query(&[
                    ("client_id", env.emu.oauth_client_id.as_str()),
                    ("redirect_uri", redirect.as_str()),
                    ("state", "s"),
                    ("login", "octocat"),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(authorize("http://127.0.0.1:9/auth/callback").await, 302);
    assert_eq!(
        authorize("http://127.0.0.1:9/auth/callback/more").await,
        302
    );
    for refused in [
        "http://evil.example/auth/callback",
        "http://127.0.0.1:10/auth/callback",
        "https://127.0.0.1:9/auth/callback",
        "http://127.0.0.1:9/auth/callbackx",
        "http://127.0.0.1:9/other",
    ] {
        assert_eq!(authorize(refused).await, 400, "{refused}");
    }
    // More can be registered, as on the App's settings page.
    let r = env
        .http
        .post(env.url("/_emulator/oauth/callbacks"))
        .json(&json!({"urls": ["http://hub.example/auth/callback"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(authorize("http://hub.example/auth/callback").await, 302);
}
