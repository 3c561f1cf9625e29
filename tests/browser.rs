//! The run page in a real headless Chromium: signing in through GitHub's (the emulator's)
//! authorize page, following a live run from its check run's Details link without reloading,
//! filtering to failures, pressing "Re-run failed", a 404 for someone without access, and a
//! hostile spoke summary that must run nothing and load nothing remote. Screenshots land in
//! `target/screenshots/`.

mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::{scenario, World, FAST_HUB};
use fantoccini::Locator;
use serde_json::{json, Value};
use spokehub::hub::HubRunId;

const WAIT: Duration = Duration::from_secs(60);

/// Opens `url`; GitHub's authorize page appears; `login` signs in; back on `url`'s path.
async fn sign_in_at(browser: &Browser, url: &str, login: &str) {
    browser.client.goto(url).await.unwrap();
    browser
        .wait_for(
            "the authorize page",
            &format!("document.getElementById('sign-in-as-{login}')"),
            WAIT,
        )
        .await;
    browser.click(&format!("#sign-in-as-{login}")).await;
    let path = url::Url::parse(url).unwrap().path().to_owned();
    browser
        .wait_for(
            "the page after signing in",
            &format!("location.pathname === '{path}' && document.readyState === 'complete'"),
            WAIT,
        )
        .await;
}

