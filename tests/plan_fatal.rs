//! Planning errors that retrying cannot fix end the run with the error, at once, instead of
//! planning again forever.

mod common;

use common::{next_completion, scenario, World, FAST_HUB};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_repository_name_in_the_listing_ends_the_run_with_the_error() {
    // GitHub would never list this name; a proxy or a broken GHES might.
    let world = World::start(
        &scenario(2, "[[org.repo]]\nname = \"bad name!\"\n"),
        FAST_HUB,
    )
    .await;
    let mut completions = world.hub.engine.subscribe_completions();
    world.press_run_workflow(json!({"task": "scan"})).await;
    let id = next_completion(&mut completions).await;
    let report = world.report(&id).await;
    assert_eq!(report.run.conclusion.as_deref(), Some("failure"));
    let reason = report.run.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("/installation/repositories") && reason.contains("bad name!"),
        "{reason}"
    );
    assert_eq!(report.totals.total, 0, "nothing was planned");
    let check = world.check_run(&report).await;
    assert_eq!(check["conclusion"], "failure", "{check}");
    let summary = check["output"]["summary"].as_str().unwrap();
    assert!(summary.contains("bad name"), "{summary}");
    assert!(
        world.spoke_runs().await.is_empty(),
        "nothing was dispatched"
    );
}
