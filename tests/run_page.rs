//! The run page over HTTP: signing in with GitHub (the emulator's OAuth web flow), who sees
//! which run, the buttons' CSRF and write-access checks, token refresh, and escaping. The
//! browser's side (live updates, scripts that must not run) is in `browser.rs`.

mod common;

use common::web::{csrf_of, get, location, set_cookie, sign_in};
use common::{scenario, World, FAST_HUB};
use reqwest::header::{COOKIE, ORIGIN};
use reqwest::StatusCode;
use serde_json::json;
use spokehub::hub::{RunStatus, SpokeStatus};

fn page_scenario(extra: &str) -> String {
    scenario(
        4,
        &format!(
            r#"
[[org.repo]]
name = "svc-0002"
conclusion = "failure"
summary = "**3 files** changed"
{extra}"#
        ),
    )
}

#[tokio::test]
async fn the_details_link_asks_to_sign_in_and_then_shows_the_run() {
    let world = World::start_with_page(&page_scenario(""), FAST_HUB).await;
    let report = world
        .run_to_completion(
            json!({"task": "scan", "params": "{\"note\": \"<img src=x onerror=alert(1)>\"}"}),
        )
        .await;
    let hub = world.hub_url();
    let details = world.check_run(&report).await["details_url"]
        .as_str()
        .expect("a details link")
        .to_owned();
    assert_eq!(details, format!("{hub}/runs/{}", report.run.id));

    // Not signed in: to the sign-in, and back to this run afterwards.
    let anonymous = common::web::client().get(&details).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    let to = location(&anonymous);
    assert!(to.starts_with("/auth/login?return_to=%2Fruns%2F"), "{to}");

    let (session, landed) = sign_in(&hub, "octocat", &format!("/runs/{}", report.run.id)).await;
    assert_eq!(landed, format!("/runs/{}", report.run.id));
    let page = get(&details, &session).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("img-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    for repo in [
        "acme/svc-0001",
        "acme/svc-0002",
        "acme/svc-0003",
        "acme/svc-0004",
    ] {
        assert!(html.contains(repo), "{repo} missing");
    }
    assert!(html.contains("Signed in as <strong>octocat</strong>"));
    assert!(
        html.contains("id=\"rerun-failed\""),
        "the writer sees Re-run failed"
    );
    assert!(
        html.contains("<strong>3 files</strong> changed"),
        "the summary renders as Markdown"
    );
    // Parameters are shown as text, never as markup.
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains("<img src=x"));
    // The session never shows its tokens.
    assert!(!html.contains("ghu_") && !html.contains("ghr_"));

    // The list shows the run.
    let list = get(&format!("{hub}/runs"), &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(&format!("/runs/{}", report.run.id)));
}