/// The run's Details link once its check run exists.
async fn details_link(world: &World) -> (HubRunId, String) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(id)) = world.hub.engine.store().latest_run_id().await {
            let report = world.report(&id).await;
            if report.run.check_run_id.is_some() {
                let url = world.check_run(&report).await["details_url"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return (id, url);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no check run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(selector: &str) -> String {
    format!("document.querySelectorAll(\"{selector}\").length")
}

#[tokio::test]
async fn sign_in_follow_a_live_run_filter_to_failures_and_rerun_them() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = World::start_with_page(
        &scenario(
            8,
            r#"
[[org.repo]]
name = "svc-0002"
conclusion = "failure"
duration_ms = [2500, 3500]
summary = "Lint **failed**: 2 errors"

[[org.repo]]
name = "svc-0005"
conclusion = "failure"
duration_ms = [2500, 3500]

[[org.repo]]
name = "svc-0007"
duration_ms = [4000, 5000]
summary = "Bumped `serde` to 1.0.219"
"#,
        ),
        FAST_HUB,
    )
    .await;
    world.press_run_workflow(json!({"task": "lint"})).await;
    let (id, details) = details_link(&world).await;
    sign_in_at(&browser, &details, "octocat").await;

    // The run is still going: some spokes are not done yet, and the page follows them.
    let not_done = "#spokes tbody tr:not([data-state=succeeded]):not([data-state=failed])";
    assert!(
        browser.eval(&format!("{} > 0", count(not_done))).await == Value::Bool(true),
        "the page opened after the run ended; nothing to watch"
    );
    browser.screenshot("run-page-live").await;
    browser.eval("(window.__sameDocument = 'yes')").await;
    browser
        .wait_for(
            "the run to complete on the page",
            "document.getElementById('run-status').textContent.indexOf('completed') === 0",
            WAIT,
        )
        .await;
    assert_eq!(
        browser.eval("window.__sameDocument").await,
        json!("yes"),
        "the page reloaded instead of updating"
    );
    assert_eq!(browser.eval(&count(not_done)).await, json!(0));
    assert_eq!(browser.eval(&count("#spokes tbody tr")).await, json!(8));
    assert!(browser
        .eval("document.body.textContent.indexOf('Bumped serde to 1.0.219') >= 0")
        .await
        .as_bool()
        .unwrap());
    browser.screenshot("run-page-completed").await;

    // Problems only.
    browser.click("#problems-only").await;
    browser.click("#apply-filters").await;
    browser
        .wait_for(
            "the failures only",
            &format!(
                "location.search.indexOf('problems=1') >= 0 && {} === 2",
                count("#spokes tbody tr[data-state=failed]")
            ),
            WAIT,
        )
        .await;
    assert_eq!(browser.eval(&count("#spokes tbody tr")).await, json!(2));
    browser.screenshot("run-page-failures").await;

    // Re-run failed: the two failures get a second attempt, the page follows it live again.
    let mut completions = world.hub.engine.subscribe_completions();
    browser.click("#rerun-failed").await;
    assert_eq!(common::next_completion(&mut completions).await, id);
    browser
        .wait_for(
            "the re-run's result on the page",
            "document.getElementById('run-status').textContent.indexOf('completed') === 0 && \
             Array.from(document.querySelectorAll('#spokes tbody tr')).every(function (r) { \
               return r.children[3].textContent === '2'; })",
            WAIT,
        )
        .await;
    let report = world.report(&id).await;
    for s in &report.spokes {
        let expected = if ["svc-0002", "svc-0005"].contains(&s.repo.name()) {
            2
        } else {
            1
        };
        assert_eq!(s.attempt, expected, "{}", s.repo);
    }
    let svc2_runs = world
        .spoke_runs()
        .await
        .into_iter()
        .filter(|r| r["repo"].as_str() == Some("acme/svc-0002"))
        .count();
    assert_eq!(svc2_runs, 2, "svc-0002 was dispatched again");
}

#[tokio::test]
async fn a_person_without_access_gets_404() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = World::start_with_page(&scenario(2, ""), FAST_HUB).await;
    let report = world.run_to_completion(json!({"task": "lint"})).await;
    let url = format!("{}/runs/{}", world.hub_url(), report.run.id);
    sign_in_at(&browser, &url, "outsider").await;
    assert_eq!(
        browser.eval("document.title").await,
        json!("Not found · spokehub")
    );
    assert!(browser
        .eval("document.body.textContent.indexOf('platform-hub') < 0 && document.body.textContent.indexOf('lint') < 0")
        .await
        .as_bool()
        .unwrap());
    browser.screenshot("run-page-not-found").await;
}

#[tokio::test]
async fn a_hostile_spoke_summary_runs_nothing_and_loads_nothing_remote() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // Stands for a remote host: nothing on the page may connect to it.
    let remote = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    remote.set_nonblocking(true).unwrap();
    let remote_addr = remote.local_addr().unwrap();
    let summary = format!(
        "<script>window.__pwned = 'script'</script>\n\n\
         ok <img src=x onerror=\"window.__pwned = 'onerror'\">\n\n\
         [click me](javascript:window.__pwned='link')\n\n\
         ![tracker](http://{remote_addr}/pixel.png)\n\n\
         <iframe src=\"http://{remote_addr}/frame\"></iframe>"
    );
    let world = World::start_with_page(
        &scenario(
            2,
            &format!(
                "[[org.repo]]\nname = \"svc-0001\"\nsummary = {}\n",
                toml_string(&summary)
            ),
        ),
        FAST_HUB,
    )
    .await;
    let report = world.run_to_completion(json!({"task": "lint"})).await;
    let spoke = report
        .spokes
        .iter()
        .find(|s| s.repo.name() == "svc-0001")
        .unwrap();
    assert!(
        spoke.summary.as_deref().unwrap_or("").contains("<script>"),
        "the summary reached the hub"
    );
    let url = format!("{}/runs/{}", world.hub_url(), report.run.id);
    sign_in_at(&browser, &url, "octocat").await;

    let summary_cell = "#spokes tbody tr[data-repo='acme/svc-0001'] td.summary";
    browser
        .wait_for(
            "the summary",
            &format!("document.querySelector(\"{summary_cell}\")"),
            WAIT,
        )
        .await;
    assert_eq!(
        browser.eval("typeof window.__pwned").await,
        json!("undefined")
    );
    assert_eq!(
        browser
            .eval(&count("main script, main img, main iframe"))
            .await,
        json!(0)
    );
    // The link lost its javascript: target; following it does nothing.
    let link = browser
        .client
        .find(Locator::LinkText("click me"))
        .await
        .expect("the link's text is still shown");
    assert_eq!(link.attr("href").await.unwrap().unwrap_or_default(), "");
    link.click().await.unwrap();
    assert_eq!(
        browser.eval("typeof window.__pwned").await,
        json!("undefined")
    );
    // Only the hub's own script and style were loaded.
    let resources = browser
        .eval("performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        .await;
    let origin = world.hub_url();
    for r in resources.as_array().unwrap() {
        assert!(r.as_str().unwrap().starts_with(&origin), "loaded {r}");
    }
    browser.screenshot("run-page-hostile-summary").await;
    assert!(
        remote.accept().is_err(),
        "the page connected to the remote host"
    );
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}
