//! `spokehub status` reads the database `serve` uses (from `spokehub.toml` or the environment),
//! says "dry run" for dry runs, lists every problem spoke, and never creates a database.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{scenario, World, FAST_HUB};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_spokehub");

fn status(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("status")
        .args(args)
        .current_dir(dir)
        .env_remove("SPOKEHUB_DATABASE_URL")
        .env_remove("SPOKEHUB_CONFIG")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn db_url(world: &World) -> String {
    format!("sqlite://{}", world.dir.path().join("hub.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_each_problem_spoke_with_reason_attempt_and_run_link() {
    let world = World::start(
        &scenario(
            3,
            "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n\
             [[org.repo]]\nname = \"nodisp\"\nspoke_workflow = \"no_dispatch\"\n",
        ),
        FAST_HUB,
    )
    .await;
    let report = world
        .run_to_completion(
            json!({"task": "scan", "targets": "name:broken name:nodisp name:svc-0001"}),
        )
        .await;
    assert_eq!(report.totals.failed, 1, "{:?}", report.totals);
    assert_eq!(report.totals.dispatch_failed, 1, "{:?}", report.totals);
    let id = report.run.id.to_string();
    let url = db_url(&world);
    let o = status(world.dir.path(), &[&id], &[("SPOKEHUB_DATABASE_URL", &url)]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("2 problem spokes"), "{text}");
    let broken = report
        .spokes
        .iter()
        .find(|s| s.repo.name() == "broken")
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("acme/broken"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("failed")
            && line.contains("attempt 1")
            && line.contains(broken.run_url.as_deref().unwrap()),
        "{line}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("acme/nodisp"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("dispatch failed") && line.contains("workflow_dispatch"),
        "{line}"
    );
    assert!(!text.contains("acme/svc-0001"), "only problems: {text}");

    let o = status(
        world.dir.path(),
        &[&id, "--json"],
        &[("SPOKEHUB_DATABASE_URL", &url)],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["spokes"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_dry_run_and_reads_the_database_from_the_configuration_file() {
    let world = World::start(&scenario(4, ""), FAST_HUB).await;
    let report = world
        .run_to_completion(json!({"task": "scan", "dry_run": "true"}))
        .await;
    let id = report.run.id.to_string();
    let url = db_url(&world);

    // spokehub.toml in the working directory, as `serve` reads it.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("spokehub.toml"),
        format!("[database]\nurl = {url:?}\n"),
    )
    .unwrap();
    let o = status(cwd.path(), &[&id], &[]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("dry run"), "{text}");
    assert!(
        text.contains(&format!(
            "{} targets, {} skipped; nothing was dispatched",
            report.totals.total - report.totals.skipped,
            report.totals.skipped
        )),
        "{text}"
    );
    assert!(!text.contains("in progress"), "{text}");

    // --config FILE (and SPOKEHUB_CONFIG) name another file.
    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("team.toml");
    std::fs::write(&file, format!("[database]\nurl = {url:?}\n")).unwrap();
    let o = status(
        other.path(),
        &[&id, "--config", file.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = status(
        other.path(),
        &[&id],
        &[("SPOKEHUB_CONFIG", file.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", out(&o));
}

#[test]
fn status_never_creates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let id = "6f1f7f3a-1b2c-4d5e-8f90-123456789abc";
    let o = status(dir.path(), &[id], &[]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no database at spokehub.db") && text.contains("SPOKEHUB_DATABASE_URL"),
        "{text}"
    );
    let missing = dir.path().join("elsewhere.db");
    let o = status(
        dir.path(),
        &[id],
        &[(
            "SPOKEHUB_DATABASE_URL",
            &format!("sqlite://{}", missing.display()),
        )],
    );
    let text = out(&o);
    assert!(
        text.contains(&format!("no database at {}", missing.display()))
            && text.contains("from SPOKEHUB_DATABASE_URL"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "status created files"
    );
    let o = status(dir.path(), &["not-a-run"], &[]);
    assert!(
        out(&o).contains("\"not-a-run\" is not a hub run id"),
        "{}",
        out(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_postgres_ledger_and_names_a_missing_database() {
    let Some(world) = World::start_postgres(
        &scenario(
            2,
            "[[org.repo]]\nname = \"broken\"\nconclusion = \"failure\"\n",
        ),
        FAST_HUB,
    )
    .await
    else {
        return;
    };
    let report = world.run_to_completion(json!({"task": "scan"})).await;
    assert_eq!((report.totals.succeeded, report.totals.failed), (2, 1));
    let id = report.run.id.to_string();
    let url = world.database_url.clone();
    let o = status(
        world.dir.path(),
        &[&id, "--json"],
        &[("SPOKEHUB_DATABASE_URL", &url)],
    );
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["totals"]["failed"], 1, "{text}");
    assert_eq!(json["totals"]["succeeded"], 2, "{text}");
    let missing = format!("{url}_missing");
    let o = status(
        world.dir.path(),
        &[&id],
        &[("SPOKEHUB_DATABASE_URL", &missing)],
    );
    let text = out(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("no database at") && text.contains("SPOKEHUB_DATABASE_URL"),
        "{text}"
    );
}