#[tokio::test]
async fn people_without_access_get_the_same_404_as_an_unknown_run() {
    let world = World::start_with_page(&page_scenario(""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    let hub = world.hub_url();
    let run_url = format!("{hub}/runs/{}", report.run.id);

    let (outsider, _) = sign_in(&hub, "outsider", "/runs").await;
    let hidden = get(&run_url, &outsider).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    let hidden = hidden.text().await.unwrap();
    let unknown = get(
        &format!("{hub}/runs/00000000-0000-4000-8000-000000000000"),
        &outsider,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.text().await.unwrap(),
        hidden,
        "a hidden run looks unknown"
    );
    assert!(!hidden.contains("platform-hub") && !hidden.contains("scan"));
    for path in ["fragment", "live"] {
        let r = get(&format!("{run_url}/{path}"), &outsider).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let list = get(&format!("{hub}/runs"), &outsider)
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains("No runs you can see"));
    assert!(!list.contains(&report.run.id.to_string()));

    // A reader sees the run but no buttons, and cannot press them anyway.
    let (reader, _) = sign_in(&hub, "mona", "/runs").await;
    let page = get(&run_url, &reader).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(!html.contains("id=\"rerun-failed\""));
    let csrf = csrf_of(&html);
    let pressed = common::web::client()
        .post(format!("{run_url}/rerun-failed"))
        .header(COOKIE, &reader)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::FORBIDDEN);
    assert!(pressed.text().await.unwrap().contains("need write access"));
    let after = world.report(&report.run.id).await;
    assert_eq!(after.run.status, RunStatus::Completed, "nothing was re-run");
}

#[tokio::test]
async fn buttons_need_the_pages_own_form_and_write_access() {
    let world = World::start_with_page(
        &page_scenario("[[org.repo]]\nname = \"svc-0003\"\nstuck = true\n"),
        FAST_HUB,
    )
    .await;
    world.press_run_workflow(json!({"task": "scan"})).await;
    let id = loop {
        // Wait for the run's spokes to be dispatched (the stuck one keeps it active).
        if let Ok(Some(id)) = world.hub.engine.store().latest_run_id().await {
            let r = world.report(&id).await;
            if r.spokes.iter().any(|s| s.status == SpokeStatus::Running) {
                break id;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let hub = world.hub_url();
    let run_url = format!("{hub}/runs/{id}");
    let (session, _) = sign_in(&hub, "octocat", "/runs").await;
    let html = get(&run_url, &session).await.text().await.unwrap();
    assert!(html.contains("id=\"cancel-run\""));
    assert!(html.contains(&format!("data-live=\"/runs/{id}/live\"")));
    let csrf = csrf_of(&html);
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut r = common::web::client()
            .post(format!("{run_url}/cancel"))
            .header(COOKIE, &session)
            .form(&form);
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        r.send()
    };
    assert_eq!(
        post(vec![], None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(vec![("csrf", "forged".into())], None)
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(vec![("csrf", csrf.clone())], Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let run = world.hub.engine.store().run(&id).await.unwrap().unwrap();
    assert!(!run.cancel_requested, "a refused form changed nothing");

    let mut completions = world.hub.engine.subscribe_completions();
    let done = post(vec![("csrf", csrf)], None).await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), format!("/runs/{id}"));
    assert_eq!(common::next_completion(&mut completions).await, id);
    let run = world.report(&id).await.run;
    assert_eq!(run.conclusion.as_deref(), Some("cancelled"));
    assert!(run
        .reason
        .unwrap_or_default()
        .contains("octocat on the run page"));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_without_signing_in_again() {
    let world = World::start_with_page(&page_scenario(""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    let hub = world.hub_url();
    let run_url = format!("{hub}/runs/{}", report.run.id);
    let (session, _) = sign_in(&hub, "octocat", "/runs").await;
    let expired = world
        .http
        .post(format!(
            "{}/_emulator/oauth/expire",
            world.emulator.base_url
        ))
        .send()
        .await
        .unwrap();
    assert!(expired.status().is_success());
    // The hub refreshes the expired token and hands the browser the new session.
    let page = get(&run_url, &session).await;
    assert_eq!(page.status(), StatusCode::OK);
    let renewed = set_cookie(&page, "spokehub_session").expect("a renewed session");
    assert_ne!(renewed, session);
    let again = get(&run_url, &renewed).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        set_cookie(&again, "spokehub_session").is_none(),
        "no refresh needed now"
    );
}

#[tokio::test]
async fn sign_in_refuses_a_foreign_state_and_a_used_code() {
    let world = World::start_with_page(&page_scenario(""), FAST_HUB).await;
    let hub = world.hub_url();
    let http = common::web::client();
    let start = http.get(format!("{hub}/auth/login")).send().await.unwrap();
    let cookie = set_cookie(&start, "spokehub_sign_in").unwrap();
    let github = http
        .get(format!("{}&login=octocat", location(&start)))
        .send()
        .await
        .unwrap();
    let callback = location(&github);
    // Without the browser's cookie (a link someone else started), or with another state.
    let no_cookie = http.get(&callback).send().await.unwrap();
    assert_eq!(no_cookie.status(), StatusCode::BAD_REQUEST);
    let forged = callback.replace("state=", "state=forged");
    let forged = http
        .get(&forged)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&forged, "spokehub_session").is_none());
    // The genuine one works once; its code cannot be used again.
    let ok = http
        .get(&callback)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let reused = http
        .get(&callback)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    let text = reused.text().await.unwrap();
    assert!(text.contains("bad_verification_code"), "{text}");
    // A session cookie from elsewhere (not sealed by this hub) is no session.
    let page = get(&format!("{hub}/runs"), "spokehub_session=AAAA").await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let world = World::start_with_page(&page_scenario(""), FAST_HUB).await;
    let hub = world.hub_url();
    let (session, _) = sign_in(&hub, "octocat", "/runs").await;
    let list = get(&format!("{hub}/runs"), &session)
        .await
        .text()
        .await
        .unwrap();
    let out = common::web::client()
        .post(format!("{hub}/auth/logout"))
        .header(COOKIE, &session)
        .form(&[("csrf", csrf_of(&list))])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(
        set_cookie(&out, "spokehub_session").as_deref(),
        Some("spokehub_session=")
    );
}

#[tokio::test]
async fn without_an_oauth_client_the_page_is_off_for_every_run() {
    let world = World::start(&page_scenario(""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    let hub = world.hub_url();
    let known = world
        .http
        .get(format!("{hub}/runs/{}", report.run.id))
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), StatusCode::NOT_FOUND);
    let known = known.text().await.unwrap();
    assert!(known.contains("SPOKEHUB_OAUTH_CLIENT_ID"));
    let unknown = world
        .http
        .get(format!("{hub}/runs/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.text().await.unwrap(), known);
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_it_is_used() {
    // Tokens that live 30 s are always within the hub's refresh margin (60 s).
    let world =
        World::start_with_page(&page_scenario("[oauth]\ntoken_ttl_s = 30\n"), FAST_HUB).await;
    let hub = world.hub_url();
    let (session, _) = sign_in(&hub, "octocat", "/runs").await;
    let list = get(&format!("{hub}/runs"), &session).await;
    assert_eq!(list.status(), StatusCode::OK);
    let renewed = set_cookie(&list, "spokehub_session").expect("a renewed session");
    // The renewed session works in turn.
    let next = get(&format!("{hub}/runs"), &renewed).await;
    assert_eq!(next.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_refresh_of_a_persons_token() {
    // GitHub's refresh tokens work once: two replicas refreshing one person's token at the
    // same moment must not sign them out.
    let Some(url) = common::postgres::fresh_database().await else {
        return;
    };
    // Tokens that live 30 s are always within the refresh margin: every request refreshes.
    let scenario = page_scenario("[oauth]\ntoken_ttl_s = 30\n");
    let world = World::start_full(
        Some(url.clone()),
        &scenario,
        FAST_HUB,
        |c, emulator, addr| {
            c.public_url = Some(format!("http://{addr}/").parse().unwrap());
            c.oauth = Some(spokehub::config::OAuthClient {
                client_id: emulator.oauth_client_id.clone(),
                client_secret: emulator.oauth_client_secret.clone().into(),
            });
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = listener.local_addr().unwrap();
    let mut config = common::hub_config_on(&world.emulator, &url, FAST_HUB, None);
    config.public_url = Some(format!("http://{second_addr}/").parse().unwrap());
    config.oauth = Some(spokehub::config::OAuthClient {
        client_id: world.emulator.oauth_client_id.clone(),
        client_secret: world.emulator.oauth_client_secret.clone().into(),
    });
    let second = spokehub::server::start(config, listener).await.unwrap();
    let (session, _) = sign_in(&world.hub_url(), "octocat", "/runs").await;
    let first_url = format!("{}/runs", world.hub_url());
    let second_url = format!("http://{second_addr}/runs");
    let (a, b) = tokio::join!(get(&first_url, &session), get(&second_url, &session));
    assert_eq!(a.status(), StatusCode::OK, "first replica");
    assert_eq!(b.status(), StatusCode::OK, "second replica");
    let (ca, cb) = (
        set_cookie(&a, "spokehub_session").expect("renewed"),
        set_cookie(&b, "spokehub_session").expect("renewed"),
    );
    // Either renewed session works on either replica afterwards.
    for cookie in [&ca, &cb] {
        assert_eq!(get(&second_url, cookie).await.status(), StatusCode::OK);
        assert_eq!(get(&first_url, cookie).await.status(), StatusCode::OK);
    }
    second.stop().await;
}
